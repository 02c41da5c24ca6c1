"""MDRP (Grubhub) instance replay: the public instances, hand-made instances, and broken folders.

Rules (``/work/shared/data/mdrplib/README.md``): travel = ceil(euclid / meters_per_minute) minutes;
pickup = max(ready, arrival + pickup_service / 2), departure = pickup + pickup_service / 2;
drop-off = arrival + dropoff_service / 2; no pickups after the courier's off time;
courier pay = max(pay_per_order x delivered, pay_per_hour x (off - on) / 60).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from simtools import MDRP_DIR, StepChecker, check_final, check_one_pickup_group_on_board, run_episode

from gigdispatch.agents import make_policy
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.types import ORDER_DELIVERED
from gigdispatch.envs.scenarios import ScenarioError, load_scenario
from gigdispatch.training.mdrp import mdrp_metrics

PARAMS_HEADER = (
    "meters_per_minute\tpickup service minutes\tdropoff service minutes\ttarget click-to-door"
    "\tmaximum click-to-door\tpay per order\tguaranteed pay per hour"
)
SEED0 = sorted(p.name for p in MDRP_DIR.glob("0*") if p.is_dir()) if MDRP_DIR.is_dir() else []


def _read_tsv(path: Path) -> list[list[str]]:
    lines = [ln for ln in path.read_text(encoding="ascii").splitlines() if ln.strip()]
    return [ln.split("\t") for ln in lines[1:]]


def _write_instance(folder: Path, restaurants, orders, couriers, params=(320, 4, 4, 40, 90, 10, 15)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "restaurants.txt").write_text(
        "restaurant\tx\ty\n" + "".join("\t".join(map(str, r)) + "\n" for r in restaurants)
    )
    (folder / "orders.txt").write_text(
        "order\tx\ty\tplacement_time\trestaurant\tready_time\n" + "".join("\t".join(map(str, o)) + "\n" for o in orders)
    )
    (folder / "couriers.txt").write_text(
        "courier\tx\ty\ton_time\toff_time\n" + "".join("\t".join(map(str, c)) + "\n" for c in couriers)
    )
    (folder / "instance_parameters.txt").write_text(PARAMS_HEADER + "\n" + "\t".join(map(str, params)) + "\n")
    return folder


def _expected_pay_cents(folder: Path, sim: Simulator) -> np.ndarray:
    """max(pay_per_order x delivered, pay_per_hour x shift hours) per courier, in cents, from the files."""
    p = [float(x) for x in _read_tsv(folder / "instance_parameters.txt")[0]]
    per_order, per_hour = p[5], p[6]
    couriers = _read_tsv(folder / "couriers.txt")
    assert len(couriers) == sim.drivers.n
    minutes = np.array([float(c[4]) - float(c[3]) for c in couriers])
    od = sim.orders
    delivered = np.bincount(od.driver[od.status == ORDER_DELIVERED], minlength=sim.drivers.n)
    by_order = np.round(per_order * 100 * delivered).astype(np.int64)
    by_hour = np.round(per_hour * 100 * minutes / 60.0).astype(np.int64)
    return np.maximum(by_order, by_hour)


# ------------------------------------------------------------------------------------------------
# hand-made instances with known answers
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ready", "pickup", "drop"),
    [
        # decision at 5 min (placed at 5: seen at its placement minute, ``horizon.inclusive_placement``);
        # 1000 m / 320 -> 4 min: arrive 9. Food ready at 20: pickup 20, leave 22; 2000 m / 320 -> 7 min:
        # arrive 29, drop 31.
        (20, 20, 31),
        # food ready at 6: pickup = arrival + 2 = 11, leave 13, arrive 20, drop 22.
        (6, 11, 22),
    ],
)
def test_handmade_instance_exact_times(tmp_path, ready, pickup, drop):
    folder = _write_instance(
        tmp_path / "inst",
        restaurants=[("r1", 0, 0)],
        orders=[("o1", 0, 2000, 5, "r1", ready)],
        couriers=[("c1", 1000, 0, 0, 120)],
    )
    sc = load_scenario(folder)
    sim = Simulator(sc, record_events=True)
    run_episode(sim, after_step=StepChecker(sim))
    od = sim.orders
    assert od.status[0] == ORDER_DELIVERED and od.driver[0] == 0
    assert od.t_pickup[0] == pickup * 60.0
    assert od.t_delivered[0] == drop * 60.0
    assert od.t_delivered[0] <= od.deadline[0]  # within the 40-min target
    # the floor: ready - placement + 2 + 7 + 2 (reached when the courier waits for the food: ready at 20)
    floor = mdrp_metrics(sim, 0.0)["click_to_door_floor_min"]
    assert floor == ready - 5 + 11 and (floor == drop - 5) == (ready == 20)
    # pay: max(10 EUR x 1, 15 EUR/h x 2 h) = 30 EUR
    assert sim.drivers.earnings[0] == 3000
    np.testing.assert_array_equal(sim.drivers.earnings, _expected_pay_cents(folder, sim))
    assert od.fee.sum() == 0 and od.refund.sum() == 0
    check_final(sim)


@pytest.mark.parametrize(("on", "pickup", "drop"), [(0, 6, 17), (5, 7, 18)])
def test_handmade_courier_standing_at_the_restaurant(tmp_path, on, pickup, drop):
    # c1 comes on at ``on`` standing at the restaurant; the order (placed at 5, ready at 6) is given to it
    # at 5. On at 0, it has stood there since 0, so the arrival half of the service is behind it
    # (``fleet.service_from_arrival``, the MDRP rule pickup = max(ready, arrival + 2) with its real
    # arrival): pickup 6, not 5 + 2 = 7; leave 8, 7 min to the diner, drop 17. On at 5: it gets there as
    # the order is given, pickup 7, leave 9, drop 18.
    folder = _write_instance(
        tmp_path / "inst",
        restaurants=[("r1", 0, 0)],
        orders=[("o1", 0, 2000, 5, "r1", 6)],
        couriers=[("c1", 0, 0, on, 120)],
    )
    sim = Simulator(load_scenario(folder), record_events=True)
    run_episode(sim, after_step=StepChecker(sim))
    od = sim.orders
    assert od.driver[0] == 0 and od.t_assigned[0] == 5 * 60.0
    assert od.t_pickup[0] == pickup * 60.0 and od.t_delivered[0] == drop * 60.0
    assert od.t_at_pickup[0] == on * 60.0  # the visit's arrival is when the courier got there
    check_final(sim)


def test_handmade_instance_off_time_and_second_courier(tmp_path):
    # c1 (1000 m away, 4 min) is off at 9 min: it could arrive at 10 min at the earliest, so it never picks
    # the order up. c2 comes on at 30 min standing at the restaurant: decision at 30, arrival at once,
    # pickup 32, leave 34, 7 min to the diner, drop 43.
    folder = _write_instance(
        tmp_path / "inst",
        restaurants=[("r1", 0, 0)],
        orders=[("o1", 0, 2000, 5, "r1", 20)],
        couriers=[("c1", 1000, 0, 0, 9), ("c2", 0, 0, 30, 120)],
    )
    sim = Simulator(load_scenario(folder), record_events=True)
    run_episode(sim, after_step=StepChecker(sim))
    od = sim.orders
    assert od.driver[0] == 1
    assert od.t_pickup[0] == 32 * 60.0 and od.t_delivered[0] == 43 * 60.0
    assert od.t_delivered[0] - od.t_place[0] == 38 * 60.0 and od.t_delivered[0] <= od.deadline[0]
    assert sim.counters["released_after_shift"] <= 1  # c1 either never took it or gave it back
    # pay: c1 15 EUR/h x 9 min = 2.25 EUR; c2 max(10, 15 x 1.5 h = 22.50) = 22.50 EUR
    np.testing.assert_array_equal(sim.drivers.earnings, [225, 2250])
    np.testing.assert_array_equal(sim.drivers.earnings, _expected_pay_cents(folder, sim))
    check_final(sim)


# ------------------------------------------------------------------------------------------------
# the public instances (seed 0)
# ------------------------------------------------------------------------------------------------
def test_public_instances_present(mdrp_dir):
    assert len(SEED0) == 24, SEED0


@pytest.mark.parametrize("name", SEED0 or ["<no MDRP data>"])
def test_public_instance_replays(mdrp_dir, name):
    folder = mdrp_dir / name
    sc = load_scenario(folder)
    sim = Simulator(sc, record_events=True)
    checker = StepChecker(sim)
    run_episode(sim, policy=make_policy("nearest"), after_step=checker)
    kpis = compute_kpis(sim)
    od, dr = sim.orders, sim.drivers
    n_rows = len(_read_tsv(folder / "orders.txt"))
    assert kpis["orders_created"] == n_rows == od.n
    assert kpis["orders_delivered"] > 0.9 * n_rows  # a sanity bound: nearest delivers almost all
    assert sim.counters["invalid"] == 0
    # no pickup before the food is ready, none after the courier's off time
    picked = np.flatnonzero(np.isfinite(od.t_pickup))
    assert (od.t_pickup[picked] >= od.t_ready[picked]).all()
    assert (od.t_pickup[picked] <= dr.shift_end[od.driver[picked]]).all()
    # the MDRP pay rule, to the cent, against the instance files
    np.testing.assert_array_equal(dr.earnings, _expected_pay_cents(folder, sim))
    assert round(kpis["payouts_total"] * 100) == int(_expected_pay_cents(folder, sim).sum())
    # bundles: one pickup visit collects orders of one restaurant only
    d = np.flatnonzero(od.status == ORDER_DELIVERED)
    bid, grp = od.bundle_id[d], od.group[d]
    order = np.argsort(bid, kind="stable")
    bid, grp = bid[order], grp[order]
    same_bundle = bid[1:] == bid[:-1]
    assert (grp[1:][same_bundle] == grp[:-1][same_bundle]).all()
    # and a courier never carries orders of two restaurants at once
    assert sim.cfg.same_pickup_bundles
    check_one_pickup_group_on_board(sim)
    check_final(sim)


# ------------------------------------------------------------------------------------------------
# broken instance folders
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def instance_copy(mdrp_dir, tmp_path) -> Path:
    """A writable copy of a small real instance."""
    dst = tmp_path / "0r50t100s1p100"
    shutil.copytree(mdrp_dir / "0r50t100s1p100", dst)
    return dst


def _edit_cell(path: Path, row: int, col: int, value: str) -> None:
    """Set the cell at 1-based file line ``row`` (1 = header) and 0-based column ``col``."""
    lines = path.read_text().split("\n")
    cells = lines[row - 1].split("\t")
    cells[col] = value
    lines[row - 1] = "\t".join(cells)
    path.write_text("\n".join(lines))


def test_copy_of_instance_loads(instance_copy):
    sc = load_scenario(instance_copy)
    assert sc.fixed_orders is not None and len(sc.fixed_orders["t_place"]) == len(
        _read_tsv(instance_copy / "orders.txt")
    )


@pytest.mark.parametrize("missing", ["restaurants.txt", "instance_parameters.txt", "couriers.txt", "orders.txt"])
def test_missing_file(instance_copy, missing):
    (instance_copy / missing).unlink()
    with pytest.raises(ScenarioError) as ei:
        load_scenario(instance_copy)
    assert missing in str(ei.value) and str(instance_copy) in str(ei.value)


def test_bad_header(instance_copy):
    p = instance_copy / "orders.txt"
    _edit_cell(p, 1, 3, "placement")
    with pytest.raises(ScenarioError, match="header must be order x y placement_time restaurant ready_time") as ei:
        load_scenario(instance_copy)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize(
    ("fname", "row", "col", "value", "column"),
    [
        ("couriers.txt", 4, 1, "abc", "x"),
        ("orders.txt", 6, 3, "12x", "placement_time"),
        ("orders.txt", 7, 5, "", "ready_time"),
        ("restaurants.txt", 3, 2, "NaN", "y"),
        ("couriers.txt", 5, 4, "inf", "off_time"),
        ("instance_parameters.txt", 2, 0, "fast", "meters_per_minute"),
    ],
)
def test_non_numeric_cell(instance_copy, fname, row, col, value, column):
    p = instance_copy / fname
    _edit_cell(p, row, col, value)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(instance_copy)
    msg = str(ei.value)
    assert str(p) in msg and f"row {row}" in msg and f"column '{column}'" in msg, msg


def test_unknown_restaurant(instance_copy):
    p = instance_copy / "orders.txt"
    _edit_cell(p, 5, 4, "r99999")
    with pytest.raises(ScenarioError) as ei:
        load_scenario(instance_copy)
    msg = str(ei.value)
    assert str(p) in msg and "row 5" in msg and "column 'restaurant'" in msg and "'r99999'" in msg, msg


@pytest.mark.parametrize(
    ("fname", "row", "col", "value", "needle"),
    [
        ("orders.txt", 3, 3, "-5", "column 'placement_time'"),
        ("couriers.txt", 3, 3, "-30", "column 'on_time'"),
        ("orders.txt", 3, 5, "0", "ready_time is before placement_time"),
        ("couriers.txt", 3, 4, "0", "off_time must be after on_time"),
        ("instance_parameters.txt", 2, 0, "0", "'meters_per_minute' must be positive"),
        ("instance_parameters.txt", 2, 1, "-4", "'pickup_service_minutes' must be non-negative"),
    ],
)
def test_bad_values(instance_copy, fname, row, col, value, needle):
    p = instance_copy / fname
    _edit_cell(p, row, col, value)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(instance_copy)
    msg = str(ei.value)
    assert str(p) in msg and needle in msg, msg
    if fname != "instance_parameters.txt":
        assert f"row {row}" in msg, msg


def test_short_row_and_duplicates_and_empty(instance_copy):
    p = instance_copy / "orders.txt"
    original = p.read_text()
    lines = original.split("\n")
    p.write_text("\n".join([*lines[:3], "o9999\t1\t2", *lines[3:]]))
    with pytest.raises(ScenarioError, match=r"row 4 has 3 fields, expected 6"):
        load_scenario(instance_copy)
    p.write_text(original.rstrip("\n") + "\n" + lines[1] + "\n")
    with pytest.raises(ScenarioError, match="column 'order' has duplicate ids"):
        load_scenario(instance_copy)
    p.write_text("")
    with pytest.raises(ScenarioError, match="the file is empty"):
        load_scenario(instance_copy)
    p.write_text(lines[0] + "\n")
    with pytest.raises(ScenarioError, match="no data rows"):
        load_scenario(instance_copy)


def test_non_ascii_file(instance_copy):
    p = instance_copy / "restaurants.txt"
    p.write_bytes(b"restaurant\tx\ty\n\xff\xfe\t1\t2\n")
    with pytest.raises(ScenarioError, match="not an ASCII text file") as ei:
        load_scenario(instance_copy)
    assert str(p) in str(ei.value)


# ------------------------------------------------------------------------------------------ report
def _seed0_names() -> list[str]:
    return [
        f"0{o}{t}{s}{p}"
        for o in ("o100", "o50", "r50")
        for t in ("t75", "t100")
        for s in ("s1", "s2")
        for p in ("p100", "p125")
    ]


def _report_text(tmp_path: Path, instances: list[str]) -> str:
    from gigdispatch.training.mdrp import PUBLISHED, summarise, variant_of, write_report

    rows = []
    for i, name in enumerate(instances):
        row = {"policy": "nearest", "instance": name, "variant": variant_of(name), "seed": 0}
        row.update({k: v * 0.9 for k, v in PUBLISHED.items()})  # ahead of the published means on every metric
        row.update(
            ready_to_door_mean_min=20.0,
            utilization_incl_wait=0.7,
            couriers_on_guarantee=0.5,
            on_time_rate=0.9,
            click_to_door_floor_min=30.0 + 0.5 * (i % 2),  # 2.25 min below click-to-door on average
            decision_ms_p50=1.0,
            decision_ms_p99=2.0,
            wall_seconds=1.0,
        )
        row["click_to_door_mean_min"] = 32.0 + (1.0 if i % 2 else 0.0)  # mean 32.50 over any even-sized set
        rows.append(row)
    summary = summarise(rows, ["nearest"])
    path = tmp_path / "report.md"
    write_report(path, summary, ["nearest"], len(instances), [0], "gigdispatch mdrp ...", 1.0, 1, rows=rows)
    return path.read_text()


def test_report_names_the_differences_from_the_paper(tmp_path: Path) -> None:
    """The MDRP report says what differs from the paper's setting and which comparisons are like for like, and
    labels MDRP money in the instances' own units, not EUR."""
    names = _seed0_names()
    assert len(names) == 24
    text = _report_text(tmp_path, names)
    assert "EUR" not in text
    assert "pay units" in text and "no currency" in text
    assert "## Setting: what differs from the paper's" in text
    for needle in (
        "perfect preparation-time information",  # information
        "accept every assignment",  # acceptance
        "every 5 min",  # decisions
        "every 60 s step",
        "bundles of one restaurant's orders",  # bundling
        "sent to a nearby restaurant at shift start",  # courier start
        "at most 0.5 % undelivered",  # tuning
        "all 240 upstream instances (seeds 0-9)",  # instances
        "like for like",
        "context, not a like-for-like verdict",
    ):
        assert needle in text, needle
    # the like-for-like references over exactly the same instances, with this run's mean beside them
    like = text.split("## Like-for-like comparisons: the same instances")[1].split("## Overall")[0]
    assert "Table 4" in like and "31.88" in like and "30.67" in like
    assert "Table 9" in like and "30.59" in like
    assert "| `nearest` (this run) | 32.50 |" in like
    assert "| published: their rolling-horizon heuristic | 31.88 | 0.62 |" in like
    # the floor, overall and per variant (the last column)
    assert "no policy can go below 30.25 min on the orders `nearest` delivered" in text
    assert "`nearest` is 2.25 min above it." in text
    per_variant = text.split("## Per variant")[1]
    lines = per_variant.splitlines()
    assert lines[4].endswith("| floor (min) |")
    ends = [ln.rsplit("|", 2)[1].strip() for ln in lines[6:31]]  # 24 variants (one instance each), then all
    assert (
        sorted(ends[:24]) == ["30.00"] * 12 + ["30.50"] * 12 and lines[30].startswith("| all |") and ends[24] == "30.25"
    )
    assert "## Overall against the published means (context: not the same instances)" in text


