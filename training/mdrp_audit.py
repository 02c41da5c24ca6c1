"""A finished MDRP replay checked the way the paper's evaluator checks a solution (Reyes et al. 2018,
Appendix D; the upstream ``compute_performance_summary.py``).

The *solution* is what the order arrays say at the end of the day: per order its courier
(``orders.driver``), pickup time (``t_pickup``), drop-off time (``t_delivered``) and pickup visit
(``bundle_id``). The *trace* is the simulator's event log (``Simulator(..., record_events=True)``): every
pickup and drop-off as it happened, with the courier and the node the courier stood at. The instance gives
placement and ready times, each order's restaurant and drop-off node, and each courier's on time, off time
and on-location (``drivers.shift_start``, ``shift_end``, ``home``); travel between two nodes takes the MDRP
``city.travel_s`` (ceil(euclid / meters_per_minute) whole minutes). The simulator's stop rules are
(``envs/core/movement.py``): an event happens half a service after the arrival, a pickup not before the
ready time of what it collects, and the courier leaves half a service after the event. A *pickup visit*
is a courier's pickup of one or more orders at one restaurant at one time; a *drop-off visit* likewise.

The checks (``CHECKS``; each returns its own violations, so one broken rule fires one check):

``once``
    trace: each order has at most one pickup event and at most one drop-off event (so it is in at most
    one bundle), and its drop-off event names the courier of its pickup event.
``placement``
    no order is assigned before its placement time (its final ``t_assigned`` and the earliest assignment
    an ``AssignmentLog`` saw), and none is picked up before it.
``off_time``
    every pickup visit is at or before its courier's off time (``shift_end``).
``ready``
    every pickup visit is at or after the latest ready time of the orders it collects.
``route``
    every order picked up is delivered, not before its pickup and not after its courier's next pickup
    visit (a route delivers all it picked up before it picks up again; bundles cannot grow on the way).
``travel``
    no teleporting: a courier's visits in time order, the first one from its on-location at its on time,
    are at least ``departure half of the earlier + travel_s + arrival half of the later`` apart (a
    pickup's half is ``pickup_svc / 2``, a drop-off's ``drop_svc / 2``, times the courier's service
    factor; the on-location start has none).
``place``
    trace: the courier stood at the order's restaurant at its pickup event and at the order's drop-off node
    at its drop-off event.
``record``
    the solution agrees with the trace: statuses, couriers and times of orders with one pickup and at most
    one drop-off event, and every pickup visit has one ``bundle_id`` of its own (the figures of the report,
    e.g. orders per bundle, are read from the arrays).

Times are compared with ``TOL_S`` (a microsecond): MDRP times are whole seconds (minutes x 60), exact in
float64, but an instance with fractional minutes gives sums of inexact seconds.

What the checks cannot see: the order in which the policy *planned* the drop-offs (the evaluator's
"drop-offs in the prescribed sequence"; the replay plans no sequence of its own beyond the route, and the
``travel`` check bounds the real one), and an assignment made and taken back within one step (the
``AssignmentLog`` reads the arrays at step ends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

TOL_S = 1e-6  # seconds: time comparisons (see the module docstring)

CHECKS: dict[str, str] = {
    "once": "each order is picked up at most once and delivered (at most once) by the courier who picked it up",
    "placement": "no order is assigned or picked up before its placement time",
    "off_time": "every pickup is at or before the courier's off time",
    "ready": "no pickup visit is before the latest ready time of the orders it collects",
    "route": "every order picked up is delivered, after its pickup and before its courier's next pickup visit",
    "travel": "no teleporting: a courier's visits, from its on-location at its on time, are at least the travel "
    "time plus the service halves apart",
    "place": "the courier is at the order's restaurant at pickup and at its drop-off node at drop-off",
    "record": "the order arrays (status, courier, times, bundle ids) agree with the event log",
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: the check, the orders and couriers it concerns (simulator indices) and why."""

    check: str
    orders: tuple[int, ...]
    couriers: tuple[int, ...]
    reason: str

    def describe(self, order_ids: Sequence[str] | None = None, courier_ids: Sequence[str] | None = None) -> str:
        """One line: ``check: order o12, courier c3: reason`` (instance ids where given, else ``#index``)."""

        def name(ids: Sequence[str] | None, i: int) -> str:
            return ids[i] if ids is not None and 0 <= i < len(ids) else f"#{i}"

        who = []
        if self.orders:
            shown = ", ".join(name(order_ids, o) for o in self.orders[:5])
            more = f" (+{len(self.orders) - 5})" if len(self.orders) > 5 else ""
            who.append(f"order{'s' if len(self.orders) > 1 else ''} {shown}{more}")
        if self.couriers:
            shown = ", ".join(name(courier_ids, c) for c in self.couriers)
            who.append(f"courier{'s' if len(self.couriers) > 1 else ''} {shown}")
        return f"{self.check}: {', '.join(who)}: {self.reason}" if who else f"{self.check}: {self.reason}"


