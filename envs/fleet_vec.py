"""The batched adapter: all drivers of one fleet env as one stable-baselines3 ``VecEnv``.

The drivers are the vector dimension: observations ``(D, 41)``, actions ``(D,)``, rewards ``(D,)``,
NumPy arrays end to end (no per-agent dictionaries). One shared policy acts for every driver. Seeding
works through ``seed()`` (applied at the next reset, SB3's convention) and action masks through
``env_method("action_masks")`` / ``action_masks()`` (what sb3-contrib's MaskablePPO calls). When the
day ends, every driver's episode ends: ``dones`` is all True, each info holds its
``terminal_observation``, and the next day starts at once (seeded from the first seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from envs.core.config import GridScenario
from envs.core.kpis import compute_kpis
from envs.core.scenario import Scenario
from envs.fleet_core import CLIP, N_ACTIONS, OBS_DIM, FleetCore


class FleetVecEnv(VecEnv):
    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        platform_policy: Any = "nearest",
        reward: str = "own",
        seed: int | None = None,
    ) -> None:
        self.core = FleetCore(scenario, platform_policy, reward)
        n = self.core.scenario.n_drivers
        super().__init__(n, spaces.Box(-CLIP, CLIP, (OBS_DIM,), np.float32), spaces.Discrete(N_ACTIONS))
        self._seed_rng = np.random.default_rng(seed)
        self._actions: np.ndarray | None = None
        self.episode_returns = np.zeros(n)
        self.last_kpis: dict[str, float] | None = None
        self._empty_infos: list[dict[str, Any]] = []

    # ---------------------------------------------------------------------------------- VecEnv API
    def reset(self) -> np.ndarray:
        if self._seeds and self._seeds[0] is not None:
            self._seed_rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        obs, _ = self.core.reset(int(self._seed_rng.integers(0, 2**63 - 1)))
        self.episode_returns[:] = 0.0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        obs, _, reward, done, info = self.core.step(self._actions)
        self._actions = None
        self.episode_returns += reward
        if done:
            self.last_kpis = compute_kpis(self.core.sim)
            infos = [
                {"terminal_observation": obs[i], "episode": {"r": float(self.episode_returns[i]), "l": 0}} for i in range(self.num_envs)
            ]
            obs, _ = self.core.reset(int(self._seed_rng.integers(0, 2**63 - 1)))
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

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        idx = self._idx(indices)
        if method_name == "action_masks":
            masks = self.core.action_masks()
            return [masks[i] for i in idx]
        result = getattr(self.core, method_name)(*method_args, **method_kwargs)
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._idx(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        from envs.render import CityRenderer

        if not hasattr(self, "_viewer"):
            self._viewer = CityRenderer(self.core.sim, title="fleet")
        return [self._viewer.draw()]
