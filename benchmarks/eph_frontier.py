"""Can a repositioning policy raise drivers' earnings per online hour above ``nearest``'s? (JSON on stdout)

Issue 17 asks a learned repositioning policy to beat ``nearest`` (no repositioning) on click-to-door **and**
on driver earnings per online hour (payouts over online hours). This script measures the trade-off between
the two over a family of repositioning policies on training days (never the evaluation days 0-19): the
shipped learned repositioner (``checkpoints/reposition``) at its searched parameters and at lower move
intensities (fewer drivers worth placing per forecast order, a smaller share of movable drivers moved per
epoch), the same with moves restricted to drivers whose idle clock is young (a move restarts the driver's
log-off patience, so moving a long-idle driver buys the most extra online time), and the same with surplus
idle drivers sent home at once. Every variant keeps ``nearest``'s dispatch.

For each variant: mean online hours, payouts (EUR), deliveries, earnings per online hour and click-to-door,
and the paired differences from ``nearest`` with 95 % t-intervals over the days. ``beats_nearest_on_both``
is true only where both intervals exclude zero in the right direction.

    python -m benchmarks.eph_frontier --seeds 1000-1007 --workers 2
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks.common import emit

# variant -> (kind, settings); "file" variants use the shipped city-shift parameters with these overrides
# (scaled from the shipped values), "cap" adds an idle-clock limit (seconds) on who may be moved, "home" also
# sends surplus idle drivers home after this many seconds of waiting
VARIANTS: dict[str, dict[str, Any]] = {
    "nearest": {"name": "nearest"},
    "reposition": {"name": "reposition"},
    "learned": {},
    "learned, half the drivers placed": {"scale": {"drivers_per_order": 0.5}},
    "learned, a quarter of the drivers placed": {"scale": {"drivers_per_order": 0.25}},
    "learned, 20 % of movable moved per epoch": {"set": {"move_share": 0.2}},
    "learned, only drivers idle <= 15 min moved": {"cap_s": 900.0},
    "learned, only drivers idle <= 5 min moved": {"cap_s": 300.0},
    "learned, surplus sent home after 5 min": {"home_s": 300.0},
    "learned, idle <= 5 min moved, surplus home after 5 min": {"cap_s": 300.0, "home_s": 300.0},
}


def _policy(spec: dict[str, Any], checkpoint: str) -> Any:
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.reposition import CoverageRepositionPolicy
    from gigdispatch.envs.core.types import PH_IDLE

    if "name" in spec:
        return make_policy(spec["name"])
    cap_s, home_s = float(spec.get("cap_s", np.inf)), spec.get("home_s")

    class Variant(CoverageRepositionPolicy):
        def reset(self, sim, rng):  # type: ignore[no-untyped-def]
            super().reset(sim, rng)  # the shipped parameters of this scenario (or its family), then the changes
            self.params = dict(self.params)
            for k, f in spec.get("scale", {}).items():
                self.params[k] *= f
            self.params.update(spec.get("set", {}))

        def act(self, sim):  # type: ignore[no-untyped-def]
            dec = super().act(sim)  # nearest's offers, then the shipped policy's moves
            d, z = dec.reposition_driver, dec.reposition_zone
            st, dr = sim.state, sim.drivers
            if st.idle_since is not None and d.size:  # moves only for drivers whose log-off clock is young
                keep = sim.t - st.idle_since[d] <= cap_s
                d, z = d[keep], z[keep]
            nodes = sim.city.zone_node[z].astype(np.int64)
            if home_s is not None and st.wait_since is not None:
                waiting = (dr.phase == PH_IDLE) & (dr.route_len == 0) & (dr.offer_order < 0) & ~dr.owned
                home = waiting & (dr.node != dr.home) & (sim.t - st.wait_since >= float(home_s))
                home[np.asarray(dec.driver, dtype=np.int64)] = False
                home[d] = False
                h = home.nonzero()[0]
                d, nodes = np.concatenate([d, h]), np.concatenate([nodes, dr.home[h].astype(np.int64)])
            dec.reposition_driver, dec.reposition_zone, dec.reposition_node = d, np.zeros(0, np.int64), nodes
            return dec

    return Variant.from_file(checkpoint)


def _day(job: tuple[str, str, str, int]) -> tuple[str, int, dict[str, float]]:
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.core.types import ORDER_DELIVERED

    label, scenario, checkpoint, seed = job
    sim = Simulator(load_scenario(scenario))
    k = sim.run(_policy(VARIANTS[label], checkpoint), seed=seed)
    return (
        label,
        seed,
        {
            "online_hours": float(sim.drivers.online_s.sum()) / 3600.0,
            "payouts_eur": float(k["payouts_total"]),
            "deliveries": float((sim.orders.status == ORDER_DELIVERED).sum()),
            "earnings_per_online_hour": float(k["driver_earnings_per_hour"]),
            "click_to_door_mean_min": float(k["click_to_door_mean_min"]),
            "on_time_rate": float(k["on_time_rate"]),
        },
    )


def main(argv: list[str] | None = None) -> int:
    from gigdispatch.envs.core.seeding import parse_seeds
    from gigdispatch.training.stats import paired_diff

    ap = argparse.ArgumentParser(prog="python -m benchmarks.eph_frontier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="city-shift", help="scenario [default: city-shift]")
    ap.add_argument("--seeds", default="1000-1007", help="training days [default: 1000-1007]")
    ap.add_argument("--checkpoint", default="checkpoints/reposition", help="repositioning policy folder")
    ap.add_argument("--workers", type=int, default=2, help="worker processes [default: 2]")
    ap.add_argument("--out", help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        _policy(VARIANTS["learned"], args.checkpoint)  # a bad folder: one line, before the pool
    except (ValueError, OSError) as e:  # a bad argument or folder is one line, not a traceback
        print(f"eph_frontier: {e}", file=sys.stderr)
        return 2
    jobs = [(label, args.scenario, args.checkpoint, s) for label in VARIANTS for s in seeds]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:
        rows = list(pool.map(_day, jobs))
    by: dict[str, dict[int, dict[str, float]]] = {}
    for label, seed, r in rows:
        by.setdefault(label, {})[seed] = r
    base = by["nearest"]
    out: dict[str, Any] = {}
    for label in VARIANTS:
        days = by[label]
        res: dict[str, Any] = {k: round(float(np.mean([days[s][k] for s in seeds])), 4) for k in days[seeds[0]]}
        for k in ("earnings_per_online_hour", "click_to_door_mean_min", "online_hours", "payouts_eur", "deliveries"):
            p = paired_diff([days[s][k] for s in seeds], [base[s][k] for s in seeds])
            res[f"{k}_minus_nearest"] = [round(p.mean, 4), round(p.lo, 4), round(p.hi, 4)]
        e, c = res["earnings_per_online_hour_minus_nearest"], res["click_to_door_mean_min_minus_nearest"]
        res["beats_nearest_on_both"] = bool(e[1] > 0 and c[2] < 0)
        out[label] = res
    return emit({"scenario": args.scenario, "seeds": seeds, "variants": out}, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
