"""Hand-built scenarios whose outcomes are worked out by hand from the rules.

Common ground (see ``envs/scenarios/fixed.py`` and the event order in ``envs/core/sim.py``):

* ``LINE5``: nodes at x = 0, 300, 600, 900, 1200 m; 300 m/min, so a hop of k nodes takes k minutes.
* Service is 2 min at a pickup and 2 min at a drop-off, half on arrival and half on departure:
  pickup = max(ready, arrival + 1 min), depart = pickup + 1 min; drop-off = arrival + 1 min.
* Steps are 60 s. Orders placed in [t, t + 60) are created at the end of that step and seen by the
  policy at the decision epoch t + 60. An always-accept driver that is idle starts driving at once
  (within the same step); an offer answered by a gig driver is inserted in phase 4 of the step
  (after movement), so that driver starts moving in the next step.
* Money with the default pricing (no surge in fixed scenarios, no disputes):
  fee = round(100 * (3.00 + 0.80 * trip_km + 0 [size class 0] + 1.00 [standard level])) cents;
  payout = round(100 * (4.00 + 0.60 * max(km - 1, 0))) with km = driver's position -> pickup -> drop-off.
"""

from __future__ import annotations

import numpy as np
import pytest
from simtools import MIN, ScriptedPolicy, StepChecker, assert_ledger_balances, check_final, events_table, run_episode

from gigdispatch.agents import make_policy
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.sim import ActionError, Decision, Simulator
from gigdispatch.envs.core.types import (
    ACC_ACTIVE,
    ACC_SUSPENDED,
    LED_FEE,
    LED_PAYOUT,
    LED_REFUND,
    ORDER_ASSIGNED,
    ORDER_CANCELLED,
    ORDER_DELIVERED,
    ORDER_FUTURE,
    ORDER_OPEN,
    ORDER_PICKED,
    PH_DRIVING,
    PH_OFFLINE,
    PH_SERVICE,
    STOP_DROPOFF,
    STOP_PICKUP,
)
from gigdispatch.envs.scenarios.fixed import fixed_scenario


def _three_orders(line_nodes, config=None):
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2},
        {"t_place": 0.0, "pickup": 3, "dropoff": 4},
        {"t_place": 60.0, "pickup": 0, "dropoff": 4},
    ]
    drivers = [{"node": 0}, {"node": 4}]
    return fixed_scenario(line_nodes, orders, drivers, config=config)


# ------------------------------------------------------------------------------------------------
# 1. two drivers, three orders
# ------------------------------------------------------------------------------------------------
def test_two_drivers_three_orders_times_and_assignment(line_nodes):
    sim = run_episode(Simulator(_three_orders(line_nodes), record_events=True))
    od = sim.orders
    # t=60: order 0 (pickup node 1) -> driver 0 (1 min away; driver 1 is 3 min away),
    #       order 1 (pickup node 3) -> driver 1 (1 min away). Both arrive at 2 min, pick up at 3,
    #       leave at 4, arrive at the drop-off at 5, drop at 6, leave at 7.
    # t=420 (7 min): order 2 (pickup node 0): driver 0 at node 2 (2 min) beats driver 1 at node 4 (4 min):
    #       arrive 9, pickup 10, leave 11, 4 min to node 4, arrive 15, drop 16.
    np.testing.assert_array_equal(od.status, [ORDER_DELIVERED] * 3)
    np.testing.assert_array_equal(od.driver, [0, 1, 0])
    np.testing.assert_array_equal(od.t_pickup, np.array([3, 3, 10]) * MIN)
    np.testing.assert_array_equal(od.t_delivered, np.array([6, 6, 16]) * MIN)
    np.testing.assert_array_equal(od.t_assigned, np.array([1, 1, 7]) * MIN)
    np.testing.assert_array_equal(sim.drivers.deliveries, [2, 1])

    ev = events_table(sim)
    assert len(ev["t"]) == 6
    pick = ev["kind"] == STOP_PICKUP
    np.testing.assert_array_equal(np.sort(ev["order"][pick]), [0, 1, 2])
    np.testing.assert_array_equal(ev["node"][pick], od.pickup[ev["order"][pick]])
    drop = ev["kind"] == STOP_DROPOFF
    assert (pick | drop).all() and drop.sum() == 3
    np.testing.assert_array_equal(ev["node"][drop], od.dropoff[ev["order"][drop]])
    np.testing.assert_array_equal(ev["driver"], od.driver[ev["order"]])

    k = compute_kpis(sim)
    assert k["orders_created"] == 3 and k["orders_delivered"] == 3 and k["on_time_rate"] == 1.0
    assert k["click_to_door_mean_min"] == pytest.approx((6 + 6 + 15) / 3)


