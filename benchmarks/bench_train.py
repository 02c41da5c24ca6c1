"""Training throughput (JSON on stdout): our training runs on ``default`` beside stable-baselines3 PPO on
CartPole-v1 with the same settings, in one run.

For each training config (default: ``configs/train/fleet-default.yaml`` and ``dispatch-default.yaml``)
the model is built exactly as ``gigdispatch train`` builds it (``training.train.build_model``: the
config's algorithm, ``ppo`` settings and network) on the config's training env. The reference is SB3's
``PPO("MlpPolicy")`` on ``CartPole-v1`` with the same ``ppo`` settings (n_steps, batch size, epochs,
learning rate, network, ...) and as many CartPole copies in a ``DummyVecEnv`` as the training env has
environments (the fleet env's drivers are its vector dimension: 100 on ``default``), on the same device
with the same torch thread count. Both ``learn`` for ``--steps`` timesteps per round (rollouts and PPO
updates: what a training run spends its time on) after one warm-up rollout; the rounds alternate (ours,
CartPole, ours, ...) and the ratio is taken per round, so a drift in the machine's speed cancels.

Env-steps are SB3's ``num_timesteps`` (one per environment per vector step: for the fleet env, one per
driver per simulator step).

    python -m benchmarks.bench_train                       # both configs, 3 rounds
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

from benchmarks.common import emit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = ("configs/train/fleet-default.yaml", "configs/train/dispatch-default.yaml")


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Training throughput on default vs SB3 PPO on CartPole-v1 with the same settings. Prints JSON."
    )
    ap.add_argument(
        "--config", action="append", help=f"training config (repeatable) [default: {', '.join(DEFAULT_CONFIGS)}]"
    )
    ap.add_argument("--steps", type=int, default=20_000, help="timesteps per measurement round [default: %(default)s]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds [default: %(default)s]")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    results = [bench_config(c, args.steps, args.rounds) for c in (args.config or DEFAULT_CONFIGS)]
    import torch

    out = {
        "benchmark": "train_throughput",
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
