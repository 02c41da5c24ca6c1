"""A policy trained by ``gigdispatch train`` on Dispatch-v0, acting in the simulator like any other ``Policy``.

``LearnedDispatchPolicy("runs/dispatch-default-...")`` reads the run's ``config.yaml`` and loads
``checkpoints/best.zip`` (or ``latest.zip`` when there is no best yet); a path to a ``.zip`` inside a
run folder loads that checkpoint. It sees the simulator through exactly the observation code the
model was trained on: it wraps the given simulator in a ``DispatchEnv`` built with the run's env
arguments (``max_orders``, ``k``, ``idle_only``) and calls that env's ``prepare`` (slot orders and
candidates), ``observe`` and ``decode``; neither touches the simulator's state. Actions are deterministic
(``predict(..., deterministic=True)``, with the env's action masks for MaskablePPO) and are decoded as
``DispatchEnv.step`` does: masked-out choices hold, a driver chosen by two orders goes to the older one.

Epochs: the policy decides at every simulator step where some pending order has a candidate (the
env's decision epochs); elsewhere it returns an empty ``Decision``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agents.base import Policy
from envs.core.sim import Decision, Simulator


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint .zip) for a run folder or a checkpoint file; ``ValueError`` naming what is missing."""
    p = Path(path)
    if p.is_file() and p.suffix == ".zip":
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        ckpt = p
    elif p.is_dir():
        run = p
        ckpt = next((p / "checkpoints" / n for n in ("best.zip", "latest.zip") if (p / "checkpoints" / n).is_file()), p / "missing")
        if not ckpt.is_file():
            raise ValueError(f"policy {str(path)!r}: a folder, but not a training run (no checkpoints/best.zip or checkpoints/latest.zip)")
    else:
        raise ValueError(f"policy {str(path)!r}: no such run folder or checkpoint file")
    if not (run / "config.yaml").is_file():
        raise ValueError(f"policy {str(path)!r}: no config.yaml in the run folder {str(run)!r}")
    return run, ckpt


class EnvDispatchPolicy(Policy):
    """A dispatch policy that sees the simulator through Dispatch-v0's own observation code.

    ``reset`` wraps the simulator in a ``DispatchEnv`` (built by ``_make_env`` once per scenario, which
    also checks that the model fits it); ``act`` calls the env's ``prepare`` (no order with a candidate:
    empty ``Decision``), ``observe`` and ``action_masks``, asks ``_choose`` for a Dispatch-v0 action and
    ``decode``s it. Neither touches the simulator's state.
    """

    _env: Any = None
    _scenario: Any = None

    def _make_env(self, scenario: Any) -> Any:
        """A ``DispatchEnv`` for ``scenario`` with this model's arguments; ``ValueError`` if the model does not fit."""
        raise NotImplementedError

    def _choose(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        """The model's deterministic Dispatch-v0 action for one observation and its action mask."""
        raise NotImplementedError

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        if self._env is None or self._scenario is not sim.scenario:
            self._env = self._make_env(sim.scenario)
            self._scenario = sim.scenario
        self._env.sim = sim  # the env reads this simulator; it never steps it here

    def act(self, sim: Simulator) -> Decision:
        env = self._env
        if env is None or env.sim is not sim:
            raise RuntimeError(f"{type(self).__name__}.act before reset(sim, rng)")
        if not env.prepare():
            return Decision()
        action = self._choose(env.observe(), env.action_masks())
        return env.decode(np.asarray(action))[0]


class LearnedDispatchPolicy(EnvDispatchPolicy):
    """A MaskablePPO / PPO model trained on Dispatch-v0 (``env: dispatch``), loaded from a run folder."""

    name: ClassVar[str] = "learned"

    def __init__(self, path: str | Path, device: str = "cpu", torch_threads: int | None = 1) -> None:
        import yaml

        from training.config import ConfigError, build_config
        from training.train import _algo_class

        run, ckpt = resolve_checkpoint(path)
        try:
            self.cfg = build_config(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")), source=str(run / "config.yaml"))
        except ConfigError as exc:
            raise ValueError(f"policy {str(path)!r}: {exc}") from None
        if self.cfg.env != "dispatch":
            raise ValueError(
                f"policy {str(path)!r}: trained on env {self.cfg.env!r}; only 'dispatch' runs act as a platform dispatch policy"
            )
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.masked = self.cfg.algo == "maskable_ppo"
        self.model = _algo_class(self.cfg.algo).load(ckpt, device=device)
        self.checkpoint = ckpt

    def _make_env(self, scenario: Any) -> Any:
        from envs.dispatch_env import DispatchEnv

        d = self.cfg.dispatch
        env = DispatchEnv(scenario, max_orders=d.max_orders, k=d.k, reward_scale=d.reward_scale, idle_only=d.idle_only)
        expected = self.model.observation_space
        if any(env.observation_space[key].shape != expected[key].shape for key in expected.spaces):
            raise ValueError(f"policy {str(self.checkpoint)!r}: the model's observation shapes do not fit this scenario")
        if env.action_space.shape != self.model.action_space.shape:
            raise ValueError(
                f"policy {str(self.checkpoint)!r}: trained with action shape {self.model.action_space.shape}, "
                f"this scenario needs {env.action_space.shape} (pricing on/off differs)"
            )
        return env

    def _choose(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        kw = {"action_masks": mask} if self.masked else {}
        action, _ = self.model.predict(obs, deterministic=True, **kw)
        return action
