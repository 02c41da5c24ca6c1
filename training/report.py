"""The evaluation report: aggregates of episodes, paired comparisons with 95 % intervals, and the files.

From the ``EpisodeResult`` list of ``training.runner``:

* ``summarise``: one row per policy × scenario (means over episodes, 95 % t-interval half-widths,
  decision latency percentiles over all calls of all episodes);
* ``episode_rows``: one row per (policy, scenario, seed); ``hourly_rows``: KPIs over the time of day;
* ``compare``: paired comparisons on the seeds both policies ran (``training/stats.py``);
  ``bound_rows``: how often each policy stayed within the oracle's certified bounds;
* ``write_csv``, ``write_report`` (Markdown), ``plot_kpis`` (``kpi_figure``: bars, and the paired
  differences from the baseline beside them) and ``plot_hourly`` (PNG, ``write_png``): every file
  written atomically (``training/io.py``).

The oracle is no policy (it knows the whole day in advance): its summary row has ``kind = hindsight
plan``, and the report and plots show it apart, as ``oracle (hindsight plan)``, with its certified bounds.

The reward is the day's ``platform_margin`` (EUR).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.training.io import atomic_write_bytes, atomic_write_text
from gigdispatch.training.runner import EpisodeResult
from gigdispatch.training.runs import git_revision
from gigdispatch.training.stats import mean_ci, paired_diff

# KPIs averaged over episodes in summary.csv (each also gets a ``<name>_ci95`` column)
SUMMARY_KPIS = (
    "on_time_rate",
    "click_to_door_mean_min",
    "click_to_door_p90_min",
    "pickup_leg_mean_min",
    "undelivered_rate",
    "cost_per_order",
    "utilization",
    "empty_km_per_delivery",
    "idle_share",
    "driver_earnings_per_hour",
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
    "ready_to_pickup_mean_min",
    "overage_mean_min",
)
SUMMARY_COLUMNS = (
    "policy",
    "scenario",
    "kind",
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
COMPARISON_METRICS = (
    "reward",
    "on_time_rate",
    "click_to_door_mean_min",
    "undelivered_rate",
    "pickup_leg_mean_min",
    "empty_km_per_delivery",
    "idle_share",
    "driver_earnings_per_hour",
)
COMPARISON_COLUMNS = (
    "scenario",
    "policy",
    "versus",
    "metric",
    "n",
    "mean_diff",
    "ci95_lo",
    "ci95_hi",
    "excludes_zero",
    "p_value",
)
# the standard comparisons, made when both policies are present: (a, b) means a - b
STANDARD_PAIRS = (("hungarian", "nearest"), ("value-hungarian", "hungarian"))
ORACLE = "oracle"
# the ``kind`` column of summary.csv: a policy, or the oracle's plan (made knowing the whole day: not deployable)
KIND_POLICY = "policy"
KIND_HINDSIGHT = "hindsight plan"


def slug(label: str) -> str:
    """A file-name-safe version of a label (for plot file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.") or "x"


def is_hindsight(row: dict[str, Any]) -> bool:
    """Whether a summary row is the oracle's hindsight plan rather than a policy."""
    return row.get("kind", KIND_HINDSIGHT if row.get("policy") == ORACLE else KIND_POLICY) == KIND_HINDSIGHT


def display_name(row: dict[str, Any]) -> str:
    """The label shown in tables and plots: ``oracle (hindsight plan)`` for the oracle, the policy label otherwise."""
    return f"{row['policy']} (hindsight plan)" if is_hindsight(row) else str(row["policy"])


# ------------------------------------------------------------------------------------- aggregation
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
                    "mean_reward": float(np.mean([r.reward for r in eps])),
                    "within_ctd_bound": int((ctd >= -1e-6).sum()),
                }
            )
    return rows


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
            # a policy that computes certified bounds knows the day in advance: its plan is a hindsight plan
            hindsight = p == ORACLE or any(r.bounds for r in eps)
            row: dict[str, Any] = {
                "policy": p,
                "scenario": s,
                "kind": KIND_HINDSIGHT if hindsight else KIND_POLICY,
                "episodes": len(eps),
            }
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
    from gigdispatch.envs.core.kpis import KPI_DOC

    cols = ["policy", "scenario", "seed", "reward", *KPI_DOC]
    cols += ["decision_calls", "decision_ms_mean", "decision_ms_p50", "decision_ms_p99"]
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
    """(a, b) pairs compared as a - b: each policy vs the baseline, the standard pairs, the oracle vs each."""
    pairs: list[tuple[str, str]] = [(p, baseline) for p in policies if p != baseline]
    pairs += [(a, b) for a, b in STANDARD_PAIRS if a in policies and b in policies]
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


