"""``gigdispatch serve``: the HTTP inference service (FastAPI on uvicorn), see ``gigdispatch.service``.

The scenario and the policy are loaded once when the server starts; a bad scenario or policy name,
port or limit ends with a one-line ``error: ...`` before anything listens. The service binds to
127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from gigdispatch.training.argtypes import whole_number
from gigdispatch.training.errors import CliError


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(scenario: str, policy: str, *extra_args: str, wait_s: float = 60.0) -> Iterator[str]:
    """Run ``gigdispatch serve`` in a child process on a free loopback port; yield its base URL once
    ``/healthz`` answers, and always stop it afterwards (``server_process``)."""
    with server_process("serve", "--scenario", scenario, "--policy", policy, *extra_args, wait_s=wait_s) as base:
        yield base


@contextlib.contextmanager
def server_process(command: str, *args: str, wait_s: float = 60.0) -> Iterator[str]:
    """Run ``gigdispatch COMMAND ARGS --port P`` (``serve``, ``dashboard``) in a child process on a free loopback
    port; yield its base URL once ``/healthz`` answers, and always stop it afterwards. The child's stderr goes to
    a temporary file (a pipe nobody reads could fill up and stall the server); its tail is in the error if it
    fails to start."""
    port = free_port()
    cmd = [sys.executable, "-m", "gigdispatch.training.cli", command, *args, "--port", str(port)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + wait_s
            while True:
                if proc.poll() is not None:
                    err.seek(0)
                    raise RuntimeError(f"the server exited: {err.read().decode(errors='replace')[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{base}/healthz", timeout=2.0) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not answer /healthz within {wait_s:g} s")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a whole number, got {text!r}") from None
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {n}")
    return n


def _body_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"max body bytes must be a whole number, got {text!r}") from None
    if n < 1024:
        raise argparse.ArgumentTypeError(f"max body bytes must be at least 1024, got {n}")
    return n


def check_token(token: str | None) -> None:
    """``--token``: absent, or not blank."""
    if token is not None and not token.strip():
        raise CliError("--token: must not be empty")


def run_uvicorn(app: object, args: argparse.Namespace, **options: object) -> None:
    """Serve ``app`` on ``--host``/``--port`` with uvicorn until stopped; a port that cannot be bound is one
    ``CliError`` line."""
    import uvicorn

    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, **options)
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        if exc.code:
            raise CliError(
                f"--port: could not serve on {args.host}:{args.port} (address in use or not allowed)"
            ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - the serve extra is installed (run_uvicorn uses it)

        from gigdispatch.service import create_app
        from gigdispatch.service.state import ServeState
    except ModuleNotFoundError as exc:
        raise CliError(
            f"serving needs the 'serve' extra (fastapi, uvicorn): {exc.name} is not installed; "
            "pip install 'gigdispatch[serve]'"
        ) from None
    check_token(args.token)
    state = ServeState(args.scenario, args.policy, seed=args.seed)  # ScenarioError / UnknownPolicyError -> one line
    app = create_app(args.scenario, args.policy, token=args.token, max_body_bytes=args.max_body_bytes, state=state)
    print(
        f"gigdispatch serve: policy={state.policy_name} scenario={state.scenario.name} on http://{args.host}:{args.port}",
        flush=True,
    )
    run_uvicorn(app, args)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a policy over HTTP (dispatch, reposition, quote, healthz, metrics)",
        description=(
            "Serve POLICY for the city of SCENARIO over HTTP: POST /v1/dispatch, /v1/reposition, /v1/quote; "
            "GET /healthz, /metrics, /docs. See docs/serving.md."
        ),
        epilog="Example: gigdispatch serve --policy nearest --scenario default --port 8000 --token s3cret",
    )
    p.add_argument("--policy", default="nearest", help="policy name or training run folder [default: %(default)s]")
    p.add_argument(
        "--scenario",
        default="default",
        help="built-in name, YAML file or MDRP folder: the city served [default: %(default)s]",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind [default: %(default)s]")
    p.add_argument("--port", type=_port, default=8000, help="TCP port [default: %(default)s]")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on the /v1 endpoints")
    p.add_argument(
        "--max-body-bytes",
        type=_body_limit,
        default=16 * 1024 * 1024,
        help="larger bodies get 413 [default: %(default)s]",
    )
    p.add_argument(
        "--seed",
        type=whole_number(0),
        default=0,
        help="seed of the start-up reset (policy RNG stream) [default: %(default)s]",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level",
    )
    p.set_defaults(func=cmd_serve)
