"""The training pipeline -- config validation, run folder, TensorBoard KPIs, kill -9 + resume,
the learned policy in the simulator, and a tiny run that beats random-valid. Everything runs on the
8-driver ``configs/train/scenarios/tiny.yaml`` with training seeds >= 1000 and held-out seeds 5000+."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gigdispatch.envs.core.errors import GigdispatchError
from gigdispatch.training.config import ConfigError, TrainConfig, build_config, load_config
from gigdispatch.training.runs import load_run_config

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/train/smoke.yaml"
TINY = ROOT / "configs/train/scenarios/tiny.yaml"


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("name", ["smoke", "dispatch-default", "fleet-default"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(ROOT / "configs/train" / f"{name}.yaml")
    assert cfg.name == name
    assert min(cfg.train_seeds) >= 1000 and min(cfg.eval.seeds) >= 1000
    assert not set(cfg.train_seeds) & set(cfg.eval.seeds)


@pytest.mark.parametrize(
    ("data", "overrides", "field", "reason"),
    [
        ({"nope": 1}, [], "nope", "unknown key"),
        ({"ppo": {"batch_sise": 64}}, [], "ppo.batch_sise", "unknown key"),
        ({"ppo": {"n_steps": "many"}}, [], "ppo.n_steps", "valid integer"),
        ({"env": "gridworld"}, [], "env", "'dispatch', 'dispatch-v1', 'dispatch-v2', 'dispatch-v3' or 'fleet'"),
        ({"train_seeds": [5, 1000]}, [], "train_seeds", "5 below 1000"),
        ({"train_seeds": "0-19"}, [], "train_seeds", "below 1000"),
        ({"train_seeds": "1000-x"}, [], "train_seeds", "not a seed or a range"),
        ({"eval": {"seeds": [10]}}, [], "eval.seeds", "10 below 1000"),
        (
            {"train_seeds": "1000-1010", "eval": {"seeds": [1005], "episodes": 1}},
            [],
            "eval.seeds",
            "must not be training seeds",
        ),
        ({}, ["ppo.learning_rat=1e-4"], "ppo.learning_rat", "unknown key"),
        ({}, ["total_timesteps=lots"], "total_timesteps", "valid integer"),
        ({}, ["ppo.n_steps.x=3"], "ppo.n_steps.x", "no sub-keys"),
        ({}, ["seed"], "seed", "KEY=VALUE"),
        ({}, ["eval.episodes=[1"], "eval.episodes", "not valid YAML"),
        (
            {},
            ["ppo.n_steps=8", "ppo.batch_size=1000"],
            "ppo.batch_size",
            "1,000 is larger than a rollout of ppo.n_steps 8 x 1 env = 8 steps",
        ),
        ({"algo": "ppo", "ppo": {"n_steps": 64, "batch_size": 65}}, [], "ppo.batch_size", "<= 64 or raise ppo.n_steps"),
    ],
)
def test_bad_config_names_field_and_reason(data: dict, overrides: list[str], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(data, overrides)
    assert field in str(err.value) and reason in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, GigdispatchError)


def test_overrides_are_typed_and_dotted() -> None:
    cfg = build_config(
        {},
        [
            "ppo.learning_rate=1e-4",
            "dispatch.k=4",
            "eval.seeds=[7000, 7001]",
            "eval.episodes=2",
            "train_seeds=1000-1004",
        ],
    )
    assert isinstance(cfg, TrainConfig)
    assert cfg.ppo.learning_rate == pytest.approx(1e-4) and cfg.dispatch.k == 4
    assert cfg.eval.seeds == [7000, 7001] and cfg.train_seeds == [1000, 1001, 1002, 1003, 1004]
    # the resolved config round-trips
    import yaml

    assert build_config(yaml.safe_load(cfg.to_yaml())) == cfg


def test_batch_size_is_checked_against_the_rollout_never_clamped() -> None:
    """Dispatch-v0 is one env, so the config refuses a batch larger than n_steps; CEM has no batch; the fleet's
    envs are its drivers, so its check waits for the scenario (``make_train_env``)."""
    from gigdispatch.training.config import check_batch_size

    assert build_config({"ppo": {"n_steps": 8, "batch_size": 8}}).ppo.batch_size == 8  # a whole rollout: fine
    assert build_config({"algo": "cem", "ppo": {"n_steps": 8, "batch_size": 1000}}).algo == "cem"
    fleet = build_config({"env": "fleet", "ppo": {"n_steps": 8, "batch_size": 1000}})
    assert check_batch_size(fleet.ppo, n_envs=125) == 1000
    with pytest.raises(ConfigError) as err:
        check_batch_size(fleet.ppo, n_envs=100)
    msg = str(err.value)
    assert "\n" not in msg and "ppo.batch_size: 1,000" in msg and "ppo.n_steps 8 x 100 envs" in msg, msg


def test_fleet_batch_larger_than_a_rollout_is_refused_before_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gigdispatch.training.cli import main

    argv = ["train", "--config", str(ROOT / "configs/train/fleet-default.yaml"), f"scenario={TINY}"]
    argv += ["ppo.n_steps=8", "ppo.batch_size=1000", "--out", str(tmp_path)]
    assert main(argv) == 2  # tiny.yaml has 8 drivers: a rollout is 8 x 8 = 64 steps
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ppo.batch_size: 1,000" in err and "8 x 8 envs" in err, err
    assert not any(tmp_path.iterdir())


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    from gigdispatch.training.cli import main

    for argv in (
        ["train", "--config", str(SMOKE), "ppo.nope=1"],
        ["train", "--config", str(tmp_path / "none.yaml")],
        ["train"],
    ):
        assert main([*argv, "--out", str(tmp_path)]) == 2
    assert not any(tmp_path.iterdir())  # nothing written for a bad command


# ------------------------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gigdispatch.training.train import train

    cfg = load_config(SMOKE)
    return train(cfg, tmp_path_factory.mktemp("runs"), command="pytest smoke")


def test_run_folder_holds_everything(smoke_run: Path) -> None:
    from sb3_contrib import MaskablePPO

    for name in (
        "config.yaml",
        "command.txt",
        "git_revision.txt",
        "seed",
        "progress.json",
        "checkpoints/latest.zip",
        "checkpoints/best.zip",
    ):
        assert (smoke_run / name).is_file(), name
    assert smoke_run.name.startswith("smoke-")
    import re

    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?|unknown", (smoke_run / "git_revision.txt").read_text().strip())
    cfg = load_config(SMOKE)
    assert build_config(__import__("yaml").safe_load((smoke_run / "config.yaml").read_text())) == cfg
    assert (smoke_run / "seed").read_text().strip() == str(cfg.seed)
    prog = json.loads((smoke_run / "progress.json").read_text())
    assert prog["done"] and prog["num_timesteps"] == cfg.total_timesteps
    model = MaskablePPO.load(smoke_run / "checkpoints/latest.zip")
    assert model.num_timesteps == cfg.total_timesteps
    assert not list((smoke_run / "checkpoints").glob("*.tmp"))  # atomic writes leave no temp files


def test_tensorboard_has_dispatch_and_eval_tags(smoke_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((smoke_run / "tb").rglob("events.out.tfevents.*"))
    assert events
    ea = EventAccumulator(str(events[0].parent))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    from gigdispatch.training.runs import KPI_TAGS

    assert set(KPI_TAGS.values()) <= tags
    assert {"eval/reward_mean", "eval/profit_mean", "rollout/ep_rew_mean"} <= tags
    assert all(np.isfinite(e.value) for e in ea.Scalars("dispatch/profit"))


def test_learned_policy_in_simulator_matches_env(smoke_run: Path) -> None:
    """The policy acting in the bare simulator gets the same day as the model in Dispatch-v0 (same obs code)."""
    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.training.train import evaluate_model

    pol = LearnedDispatchPolicy(smoke_run)
    assert pol.checkpoint.name == "best.zip" and pol.run_dir == smoke_run
    cfg = load_run_config(smoke_run)
    assert pol.algo == cfg.algo and pol.env_kwargs == cfg.dispatch.model_dump(exclude={"num_envs", "bundle_k"})
    sim = Simulator(load_scenario(cfg.scenario))
    margins = [sim.run(pol, seed=s)["platform_margin"] for s in cfg.eval.seeds[: cfg.eval.episodes]]
    assert evaluate_model(pol.model, cfg)["reward_mean"] == pytest.approx(np.mean(margins), abs=1e-6)
    assert sim.run(pol, seed=5000)["platform_margin"] == margins[0]  # deterministic
    with pytest.raises(ValueError, match="not a training run"):
        LearnedDispatchPolicy(smoke_run / "tb")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.pop("env"), "trained on env None"),
        (lambda c: c.update(env="fleet"), "trained on env 'fleet'"),
        (lambda c: c.update(algo="cem"), "algo: 'cem' is not one of maskable_ppo, ppo"),
        (lambda c: c.pop("dispatch"), "dispatch: expected a mapping"),
        (lambda c: c["dispatch"].pop("k"), "dispatch.k: must be a whole number >= 1, got None"),
        (lambda c: c["dispatch"].update(max_orders=True), "dispatch.max_orders: must be a whole number"),
        (lambda c: c["dispatch"].update(reward_scale=0), "dispatch.reward_scale: must be a number > 0"),
        (lambda c: c["dispatch"].update(idle_only="yes"), "dispatch.idle_only: must be true or false"),
    ],
)
def test_learned_policy_reads_its_keys_with_one_line_errors(tmp_path: Path, edit, needle: str) -> None:
    """agents.learned reads config.yaml without the training schema; a bad key is one line naming it."""
    import yaml

    from gigdispatch.agents.learned import LearnedDispatchPolicy, LearnedPolicyError, read_run_config

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest.zip").write_bytes(b"never loaded: the config is checked first")
    data = yaml.safe_load(load_config(SMOKE).to_yaml())
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    want = {"max_orders": 4, "k": 2, "reward_scale": 1.0, "idle_only": False}
    assert read_run_config(run) == {"algo": "maskable_ppo", "env": "dispatch", "env_kwargs": want}
    edit(data)
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LearnedPolicyError) as err:
        LearnedDispatchPolicy(run)
    msg = str(err.value)
    assert needle in msg and str(run) in msg and "\n" not in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, GigdispatchError)


# ------------------------------------------------------------------------------------------ resume
def test_kill_9_then_resume_ends_with_same_timesteps(tmp_path: Path) -> None:
    from sb3_contrib import MaskablePPO

    from gigdispatch.training.train import train

    total = 2048
    run = tmp_path / "run"
    code = (
        "import sys; from gigdispatch.training.config import load_config; "
        "from gigdispatch.training.train import train; "
        f"train(load_config({str(SMOKE)!r}, ['total_timesteps={total}', 'eval.every_steps=0']), "
        f"'.', run_dir={str(run)!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            prog = run / "progress.json"
            if prog.is_file() and json.loads(prog.read_text())["num_timesteps"] > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    prog = json.loads((run / "progress.json").read_text())
    assert not prog["done"] and 0 < prog["num_timesteps"] < total
    assert MaskablePPO.load(run / "checkpoints/latest.zip").num_timesteps == prog["num_timesteps"]
    assert train(None, resume=run) == run
    model = MaskablePPO.load(run / "checkpoints/latest.zip")
    assert model.num_timesteps == total
    assert json.loads((run / "progress.json").read_text())["done"]
    assert len((run / "command.txt").read_text().splitlines()) == 2


# --------------------------------------------------------------------------------------- learning
def _random_valid_mean(cfg: TrainConfig, rng_seed: int) -> float:
    from gigdispatch.envs.core.seeding import SeedSchedule
    from gigdispatch.training.train import dispatch_env

    seeds = cfg.eval.seeds[: cfg.eval.episodes]
    env = dispatch_env(cfg, SeedSchedule(seeds=seeds))
    rng = np.random.default_rng(rng_seed)
    out = []
    for _ in seeds:
        env.reset()
        done, total = False, 0.0
        while not done:
            m, a, i = env.action_masks(), [], 0
            for n in env.action_space.nvec:
                a.append(rng.choice(np.flatnonzero(m[i : i + n])))
                i += n
            _, r, done, _, _ = env.step(np.array(a))
            total += r
        out.append(total)
    return float(np.mean(out))


def test_short_training_beats_random_valid(tmp_path: Path) -> None:
    """One order slot, one candidate: offering (at the right level) beats holding at random; 1,024 steps learn it."""
    from sb3_contrib import MaskablePPO

    from gigdispatch.training.train import evaluate_model, train

    ov = [
        "dispatch.max_orders=1",
        "dispatch.k=1",
        "eval.seeds=5000-5004",
        "eval.episodes=5",
        "total_timesteps=1024",
        "eval.every_steps=0",
    ]
    cfg = load_config(SMOKE, ov)
    run = train(cfg, tmp_path)
    trained = evaluate_model(MaskablePPO.load(run / "checkpoints/latest.zip"), cfg)["reward_mean"]
    randoms = [_random_valid_mean(cfg, s) for s in range(3)]
    assert trained > max(randoms), (trained, randoms)


# ------------------------------------------------------------------------------ resume, finished runs
def test_resume_of_a_finished_run_says_nothing_left_to_do(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run (progress.json done) resumes to a one-line 'nothing left to do', exit 0, files untouched."""
    from gigdispatch.training.cli import main
    from gigdispatch.training.train import train

    before = {p: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(smoke_run), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "nothing left to do" in out and str(smoke_run) in out, out
    assert "512 of 512 steps" in out and err == ""
    assert train(None, resume=smoke_run) == smoke_run  # the Python API returns the run as it is
    assert {p: p.read_bytes() for p in smoke_run.rglob("*") if p.is_file()} == before


def test_resume_when_the_last_checkpoint_is_final_completes_the_run(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stopped during its final evaluation: latest.zip holds every timestep, progress.json is not done. The resume
    runs no PPO iteration; it evaluates, writes progress done and ends with exit 0."""
    import shutil

    from sb3_contrib import MaskablePPO

    from gigdispatch.training.cli import main

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    prog = json.loads((run / "progress.json").read_text())
    prog["done"] = False
    prog["state"]["last_eval"] = 256  # the final evaluation (at 512) never finished
    (run / "progress.json").write_text(json.dumps(prog))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == f"run folder: {run}"
    assert "eval reward_mean" in out and out.splitlines()[-1] == f"trained 512 steps; run folder: {run}", out
    assert err == ""
    prog = json.loads((run / "progress.json").read_text())
    assert prog["done"] and prog["num_timesteps"] == 512 and prog["state"]["last_eval"] == 512
    assert MaskablePPO.load(run / "checkpoints/latest.zip").num_timesteps == 512
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # and now it is finished
    assert "nothing left to do" in capsys.readouterr().out


def test_resume_from_a_damaged_checkpoint_is_one_line(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run to resume whose latest.zip is truncated: one line naming the file, exit 2, nothing written."""
    import shutil

    from gigdispatch.training.cli import main

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    prog = json.loads((run / "progress.json").read_text())
    (run / "progress.json").write_text(json.dumps({**prog, "done": False}))
    latest = run / "checkpoints/latest.zip"
    latest.write_bytes(latest.read_bytes()[:20_000])
    before = (run / "command.txt").read_text()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert f"checkpoint '{latest}': not a loadable SB3 checkpoint" in err and "re-train it or restore it" in err
    assert (run / "command.txt").read_text() == before


def test_resume_with_the_wrong_backend_is_one_line(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.cli import main

    assert main(["train", "--backend", "rllib", "--resume", str(smoke_run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resume it the same way" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ what a run says
def test_training_into_a_pipe_prints_the_run_folder_then_one_line_per_iteration(tmp_path: Path) -> None:
    """stdout to a pipe (not a terminal): the run folder first, then one line per PPO iteration (4 of 128 steps),
    the evaluations (every 256 steps) on theirs, then the summary; no progress bar."""
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", "train", "--config", str(SMOKE), "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = tmp_path.iterdir()
    lines = r.stdout.splitlines()
    assert lines[0] == f"run folder: {run}"
    iters = [ln for ln in lines if "] iteration " in ln]
    assert [ln.split("] ", 1)[1].split(":")[0] for ln in iters] == [f"iteration {i}/4" for i in (1, 2, 3, 4)]
    assert [("eval reward_mean" in ln) for ln in iters] == [False, True, False, True]
    assert lines[1:-1] == iters and lines[-1] == f"trained 512 steps; run folder: {run}"
    assert "it/s" not in r.stderr and "step/s" not in r.stderr  # no tqdm bar in a log


def test_run_log_shows_a_bar_not_lines_on_a_terminal() -> None:
    from gigdispatch.training.runs import RunLog

    said: list[str] = []
    log = RunLog(said.append, bar=True)
    log.say("run folder: x")
    log.start(4, 0, "iter", "t")
    log.step(1, "iteration 1/4")
    log.close()
    assert said == ["run folder: x"]
    plain = RunLog(said.append, bar=False)
    plain.start(4, 0, "iter", "t")
    plain.step(1, "iteration 1/4")
    assert len(said) == 2 and said[1].endswith("] iteration 1/4")


# ------------------------------------------------------------------------------ without the rl extra
BLOCK_RL = (
    "import sys\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {'torch', 'stable_baselines3', 'sb3_contrib', 'tensorboard', 'ray'}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Blocker())\n"
    "from gigdispatch.training.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def _without_rl(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_RL, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_cem_trains_without_torch_and_sb3_says_which_extra(tmp_path: Path) -> None:
    """A plain install (no torch, SB3, TensorBoard): algo: cem trains; an SB3 config is one line naming the extra."""
    tiny = ROOT / "configs/train/scenarios/tiny.yaml"
    cem = [
        f"scenario={tiny}",
        "cem.iterations=1",
        "cem.population=4",
        "cem.elite=2",
        "cem.seeds_per_iteration=2",
        "cem.workers=1",
        "eval.seeds=5000-5001",
        "eval.episodes=2",
    ]
    match = str(ROOT / "configs/train/match-default.yaml")
    r = _without_rl("train", "--config", match, *cem, "--out", str(tmp_path / "cem"), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    (run,) = (tmp_path / "cem").iterdir()
    lines = r.stdout.splitlines()
    assert lines[0] == f"run folder: {run}"
    assert any("no TensorBoard logs" in ln and "pip install 'gigdispatch[rl]'" in ln for ln in lines)
    assert lines[-1].startswith("searched 1 CEM iterations") and (run / "policy.json").is_file()
    assert not (run / "tb").exists() and "Traceback" not in r.stderr

    r = _without_rl("train", "--config", str(SMOKE), "--out", str(tmp_path / "sb3"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "needs the 'rl' extra" in r.stderr and "pip install 'gigdispatch[rl]'" in r.stderr
    assert not (tmp_path / "sb3").exists()  # nothing written
