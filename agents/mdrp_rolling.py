"""``mdrp-rolling``: the rolling-horizon dispatcher of Reyes et al. (2018), "The Meal Delivery Routing
Problem" (Section 4), behind the ``Policy`` interface.

Every ``f_minutes`` at time t it plans again (``../shared/guides/mdrp-rolling-horizon.md`` summarises
the paper; the step numbers below are the paper's):

1. *Orders to plan* U: open orders (placed, not committed) ready by ``t + horizon_minutes``.
2. *Couriers*: on duty and able to take work, each with the place and time it can start a new route (now
   where it stands, the end of its current leg, or after its current deliveries: ``Simulator.driver_free``).
3. *Target bundle size* Z = ceil(orders ready by ``t + bundle_ready_minutes`` / couriers free by
   ``t + courier_free_minutes``), within [1, ``max_bundle``]; ``max_bundle`` when no courier is free.
4. *Bundles per restaurant* (pickup node) by parallel insertion: the restaurant's orders in U by ready
   time; max(couriers free at the restaurant, ceil(|U_r| / Z)) routes (and the routes of couriers sent
   there at the last planning, seeded with their orders); each order goes where the route cost (driving
   time from the pickup plus ``beta`` x service delay) grows least; a route already holding Z orders
   takes one more only if its time per order delivered drops; then one remove-and-reinsert pass.
5. *Urgency groups*: I, a bundle with an order whose target drop-off (its SLA deadline: placement + 40
   min in MDRP) can no longer be met; II, one with an order that can no longer be picked up at its ready
   time; III, the rest. Group I is matched first, then II, then III, each on the couriers left. With
   ``urgency_groups`` 0 (not the paper's rule) every bundle is in one group and one assignment matches them
   all: urgent bundles are no longer matched first to whichever courier is left, which costs throughput
   when couriers are short.
6. *Matching* (``scipy.optimize.linear_sum_assignment``; a pair that cannot be picked up before the
   courier's off time is infeasible, and as many bundles as the feasible pairs allow are matched):
   weight(s, d) = ``gamma`` x orders in s / minutes from d free to the last drop-off of s
   - ``theta`` x minutes from the latest ready time of s to its pickup by d. A courier sent to a
   restaurant at the last planning keeps the bundle that holds its orders.
7. *Commitment* of each matched (s, d): **final** if d reaches the restaurant by t + f and s is ready by
   t + f: every order of s is offered to d now (``Decision.bundle``: the courier gets the whole bundle at
   once); **partial** if d is free by t + f: d is sent to the restaurant now (``Decision.reposition_node``)
   and keeps s at the next planning, where s may grow; otherwise the match is dropped. **Override**: a
   bundle with an order ready more than ``override_minutes`` ago is committed finally.

Between plannings the policy only moves couriers: at its shift start a courier is sent to one of the
``preposition_k`` restaurants nearest to it (at random, from the policy's random stream), and a courier
partially committed while still busy is sent on when it becomes free. Restaurants are the MDRP instance's
(``scenario.meta["n_restaurants"]``: nodes ``0..n-1``) or, on other scenarios, the pickup places of the
orders seen so far.

On the synthetic scenarios the same rules run with their acceptance, pricing and SLAs: drivers who do
not always accept get only the first order of a bundle per epoch (one offer at a time), at the payout
level ``escalation_levels`` gives, and a driver who just declined an order is not matched to it again.

The parameters are constructor arguments (``PARAMS``: name -> (default, kind)); a ``policy.json`` of
format ``gigdispatch-mdrp-rolling/1`` holds ``params`` and, per instance class (the MDRP variant such as
``o100t75s1p100``, or a scenario name), its own ``scenarios`` entry: the tuned policy of
``checkpoints/mdrp``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gigdispatch.agents.base import Policy, escalation_levels
from gigdispatch.agents.policy_file import Spec, check_numbers, read_policy_json
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ORDER_OPEN, PH_IDLE, PH_OFFLINE

FORMAT = "gigdispatch-mdrp-rolling/1"
BIG = 1e9
_EMPTY = np.zeros(0, np.int64)

# name -> (default, kind); the paper's defaults where it gives them (f, the three 10-minute windows), the
# middle of the ranges it tuned over for the unpublished ones (beta, theta in [0, 1], gamma in [1, 10],
# override x in {15, 20, 25})
PARAMS: Spec = {
    "f_minutes": (5.0, "pos"),
    "horizon_minutes": (10.0, "pos"),
    "bundle_ready_minutes": (10.0, "pos"),
    "courier_free_minutes": (10.0, "pos"),
    "max_bundle": (4.0, "pos"),
    "beta": (0.5, "prob"),
    "theta": (0.5, "prob"),
    "gamma": (5.0, "pos"),
    "override_minutes": (20.0, "pos"),
    "preposition": (1.0, "switch"),
    "preposition_k": (3.0, "pos"),
    # step 5's urgency groups (the paper's rule); 0: one assignment over every bundle (not in the paper)
    "urgency_groups": (1.0, "switch"),
    # not in the paper (its couriers wait at their last drop-off): an idle courier moves to the nearest
    # restaurant with an order placed in the last ``idle_window_minutes``, weighted by how many
    "idle_reposition": (0.0, "switch"),
    "idle_window_minutes": (60.0, "pos"),
    "idle_pull": (0.0, "pos"),
    # the paper's estimated-ready-time setting (its §5): the dispatcher does not see an order's ready time; it
    # plans with placement + the mean preparation time of the orders picked up so far (``prep_prior_minutes``
    # until ``prep_prior_weight`` orders' worth of them are seen). The simulator still holds the food until it
    # is ready, as the restaurant would
    "estimated_ready": (0.0, "switch"),
    "prep_prior_minutes": (10.0, "pos"),
    "prep_prior_weight": (10.0, "pos"),
}


class MdrpPolicyError(ValueError):
    """A bad parameter or policy file of ``mdrp-rolling``; the message names the field."""


def check_params(params: dict[str, Any], where: str = "mdrp-rolling") -> dict[str, float]:
    out = check_numbers(params, PARAMS, where, MdrpPolicyError)
    if out["f_minutes"] < 1.0:
        raise MdrpPolicyError(
            f"{where}.f_minutes: must be >= 1 (a decision step is a minute), got {out['f_minutes']!r}"
        )
    for name in ("max_bundle", "preposition_k"):
        if out[name] < 1.0 or out[name] != round(out[name]):
            raise MdrpPolicyError(f"{where}.{name}: must be a whole number >= 1, got {out[name]!r}")
    return out


def instance_class(scenario_name: str) -> str:
    """The MDRP instance class of a scenario name (``mdrp:3r50t75s2p125`` -> ``r50t75s2p125``); other
    names unchanged."""
    base = scenario_name.removeprefix("mdrp:")
    if base != scenario_name:
        return re.sub(r"^\d+", "", base) or base
    return scenario_name


class RollingHorizonPolicy(Policy):
    """The Reyes et al. rolling-horizon dispatcher (the module docstring gives the rules)."""

    name = "mdrp-rolling"

    def __init__(self, **params: Any) -> None:
        self.default_params = check_params(params)
        self.params = self.default_params
        self.by_scenario: dict[str, dict[str, float]] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RollingHorizonPolicy:
        f, doc = read_policy_json(path, FORMAT, MdrpPolicyError, "an mdrp-rolling policy file")
        pol = cls(**check_params(doc["params"], where=f"{f}: params"))
        for name, ps in doc["scenarios"].items():
            pol.by_scenario[str(name)] = check_params(ps, where=f"{f}: scenarios.{name}")
        return pol

    # ------------------------------------------------------------------------------------ episode
    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        name = sim.scenario.name
        self.params = self.by_scenario.get(name, self.by_scenario.get(instance_class(name), self.default_params))
        self.rng = rng
        self.ready = sim.orders.t_ready  # what the dispatcher believes (``_ready_times``, set at every act)
        self.reserved: dict[int, tuple[int, list[int]]] = {}  # courier -> (restaurant node, orders) sent there
        self.placed = np.zeros(sim.drivers.n, bool)  # prepositioned already
        meta = sim.scenario.meta if isinstance(sim.scenario.meta, dict) else {}
        n_r = meta.get("n_restaurants")
        self.restaurants: np.ndarray | None = np.arange(n_r) if isinstance(n_r, int) and n_r > 0 else None
        self.t0 = float(sim.cfg.horizon.start)
        p = self.params
        self.f_s = 60.0 * p["f_minutes"]

    def _restaurant_nodes(self, sim: Simulator) -> np.ndarray:
        if self.restaurants is not None:
            return self.restaurants
        seen = sim.orders.pickup[: sim.state.next_order]
        return np.unique(seen).astype(np.int64)

    def _travel(self, sim: Simulator, a: np.ndarray, b: np.ndarray, drivers: np.ndarray | None = None) -> np.ndarray:
        """Seconds from nodes ``a`` to ``b`` under current traffic (at each driver's speed, or the fleet mean)."""
        f = sim.state.factor[sim.city.zone_of[a]]
        speed = sim.drivers.speed[drivers] if drivers is not None else float(np.mean(sim.drivers.speed))
        return sim.city.travel_s(a, b) * f / speed

    # ------------------------------------------------------------------------------------ moves
    def _moves(self, sim: Simulator, plan_moves: dict[int, int], offered: set[int]) -> tuple[np.ndarray, np.ndarray]:
        """Prepositioning at shift start and couriers sent on to the restaurant they were given (not those
        offered an order in this decision)."""
        dr, t = sim.drivers, sim.state.t
        idle = (dr.phase == PH_IDLE) & (dr.route_len == 0) & (dr.offer_order < 0) & (t < dr.shift_end)
        if offered:
            idle[np.fromiter(offered, np.int64)] = False
        moves = dict(plan_moves)
        for d, (r, _) in self.reserved.items():
            if d not in moves and idle[d] and dr.node[d] != r:
                moves[d] = r
        if self.params["preposition"] >= 0.5:
            new = np.flatnonzero(idle & ~self.placed & (dr.phase != PH_OFFLINE))
            self.placed[new] = True
            new = np.array([d for d in new.tolist() if d not in moves], np.int64)
            rest = self._restaurant_nodes(sim)
            if new.size and rest.size:
                k = min(int(self.params["preposition_k"]), rest.size)
                tt = self._travel(sim, dr.node[new][:, None].astype(np.int64), rest[None, :])
                near = np.argsort(tt, axis=1, kind="stable")[:, :k]
                pick = near[np.arange(new.size), self.rng.integers(0, k, size=new.size)]
                for d, r in zip(new.tolist(), rest[pick].tolist(), strict=True):
                    if dr.node[d] != r:
                        moves[d] = int(r)
        self.placed |= dr.phase != PH_OFFLINE  # a courier seen on duty is prepositioned at most once
        if self.params["idle_reposition"] >= 0.5:
            self._idle_moves(sim, idle, moves)
        ok = [d for d in moves if idle[d]]
        return np.array(ok, np.int64), np.array([moves[d] for d in ok], np.int64)

    def _idle_moves(self, sim: Simulator, idle: np.ndarray, moves: dict[int, int]) -> None:
        """Idle couriers away from every active restaurant go to the one that is nearest, discounted by its
        recent orders (``idle_pull``: travel time / (1 + orders) ** idle_pull)."""
        od, dr, t = sim.orders, sim.drivers, sim.state.t
        lo = int(np.searchsorted(od.t_place[: sim.state.next_order], t - 60.0 * self.params["idle_window_minutes"]))
        recent = od.pickup[lo : sim.state.next_order].astype(np.int64)
        if recent.size == 0:
            return
        rest, counts = np.unique(recent, return_counts=True)
        cand = np.flatnonzero(idle & (dr.phase == PH_IDLE) & ~np.isin(dr.node, rest))
        cand = np.array([d for d in cand.tolist() if d not in moves and d not in self.reserved], np.int64)
        if cand.size == 0:
            return
        tt = self._travel(sim, dr.node[cand][:, None].astype(np.int64), rest[None, :])
        score = tt / (1.0 + counts[None, :]) ** self.params["idle_pull"]
        to = rest[np.argmin(score, axis=1)]
        for d, r in zip(cand.tolist(), to.tolist(), strict=True):
            moves[d] = int(r)

    # ------------------------------------------------------------------------------------ planning
    def _ready_times(self, sim: Simulator) -> np.ndarray:
        """(O,) the ready times the dispatcher plans with: the true ones (perfect preparation-time information,
        the paper's main setting), or with ``estimated_ready`` placement + the running mean preparation time of
        the orders picked up so far (a picked-up order's ready time is known: the food was handed over)."""
        od = sim.orders
        if not self.params["estimated_ready"]:
            return od.t_ready
        picked = np.isfinite(od.t_pickup)
        w = self.params["prep_prior_weight"]
        prior = 60.0 * self.params["prep_prior_minutes"]
        seen = od.t_ready[picked] - od.t_place[picked]
        prep = (w * prior + float(seen.sum())) / (w + seen.size)
        return np.where(picked, od.t_ready, od.t_place + prep)

    def act(self, sim: Simulator) -> Decision:
        t = sim.state.t
        self.ready = self._ready_times(sim)
        planning = round((t - self.t0) / 60.0) % max(1, round(self.f_s / 60.0)) == 0
        order_l: list[int] = []
        driver_l: list[int] = []
        plan_moves: dict[int, int] = {}
        if planning:
            order_l, driver_l, plan_moves = self._plan(sim)
        else:
            # forget couriers whose orders were all taken meanwhile
            od = sim.orders
            for c in list(self.reserved):
                r, ords = self.reserved[c]
                live = [o for o in ords if od.status[o] == ORDER_OPEN]
                if live:
                    self.reserved[c] = (r, live)
                else:
                    del self.reserved[c]
        rep_d, rep_n = self._moves(sim, plan_moves, set(driver_l))
        o = np.array(order_l, np.int64)
        d = np.array(driver_l, np.int64)
        return Decision(
            order=o,
            driver=d,
            level=escalation_levels(sim, o),
            reposition_driver=rep_d,
            reposition_node=rep_n,
            bundle=True,
        )

    def _plan(self, sim: Simulator) -> tuple[list[int], list[int], dict[int, int]]:
        """One planning (steps 1-7): the offers ``(orders, drivers)`` and moves ``{courier: node}`` it makes."""
        p, t = self.params, sim.state.t
        open_o = sim.open_orders()
        U = open_o[self.ready[open_o] <= t + 60.0 * p["horizon_minutes"]]
        elig = np.flatnonzero(sim.eligible(idle_only=False))
        old_res = self.reserved
        self.reserved = {}
        if U.size == 0 or elig.size == 0:
            return [], [], {}
        node_f, t_free = sim.driver_free(elig)
        node_f = node_f.astype(np.int64)
        t_free = np.maximum(t_free, t)
        # step 3: target bundle size
        n_ready = int((self.ready[open_o] <= t + 60.0 * p["bundle_ready_minutes"]).sum())
        n_free = int((t_free <= t + 60.0 * p["courier_free_minutes"]).sum())
        zmax = int(p["max_bundle"])
        Z = min(zmax, max(1, math.ceil(n_ready / n_free))) if n_free else zmax
        elig_pos = {int(d): i for i, d in enumerate(elig.tolist())}
        bundles = self._bundles(sim, U, Z, node_f, t_free, old_res, elig_pos)
        if not bundles:
            return [], [], {}
        match, arr, b_ready = self._match(sim, bundles, elig, node_f, t_free, elig_pos)
        return self._commit(sim, bundles, match, arr, b_ready, elig, t_free)

    def _bundles(
        self,
        sim: Simulator,
        U: np.ndarray,
        Z: int,
        node_f: np.ndarray,
        t_free: np.ndarray,
        old_res: dict[int, tuple[int, list[int]]],
        elig_pos: dict[int, int],
    ) -> list[tuple[int, list[int], int]]:
        """Step 4: ``(restaurant node, orders in drop-off order, courier sent for it or -1)`` per bundle."""
        od, t = sim.orders, sim.state.t
        pick_svc, drop_svc = float(sim.pickup_svc), float(sim.drop_svc)
        res_of: dict[int, int] = {}  # order -> courier that was sent for it
        for d, (_, ords) in old_res.items():
            for o in ords:
                res_of[o] = d
        bundles: list[tuple[int, list[int], int]] = []
        pick = od.pickup[U].astype(np.int64)
        for r in np.unique(pick).tolist():
            ords = U[pick == r]
            ords = ords[np.argsort(self.ready[ords], kind="stable")].tolist()
            at_r = int(((node_f == r) & (t_free <= t + self.f_s)).sum())
            seeds: dict[int, list[int]] = {}
            for o in ords:
                c = res_of.get(o, -1)
                if c >= 0 and c in elig_pos:
                    seeds.setdefault(c, []).append(o)
            seeded = {o for s in seeds.values() for o in s}
            free_o = [o for o in ords if o not in seeded]
            n_new = max(at_r, math.ceil(len(ords) / Z)) - len(seeds)
            routes = self._build_routes(sim, r, list(seeds.values()), free_o, max(n_new, 0), Z, pick_svc, drop_svc)
            owners = list(seeds) + [-1] * (len(routes) - len(seeds))
            bundles.extend((r, route, owner) for route, owner in zip(routes, owners, strict=True) if route)
        return bundles

    def _match(
        self,
        sim: Simulator,
        bundles: list[tuple[int, list[int], int]],
        elig: np.ndarray,
        node_f: np.ndarray,
        t_free: np.ndarray,
        elig_pos: dict[int, int],
    ) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
        """Steps 5-6: the matched ``(bundle, courier position in elig)`` pairs, urgency group by group, with
        each pair's arrival at the restaurant and each bundle's latest ready time."""
        p, od, dr, t = self.params, sim.orders, sim.drivers, sim.state.t
        pick_svc, drop_svc = float(sim.pickup_svc), float(sim.drop_svc)
        nb = len(bundles)
        b_node = np.array([b[0] for b in bundles], np.int64)
        b_n = np.array([len(b[1]) for b in bundles], np.float64)
        b_ready = np.array([self.ready[b[1]].max() for b in bundles])
        b_dur = np.array([self._route_times(sim, b[0], b[1], 0.0, pick_svc, drop_svc)[-1] for b in bundles])
        b_vol = np.array([float(od.volume[b[1]].sum()) for b in bundles])
        group = np.full(nb, 3, np.int64)
        for i, (r, ords, _) in enumerate(bundles if p["urgency_groups"] else ()):
            o = np.array(ords, np.int64)
            drive = self._travel(sim, np.full(len(o), r), od.dropoff[o].astype(np.int64))
            earliest = np.maximum(self.ready[o], t) + pick_svc + drive + drop_svc / 2.0
            if (earliest > od.deadline[o]).any():
                group[i] = 1
            elif (self.ready[o] < t).any():
                group[i] = 2
        arr = t_free[None, :] + self._travel(sim, node_f[None, :], b_node[:, None], elig[None, :])
        t_pick = np.maximum(arr + pick_svc / 2.0, b_ready[:, None])
        last = t_pick + b_dur[:, None]
        feasible = t_pick <= dr.shift_end[elig][None, :]
        room = dr.capacity[elig] - sim.state.committed[elig]
        feasible &= b_vol[:, None] <= room[None, :] + 1e-9
        w = p["gamma"] * b_n[:, None] / np.maximum((last - t_free[None, :]) / 60.0, 1e-6)
        w = w - p["theta"] * (t_pick - b_ready[:, None]) / 60.0
        cost = np.where(feasible, -w, BIG)
        for i, (_, ords, _) in enumerate(bundles):  # who just declined an order is not matched to it again
            ld = int(od.last_decliner[ords[0]])
            if ld in elig_pos:
                cost[i, elig_pos[ld]] = BIG
        taken = np.zeros(elig.size, bool)
        done = np.zeros(nb, bool)
        match: list[tuple[int, int]] = []
        for i, (_, _, owner) in enumerate(bundles):  # the courier sent for a bundle keeps it
            if owner >= 0 and cost[i, elig_pos[owner]] < BIG / 2:
                match.append((i, elig_pos[owner]))
                taken[elig_pos[owner]] = done[i] = True
        for g in (1, 2, 3):
            rows = np.flatnonzero((group == g) & ~done)
            cols = np.flatnonzero(~taken)
            if rows.size == 0 or cols.size == 0:
                continue
            sub = cost[np.ix_(rows, cols)]
            ri, ci = linear_sum_assignment(sub)
            keep = sub[ri, ci] < BIG / 2
            match.extend(zip(rows[ri[keep]].tolist(), cols[ci[keep]].tolist(), strict=True))
            taken[cols[ci[keep]]] = True
            done[rows[ri[keep]]] = True
        return match, arr, b_ready

    def _commit(
        self,
        sim: Simulator,
        bundles: list[tuple[int, list[int], int]],
        match: list[tuple[int, int]],
        arr: np.ndarray,
        b_ready: np.ndarray,
        elig: np.ndarray,
        t_free: np.ndarray,
    ) -> tuple[list[int], list[int], dict[int, int]]:
        """Step 7: final commitments become offers, partial ones moves to the restaurant."""
        dr, t, f_s = sim.drivers, sim.state.t, self.f_s
        order_l: list[int] = []
        driver_l: list[int] = []
        moves: dict[int, int] = {}
        over_s = 60.0 * self.params["override_minutes"]
        for i, j in match:
            r, ords, _ = bundles[i]
            d = int(elig[j])
            final = bool(arr[i, j] <= t + f_s and b_ready[i] <= t + f_s)
            final |= bool((t - self.ready[ords] > over_s).any())
            if final:
                give = ords if dr.always_accept[d] else ords[:1]
                order_l.extend(give)
                driver_l.extend([d] * len(give))
            elif t_free[j] <= t + f_s:
                self.reserved[d] = (r, list(ords))
                heading = dr.leg_to[d] == r and dr.phase[d] != PH_IDLE
                if dr.route_len[d] == 0 and dr.node[d] != r and not heading:
                    moves[d] = r
        return order_l, driver_l, moves

    # ------------------------------------------------------------------------------------ routes
    def _route_times(
        self, sim: Simulator, r: int, ords: list[int], t_pick: float, pick_svc: float, drop_svc: float
    ) -> np.ndarray:
        """Drop-off event times of ``ords`` delivered in that order after a pickup at ``t_pick`` at node ``r``."""
        od = sim.orders
        nodes = np.array([r, *od.dropoff[ords].tolist()], np.int64)
        legs = self._travel(sim, nodes[:-1], nodes[1:])
        k = np.arange(len(ords))
        return t_pick + pick_svc / 2.0 + np.cumsum(legs) + drop_svc / 2.0 + k * drop_svc

    def _route_cost(
        self, sim: Simulator, r: int, ords: list[int], pick_svc: float, drop_svc: float
    ) -> tuple[float, float]:
        """(cost, time per order) of a route: driving and service time from the pickup (the latest ready
        time of its orders) to the last drop-off, plus ``beta`` x the summed service delay (drop-off minus
        the earliest drop-off each order could have had alone)."""
        if not ords:
            return 0.0, 0.0
        od = sim.orders
        ready = self.ready[ords]
        tp = float(ready.max())
        drops = self._route_times(sim, r, ords, tp, pick_svc, drop_svc)
        alone = (
            ready
            + pick_svc / 2.0
            + self._travel(sim, np.full(len(ords), r), od.dropoff[ords].astype(np.int64))
            + drop_svc / 2.0
        )
        delay = float(np.maximum(drops - alone, 0.0).sum())
        dur = float(drops[-1] - tp)
        return dur + self.params["beta"] * delay, dur / len(ords)

    def _best_insert(
        self, sim: Simulator, r: int, routes: list[list[int]], o: int, Z: int, pick_svc: float, drop_svc: float
    ) -> tuple[int, int] | None:
        """(route, position) where inserting ``o`` raises the route cost least, or None if no route takes it
        (a route of Z or more orders takes it only if its time per order drops)."""
        best: tuple[float, int, int] | None = None
        for ri, route in enumerate(routes):
            c0, per0 = self._route_cost(sim, r, route, pick_svc, drop_svc)
            for pos in range(len(route) + 1):
                cand = [*route[:pos], o, *route[pos:]]
                c1, per1 = self._route_cost(sim, r, cand, pick_svc, drop_svc)
                if len(route) >= Z and not per1 < per0:
                    continue
                if len(cand) > int(self.params["max_bundle"]):
                    continue
                if best is None or c1 - c0 < best[0]:
                    best = (c1 - c0, ri, pos)
        return None if best is None else (best[1], best[2])

    def _build_routes(
        self,
        sim: Simulator,
        r: int,
        seeded: list[list[int]],
        ords: list[int],
        n_new: int,
        Z: int,
        pick_svc: float,
        drop_svc: float,
    ) -> list[list[int]]:
        """Parallel insertion of ``ords`` (by ready time) into the seeded routes and ``n_new`` empty ones,
        then one remove-and-reinsert pass over the orders not seeded."""
        routes = [list(s) for s in seeded] + [[] for _ in range(n_new)]
        for o in ords:
            at = self._best_insert(sim, r, routes, o, Z, pick_svc, drop_svc)
            if at is None:
                routes.append([o])
            else:
                routes[at[0]].insert(at[1], o)
        if len(ords) > 1:
            for o in ords:
                ri = next(i for i, rt in enumerate(routes) if o in rt)
                routes[ri].remove(o)
                at = self._best_insert(sim, r, routes, o, Z, pick_svc, drop_svc)
                if at is None:
                    routes.append([o])
                else:
                    routes[at[0]].insert(at[1], o)
        return [rt for rt in routes if rt]


def load(path: str | os.PathLike[str]) -> RollingHorizonPolicy:
    """``RollingHorizonPolicy.from_file``: a ``policy.json`` of format ``FORMAT`` (or a folder holding one)."""
    return RollingHorizonPolicy.from_file(Path(path))
