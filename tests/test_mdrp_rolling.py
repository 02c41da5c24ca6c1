"""The rolling-horizon dispatcher (``mdrp-rolling``) and the decision fields it needs: bundles to one
courier in one epoch (``Decision.bundle``), moves to a node (``Decision.reposition_node``), and a courier
already heading to a pickup driving on when it gets the order.

Hand-built cities use the MDRP metric (``fixed_scenario``: 300 m per minute, whole minutes, 2-minute
pickup and drop-off service, half on arrival and half on departure), so every time below is worked out by
hand in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gigdispatch.agents.mdrp_rolling import MdrpPolicyError, RollingHorizonPolicy, instance_class
from gigdispatch.agents.registry import UnknownPolicyError, make_policy
from gigdispatch.envs import Simulator
from gigdispatch.envs.core.decision import ActionError
from gigdispatch.envs.core.sim import Decision
from gigdispatch.envs.core.types import ORDER_ASSIGNED, ORDER_DELIVERED, ORDER_OPEN
from gigdispatch.envs.scenarios.fixed import fixed_scenario
from gigdispatch.training.runner import run_episode

MIN = 60.0
# nodes: 0 restaurant R at the origin, 1 and 2 customers 1.5 km east (5 min) and 1.8 km east (6 min),
# 3 a courier's spot 2.4 km west of R (8 min), 4 a spot 3 km west (10 min)
NODES = [(0, 0), (1500, 0), (1800, 0), (-2400, 0), (-3000, 0)]


def _sim(orders: list[dict], drivers: list[dict], end: float = 3600.0, same_pickup: bool = False) -> Simulator:
    cfg = {
        "horizon": {"start": 0.0, "end": end, "step_seconds": 60.0, "drain_minutes": 120.0},
        "same_pickup_bundles": same_pickup,
    }
    sim = Simulator(fixed_scenario(NODES, orders, drivers, config=cfg))
    sim.reset(seed=0)
    return sim


# ------------------------------------------------------------------------------------ Decision.bundle
def test_bundle_gives_one_courier_both_orders_in_one_epoch() -> None:
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1}, {"t_place": 0.0, "pickup": 0, "dropoff": 2}]
    sim = _sim(orders, [{"node": 0}])
    sim.step()  # the orders placed at 0 are open from 1 min
    sim.step(Decision(order=np.array([0, 1]), driver=np.array([0, 0]), bundle=True))
    assert (sim.orders.status[:2] != ORDER_OPEN).all()
    while sim.state.t < 1800:
        sim.step()
    assert (sim.orders.status[:2] == ORDER_DELIVERED).all()
    assert sim.orders.bundle_id[0] == sim.orders.bundle_id[1]  # picked up in one visit
    # pickup at 2 min (at R at 1 min, half the service), leaves at 3, at customer 1 at 8, drops at 9,
    # leaves at 10, 300 m on: at customer 2 at 11, drops at 12
    assert sim.orders.t_pickup[0] == pytest.approx(2 * MIN)
    assert sorted(sim.orders.t_delivered[:2] / MIN) == pytest.approx([9.0, 12.0])


def test_without_bundle_the_second_pair_is_a_conflict() -> None:
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1}, {"t_place": 0.0, "pickup": 0, "dropoff": 2}]
    sim = _sim(orders, [{"node": 0}])
    sim.step()
    sim.step(Decision(order=np.array([0, 1]), driver=np.array([0, 0])))
    assert sim.orders.status[1] == ORDER_OPEN
    assert sim.state.counters["conflicts"] == 1


def test_bundle_still_one_offer_for_a_driver_who_may_decline() -> None:
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1}, {"t_place": 0.0, "pickup": 0, "dropoff": 2}]
    sim = _sim(orders, [{"node": 0, "always_accept": False, "accept_bias": 10.0}])
    sim.step()
    sim.step(Decision(order=np.array([0, 1]), driver=np.array([0, 0]), bundle=True))
    assert sim.orders.status[1] == ORDER_OPEN and sim.orders.status[0] != ORDER_OPEN
    assert sim.state.counters["conflicts"] == 1


# ----------------------------------------------------------------------------- Decision.reposition_node
def test_reposition_node_moves_the_driver_there() -> None:
    sim = _sim([{"t_place": 3000.0, "pickup": 0, "dropoff": 1}], [{"node": 3}])
    sim.step(Decision(reposition_driver=np.array([0]), reposition_node=np.array([0])))
    for _ in range(8):
        sim.step()
    assert sim.drivers.node[0] == 0  # 2.4 km at 300 m/min: there after 8 minutes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"reposition_zone": np.array([0]), "reposition_node": np.array([0])}, "either reposition_zone or"),
        ({"reposition_node": np.array([0, 1])}, "reposition_node: length 2"),
        ({"reposition_node": np.array([99])}, "reposition_node: id 99 is out of range"),
        ({"reposition_node": np.array([0]), "bundle": "yes"}, "decision.bundle: must be true or false"),
    ],
)
def test_bad_reposition_node_is_one_clear_error(fields: dict, message: str) -> None:
    sim = _sim([{"t_place": 3000.0, "pickup": 0, "dropoff": 1}], [{"node": 3}])
    with pytest.raises(ActionError, match=message):
        sim.step(Decision(reposition_driver=np.array([0]), **fields))


def test_courier_heading_to_the_pickup_drives_on_when_given_the_order() -> None:
    # sent from node 4 (10 min west) to R at 0; an order at R placed at 4 min is given to it at 5: it keeps
    # driving and arrives at 10 min, picks up at 11 (half the 2-minute service), delivers at 11 + 1 + 5 + 1
    sim = _sim([{"t_place": 4 * MIN, "pickup": 0, "dropoff": 1}], [{"node": 4}])
    sim.step(Decision(reposition_driver=np.array([0]), reposition_node=np.array([0])))
    while sim.state.t < 5 * MIN:
        sim.step()
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    assert sim.orders.status[0] == ORDER_ASSIGNED
    while sim.state.t < 40 * MIN:
        sim.step()
    assert sim.orders.t_pickup[0] == pytest.approx(11 * MIN)
    assert sim.orders.t_delivered[0] == pytest.approx(18 * MIN)


def _serve_at_r(second_at: float) -> Simulator:
    """A courier at R takes order 0 (ready at 4 min) at 1 min and waits there for the food; at ``second_at``
    a second order of R (ready at once, to the farther customer) is given to it. Bundles from one pickup only,
    as in MDRP."""
    orders = [
        {"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 4 * MIN},
        {"t_place": 0.0, "pickup": 0, "dropoff": 2},
    ]
    sim = _sim(orders, [{"node": 0}], same_pickup=True)
    sim.step()
    sim.step(Decision(order=np.array([0]), driver=np.array([0])))
    while sim.state.t < second_at:
        sim.step()
    sim.step(Decision(order=np.array([1]), driver=np.array([0])))
    while sim.state.t < 40 * MIN:
        sim.step()
    return sim


def test_an_order_given_while_the_courier_waits_for_the_food_joins_that_pickup() -> None:
    # at R from 2 min (the offer at 1, pickup event at max(2 + 1, ready 4) = 4 min); the second order comes at
    # 3 min, before the event: one visit, one bundle, both picked up at 4; leave at 5, customer 1 at 10, drop
    # at 11, leave at 12, customer 2 at 13, drop at 14
    sim = _serve_at_r(3 * MIN)
    od = sim.orders
    assert (od.status[:2] == ORDER_DELIVERED).all()
    assert od.bundle_id[0] == od.bundle_id[1]
    assert od.t_pickup[:2] / MIN == pytest.approx([4.0, 4.0])
    assert od.t_delivered[:2] / MIN == pytest.approx([11.0, 14.0])


def test_an_order_given_after_the_pickup_is_not_a_second_visit_with_food_on_board() -> None:
    # the second order comes at 4 min, just after order 0 was picked up (the courier leaves at 5): a second
    # pickup at R would carry order 0 back into the restaurant, so it waits until order 0 is delivered
    # (drop at 11), then drives back (5 min), picks up at 17 + 1 = 18, customer 2 (6 min) at 25, drops at 26
    sim = _serve_at_r(4 * MIN)
    od = sim.orders
    assert (od.status[:2] == ORDER_DELIVERED).all()
    assert od.bundle_id[0] != od.bundle_id[1]
    assert od.t_delivered[0] < od.t_pickup[1]
    assert od.t_pickup[1] / MIN == pytest.approx(18.0)
    assert od.t_delivered[1] / MIN == pytest.approx(26.0)


# ----------------------------------------------------------------------------------------- the policy
def test_partial_commitment_sends_the_courier_early_and_it_meets_the_ready_time() -> None:
    # the order is placed at 0 (open from 1 min) and ready at 15 min; the courier is 8 min away. At the
    # planning at 5 min it cannot reach R by 5 + f = 10 min: partial commitment, it is sent to R at once
    # (no order yet) and arrives at 13. At the planning at 10 it reaches R by 15 and the food is ready by
    # then: final, the order is offered. It picks up at the ready time 15, delivers at 15 + 1 + 5 + 1.
    # Without the early move it would leave at 10 and pick up at 10 + 8 + 1 = 19.
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 15 * MIN}]
    sim = _sim(orders, [{"node": 3}])
    pol = RollingHorizonPolicy(preposition=0.0)
    run_episode(sim, pol, seed=0)
    assert sim.orders.t_assigned[0] == pytest.approx(10 * MIN)
    assert sim.orders.t_pickup[0] == pytest.approx(15 * MIN)
    assert sim.orders.t_delivered[0] == pytest.approx(22 * MIN)


def _first_moves(ready_min: float, **params: float) -> tuple[list[int], list[int]]:
    """The moves and offers of the first planning (5 min) for one order placed at 0 and ready at ``ready_min``,
    its courier 8 min away."""
    sim = _sim([{"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": ready_min * MIN}], [{"node": 3}])
    pol = RollingHorizonPolicy(preposition=0.0, **params)
    pol.reset(sim, sim.rng["policy"])
    while sim.state.t < 5 * MIN:
        sim.step(pol.act(sim))
    dec = pol.act(sim)
    return dec.reposition_driver.tolist() + dec.order.tolist(), dec.reposition_node.tolist() + dec.driver.tolist()


@pytest.mark.parametrize("groups", [1.0, 0.0])
def test_urgency_groups_match_the_late_bundle_first_and_without_them_the_better_pair_wins(groups: float) -> None:
    # one courier at R (node 0); order X at restaurant 4 (10 min west) to node 3 (2 min from it), deadline 5 min:
    # it cannot be met any more (urgency group I); order Y at R to customer 1 (5 min east), ready at 3 min,
    # deadline 60 (group III). Planning every minute, from 1 min when both are open:
    # * with the groups, X is matched first to the only courier, which is sent to restaurant 4 at once;
    # * without them one assignment weighs both pairs: Y (at R now, pickup at its ready time 3, last drop at
    #   10: 5 x 1 / 9 min) beats X (pickup at 12, 12 min after its ready time: 5 / 15 - 0.5 x 12 < 0). Y is
    #   committed at 2 min (courier at R and Y ready by 2 + f), picked up at 3 (half the service from 2),
    #   delivered at 3 + 1 + 5 + 1 = 10.
    orders = [
        {"t_place": 0.0, "pickup": 4, "dropoff": 3, "deadline": 5 * MIN},
        {"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 3 * MIN},
    ]
    sim = _sim(orders, [{"node": 0}])
    pol = RollingHorizonPolicy(preposition=0.0, f_minutes=1.0, urgency_groups=groups)
    run_episode(sim, pol, seed=0)
    od = sim.orders
    assert (od.status[:2] == ORDER_DELIVERED).all()
    if groups:
        assert od.t_pickup[0] < od.t_pickup[1]  # X first
    else:
        assert od.t_pickup[1] < od.t_pickup[0]  # Y first
        assert od.t_assigned[1] == pytest.approx(2 * MIN)
        assert od.t_delivered[1] == pytest.approx(10 * MIN)


def test_estimated_ready_times_hide_the_true_ones_from_the_dispatcher() -> None:
    # exact: ready at 15 min is within the 10-min horizon at 5 min (the courier is sent), ready at 30 is not
    assert _first_moves(15.0) != _first_moves(30.0)
    assert _first_moves(15.0) == ([0], [0])
    # estimated: both plan with placement + the 10-minute prior (nothing picked up yet): the same decisions
    assert _first_moves(15.0, estimated_ready=1.0) == _first_moves(30.0, estimated_ready=1.0) == ([0], [0])
    # and a prior of 20 minutes puts the order outside the horizon whatever its true ready time
    assert _first_moves(15.0, estimated_ready=1.0, prep_prior_minutes=20.0) == ([], [])


def test_orders_of_one_restaurant_ready_together_go_as_one_bundle() -> None:
    # one courier at R, two orders of R to neighbouring customers, both ready at 4 min: at the planning at
    # 5 min Z = 2 orders / 1 courier, one route holds both, final commitment, picked up at 5 + 1
    orders = [
        {"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 4 * MIN},
        {"t_place": 0.0, "pickup": 0, "dropoff": 2, "ready": 4 * MIN},
    ]
    sim = _sim(orders, [{"node": 0}])
    run_episode(sim, RollingHorizonPolicy(preposition=0.0), seed=0)
    assert (sim.orders.status[:2] == ORDER_DELIVERED).all()
    assert sim.orders.bundle_id[0] == sim.orders.bundle_id[1]
    assert sim.orders.t_pickup[0] == pytest.approx(6 * MIN)


def test_nothing_is_offered_between_plannings() -> None:
    # f = 5: an order placed at 1 min waits for the planning at 5 min although a courier stands at R
    orders = [{"t_place": 1 * MIN, "pickup": 0, "dropoff": 1}]
    sim = _sim(orders, [{"node": 0}])
    run_episode(sim, RollingHorizonPolicy(preposition=0.0), seed=0)
    assert sim.orders.t_assigned[0] == pytest.approx(5 * MIN)


def test_runs_on_a_synthetic_scenario_without_invalid_decisions() -> None:
    from gigdispatch.envs.scenarios.loader import load_scenario

    sim = Simulator(load_scenario("default"))
    pol = make_policy("mdrp-rolling")
    sim.reset(seed=1001)
    pol.reset(sim, np.random.default_rng(0))
    for _ in range(120):
        sim.step(pol.act(sim))
    assert sim.state.counters["invalid"] == 0
    assert int((sim.orders.status[: sim.state.next_order] == ORDER_DELIVERED).sum()) > 0


# ------------------------------------------------------------------------------------ its parameters
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"beta": 2.0}, r"mdrp-rolling\.beta: must be in \[0, 1\]"),
        ({"f_minutes": 0.5}, r"mdrp-rolling\.f_minutes: must be >= 1"),
        ({"max_bundle": 2.5}, r"mdrp-rolling\.max_bundle: must be a whole number"),
        ({"gamma": "high"}, r"mdrp-rolling\.gamma: must be a finite number"),
        ({"speed": 1.0}, r"mdrp-rolling\.speed: unknown parameter"),
    ],
)
def test_bad_parameters_name_the_field(params: dict, message: str) -> None:
    with pytest.raises(MdrpPolicyError, match=message):
        RollingHorizonPolicy(**params)


def test_policy_file_per_instance_class(tmp_path: Path) -> None:
    doc = {
        "format": "gigdispatch-mdrp-rolling/1",
        "params": {"theta": 0.1},
        "scenarios": {"o50t75s1p100": {"theta": 0.9, "f_minutes": 2.0}},
    }
    (tmp_path / "policy.json").write_text(json.dumps(doc))
    pol = make_policy(str(tmp_path))
    assert isinstance(pol, RollingHorizonPolicy)
    assert pol.by_scenario["o50t75s1p100"]["theta"] == 0.9
    assert instance_class("mdrp:3o50t75s1p100") == "o50t75s1p100"
    assert instance_class("default") == "default"
    bad = {**doc, "scenarios": {"o50t75s1p100": {"theta": -1.0}}}
    (tmp_path / "policy.json").write_text(json.dumps(bad))
    with pytest.raises(UnknownPolicyError, match=r"scenarios\.o50t75s1p100\.theta: must be in \[0, 1\]"):
        make_policy(str(tmp_path))


# ------------------------------------------------------------------------------------ the tuning rule
def _row(cid: int, variant: str, ctd: float, und: float) -> dict:
    return {
        "cid": cid,
        "params": {"theta": cid / 10},
        "variant": variant,
        "click_to_door_mean_min": ctd,
        "undelivered_rate": und,
    }


def test_tuning_keeps_per_class_the_fastest_configuration_within_the_undelivered_limit() -> None:
    from gigdispatch.training.mdrp_tune import random_configs, select

    rows = [
        # class A: config 0 is fastest but leaves 1 % undelivered on 2 of 3 instances; config 1 qualifies
        _row(0, "A", 30.0, 0.01),
        _row(0, "A", 30.0, 0.01),
        _row(0, "A", 30.0, 0.0),
        _row(1, "A", 31.0, 0.0),
        _row(1, "A", 31.0, 0.006),
        _row(1, "A", 31.0, 0.0),
        _row(2, "A", 32.0, 0.0),
        _row(2, "A", 32.0, 0.0),
        _row(2, "A", 32.0, 0.0),
        # class B: config 2 is fastest and qualifies
        _row(0, "B", 33.0, 0.0),
        _row(0, "B", 33.0, 0.0),
        _row(0, "B", 33.0, 0.0),
        _row(1, "B", 34.0, 0.0),
        _row(1, "B", 34.0, 0.0),
        _row(1, "B", 34.0, 0.0),
        _row(2, "B", 29.0, 0.0),
        _row(2, "B", 29.0, 0.0),
        _row(2, "B", 29.0, 0.0),
    ]
    doc = select(rows, max_undelivered=0.005, majority=2)
    assert doc["scenarios"]["A"] == {"theta": 0.1}
    assert doc["scenarios"]["B"] == {"theta": 0.2}
    # overall, within 0.5 % undelivered on average: config 2 (30.5 min) before 0 (31.5, 0.33 %) and 1 (32.5)
    assert doc["params"] == {"theta": 0.2}
    assert random_configs(3, 7) == random_configs(3, 7) and random_configs(3, 7) != random_configs(3, 8)


def test_tuning_cli_names_a_bad_instances_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.mdrp_tune import main

    assert main(["--instances", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--instances:" in capsys.readouterr().err


def test_tuning_selects_again_from_a_recorded_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--from-runs``: the same rows give the file a search would write, with another threshold another one; a bad
    runs file is one line naming its line and field."""
    import json

    from gigdispatch.training.mdrp_tune import main

    rows = [_row(0, "A", 30.0, 0.004), _row(0, "A", 30.0, 0.004), _row(1, "A", 31.0, 0.0), _row(1, "A", 31.0, 0.0)]
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for limit, theta in (("0.005", 0.0), ("0.0025", 0.1)):
        out = tmp_path / f"out{limit}"
        assert main(["--from-runs", str(runs), "--max-undelivered", limit, "--out", str(out)]) == 0
        doc = json.loads((out / "policy.json").read_text())
        assert doc["scenarios"]["A"] == {"theta": theta}, limit
        assert (out / "runs.jsonl").read_text() == runs.read_text()
    capsys.readouterr()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "undelivered_rate": "x"}) + "\n")
    assert main(["--from-runs", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}: line 2: field 'undelivered_rate' missing or not a finite number"
    assert not (tmp_path / "o" / "policy.json").exists()
    assert main(["--out", str(tmp_path / "o")]) == 2
    assert "give --instances" in capsys.readouterr().err
