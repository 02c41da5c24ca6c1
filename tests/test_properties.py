"""Property tests: conservation laws over random small scenarios and over the default scenario.

Every episode is checked after every step (``StepChecker``) and at its end (``check_final``):
orders are created once and end once, capacity is never exceeded, no driver is in two places or
moves faster than free flow, time only moves forward, and the ledger balances to the cent.
Two policies drive the episodes: ``nearest`` and a random policy that also makes invalid,
conflicting and escalated offers, unassigns, repositions and re-sequences routes.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simtools import StepChecker, check_final, run_episode

from gigdispatch.agents import make_policy
from gigdispatch.agents.base import Policy
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import (
    ORDER_ASSIGNED,
    ORDER_CANCELLED,
    ORDER_OFFERED,
    ORDER_OPEN,
    ORDER_PICKED,
    PH_IDLE,
    PH_SERVICE,
)
from gigdispatch.envs.scenarios.fixed import fixed_scenario

IN_FLIGHT = (ORDER_OPEN, ORDER_OFFERED, ORDER_ASSIGNED, ORDER_PICKED)  # refunded in full when the day closes
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class RandomPolicy(Policy):
    """Random offers (some to ineligible drivers, some conflicting), random escalation levels,
    occasional unassigns and repositioning moves; also asks the simulator to re-sequence routes."""

    name = "random-test"

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, sim: Simulator) -> Decision:
        rng = self.rng
        for d in np.flatnonzero(sim.drivers.route_len >= 4).tolist():
            if rng.random() < 0.3:
                sim.resequence(d)
        op = sim.open_orders()
        elig = np.flatnonzero(sim.eligible())
        n = int(rng.integers(0, 4))
        if op.size and n:
            o = rng.choice(op, size=n)  # may repeat: conflicts
            pool = elig if (elig.size and rng.random() < 0.8) else np.arange(sim.drivers.n)
            d = rng.choice(pool, size=n)
            lv = rng.integers(0, sim.n_levels, size=n)
        else:
            o = d = lv = np.zeros(0, np.int64)
        assigned = np.flatnonzero(sim.orders.status == ORDER_ASSIGNED)
        un = assigned[rng.random(assigned.size) < 0.05]
        idle = np.flatnonzero(sim.drivers.phase == PH_IDLE)
        rep = idle[rng.random(idle.size) < 0.05]
        zones = rng.integers(0, sim.city.n_zones, size=rep.size)
        return Decision(order=o, driver=d, level=lv, unassign=un, reposition_driver=rep, reposition_zone=zones)


# ------------------------------------------------------------------------------------------------
# random small scenarios
# ------------------------------------------------------------------------------------------------
@st.composite
def small_scenarios(draw):
    n_nodes = draw(st.integers(2, 7))
    coords = draw(
        st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=n_nodes, max_size=n_nodes, unique=True)
    )
    nodes = [[150.0 * x, 150.0 * y] for x, y in coords]
    orders = []
    for _ in range(draw(st.integers(1, 10))):
        p = draw(st.integers(0, n_nodes - 1))
        q = draw(st.integers(0, n_nodes - 2))
        q = q if q < p else q + 1
        t_place = 30.0 * draw(st.integers(0, 80))
        orders.append(
            {
                "t_place": t_place,
                "pickup": p,
                "dropoff": q,
                "ready": t_place + 60.0 * draw(st.integers(0, 20)),
                "deadline": t_place + 60.0 * draw(st.integers(1, 90)),
                "patience": draw(st.sampled_from([math.inf, 60.0, 300.0, 900.0, 1800.0])),
                "volume": draw(st.floats(0.5, 60.0)),
                "tip": draw(st.integers(0, 500)),
                "level": draw(st.integers(0, 2)),
            }
        )
    drivers = []
    for _ in range(draw(st.integers(1, 4))):
        start = 60.0 * draw(st.integers(0, 30))
        drivers.append(
            {
                "node": draw(st.integers(0, n_nodes - 1)),
                "start": start,
                "end": start + 60.0 * draw(st.integers(1, 120)),
                "capacity": draw(st.sampled_from([math.inf, 10.0, 40.0, 100.0])),
                "always_accept": draw(st.booleans()),
                "owned": draw(st.booleans()),
                "speed": draw(st.sampled_from([0.55, 1.0, 1.7])),
                "accept_bias": draw(st.floats(-2.0, 2.0)),
                "response_s": draw(st.sampled_from([0.0, 20.0, 90.0])),
                "instant_pay": draw(st.booleans()),
                "service_factor": draw(st.sampled_from([0.5, 1.0, 1.3])),
            }
        )
    config = {
        "fleet": {
            "pickup_service_minutes": draw(st.sampled_from([0.0, 1.0, 2.0, 4.0])),
            "dropoff_service_minutes": draw(st.sampled_from([0.0, 1.0, 2.0, 4.0])),
            "max_route_stops": draw(st.sampled_from([2, 4, 8])),
            "late_streak_to_suspend": draw(st.integers(1, 3)),
            "suspension_minutes": draw(st.sampled_from([5.0, 30.0])),
        },
        "pricing": {
            "enabled": draw(st.booleans()),
            "surge": {"enabled": draw(st.booleans())},
            "payout": {
                "hourly_guarantee": draw(st.sampled_from([None, 12.0])),
                "auto_escalate": draw(st.booleans()),
                "dispute_rate": draw(st.sampled_from([0.0, 0.5])),
            },
        },
        "same_pickup_bundles": draw(st.booleans()),
    }
    if draw(st.booleans()):  # slowdowns and incidents (the fixed scenario's city is one zone)
        config["traffic"] = {
            "enabled": True,
            "incidents_per_hour": 4.0,
            "peaks": [{"center": 1800.0, "width_hours": 0.5, "amplitude": 0.5}],
        }
    return nodes, orders, drivers, config


def _run_checked(scenario, seed: int, policy: Policy) -> Simulator:
    sim = Simulator(scenario, record_events=True)
    sim.reset(seed)
    checker = StepChecker(sim)
    run_episode(sim, seed=seed, policy=policy, after_step=checker)
    assert checker.steps >= 1
    check_final(sim)
    return sim


@SETTINGS
@given(small_scenarios(), st.integers(0, 2**31 - 1))
def test_conservation_small_nearest(case, seed):
    nodes, orders, drivers, config = case
    _run_checked(fixed_scenario(nodes, orders, drivers, config=config), seed, make_policy("nearest"))


@SETTINGS
@given(small_scenarios(), st.integers(0, 2**31 - 1))
def test_conservation_small_random_policy(case, seed):
    nodes, orders, drivers, config = case
    _run_checked(fixed_scenario(nodes, orders, drivers, config=config), seed, RandomPolicy())


# ------------------------------------------------------------------------------------------------
# the default scenario, random seeds
# ------------------------------------------------------------------------------------------------
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.integers(0, 2**32 - 1))
def test_conservation_default_nearest(default_scenario, seed):
    sim = _run_checked(default_scenario, seed, make_policy("nearest"))
    assert sim.orders.n > 500  # a real day, not an empty one


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.integers(0, 2**32 - 1))
def test_conservation_default_random_policy(default_scenario, seed):
    _run_checked(default_scenario, seed, RandomPolicy())


@pytest.mark.parametrize("seed", [0, 1])
def test_default_time_moves_forward_to_the_end(default_scenario, seed):
    sim = Simulator(default_scenario)
    ts = []
    run_episode(sim, seed=seed, after_step=lambda s: ts.append(s.t))
    ts = np.array(ts)
    np.testing.assert_array_equal(np.diff(ts), sim.dt)
    assert ts[0] == sim.t_start + sim.dt
    assert sim.t_end <= ts[-1] <= sim.day_end
    assert len(ts) <= sim.n_steps


def _in_service_by_loop(sim: Simulator, orders: np.ndarray) -> np.ndarray:
    """``Simulator.in_service``'s rule, one order at a time."""
    dr, out = sim.drivers, np.zeros(len(orders), bool)
    for i, o in enumerate(orders.tolist()):
        d = int(sim.orders.driver[o])
        if d >= 0 and dr.phase[d] == PH_SERVICE:
            out[i] = o in dr.route_order[d, : dr.group_n[d]].tolist()
    return out


