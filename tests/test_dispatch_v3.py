"""``gigdispatch/Dispatch-v3``: v1's spaces on a fixed clock; its vector form keeps the days in one set of arrays,
and each of its days is the day the one-day env plays for the same seed."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from gigdispatch import envs
from gigdispatch.envs.dispatch_days import DispatchVecEnvV3, top_k_by_id
from gigdispatch.envs.sb3_vec import SB3VecEnv

V3 = envs.DISPATCH_V3_ID


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


def test_v3_passes_gymnasium_and_sb3_checkers() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(V3, scenario="default")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    v1 = gym.make(envs.DISPATCH_V1_ID).unwrapped
    assert env.observation_space == v1.observation_space and env.action_space == v1.action_space


def test_every_step_is_an_epoch_and_a_day_runs_to_its_full_length(short_day) -> None:
    env = gym.make(V3, scenario=short_day).unwrapped
    obs, _ = env.reset(seed=5)
    n_steps, steps, done = env.core.sim.n_steps, 0, False
    rng = np.random.default_rng(0)
    while not done:
        mask = env.action_masks()
        assert np.array_equal(
            mask[: env.core.M * (env.core.K + 1)].reshape(env.core.M, -1)[:, :-1], obs["candidates"][..., 0] == 1
        )
        obs, _, done, _, info = env.step(env.sample_action(rng))
        assert info["sim_steps"] == 1
        steps += 1
    assert steps == n_steps and "kpis" in info


def _days_alone(scenario, seeds, actions_of):
    """Observations, masks, rewards and KPIs of one-day envs, each played with ``actions_of(i, step, mask)``."""
    out = []
    for i, s in enumerate(seeds):
        env = gym.make(V3, scenario=scenario).unwrapped
        obs, _ = env.reset(seed=s)
        rows, done, step = [], False, 0
        while not done:
            mask = env.action_masks()
            a = actions_of(i, step, mask, env)
            nxt, r, done, _, info = env.step(a)
            rows.append((obs, mask, a, r, info))
            obs, step = nxt, step + 1
        out.append(rows)
    return out


def test_the_vector_envs_days_are_one_day_envs_days_with_the_same_seeds(short_day) -> None:
    n = 3
    vec = gym.make_vec(V3, num_envs=n, scenario=short_day)
    assert isinstance(vec.unwrapped, DispatchVecEnvV3)
    obs, _ = vec.reset(seed=40)
    rng = np.random.default_rng(7)
    played = []  # per step: the vector env's actions
    rows, step, ended = [], 0, False
    while not ended:
        mask = vec.unwrapped.action_masks()
        a = vec.unwrapped.sample_actions(rng)
        nxt, r, term, trunc, info = vec.step(a)
        rows.append((obs, mask, a, r, info))
        played.append(a)
        ended = bool(term.all())
        assert term.all() == term.any() and not trunc.any()
        obs, step = nxt, step + 1
    alone = _days_alone(short_day, [40 + i for i in range(n)], lambda i, s, m, e: played[s][i])
    for i in range(n):
        assert len(alone[i]) == len(rows)
        for s, ((o1, m1, _, r1, inf1), (o8, m8, _, r8, inf8)) in enumerate(zip(alone[i], rows, strict=True)):
            last = s == len(rows) - 1
            for key in o1:
                assert np.array_equal(o1[key], o8[key][i]), (i, s, key)
            assert np.array_equal(m1, m8[i]) and r1 == r8[i], (i, s)
            if last:
                fin = inf8["final_info"]
                assert inf1["kpis"] == {k: v[i] for k, v in fin["kpis"].items()} or all(
                    inf1["kpis"][k] == fin["kpis"][k][i] or (np.isnan(inf1["kpis"][k]) and np.isnan(fin["kpis"][k][i]))
                    for k in inf1["kpis"]
                )
    # the step that ends the days starts the next ones: each sub-env's next scheduled day
    assert "final_obs" in rows[-1][4]


def test_a_limit_that_would_cut_the_shared_days_short_is_refused_in_one_line(short_day) -> None:
    with pytest.raises(ValueError, match="max_episode_steps: 5 would cut the days short"):
        DispatchVecEnvV3(num_envs=2, scenario=short_day, max_episode_steps=5)


def test_top_k_by_id_breaks_ties_by_column_and_ignores_padding() -> None:
    e = np.array([[3.0, 1.0, 1.0, 2.0, np.inf], [np.inf, np.inf, 0.5, np.inf, np.inf]])
    ids = np.array([[10, 11, 12, 13, -1], [20, 21, 22, 23, -1]])
    got, eta = top_k_by_id(e, ids, 3)
    assert got.tolist() == [[11, 12, 13], [22, -1, -1]] and eta[0].tolist() == [1.0, 1.0, 2.0]
    wide = np.concatenate([e, np.full((2, 7), np.inf)], axis=1)
    got2, _ = top_k_by_id(wide, np.concatenate([ids, np.full((2, 7), -1)], axis=1), 3)
    assert np.array_equal(got, got2)


def test_ppo_trains_on_the_vector_env_through_sb3(short_day) -> None:
    from sb3_contrib import MaskablePPO

    from gigdispatch.agents.setnet import DispatchSetPolicy

    venv = SB3VecEnv(gym.make_vec(V3, num_envs=4, scenario=short_day))
    model = MaskablePPO(DispatchSetPolicy, venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, verbose=0)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256


def test_gigdispatch_train_runs_on_v3_and_the_run_acts_as_a_policy(tmp_path) -> None:
    """``env: dispatch-v3`` trains the set network on days in one set of arrays; the run folder then acts on
    ordinary days through v1's observation code, and its periodic evaluation is those days."""
    from pathlib import Path

    from sb3_contrib import MaskablePPO

    from gigdispatch.agents.learned import LearnedDispatchPolicy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.training.config import load_config
    from gigdispatch.training.runs import load_run_config
    from gigdispatch.training.train import evaluate_model, train

    smoke = Path(__file__).resolve().parents[1] / "configs/train/smoke.yaml"
    ov = ["env=dispatch-v3", "dispatch.num_envs=2", "ppo.n_steps=64", "ppo.batch_size=64", "total_timesteps=256"]
    run = train(load_config(smoke, [*ov, "eval.every_steps=128"]), tmp_path)
    model = MaskablePPO.load(run / "checkpoints/latest.zip")
    assert type(model.policy).__name__ == "DispatchSetPolicy" and model.num_timesteps == 256
    pol = LearnedDispatchPolicy(run)
    assert pol.env_name == "dispatch-v3"
    cfg = load_run_config(run)
    sim = Simulator(load_scenario(cfg.scenario))
    margins = [sim.run(pol, seed=s)["platform_margin"] for s in cfg.eval.seeds[: cfg.eval.episodes]]
    assert evaluate_model(pol.model, cfg)["reward_mean"] == pytest.approx(np.mean(margins), abs=1e-6)


def test_learn_split_reports_where_a_training_step_goes(capsys) -> None:
    import json

    pytest.importorskip("sb3_contrib")
    from benchmarks.learn_split import main

    assert main(["--envs", "2", "--steps", "1024", "--warmup", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    parts = [out[f"{k}_ms_per_step"] for k in ("env", "forward", "train", "other")]
    assert all(p >= 0 for p in parts[:3]) and out["train_ms_per_step"] > 0
    assert sum(parts) == pytest.approx(out["total_ms_per_step"], rel=1e-3)
    assert out["timed_steps"] >= 1024 and out["random_env_ms_per_step"] > 0
