"""The repositioning KPIs: ``pickup_leg_mean_min`` (from ``orders.t_at_pickup``), ``empty_km_per_delivery`` (from
``drivers.empty_m``) and ``idle_share``.

Hand-built cases use ``LINE5`` (see ``test_handmade.py``): nodes 300 m apart, one minute per hop, 2 min of
service at each stop (half on arrival, half on departure), no geofence unless a test sets one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from simtools import LINE5, MIN, run_episode

from gigdispatch.agents.heuristics import NearestPolicy
from gigdispatch.envs.core.kpis import KPI_DOC, compute_kpis
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ORDER_DELIVERED
from gigdispatch.envs.scenarios import load_scenario
from gigdispatch.envs.scenarios.fixed import fixed_scenario

I64 = np.int64
TOL = 1e-6


def _three_orders(volume: float, geofence_m: float) -> Simulator:
    """Driver 0 at node 0, driver 1 at node 4 (always accept); the day of ``test_handmade``'s first case."""
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "volume": volume},
        {"t_place": 0.0, "pickup": 3, "dropoff": 4, "volume": volume},
        {"t_place": 60.0, "pickup": 0, "dropoff": 4, "volume": volume},
    ]
    drivers = [{"node": 0}, {"node": 4}]
    sc = fixed_scenario(LINE5, orders, drivers, config={"fleet": {"geofence_m": geofence_m}})
    return run_episode(Simulator(sc), policy=NearestPolicy())


def test_new_kpis_are_documented_in_table_order() -> None:
    names = list(KPI_DOC)
    assert names.index("pickup_leg_mean_min") == names.index("ready_to_pickup_mean_min") + 1
    assert names[names.index("utilization") + 1 : names.index("utilization") + 3] == [
        "empty_km_per_delivery",
        "idle_share",
    ]
    assert KPI_DOC["pickup_leg_mean_min"][0] == "min" and KPI_DOC["empty_km_per_delivery"][0] == "km"


@pytest.mark.parametrize("volume", [1.0, 0.0])  # 0.0: zero-volume orders (as in MDRP) are still on board
def test_hand_built_day_by_hand(volume: float) -> None:
    """Driver 0: 0 -> 1 empty (300 m), 1 -> 2 loaded (300 m), then at 7 min order 2: 2 -> 0 empty (600 m),
    0 -> 4 loaded (1200 m). Driver 1: 4 -> 3 empty (300 m), 3 -> 4 loaded (300 m). Accepted at 1, 1, 7 min;
    at the pickup stops at 2, 2, 9 min; picked up one minute later (half the service)."""
    sim = _three_orders(volume, geofence_m=0.0)
    od, dr = sim.orders, sim.drivers
    assert (od.status == ORDER_DELIVERED).all()
    np.testing.assert_allclose(dr.driven_m, [2400.0, 600.0])
    np.testing.assert_allclose(dr.empty_m, [900.0, 300.0])
    np.testing.assert_array_equal(od.t_assigned, np.array([1, 1, 7]) * MIN)
    np.testing.assert_array_equal(od.t_at_pickup, np.array([2, 2, 9]) * MIN)
    np.testing.assert_array_equal(od.t_pickup, np.array([3, 3, 10]) * MIN)
    k = compute_kpis(sim)
    assert k["pickup_leg_mean_min"] == pytest.approx((1 + 1 + 2) / 3)
    assert k["empty_km_per_delivery"] == pytest.approx((0.9 + 0.3) / 3)
    assert k["idle_share"] == pytest.approx(1.0 - k["utilization"])
    assert k["idle_share"] == pytest.approx(1.0 - dr.busy_s.sum() / dr.online_s.sum())


