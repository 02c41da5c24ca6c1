"""``gigdispatch evaluate`` and ``gigdispatch mdrp``: seeds, files, determinism, statistics, errors."""

from __future__ import annotations

import contextlib
import csv
import importlib
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from simtools import MDRP_DIR

from gigdispatch.agents import UnknownPolicyError
from gigdispatch.agents.base import Policy
from gigdispatch.agents.nearest import NearestPolicy
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.seeding import parse_seeds
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.training.cli import main
from gigdispatch.training.evaluate import evaluate
from gigdispatch.training.report import SUMMARY_COLUMNS, comparison_pairs, format_seeds
from gigdispatch.training.runner import parse_policy
from gigdispatch.training.stats import mean_ci, paired_diff

TINY_YAML = """\
name: tiny
horizon: {start: "10:00", end: "11:30", step_seconds: 60, drain_minutes: 30}
city: {kind: grid, size: [8, 8], spacing_m: 250, zones: [2, 2], layout_seed: 3}
demand: {orders: 120, hotspots: 4}
fleet: {drivers: 15}
"""
REQUIRED_SUMMARY = (
    "policy",
    "scenario",
    "episodes",
    "reward_mean",
    "reward_ci95",
    "on_time_rate",
    "click_to_door_mean_min",
    "click_to_door_p90_min",
    "undelivered_rate",
    "cost_per_order",
    "utilization",
    "acceptance_rate",
    "orders_per_bundle",
    "decision_ms_p50",
    "decision_ms_p99",
)
TIMING = {"wall_seconds", "decision_ms_mean", "decision_ms_p50", "decision_ms_p99"}
SMALL_INSTANCE = "0o50t75s1p100"


class SkipPolicy(Policy):
    """Test-only: nearest-driver matching, but each epoch is skipped with probability 1/2 (from the episode's RNG)."""

    name = "skippy"

    def __init__(self) -> None:
        self.inner = NearestPolicy()

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, sim: Simulator) -> Decision:
        return Decision() if self.rng.random() < 0.5 else self.inner.act(sim)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scen") / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path