def compare(
    results: list[EpisodeResult], policies: list[str], scenarios: list[str], baseline: str
) -> list[dict[str, Any]]:
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
    ("click_to_door_mean_min", "click-to-door mean (min)"),
    ("click_to_door_p90_min", "click-to-door p90 (min)"),
    ("pickup_leg_mean_min", "pickup leg (min)"),
    ("undelivered_rate", "undelivered"),
    ("cost_per_order", "cost/order (EUR)"),
    ("utilization", "utilisation"),
    ("empty_km_per_delivery", "empty km/delivery"),
    ("idle_share", "idle share"),
    ("driver_earnings_per_hour", "EUR per online hour"),
    ("acceptance_rate", "acceptance"),
    ("orders_per_bundle", "orders/bundle"),
    ("decision_ms_p50", "decision p50 (ms)"),
    ("decision_ms_p99", "decision p99 (ms)"),
)
HINDSIGHT_NOTE = (
    "The oracle knows every order of the day in advance, which no dispatcher does, so it is not a policy and is "
    "kept apart from them. It gives two things: a **certified bound** (an LP relaxation: no policy can beat it on "
    "that seed; certified, not tight) and a **hindsight plan** (one feasible schedule made with the day known, "
    "replayed in the simulator: not an optimum, and it can score below heuristics). Use them to see how far the "
    "policies are from the best possible: on each seed the best achievable margin lies between the best run and "
    "the bound. The plan is not a policy to deploy. See docs/oracle.md."
)


def _summary_table(rows: list[dict[str, Any]]) -> str:
    table = []
    for r in rows:
        cells = [display_name(r), str(r["episodes"])]
        for key, _ in REPORT_COLUMNS:
            v = fmt(r[key])
            ci = r.get("reward_ci95" if key == "reward_mean" else f"{key}_ci95")
            if ci is not None and math.isfinite(float(ci)) and key != "decision_ms_p50":
                v += f" ± {fmt(ci)}"
            cells.append(v)
        table.append(cells)
    return md_table(["policy", "episodes", *(h for _, h in REPORT_COLUMNS)], table)


def _comparison_table(rows: list[dict[str, Any]], names: dict[str, str]) -> str:
    table = []
    for c in rows:
        a, b = names.get(c["policy"], c["policy"]), names.get(c["versus"], c["versus"])
        if c["excludes_zero"]:
            verdict = f"**{a} {'higher' if c['mean_diff'] > 0 else 'lower'}** (CI excludes 0)"
        elif c["n"] < 2:
            verdict = "too few seeds for an interval"
        else:
            verdict = "no significant difference (CI includes 0)"
        table.append(
            [
                f"{a} vs {b}",
                str(c["n"]),
                fmt(c["mean_diff"], 2),
                f"[{fmt(c['ci95_lo'], 2)}, {fmt(c['ci95_hi'], 2)}]",
                "yes" if c["excludes_zero"] else "no",
                verdict,
            ]
        )
    return md_table(["A vs B", "seeds", "mean A - B (EUR)", "95 % CI", "excludes 0", "verdict"], table)


