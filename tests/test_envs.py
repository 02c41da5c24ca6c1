"""The Gymnasium dispatch env and the PettingZoo fleet env pass their libraries' own checkers, are
registered, train with MaskablePPO, handle invalid actions as documented, and play one day per seed."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from simtools import MDRP_DIR

from gigdispatch import envs
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.core.types import ORDER_DELIVERED, PH_OFFLINE

MDRP = Path(__file__).resolve().parents[2] / "shared/data/mdrplib/public_instances/0o50t75s1p100"
SCENARIOS = ["default", "city-1000", pytest.param(str(MDRP), id="mdrp-0o50t75s1p100")]


def _skip_missing(scenario: str) -> None:
    if scenario.startswith("/") and not Path(scenario).is_dir():
        pytest.skip("MDRP data not present beside the repository")


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


def _pettingzoo_tests():
    """PettingZoo's own test module. Importing it imports ``pettingzoo.classic.connect_four_v3`` (a fixture of
    its ``api_test``), whose module-level code warns that creating envs from modules is deprecated: that
    warning is the library's, not ours (our env comes from the registry), so it is silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The old environment creation API", category=DeprecationWarning)
        import pettingzoo.test

    return pettingzoo.test


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
    import pettingzoo

    pzt = _pettingzoo_tests()
    cycles = 20 if scenario == "city-1000" else 100
    pzt.parallel_api_test(pettingzoo.make("parallel", envs.FLEET_ID, scenario=scenario), num_cycles=cycles)
    pzt.parallel_seed_test(lambda: envs.parallel_env(scenario=scenario), num_cycles=cycles)
    aec = pettingzoo.make("aec", envs.FLEET_ID, scenario=scenario)
    pzt.api_test(aec, num_cycles=2 if scenario == "city-1000" else 5)


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
    assert info["invalid_dispatch_actions"] == 0  # a masked policy never picks a masked-out choice


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
        env.reset(seed=seed)
        rewards, done, info = [], False, {}
        while not done:
            m = env.unwrapped.action_masks()[: env.unwrapped.M * (env.unwrapped.K + 1)].reshape(env.unwrapped.M, -1)
            a = np.zeros(env.action_space.shape, np.int64)
            a[: env.unwrapped.M] = np.where(m[:, 0], 0, env.unwrapped.K)
            _, r, done, _, info = env.step(a)
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
    assert info["invalid_dispatch_actions"] == (1 if empty.size else 0)
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


# ------------------------------------------------------------------------------- registries, policies
def test_registries_and_episode_limit() -> None:
    import pettingzoo

    from gigdispatch.envs.dispatch_env import MAX_EPISODE_STEPS, DispatchEnv
    from gigdispatch.envs.fleet_env import FleetParallelEnv

    spec = gym.spec(envs.DISPATCH_ID)
    assert spec.max_episode_steps == MAX_EPISODE_STEPS
    mdrp = sorted(MDRP_DIR.iterdir())[:3] if MDRP_DIR.is_dir() else []
    for sc in ["default", "city-1000", *map(str, mdrp)]:  # no built-in day is cut short by the limit
        assert envs.Simulator(envs.load_scenario(sc)).n_steps <= MAX_EPISODE_STEPS, sc
    env = gym.make(envs.DISPATCH_ID)
    assert isinstance(env, gym.wrappers.TimeLimit) and env.spec.max_episode_steps == MAX_EPISODE_STEPS
    assert isinstance(env.unwrapped, DispatchEnv)
    par = pettingzoo.make("parallel", envs.FLEET_ID, reward="platform", max_cycles=3)
    assert isinstance(par, FleetParallelEnv) and par.max_cycles == 3 and par.core.reward_mode == "platform"
    aec = pettingzoo.make("aec", envs.FLEET_ID)
    assert isinstance(aec, pettingzoo.AECEnv) and aec.possible_agents == par.possible_agents
    assert isinstance(envs.parallel_env(), FleetParallelEnv)
    assert isinstance(envs.env(), pettingzoo.AECEnv)


def test_creating_the_fleet_env_warns_nothing() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        envs.parallel_env().reset(seed=0)
        envs.env().reset(seed=0)
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message) for w in caught]


def test_platform_policy_is_an_object() -> None:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs.core.errors import InputError
    from gigdispatch.envs.core.nearest import NearestPolicy

    assert isinstance(envs.parallel_env().core.policy, NearestPolicy)  # None: the nearest-driver dispatcher
    hungarian = make_policy("hungarian")
    assert envs.parallel_env(platform_policy=hungarian).core.policy is hungarian
    assert envs.FleetVecEnv(platform_policy=hungarian).core.policy is hungarian
    for bad in ("hungarian", 3):
        with pytest.raises(TypeError, match=r"platform_policy: pass a Policy object \(e\.g\. gigdispatch\.agents"):
            envs.parallel_env(platform_policy=bad)
    with pytest.raises(InputError, match="make_policy\\('nearest'\\)"):
        envs.FleetVecEnv(platform_policy="nearest")


