"""Determinism: a seed fixes the whole episode (all randomness comes from ``reset(seed)``)."""

from __future__ import annotations

import math
import pickle
from dataclasses import fields

import numpy as np
import pytest
from simtools import events_table

from gigdispatch.agents import make_policy
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.state import EpisodeState
from gigdispatch.envs.core.types import ORDER_ASSIGNED, ORDER_OPEN, ORDER_PICKED
from gigdispatch.envs.scenarios import load_scenario


def _snapshot(sim: Simulator) -> dict[str, np.ndarray]:
    snap = {}
    for group, obj in (("orders", sim.orders), ("drivers", sim.drivers)):
        for f in fields(obj):
            snap[f"{group}.{f.name}"] = getattr(obj, f.name).copy()
    for name in ("t", "order", "driver", "kind", "cents", "t_settle"):
        snap[f"ledger.{name}"] = sim.ledger.column(name).copy()
    return snap


def _assert_same_kpis(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        va, vb = a[k], b[k]
        if isinstance(va, float) and math.isnan(va):
            assert isinstance(vb, float) and math.isnan(vb), k
        else:
            assert va == vb, (k, va, vb)


def _assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # nan == nan here


def _run(scenario, seed: int, record_events: bool = False):
    sim = Simulator(scenario, record_events=record_events)
    kpis = sim.run(make_policy("nearest"), seed=seed)
    return sim, kpis


def test_same_seed_same_episode(default_scenario):
    sim_a, k_a = _run(default_scenario, 123, record_events=True)
    sim_b, k_b = _run(default_scenario, 123, record_events=True)
    _assert_same_kpis(k_a, k_b)
    _assert_same_state(_snapshot(sim_a), _snapshot(sim_b))
    ea, eb = events_table(sim_a), events_table(sim_b)
    for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k], err_msg=k)
    assert sim_a.counters == sim_b.counters
    assert k_a["orders_delivered"] > 0


def test_different_seeds_differ(default_scenario):
    _, k0 = _run(default_scenario, 0)
    _, k1 = _run(default_scenario, 1)
    assert k0 != k1
    assert k0["orders_created"] != k1["orders_created"] or k0["fees_total"] != k1["fees_total"]


def test_reset_restores_everything(default_scenario):
    """One simulator, seeds 7 -> 8 -> 7: the second seed-7 episode equals the first (no state leaks across resets)."""
    sim = Simulator(default_scenario)
    k_first = sim.run(make_policy("nearest"), seed=7)
    snap_first = _snapshot(sim)
    sim.run(make_policy("nearest"), seed=8)
    k_again = sim.run(make_policy("nearest"), seed=7)
    _assert_same_kpis(k_first, k_again)
    _assert_same_state(snap_first, _snapshot(sim))


def test_two_simulators_from_one_scenario_and_from_two_loads():
    sc1 = load_scenario("default")
    sc2 = load_scenario("default")
    a = Simulator(sc1)
    b = Simulator(sc1)
    c = Simulator(sc2)
    # interleave the two simulators on the same scenario step by step: they must not share state
    pa, pb = make_policy("nearest"), make_policy("nearest")
    a.reset(5)
    b.reset(5)
    pa.reset(a, a.rng["policy"])
    pb.reset(b, b.rng["policy"])
    while not (a.done and b.done):
        if not a.done:
            a.step(pa.act(a))
        if not b.done:
            b.step(pb.act(b))
    kc = c.run(make_policy("nearest"), seed=5)
    from gigdispatch.envs.core.kpis import compute_kpis

    ka, kb = compute_kpis(a), compute_kpis(b)
    _assert_same_kpis(ka, kb)
    _assert_same_kpis(ka, kc)
    _assert_same_state(_snapshot(a), _snapshot(b))
    _assert_same_state(_snapshot(a), _snapshot(c))


def test_recording_events_does_not_change_the_episode(default_scenario):
    sim_a, k_a = _run(default_scenario, 42, record_events=False)
    sim_b, k_b = _run(default_scenario, 42, record_events=True)
    _assert_same_kpis(k_a, k_b)
    _assert_same_state(_snapshot(sim_a), _snapshot(sim_b))
    assert sim_a.events == [] and len(sim_b.events) > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_fixed_scenario_times_do_not_depend_on_the_seed(seed, line_nodes):
    """A hand-built scenario with always-accept drivers has no randomness that matters: every seed gives
    the same times (the seed only feeds ratings, disputes, offers' response delays)."""
    from gigdispatch.envs.scenarios.fixed import fixed_scenario

    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2},
        {"t_place": 0.0, "pickup": 3, "dropoff": 4},
        {"t_place": 60.0, "pickup": 0, "dropoff": 4},
    ]
    sc = fixed_scenario(line_nodes, orders, [{"node": 0}, {"node": 4}])
    sim_s, _ = _run(sc, seed)
    sim_r, _ = _run(sc, 999)
    for name in ("t_pickup", "t_delivered", "driver", "fee", "payout"):
        np.testing.assert_array_equal(getattr(sim_s.orders, name), getattr(sim_r.orders, name), err_msg=name)


