"""The run folder: what ``gigdispatch train`` writes (every backend and algorithm) and how it is read back.

A run folder holds:

* ``config.yaml``: the resolved ``TrainConfig`` (``load_run_config`` reads it back, for ``--resume``);
* ``command.txt``: the command that started the run, one more line per resuming command;
* ``git_revision.txt``: ``git_revision()`` when the run started;
* ``seed``: the run's ``seed``;
* ``progress.json``: how far the run got (``write_progress``; the RLlib backend writes its iteration record);
* ``checkpoints/latest.zip`` and ``checkpoints/best.zip`` (SB3), ``checkpoints/rllib/`` (RLlib);
* ``policy.json`` and ``cem_state.json`` (``algo: cem``);
* ``tb/``: TensorBoard logs, the KPIs under the tags of ``KPI_TAGS``.

Every file is written atomically (``training.io``: temporary file in the same folder, fsync, ``os.replace``).
The names of the files a learned policy loads (``config.yaml``, the checkpoints) are those of
``agents.learned``, which reads them.

``finished_line`` says whether a run is finished (``progress.json`` says done), for ``--resume``; ``RunLog``
is what every backend says while it trains (the run folder, then one line per iteration or evaluation, or a
progress bar on a terminal).
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gigdispatch.agents.learned import BEST, CHECKPOINTS, LATEST, RUN_CONFIG
from gigdispatch.training.config import TrainConfig, build_config
from gigdispatch.training.errors import TrainError
from gigdispatch.training.io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "BEST",
    "CEM_STATE",
    "CHECKPOINTS",
    "COMMAND",
    "CONFIG",
    "GIT_REVISION",
    "KPI_TAGS",
    "LATEST",
    "POLICY",
    "PROGRESS",
    "RLLIB_CHECKPOINT",
    "SEED",
    "TB",
    "RunLog",
    "finished_line",
    "git_revision",
    "load_run_config",
    "new_run_dir",
    "number",
    "read_progress",
    "read_record",
    "save_checkpoint",
    "write_progress",
    "write_run_files",
]

CONFIG = RUN_CONFIG
COMMAND = "command.txt"
GIT_REVISION = "git_revision.txt"
SEED = "seed"
PROGRESS = "progress.json"
TB = "tb"
POLICY = "policy.json"
CEM_STATE = "cem_state.json"
RLLIB_CHECKPOINT = "rllib"  # under checkpoints/

# KPI -> TensorBoard tag (stable names; dashboards rely on them)
KPI_TAGS = {
    "platform_margin": "dispatch/profit",
    "on_time_rate": "dispatch/on_time_rate",
    "click_to_door_mean_min": "dispatch/click_to_door_mean_min",
    "acceptance_rate": "dispatch/acceptance_rate",
    "orders_cancelled": "dispatch/cancellations",
    "pickup_leg_mean_min": "dispatch/pickup_leg_mean_min",
    "empty_km_per_delivery": "dispatch/empty_km_per_delivery",
    "idle_share": "dispatch/idle_share",
}


def git_revision() -> str:
    """The repository's commit (12 hex digits), with ``-dirty`` when tracked files have changes; ``unknown``
    without git. The one format of every record (run folders, evaluation and MDRP reports)."""
    repo = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_run_config(run_dir: Path, what: str = "--resume") -> TrainConfig:
    """The config a run folder was started with (``config.yaml``); ``TrainError`` naming ``what`` if it is not a
    run folder, ``ConfigError`` if the file does not validate.

    A fleet run whose ``config.yaml`` has no ``fleet.obs_version`` was written before observation versions
    existed: its drivers saw version 0's rows (41 fields), so it reads back as ``obs_version: 0`` (not the
    default 1), and ``--resume`` plays the env its checkpoint was trained on."""
    import yaml

    f = Path(run_dir) / CONFIG
    if not f.is_file():
        raise TrainError(f"{what} {run_dir}: not a run folder (no {CONFIG})")
    data = yaml.safe_load(f.read_text())
    if isinstance(data, dict) and data.get("env") == "fleet":
        fleet = data.get("fleet", {})
        if isinstance(fleet, dict) and "obs_version" not in fleet:
            data = {**data, "fleet": {**fleet, "obs_version": 0}}
    return build_config(data, source=str(f))


def new_run_dir(cfg: TrainConfig, out_dir: str | Path) -> Path:
    """A new run's folder ``out_dir/<name>-<timestamp>`` (``-2``, ``-3``, ... when that exists); not created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{cfg.name}-{stamp}"
    run_dir, i = base, 1
    while run_dir.exists():
        i += 1
        run_dir = base.with_name(f"{base.name}-{i}")
    return run_dir


