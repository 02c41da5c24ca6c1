"""The reference dispatcher: nearest available driver, first come first served.

It lives in the core because the fleet environments use it as their default platform side;
``gigdispatch.agents.nearest`` re-exports it for the policy registry.
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.policy import Policy, escalation_levels
from gigdispatch.envs.core.sim import Decision, Simulator


def fcfs_match(ids: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Match rows (orders, oldest first) to their candidate columns (best first), oldest order first.

    Column by column, every unmatched order proposes its next candidate that nobody has taken; of
    several orders proposing one driver the oldest wins. Vectorised over orders. Returns (n,) driver
    ids, -1 where unmatched; marks the matched drivers in ``taken`` (a (D,) bool array).
    """
    n = ids.shape[0]
    n_d = taken.shape[0]
    out = np.full(n, -1, np.int64)
    cols = np.where(ids >= 0, ids, n_d).T  # (k, n); padding (-1) names driver n_d, who counts as taken
    busy = np.append(taken, True)  # taken, plus that sentinel
    first = np.full(n_d + 1, n, np.int64)  # scratch: the first row proposing each driver
    free = np.ones(n, bool)
    n_free = n
    for cand in cols:
        rows = (free > busy[cand]).nonzero()[0]  # unmatched orders whose candidate is not taken
        if rows.size == 0:
            continue
        c_r = cand[rows]
        first[c_r[::-1]] = rows[::-1]  # repeated indices keep the last write: the oldest proposer wins
        won = first[c_r] == rows
        win, drv = rows[won], c_r[won]
        out[win] = drv
        busy[drv] = True
        free[win] = False
        n_free -= win.size
        if n_free == 0:
            break  # every order has its driver
    taken |= busy[:n_d]
    return out


class NearestPolicy(Policy):
    """Oldest open order first, each to the idle driver with the shortest pickup ETA that is still free.

    Matching runs in rounds over each order's ``k`` nearest idle drivers (``fcfs_match``); orders whose
    candidates were all taken ask again among the drivers left, up to ``rounds`` times. A round looks at
    the ``2 x free drivers + 16`` oldest pending orders only: at most one order per free driver can be
    served, and the oldest come first. A round is skipped when every order in its window already saw
    all its eligible drivers (fewer than ``k``) in the last round and lost them all: it could match
    nothing. Later rounds reuse the ETAs of the orders and drivers they share with the round before (the
    state does not change within an epoch). A driver who just declined an order is skipped for it. The
    payout escalates with the order's declines when the scenario's ``pricing.payout.auto_escalate`` is on.
    """

    name = "nearest"
    # shortcuts that cannot change the decision (the tests compare them switched off): skipping futile
    # rounds, and reusing the last round's ETAs instead of calling sim.candidates again
    _skip_exhausted = True
    _reuse_etas = True

    def __init__(self, k: int = 8, rounds: int = 4) -> None:
        self.k = k
        self.rounds = rounds

    def act(self, sim: Simulator) -> Decision:
        orders = sim.open_orders()
        idle = sim.eligible(idle_only=True)
        if orders.size == 0 or not idle.any():
            return Decision()
        taken = np.zeros(sim.drivers.n, bool)
        idle_ids = idle.nonzero()[0]
        free = idle_ids.size  # idle drivers not yet matched this epoch (matches only take idle drivers)
        node, t_free = np.zeros(sim.drivers.n, np.int64), np.zeros(sim.drivers.n)
        node[idle_ids], t_free[idle_ids] = sim.driver_free(idle_ids)  # the same for every round of this epoch
        out_o, out_d = [], []
        pending = orders
        n_seen = 0  # the first n_seen pending orders were in the last window and still had candidates ...
        more = np.zeros(0, bool)  # ... and of those, the ones whose list was full (k), so may have more
        last: tuple[np.ndarray, np.ndarray] | None = None  # (free drivers, ETA matrix) of the last round, when exact
        kept = np.zeros(0, np.int64)  # rows of that matrix whose orders head the pending list now
        for _ in range(self.rounds):
            if free == 0 or pending.size == 0:
                break  # every idle driver has an order, or every order a driver
            # FCFS: at most one order per free driver can be served, so only the oldest few need an ETA
            window = pending[: 2 * free + 16]
            if self._skip_exhausted and window.size <= n_seen and not more[: window.size].any():
                # every order in the window saw all its eligible drivers last round (fewer than k) and they
                # are all taken now: this round could match nothing
                break
            exact = sim.ranks_every_driver(
                window.size, free, self.k
            )  # the free drivers are exactly candidates' eligible ones
            if (
                exact and self._reuse_etas
            ):  # what candidates() computes, with the ETAs of orders and drivers of the last round reused
                cols = (idle & ~taken).nonzero()[0]
                e = self._etas(sim, window, cols, node, t_free, last, kept)
                ids, eta = sim.top_k(e, cols, self.k)
                last = (cols, e)
            else:
                ids, eta = sim.candidates(window, self.k, exclude=taken, among=idle, free_at=(node, t_free))
                last = None
            ids = sim.drop_last_decliners(window, ids)
            match = fcfs_match(ids, taken)
            got = match >= 0
            n_got = int(got.sum())
            if n_got == 0:
                break  # nothing more can be matched this epoch
            free -= n_got
            out_o.append(window[got])
            out_d.append(match[got])
            # unmatched orders that still had candidates keep their place ahead of the rest
            keep = ~got & (ids >= 0).any(axis=1)
            kept = keep.nonzero()[0]
            more = np.isfinite(eta[keep, -1]) if exact else np.ones(int(keep.sum()), bool)
            n_seen = more.size
            pending = np.concatenate([window[keep], pending[len(window) :]])
        o = np.concatenate(out_o) if out_o else np.zeros(0, np.int64)
        d = np.concatenate(out_d) if out_d else np.zeros(0, np.int64)
        order = np.argsort(o, kind="stable")  # hand offers over oldest order first
        o, d = o[order], d[order]
        return Decision(order=o, driver=d, level=escalation_levels(sim, o))

    @staticmethod
    def _etas(
        sim: Simulator,
        window: np.ndarray,
        cols: np.ndarray,
        node: np.ndarray,
        t_free: np.ndarray,
        last: tuple[np.ndarray, np.ndarray] | None,
        kept: np.ndarray,
    ) -> np.ndarray:
        """``sim.feasible_etas`` of ``window`` x ``cols``. The window starts with the last round's unmatched
        orders (rows ``kept`` of its matrix) and the free drivers are a subset of its columns; nothing in the
        simulator changed since, so those entries are read back and only the window's new orders are computed."""
        n_old = min(kept.size, window.size) if last is not None else 0
        if last is None or n_old == 0:
            return sim.feasible_etas(window, cols, node[cols], t_free[cols])
        last_cols, last_e = last
        old = last_e[kept[:n_old, None], np.searchsorted(last_cols, cols)]
        if n_old == window.size:
            return old
        new = sim.feasible_etas(window[n_old:], cols, node[cols], t_free[cols])
        return np.concatenate([old, new])
