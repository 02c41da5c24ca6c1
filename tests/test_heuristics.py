"""The heuristic dispatch baselines (agents/heuristics.py) and value-augmented Hungarian (agents/value_hungarian.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from gigdispatch.agents import make_policy
from gigdispatch.agents.heuristics import (
    AuctionPolicy,
    BatchingPolicy,
    DemandRepositionPolicy,
    HungarianPolicy,
    RandomPolicy,
    SlaPriorityPolicy,
    match_min_cost,
)
from gigdispatch.agents.nearest import NearestPolicy, fcfs_match
from gigdispatch.agents.value_hungarian import (
    ValueHungarianPolicy,
    load_values,
    main,
    parse_seeds,
    train_values,
    values_dir,
)
from gigdispatch.envs import Simulator, load_scenario
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.sim import Decision
from gigdispatch.envs.core.types import ORDER_ASSIGNED, ORDER_DELIVERED, ORDER_OPEN, PH_IDLE
from gigdispatch.envs.scenarios.fixed import fixed_scenario

MDRP_INSTANCE = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mdrplib" / "public_instances" / "0o50t75s1p100"
)
HEURISTICS = ["random", "hungarian", "batching", "sla-priority", "auction", "reposition", "value-hungarian"]
IDLE_ONLY = {"random", "hungarian", "sla-priority", "auction", "reposition", "value-hungarian"}
TOP_K = {"random", "hungarian", "auction", "value-hungarian"}  # every offer is among the order's top-8 idle candidates


@pytest.fixture(scope="module")
def default_sim() -> Simulator:
    return Simulator(load_scenario("default"))


def checked_run(sim: Simulator, policy, seed: int, name: str) -> dict:
    """Run a day, checking every decision against the simulator's masks before it is applied."""
    sim.reset(seed)
    policy.reset(sim, sim.rng["policy"])
    stats = {"offers": 0, "moves": 0, "unassigned": 0}
    while not sim.done:
        dec = policy.act(sim)
        o, d = np.asarray(dec.order), np.asarray(dec.driver)
        if o.size:
            od = sim.orders
            assert len(np.unique(o)) == o.size and len(np.unique(d)) == d.size, "an order or a driver named twice"
            assert (od.status[o] == ORDER_OPEN).all()
            elig = sim.eligible(idle_only=name in IDLE_ONLY)
            assert elig[d].all(), "offer to a driver who may not receive one"
            assert (sim.committed[d] + od.volume[o] <= sim.drivers.capacity[d] + 1e-9).all()
            assert (d != od.last_decliner[o]).all(), "offer to the driver who just declined"
            lv = np.zeros(o.size, np.int64) if dec.level is None else np.asarray(dec.level)
            assert ((lv >= 0) & (lv < sim.n_levels)).all()
            if name in TOP_K:
                ids, _ = sim.candidates(o, 9, idle_only=True)  # top-8 plus the decliner, if any
                assert (ids == d[:, None]).any(axis=1).all(), "offer outside the order's candidates"
            stats["offers"] += o.size
        if dec.reposition_driver.size:
            r = dec.reposition_driver
            dr = sim.drivers
            assert (dr.phase[r] == PH_IDLE).all() and (dr.route_len[r] == 0).all() and (dr.offer_order[r] < 0).all()
            assert not np.isin(r, d).any(), "a driver both offered an order and repositioned"
            here = sim.city.zone_of[dr.node[r]]
            assert (sim.city.zone_neighbors[here] == np.asarray(dec.reposition_zone)[:, None]).any(axis=1).all()
            stats["moves"] += r.size
        if dec.unassign.size:
            u = dec.unassign
            assert (sim.orders.status[u] == ORDER_ASSIGNED).all(), "unassign of an order that is not ASSIGNED"
            assert not sim.in_service(u).any(), "unassign of an order being picked up right now"
            stats["unassigned"] += u.size
        sim.step(dec)
    return {**compute_kpis(sim), **stats}


