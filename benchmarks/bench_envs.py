"""Environment throughput, measured in one run (JSON on stdout):

* PettingZoo MPE ``simple_spread_v3`` (package ``mpe2``, N=10, its default ``max_cycles=25``, random
  actions) -- agent-steps per second through its parallel API, episode resets included;
* the gigdispatch fleet env on ``city-1000`` (1,000 drivers, random *valid* actions drawn from the
  masks) -- agent-steps per second through the batched adapter (``FleetVecEnv``) and through the
  PettingZoo parallel API;
* ``gigdispatch/Dispatch-v0`` on ``default`` -- env-steps (decisions) per second with random valid actions.

Each measurement runs for about ``--seconds`` of wall time (whole episodes are restarted as they end;
reset time counts). Actions are drawn with NumPy outside the timed region where possible, so that the
figures are the environments' cost, not the sampler's.

    python -m benchmarks.bench_envs --seconds 20
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings

import numpy as np

from benchmarks.common import emit


def bench_mpe(seconds: float) -> dict[str, float]:
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=10)  # the library's defaults otherwise (max_cycles=25); resets count
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    agents = list(env.possible_agents)
    n_act = env.action_space(agents[0]).n
    steps = agent_steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        acts = rng.integers(0, n_act, size=len(agents))
        actions = {a: int(x) for a, x in zip(env.agents, acts, strict=False)}
        obs, rew, term, trunc, info = env.step(actions)
        steps += 1
        agent_steps += len(actions)
        if not env.agents:
            env.reset()
    wall = time.perf_counter() - t0
    return {"agents": len(agents), "env_steps": steps, "agent_steps": agent_steps, "seconds": wall, "agent_steps_per_s": agent_steps / wall}


def _random_valid(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.argmax(mask * rng.random(mask.shape), axis=1)


def bench_fleet_batched(scenario: str, seconds: float) -> dict[str, float]:
    from envs import FleetVecEnv

    v = FleetVecEnv(scenario=scenario, seed=0)
    v.reset()
    rng = np.random.default_rng(0)
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        v.step(_random_valid(v.action_masks(), rng))
        steps += 1
    wall = time.perf_counter() - t0
    return {
        "agents": v.num_envs,
        "env_steps": steps,
        "agent_steps": steps * v.num_envs,
        "seconds": wall,
        "agent_steps_per_s": steps * v.num_envs / wall,
    }


def bench_fleet_parallel(scenario: str, seconds: float) -> dict[str, float]:
    import envs

    env = envs.parallel_env(scenario=scenario)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    agents = env.possible_agents
    steps = agent_steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mask = env.core.action_masks()  # the same masks as obs[agent]["action_mask"], read in one array
        acts = _random_valid(mask, rng)
        actions = dict(zip(agents, acts.tolist(), strict=True))
        obs, *_ = env.step(actions)
        steps += 1
        agent_steps += len(actions)
        if not env.agents:
            env.reset()
    wall = time.perf_counter() - t0
    return {"agents": len(agents), "env_steps": steps, "agent_steps": agent_steps, "seconds": wall, "agent_steps_per_s": agent_steps / wall}


def bench_dispatch(scenario: str, seconds: float) -> dict[str, float]:
    import gymnasium as gym

    import envs  # noqa: F401 - registers the env

    env = gym.make("gigdispatch/Dispatch-v0", scenario=scenario).unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    nvec = env.action_space.nvec
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m = env.action_masks()
        a = np.empty(len(nvec), np.int64)
        start = 0
        for i, k in enumerate(nvec):  # random valid choice per dimension
            valid = np.flatnonzero(m[start : start + k])
            a[i] = valid[rng.integers(0, len(valid))]
            start += k
        _, _, done, _, _ = env.step(a)
        steps += 1
        if done:
            env.reset()
    wall = time.perf_counter() - t0
    return {"env_steps": steps, "seconds": wall, "env_steps_per_s": steps / wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Environment throughput: MPE simple_spread vs the gigdispatch fleet env; Dispatch-v0. Prints JSON."
    )
    ap.add_argument("--seconds", type=float, default=20.0, help="wall time per measurement [default: %(default)s]")
    ap.add_argument("--fleet-scenario", default="city-1000", help="scenario of the fleet env [default: %(default)s]")
    ap.add_argument("--dispatch-scenario", default="default", help="scenario of Dispatch-v0 [default: %(default)s]")
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    mpe = bench_mpe(args.seconds)
    batched = bench_fleet_batched(args.fleet_scenario, args.seconds)
    par = bench_fleet_parallel(args.fleet_scenario, args.seconds)
    disp = bench_dispatch(args.dispatch_scenario, args.seconds)
    result = {
        "benchmark": "environment throughput",
        "command": "python -m benchmarks.bench_envs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "mpe_simple_spread_v3_N10": mpe,
        "fleet_batched_adapter": batched,
        "fleet_pettingzoo_parallel": par,
        "dispatch_v0": disp,
        "ratios": {
            "batched_vs_mpe_agent_steps": batched["agent_steps_per_s"] / mpe["agent_steps_per_s"],
            "parallel_vs_mpe_agent_steps": par["agent_steps_per_s"] / mpe["agent_steps_per_s"],
            "targets": {"batched_vs_mpe": 100.0, "parallel_vs_mpe": 20.0},
        },
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
