"""Fleet observation version 1 (issue 17, item 3): the demand forecast ``placed_0..8`` after version 0's 41 fields.

Version 1 adds 9 fields and changes nothing else: its first 41 fields are version 0's value for value on the
same day and actions, and the forecast is the count a driver would make by hand from ``sim.orders``. Fleet-v0
stays registered as it was, Fleet-v1 passes PettingZoo's own tests, the training config carries
``fleet.obs_version``, and a fleet run trained on 41-field rows still loads, plays and exports as a policy."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from gigdispatch import envs
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.fleet_core import (
    CLIP,
    FORECAST_MIN,
    OBS_DIM,
    OBS_DIMS,
    OBS_FIELDS,
    OBS_FIELDS_V0,
    OBS_FIELDS_V1,
    FleetCore,
)

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "configs/train/fleet-default.yaml"
PLACED = OBS_FIELDS_V1.index("placed_0")


@pytest.fixture(autouse=True)
def _quiet() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)


def _random_valid(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random mask-valid action per driver."""
    return np.argmax(np.where(mask, rng.random(mask.shape), -1.0), axis=1)


# ------------------------------------------------------------------------------------------- the fields
def test_version_1_has_50_fields_version_0_41() -> None:
    assert OBS_DIMS == {0: 41, 1: 50} and FORECAST_MIN == 15.0
    assert len(OBS_FIELDS_V0) == 41 and len(OBS_FIELDS_V1) == 50
    assert OBS_FIELDS_V1[:41] == OBS_FIELDS_V0 and OBS_FIELDS_V1[41:] == tuple(f"placed_{i}" for i in range(9))
    assert OBS_FIELDS == OBS_FIELDS_V1 and OBS_DIM == 50  # the unversioned names are the latest
    for version, dim in OBS_DIMS.items():
        core = FleetCore("default", obs_version=version)
        obs, _ = core.reset(0)
        assert core.obs_dim == dim and len(core.obs_fields) == dim and obs.shape == (core.n, dim)
    assert FleetCore("default").obs_version == 1
    for bad in (2, -1, "1", True):
        with pytest.raises(InputError, match=r"^obs_version: must be one of 0 \(41 fields\), 1 \(50 fields\)"):
            FleetCore("default", obs_version=bad)


def test_version_0_rows_are_version_1s_first_41() -> None:
    """Same day, same actions: at every step version 1's first 41 fields, the masks and the rewards equal version
    0's (the forecast changes no dynamics), and the forecast is not all zeros."""
    v0, v1 = FleetCore("default", obs_version=0), FleetCore("default", obs_version=1)
    (o0, m0), (o1, m1) = v0.reset(3), v1.reset(3)
    rng = np.random.default_rng(3)
    forecast_seen = 0.0
    for step in range(150):
        assert o0.shape[1] == 41 and o1.shape[1] == 50
        assert np.array_equal(o1[:, :41], o0) and np.array_equal(m1, m0), f"step {step}"
        forecast_seen = max(forecast_seen, float(o1[:, PLACED:].max()))
        a = _random_valid(m0, rng)
        o0, m0, r0, _, _ = v0.step(a)
        o1, m1, r1, _, _ = v1.step(a)
        assert np.array_equal(r0, r1)
    assert forecast_seen > 0.0


def test_fleet_v0_env_observes_version_0() -> None:
    """Fleet-v0's observations are ``FleetCore(obs_version=0)``'s rows on the same day."""
    par = envs.parallel_env(version=0, scenario="default")
    obs, _ = par.reset(seed=4)
    core = FleetCore("default", obs_version=0)
    rows, _ = core.reset(4)
    for _ in range(30):
        got = np.stack([obs[a]["observation"] for a in par.possible_agents])
        assert np.array_equal(got, rows)
        obs, *_ = par.step({a: 0 for a in par.agents})
        rows, *_ = core.step(np.zeros(core.n, np.int64))


