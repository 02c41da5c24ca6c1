"""``gigdispatch export`` -- the trained Dispatch-v0 policy as one ONNX graph (preprocessing,
masking, argmax inside), verified against the torch policy, and ``OnnxDispatchPolicy`` in the simulator.
Tiny runs of ``configs/train/smoke.yaml`` (8 drivers, 1.5 h); observations from held-out seeds >= 5000."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from gigdispatch.training.config import load_config
from gigdispatch.training.runs import load_run_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/train/smoke.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A MaskablePPO smoke run (512 steps) and a PPO one (128 steps), no periodic evaluation."""
    from gigdispatch.training.train import train

    out = tmp_path_factory.mktemp("runs")
    masked = train(load_config(SMOKE, ["eval.every_steps=0"]), out, command="pytest export")
    ppo = train(
        load_config(SMOKE, ["algo=ppo", "name=smoke-ppo", "total_timesteps=128", "eval.every_steps=0"]),
        out,
        command="pytest",
    )
    return {"masked": masked, "ppo": ppo}


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gigdispatch.training.export import export_policy

    out = tmp_path_factory.mktemp("onnx") / "smoke.onnx"
    meta = export_policy(runs["masked"], out, check=200)
    assert meta["verified"]["observations"] == meta["verified"]["identical"] == 200
    return out


def _rollout(learned, seeds: list[int], n: int):
    """Independent recording (not the exporter's): obs, masks and torch's deterministic masked actions."""
    from gigdispatch.envs.core.seeding import SeedSchedule
    from gigdispatch.training.train import dispatch_env

    env = dispatch_env(load_run_config(learned.run_dir), SeedSchedule(seeds=seeds))
    rows: dict[str, list] = {"orders": [], "candidates": [], "globals": [], "action_mask": []}
    actions = []
    for _ in seeds:
        obs, _ = env.reset()
        done = False
        while not done and len(actions) < n:
            mask = env.action_masks()
            a, _ = learned.model.predict(obs, action_masks=mask, deterministic=True)
            for key in ("orders", "candidates", "globals"):
                rows[key].append(obs[key])
            rows["action_mask"].append(mask)
            actions.append(a)
            obs, _, done, _, _ = env.step(a)
    assert len(actions) >= n, "not enough decision epochs in the given days"
    return {k: np.stack(v) for k, v in rows.items()}, np.stack(actions).astype(np.int64)


def test_onnx_decisions_equal_torch(runs: dict[str, Path], exported: Path) -> None:
    import onnx

    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.training.export import ort_session, sidecar_path

    onnx.checker.check_model(onnx.load(str(exported)))
    meta = json.loads(sidecar_path(exported).read_text())
    assert meta["config"] == str((runs["masked"] / "config.yaml").resolve())
    assert meta["inputs"]["candidates"]["shape"] == ["batch", 4 * 2 * 9] and meta["action_nvec"] == [3] * 4 + [4] * 4
    assert meta["opset"] >= 17 and meta["versions"]["onnxruntime"] != "not installed"
    assert min(meta["verified"]["seeds"]) >= 1000
    assert not list(exported.parent.glob("*.tmp"))

    learned = LearnedDispatchPolicy(runs["masked"])
    feed, torch_actions = _rollout(learned, list(range(7000, 7010)), 250)
    sess = ort_session(exported)
    assert [i.name for i in sess.get_inputs()] == ["orders", "candidates", "globals", "action_mask"]
    onnx_actions = sess.run(["action"], feed)[0]
    assert onnx_actions.dtype == np.int64 and onnx_actions.shape == (250, 8)
    np.testing.assert_array_equal(onnx_actions, torch_actions)
    assert (torch_actions[:, :4] < 2).any() and (torch_actions[:, :4] == 2).any()  # offers and holds: a real comparison

    # the masking is inside the graph: with only hold / level 0 allowed, the graph holds everything
    only_hold = np.zeros_like(feed["action_mask"])
    only_hold[:, 2:12:3] = True  # hold of each of the 4 order slots (k=2 -> index 2 of each 3)
    only_hold[:, 12::4] = True  # level 0 of each slot
    held = sess.run(["action"], {**feed, "action_mask": only_hold})[0]
    assert (held[:, :4] == 2).all() and (held[:, 4:] == 0).all()