def write_run_files(run_dir: Path, cfg: TrainConfig, command: str, resumed: bool) -> None:
    """A new run's record (config, command, git revision, seed), or the resuming command appended."""
    if not resumed:
        atomic_write_text(run_dir / CONFIG, cfg.to_yaml())
        atomic_write_text(run_dir / COMMAND, command + "\n")
        atomic_write_text(run_dir / GIT_REVISION, git_revision() + "\n")
        atomic_write_text(run_dir / SEED, f"{cfg.seed}\n")
    else:
        with open(run_dir / COMMAND, "a", encoding="utf-8") as f:
            f.write(command + "\n")


def read_record(run_dir: Path, name: str, default: str = "") -> str:
    """One line of a run's record (``COMMAND``, ``GIT_REVISION``, ``SEED``), stripped; ``default`` if absent."""
    f = Path(run_dir) / name
    return f.read_text().strip() if f.is_file() else default


def write_progress(run_dir: Path, timesteps: int, total: int, state: dict[str, Any], done: bool) -> None:
    """``progress.json`` of an SB3 or CEM run: timesteps (or simulated days) done of ``total``, the callbacks'
    ``state``, ``done`` and the time."""
    atomic_write_json(
        run_dir / PROGRESS,
        {
            "num_timesteps": int(timesteps),
            "total_timesteps": int(total),
            "done": done,
            "time": time.time(),
            "state": state,
        },
    )


def read_progress(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``progress.json`` (None when there is none yet)."""
    f = Path(run_dir) / PROGRESS
    return json.loads(f.read_text()) if f.is_file() else None


def save_checkpoint(model: Any, path: Path) -> None:
    """An SB3 model's ``save`` into memory, then written atomically to ``path``."""
    buf = io.BytesIO()
    model.save(buf)
    atomic_write_bytes(path, buf.getvalue())


def number(value: float | None) -> str:
    """A metric for a progress line: whole numbers with thousands separators from 1,000 up (86,420, not
    8.642e+04), four significant digits below (0.9831); ``n/a`` for None or NaN."""
    if value is None or value != value:
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def finished_line(run_dir: Path) -> str | None:
    """One line saying the run in ``run_dir`` is finished and what it did, when its ``progress.json`` says done
    (SB3, CEM or RLlib); None when there is something left to do (or no progress yet)."""
    try:
        prog = read_progress(run_dir)
    except (OSError, ValueError):  # unreadable: the resume itself reports it
        return None
    if not isinstance(prog, dict) or prog.get("done") is not True:
        return None
    if prog.get("backend") == "rllib":
        what = f"{prog.get('iteration', 0):,} of {prog.get('iterations', 0):,} RLlib iterations"
    elif "cem" in (prog.get("state") or {}):
        what = f"{prog.get('num_timesteps', 0):,} of {prog.get('total_timesteps', 0):,} simulated days"
    else:
        what = f"{prog.get('num_timesteps', 0):,} of {prog.get('total_timesteps', 0):,} steps"
    return f"--resume {run_dir}: the run is finished ({what}); nothing left to do"


class RunLog:
    """What a run says while it trains.

    ``say(text)`` is always passed to ``out`` (the run folder at the start). ``step(n, text)`` reports one
    iteration or evaluation: with ``bar`` (a terminal) it moves the tqdm bar (on stderr) to ``n`` and shows
    ``text`` beside it; without, ``text`` goes to ``out`` as one plain line, prefixed with the seconds since
    the run (or its resume) started, so a log file or a pipe sees the run advance. ``out=None`` (the Python
    API's default) says nothing."""

    def __init__(self, out: Callable[[str], None] | None = None, bar: bool = False) -> None:
        self.out = out
        self.want_bar = bar
        self.bar: Any = None
        self.t0 = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def start(self, total: int, initial: int, unit: str, desc: str) -> None:
        """Start the bar (``bar`` only): ``total`` units of ``unit``, ``initial`` done."""
        if self.want_bar and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, leave=False)

    def say(self, text: str) -> None:
        if self.out is not None:
            if self.bar is not None:
                self.bar.clear()
            self.out(text)
            if self.bar is not None:
                self.bar.refresh()

    def move(self, n: int) -> None:
        """The bar to ``n`` (between reports; refreshed at most every few calls by tqdm's own rate limit)."""
        if self.bar is not None and n != self.bar.n:
            self.bar.update(n - self.bar.n)

    def step(self, n: int, text: str) -> None:
        if self.bar is not None:
            self.move(n)
            self.bar.set_postfix_str(text, refresh=True)
        elif self.out is not None:
            self.out(f"[{self.elapsed:7.1f} s] {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
