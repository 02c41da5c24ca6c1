"""Learned pair scoring for Hungarian dispatch: ``ScoredMatchPolicy``, trained by policy search (``training.cem``).

The policy is the value-augmented Hungarian of ``agents.value_hungarian`` (learned spatio-temporal state
values, expected immediate profit at the acceptance probability, time costs) with every weight of its pair
score, a hold rule and the payout lever made parameters that are *learned* from simulated days:

    w(o, d) = p * [ profit_weight * (fee - payout - E[late refund])
                    + value_weight * (gamma^(dt/1h) V(drop-off zone, t_drop) - V(zone of d, now)) ]
              - time_value / 3600 * ( ETA + slack_weight * lateness - age_weight * waited
                                      + decline_cost_s * (1 - p) )

Pairs with ``w < hold_below`` (euros) are not offered this epoch (the order waits for a better driver, or
is left to cancel when serving it loses money); one ``linear_sum_assignment`` over the rest maximises the
total score among the largest matchings. With ``batching`` on (a switch, > 0.5) the candidates are those of
``batching``: busy drivers with room (their ETA after the route; a detour costs ``busy_penalty_s`` at the
time value) and drivers already due at the same pickup (bundles; the wait they cause costs its seconds).
The payout level of each matched pair is the lowest level, from
``min(declines, max_level)`` up to ``max_level``, at which the acceptance probability reaches
``level_threshold`` (the auction lever; ``max_level`` 0 turns it off). ``window_factor`` sets how many of
the oldest open orders enter each epoch's problem (``window_factor x idle drivers + 16``).

The parameters live in a small JSON file (``policy.json``, format ``gigdispatch-scored-match/1``) that
``training.cem`` writes into its run folder; ``make_policy("<run folder or policy.json>")`` loads it. A
file may also hold ``scenarios``: parameters learned per scenario name (the shipped
``checkpoints/dispatch/policy.json`` has ``default`` and ``city-1000``); ``reset`` picks the entry of the
scenario being played, else ``params``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.agents.heuristics import BatchingPolicy, auction_levels, match_min_cost, sorted_decision
from gigdispatch.agents.policy_file import check_numbers, read_policy_json
from gigdispatch.agents.value_hungarian import ValueHungarianPolicy
from gigdispatch.envs.core.sim import Decision, Simulator

FORMAT = "gigdispatch-scored-match/1"

# parameter -> (default, kind): "pos" parameters are searched on a log scale, "real" ones linearly,
# "prob" through a logistic; the defaults are value-hungarian's weights with the auction lever.
PARAMS: dict[str, tuple[float, str]] = {
    "time_value": (24.0, "pos"),
    "profit_weight": (1.0, "pos"),
    "value_weight": (1.0, "pos"),
    "slack_weight": (1.0, "pos"),
    "age_weight": (1.0, "pos"),
    "decline_cost_s": (300.0, "pos"),
    "window_factor": (2.0, "pos"),
    "hold_below": (-5.0, "real"),
    "level_threshold": (0.5, "prob"),
    "busy_penalty_s": (120.0, "pos"),
    "batching": (1.0, "switch"),
}


class ScoredMatchPolicyError(ValueError):
    """A bad ``policy.json`` (missing, unreadable, another format, a bad parameter)."""


def check_params(params: dict[str, Any], where: str = "params") -> dict[str, float]:
    """Validated parameters (defaults for missing ones); errors name the field."""
    out = check_numbers(params, PARAMS, where, ScoredMatchPolicyError, also_known=("max_level",))
    ml = params.get("max_level", 1)
    if isinstance(ml, bool) or not isinstance(ml, int) or ml < 0:
        raise ScoredMatchPolicyError(f"{where}.max_level: must be a whole number >= 0, got {ml!r}")
    out["max_level"] = int(ml)
    return out


class ScoredMatchPolicy(ValueHungarianPolicy):
    """Hungarian matching on a learned pair score, with a learned hold rule and payout lever (module docstring)."""

    name = "scored-match"

    def __init__(
        self, params: dict[str, Any] | None = None, values_path: str | os.PathLike | None = None, k: int = 8
    ) -> None:
        p = check_params(params or {})
        self.default_params = p
        super().__init__(values_path=values_path, k=k)  # every weight is then set from p by _use
        self.by_scenario: dict[str, dict[str, float]] = {}
        self.source_file: str | None = None  # the policy.json that from_file read
        self._bundles = BatchingPolicy(k=k, bundle_k=2)  # its same-pickup bundle candidates
        self._use(p)

    def _use(self, p: dict[str, float]) -> None:
        b = self.base
        b.window_factor, b.slack_weight, b.age_weight, b.decline_cost_s = (
            p["window_factor"],
            p["slack_weight"],
            p["age_weight"],
            p["decline_cost_s"],
        )
        self.time_value, self.profit_weight, self.value_weight = p["time_value"], p["profit_weight"], p["value_weight"]
        self.params = p
        self.batching = p["batching"] >= 0.5
        self.busy_penalty_s = p["busy_penalty_s"]
        self.hold_below = p["hold_below"]
        self.level_threshold = p["level_threshold"]
        self.max_level = int(p["max_level"])

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        """Parameters learned for this scenario (``scenarios`` in ``policy.json``) if any, else the file's
        ``params``."""
        self._use(self.by_scenario.get(sim.scenario.name, self.default_params))
        super().reset(sim, rng)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> ScoredMatchPolicy:
        """Load ``policy.json`` (or the one inside a run folder)."""
        f, doc = read_policy_json(
            path, FORMAT, ScoredMatchPolicyError, "a scored-match policy is a run folder with policy.json"
        )
        values = doc.get("values")
        vpath = None
        if values:
            vpath = Path(values) if Path(values).is_absolute() else f.parent / values
            if not vpath.is_file():
                raise ScoredMatchPolicyError(f"{str(f)!r}: values: no such file {str(vpath)!r}")
        pol = cls(check_params(doc["params"], where=f"{f}: params"), values_path=vpath)
        for name, ps in doc["scenarios"].items():
            pol.by_scenario[str(name)] = check_params(ps, where=f"{f}: scenarios.{name}")
        pol.source_file = str(f)
        return pol

    def levels(self, sim: Simulator, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return auction_levels(sim, o, d, self.level_threshold, self.max_level)

    def act(self, sim: Simulator) -> Decision:
        if self.table is None:
            self.table = self._table_for(sim)
        orders = sim.open_orders()
        idle = sim.eligible(idle_only=True)
        among = sim.eligible(idle_only=False) if self.batching else idle
        if orders.size == 0 or not among.any():
            return Decision()
        k = self.base.k
        window = self.base.window(sim, orders, int(idle.sum()))
        ids, eta = sim.candidates(window, k, among=among)
        if self.batching:  # busy drivers with room (ETA after their route) and same-pickup bundles
            bids, beta, hold = self._bundles.bundle_candidates(sim, window, among)
            ids, eta = np.concatenate([ids, bids], axis=1), np.concatenate([eta, beta], axis=1)
        ids = sim.drop_last_decliners(window, ids)
        w = self.pair_weight(sim, window, ids, eta)
        if self.batching:
            extra = np.where(sim.drivers.route_len[np.maximum(ids, 0)] > 0, self.busy_penalty_s, 0.0)
            extra[:, k:] = hold  # joining a planned pickup is no detour; the carried orders wait for this one
            w = w - self.time_value / 3600.0 * extra
        keep = (ids >= 0) & (w >= self.hold_below)
        rows, d = match_min_cost(np.where(keep, ids, -1), np.where(keep, -w, np.inf))
        o = window[rows]
        return sorted_decision(o, d, self.levels(sim, o, d))
