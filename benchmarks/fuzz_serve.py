"""Property-based API fuzzing of `gigdispatch serve` with schemathesis, against its own OpenAPI document.

Starts a real server on a free loopback port (127.0.0.1), runs `schemathesis run` with every check, and
stops the server. Needs the `fuzz` extra: `pip install -e ".[fuzz]"`.

    python -m benchmarks.fuzz_serve --max-examples 1000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Fuzz the inference service with schemathesis (every check; prints its summary)."
    )
    ap.add_argument(
        "--max-examples", type=int, default=1000, help="examples per API operation and phase [default: %(default)s]"
    )
    ap.add_argument("--policy", default="nearest", help="policy to serve [default: %(default)s]")
    ap.add_argument("--scenario", default="default", help="scenario to serve [default: %(default)s]")
    args = ap.parse_args(argv)
    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(st).exists():
        print('error: schemathesis is not installed: pip install -e ".[fuzz]"', file=sys.stderr)
        return 2
    from gigdispatch.training.serve_cli import serve_process

    try:
        with serve_process(args.scenario, args.policy) as base:
            cmd = [st, "run", f"{base}/openapi.json", "--checks", "all", "--max-examples", str(args.max_examples)]
            cmd += ["--workers", "1"]
            print("$ " + " ".join(cmd), flush=True)
            return subprocess.run(cmd, check=False).returncode
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
