"""``algo: dagger`` (``training/dagger.py``): its config rules in one line, a tiny run's folder, the run acting as
a learned policy in the bare simulator, a short run beating a random-valid dispatcher on held-out days, and a
kill -9 mid-run whose ``--resume`` ends where the uninterrupted run ends (same rounds, same weights). Everything on
the 8-driver ``configs/train/scenarios/tiny.yaml``: training seeds 1000+, selection days 5000-5003, held-out
comparison days 6000+."""

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
import torch

from gigdispatch.envs.core.errors import GigdispatchError
from gigdispatch.training.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
NEURAL = ROOT / "configs/train/neural-default.yaml"
TINY = ROOT / "configs/train/scenarios/tiny.yaml"
TEACHER = ROOT / "checkpoints/dispatch"
# two rounds of two tiny days each, a small network, few passes: about 5 s on one core
TINY_DAGGER = [
    f"scenario={TINY}",
    f"dagger.teacher={TEACHER}",
    "dagger.rounds=2",
    "dagger.days_per_round=2",
    "dagger.epochs=5",
    "dagger.batch_size=64",
    "dagger.hold_biases=[0.0, 2.0]",
    "ppo.hidden=16",
    "dispatch.max_orders=8",
    "dispatch.k=4",
    "dispatch.bundle_k=1",
    "eval.seeds=5000-5003",
    "eval.episodes=4",
]
HELD_OUT = list(range(6000, 6008))  # neither training nor selection days
torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ config
def test_shipped_neural_config_validates() -> None:
    cfg = load_config(NEURAL)
    assert (cfg.env, cfg.algo, cfg.dispatch.k, cfg.dispatch.bundle_k) == ("dispatch-v2", "dagger", 10, 2)
    assert cfg.uses_set_policy and min(cfg.train_seeds) >= 1000 and not set(cfg.train_seeds) & set(cfg.eval.seeds)


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["env=dispatch", "ppo.policy=auto"], ["algo: dagger", "env: dispatch-v2"]),
        (["env=fleet", "ppo.policy=auto"], ["algo: dagger", "env: dispatch-v2"]),
        (["dagger.hold_biases=[0.0, -1.0]"], ["dagger.hold_biases", ">= 0"]),
        (["dagger.hold_biases=[]"], ["dagger.hold_biases", "non-empty"]),
        (["dispatch.bundle_k=10"], ["bundle_k", "k = 10"]),
        (["dispatch.k=4", "dispatch.bundle_k=5"], ["bundle_k", "k = 4"]),
    ],
)
def test_dagger_config_errors_are_one_line_naming_the_field(overrides: list[str], needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(NEURAL, overrides)
    msg = str(err.value)
    assert all(n in msg for n in needles) and "\n" not in msg, msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, GigdispatchError)


# ------------------------------------------------------------------------------------------ a tiny run
@pytest.fixture(scope="module")
def dagger_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gigdispatch.training.train import train

    return train(load_config(NEURAL, TINY_DAGGER), tmp_path_factory.mktemp("dagger"))


