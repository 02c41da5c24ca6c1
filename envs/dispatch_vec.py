"""``DispatchVecEnv``: N days of ``gigdispatch/Dispatch-v1`` stepped together, behind Gymnasium's vector API.

``gymnasium.make_vec("gigdispatch/Dispatch-v1", num_envs=8, scenario="default")`` builds it (the id's
``vector_entry_point``); ``envs.sb3_vec.SB3VecEnv(vec)`` hands it to stable-baselines3 (PPO, MaskablePPO).

**Same days.** Sub-env ``i`` is a ``DispatchEnvV1`` over the one compiled scenario (the city is read only and
shared). ``reset(seed=s)`` starts sub-env ``i`` on day ``s + i`` (a list of seeds: one each), and every later
day of sub-env ``i`` is the one a single env reset with seed ``s + i`` plays next (its ``seed_schedule``). One
vector step is one decision epoch of every day, exactly ``DispatchEnvV1.step``: the days, rewards and KPIs of
sub-env ``i`` are those of a single env given the same seeds and actions (``tests/test_dispatch_v1.py``).

**Autoreset: same step** (``metadata["autoreset_mode"]``). A day that ends (terminated at the end of the day,
or truncated at ``max_episode_steps``) is reset in the same call: the returned row is the next day's first
observation, and ``infos["final_obs"][i]`` / ``infos["final_info"][i]`` hold the last observation and info
of the day that ended (its ``kpis`` among them).

**Cost.** The days run one after another in this process: ``N`` days cost about ``N`` times one day (the
simulator's step is a few hundred small NumPy calls per day; the per-call overhead, not the arithmetic, sets
its cost, and this class does not yet merge the days' arrays). What it saves is the learner's side: one batched
forward pass for ``N`` observations. ``benchmarks/bench_train.py`` measures both. For more cores,
``gymnasium.make_vec(..., vectorization_mode="async")`` runs each day in its own process
(``AsyncVectorEnv``, same days, same autoreset when built with ``vector_kwargs={"autoreset_mode":
gymnasium.vector.AutoresetMode.SAME_STEP}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.dispatch_env import MAX_EPISODE_STEPS, DispatchEnvV1, DispatchEnvV2
from gigdispatch.envs.scenarios.loader import load_scenario


def vector_seeds(seed: int | Sequence[int | None] | None, n: int) -> list[int | None]:
    """One seed per sub-env from a vector env's ``reset(seed=...)``: an int ``s`` gives ``s + i`` to sub-env ``i``,
    a list gives one each (checked), None gives None (each sub-env's next scheduled day)."""
    if seed is None:
        return [None] * n
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)  # type: ignore[arg-type]
    if len(seeds) != n:
        raise ValueError(f"seed: expected an int or {n} seeds (one per sub-env), got {len(seeds)}")
    return seeds