class AssignmentLog:
    """After-step hook (``run_episode(..., after_step=log)``): the earliest assignment time seen for each
    order (``first``, NaN where never assigned). ``orders.t_assigned`` keeps only the last assignment; an
    order taken back and assigned again had an earlier one, which this keeps."""

    def __init__(self) -> None:
        self.first = np.zeros(0)

    def __call__(self, sim: Any) -> None:
        t = sim.orders.t_assigned
        if self.first.shape != t.shape:  # first step of the episode
            self.first = np.full(t.shape, np.nan)
        np.fmin(self.first, t, out=self.first)


def event_table(sim: Any) -> dict[str, np.ndarray]:
    """The recorded stop events as flat arrays ``t``, ``courier``, ``order``, ``kind``, ``node``, in the order
    they happened (``kind``: ``STOP_PICKUP`` or ``STOP_DROPOFF``; ``node``: where the courier stood)."""
    names = ("t", "courier", "order", "kind", "node")
    if not sim.events:
        return {n: np.zeros(0, np.float64 if n == "t" else np.int64) for n in names}
    cols = zip(*sim.events, strict=True)
    out = {n: np.concatenate([np.asarray(c) for c in col]) for n, col in zip(names, cols, strict=True)}
    for n in names[1:]:
        out[n] = out[n].astype(np.int64)
    return out


def _min(t: float) -> str:
    """Seconds as minutes of the day, the instances' unit (``735`` or ``735.5``)."""
    return f"{t / 60.0:.6g} min"


