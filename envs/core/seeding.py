"""The one seeding rule, shared by the simulator, every environment and every command.

* **A seed is a day.** ``Simulator.reset(seed=s)``, ``Dispatch-v0``'s ``reset(seed=s)``, the
  PettingZoo fleet env's ``reset(seed=s)`` and ``FleetVecEnv`` after ``seed(s)`` (or built with
  ``seed=s``) all play the same day ``s``: the same orders, drivers and traffic.
* **Later episodes** come from a ``SeedSchedule``: by default, after a reset with seed ``s`` the
  next days are drawn from ``numpy.random.default_rng(s)``; with an explicit list of seeds
  (``SeedSchedule(seeds=[...])``) the days are those seeds in turn (optionally in a permuted order),
  cycled; with ``ignore_reset_seed=True`` a seed passed to reset is ignored (training: the seed a
  library passes, e.g. SB3's ``seed()``, is not one of the training days). Every environment takes
  ``seed_schedule=`` as a public argument.
* **Evaluation days are 0-19** (``EVAL_SEEDS``) and are never trained on; training, tuning and recorded
  requests use seeds ``>= MIN_TRAIN_SEED`` (1000). ``check_train_seeds`` enforces it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from gigdispatch.envs.core.errors import InputError

EVAL_SEEDS: tuple[int, ...] = tuple(range(20))
MIN_TRAIN_SEED = 1000
MAX_SEEDS = 100_000
_DRAW_HIGH = 2**63 - 1


class SeedError(InputError):
    """Seeds that cannot be used (not a seed list, or evaluation seeds used for training)."""


def check_train_seeds(seeds: Iterable[int], what: str = "seeds") -> list[int]:
    """``seeds`` as a list, or ``SeedError`` naming ``what`` if any is an evaluation seed (< 1000)."""
    out = [int(s) for s in seeds]
    bad = [s for s in out if s < MIN_TRAIN_SEED]
    if bad:
        shown = ", ".join(str(s) for s in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise SeedError(
            f"{what}: {shown} below {MIN_TRAIN_SEED}; seeds 0-{EVAL_SEEDS[-1]} are evaluation days and below "
            f"{MIN_TRAIN_SEED} are kept out of training (use e.g. {MIN_TRAIN_SEED}-{MIN_TRAIN_SEED + 9})"
        )
    return out


def parse_seeds(text: str, what: str = "--seeds") -> list[int]:
    """``"0-19"``, ``"0,3,7"``, ``"0-4,10-14"`` -> the seeds in the order given, each once.

    Raises ``SeedError`` naming the bad part (empty part, not a number, negative, a range whose end is
    below its start, a seed given twice, more than ``MAX_SEEDS`` seeds).
    """
    if not isinstance(text, str) or not text.strip():
        raise SeedError(f"{what}: empty; give e.g. 0-19, 0,3,7 or 0-4,10-14")
    out: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        p = part.strip()
        if not p:
            raise SeedError(f"{what} {text!r}: empty item between commas")
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", p)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise SeedError(f"{what} {text!r}: range {p!r} ends before it starts")
            if hi - lo + 1 + len(out) > MAX_SEEDS:
                raise SeedError(f"{what} {text!r}: more than {MAX_SEEDS:,} seeds")
            items: Iterable[int] = range(lo, hi + 1)
        elif re.fullmatch(r"\d+", p):
            items = range(int(p), int(p) + 1)
        elif re.fullmatch(r"-\s*\d+", p):
            raise SeedError(f"{what} {text!r}: seeds must be >= 0, got {p!r}")
        else:
            raise SeedError(f"{what} {text!r}: {p!r} is not a seed or a range like 0-19")
        for s in items:
            if s in seen:
                raise SeedError(f"{what} {text!r}: seed {s} given twice")
            seen.add(s)
            out.append(s)
        if len(out) > MAX_SEEDS:
            raise SeedError(f"{what} {text!r}: more than {MAX_SEEDS:,} seeds")
    return out


class SeedSchedule:
    """Which day each episode of an environment plays.

    ``SeedSchedule()``: ``restart(s)`` plays day ``s`` and the days after it are drawn from
    ``default_rng(s)``; before any seed is given, the days are drawn from fresh OS entropy.
    ``SeedSchedule(seeds=[...], shuffle=k)``: the days are ``seeds`` in turn, cycled (permuted once by
    ``default_rng(k)`` when ``shuffle`` is given); ``restart(s)`` still plays day ``s`` once and then
    goes on with the list, unless ``ignore_reset_seed=True``: then ``day(s)`` ignores ``s`` and plays
    the next seed of the list (a training schedule, whatever seed the training library passes to reset).
    One schedule serves one environment (it keeps its place in the list).
    """

    def __init__(
        self, seeds: Sequence[int] | None = None, shuffle: int | None = None, ignore_reset_seed: bool = False
    ) -> None:
        if seeds is not None:
            arr = np.asarray(list(seeds), dtype=np.int64)
            if arr.ndim != 1 or len(arr) == 0:
                raise SeedError("seed_schedule: seeds must be a non-empty list of whole numbers")
            if (arr < 0).any():
                raise SeedError("seed_schedule: seeds must be >= 0")
            if shuffle is not None:
                arr = np.random.default_rng(shuffle).permutation(arr)
            self.seeds: np.ndarray | None = arr
        else:
            if shuffle is not None or ignore_reset_seed:
                raise SeedError("seed_schedule: shuffle and ignore_reset_seed need a list of seeds")
            self.seeds = None
        self.ignore_reset_seed = bool(ignore_reset_seed)
        self._i = 0
        self._rng: np.random.Generator | None = None

    def restart(self, seed: int) -> int:
        """Day ``seed`` now; the days after it follow this schedule's rule."""
        seed = int(seed)
        if seed < 0:
            raise SeedError(f"seed: must be >= 0, got {seed}")
        self._rng = np.random.default_rng(seed)
        return seed

    def next(self) -> int:
        """The next day of the schedule."""
        if self.seeds is not None:
            s = int(self.seeds[self._i % len(self.seeds)])
            self._i += 1
            return s
        if self._rng is None:
            self._rng = np.random.default_rng()
        return int(self._rng.integers(0, _DRAW_HIGH))

    def day(self, seed: int | None) -> int:
        """``restart(seed)`` when a seed is given (and not ignored), else ``next()``: what an env's
        ``reset(seed=...)`` plays."""
        return self.restart(seed) if seed is not None and not self.ignore_reset_seed else self.next()
