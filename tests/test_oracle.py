"""The hindsight oracle: certified bounds (hand-made scenarios, every registered policy on ``default``),
determinism, size limits, and the oracle as a runnable policy.

Hand-made scenarios use ``LINE5`` (nodes 300 m apart, one minute per hop, see ``test_handmade.py``):
service is 2 min at a pickup and at a drop-off (half on arrival, half on departure), an order placed at
t = 0 is created at the end of the first 60 s step and offered at t = 60 s; surge and disputes are off.
fee = round(100 * (3.00 + 0.80 * trip km + 1.00)); level-0 payout = round(100 * (4.00 + 0.60 * max(km - 1, 0)))
with km = driver's position -> pickup -> drop-off.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from simtools import LINE5, MDRP_DIR, ScriptedPolicy

from gigdispatch.agents import UnknownPolicyError, make_policy
from gigdispatch.agents.oracle import OraclePolicy, bounds_for_run, compute_bounds
from gigdispatch.agents.registry import policy_names
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ORDER_DELIVERED, ORDER_FUTURE, ORDER_LOST
from gigdispatch.envs.scenarios.fixed import fixed_scenario

ONE_ORDER = [{"t_place": 0.0, "pickup": 1, "dropoff": 3}]  # 600 m: fee 448 cents, payout 400 from node 1


def _run(scenario, policy, seed: int = 0):
    sim = Simulator(scenario)
    kpis = sim.run(policy, seed=seed)
    return sim, kpis


def _bounds(scenario, seed: int = 0):
    sim = Simulator(scenario)
    sim.reset(seed)
    return compute_bounds(sim)


# ------------------------------------------------------------------------------------------------
# hand-made scenarios: the optimum is known by hand, the bounds equal or bracket it
# ------------------------------------------------------------------------------------------------
def test_one_order_gig_driver_at_the_pickup_bound_equals_the_optimum():
    # the driver stands at the pickup: the best any policy can do is fee 4.48 - payout 4.00 = 0.48, and
    # the delivery at 6 min: offered at 1 min, pickup at 2 (half service), leave 3, 2 hops, drop at 6
    sc = fixed_scenario(LINE5, ONE_ORDER, [{"node": 1}])
    _, kpis = _run(sc, make_policy("nearest"))
    assert kpis["platform_margin"] == pytest.approx(0.48)
    assert kpis["click_to_door_mean_min"] == pytest.approx(6.0)
    bounds, _, _ = _bounds(sc)
    assert 0.48 <= bounds["profit_upper"] <= 0.48 + 0.05  # exact up to a few cents of rounding slack
    assert bounds["click_to_door_lower_all"] == pytest.approx(6.0, abs=1e-4)
    assert bounds["click_to_door_lower_all"] <= 6.0
    run = bounds_for_run(bounds, kpis)
    assert run["profit_upper"] >= kpis["platform_margin"]
    assert run["click_to_door_lower"] <= kpis["click_to_door_mean_min"]


def test_one_order_far_driver_brackets_the_realised_value():
    # from node 4 the payout counts the 900 m to the pickup (4.30) and the drive starts only at the offer
    sc = fixed_scenario(LINE5, ONE_ORDER, [{"node": 4}])
    _, kpis = _run(sc, make_policy("nearest"))
    assert kpis["platform_margin"] == pytest.approx(0.18)
    assert kpis["click_to_door_mean_min"] == pytest.approx(9.0)
    bounds, _, _ = _bounds(sc)
    assert 0.18 <= bounds["profit_upper"] <= 0.51
    # the bound lets the driver leave home at t = 0 (a policy could have sent it ahead): 8 min
    assert bounds["click_to_door_lower_all"] == pytest.approx(8.0, abs=1e-4)


def test_one_order_owned_driver_pays_the_wage_of_the_day():
    # owned: no payout, 16 EUR/h wage while online; the day closes at 6 min (nothing left in flight), so
    # the wage is 1.60 and the margin 4.48 - 1.60 = 2.88 whatever the policy does
    sc = fixed_scenario(LINE5, ONE_ORDER, [{"node": 1, "owned": True}])
    _, kpis = _run(sc, make_policy("nearest"))
    assert kpis["platform_margin"] == pytest.approx(2.88)
    bounds, _, _ = _bounds(sc)
    assert bounds["wages_lower_eur"] == pytest.approx(1.59)  # 1.60 less a cent of rounding slack
    assert 2.88 <= bounds["profit_upper"] <= 2.88 + 0.05


def test_two_orders_one_driver_the_scripted_optimum_is_bracketed():
    # both orders picked up at node 1 (the driver is there): order 0 offered at 1 min, order 1 at 2 min
    # while the driver is still at node 1, so both payouts are the minimum 4.00: margin 0.48 + 0.72 = 1.20.
    # nearest waits for an idle driver and pays 4.30 for the second order from node 3: 0.90.
    orders = [{"t_place": 0.0, "pickup": 1, "dropoff": 3}, {"t_place": 0.0, "pickup": 1, "dropoff": 4, "tip": 150}]
    sc = fixed_scenario(LINE5, orders, [{"node": 1}])
    script = {
        60.0: Decision(order=np.array([0]), driver=np.array([0])),
        120.0: Decision(order=np.array([1]), driver=np.array([0])),
    }
    _, best = _run(sc, ScriptedPolicy(script))
    assert best["platform_margin"] == pytest.approx(1.20)
    assert best["orders_delivered"] == 2 and best["on_time_rate"] == 1.0
    _, near = _run(sc, make_policy("nearest"))
    assert near["platform_margin"] == pytest.approx(0.90)
    bounds, _, _ = _bounds(sc)
    assert 1.20 <= bounds["profit_upper"] <= 1.20 + 0.06
    # order 0 alone could be dropped at 6 min, order 1 (3 hops) at 7: the bound for 2 deliveries is 6.5
    assert bounds["click_to_door_lower_by_delivered_min"] == pytest.approx([6.0, 6.5], abs=1e-4)


def test_an_order_left_in_flight_is_refunded_and_the_bound_holds():
    # no driver can carry the order (5 l > 1 l) and the customer never gives up: it is still open when the
    # day closes, so the customer gets the fee (4.48) back plus the cancellation penalty (2.00), as for a
    # cancellation; the bound for runs with nothing in flight (-2.00) then holds for this run too.
    sc = fixed_scenario(LINE5, [{**ONE_ORDER[0], "volume": 5.0}], [{"node": 1, "capacity": 1.0}])
    _, kpis = _run(sc, make_policy("nearest"))
    assert kpis["orders_open"] == 1 and kpis["platform_margin"] == pytest.approx(-2.00)
    assert kpis["refunds_total"] == pytest.approx(4.48 + 2.00)
    bounds, _, _ = _bounds(sc)
    assert kpis["platform_margin"] <= bounds["profit_upper"] + 1e-9
    run = bounds_for_run(bounds, kpis)
    assert kpis["platform_margin"] <= run["profit_upper"]
    assert math.isnan(run["click_to_door_lower"])


def test_bounds_for_run_rejects_kpis_of_another_episode():
    sc = fixed_scenario(LINE5, ONE_ORDER, [{"node": 1}])
    bounds, _, _ = _bounds(sc)
    with pytest.raises(ValueError, match="orders_open"):
        bounds_for_run(bounds, {"orders_open": 5, "orders_delivered": 1})
    with pytest.raises(ValueError, match="orders_delivered"):
        bounds_for_run(bounds, {"orders_open": 0, "orders_delivered": 2})


# ------------------------------------------------------------------------------------------------
# default scenario: every policy that exists stays within the bounds
# ------------------------------------------------------------------------------------------------
def _available_policies() -> list[str]:
    names = []
    for name in policy_names():
        try:
            make_policy(name)
        except UnknownPolicyError:
            continue  # its module (or the extra it needs) is not installed
        names.append(name)
    return names


def _check_run(sim: Simulator, kpis: dict, bounds: dict, ep) -> None:
    """The run's KPIs are within the bounds, and so is every order (fee, click-to-door)."""
    run = bounds_for_run(bounds, kpis)
    assert kpis["platform_margin"] <= run["profit_upper"]
    assert kpis["platform_margin"] <= bounds["profit_upper_any"]
    if kpis["orders_open"] == 0:
        assert kpis["platform_margin"] <= bounds["profit_upper"]
    if kpis["orders_delivered"]:
        assert kpis["click_to_door_mean_min"] >= run["click_to_door_lower"]
    od = sim.orders
    created = (od.status != ORDER_FUTURE) & (od.status != ORDER_LOST)
    assert not (created & ~ep.conv).any()  # only orders the oracle thinks can convert do
    assert (od.fee[created] <= ep.fee_max[created]).all()  # the surge cap and the conversion draw bound the fee
    dl = od.status == ORDER_DELIVERED
    assert ((od.t_delivered[dl] - od.t_place[dl]) >= ep.ctd_min_s[dl] - 1e-6).all()


