"""Simulator-core benchmark: a full day with the nearest heuristic, printed as JSON.

Cases: ``city-1000`` as shipped, then the same city at 100, 1,000 and 5,000 drivers with orders
scaled in proportion (26 expected orders per driver per day, as in city-1000). Each run happens in a
fresh process so that its peak memory (ru_maxrss) is its own; each case is repeated and the median
wall time reported, with the minimum and maximum beside it.

    python -m benchmarks.bench_core                 # all cases, 3 repeats
    python -m benchmarks.bench_core --repeats 5 --out results/bench_core.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

from benchmarks.common import emit

ORDERS_PER_DRIVER = 26.0


def run_case(drivers: int | None, seed: int) -> dict[str, float]:
    """One full day in this process; returns wall time, simulated time and peak memory."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.scenarios.loader import configs_dir, load_yaml

    if drivers is None:
        scenario = load_scenario("city-1000")
    else:
        cfg = load_yaml(configs_dir() / "scenarios" / "city-1000.yaml")
        cfg = cfg.model_copy(
            update={
                "name": f"city-1000@{drivers}",
                "fleet": cfg.fleet.model_copy(update={"drivers": drivers}),
                "demand": cfg.demand.model_copy(update={"orders": ORDERS_PER_DRIVER * drivers}),
            }
        )
        scenario = load_scenario(cfg)
    t0 = time.perf_counter()
    sim = Simulator(scenario)
    kpis = sim.run(make_policy("nearest"), seed=seed)
    wall = time.perf_counter() - t0
    return {
        "wall_seconds": wall,
        "sim_seconds": kpis["sim_seconds"],
        "orders_created": kpis["orders_created"],
        "orders_delivered": kpis["orders_delivered"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def measure(drivers: int | None, repeats: int, seed: int) -> dict[str, object]:
    runs = []
    for _ in range(repeats):
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_core",
            "--one",
            "" if drivers is None else str(drivers),
            "--seed",
            str(seed),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    walls = [r["wall_seconds"] for r in runs]
    med = statistics.median(walls)
    return {
        "case": "city-1000" if drivers is None else f"city-1000 layout, {drivers} drivers",
        "drivers": 1000 if drivers is None else drivers,
        "orders_created": runs[0]["orders_created"],
        "wall_seconds_median": round(med, 3),
        "wall_seconds_min": round(min(walls), 3),
        "wall_seconds_max": round(max(walls), 3),
        "sim_to_wall_ratio": round(runs[0]["sim_seconds"] / med, 1),
        "peak_rss_mib": round(max(r["peak_rss_mib"] for r in runs), 1),
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the simulator core (full day, nearest heuristic); prints JSON.")
    ap.add_argument(
        "--repeats", type=int, default=3, help="runs per case; the median is reported [default: %(default)s]"
    )
    ap.add_argument("--seed", type=int, default=0, help="episode seed [default: %(default)s]")
    ap.add_argument(
        "--drivers", type=int, nargs="*", default=[100, 1000, 5000], help="scaling cases [default: 100 1000 5000]"
    )
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_case(int(args.one) if args.one else None, args.seed)))
        return 0
    cases = [measure(None, args.repeats, args.seed)] + [measure(n, args.repeats, args.seed) for n in args.drivers]
    scaling = {}
    by_n = {c["drivers"]: c for c in cases[1:]}
    if 1000 in by_n and 5000 in by_n:
        ratio = by_n[5000]["wall_seconds_median"] / by_n[1000]["wall_seconds_median"]
        scaling = {
            "wall_ratio_5000_vs_1000": round(ratio, 2),
            "linear_would_be": 5.0,
            "no_worse_than_linear": ratio <= 5.0,
        }
    result = {
        "benchmark": "simulator core, full day, nearest heuristic",
        "command": "python -m benchmarks.bench_core " + " ".join(a for a in (argv or sys.argv[1:])),
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": __import__("os").cpu_count(),
        },
        "cases": cases,
        "scaling": scaling,
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
