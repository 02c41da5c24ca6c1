"""The gigdispatch command line: output, errors without tracebacks, atomic result files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    out.parent.mkdir()  # a file's folder must exist (never created for it)
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
    assert commands == str(["dashboard", "evaluate", "export", "mdrp", "scenarios", "serve", "simulate", "train"])
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


# ------------------------------------------------------------------------------ damaged checkpoints
CORRUPTIONS = ("truncated", "garbage-weights", "no-data", "not-a-zip")


def _damaged(src: Path, kind: str, dst: Path) -> None:
    """``src`` (an SB3 checkpoint) written to ``dst`` damaged in one of the ways a disk, a copy or a hand does."""
    import zipfile

    data = src.read_bytes()
    if kind == "truncated":
        dst.write_bytes(data[: min(100_000, len(data) // 2)])
    elif kind == "not-a-zip":
        dst.write_bytes(b"this is not a checkpoint\n" * 100)
    else:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
            for name in zin.namelist():
                if kind == "no-data" and name == "data":
                    continue
                body = zin.read(name)
                if kind == "garbage-weights" and name == "policy.pth":
                    body = b"\x80\x02garbage, not torch weights" * 64
                zout.writestr(name, body)


@pytest.fixture(scope="module")
def damaged_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run folder per kind of damage: the smoke config, and checkpoints/best.zip damaged (an untrained model)."""
    pytest.importorskip("sb3_contrib")
    from gigdispatch.training.config import load_config
    from gigdispatch.training.runs import save_checkpoint
    from gigdispatch.training.train import build_model, make_train_env

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs/train/smoke.yaml")
    root = tmp_path_factory.mktemp("damaged")
    good = root / "good.zip"
    env = make_train_env(cfg)
    save_checkpoint(build_model(cfg, env), good)
    env.close()
    runs = {}
    for kind in CORRUPTIONS:
        run = root / kind
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text(cfg.to_yaml())
        _damaged(good, kind, run / "checkpoints" / "best.zip")
        runs[kind] = run
    return runs


def _tiny() -> str:
    return str(Path(__file__).resolve().parents[1] / "configs/train/scenarios/tiny.yaml")


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("command", ["simulate", "evaluate", "serve", "export"])
def test_a_damaged_checkpoint_is_one_line_in_every_command(
    command: str, kind: str, damaged_runs: dict, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = damaged_runs[kind]
    argv = {
        "simulate": ["simulate", "--scenario", _tiny(), "--policy", str(run)],
        "evaluate": [
            "evaluate",
            "--scenario",
            _tiny(),
            "--policy",
            str(run),
            "--seeds",
            "0",
            "--workers",
            "1",
            "--out",
            str(tmp_path / "eval"),
            "--no-plots",
        ],
        "serve": ["serve", "--scenario", _tiny(), "--policy", str(run), "--port", "0"],
        "export": ["export", "--checkpoint", str(run), "--out", str(tmp_path / "p.onnx")],
    }[command]
    if command in ("serve", "export"):
        pytest.importorskip("fastapi" if command == "serve" else "onnxruntime")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: ") and not err.lower().startswith("error: error")
    assert "error: Error" not in err and "file an issue" not in err
    assert str(run / "checkpoints" / "best.zip") in err and "re-train it or restore it" in err, err
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_the_service_refuses_to_start_on_a_damaged_checkpoint(kind: str, damaged_runs: dict) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gigdispatch.agents.learned import CorruptCheckpointError
    from gigdispatch.agents.registry import UnknownPolicyError, make_policy
    from gigdispatch.service import create_app

    run = damaged_runs[kind]
    with pytest.raises(UnknownPolicyError) as err, TestClient(create_app(_tiny(), str(run))):
        pass
    msg = str(err.value)
    assert "\n" not in msg and str(run / "checkpoints" / "best.zip") in msg and "re-train" in msg
    with pytest.raises(CorruptCheckpointError):  # the one place that loads SB3 checkpoints
        from gigdispatch.agents.learned import LearnedDispatchPolicy

        LearnedDispatchPolicy(run)
    with pytest.raises(UnknownPolicyError, match="not a loadable SB3 checkpoint"):
        make_policy(str(run / "checkpoints" / "best.zip"))


def _all_parsers() -> dict[str, object]:
    from gigdispatch.training.cli import build_parser

    top = build_parser()
    sub = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction")
    return {"gigdispatch": top, **{f"gigdispatch {n}": p for n, p in sub.choices.items()}}


def test_no_doubled_percent_in_any_help() -> None:
    """argparse only un-escapes '%%' in help strings of arguments: a description with '%%' prints it doubled."""
    parsers = _all_parsers()
    assert {"gigdispatch evaluate", "gigdispatch mdrp", "gigdispatch train", "gigdispatch simulate"} <= set(parsers)
    for name, parser in parsers.items():
        text = parser.format_help()
        assert "%%" not in text, name
    assert "95 % CIs" in " ".join(parsers["gigdispatch evaluate"].format_help().split())


def test_top_level_help_names_cem_and_simulate_policy_forms() -> None:
    parsers = _all_parsers()
    top = " ".join(parsers["gigdispatch"].format_help().split())
    assert "CEM" in top and "PPO" in top
    sim = " ".join(parsers["gigdispatch simulate"].format_help().split())
    assert ".onnx" in sim and "run folder" in sim and "LABEL=" in sim


@pytest.mark.parametrize("policy", ["fast=nearest", "mine=checkpoints/dispatch"])
def test_simulate_label_form_points_at_evaluate(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--policy", policy]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --policy")
    assert "evaluate" in err and f"--policy {policy.split('=', 1)[1]}" in err and "Traceback" not in err
