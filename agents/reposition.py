"""Learned repositioning of idle drivers: ``CoverageRepositionPolicy``, trained by policy search (``training.cem``).

Dispatch is ``nearest``'s (so that a comparison with ``nearest``, which never repositions, and with
``reposition``, nearest plus demand-following moves, isolates the repositioning). After the epoch's
offers, idle drivers are re-spread over the city's zones:

1. **Demand forecast** per zone: orders placed in the last ``history_min`` minutes, by pickup zone,
   exponentially weighted (half-life ``history_min / 2``), plus ``open_weight`` x the open orders not
   offered this epoch; raised to the power ``concentration`` (0 = spread evenly, 1 = in proportion to
   demand, > 1 = towards the busiest zones) and mixed with an even spread by ``even_share``.
2. **Targets**: the idle drivers without an offer are shared out over the zones in proportion to that
   forecast; a zone's *supply* counts its standing idle drivers and those already repositioning to it.
3. **Moves**: standing idle drivers that have been idle for at least ``idle_wait_s`` in zones with a
   surplus of at least ``min_surplus`` fill the deficit slots of other zones (``ceil(deficit -
   min_deficit)`` slots per zone) by one ``linear_sum_assignment`` on travel time plus
   ``pref_cost_s`` when the slot's zone is not the driver's preferred zone (drivers accept more offers
   there); pairs longer than ``max_travel_s`` are not made, and at most ``move_share`` of the movable
   drivers move per epoch.

Every step is vectorised over zones and drivers; the only solver call is one assignment per epoch. The
ten parameters are learned on training days (seeds >= 1000) by ``training.cem`` with ``cem.policy:
reposition`` and the objective ``cem.objective: on_time_rate``; they live in ``policy.json`` (format
``gigdispatch-reposition/1``), optionally per scenario (``scenarios``), which ``make_policy("<folder>")``
loads. Without a file the parameters are the defaults below (an untrained starting point).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gigdispatch.agents.heuristics import NearestThenMoves, idle_supply, open_demand
from gigdispatch.agents.nearest import NearestPolicy
from gigdispatch.agents.policy_file import check_numbers, read_policy_json
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.types import PH_DRIVING, PH_IDLE

FORMAT = "gigdispatch-reposition/1"

# parameter -> (default, kind); kinds as in agents.scored: "pos" >= 0 (searched on a log scale),
# "prob" in [0, 1] (through a logistic)
PARAMS: dict[str, tuple[float, str]] = {
    "history_min": (20.0, "pos"),
    "open_weight": (1.0, "pos"),
    "concentration": (1.0, "pos"),
    "even_share": (0.1, "prob"),
    "idle_wait_s": (60.0, "pos"),
    "min_surplus": (1.0, "pos"),
    "min_deficit": (0.5, "pos"),
    "max_travel_s": (600.0, "pos"),
    "pref_cost_s": (60.0, "pos"),
    "move_share": (0.5, "prob"),
    "trend_weight": (0.5, "pos"),
    "drivers_per_order": (1.0, "pos"),
}
# what a policy.json written before these parameters existed means by their absence: no trend term, and every
# idle driver shared out (the behaviour those files were trained with)
LEGACY_PARAMS: dict[str, float] = {"trend_weight": 0.0, "drivers_per_order": 1e9}

_EMPTY = np.zeros(0, np.int64)


class RepositionPolicyError(ValueError):
    """A bad repositioning ``policy.json`` (missing, unreadable, another format, a bad parameter)."""


def check_params(params: dict[str, Any], where: str = "params") -> dict[str, float]:
    """Validated parameters (defaults for missing ones); errors name the field."""
    return check_numbers(params, PARAMS, where, RepositionPolicyError)


class CoverageRepositionPolicy(NearestThenMoves):
    """Nearest dispatch plus learned, forecast-proportional re-spreading of idle drivers (module docstring)."""

    name = "learned-reposition"

    def __init__(self, params: dict[str, Any] | None = None, k: int = 8, rounds: int = 4) -> None:
        self.nearest = NearestPolicy(k=k, rounds=rounds)
        self.default_params = check_params(params or {})
        self.params = self.default_params
        self.by_scenario: dict[str, dict[str, float]] = {}
        self.source_file: str | None = None  # the policy.json that from_file read
        self._idle_since = np.zeros(0)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> CoverageRepositionPolicy:
        """Load ``policy.json`` (or the one inside a folder)."""
        f, doc = read_policy_json(
            path, FORMAT, RepositionPolicyError, "a repositioning policy is a folder with policy.json"
        )
        pol = cls(check_params({**LEGACY_PARAMS, **doc["params"]}, where=f"{f}: params"))
        for name, ps in doc["scenarios"].items():
            pol.by_scenario[str(name)] = check_params({**LEGACY_PARAMS, **ps}, where=f"{f}: scenarios.{name}")
        pol.source_file = str(f)
        return pol

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        name = sim.scenario.name
        family = name.rsplit("@", 1)[0]  # a family member (city-shift@7) uses its family's parameters
        self.params = self.by_scenario.get(name, self.by_scenario.get(family, self.default_params))
        self.nearest.reset(sim, rng)
        self._idle_since = np.full(sim.drivers.n, sim.t)

    def forget_idle_history(self, sim: Simulator) -> None:
        """Treat every idle driver as idle long enough to move (for a state without history, e.g. a served request)."""
        self._idle_since = np.full(sim.drivers.n, -np.inf)

    # ------------------------------------------------------------------------------------ parts
    def forecast(self, sim: Simulator, offered: np.ndarray) -> np.ndarray:
        """(Z,) demand weight of each zone (recent placements, decayed, + open orders not offered now)."""
        p, od = self.params, sim.orders
        h = max(p["history_min"], 1.0) * 60.0
        lo, hi = np.searchsorted(od.t_place, [sim.t - 2.0 * h, sim.t], side="left")
        age = sim.t - od.t_place[lo:hi]
        w = np.exp2(-age / (h / 2.0))
        recent = sim.zone_demand_of(slice(lo, hi), weights=w)
        fc = recent + p["open_weight"] * open_demand(sim, offered)
        if p["trend_weight"] > 0:  # demand on the rise: the last half-window against the whole window, per zone
            mid = np.searchsorted(od.t_place, sim.t - h / 2.0, side="left")
            late = sim.zone_demand_of(slice(mid, hi)) * 4.0  # placements per 2h-window, at the recent rate
            whole = sim.zone_demand_of(slice(lo, hi))
            fc = fc + p["trend_weight"] * np.maximum(late - whole, 0.0) / 4.0
        return fc

    def moves(
        self, sim: Simulator, offered_drivers: np.ndarray, offered_orders: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p, dr, city = self.params, sim.drivers, sim.city
        Z = city.n_zones
        standing = (dr.phase == PH_IDLE) & (dr.route_len == 0)
        self._idle_since = np.where(standing | (dr.phase == PH_DRIVING) & (dr.route_len == 0), self._idle_since, sim.t)
        if Z < 2:
            return _EMPTY, _EMPTY
        idle, where, supply = idle_supply(sim, offered_drivers)
        n_idle = int(idle.sum())
        if n_idle == 0:
            return _EMPTY, _EMPTY
        dem = self.forecast(sim, offered_orders)
        if dem.sum() <= 0:
            return _EMPTY, _EMPTY
        share = np.power(dem / dem.max(), p["concentration"])
        share = share / share.sum()
        share = (1.0 - p["even_share"]) * share + p["even_share"] / Z
        # drivers worth placing: at most drivers_per_order per forecast order (the rest wait, drift home, log off)
        placed = min(float(n_idle), p["drivers_per_order"] * float(dem.sum()))
        gap = placed * share - supply  # > 0: deficit
        slots_per_zone = np.ceil(np.maximum(gap - p["min_deficit"], 0.0)).astype(np.int64)
        if slots_per_zone.sum() == 0:
            return _EMPTY, _EMPTY
        movable = (idle & standing & (sim.t - self._idle_since >= p["idle_wait_s"])).nonzero()[0]
        movable = movable[-gap[where[movable]] >= p["min_surplus"]]
        if movable.size == 0:
            return _EMPTY, _EMPTY
        slots = np.repeat(np.arange(Z), slots_per_zone)
        tt = city.travel_s(dr.node[movable][:, None], city.zone_node[slots][None, :]) / dr.speed[movable][:, None]
        cost = tt + p["pref_cost_s"] * (slots[None, :] != dr.pref_zone[movable][:, None])
        cost = np.where(tt <= p["max_travel_s"], cost, np.inf)
        ok_rows = np.isfinite(cost).any(axis=1)
        if not ok_rows.any():
            return _EMPTY, _EMPTY
        movable, cost = movable[ok_rows], cost[ok_rows]
        ok_cols = np.isfinite(cost).any(axis=0)
        slots, cost = slots[ok_cols], cost[:, ok_cols]
        r, c = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e12))
        keep = np.isfinite(cost[r, c])
        r, c = r[keep], c[keep]
        limit = int(np.floor(p["move_share"] * movable.size + 0.5))
        if r.size > limit:  # the shortest moves first
            best = np.argsort(cost[r, c], kind="stable")[:limit]
            r, c = r[best], c[best]
        return movable[r].astype(np.int64), slots[c].astype(np.int64)