def test_onnx_policy_same_day_as_learned(runs: dict[str, Path], exported: Path) -> None:
    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy
    from gigdispatch.envs import Simulator, load_scenario

    learned, onnx_pol = LearnedDispatchPolicy(runs["masked"]), OnnxDispatchPolicy(exported)
    sim = Simulator(load_scenario(load_run_config(learned.run_dir).scenario))
    for seed in (5000, 5001):
        a, b = sim.run(learned, seed=seed), sim.run(onnx_pol, seed=seed)
        keys = [k for k in a if k != "wall_seconds"]
        assert {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, nan_ok=True, rel=0, abs=0)
        assert a["orders_delivered"] > 0
    assert sim.run(onnx_pol, seed=5000)["platform_margin"] == sim.run(learned, seed=5000)["platform_margin"]


def test_ppo_run_exports_with_mask_ignored(runs: dict[str, Path], tmp_path: Path) -> None:
    from gigdispatch.training.export import export_policy, ort_session

    meta = export_policy(runs["ppo"], tmp_path / "ppo.onnx", check=200)
    assert not meta["masked"] and meta["verified"]["identical"] == 200
    sess = ort_session(tmp_path / "ppo.onnx")
    assert [i.name for i in sess.get_inputs()][-1] == "action_mask"


def test_a_differing_graph_fails_the_check(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification can fail: the PPO run's graph in place of the masked run's differs, and nothing is written."""
    import gigdispatch.training.export as ex

    other = ex.load_learned(runs["ppo"])
    real = ex.export_bytes
    monkeypatch.setattr(ex, "export_bytes", lambda model, masked, shapes, n: real(other.model, True, shapes, n))
    with pytest.raises(ex.CheckError, match="differ"):
        ex.export_policy(runs["masked"], tmp_path / "bad.onnx", check=200)
    assert not list(tmp_path.iterdir())


def test_cli_export_and_errors(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.cli import main

    out = tmp_path / "m.onnx"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(runs["masked"] / "checkpoints/latest.zip"),
                "--out",
                str(out),
                "--check",
                "50",
            ]
        )
        == 0
    )
    assert "verified: 50/50" in capsys.readouterr().out and out.is_file() and (tmp_path / "m.onnx.json").is_file()

    fleet = tmp_path / "fleet-run"
    (fleet / "checkpoints").mkdir(parents=True)
    (fleet / "config.yaml").write_text(load_config(SMOKE, ["env=fleet"]).to_yaml())
    shutil.copy(runs["ppo"] / "checkpoints/latest.zip", fleet / "checkpoints/latest.zip")
    broken = tmp_path / "broken-run"
    shutil.copytree(runs["masked"], broken, ignore=shutil.ignore_patterns("tb"))
    (broken / "checkpoints/best.zip").write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["--checkpoint", str(tmp_path / "nope")], "no such run folder"),
        (["--checkpoint", str(fleet)], "'fleet'"),
        (["--checkpoint", str(broken)], "not a loadable SB3 checkpoint"),
        (["--checkpoint", str(runs["masked"]), "--out", str(tmp_path / "x.pt")], "must end with .onnx"),
        (
            ["--checkpoint", str(runs["masked"]), "--out", str(tmp_path / "nonexistent-dir" / "x.onnx")],
            f"error: --out {tmp_path / 'nonexistent-dir' / 'x.onnx'}: folder {tmp_path / 'nonexistent-dir'} "
            "does not exist; create it first",
        ),
    ]
    for argv, needle in cases:
        assert main(["export", "--out", str(tmp_path / "e.onnx"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it, naming the option
        main(["export", "--checkpoint", str(runs["masked"]), "--out", str(tmp_path / "e.onnx"), "--check", "-1"])
    assert exit_info.value.code == 2 and "--check" in capsys.readouterr().err
    assert not (tmp_path / "e.onnx").exists()
    assert not (tmp_path / "nonexistent-dir").exists()  # a file's missing folder is refused, never created


def test_checkpoint_and_onnx_files_get_the_mode_the_umask_gives(runs: dict[str, Path], tmp_path: Path) -> None:
    """An SB3 checkpoint (``save_checkpoint``) and an exported ``.onnx`` with its sidecar: 0644 under umask 022."""
    from gigdispatch.training.export import export_policy, sidecar_path
    from gigdispatch.training.runs import save_checkpoint
    from gigdispatch.training.train import build_model, make_train_env

    cfg = load_config(SMOKE, ["eval.every_steps=0"])
    env = make_train_env(cfg)
    old = os.umask(0o022)
    try:
        save_checkpoint(build_model(cfg, env), tmp_path / "latest.zip")  # no training: the file is the point
        export_policy(runs["masked"], tmp_path / "policy.onnx", check=0)
    finally:
        os.umask(old)
        env.close()
    files = [tmp_path / "latest.zip", tmp_path / "policy.onnx", sidecar_path(tmp_path / "policy.onnx")]
    got = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(got.values()) == {0o644}, got


def test_onnx_policy_bad_files(exported: Path, tmp_path: Path) -> None:
    from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy

    with pytest.raises(ValueError, match=r"no such \.onnx file"):
        OnnxDispatchPolicy(tmp_path / "none.onnx")
    lone = tmp_path / "lone.onnx"
    shutil.copy(exported, lone)
    with pytest.raises(ValueError, match="sidecar"):
        OnnxDispatchPolicy(lone)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    shutil.copy(exported.with_name(exported.name + ".json"), tmp_path / "junk.onnx.json")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        OnnxDispatchPolicy(junk)


def test_make_policy_accepts_an_exported_onnx_file(exported: Path, tmp_path: Path) -> None:
    """``--policy FILE.onnx`` works wherever policies are named (evaluate, serve, simulate)."""
    from gigdispatch.agents import UnknownPolicyError, make_policy
    from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy

    assert isinstance(make_policy(str(exported)), OnnxDispatchPolicy)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(UnknownPolicyError):
        make_policy(str(broken))


def test_served_onnx_answers_like_its_checkpoint_on_1000_recorded_requests(
    runs: dict[str, Path], exported: Path
) -> None:
    """The ONNX file served by the app gives the same /v1/dispatch answers as the checkpoint it came from."""
    pytest.importorskip("fastapi")
    from gigdispatch.training.serve_check import check_served, record_requests

    scenario = str(load_config(SMOKE).scenario)
    requests = record_requests(scenario, 1000, first_seed=9000)
    assert len(requests) == 1000 and all(r["orders"] for r in requests)
    res = check_served(str(runs["masked"]), str(exported), scenario, requests)
    assert res["differing"] == 0, res["first_difference"]
    assert res["requests_with_assignments"] > 100  # a real comparison: the policy assigns, not only holds


def test_check_served_reports_a_different_policy(runs: dict[str, Path]) -> None:
    from gigdispatch.training.serve_check import check_served, record_requests

    scenario = str(load_config(SMOKE).scenario)
    requests = record_requests(scenario, 60, first_seed=9000)
    res = check_served(str(runs["masked"]), "random", scenario, requests)
    assert res["differing"] > 0 and res["first_difference"]["request"] >= 0
    with pytest.raises(ValueError, match="seeds below 1000"):
        record_requests(scenario, 1, first_seed=5)


def test_export_cli_checks_served_answers(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gigdispatch.training.cli import main

    out = tmp_path / "p.onnx"
    assert (
        main(
            ["export", "--checkpoint", str(runs["masked"]), "--out", str(out), "--check", "50", "--check-served", "100"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "served: 100/100 /v1/dispatch answers identical" in text
    assert json.loads((tmp_path / "p.onnx.json").read_text())["verified_served"]["differing"] == 0