def test_report_without_the_reference_instances_says_so(tmp_path: Path) -> None:
    text = _report_text(tmp_path, ["1o50t75s1p100", "1r50t75s1p100"])
    like = text.split("## Like-for-like comparisons: the same instances")[1].split("## Overall")[0]
    assert "covers none of the instance sets" in like and "--match '0*'" in like
    assert "31.88" not in like
    # half the seed-0 small set is not the set: no reference
    text = _report_text(tmp_path, _seed0_names()[8:16])
    assert "| `nearest` (this run)" not in text


# ---------------------------------------------------------------------------- perfect-information bounds
def _ctd_rows(ctd: dict[tuple[str, str, int], float]) -> list[dict]:
    """Made-up per-replay rows of ``gigdispatch mdrp``: (policy, instance, seed) -> mean click-to-door (min)."""
    from gigdispatch.training.mdrp import METRICS, variant_of

    rows = []
    for (policy, inst, seed), v in ctd.items():
        row = {"policy": policy, "instance": inst, "variant": variant_of(inst), "seed": seed}
        row.update(dict.fromkeys(METRICS, 0.5))
        row.update(decision_ms_p50=1.0, decision_ms_p99=2.0, wall_seconds=1.0, replay_violations=0, violations=[])
        row["click_to_door_mean_min"] = v
        rows.append(row)
    return rows