@pytest.mark.parametrize("name", HEURISTICS)
def test_full_default_day_valid_and_deterministic(default_sim: Simulator, name: str) -> None:
    k1 = checked_run(default_sim, make_policy(name), 1003, name)
    assert k1["invalid_decision_pairs"] == 0
    assert k1["offers"] > 500 and k1["orders_delivered"] > 0.8 * k1["orders_created"]
    k2 = checked_run(default_sim, make_policy(name), 1003, name)
    assert k1 == k2, "same seed, different day"
    if name == "reposition":
        assert k1["moves"] > 0, "no idle driver was ever repositioned"
    if name == "sla-priority":
        assert k1["unassigned"] > 0, "no at-risk order was ever reassigned"


def test_seeds_differ(default_sim: Simulator) -> None:
    a = default_sim.run(make_policy("random"), seed=1001)
    b = default_sim.run(make_policy("random"), seed=1002)
    assert a["platform_margin"] != b["platform_margin"]


# ------------------------------------------------------------------------------------- Hungarian
def brute_force(ids: np.ndarray, cost: np.ndarray) -> tuple[int, float]:
    """(largest matching size, least cost among matchings of that size) by enumeration."""
    n, k = ids.shape
    best = (0, 0.0)
    for choice in itertools.product(range(-1, k), repeat=n):
        used, size, total, ok = set(), 0, 0.0, True
        for i, j in enumerate(choice):
            if j < 0:
                continue
            d = ids[i, j]
            if d < 0 or not np.isfinite(cost[i, j]) or d in used:
                ok = False
                break
            used.add(d)
            size += 1
            total += cost[i, j]
        if ok and (size > best[0] or (size == best[0] and total < best[1] - 1e-9)):
            best = (size, total)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_match_min_cost_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k, n_drivers = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
    ids = np.stack(
        [
            rng.permutation(n_drivers)[:k]
            if k <= n_drivers
            else np.r_[rng.permutation(n_drivers), [-1] * (k - n_drivers)]
            for _ in range(n)
        ]
    )
    ids = np.where(rng.random(ids.shape) < 0.2, -1, ids)
    cost = np.round(rng.uniform(-50, 500, size=ids.shape), 1)
    rows, drv = match_min_cost(ids, cost)
    assert len(np.unique(rows)) == rows.size and len(np.unique(drv)) == drv.size
    total = sum(float(cost[r][ids[r] == d].min()) for r, d in zip(rows, drv, strict=True))
    for r, d in zip(rows, drv, strict=True):
        assert d in ids[r]
    size, best = brute_force(ids, cost)
    assert rows.size == size
    assert total == pytest.approx(best)


def test_hungarian_beats_greedy_on_hand_made_instance() -> None:
    """Two orders, two drivers on a line (100 m per minute): FCFS gives the oldest order its nearest driver
    (4 + 13 min); the Hungarian matching finds 6 + 3 min, the brute-force optimum."""
    nodes = [[0.0, 0.0], [1000.0, 0.0], [600.0, 0.0], [1300.0, 0.0]]
    orders = [{"t_place": 0.0, "pickup": 2, "dropoff": 0}, {"t_place": 1.0, "pickup": 3, "dropoff": 0}]
    drivers = [{"node": 0}, {"node": 1}]
    sc = fixed_scenario(nodes, orders, drivers, meters_per_minute=100.0)

    def first_offers(policy) -> tuple[Simulator, Decision]:
        sim = Simulator(sc)
        sim.reset(0)
        policy.reset(sim, sim.rng["policy"])
        while sim.open_orders().size < 2:
            sim.step(Decision())
        return sim, policy.act(sim)

    sim, dec = first_offers(HungarianPolicy(age_weight=0.0, slack_weight=0.0, decline_cost_s=0.0))
    eta = sim.pickup_eta(np.arange(2), np.arange(2))
    best = min(eta[0, p[0]] + eta[1, p[1]] for p in itertools.permutations(range(2)))
    got = dict(zip(dec.order.tolist(), dec.driver.tolist(), strict=True))
    assert sorted(got) == [0, 1]
    assert eta[0, got[0]] + eta[1, got[1]] == pytest.approx(best)
    assert got == {0: 0, 1: 1}
    _, greedy = first_offers(NearestPolicy())
    assert dict(zip(greedy.order.tolist(), greedy.driver.tolist(), strict=True)) == {
        0: 1,
        1: 0,
    }  # the test tells them apart