def test_two_drivers_three_orders_money(line_nodes):
    sim = run_episode(Simulator(_three_orders(line_nodes)))
    od, dr = sim.orders, sim.drivers
    # fees: 0.3 km, 0.3 km, 1.2 km trips
    np.testing.assert_array_equal(od.fee, [424, 424, 496])
    # payouts: driver 0 at node 0 -> 1 -> 2 (0.6 km), driver 1 at node 4 -> 3 -> 4 (0.6 km),
    # driver 0 at node 2 -> 0 -> 4 (0.6 + 1.2 = 1.8 km: 0.8 km above the free km -> +0.48)
    np.testing.assert_array_equal(od.payout, [400, 400, 448])
    np.testing.assert_array_equal(dr.earnings, [848, 400])
    np.testing.assert_array_equal(od.refund, [0, 0, 0])
    bal = sim.ledger.balances()
    assert bal == {"customer": -1344, "platform": 1344 - 1248, "driver": 1248}
    assert_ledger_balances(sim)
    # one fee entry and one payout entry per order
    kind, order = sim.ledger.column("kind"), sim.ledger.column("order")
    np.testing.assert_array_equal(np.sort(order[kind == LED_FEE]), [0, 1, 2])
    np.testing.assert_array_equal(np.sort(order[kind == LED_PAYOUT]), [0, 1, 2])
    k = compute_kpis(sim)
    assert k["fees_total"] == pytest.approx(13.44)
    assert k["payouts_total"] == pytest.approx(12.48)
    assert k["platform_margin"] == pytest.approx(0.96)


# ------------------------------------------------------------------------------------------------
# 2. an order that must miss its SLA
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pricing", [True, False])
def test_late_delivery_refund_and_streak(line_nodes, pricing):
    # order 0 has a deadline of 2 min but cannot be delivered before 6 min (as in the test above);
    # order 1 keeps the default deadline (placement + 60 min) and is delivered at 6 min.
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "deadline": 2 * MIN},
        {"t_place": 0.0, "pickup": 3, "dropoff": 4},
    ]
    cfg = {"pricing": {"enabled": pricing}}
    sim = run_episode(Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}, {"node": 4}], config=cfg)))
    od, dr = sim.orders, sim.drivers
    np.testing.assert_array_equal(od.status, [ORDER_DELIVERED, ORDER_DELIVERED])
    np.testing.assert_array_equal(od.t_delivered, [6 * MIN, 6 * MIN])
    assert od.t_delivered[0] > od.deadline[0]
    k = compute_kpis(sim)
    assert k["on_time_rate"] == 0.5
    np.testing.assert_array_equal(dr.late_streak, [1, 0])
    np.testing.assert_array_equal(dr.on_time, [0, 1])
    np.testing.assert_array_equal(dr.deliveries, [1, 1])
    assert dr.suspensions.sum() == 0  # one late delivery is below the streak of 3
    if pricing:
        # half the fee (late_refund_share 0.5) of the late order, nothing for the on-time one
        np.testing.assert_array_equal(od.fee, [424, 424])
        np.testing.assert_array_equal(od.refund, [212, 0])
        kind, cents, order = sim.ledger.column("kind"), sim.ledger.column("cents"), sim.ledger.column("order")
        np.testing.assert_array_equal(order[kind == LED_REFUND], [0])
        np.testing.assert_array_equal(cents[kind == LED_REFUND], [212])
        assert sim.ledger.balances()["platform"] == 848 - 800 - 212
    else:
        np.testing.assert_array_equal(od.fee, [0, 0])
        np.testing.assert_array_equal(od.refund, [0, 0])
    assert_ledger_balances(sim)