def test_public_queries_agree_with_the_arrays_every_step(default_scenario):
    """The rules the core owns, checked against their definitions after every step of a day with
    reassignments (``sla-priority``): zone demand and supply, in-service, the last-decliner filter, and at the
    end the refund of every cancelled or never-delivered order."""
    sim = Simulator(default_scenario)
    Z = sim.city.n_zones
    seen = {"in_service": 0, "declined": 0}

    def check(s: Simulator) -> None:
        od, dr = s.orders, s.drivers
        op = s.open_orders()
        demand = np.bincount(s.city.zone_of[od.pickup[op]], minlength=Z)
        np.testing.assert_array_equal(s.zone_demand, demand)  # as of the end of the step just taken
        np.testing.assert_array_equal(s.zone_demand_of(op), demand)
        idle = s.eligible(idle_only=True)
        heading = np.where(dr.phase == PH_IDLE, dr.node, dr.leg_to)
        np.testing.assert_array_equal(s.zone_supply_of(idle), np.bincount(s.city.zone_of[dr.node[idle]], minlength=Z))
        by_heading = np.bincount(s.city.zone_of[heading[idle]], minlength=Z)
        np.testing.assert_array_equal(s.zone_supply_of(idle, heading=True), by_heading)
        assigned = np.flatnonzero(od.status == ORDER_ASSIGNED)
        got = s.in_service(assigned)
        np.testing.assert_array_equal(got, _in_service_by_loop(s, assigned))
        seen["in_service"] += int(got.sum())
        ids, _ = s.candidates(op, 4)
        kept = s.drop_last_decliners(op, ids)
        dropped = (kept != ids).any(axis=1)
        assert ((kept == -1) | (kept != od.last_decliner[op][:, None])).all()
        np.testing.assert_array_equal(dropped, ((ids == od.last_decliner[op][:, None]) & (ids >= 0)).any(axis=1))
        seen["declined"] += int(dropped.sum())

    run_episode(sim, seed=3, policy=make_policy("sla-priority"), after_step=check)
    assert seen["in_service"] > 0 and seen["declined"] > 0  # both rules had something to decide
    od = sim.orders
    gone = np.flatnonzero((od.status == ORDER_CANCELLED) | np.isin(od.status, IN_FLIGHT))
    assert gone.size > 0 and sim.cancel_penalty_cents() == round(sim.cfg.sla.cancel_penalty * 100)
    np.testing.assert_array_equal(od.refund[gone], sim.cancel_refund_cents(gone))