# -------------------------------------------------------------------------------- other policies
def test_random_uses_only_its_rng(default_sim: Simulator) -> None:
    default_sim.reset(1005)
    for _ in range(200):  # to the lunch peak
        default_sim.step(Decision())
    decs = []
    for _ in range(2):
        p = RandomPolicy()
        p.reset(default_sim, np.random.default_rng(7))
        decs.append(p.act(default_sim))
    assert decs[0].order.size > 0
    for f in ("order", "driver", "level"):
        assert np.array_equal(getattr(decs[0], f), getattr(decs[1], f))
    p = RandomPolicy()
    p.reset(default_sim, np.random.default_rng(8))
    other = p.act(default_sim)
    assert not (
        np.array_equal(other.order, decs[0].order)
        and np.array_equal(other.driver, decs[0].driver)
        and np.array_equal(other.level, decs[0].level)
    )


def test_auction_levels(default_sim: Simulator) -> None:
    sim = default_sim
    sim.reset(1006)
    for _ in range(150):
        sim.step(make_policy("nearest").act(sim))
    pol = AuctionPolicy(threshold=0.99, max_level=None)  # nobody reaches 0.99: every gig offer at the top level
    dec = pol.act(sim)
    assert dec.order.size > 0
    gig = ~sim.drivers.always_accept[dec.driver]
    assert (dec.level[gig] == sim.n_levels - 1).all()
    low = AuctionPolicy(threshold=0.0, max_level=None).levels(sim, dec.order, dec.driver)
    assert np.array_equal(low, np.minimum(sim.orders.declines[dec.order], sim.n_levels - 1))  # declines only


def test_batching_bundles_one_restaurant_on_one_courier() -> None:
    """MDRP rule (same-pickup bundles): two orders of one restaurant, one courier far away. Batching adds the
    second order to the courier already heading there; nearest (idle drivers only) cannot."""
    nodes = [[0.0, 0.0], [3000.0, 0.0], [3300.0, 0.0], [3600.0, 0.0]]
    orders = [
        {"t_place": 0.0, "pickup": 1, "dropoff": 2, "ready": 900.0},
        {"t_place": 120.0, "pickup": 1, "dropoff": 3, "ready": 900.0},
    ]
    sc = fixed_scenario(nodes, orders, [{"node": 0}], config={"same_pickup_bundles": True}, meters_per_minute=300.0)
    out = {}
    for name, pol in (("batching", BatchingPolicy()), ("nearest", NearestPolicy())):
        sim = Simulator(sc)
        kpis = sim.run(pol, seed=0)
        assert kpis["orders_delivered"] == 2 and kpis["invalid_decision_pairs"] == 0
        out[name] = sim.orders.bundle_id.copy()
    assert out["batching"][0] == out["batching"][1]
    assert out["nearest"][0] != out["nearest"][1]


def test_reposition_targets_neighbouring_zones_with_demand(default_sim: Simulator) -> None:
    sim = default_sim
    sim.reset(1007)
    pol = DemandRepositionPolicy()
    pol.reset(sim, sim.rng["policy"])
    moved = 0
    for _ in range(240):
        dec = pol.act(sim)
        if dec.reposition_driver.size:
            demand = pol.expected_demand(sim, dec.order)
            here = sim.city.zone_of[sim.drivers.node[dec.reposition_driver]]
            assert (demand[dec.reposition_zone] > 0).all()
            assert (dec.reposition_zone != here).all()
            moved += dec.reposition_driver.size
        sim.step(dec)
    assert moved > 0