# ------------------------------------------------------------------------------------------------
# 3. shifts
# ------------------------------------------------------------------------------------------------
def test_pickup_after_shift_end_is_released(line_nodes):
    # driver 0 (node 0) works until 2 min; driver 1 (node 4) logs on at 10 min.
    # t=1 min: the order (pickup node 3) is offered to driver 0 (still on shift, so a valid pair, although
    # the nearest policy would not choose it); it arrives at 4 min and the pickup would be at 5 min > 2 min:
    # released, and driver 0 logs off (idle, past shift end).
    # t=10 min: nearest gives it to driver 1: arrive node 3 at 11, pickup 12, leave 13, arrive node 4 at 14, drop 15.
    orders = [{"t_place": 0.0, "pickup": 3, "dropoff": 4}]
    drivers = [{"node": 0, "start": 0.0, "end": 2 * MIN}, {"node": 4, "start": 10 * MIN}]
    sim = Simulator(fixed_scenario(line_nodes, orders, drivers), record_events=True)
    seen = {}

    def after(s):
        seen[s.t] = (
            int(s.orders.status[0]),
            int(s.orders.driver[0]),
            int(s.drivers.phase[0]),
            int(s.counters["released_after_shift"]),
        )

    policy = ScriptedPolicy(
        {1 * MIN: Decision(order=np.array([0]), driver=np.array([0]))}, fallback=make_policy("nearest")
    )
    run_episode(sim, policy=policy, after_step=after)
    assert sim.counters["invalid"] == 0
    od = sim.orders
    # assigned to driver 0 while it drives towards the pickup
    assert seen[2 * MIN][0] == ORDER_ASSIGNED and seen[2 * MIN][1] == 0 and seen[2 * MIN][2] != PH_OFFLINE
    assert seen[3 * MIN][3] == 0
    # released on arrival at 4 min, the driver is offline from then on
    assert seen[4 * MIN][0] == ORDER_OPEN and seen[4 * MIN][1] == -1 and seen[4 * MIN][3] == 1
    assert all(v[2] == PH_OFFLINE for t, v in seen.items() if t >= 4 * MIN)
    assert sim.counters["released_after_shift"] == 1
    assert od.status[0] == ORDER_DELIVERED and od.driver[0] == 1
    assert od.t_pickup[0] == 12 * MIN and od.t_delivered[0] == 15 * MIN
    ev = events_table(sim)
    assert not (ev["driver"] == 0).any()
    assert sim.drivers.deliveries[0] == 0 and sim.drivers.earnings[0] == 0
    assert sim.drivers.shift_closed[0]


def test_delivery_after_shift_end_then_offline(line_nodes):
    # shift ends at 5 min. t=1: assigned; arrive node 1 at 2, pickup 3 (before 5), leave 4,
    # 3 min to node 4, arrive 7, drop 8 (after the shift end), leave 9 -> idle past shift end -> offline.
    orders = [{"t_place": 0.0, "pickup": 1, "dropoff": 4}]
    drivers = [{"node": 0, "end": 5 * MIN}]
    cfg = {"horizon": {"start": 0, "end": 20 * MIN, "step_seconds": 60, "drain_minutes": 0}}
    sim = Simulator(fixed_scenario(line_nodes, orders, drivers, config=cfg))
    phase, elig = {}, {}

    def after(s):
        phase[s.t] = int(s.drivers.phase[0])
        elig[s.t] = bool(s.eligible()[0])

    run_episode(sim, after_step=after)
    od = sim.orders
    assert od.status[0] == ORDER_DELIVERED and od.driver[0] == 0
    assert od.t_pickup[0] == 3 * MIN <= sim.drivers.shift_end[0]
    assert od.t_delivered[0] == 8 * MIN > sim.drivers.shift_end[0]
    assert all(phase[t * MIN] != PH_OFFLINE for t in range(1, 9))  # still working after 5 min
    assert phase[9 * MIN] == PH_OFFLINE
    assert all(phase[t * MIN] == PH_OFFLINE for t in range(9, 21))
    assert not any(elig[t * MIN] for t in range(5, 21))  # no offers after the shift end
    assert elig[1 * MIN]
    assert sim.drivers.deliveries[0] == 1
    assert sim.t == 20 * MIN


# ------------------------------------------------------------------------------------------------
# 4. a declined offer, escalated
# ------------------------------------------------------------------------------------------------
def test_declined_offer_is_escalated_and_accepted(line_nodes):
    # acceptance logit = 50 * (payout_eur - 5): base payout 4 EUR -> logit -50 (declined),
    # level 1 = 4 * (1 + 0.5) = 6 EUR -> logit +50 (accepted). Responses take 15..45 s (30 s x U(0.5, 1.5)).
    cfg = {
        "fleet": {
            "acceptance": {
                "pay": 50,
                "reservation_pay": 5.0,
                "intercept": 0,
                "bias_sd": 0,
                "pickup_km": 0,
                "preferred_zone": 0,
                "load": 0,
            }
        },
        "pricing": {"payout": {"base": 4.0, "per_km": 0, "escalation_step": 0.5, "auto_escalate": True}},
    }
    orders = [{"t_place": 0.0, "pickup": 1, "dropoff": 2}]
    drivers = [
        {"node": 0, "always_accept": False, "response_s": 30.0},
        {"node": 4, "always_accept": False, "response_s": 30.0},
    ]
    sim = Simulator(fixed_scenario(line_nodes, orders, drivers, config=cfg))
    seen = {}

    def after(s):
        o = s.orders
        seen[s.t] = (int(o.status[0]), int(o.declines[0]), int(o.payout_level[0]), int(o.payout[0]), int(o.driver[0]))

    run_episode(sim, after_step=after)
    od, dr = sim.orders, sim.drivers
    # t=1 min: offered to driver 0 (nearest) at level 0, declined before 2 min
    assert seen[2 * MIN] == (ORDER_OPEN, 1, 0, 400, -1)
    assert od.last_decliner[0] == 0
    # t=2 min: re-offered to driver 1 (the decliner is skipped) at level 1, accepted before 3 min
    assert seen[3 * MIN] == (ORDER_ASSIGNED, 1, 1, 600, 1)
    assert od.declines[0] == 1 and od.payout_level[0] == 1 and od.payout[0] == 600
    np.testing.assert_array_equal(dr.offers, [1, 1])
    np.testing.assert_array_equal(dr.accepts, [0, 1])
    # driving starts at 3 min: node 4 -> node 1 (3 min), arrive 6, pickup 7, leave 8, arrive node 2 at 9, drop 10
    assert od.status[0] == ORDER_DELIVERED and od.driver[0] == 1
    assert od.t_assigned[0] == 2 * MIN
    assert od.t_pickup[0] == 7 * MIN and od.t_delivered[0] == 10 * MIN
    np.testing.assert_array_equal(dr.earnings, [0, 600])
    assert compute_kpis(sim)["acceptance_rate"] == 0.5
    assert_ledger_balances(sim)


