"""``gigdispatch dashboard``: watch a day live in the browser, or replay recorded days (``service.dashboard``).

Live: the scenario and policy are loaded, the day reset, before anything listens (a bad name is one line);
the day starts stepping when the server starts. Replay: each ``--replay FILE`` is read and checked first
(``envs.frames.read_recording``). The server binds to 127.0.0.1 unless ``--host`` says otherwise and prints
the page's address (with ``#token=...`` when a token is set: the page sends it as a bearer token).
"""

from __future__ import annotations

import argparse

from gigdispatch.training.argtypes import whole_number
from gigdispatch.training.errors import CliError
from gigdispatch.training.serve_cli import _port, check_token, run_uvicorn


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not x > 0 or x > 60:
        raise argparse.ArgumentTypeError(f"must be in (0, 60], got {text}")
    return x


def _speed(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number (simulated seconds per second; 0 = max), got {text!r}"
        ) from None
    if not 0 <= x <= 100_000:
        raise argparse.ArgumentTypeError(f"must be in 0..100000 (0 = as fast as it goes), got {text}")
    return x


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - the serve extra is installed (run_uvicorn uses it)

        from gigdispatch.service.dashboard import LiveRun, ReplayRun, create_dashboard_app
    except ModuleNotFoundError as exc:
        raise CliError(
            f"the dashboard needs the 'serve' extra (fastapi, uvicorn): {exc.name} is not installed; "
            "pip install 'gigdispatch[serve]'"
        ) from None
    check_token(args.token)
    if args.replay:
        if len(args.replay) > 2:
            raise CliError(f"--replay: at most two recordings side by side, got {len(args.replay)}")
        replays = [ReplayRun(p) for p in args.replay]  # RecordingError: one line naming the file
        app = create_dashboard_app(replays=replays, token=args.token)
        what = " | ".join(f"{r.label} ({len(r.frames)} frames)" for r in replays)
        title = f"gigdispatch dashboard: replay {what}"
    else:
        from gigdispatch.agents import make_policy
        from gigdispatch.envs import Simulator, load_scenario

        scenario = load_scenario(args.scenario)
        policy = make_policy(args.policy)
        live = LiveRun(Simulator(scenario), policy, policy.name, args.seed, speed=args.speed, fps=args.fps)
        app = create_dashboard_app(live=live, token=args.token)
        title = f"gigdispatch dashboard: scenario={scenario.name} policy={policy.name} seed={args.seed} live"
    url = f"http://{args.host}:{args.port}/" + (f"#token={args.token}" if args.token else "")
    print(f"{title}\nopen {url}", flush=True)
    run_uvicorn(app, args, timeout_graceful_shutdown=3)  # an open event stream never ends by itself: 3 s
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="watch a day live in the browser, or replay recorded days (side by side)",
        description=(
            "Run a day of SCENARIO with POLICY and serve the manager dashboard (map, KPIs, ledger, driver "
            "scorecards, tracking API) on 127.0.0.1; or, with --replay, open recorded days (gigdispatch simulate "
            "--record FILE). See docs/dashboard.md."
        ),
        epilog=(
            "Examples: gigdispatch dashboard --scenario city-1000 --policy hungarian --speed 300 | "
            "gigdispatch simulate --policy nearest --record a.jsonl.xz && gigdispatch simulate --policy hungarian "
            "--record b.jsonl.xz && gigdispatch dashboard --replay a.jsonl.xz --replay b.jsonl.xz"
        ),
    )
    p.add_argument(
        "--scenario", default="default", help="built-in name, YAML file or MDRP folder [default: %(default)s]"
    )
    p.add_argument(
        "--policy", default="nearest", help="registry name, training run folder or checkpoint [default: %(default)s]"
    )
    p.add_argument("--seed", type=whole_number(0), default=0, help="the day's seed [default: %(default)s]")
    p.add_argument(
        "--speed",
        type=_speed,
        default=60.0,
        help="simulated seconds per wall second (60: a minute a second; 0: as fast as it goes); the page can "
        "change it [default: %(default)s]",
    )
    p.add_argument("--fps", type=_positive, default=5.0, help="frames sent per second, at most [default: %(default)s]")
    p.add_argument(
        "--replay",
        action="append",
        metavar="FILE",
        help="open a recorded day instead of running one (twice: two days side by side on one slider)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind [default: %(default)s]")
    p.add_argument("--port", type=_port, default=8050, help="port [default: %(default)s]")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on the API (the printed URL carries it)")
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn's"
    )
    p.set_defaults(func=cmd_dashboard)
