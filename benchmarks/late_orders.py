"""Where late deliveries come from, under nearest dispatch without repositioning (JSON on stdout).

The question behind it: could any repositioning rule raise the on-time rate? Repositioning only moves
drivers who are idle and have no offer, so it can only help an order that finds such drivers when it
is placed. Per scenario and seed this prints, for late and for on-time deliveries: how many idle
drivers were left over (idle, eligible, not offered anything) at the first decision epoch after the
order was placed; the share of orders with none left; the share assigned within 2 minutes of
placement; the mean minutes from placement to assignment, from assignment to pickup and from food-ready
to pickup; and the share of late orders on the express tier (an SLA of 45 minutes or less).

    python -m benchmarks.late_orders --scenario default --scenario city-1000 --seeds 1000-1002
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import emit


def analyse(scenario: str, seed: int) -> dict[str, object]:
    from gigdispatch.agents.nearest import NearestPolicy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.core.types import ORDER_DELIVERED

    sim = Simulator(load_scenario(scenario))
    pol = NearestPolicy()
    sim.reset(seed)
    pol.reset(sim, sim.rng["policy"])
    epochs, left_over = [], []
    while not sim.done:
        dec = pol.act(sim)
        free = sim.eligible(idle_only=True)
        free[np.asarray(dec.driver, np.int64)] = False
        epochs.append(sim.t)
        left_over.append(int(free.sum()))
        sim.step(dec)
    od = sim.orders
    done = od.status == ORDER_DELIVERED
    late = done & (od.t_delivered > od.deadline + 1e-9)
    first = np.minimum(np.searchsorted(np.array(epochs), od.t_place, side="right"), len(epochs) - 1)
    spare = np.array(left_over)[first]
    express = (od.deadline - od.t_place) <= 45 * 60

    def describe(m: np.ndarray) -> dict[str, float]:
        if not m.any():
            return {"orders": 0}
        return {
            "orders": int(m.sum()),
            "idle_left_over_median": float(np.median(spare[m])),
            "share_with_no_idle_left_over": float((spare[m] == 0).mean()),
            "share_assigned_within_2_min": float(((od.t_assigned - od.t_place)[m] <= 120).mean()),
            "placed_to_assigned_min": float(((od.t_assigned - od.t_place)[m]).mean() / 60),
            "assigned_to_pickup_min": float(((od.t_pickup - od.t_assigned)[m]).mean() / 60),
            "ready_to_pickup_min": float(((od.t_pickup - od.t_ready)[m]).mean() / 60),
            "express_share": float(express[m].mean()),
        }

    return {"scenario": scenario, "seed": seed, "late": describe(late), "on_time": describe(done & ~late)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Where late deliveries come from under nearest dispatch. Prints JSON.")
    ap.add_argument("--scenario", action="append", help="scenario name or YAML; repeat [default: default]")
    ap.add_argument("--seeds", default="1000-1002", help="training-range seeds, e.g. 1000-1002 [default: %(default)s]")
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    from gigdispatch.envs.core.seeding import parse_seeds

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(f"--seeds: {e}")
    runs = [analyse(sc, s) for sc in args.scenario or ["default"] for s in seeds]
    return emit({"benchmark": "late orders under nearest dispatch", "runs": runs}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
