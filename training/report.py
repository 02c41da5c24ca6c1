"""The evaluation report: aggregates of episodes, paired comparisons with 95 % intervals, and the files.

From the ``EpisodeResult`` list of ``training.runner``:

* ``summarise``: one row per policy × scenario (means over episodes, 95 % t-interval half-widths,
  decision latency percentiles over all calls of all episodes);
* ``episode_rows``: one row per (policy, scenario, seed); ``hourly_rows``: KPIs over the time of day;
* ``compare``: paired comparisons on the seeds both policies ran (``training/stats.py``);
  ``bound_rows``: how often each policy stayed within the oracle's certified bounds;
* ``write_csv``, ``write_report`` (Markdown), ``plot_kpis`` and ``plot_hourly`` (PNG, ``write_png``):
  every file written atomically (``training/io.py``).

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


def slug(label: str) -> str:
    """A file-name-safe version of a label (for plot file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_.") or "x"


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
    """``report.md``: the command, git revision, seeds and wall time; the summary per scenario; the paired
    reward comparisons with verdicts; the oracle's bounds (where it ran); the plots; the files."""
    out = [
        "# gigdispatch evaluate",
        "",
        f"- command: `{command}`",
        f"- git revision: `{git_revision()}`",
        f"- seeds: {format_seeds(seeds)} ({len(seeds)} per policy and scenario); the same seeds for every policy",
        f"- wall time: {wall_s:.1f} s with {workers} worker process(es)",
        "- reward = the day's platform margin (fees - payouts - refunds, EUR); "
        "± = half-width of the 95 % t-interval over seeds",
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
        f"Each policy against the baseline `{baseline}`, and the standard pairs when present "
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
                    [
                        "policy",
                        "reward <= profit bound",
                        "min slack (EUR)",
                        "mean profit bound (EUR)",
                        "click-to-door >= bound",
                    ],
                    table,
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


def write_png(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as a PNG, written atomically."""
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
                ax.plot([r["hour"] for r in pr], [r[key] for r in pr], marker="o", markersize=3, label=p)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("hour of day")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{scenario}: over the time of day (pooled over seeds)", fontsize=11)
    fig.tight_layout()
    write_png(fig, path)
    plt.close(fig)