# ------------------------------------------------------------------------------------------------
# 5. suspension after three late deliveries in a row
# ------------------------------------------------------------------------------------------------
def test_suspension_after_three_late_deliveries(line_nodes):
    # three orders node 1 -> node 2 placed at 0 with a deadline of 1 min (all late), one driver at node 0.
    # Order 0: assigned 1, pickup 3, drop 6, leave 7.  Order 1: assigned 7 (driver at node 2),
    # arrive node 1 at 8, pickup 9, drop 12, leave 13.  Order 2: assigned 13, pickup 15, drop 18 ->
    # third late delivery in a row -> suspended until 18 + 30 = 48 min; the driver logs off at 19.
    # Order 3 (placed at 20, seen at 21) waits: assigned at 48, arrive node 1 at 49, pickup 50, drop 53.
    late = {"pickup": 1, "dropoff": 2, "deadline": 1 * MIN}
    orders = [
        {"t_place": 0.0, **late},
        {"t_place": 0.0, **late},
        {"t_place": 0.0, **late},
        {"t_place": 20 * MIN, "pickup": 1, "dropoff": 2},
    ]
    cfg = {"fleet": {"late_streak_to_suspend": 3, "suspension_minutes": 30}}
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}], config=cfg))
    log = {}

    def after(s):
        d = s.drivers
        log[round(s.t / MIN)] = (int(d.account[0]), int(d.late_streak[0]), bool(s.eligible()[0]), int(d.phase[0]))

    run_episode(sim, after_step=after)
    od, dr = sim.orders, sim.drivers
    np.testing.assert_array_equal(od.t_delivered, np.array([6, 12, 18, 53]) * MIN)
    np.testing.assert_array_equal(od.t_assigned, np.array([1, 7, 13, 48]) * MIN)
    assert log[6][1] == 1 and log[12][1] == 2
    assert log[17][0] == ACC_ACTIVE
    for m in range(18, 48):
        assert log[m][0] == ACC_SUSPENDED, m
        assert not log[m][2], m  # no offers while suspended
    assert log[18][1] == 0  # the streak restarts after a suspension
    assert all(log[m][3] == PH_OFFLINE for m in range(19, 48))
    assert log[48][0] == ACC_ACTIVE and log[48][3] != PH_OFFLINE
    assert dr.suspensions[0] == 1 and compute_kpis(sim)["suspensions"] == 1
    assert od.status[3] == ORDER_DELIVERED and od.t_delivered[3] <= od.deadline[3]
    assert dr.on_time[0] == 1 and dr.deliveries[0] == 4
    assert_ledger_balances(sim)


# ------------------------------------------------------------------------------------------------
# 6. cancellation
# ------------------------------------------------------------------------------------------------
def test_cancelled_order_refunded_in_full(line_nodes):
    # order 0 (node 1 -> node 4) takes the only driver at 1 min; order 1 (node 1 -> node 2, tip 1.50 EUR)
    # waits with a patience of 2 min, so it cancels at the end of the step that reaches 2 min.
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 4},
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "patience": 2 * MIN, "tip": 150},
    ]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}]), record_events=True)
    run_episode(sim)
    od, dr = sim.orders, sim.drivers
    assert od.status[1] == ORDER_CANCELLED
    assert od.t_cancelled[1] == 2 * MIN
    assert np.isnan(od.t_pickup[1]) and np.isnan(od.t_delivered[1]) and od.driver[1] == -1
    assert not (events_table(sim)["order"] == 1).any()
    # fee 424 + tip 150 + cancel penalty 2.00 EUR
    assert od.fee[1] == 424 and od.refund[1] == 424 + 150 + 200
    kind, cents, order = sim.ledger.column("kind"), sim.ledger.column("cents"), sim.ledger.column("order")
    np.testing.assert_array_equal(cents[(kind == LED_REFUND) & (order == 1)], [774])
    assert not ((kind == LED_PAYOUT) & (order == 1)).any()
    # order 0: fee 3 + 0.8 * 0.9 + 1 = 4.72; payout 4 + 0.6 * (0.3 + 0.9 - 1) = 4.12; pickup 3 min, drop 8 min
    assert od.status[0] == ORDER_DELIVERED and od.t_delivered[0] == 8 * MIN
    assert od.fee[0] == 472 and dr.earnings[0] == 412
    assert sim.ledger.balances()["platform"] == (472 + 424 + 150) - 412 - 774
    k = compute_kpis(sim)
    assert k["orders_cancelled"] == 1 and k["orders_delivered"] == 1 and k["orders_open"] == 0
    assert_ledger_balances(sim)