def test_placed_counts_match_a_hand_count() -> None:
    """At one step of ``default``: a driver's ``placed_0..8`` are the orders with ``t - 15 min <= t_place < t``
    (converted or not), counted by pickup zone in its zone and its 8 neighbours, /10, clipped at CLIP, 0 for a
    missing neighbour; an inactive driver's are 0."""
    core = FleetCore("default", obs_version=1)
    obs, mask = core.reset(1)
    rng = np.random.default_rng(1)
    for _ in range(120):
        obs, mask, *_ = core.step(_random_valid(mask, rng))
    sim = core.sim
    t, od, city = sim.t, sim.orders, sim.city
    zone = city.zone_of[sim.drivers.node]
    active = obs[:, 0] == 1.0
    assert active.any() and (~active).any()
    in_window = [j for j in range(od.n) if t - FORECAST_MIN * 60.0 <= od.t_place[j] < t]
    assert len(in_window) > 5
    checked_missing = False
    for d in np.flatnonzero(active)[:10]:
        zones = [int(zone[d]), *(int(z) for z in city.zone_neighbors[zone[d]])]
        want = []
        for z in zones:
            count = sum(1 for j in in_window if city.zone_of[od.pickup[j]] == z) if z >= 0 else 0
            want.append(min(0.1 * count, CLIP))
        np.testing.assert_allclose(obs[d, PLACED:], want, rtol=1e-6, atol=1e-7)
        checked_missing |= min(zones) < 0
    assert obs[active][:, PLACED].max() > 0.0  # some own zone had recent demand: the count can fail
    assert not obs[~active][:, PLACED:].any()
    if not checked_missing:  # a zone at the city's edge: its missing neighbours read 0
        edge = np.flatnonzero(active & (city.zone_neighbors[zone] < 0).any(axis=1))
        assert edge.size
        d = int(edge[0])
        assert not obs[d, PLACED + 1 :][city.zone_neighbors[zone[d]] < 0].any()


# --------------------------------------------------------------------------------------- registration
def test_fleet_v1_registered_and_v0_kept() -> None:
    import pettingzoo

    from gigdispatch.envs.fleet_env import FleetParallelEnv, FleetParallelEnvV1

    assert envs.FLEET_ID == "gigdispatch/Fleet-v0" and envs.FLEET_V1_ID == "gigdispatch/Fleet-v1"
    v0 = pettingzoo.make("parallel", envs.FLEET_ID)
    v1 = pettingzoo.make("parallel", envs.FLEET_V1_ID)
    assert type(v0) is FleetParallelEnv and v0.metadata["name"] == "gigdispatch_fleet_v0"
    assert type(v1) is FleetParallelEnvV1 and v1.metadata["name"] == "gigdispatch_fleet_v1"
    assert v0.observation_space("driver_0")["observation"].shape == (41,)
    assert v1.observation_space("driver_0")["observation"].shape == (50,)
    assert pettingzoo.make("aec", envs.FLEET_V1_ID).metadata["name"] == "gigdispatch_fleet_v1"
    assert type(envs.parallel_env()) is FleetParallelEnvV1  # the plain functions make the latest
    assert envs.env().observation_space("driver_0")["observation"].shape == (50,)
    assert type(envs.parallel_env(version=0)) is FleetParallelEnv
    with pytest.raises(InputError, match=r"^version: the fleet env has versions 0, 1, got 2$"):
        envs.parallel_env(version=2)
    assert envs.FleetVecEnv().observation_space.shape == (50,)
    assert envs.FleetVecEnv(obs_version=0).observation_space.shape == (41,)


def test_fleet_v1_passes_pettingzoo_tests() -> None:
    import pettingzoo

    with warnings.catch_warnings():  # importing it imports connect_four_v3, whose module warns (see test_envs)
        warnings.filterwarnings("ignore", message="The old environment creation API", category=DeprecationWarning)
        import pettingzoo.test as pzt

    pzt.parallel_api_test(pettingzoo.make("parallel", envs.FLEET_V1_ID, scenario="default"), num_cycles=100)
    pzt.parallel_seed_test(lambda: envs.parallel_env(scenario="default"), num_cycles=100)
    pzt.api_test(pettingzoo.make("aec", envs.FLEET_V1_ID, scenario="default"), num_cycles=5)