def _groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows grouped by equal ``keys``: (row order sorted by the keys, group id of each sorted row, start of
    each group in the sorted order). The first key is the primary one."""
    n = len(keys[0])
    if n == 0:
        z = np.zeros(0, np.int64)
        return z, z, z
    order = np.lexsort(tuple(reversed(keys)))
    new = np.zeros(n, bool)
    new[0] = True
    for k in keys:
        ks = k[order]
        new[1:] |= ks[1:] != ks[:-1]
    gid = np.cumsum(new) - 1
    return order, gid, np.flatnonzero(new)


@dataclass
class _Visits:
    """Visits of the solution: one row per visit; ``members[i]`` are the orders of visit ``i``."""

    courier: np.ndarray
    t: np.ndarray
    node: np.ndarray
    members: list[np.ndarray]
    of_order: np.ndarray  # (O,) the visit of each order, -1 if none


def _visits(courier: np.ndarray, node: np.ndarray, t: np.ndarray, orders: np.ndarray, n_orders: int) -> _Visits:
    """``orders`` grouped into visits by equal (courier, node, time)."""
    order, gid, starts = _groups(courier, node, t)
    srt = orders[order]
    members = np.split(srt, starts[1:]) if len(starts) else []
    of_order = np.full(n_orders, -1, np.int64)
    of_order[srt] = gid
    first = order[starts]
    return _Visits(courier[first], t[first], node[first], members, of_order)


class _Replay:
    """The arrays every check reads, taken once from a finished simulator."""

    def __init__(self, sim: Any, first_assigned: np.ndarray | None) -> None:
        from gigdispatch.envs.core.types import ORDER_DELIVERED, ORDER_PICKED, STOP_DROPOFF, STOP_PICKUP

        if not getattr(sim, "record_events", False):
            raise ValueError(
                "audit_replay: the simulator must record its stop events: Simulator(scenario, record_events=True)"
            )
        if not getattr(sim, "done", False):
            raise ValueError("audit_replay: the replay is not finished (run the episode to the end of the day first)")
        self.sim = sim
        self.od, self.dr = sim.orders, sim.drivers
        od = self.od
        n = od.n
        if first_assigned is not None and np.shape(first_assigned) != (n,):
            raise ValueError(f"audit_replay: first_assigned has shape {np.shape(first_assigned)}, expected ({n},)")
        self.first_assigned = first_assigned
        self.ev = event_table(sim)
        pick = self.ev["kind"] == STOP_PICKUP
        drop = self.ev["kind"] == STOP_DROPOFF
        self.ev_pick = pick
        self.ev_drop = drop
        self.n_pick = np.bincount(self.ev["order"][pick], minlength=n)
        self.n_drop = np.bincount(self.ev["order"][drop], minlength=n)
        self.delivered = od.status == ORDER_DELIVERED
        self.picked_status = (od.status == ORDER_PICKED) | self.delivered
        # the solution: orders with a pickup time and a courier
        self.picked = np.flatnonzero(np.isfinite(od.t_pickup) & (od.driver >= 0))
        p = self.picked
        self.pick_visits = _visits(od.driver[p].astype(np.int64), od.pickup[p].astype(np.int64), od.t_pickup[p], p, n)
        d = np.flatnonzero(self.delivered & np.isfinite(od.t_delivered) & (od.driver >= 0))
        self.drop_visits = _visits(
            od.driver[d].astype(np.int64), od.dropoff[d].astype(np.int64), od.t_delivered[d], d, n
        )
        self.half_pick = sim.pickup_svc / 2.0 * self.dr.service_factor
        self.half_drop = sim.drop_svc / 2.0 * self.dr.service_factor


# ------------------------------------------------------------------------------------------- checks
def _check_once(r: _Replay) -> list[Violation]:
    """``once``, from the trace: pickup and drop-off events per order, and who made them."""
    out: list[Violation] = []
    ev = r.ev
    o_p, d_p = ev["order"][r.ev_pick], ev["courier"][r.ev_pick]
    o_d, d_d = ev["order"][r.ev_drop], ev["courier"][r.ev_drop]
    for sel, count, verb in ((r.ev_pick, r.n_pick, "picked up"), (r.ev_drop, r.n_drop, "delivered")):
        o_e, d_e, t_e = ev["order"][sel], ev["courier"][sel], ev["t"][sel]
        for o in np.flatnonzero(count > 1).tolist():
            m = o_e == o
            out.append(
                Violation(
                    "once",
                    (o,),
                    tuple(dict.fromkeys(d_e[m].tolist())),
                    f"{verb} {int(m.sum())} times (at {', '.join(_min(x) for x in t_e[m])})",
                )
            )
    one = (r.n_pick == 1) & (r.n_drop == 1)
    picker = np.full(r.od.n, -1, np.int64)
    dropper = np.full(r.od.n, -1, np.int64)
    picker[o_p] = d_p
    dropper[o_d] = d_d
    for o in np.flatnonzero(one & (picker != dropper)).tolist():
        out.append(
            Violation(
                "once",
                (o,),
                (int(picker[o]), int(dropper[o])),
                "picked up by the first courier, delivered by the second",
            )
        )
    return out


def _check_placement(r: _Replay) -> list[Violation]:
    """``placement``: the earliest assignment time (log and arrays) and the pickup time against the placement."""
    od = r.od
    out: list[Violation] = []
    assigned = od.t_assigned if r.first_assigned is None else np.fmin(od.t_assigned, r.first_assigned)
    early = np.flatnonzero(np.isfinite(assigned) & (assigned < od.t_place - TOL_S))
    for o in early.tolist():
        who = (int(od.driver[o]),) if od.driver[o] >= 0 else ()
        out.append(
            Violation("placement", (o,), who, f"assigned at {_min(assigned[o])}, placed at {_min(od.t_place[o])}")
        )
    p = r.picked
    for o in p[od.t_pickup[p] < od.t_place[p] - TOL_S].tolist():
        out.append(
            Violation(
                "placement",
                (o,),
                (int(od.driver[o]),),
                f"picked up at {_min(od.t_pickup[o])}, placed at {_min(od.t_place[o])}",
            )
        )
    return out


def _check_off_time(r: _Replay) -> list[Violation]:
    """``off_time``: each pickup visit against its courier's off time."""
    v, off = r.pick_visits, r.dr.shift_end
    out = []
    for i in np.flatnonzero(v.t > off[v.courier] + TOL_S).tolist():
        c = int(v.courier[i])
        out.append(
            Violation(
                "off_time",
                tuple(v.members[i].tolist()),
                (c,),
                f"picked up at {_min(v.t[i])}, after the courier's off time {_min(off[c])}",
            )
        )
    return out


