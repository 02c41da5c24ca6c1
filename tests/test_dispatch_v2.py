"""Dispatch-v2 and its vector form: the libraries' checkers pass, the vector env's days are single-env days with
the same seeds, the observation's valid columns are the action mask, v2 with no bundle column chosen plays
v1's days, the contention features count what they say (checked against a direct count on a real day), a bad
``bundle_k`` is one line naming it, and the shipped dispatcher imitated through ``training.dagger.teacher_action``
plays exactly its native day (the v2 action space holds all its decisions)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from gigdispatch import envs
from gigdispatch.envs.dispatch_env import CANDIDATE_FEATURES, ORDER_FEATURES, DispatchEnvV1, DispatchEnvV2
from gigdispatch.envs.dispatch_vec import DispatchVecEnvV2

V2 = envs.DISPATCH_V2_ID
ROOT = Path(__file__).resolve().parents[1]
TEACHER = str(ROOT / "checkpoints/dispatch")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


def _col(name: str) -> int:
    return DispatchEnvV2.candidate_features.index(name)


def test_v2_passes_gymnasium_and_sb3_checkers() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(V2, scenario="default")
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    assert env.spec is not None and env.spec.max_episode_steps == envs.MAX_EPISODE_STEPS
    u = env.unwrapped
    assert isinstance(u, DispatchEnvV2) and (u.K, u.bundle_k) == (10, 2)
    Fo, Fc = len(u.order_features), len(u.candidate_features)
    assert (Fo, Fc) == (len(ORDER_FEATURES) + 3, len(CANDIDATE_FEATURES) + 6)
    assert u.observation_space["orders"].shape == (u.M, Fo)
    assert u.observation_space["candidates"].shape == (u.M, u.K, Fc)


def test_the_vector_envs_days_are_single_env_days_with_the_same_seeds(short_day) -> None:
    singles = [gym.make(V2, scenario=short_day) for _ in range(2)]
    vec = gym.make_vec(V2, num_envs=2, scenario=short_day)
    assert isinstance(vec, DispatchVecEnvV2) and all(isinstance(e, DispatchEnvV2) for e in vec.envs)
    assert vec.single_observation_space == singles[0].observation_space
    rng = np.random.default_rng(8)
    obs, _ = vec.reset(seed=1200)
    single_obs = [e.reset(seed=1200 + i)[0] for i, e in enumerate(singles)]
    ended = 0
    for _ in range(120):
        for i, o in enumerate(single_obs):
            assert all(np.array_equal(obs[k][i], o[k]) for k in o)
        actions = np.stack([e.unwrapped.sample_action(rng) for e in singles])
        obs, rew, term, trunc, infos = vec.step(actions)
        for i, env in enumerate(singles):
            o, r, te, tr, info = env.step(actions[i])
            assert (rew[i], bool(term[i]), bool(trunc[i])) == (r, te, tr)
            if te or tr:
                ended += 1
                assert infos["final_info"]["kpis"]["platform_margin"][i] == info["kpis"]["platform_margin"]
                o, _ = env.reset()
            single_obs[i] = o
        assert [e.unwrapped.sim.seed for e in singles] == [e.sim.seed for e in vec.envs]
    assert ended >= 4  # each sub-env went through at least one autoreset


def _check_mask(env: DispatchEnvV2, obs: dict[str, np.ndarray]) -> None:
    """The observation's valid columns are the action mask; the bundle columns are the last ``bundle_k``."""
    M, K, n = env.M, env.K, len(env._slots)
    mask = env.action_masks()
    choice = mask[: M * (K + 1)].reshape(M, K + 1)
    valid = obs["candidates"][..., 0] == 1
    assert np.array_equal(choice[:, :K], valid) and choice[:, K].all()
    assert np.array_equal(obs["orders"][:, 0] == 1, np.arange(M) < n)
    in_bundle = np.arange(K) >= K - env.bundle_k
    assert np.array_equal(obs["candidates"][..., _col("bundle")] == 1, valid & in_bundle)
    assert (obs["candidates"][..., _col("bundle_hold")][:, ~in_bundle] == 0).all()
    if env.pricing:
        level = mask[M * (K + 1) :].reshape(M, -1)
        assert level[:, 0].all() and np.array_equal(level[:, 1:].all(axis=1), np.arange(M) < n)
        assert not level[n:, 1:].any()


def test_v2_without_bundle_columns_plays_v1s_days_and_its_mask_is_its_valid_columns(short_day) -> None:
    """v2 with ``bundle_k`` 0 against v1 with the same ``k`` on the same days and actions: v1's observation as
    the first feature columns, the same rewards and day ends (v2 adds features, not dynamics). With bundle
    columns v2 also stops at epochs where an order has only a bundle candidate, so its days are not v1's."""
    v1, v2 = DispatchEnvV1(short_day, k=8), DispatchEnvV2(short_day, k=8, bundle_k=0)
    rng = np.random.default_rng(3)
    epochs = 0
    for seed in (1300, 1301, 1302, 1303):
        o1, _ = v1.reset(seed=seed)
        o2, _ = v2.reset(seed=seed)
        done = False
        while not done:
            _check_mask(v2, o2)
            assert np.array_equal(v1._slots, v2._slots) and np.array_equal(v1._cand, v2._cand)
            assert np.array_equal(o1["orders"], o2["orders"][..., : len(ORDER_FEATURES)])
            assert np.array_equal(o1["candidates"], o2["candidates"][..., : len(CANDIDATE_FEATURES)])
            assert np.array_equal(o1["globals"], o2["globals"])
            a = v1.sample_action(rng)
            o1, r1, t1, _, i1 = v1.step(a)
            o2, r2, t2, _, i2 = v2.step(a)
            assert (r1, t1, i1["sim_time"]) == (r2, t2, i2["sim_time"])
            done, epochs = t1, epochs + 1
        assert i1["kpis"]["platform_margin"] == i2["kpis"]["platform_margin"]
    assert epochs > 30 and v2.pricing  # the level mask was checked too