# ------------------------------------------------------------------------------------------------
# 7. decision validation
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def sim_at_1min(line_nodes):
    """The three-order scenario after one empty step: orders 0, 1 open, order 2 not placed yet."""
    sim = Simulator(_three_orders(line_nodes))
    sim.reset(0)
    sim.step(Decision())
    assert list(sim.open_orders()) == [0, 1] and sim.orders.status[2] == ORDER_FUTURE
    return sim


I64 = np.int64


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"order": np.array([3], I64), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([-1], I64), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([0], I64), "driver": np.array([2], I64)}, "decision.driver"),
        ({"order": np.array([[0]], I64), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([0], I64), "driver": np.array([[0]], I64)}, "decision.driver"),
        ({"order": np.int64(0), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([0.5]), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([0], I64), "driver": np.array([np.nan])}, "decision.driver"),
        ({"order": np.array(["a"]), "driver": np.array([0], I64)}, "decision.order"),
        ({"order": np.array([0, 1], I64), "driver": np.array([0], I64)}, "decision.driver"),
        ({"order": np.array([0], I64), "driver": np.array([0], I64), "level": np.array([0, 0], I64)}, "decision.level"),
        ({"order": np.array([0], I64), "driver": np.array([0], I64), "level": np.array([4], I64)}, "decision.level"),
        ({"order": np.array([0], I64), "driver": np.array([0], I64), "level": np.array([0.25])}, "decision.level"),
        (
            {"reposition_driver": np.array([0], I64), "reposition_zone": np.array([0, 0], I64)},
            "decision.reposition_zone",
        ),
        ({"reposition_driver": np.array([0], I64), "reposition_zone": np.array([1], I64)}, "decision.reposition_zone"),
        (
            {"reposition_driver": np.array([5], I64), "reposition_zone": np.array([0], I64)},
            "decision.reposition_driver",
        ),
        ({"unassign": np.array([7], I64)}, "decision.unassign"),
        ({"unassign": np.array([[0]], I64)}, "decision.unassign"),
    ],
)
def test_malformed_decision_raises_action_error(sim_at_1min, kwargs, field):
    sim = sim_at_1min
    t0 = sim.t
    with pytest.raises(ActionError, match=field.replace(".", r"\.")):
        sim.step(Decision(**kwargs))
    # nothing happened: time did not move, orders are still open, no counters moved
    assert sim.t == t0
    assert list(sim.open_orders()) == [0, 1]
    assert sim.counters["invalid"] == 0 and sim.counters["conflicts"] == 0
    # and the simulator still works
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    assert sim.orders.driver[0] == 0


def test_malformed_decision_has_no_partial_effect(sim_at_1min):
    """A decision rejected with ActionError must not have applied any part of itself (here: an unassign)."""
    sim = sim_at_1min
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    assert sim.orders.status[0] == ORDER_ASSIGNED
    with pytest.raises(ActionError, match=r"decision\.order"):
        sim.step(Decision(unassign=np.array([0]), order=np.array([99]), driver=np.array([1])))
    assert sim.orders.status[0] == ORDER_ASSIGNED and sim.orders.driver[0] == 0
    assert sim.drivers.route_len[0] == 2


def test_integral_float_ids_are_accepted(sim_at_1min):
    sim = sim_at_1min
    sim.step(Decision(order=np.array([0.0, 1.0]), driver=np.array([0.0, 1.0])))
    np.testing.assert_array_equal(sim.orders.driver[:2], [0, 1])
    assert sim.counters["invalid"] == 0