def _check_ready(r: _Replay) -> list[Violation]:
    """``ready``: each pickup visit against the latest ready time of its orders."""
    v, ready = r.pick_visits, r.od.t_ready
    out = []
    for i, m in enumerate(v.members):
        latest = float(ready[m].max())
        if v.t[i] < latest - TOL_S:
            late = m[ready[m] > v.t[i] + TOL_S]
            out.append(
                Violation(
                    "ready",
                    tuple(late.tolist()),
                    (int(v.courier[i]),),
                    f"pickup visit at {_min(v.t[i])} collects {len(m)} order(s), the latest ready at {_min(latest)}",
                )
            )
    return out


def _check_route(r: _Replay) -> list[Violation]:
    """``route``: each picked-up order delivered, after its pickup and by its courier's next pickup visit."""
    od, v = r.od, r.pick_visits
    out: list[Violation] = []
    # each visit's next pickup visit by the same courier (visits are sorted by courier, then restaurant, time)
    by_time = np.lexsort((v.t, v.courier))
    nxt = np.full(len(v.t), np.inf)
    nxt_node = np.full(len(v.t), -1, np.int64)
    same = v.courier[by_time][1:] == v.courier[by_time][:-1]
    nxt[by_time[:-1][same]] = v.t[by_time][1:][same]
    nxt_node[by_time[:-1][same]] = v.node[by_time][1:][same]
    for o in r.picked.tolist():
        c, tp, td = int(od.driver[o]), float(od.t_pickup[o]), float(od.t_delivered[o])
        if not (r.delivered[o] and np.isfinite(td)):
            out.append(Violation("route", (o,), (c,), f"picked up at {_min(tp)}, never delivered"))
        elif td < tp - TOL_S:
            out.append(Violation("route", (o,), (c,), f"delivered at {_min(td)}, before its pickup at {_min(tp)}"))
        else:
            i = v.of_order[o]
            tn = float(nxt[i])
            if td > tn + TOL_S:
                where = " at the same restaurant" if nxt_node[i] == v.node[i] else ""
                out.append(
                    Violation(
                        "route",
                        (o,),
                        (c,),
                        f"picked up at {_min(tp)}, still on board at the courier's next pickup visit{where} at "
                        f"{_min(tn)} (delivered at {_min(td)})",
                    )
                )
    unpicked = np.flatnonzero(r.delivered & ~(np.isfinite(od.t_pickup) & (od.driver >= 0)))
    for o in unpicked.tolist():
        who = (int(od.driver[o]),) if od.driver[o] >= 0 else ()
        out.append(Violation("route", (o,), who, "delivered without a pickup (no pickup time or courier)"))
    return out