def test_conservation_city_1000_nearest():
    """The large built-in scenario (1,000 drivers, ~24,000 orders), one seed, all invariants."""
    from gigdispatch.envs.scenarios import load_scenario

    sim = _run_checked(load_scenario("city-1000"), 0, make_policy("nearest"))
    assert sim.orders.n > 10_000 and sim.drivers.n == 1000


def test_geofence_never_faster_than_free_flow():
    """Arrival is detected inside the geofence, but the stop's event waits until the driver reaches it."""
    from simtools import LINE5

    cfg = {"fleet": {"geofence_m": 100.0, "pickup_service_minutes": 0.0, "dropoff_service_minutes": 0.0}}
    sc = fixed_scenario(LINE5, [{"t_place": 0.0, "pickup": 1, "dropoff": 2}], [{"node": 0}], config=cfg)
    sim = Simulator(sc, record_events=True)
    run_episode(sim)
    check_final(sim)  # the free-flow check in check_events fails


@functools.cache
def _default_city():
    from gigdispatch.envs.scenarios.loader import load_scenario

    return load_scenario("default").city


def _factor_direct(tr, t: float) -> np.ndarray:
    """The zone slowdown at ``t`` computed from its definition: peaks, then every incident in force in turn."""
    c, w, a = tr.peaks.T
    f = 1.0 + float((a * np.exp(-0.5 * ((t - c) / w) ** 2)).sum()) * tr.zone_weight
    inc = tr.incidents
    for i in range(len(inc.start)):
        if inc.start[i] <= t < inc.end[i]:
            f[inc.zone[i]] *= inc.factor[i]
    return f


@given(st.integers(0, 2**31 - 1), st.lists(st.floats(0.0, 86400.0), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_traffic_factor_cache_matches_definition(seed, times):
    """``Traffic`` caches the incidents in force between start/end times; at any time, and after the
    incidents are replaced (as the inference service does), it equals the definition, overlapping
    incidents in one zone included."""
    import copy

    from gigdispatch.envs.core.city import Incidents, Traffic

    city = _default_city()
    rng = np.random.default_rng(seed)
    k = int(rng.integers(0, 12))
    start = np.sort(rng.uniform(0.0, 80000.0, k))
    zones = rng.integers(0, min(3, city.n_zones), k).astype(np.int32)  # few zones: incidents overlap in one
    inc = Incidents(start, start + rng.uniform(60.0, 9000.0, k), zones, rng.uniform(1.1, 2.0, k))
    tr = Traffic(city, [(30600.0, 3600.0, 0.5), (63000.0, 5400.0, 0.6)], 0.5, inc)
    bounds = np.concatenate([inc.start, inc.end])
    for t in [*times, *bounds.tolist()]:  # boundary times too: a start counts, an end does not
        np.testing.assert_array_equal(tr.factor(t), _factor_direct(tr, t))
        assert tr.incident_changes(t - 60.0, t) == bool(((bounds > t - 60.0) & (bounds <= t)).any())
    tr2 = copy.copy(tr)
    tr2.incidents = Incidents(np.zeros(0), np.zeros(0), np.zeros(0, np.int32), np.zeros(0))
    for t in times:
        np.testing.assert_array_equal(tr2.factor(t), _factor_direct(tr2, t))
        np.testing.assert_array_equal(tr.factor(t), _factor_direct(tr, t))
