"""The dispatch env a run's config describes (``dispatch_env``): used by training, DAgger and export alike."""

from __future__ import annotations

from typing import Any

from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.training.config import TrainConfig


def dispatch_env(cfg: TrainConfig, seed_schedule: SeedSchedule) -> Any:
    """Dispatch-v0 (or v1 / v2, ``env: dispatch-v1`` / ``dispatch-v2``) with the run's ``dispatch`` settings,
    playing the days of ``seed_schedule``. ``env: dispatch-v3`` gets Dispatch-v1: v3 is where such a run
    trains (``train.make_train_env``); its policy acts on ordinary days through v1's observation code (the same
    features; v3 only runs every day to its full length and breaks candidate ties by driver id)."""
    from gigdispatch.envs.dispatch_env import DispatchEnv, DispatchEnvV1, DispatchEnvV2

    d = cfg.dispatch
    extra = {"bundle_k": d.bundle_k} if cfg.env == "dispatch-v2" else {}
    cls = {"dispatch-v1": DispatchEnvV1, "dispatch-v2": DispatchEnvV2, "dispatch-v3": DispatchEnvV1}.get(
        cfg.env, DispatchEnv
    )
    return cls(
        cfg.scenario,
        max_orders=d.max_orders,
        k=d.k,
        reward_scale=d.reward_scale,
        idle_only=d.idle_only,
        seed_schedule=seed_schedule,
        **extra,
    )
