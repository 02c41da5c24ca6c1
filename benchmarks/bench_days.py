"""Several days in one set of arrays against the same days alone (JSON on stdout).

Plays ``--days`` days of ``--scenario`` twice in one process, step by step: each in its own
``Simulator(early_end=False)`` with ``--policy``'s decisions, and all in one ``DaysSimulator`` given the same
decisions (the policy's time is not counted). Reports the mean wall time of one day-step alone, of one
merged step of all days, and ``speedup`` = (days x one day-step alone) / one merged step. The two are timed
step by step in turn, so a drift in the machine's speed hits both.

    python -m benchmarks.bench_days                    # 8 days of default, nearest
    python -m benchmarks.bench_days --days 4 --scenario city-1000
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import emit


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="DaysSimulator of N days against N Simulators, same decisions. JSON.")
    ap.add_argument("--scenario", default="default", help="scenario [default: %(default)s]")
    ap.add_argument("--days", type=int, default=8, help="days at once [default: %(default)s]")
    ap.add_argument("--policy", default="nearest", help="registered policy that decides [default: %(default)s]")
    ap.add_argument(
        "--seed", type=int, default=4000, help="first day's seed (never an evaluation seed) [default: %(default)s]"
    )
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if args.days < 1:
        ap.error("--days must be >= 1")
    from gigdispatch.agents.registry import make_policy
    from gigdispatch.envs.core.days import DaysSimulator
    from gigdispatch.envs.core.sim import Simulator
    from gigdispatch.envs.scenarios.loader import load_scenario

    sc = load_scenario(args.scenario)
    seeds = [args.seed + i for i in range(args.days)]
    alone = [Simulator(sc, early_end=False) for _ in seeds]
    policies = [make_policy(args.policy) for _ in seeds]
    for sim, pol, s in zip(alone, policies, seeds, strict=True):
        sim.reset(s)
        pol.reset(sim, sim.rng["policy"])
    days = DaysSimulator(sc, args.days)
    days.reset(seeds=seeds)
    t_alone = t_days = 0.0
    steps = 0
    while not days.done:
        decs = [pol.act(sim) for pol, sim in zip(policies, alone, strict=True)]
        merged = days.merge([days.to_global(i, d) for i, d in enumerate(decs)])
        t0 = time.perf_counter()
        for sim, dec in zip(alone, decs, strict=True):
            sim.step(dec)
        t1 = time.perf_counter()
        days.step(merged)
        t2 = time.perf_counter()
        t_alone += t1 - t0
        t_days += t2 - t1
        steps += 1
    out = {
        "benchmark": "days_in_one_set_of_arrays",
        "scenario": args.scenario,
        "days": args.days,
        "policy": args.policy,
        "steps": steps,
        "ms_per_day_step_alone": 1000.0 * t_alone / steps / args.days,
        "ms_per_merged_step": 1000.0 * t_days / steps,
        "speedup": t_alone / t_days,
    }
    return emit(out, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
