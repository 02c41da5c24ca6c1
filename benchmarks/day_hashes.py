"""Behaviour fingerprint: SHA-256 of whole seeded days, per scenario and registered policy.

For every registered policy on each scenario it hashes

* ``sim``: a simulator day with that policy -- every decision (orders, drivers, levels, moves,
  take-backs), the per-step info, the end-of-day KPIs and the final order and driver arrays;
* ``fleet``: a PettingZoo fleet-env day (``gigdispatch/Fleet-v0``, pinned as ``Dispatch-v0`` is) with that
  policy as the platform and seeded random valid driver actions -- every observation, mask and reward and the
  KPIs;

and, per scenario, one ``Dispatch-v0`` day with seeded random valid actions (observations, masks,
rewards, KPIs). A refactor that claims to change no behaviour must leave every hash as it was::

    python -m benchmarks.day_hashes --out before.json   # on the old code
    python -m benchmarks.day_hashes --out after.json    # on the new code, then compare the files

Prints JSON (``{scenario: {"dispatch": hash, "<policy>": {"sim": hash, "fleet": hash}}}``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # the installed namespace
    from gigdispatch.agents.registry import make_policy, policy_names
    from gigdispatch.envs import load_scenario  # registers gigdispatch/Fleet-v0
    from gigdispatch.envs.core import Simulator, compute_kpis
except ImportError:  # older trees, for a before/after comparison
    from agents.registry import make_policy, policy_names  # type: ignore[no-redef]
    from envs import load_scenario  # type: ignore[no-redef]
    from envs.core import Simulator, compute_kpis  # type: ignore[no-redef]

import gymnasium
import pettingzoo

MDRP = Path(__file__).resolve().parents[2] / "shared" / "data" / "mdrplib" / "public_instances" / "0o50t75s1p100"
SCENARIOS = {"default": "default", "city-1000": "city-1000", "mdrp": str(MDRP)}


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, x: Any) -> None:
        if isinstance(x, np.ndarray):
            self.h.update(str(x.dtype).encode() + str(x.shape).encode())
            self.h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for k in sorted(x):
                self.h.update(str(k).encode())
                self.add(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                self.add(v)
        elif x is None:
            self.h.update(b"None")
        else:
            self.h.update(repr(float(x) if isinstance(x, (int, float, np.number, bool)) else x).encode())

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _state_arrays(obj: Any) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(obj).items() if isinstance(v, np.ndarray)}


def sim_day(scenario: Any, policy_name: str, seed: int) -> str:
    h = _Hasher()
    sim = Simulator(scenario)
    policy = make_policy(policy_name)
    sim.reset(seed)
    policy.reset(sim, sim.rng["policy"])
    while not sim.done:
        dec = policy.act(sim)
        if dec is not None:
            h.add([dec.order, dec.driver, dec.level, dec.reposition_driver, dec.reposition_zone, dec.unassign])
        h.add(sim.step(dec))
    h.add(compute_kpis(sim))
    h.add(_state_arrays(sim.orders))
    h.add(_state_arrays(sim.drivers))
    return h.hexdigest()


def fleet_day(scenario: Any, policy_name: str, seed: int) -> str:
    h = _Hasher()
    env = pettingzoo.make(
        "parallel", "gigdispatch/Fleet-v0", scenario=scenario, platform_policy=make_policy(policy_name)
    )
    rng = np.random.default_rng(12345)
    obs, _ = env.reset(seed=seed)
    agents = list(env.possible_agents)
    while env.agents:
        masks = np.stack([obs[a]["action_mask"] for a in agents]).astype(bool)
        h.add(np.stack([obs[a]["observation"] for a in agents]))
        h.add(masks)
        # a random valid action per driver: the argmax of random scores over valid actions
        acts = np.where(masks, rng.random(masks.shape), -1.0).argmax(axis=1)
        obs, rew, _, _, infos = env.step(dict(zip(agents, acts.tolist(), strict=True)))
        h.add(np.array([rew[a] for a in agents]))
    h.add(infos[agents[0]].get("kpis"))
    return h.hexdigest()


def dispatch_day(scenario: Any, seed: int) -> str:
    h = _Hasher()
    env = gymnasium.make("gigdispatch/Dispatch-v0", scenario=scenario).unwrapped
    rng = np.random.default_rng(6789)
    obs, _ = env.reset(seed=seed)
    nvec = env.action_space.nvec
    done = False
    info: dict[str, Any] = {}
    while not done:
        mask = env.action_masks()
        h.add(obs)
        h.add(mask)
        act, off = [], 0
        for n in nvec:
            m = mask[off : off + n]
            act.append(int(np.where(m, rng.random(n), -1.0).argmax()))
            off += n
        obs, r, term, trunc, info = env.step(np.array(act))
        h.add(r)
        done = term or trunc
    h.add(info.get("kpis"))
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=3, help="the day to play (default 3)")
    p.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="scenarios (default: all)")
    p.add_argument("--policy", action="append", help="policies (default: every registered one)")
    p.add_argument("--no-fleet", action="store_true", help="skip the fleet-env days")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    out: dict[str, Any] = {}
    for name in a.scenario or list(SCENARIOS):
        sc = load_scenario(SCENARIOS[name])
        t0 = time.perf_counter()
        res: dict[str, Any] = {"dispatch": dispatch_day(sc, a.seed)}
        for pol in a.policy or policy_names():
            res[pol] = {"sim": sim_day(sc, pol, a.seed)}
            if not a.no_fleet:
                res[pol]["fleet"] = fleet_day(sc, pol, a.seed)
            print(f"{name} {pol} {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        out[name] = res
    text = json.dumps(out, indent=1, sort_keys=True)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