# --------------------------------------------------------------------------------------------- training
def test_config_obs_version() -> None:
    from gigdispatch.training.config import ConfigError, load_config

    assert load_config(FLEET).fleet.obs_version == 1
    assert load_config(FLEET, ["fleet.obs_version=0"]).fleet.obs_version == 0
    with pytest.raises(ConfigError) as err:
        load_config(FLEET, ["fleet.obs_version=2"])
    msg = str(err.value)
    assert "fleet.obs_version: must be 0 (41 fields) or 1 (50 fields" in msg and "got 2" in msg and "\n" not in msg


def test_an_old_fleet_run_config_reads_back_as_version_0(tmp_path: Path) -> None:
    """A fleet run's config.yaml from before ``fleet.obs_version``: version 0, the rows it was trained on."""
    from gigdispatch.training.config import load_config
    from gigdispatch.training.runs import load_run_config

    data = yaml.safe_load(load_config(FLEET).to_yaml())
    assert data["fleet"]["obs_version"] == 1  # a new run writes it
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert load_run_config(tmp_path).fleet.obs_version == 1
    del data["fleet"]["obs_version"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert load_run_config(tmp_path).fleet.obs_version == 0


@pytest.fixture(scope="module")
def v0_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny fleet run on 41-field rows (one PPO iteration, as in test_fleet_policy), its config.yaml then
    written the way runs were before ``fleet.obs_version`` existed."""
    pytest.importorskip("sb3_contrib")
    from gigdispatch.training.config import load_config
    from gigdispatch.training.train import train

    cfg = load_config(
        FLEET,
        [
            *("total_timesteps=200", "ppo.n_steps=2", "ppo.batch_size=100", "ppo.n_epochs=1", "ppo.net_arch=[16]"),
            *("eval.every_steps=0", "checkpoint_every_steps=1000000", "fleet.obs_version=0"),
        ],
    )
    run = train(cfg, run_dir=tmp_path_factory.mktemp("fleet-v0") / "run", command="pytest fleet forecast")
    data = yaml.safe_load((run / "config.yaml").read_text())
    del data["fleet"]["obs_version"]
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return run


def test_a_version_0_run_still_loads_as_a_policy(v0_run: Path) -> None:
    """The 41-field model is a policy: its version is inferred from its observation space, and its day in the
    bare simulator is the one it plays in ``FleetVecEnv(obs_version=0)``."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.fleet_learned import LearnedFleetPolicy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.core.seeding import SeedSchedule

    pol = make_policy(str(v0_run))
    assert isinstance(pol, LearnedFleetPolicy) and pol.obs_version == 0
    assert pol.model.observation_space.shape == (41,)
    venv = envs.FleetVecEnv(
        "default", platform_policy=make_policy("nearest"), seed_schedule=SeedSchedule(seeds=[5000]), obs_version=0
    )
    obs = venv.reset()
    sim = Simulator(load_scenario("default"))
    sim.reset(5000)
    pol.reset(sim, sim.rng["policy"])
    assert pol._core is not None and pol._core.obs_dim == 41
    for i in range(40):
        action, _ = pol.model.predict(obs, action_masks=venv.action_masks(), deterministic=True)
        obs, _, _, _ = venv.step(action)
        sim.step(pol.act(sim))
        assert np.array_equal(sim.drivers.node, venv.core.sim.drivers.node), f"step {i}"
        assert np.array_equal(sim.orders.status, venv.core.sim.orders.status), f"step {i}"


def test_a_version_0_run_exports_41_fields(v0_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from gigdispatch.training.export import export_policy

    meta = export_policy(v0_run, tmp_path / "fleet.onnx", check=200)
    assert meta["obs_version"] == 0 and meta["verified"]["identical"] == 200
    assert meta["input"]["shape"] == ["batch", 41] and meta["input"]["fields"] == list(OBS_FIELDS_V0)