def _bound_rows() -> list[dict]:
    """``p1``: 32 min on every seed-0 instance (one of them as the mean of two seeds, 31 and 33) except the eight
    ``0o100`` ones, which are 2 min above Yildiz & Savelsbergh's published value; ``p2``: 30 min everywhere."""
    from gigdispatch.training.mdrp import YS_TABLE9_O100

    ctd: dict[tuple[str, str, int], float] = {}
    for inst in _seed0_names():
        ctd["p1", inst, 0] = YS_TABLE9_O100[inst][0] + 2.0 if inst in YS_TABLE9_O100 else 32.0
        ctd["p2", inst, 0] = 30.0
    ctd["p1", "0o50t75s1p100", 0], ctd["p1", "0o50t75s1p100", 1] = 31.0, 33.0
    return _ctd_rows(ctd)


def test_bound_gaps_from_the_rows() -> None:
    """Each policy's gap to each published bound, in minutes and %, over exactly the instances of the bound."""
    from gigdispatch.training.mdrp import reference_gaps

    gaps = {(g["policy"], g["published"]): g for g in reference_gaps(_bound_rows(), ["p1", "p2"])}
    assert set(gaps) == {(p, v) for p in ("p1", "p2") for v in (31.88, 30.67, 30.59)}
    # Reyes Table 4, the 16 small instances: p1 is 32.00 on each (one of them 31 and 33 over two seeds)
    g = gaps["p1", 30.67]
    assert g["bound"] and g["instances"] == 16 and g["ours"] == pytest.approx(32.0)
    assert g["gap_min"] == pytest.approx(1.33) and g["gap_pct"] == pytest.approx(100 * 1.33 / 30.67)
    g = gaps["p1", 31.88]
    assert not g["bound"] and g["gap_min"] == pytest.approx(0.12) and g["gap_pct"] == pytest.approx(100 * 0.12 / 31.88)
    # Yildiz & Savelsbergh, all 24: the eight o100 rows average 30.35 + 2, the other 16 are 32
    g = gaps["p1", 30.59]
    ours = (8 * 32.35 + 16 * 32.0) / 24
    assert g["bound"] and g["instances"] == 24 and g["ours"] == pytest.approx(ours)
    assert g["gap_min"] == pytest.approx(ours - 30.59) and g["gap_pct"] == pytest.approx(100 * (ours - 30.59) / 30.59)
    # below a bound: a negative gap (the report says what that would mean)
    g = gaps["p2", 30.59]
    assert g["gap_min"] == pytest.approx(-0.59) and g["gap_pct"] == pytest.approx(-100 * 0.59 / 30.59)
    # a set the run does not cover whole gives no gap
    rows = [r for r in _bound_rows() if not r["instance"].startswith("0r50")]
    assert {g["published"] for g in reference_gaps(rows, ["p1"])} == set()


