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


# ------------------------------------------------------------------ the set policy (Dispatch-v1 / v2 runs)
V2 = ["env=dispatch-v2", "dispatch.k=3", "dispatch.bundle_k=1", "eval.every_steps=0"]


def _built_run(out: Path, overrides: list[str]) -> Path:
    """A run folder holding an untrained set-policy model of the smoke config with ``overrides``, its logit
    head scaled up (x100: ortho init's gain 0.01 gives near-uniform rows) and its hold logit set to the
    median of its best candidate logit over 100 steps of the env (holding), so that it both offers and holds."""
    import torch

    from gigdispatch.training.runs import save_checkpoint
    from gigdispatch.training.train import build_model, make_train_env

    cfg = load_config(SMOKE, overrides)
    run = out / cfg.name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    env = make_train_env(cfg)
    model = build_model(cfg, env)
    pol = model.policy
    with torch.no_grad():
        pol.order_head.weight.mul_(100.0)
        hold_all = np.zeros((1, len(env.action_space.nvec)), np.int64)
        hold_all[0, : pol.layout.n_orders] = pol.layout.n_candidates
        best, obs = [], env.reset()
        for _ in range(100):
            f = pol.extract_features({key: torch.as_tensor(v) for key, v in obs.items()})
            query = pol.order_head(f.orders)[:, : pol.pair_size]
            cand = torch.linalg.vecdot(f.pairs, query.unsqueeze(1)).masked_fill(~f.cand_valid, -np.inf)
            best += [v for v in cand.amax(dim=1).tolist() if np.isfinite(v)]
            obs = env.step(hold_all)[0]
        hold = pol.pair_size  # the hold logit's row of the order head
        pol.order_head.weight[hold] = 0.0
        pol.order_head.bias[hold] = float(np.median(best))
    env.close()
    save_checkpoint(model, run / "checkpoints/latest.zip")
    return run


@pytest.fixture(scope="module")
def set_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``dagger``: a DAgger run on Dispatch-v2 (1 round, 1 day, 1 epoch; its ``decode.json`` has hold_bias 2);
    ``v2``: a MaskablePPO set-policy run on Dispatch-v2 without ``decode.json``; ``ppo``: a PPO one on v1."""
    from gigdispatch.training.train import train

    out = tmp_path_factory.mktemp("set-runs")
    dagger = [*V2, "algo=dagger", "name=dag", "dagger.rounds=1", "dagger.days_per_round=1", "dagger.epochs=1"]
    dag = train(load_config(SMOKE, [*dagger, "dagger.hold_biases=[2.0]"]), out, command="pytest export")
    assert json.loads((dag / "decode.json").read_text())["hold_bias"] == 2.0
    return {
        "dagger": dag,
        "v2": _built_run(out, [*V2, "name=v2-masked"]),
        "ppo": _built_run(out, ["env=dispatch-v1", "algo=ppo", "name=v1-ppo", "eval.every_steps=0"]),
    }


class _Lockstep:
    """Plays policy ``a`` and asks ``b`` at every epoch too, recording whether their ``Decision``s are equal."""

    name = "lockstep"

    def __init__(self, a, b) -> None:
        self.a, self.b, self.epochs, self.offers, self.differ = a, b, 0, 0, []

    def reset(self, sim, rng) -> None:
        self.a.reset(sim, rng)
        self.b.reset(sim, rng)

    def act(self, sim):
        da, db = self.a.act(sim), self.b.act(sim)
        same = all(
            np.array_equal(np.asarray(getattr(da, f)), np.asarray(getattr(db, f)))
            for f in ("order", "driver", "level", "reposition_driver", "reposition_zone", "unassign")
        )
        if not same:
            self.differ.append(int(sim.t))
        self.epochs += 1
        self.offers += len(da.order)
        return da


def _same_days(torch_policy, onnx_policy, scenario: str, seeds: tuple[int, ...]) -> _Lockstep:
    """Each day played by the torch policy with the ONNX policy asked at every epoch; the ONNX policy's own
    day then gives exactly the torch day's KPIs."""
    from gigdispatch.envs import Simulator, load_scenario

    sim = Simulator(load_scenario(scenario))
    both = _Lockstep(torch_policy, onnx_policy)
    for seed in seeds:
        a = sim.run(both, seed=seed)
        b = sim.run(onnx_policy, seed=seed)
        keys = [k for k in a if k != "wall_seconds"]
        assert {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, nan_ok=True, rel=0, abs=0)
    assert not both.differ, f"decisions differ at t = {both.differ[:5]}"
    return both


