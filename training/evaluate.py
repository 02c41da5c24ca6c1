"""``gigdispatch evaluate``: every policy on every scenario on the same seeds, with CIs and paired tests.

``evaluate(...)`` is the Python API and ``add_parser(sub)`` the subcommand; the episodes are played by
``training.runner`` (worker processes, the same seeds for every policy) and the files are written by
``training.report``.

Files written to ``--out`` (atomically; other files in the folder are left alone):

* ``summary.csv``: one row per policy × scenario: means over episodes, 95 % t-interval half-widths,
  decision latency percentiles;
* ``episodes.csv``: one row per (policy, scenario, seed): every KPI, the reward, wall time, latency;
* ``hourly.csv``: KPIs over the time of day per policy × scenario;
* ``comparisons.csv`` and ``report.md``: paired comparisons on the same seeds (see ``training/stats.py``);
* ``kpis_<scenario>.png`` (bars with 95 % CIs, and the paired differences from the baseline beside the compared
  KPIs; the oracle's hindsight plan hatched and apart) and ``hourly_<scenario>.png`` (time-of-day curves);
* ``episodes.jsonl``: the journal (``training.journal``), one line per episode, appended as each one finishes.
  Started again with the same ``--out``, the sweep takes the episodes of the same sweep found there and runs only
  the rest (a killed sweep finishes with every episode exactly once); ``--fresh`` empties it first.

``--backend ray`` plays the same episodes as Ray tasks (a private Ray on this machine, or the cluster at
``--address``): the same seeds give the same figures as the process pool (docs/distributed.md).

The reward is the day's ``platform_margin`` (EUR). Decision latency is the wall time of each
``policy.act`` call; its percentiles run over all calls of all episodes of a policy × scenario.
"""

from __future__ import annotations

import argparse
import os
import shlex
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.seeding import EVAL_SEEDS, parse_seeds
from gigdispatch.training.argtypes import add_progress_flags, seed_list, whole_number
from gigdispatch.training.io import atomic_write_text, ensure_out_dir
from gigdispatch.training.report import (
    COMPARISON_COLUMNS,
    HOURLY_COLUMNS,
    SUMMARY_COLUMNS,
    bound_rows,
    compare,
    display_name,
    episode_rows,
    fmt,
    format_seeds,
    hourly_rows,
    is_hindsight,
    plot_hourly,
    plot_kpis,
    slug,
    summarise,
    write_csv,
    write_report,
)
from gigdispatch.training.runner import (
    add_backend_flags,
    check_ray_backend,
    check_seeds,
    check_workers,
    default_workers,
    resolve_policies,
    resolve_scenarios,
    run_episodes,
)

DEFAULT_SEEDS = f"{EVAL_SEEDS[0]}-{EVAL_SEEDS[-1]}"  # the evaluation seeds; never tune on them
JOURNAL = "episodes.jsonl"  # in --out: every finished episode, one JSON line each (training.journal)


