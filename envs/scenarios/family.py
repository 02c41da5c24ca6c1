"""Scenario families: distinct but alike cities drawn from one written scenario and a family seed.

A scenario with a ``family`` section (``config.Family``) has members ``NAME@F`` for every family seed
``F >= 0``. Member ``F`` is the scenario as written with, drawn from ``default_rng(F)``: a new road layout
(``city.layout_seed``), each demand centre moved by up to ``centre_shift`` of the city's extent in x and y,
its peaks moved together by up to ``time_shift_hours`` (kept inside the horizon), and its weight scaled by
``lognormal(0, weight_sd)``. Everything else (fleet, pricing, SLAs, the day seeds) is the scenario's.

Family seeds follow the seeding rule of days (``envs/core/seeding.py``): members 0-19 are evaluation
cities, never trained or selected on; training uses members ``>= 1000``.
"""

from __future__ import annotations

import re

import numpy as np

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.scenarios.errors import ScenarioError

_MEMBER = re.compile(r"^(?P<base>.+)@(?P<seed>\d+)$")
MAX_FAMILY_SEED = 2**31 - 1


def split_member(spec: str) -> tuple[str, int] | None:
    """``"city-shift@7"`` -> ``("city-shift", 7)``; None when ``spec`` names no member."""
    m = _MEMBER.match(spec)
    if not m:
        return None
    seed = int(m.group("seed"))
    if seed > MAX_FAMILY_SEED:
        raise ScenarioError(f"scenario {spec!r}: family seed {seed} above {MAX_FAMILY_SEED}")
    return m.group("base"), seed


def family_member(cfg: GridScenario, family_seed: int) -> GridScenario:
    """Member ``family_seed`` of the family of ``cfg`` (``ScenarioError`` if ``cfg`` has no ``family``)."""
    fam = cfg.family
    if fam is None:
        raise ScenarioError(
            f"scenario {cfg.name}@{family_seed}: {cfg.name!r} has no family section, so it has no members "
            "(add e.g. 'family: {}' to the scenario, see docs/scenarios.md)"
        )
    if family_seed < 0:
        raise ScenarioError(f"scenario {cfg.name}@{family_seed}: a family seed is >= 0")
    rng = np.random.default_rng(family_seed)
    layout_seed = int(rng.integers(0, MAX_FAMILY_SEED)) if fam.layout else cfg.city.layout_seed
    t0, t1 = cfg.horizon.start, cfg.horizon.end
    centres = []
    for c in cfg.demand.centres:
        dx, dy = rng.uniform(-fam.centre_shift, fam.centre_shift, size=2)
        dt = float(rng.uniform(-fam.time_shift_hours, fam.time_shift_hours)) * 3600.0
        scale = float(rng.lognormal(0.0, fam.weight_sd))
        peaks = tuple(p.model_copy(update={"center": float(np.clip(p.center + dt, t0, t1))}) for p in c.peaks)
        centres.append(
            c.model_copy(
                update={
                    "x": float(np.clip(c.x + dx, 0.0, 1.0)),
                    "y": float(np.clip(c.y + dy, 0.0, 1.0)),
                    "weight": c.weight * scale,
                    "peaks": peaks,
                }
            )
        )
    data = cfg.model_dump()
    data["name"] = f"{cfg.name}@{family_seed}"
    data["city"]["layout_seed"] = layout_seed
    data["demand"]["centres"] = [c.model_dump() for c in centres]
    return GridScenario.model_validate(data)