def test_dagger_run_writes_its_files(dagger_run: Path) -> None:
    from sb3_contrib import MaskablePPO

    from gigdispatch.training.dagger import Samples

    ckpt = dagger_run / "checkpoints"
    for name in ("latest.zip", "best.zip", "round-1.zip", "round-2.zip"):
        assert (ckpt / name).is_file(), name
    st = json.loads((dagger_run / "dagger_state.json").read_text())
    assert st["round"] == 2 and [h["round"] for h in st["history"]] == [1, 2]
    assert [h["network_share"] for h in st["history"]] == [0.0, 0.5]  # round 0: the teacher plays; then 1 - beta
    assert [h["days"] for h in st["history"]] == [[1000, 1001], [1002, 1003]]  # new training days each round
    decode = json.loads((dagger_run / "decode.json").read_text())
    assert decode["decode"] == "match" and decode["hold_bias"] in (0.0, 2.0)
    assert decode["round"] == st["best"]["round"] and decode["hold_bias"] == st["best"]["hold_bias"]
    assert st["best"]["eval_profit_mean"] == max(h["eval_profit_mean"] for h in st["history"])
    # every round's samples: packed rows that add up, the teacher's choices in range, most of them offers
    total = 0
    for r in (0, 1):
        s = Samples.load(dagger_run / "data" / f"round-{r}.npz")
        assert len(s.orders) == len(s.choice) == len(s.level) == int(s.n.sum()) and len(s.globals) == len(s.n)
        assert s.candidates.shape[1:] == (4, len(s.candidates[0, 0])) and ((s.choice >= 0) & (s.choice <= 4)).all()
        assert (s.choice < 4).any() and (s.level[s.choice == 4] == 0).all()
        total += len(s.n)
    assert st["history"][-1]["samples"] == total
    model = MaskablePPO.load(ckpt / "best.zip")
    assert type(model.policy).__name__ == "DispatchSetPolicy"
    prog = json.loads((dagger_run / "progress.json").read_text())
    assert prog["done"] and prog["num_timesteps"] == 2
    assert list((dagger_run / "tb").rglob("events.out.tfevents.*"))


def test_the_run_is_a_policy_that_plays_a_day_in_the_simulator(dagger_run: Path) -> None:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario

    pol = make_policy(str(dagger_run))
    assert pol.hold_bias == json.loads((dagger_run / "decode.json").read_text())["hold_bias"]
    assert pol.env_name == "dispatch-v2" and pol.env_kwargs["bundle_k"] == 1
    sim = Simulator(load_scenario(str(TINY)))
    k = sim.run(pol, seed=HELD_OUT[0])
    assert k["orders_delivered"] > 0 and np.isfinite(k["platform_margin"])
    assert sim.run(pol, seed=HELD_OUT[0])["platform_margin"] == k["platform_margin"]  # deterministic


def _random_valid_margin(rng_seed: int) -> float:
    """A dispatcher that picks uniformly among each order's valid choices (a candidate or hold, any level), on the
    held-out days, through Dispatch-v2 with the run's settings: the mean platform margin."""
    from gigdispatch.envs import load_scenario
    from gigdispatch.envs.dispatch_env import DispatchEnvV2

    env = DispatchEnvV2(load_scenario(str(TINY)), max_orders=8, k=4, bundle_k=1)
    rng = np.random.default_rng(rng_seed)
    margins = []
    for seed in HELD_OUT:
        env.reset(seed=seed)
        while True:
            _, _, terminated, truncated, info = env.step(env.sample_action(rng))
            if terminated or truncated:
                margins.append(info["kpis"]["platform_margin"])
                break
    return float(np.mean(margins))


