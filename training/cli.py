"""The ``gigdispatch`` command: one entry point, one subcommand per job.

Every subcommand has ``--help``. Bad input (scenario, policy, seed, paths: an ``InputError``) or a
``CliError`` ends with a one-line ``error: ...`` naming what is wrong and exit status 2, never a traceback.
The ``simulate`` and ``scenarios`` commands live here; every other command lives in its own module with
``add_parser(sub)`` setting ``func``, imported below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gigdispatch.envs.core.errors import InputError
from gigdispatch.training import dashboard_cli, evaluate, export, mdrp, serve_cli, train
from gigdispatch.training.argtypes import whole_number
from gigdispatch.training.errors import CliError

__all__ = ["EXIT_USAGE", "CliError", "build_parser", "main"]

EXIT_USAGE = 2
COMMANDS = (evaluate, mdrp, train, serve_cli, dashboard_cli, export)  # modules adding one subcommand each (add_parser)

_seed = whole_number(0)


def _progress(enabled: bool | None, total: int, desc: str) -> Callable[[object], None] | None:
    """A tqdm bar on a terminal (``enabled=None``: only when stderr is a TTY)."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit="step",
        disable=(not sys.stderr.isatty()) if enabled is None else not enabled,
        leave=False,
    )
    state = {"n": 0}

    def tick(sim: object) -> None:
        state["n"] += 1
        bar.update(1)
        if getattr(sim, "done", False):
            bar.close()

    return tick


def format_kpi_table(kpis: dict[str, float], title: str) -> str:
    from gigdispatch.envs.core.kpis import KPI_DOC

    rows = []
    for name, value in kpis.items():
        unit = KPI_DOC.get(name, ("", ""))[0]
        if isinstance(value, float):
            shown = "n/a" if value != value else (f"{value:,.3f}" if abs(value) < 10 else f"{value:,.2f}")
        else:
            shown = f"{value:,}" if isinstance(value, int) else str(value)
        rows.append((name, shown, unit))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [title, "-" * (w0 + w1 + 8)]
    lines += [f"{n:<{w0}}  {v:>{w1}}  {u}" for n, v, u in rows]
    return "\n".join(lines)


def cmd_simulate(args: argparse.Namespace) -> int:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.frames import Recorder
    from gigdispatch.training.io import atomic_write_json, check_out_file, json_safe

    if args.out:  # a file: its folder must exist (checked before the day is run)
        check_out_file(args.out, "--out")
    if "=" in args.policy and not Path(args.policy).exists():  # LABEL=P is the results label of evaluate and mdrp
        spec = args.policy.split("=", 1)[1]
        raise CliError(
            f"--policy {args.policy!r}: LABEL=P names a policy in the results of 'gigdispatch evaluate' and "
            f"'gigdispatch mdrp'; simulate runs one policy: give --policy {spec.strip() or 'P'}"
        )
    if args.record:
        check_out_file(args.record, "--record")
    scenario = load_scenario(args.scenario)
    policy = make_policy(args.policy)
    sim = Simulator(scenario)
    t0 = time.perf_counter()
    tick = _progress(args.progress, sim.n_steps, f"{scenario.name} / {policy.name}")
    rec = Recorder(args.record, policy.name, args.seed) if args.record else None
    if rec is not None:
        bar = tick

        def tick(s: Simulator) -> None:  # record the step, then move the bar
            rec(s)
            if bar is not None:
                bar(s)

    try:
        kpis = sim.run(policy, seed=args.seed, progress=tick)
    except BaseException:
        if rec is not None:
            rec.abort()
        raise
    if rec is not None:
        rec.close()
    wall = time.perf_counter() - t0
    kpis["wall_seconds"] = wall
    record = {"scenario": scenario.name, "policy": policy.name, "seed": args.seed, **kpis}
    if args.out:
        atomic_write_json(args.out, record)
    if args.json:
        print(json.dumps(json_safe(record)))
    else:
        print(
            format_kpi_table(
                kpis, f"gigdispatch simulate: scenario={scenario.name} policy={policy.name} seed={args.seed}"
            )
        )
        print(
            f"\nsimulated {kpis['sim_seconds'] / 3600:.1f} h in {wall:.2f} s wall "
            f"({kpis['sim_seconds'] / max(wall, 1e-9):,.0f}x real time)"
        )
    return 0


def cmd_scenarios(args: argparse.Namespace) -> int:
    from gigdispatch.envs.scenarios import builtin_names, configs_dir, load_scenario

    for name in builtin_names():
        sc = load_scenario(name)
        print(f"{name:<12} {sc.cfg.description}")
    print(
        f"\n(built-in scenarios live in {configs_dir() / 'scenarios'}; "
        "any YAML file or MDRP instance folder also works)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gigdispatch",
        description="gigdispatch: a simulator and RL toolkit for gig-economy delivery dispatch.",
        epilog="Run 'gigdispatch COMMAND --help' for a command's options.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "simulate",
        help="run one day of a scenario with a policy and print the KPIs",
        description="Run one episode (a day) of SCENARIO with POLICY and print its KPIs as a table or JSON.",
    )
    s.add_argument(
        "--scenario",
        default="default",
        help="built-in name (default, city-1000), a YAML file, or an MDRP instance folder [default: %(default)s]",
    )
    s.add_argument(
        "--policy",
        default="nearest",
        help="a registry name (nearest, hungarian, ...), a training run folder, a checkpoint .zip, a policy.json "
        "(or its folder) or an exported .onnx; no LABEL= (that names policies in evaluate and mdrp results) "
        "[default: %(default)s]",
    )
    s.add_argument("--seed", type=_seed, default=0, help="episode seed (same seed, same day) [default: %(default)s]")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    s.add_argument(
        "--out", metavar="FILE.json", help="also write the JSON record to this file (atomically; its folder must exist)"
    )
    s.add_argument(
        "--record",
        metavar="FILE.jsonl.xz",
        help="record the day for 'gigdispatch dashboard --replay FILE' (a frame per step, xz JSON lines; written "
        "atomically; its folder must exist)",
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    s.set_defaults(func=cmd_simulate)
    sc = sub.add_parser(
        "scenarios",
        help="list the built-in scenarios",
        description="List the built-in scenarios with their descriptions.",
    )
    sc.set_defaults(func=cmd_scenarios)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (InputError, CliError) as exc:  # scenario, policy, seed, action, config, paths: one line
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into a program that stopped reading (e.g. head)
        sys.stderr.close()
        return 0
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