@pytest.fixture(scope="module")
def runs(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same evaluation twice: through the API with 1 worker, through the CLI with 2 processes."""
    out1 = tmp_path_factory.mktemp("eval1")
    out2 = tmp_path_factory.mktemp("eval2")
    (out2 / "keep.txt").write_text("not ours")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(importlib.import_module("gigdispatch.agents.registry").POLICIES, "skippy", f"{__name__}:SkipPolicy")
        evaluate([str(tiny)], ["nearest", "skippy"], "0-2", out1, workers=1, progress=False)
        args = [
            "--scenario",
            str(tiny),
            "--policy",
            "nearest",
            "--policy",
            "skippy",
            "--seeds",
            "0,1,2",
            "--out",
            str(out2),
        ]
        rc = main(["evaluate", *args, "--workers", "2", "--no-progress"])
    assert rc == 0
    return {"w1": out1, "w2": out2}


# ------------------------------------------------------------------------------------------ seeds
@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0-19", list(range(20))),
        ("0,3,7", [0, 3, 7]),
        ("0-4,10-14", [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]),
        (" 5 ", [5]),
        ("2 - 4, 9", [2, 3, 4, 9]),
        ("7-7", [7]),
    ],
)
def test_parse_seeds_good(text: str, want: list[int]) -> None:
    assert parse_seeds(text) == want
    assert parse_seeds(format_seeds(want)) == want


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("a", "not a seed"),
        ("1.5", "not a seed"),
        ("3-1", "ends before it starts"),
        ("0,,1", "empty item"),
        ("-1", ">= 0"),
        ("0-3,2", "given twice"),
        ("0-200000", "more than"),
    ],
)
def test_parse_seeds_bad(text: str, reason: str) -> None:
    with pytest.raises(InputError, match="--seeds") as err:
        parse_seeds(text)
    assert reason in str(err.value)


def test_parse_policy_labels(tmp_path: Path) -> None:
    assert parse_policy("nearest") == ("nearest", "nearest")
    assert parse_policy("fast=nearest") == ("fast", "nearest")
    with pytest.raises(InputError, match="LABEL=NAME"):
        parse_policy("two words=nearest")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    assert parse_policy(str(folder) + "/") == (str(folder), str(folder) + "/")


# --------------------------------------------------------------------------------------- evaluate
def test_files_and_columns(runs: dict[str, Path]) -> None:
    for out in runs.values():
        summary = read_csv(out / "summary.csv")
        assert list(summary[0]) == list(SUMMARY_COLUMNS)
        assert set(REQUIRED_SUMMARY) <= set(summary[0])
        assert [(r["policy"], r["scenario"], r["episodes"]) for r in summary] == [
            ("nearest", "tiny", "3"),
            ("skippy", "tiny", "3"),
        ]
        eps = read_csv(out / "episodes.csv")
        assert len(eps) == 6
        assert {
            "policy",
            "scenario",
            "seed",
            "reward",
            "platform_margin",
            "on_time_rate",
            "wall_seconds",
            "decision_ms_p99",
        } <= set(eps[0])
        assert sorted((r["policy"], int(r["seed"])) for r in eps) == [
            (p, s) for p in ("nearest", "skippy") for s in range(3)
        ]
        for r in eps:
            assert float(r["reward"]) == float(r["platform_margin"])
            assert int(r["decision_calls"]) > 0
        hourly = read_csv(out / "hourly.csv")
        assert {int(r["hour"]) for r in hourly} >= {10, 11}
        # the hourly series adds up to the day's deliveries
        for p in ("nearest", "skippy"):
            per_day = sum(float(r["orders_delivered_per_day"]) for r in hourly if r["policy"] == p)
            mean_del = np.mean([float(r["orders_delivered"]) for r in eps if r["policy"] == p])
            assert per_day == pytest.approx(mean_del)
        for name in ("kpis_tiny.png", "hourly_tiny.png"):
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (runs["w2"] / "keep.txt").read_text() == "not ours"  # files it does not write are left alone


def test_same_numbers_regardless_of_workers(runs: dict[str, Path]) -> None:
    a = read_csv(runs["w1"] / "episodes.csv")
    b = read_csv(runs["w2"] / "episodes.csv")
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in b]
    # the two policies really differ (skipping epochs changes the day), so the comparison is not vacuous
    rewards = {(r["policy"], r["seed"]): r["reward"] for r in a}
    assert any(rewards[("nearest", s)] != rewards[("skippy", s)] for s in ("0", "1", "2"))


def test_summary_statistics_match_episodes(runs: dict[str, Path]) -> None:
    eps = read_csv(runs["w1"] / "episodes.csv")
    for row in read_csv(runs["w1"] / "summary.csv"):
        r = np.array([float(e["reward"]) for e in eps if e["policy"] == row["policy"]])
        lo, hi = stats.t.interval(0.95, len(r) - 1, loc=r.mean(), scale=stats.sem(r))
        assert float(row["reward_mean"]) == pytest.approx(r.mean())
        assert float(row["reward_ci95"]) == pytest.approx((hi - lo) / 2)
        ot = np.array([float(e["on_time_rate"]) for e in eps if e["policy"] == row["policy"]])
        assert float(row["on_time_rate"]) == pytest.approx(ot.mean())


def test_comparisons_and_report(runs: dict[str, Path]) -> None:
    out = runs["w1"]
    eps = read_csv(out / "episodes.csv")
    comps = [c for c in read_csv(out / "comparisons.csv") if c["metric"] == "reward"]
    assert [(c["policy"], c["versus"]) for c in comps] == [("skippy", "nearest")]
    reward = {(e["policy"], int(e["seed"])): float(e["reward"]) for e in eps}
    d = np.array([reward[("skippy", s)] - reward[("nearest", s)] for s in range(3)])
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    c = comps[0]
    assert float(c["mean_diff"]) == pytest.approx(d.mean())
    assert (float(c["ci95_lo"]), float(c["ci95_hi"])) == pytest.approx((lo, hi))
    assert c["excludes_zero"] == ("true" if (lo > 0 or hi < 0) else "false")
    report = (out / "report.md").read_text()
    assert "skippy vs nearest" in report
    assert "gigdispatch evaluate" in report and "--seeds 0-2" in report
    assert "git revision" in report
    assert "kpis_tiny.png" in report
    report2 = (runs["w2"] / "report.md").read_text()
    assert "--workers 2" in report2 and "skippy vs nearest" in report2


def test_paired_ci_against_scipy() -> None:
    a = np.array([10.0, 12.5, 9.0, 14.0, 11.0, 13.5])
    b = np.array([9.0, 11.0, 9.5, 12.0, 10.0, 12.0])
    d = a - b
    res = paired_diff(a, b)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert res.n == 6
    assert res.mean == pytest.approx(d.mean())
    assert (res.lo, res.hi) == pytest.approx((lo, hi))
    assert res.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert res.excludes_zero == (lo > 0)  # here lo > 0: a is higher
    assert res.excludes_zero and res.verdict == "higher"
    # a noisy difference whose interval straddles zero
    res2 = paired_diff([1.0, -2.0, 3.0], [0.0, 0.0, 0.0])
    assert res2.lo < 0 < res2.hi and not res2.excludes_zero
    # identical differences: zero width; excludes zero iff the difference is not zero
    same = paired_diff([5.0, 6.0, 7.0], [4.0, 5.0, 6.0])
    assert same.half == 0.0 and same.excludes_zero and math.isnan(same.p_value)
    assert not paired_diff([1.0, 2.0], [1.0, 2.0]).excludes_zero
    one = paired_diff([1.0], [0.0])
    assert one.n == 1 and math.isnan(one.half) and not one.excludes_zero
    # NaN pairs are dropped
    assert paired_diff([1.0, np.nan, 3.0], [0.0, 1.0, 1.0]).n == 2
    m, h = mean_ci([1.0, 2.0, 3.0, 4.0])
    lo, hi = stats.t.interval(0.95, 3, loc=2.5, scale=stats.sem([1.0, 2.0, 3.0, 4.0]))
    assert m == 2.5 and h == pytest.approx((hi - lo) / 2)


def test_comparison_pairs() -> None:
    pols = ["nearest", "hungarian", "value-hungarian", "random", "oracle"]
    pairs = comparison_pairs(pols, "nearest")
    assert ("hungarian", "nearest") in pairs
    assert ("value-hungarian", "hungarian") in pairs
    assert {("oracle", p) for p in pols if p != "oracle"} <= set(pairs)
    assert len({frozenset(p) for p in pairs}) == len(pairs)  # no comparison twice
    assert all(a != b for a, b in pairs)
    assert comparison_pairs(["a", "b", "c"], "b") == [("a", "b"), ("c", "b")]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(paths: list[Path]) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}


def test_output_files_get_the_mode_the_umask_gives(tiny: Path, tmp_path: Path) -> None:
    """Every file of a results folder and a ``simulate --out`` file: 0644 under umask 022 (not mkstemp's 0600),
    0640 under umask 027; a results folder named by ``--out DIR`` is created with its missing parents."""
    out = tmp_path / "results" / "eval"
    with umask(0o022):
        evaluate([str(tiny)], ["nearest"], "0", out, workers=1, progress=False)
        assert main(["simulate", "--scenario", str(tiny), "--out", str(tmp_path / "day.json"), "--no-progress"]) == 0
    files = sorted(out.iterdir())
    names = {p.name for p in files}
    assert {"summary.csv", "episodes.csv", "hourly.csv", "comparisons.csv", "report.md"} <= names, names
    assert any(n.endswith(".png") for n in names) and not any(n.endswith(".tmp") for n in names), names
    got = modes([*files, tmp_path / "day.json"])
    assert set(got.values()) == {0o644}, got
    with umask(0o027):
        assert main(["simulate", "--scenario", str(tiny), "--out", str(tmp_path / "day.json"), "--no-progress"]) == 0
    assert modes([tmp_path / "day.json"]) == {"day.json": 0o640}  # the umask's mode, also when replacing a file


def test_out_file_in_a_missing_folder_is_refused_and_nothing_created(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nonexistent-dir" / "day.json"
    assert main(["simulate", "--scenario", str(tiny), "--out", str(target), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: --out {target}: folder {target.parent} does not exist; create it first\n"
    assert captured.out == ""  # refused before the day is run
    assert not target.parent.exists()
    from gigdispatch.training.io import atomic_write_text

    with pytest.raises(InputError, match="does not exist; create it first"):  # the writer never creates a folder
        atomic_write_text(target, "x")
    assert not target.parent.exists()


def test_bad_input_errors(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UnknownPolicyError, match="no-such"):
        evaluate([str(tiny)], ["no-such"], [0], tmp_path / "o")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(UnknownPolicyError, match="folder"):
        evaluate([str(tiny)], [str(folder)], [0], tmp_path / "o")
    with pytest.raises(InputError, match="--baseline"):
        evaluate([str(tiny)], ["nearest"], [0], tmp_path / "o", baseline="hungarian")
    with pytest.raises(InputError, match="given twice"):
        evaluate([str(tiny)], ["nearest", "nearest"], [0], tmp_path / "o")
    with pytest.raises(InputError, match="--workers"):
        evaluate([str(tiny)], ["nearest"], [0], tmp_path / "o", workers=0)
    assert not (tmp_path / "o").exists()  # nothing is written before the input is checked
    # the command line: one line, exit status 2, no traceback
    assert main(["evaluate", "--scenario", "nowhere-city", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere-city" in err and "Traceback" not in err
    assert main(["evaluate", "--policy", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["evaluate", "--seeds", "5-1", "--out", str(tmp_path / "o")])
    assert ex.value.code == 2
    assert "5-1" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "mdrp"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main([command, "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--workers" in out and "--policy" in out
    assert ("--seeds" in out and "--baseline" in out) if command == "evaluate" else "--instances" in out


# -------------------------------------------------------------------------------------------- mdrp
@pytest.fixture(scope="module")
def small_instance() -> Path:
    folder = MDRP_DIR / SMALL_INSTANCE
    if not folder.is_dir():
        pytest.skip(f"MDRP instance {SMALL_INSTANCE} not found at {folder}")
    return folder


def test_mdrp_files(small_instance: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.mdrp import INSTANCE_COLUMNS, PUBLISHED

    out = tmp_path / "mdrp"
    assert (
        main(
            [
                "mdrp",
                "--instances",
                str(small_instance),
                "--policy",
                "nearest",
                "--out",
                str(out),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "published" in capsys.readouterr().out
    inst = read_csv(out / "instances.csv")
    assert list(inst[0]) == list(INSTANCE_COLUMNS)
    assert len(inst) == 1 and inst[0]["instance"] == SMALL_INSTANCE and inst[0]["variant"] == "o50t75s1p100"
    r = inst[0]
    assert int(r["orders"]) == 252
    assert 0.0 <= float(r["undelivered_rate"]) <= 1.0
    assert float(r["click_to_door_p90_min"]) >= float(r["click_to_door_mean_min"]) > 0
    assert 0.0 < float(r["utilization"]) < float(r["utilization_incl_wait"])
    assert (
        float(r["cost_per_order"]) >= 10.0 * int(r["orders_delivered"]) / int(r["orders"]) - 1e-9
    )  # pay >= 10 per delivery
    summary = read_csv(out / "summary.csv")
    assert [(s["policy"], s["variant"]) for s in summary] == [("nearest", "o50t75s1p100"), ("nearest", "all")]
    for col in (*PUBLISHED, "policy", "variant", "instances"):
        assert col in summary[0]
    assert summary[1]["click_to_door_mean_min"] == r["click_to_door_mean_min"]
    report = (out / "report.md").read_text()
    assert "32.74" in report and "published" in report and "o50t75s1p100" in report


def test_mdrp_utilisation_is_driving_plus_service(small_instance: Path) -> None:
    """The wait meter against an independent count: legs between recorded stops + 4 min per visit."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs.scenarios.mdrp import load_mdrp
    from gigdispatch.training.mdrp import WaitMeter, mdrp_metrics
    from gigdispatch.training.runner import run_episode

    sim = Simulator(load_mdrp(small_instance), record_events=True)
    meter = WaitMeter()
    run_episode(sim, make_policy("nearest"), 0, after_step=meter)
    wait = meter.finish()
    t, d, kind, node = (np.concatenate([e[i] for e in sim.events]) for i in (0, 1, 3, 4))
    drive = visits = 0.0
    for di in np.unique(d):
        s = d == di
        o = np.lexsort((kind[s], t[s]))
        key = np.stack([t[s][o], kind[s][o], node[s][o]], 1)
        first = np.concatenate([[True], (np.diff(key, axis=0) != 0).any(axis=1)])  # one visit per (time, kind, node)
        path = np.concatenate([[sim.drivers.home[di]], node[s][o][first]])
        drive += float(sim.city.travel_s(path[:-1], path[1:]).sum())
        visits += int(first.sum())
    assert sim.counters["released_after_shift"] == 0
    assert wait > 0
    assert float(sim.drivers.busy_s.sum()) - wait == pytest.approx(drive + visits * 240.0)
    m = mdrp_metrics(sim, wait)
    duty = float((sim.drivers.shift_end - sim.drivers.shift_start).sum())
    assert m["utilization"] == pytest.approx((drive + visits * 240.0) / duty)


def test_mdrp_bad_instances(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.mdrp import find_instances, variant_of

    assert main(["mdrp", "--instances", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --instances") and "does not exist" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no MDRP instance folder"):
        find_instances(tmp_path / "empty")
    assert variant_of("3r50t75s2p125") == "r50t75s2p125" and variant_of("custom") == "custom"
    if MDRP_DIR.is_dir():
        assert len(find_instances(MDRP_DIR, "0o50t75*")) == 4
        with pytest.raises(InputError, match="matching 'zz"):
            find_instances(MDRP_DIR, "zz*")


def test_oracle_bounds_are_attached_and_hold(tmp_path: Path) -> None:
    """With the oracle among the policies, every run gets the certified bounds of its seed and stays within them."""
    import csv

    out = tmp_path / "ev"
    evaluate(["default"], ["nearest", "oracle"], [1000], out, workers=1, progress=False, plots=False)
    rows = list(csv.DictReader((out / "episodes.csv").open()))
    assert {r["policy"] for r in rows} == {"nearest", "oracle"}
    for r in rows:
        assert float(r["reward"]) <= float(r["bound_profit_upper"])
        assert float(r["click_to_door_mean_min"]) >= float(r["bound_ctd_lower"])
    report = (out / "report.md").read_text()
    assert "## Hindsight bounds (not policies)" in report and "1/1" in report


# ------------------------------------------------------------------------------ report: oracle and plots
def _fake_results() -> list:
    """Three policies on two seeds: ``nearest``, ``better`` (on time 0.996 against 0.982) and ``oracle`` (with
    certified bounds, as the hindsight oracle reports them)."""
    from gigdispatch.envs.core.kpis import KPI_DOC
    from gigdispatch.training.runner import EpisodeResult

    out = []
    for p, margin, on_time in (("nearest", 1000.0, 0.982), ("better", 1100.0, 0.996), ("oracle", 900.0, 0.99)):
        for seed in (0, 1):
            kpis = {k: 1.0 for k in KPI_DOC}
            kpis.update(
                platform_margin=margin + 10.0 * seed,
                on_time_rate=on_time + 0.001 * seed,
                click_to_door_mean_min=20.0 + seed,
                undelivered_rate=0.01,
                acceptance_rate=0.9,
                wall_seconds=1.0,
                bound_profit_upper=4000.0,
                bound_ctd_lower=15.0,
            )
            hourly = {k: np.zeros(3) for k in ("created", "cancelled", "delivered", "delivered_by_place", "on_time")}
            hourly.update(ctd_sum_min=np.zeros(3), first_hour=np.array([0]))
            bounds = {"profit_upper": 4000.0} if p == "oracle" else None
            out.append(EpisodeResult(p, "tiny", seed, kpis, np.array([1.0, 2.0], np.float32), hourly, bounds=bounds))
    return out


def test_oracle_is_a_hindsight_bound_apart_from_the_policies(tmp_path: Path) -> None:
    """summary.csv marks the oracle as a hindsight plan; report.md keeps it out of the policies' tables and shows
    it, labelled ``oracle (hindsight plan)``, under *Hindsight bounds*; the bar charts draw it hatched and apart."""
    from gigdispatch.training.report import (
        KIND_HINDSIGHT,
        bound_rows,
        compare,
        kpi_figure,
        summarise,
        write_csv,
        write_report,
    )

    results = _fake_results()
    pols = ["nearest", "better", "oracle"]
    summary = summarise(results, pols, ["tiny"])
    assert [(r["policy"], r["kind"]) for r in summary] == [
        ("nearest", "policy"),
        ("better", "policy"),
        ("oracle", KIND_HINDSIGHT),
    ]
    write_csv(tmp_path / "summary.csv", SUMMARY_COLUMNS, summary)
    assert [r["kind"] for r in read_csv(tmp_path / "summary.csv")] == ["policy", "policy", "hindsight plan"]
    comps = compare(results, pols, ["tiny"], "nearest")
    bounds = bound_rows(results, pols, ["tiny"])
    write_report(tmp_path / "report.md", summary, comps, ["tiny"], "nearest", "cmd", [0, 1], 1.0, 1, [], bounds)
    text = (tmp_path / "report.md").read_text()
    head, hind = text.split("## Hindsight bounds (not policies)")
    policies_part = head.split("## Summary")[1]
    assert "| nearest |" in policies_part and "| better |" in policies_part
    assert "oracle" not in policies_part  # neither in the policies' summary nor in their comparisons
    assert "| oracle (hindsight plan) | 2 |" in hind  # its plan, labelled as such
    assert "not a policy to deploy" in hind and "certified bound" in hind
    assert "| better | 2/2 |" in hind and "| 3.62x |" in hind  # bound / reward: 4000 / 1105, per policy run
    assert "oracle (hindsight plan) vs nearest" in hind
    # the bar chart: the oracle last, after a gap, hatched, labelled as a hindsight plan
    fig = kpi_figure("tiny", summary, comps, "nearest")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["nearest", "better", "oracle (hindsight plan)"]
    ticks = ax.get_xticks()
    assert ticks[2] - ticks[1] > ticks[1] - ticks[0]  # set apart
    hatches = [p.get_hatch() for p in ax.patches]
    assert hatches[-1] == "//" and not any(hatches[:-1])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_kpi_png_has_paired_difference_panels(tmp_path: Path) -> None:
    """Beside each compared KPI, a panel of the paired difference from the baseline with its 95 % interval."""
    import matplotlib.pyplot as plt

    from gigdispatch.training.report import COMPARISON_METRICS, compare, kpi_figure, plot_kpis, summarise

    results = [r for r in _fake_results() if r.policy != "oracle"]
    summary = summarise(results, ["nearest", "better"], ["tiny"])
    comps = compare(results, ["nearest", "better"], ["tiny"], "nearest")
    plain = kpi_figure("tiny", summary)
    n_plain = sum(a.axison for a in plain.axes)
    plt.close(plain)
    fig = kpi_figure("tiny", summary, comps, "nearest")
    shown = [a for a in fig.axes if a.axison]
    assert len(shown) == n_plain + len(COMPARISON_METRICS)
    titles = [a.get_title() for a in shown]
    diff = [i for i, t in enumerate(titles) if t.endswith(": difference from nearest (paired 95 % CI)")]
    assert len(diff) == len(COMPARISON_METRICS)
    for i in diff:  # right beside the absolute panel of the same KPI, in the same row
        assert titles[i].startswith(titles[i - 1] + ":")
    on_time = shown[titles.index("on-time rate: difference from nearest (paired 95 % CI)")]
    heights = [p.get_height() for p in on_time.patches]
    assert heights[0] == 0.0 and heights[1] == pytest.approx(0.014)  # better - nearest, not 0.996 from 0
    plt.close(fig)
    plot_kpis(tmp_path / "k.png", "tiny", summary, comps, "nearest")
    assert (tmp_path / "k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_learning_curve_has_integer_iteration_ticks(tmp_path: Path) -> None:
    import json

    import matplotlib.pyplot as plt

    from gigdispatch.training.curves import figure

    run = tmp_path / "run"
    run.mkdir()
    history = [
        {"iteration": i, "population_mean": 10.0 * i, "elite_mean": 12.0 * i, "eval_profit_mean": 11.0 * i}
        for i in (1, 2, 3)
    ]
    (run / "cem_state.json").write_text(json.dumps({"history": history}))
    fig = figure([run])
    fig.canvas.draw()
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    plt.close(fig)


def test_terminal_table_spells_out_click_to_door(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["evaluate", "--scenario", str(tiny), "--seeds", "0", "--out", str(tmp_path / "o"), "--workers", "1"]
    assert main([*args, "--no-progress", "--no-plots"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("policy"))
    assert "click-to-door" in header and "CTD" not in header
