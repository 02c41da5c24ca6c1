"""The batched adapter: all drivers of one fleet env as one stable-baselines3 ``VecEnv``.

The drivers are the vector dimension: observations ``(D, 50)`` (``obs_version=0``: ``(D, 41)``), actions
``(D,)``, rewards ``(D,)``, NumPy arrays end to end (no per-agent dictionaries). One shared policy acts for
every driver. Action masks come through ``env_method("action_masks")`` / ``action_masks()`` (what
sb3-contrib's MaskablePPO calls). When the day ends, every driver's episode ends: ``dones`` is all True, each
info holds its ``terminal_observation``, and the next day starts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.policy import Policy
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.fleet_core import CLIP, N_ACTIONS, OBS_VERSION, FleetCore


class FleetVecEnv(VecEnv):
    """The fleet's drivers as one SB3 ``VecEnv`` (``num_envs`` = drivers), over the same ``FleetCore`` as
    the PettingZoo env: the same observations (``(D, 50)``, Fleet-v1's rows; ``obs_version=0``: ``(D, 41)``,
    Fleet-v0's), masks, actions and rewards.

    ## Seeding
    ``seed(s)`` (SB3's convention: applied at the next ``reset()``) or ``FleetVecEnv(seed=s)``: the first
    day after the reset is day ``s``, the day ``Simulator.reset(s)``, ``Dispatch-v0``'s ``reset(seed=s)``
    and the PettingZoo env's ``reset(seed=s)`` play. The days after it (a reset without a seed, or the
    automatic reset when a day ends) come from ``seed_schedule``: by default drawn from
    ``default_rng(s)``; ``SeedSchedule(seeds=[...])`` plays a list of days in turn.

    ## Arguments
    ``scenario`` (name, YAML path, MDRP folder, config or Scenario), ``platform_policy`` (a ``Policy``
    object; ``None``: ``NearestPolicy()``), ``reward`` (``"own"`` or ``"platform"``), ``seed`` (the first
    day), ``seed_schedule`` (a ``SeedSchedule``), ``obs_version`` (the observation rows, ``envs.fleet_core``:
    1, the default, ``OBS_FIELDS_V1`` with the demand forecast ``placed_0..8``; 0, ``OBS_FIELDS_V0``).

    ## Version History
    * ``obs_version`` (default 1): observations of 50 fields, the 41 before and ``placed_0..8`` (the orders
      requested in the last 15 minutes by zone); ``obs_version=0`` gives the 41 as before.
    * v1: the first day after ``seed(s)`` or ``seed=s`` is day ``s`` (one seeding rule for every env);
      v0 played a day drawn from ``default_rng(s)`` instead (v1's second day is v0's first).
      ``seed_schedule`` is an argument; ``platform_policy`` takes a policy object (a name is refused).
    * v0: initial version.
    """

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        platform_policy: Policy | None = None,
        reward: str = "own",
        seed: int | None = None,
        seed_schedule: SeedSchedule | None = None,
        obs_version: int = OBS_VERSION,
    ) -> None:
        self.core = FleetCore(scenario, platform_policy, reward, obs_version=obs_version)
        n = self.core.scenario.n_drivers
        obs_space = spaces.Box(-CLIP, CLIP, (self.core.obs_dim,), np.float32)
        super().__init__(n, obs_space, spaces.Discrete(N_ACTIONS))
        self.seed_schedule = seed_schedule if seed_schedule is not None else SeedSchedule()
        if seed is not None:
            self.seed(seed)  # day ``seed`` at the first reset
        self._actions: np.ndarray | None = None
        self.episode_returns = np.zeros(n)
        self.last_kpis: dict[str, float] | None = None
        self._empty_infos: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------- VecEnv API
    def reset(self) -> np.ndarray:
        seed = self._seeds[0] if self._seeds else None  # from seed(): one day for all drivers
        self._reset_seeds()
        obs, _ = self.core.reset(self.seed_schedule.day(seed))
        self.episode_returns[:] = 0.0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, _, reward, done, _ = self.core.step(self._actions)
        self._actions = None
        self.episode_returns += reward
        if done:
            self.last_kpis = compute_kpis(self.core.sim)
            infos = [
                {"terminal_observation": obs[i], "episode": {"r": float(self.episode_returns[i]), "l": 0}}
                for i in range(self.num_envs)
            ]
            obs, _ = self.core.reset(self.seed_schedule.next())
            self.episode_returns[:] = 0.0
        else:
            # SB3 only reads infos between episode ends: reuse one list of empty dicts, rebuilt if touched
            infos = self._empty_infos
            if len(infos) != self.num_envs or any(infos):
                infos = self._empty_infos = [{} for _ in range(self.num_envs)]
        return obs, reward, np.full(self.num_envs, done), infos

    def action_masks(self) -> np.ndarray:
        """(D, 10) bool masks, for MaskablePPO."""
        return self.core.action_masks()

    def close(self) -> None:
        return None

    def _idx(self, indices: VecEnvIndices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name) if attr_name == "action_masks" else getattr(self.core, attr_name)
        return [value for _ in self._idx(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.core, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        idx = self._idx(indices)
        if method_name == "action_masks":
            masks = self.core.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.core, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._idx(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        from gigdispatch.envs.render import CityRenderer

        if not hasattr(self, "_viewer"):
            self._viewer = CityRenderer(self.core.sim, title="fleet")
        return [self._viewer.draw()]
