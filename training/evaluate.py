"""``gigdispatch evaluate``: every policy on every scenario on the same seeds, with CIs and paired tests.

One episode is one (policy, scenario, seed). Episodes run in worker processes
(``concurrent.futures.ProcessPoolExecutor``); each worker loads a scenario once and reuses its
``Simulator`` (and each policy object, reset at the start of every episode as the ``Policy``
contract requires) for all the episodes it is given. The outcome of an episode depends on its
seed only, never on the worker that ran it or on the number of workers.

Files written to ``--out`` (atomically; other files in the folder are left alone):

* ``summary.csv``: one row per policy × scenario: means over episodes, 95 % t-interval half-widths,
  decision latency percentiles;
* ``episodes.csv``: one row per (policy, scenario, seed): every KPI, the reward, wall time, latency;
* ``hourly.csv``: KPIs over the time of day per policy × scenario;
* ``comparisons.csv`` and ``report.md``: paired comparisons on the same seeds (see ``training/stats.py``);
* ``kpis_<scenario>.png`` (bars with 95 % CIs) and ``hourly_<scenario>.png`` (time-of-day curves).

The reward is the day's ``platform_margin`` (EUR). Decision latency is the wall time of each
``policy.act`` call; its percentiles run over all calls of all episodes of a policy × scenario.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shlex
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.argtypes import whole_number
from training.stats import mean_ci, paired_diff

DEFAULT_SEEDS = "0-19"  # the evaluation seeds; never tune on them
MAX_SEEDS = 100_000

# KPIs averaged over episodes in summary.csv (each also gets a ``<name>_ci95`` column)
SUMMARY_KPIS = (
    "on_time_rate",
    "click_to_door_mean_min",
    "click_to_door_p90_min",
    "undelivered_rate",
    "cost_per_order",
    "utilization",
    "acceptance_rate",
    "orders_per_bundle",
)
# further KPI means in summary.csv (no interval)
EXTRA_KPIS = (
    "orders_created",
    "orders_delivered",
    "orders_cancelled",
    "fees_total",
    "payouts_total",
    "refunds_total",
    "driver_earnings_per_hour",
    "ready_to_pickup_mean_min",
    "overage_mean_min",
)
SUMMARY_COLUMNS = (
    "policy",
    "scenario",
    "episodes",
    "reward_mean",
    "reward_ci95",
    *SUMMARY_KPIS,
    "decision_ms_p50",
    "decision_ms_p99",
    *(f"{k}_ci95" for k in SUMMARY_KPIS),
    *EXTRA_KPIS,
    "decision_ms_mean",
    "wall_seconds_mean",
)
HOURLY_COLUMNS = (
    "policy",
    "scenario",
    "hour",
    "orders_created_per_day",
    "orders_delivered_per_day",
    "orders_cancelled_per_day",
    "on_time_rate",
    "click_to_door_mean_min",
)
COMPARISON_METRICS = ("reward", "on_time_rate", "click_to_door_mean_min")
COMPARISON_COLUMNS = ("scenario", "policy", "versus", "metric", "n", "mean_diff", "ci95_lo", "ci95_hi", "excludes_zero", "p_value")
# comparisons the baselines issue asks for, when both policies are present: (a, b) means a - b
ISSUE_PAIRS = (("hungarian", "nearest"), ("value-hungarian", "hungarian"))
ORACLE = "oracle"

_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


class InputError(ValueError):
    """Bad arguments (seeds, policies, workers, paths); the message names the option and the reason."""


# ------------------------------------------------------------------------------------------ parsing
def parse_seeds(text: str) -> list[int]:
    """``"0-19"``, ``"0,3,7"``, ``"0-4,10-14"`` -> sorted-as-given list of distinct non-negative seeds.

    Raises ``InputError`` (a ``ValueError``) naming the bad part (empty part, not a number, negative, a range whose end
    is below its start, a seed given twice, more than ``MAX_SEEDS`` seeds).
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("--seeds: empty; give e.g. 0-19, 0,3,7 or 0-4,10-14")
    out: list[int] = []
    seen: set[int] = set()
    for part in text.split(","):
        p = part.strip()
        if not p:
            raise InputError(f"--seeds {text!r}: empty item between commas")
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", p)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise InputError(f"--seeds {text!r}: range {p!r} ends before it starts")
            if hi - lo + 1 + len(out) > MAX_SEEDS:
                raise InputError(f"--seeds {text!r}: more than {MAX_SEEDS:,} seeds")
            items = range(lo, hi + 1)
        elif re.fullmatch(r"\d+", p):
            items = range(int(p), int(p) + 1)
        elif re.fullmatch(r"-\s*\d+", p):
            raise InputError(f"--seeds {text!r}: seeds must be >= 0, got {p!r}")
        else:
            raise InputError(f"--seeds {text!r}: {p!r} is not a seed (N) or a range (A-B) of whole numbers")
        for s in items:
            if s in seen:
                raise InputError(f"--seeds {text!r}: seed {s} is given more than once")
            seen.add(s)
            out.append(s)
    return out


