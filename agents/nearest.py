"""Nearest available driver, first come first served."""

from __future__ import annotations

import numpy as np

from agents.base import Policy, escalation_levels
from envs.core.sim import Decision, Simulator


def fcfs_match(ids: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Match rows (orders, oldest first) to their candidate columns (best first), oldest order first.

    Column by column, every unmatched order proposes its next candidate that nobody has taken; of
    several orders proposing one driver the oldest wins. Vectorised over orders. Returns (n,) driver
    ids, -1 where unmatched; marks the matched drivers in ``taken`` (a (D,) bool array).
    """
    n, k = ids.shape
    out = np.full(n, -1, np.int64)
    for c in range(k):
        free = out < 0
        cand = ids[:, c]
        ok = free & (cand >= 0)
        ok[ok] &= ~taken[cand[ok]]
        rows = np.flatnonzero(ok)
        if rows.size == 0:
            continue
        _, first = np.unique(cand[rows], return_index=True)  # rows are oldest first: the first proposer wins
        win = rows[first]
        out[win] = cand[win]
        taken[cand[win]] = True
    return out


class NearestPolicy(Policy):
    """Oldest open order first, each to the idle driver with the shortest pickup ETA that is still free.

    Matching runs in rounds over each order's ``k`` nearest idle drivers (``fcfs_match``); orders whose
    candidates were all taken ask again among the drivers left, up to ``rounds`` times. A driver who
    just declined an order is skipped for it. The payout escalates with the order's declines when the
    scenario's ``pricing.payout.auto_escalate`` is on.
    """

    name = "nearest"

    def __init__(self, k: int = 8, rounds: int = 4) -> None:
        self.k = k
        self.rounds = rounds

    def act(self, sim: Simulator) -> Decision:
        orders = sim.open_orders()
        if orders.size == 0:
            return Decision()
        taken = np.zeros(sim.drivers.n, bool)
        out_o, out_d = [], []
        left = orders
        for _ in range(self.rounds):
            ids, _ = sim.candidates(left, self.k, idle_only=True, exclude=taken)
            ids = np.where(ids == sim.orders.last_decliner[left][:, None], -1, ids)
            if (ids < 0).all():
                break
            match = fcfs_match(ids, taken)
            got = match >= 0
            out_o.append(left[got])
            out_d.append(match[got])
            left = left[~got & (ids >= 0).any(axis=1)]  # orders with no candidate at all will not find one
            if left.size == 0:
                break
        o = np.concatenate(out_o) if out_o else np.zeros(0, np.int64)
        d = np.concatenate(out_d) if out_d else np.zeros(0, np.int64)
        order = np.argsort(o, kind="stable")  # hand offers over oldest order first
        o, d = o[order], d[order]
        return Decision(order=o, driver=d, level=escalation_levels(sim, o))
