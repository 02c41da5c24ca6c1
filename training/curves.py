"""Learning curves of training runs as one PNG:
``python -m gigdispatch.training.curves --run RUN_DIR ... --out FILE.png``.

Reads what each run folder records per iteration: ``cem_state.json`` (``algo: cem``: the population's mean,
the elite's mean and the held-out mean of the search distribution's mean, EUR per day) or ``progress.json``
of an RLlib run (mean episode return). One panel per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gigdispatch.training.io import check_out_file
from gigdispatch.training.runs import CEM_STATE, CONFIG, PROGRESS


def _series(run: Path) -> tuple[str, str, dict[str, tuple[list[int], list[float]]]]:
    if (run / CEM_STATE).is_file():
        h = json.loads((run / CEM_STATE).read_text())["history"]
        it = [r["iteration"] for r in h]
        objective = "platform_margin"
        if (run / CONFIG).is_file():
            import yaml

            objective = (yaml.safe_load((run / CONFIG).read_text()) or {}).get("cem", {}).get("objective", objective)
        label = {"platform_margin": "platform margin, EUR/day", "on_time_rate": "on-time rate"}.get(
            objective, objective
        )
        return (
            "CEM",
            label,
            {
                "population mean (training days)": (it, [r["population_mean"] for r in h]),
                "elite mean (training days)": (it, [r["elite_mean"] for r in h]),
                "search mean on held-out days": (it, [r.get("eval_objective_mean", r["eval_profit_mean"]) for r in h]),
            },
        )
    prog = run / PROGRESS
    if prog.is_file():
        doc = json.loads(prog.read_text())
        if doc.get("backend") == "rllib":
            h = [r for r in doc["history"] if r.get("episode_return_mean") is not None]
            return (
                "RLlib PPO",
                "mean episode return",
                {"episode return": ([r["iteration"] for r in h], [r["episode_return_mean"] for r in h])},
            )
    raise ValueError(f"--run {run}: no per-iteration history (cem_state.json, or progress.json of an RLlib run)")


def figure(runs: list[Path]) -> Any:
    """The learning curves of ``runs``, one panel each (iterations on integer ticks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = [(_series(r), r) for r in runs]
    fig, axes = plt.subplots(1, len(data), figsize=(6 * len(data), 4), squeeze=False)
    for ax, ((algo, ylabel, series), run) in zip(axes[0], data, strict=True):
        for label, (x, y) in series.items():
            ax.plot(x, y, marker="o", label=label)
        ax.set_title(f"{run.name} ({algo})", fontsize=9)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(runs: list[Path], out: Path) -> None:
    import matplotlib.pyplot as plt

    from gigdispatch.training.report import write_png

    fig = figure(runs)
    write_png(fig, out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gigdispatch.training.curves", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run",
        action="append",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="a run folder (repeatable: one panel each)",
    )
    ap.add_argument("--out", type=Path, required=True, metavar="FILE.png", help="the PNG to write")
    args = ap.parse_args(argv)
    try:
        check_out_file(args.out, "--out")  # a file: its folder must exist
        plot(args.run, args.out)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
