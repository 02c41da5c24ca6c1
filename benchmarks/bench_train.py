"""Training throughput (JSON on stdout), in one run.

**Default: the Dispatch-v1 suite** (``default`` scenario, the shipped set policy ``agents.setnet``, MaskablePPO,
``n_steps`` 1024 per rollout in total, batch 256, 4 epochs, 1 torch thread), for 1 env and for the vector env
of ``--envs`` days (default 8):

* ``env``: env-steps/s under random valid actions (``DispatchEnv.sample_action``), one env
  (``gymnasium.make("gigdispatch/Dispatch-v1")``) and the vector env (``gymnasium.make_vec(..., num_envs=8)``),
  and their ratio (``vector_over_single``);
* ``train``: ``model.learn`` env-steps/s (rollouts and PPO updates) on the same envs, and
  ``learner_ratio`` = training env-steps/s / random-action env-steps/s of the same env (1.0: the learner is free);
* ``reference``: SB3 ``PPO("MlpPolicy")`` on CartPole-v1 with the same settings and as many CartPole copies
  (DummyVecEnv), and ``ratio_to_cartpole``.

Every quantity is measured in ``--rounds`` alternating rounds (each kind once per round), and ratios are taken
within a round, so a drift in the machine's speed cancels; medians are reported.

**``--env-id gigdispatch/Dispatch-v3``** runs the same suite on Dispatch-v3, whose vector form holds its days in
one ``DaysSimulator`` (``envs/dispatch_days.py``).

**``--config PATH``** (repeatable) instead times ``model.learn`` of training configs as ``gigdispatch train``
builds them, beside CartPole with the same ``ppo`` settings (the fleet env's drivers are its vector dimension).

    python -m benchmarks.bench_train                       # the Dispatch-v1 suite, 3 rounds
    python -m benchmarks.bench_train --rounds 5 --steps 8192
    python -m benchmarks.bench_train --config configs/train/fleet-default.yaml --steps 32000 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parents[1]
N_STEPS_TOTAL, BATCH, EPOCHS = 1024, 256, 4  # the suite's PPO settings (n_steps in total over the envs)
TARGETS = {"learner_ratio": 0.6, "vector_over_single": 4.0}


def _learn_rate(model, steps: int) -> float:
    """Timesteps per second of ``model.learn`` over at least ``steps`` more timesteps."""
    start = model.num_timesteps
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False, progress_bar=False)
    return (model.num_timesteps - start) / (time.perf_counter() - t0)


def bench_config(path: str, steps: int, rounds: int) -> dict[str, object]:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    from gigdispatch.training.config import load_config
    from gigdispatch.training.train import build_model, make_train_env, seed_everything

    cfg = load_config(ROOT / path if not Path(path).is_absolute() else path, ["eval.every_steps=0"])
    seed_everything(cfg.seed, cfg.torch_threads)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The `render_mode` attribute is not defined")
        ours_env = make_train_env(cfg)
    ours = build_model(cfg, ours_env)
    n_envs = ours_env.num_envs
    cart_env = DummyVecEnv([lambda: gym.make("CartPole-v1") for _ in range(n_envs)])
    cart = build_model(cfg, cart_env, algo="ppo", policy="MlpPolicy")
    rollout = cfg.ppo.n_steps * n_envs
    _learn_rate(ours, rollout)  # warm-up: one rollout and update each
    _learn_rate(cart, rollout)
    per_round = []
    for _ in range(rounds):
        a = _learn_rate(ours, steps)
        b = _learn_rate(cart, steps)
        per_round.append({"ours_steps_per_s": a, "cartpole_steps_per_s": b, "ratio": a / b})
    ratios = [r["ratio"] for r in per_round]
    ours_env.close()
    cart_env.close()
    return {
        "config": path,
        "env": cfg.env,
        "scenario": str(cfg.scenario),
        "algo": cfg.algo,
        "n_envs": n_envs,
        "ppo": cfg.ppo.model_dump(),
        "steps_per_round": steps,
        "rounds": per_round,
        "ours_steps_per_s_median": statistics.median(r["ours_steps_per_s"] for r in per_round),
        "cartpole_steps_per_s_median": statistics.median(r["cartpole_steps_per_s"] for r in per_round),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target_ratio": 0.5,
        "target_met": statistics.median(ratios) >= 0.5,
    }


def _random_rate(env, n_envs: int, steps: int, rng) -> float:
    """Env-steps/s of ``env`` (one env, or the vector env) under random valid actions, over ``steps`` env-steps."""
    t0 = time.perf_counter()
    done = 0
    if n_envs == 1:
        base = env.unwrapped
        while done < steps:
            _, _, term, trunc, _ = env.step(base.sample_action(rng))
            done += 1
            if term or trunc:
                env.reset()
    else:
        inner = env.unwrapped
        if hasattr(inner, "sample_actions"):  # Dispatch-v3: the days' actions drawn at once
            while done < steps:
                env.step(inner.sample_actions(rng))
                done += n_envs
            return done / (time.perf_counter() - t0)
        subs = inner.envs
        while done < steps:
            env.step(np.stack([e.sample_action(rng) for e in subs]))
            done += n_envs
    return done / (time.perf_counter() - t0)


def _ppo_kwargs(n_envs: int) -> dict[str, object]:
    return {"n_steps": N_STEPS_TOTAL // n_envs, "batch_size": BATCH, "n_epochs": EPOCHS, "seed": 0, "verbose": 0}


def bench_suite(n_vec: int, steps: int, rounds: int, env_id: str = "gigdispatch/Dispatch-v1") -> dict[str, object]:
    import gymnasium as gym
    import torch
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    import gigdispatch.envs  # noqa: F401 - registers the ids
    from gigdispatch.agents.setnet import DispatchSetPolicy
    from gigdispatch.envs.sb3_vec import SB3VecEnv

    torch.set_num_threads(1)
    rng = np.random.default_rng(12345)
    kinds = {1: "single", n_vec: "vector"}
    # random-action envs and training envs are separate instances (same days: seeds >= 1000, never eval seeds)
    rand_envs = {1: gym.make(env_id, scenario="default")}
    rand_envs[n_vec] = gym.make_vec(env_id, num_envs=n_vec, scenario="default")
    for n, e in rand_envs.items():
        e.reset(seed=2000 + n)
    models, carts = {}, {}
    for n in kinds:
        venv = SB3VecEnv(gym.make_vec(env_id, num_envs=n, scenario="default"))
        venv.seed(3000 + n)
        models[n] = MaskablePPO(DispatchSetPolicy, venv, **_ppo_kwargs(n))
        carts[n] = PPO("MlpPolicy", DummyVecEnv([lambda: gym.make("CartPole-v1")] * n), **_ppo_kwargs(n))
    for n in kinds:  # warm-up: one rollout and update each, and a few random steps
        _learn_rate(models[n], N_STEPS_TOTAL)
        _learn_rate(carts[n], N_STEPS_TOTAL)
        _random_rate(rand_envs[n], n, 64 * n, rng)
    per_round = []
    for _ in range(rounds):
        row: dict[str, float] = {}
        for n, kind in kinds.items():
            row[f"env_{kind}"] = _random_rate(rand_envs[n], n, steps, rng)
            row[f"train_{kind}"] = _learn_rate(models[n], steps)
            row[f"cartpole_{kind}"] = _learn_rate(carts[n], steps)
            row[f"learner_ratio_{kind}"] = row[f"train_{kind}"] / row[f"env_{kind}"]
            row[f"ratio_to_cartpole_{kind}"] = row[f"train_{kind}"] / row[f"cartpole_{kind}"]
        row["vector_over_single"] = row["env_vector"] / row["env_single"]
        row["train_vector_over_single"] = row["train_vector"] / row["train_single"]
        per_round.append(row)
    med = {key: statistics.median(r[key] for r in per_round) for key in per_round[0]}
    for e in rand_envs.values():
        e.close()
    checks = {
        "learner_ratio_single": med["learner_ratio_single"] >= TARGETS["learner_ratio"],
        "learner_ratio_vector": med["learner_ratio_vector"] >= TARGETS["learner_ratio"],
        "vector_over_single": med["vector_over_single"] >= TARGETS["vector_over_single"],
    }
    return {
        "scenario": "default",
        "env_id": env_id,
        "policy": "gigdispatch.agents.setnet.DispatchSetPolicy",
        "algo": "MaskablePPO",
        "n_vector_envs": n_vec,
        "ppo": {"n_steps_total": N_STEPS_TOTAL, "batch_size": BATCH, "n_epochs": EPOCHS},
        "steps_per_measurement": steps,
        "rounds": per_round,
        "median": med,
        "targets": TARGETS,
        "targets_met": checks,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Training throughput on default vs SB3 PPO on CartPole-v1 with the same settings. Prints JSON."
    )
    ap.add_argument(
        "--config", action="append", help="time this training config instead of the Dispatch-v1 suite (repeatable)"
    )
    ap.add_argument("--envs", type=int, default=8, help="days in the suite's vector env [default: %(default)s]")
    ap.add_argument("--steps", type=int, default=6144, help="env-steps per measurement [default: %(default)s]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds [default: %(default)s]")
    ap.add_argument(
        "--env-id",
        default="gigdispatch/Dispatch-v1",
        choices=["gigdispatch/Dispatch-v1", "gigdispatch/Dispatch-v3"],
        help="the suite's env: v1, or v3 (v3: days in one set of arrays) [default: %(default)s]",
    )
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    if args.envs < 2 or N_STEPS_TOTAL % args.envs:
        ap.error(f"--envs must be >= 2 and divide {N_STEPS_TOTAL} (the rollout's steps in total)")
    if args.config:
        results = [bench_config(c, args.steps, args.rounds) for c in args.config]
    else:
        results = [bench_suite(args.envs, args.steps, args.rounds, args.env_id)]
    import torch

    out = {
        "benchmark": "train_throughput" if args.config else "train_throughput_dispatch_v1",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "results": results,
    }
    return emit(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