def test_geofence_moves_the_arrival_not_the_distance() -> None:
    """With a 100 m geofence (20 s at 300 m/min) the arrival is detected 20 s early; the metres are the same."""
    sim = _three_orders(1.0, geofence_m=100.0)
    od, dr = sim.orders, sim.drivers
    np.testing.assert_allclose(dr.driven_m, [2400.0, 600.0])
    np.testing.assert_allclose(dr.empty_m, [900.0, 300.0])
    np.testing.assert_allclose(od.t_at_pickup, np.array([2, 2, 9]) * MIN - 20.0)
    assert compute_kpis(sim)["pickup_leg_mean_min"] == pytest.approx((1 + 1 + 2) / 3 - 20.0 / MIN)


def test_repositioned_driver_accumulates_the_distance_as_empty() -> None:
    """A driver sent from node 0 to the single zone's centre (node 2) drives 600 m empty; then an order
    picked up right there (0 m to the pickup) and dropped at node 3 adds 300 m driven, none of it empty."""
    sc = fixed_scenario(LINE5, [{"t_place": 600.0, "pickup": 2, "dropoff": 3}], [{"node": 0}])
    sim = Simulator(sc)
    sim.reset(0)
    assert sim.city.zone_node[0] == 2
    sim.step(Decision(reposition_driver=np.array([0], I64), reposition_zone=np.array([0], I64)))
    assert sim.drivers.empty_m[0] == pytest.approx(300.0) == sim.drivers.driven_m[0]  # half-way after a minute
    for _ in range(4):
        sim.step(Decision())
    assert sim.drivers.node[0] == 2
    assert sim.drivers.empty_m[0] == pytest.approx(600.0) == sim.drivers.driven_m[0]
    policy = NearestPolicy()
    policy.reset(sim, sim.rng["policy"])
    while not sim.done:
        sim.step(policy.act(sim))
    od, dr = sim.orders, sim.drivers
    assert od.status[0] == ORDER_DELIVERED
    assert dr.driven_m[0] == pytest.approx(900.0) and dr.empty_m[0] == pytest.approx(600.0)
    assert od.t_at_pickup[0] == od.t_assigned[0] == 11 * MIN  # already standing at the pickup
    k = compute_kpis(sim)
    assert k["empty_km_per_delivery"] == pytest.approx(0.6)
    assert k["pickup_leg_mean_min"] == 0.0


def test_no_delivery_and_no_online_time_give_nan() -> None:
    sc = fixed_scenario(LINE5, [{"t_place": 0.0, "pickup": 1, "dropoff": 2}], [{"node": 0, "start": 1e9}])
    sim = Simulator(sc)
    sim.reset(0)
    k = compute_kpis(sim)
    assert np.isnan(k["pickup_leg_mean_min"]) and np.isnan(k["empty_km_per_delivery"])
    assert np.isnan(k["idle_share"]) and np.isnan(k["utilization"])


def _check_invariants(sim: Simulator) -> dict[str, float]:
    """The new arrays and KPIs against each other and the existing ones (any moment of a day)."""
    od, dr = sim.orders, sim.drivers
    assert (dr.empty_m >= 0.0).all()
    assert (dr.empty_m <= dr.driven_m + TOL).all()
    # the arrival is set exactly for the orders picked up, and never after the pickup itself
    np.testing.assert_array_equal(np.isfinite(od.t_at_pickup), np.isfinite(od.t_pickup))
    p = np.flatnonzero(np.isfinite(od.t_pickup))
    assert (od.t_at_pickup[p] <= od.t_pickup[p] + TOL).all()
    assert (od.t_assigned[p] <= od.t_at_pickup[p] + TOL).all()
    # one pickup visit, one arrival: every order of a bundle has the same t_at_pickup
    b = od.bundle_id[p]
    first = {}
    for bid, t in zip(b.tolist(), od.t_at_pickup[p].tolist(), strict=True):
        assert first.setdefault(bid, t) == t
    # drivers that never carried an order drove only empty
    carried = np.zeros(dr.n, bool)
    carried[od.driver[p]] = True
    np.testing.assert_allclose(dr.empty_m[~carried], dr.driven_m[~carried])
    k = compute_kpis(sim)
    d = od.status == ORDER_DELIVERED
    n_del = int(d.sum())
    assert n_del > 0
    legs = (od.t_at_pickup[d] - od.t_assigned[d]) / 60.0
    assert k["pickup_leg_mean_min"] == pytest.approx(legs.mean()) and k["pickup_leg_mean_min"] >= 0.0
    assert k["empty_km_per_delivery"] == pytest.approx(dr.empty_m.sum() / 1000.0 / n_del)
    assert k["idle_share"] == pytest.approx(1.0 - k["utilization"])
    # some driving was loaded
    assert dr.empty_m.sum() < dr.driven_m.sum()
    return k