class RowsVectorEnv(VectorEnv):
    """A vector env that fills its own buffers: ``step_rows(actions)`` steps every sub-env, fills the observation,
    reward, terminated and truncated buffers (``rows()``) and returns one info dict per sub-env (an ended day's
    with ``final_obs`` and ``final_info``). ``step`` builds Gymnasium's vector infos from them;
    ``envs.sb3_vec.SB3VecEnv`` reads the rows and per-env infos straight away."""

    _obs: dict[str, np.ndarray]
    _rewards: np.ndarray
    _terminated: np.ndarray
    _truncated: np.ndarray
    _started: bool

    def _setup_rows(self, num_envs: int, seed_schedules: Sequence[SeedSchedule] | None) -> None:
        """Check ``num_envs`` and ``seed_schedules`` (one per sub-env, or None), set ``num_envs`` and the
        reward, terminated and truncated buffers; the env is not started until ``reset``."""
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if seed_schedules is not None and len(seed_schedules) != num_envs:
            raise ValueError(f"seed_schedules: expected {num_envs} (one per sub-env), got {len(seed_schedules)}")
        self.num_envs = int(num_envs)
        self._rewards = np.zeros(self.num_envs, np.float64)
        self._terminated = np.zeros(self.num_envs, bool)
        self._truncated = np.zeros(self.num_envs, bool)
        self._started = False

    def step_rows(self, actions: np.ndarray) -> list[dict[str, Any]]:
        raise NotImplementedError

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One decision epoch of every day; a day that ends is reset at once (same-step autoreset)."""
        infos: dict[str, Any] = {}
        for i, info in enumerate(self.step_rows(actions)):
            infos = self._add_info(infos, info, i)
        return self._copy_obs(), self._rewards.copy(), self._terminated.copy(), self._truncated.copy(), infos

    def rows(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """The buffers the last ``step_rows`` filled (views: copy what you keep)."""
        return self._obs, self._rewards, self._terminated, self._truncated

    def _copy_obs(self) -> dict[str, np.ndarray]:
        return {key: buf.copy() for key, buf in self._obs.items()}


class DispatchVecEnv(RowsVectorEnv):
    """``num_envs`` days of Dispatch-v1 in one process, stepped together (same-step autoreset).

    Arguments as ``DispatchEnv`` (``scenario``, ``max_orders``, ``k``, ``reward_scale``, ``idle_only``) plus
    ``num_envs``, ``max_episode_steps`` (default ``MAX_EPISODE_STEPS``, which never cuts a built-in day) and
    ``seed_schedules`` (one ``SeedSchedule`` per sub-env: which days each plays; training gives each sub-env
    its own share of the training seeds).
    ``action_masks()`` is the ``(num_envs, n)`` stack of the days' masks; ``call(name, ...)`` calls a method of
    every sub-env (``call("action_masks")``).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    env_class: type[DispatchEnvV1] = DispatchEnvV1  # the sub-envs' class (``DispatchVecEnvV2``: Dispatch-v2's)
    single_observation_space: spaces.Dict
    single_action_space: spaces.MultiDiscrete

    def __init__(
        self,
        num_envs: int = 8,
        scenario: str | GridScenario | Scenario = "default",
        max_orders: int = 32,
        k: int | None = None,
        reward_scale: float = 1.0,
        idle_only: bool = False,
        max_episode_steps: int | None = MAX_EPISODE_STEPS,
        seed_schedules: Sequence[SeedSchedule] | None = None,
        **env_kwargs: Any,
    ) -> None:
        self._setup_rows(num_envs, seed_schedules)
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        compiled = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if k is not None:
            env_kwargs["k"] = k
        self.envs = [
            self.env_class(
                compiled,
                max_orders=max_orders,
                reward_scale=reward_scale,
                idle_only=idle_only,
                seed_schedule=None if seed_schedules is None else seed_schedules[i],
                **env_kwargs,
            )
            for i in range(self.num_envs)
        ]
        self.max_episode_steps = max_episode_steps
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = {
            key: np.zeros((self.num_envs, *tuple(box.shape or ())), box.dtype)
            for key, box in self.single_observation_space.spaces.items()
        }
        self._elapsed = np.zeros(self.num_envs, np.int64)

    # -------------------------------------------------------------------------------------- the API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new day in every sub-env: ``seed`` an int (day ``seed + i`` in sub-env ``i``), a list of one
        seed (or None) per sub-env, or None (each sub-env's next scheduled day)."""
        seeds = self._seeds(seed)
        infos: dict[str, Any] = {}
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=s, options=options)
            self._write(i, obs)
            infos = self._add_info(infos, info, i)
        self._elapsed[:] = 0
        self._started = True
        return self._copy_obs(), infos

    def step_rows(self, actions: np.ndarray) -> list[dict[str, Any]]:
        """``step`` without building Gymnasium's vector infos: fills the observation, reward, terminated and
        truncated buffers (``rows()``) and returns one info dict per sub-env; an ended day's info holds
        ``final_obs`` and ``final_info``. For adapters that want per-env infos (``envs.sb3_vec``)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions)
        want = (self.num_envs, *self.single_action_space.shape)
        if a.shape != want:
            raise ValueError(f"actions: expected shape {want} (one action per sub-env), got {a.shape}")
        rows: list[dict[str, Any]] = []
        for i, env in enumerate(self.envs):
            obs, reward, terminated, _, info = env.step(a[i])
            self._elapsed[i] += 1
            truncated = (
                not terminated and self.max_episode_steps is not None and self._elapsed[i] >= self.max_episode_steps
            )
            self._rewards[i] = reward
            self._terminated[i] = terminated
            self._truncated[i] = truncated
            if terminated or truncated:
                obs_next, info_next = env.reset()
                self._elapsed[i] = 0
                info = {**info_next, "final_obs": obs, "final_info": info}
                obs = obs_next
            self._write(i, obs)
            rows.append(info)
        return rows

    def action_masks(self) -> np.ndarray:
        """``(num_envs, n)`` flat boolean masks of the current epochs (``DispatchEnv.action_masks``)."""
        return np.stack([env.action_masks() for env in self.envs])

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call method ``name`` of every sub-env (or read attribute ``name``); one result per sub-env."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """Attribute ``name`` of every sub-env."""
        return tuple(getattr(env, name) for env in self.envs)

    def set_attr(self, name: str, values: Any | Sequence[Any]) -> None:
        """Set attribute ``name`` of every sub-env (one value for all, or a list of one each)."""
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"values: expected {self.num_envs} (one per sub-env), got {len(values)}")
        for env, value in zip(self.envs, values, strict=True):
            setattr(env, name, value)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()

    # ------------------------------------------------------------------------------------ internals
    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        return vector_seeds(seed, self.num_envs)

    def _write(self, i: int, obs: dict[str, np.ndarray]) -> None:
        for key, buf in self._obs.items():
            buf[i] = obs[key]


class DispatchVecEnvV2(DispatchVecEnv):
    """``num_envs`` days of ``gigdispatch/Dispatch-v2`` (``DispatchEnvV2``: bundle candidates, pair-score
    features; ``k`` 10 and ``bundle_k`` 2 by default), stepped together as ``DispatchVecEnv`` steps v1's:
    ``gymnasium.make_vec("gigdispatch/Dispatch-v2", num_envs=8)``."""

    env_class = DispatchEnvV2