def _bounds_table(rows: list[dict[str, Any]], names: dict[str, str]) -> str:
    table = []
    for b in rows:
        reward = b.get("mean_reward", float("nan"))
        ratio = b["mean_bound"] / reward if reward and math.isfinite(reward) and reward > 0 else float("nan")
        table.append(
            [
                names.get(b["policy"], b["policy"]),
                f"{b['within_profit_bound']}/{b['seeds']}",
                fmt(b["min_profit_slack"], 2),
                fmt(b["mean_bound"], 2),
                fmt(reward, 2),
                "n/a" if not math.isfinite(ratio) else f"{ratio:.2f}x",
                f"{b['within_ctd_bound']}/{b['seeds']}",
            ]
        )
    header = [
        "run of",
        "reward <= profit bound",
        "min slack (EUR)",
        "mean profit bound (EUR)",
        "mean reward (EUR)",
        "bound / reward",
        "click-to-door >= bound",
    ]
    return md_table(header, table)


def _hindsight_lines(
    summary: list[dict[str, Any]],
    comparisons: list[dict[str, Any]],
    scenarios: list[str],
    bounds_table: list[dict[str, Any]],
    names: dict[str, str],
) -> list[str]:
    """The *Hindsight bounds* section: the oracle's plan, its certified bounds and its comparisons, per scenario."""
    hind = {r["policy"] for r in summary if is_hindsight(r)}
    out = ["", "## Hindsight bounds (not policies)", "", HINDSIGHT_NOTE]
    for s in scenarios:
        plan = [r for r in summary if r["scenario"] == s and is_hindsight(r)]
        bounds = [b for b in bounds_table if b["scenario"] == s]
        comps = [
            c
            for c in comparisons
            if c["scenario"] == s and c["metric"] == "reward" and (c["policy"] in hind or c["versus"] in hind)
        ]
        if not (plan or bounds or comps):
            continue
        out += ["", f"### {s}"]
        if plan:
            out += [
                "",
                "Hindsight plan (knows the whole day; the policies are in *Summary*):",
                "",
                _summary_table(plan),
            ]
        if bounds:
            out += [
                "",
                "Certified bounds, checked against every run: each run against the bound that holds for it (looked up "
                "by its orders left in flight and orders delivered). `reward <= profit bound` must hold on every seed; "
                "`bound / reward` shows how loose the bound is.",
                "",
                _bounds_table(bounds, names),
            ]
        if comps:
            out += [
                "",
                "Hindsight plan against the policies (reward, paired over seeds):",
                "",
                _comparison_table(comps, names),
            ]
    return out


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
    """``report.md``: the command, git revision, seeds and wall time; the summary of the policies per scenario; the
    paired reward comparisons with verdicts; apart from the policies, the oracle's hindsight plan and certified
    bounds (where it ran); the plots; the files."""
    names = {r["policy"]: display_name(r) for r in summary}
    hind = {r["policy"] for r in summary if is_hindsight(r)}
    out = [
        "# gigdispatch evaluate",
        "",
        f"- command: `{command}`",
        f"- git revision: `{git_revision()}`",
        f"- seeds: {format_seeds(seeds)} ({len(seeds)} per policy and scenario); the same seeds for every policy",
        f"- wall time: {wall_s:.1f} s with {workers} worker process(es)",
        "- reward = the day's platform margin (fees - payouts - refunds, EUR); "
        "± = half-width of the 95 % t-interval over seeds",
        *(
            [
                f"- {', '.join(f'`{names[h]}`' for h in sorted(hind))}: knows the whole day in advance; its plan and "
                "certified bounds are under *Hindsight bounds*, apart from the policies"
            ]
            if hind
            else []
        ),
        "",
        "## Summary",
    ]
    for s in scenarios:
        rows = [r for r in summary if r["scenario"] == s and not is_hindsight(r)]
        if rows:
            out += ["", f"### {s}", "", _summary_table(rows)]
    out += [
        "",
        "## Paired comparisons (reward)",
        "",
        f"Each policy against the baseline `{baseline}`, and the standard pairs when present "
        "(hungarian vs nearest, value-hungarian vs hungarian). The difference is A - B over the same "
        "seeds; the 95 % interval is the paired t-interval of the per-seed differences. Where the interval excludes "
        "zero, A's reward is significantly higher (or lower) than B's at the 5 % level. `comparisons.csv` also has the "
        "on-time rate, click-to-door, undelivered-rate, pickup-leg, empty-km-per-delivery and idle-share differences"
        + (", and the hindsight plan against each policy (also under *Hindsight bounds*)." if hind else "."),
    ]
    for s in scenarios:
        rows = [
            c
            for c in comparisons
            if c["scenario"] == s and c["metric"] == "reward" and c["policy"] not in hind and c["versus"] not in hind
        ]
        if rows:
            out += ["", f"### {s}", "", _comparison_table(rows, names)]
    if hind or bounds_table:
        out += _hindsight_lines(summary, comparisons, scenarios, bounds_table or [], names)
    if plots:
        out += ["", "## Plots", ""]
        out += [
            "Beside the bars of reward, on-time rate, click-to-door and undelivered rate, the panels headed "
            f"'difference from {baseline}' show each policy's paired difference from the baseline with its 95 % "
            "interval: differences that bars starting at 0 hide."
            + (" The hindsight plan is drawn hatched and apart, right of a dotted line." if hind else ""),
            "",
        ]
        out += [f"![{p}]({p})" for p in plots]
    out += [
        "",
        "## Files",
        "",
        "`summary.csv` (one row per policy × scenario; `kind` says `policy` or `hindsight plan`), `episodes.csv` (one "
        "row per policy × scenario × seed), `hourly.csv` (time-of-day series), `comparisons.csv` (paired "
        "comparisons). See docs/evaluation.md.",
        "",
    ]
    atomic_write_text(path, "\n".join(out))