def _random_rows_obs(rng: np.random.Generator, b: int, m: int, k: int, fo: int, fc: int, g: int):
    """Random valid Dispatch-v1-layout observations: real orders and candidates with valid = 1, padding all 0."""
    orders = rng.normal(size=(b, m, fo)).astype(np.float32)
    cands = rng.normal(size=(b, m, k, fc)).astype(np.float32)
    real = rng.random((b, m)) < 0.6
    real[0] = False  # an observation without a real order
    real[1, 0] = True
    ok = (rng.random((b, m, k)) < 0.7) & real[..., None]
    orders[..., 0], cands[..., 0] = real, ok
    orders[~real], cands[~ok] = 0.0, 0.0
    return {"orders": orders, "candidates": cands, "globals": rng.normal(size=(b, g)).astype(np.float32)}


def _set_policy(m: int, k: int, levels: int, fo: int, fc: int, g: int, **kwargs):
    from gymnasium import spaces

    from gigdispatch.agents.setnet import DispatchSetPolicy

    obs = spaces.Dict(
        {
            "orders": spaces.Box(-5, 5, (m, fo)),
            "candidates": spaces.Box(-5, 5, (m, k, fc)),
            "globals": spaces.Box(-5, 5, (g,)),
        }
    )
    act = spaces.MultiDiscrete([k + 1] * m + [levels] * m if levels else [k + 1] * m)
    return DispatchSetPolicy(obs, act, lambda _: 1e-3, **kwargs)


def test_dense_set_actor_equals_the_packed_policy() -> None:
    """``DenseSetActor`` (every slot and column computed, masked) gives the packed policy's row log-probabilities
    and masks, for one set of weights at several M / K (the weights do not depend on them), with and without
    pricing, 1 or 2 pair layers, a pair encoder narrower than the trunk; activations other than ReLU are refused."""
    import torch
    from torch import nn

    from gigdispatch.agents.setnet import DenseSetActor
    from gigdispatch.envs.core.errors import InputError

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    fo, fc, g = 15, 15, 6
    for levels, layers, pair in ((4, 1, None), (3, 2, None), (0, 1, None), (4, 1, 8)):
        base = _set_policy(4, 3, levels, fo, fc, g, hidden_size=16, pair_layers=layers, pair_size=pair)
        with torch.no_grad():
            for p in base.parameters():
                p.normal_(0.0, 0.3)
        for m, k in ((4, 3), (9, 1), (3, 7), (40, 10)):
            pol = _set_policy(m, k, levels, fo, fc, g, hidden_size=16, pair_layers=layers, pair_size=pair)
            pol.load_state_dict(base.state_dict())
            obs = {key: torch.as_tensor(v) for key, v in _random_rows_obs(rng, 6, m, k, fo, fc, g).items()}
            with torch.no_grad():
                packed = pol.get_distribution(obs).log_probs
                choice, level = DenseSetActor(pol)(obs["orders"], obs["candidates"], obs["globals"])
                dense = DenseSetActor(pol).stack_rows(choice, level)
            assert choice.shape == (6, m, k + 1) and (level is None) == (levels == 0)
            assert dense.shape == packed.shape
            allowed = packed > -1e8
            assert torch.equal(dense > -1e8, allowed) and allowed[:, :m, k].all()  # hold always
            assert (~allowed[0, :m, :k]).all()  # no real order: only hold
            diff = (dense - packed)[allowed].abs().max().item()
            assert diff < 1e-4, (levels, layers, m, k, diff)
    with pytest.raises(InputError, match=r"activation_fn: the dense set actor supports nn\.ReLU only, got Tanh"):
        DenseSetActor(_set_policy(4, 3, 4, fo, fc, g, hidden_size=8, activation_fn=nn.Tanh))