def parse_policy(text: str) -> tuple[str, str]:
    """``SPEC`` or ``LABEL=SPEC`` -> (label, spec).

    SPEC is a registry name or a checkpoint folder; ``LABEL=`` names the policy in the results (to run
    one policy twice with different labels, or to give a checkpoint folder a short name).
    """
    text = str(text).strip()
    if not text:
        raise InputError("--policy: empty name")
    if "=" in text and not Path(text).exists():
        label, spec = (s.strip() for s in text.split("=", 1))
        if not _LABEL.match(label) or not spec:
            raise InputError(f"--policy {text!r}: expected NAME or LABEL=NAME (label of letters, digits, '_', '-', '.', '+')")
        return label, spec
    label = text.rstrip("/") if Path(text).is_dir() else text
    return label, text


def resolve_policies(policies: Iterable[str | tuple[str, str]]) -> list[tuple[str, str]]:
    """Parse and check the policies (each is made once here so that a bad name fails before any work)."""
    from agents import make_policy

    out: list[tuple[str, str]] = []
    for p in policies:
        label, spec = p if isinstance(p, tuple) else parse_policy(p)
        if any(label == lab for lab, _ in out):
            raise InputError(f"--policy: {label!r} is given twice (use LABEL=NAME to run one policy under two labels)")
        make_policy(spec)  # raises UnknownPolicyError with a clear message (unknown, not implemented, folder)
        out.append((label, spec))
    if not out:
        raise InputError("--policy: give at least one policy")
    return out


def resolve_scenarios(scenarios: Iterable[str]) -> list[tuple[str, str]]:
    """(label, spec) per scenario: the scenario's own name, or the spec where two names collide."""
    from envs import load_scenario

    specs = [str(s) for s in scenarios]
    if not specs:
        raise InputError("--scenario: give at least one scenario")
    dup = {s for s in specs if specs.count(s) > 1}
    if dup:
        raise InputError(f"--scenario: {sorted(dup)[0]!r} is given more than once")
    names = [load_scenario(s).name for s in specs]  # raises ScenarioError naming the problem
    return [(n if names.count(n) == 1 else s, s) for n, s in zip(names, specs, strict=True)]


def slug(label: str) -> str:
    """A file-name-safe version of a label (for plot file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.") or "x"


# ------------------------------------------------------------------------------------ the episodes
_SIMS: dict[str, Any] = {}  # per worker process: scenario spec -> Simulator
_POLICIES: dict[str, Any] = {}  # per worker process: policy spec -> Policy


def cached_simulator(spec: str) -> Any:
    """This process's Simulator for a scenario spec (the scenario is loaded once per process)."""
    sim = _SIMS.get(spec)
    if sim is None:
        from envs import Simulator, load_scenario

        sim = _SIMS[spec] = Simulator(load_scenario(spec))
    return sim


def cached_policy(spec: str) -> Any:
    """This process's policy object for a spec (``reset`` at every episode)."""
    pol = _POLICIES.get(spec)
    if pol is None:
        from agents import make_policy

        pol = _POLICIES[spec] = make_policy(spec)
    return pol


def clear_caches() -> None:
    _SIMS.clear()
    _POLICIES.clear()


