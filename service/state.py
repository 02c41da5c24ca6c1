"""What the service serves (the scenario, one reset simulator, one policy) and a request as simulator state.

``ServeState`` is built once at start-up: it loads the scenario, makes a ``Simulator`` and resets it
once (seed 0 by default), replaces its traffic by the scenario's time-of-day profile without random
incidents, makes the policy once and calls ``policy.reset(sim, sim.rng["policy"])``.
``ServeState.load`` then overwrites the simulator's state with a request's fleet and open orders
(see ``docs/serving.md`` for the field reference):

* positions are node ids of the scenario's city, or x/y metres snapped to the nearest node (a
  KD-tree built once); the clock is ``now`` (seconds since midnight); surge is 1 everywhere;
* drivers are active accounts; ``idle`` drivers stand at their node with an empty route, ``busy`` ones
  have the stops of ``route`` (or ``pending_stops`` stops at their own node when the route is unknown;
  one when neither is given) and drive towards the first; ``offline`` ones are never offered work;
  ``load`` counts as committed volume; acceptance bias 0, service-time factor 1; ``owned`` drivers
  (owned fleet) always accept and get payout 0;
* orders are open (waiting for a driver), sorted by placement time (ties in request order); the fee is
  the request's ``fee`` or the scenario's quote; ``declines`` sets the escalation level the built-in
  heuristics re-offer at. Every route stop belongs to one extra "phantom" order (already assigned)
  after the request's orders.

A request that validated but does not fit the scenario raises ``RequestError`` naming the field, before
anything is written into the simulator: an unknown node id; x/y farther than ``XY_MARGIN_M`` outside the
bounding box of the city's nodes (``ServeState.xy_box``); more stops than the scenario's routes hold;
more ``declines`` than an order can have had since it was placed (the simulator offers an order at
most once per decision step, so at most ``(now - placed) / step_seconds`` declines, plus one).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from gigdispatch.agents import make_policy
from gigdispatch.agents.heuristics import DemandRepositionPolicy
from gigdispatch.envs import load_scenario
from gigdispatch.envs.core import Simulator
from gigdispatch.envs.core.city import Incidents
from gigdispatch.envs.core.state import EpisodeState
from gigdispatch.envs.core.types import (
    ACC_ACTIVE,
    ORDER_ASSIGNED,
    ORDER_OPEN,
    PH_DRIVING,
    PH_IDLE,
    PH_OFFLINE,
    SERVICE_LEVELS,
    STOP_DROPOFF,
    STOP_PICKUP,
    VEHICLES,
    Drivers,
    Orders,
)
from gigdispatch.service.errors import RequestError
from gigdispatch.service.schemas import DriverIn, OrderIn

# x/y (metres) this far outside the bounding box of the city's nodes are refused; nearer ones snap to a node
XY_MARGIN_M = 1000.0

Loc = tuple[int | None, float | None, float | None]  # (node, x, y) of a position as given
Where = tuple[str | int, ...]  # a field path, e.g. ("drivers", 3, "route", 0)


@dataclass
class Loaded:
    """The ids of a loaded request, by simulator index."""

    driver_ids: list[str]
    order_ids: list[str]  # in simulator order (sorted by placement)
    n_orders: int


def write_into_simulator(
    sim: Simulator, drivers: Drivers, orders: Orders, now: float, committed: np.ndarray, pickups: np.ndarray
) -> None:
    """Make ``drivers`` and ``orders`` (all placed, the last one the phantom) the simulator's state at ``now``.

    ``committed`` is each driver's committed volume (litres), ``pickups`` the pickup nodes of the open
    orders (the zone demand). No earnings and no external answers yet; surge 1; zone supply from the
    idle drivers. Built with ``EpisodeState.at`` and set with ``Simulator.load_state`` (the ledger and
    the random streams stay those of the served simulator).
    """
    state = EpisodeState.at(now, sim.traffic, drivers.n, sim.city.n_zones, placed=orders.n)
    state.committed[:] = committed
    sim.load_state(orders, drivers, state, ledger=sim.ledger, rng=sim.rng)
    state.zone_demand = sim.zone_count(sim.city.zone_of[pickups])
    state.zone_supply = sim.zone_supply_of(sim.eligible(idle_only=True))


class ServeState:
    """The scenario, one reset simulator and one policy, and the request -> simulator adapter (``load``)."""

    def __init__(self, scenario: str, policy: str, seed: int = 0) -> None:
        self.scenario = load_scenario(scenario)
        self.sim = sim = Simulator(self.scenario)
        sim.reset(seed)
        tr = copy.copy(sim.traffic)  # the time-of-day profile without the episode's random incidents
        tr.incidents = Incidents(np.zeros(0), np.zeros(0), np.zeros(0, np.int32), np.zeros(0))
        sim.traffic = tr
        self.policy = make_policy(policy)
        self.policy.reset(sim, sim.rng["policy"])
        self.policy_name = getattr(self.policy, "name", policy)
        self.tree = cKDTree(sim.city.node_xy)
        self.n_nodes = int(sim.city.n_nodes)
        xy = np.asarray(sim.city.node_xy, np.float64)
        # (2, 2): rows low / high, columns x / y: the box of accepted positions
        self.xy_box = np.stack([xy.min(axis=0) - XY_MARGIN_M, xy.max(axis=0) + XY_MARGIN_M])
        vehicles = getattr(getattr(sim.cfg, "fleet", None), "vehicles", {}) or {}
        self.v_speed = np.array([float(vehicles[v].speed) if v in vehicles else 1.0 for v in VEHICLES])
        self.v_cap = np.array([float(vehicles[v].capacity_litres) if v in vehicles else np.inf for v in VEHICLES])
        self._dtpl = {f.name: getattr(sim.drivers, f.name) for f in fields(Drivers)}
        self._otpl = {f.name: getattr(sim.orders, f.name) for f in fields(Orders)}
        self._rep: Any = None
        self._rep_rule = ""

    def repositioner(self) -> tuple[Any, str]:
        """What answers ``/v1/reposition`` and its description: the served policy's own rule (``moves``) if
        it has one (``reposition``, a learned repositioning folder), else ``DemandRepositionPolicy``."""
        if self._rep is None:
            own = hasattr(self.policy, "moves")
            self._rep = self.policy if own else DemandRepositionPolicy()
            self._rep_rule = (
                f"{self.policy_name} (the served policy's repositioning rule)"
                if own
                else "reposition (DemandRepositionPolicy.moves: open + recent orders by zone vs idle drivers)"
            )
        return self._rep, self._rep_rule

    # --------------------------------------------------------------------------- positions
    def _nodes(self, locs: list[Loc], where: list[Where]) -> np.ndarray:
        """Node ids of (node, x, y) triples; x/y snapped to the nearest node. Unknown node -> RequestError."""
        out = np.zeros(len(locs), np.int64)
        xy_rows, xy = [], []
        for i, (node, x, y) in enumerate(locs):
            if node is None:
                xy_rows.append(i)
                xy.append((x, y))
            elif node >= self.n_nodes:
                msg = f"unknown node id {node}: the city has nodes 0..{self.n_nodes - 1}"
                raise RequestError((*where[i], "node"), msg)
            else:
                out[i] = node
        if xy_rows:
            pts = np.asarray(xy, np.float64)
            self._check_near_city(pts, [where[i] for i in xy_rows])
            _, idx = self.tree.query(pts)
            out[np.asarray(xy_rows)] = idx
        return out

    def _check_near_city(self, pts: np.ndarray, where: list[Where]) -> None:
        """x/y positions (K, 2) lie within ``xy_box`` (the city's nodes plus ``XY_MARGIN_M``), else RequestError."""
        lo, hi = self.xy_box
        out = (pts < lo) | (pts > hi)  # (K, 2)
        bad = np.flatnonzero(out.any(axis=1))
        if bad.size:
            k = int(bad[0])
            axis = int(np.argmax(out[k]))
            (x0, y0), (x1, y1) = lo + XY_MARGIN_M, hi - XY_MARGIN_M
            msg = (
                f"{pts[k, axis]:g} m is outside the served city (its nodes span x {x0:.0f}..{x1:.0f} m, "
                f"y {y0:.0f}..{y1:.0f} m; positions up to {XY_MARGIN_M:.0f} m beyond are snapped to the nearest node)"
            )
            raise RequestError((*where[k], "xy"[axis]), msg)

    def _check_declines(self, now: float, orders: list[OrderIn], where: list[Where]) -> None:
        """No order has more declines than offers it can have had: one per decision step since placed, plus one."""
        dt = self.sim.dt
        for i, o in enumerate(orders):
            top = int((now - o.placed) // dt) + 1
            if o.declines > top:
                msg = (
                    f"{o.declines} declines {now - o.placed:g} s after placed: an order is offered at most once per "
                    f"decision step ({dt:g} s in this scenario), so at most {top}"
                )
                raise RequestError((*where[i], "declines"), msg)

    def _arrays(self, tpl: dict[str, np.ndarray], n: int, fill: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, a in tpl.items():
            out[name] = np.full((n, *a.shape[1:]), fill.get(name, 0), dtype=a.dtype)
        return out

    def _stops(
        self, drivers: list[DriverIn], d_nodes: np.ndarray, d_where: list[Where]
    ) -> tuple[list[Loc], list[Where], list[list[int]]]:
        """The busy drivers' stops: positions, field paths and (kind, driver, position in route) columns."""
        S = self.sim.S
        stops: list[Loc] = []
        where: list[Where] = []
        kind: list[int] = []
        driver: list[int] = []
        pos: list[int] = []
        for i, d in enumerate(drivers):
            if d.status != "busy":
                if d.route or d.pending_stops:
                    field = "route" if d.route else "pending_stops"
                    msg = f"only a busy driver has stops to make (status is {d.status!r})"
                    raise RequestError((*d_where[i], field), msg)
                continue
            if d.route:
                if len(d.route) > S:
                    msg = f"{len(d.route)} stops: the scenario allows at most {S}"
                    raise RequestError((*d_where[i], "route"), msg)
                for j, s in enumerate(d.route):
                    stops.append((s.node, s.x, s.y))
                    where.append((*d_where[i], "route", j))
                    kind.append(STOP_PICKUP if s.kind == "pickup" else STOP_DROPOFF)
                    driver.append(i)
                    pos.append(j)
            else:
                k = 1 if d.pending_stops is None else d.pending_stops
                if k > S:
                    raise RequestError((*d_where[i], "pending_stops"), f"{k} stops: the scenario allows at most {S}")
                for j in range(k):
                    stops.append((int(d_nodes[i]), None, None))
                    where.append(d_where[i])
                    kind.append(STOP_DROPOFF)
                    driver.append(i)
                    pos.append(j)
        return stops, where, [kind, driver, pos]

    # --------------------------------------------------------------------------- the adapter
    def load(
        self,
        now: float,
        drivers: list[DriverIn],
        orders: list[OrderIn],
        driver_paths: list[Where] | None = None,
        order_paths: list[Where] | None = None,
    ) -> Loaded:
        """Overwrite the simulator's state with the request's fleet and open orders at time ``now``.

        ``driver_paths`` / ``order_paths``: each item's field path in the request, for the errors (default
        ``("drivers", i)`` / ``("orders", j)``)."""
        sim, city = self.sim, self.sim.city
        n_d = len(drivers)
        n_o = len(orders)
        driver_where: list[Where] = driver_paths if driver_paths is not None else [("drivers", i) for i in range(n_d)]
        order_where: list[Where] = order_paths if order_paths is not None else [("orders", i) for i in range(n_o)]
        # ---- the request against the scenario (all validated before anything is written)
        self._check_declines(now, orders, order_where)
        d_nodes = self._nodes([(d.node, d.x, d.y) for d in drivers], driver_where)
        stops, stop_where, (stop_kind, stop_driver, stop_pos) = self._stops(drivers, d_nodes, driver_where)
        pick = self._nodes(
            [(o.pickup.node, o.pickup.x, o.pickup.y) for o in orders], [(*w, "pickup") for w in order_where]
        )
        drop = self._nodes(
            [(o.dropoff.node, o.dropoff.x, o.dropoff.y) for o in orders], [(*w, "dropoff") for w in order_where]
        )
        s_nodes = self._nodes(stops, stop_where) if stops else np.zeros(0, np.int64)

        # ---- drivers
        vidx = np.array([VEHICLES.index(d.vehicle) for d in drivers], np.int64)
        phases = {"offline": PH_OFFLINE, "idle": PH_IDLE, "busy": PH_DRIVING}
        status = np.array([phases[d.status] for d in drivers], np.int8)
        cap = np.array([np.nan if d.capacity is None else d.capacity for d in drivers], np.float64)
        cap = np.where(np.isnan(cap), self.v_cap[vidx], cap)
        shift_end = np.array([np.inf if d.shift_end is None else d.shift_end for d in drivers], np.float64)
        owned = np.array([d.owned for d in drivers], bool)
        load = np.array([d.load for d in drivers], np.float64)
        zone = city.zone_of[d_nodes]
        da = self._arrays(
            self._dtpl,
            n_d,
            {"t_verified": -np.inf, "docs_ok": True, "account": ACC_ACTIVE}
            | {"t_event": np.inf, "t_depart": np.inf, "t_arrive": np.inf}
            | {"route_node": -1, "route_order": -1, "route_kind": -1, "offer_order": -1, "t_suspended_until": -np.inf}
            | {"service_factor": 1.0, "shift_start": now, "t_online_since": now},
        )
        da["vehicle"][:] = vidx
        da["speed"][:] = self.v_speed[vidx]
        da["capacity"][:] = cap
        da["owned"][:] = owned
        da["always_accept"][:] = owned
        da["shift_end"][:] = shift_end
        for name in ("home", "node", "leg_to"):
            da[name][:] = d_nodes
        da["pref_zone"][:] = zone
        da["phase"][:] = status
        da["load"][:] = load
        phantom = n_o  # one extra order, already assigned, that every route stop belongs to
        if stops:
            sd, sp = np.asarray(stop_driver), np.asarray(stop_pos)
            da["route_node"][sd, sp] = s_nodes
            da["route_kind"][sd, sp] = stop_kind
            da["route_order"][sd, sp] = phantom
            da["route_len"][:] = np.bincount(sd, minlength=n_d)
            first = sd[sp == 0]
            da["leg_to"][first] = s_nodes[sp == 0]
        ff = city.travel_s(da["node"].astype(np.int64), da["leg_to"].astype(np.int64)) / da["speed"]
        da["leg_ff"][:] = ff
        da["leg_left"][:] = ff
        da["leg_dist"][:] = city.dist_m(da["node"].astype(np.int64), da["leg_to"].astype(np.int64))

        # ---- orders, sorted by placement (stable); one phantom order at the end
        placed = np.array([o.placed for o in orders], np.float64)
        order = np.argsort(placed, kind="stable")
        ready = np.array([o.placed if o.ready is None else o.ready for o in orders], np.float64)
        oa = self._arrays(
            self._otpl,
            n_o + 1,
            {"t_patience": np.inf, "driver": -1, "last_decliner": -1, "t_offer_answer": np.inf, "bundle_id": -1}
            | {"surge": 1.0, "status": ORDER_OPEN}
            | {
                "t_assigned": np.nan,
                "t_at_pickup": np.nan,
                "t_pickup": np.nan,
                "t_delivered": np.nan,
                "t_cancelled": np.nan,
            },
        )
        oa["t_place"][:n_o] = placed[order]
        oa["t_ready"][:n_o] = ready[order]
        oa["deadline"][:n_o] = np.array([o.deadline for o in orders], np.float64)[order]
        oa["pickup"][:n_o] = pick[order]
        oa["dropoff"][:n_o] = drop[order]
        oa["group"][:n_o] = pick[order]
        oa["volume"][:n_o] = np.array([o.volume for o in orders], np.float64)[order]
        oa["tip"][:n_o] = np.array([o.tip for o in orders], np.int64)[order]
        oa["level"][:n_o] = np.array([SERVICE_LEVELS.index(o.service_level) for o in orders], np.int64)[order]
        declines = np.array([o.declines for o in orders], np.int64)[order]
        oa["declines"][:n_o] = np.minimum(declines, np.iinfo(np.int16).max)
        oa["t_place"][phantom] = np.inf
        oa["t_ready"][phantom] = -np.inf
        oa["deadline"][phantom] = np.inf
        oa["status"][phantom] = ORDER_ASSIGNED
        fee_given = np.array([-1 if o.fee is None else o.fee for o in orders], np.int64)[order]

        # ---- into the simulator (nothing above touched it); fees quoted on the loaded state
        write_into_simulator(sim, Drivers(**da), Orders(**oa), now, load, pick)
        if n_o:
            quoted = sim.quote_cents(np.arange(n_o))
            sim.orders.fee[:n_o] = np.where(fee_given >= 0, fee_given, quoted)
        return Loaded([d.id for d in drivers], [orders[i].id for i in order.tolist()], n_o)