def test_semantically_invalid_pairs_are_skipped_and_counted(sim_at_1min):
    sim = sim_at_1min
    # order 2 is not placed yet (not open): skipped; order 0 -> driver 0 is fine
    sim.step(Decision(order=np.array([2, 0]), driver=np.array([1, 0])))
    assert sim.counters["invalid"] == 1 and sim.counters["conflicts"] == 0
    assert sim.orders.driver[0] == 0 and sim.orders.status[2] != ORDER_ASSIGNED
    # order 0 is no longer open (assigned): offering it again is invalid
    info = sim.step(Decision(order=np.array([0]), driver=np.array([1])))
    assert info["invalid"] == 1.0 and sim.counters["invalid"] == 2
    assert sim.orders.driver[0] == 0
    # unassigning an order that is not assigned (order 1 is open) is invalid too
    sim.step(Decision(unassign=np.array([1])))
    assert sim.counters["invalid"] == 3 and sim.orders.status[1] == ORDER_OPEN


def test_busy_driver_pair_is_skipped(line_nodes):
    # routes hold at most 2 stops: a driver with one order cannot take another one
    sim = Simulator(_three_orders(line_nodes, config={"fleet": {"max_route_stops": 2}}))
    sim.reset(0)
    sim.step(Decision())
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    assert sim.orders.status[0] == ORDER_ASSIGNED and not sim.eligible()[0]
    sim.step(Decision(order=np.array([1]), driver=np.array([0])))
    assert sim.counters["invalid"] == 1
    assert sim.orders.status[1] == ORDER_OPEN and sim.drivers.route_len[0] == 2


def test_offline_driver_pair_is_skipped(line_nodes):
    orders = [{"t_place": 0.0, "pickup": 1, "dropoff": 2}]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0, "start": 30 * MIN}, {"node": 4}]))
    sim.reset(0)
    sim.step(Decision())
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    assert sim.counters["invalid"] == 1 and sim.orders.status[0] == ORDER_OPEN


def test_same_driver_twice_first_pair_wins(sim_at_1min):
    sim = sim_at_1min
    sim.step(Decision(order=np.array([1, 0]), driver=np.array([0, 0])))
    assert sim.counters["conflicts"] == 1 and sim.counters["invalid"] == 0
    assert sim.orders.driver[1] == 0 and sim.orders.status[1] == ORDER_ASSIGNED
    assert sim.orders.status[0] == ORDER_OPEN and sim.orders.driver[0] == -1
    assert sim.drivers.offers[0] == 1


def test_same_order_twice_first_pair_wins(sim_at_1min):
    sim = sim_at_1min
    sim.step(Decision(order=np.array([0, 0]), driver=np.array([1, 0])))
    assert sim.counters["conflicts"] == 1
    assert sim.orders.driver[0] == 1
    np.testing.assert_array_equal(sim.drivers.offers, [0, 1])


def test_step_before_reset_and_after_done(line_nodes):
    sim = Simulator(_three_orders(line_nodes))
    with pytest.raises(RuntimeError):
        sim.step(Decision())
    run_episode(sim)
    assert sim.done
    with pytest.raises(RuntimeError):
        sim.step(Decision())


def test_policy_decisions_only_offer_open_orders(line_nodes):
    """The nearest policy, over a whole episode, never makes an invalid or conflicting pair."""
    sim = run_episode(Simulator(_three_orders(line_nodes)), policy=make_policy("nearest"))
    assert sim.counters["invalid"] == 0 and sim.counters["conflicts"] == 0
    assert sim.orders.status.tolist() == [ORDER_DELIVERED] * 3


# ------------------------------------------------------------------------------------------------
# 8. the visit a driver is serving is locked (regressions: unassign / resequence used to corrupt it)
# ------------------------------------------------------------------------------------------------
def _waiting_at_pickup(line_nodes, extra_orders=()):
    """One driver at node 0 takes order 0 (node 1 -> 2, ready at 10 min) at 1 min, reaches node 1 at 2 min
    and waits there for the food: phase service, event at 10 min."""
    orders = [{"t_place": 0.0, "pickup": 1, "dropoff": 2, "ready": 10 * MIN}, *extra_orders]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}]), record_events=True)
    sim.reset(0)
    sim.step(Decision())
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    return sim


def test_unassign_of_the_pickup_being_served_is_invalid(line_nodes):
    sim = _waiting_at_pickup(line_nodes, [{"t_place": 0.0, "pickup": 3, "dropoff": 4}])
    checker = StepChecker(sim)
    for _ in range(3):
        sim.step(Decision())
        checker(sim)
    dr = sim.drivers
    assert dr.phase[0] == PH_SERVICE and dr.group_n[0] == 1 and dr.t_event[0] == 10 * MIN
    sim.step(Decision(unassign=np.array([0])))
    checker(sim)
    assert sim.counters["invalid"] == 1
    assert sim.orders.status[0] == ORDER_ASSIGNED and dr.route_order[0, 0] == 0
    while not sim.done:
        sim.step(Decision())
        checker(sim)
    od = sim.orders
    # pickup at 10, leave 11, arrive node 2 at 12, drop 13; order 1 was never offered and stays open
    assert od.t_pickup[0] == 10 * MIN and od.t_delivered[0] == 13 * MIN
    assert od.status[1] == ORDER_OPEN and np.isnan(od.t_pickup[1])
    check_final(sim)


