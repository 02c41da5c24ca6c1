"""Routes: legs between nodes, inserting accepted orders, re-sequencing, taking orders back.

A leg is tracked in free-flow seconds at the vehicle's speed (``_set_leg``); an accepted order goes into
an empty route as ``[pickup, drop-off]`` or at its cheapest feasible place (``_insert_batch``, all of a
step's accepted pairs at once, costed by ``_evaluate_rows``: completion time plus a heavy weight on lateness,
with capacity and the same-pickup bundle rule as hard constraints); an incident that starts or ends
re-sequences the busy routes of its zone
(phase 2 of a step, ``_on_traffic_change``).
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.arrays import EPS, nz
from gigdispatch.envs.core.queries import Queries
from gigdispatch.envs.core.types import (
    ORDER_ASSIGNED,
    ORDER_OPEN,
    ORDER_PICKED,
    PH_DRIVING,
    PH_IDLE,
    PH_SERVICE,
    STOP_DROPOFF,
    STOP_PICKUP,
)


class RoutingPhase(Queries):
    """Legs, route insertion and re-sequencing, releasing orders."""

    def _set_leg(self, d: np.ndarray, to: np.ndarray, geofence: bool = True) -> None:
        """Start a leg from each driver's node to ``to`` (free-flow seconds at the vehicle's speed). Legs to a
        stop end when the driver enters the stop's geofence; repositioning legs (``geofence=False``) at the
        node."""
        dr = self.drivers
        frm = dr.node[d]
        ff = self.city.travel_s(frm, to) / dr.speed[d]
        dist = self.city.dist_m(frm, to)
        geo = self.cfg.fleet.geofence_m if geofence else 0.0
        dr.leg_to[d] = to
        dr.leg_ff[d] = ff
        dr.leg_left[d] = ff
        dr.leg_geo[d] = ff * np.minimum(1.0, geo / np.maximum(dist, EPS))  # 0 when ff is 0 (same node)
        dr.leg_dist[d] = dist
        dr.phase[d] = PH_DRIVING
        self._leg_empty()[d] = self._carries_nothing(d)  # nothing is picked up or dropped off on the way
        if self.cfg.fleet.service_from_arrival:
            self._stand_since()[d[ff > EPS]] = np.inf  # it leaves its node (a zero-length leg: it stays)

    def _carries_nothing(self, d: np.ndarray) -> np.ndarray:
        """(len(d),) bool: drivers ``d`` have nothing on board: ``load <= 0`` (within ``EPS``) and no drop-off of a
        picked-up order in the route (the second test because orders may have zero volume, as in MDRP). What
        they drive with nothing on board counts in ``empty_m``: repositioning, drifting, or on the way to a pickup."""
        dr = self.drivers
        empty = dr.load[d] <= EPS
        vol = self.orders.volume
        if getattr(self, "_volume_src", None) is not vol:  # once per episode: may an order weigh nothing?
            self._volume_src, self._weightless = vol, bool((vol <= EPS).any())
        if not self._weightless:
            return empty  # every order on board adds load
        drop = dr.route_kind[d] == STOP_DROPOFF  # every drop-off stop holds a valid order id
        if drop.any():
            picked = np.zeros(drop.shape, bool)
            picked[drop] = self.orders.status[dr.route_order[d][drop]] == ORDER_PICKED
            empty &= ~picked.any(axis=1)
        return empty

    def _leg_empty(self) -> np.ndarray:
        """(D,) bool: each driver's current leg is driven with nothing on board (``state.leg_empty``, set when
        a leg starts: on board does not change on the way; computed for everyone on a loaded state)."""
        st = self.state
        if st.leg_empty is None or len(st.leg_empty) != self.drivers.n:
            st.leg_empty = self._carries_nothing(np.arange(self.drivers.n))
        return st.leg_empty

    def _divert(self, d: np.ndarray) -> None:
        """Drivers ``d`` abandon their repositioning leg where they are: they stop, idle, at the road node
        nearest their interpolated position among the nodes they could have reached from the leg's start
        in the time driven (so a diversion never moves anyone faster than free flow; the start node always
        qualifies). The metres driven so far are already counted."""
        dr = self.drivers
        city = getattr(self.city, "base", self.city)  # one copy of a ``TiledCity`` (several days' nodes)
        start = dr.node[d]
        local = start % city.n_nodes
        xy = self.driver_xy(d)
        driven = dr.leg_ff[d] - dr.leg_left[d]  # free-flow seconds at the vehicle's speed
        reach = city.travel_s_from(local) / dr.speed[d][:, None] <= driven[:, None] + EPS
        nx, ny = city.node_xy[:, 0], city.node_xy[:, 1]
        far = (nx[None, :] - xy[:, :1]) ** 2 + (ny[None, :] - xy[:, 1:]) ** 2
        node = (np.where(reach, far, np.inf).argmin(axis=1) + (start - local)).astype(np.int32)
        dr.node[d] = node
        dr.leg_to[d] = node
        dr.leg_ff[d] = dr.leg_left[d] = dr.leg_geo[d] = dr.leg_dist[d] = 0.0
        dr.phase[d] = PH_IDLE
        self._stood(d, self.state.t)

    def _insert(self, o: np.ndarray, d: np.ndarray) -> None:
        """Put accepted orders into their drivers' routes (each driver at most once per call)."""
        dr, od = self.drivers, self.orders
        od.status[o] = ORDER_ASSIGNED
        od.t_assigned[o] = self.state.t
        self.state.committed[d] += od.volume[o]
        empty = dr.route_len[d] == 0
        all_empty = bool(empty.all())
        fo, fd = (o, d) if all_empty else (o[empty], d[empty])
        if fo.size:  # fast path: an empty route becomes [pickup, drop-off]
            dr.route_node[fd, 0], dr.route_node[fd, 1] = od.pickup[fo], od.dropoff[fo]
            dr.route_order[fd, 0] = dr.route_order[fd, 1] = fo
            dr.route_kind[fd, 0], dr.route_kind[fd, 1] = STOP_PICKUP, STOP_DROPOFF
            dr.route_len[fd] = 2
            # driving with an empty route: repositioning, or its order taken back. One already heading to
            # the pickup drives on; the others stop where they are and turn towards it
            moving = fd[(dr.phase[fd] == PH_DRIVING) & (dr.leg_to[fd] != dr.route_node[fd, 0])]
            if moving.size:
                self._divert(moving)
            idle = fd[dr.phase[fd] == PH_IDLE]
            if idle.size:
                self._set_leg(idle, dr.route_node[idle, 0])
        if all_empty:
            return
        no, nd = o[~empty], d[~empty]
        ok = self._insert_batch(no, nd)
        if not ok.all():
            fail_o, fail_d = no[~ok], nd[~ok]
            self._count("insert_failed", fail_d, "d")
            self._reopen(fail_o)
            od.driver[fail_o] = -1

    def _route_starts(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node, time, first insertable position), each (len(d),), from which the routes of drivers ``d`` can
        change: after the visit being served, at the end of the current leg (a leg to the route's head stop locks
        it), or where an idle driver stands, now."""
        dr, t_now = self.drivers, self.state.t
        phase = dr.phase[d]
        serv, driving = phase == PH_SERVICE, phase == PH_DRIVING
        f = self.state.factor[self.city.zone_of[dr.node[d]]]
        drive_t = t_now + np.maximum(dr.leg_left[d] - dr.leg_geo[d], 0.0) * f
        node = np.where(driving, dr.leg_to[d], dr.node[d]).astype(np.int64)
        t = np.where(serv, dr.t_depart[d], np.where(driving, drive_t, t_now))
        locked = ((dr.route_len[d] > 0) & (dr.route_node[d, 0] == dr.leg_to[d])).astype(np.int64)
        first = np.where(serv, dr.group_n[d].astype(np.int64), np.where(driving, locked, 0))
        return node, t, first

    def _insert_one(self, o: int, d: int) -> bool:
        """Cheapest feasible insertion of order ``o``'s pickup and drop-off into driver ``d``'s route."""
        return bool(self._insert_batch(np.array([o], np.int64), np.array([d], np.int64))[0])

    def _insert_batch(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Cheapest feasible insertion of each order ``o[i]``'s pickup and drop-off into the route of driver
        ``d[i]`` (distinct drivers: their insertions are independent), all pairs in one pass over their candidate
        routes, padded to the longest. Returns (len(o),) bool: inserted. A pair's candidates are its places in the
        order of ``np.triu_indices(L + 1)`` (pickup before old stop ``i``, drop-off before old stop ``j >= i``, not
        before the first insertable position); the first of least cost among the feasible ones wins."""
        dr, od, S = self.drivers, self.orders, self.S
        ok = np.zeros(len(o), bool)
        L = dr.route_len[d].astype(np.int64)
        live = np.flatnonzero(L + 2 <= S)
        if live.size == 0:
            return ok
        o, d, L = o[live], d[live], L[live]
        start_node, start_t, first = self._route_starts(d)
        Lm = int(L.max())
        ti, tj = np.triu_indices(Lm + 1)
        pair, col = np.nonzero((tj[None, :] <= L[:, None]) & (ti[None, :] >= first[:, None]))
        if pair.size == 0:
            return ok
        ii, jj = ti[col], tj[col]
        W = Lm + 2
        pos = np.arange(W)[None, :]
        ins_p, ins_d = ii[:, None], jj[:, None] + 1
        # source index of each slot in the new route: old stops shift right past the inserted ones
        src = pos - (pos > ins_p).astype(np.int64) - (pos > ins_d).astype(np.int64)
        src = np.clip(src, 0, np.maximum(L[pair][:, None] - 1, 0))
        dp = d[pair][:, None]
        o_r = o[pair][:, None]
        is_p, is_d = pos == ins_p, pos == ins_d
        nodes = np.where(is_p, od.pickup[o_r], np.where(is_d, od.dropoff[o_r], dr.route_node[dp, src])).astype(np.int64)
        kinds = np.where(is_p, STOP_PICKUP, np.where(is_d, STOP_DROPOFF, dr.route_kind[dp, src]))
        ords = np.where(is_p | is_d, o_r, dr.route_order[dp, src]).astype(np.int64)
        n_len = L + 2
        cost, feasible = self._evaluate_rows(d, pair, nodes, kinds, ords, n_len, start_node, start_t)
        c = np.where(feasible, cost, np.inf)
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        best_c = np.minimum.reduceat(c, starts)  # inf: no feasible candidate
        rows = np.flatnonzero((c == np.repeat(best_c, np.diff(np.r_[starts, len(pair)]))) & np.isfinite(c))
        won, first_row = np.unique(pair[rows], return_index=True)
        best = rows[first_row]  # per pair with a feasible candidate: its first of least cost (np.argmin's)
        if best.size == 0:
            return ok
        dw, ow = d[won], o[won]
        span = pos < n_len[won][:, None]
        for name, new in (("route_node", nodes), ("route_kind", kinds), ("route_order", ords)):
            a = getattr(dr, name)
            rows_old = a[dw]
            rows_old[:, :W] = np.where(span, new[best], rows_old[:, :W])
            a[dw] = rows_old
        dr.route_len[dw] = (L[won] + 2).astype(dr.route_len.dtype)
        self._join_visits(ow, dw, ii[best])
        ok[live[won]] = True
        return ok

    def _evaluate_rows(
        self,
        d: np.ndarray,
        pair: np.ndarray,
        nodes: np.ndarray,
        kinds: np.ndarray,
        ords: np.ndarray,
        n_len: np.ndarray,
        start_node: np.ndarray,
        start_t: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cost and feasibility of candidate routes: row ``r`` of ``nodes`` / ``kinds`` / ``ords`` (R, W) is a route of
        ``n_len[pair[r]]`` stops (padding after them) for driver ``d[pair[r]]``, from ``start_node`` / ``start_t``
        of its pair. Cost: completion time plus a heavy weight on lateness; capacity and the same-pickup bundle
        rule are hard constraints."""
        dr, od, S = self.drivers, self.orders, self.S
        R, W = nodes.shape
        dd = d[pair]
        f = (self.state.factor[self.city.zone_of[start_node]] / dr.speed[d])[pair]
        sf, cap, shift_end = dr.service_factor[dd], dr.capacity[dd], dr.shift_end[dd]
        rlen = n_len[pair]
        # orders already on board at the start: their drop-offs are in the route, their pickups are not
        ro = dr.route_order[d]
        in_route = np.arange(S)[None, :] < dr.route_len[d][:, None].astype(np.int64)
        picked = in_route & (dr.route_kind[d] == STOP_DROPOFF) & (od.status[np.maximum(ro, 0)] == ORDER_PICKED)
        n_on = picked.sum(axis=1)
        load0 = dr.load[d].astype(np.float64)
        g = dr.group_n[d].astype(np.int64)
        done = (dr.phase[d] == PH_SERVICE) & dr.event_done[d]
        head_pick = dr.route_kind[d, 0] == STOP_PICKUP
        for k in np.flatnonzero(done).tolist():
            # the routes still start with the visit being served, whose pickups/drop-offs are already applied to
            # the load and the statuses: start from the state before that visit, not to count it twice
            vol = float(od.volume[ro[k, : g[k]]].astype(np.float64).sum())
            sign = 1 if head_pick[k] else -1
            load0[k] -= sign * vol
            n_on[k] -= sign * g[k]
        # a pickup visit whose pickups are done is a closed bundle: a later pickup, even at the same node, is a
        # new visit, allowed only once everything on board is dropped off (joining happens in _join_visits)
        closed = np.where(done & head_pick, g - 1, -1)[pair]
        t = start_t[pair].astype(np.float64)
        at = start_node[pair]
        feasible = np.ones(R, bool)
        late = np.zeros(R)
        load = load0[pair]
        seg_node = np.full(R, -1, np.int64)
        in_drop = np.zeros(R, bool)
        onboard = n_on[pair]
        same_pick = self.cfg.same_pickup_bundles
        for s in range(W):
            act = s < rlen  # rows past their route's end keep their values
            n_s = np.where(act, nodes[:, s], at)
            k_s, o_s = kinds[:, s], np.where(act, ords[:, s], 0)
            moved = n_s != at
            tn = t + self.city.travel_s(at, n_s) * f
            svc = np.where(k_s == STOP_PICKUP, self.pickup_svc, self.drop_svc) * sf
            tn = np.where(moved, tn + svc / 2.0, tn)
            is_p = k_s == STOP_PICKUP
            tn = np.where(is_p, np.maximum(tn, od.t_ready[o_s]), tn)
            late_n = late + np.where(~is_p, np.maximum(tn - od.deadline[o_s], 0.0), 0.0)
            feas_n = feasible & ~(is_p & (tn > shift_end))
            load_n = load + np.where(is_p, od.volume[o_s], -od.volume[o_s])
            feas_n &= load_n <= cap + EPS
            if same_pick:
                new_seg = is_p & (in_drop | (seg_node < 0))
                feas_n &= ~(new_seg & (onboard > 0))
                feas_n &= ~(is_p & ~new_seg & (seg_node >= 0) & (n_s != seg_node))
                seg_node = np.where(act & new_seg, n_s, seg_node)
                in_drop = np.where(act, np.where(new_seg, False, in_drop | ~is_p) | (s == closed), in_drop)
                onboard = np.where(act, onboard + np.where(is_p, 1, -1), onboard)
            nxt_same = (s + 1 < rlen) & (nodes[:, min(s + 1, W - 1)] == n_s)
            tn = np.where(nxt_same, tn, tn + svc / 2.0)
            t = np.where(act, tn, t)
            late = np.where(act, late_n, late)
            feasible = np.where(act, feas_n, feasible)
            load = np.where(act, load_n, load)
            at = n_s
        return t + 10.0 * late, feasible

    def _join_visits(self, o: np.ndarray, d: np.ndarray, at: np.ndarray) -> None:
        """Order ``o[i]``'s pickup went in at route position ``at[i]`` of driver ``d[i]``: when that is right behind
        the pickup visit the driver is serving now, at the same node, and the visit's pickups are not done yet, the
        order joins the visit (one bundle, one pickup event: at the later of the visit's event time and the order's
        ready time), instead of a second visit with the first orders already on board."""
        dr, od = self.drivers, self.orders
        g = dr.group_n[d].astype(np.int64)
        can = (dr.phase[d] == PH_SERVICE) & ~dr.event_done[d] & (at == g) & (g > 0)
        can &= (dr.route_kind[d, 0] == STOP_PICKUP) & (od.pickup[o] == dr.route_node[d, 0])
        t_ev = np.maximum(dr.t_event[d], od.t_ready[o])
        can &= ~(
            t_ev > dr.shift_end[d] + EPS
        )  # _evaluate_rows allowed it as a later visit; joining would not change that
        if not can.any():
            return
        j = d[can]
        dr.group_n[j] = (g[can] + 1).astype(dr.group_n.dtype)
        dr.t_event[j] = t_ev[can]
        dr.t_depart[j] = t_ev[can] + self.pickup_svc * dr.service_factor[j] / 2.0

    def resequence(self, d: int) -> bool:
        """Re-insert each not-yet-picked order of driver ``d`` at its cheapest place; True if the route changed."""
        dr, od = self.drivers, self.orders
        L = int(dr.route_len[d])
        if L < 4:
            return False
        start_node, start_t, _ = self._route_starts(np.array([d], np.int64))  # (1,) each
        before = dr.route_order[d, :L].copy()
        cost0 = self._route_cost(d, L, start_node, start_t)
        cand = np.unique(before)
        # orders whose pickup is being served right now stay at the head of the route (as in _route_starts)
        movable = [int(x) for x in cand[(od.status[cand] == ORDER_ASSIGNED) & ~self.in_service(cand)]]
        saved = (dr.route_node[d].copy(), dr.route_kind[d].copy(), dr.route_order[d].copy(), int(dr.route_len[d]))
        for oi in movable:
            self._drop_stops(np.array([d]), np.array([oi]))
            if not self._insert_one(oi, d):
                dr.route_node[d], dr.route_kind[d], dr.route_order[d] = saved[0], saved[1], saved[2]
                dr.route_len[d] = saved[3]
                return False
        cost1 = self._route_cost(d, int(dr.route_len[d]), start_node, start_t)
        if cost1 > cost0 + EPS:  # keep the old order when the greedy pass did not help
            dr.route_node[d], dr.route_kind[d], dr.route_order[d] = saved[0], saved[1], saved[2]
            dr.route_len[d] = saved[3]
            return False
        return not np.array_equal(before, dr.route_order[d, :L])

    def _route_cost(self, d: int, L: int, start_node: np.ndarray, start_t: np.ndarray) -> float:
        """``_evaluate_rows``'s cost of driver ``d``'s current route (its first ``L`` stops) from ``start_node`` /
        ``start_t`` ((1,) each, ``_route_starts``)."""
        dr, rows = self.drivers, slice(d, d + 1)
        nodes, kinds, ords = dr.route_node[rows, :L], dr.route_kind[rows, :L], dr.route_order[rows, :L]
        one = np.zeros(1, np.int64)
        rlen = np.array([L], np.int64)
        cost, _ = self._evaluate_rows(
            np.array([d], np.int64),
            one,
            nodes.astype(np.int64),
            kinds,
            ords.astype(np.int64),
            rlen,
            start_node,
            start_t,
        )
        return float(cost[0])

    def _drop_stops(self, rows: np.ndarray, orders: np.ndarray) -> None:
        """Remove every stop of ``orders`` from the routes of drivers ``rows`` (compacting them)."""
        dr = self.drivers
        ro = dr.route_order[rows]
        keep = (ro >= 0) & ~np.isin(ro, orders)
        idx = np.argsort(~keep, axis=1, kind="stable")
        n_keep = keep.sum(axis=1)
        valid = np.arange(self.S)[None, :] < n_keep[:, None]
        for name in ("route_node", "route_order", "route_kind"):
            a = getattr(dr, name)
            a[rows] = np.where(valid, a[rows[:, None], idx], -1)
        dr.route_len[rows] = n_keep

    def _release(self, o: np.ndarray) -> None:
        """Take assigned (not picked-up) orders back from their drivers: they re-open."""
        if o.size == 0:
            return
        d = self.orders.driver[o].astype(np.int64)
        self._drop_stops(np.unique(d), o)
        np.subtract.at(self.state.committed, d, self.orders.volume[o])
        self._reopen(o)

    def _reopen(self, o: np.ndarray) -> None:
        od = self.orders
        od.status[o] = ORDER_OPEN
        od.driver[o] = -1
        od.t_assigned[o] = np.nan

    def _on_traffic_change(self, t: float) -> None:
        """An incident started or ended: ETAs follow the new factors; busy routes in the zone are
        re-sequenced."""
        self.state.counters["eta_updates"] += 1
        self._resequence_in(self.state.traffic.changed_zones(t - self.dt, t))

    def _resequence_in(self, zones: np.ndarray) -> None:
        """Re-sequence the routes of the drivers with several orders who stand in ``zones``."""
        dr = self.drivers
        cand = nz(np.isin(self.city.zone_of[dr.node], zones) & (dr.route_len >= 4))
        for d in cand.tolist():  # only drivers with several orders in an affected zone
            if self.resequence(d):
                self._count("resequenced", np.array([d]), "d")
