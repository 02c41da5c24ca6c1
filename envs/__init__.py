"""gigdispatch environments.

* ``envs.core`` -- the simulator (NumPy only), ``envs.scenarios`` -- scenario loading;
* ``gigdispatch/Dispatch-v0`` (Gymnasium), registered on import: ``gymnasium.make("gigdispatch/Dispatch-v0", scenario=...)``;
* ``envs.parallel_env(...)`` / ``envs.env(...)`` -- the PettingZoo fleet environment (parallel / AEC);
* ``envs.FleetVecEnv`` -- the batched stable-baselines3 adapter over the fleet (drivers = the vector dimension).
"""

from __future__ import annotations

from typing import Any

import gymnasium

from envs.core import ActionError, Decision, Scenario, Simulator, compute_kpis
from envs.scenarios import ScenarioError, load_scenario

if "gigdispatch/Dispatch-v0" not in gymnasium.registry:
    gymnasium.register(id="gigdispatch/Dispatch-v0", entry_point="envs.dispatch_env:DispatchEnv")


def parallel_env(**kwargs: Any):
    """The PettingZoo fleet environment, parallel API (one agent per driver)."""
    from envs.fleet_env import FleetParallelEnv

    return FleetParallelEnv(**kwargs)


def env(**kwargs: Any):
    """The PettingZoo fleet environment, AEC API (wraps the parallel one)."""
    from pettingzoo.utils.conversions import parallel_to_aec

    return parallel_to_aec(parallel_env(**kwargs))


def __getattr__(name: str) -> Any:
    if name == "FleetVecEnv":
        from envs.fleet_vec import FleetVecEnv

        return FleetVecEnv
    raise AttributeError(name)


__all__ = [
    "ActionError",
    "Decision",
    "FleetVecEnv",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "compute_kpis",
    "env",
    "load_scenario",
    "parallel_env",
]