def test_unassign_before_arrival_releases_the_order(line_nodes):
    orders = [{"t_place": 0.0, "pickup": 3, "dropoff": 4}]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}]), record_events=True)
    sim.reset(0)
    sim.step(Decision())
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    # at 2 min the driver is still on its 3-minute way to node 3: the order can be taken back
    sim.step(Decision(unassign=np.array([0])))
    assert sim.counters["invalid"] == 0
    assert sim.orders.status[0] == ORDER_OPEN and sim.orders.driver[0] == -1 and sim.drivers.route_len[0] == 0
    assert np.isnan(sim.orders.t_assigned[0])


def test_resequence_keeps_the_visit_being_served(line_nodes):
    # three orders to node 4; order 0 (ready 15 min) is being waited for at node 1 when orders 1 and 2 (from
    # node 2: from node 1 they would join the visit) are added to the route. Re-sequencing may reorder them but
    # not move the head visit.
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 4, "ready": 15 * MIN, "deadline": 12 * MIN},
        {"t_place": 0.0, "pickup": 2, "dropoff": 4, "ready": 3 * MIN, "deadline": 25 * MIN},
        {"t_place": 0.0, "pickup": 2, "dropoff": 4, "ready": 10 * MIN, "deadline": 26 * MIN},
    ]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}]), record_events=True)
    sim.reset(0)
    checker = StepChecker(sim)
    sim.step(Decision())
    checker(sim)
    for i in range(3):
        sim.step(Decision(order=np.array([i]), driver=np.array([0])))
        checker(sim)
    dr = sim.drivers
    assert dr.phase[0] == PH_SERVICE and dr.group_n[0] == 1 and dr.route_len[0] == 6
    assert dr.route_order[0, 0] == 0 and dr.t_event[0] == 15 * MIN
    sim.resequence(0)
    assert dr.route_order[0, 0] == 0 and dr.route_kind[0, 0] == STOP_PICKUP
    while not sim.done:
        sim.step(Decision())
        checker(sim)
    od = sim.orders
    assert (od.status == ORDER_DELIVERED).all()
    assert od.t_pickup[0] == 15 * MIN
    check_final(sim)


# ------------------------------------------------------------------------------------------------
# 9. the policy helpers agree with the hand-worked timeline of the three-order example
# ------------------------------------------------------------------------------------------------
def test_policy_helpers_match_the_timeline(line_nodes):
    sim = Simulator(_three_orders(line_nodes))
    sim.reset(0)
    sim.step(Decision())  # t = 1 min: orders 0 and 1 are open
    ids, eta = sim.candidates(np.array([0, 1]), k=2, idle_only=True)
    np.testing.assert_array_equal(ids, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(eta, [[1 * MIN, 3 * MIN], [1 * MIN, 3 * MIN]])
    np.testing.assert_array_equal(
        sim.pickup_eta(np.array([0, 1]), np.array([0, 1])), [[1 * MIN, 3 * MIN], [3 * MIN, 1 * MIN]]
    )
    # payouts: base 4 EUR within the free km; x (1 + 0.15 level), capped at x1.6
    np.testing.assert_array_equal(
        sim.payout_cents(np.array([0, 0, 0]), np.array([0, 0, 0]), np.array([0, 1, 3])), [400, 460, 580]
    )
    np.testing.assert_array_equal(sim.accept_prob(np.array([0]), np.array([0]), np.array([400])), [1.0])
    assert np.isnan(sim.order_eta()).all()  # nothing assigned yet
    sim.step(Decision(order=np.array([0, 1]), driver=np.array([0, 1])))
    # t = 2 min: both drivers are at their pickups (pickup at 3, leave at 4, drop at 6)
    eta = sim.order_eta()
    np.testing.assert_array_equal(eta[:2], [6 * MIN, 6 * MIN])
    assert np.isnan(eta[2])  # open, not assigned
    reta = sim.route_eta()
    np.testing.assert_array_equal(reta[:, :2], [[3 * MIN, 6 * MIN], [3 * MIN, 6 * MIN]])
    assert np.isnan(reta[:, 2:]).all()
    node, t_free = sim.driver_free()
    np.testing.assert_array_equal(node, [2, 4])
    np.testing.assert_array_equal(t_free, [7 * MIN, 7 * MIN])
    # order 2 (node 0 -> 4) must wait for a driver: ETA for driver 0 = free at 7 min + 2 min from node 2
    np.testing.assert_array_equal(
        sim.pickup_eta(np.array([2]), np.array([0, 1])), [[(7 + 2 - 2) * MIN, (7 + 4 - 2) * MIN]]
    )
    assert sim.at_risk().size == 0


def test_at_risk_flags_orders_that_cannot_make_it(line_nodes):
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "deadline": 2 * MIN},  # will be delivered at 6 min
        {"t_place": 0.0, "pickup": 3, "dropoff": 4},
        {"t_place": 0.0, "pickup": 0, "dropoff": 4, "deadline": 4 * MIN},  # open; the trip alone takes 4 min
    ]
    sim = Simulator(fixed_scenario(line_nodes, orders, [{"node": 0}, {"node": 4}]))
    sim.reset(0)
    sim.step(Decision())
    # t = 1 min, all open: order 2 needs 1 + 4 = 5 > 4 min; order 0 needs 1 + 1 = 2 <= 2 min (just makes it)
    np.testing.assert_array_equal(sim.at_risk(), [2])
    sim.step(Decision(order=np.array([0, 1]), driver=np.array([0, 1])))
    # t = 2 min: order 0's ETA is 6 min > 2 min; order 1's is 6 min < 61 min
    np.testing.assert_array_equal(sim.at_risk(), [0, 2])