def _check_travel(r: _Replay) -> list[Violation]:
    """``travel``: consecutive visits of each courier (the on-location start first) against the MDRP travel time
    plus the service halves (MDRP couriers all have speed 1 and there is no traffic: ``travel_s`` is the rule)."""
    from gigdispatch.envs.core.types import STOP_DROPOFF, STOP_PICKUP

    dr, pv, dv = r.dr, r.pick_visits, r.drop_visits
    couriers = np.unique(np.concatenate([pv.courier, dv.courier]))
    n_s, n_p, n_d = len(couriers), len(pv.t), len(dv.t)
    courier = np.concatenate([couriers, pv.courier, dv.courier])
    t = np.concatenate([dr.shift_start[couriers], pv.t, dv.t])
    node = np.concatenate([dr.home[couriers].astype(np.int64), pv.node, dv.node])
    kind = np.concatenate([np.full(n_s, -1), np.full(n_p, STOP_PICKUP), np.full(n_d, STOP_DROPOFF)])
    arrive = np.concatenate([np.zeros(n_s), r.half_pick[pv.courier], r.half_drop[dv.courier]])
    members = [np.zeros(0, np.int64)] * n_s + pv.members + dv.members
    # per courier: the start first, then by time; at one time a drop-off before a pickup (the route's order)
    not_start = kind >= 0
    rank = np.where(kind == STOP_DROPOFF, 0, 1)
    order = np.lexsort((rank, t, not_start, courier))
    c_s, t_s, n_s_, k_s, a_s = courier[order], t[order], node[order], kind[order], arrive[order]
    pair = np.flatnonzero(c_s[1:] == c_s[:-1])
    a, b = pair, pair + 1
    travel = r.sim.city.travel_s(n_s_[a], n_s_[b])
    depart = a_s[a] * (k_s[a] >= 0)  # departure half = arrival half of the same kind; none at the start
    need = depart + travel + a_s[b]
    gap = t_s[b] - t_s[a]
    names = {-1: "on-location at its on time", STOP_PICKUP: "pickup visit", STOP_DROPOFF: "drop-off visit"}
    out = []
    for i in np.flatnonzero(gap < need - TOL_S).tolist():
        ia, ib = int(order[a[i]]), int(order[b[i]])
        orders = tuple(dict.fromkeys([*members[ia].tolist(), *members[ib].tolist()]))
        out.append(
            Violation(
                "travel",
                orders,
                (int(c_s[a[i]]),),
                f"{names[int(k_s[a[i]])]} at {_min(t_s[a[i]])}, then {names[int(k_s[b[i]])]} at {_min(t_s[b[i]])}: "
                f"{_min(gap[i])} apart, needs {_min(need[i])} (service {_min(depart[i])} + travel {_min(travel[i])} "
                f"+ service {_min(a_s[b[i]])})",
            )
        )
    return out


def _check_place(r: _Replay) -> list[Violation]:
    """``place``, from the trace: the node of each pickup and drop-off event against the order's own."""
    od, ev = r.od, r.ev
    out = []
    for mask, own, what in ((r.ev_pick, od.pickup, "restaurant"), (r.ev_drop, od.dropoff, "drop-off node")):
        o, c, node, t = ev["order"][mask], ev["courier"][mask], ev["node"][mask], ev["t"][mask]
        for i in np.flatnonzero(node != own[o]).tolist():
            out.append(
                Violation(
                    "place",
                    (int(o[i]),),
                    (int(c[i]),),
                    f"{'pickup' if what == 'restaurant' else 'drop-off'} at {_min(t[i])} at node {int(node[i])}, "
                    f"the order's {what} is node {int(own[o[i]])}",
                )
            )
    return out


