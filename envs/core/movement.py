"""Phase 3 of a step, movement and stops: every driver goes through as many *arrive -> pickup/drop-off ->
depart* transitions as fit in the step, each at its exact time (an inner loop over transitions,
vectorised over drivers). Drop-offs are settled by ``settlement.py``.
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.arrays import EPS, nz
from gigdispatch.envs.core.routing import RoutingPhase
from gigdispatch.envs.core.settlement import SettlementPhase
from gigdispatch.envs.core.types import (
    ORDER_PICKED,
    PH_DRIVING,
    PH_IDLE,
    PH_OFFLINE,
    PH_SERVICE,
    STOP_DROPOFF,
    STOP_PICKUP,
)


class MovementPhase(RoutingPhase, SettlementPhase):
    """Legs driven, arrivals inside the geofence, stop events, departures."""

    def _move(self, t0: float, t1: float) -> None:
        """Advance every driver from ``t0`` to ``t1``: legs, arrivals, stop events and departures, each at its
        exact time (``clk`` holds each driver's own clock within the step)."""
        dr = self.drivers
        clk = np.full(dr.n, t0)
        zone_f = self.state.factor
        cand: np.ndarray | None = None  # after the first pass only drivers that just changed can change again
        step_left = t0 < t1 - EPS  # in the first pass every clock is at t0
        for _ in range(4 * self.S + 16):
            progressed = False
            touched = []
            if cand is None:
                drv = nz(dr.phase == PH_DRIVING) if step_left else np.zeros(0, np.int64)
            else:
                drv = cand[(dr.phase[cand] == PH_DRIVING) & (clk[cand] < t1 - EPS)]
            if drv.size:
                f = zone_f[self.city.zone_of[dr.node[drv]]]
                need = np.maximum(dr.leg_left[drv] - dr.leg_geo[drv], 0.0) * f
                avail = t1 - clk[drv]
                arrive = need <= avail + EPS
                working = dr.route_len[drv] > 0
                go_on = ~arrive
                p = drv[go_on]
                av = avail[go_on]
                step_ff = av / f[go_on]
                m = dr.leg_dist[p] * step_ff / np.maximum(dr.leg_ff[p], EPS)
                dr.driven_m[p] += m
                dr.empty_m[p] += np.where(self._leg_empty()[p], m, 0.0)
                dr.leg_left[p] -= step_ff
                dr.busy_s[p] += np.where(working[go_on], av, 0.0)
                clk[p] = t1
                a = drv[arrive]
                if a.size:
                    ta = clk[a] + need[arrive]
                    dr.busy_s[a] += np.where(working[arrive], need[arrive], 0.0)
                    clk[a] = ta
                    self._arrive(a, ta, clk)
                    touched.append(a)
                    progressed = True
            if cand is None:
                in_service = dr.phase == PH_SERVICE
                ev = nz(in_service & ~dr.event_done & (dr.t_event <= t1 + EPS))
            else:
                ev = cand[(dr.phase[cand] == PH_SERVICE) & ~dr.event_done[cand] & (dr.t_event[cand] <= t1 + EPS)]
            if ev.size:
                clk[ev] = np.maximum(clk[ev], dr.t_event[ev])
                self._stop_event(ev)
                touched.append(ev)
                progressed = True
            if cand is None:
                dep = nz((dr.phase == PH_SERVICE) & dr.event_done & (dr.t_depart <= t1 + EPS))
            else:
                dep = cand[(dr.phase[cand] == PH_SERVICE) & dr.event_done[cand] & (dr.t_depart[cand] <= t1 + EPS)]
            if dep.size:
                clk[dep] = np.maximum(clk[dep], dr.t_depart[dep])
                self._depart(dep, clk)
                touched.append(dep)
                progressed = True
            if not progressed:
                return
            seen = np.zeros(dr.n, bool)
            for t_ in touched:
                seen[t_] = True
            cand = nz(seen)  # sorted, distinct
        raise RuntimeError("simulator: too many stop transitions in one step (a zero-time loop?)")

    def _arrive(self, a: np.ndarray, ta: np.ndarray, clk: np.ndarray) -> None:
        """Drivers ``a`` are detected at their leg's end at times ``ta`` (inside the geofence). The part of
        the leg inside the geofence still has to be covered: a stop's pickup/drop-off cannot happen before
        it (it is walked or driven during the service), and a driver going on past the node drives it first."""
        dr, od = self.drivers, self.orders
        geo_ff = dr.leg_geo[a].copy()  # free-flow seconds of the leg still ahead when the geofence fired
        geo_wall = geo_ff * self.state.factor[self.city.zone_of[dr.node[a]]]
        m = dr.leg_dist[a] * dr.leg_left[a] / np.maximum(dr.leg_ff[a], EPS)
        dr.driven_m[a] += m
        dr.empty_m[a] += np.where(self._leg_empty()[a], m, 0.0)  # the leg just ended: no stop served yet
        dr.node[a] = dr.leg_to[a]
        dr.leg_left[a] = 0.0
        has = dr.route_len[a] > 0
        at_head = has & (dr.route_node[a, 0] == dr.node[a])
        idle = a[~has]
        dr.phase[idle] = PH_IDLE
        self._stood(idle, ta[~has])
        go = ~at_head & has
        if go.any():
            g_ = a[go]
            self._set_leg(g_, dr.route_node[g_, 0])
            dr.leg_ff[g_] += geo_ff[go]
            dr.leg_left[g_] += geo_ff[go]
        s, ts, gw = a[at_head], ta[at_head], geo_wall[at_head]
        if s.size == 0:
            return
        rn, rk, ro = dr.route_node[s], dr.route_kind[s], dr.route_order[s]
        L = dr.route_len[s].astype(np.int64)
        same = (rn == rn[:, :1]) & (rk == rk[:, :1]) & (np.arange(self.S)[None, :] < L[:, None])
        g = np.logical_and.accumulate(same, axis=1).sum(axis=1)  # leading run of stops at the same node and kind
        in_g = np.arange(self.S)[None, :] < g[:, None]
        kind = rk[:, 0]
        pick = kind == STOP_PICKUP
        svc = np.where(pick, self.pickup_svc, self.drop_svc) * dr.service_factor[s]
        ready = np.where(in_g, od.t_ready[np.maximum(ro, 0)], -np.inf).max(axis=1)
        at_door = ts + np.maximum(svc / 2.0, gw)  # half the service, and not before reaching the stop itself
        if self.cfg.fleet.service_from_arrival:  # a driver that stood at the node got there when it did
            arrived = np.where(dr.leg_ff[s] <= EPS, np.minimum(self._stand_since()[s], ts), ts)
            at_door = np.maximum(arrived + np.maximum(svc / 2.0, gw), ts)  # never before the stop was given
            ts = arrived
        t_ev = np.where(pick, np.maximum(at_door, ready), at_door)
        too_late = pick & (t_ev > dr.shift_end[s] + EPS)
        if too_late.any():  # no pickups after the shift: give the orders back, go on with the rest
            lt = s[too_late]
            rel = ro[too_late][in_g[too_late]]
            self._count("released_after_shift", rel, "o")
            self._release(rel)
            has2 = dr.route_len[lt] > 0
            dr.phase[lt[~has2]] = PH_IDLE
            if has2.any():
                self._set_leg(lt[has2], dr.route_node[lt[has2], 0])
        ok = ~too_late
        s, ts, g, t_ev, svc = s[ok], ts[ok], g[ok], t_ev[ok], svc[ok]
        dr.phase[s] = PH_SERVICE
        dr.t_arrive[s] = ts
        dr.t_event[s] = t_ev
        dr.t_depart[s] = t_ev + svc / 2.0
        dr.event_done[s] = False
        dr.group_n[s] = g

    def _stop_event(self, e: np.ndarray) -> None:
        """Drivers ``e`` reach their visit's event time: its pickups are loaded, its drop-offs delivered."""
        dr, od = self.drivers, self.orders
        g = dr.group_n[e].astype(np.int64)
        in_g = np.arange(self.S)[None, :] < g[:, None]
        rows = np.repeat(e, g)  # one entry per order served at the visit, driver by driver
        ords = dr.route_order[e][in_g].astype(np.int64)
        t_ev = np.repeat(dr.t_event[e], g)
        kind = dr.route_kind[e, 0]
        pick_rows = np.repeat(kind == STOP_PICKUP, g)
        po, pd, pt = ords[pick_rows], rows[pick_rows], t_ev[pick_rows]
        if po.size:
            od.status[po] = ORDER_PICKED
            od.t_pickup[po] = pt
            od.t_at_pickup[po] = np.repeat(dr.t_arrive[e], g)[pick_rows]  # the visit's arrival, for all of it
            np.add.at(dr.load, pd, od.volume[po])
            visit = np.repeat(np.arange(len(e)), g)[pick_rows]
            od.bundle_id[po] = self._bundle_ids(e, kind == STOP_PICKUP)[visit]
        do, dd, dt_ = ords[~pick_rows], rows[~pick_rows], t_ev[~pick_rows]
        if do.size:
            self._deliver(do, dd, dt_)
        if self.record_events:
            kinds = np.where(pick_rows, STOP_PICKUP, STOP_DROPOFF)
            self.state.events.append((t_ev.copy(), rows.copy(), ords.copy(), kinds, dr.node[rows].copy()))
        dr.event_done[e] = True

    def _depart(self, p: np.ndarray, clk: np.ndarray) -> None:
        """Drivers ``p`` leave the stop they served: its stops leave the route; on to the next, or idle."""
        dr = self.drivers
        dwell = dr.t_depart[p] - dr.t_arrive[p]
        dr.service_sum[p] += dwell
        dr.service_n[p] += 1
        dr.busy_s[p] += dwell
        g = dr.group_n[p].astype(np.int64)
        idx = np.arange(self.S)[None, :] + g[:, None]
        valid = idx < self.S
        flat = p[:, None] * self.S + np.minimum(idx, self.S - 1)  # into the (D, S) route arrays, raveled
        for name in ("route_node", "route_order", "route_kind"):
            a = getattr(dr, name)
            a[p] = np.where(valid, a.reshape(-1).take(flat), -1)
        dr.route_len[p] -= g.astype(np.int16)
        dr.group_n[p] = 0
        dr.t_event[p] = dr.t_depart[p] = np.inf
        more = dr.route_len[p] > 0
        dr.phase[p[~more]] = PH_IDLE
        self._stood(p[~more], clk[p[~more]])
        if more.any():
            self._set_leg(p[more], dr.route_node[p[more], 0])

    def _idle_behaviour(self, t: float) -> None:
        """``fleet.idle`` (step phase 5, before the log-off): gig drivers standing idle past ``log_off_minutes``
        end their shift now (``_logoff`` then takes them), and those idle past ``drift_home_minutes`` away from
        home drive home (they can still be offered orders on the way)."""
        dr, st, ib = self.drivers, self.state, self.cfg.fleet.idle
        if ib.drift_home_minutes is None and ib.log_off_minutes is None:
            return
        if st.idle_since is None or len(st.idle_since) != dr.n:
            st.idle_since = np.full(dr.n, t)
        if st.wait_since is None or len(st.wait_since) != dr.n:
            st.wait_since = st.idle_since.copy()
        waiting = (dr.route_len == 0) & (dr.offer_order < 0) & (dr.phase != PH_OFFLINE)
        st.idle_since[~waiting] = t  # working or offline: the clocks start again
        st.wait_since[~waiting] = t
        standing = waiting & (dr.phase == PH_IDLE) & ~dr.owned
        if ib.log_off_minutes is not None:
            early = nz(standing & (t - st.idle_since >= ib.log_off_minutes * 60.0 - EPS))
            dr.shift_end[early] = np.minimum(dr.shift_end[early], t)
            standing[early] = False
        if ib.drift_home_minutes is not None:
            due = t - st.wait_since >= ib.drift_home_minutes * 60.0 - EPS
            home = nz(standing & due & (dr.node != dr.home))
            if home.size:
                self._set_leg(home, dr.home[home], geofence=False)
