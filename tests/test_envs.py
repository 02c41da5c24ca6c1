"""Issue 3: the Gymnasium dispatch env and the PettingZoo fleet env pass their libraries' own checkers,
train with MaskablePPO, handle invalid actions as documented, and are deterministic per seed."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.core.types import ORDER_DELIVERED, PH_OFFLINE

MDRP = Path(__file__).resolve().parents[2] / "shared/data/mdrplib/public_instances/0o50t75s1p100"
SCENARIOS = ["default", "city-1000", pytest.param(str(MDRP), id="mdrp-0o50t75s1p100")]


def _skip_missing(scenario: str) -> None:
    if scenario.startswith("/") and not Path(scenario).is_dir():
        pytest.skip("MDRP data not present beside the repository")


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_dispatch_env_passes_gymnasium_and_sb3_checkers(scenario: str) -> None:
    _skip_missing(scenario)
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("gigdispatch/Dispatch-v0", scenario=scenario)
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    env.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fleet_env_passes_pettingzoo_tests(scenario: str) -> None:
    _skip_missing(scenario)
    from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test

    cycles = 20 if scenario == "city-1000" else 100
    parallel_api_test(envs.parallel_env(scenario=scenario), num_cycles=cycles)
    parallel_seed_test(lambda: envs.parallel_env(scenario=scenario), num_cycles=cycles)
    api_test(envs.env(scenario=scenario), num_cycles=2 if scenario == "city-1000" else 5)


def test_maskable_ppo_on_dispatch_env() -> None:
    import torch
    from sb3_contrib import MaskablePPO

    torch.set_num_threads(1)
    env = gym.make("gigdispatch/Dispatch-v0", scenario="default", max_orders=8, k=4)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=512, batch_size=128, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    obs, _ = env.reset(seed=123)
    masks = env.unwrapped.action_masks()
    action, _ = model.predict(obs, action_masks=masks, deterministic=True)
    _, _, _, _, info = env.step(action)
    assert info["invalid_actions"] == 0  # a masked policy never picks a masked-out choice


def test_maskable_ppo_through_batched_fleet_adapter() -> None:
    import torch
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks

    torch.set_num_threads(1)
    venv = envs.FleetVecEnv(scenario="default", seed=0)
    model = MaskablePPO("MlpPolicy", venv, n_steps=32, batch_size=800, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=3 * 32 * venv.num_envs)
    assert model.num_timesteps >= 3 * 32 * venv.num_envs
    masks = get_action_masks(venv)
    assert masks.shape == (venv.num_envs, 10) and masks[:, 0].all()


def test_fleet_vec_seeding_is_deterministic() -> None:
    def rollout(seed: int) -> np.ndarray:
        v = envs.FleetVecEnv(scenario="default")
        v.seed(seed)
        obs = v.reset()
        rng = np.random.default_rng(0)
        total = np.zeros(v.num_envs)
        for _ in range(60):
            m = v.action_masks()
            a = np.argmax(m * rng.random(m.shape), axis=1)
            obs, r, _, _ = v.step(a)
            total += r
        return np.concatenate([obs.ravel(), total])

    a, b, c = rollout(5), rollout(5), rollout(6)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dispatch_env_same_seed_same_rollout() -> None:
    def rollout(seed: int) -> tuple[list[float], dict]:
        env = gym.make("gigdispatch/Dispatch-v0", scenario="default")
        obs, _ = env.reset(seed=seed)
        rewards, done, info = [], False, {}
        while not done:
            m = env.unwrapped.action_masks()[: env.unwrapped.M * (env.unwrapped.K + 1)].reshape(env.unwrapped.M, -1)
            a = np.zeros(env.action_space.shape, np.int64)
            a[: env.unwrapped.M] = np.where(m[:, 0], 0, env.unwrapped.K)
            obs, r, done, _, info = env.step(a)
            rewards.append(r)
        return rewards, info["kpis"]

    r1, k1 = rollout(11)
    r2, k2 = rollout(11)
    r3, _ = rollout(12)
    assert r1 == r2 and k1 == k2
    assert r1 != r3
    assert abs(sum(r1) - k1["platform_margin"]) < 0.05  # rewards add up to the day's margin


def test_dispatch_env_invalid_and_conflicting_choices() -> None:
    env = gym.make("gigdispatch/Dispatch-v0", scenario="default", max_orders=8, k=4).unwrapped
    env.reset(seed=3)
    while (env._cand[:, 0] >= 0).sum() < 2:  # reach an epoch with two orders that have candidates
        a = np.full(env.action_space.shape, 0, np.int64)
        a[: env.M] = env.K
        env.step(a)
    rows = np.flatnonzero(env._cand[:, 0] >= 0)[:2]
    env._cand[rows[1], 0] = env._cand[rows[0], 0]  # force both orders onto one driver
    a = np.zeros(env.action_space.shape, np.int64)
    a[: env.M] = env.K
    a[rows] = 0
    empty = np.flatnonzero(np.arange(env.M) >= len(env._slots))
    if empty.size:
        a[empty[0]] = 0  # an offer from an empty slot: masked out
    _, _, _, _, info = env.step(a)
    assert info["conflicts"] == 1
    assert info["invalid_actions"] == (1 if empty.size else 0)
    with pytest.raises(ValueError, match="action: expected shape"):
        env.step(np.zeros(3, np.int64))


def test_dispatch_env_render_rgb_array() -> None:
    env = gym.make("gigdispatch/Dispatch-v0", scenario="default", render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(30):
        a = np.zeros(env.action_space.shape, np.int64)
        env.step(a)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10  # drivers, orders, text: not a blank image
    env.close()


def test_fleet_agents_control_acceptance_and_offline_drivers_are_zeroed() -> None:
    env = envs.parallel_env(scenario="default")
    obs, _ = env.reset(seed=1)
    sim = env.core.sim
    for _ in range(240):  # four hours in which every agent declines every offer
        offline = sim.drivers.phase == PH_OFFLINE
        for i in np.flatnonzero(offline)[:5]:
            o = obs[f"driver_{i}"]
            assert not o["observation"].any() and o["action_mask"].tolist() == [1] + [0] * 9
        obs, *_ = env.step({a: 0 for a in env.agents})
    delivered = sim.orders.status == ORDER_DELIVERED
    assert delivered.any()
    assert sim.drivers.always_accept[sim.orders.driver[delivered]].all()  # only the owned fleet delivered
    assert sim.drivers.accepts[~sim.drivers.always_accept].sum() == 0


def test_fleet_reposition_moves_to_the_chosen_zone() -> None:
    env = envs.parallel_env(scenario="default")
    obs, _ = env.reset(seed=2)
    sim = env.core.sim
    idle = [i for i in range(len(env.possible_agents)) if obs[f"driver_{i}"]["action_mask"][2:].any()]
    assert idle
    i = idle[0]
    j = int(np.flatnonzero(obs[f"driver_{i}"]["action_mask"][2:])[0])
    target = sim.city.zone_neighbors[sim.city.zone_of[sim.drivers.node[i]], j]
    env.step({f"driver_{i}": 2 + j})
    assert sim.drivers.leg_to[i] == sim.city.zone_node[target] or sim.drivers.offer_order[i] >= 0
