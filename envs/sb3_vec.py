"""``SB3VecEnv``: a Gymnasium vector env of Dispatch-v1 days as a stable-baselines3 ``VecEnv``.

    vec = gymnasium.make_vec("gigdispatch/Dispatch-v1", num_envs=8, scenario="default")
    model = MaskablePPO(DispatchSetPolicy, SB3VecEnv(vec), n_steps=128)   # 8 x 128 steps per rollout

It takes ``DispatchVecEnv`` or ``DispatchVecEnvV3`` (the ids' vector entry points, ``RowsVectorEnv``s: days in this
process) or any Gymnasium vector env
with same-step autoreset (``gymnasium.make_vec(..., vectorization_mode="async", vector_kwargs={"autoreset_mode":
AutoresetMode.SAME_STEP})``: one day per subprocess). SB3's conventions on top: ``reset()`` returns the
observations only and uses the seeds of ``seed(s)`` once (day ``s + i`` in sub-env ``i``); a finished day's
info is its last step's info (``kpis`` among them) with ``terminal_observation`` and ``TimeLimit.truncated``,
and the next day's reset info goes to ``reset_infos``; ``env_method("action_masks")`` is what
MaskablePPO asks for. Importing this module needs stable-baselines3 (the ``rl`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env import VecEnv

from gigdispatch.envs.dispatch_vec import RowsVectorEnv


class SB3VecEnv(VecEnv):
    """stable-baselines3's ``VecEnv`` over a Gymnasium vector env with same-step autoreset."""

    def __init__(self, venv: VectorEnv) -> None:
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"venv: autoreset_mode is {mode}; SB3VecEnv needs AutoresetMode.SAME_STEP (DispatchVecEnv has it;"
                " gymnasium.make_vec(..., vector_kwargs={'autoreset_mode': AutoresetMode.SAME_STEP}))"
            )
        self.venv: Any = venv  # DispatchVecEnv, SyncVectorEnv or AsyncVectorEnv: all have call/get_attr/set_attr
        inner = venv.unwrapped
        # DispatchVecEnv and DispatchVecEnvV3 fill buffers and hand per-env infos (step_rows / rows)
        self._rows: RowsVectorEnv | None = inner if isinstance(inner, RowsVectorEnv) else None
        self._actions: np.ndarray | None = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    def reset(self) -> dict[str, np.ndarray]:
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        options = next((o for o in self._options if o), None)
        obs, infos = self.venv.reset(seed=seeds, options=options)
        self.reset_infos = self._split_infos(infos)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        actions, self._actions = self._actions, None
        if self._rows is not None:  # DispatchVecEnv: per-env infos straight away, no Gymnasium vector-info dicts
            rows = self._rows.step_rows(actions)
            obs_buf, rew_buf, term_buf, trunc_buf = self._rows.rows()
            obs = {key: buf.copy() for key, buf in obs_buf.items()}
            rewards, terminated, truncated = rew_buf.astype(np.float32), term_buf.copy(), trunc_buf.copy()
        else:
            obs, rewards, terminated, truncated, infos = self.venv.step(actions)
            rows = self._split_infos(infos)
            rewards = np.asarray(rewards, np.float32)
        dones = terminated | truncated
        for i in np.flatnonzero(dones):  # as DummyVecEnv: the ended day's step info; the new day's reset info apart
            reset_info = rows[i]
            info = dict(reset_info.pop("final_info", {}))
            info["terminal_observation"] = reset_info.pop("final_obs")
            info["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            rows[i], self.reset_infos[i] = info, reset_info
        return obs, rewards, dones, rows

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        values = self.venv.get_attr(attr_name)
        return [values[i] for i in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        current = list(self.venv.get_attr(attr_name))
        for i in self._indices(indices):
            current[i] = value
        self.venv.set_attr(attr_name, current)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
        results = self.venv.call(method_name, *method_args, **method_kwargs)
        return [results[i] for i in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def _indices(self, indices: int | Iterable[int] | None) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def _split_infos(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        """Gymnasium's vector infos (arrays with ``_key`` masks, nested for dict values) as one dict per env."""

        def row(tree: dict[str, Any], i: int) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, value in tree.items():
                if key.startswith("_"):
                    continue
                mask = tree.get(f"_{key}")
                if mask is not None and not mask[i]:
                    continue
                out[key] = row(value, i) if isinstance(value, dict) else value[i]
            return out

        return [row(infos, i) for i in range(self.num_envs)]