def test_default_scenario_invariants(default_scenario) -> None:
    """Mid-day (250 steps) and at the end of the day (about 500 steps) with nearest-driver dispatch. ``online_s``
    is booked when a shift closes, so ``idle_share`` (like ``utilization``) is a share of time online only once
    the day is over."""
    sim = Simulator(default_scenario)
    sim.reset(3)
    policy = NearestPolicy()
    policy.reset(sim, sim.rng["policy"])
    for _ in range(250):
        sim.step(policy.act(sim))
    assert not sim.done
    _check_invariants(sim)
    while not sim.done:
        sim.step(policy.act(sim))
    k = _check_invariants(sim)
    assert 0.0 < k["idle_share"] < 1.0
    assert k["empty_km_per_delivery"] > 0.0 and k["pickup_leg_mean_min"] > 0.0


def test_mdrp_zero_volume_orders_count_as_on_board(mdrp_dir: Path) -> None:
    """MDRP orders have zero volume (``load`` stays 0): the drop-off legs must still not count as empty."""
    sim = run_episode(Simulator(load_scenario(mdrp_dir / "0o50t75s1p100")), policy=NearestPolicy())
    assert (sim.drivers.load == 0.0).all()
    k = _check_invariants(sim)
    assert 0.0 <= k["idle_share"] <= 1.0
    assert k["empty_km_per_delivery"] < sim.drivers.driven_m.sum() / 1000.0 / k["orders_delivered"]


def test_eph_frontier_variants_respect_their_rules(capsys: pytest.CaptureFixture[str]) -> None:
    """``benchmarks.eph_frontier``: the idle-cap variant moves only drivers whose log-off clock is at most 5 min
    old, the send-home variant's extra moves go to the driver's home, both keep ``nearest``'s offers; a missing
    checkpoint is one line and exit 2."""
    from benchmarks.eph_frontier import VARIANTS, _policy
    from benchmarks.eph_frontier import main as frontier_main

    label = "learned, idle <= 5 min moved, surplus home after 5 min"
    assert VARIANTS[label] == {"cap_s": 300.0, "home_s": 300.0}
    sc = load_scenario("city-shift")
    sim = Simulator(sc)
    pol = _policy(VARIANTS[label], "checkpoints/reposition")
    near = NearestPolicy()
    sim.reset(seed=1000)
    pol.reset(sim, np.random.default_rng(0))
    near.reset(sim, np.random.default_rng(0))
    moved = homes = 0
    for _ in range(240):  # the first four hours
        dec = pol.act(sim)
        d, nodes = np.asarray(dec.reposition_driver), np.asarray(dec.reposition_node)
        if sim.state.idle_since is not None and d.size:
            young = sim.t - sim.state.idle_since[d] <= 300.0 + TOL
            at_home = nodes == sim.drivers.home[d]
            assert np.all(young | at_home)  # a move of an older clock is only ever a send-home
            homes += int((at_home & ~young).sum())
            moved += int(d.size)
        np.testing.assert_array_equal(dec.driver, near.act(sim).driver)
        sim.step(dec)
    assert moved > 0 and homes > 0
    assert frontier_main(["--checkpoint", "/nonexistent/reposition", "--seeds", "1000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/reposition" in err[0]
