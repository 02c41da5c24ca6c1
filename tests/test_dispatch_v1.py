"""Dispatch-v1 and its vector form: the libraries' checkers pass, v1 is v0 with row-shaped observations whose
valid columns are the action mask, the vector env's days are single-env days with the same seeds (autoreset
included), and the stable-baselines3 adapter follows SB3's conventions."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

from gigdispatch import envs
from gigdispatch.envs.dispatch_vec import DispatchVecEnv

V1 = envs.DISPATCH_V1_ID


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


def test_v1_passes_gymnasium_and_sb3_checkers() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(V1, scenario="default")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    assert env.spec is not None and env.spec.max_episode_steps == envs.MAX_EPISODE_STEPS


def test_v1_is_v0_with_row_shaped_observations_and_the_mask_in_its_valid_columns() -> None:
    v0, v1 = gym.make(envs.DISPATCH_ID).unwrapped, gym.make(V1).unwrapped
    o0, _ = v0.reset(seed=1001)
    o1, _ = v1.reset(seed=1001)
    M, K = v1.M, v1.K
    assert o1["orders"].shape == (M, 12) and o1["candidates"].shape == (M, K, 9) and o1["globals"].shape == (6,)
    rng0, rng1 = np.random.default_rng(3), np.random.default_rng(3)
    seen_padded = False
    for _ in range(60):
        for key in o0:
            assert np.array_equal(o0[key], o1[key].reshape(-1))
        mask = v1.action_masks()
        choice = mask[: M * (K + 1)].reshape(M, K + 1)
        assert np.array_equal(choice[:, :K], o1["candidates"][..., 0] == 1) and choice[:, K].all()
        level = mask[M * (K + 1) :].reshape(M, -1)
        assert np.array_equal(level[:, 1:], np.repeat(o1["orders"][:, :1] == 1, level.shape[1] - 1, axis=1))
        seen_padded |= bool((o1["orders"][:, 0] == 0).any())
        a0, a1 = v0.sample_action(rng0), v1.sample_action(rng1)
        assert np.array_equal(a0, a1)
        o0, r0, *_ = v0.step(a0)
        o1, r1, *_ = v1.step(a1)
        assert r0 == r1
    assert seen_padded  # the padded rows were checked too


def _random_rollout(single_envs, vec, steps: int, rng: np.random.Generator) -> int:
    """Step single envs and the vector env with the same random valid actions; assert equal results. Returns
    the number of days that ended."""
    singles_obs = [e.reset(seed=1200 + i)[0] for i, e in enumerate(single_envs)]
    obs, _ = vec.reset(seed=1200)
    for i, o in enumerate(singles_obs):
        assert all(np.array_equal(obs[k][i], o[k]) for k in o)
    ended = 0
    for _ in range(steps):
        actions = np.stack([e.unwrapped.sample_action(rng) for e in single_envs])
        obs, rew, term, trunc, infos = vec.step(actions)
        for i, env in enumerate(single_envs):
            o, r, te, tr, info = env.step(actions[i])
            assert (rew[i], bool(term[i]), bool(trunc[i])) == (r, te, tr)
            if te or tr:
                ended += 1
                assert infos["_final_obs"][i]
                assert all(np.array_equal(infos["final_obs"][i][k], o[k]) for k in o)
                assert infos["final_info"]["kpis"]["platform_margin"][i] == info["kpis"]["platform_margin"]
                assert infos["final_info"]["kpis"]["orders_delivered"][i] == info["kpis"]["orders_delivered"]
                o, _ = env.reset()
            assert all(np.array_equal(obs[k][i], o[k]) for k in o)
        assert np.array_equal([e.unwrapped.sim.seed for e in single_envs], [e.sim.seed for e in vec.envs])
    return ended


def test_the_vector_envs_days_are_single_env_days_with_the_same_seeds(short_day) -> None:
    singles = [gym.make(V1, scenario=short_day) for _ in range(3)]
    vec = gym.make_vec(V1, num_envs=3, scenario=short_day)
    assert isinstance(vec, DispatchVecEnv)
    ended = _random_rollout(singles, vec, 150, np.random.default_rng(8))
    assert ended >= 6  # every sub-env went through at least two autoresets
    # one vector step is one decision epoch of each day: the step counts of a day agree with the single env's
    assert vec.envs[0].sim.t == singles[0].unwrapped.sim.t


def test_async_vector_env_plays_the_same_days(short_day) -> None:
    from gymnasium.vector import AutoresetMode

    sync = gym.make_vec(V1, num_envs=2, scenario=short_day)
    asyn = gym.make_vec(
        V1,
        num_envs=2,
        scenario=short_day,
        vectorization_mode="async",
        vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
    )
    try:
        o1, _ = sync.reset(seed=1300)
        o2, _ = asyn.reset(seed=1300)
        rng = np.random.default_rng(1)
        for _ in range(40):
            for k in o1:
                assert np.array_equal(o1[k], o2[k])
            acts = np.stack([e.sample_action(rng) for e in sync.envs])
            o1, r1, t1, _, _ = sync.step(acts)
            o2, r2, t2, _, _ = asyn.step(acts)
            assert np.array_equal(r1, r2) and np.array_equal(t1, t2)
    finally:
        asyn.close()


def test_truncation_at_max_episode_steps_resets_the_day(short_day) -> None:
    vec = DispatchVecEnv(num_envs=2, scenario=short_day, max_episode_steps=3)
    vec.reset(seed=1400)
    hold = np.stack([np.where(np.arange(vec.single_action_space.shape[0]) < vec.envs[0].M, vec.envs[0].K, 0)] * 2)
    for _ in range(3):
        _, _, term, trunc, infos = vec.step(hold)
    assert trunc.all() and not term.any() and infos["_final_obs"].all()
    assert [e.sim.seed for e in vec.envs] != [1400, 1401]  # the next scheduled days started


def test_sb3_adapter_conventions(short_day) -> None:
    from gymnasium.vector import AutoresetMode

    from gigdispatch.envs.sb3_vec import SB3VecEnv

    venv = SB3VecEnv(DispatchVecEnv(num_envs=2, scenario=short_day, max_episode_steps=4))
    venv.seed(1500)
    obs = venv.reset()
    assert obs["candidates"].shape == (2, 32, 8, 9)
    assert [e.sim.seed for e in venv.venv.envs] == [1500, 1501]
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (2, int(venv.action_space.nvec.sum()))
    assert venv.get_attr("M") == [32, 32] and venv.env_is_wrapped(gym.Wrapper) == [False, False]
    hold = np.stack([np.where(np.arange(venv.action_space.shape[0]) < 32, 8, 0)] * 2)
    for _ in range(4):
        venv.step_async(hold)
        obs, rewards, dones, infos = venv.step_wait()
    assert dones.all() and rewards.dtype == np.float32
    for info in infos:
        assert info["TimeLimit.truncated"] is True and set(info["terminal_observation"]) == set(obs)
    with pytest.raises(ValueError, match="autoreset_mode"):
        SB3VecEnv(gym.make_vec(V1, num_envs=2, vectorization_mode="sync"))  # next-step autoreset by default
    ok = gym.make_vec(
        V1, num_envs=2, vectorization_mode="sync", vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}
    )
    assert SB3VecEnv(ok).num_envs == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_envs": 0}, "num_envs must be an integer >= 1"), ({"max_episode_steps": 0}, "max_episode_steps")],
)
def test_vector_env_bad_arguments(kwargs, message, short_day) -> None:
    with pytest.raises(ValueError, match=message):
        DispatchVecEnv(scenario=short_day, **kwargs)


def test_vector_env_bad_actions_and_seeds(short_day) -> None:
    vec = DispatchVecEnv(num_envs=2, scenario=short_day)
    with pytest.raises(RuntimeError, match="reset"):
        vec.step(np.zeros((2, 64), np.int64))
    with pytest.raises(ValueError, match="seed: expected an int or 2 seeds"):
        vec.reset(seed=[1, 2, 3])
    vec.reset(seed=[1600, None])
    assert vec.envs[0].sim.seed == 1600
    with pytest.raises(ValueError, match=r"actions: expected shape \(2, 64\)"):
        vec.step(np.zeros((64,), np.int64))


def test_sb3_adapter_gives_the_ended_days_info_and_keeps_the_reset_info_apart(short_day) -> None:
    from gigdispatch.envs.sb3_vec import SB3VecEnv

    venv = SB3VecEnv(DispatchVecEnv(num_envs=2, scenario=short_day))
    venv.seed(1700)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(200):
        venv.step_async(np.stack([e.sample_action(rng) for e in venv.venv.envs]))
        _, _, dones, infos = venv.step_wait()
        if dones.any():
            break
    i = int(np.flatnonzero(dones)[0])
    assert "kpis" in infos[i] and "invalid_dispatch_actions" in infos[i]  # the ended day's last step info
    assert "kpis" not in venv.reset_infos[i] and "sim_steps" in venv.reset_infos[i]