@pytest.fixture(scope="module")
def default_sim(default_scenario) -> Simulator:
    return Simulator(default_scenario)


def test_default_nearest_and_oracle_within_the_bounds(default_sim):
    sim = default_sim
    sim.reset(1000)
    bounds, ep, _ = compute_bounds(sim)
    assert bounds["certified"] and bounds["profit_upper"] <= bounds["profit_upper_any"]
    assert bounds["profit_upper"] >= bounds["lp_primal_eur"] - 0.01  # the dual certificate is not below the LP optimum
    oracle = make_policy("oracle")
    assert isinstance(oracle, OraclePolicy)
    for policy in (make_policy("nearest"), oracle):
        kpis = sim.run(policy, seed=1000)
        _check_run(sim, kpis, bounds, ep)
    assert oracle.bounds == bounds  # reset computed the same bounds for the same seed
    json.dumps(oracle.bounds)  # JSON-safe for the evaluation harness
    assert oracle.bounds_for(kpis) == bounds_for_run(bounds, kpis)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1000, 1001, 1002])
def test_default_every_policy_within_the_bounds(default_sim, seed):
    sim = default_sim
    sim.reset(seed)
    bounds, ep, _ = compute_bounds(sim)
    names = _available_policies()
    assert "nearest" in names and "oracle" in names
    for name in names:
        kpis = sim.run(make_policy(name), seed=seed)
        _check_run(sim, kpis, bounds, ep)