def _check_record(r: _Replay) -> list[Violation]:
    """``record``: the arrays against the trace, one violation per order naming every disagreement."""
    od, ev = r.od, r.ev
    n = od.n
    t_pe = np.full(n, np.nan)
    c_pe = np.full(n, -1, np.int64)
    t_de = np.full(n, np.nan)
    t_pe[ev["order"][r.ev_pick]] = ev["t"][r.ev_pick]
    c_pe[ev["order"][r.ev_pick]] = ev["courier"][r.ev_pick]
    t_de[ev["order"][r.ev_drop]] = ev["t"][r.ev_drop]
    has_pe, has_de = r.n_pick == 1, r.n_drop == 1
    clear = (r.n_pick <= 1) & (r.n_drop <= 1)  # orders with more events are the ``once`` check's
    problems: dict[int, list[str]] = {}

    def flag(mask: np.ndarray, text: str) -> None:
        for o in np.flatnonzero(mask & clear).tolist():
            problems.setdefault(o, []).append(text)

    flag(r.picked_status != has_pe, "status (picked up or delivered) disagrees with the pickup events")
    flag(np.isfinite(od.t_pickup) != has_pe, "pickup time disagrees with the pickup events")
    flag(r.delivered != has_de, "status (delivered) disagrees with the drop-off events")
    flag(np.isfinite(od.t_delivered) != has_de, "drop-off time disagrees with the drop-off events")
    both = has_pe & np.isfinite(od.t_pickup)
    flag(both & (np.abs(np.where(both, od.t_pickup - t_pe, 0.0)) > TOL_S), "pickup time differs from its event")
    flag(has_pe & (od.driver != c_pe), "courier differs from the pickup event's")
    both_d = has_de & np.isfinite(od.t_delivered)
    flag(
        both_d & (np.abs(np.where(both_d, od.t_delivered - t_de, 0.0)) > TOL_S), "drop-off time differs from its event"
    )
    flag(np.isfinite(od.t_pickup) & (od.driver < 0), "a pickup time but no courier")
    # bundle ids: one per pickup visit, and none for an order never picked up
    picked = np.zeros(n, bool)
    picked[r.picked] = True
    flag(picked & (od.bundle_id < 0), "picked up, but no bundle id")
    flag(~np.isfinite(od.t_pickup) & (od.bundle_id >= 0), "a bundle id, but not picked up")
    v = r.pick_visits
    bid = od.bundle_id
    for m in v.members:
        n_ids = len(np.unique(bid[m]))
        if n_ids > 1:
            in_visit = np.zeros(n, bool)
            in_visit[m] = True
            flag(in_visit, f"its pickup visit carries {n_ids} bundle ids")
    p = r.picked
    visits_of_bid: dict[int, set[int]] = {}
    for o, b in zip(p.tolist(), bid[p].tolist(), strict=True):
        if b >= 0:
            visits_of_bid.setdefault(b, set()).add(int(v.of_order[o]))
    shared = [b for b, vs in visits_of_bid.items() if len(vs) > 1]
    if shared:
        flag(np.isin(bid, shared) & picked, "its bundle id is shared with another pickup visit")
    out = []
    for o in sorted(problems):
        who = (int(od.driver[o]),) if od.driver[o] >= 0 else ()
        out.append(Violation("record", (o,), who, "; ".join(problems[o])))
    return out


_CHECK_FUNCS = {
    "once": _check_once,
    "placement": _check_placement,
    "off_time": _check_off_time,
    "ready": _check_ready,
    "route": _check_route,
    "travel": _check_travel,
    "place": _check_place,
    "record": _check_record,
}


def audit_replay(sim: Any, first_assigned: np.ndarray | None = None) -> list[Violation]:
    """Every violation of the ``CHECKS`` in a finished MDRP replay (empty when clean), check by check.

    ``sim``: a ``Simulator(..., record_events=True)`` run to the end of the day; ``first_assigned``: the
    ``AssignmentLog.first`` of that run (without it only the final assignment times are checked).
    Raises ``ValueError`` when the simulator did not record its events or the day is not over."""
    r = _Replay(sim, first_assigned)
    return [v for name in CHECKS for v in _CHECK_FUNCS[name](r)]


def count_by_check(violations: Sequence[Violation]) -> dict[str, int]:
    """How many violations each check found (every check named, zeros included)."""
    out = dict.fromkeys(CHECKS, 0)
    for v in violations:
        out[v.check] += 1
    return out