# ------------------------------------------------------------------------------------- one seed rule
_DAY_FIELDS = ("t_place", "t_ready", "deadline", "pickup", "dropoff", "volume", "value", "tip", "u_convert")


def _day(sim) -> list[np.ndarray]:
    """What the seed draws: the day's orders (as placed, whatever was decided since) and its drivers."""
    return [getattr(sim.orders, f) for f in _DAY_FIELDS] + [sim.drivers.vehicle, sim.drivers.pref_zone]


def _same_day(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(_day(a), _day(b), strict=True))


@pytest.mark.parametrize("seed", [0, 7])
def test_one_seed_is_one_day_in_every_env(default_scenario, seed: int) -> None:
    from gigdispatch.envs.dispatch_env import DispatchEnv

    ref = envs.Simulator(default_scenario)
    ref.reset(seed)
    disp = DispatchEnv(default_scenario)
    disp.reset(seed=seed)
    par = envs.parallel_env(scenario=default_scenario)
    par.reset(seed=seed)
    built = envs.FleetVecEnv(scenario=default_scenario, seed=seed)
    built.reset()
    seeded = envs.FleetVecEnv(scenario=default_scenario)
    seeded.seed(seed)
    seeded.reset()
    for sim in (disp.sim, par.core.sim, built.core.sim, seeded.core.sim):
        assert sim.seed == seed and _same_day(sim, ref)
    other = envs.Simulator(default_scenario)
    other.reset(seed + 1)
    assert not _same_day(other, ref)  # the comparison can fail


def test_later_days_follow_the_schedule(default_scenario) -> None:
    from gigdispatch.envs.dispatch_env import DispatchEnv

    # no schedule: after a reset with seed s the next days are drawn from default_rng(s), as gymnasium's
    # np_random drew them before there was a schedule
    draws = np.random.default_rng(11).integers(0, 2**63 - 1, size=2).tolist()
    disp = DispatchEnv(default_scenario)
    disp.reset(seed=11)
    assert int(disp.np_random.integers(0, 2**63 - 1)) == draws[0]  # what gymnasium's np_random would draw
    days = []
    for _ in range(2):
        disp.reset()
        days.append(disp.sim.seed)
    assert days == draws
    par = envs.parallel_env(scenario=default_scenario)
    par.reset(seed=11)
    par.reset()
    assert par.core.sim.seed == draws[0]
    vec = envs.FleetVecEnv(scenario=default_scenario, seed=11)
    vec.reset()
    vec.reset()
    assert vec.core.sim.seed == draws[0]
    # a list of days, in turn; a seed passed to reset is played once unless the schedule ignores it
    listed = DispatchEnv(default_scenario, seed_schedule=SeedSchedule(seeds=[1003, 1001]))
    days = []
    for _ in range(3):
        listed.reset()
        days.append(listed.sim.seed)
    assert days == [1003, 1001, 1003]
    listed.reset(seed=4)
    assert listed.sim.seed == 4
    listed.reset()
    assert listed.sim.seed == 1001
    train = SeedSchedule(seeds=range(1000, 1010), shuffle=5, ignore_reset_seed=True)
    order = np.random.default_rng(5).permutation(np.arange(1000, 1010)).tolist()
    vec = envs.FleetVecEnv(scenario=default_scenario, seed_schedule=train)
    vec.seed(0)  # what SB3's model constructor does: ignored, 0 is an evaluation day
    vec.reset()
    assert vec.core.sim.seed == order[0]
    assert [train.day(3) for _ in range(3)] == order[1:4]


def test_fleet_vec_env_starts_the_next_day_of_its_schedule_when_a_day_ends() -> None:
    import yaml

    from gigdispatch.envs.scenarios.loader import parse_config

    text = "horizon: {start: '10:00', end: '10:20', drain_minutes: 0}\nfleet: {drivers: 4}"
    cfg = parse_config(yaml.safe_load(text), "short day")
    vec = envs.FleetVecEnv(scenario=cfg, seed_schedule=SeedSchedule(seeds=[1000, 1001]))
    vec.reset()
    assert vec.core.sim.seed == 1000
    for _ in range(vec.core.sim.n_steps):
        _, _, dones, infos = vec.step(np.zeros(vec.num_envs, np.int64))
        if dones.all():
            break
    assert dones.all() and "terminal_observation" in infos[0]
    assert vec.core.sim.seed == 1001 and vec.last_kpis is not None


