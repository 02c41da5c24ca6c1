"""What driver earnings per online hour are made of, per policy (JSON on stdout).

Earnings per online hour are the day's payouts over the drivers' online hours. A repositioning policy can
move either: this prints, per policy and mean over the days, the online hours, the payouts, the deliveries,
the payout per delivery and two of its drivers (the mean surge at placement and the mean escalation level of
the delivered orders), and the earnings per online hour.

    python -m benchmarks.earnings_split --scenario city-shift --seeds 1000-1003 \\
        --policy nearest --policy reposition --policy checkpoints/reposition
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import emit


def split(scenario: str, policy: str, seeds: list[int]) -> dict[str, float]:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.core.types import ORDER_DELIVERED

    sc = load_scenario(scenario)
    rows = []
    for seed in seeds:
        sim = Simulator(sc)
        k = sim.run(make_policy(policy), seed=seed)
        od = sim.orders
        done = od.status == ORDER_DELIVERED
        n = max(int(done.sum()), 1)
        rows.append(
            [
                float(sim.drivers.online_s.sum()) / 3600.0,
                k["payouts_total"],
                float(done.sum()),
                k["payouts_total"] / n,
                float(od.surge[done].mean()) if done.any() else float("nan"),
                float(od.payout_level[done].mean()) if done.any() else float("nan"),
                k["driver_earnings_per_hour"],
            ]
        )
    m = np.mean(np.array(rows), axis=0)
    keys = (
        "online_hours",
        "payouts_eur",
        "deliveries",
        "payout_per_delivery_eur",
        "surge_at_placement",
        "payout_level",
        "earnings_per_online_hour",
    )
    return {k: round(float(v), 4) for k, v in zip(keys, m, strict=True)}


def main(argv: list[str] | None = None) -> int:
    from gigdispatch.envs.core.seeding import parse_seeds

    ap = argparse.ArgumentParser(prog="python -m benchmarks.earnings_split", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="city-shift", help="scenario [default: city-shift]")
    ap.add_argument("--seeds", default="1000-1003", help="days [default: 1000-1003]")
    ap.add_argument(
        "--policy", action="append", help="policy name or folder (repeatable) [default: nearest, reposition]"
    )
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds)
    policies = args.policy or ["nearest", "reposition"]
    result = {
        "scenario": args.scenario,
        "seeds": seeds,
        "policies": {p: split(args.scenario, p, seeds) for p in policies},
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