def test_per_instance_gaps_only_where_published() -> None:
    from gigdispatch.training.mdrp import YS_TABLE9_O100, per_instance_gaps

    pig = per_instance_gaps(_bound_rows(), ["p1", "p2"])
    assert {g["instance"] for g in pig} == set(YS_TABLE9_O100)  # the eight published rows, nothing made up
    assert len(YS_TABLE9_O100) == 8
    g = next(g for g in pig if g["instance"] == "0o100t100s1p100" and g["policy"] == "p1")
    assert g["published"] == 30.07 and g["optimality_gap"] == 0.033
    assert g["ours"] == pytest.approx(32.07) and g["gap_min"] == pytest.approx(2.0)
    assert g["gap_pct"] == pytest.approx(100 * 2.0 / 30.07)
    assert g["optimum_at_least"] == pytest.approx(30.07 * (1 - 0.033))
    g = next(g for g in pig if g["instance"] == "0o100t75s2p125" and g["policy"] == "p2")
    assert g["gap_min"] == pytest.approx(30.0 - 31.31)


def test_report_shows_the_bounds_and_the_per_instance_table(tmp_path: Path) -> None:
    from gigdispatch.training.mdrp import summarise, write_report

    rows = _bound_rows()
    summary = summarise(rows, ["p1", "p2"])
    path = tmp_path / "report.md"
    write_report(path, summary, ["p1", "p2"], 24, [0, 1], "gigdispatch mdrp ...", 1.0, 1, rows=rows)
    text = path.read_text()
    like = text.split("## Like-for-like comparisons: the same instances")[1].split("## Overall")[0]
    assert "| published: exact optimum (whole day known) (perfect-information bound) | 30.67 | 1.33 | 4.3 % |" in like
    assert "| published: their rolling-horizon heuristic | 31.88 | 0.12 | 0.4 % |" in like
    assert (
        "| published: near-optimal solutions, whole day known (perfect-information bound) | 30.59 | 1.53 | 5.0 % |"
        in like
    )
    per = like.split("### Per instance: Yildiz & Savelsbergh 2019, Table 9, the eight `0o100` rows")[1]
    # instance | published | optimality gap | optimum at least | p1 | p1 - published (min, %) | p2 | ...
    assert "| 0o100t100s1p100 | 30.07 | 3.3 % | 29.08 | 32.07 | 2.00 | 6.7 % | 30.00 | -0.07 | -0.2 % |" in per
    assert "| mean of these 8 | 30.35 |" in per
    assert "0o50t75s1p100" not in per  # no per-instance value published (available) for it
    assert "were not available" in per
    assert "**replay checks: 0 violations over 49 replays**" in text
