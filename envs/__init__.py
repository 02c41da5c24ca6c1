"""gigdispatch environments.

* ``envs.core`` -- the simulator (NumPy only), ``envs.scenarios`` -- scenario loading;
* ``gigdispatch/Dispatch-v0`` (Gymnasium), registered on import with its episode limit:
  ``gymnasium.make("gigdispatch/Dispatch-v0", scenario=...)``;
* ``gigdispatch/Dispatch-v1``: the same env with the observation as rows of sets (``DispatchEnvV1``), and its
  vector form ``gymnasium.make_vec("gigdispatch/Dispatch-v1", num_envs=8)`` (``envs.dispatch_vec``; for
  stable-baselines3 wrap it in ``envs.sb3_vec.SB3VecEnv``);
* ``gigdispatch/Dispatch-v2``: v1 with same-pickup bundle candidates and the features a pair score needs
  (``DispatchEnvV2``), vector form ``gymnasium.make_vec("gigdispatch/Dispatch-v2", num_envs=8)``;
* ``gigdispatch/Dispatch-v3``: v1's observation and actions on a fixed clock (every simulator step an epoch, every
  day to its full length), vector form ``gymnasium.make_vec("gigdispatch/Dispatch-v3", num_envs=8)`` with the
  days in one set of arrays (``envs.dispatch_days``: N days for far less than N times one);
* ``gigdispatch/Fleet-v0`` (PettingZoo), registered on import in both of PettingZoo's registries:
  ``pettingzoo.make("parallel", "gigdispatch/Fleet-v0", scenario=...)`` (or ``"aec"``);
* ``gigdispatch/Fleet-v1``: v0 with a demand forecast in the observation (``placed_0..8``: the orders requested
  in the last 15 minutes in the driver's zone and its neighbours; ``FleetParallelEnvV1``), registered the same way;
  ``envs.parallel_env(...)`` / ``envs.env(...)`` make the latest, Fleet-v1, as plain functions
  (``version=0``: Fleet-v0);
* ``envs.FleetVecEnv`` -- the batched stable-baselines3 adapter over the fleet (drivers = the vector dimension).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import pettingzoo

from gigdispatch.envs.core import ActionError, Decision, Scenario, Simulator, compute_kpis
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.dispatch_env import MAX_EPISODE_STEPS
from gigdispatch.envs.scenarios import ScenarioError, load_scenario

DISPATCH_ID = "gigdispatch/Dispatch-v0"
DISPATCH_V1_ID = "gigdispatch/Dispatch-v1"
DISPATCH_V2_ID = "gigdispatch/Dispatch-v2"
DISPATCH_V3_ID = "gigdispatch/Dispatch-v3"
FLEET_ID = "gigdispatch/Fleet-v0"
FLEET_V1_ID = "gigdispatch/Fleet-v1"
FLEET_IDS = {0: FLEET_ID, 1: FLEET_V1_ID}  # by observation version (``envs.fleet_core.OBS_DIMS``)

if DISPATCH_ID not in gymnasium.registry:
    gymnasium.register(
        id=DISPATCH_ID, entry_point="gigdispatch.envs.dispatch_env:DispatchEnv", max_episode_steps=MAX_EPISODE_STEPS
    )
if DISPATCH_V1_ID not in gymnasium.registry:
    gymnasium.register(
        id=DISPATCH_V1_ID,
        entry_point="gigdispatch.envs.dispatch_env:DispatchEnvV1",
        vector_entry_point="gigdispatch.envs.dispatch_vec:DispatchVecEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
    )
if DISPATCH_V2_ID not in gymnasium.registry:
    gymnasium.register(
        id=DISPATCH_V2_ID,
        entry_point="gigdispatch.envs.dispatch_env:DispatchEnvV2",
        vector_entry_point="gigdispatch.envs.dispatch_vec:DispatchVecEnvV2",
        max_episode_steps=MAX_EPISODE_STEPS,
    )
if DISPATCH_V3_ID not in gymnasium.registry:
    gymnasium.register(
        id=DISPATCH_V3_ID,
        entry_point="gigdispatch.envs.dispatch_days:DispatchEnvV3",
        vector_entry_point="gigdispatch.envs.dispatch_days:DispatchVecEnvV3",
        max_episode_steps=MAX_EPISODE_STEPS,
    )
if FLEET_ID not in pettingzoo.parallel_registry:
    pettingzoo.register("parallel", FLEET_ID, entry_point="gigdispatch.envs.fleet_env:FleetParallelEnv")
if FLEET_ID not in pettingzoo.aec_registry:
    pettingzoo.register("aec", FLEET_ID, entry_point="gigdispatch.envs.fleet_env:aec_env")
if FLEET_V1_ID not in pettingzoo.parallel_registry:
    pettingzoo.register("parallel", FLEET_V1_ID, entry_point="gigdispatch.envs.fleet_env:FleetParallelEnvV1")
if FLEET_V1_ID not in pettingzoo.aec_registry:
    pettingzoo.register("aec", FLEET_V1_ID, entry_point="gigdispatch.envs.fleet_env:aec_env_v1")


def fleet_id(version: int) -> str:
    """The registered id of fleet env ``version`` (``FLEET_IDS``); ``InputError`` (one line) for another."""
    if not isinstance(version, int) or isinstance(version, bool) or version not in FLEET_IDS:
        raise InputError(f"version: the fleet env has versions {', '.join(map(str, FLEET_IDS))}, got {version!r}")
    return FLEET_IDS[version]


def parallel_env(version: int = 1, **kwargs: Any) -> pettingzoo.ParallelEnv:
    """The PettingZoo fleet environment, parallel API (one agent per driver): ``pettingzoo.make("parallel", ...)``
    of ``gigdispatch/Fleet-v{version}`` (default 1, the latest; 0: Fleet-v0, unchanged)."""
    return pettingzoo.make("parallel", fleet_id(version), **kwargs)


def env(version: int = 1, **kwargs: Any) -> pettingzoo.AECEnv:
    """The PettingZoo fleet environment, AEC API (wraps the parallel one): ``pettingzoo.make("aec", ...)`` of
    ``gigdispatch/Fleet-v{version}`` (default 1, the latest)."""
    return pettingzoo.make("aec", fleet_id(version), **kwargs)


def __getattr__(name: str) -> Any:
    if name == "FleetVecEnv":
        from gigdispatch.envs.fleet_vec import FleetVecEnv

        return FleetVecEnv
    raise AttributeError(name)


__all__ = [
    "DISPATCH_ID",
    "DISPATCH_V1_ID",
    "FLEET_ID",
    "FLEET_IDS",
    "FLEET_V1_ID",
    "ActionError",
    "Decision",
    "FleetVecEnv",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "compute_kpis",
    "env",
    "fleet_id",
    "load_scenario",
    "parallel_env",
]