# ------------------------------------------------------------------------------------------- plots
PLOT_KPIS = (
    ("reward_mean", "reward_ci95", "reward (EUR / day)"),
    ("on_time_rate", "on_time_rate_ci95", "on-time rate"),
    ("click_to_door_mean_min", "click_to_door_mean_min_ci95", "click-to-door mean (min)"),
    ("click_to_door_p90_min", "click_to_door_p90_min_ci95", "click-to-door p90 (min)"),
    ("pickup_leg_mean_min", "pickup_leg_mean_min_ci95", "pickup leg (min)"),
    ("undelivered_rate", "undelivered_rate_ci95", "undelivered rate"),
    ("cost_per_order", "cost_per_order_ci95", "cost per order (EUR)"),
    ("utilization", "utilization_ci95", "utilisation"),
    ("empty_km_per_delivery", "empty_km_per_delivery_ci95", "empty km per delivery"),
    ("idle_share", "idle_share_ci95", "idle share"),
    ("driver_earnings_per_hour", "driver_earnings_per_hour_ci95", "driver earnings per online hour (EUR)"),
    ("acceptance_rate", "acceptance_rate_ci95", "acceptance rate"),
    ("orders_per_bundle", "orders_per_bundle_ci95", "orders per bundle"),
    ("decision_ms_p50", None, "decision latency p50 / p99 (ms)"),
)