def test_bad_arguments_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hold"):
        make_policy("random", hold=2.0)
    with pytest.raises(ValueError, match="patience_quantile"):
        make_policy("sla-priority", patience_quantile=-1)
    with pytest.raises(ValueError, match="values_path"):
        make_policy("value-hungarian", values_path=tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a table")
    sim = Simulator(load_scenario("default"))
    sim.reset(1000)
    with pytest.raises(ValueError, match="values_path"):
        make_policy("value-hungarian", values_path=bad).reset(sim, sim.rng["policy"])


# ---------------------------------------------------------------------------------- value tables
def test_value_training_finite_and_deterministic(default_sim: Simulator) -> None:
    sc = default_sim.scenario
    a = train_values(sc, [1011])
    b = train_values(sc, [1011])
    assert a.shape == (sc.city.n_zones, 18) and a.dtype == np.float32
    assert np.isfinite(a).all() and a.max() > 0
    assert np.array_equal(a, b)
    assert not np.array_equal(a, train_values(sc, [1012]))
    with pytest.raises(ValueError, match="evaluation seeds"):
        train_values(sc, [1000, 5])


def test_shipped_tables_match_their_scenarios() -> None:
    for name in ("default", "city-1000"):
        tab = load_values(values_dir() / f"{name}.npz")
        sc = load_scenario(name)
        assert tab["scenario"] == name
        assert tab["V"].shape[0] == sc.city.n_zones and np.isfinite(tab["V"]).all()
        assert min(tab["seeds"]) >= 1000 and "value_hungarian" in tab["command"]  # the command that made it


def test_value_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert main(["--scenario", "default", "--seeds", "3", "--out", str(tmp_path / "x.npz")]) == 2
    assert "evaluation seeds" in capsys.readouterr().err
    assert main(["--scenario", "no-such-city", "--out", str(tmp_path / "x.npz")]) == 2
    assert "no-such-city" in capsys.readouterr().err
    out = tmp_path / "v.npz"
    assert main(["--scenario", "default", "--seeds", "1013", "--out", str(out)]) == 0
    tab = load_values(out)
    assert (
        tab["scenario"] == "default"
        and tab["seeds"].tolist() == [1013]
        and tab["gamma"] == 0.7
        and tab["bucket_s"] == 1800.0
    )
    assert "--seeds 1013" in tab["command"]
    assert parse_seeds("1000-1002,1005") == [1000, 1001, 1002, 1005]
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds("10-x")


def test_value_hungarian_without_value_terms_is_hungarian(default_sim: Simulator) -> None:
    """With the value and profit terms off, the weight is hungarian's cost scaled: the same matching."""
    a = default_sim.run(HungarianPolicy(), seed=1008)
    b = default_sim.run(ValueHungarianPolicy(value_weight=0.0, profit_weight=0.0, time_value=3600.0), seed=1008)
    assert a["platform_margin"] == b["platform_margin"] and a["orders_delivered"] == b["orders_delivered"]


# --------------------------------------------------------------------------------------------- MDRP
@pytest.mark.parametrize("name", HEURISTICS)
def test_policies_run_on_mdrp_instance(name: str) -> None:
    if not MDRP_INSTANCE.is_dir():
        pytest.skip(f"MDRP instance not found at {MDRP_INSTANCE}")
    sim = Simulator(load_scenario(MDRP_INSTANCE))
    assert sim.n_levels == 1
    pol = ValueHungarianPolicy(train_episodes=1) if name == "value-hungarian" else make_policy(name)
    k = checked_run(sim, pol, 0, name)
    assert k["invalid_decision_pairs"] == 0
    assert k["orders_delivered"] == k["orders_created"]
    assert (sim.orders.status == ORDER_DELIVERED).sum() == k["orders_created"]


def test_sla_priority_reassigns_to_a_closer_idle_driver() -> None:
    """One order assigned to a far driver; a driver much closer comes online: the order is taken back
    and offered to the closer driver at the next epoch."""
    nodes = [[0.0, 0.0], [6000.0, 0.0], [300.0, 0.0], [600.0, 0.0]]
    orders = [{"t_place": 0.0, "pickup": 2, "dropoff": 3, "deadline": 900.0}]
    drivers = [{"node": 1}, {"node": 0, "start": 240.0}]
    sc = fixed_scenario(nodes, orders, drivers, meters_per_minute=300.0)
    sim = Simulator(sc)
    sim.reset(0)
    pol = SlaPriorityPolicy(min_gain_s=60.0)
    pol.reset(sim, sim.rng["policy"])
    seen_unassign = False
    while not sim.done:
        dec = pol.act(sim)
        if dec.unassign.size:
            assert dec.unassign.tolist() == [0] and sim.orders.driver[0] == 0
            seen_unassign = True
        sim.step(dec)
    assert seen_unassign
    assert sim.orders.status[0] == ORDER_DELIVERED and sim.orders.driver[0] == 1


@pytest.mark.parametrize("exact_pairs", [Simulator.EXACT_PAIRS, 50])
def test_nearest_shortcuts_never_change_the_decision(exact_pairs: int) -> None:
    """Nearest skips a matching round when every order in its window already saw all its eligible drivers
    (and they are taken), and reuses the last round's ETAs instead of calling ``sim.candidates`` again: the
    decisions must equal those of the policy that runs every round through ``sim.candidates``, epoch by
    epoch through a busy day, on the exact ranking and on the KD-tree path (forced by a small pair limit)."""
    sim = Simulator(load_scenario("city-1000"))
    sim.EXACT_PAIRS = exact_pairs
    fast, full = NearestPolicy(), NearestPolicy()
    full._skip_exhausted = False
    full._reuse_etas = False
    sim.reset(7)
    fast.reset(sim, sim.rng["policy"])
    full.reset(sim, sim.rng["policy"])
    epochs = offers = 0
    while not sim.done and epochs < 600:
        a, b = fast.act(sim), full.act(sim)
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.driver, b.driver)
        offers += a.order.size
        sim.step(a)
        epochs += 1
    assert offers > 500


