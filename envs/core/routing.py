"""Routes: legs between nodes, inserting accepted orders, re-sequencing, taking orders back.

A leg is tracked in free-flow seconds at the vehicle's speed (``_set_leg``); an accepted order goes into
an empty route as ``[pickup, drop-off]`` or at its cheapest feasible place (``_insert_one``, costed by
``_evaluate``: completion time plus a heavy weight on lateness, with capacity and the same-pickup bundle
rule as hard constraints); an incident that starts or ends re-sequences the busy routes of its zone
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
        for oi, di in zip(o[~empty].tolist(), d[~empty].tolist(), strict=True):
            if not self._insert_one(oi, di):
                self._count("insert_failed", np.array([di]), "d")
                self._reopen(np.array([oi]))
                od.driver[oi] = -1

    def _route_start(self, d: int) -> tuple[int, float, int]:
        """(node, time, first insertable position) from which driver ``d``'s route can change."""
        dr = self.drivers
        if dr.phase[d] == PH_SERVICE:
            return int(dr.node[d]), float(dr.t_depart[d]), int(dr.group_n[d])
        if dr.phase[d] == PH_DRIVING:
            f = self.state.factor[self.city.zone_of[dr.node[d]]]
            t = self.state.t + max(dr.leg_left[d] - dr.leg_geo[d], 0.0) * f
            locked = 1 if (dr.route_len[d] > 0 and dr.route_node[d, 0] == dr.leg_to[d]) else 0
            return int(dr.leg_to[d]), float(t), locked
        return int(dr.node[d]), float(self.state.t), 0

    def _evaluate(
        self, d: int, nodes: np.ndarray, kinds: np.ndarray, ords: np.ndarray, start_node: int, start_t: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cost and feasibility of candidate routes ``(C, L)`` for driver ``d``: completion time plus a
        heavy weight on lateness; capacity and the same-pickup bundle rule are hard constraints."""
        dr, od = self.drivers, self.orders
        C, L = nodes.shape
        f = self.state.factor[self.city.zone_of[start_node]] / dr.speed[d]
        t = np.full(C, start_t)
        pos = np.full(C, start_node, np.int64)
        feasible = np.ones(C, bool)
        late = np.zeros(C)
        cap = dr.capacity[d]
        seg_node = np.full(C, -1, np.int64)
        in_drop = np.zeros(C, bool)
        # orders already on board at the start: their drop-offs are in the route, their pickups are not
        n_on = int((od.status[np.unique(ords[0])] == ORDER_PICKED).sum()) if L else 0
        load0 = float(dr.load[d])
        if dr.phase[d] == PH_SERVICE and dr.event_done[d]:
            # the routes still start with the visit being served, whose pickups/drop-offs are already applied
            # to the load and the statuses: start from the state before that visit, not to count it twice
            g = int(dr.group_n[d])
            vol = float(od.volume[dr.route_order[d, :g]].astype(np.float64).sum())
            sign = 1 if dr.route_kind[d, 0] == STOP_PICKUP else -1
            load0 -= sign * vol
            n_on -= sign * g
        load = np.full(C, load0)
        onboard = np.full(C, n_on)
        same_pick = self.cfg.same_pickup_bundles
        # a pickup visit whose pickups are done is a closed bundle: a later pickup, even at the same node, is
        # a new visit, allowed only once everything on board is dropped off (joining happens in _insert_one)
        closed = (
            int(dr.group_n[d]) - 1
            if dr.phase[d] == PH_SERVICE and dr.event_done[d] and dr.route_kind[d, 0] == STOP_PICKUP
            else -1
        )
        for s in range(L):
            n_s, k_s, o_s = nodes[:, s], kinds[:, s], ords[:, s]
            moved = n_s != pos
            t = t + self.city.travel_s(pos, n_s) * f
            svc = np.where(k_s == STOP_PICKUP, self.pickup_svc, self.drop_svc) * dr.service_factor[d]
            t = np.where(moved, t + svc / 2.0, t)
            is_p = k_s == STOP_PICKUP
            t = np.where(is_p, np.maximum(t, od.t_ready[o_s]), t)
            late += np.where(~is_p, np.maximum(t - od.deadline[o_s], 0.0), 0.0)
            feasible &= ~(is_p & (t > dr.shift_end[d]))
            load = load + np.where(is_p, od.volume[o_s], -od.volume[o_s])
            feasible &= load <= cap + EPS
            if same_pick:
                new_seg = is_p & (in_drop | (seg_node < 0))
                feasible &= ~(new_seg & (onboard > 0))
                feasible &= ~(is_p & ~new_seg & (seg_node >= 0) & (n_s != seg_node))
                seg_node = np.where(new_seg, n_s, seg_node)
                in_drop = np.where(new_seg, False, in_drop | ~is_p) | (s == closed)
                onboard = onboard + np.where(is_p, 1, -1)
            nxt_same = np.zeros(C, bool) if s + 1 >= L else (nodes[:, s + 1] == n_s)
            t = np.where(nxt_same, t, t + svc / 2.0)
            pos = n_s
        return t + 10.0 * late, feasible

    def _insert_one(self, o: int, d: int) -> bool:
        """Cheapest feasible insertion of order ``o``'s pickup and drop-off into driver ``d``'s route."""
        dr, od = self.drivers, self.orders
        L = int(dr.route_len[d])
        if L + 2 > self.S:
            return False
        start_node, start_t, first = self._route_start(d)
        base_n, base_k, base_o = dr.route_node[d, :L], dr.route_kind[d, :L], dr.route_order[d, :L]
        ii, jj = np.triu_indices(L + 1)  # pickup before old index i, drop-off before old index j (j >= i)
        keep = ii >= first
        ii, jj = ii[keep], jj[keep]
        if ii.size == 0:
            return False
        C = ii.size
        pos = np.arange(L + 2)[None, :]
        ins_p = ii[:, None] + 0
        ins_d = jj[:, None] + 1
        # source index of each slot in the new route: old stops shift right past the inserted ones
        src = pos - (pos > ins_p).astype(np.int64) - (pos > ins_d).astype(np.int64)
        src = np.clip(src, 0, max(L - 1, 0))
        nodes = np.where(pos == ins_p, od.pickup[o], np.where(pos == ins_d, od.dropoff[o], base_n[src] if L else 0))
        kinds = np.where(pos == ins_p, STOP_PICKUP, np.where(pos == ins_d, STOP_DROPOFF, base_k[src] if L else 0))
        ords = np.where((pos == ins_p) | (pos == ins_d), o, base_o[src] if L else 0)
        cost, ok = self._evaluate(d, nodes, kinds, ords, start_node, start_t)
        if not ok.any():
            return False
        best = int(np.argmin(np.where(ok, cost, np.inf)))
        dr.route_node[d, : L + 2] = nodes[best]
        dr.route_kind[d, : L + 2] = kinds[best]
        dr.route_order[d, : L + 2] = ords[best]
        dr.route_len[d] = L + 2
        del C
        self._join_visit(o, d, int(ii[best]))
        return True

    def _join_visit(self, o: int, d: int, at: int) -> None:
        """Order ``o``'s pickup went in at route position ``at``: when that is right behind the pickup visit
        driver ``d`` is serving now, at the same node, and the visit's pickups are not done yet, the order joins
        the visit (one bundle, one pickup event: at the later of the visit's event time and ``o``'s ready time),
        instead of a second visit with the first orders already on board."""
        dr, od = self.drivers, self.orders
        g = int(dr.group_n[d])
        if not (dr.phase[d] == PH_SERVICE and not dr.event_done[d] and at == g and g > 0):
            return
        if dr.route_kind[d, 0] != STOP_PICKUP or od.pickup[o] != dr.route_node[d, 0]:
            return
        t_ev = max(float(dr.t_event[d]), float(od.t_ready[o]))
        if t_ev > dr.shift_end[d] + EPS:
            return  # _evaluate allowed it as a later visit; joining would not change that
        half = self.pickup_svc * dr.service_factor[d] / 2.0
        dr.group_n[d] = g + 1
        dr.t_event[d] = t_ev
        dr.t_depart[d] = t_ev + half

    def resequence(self, d: int) -> bool:
        """Re-insert each not-yet-picked order of driver ``d`` at its cheapest place; True if the route changed."""
        dr, od = self.drivers, self.orders
        L = int(dr.route_len[d])
        if L < 4:
            return False
        start_node, start_t, _ = self._route_start(d)
        before = dr.route_order[d, :L].copy()
        cost0 = self._route_cost(d, L, start_node, start_t)
        cand = np.unique(before)
        # orders whose pickup is being served right now stay at the head of the route (as in _route_start)
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

    def _route_cost(self, d: int, L: int, start_node: int, start_t: float) -> float:
        """``_evaluate``'s cost of driver ``d``'s current route (its first ``L`` stops)."""
        dr, rows = self.drivers, slice(d, d + 1)
        nodes, kinds, ords = dr.route_node[rows, :L], dr.route_kind[rows, :L], dr.route_order[rows, :L]
        return self._evaluate(d, nodes, kinds, ords, start_node, start_t)[0][0]

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
