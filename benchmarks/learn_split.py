"""Where a PPO training step's time goes on the Dispatch-v3 vector env (JSON on stdout).

MaskablePPO with the set policy at ``bench_train``'s settings (``default``; n_steps 1024 per rollout in total,
batch 256, 4 epochs, 1 torch thread). The env step (``SB3VecEnv.step_wait``), the policy's rollout forward and
the update (``train``) are timed with ``perf_counter`` around each call, no profiler (a profiler's overhead
falls mostly on the env's many small calls and would misplace the time). Reports milliseconds per env step
for each part and the rest of SB3's loop, and the same env's cost per step under random valid actions
through the same ``SB3VecEnv`` (action sampling included).

    python -m benchmarks.learn_split
    python -m benchmarks.learn_split --envs 8 --steps 8192
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

from benchmarks.common import emit


def _timed(obj: Any, name: str, acc: dict[str, float], key: str) -> None:
    f: Callable[..., Any] = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = f(*args, **kwargs)
        acc[key] += time.perf_counter() - t
        return out

    setattr(obj, name, wrapper)


def run(n_envs: int, steps: int, warmup: int) -> dict[str, Any]:
    import gymnasium as gym
    import numpy as np
    import torch as th
    from sb3_contrib import MaskablePPO

    import gigdispatch.envs  # noqa: F401  (registers the ids)
    from gigdispatch.agents.setnet import DispatchSetPolicy
    from gigdispatch.envs.sb3_vec import SB3VecEnv

    th.set_num_threads(1)
    acc = {"env": 0.0, "forward": 0.0, "train": 0.0}
    vec = gym.make_vec("gigdispatch/Dispatch-v3", num_envs=n_envs, scenario="default")
    env = SB3VecEnv(vec)
    _timed(env, "step_wait", acc, "env")
    n_steps = max(1024 // n_envs, 1)
    model = MaskablePPO(DispatchSetPolicy, env, n_steps=n_steps, batch_size=256, n_epochs=4, verbose=0, seed=0)
    _timed(model.policy, "forward", acc, "forward")
    _timed(model, "train", acc, "train")
    model.learn(warmup)
    for key in acc:
        acc[key] = 0.0
    t = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    total = time.perf_counter() - t
    done = model.num_timesteps - warmup
    ms = {f"{key}_ms_per_step": v / done * 1e3 for key, v in acc.items()}
    ms["total_ms_per_step"] = total / done * 1e3
    ms["other_ms_per_step"] = ms["total_ms_per_step"] - sum(v / done * 1e3 for v in acc.values())
    env.reset()
    rng = np.random.default_rng(0)
    rounds = max(steps // n_envs // 4, 1)
    t = time.perf_counter()
    for _ in range(rounds):
        env.step(vec.unwrapped.sample_actions(rng))
    ms["random_env_ms_per_step"] = (time.perf_counter() - t) / (rounds * n_envs) * 1e3
    env.close()
    return {
        "benchmark": "learn_split_dispatch_v3",
        "n_vector_envs": n_envs,
        "ppo": {"n_steps_total": n_steps * n_envs, "batch_size": 256, "n_epochs": 4},
        "timed_steps": done,
        "train_env_steps_per_s": done / total,
        **{k: round(v, 4) for k, v in ms.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", type=int, default=8, help="days in the v3 vector env [default: 8]")
    ap.add_argument("--steps", type=int, default=8192, help="timed env-steps [default: 8192]")
    ap.add_argument("--warmup", type=int, default=2048, help="env-steps before timing [default: 2048]")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    for name in ("envs", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return emit(run(args.envs, args.steps, args.warmup), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