def run_episode(sim: Any, policy: Any, seed: int, after_step: Callable[[Any], None] | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Run one day like ``Simulator.run`` and time each ``policy.act`` call.

    Returns the KPIs (with ``wall_seconds``) and the decision latencies in milliseconds.
    ``after_step(sim)`` is called after every step (to measure something the arrays do not keep).
    """
    from envs import compute_kpis

    t0 = time.perf_counter()
    sim.reset(seed)
    policy.reset(sim, sim.rng["policy"])
    lat: list[float] = []
    clock = time.perf_counter
    while not sim.done:
        a = clock()
        dec = policy.act(sim)
        lat.append(clock() - a)
        sim.step(dec)
        if after_step is not None:
            after_step(sim)
    kpis = compute_kpis(sim)
    kpis["wall_seconds"] = time.perf_counter() - t0
    return kpis, np.asarray(lat, dtype=np.float64) * 1000.0


def hourly_counts(sim: Any) -> dict[str, np.ndarray]:
    """Per hour of the day (index = hour since midnight), counts of this episode.

    ``created``, ``cancelled``, ``delivered_by_place``, ``on_time``, ``ctd_sum_min`` are by hour of
    placement; ``delivered`` by hour of delivery. All arrays have one entry per hour up to the end of
    the day (``sim.day_end``), so they add up across episodes of one scenario.
    """
    from envs.core.types import ORDER_CANCELLED, ORDER_DELIVERED, ORDER_FUTURE, ORDER_LOST

    od = sim.orders
    n_h = math.ceil(max(sim.day_end, sim.t) / 3600.0) + 1
    st = od.status
    created = (st != ORDER_FUTURE) & (st != ORDER_LOST)
    dlv = st == ORDER_DELIVERED
    h_place = np.clip((od.t_place // 3600.0).astype(np.int64), 0, n_h - 1)
    h_del = np.clip((np.nan_to_num(od.t_delivered[dlv]) // 3600.0).astype(np.int64), 0, n_h - 1)
    ctd = (od.t_delivered[dlv] - od.t_place[dlv]) / 60.0
    on_time = od.t_delivered[dlv] <= od.deadline[dlv] + 1e-9

    def count(h: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(h, weights=w, minlength=n_h)[:n_h].astype(np.float64)

    return {
        "created": count(h_place[created]),
        "cancelled": count(h_place[st == ORDER_CANCELLED]),
        "delivered": count(h_del),
        "delivered_by_place": count(h_place[dlv]),
        "on_time": count(h_place[dlv][on_time]),
        "ctd_sum_min": count(h_place[dlv], ctd),
        "first_hour": np.array([sim.t_start // 3600.0]),
    }


@dataclass
class EpisodeResult:
    policy: str
    scenario: str
    seed: int
    kpis: dict[str, float]
    latency_ms: np.ndarray
    hourly: dict[str, np.ndarray] = field(default_factory=dict)
    bounds: dict[str, Any] | None = None  # the oracle's certified bounds for this scenario and seed

    @property
    def reward(self) -> float:
        return float(self.kpis["platform_margin"])


def _episode_task(task: tuple[str, str, str, str, int]) -> EpisodeResult:
    """Worker entry point: one (policy, scenario, seed)."""
    p_label, p_spec, s_label, s_spec, seed = task
    sim = cached_simulator(s_spec)
    policy = cached_policy(p_spec)
    kpis, lat = run_episode(sim, policy, seed)
    bounds = getattr(policy, "bounds", None)
    return EpisodeResult(p_label, s_label, seed, kpis, lat.astype(np.float32), hourly_counts(sim), bounds=bounds)


def attach_bounds(results: list[EpisodeResult]) -> dict[tuple[str, int], dict[str, Any]]:
    """Where the oracle ran, add to every run on the same scenario and seed the certified bounds that
    hold for that run (``bound_profit_upper`` >= its reward, ``bound_ctd_lower`` <= its click-to-door)."""
    from agents.oracle import bounds_for_run

    by_seed = {(r.scenario, r.seed): r.bounds for r in results if r.bounds}
    for r in results:
        b = by_seed.get((r.scenario, r.seed))
        if b is not None:
            run = bounds_for_run(b, r.kpis)
            r.kpis["bound_profit_upper"] = run["profit_upper"]
            r.kpis["bound_ctd_lower"] = run["click_to_door_lower"]
    return by_seed


def bound_rows(results: list[EpisodeResult], policies: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    """Per policy and scenario: on how many seeds the run stayed within the oracle's certified bounds."""
    rows = []
    for s in scenarios:
        for p in policies:
            eps = [r for r in results if r.policy == p and r.scenario == s and "bound_profit_upper" in r.kpis]
            if not eps:
                continue
            slack = np.array([r.kpis["bound_profit_upper"] - r.reward for r in eps])
            ctd = np.array([r.kpis["click_to_door_mean_min"] - r.kpis["bound_ctd_lower"] for r in eps])
            ctd = ctd[np.isfinite(ctd)]
            rows.append(
                {
                    "policy": p,
                    "scenario": s,
                    "seeds": len(eps),
                    "within_profit_bound": int((slack >= -1e-6).sum()),
                    "min_profit_slack": float(slack.min()),
                    "mean_bound": float(np.mean([r.kpis["bound_profit_upper"] for r in eps])),
                    "within_ctd_bound": int((ctd >= -1e-6).sum()),
                }
            )
    return rows


# ---------------------------------------------------------------------------------- running tasks
def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"--workers: must be a whole number >= 1, got {workers!r}")
    return workers