def test_bundle_rule_while_serving_a_drop_off(line_nodes):
    """MDRP bundle rule (``same_pickup_bundles``): a driver carrying an order from one restaurant may not
    pick up at another one first. Regression: while the driver stood at a drop-off whose event was already
    done, the insertion counted that drop-off twice and let a foreign pickup in before the next drop-off."""
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "ready": 5 * MIN},  # A
        {"t_place": 0.0, "pickup": 1, "dropoff": 4},  # C, same restaurant as A
        {"t_place": 0.0, "pickup": 3, "dropoff": 4},  # B, another restaurant, on the way from 2 to 4
    ]
    sim = Simulator(
        fixed_scenario(line_nodes, orders, [{"node": 0}], config={"same_pickup_bundles": True}), record_events=True
    )
    sim.reset(0)
    checker = StepChecker(sim)
    sim.step(Decision())
    checker(sim)
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    checker(sim)
    sim.step(Decision(order=np.array([1]), driver=np.array([0])))  # joins A while the driver waits at node 1
    checker(sim)
    dr, od = sim.drivers, sim.orders
    for _ in range(30):  # until the driver stands at A's drop-off with the drop-off done
        if (
            dr.phase[0] == PH_SERVICE
            and dr.event_done[0]
            and dr.route_kind[0, 0] == STOP_DROPOFF
            and dr.route_order[0, 0] == 0
        ):
            break
        sim.step(Decision())
        checker(sim)
    else:
        pytest.fail("the driver never stood at A's drop-off")
    assert od.status[1] == ORDER_PICKED  # C is on board
    sim.step(Decision(order=np.array([2]), driver=np.array([0])))
    checker(sim)
    assert od.status[2] == ORDER_ASSIGNED
    L = int(dr.route_len[0])
    stops = list(zip(dr.route_order[0, :L].tolist(), dr.route_kind[0, :L].tolist(), strict=True))
    assert stops.index((2, STOP_PICKUP)) > stops.index((1, STOP_DROPOFF)), stops
    while not sim.done:
        sim.step(Decision())
        checker(sim)
    assert (od.status == ORDER_DELIVERED).all()
    assert od.t_pickup[2] > od.t_delivered[1]
    check_final(sim)  # includes the one-restaurant-on-board check over the events


def test_repositioning_driver_diverts_to_an_accepted_pickup(line_nodes):
    """A driver half-way along a repositioning leg who accepts an offer heads for the pickup from where it
    is (the nearest node it could have reached), not from the end of the leg it abandons."""
    orders = [{"t_place": 30.0, "pickup": 0, "dropoff": 1}]
    sc = fixed_scenario(line_nodes, orders, [{"node": 0, "always_accept": True, "response_s": 0.0}])
    sim = Simulator(sc)
    sim.reset(0)
    assert sim.city.zone_node[0] == 2  # the single zone's centre is the middle node, two minutes away
    sim.step(Decision(reposition_driver=np.array([0], I64), reposition_zone=np.array([0], I64)))
    assert sim.drivers.phase[0] == PH_DRIVING and sim.drivers.leg_to[0] == 2
    assert sim.open_orders().tolist() == [0]
    sim.step(Decision(order=np.array([0], I64), driver=np.array([0], I64)))
    while not sim.done:
        sim.step(Decision())
    od = sim.orders
    assert od.status[0] == ORDER_DELIVERED
    # diverted at node 1 (one minute out): back to node 0 by ~3 min; finishing the leg first would be ~6 min
    assert od.t_pickup[0] < 4.5 * MIN, od.t_pickup[0]
    driven = sim.drivers.driven_m[0]
    assert 900.0 - 1e-6 <= driven <= 1200.0 + 1e-6, driven  # 300 out + 300 back + 300 to the drop-off (+ a partial hop)