def test_a_short_dagger_run_beats_random_valid_on_held_out_days(dagger_run: Path) -> None:
    """Two rounds of two days imitate the shipped dispatcher well enough to beat random-valid dispatch (which
    holds or misplaces many orders) on 8 days it never saw, in training or in its selection."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario

    pol = make_policy(str(dagger_run))
    sim = Simulator(load_scenario(str(TINY)))
    learned = float(np.mean([sim.run(pol, seed=s)["platform_margin"] for s in HELD_OUT]))
    randoms = [_random_valid_margin(s) for s in range(3)]
    assert learned > max(randoms), (learned, randoms)


# ------------------------------------------------------------------------------------------ kill -9
def _round_1_checkpoint(run: Path) -> bool:
    return (run / "checkpoints" / "round-1.zip").is_file()


def _round_1_state(run: Path) -> bool:
    try:
        return json.loads((run / "dagger_state.json").read_text())["round"] == 1
    except (OSError, ValueError):
        return False


@pytest.mark.parametrize("killed_once", [_round_1_checkpoint, _round_1_state], ids=["checkpoint", "state"])
def test_kill_9_then_resume_ends_like_the_uninterrupted_run(dagger_run: Path, tmp_path: Path, killed_once) -> None:
    """The same run in a subprocess, killed once round 1's checkpoint is written (usually before its state is:
    the resume redoes round 1 from the initial weights) or once its state is (the resume plays round 2 only):
    ``--resume`` ends at round 2 with a loadable checkpoint and the uninterrupted run's weights, decoding and
    per-round record."""
    from sb3_contrib import MaskablePPO

    from gigdispatch.training.train import train

    run = tmp_path / "run"
    code = (
        "from gigdispatch.training.config import load_config; from gigdispatch.training.train import train; "
        f"train(load_config({str(NEURAL)!r}, {TINY_DAGGER!r}), '.', run_dir={str(run)!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not killed_once(run):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        assert killed_once(run), "round 1 was not written in time"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = run / "dagger_state.json"
    assert not state.is_file() or json.loads(state.read_text())["round"] < 2
    prog = run / "progress.json"
    assert not prog.is_file() or not json.loads(prog.read_text()).get("done")
    assert train(None, resume=run) == run
    st = json.loads(state.read_text())
    want = json.loads((dagger_run / "dagger_state.json").read_text())
    assert st["round"] == 2 and len(st["history"]) == 2
    assert st["history"] == want["history"] and st["best"] == want["best"]
    assert json.loads((run / "decode.json").read_text()) == json.loads((dagger_run / "decode.json").read_text())
    resumed = MaskablePPO.load(run / "checkpoints/latest.zip").policy.state_dict()
    straight = MaskablePPO.load(dagger_run / "checkpoints/latest.zip").policy.state_dict()
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    assert len((run / "command.txt").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------- PPO from the imitation
PPO_FROM = ROOT / "configs/train/neural-default-ppo.yaml"


def _ppo_overrides(init_from: Path, hidden: int = 16) -> list[str]:
    return [
        f"scenario={TINY}",
        f"ppo.init_from={init_from}",
        f"ppo.hidden={hidden}",
        "dispatch.max_orders=8",
        "dispatch.k=4",
        "dispatch.bundle_k=1",
        "dispatch.num_envs=2",
        "ppo.n_steps=32",
        "ppo.batch_size=64",
        "total_timesteps=64",
        "eval.every_steps=64",
        "eval.seeds=5000-5001",
        "eval.episodes=1",
    ]


def test_ppo_starts_from_the_imitation_weights_and_keeps_their_decoding(dagger_run: Path, tmp_path: Path) -> None:
    from sb3_contrib import MaskablePPO

    from gigdispatch.training.train import train

    cfg = load_config(PPO_FROM, _ppo_overrides(dagger_run))
    run = train(cfg, tmp_path, run_dir=tmp_path / "ppo")
    assert json.loads((run / "decode.json").read_text()) == json.loads((dagger_run / "decode.json").read_text())
    start = MaskablePPO.load(run / "checkpoints" / "best.zip", device="cpu").policy.state_dict()
    taught = MaskablePPO.load(dagger_run / "checkpoints" / "best.zip", device="cpu").policy.state_dict()
    assert start.keys() == taught.keys()
    # 64 steps of PPO at a small learning rate move the weights a little, not back to a fresh init
    moved = max(float((start[k].float() - taught[k].float()).abs().max()) for k in start)
    assert 0.0 < moved < 0.05


def test_an_init_from_that_does_not_fit_is_one_line(dagger_run: Path, tmp_path: Path) -> None:
    from gigdispatch.training.train import TrainError, train

    cfg = load_config(PPO_FROM, _ppo_overrides(dagger_run, hidden=24))
    with pytest.raises(TrainError, match=r"ppo\.init_from: .* does not fit") as err:
        train(cfg, tmp_path, run_dir=tmp_path / "ppo")
    assert "\n" not in str(err.value)