def progress_bar(enabled: bool | None, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (``enabled=None``: only when stderr is a terminal)."""
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, progress: bool | None, desc: str, unit: str) -> list[Any]:
    """``[fn(t) for t in tasks]`` over ``workers`` processes (in this process when 1), results in task order."""
    results: list[Any] = [None] * len(tasks)
    bar = progress_bar(progress, len(tasks), desc, unit)
    try:
        if workers <= 1 or len(tasks) <= 1:
            try:
                for i, t in enumerate(tasks):
                    results[i] = fn(t)
                    bar.update(1)
            finally:
                clear_caches()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            pending: dict[Future[Any], int] = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        results[pending.pop(f)] = f.result()  # re-raises a worker's error here
                        bar.update(1)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return results
    finally:
        bar.close()


# ------------------------------------------------------------------------------------- aggregation
def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else float("nan")


def summarise(results: list[EpisodeResult], policies: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    """One row per policy × scenario (policies within scenarios, in the order given)."""
    rows = []
    for s in scenarios:
        for p in policies:
            eps = sorted((r for r in results if r.policy == p and r.scenario == s), key=lambda r: r.seed)
            if not eps:
                continue
            row: dict[str, Any] = {"policy": p, "scenario": s, "episodes": len(eps)}
            row["reward_mean"], row["reward_ci95"] = mean_ci([r.reward for r in eps])
            lat = np.concatenate([r.latency_ms for r in eps]).astype(np.float64)
            for k in SUMMARY_KPIS:
                row[k], row[f"{k}_ci95"] = mean_ci([r.kpis[k] for r in eps])
            row["decision_ms_p50"], row["decision_ms_p99"] = _pct(lat, 50), _pct(lat, 99)
            for k in EXTRA_KPIS:
                row[k] = _nanmean(np.array([r.kpis[k] for r in eps]))
            row["decision_ms_mean"] = float(lat.mean()) if lat.size else float("nan")
            row["wall_seconds_mean"] = _nanmean(np.array([r.kpis["wall_seconds"] for r in eps]))
            rows.append({c: row.get(c) for c in SUMMARY_COLUMNS})
    return rows


def episode_rows(results: list[EpisodeResult]) -> tuple[list[str], list[dict[str, Any]]]:
    from envs.core.kpis import KPI_DOC

    cols = ["policy", "scenario", "seed", "reward", *KPI_DOC, "decision_calls", "decision_ms_mean", "decision_ms_p50", "decision_ms_p99"]
    if any("bound_profit_upper" in r.kpis for r in results):
        cols += ["bound_profit_upper", "bound_ctd_lower"]
    rows = []
    for r in results:
        lat = r.latency_ms.astype(np.float64)
        row = {"policy": r.policy, "scenario": r.scenario, "seed": r.seed, "reward": r.reward, **r.kpis}
        row.update(
            decision_calls=int(lat.size),
            decision_ms_mean=float(lat.mean()) if lat.size else float("nan"),
            decision_ms_p50=_pct(lat, 50),
            decision_ms_p99=_pct(lat, 99),
        )
        rows.append({c: row.get(c) for c in cols})
    return cols, rows


def hourly_rows(results: list[EpisodeResult], policies: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    """Time-of-day series: counts per day (mean over episodes); rates pooled over all episodes' orders."""
    rows = []
    for s in scenarios:
        for p in policies:
            eps = [r for r in results if r.policy == p and r.scenario == s]
            if not eps:
                continue
            n_h = min(len(r.hourly["created"]) for r in eps)
            tot = {
                k: sum(r.hourly[k][:n_h] for r in eps)
                for k in ("created", "cancelled", "delivered", "delivered_by_place", "on_time", "ctd_sum_min")
            }
            first = int(min(r.hourly["first_hour"][0] for r in eps))
            active = (tot["created"] + tot["delivered"]) > 0
            last = int(np.flatnonzero(active).max()) if active.any() else first
            with np.errstate(invalid="ignore", divide="ignore"):
                on_time = tot["on_time"] / tot["delivered_by_place"]
                ctd = tot["ctd_sum_min"] / tot["delivered_by_place"]
            for h in range(first, last + 1):
                rows.append(
                    {
                        "policy": p,
                        "scenario": s,
                        "hour": h,
                        "orders_created_per_day": tot["created"][h] / len(eps),
                        "orders_delivered_per_day": tot["delivered"][h] / len(eps),
                        "orders_cancelled_per_day": tot["cancelled"][h] / len(eps),
                        "on_time_rate": float(on_time[h]),
                        "click_to_door_mean_min": float(ctd[h]),
                    }
                )
    return rows


def comparison_pairs(policies: list[str], baseline: str) -> list[tuple[str, str]]:
    """(a, b) pairs compared as a - b: each policy vs the baseline, the issue's pairs, the oracle vs each."""
    pairs: list[tuple[str, str]] = [(p, baseline) for p in policies if p != baseline]
    pairs += [(a, b) for a, b in ISSUE_PAIRS if a in policies and b in policies]
    if ORACLE in policies:
        pairs += [(ORACLE, p) for p in policies if p != ORACLE]
    out: list[tuple[str, str]] = []
    seen: set[frozenset[str]] = set()
    for a, b in pairs:
        key = frozenset((a, b))
        if key not in seen:
            seen.add(key)
            out.append((a, b))
    return out


def compare(results: list[EpisodeResult], policies: list[str], scenarios: list[str], baseline: str) -> list[dict[str, Any]]:
    """Paired comparisons on the seeds both policies ran (paired t over per-seed differences)."""
    rows = []
    pairs = comparison_pairs(policies, baseline)
    for s in scenarios:
        by = {p: {r.seed: r for r in results if r.policy == p and r.scenario == s} for p in policies}
        for a, b in pairs:
            seeds = sorted(set(by[a]) & set(by[b]))
            for metric in COMPARISON_METRICS:

                def val(r: EpisodeResult, metric: str = metric) -> float:
                    return r.reward if metric == "reward" else float(r.kpis[metric])

                res = paired_diff([val(by[a][k]) for k in seeds], [val(by[b][k]) for k in seeds])
                rows.append(
                    {
                        "scenario": s,
                        "policy": a,
                        "versus": b,
                        "metric": metric,
                        "n": res.n,
                        "mean_diff": res.mean,
                        "ci95_lo": res.lo,
                        "ci95_hi": res.hi,
                        "excludes_zero": res.excludes_zero,
                        "p_value": res.p_value,
                    }
                )
    return rows


# ---------------------------------------------------------------------------------------- writing
def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return str(bool(v)).lower()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return v


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """A CSV with a header row, written atomically (floats in full precision, NaN as ``nan``)."""
    from training.io import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a Markdown table (``n/a`` for NaN or missing)."""
    if v is None:
        return "n/a"
    if isinstance(v, int | np.integer) and not isinstance(v, bool):
        return f"{int(v):,}"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "n/a"
    if abs(f) >= 1000:
        return f"{f:,.0f}"
    if abs(f) >= 100:
        return f"{f:,.1f}"
    return f"{f:.{digits}f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def git_revision() -> str:
    """The repository's commit (short), with ``-dirty`` when tracked files have changes; ``unknown`` without git."""
    repo = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def evaluate_command(
    scenarios: Sequence[str], policies: Sequence[tuple[str, str]], seeds: Sequence[int], out_dir: Path, workers: int, baseline: str
) -> str:
    """The ``gigdispatch evaluate`` command line that reproduces a run."""
    args = ["gigdispatch", "evaluate"]
    for s in scenarios:
        args += ["--scenario", s]
    for label, spec in policies:
        args += ["--policy", spec if label in (spec, spec.rstrip("/")) else f"{label}={spec}"]
    args += ["--seeds", format_seeds(seeds), "--out", str(out_dir), "--workers", str(workers), "--baseline", baseline]
    return shlex.join(args)


def format_seeds(seeds: Sequence[int]) -> str:
    """The shortest ``A-B,C`` text for a list of seeds (inverse of ``parse_seeds`` for increasing runs)."""
    parts: list[str] = []
    i = 0
    s = list(seeds)
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        parts.append(str(s[i]) if j == i else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(parts)


REPORT_COLUMNS = (
    ("reward_mean", "reward (EUR)"),
    ("on_time_rate", "on time"),
    ("click_to_door_mean_min", "CTD mean (min)"),
    ("click_to_door_p90_min", "CTD p90 (min)"),
    ("undelivered_rate", "undelivered"),
    ("cost_per_order", "cost/order (EUR)"),
    ("utilization", "utilisation"),
    ("acceptance_rate", "acceptance"),
    ("orders_per_bundle", "orders/bundle"),
    ("decision_ms_p50", "decision p50 (ms)"),
    ("decision_ms_p99", "decision p99 (ms)"),
)


def write_report(
    path: Path,
    summary: list[dict[str, Any]],
    comparisons: list[dict[str, Any]],
    scenarios: list[str],
    baseline: str,
    command: str,
    seeds: Sequence[int],
    wall_s: float,
    workers: int,
    plots: list[str],
    bounds_table: list[dict[str, Any]] | None = None,
) -> None:
    from training.io import atomic_write_text

    out = [
        "# gigdispatch evaluate",
        "",
        f"- command: `{command}`",
        f"- git revision: `{git_revision()}`",
        f"- seeds: {format_seeds(seeds)} ({len(seeds)} per policy and scenario); the same seeds for every policy",
        f"- wall time: {wall_s:.1f} s with {workers} worker process(es)",
        "- reward = the day's platform margin (fees - payouts - refunds, EUR); ± = half-width of the 95 % t-interval over seeds",
        "",
        "## Summary",
    ]
    for s in scenarios:
        rows = [r for r in summary if r["scenario"] == s]
        out += ["", f"### {s}", ""]
        table = []
        for r in rows:
            cells = [r["policy"], str(r["episodes"])]
            for key, _ in REPORT_COLUMNS:
                v = fmt(r[key])
                ci = r.get("reward_ci95" if key == "reward_mean" else f"{key}_ci95")
                if ci is not None and math.isfinite(float(ci)) and key != "decision_ms_p50":
                    v += f" ± {fmt(ci)}"
                cells.append(v)
            table.append(cells)
        out.append(md_table(["policy", "episodes", *(h for _, h in REPORT_COLUMNS)], table))
    out += [
        "",
        "## Paired comparisons (reward)",
        "",
        f"Each policy against the baseline `{baseline}`, and the pairs the baselines issue asks for when present "
        "(hungarian vs nearest, value-hungarian vs hungarian, oracle vs each). The difference is A - B over the same "
        "seeds; the 95 % interval is the paired t-interval of the per-seed differences. Where the interval excludes "
        "zero, A's reward is significantly higher (or lower) than B's at the 5 % level. `comparisons.csv` also has the "
        "on-time rate and click-to-door differences.",
    ]
    for s in scenarios:
        rows = [c for c in comparisons if c["scenario"] == s and c["metric"] == "reward"]
        if not rows:
            continue
        out += ["", f"### {s}", ""]
        table = []
        for c in rows:
            if c["excludes_zero"]:
                verdict = f"**{c['policy']} {'higher' if c['mean_diff'] > 0 else 'lower'}** (CI excludes 0)"
            elif c["n"] < 2:
                verdict = "too few seeds for an interval"
            else:
                verdict = "no significant difference (CI includes 0)"
            table.append(
                [
                    f"{c['policy']} vs {c['versus']}",
                    str(c["n"]),
                    fmt(c["mean_diff"], 2),
                    f"[{fmt(c['ci95_lo'], 2)}, {fmt(c['ci95_hi'], 2)}]",
                    "yes" if c["excludes_zero"] else "no",
                    verdict,
                ]
            )
        out.append(md_table(["A vs B", "seeds", "mean A - B (EUR)", "95 % CI", "excludes 0", "verdict"], table))
    if bounds_table:
        out += [
            "",
            "## Hindsight oracle: certified bounds",
            "",
            "With every order of the day known in advance, the oracle computes a certified upper bound on the "
            "day's platform margin and a lower bound on click-to-door (an LP relaxation, see docs/oracle.md). "
            "Each run is checked against the bound that holds for it (looked up by its orders left in flight and "
            "orders delivered). `within` counts the seeds where the run stayed within the bound: it must be all "
            "of them. The bound is certified, not tight.",
        ]
        for s in scenarios:
            rows = [b for b in bounds_table if b["scenario"] == s]
            if not rows:
                continue
            out += ["", f"### {s}", ""]
            table = [
                [
                    b["policy"],
                    f"{b['within_profit_bound']}/{b['seeds']}",
                    fmt(b["min_profit_slack"], 2),
                    fmt(b["mean_bound"], 2),
                    f"{b['within_ctd_bound']}/{b['seeds']}",
                ]
                for b in rows
            ]
            out.append(
                md_table(
                    ["policy", "reward <= profit bound", "min slack (EUR)", "mean profit bound (EUR)", "click-to-door >= bound"], table
                )
            )
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{p}]({p})" for p in plots]
    out += [
        "",
        "## Files",
        "",
        "`summary.csv` (one row per policy × scenario), `episodes.csv` (one row per policy × scenario × seed), "
        "`hourly.csv` (time-of-day series), `comparisons.csv` (paired comparisons). See docs/evaluation.md.",
        "",
    ]
    atomic_write_text(path, "\n".join(out))


# ------------------------------------------------------------------------------------------- plots
PLOT_KPIS = (
    ("reward_mean", "reward_ci95", "reward (EUR / day)"),
    ("on_time_rate", "on_time_rate_ci95", "on-time rate"),
    ("click_to_door_mean_min", "click_to_door_mean_min_ci95", "click-to-door mean (min)"),
    ("click_to_door_p90_min", "click_to_door_p90_min_ci95", "click-to-door p90 (min)"),
    ("undelivered_rate", "undelivered_rate_ci95", "undelivered rate"),
    ("cost_per_order", "cost_per_order_ci95", "cost per order (EUR)"),
    ("utilization", "utilization_ci95", "utilisation"),
    ("acceptance_rate", "acceptance_rate_ci95", "acceptance rate"),
    ("orders_per_bundle", "orders_per_bundle_ci95", "orders per bundle"),
    ("decision_ms_p50", None, "decision latency p50 / p99 (ms)"),
)


def _png(fig: Any, path: Path, dpi: int = 100) -> None:
    from training.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def plot_kpis(path: Path, scenario: str, rows: list[dict[str, Any]]) -> None:
    """Bars per policy with 95 % CI error bars, one panel per KPI (latency: p50 bar, p99 marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pols = [r["policy"] for r in rows]
    x = np.arange(len(pols))
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(pols))]
    # 4 x 3 panels, wide enough for the policy names (at most ~2,400 px wide)
    fig, axes = plt.subplots(4, 3, figsize=(min(24, max(12, 0.55 * len(pols) * 3)), 13))
    for ax in axes.ravel()[len(PLOT_KPIS) :]:
        ax.axis("off")
    for ax, (key, ci, title) in zip(axes.ravel(), PLOT_KPIS, strict=False):
        vals = np.array([np.nan if r[key] is None else float(r[key]) for r in rows])
        err = np.array([np.nan if (ci is None or r[ci] is None) else float(r[ci]) for r in rows])
        ax.bar(x, np.nan_to_num(vals), yerr=None if ci is None else np.nan_to_num(err), color=colors, capsize=4)
        if key == "decision_ms_p50":
            ax.plot(x, [float(r["decision_ms_p99"]) for r in rows], "k_", markersize=14, mew=2, label="p99")
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(x, pols, rotation=35, ha="right", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{scenario}: mean over seeds, 95 % t-intervals", fontsize=11)
    fig.tight_layout()
    _png(fig, path)
    plt.close(fig)


def plot_hourly(path: Path, scenario: str, rows: list[dict[str, Any]], policies: list[str]) -> None:
    """Orders delivered per hour, on-time rate and mean click-to-door by hour of placement, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("orders_delivered_per_day", "orders delivered per hour (by delivery hour)"),
        ("on_time_rate", "on-time rate by hour of placement"),
        ("click_to_door_mean_min", "click-to-door mean (min) by hour of placement"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for p in policies:
            pr = [r for r in rows if r["policy"] == p]
            if pr:
                ax.plot([r["hour"] for r in pr], [r[key] for r in pr], marker="o", markersize=3, label=p)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("hour of day")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{scenario}: over the time of day (pooled over seeds)", fontsize=11)
    fig.tight_layout()
    _png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- API
def evaluate(
    scenarios: Sequence[str],
    policies: Sequence[str | tuple[str, str]],
    seeds: Sequence[int] | str,
    out_dir: str | os.PathLike[str],
    workers: int | None = None,
    progress: bool | None = None,
    baseline: str | None = None,
    command: str | None = None,
    plots: bool = True,
) -> list[dict[str, Any]]:
    """Run every policy on every scenario on the same seeds; write the files; return the summary rows.

    ``policies``: registry names, checkpoint folders, or ``LABEL=SPEC`` (or ``(label, spec)`` tuples).
    ``seeds``: a list or ``parse_seeds`` text. ``workers``: processes (default: CPU count; 1 runs
    here). ``progress``: a tqdm bar (None: only on a terminal). ``baseline``: the policy the others
    are compared with (default ``nearest`` if present, else the first). Raises ``InputError``,
    ``agents.UnknownPolicyError`` or ``envs.ScenarioError`` on bad input, before running anything.
    """
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else [int(s) for s in seeds]
    if not seed_list:
        raise InputError("--seeds: no seeds")
    if any(s < 0 for s in seed_list) or len(set(seed_list)) != len(seed_list):
        raise InputError(f"--seeds: seeds must be distinct and >= 0, got {seed_list}")
    n_workers = check_workers(workers)
    pols = resolve_policies(policies)
    scens = resolve_scenarios(scenarios)
    labels = [lab for lab, _ in pols]
    if baseline is None:
        baseline = "nearest" if "nearest" in labels else labels[0]
    elif baseline not in labels:
        raise InputError(f"--baseline: {baseline!r} is not one of the policies evaluated ({', '.join(labels)})")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = evaluate_command([s for _, s in scens], pols, seed_list, out, n_workers, baseline)

    # scenario by scenario, seed by seed: consecutive tasks share a scenario, which each worker has loaded once
    tasks = [(pl, ps, sl, ss, seed) for sl, ss in scens for seed in seed_list for pl, ps in pols]
    t0 = time.perf_counter()
    results: list[EpisodeResult] = run_tasks(_episode_task, tasks, n_workers, progress, "evaluate", "episode")
    wall = time.perf_counter() - t0

    s_labels = [lab for lab, _ in scens]
    attach_bounds(results)
    bounds_table = bound_rows(results, labels, s_labels)
    summary = summarise(results, labels, s_labels)
    cols, eps = episode_rows(results)
    hourly = hourly_rows(results, labels, s_labels)
    comps = compare(results, labels, s_labels, baseline)
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, summary)
    write_csv(out / "episodes.csv", cols, eps)
    write_csv(out / "hourly.csv", HOURLY_COLUMNS, hourly)
    write_csv(out / "comparisons.csv", COMPARISON_COLUMNS, comps)
    written: list[str] = []
    if plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib's layout warnings on crowded panels
            for s in s_labels:
                name = f"kpis_{slug(s)}.png"
                plot_kpis(out / name, s, [r for r in summary if r["scenario"] == s])
                written.append(name)
                name = f"hourly_{slug(s)}.png"
                plot_hourly(out / name, s, [r for r in hourly if r["scenario"] == s], labels)
                written.append(name)
    write_report(
        out / "report.md", summary, comps, s_labels, baseline, command, seed_list, wall, min(n_workers, len(tasks)), written, bounds_table
    )
    return summary


# --------------------------------------------------------------------------------------------- CLI
def _seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--seeds {text!r}: ").removeprefix("--seeds: ")) from None


_workers_arg = whole_number(1)


def add_progress_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar (default: on a terminal only)")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.cli import CliError

    try:
        summary = evaluate(
            args.scenario or ["default"],
            args.policy or ["nearest"],
            args.seeds,
            args.out,
            workers=args.workers,
            progress=args.progress,
            baseline=args.baseline,
            plots=not args.no_plots,
        )
    except InputError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out)
    w0 = max(len(r["policy"]) for r in summary)
    w1 = max(len(r["scenario"]) for r in summary)
    print(f"{'policy':<{w0}}  {'scenario':<{w1}}  {'reward (EUR)':>20}  {'on time':>7}  {'CTD min':>7}  {'decision p99 ms':>15}")
    for r in summary:
        rw = f"{fmt(r['reward_mean'], 1)} ± {fmt(r['reward_ci95'], 1)}"
        print(
            f"{r['policy']:<{w0}}  {r['scenario']:<{w1}}  {rw:>20}  {fmt(r['on_time_rate']):>7}  "
            f"{fmt(r['click_to_door_mean_min'], 1):>7}  {fmt(r['decision_ms_p99'], 2):>15}"
        )
    plots = "" if args.no_plots else " and the PNG plots"
    print(f"\nwrote summary.csv, episodes.csv, hourly.csv, comparisons.csv, report.md{plots} to {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="every policy on every scenario on the same seeds: summary CSVs, paired comparisons, plots",
        description=(
            "Run every POLICY on every SCENARIO on the same SEEDS in parallel processes, and write summary.csv, "
            "episodes.csv, hourly.csv, comparisons.csv, report.md (paired comparisons with 95 %% CIs) and PNG plots "
            "to OUT. The reward is the day's platform margin."
        ),
        epilog="Example: gigdispatch evaluate --scenario default --policy nearest --policy hungarian --seeds 0-19 --out results/eval",
    )
    p.add_argument(
        "--scenario",
        action="append",
        metavar="S",
        help="built-in name, YAML file or MDRP instance folder; repeat for several [default: default]",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="P",
        help="policy name or checkpoint folder, optionally LABEL=NAME; repeat for several [default: nearest]",
    )
    p.add_argument("--seeds", type=_seeds_arg, default=DEFAULT_SEEDS, help="seeds: 0-19, 0,3,7 or 0-4,10-14 [default: %(default)s]")
    p.add_argument("--out", required=True, help="output folder (created; files of the same names are replaced, others kept)")
    p.add_argument("--workers", type=_workers_arg, default=None, help=f"worker processes [default: CPU count = {default_workers()}]")
    p.add_argument("--baseline", default=None, help="policy the others are compared with [default: nearest if given, else the first]")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_progress_flags(p)
    p.set_defaults(func=cmd_evaluate)