def test_bounds_are_deterministic_per_seed(default_sim):
    sim = default_sim
    sim.reset(1003)
    a, _, plan_a = compute_bounds(sim)
    sim.reset(1003)
    b, _, plan_b = compute_bounds(sim)
    assert a == b
    np.testing.assert_array_equal(plan_a, plan_b)
    sim.reset(1004)
    c, _, _ = compute_bounds(sim)
    assert c["profit_upper"] != a["profit_upper"]


def test_oracle_policy_is_deterministic(default_sim):
    sim = default_sim
    k1 = sim.run(make_policy("oracle"), seed=1005)
    k2 = sim.run(make_policy("oracle"), seed=1005)
    k1.pop("wall_seconds", None), k2.pop("wall_seconds", None)
    assert k1 == k2


# ------------------------------------------------------------------------------------------------
# sizes and arguments
# ------------------------------------------------------------------------------------------------
def test_too_large_scenarios_raise_a_clear_error(default_sim):
    sim = default_sim
    sim.reset(1000)
    with pytest.raises(ValueError, match=r"not computed for scenario 'default'.*max_pairs"):
        OraclePolicy(max_pairs=10_000).reset(sim, sim.rng["policy"])
    # the default city has a 50 m geofence: the all-pairs travel bound needs every node
    with pytest.raises(ValueError, match="max_nodes"):
        OraclePolicy(max_nodes=10).reset(sim, sim.rng["policy"])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="k must be"):
        OraclePolicy(k=0)
    with pytest.raises(ValueError, match="max_pairs"):
        OraclePolicy(max_pairs=0)
    with pytest.raises(RuntimeError, match="reset"):
        OraclePolicy().bounds_for({"orders_open": 0, "orders_delivered": 0})


def test_mdrp_instance_within_the_bounds():
    folder = MDRP_DIR / "0o50t100s1p100"
    if not folder.is_dir():
        pytest.skip(f"MDRP data not found at {folder}")
    from gigdispatch.envs.scenarios import load_scenario

    sim = Simulator(load_scenario(str(folder)))
    sim.reset(0)
    bounds, ep, _ = compute_bounds(sim)
    # no fees: the margin is minus the courier pay, at least the hourly-guarantee floor
    assert bounds["profit_upper"] <= -bounds["guarantee_floor_eur"] + 0.01
    assert bounds["orders_must_deliver"] == bounds["orders_convertible"]  # customers never cancel
    for name in ("nearest", "oracle"):
        kpis = sim.run(make_policy(name), seed=0)
        assert kpis["orders_open"] == 0
        _check_run(sim, kpis, bounds, ep)