def test_fleet_counters_are_named_apart() -> None:
    """A day of mask-valid driver actions: the drivers' invalid-action count is 0 at every step, while the day's
    KPI of the platform's skipped decision pairs is another count under another name."""
    par = envs.parallel_env(scenario="default")
    obs, _ = par.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, info = 0, {}
    while par.agents:
        agents = par.agents
        mask = np.stack([obs[a]["action_mask"] for a in agents]).astype(bool)
        choice = np.argmax(np.where(mask, rng.random(mask.shape), -1.0), axis=1)  # a random valid action each
        obs, _, _, _, infos = par.step(dict(zip(agents, choice.tolist(), strict=True)))
        info = infos[agents[0]]
        assert info["invalid_driver_actions"] == 0 and "invalid_actions" not in info
        steps += 1
    assert steps > 100
    kpis = info["kpis"]
    assert "invalid_actions" not in kpis and kpis["invalid_decision_pairs"] > 0
    assert set(kpis) == set(envs.core.KPI_DOC) - {"wall_seconds"}


def test_dispatch_env_sample_helpers_give_valid_actions() -> None:
    """``split_mask`` makes ``action_space.sample(mask=...)`` work with the flat mask; ``sample_action`` draws a
    valid action: over many steps no choice is masked out, and the choices do vary."""
    env = gym.make("gigdispatch/Dispatch-v0", scenario="default", max_orders=8, k=4)
    u = env.unwrapped
    env.reset(seed=0)
    env.action_space.seed(0)
    with pytest.raises(AssertionError, match="tuple"):  # what the flat mask alone gives
        env.action_space.sample(mask=u.action_masks())
    offers, info = 0, {}
    for i in range(300):
        if i % 2:
            action = env.action_space.sample(mask=u.split_mask(u.action_masks()))
        else:
            action = u.sample_action()
        flat = u.action_masks()
        idx = np.concatenate([[0], np.cumsum(u.action_space.nvec)[:-1]]) + action
        assert flat[idx].all()  # every slot's value is allowed by the mask
        offers += int((action[: u.M] < u.K).sum())
        _, _, terminated, truncated, info = env.step(action)
        assert info["invalid_dispatch_actions"] == 0 and "invalid_actions" not in info
        if terminated or truncated:
            break
    assert offers > 50
    parts = u.split_mask()
    assert len(parts) == len(u.action_space.nvec) and all(p.dtype == np.int8 for p in parts)
    assert [len(p) for p in parts] == u.action_space.nvec.tolist()
    a = u.sample_action(np.random.default_rng(1))
    assert np.array_equal(a, u.sample_action(np.random.default_rng(1)))
    with pytest.raises(ValueError, match="mask: expected"):
        u.split_mask(np.ones(3, bool))


class _Hold(envs.core.Policy):
    """Offers nothing: a day where nothing is delivered."""

    def act(self, sim: envs.Simulator) -> envs.Decision:
        return envs.Decision()


def test_undefined_rates_are_nan_and_shown_as_n_a() -> None:
    import json
    import math

    from gigdispatch.envs.core.config import Demand, GridScenario
    from gigdispatch.training.cli import format_kpi_table
    from gigdispatch.training.io import json_safe
    from gigdispatch.training.report import fmt
    from gigdispatch.training.stats import mean_ci, paired_diff

    k = envs.Simulator(envs.load_scenario("default")).run(_Hold(), seed=0)
    assert k["orders_created"] > 0 and k["orders_delivered"] == 0
    for name in ("on_time_rate", "click_to_door_mean_min", "orders_per_bundle", "acceptance_rate"):
        assert math.isnan(k[name]), name
    assert k["undelivered_rate"] == 1.0 and k["utilization"] >= 0.0  # defined: orders were created, drivers online
    # nothing created at all: every rate over orders is undefined too
    q = envs.Simulator(envs.load_scenario(GridScenario(demand=Demand(orders=0.0)))).run(_Hold(), seed=0)
    assert q["orders_created"] == 0
    for name in ("on_time_rate", "undelivered_rate", "cost_per_order", "acceptance_rate"):
        assert math.isnan(q[name]), name
    # shown as n/a, written as null, left out of means and paired comparisons
    row = next(ln for ln in format_kpi_table(k, "day").splitlines() if ln.startswith("on_time_rate "))
    assert row.split()[1] == "n/a"
    assert fmt(k["on_time_rate"]) == "n/a"
    assert json.loads(json.dumps(json_safe(k)))["on_time_rate"] is None
    assert mean_ci([k["on_time_rate"], 0.9, 0.8])[0] == pytest.approx(0.85)
    assert paired_diff([k["on_time_rate"], 0.9, 0.8], [0.5, 0.7, 0.7]).n == 2