def evaluate_command(
    scenarios: Sequence[str],
    policies: Sequence[tuple[str, str]],
    seeds: Sequence[int],
    out_dir: Path,
    workers: int | None,
    baseline: str,
    backend: str = "process",
    address: str | None = None,
) -> str:
    """The ``gigdispatch evaluate`` command line that reproduces a run."""
    args = ["gigdispatch", "evaluate"]
    for s in scenarios:
        args += ["--scenario", s]
    for label, spec in policies:
        args += ["--policy", spec if label in (spec, spec.rstrip("/")) else f"{label}={spec}"]
    args += ["--seeds", format_seeds(seeds), "--out", str(out_dir)]
    if backend != "process":
        args += ["--backend", backend, *(["--address", address] if address else [])]
    if workers is not None:
        args += ["--workers", str(workers)]
    args += ["--baseline", baseline]
    return shlex.join(args)


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
    record: str | None = None,
    backend: str = "process",
    address: str | None = None,
    fresh: bool = False,
    info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every policy on every scenario on the same seeds; write the files; return the summary rows.

    ``policies``: registry names, checkpoint folders, or ``LABEL=SPEC`` (or ``(label, spec)`` tuples).
    ``seeds``: a list or ``parse_seeds`` text. ``workers``: processes (default: CPU count; 1 runs
    here). ``progress``: a tqdm bar (None: only on a terminal). ``baseline``: the policy the others
    are compared with (default ``nearest`` if present, else the first). ``record``: a folder (created) where every
    day is recorded for ``gigdispatch dashboard --replay`` (``runner.record_name``). ``backend="ray"``: the
    episodes run as Ray tasks, on the cluster at ``address`` or a private local Ray; ``workers`` then caps the
    episodes at once (default: every CPU of the cluster). Every episode goes to ``OUT/episodes.jsonl`` as it
    finishes, and those of this sweep already there are taken, not run again (``fresh``: start over). ``info``
    (if given) gets how the episodes ran (``runner.run_episodes``). Raises ``InputError``,
    ``agents.UnknownPolicyError`` or ``envs.ScenarioError`` on bad input, before running anything.
    """
    check_ray_backend(backend, address)
    days = check_seeds(parse_seeds(seeds) if isinstance(seeds, str) else seeds)
    n_workers = check_workers(workers) if backend == "process" or workers is not None else None
    pols = resolve_policies(policies)
    scens = resolve_scenarios(scenarios)
    labels = [lab for lab, _ in pols]
    if baseline is None:
        baseline = "nearest" if "nearest" in labels else labels[0]
    elif baseline not in labels:
        raise InputError(f"--baseline: {baseline!r} is not one of the policies evaluated ({', '.join(labels)})")
    out = ensure_out_dir(out_dir, "--out")  # the results folder the user named: created, with its parents
    if command is None:
        command = evaluate_command([s for _, s in scens], pols, days, out, n_workers, baseline, backend, address)

    rec_dir = str(ensure_out_dir(record, "--record")) if record else None
    info = info if info is not None else {}
    t0 = time.perf_counter()
    results, _ = run_episodes(
        scens,
        pols,
        days,
        n_workers,
        progress,
        record_dir=rec_dir,
        backend=backend,
        address=address,
        journal=out / JOURNAL,
        fresh=fresh,
        info=info,
    )
    wall = time.perf_counter() - t0

    s_labels = [lab for lab, _ in scens]
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
                plot_kpis(out / name, s, [r for r in summary if r["scenario"] == s], comps, baseline)
                written.append(name)
                name = f"hourly_{slug(s)}.png"
                plot_hourly(out / name, s, [r for r in hourly if r["scenario"] == s], labels)
                written.append(name)
    n_at_once = info["workers"]
    write_report(
        out / "report.md", summary, comps, s_labels, baseline, command, days, wall, n_at_once, written, bounds_table
    )
    _note_how_it_ran(out / "report.md", wall, info, address)
    return summary


def _note_how_it_ran(report: Path, wall: float, info: dict[str, Any], address: str | None) -> None:
    """Say in ``report.md``'s wall-time line where the episodes ran (Ray: tasks at once, nodes) and how many came
    from the journal of an earlier run (the wall time is this run's only)."""
    parts = []
    if info["backend"] == "ray":
        where = f"the Ray cluster at {address}" if address else "a private Ray on this machine"
        parts.append(
            f"- wall time: {wall:.1f} s, {info['workers']} Ray task(s) at once on {where}, "
            f"{len(info['nodes'])} node(s) ran the {info['ran']} episode(s) of this run"
        )
    parts += [f"- {n}" for n in info["notes"]]
    if not parts:
        return
    lines = report.read_text().splitlines()
    at = next((k for k, ln in enumerate(lines) if ln.startswith("- wall time: ")), None)
    if at is None:
        return
    if info["backend"] == "ray":
        lines[at : at + 1] = parts
    else:
        lines[at + 1 : at + 1] = parts
    atomic_write_text(report, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- CLI
def cmd_evaluate(args: argparse.Namespace) -> int:
    """``gigdispatch evaluate``: run, write the files, print the summary (bad input: ``InputError``, one line)."""
    info: dict[str, Any] = {}
    summary = evaluate(
        args.scenario or ["default"],
        args.policy or ["nearest"],
        args.seeds,
        args.out,
        workers=args.workers,
        progress=args.progress,
        baseline=args.baseline,
        plots=not args.no_plots,
        record=args.record,
        backend=args.backend,
        address=args.address,
        fresh=args.fresh,
        info=info,
    )
    out = Path(args.out)
    for note in info["notes"]:
        print(note)
    w0 = max(len("policy"), *(len(display_name(r)) for r in summary))
    w1 = max(len("scenario"), *(len(r["scenario"]) for r in summary))
    print(
        f"{'policy':<{w0}}  {'scenario':<{w1}}  {'reward (EUR)':>20}  {'on time':>7}  {'click-to-door (min)':>19}  "
        f"{'decision p99 ms':>15}"
    )
    for r in summary:
        rw = f"{fmt(r['reward_mean'], 1)} ± {fmt(r['reward_ci95'], 1)}"
        print(
            f"{display_name(r):<{w0}}  {r['scenario']:<{w1}}  {rw:>20}  {fmt(r['on_time_rate']):>7}  "
            f"{fmt(r['click_to_door_mean_min'], 1):>19}  {fmt(r['decision_ms_p99'], 2):>15}"
        )
    if any(is_hindsight(r) for r in summary):
        print("(hindsight plan: made knowing the whole day in advance, not a policy; its bounds are in report.md)")
    plots = "" if args.no_plots else " and the PNG plots"
    print(f"\nwrote summary.csv, episodes.csv, hourly.csv, comparisons.csv, report.md{plots} to {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="every policy on every scenario on the same seeds: summary CSVs, paired comparisons, plots",
        description=(
            "Run every POLICY on every SCENARIO on the same SEEDS in parallel processes, and write summary.csv, "
            "episodes.csv, hourly.csv, comparisons.csv, report.md (paired comparisons with 95 % CIs) and PNG plots "
            "to OUT. The reward is the day's platform margin."
        ),
        epilog=(
            "Example: gigdispatch evaluate --scenario default --policy nearest --policy hungarian --seeds 0-19 "
            "--out results/eval"
        ),
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
    p.add_argument(
        "--seeds", type=seed_list, default=DEFAULT_SEEDS, help="seeds: 0-19, 0,3,7 or 0-4,10-14 [default: %(default)s]"
    )
    p.add_argument(
        "--out", required=True, help="output folder (created; files of the same names are replaced, others kept)"
    )
    p.add_argument(
        "--workers",
        type=whole_number(1),
        default=None,
        help=f"worker processes [default: CPU count = {default_workers()}]; with --backend ray: episodes at once "
        "[default: every CPU of the Ray cluster]",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="policy the others are compared with [default: nearest if given, else the first]",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--record",
        metavar="DIR",
        help="also record every day in DIR (created) as POLICY__SCENARIO__seedN.jsonl.xz, for 'gigdispatch "
        "dashboard --replay FILE'",
    )
    add_backend_flags(p, "episode")
    p.add_argument(
        "--fresh",
        action="store_true",
        help=f"empty the journal {JOURNAL} in OUT first [default: the episodes of this sweep found there, from a run "
        "that was stopped, are taken, not run again]",
    )
    add_progress_flags(p)
    p.set_defaults(func=cmd_evaluate)