def test_set_policy_export_acts_like_torch_v2_argmax(set_runs: dict[str, Path], tmp_path: Path) -> None:
    """A MaskablePPO set-policy run on Dispatch-v2 (no decode.json): verified export, sidecar with the env and
    bundle_k, and the ONNX policy's decisions equal LearnedDispatchPolicy's at every epoch of two days."""
    import onnx

    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy
    from gigdispatch.training.export import export_policy, ort_session

    out = tmp_path / "v2.onnx"
    meta = export_policy(set_runs["v2"], out, check=300)
    onnx.checker.check_model(onnx.load(str(out)))
    v = meta["verified"]
    assert v["identical"] == 300 and v["decode"] == "argmax" and v["max_log_prob_diff"] <= 1e-4
    assert 0.05 < v["held_actions_share"] < 0.95  # it offers and holds: a real comparison
    assert meta["env"] == "dispatch-v2" and meta["dispatch"]["bundle_k"] == 1 and meta["decode"] is None
    assert meta["outputs"] == ["action", "row_log_probs"] and meta["row_log_probs"]["shape"] == ["batch", 8, 4]
    assert meta["dynamic_axes"]["candidates"] == {"0": "batch", "1": "max_orders", "2": "k"}
    sess = ort_session(out)
    assert [o.name for o in sess.get_outputs()] == ["action", "row_log_probs"]

    learned, onnx_pol = LearnedDispatchPolicy(set_runs["v2"]), OnnxDispatchPolicy(out)
    assert onnx_pol.hold_bias is None and onnx_pol.env_kwargs["bundle_k"] == 1
    both = _same_days(learned, onnx_pol, str(load_run_config(set_runs["v2"]).scenario), (5000, 5001))
    assert both.offers > 20 and both.epochs > 100


def test_dagger_run_exports_with_its_joint_decoding(set_runs: dict[str, Path], tmp_path: Path) -> None:
    """A DAgger run with decode.json: the check compares the joint decoding of both sides' row log-probs, the
    sidecar carries the decoding, and the ONNX policy decodes like the torch policy, epoch by epoch (the
    decoding matters: the graph's argmax alone decides differently on these days)."""
    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy
    from gigdispatch.training.export import export_policy, sidecar_path

    out = tmp_path / "dag.onnx"
    meta = export_policy(set_runs["dagger"], out, check=300)
    v = meta["verified"]
    assert v["identical"] == 300 and v["decode"] == "match" and v["max_log_prob_diff"] <= 1e-4
    assert meta["algo"] == "dagger" and meta["masked"] and meta["decode"] == {"decode": "match", "hold_bias": 2.0}
    learned, onnx_pol = LearnedDispatchPolicy(set_runs["dagger"]), OnnxDispatchPolicy(out)
    assert learned.hold_bias == onnx_pol.hold_bias == 2.0
    scenario = str(load_run_config(set_runs["dagger"]).scenario)
    both = _same_days(learned, onnx_pol, scenario, (5000, 5001))
    assert both.offers > 20

    argmax_file = tmp_path / "argmax.onnx"  # the same graph, the sidecar without the decoding
    argmax_file.write_bytes(out.read_bytes())
    sidecar_path(argmax_file).write_text(json.dumps({**meta, "decode": None}))
    lock = _Lockstep(onnx_pol, OnnxDispatchPolicy(argmax_file))
    from gigdispatch.envs import Simulator, load_scenario

    Simulator(load_scenario(scenario)).run(lock, seed=5000)
    assert lock.differ, "joint decoding and argmax decided alike on every epoch: the decode test shows nothing"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(out.read_bytes())
    sidecar_path(bad).write_text(json.dumps({**meta, "decode": {"decode": "match", "hold_bias": -1}}))
    with pytest.raises(ValueError, match=r"decode\.hold_bias"):
        OnnxDispatchPolicy(bad)