def test_late_orders_diagnostic(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks.late_orders splits one nearest day's deliveries into late and on time, with shares in [0, 1]."""
    import json

    from benchmarks.late_orders import main as late_main

    assert late_main(["--scenario", "default", "--seeds", "1000"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    sim = Simulator(load_scenario("default"))
    kpis = sim.run(NearestPolicy(), seed=1000)
    assert run["late"]["orders"] + run["on_time"]["orders"] == kpis["orders_delivered"]
    assert run["late"]["orders"] / kpis["orders_delivered"] == pytest.approx(1.0 - kpis["on_time_rate"])
    for part in ("late", "on_time"):
        for key in ("share_with_no_idle_left_over", "share_assigned_within_2_min", "express_share"):
            assert 0.0 <= run[part][key] <= 1.0


def test_fcfs_match_is_the_column_then_row_greedy() -> None:
    """``fcfs_match`` equals its definition run pair by pair: candidates column by column (best first),
    orders row by row (oldest first) within a column; an unmatched order takes its candidate if nobody has.
    Random candidate lists with padding, repeats across rows and drivers taken beforehand."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        n, k, n_d = int(rng.integers(1, 40)), int(rng.integers(1, 9)), int(rng.integers(1, 30))
        ids = rng.integers(-1, n_d, size=(n, k))
        taken = rng.random(n_d) < 0.2
        want, ref_taken = np.full(n, -1), taken.copy()
        for c in range(k):
            for r in range(n):
                d = ids[r, c]
                if want[r] < 0 and d >= 0 and not ref_taken[d]:
                    want[r], ref_taken[d] = d, True
        got_taken = taken.copy()
        np.testing.assert_array_equal(fcfs_match(ids, got_taken), want)
        np.testing.assert_array_equal(got_taken, ref_taken)
