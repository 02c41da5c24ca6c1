"""Run mypy on the installed namespace (``gigdispatch.envs``, ``.agents``, ``.service``).

The top-level folders install as ``gigdispatch.*`` through setuptools' editable finder, which mypy
cannot follow (it reads files, not import hooks). This builds a throw-away tree of links
``<tmp>/gigdispatch/{envs,agents,service,training} -> <repo>/<folder>`` and points mypy at it, so mypy
sees exactly the module names the code imports. ``python -m tests.typecheck`` exits with mypy's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("envs", "agents", "service", "training")
CHECKED = ("gigdispatch.envs", "gigdispatch.agents", "gigdispatch.service")


def run_mypy(packages: tuple[str, ...] = CHECKED, cache_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="gigdispatch-mypy-") as tmp:
        ns = Path(tmp) / "gigdispatch"
        ns.mkdir()
        for folder in FOLDERS:
            os.symlink(ROOT / folder, ns / folder, target_is_directory=True)
        cache = cache_dir or ROOT / ".mypy_cache"
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(cache)]
        for p in packages:
            cmd += ["-p", p]
        env = {**os.environ, "MYPYPATH": tmp}
        return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)


if __name__ == "__main__":
    r = run_mypy()
    sys.stdout.write(r.stdout.replace("gigdispatch/", ""))
    sys.stderr.write(r.stderr)
    raise SystemExit(r.returncode)
