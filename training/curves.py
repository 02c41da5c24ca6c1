"""Learning curves of training runs as one PNG:
``python -m gigdispatch.training.curves --run RUN_DIR ... [--reference LABEL=VALUE ...]
[--reference-from-eval EVAL_DIR ...] --out FILE.png``.

Reads what each run folder records per iteration (one panel per run):

* ``algo: cem`` (``cem_state.json``): the population's mean, the elite's mean and the held-out mean of the
  search distribution's mean, EUR per day, by iteration;
* ``algo: dagger`` (``dagger_state.json``): by imitation round (and the samples trained on so far), the
  held-out platform margin of the decoding the round selected (``eval_profit_mean``), lighter lines for each
  ``hold_bias`` tried (``held_out_by_bias``), the best round (``checkpoints/best.zip``), and below it the
  training loss and accuracy;
* ``progress.json`` of an RLlib run: the mean episode return.

The held-out days of CEM and DAgger runs are the first ``eval.episodes`` seeds of ``eval.seeds`` of the run's
``config.yaml``; each panel's title names them. Reference lines (dashed, on every panel whose curve is the
platform margin in EUR/day) compare the curve with other policies: give them on the same days (``gigdispatch
evaluate --seeds`` those seeds). ``--reference-from-eval`` reads an evaluation folder's ``summary.csv`` and
says in the legend whether its ``episodes.csv`` shows the same days as the panel's curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gigdispatch.envs.core.errors import InputError
from gigdispatch.training.dagger import STATE as DAGGER_STATE
from gigdispatch.training.io import check_out_file
from gigdispatch.training.report import KIND_POLICY, format_seeds
from gigdispatch.training.runs import CEM_STATE, CONFIG, PROGRESS

MARGIN_LABEL = "platform margin, EUR/day"
SUMMARY = "summary.csv"
EPISODES = "episodes.csv"

Series = tuple[list[float], list[float]]


@dataclass
class Reference:
    """A horizontal line: ``label`` at ``value`` (EUR/day); an evaluation's line also knows its scenario and
    the seeds it was measured on (``None``: given by hand, or the evaluation folder has no ``episodes.csv``)."""

    label: str
    value: float
    scenario: str | None = None
    seeds: list[int] | None = None
    source: str = "--reference"


@dataclass
class Panel:
    """What one run's panel shows: the curves (``series``, and ``light`` ones drawn thinner), its axis labels,
    the run's scenario and held-out seeds (from ``config.yaml``), and for DAgger the best round and the
    training loss / accuracy by round."""

    run: Path
    algo: str
    ylabel: str
    xlabel: str
    series: dict[str, Series]
    light: dict[str, Series] = field(default_factory=dict)
    scenario: str | None = None
    held_out: list[int] | None = None
    best: tuple[float, float, str] | None = None
    selected_bias: list[float] | None = None
    samples: list[int] | None = None
    training: dict[str, Series] = field(default_factory=dict)

    @property
    def margin(self) -> bool:
        """Whether the y axis is the platform margin in EUR/day (reference lines are drawn only then)."""
        return self.ylabel == MARGIN_LABEL


def _config(run: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a mapping ({} when there is none)."""
    if not (run / CONFIG).is_file():
        return {}
    import yaml

    try:
        doc = yaml.safe_load((run / CONFIG).read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"--run {run}: {CONFIG} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise InputError(f"--run {run}: {CONFIG} is not a mapping")
    return doc


def _held_out(run: Path, cfg: dict[str, Any]) -> list[int] | None:
    """The held-out seeds the run's curve was measured on: ``eval.seeds[:eval.episodes]`` (what ``cem.py``
    and ``dagger.py`` evaluate on); ``None`` when the config does not say."""
    ev = cfg.get("eval")
    if not isinstance(ev, dict) or not isinstance(ev.get("seeds"), list):
        return None
    seeds = ev["seeds"]
    if not all(isinstance(s, int) for s in seeds):
        raise InputError(f"--run {run}: {CONFIG} eval.seeds is not a list of whole numbers")
    n = ev.get("episodes", len(seeds))
    if not isinstance(n, int):
        raise InputError(f"--run {run}: {CONFIG} eval.episodes is not a whole number")
    return list(seeds[:n])


def _read_json(run: Path, name: str) -> Any:
    try:
        return json.loads((run / name).read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"--run {run}: {name} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


def _dagger(run: Path, cfg: dict[str, Any]) -> Panel:
    """A DAgger run's panel from ``dagger_state.json`` (see ``training.dagger``)."""
    doc = _read_json(run, DAGGER_STATE)
    try:
        h = doc["history"]
        if not h:
            raise InputError(f"--run {run}: {DAGGER_STATE} has no finished round yet")
        rounds = [float(r["round"]) for r in h]
        selected = [float(r["eval_profit_mean"]) for r in h]
        biases = sorted({b for r in h for b in r["held_out_by_bias"]}, key=float)
        light: dict[str, Series] = {}
        for b in biases:
            pts = [(float(r["round"]), float(r["held_out_by_bias"][b])) for r in h if b in r["held_out_by_bias"]]
            light[f"hold_bias {b}"] = ([p[0] for p in pts], [p[1] for p in pts])
        training = {
            "loss": (rounds, [float(r["loss"]) for r in h]),
            "accuracy": (rounds, [float(r["accuracy"]) for r in h]),
        }
        samples = [int(r["samples"]) for r in h]
        selected_bias = [float(r["hold_bias"]) for r in h]
        b = doc.get("best")
        best = None
        if b:
            best = (
                float(b["round"]),
                float(b["eval_profit_mean"]),
                f"best: round {b['round']}, hold_bias {b['hold_bias']}",
            )
    except (KeyError, TypeError, AttributeError) as exc:
        what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else "unexpected layout"
        raise InputError(f"--run {run}: {DAGGER_STATE} is malformed ({what})") from None
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"--run {run}: {DAGGER_STATE} has a value that is not a number ({exc})") from None
    return Panel(
        run=run,
        algo="DAgger",
        ylabel=MARGIN_LABEL,
        xlabel="imitation round",
        series={"selected decoding (held-out)": (rounds, selected)},
        light=light,
        scenario=str(cfg["scenario"]) if "scenario" in cfg else None,
        held_out=_held_out(run, cfg),
        best=best,
        selected_bias=selected_bias,
        samples=samples,
        training=training,
    )


def _cem(run: Path, cfg: dict[str, Any]) -> Panel:
    """A CEM run's panel from ``cem_state.json``."""
    try:
        h = _read_json(run, CEM_STATE)["history"]
        it = [float(r["iteration"]) for r in h]
        series = {
            "population mean (training days)": (it, [float(r["population_mean"]) for r in h]),
            "elite mean (training days)": (it, [float(r["elite_mean"]) for r in h]),
            "search mean on held-out days": (
                it,
                [float(r.get("eval_objective_mean", r["eval_profit_mean"])) for r in h],
            ),
        }
    except (KeyError, TypeError, AttributeError) as exc:
        what = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else "unexpected layout"
        raise InputError(f"--run {run}: {CEM_STATE} is malformed ({what})") from None
    cem = cfg.get("cem") if isinstance(cfg.get("cem"), dict) else {}
    objective = cem.get("objective", "platform_margin")
    label = {"platform_margin": MARGIN_LABEL, "on_time_rate": "on-time rate"}.get(objective, objective)
    return Panel(
        run=run,
        algo="CEM",
        ylabel=label,
        xlabel="iteration",
        series=series,
        scenario=str(cfg["scenario"]) if "scenario" in cfg else None,
        held_out=_held_out(run, cfg),
    )


def _panel(run: Path) -> Panel:
    """The panel of one run folder; ``InputError`` naming ``--run`` when it is none of the runs read here."""
    if not run.is_dir():
        raise InputError(f"--run {run}: no such folder")
    cfg = _config(run)
    algo = cfg.get("algo")
    if (run / DAGGER_STATE).is_file() and algo in (None, "dagger"):
        return _dagger(run, cfg)
    if (run / CEM_STATE).is_file() and algo in (None, "cem"):
        return _cem(run, cfg)
    prog = run / PROGRESS
    if prog.is_file():
        doc = _read_json(run, PROGRESS)
        if isinstance(doc, dict) and doc.get("backend") == "rllib":
            h = [r for r in doc.get("history", []) if r.get("episode_return_mean") is not None]
            return Panel(
                run=run,
                algo="RLlib PPO",
                ylabel="mean episode return",
                xlabel="iteration",
                series={"episode return": ([r["iteration"] for r in h], [r["episode_return_mean"] for r in h])},
            )
    raise InputError(
        f"--run {run}: not a CEM, DAgger or RLlib run (no {CEM_STATE}, {DAGGER_STATE}, or {PROGRESS} of an RLlib run)"
    )


def parse_reference(text: str) -> Reference:
    """``LABEL=VALUE`` (the value after the last ``=``, a finite number) as a reference line."""
    label, eq, value = text.rpartition("=")
    try:
        v = float(value)
    except ValueError:
        v = math.nan
    if not eq or not label.strip() or not math.isfinite(v):
        raise InputError(f"--reference {text!r}: expected LABEL=VALUE with a number VALUE, e.g. batching=3202.4")
    return Reference(label=label.strip(), value=v)


def references_from_eval(folder: Path) -> list[Reference]:
    """One reference per (policy, scenario) row of ``folder/summary.csv`` (``gigdispatch evaluate``): its
    ``reward_mean`` (the mean platform margin, EUR/day). Hindsight-plan rows (the oracle) are left out: not a
    policy. The seeds come from ``episodes.csv`` when the folder has it."""
    what = f"--reference-from-eval {folder}"
    summary = folder / SUMMARY
    if not summary.is_file():
        raise InputError(f"{what}: no {SUMMARY} (give a folder written by gigdispatch evaluate)")
    try:
        with summary.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("policy", "scenario", "reward_mean") if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{what}: {SUMMARY} has no column {', '.join(missing)}")
            rows = list(reader)
        seeds: dict[tuple[str, str], list[int]] = {}
        if (folder / EPISODES).is_file():
            with (folder / EPISODES).open(newline="") as f:
                for r in csv.DictReader(f):
                    seeds.setdefault((r["policy"], r["scenario"]), []).append(int(r["seed"]))
    except (csv.Error, KeyError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{what}: unreadable CSV ({exc})") from None
    out = []
    for r in rows:
        if r.get("kind", KIND_POLICY) != KIND_POLICY:
            continue
        try:
            v = float(r["reward_mean"])
        except ValueError:
            raise InputError(f"{what}: {SUMMARY} reward_mean {r['reward_mean']!r} is not a number") from None
        key = (r["policy"], r["scenario"])
        out.append(Reference(r["policy"], v, scenario=r["scenario"], seeds=seeds.get(key), source=what))
    if not out:
        raise InputError(f"{what}: {SUMMARY} has no policy rows")
    return out


def _scenario_name(spec: str, names: set[str]) -> str:
    """The scenario name ``gigdispatch evaluate`` writes for the run's ``scenario`` (a name, or a file whose
    ``name`` it is)."""
    if spec in names:
        return spec
    from gigdispatch.envs import load_scenario

    try:
        return load_scenario(spec).name
    except (ValueError, OSError):
        return spec


def _panel_references(panel: Panel, refs: list[Reference]) -> list[tuple[str, float]]:
    """The (legend label, value) of each reference line on ``panel``: every hand-given one; each evaluation
    row of the panel's scenario, its label saying whether it was measured on the curve's days."""
    if not panel.margin:
        return []
    out = []
    names = {r.scenario for r in refs if r.scenario is not None}
    scen = _scenario_name(panel.scenario, names) if panel.scenario is not None else None
    for r in refs:
        if r.scenario is None:
            out.append((f"{r.label}: {r.value:,.0f}", r.value))
            continue
        if r.scenario != scen:
            continue
        if r.seeds is None:
            days = "days unknown: no episodes.csv"
        elif panel.held_out is not None and sorted(r.seeds) == sorted(panel.held_out):
            days = "same days"
        else:
            days = f"seeds {format_seeds(sorted(r.seeds))}: other days"
        out.append((f"{r.label}: {r.value:,.0f} ({days})", r.value))
    return out


def _check_eval_scenarios(panels: list[Panel], refs: list[Reference]) -> None:
    """An evaluation folder with no row for any margin panel's scenario draws nothing: say so, naming it."""
    by_source: dict[str, set[str]] = {}
    for r in refs:
        if r.scenario is not None:
            by_source.setdefault(r.source, set()).add(r.scenario)
    for source, scens in by_source.items():
        wanted = {_scenario_name(p.scenario, scens) for p in panels if p.margin and p.scenario is not None}
        if not wanted & scens:
            shown = ", ".join(sorted(wanted)) or "none known (no config.yaml, or no margin curve)"
            raise InputError(f"{source}: no rows for the runs' scenario ({shown}); it has {', '.join(sorted(scens))}")


def _title(panel: Panel) -> str:
    head = f"{panel.run.name} ({panel.algo}{', ' + panel.scenario if panel.scenario else ''})"
    if panel.algo in ("CEM", "DAgger"):
        if panel.held_out:
            days = f"{panel.scenario or 'scenario ?'} seeds {format_seeds(panel.held_out)}"
        else:
            days = "unknown (no eval.seeds in config.yaml)"
        head += f"\nheld-out days: {days} (eval.seeds[:eval.episodes])"
    return head


def figure(runs: list[Path], references: list[Reference] | None = None) -> Any:
    """The learning curves of ``runs``, one panel each (iterations and rounds on integer ticks), with the
    ``references`` as dashed horizontal lines on the panels whose curve is the platform margin; DAgger panels
    get the training loss and accuracy in a small panel below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    refs = references or []
    panels = [_panel(r) for r in runs]
    _check_eval_scenarios(panels, refs)
    lower = any(p.training for p in panels)
    fig, axes = plt.subplots(
        2 if lower else 1,
        len(panels),
        figsize=(8.5 * len(panels), 6.5 if lower else 4.5),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]} if lower else None,
        layout="constrained",
    )
    for i, panel in enumerate(panels):
        ax = axes[0][i]
        for label, (x, y) in panel.light.items():
            ax.plot(x, y, marker=".", lw=1, alpha=0.45, label=f"{label} (held-out)")
        for label, (x, y) in panel.series.items():
            ax.plot(x, y, marker="o", lw=2 if panel.light else 1.5, color="black" if panel.light else None, label=label)
        if panel.selected_bias is not None:
            x, y = next(iter(panel.series.values()))
            for xi, yi, b in zip(x, y, panel.selected_bias, strict=True):
                ax.annotate(f"{b:g}", (xi, yi), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        if panel.best is not None:
            bx, by, blabel = panel.best
            ax.plot([bx], [by], marker="*", ms=14, color="gold", mec="black", ls="none", label=blabel)
        styles = ["--", "-.", (0, (5, 2, 1, 2)), ":"]
        for j, (label, value) in enumerate(_panel_references(panel, refs)):
            ax.axhline(value, ls=styles[j % len(styles)], lw=1.2, color=f"C{(j + 4) % 10}", label=label)
        ax.margins(y=0.08)  # room for the hold_bias numbers above the points
        ax.set_title(_title(panel), fontsize=9)
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations and rounds are whole numbers
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        if panel.selected_bias is not None:
            ax.text(
                0.01, 0.01, "numbers: the round's selected hold_bias", transform=ax.transAxes, fontsize=7, alpha=0.7
            )
        if not lower:
            ax.set_xlabel(panel.xlabel)
            continue
        low = axes[1][i]
        if not panel.training:
            ax.set_xlabel(panel.xlabel)
            low.set_visible(False)
            continue
        x, loss = panel.training["loss"]
        low.plot(x, loss, marker="o", color="C3", label="training loss")
        low.set_ylabel("loss", color="C3", fontsize=8)
        twin = low.twinx()
        twin.plot(*panel.training["accuracy"], marker="s", color="C2", label="training accuracy")
        twin.set_ylabel("accuracy", color="C2", fontsize=8)
        low.grid(alpha=0.3)
        low.set_xlim(ax.get_xlim())
        if panel.samples is not None and len(x) <= 12:
            low.set_xticks(x, [f"{xi:g}\n{s:,}" for xi, s in zip(x, panel.samples, strict=True)], fontsize=7)
            ax.set_xticks(x)
            low.set_xlabel(f"{panel.xlabel} / samples trained on (all rounds so far)", fontsize=8)
        else:
            low.xaxis.set_major_locator(MaxNLocator(integer=True))
            low.set_xlabel(panel.xlabel, fontsize=8)
        low.legend(handles=low.lines + twin.lines, fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    return fig


def plot(runs: list[Path], out: Path, references: list[Reference] | None = None) -> None:
    """``figure(runs, references)`` written to ``out`` as a PNG, atomically (whole or not at all)."""
    import matplotlib.pyplot as plt

    from gigdispatch.training.report import write_png

    fig = figure(runs, references)
    try:
        write_png(fig, out, dpi=110)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gigdispatch.training.curves",
        description="Learning curves of CEM, DAgger and RLlib training runs as one PNG (one panel per run), "
        "with optional reference lines (other policies' mean margins on the same held-out days).",
        epilog="Example: python -m gigdispatch.training.curves --run runs/neural-default-RUN "
        "--reference-from-eval /tmp/ref-default --out docs/results/learning_curve_neural_default.png "
        "(where /tmp/ref-default came from gigdispatch evaluate --seeds on the run's held-out seeds, "
        "eval.seeds[:eval.episodes] of its config.yaml, named in each panel's title).",
    )
    ap.add_argument(
        "--run",
        action="append",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="a run folder: cem_state.json (algo: cem), dagger_state.json (algo: dagger) or an RLlib "
        "progress.json (repeatable: one panel each)",
    )
    ap.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="a dashed horizontal line at VALUE (EUR/day) labelled LABEL on every platform-margin panel, e.g. "
        "batching=3202.4; measure it on the panel's held-out days (repeatable)",
    )
    ap.add_argument(
        "--reference-from-eval",
        action="append",
        default=[],
        type=Path,
        metavar="EVAL_DIR",
        help="a gigdispatch evaluate output folder: one line per policy of summary.csv (reward_mean) for each "
        "panel's scenario; the legend says whether episodes.csv shows the curve's days (repeatable)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE.png",
        help="the PNG to write (atomically; its folder must exist)",
    )
    args = ap.parse_args(argv)
    try:
        check_out_file(args.out, "--out")  # a file: its folder must exist
        refs = [parse_reference(t) for t in args.reference]
        for d in args.reference_from_eval:
            refs += references_from_eval(d)
        plot(args.run, args.out, refs)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