# ------------------------------------------------------------------------- copy, pickle, load_state
def _mid_day(scenario, seed: int, policy_name: str) -> Simulator:
    """A simulator with events recorded, run with ``policy_name`` to the middle of the horizon."""
    sim = Simulator(scenario, record_events=True)
    sim.reset(seed)
    policy = make_policy(policy_name)
    policy.reset(sim, sim.rng["policy"])
    while sim.t < (sim.t_start + sim.t_end) / 2.0:
        sim.step(policy.act(sim))
    st = sim.orders.status
    assert not sim.done and ((st == ORDER_ASSIGNED) | (st == ORDER_PICKED)).any() and (st == ORDER_OPEN).any()
    return sim


def _finish(sim: Simulator, policy_name: str) -> dict:
    """Step ``sim`` on to the end of the day with a fresh ``policy_name`` reset on its own policy stream."""
    policy = make_policy(policy_name)
    policy.reset(sim, sim.rng["policy"])
    while not sim.done:
        sim.step(policy.act(sim))
    return compute_kpis(sim)


def _assert_same_day(a: Simulator, ka: dict, b: Simulator, kb: dict) -> None:
    _assert_same_kpis(ka, kb)
    _assert_same_state(_snapshot(a), _snapshot(b))
    ea, eb = events_table(a), events_table(b)
    for k in ea:
        np.testing.assert_array_equal(ea[k], eb[k], err_msg=k)
    assert a.counters == b.counters
    assert a.t == b.t and a.online_peak == b.online_peak


@pytest.mark.parametrize("policy_name", ["random", "sla-priority", "batching"])
def test_copy_and_pickle_replay_the_original_from_mid_day(default_scenario, policy_name):
    """From mid-day, ``copy()`` and a pickled-then-unpickled simulator, stepped on with the same policy, end
    the day exactly as the original (KPIs, order and driver arrays, ledger, events, counters). The original
    runs to the end first: a copy that shared any state with it would then diverge."""
    sim = _mid_day(default_scenario, 21, policy_name)
    copied = sim.copy()
    pickled = pickle.loads(pickle.dumps(sim))
    for other in (copied, pickled):
        assert other.state is not sim.state and other.ledger is not sim.ledger
        assert not np.shares_memory(other.drivers.route_order, sim.drivers.route_order)
        assert not np.shares_memory(other.state.committed, sim.state.committed)
        assert other.rng["behaviour"] is not sim.rng["behaviour"]
    assert copied.city is sim.city  # the read-only scenario is shared by a copy
    k_orig = _finish(sim, policy_name)
    assert k_orig["orders_delivered"] > 0
    _assert_same_day(sim, k_orig, copied, _finish(copied, policy_name))
    _assert_same_day(sim, k_orig, pickled, _finish(pickled, policy_name))


def test_load_state_sets_a_whole_state(default_scenario):
    """A fresh simulator given another's orders, drivers, state, ledger and streams (``load_state``) goes on
    exactly as that one does."""
    sim = _mid_day(default_scenario, 4, "hungarian")
    src = sim.copy()
    fresh = Simulator(default_scenario, record_events=True)
    fresh.load_state(src.orders, src.drivers, src.state, ledger=src.ledger, rng=src.rng)
    assert fresh.state is src.state and fresh.t == sim.t
    _assert_same_day(sim, _finish(sim, "hungarian"), fresh, _finish(fresh, "hungarian"))


def test_load_state_from_a_built_state(default_scenario):
    """What the inference service does: a state at ``t`` with every order placed (``EpisodeState.at``), the
    zone counts from the loaded arrays (``count_zones``); properties read and write ``state``."""
    sim = _mid_day(default_scenario, 9, "nearest")
    orders, drivers = sim.orders, sim.drivers
    state = EpisodeState.at(sim.t, sim.traffic, drivers.n, sim.city.n_zones, placed=orders.n)
    state.committed[:] = sim.committed
    other = Simulator(default_scenario)
    other.load_state(orders, drivers, state)
    other.count_zones()
    assert len(other.ledger) == 0 and other.seed is None and other.counters["invalid"] == 0
    np.testing.assert_array_equal(other.factor, sim.traffic.factor(sim.t))
    np.testing.assert_array_equal(other.open_orders(), sim.open_orders())  # every placed order is in the window
    op = sim.open_orders()
    expect = np.bincount(sim.city.zone_of[orders.pickup[op]], minlength=sim.city.n_zones)
    np.testing.assert_array_equal(other.zone_demand, expect)
    idle = other.eligible(idle_only=True)
    supply = np.bincount(sim.city.zone_of[drivers.node[idle]], minlength=len(expect))
    np.testing.assert_array_equal(other.zone_supply, supply)
    other.t = 123.0
    assert other.state.t == 123.0
    other.step()  # steps on from the loaded state
    assert other.t == 123.0 + other.dt


def test_load_state_rejects_shapes_that_do_not_fit(default_scenario):
    sim = _mid_day(default_scenario, 2, "nearest")
    st = EpisodeState.at(sim.t, sim.traffic, sim.drivers.n + 1, sim.city.n_zones)
    with pytest.raises(InputError, match=r"state\.committed"):
        Simulator(default_scenario).load_state(sim.orders, sim.drivers, st)
    st = EpisodeState.at(sim.t, sim.traffic, sim.drivers.n, sim.city.n_zones, placed=sim.orders.n + 1)
    with pytest.raises(InputError, match=r"state\.next_order"):
        Simulator(default_scenario).load_state(sim.orders, sim.drivers, st)
    fresh = Simulator(default_scenario)
    with pytest.raises(RuntimeError, match="reset"):
        fresh.step()