def test_set_policy_graph_has_free_m_and_k_and_ppo_ignores_the_mask(set_runs: dict[str, Path], tmp_path: Path) -> None:
    """The exported graph of a PPO set-policy run (Dispatch-v1) runs at other M and K (200 slots, 10 columns
    included) and equals the torch policy built for those sizes with the same weights; its action ignores
    ``action_mask`` (PPO predicts without masks), while a MaskablePPO run's graph obeys it."""
    import torch

    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.training.export import export_policy, ort_session

    meta = export_policy(set_runs["ppo"], tmp_path / "ppo.onnx", check=200)
    assert not meta["masked"] and meta["env"] == "dispatch-v1" and meta["verified"]["identical"] == 200
    sess = ort_session(tmp_path / "ppo.onnx")
    model = LearnedDispatchPolicy(set_runs["ppo"]).model
    lay = model.policy.layout
    fo, fc, g, levels = lay.order_features, lay.candidate_features, lay.global_features, lay.n_levels
    rng = np.random.default_rng(3)
    for m, k in ((200, 10), (4, 2), (7, 1), (3, 6)):
        pol = _set_policy(m, k, levels, fo, fc, g, hidden_size=model.policy.hidden_size)
        pol.load_state_dict(model.policy.state_dict())
        obs = _random_rows_obs(rng, 5, m, k, fo, fc, g)
        only_hold = np.zeros((5, m * (k + 1) + m * levels), bool)
        only_hold[:, k : m * (k + 1) : k + 1] = True
        only_hold[:, m * (k + 1) :: levels] = True
        action, lp = sess.run(None, {**obs, "action_mask": only_hold})
        with torch.no_grad():
            dist = pol.get_distribution({key: torch.as_tensor(v) for key, v in obs.items()})
        want = dist.log_probs.numpy()
        allowed = want > -1e8
        assert lp.shape == want.shape == (5, 2 * m, max(k + 1, levels))
        assert np.array_equal(lp > -1e8, allowed) and np.abs(lp - want)[allowed].max() < 1e-4
        np.testing.assert_array_equal(action, dist.mode().numpy())
        assert (action[:, :m] < k).any()  # offers despite the hold-only mask: PPO's graph ignores it

    export_policy(set_runs["v2"], tmp_path / "v2.onnx", check=0)
    masked = ort_session(tmp_path / "v2.onnx")
    m, k, levels = 4, 3, 4
    obs = _random_rows_obs(rng, 5, m, k, 15, 15, 6)
    only_hold = np.zeros((5, m * (k + 1) + m * levels), bool)
    only_hold[:, k : m * (k + 1) : k + 1] = True
    only_hold[:, m * (k + 1) :: levels] = True
    held = masked.run(["action"], {**obs, "action_mask": only_hold})[0]
    assert (held[:, :m] == k).all() and (held[:, m:] == 0).all()


def test_set_policy_check_fails_on_a_differing_graph(
    set_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification of a set-policy export can fail: another model's graph differs, and nothing is written."""
    import gigdispatch.training.export as ex

    other = ex.load_learned(set_runs["v2"])
    real = ex.export_bytes
    monkeypatch.setattr(ex, "export_bytes", lambda model, masked, shapes, n: real(other.model, True, shapes, n))
    with pytest.raises(ex.CheckError, match="differ"):
        ex.export_policy(set_runs["dagger"], tmp_path / "bad.onnx", check=100)
    assert not list(tmp_path.iterdir())


def test_cli_exports_a_dagger_run_and_its_served_answers_match(
    set_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gigdispatch export`` on a DAgger run: the log-prob line, and the served ONNX file (joint decoding, v2
    env with bundle_k) answers /v1/dispatch like the run folder."""
    pytest.importorskip("fastapi")
    from gigdispatch.training.cli import main

    out = tmp_path / "dag.onnx"
    argv = ["export", "--checkpoint", str(set_runs["dagger"]), "--out", str(out), "--check", "50"]
    assert main([*argv, "--check-served", "60"]) == 0
    text = capsys.readouterr().out
    assert "verified: 50/50" in text and "decisions compared: argmax and the run decode.json joint decoding" in text
    assert "served: 60/60 /v1/dispatch answers identical" in text
    served = json.loads((tmp_path / "dag.onnx.json").read_text())["verified_served"]
    assert served["differing"] == 0 and served["requests_with_assignments"] > 0
