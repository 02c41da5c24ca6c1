"""The gigdispatch command line: output, errors without tracebacks, atomic result files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gigdispatch.training.cli import main

REQUIRED = (
    "orders_created",
    "orders_delivered",
    "orders_cancelled",
    "orders_open",
    "on_time_rate",
    "click_to_door_mean_min",
    "cost_per_order",
    "fees_total",
    "payouts_total",
    "refunds_total",
    "platform_margin",
    "sim_seconds",
    "wall_seconds",
)


def test_simulate_json_has_required_kpis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "default", "--policy", "nearest", "--seed", "1", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    missing = [k for k in REQUIRED if k not in rec]
    assert not missing
    assert rec["orders_created"] == rec["orders_delivered"] + rec["orders_cancelled"] + rec["orders_open"]
    assert rec["orders_created"] > 500  # the default day has ~1,500 orders placed
    assert abs(rec["fees_total"] - (rec["payouts_total"] + rec["refunds_total"] + rec["platform_margin"])) < 0.005
    assert rec["sim_seconds"] >= 8 * 3600


def test_simulate_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "on_time_rate" in out and "platform_margin" in out and "x real time" in out


def test_out_file_written_and_nan_is_null(tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "mdrp.json"
    from pathlib import Path

    inst = Path(__file__).resolve().parents[1].parent / "shared/data/mdrplib/public_instances/0o50t75s1p100"
    if not inst.is_dir():
        pytest.skip("MDRP data not present beside the repository")
    assert main(["simulate", "--scenario", str(inst), "--out", str(out), "--json"]) == 0
    rec = json.loads(out.read_text())
    assert rec["acceptance_rate"] is None  # couriers always accept: no gig offers, so no rate (NaN -> null)
    assert rec["orders_created"] == 252
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "--scenario", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["simulate", "--policy", "teleport"], "unknown policy 'teleport'"),
        (["simulate", "--scenario", "/nonexistent/city.yaml"], "no such file"),
    ],
)
def test_bad_input_is_one_line_error(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_yaml_names_field(tmp_path, capsys) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("fleet:\n  drivers: -3\n  colour: red\n")
    assert main(["simulate", "--scenario", str(p)]) == 2
    err = capsys.readouterr().err
    assert "fleet.drivers" in err and "fleet.colour" in err and "unknown field" in err


def test_bad_seed_rejected_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--seed", "abc"])
    assert e.value.code == 2
    assert "--seed" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [[], ["simulate"], ["scenarios"]])
def test_help_everywhere(cmd: list[str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", *cmd, "--help"], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0 and "usage: gigdispatch" in r.stdout


def test_scenarios_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "city-1000" in out


def test_cli_starts_without_the_heavy_optional_dependencies() -> None:
    """Every command is attached statically, yet torch, SB3, Ray, FastAPI and ONNX load only when used."""
    heavy = ["torch", "stable_baselines3", "sb3_contrib", "ray", "fastapi", "uvicorn", "onnxruntime", "matplotlib"]
    code = (
        "import sys; from gigdispatch.training.cli import build_parser; "
        "cmds = build_parser()._subparsers._group_actions[0].choices; "
        f"print(sorted(cmds)); print([m for m in {heavy!r} if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    commands, loaded = r.stdout.splitlines()
    assert commands == str(["evaluate", "export", "mdrp", "scenarios", "serve", "simulate", "train"])
    assert loaded == "[]"


def test_every_training_error_derives_from_the_package_base() -> None:
    """Each error class defined under training/ (and the agents' policy errors it shows) is a GigdispatchError."""
    import importlib
    import inspect
    import pkgutil

    import gigdispatch.training as training
    from gigdispatch.agents.learned import LearnedPolicyError
    from gigdispatch.agents.registry import UnknownPolicyError
    from gigdispatch.envs.core.errors import GigdispatchError, InputError

    found = {}
    for info in pkgutil.iter_modules(training.__path__):
        mod = importlib.import_module(f"gigdispatch.training.{info.name}")
        for name, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found[f"{info.name}.{name}"] = obj
    assert {"errors.CliError", "errors.TrainError", "config.ConfigError", "export.ExportError"} <= set(found)
    assert [n for n, c in found.items() if not issubclass(c, GigdispatchError)] == []
    assert issubclass(UnknownPolicyError, InputError) and issubclass(LearnedPolicyError, InputError)


def test_cli_error_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A command raising CliError (without importing the CLI) ends with one error line and exit status 2."""
    from gigdispatch.training import cli
    from gigdispatch.training.errors import CliError

    def fail(args: object) -> int:
        raise CliError("--thing: broken on purpose")

    monkeypatch.setattr(cli, "cmd_scenarios", fail)
    assert main(["scenarios"]) == 2
    assert capsys.readouterr().err == "error: --thing: broken on purpose\n"
