"""Property-based API fuzzing of `gigdispatch serve` with schemathesis, against its own OpenAPI document.

Starts a real server on a free loopback port (127.0.0.1), runs `schemathesis run` with every check, and
stops the server. Needs the `fuzz` extra: `pip install -e ".[fuzz]"`.

    python -m benchmarks.fuzz_serve --max-examples 1000
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz the inference service with schemathesis (every check; prints its summary).")
    ap.add_argument("--max-examples", type=int, default=1000, help="examples per API operation and phase [default: %(default)s]")
    ap.add_argument("--policy", default="nearest", help="policy to serve [default: %(default)s]")
    ap.add_argument("--scenario", default="default", help="scenario to serve [default: %(default)s]")
    args = ap.parse_args(argv)
    st = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(st).exists():
        print('error: schemathesis is not installed: pip install -e ".[fuzz]"', file=sys.stderr)
        return 2
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "training.cli", "serve", "--policy", args.policy, "--scenario", args.scenario, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("error: the server did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        cmd = [
            st,
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(args.max_examples),
            "--workers",
            "1",
        ]
        print("$ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd, check=False).returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    raise SystemExit(main())
