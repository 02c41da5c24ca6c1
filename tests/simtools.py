"""Shared helpers for the simulator tests (imported by the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gigdispatch.agents import make_policy
from gigdispatch.agents.base import Policy
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ORDER_FUTURE, ORDER_LOST

REPO = Path(__file__).resolve().parents[1]
MDRP_DIR = REPO.parent / "shared" / "data" / "mdrplib" / "public_instances"

# five nodes on a line, 300 m apart: with 300 m/min every hop is exactly one minute
LINE5 = [[0.0, 0.0], [300.0, 0.0], [600.0, 0.0], [900.0, 0.0], [1200.0, 0.0]]
MIN = 60.0


def run_episode(
    sim: Simulator,
    seed: int = 0,
    policy: Policy | None = None,
    after_step: Callable[[Simulator], None] | None = None,
    before_step: Callable[[Simulator], None] | None = None,
    max_steps: int = 100_000,
) -> Simulator:
    """Reset and run ``policy`` (default: nearest) to the end of the episode, with optional hooks."""
    policy = policy or make_policy("nearest")
    sim.reset(seed)
    policy.reset(sim, sim.rng["policy"])
    n = 0
    while not sim.done:
        if before_step is not None:
            before_step(sim)
        sim.step(policy.act(sim))
        if after_step is not None:
            after_step(sim)
        n += 1
        assert n <= max_steps, "episode did not end"
    return sim


def events_table(sim: Simulator) -> dict[str, np.ndarray]:
    """The recorded pickup/drop-off events as flat arrays, in the order they were recorded."""
    if not sim.events:
        z = np.zeros(0)
        return {
            "t": z,
            "driver": z.astype(np.int64),
            "order": z.astype(np.int64),
            "kind": z.astype(np.int64),
            "node": z.astype(np.int64),
        }
    cols = list(zip(*sim.events, strict=True))
    names = ("t", "driver", "order", "kind", "node")
    return {n: np.concatenate([np.asarray(c) for c in col]) for n, col in zip(names, cols, strict=True)}


def created_mask(sim: Simulator) -> np.ndarray:
    st = sim.orders.status
    return (st != ORDER_FUTURE) & (st != ORDER_LOST)


def money_identity(sim: Simulator) -> tuple[int, int, int, int]:
    """(fees, payouts, refunds, margin) in cents from independent sources."""
    od, dr = sim.orders, sim.drivers
    c = created_mask(sim)
    fees = int((od.fee[c] + od.tip[c]).sum())
    payouts = int(dr.earnings.sum())
    refunds = int(od.refund.sum())
    margin = sim.ledger.balances()["platform"]
    return fees, payouts, refunds, margin


def assert_ledger_balances(sim: Simulator) -> None:
    od, dr = sim.orders, sim.drivers
    for arr in (od.fee, od.tip, od.refund, od.payout, dr.earnings):
        assert arr.dtype.kind == "i", arr.dtype
    fees, payouts, refunds, margin = money_identity(sim)
    assert isinstance(margin, int)
    assert fees == payouts + refunds + margin, (fees, payouts, refunds, margin)
    bal = sim.ledger.balances()
    assert bal["customer"] + bal["platform"] + bal["driver"] == 0
    assert bal["driver"] == payouts
    assert -bal["customer"] == fees - refunds


# ------------------------------------------------------------------------------------------------
# invariants
# ------------------------------------------------------------------------------------------------
_TOL = 1e-6


class StepChecker:
    """Checks, after every step, the invariants that must hold at each step boundary.

    * time moves forward by exactly ``dt``;
    * capacity: ``0 <= load <= capacity``; ``0 <= route_len <= S``; route padding is -1;
    * routes and statuses agree: an assigned order has exactly one pickup stop before exactly one
      drop-off stop in its driver's route, a picked-up order exactly one drop-off stop and no pickup
      stop, any other order no stop (stops whose event is already done, at the head of a driver still
      at that stop, are not counted);
    * load = volume of the orders on board; pending offers and drivers agree;
    * terminal statuses stay terminal; the money identity holds to the cent.
    """

    def __init__(self, sim: Simulator, money: bool = True) -> None:
        """Checks ``sim`` from its current state on; a simulator not reset yet is checked from the start
        of its first episode."""
        self.sim = sim
        self.money = money
        started = hasattr(sim, "orders")
        self.t_prev = sim.t if started else sim.t_start
        self.status_prev: np.ndarray | None = sim.orders.status.copy() if started else None  # None: all in the future
        self.n_events_prev = len(sim.events) if started else 0
        self.steps = 0

    def __call__(self, sim: Simulator) -> None:
        from gigdispatch.envs.core.types import (
            ORDER_ASSIGNED,
            ORDER_CANCELLED,
            ORDER_DELIVERED,
            ORDER_OFFERED,
            ORDER_PICKED,
            PH_SERVICE,
            STOP_DROPOFF,
            STOP_PICKUP,
        )

        od, dr, S = sim.orders, sim.drivers, sim.S
        self.steps += 1
        # time
        assert sim.t == self.t_prev + sim.dt, (self.t_prev, sim.t)
        # events recorded in this step lie in it
        for ev in sim.events[self.n_events_prev :]:
            assert (ev[0] >= self.t_prev - _TOL).all() and (ev[0] <= sim.t + _TOL).all(), (self.t_prev, sim.t, ev[0])
            # no pickup after the driver's shift end (checked now: a flex driver's shift is reset at log-off)
            p = ev[3] == 0
            assert (ev[0][p] <= sim.drivers.shift_end[ev[1][p]] + _TOL).all(), "pickup after the driver's shift end"
        self.n_events_prev = len(sim.events)
        self.t_prev = sim.t
        # capacity and route length
        assert (dr.load <= dr.capacity + _TOL).all(), (dr.load, dr.capacity)
        assert (dr.load >= -_TOL).all(), dr.load
        assert ((dr.route_len >= 0) & (dr.route_len <= S)).all(), dr.route_len
        # terminal statuses stay terminal; picked orders are never taken back
        st = od.status
        prev = np.full_like(st, ORDER_FUTURE) if self.status_prev is None else self.status_prev
        for term in (ORDER_DELIVERED, ORDER_CANCELLED, ORDER_LOST):
            assert (st[prev == term] == term).all(), term
        was_picked = prev == ORDER_PICKED
        assert np.isin(st[was_picked], (ORDER_PICKED, ORDER_DELIVERED)).all()
        self.status_prev = st.copy()
        if self.money:
            assert_ledger_balances(sim)
        if sim.done:
            return  # the day's close takes everyone offline, whatever they were doing
        # routes vs statuses
        pos = np.arange(S)[None, :]
        valid = pos < dr.route_len[:, None]
        assert (dr.route_order[~valid] == -1).all() and (dr.route_node[~valid] == -1).all()
        done_head = ((dr.phase == PH_SERVICE) & dr.event_done)[:, None] & (pos < dr.group_n[:, None])
        live = valid & ~done_head
        rows = np.broadcast_to(np.arange(dr.n)[:, None], live.shape)[live]
        cols = np.broadcast_to(pos, live.shape)[live]
        o = dr.route_order[live].astype(np.int64)
        k = dr.route_kind[live]
        node = dr.route_node[live]
        assert (o >= 0).all()
        assert (od.driver[o] == rows).all(), "a route holds an order of another driver"
        is_p, is_d = k == STOP_PICKUP, k == STOP_DROPOFF
        assert (is_p | is_d).all()
        np.testing.assert_array_equal(node[is_p], od.pickup[o[is_p]])
        np.testing.assert_array_equal(node[is_d], od.dropoff[o[is_d]])
        pc = np.bincount(o[is_p], minlength=od.n)
        dc = np.bincount(o[is_d], minlength=od.n)
        assigned, picked = st == ORDER_ASSIGNED, st == ORDER_PICKED
        np.testing.assert_array_equal(pc, assigned.astype(np.int64), err_msg="pickup stops vs assigned orders")
        np.testing.assert_array_equal(
            dc, (assigned | picked).astype(np.int64), err_msg="drop-off stops vs assigned/picked orders"
        )
        ppos = np.full(od.n, -1)
        dpos = np.full(od.n, -1)
        ppos[o[is_p]] = cols[is_p]
        dpos[o[is_d]] = cols[is_d]
        assert (ppos[assigned] < dpos[assigned]).all(), "a drop-off before its pickup"
        # load = volume on board
        onboard = np.flatnonzero(picked)
        load = np.bincount(od.driver[onboard], weights=od.volume[onboard].astype(np.float64), minlength=dr.n)
        np.testing.assert_allclose(dr.load, load, atol=1e-3)
        # offers
        off = np.flatnonzero(st == ORDER_OFFERED)
        assert (od.driver[off] >= 0).all()
        np.testing.assert_array_equal(dr.offer_order[od.driver[off]], off)
        assert (dr.offer_order >= 0).sum() == off.size


def check_final(sim: Simulator, geofence: bool = False) -> None:
    """Invariants of a finished episode (orders, events, ledger)."""
    from gigdispatch.envs.core.kpis import compute_kpis
    from gigdispatch.envs.core.types import (
        LED_FEE,
        ORDER_CANCELLED,
        ORDER_DELIVERED,
        ORDER_PICKED,
    )

    assert sim.done
    od, dr = sim.orders, sim.drivers
    st = od.status
    created = created_mask(sim)
    delivered = st == ORDER_DELIVERED
    cancelled = st == ORDER_CANCELLED
    still_open = created & ~delivered & ~cancelled
    # partition of the created orders
    assert (delivered | cancelled | still_open)[created].all()
    assert not (delivered & cancelled).any()
    assert not (delivered | cancelled)[~created].any()
    k = compute_kpis(sim)
    assert k["orders_created"] == created.sum()
    assert k["orders_delivered"] + k["orders_cancelled"] + k["orders_open"] == k["orders_created"]
    assert k["orders_open"] == still_open.sum()
    # created once: at most one fee entry per order, only for created orders
    kind, lo = sim.ledger.column("kind"), sim.ledger.column("order")
    fee_orders = lo[kind == LED_FEE]
    assert len(np.unique(fee_orders)) == len(fee_orders)
    assert created[fee_orders].all()
    # times of delivered orders
    d = np.flatnonzero(delivered)
    assert (od.t_place[d] <= od.t_pickup[d] + _TOL).all()
    assert (od.t_pickup[d] <= od.t_delivered[d] + _TOL).all()
    assert (od.t_ready[d] <= od.t_pickup[d] + _TOL).all()
    assert (od.driver[d] >= 0).all()
    picked = np.flatnonzero(np.isfinite(od.t_pickup))
    assert np.isin(st[picked], (ORDER_PICKED, ORDER_DELIVERED)).all()
    assert (od.t_ready[picked] <= od.t_pickup[picked] + _TOL).all()
    fixed_shift = picked[~dr.flex[od.driver[picked]]]  # flex drivers' shifts are reset when they log off
    assert (od.t_pickup[fixed_shift] <= dr.shift_end[od.driver[fixed_shift]] + _TOL).all(), (
        "pickup after the driver's shift end"
    )
    c = np.flatnonzero(cancelled)
    assert np.isnan(od.t_pickup[c]).all() and np.isnan(od.t_delivered[c]).all()
    # a cancellation happens at a step end, once the patience has run out, after the order was created
    # (not necessarily in the first step after the patience ran out: the order may have been assigned
    # and given back meanwhile)
    assert (od.t_cancelled[c] >= od.t_patience[c] - _TOL).all()
    assert (od.t_cancelled[c] > od.t_place[c]).all()
    steps = (od.t_cancelled[c] - sim.t_start) / sim.dt
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    # money
    assert_ledger_balances(sim)
    fees, payouts, refunds, margin = money_identity(sim)
    assert round(k["fees_total"] * 100) == fees and round(k["payouts_total"] * 100) == payouts
    assert round(k["refunds_total"] * 100) == refunds and round(k["platform_margin"] * 100) == margin
    if sim.record_events:
        check_events(sim, geofence=geofence)


def check_events(sim: Simulator, geofence: bool = False) -> None:
    from gigdispatch.envs.core.types import ORDER_DELIVERED, ORDER_PICKED, STOP_DROPOFF, STOP_PICKUP

    od, dr = sim.orders, sim.drivers
    ev = events_table(sim)
    t, drv, o, kind, node = ev["t"], ev["driver"], ev["order"], ev["kind"], ev["node"]
    assert (o >= 0).all() and (o < od.n).all()
    pick, drop = kind == STOP_PICKUP, kind == STOP_DROPOFF
    assert (pick | drop).all()
    st = od.status
    # each order picked up at most once and delivered at most once, as its status says
    pc = np.bincount(o[pick], minlength=od.n)
    dc = np.bincount(o[drop], minlength=od.n)
    np.testing.assert_array_equal(pc, np.isin(st, (ORDER_PICKED, ORDER_DELIVERED)).astype(np.int64))
    np.testing.assert_array_equal(dc, (st == ORDER_DELIVERED).astype(np.int64))
    # events agree with the order arrays and happen where the order says
    np.testing.assert_array_equal(drv, od.driver[o])
    np.testing.assert_array_equal(t[pick], od.t_pickup[o[pick]])
    np.testing.assert_array_equal(t[drop], od.t_delivered[o[drop]])
    np.testing.assert_array_equal(node[pick], od.pickup[o[pick]])
    np.testing.assert_array_equal(node[drop], od.dropoff[o[drop]])
    if sim.cfg.same_pickup_bundles:
        check_one_pickup_group_on_board(sim)
    # per driver: time-ordered, one place at a time, and never faster than free flow
    for di in np.unique(drv):
        m = drv == di
        td, nd = t[m], node[m]
        assert (np.diff(td) >= -_TOL).all(), f"driver {di}: events out of time order"
        same_t = np.abs(np.diff(td)) <= _TOL
        assert (nd[1:][same_t] == nd[:-1][same_t]).all(), f"driver {di}: two places at once"
        moved = nd[1:] != nd[:-1]
        if moved.any():
            a, b = nd[:-1][moved], nd[1:][moved]
            need = sim.city.travel_s(a, b) / dr.speed[di]
            gap = np.diff(td)[moved]
            assert (gap >= need - _TOL).all(), f"driver {di}: moved faster than free flow ({gap} < {need})"


def check_one_pickup_group_on_board(sim: Simulator) -> None:
    """The MDRP bundle rule: a driver never carries orders of two pickup groups (restaurants) at once."""
    from gigdispatch.envs.core.types import STOP_DROPOFF, STOP_PICKUP

    ev = events_table(sim)
    grp = sim.orders.group
    for d in np.unique(ev["driver"]):
        m = np.flatnonzero(ev["driver"] == d)
        onboard: set[int] = set()
        for i in m[np.argsort(ev["t"][m], kind="stable")]:
            o = int(ev["order"][i])
            if ev["kind"][i] == STOP_PICKUP:
                onboard.add(o)
                assert len({int(grp[x]) for x in onboard}) == 1, f"driver {d} carries orders of two pickup groups"
            else:
                assert ev["kind"][i] == STOP_DROPOFF
                onboard.discard(o)


class ScriptedPolicy(Policy):
    """Plays fixed decisions at given decision epochs (simulated seconds); ``fallback`` (or nothing) otherwise."""

    name = "scripted-test"

    def __init__(self, script: dict[float, object], fallback: Policy | None = None) -> None:
        self.script = script
        self.fallback = fallback

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        if self.fallback is not None:
            self.fallback.reset(sim, rng)

    def act(self, sim: Simulator) -> Decision:
        if sim.t in self.script:
            return self.script[sim.t]
        return self.fallback.act(sim) if self.fallback is not None else Decision()
