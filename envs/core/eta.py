"""ETAs under current traffic, and the candidate drivers of an order ranked by pickup ETA.

When each driver is free and where (``driver_free``), pickup ETAs of order-driver pairs
(``pickup_eta``, ``pair_eta``, ``feasible_etas``), the top-``k`` drivers of each order (``candidates``,
``top_k``), the drivers already due at an order's pickup (``bundle_candidates``), the estimated event time
of every route stop (``route_eta``, ``order_eta``) and the orders at risk of missing their SLA (``at_risk``,
``open_at_risk``).
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.arrays import nz
from gigdispatch.envs.core.queries import Queries
from gigdispatch.envs.core.types import ORDER_ASSIGNED, PH_DRIVING, PH_SERVICE, STOP_DROPOFF, STOP_PICKUP, Drivers


class _Rows:
    """Read-only view of some drivers' fields: ``_Rows(drivers, rows).node == drivers.node[rows]``."""

    def __init__(self, drivers: Drivers, rows: np.ndarray) -> None:
        self._d, self._rows = drivers, rows

    def __getattr__(self, name: str) -> np.ndarray:
        value = getattr(self._d, name)[self._rows]
        setattr(self, name, value)
        return value


class EtaQueries(Queries):
    """Pickup and route ETAs, candidate drivers, orders at risk."""

    def driver_free(self, drivers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Node and time at which each of ``drivers`` (default: all) finishes its current route, or its
        current leg when it has no route; both arrays are aligned with ``drivers``."""
        dr = self.drivers
        d = np.arange(dr.n) if drivers is None else np.asarray(drivers, dtype=np.int64)
        node = dr.leg_to[d].astype(np.int64)
        t_free = self._leg_arrival(d)
        busy = nz(dr.route_len[d] > 0)
        if busy.size:
            rows = d[busy]
            eta = self.route_eta(rows)
            last = dr.route_len[rows].astype(np.int64) - 1
            svc = np.where(dr.route_kind[rows, last] == STOP_PICKUP, self.pickup_svc, self.drop_svc)
            svc = svc * dr.service_factor[rows]
            t_free[busy] = eta[np.arange(rows.size), last] + svc / 2.0
            node[busy] = dr.route_node[rows, last]
        return node, t_free

    def _leg_arrival(self, d: np.ndarray | None = None) -> np.ndarray:
        """When each of drivers ``d`` (default: all) reaches the end of its current leg (now if not driving)."""
        dr = self.drivers
        if d is None:
            d = np.arange(dr.n)
        phase = dr.phase[d]
        f = self.state.factor[self.city.zone_of[dr.node[d]]]
        wall = np.maximum(dr.leg_left[d] - dr.leg_geo[d], 0.0) * f
        t = self.state.t
        return np.where(phase == PH_DRIVING, t + wall, np.where(phase == PH_SERVICE, dr.t_depart[d], t))

    def pickup_eta(self, orders: np.ndarray, drivers: np.ndarray) -> np.ndarray:
        """(len(orders), len(drivers)) seconds from now until each driver could reach each pickup."""
        drivers = np.asarray(drivers, dtype=np.int64)
        node, t_free = self.driver_free(drivers)
        local = np.arange(drivers.size)
        return self.pair_eta(np.asarray(orders)[:, None], local[None, :], drivers, node, t_free)

    def pair_eta(
        self, orders: np.ndarray, local: np.ndarray, drivers: np.ndarray, node: np.ndarray, t_free: np.ndarray
    ) -> np.ndarray:
        """Pickup ETA (seconds from now) for broadcast arrays of order ids and positions ``local`` into
        ``drivers`` (whose free node and time are ``node`` and ``t_free``, aligned with ``drivers``)."""
        dn = node[local]
        zf = self.state.factor[self.city.zone_of[dn]]
        tt = self.city.travel_s(dn, self.orders.pickup[orders])
        return (t_free[local] - self.state.t) + tt * zf / self.drivers.speed[drivers[local]]

    EXACT_PAIRS = 60_000  # above this many order-driver pairs, candidates are pre-selected with a KD-tree

    def ranks_every_driver(self, n_orders: int, n_drivers: int, k: int) -> bool:
        """Whether ``candidates`` for ``n_orders`` orders among ``n_drivers`` eligible drivers ranks every
        driver (exact), so that a row with fewer than ``k`` entries lists all the order's eligible drivers;
        otherwise it ranks a KD-tree pool of the ``4k`` nearest in straight line."""
        return n_orders * n_drivers <= self.EXACT_PAIRS or n_drivers <= 4 * k

    def candidates(
        self,
        orders: np.ndarray,
        k: int,
        idle_only: bool = False,
        exclude: np.ndarray | None = None,
        among: np.ndarray | None = None,
        free_at: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` eligible drivers by pickup ETA for each order: ``(ids, eta)``, each (len(orders), k),
        -1/inf padded.

        Drivers that cannot carry the order's volume, or could not pick it up before their shift ends,
        are left out; ``among`` is the (D,) mask of drivers to consider (default ``eligible(idle_only)``,
        for callers that already hold it); ``exclude`` is an optional (D,) mask of
        drivers to leave out too. Exact over all pairs when that is cheap; otherwise the ``4k`` drivers
        nearest in straight line to each pickup (a KD-tree) are ranked by travel-time ETA, which keeps
        the cost O((orders + drivers) log drivers) per call. ``free_at = (node, t_free)``: two (D,) arrays
        holding a caller's ``driver_free(drivers)`` at least at every eligible driver, reused across calls
        within one epoch (the state does not change between them).
        """
        orders = np.asarray(orders, dtype=np.int64)
        elig_mask = self.eligible(idle_only) if among is None else among
        if exclude is not None:
            elig_mask = elig_mask & ~exclude
        elig = nz(elig_mask)
        n_o = len(orders)
        if n_o == 0 or elig.size == 0:
            return np.full((n_o, k), -1, np.int64), np.full((n_o, k), np.inf)
        if free_at is None:
            node, t_free = self.driver_free(elig)  # aligned with elig
        else:
            node, t_free = free_at[0][elig], free_at[1][elig]
        if self.ranks_every_driver(n_o, elig.size, k):
            return self.top_k(self.feasible_etas(orders, elig, node, t_free), elig, k)
        from scipy.spatial import cKDTree

        tree = cKDTree(self.city.node_xy[node])
        _, local = tree.query(self.city.node_xy[self.orders.pickup[orders]], k=4 * k)
        e = self.pair_eta(orders[:, None], local, elig, node, t_free)  # (n_o, m)
        pool = elig[local]
        dr = self.drivers
        room = dr.capacity[pool] - self.state.committed[pool]
        return self.top_k(self._feasible(orders, e, room, dr.shift_end[pool]), pool, k)

    def feasible_etas(
        self, orders: np.ndarray, drivers: np.ndarray, node: np.ndarray, t_free: np.ndarray
    ) -> np.ndarray:
        """(len(orders), len(drivers)) pickup ETAs (seconds from now) of every pair, ``inf`` where the driver
        cannot take the order (its volume over the driver's free room, or a pickup after the shift ends): what
        ``candidates`` ranks when it ranks every driver. ``node``/``t_free`` are the drivers' ``driver_free``
        (aligned with ``drivers``). Each entry depends on its pair only, so a sub-matrix of the result equals
        the result for the sub-sets (callers may cache it within one decision epoch)."""
        dr = self.drivers
        # per-driver terms as (1, m) rows, no gathers through an index grid; pair_eta's formula, term for term
        zf = self.state.factor[self.city.zone_of[node]]
        tt = self.city.travel_s_to(self.orders.pickup[orders], node)
        e = (t_free - self.state.t)[None, :] + tt * zf / dr.speed[drivers]
        room = (dr.capacity[drivers] - self.state.committed[drivers])[None, :]
        return self._feasible(orders, e, room, dr.shift_end[drivers][None, :])

    def _feasible(self, orders: np.ndarray, e: np.ndarray, room: np.ndarray, shift_end: np.ndarray) -> np.ndarray:
        """``e`` with ``inf`` where the order does not fit the driver's ``room`` or its pickup falls after
        ``shift_end``."""
        fits = room >= self.orders.volume[orders][:, None]
        # the pickup must happen before the driver's shift ends (no pickups after it)
        t_pick = np.maximum(self.state.t + e + self.pickup_svc / 2.0, self.orders.t_ready[orders][:, None])
        fits &= t_pick <= shift_end
        return np.where(fits, e, np.inf)

    @staticmethod
    def top_k(e: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest finite entries of each row of ``e``, ascending, as ``(ids, eta)``, each
        (rows, k), -1/inf padded; ``ids`` names the columns: (m,) shared, or (rows, m). Equal entries keep the order
        ``np.argpartition`` leaves them in (a row with at most ``k`` columns: the earlier column first)."""
        n_o, m = e.shape
        kk = min(k, m)
        r = np.arange(n_o)[:, None]
        if kk < m:  # the kk smallest of each row, then those sorted (stable)
            part = np.argpartition(e, kk - 1, axis=1)[:, :kk]
            pe = e[r, part]
            srt = np.argsort(pe, axis=1, kind="stable")
            part = part[r, srt]
            pe = pe[r, srt]
        else:  # every column: one stable sort
            part = np.argsort(e, axis=1, kind="stable")
            pe = e[r, part]
        chosen = ids[part] if ids.ndim == 1 else ids[r, part]
        chosen = np.where(np.isfinite(pe), chosen, -1)
        if kk == k:
            return chosen, pe
        out_ids = np.full((n_o, k), -1, np.int64)
        eta = np.full((n_o, k), np.inf)
        out_ids[:, :kk] = chosen
        eta[:, :kk] = pe
        return out_ids, eta

    def bundle_candidates(
        self, orders: np.ndarray, among: np.ndarray, bundle_k: int = 2
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, bundle_k) drivers (among ``among``, a (D,) mask) already due at each order's pickup (the same pickup
        node and group, a pickup not yet under way): ``(ids, eta, hold)``, -1/inf/0 padded.

        ``eta`` is the pickup ETA if the order joins that visit (the visit waits for the latest ready
        time), ``hold`` how much later the visit then happens than planned (the carried orders wait too).
        """
        n, bk = len(orders), int(bundle_k)
        ids = np.full((n, bk), -1, np.int64)
        eta = np.full((n, bk), np.inf)
        hold = np.zeros((n, bk))
        dr, od = self.drivers, self.orders
        busy = (among & (dr.route_len > 0)).nonzero()[0]
        if bk == 0 or busy.size == 0 or n == 0:
            return ids, eta, hold
        ro = dr.route_order[busy]
        S = self.S
        pos = np.arange(S)[None, :]
        live = (pos < dr.route_len[busy][:, None]) & (dr.route_kind[busy] == STOP_PICKUP)
        live &= od.status[np.maximum(ro, 0)] == ORDER_ASSIGNED
        live &= ~self.visit_stops(busy)  # visit under way
        if not live.any():
            return ids, eta, hold
        r, s = live.nonzero()
        rows_eta = self.route_eta(busy[np.unique(r)])
        st_eta = rows_eta[np.searchsorted(np.unique(r), r), s] - self.state.t
        st_drv = busy[r]
        G = int(od.group.max()) + 1
        key = dr.route_node[st_drv, s].astype(np.int64) * G + od.group[ro[r, s]].astype(
            np.int64
        )  # (pickup node, group)
        srt = np.lexsort((st_eta, key))
        key, st_drv, st_eta = key[srt], st_drv[srt], st_eta[srt]
        # one entry per (driver, pickup place): its earliest stop there
        first = np.sort(np.unique(key * dr.n + st_drv, return_index=True)[1])
        key, st_drv, st_eta = key[first], st_drv[first], st_eta[first]
        okey = od.pickup[orders].astype(np.int64) * G + od.group[orders].astype(np.int64)
        lo = np.searchsorted(key, okey, side="left")
        hi = np.searchsorted(key, okey, side="right")
        free_cap = dr.capacity - self.state.committed
        ready = od.t_ready[orders] - self.state.t
        for j in range(bk):
            idx = lo + j
            ok = idx < hi
            if not ok.any():
                break
            ii = np.minimum(idx, len(key) - 1)
            d = st_drv[ii]
            # the visit happens when its last order is ready: this order may hold the others up
            e = np.maximum(np.maximum(st_eta[ii], 0.0), ready)
            ok &= free_cap[d] >= od.volume[orders]
            ok &= self.state.t + e <= dr.shift_end[d]  # no pickups after the shift
            ids[:, j] = np.where(ok, d, -1)
            eta[:, j] = np.where(ok, e, np.inf)
            hold[:, j] = np.where(ok, e - np.maximum(st_eta[ii], 0.0), 0.0)
        return ids, eta, hold

    def route_eta(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), S) estimated event time (pickup or drop-off) at each route stop under current traffic,
        nan padded; ``rows`` are driver ids (default: all drivers)."""
        o = self.orders
        rows = np.arange(self.drivers.n) if rows is None else np.asarray(rows, dtype=np.int64)
        dr = _Rows(self.drivers, rows)
        n, S = len(rows), self.S
        eta = np.full((n, S), np.nan)
        f = self.state.factor[self.city.zone_of[dr.node]]
        serving = dr.phase == PH_SERVICE
        t_cur = self._leg_arrival(rows)
        pos = np.where(dr.phase == PH_DRIVING, dr.leg_to, dr.node).astype(np.int64)
        prev_node = np.full(n, -1, np.int64)
        prev_kind = np.full(n, -1, np.int64)
        prev_eta = np.full(n, np.nan)
        visit_end = t_cur.copy()
        for s in range(S):
            valid = s < dr.route_len
            if not valid.any():
                break
            node_s = np.where(valid, dr.route_node[:, s], 0).astype(np.int64)
            kind_s = dr.route_kind[:, s]
            order_s = np.where(valid, dr.route_order[:, s], 0)
            in_service = serving & (s < dr.group_n)
            same_visit = (node_s == prev_node) & (kind_s == prev_kind)
            svc = np.where(kind_s == STOP_PICKUP, self.pickup_svc, self.drop_svc) * dr.service_factor
            travel = np.where(
                s == 0,
                self.city.travel_s(pos, node_s) * f / dr.speed,
                self.city.travel_s(np.maximum(prev_node, 0), node_s) * f / dr.speed,
            )
            travel = np.where((s == 0) & (dr.phase == PH_DRIVING) & (dr.leg_to == node_s), 0.0, travel)
            arr = visit_end + travel
            ev = np.where(kind_s == STOP_PICKUP, np.maximum(arr + svc / 2.0, o.t_ready[order_s]), arr + svc / 2.0)
            joined = np.where(kind_s == STOP_PICKUP, np.maximum(prev_eta, o.t_ready[order_s]), prev_eta)
            ev = np.where(same_visit, joined, ev)
            ev = np.where(in_service, dr.t_event, ev)
            after = np.where(same_visit, visit_end + np.maximum(ev - prev_eta, 0.0), ev + svc / 2.0)
            new_end = np.where(in_service, dr.t_depart, after)
            eta[:, s] = np.where(valid, ev, np.nan)
            visit_end = np.where(valid, new_end, visit_end)
            prev_eta = np.where(valid, ev, prev_eta)
            prev_node = np.where(valid, node_s, prev_node)
            prev_kind = np.where(valid, kind_s, prev_kind)
        return eta

    def order_eta(self) -> np.ndarray:
        """(O,) estimated drop-off time of assigned or picked-up orders (nan otherwise)."""
        eta = self.route_eta()
        dr = self.drivers
        out = np.full(self.orders.n, np.nan)
        m = (dr.route_kind == STOP_DROPOFF) & (dr.route_order >= 0)
        out[dr.route_order[m]] = eta[m]
        return out

    def at_risk(self) -> np.ndarray:
        """Orders whose estimated delivery is past their deadline (minus the SLA margin), or that are still
        open although even the nearest driver's trip could not make the deadline."""
        margin = self.cfg.sla.at_risk_minutes * 60.0
        o = self.orders
        eta = self.order_eta()
        risky = nz(np.isfinite(eta) & (eta > o.deadline - margin))
        op = self.open_orders()
        if op.size:
            risky = np.union1d(risky, op[self.open_at_risk(op)])
        return risky

    def open_at_risk(self, orders: np.ndarray, trip: np.ndarray | None = None) -> np.ndarray:
        """(len(orders),) bool: ``at_risk``'s rule for orders still open: even a trip from the pickup straight
        to the drop-off (free flow; ``trip``: those seconds, when the caller holds them), started now or at
        the ready time, would end after the deadline minus the SLA margin."""
        o = self.orders
        margin = self.cfg.sla.at_risk_minutes * 60.0
        if trip is None:
            trip = self.city.travel_s(o.pickup[orders], o.dropoff[orders])
        return np.maximum(self.state.t, o.t_ready[orders]) + trip > o.deadline[orders] - margin