def write_png(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def _baseline_diffs(
    comparisons: Sequence[dict[str, Any]] | None, scenario: str, baseline: str | None
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """{metric: {policy: (mean, lo, hi)}}: the paired differences policy - baseline on ``scenario``."""
    out: dict[str, dict[str, tuple[float, float, float]]] = {}
    for c in comparisons or ():
        if c["scenario"] == scenario and c["versus"] == baseline:
            out.setdefault(c["metric"], {})[c["policy"]] = (
                float(c["mean_diff"]),
                float(c["ci95_lo"]),
                float(c["ci95_hi"]),
            )
    return out


def _style_bars(bars: Any, hindsight: list[bool]) -> None:
    for bar, h in zip(bars, hindsight, strict=True):
        if h:  # the oracle's plan: hatched, so it never reads as one more policy
            bar.set_hatch("//")
            bar.set_edgecolor("0.25")


def _bar_axes(ax: Any, x: np.ndarray, names: list[str], hindsight: list[bool], title: str) -> None:
    if any(hindsight) and not all(hindsight):
        first = min(xi for xi, h in zip(x, hindsight, strict=True) if h)
        ax.axvline(first - 0.9, color="0.5", linestyle=":", linewidth=1)  # policies left, hindsight plan right
    ax.set_title(title, fontsize=9)
    ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def kpi_figure(
    scenario: str,
    rows: list[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]] | None = None,
    baseline: str | None = None,
) -> Any:
    """The KPI figure: a panel of bars per KPI (95 % CIs; latency: p50 bar, p99 marker), and beside each KPI that
    ``comparisons`` compares, a panel of the paired differences from ``baseline`` with their 95 % intervals
    (small differences that bars starting at 0 hide). The oracle's hindsight plan is drawn last, apart and
    hatched, labelled ``oracle (hindsight plan)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if not is_hindsight(r)] + [r for r in rows if is_hindsight(r)]
    hindsight = [is_hindsight(r) for r in rows]
    x = np.arange(len(rows)) + np.where(hindsight, 0.8, 0.0)  # a gap before the hindsight plan
    names = [display_name(r) for r in rows]
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(rows))]
    diffs = _baseline_diffs(comparisons, scenario, baseline)
    compared = [k for k in PLOT_KPIS if ("reward" if k[0] == "reward_mean" else k[0]) in diffs]
    panels: list[tuple[str, tuple[str, str | None, str]]] = []
    for kpi in [*compared, *(k for k in PLOT_KPIS if k not in compared)]:  # each difference panel beside its KPI
        panels.append(("bars", kpi))
        if kpi in compared:
            panels.append(("diff", kpi))
    n_cols = 4 if compared else 3
    n_rows = -(-len(panels) // n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(min(28, max(4 * n_cols, 0.5 * len(rows) * n_cols)), 3.3 * n_rows), squeeze=False
    )
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    for ax, (what, (key, ci, title)) in zip(axes.ravel(), panels, strict=False):
        if what == "diff":
            d = diffs["reward" if key == "reward_mean" else key]
            mean = np.array([d.get(r["policy"], (np.nan,) * 3)[0] for r in rows])
            lo = np.array([d.get(r["policy"], (np.nan,) * 3)[1] for r in rows])
            hi = np.array([d.get(r["policy"], (np.nan,) * 3)[2] for r in rows])
            err = np.nan_to_num(np.stack([mean - lo, hi - mean]))
            bars = ax.bar(x, np.nan_to_num(mean), yerr=err, color=colors, capsize=4)
            ax.axhline(0.0, color="black", linewidth=0.8)
            _style_bars(bars, hindsight)
            base = [f"{n} (baseline)" if r["policy"] == baseline else n for n, r in zip(names, rows, strict=True)]
            _bar_axes(ax, x, base, hindsight, f"{title}: difference from {baseline} (paired 95 % CI)")
            continue
        vals = np.array([np.nan if r[key] is None else float(r[key]) for r in rows])
        err = np.array([np.nan if (ci is None or r[ci] is None) else float(r[ci]) for r in rows])
        bars = ax.bar(x, np.nan_to_num(vals), yerr=None if ci is None else np.nan_to_num(err), color=colors, capsize=4)
        _style_bars(bars, hindsight)
        if key == "decision_ms_p50":
            ax.plot(x, [float(r["decision_ms_p99"]) for r in rows], "k_", markersize=14, mew=2, label="p99")
            ax.legend(fontsize=7)
        _bar_axes(ax, x, names, hindsight, title)
    note = "; hatched, right of the dotted line: the oracle's hindsight plan, not a policy" if any(hindsight) else ""
    fig.suptitle(f"{scenario}: mean over seeds, 95 % t-intervals{note}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_kpis(
    path: Path,
    scenario: str,
    rows: list[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]] | None = None,
    baseline: str | None = None,
) -> None:
    """``kpi_figure`` as a PNG (atomically)."""
    import matplotlib.pyplot as plt

    fig = kpi_figure(scenario, rows, comparisons, baseline)
    write_png(fig, path)
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
                hind = is_hindsight({"policy": p})  # the oracle's plan: dashed, labelled apart from the policies
                ax.plot(
                    [r["hour"] for r in pr],
                    [r[key] for r in pr],
                    marker="o",
                    markersize=3,
                    linestyle="--" if hind else "-",
                    label=display_name({"policy": p}),
                )
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("hour of day")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{scenario}: over the time of day (pooled over seeds)", fontsize=11)
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)