@pytest.mark.parametrize("bundle_k", [10, 11, -1, True, 1.5])
def test_bundle_k_out_of_range_is_one_line_naming_it(bundle_k: Any) -> None:
    with pytest.raises(ValueError, match="bundle_k") as err:
        DispatchEnvV2("default", k=10, bundle_k=bundle_k)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="bundle_k"):
        DispatchVecEnvV2(num_envs=2, scenario="default", k=10, bundle_k=bundle_k)


# --------------------------------------------------------------------- the shipped dispatcher's day
@pytest.fixture(scope="module")
def teacher_day(default_scenario) -> dict[str, Any]:
    """The shipped dispatcher on ``default`` day 1000 through Dispatch-v2 (``teacher_action``), every epoch's
    candidate table, ETAs and contention features recorded, and the same day in the bare simulator."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator
    from gigdispatch.training.dagger import teacher_action

    seed = 1000
    native = Simulator(default_scenario).run(make_policy(TEACHER), seed)["platform_margin"]
    teacher = make_policy(TEACHER)
    env = DispatchEnvV2(default_scenario)
    obs, _ = env.reset(seed=seed)
    teacher.reset(env.sim, env.sim.rng["policy"])
    epochs, unlabelled, offered, bundled = [], 0, 0, 0
    while True:
        n = len(env._slots)
        c = obs["candidates"][:n]
        epochs.append(
            (env._cand[:n].copy(), env._eta[:n].copy(), c[..., _col("driver_orders")], c[..., _col("driver_rank")])
        )
        _check_mask(env, obs)
        a, miss = teacher_action(env, teacher.act(env.sim))
        unlabelled += miss
        offered += int((a[:n] < env.K).sum())
        bundled += int(((a[:n] >= env.K - env.bundle_k) & (a[:n] < env.K)).sum())
        obs, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    return {
        "native": native,
        "margin": info["kpis"]["platform_margin"],
        "unlabelled": unlabelled,
        "offered": offered,
        "bundled": bundled,
        "epochs": epochs,
    }


def test_the_shipped_dispatcher_imitated_through_v2_plays_its_native_day(teacher_day) -> None:
    assert teacher_day["unlabelled"] == 0 and teacher_day["offered"] > 100
    assert teacher_day["bundled"] > 0  # some of its offers are in the bundle columns (v1 could not hold them)
    assert teacher_day["margin"] == teacher_day["native"]


def _contention_by_count(ids: np.ndarray, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(others, rank)`` of each valid pair by counting: ``others`` = the other slot orders that list the pair's
    driver, ``rank`` = how many of those the driver reaches sooner (an order's ETA for a driver listed twice: the
    sooner one; ties: the older order, the lower slot, first)."""
    n, K = ids.shape
    D = int(ids.max()) + 1
    E = np.full((n, D), np.inf)
    r, c = np.nonzero(ids >= 0)
    np.minimum.at(E, (r, ids[r, c]), eta[r, c])
    listed = np.isfinite(E)
    others_d = listed.sum(axis=0)[None, :] - listed  # (n, D)
    slot = np.arange(n)
    # sooner[j, i, d]: order j is listed for d and reached before order i
    sooner = listed[:, None, :] & (
        (E[:, None, :] < E[None, :, :])
        | ((E[:, None, :] == E[None, :, :]) & (slot[:, None] < slot[None, :])[..., None])
    )
    sooner &= (slot[:, None] != slot[None, :])[..., None]
    rank_d = sooner.sum(axis=0)  # (n, D)
    others, rank = np.zeros((n, K)), np.zeros((n, K))
    others[r, c] = others_d[r, ids[r, c]]
    rank[r, c] = rank_d[r, ids[r, c]]
    return others, rank


def test_contention_features_are_the_counts_they_name(teacher_day) -> None:
    """Every epoch of the day: ``driver_orders`` x 4 and ``driver_rank`` x 4 (clipped at 5) against the direct
    count, including epochs where one order lists a driver twice (nearest and bundle column)."""
    twice = ranked = 0
    for ids, eta, f_others, f_rank in teacher_day["epochs"]:
        others, rank = _contention_by_count(ids, eta)
        np.testing.assert_allclose(f_others, np.minimum(others / 4, 5), atol=1e-6)
        np.testing.assert_allclose(f_rank, np.minimum(rank / 4, 5), atol=1e-6)
        assert (rank <= others).all()
        twice += any(len(set(row[row >= 0].tolist())) < int((row >= 0).sum()) for row in ids)
        ranked += bool((rank > 0).any())
    assert twice > 0 and ranked > len(teacher_day["epochs"]) // 2  # both cases were exercised
