"""Environment throughput, measured in one run (JSON on stdout):

* PettingZoo MPE ``simple_spread_v3`` (package ``mpe2``, N=10, its default ``max_cycles=25``, random
  actions) -- agent-steps per second through its parallel API, episode resets included;
* the gigdispatch fleet env on ``city-1000`` (1,000 drivers, random *valid* actions drawn from the
  masks) -- agent-steps per second through the batched adapter (``FleetVecEnv``) and through the
  PettingZoo parallel API;
* ``gigdispatch/Dispatch-v0`` on ``default`` -- env-steps (decisions) per second with random valid actions.

Each measurement runs for about ``--seconds`` of wall time (whole episodes are restarted as they end;
reset time counts). The random actions are drawn inside the timed loop, for every environment: for the
fleet env that is a uniform draw per driver and action, masked (about 50 microseconds of a ~1.7 ms step),
so its figures include the sampler's cost.

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


class Runner:
    """An environment kept alive across measurement rounds: ``run(seconds)`` steps it for that long and
    returns ``(agent_steps, wall_seconds)``; episodes restart as they end (reset time counts)."""

    agents = 0

    def run(self, seconds: float) -> tuple[int, float]:
        raise NotImplementedError


class MpeRunner(Runner):
    def __init__(self) -> None:
        from mpe2 import simple_spread_v3

        self.env = simple_spread_v3.parallel_env(N=10)  # the library's defaults otherwise (max_cycles=25)
        self.rng = np.random.default_rng(0)
        self.env.reset(seed=0)
        self.agents = len(self.env.possible_agents)
        self.n_act = self.env.action_space(self.env.possible_agents[0]).n

    def run(self, seconds: float) -> tuple[int, float]:
        env, rng = self.env, self.rng
        agent_steps = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            acts = rng.integers(0, self.n_act, size=self.agents)
            actions = {a: int(x) for a, x in zip(env.agents, acts, strict=False)}
            env.step(actions)
            agent_steps += len(actions)
            if not env.agents:
                env.reset()
        return agent_steps, time.perf_counter() - t0


def _random_valid(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.argmax(mask * rng.random(mask.shape), axis=1)


class FleetBatchedRunner(Runner):
    def __init__(self, scenario: str) -> None:
        from gigdispatch.envs import FleetVecEnv

        self.v = FleetVecEnv(scenario=scenario, seed=0)
        self.v.reset()
        self.rng = np.random.default_rng(0)
        self.agents = self.v.num_envs

    def run(self, seconds: float) -> tuple[int, float]:
        v, rng = self.v, self.rng
        steps = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            v.step(_random_valid(v.action_masks(), rng))
            steps += 1
        return steps * self.agents, time.perf_counter() - t0


class FleetParallelRunner(Runner):
    def __init__(self, scenario: str) -> None:
        from gigdispatch import envs

        self.env = envs.parallel_env(scenario=scenario)
        self.env.reset(seed=0)
        self.rng = np.random.default_rng(0)
        self.agents = len(self.env.possible_agents)

    def run(self, seconds: float) -> tuple[int, float]:
        env, rng = self.env, self.rng
        names = env.possible_agents
        agent_steps = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            mask = env.core.action_masks()  # the same masks as obs[agent]["action_mask"], read in one array
            actions = dict(zip(names, _random_valid(mask, rng).tolist(), strict=True))
            env.step(actions)
            agent_steps += len(actions)
            if not env.agents:
                env.reset()
        return agent_steps, time.perf_counter() - t0


def _rate(agent_steps: int, wall: float) -> float:
    return agent_steps / wall


def bench_dispatch(scenario: str, seconds: float) -> dict[str, float]:
    import gymnasium as gym

    from gigdispatch import envs  # noqa: F401 - registers the env

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
    ap.add_argument(
        "--seconds", type=float, default=20.0, help="wall time per environment, over all rounds [default: %(default)s]"
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds (MPE, batched, parallel, MPE, ...): the ratios are taken per round, so drift of the "
        "machine's speed cancels; the median is reported [default: %(default)s]",
    )
    ap.add_argument("--fleet-scenario", default="city-1000", help="scenario of the fleet env [default: %(default)s]")
    ap.add_argument("--dispatch-scenario", default="default", help="scenario of Dispatch-v0 [default: %(default)s]")
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be >= 1 and --seconds > 0")
    warnings.filterwarnings("ignore")
    runners = {
        "mpe_simple_spread_v3_N10": MpeRunner(),
        "fleet_batched_adapter": FleetBatchedRunner(args.fleet_scenario),
        "fleet_pettingzoo_parallel": FleetParallelRunner(args.fleet_scenario),
    }
    per_round = args.seconds / args.rounds
    rounds = []
    totals = {k: [0, 0.0] for k in runners}
    for _ in range(args.rounds):
        rates = {}
        for name, r in runners.items():
            steps, wall = r.run(per_round)
            totals[name][0] += steps
            totals[name][1] += wall
            rates[name] = _rate(steps, wall)
        rounds.append(rates)
    ratio_b = [r["fleet_batched_adapter"] / r["mpe_simple_spread_v3_N10"] for r in rounds]
    ratio_p = [r["fleet_pettingzoo_parallel"] / r["mpe_simple_spread_v3_N10"] for r in rounds]
    summary = {
        name: {
            "agents": r.agents,
            "agent_steps": totals[name][0],
            "seconds": totals[name][1],
            "agent_steps_per_s": _rate(*totals[name]),
        }
        for name, r in runners.items()
    }
    disp = bench_dispatch(args.dispatch_scenario, min(args.seconds, 10.0))
    result = {
        "benchmark": "environment throughput",
        "command": "python -m benchmarks.bench_envs " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        **summary,
        "dispatch_v0": disp,
        "ratios": {
            "batched_vs_mpe_agent_steps": float(np.median(ratio_b)),
            "parallel_vs_mpe_agent_steps": float(np.median(ratio_p)),
            "batched_vs_mpe_per_round": [round(x, 1) for x in ratio_b],
            "parallel_vs_mpe_per_round": [round(x, 1) for x in ratio_p],
            "targets": {"batched_vs_mpe": 100.0, "parallel_vs_mpe": 20.0},
        },
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
