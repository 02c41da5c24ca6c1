"""An HTTP inference service for dispatch policies (FastAPI on uvicorn): ``gigdispatch serve``.

The service answers with the SAME policy code the simulator and ``gigdispatch evaluate`` run: at
start-up (the FastAPI ``lifespan``, never at import) it loads the scenario (its city: road network,
zones, travel times, vehicle types, pricing), makes a ``Simulator`` and resets it once (seed 0), makes
the policy once and calls ``policy.reset(sim, sim.rng["policy"])``. Each request then overwrites the
simulator's ``drivers``/``orders`` arrays with the request's fleet and orders (``ServeState.load``)
and calls ``policy.act(sim)``; the ``Decision`` is translated back to the caller's ids.

How a request becomes simulator state (see ``docs/serving.md`` for the field reference):

* positions are node ids of the scenario's city, or x/y metres snapped to the nearest node (a
  KD-tree built once); the clock is ``now`` (seconds since midnight); traffic is the scenario's
  time-of-day profile at ``now`` without random incidents; surge is 1 everywhere;
* drivers are active accounts; ``idle`` drivers stand at their node with an empty route, ``busy`` ones
  have the stops of ``route`` (or ``pending_stops`` stops at their own node when the route is unknown;
  one when neither is given) and drive towards the first; ``offline`` ones are never offered work;
  ``load`` counts as committed volume; acceptance bias 0, service-time factor 1; ``owned`` drivers
  (owned fleet) always accept and get payout 0;
* orders are open (waiting for a driver), sorted by placement time (ties in request order); the fee is
  the request's ``fee`` or the scenario's quote; ``declines`` sets the escalation level the built-in
  heuristics re-offer at.

Every endpoint is a plain ``async def`` that computes inline: requests are served one at a time on the
event loop, so the shared simulator needs no lock (the work is CPU-bound; threads would not help).
Nothing produces a 5xx: bad input is rejected by the pydantic models (422, naming the field), by
``ServeState.load`` (unknown node ids, route too long: 422 naming the field), by the body-size guard
(413) or by JSON decoding (422); an exception inside the policy is caught and answered 422 ("the
policy could not dispatch this request") and counted in ``gigdispatch_policy_errors_total``; any
other unexpected exception is answered 422 by the outermost middleware and counted too.
"""

from __future__ import annotations

import copy
import gc
import hmac
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from envs.core.sim import Decision, Simulator
from envs.core.types import (
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

MAX_DRIVERS = 20_000
MAX_ORDERS = 20_000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

# ------------------------------------------------------------------------------------------ models
_ID = Annotated[str, Field(min_length=1, max_length=128, description="caller's id (unique within the request)")]
_Time = Annotated[float, Field(ge=-86_400.0 * 7, le=86_400.0 * 7, description="seconds since midnight of the day")]
_Coord = Annotated[float, Field(ge=-1e9, le=1e9, description="metres in the scenario's city frame")]


def _integral(v: object) -> object:
    """JSON numbers like ``12.0`` are integers for JSON Schema; strict validation would reject them."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# on the integer fields of requests (a per-field call, only where an integer is given)
_INTEGRAL = BeforeValidator(_integral)
_Node = Annotated[int, Field(ge=0, description="node id of the scenario's road network"), _INTEGRAL]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# "node, or x and y, not both" in JSON Schema, so that the OpenAPI document states what validation enforces
_NODE_GIVEN = {"required": ["node"], "properties": {"node": {"type": "integer"}}}
_X_GIVEN = {"required": ["x"], "properties": {"x": {"type": "number"}}}
_Y_GIVEN = {"required": ["y"], "properties": {"y": {"type": "number"}}}
_POSITION_SCHEMA = {
    "oneOf": [
        {"allOf": [_NODE_GIVEN], "not": {"anyOf": [_X_GIVEN, _Y_GIVEN]}},
        {"allOf": [_X_GIVEN, _Y_GIVEN], "not": _NODE_GIVEN},
    ]
}


def _check_position(node: int | None, x: float | None, y: float | None) -> None:
    """A position is a node id, or x and y together; exactly one of the two forms."""
    if node is None:
        if x is None or y is None:
            raise ValueError("give node, or x and y" if x is None and y is None else "x and y must be given together")
    elif x is not None or y is not None:
        raise ValueError("give node or x/y, not both")


class Location(_Model):
    """A place: a node id, or x/y metres (snapped to the nearest node). Exactly one of the two forms."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, json_schema_extra=_POSITION_SCHEMA)

    node: _Node | None = None
    x: _Coord | None = None
    y: _Coord | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Location:
        _check_position(self.node, self.x, self.y)
        return self


class Stop(Location):
    """One stop of a busy driver's route."""

    kind: Literal["pickup", "dropoff"] = "dropoff"


# only a busy driver has stops: otherwise route is null or empty and pending_stops null or 0
_STOPS_ONLY_WHEN_BUSY = {
    "anyOf": [
        {"required": ["status"], "properties": {"status": {"const": "busy"}}},
        {
            "properties": {
                "status": {"enum": ["idle", "offline"]},
                "route": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]},
                "pending_stops": {"anyOf": [{"type": "null"}, {"const": 0}]},
            }
        },
    ]
}


class DriverIn(_Model):
    """A driver as the caller sees it. Position: ``node``, or ``x`` and ``y``."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, strict=True, json_schema_extra={**_POSITION_SCHEMA, "allOf": [_STOPS_ONLY_WHEN_BUSY]}
    )

    id: _ID
    node: _Node | None = None
    x: _Coord | None = None
    y: _Coord | None = None
    status: Literal["idle", "busy", "offline"] = "idle"
    vehicle: Literal["bike", "car", "van"] = "car"
    capacity: Annotated[float, Field(gt=0, le=1e6)] | None = Field(None, description="litres (default: the vehicle type's)")
    load: Annotated[float, Field(ge=0, le=1e6)] = Field(0.0, description="litres on board or committed to the route")
    shift_end: _Time | None = Field(None, description="no pickups after this time (default: no limit)")
    owned: bool = Field(False, description="owned fleet: always accepts, paid by the hour (payout 0)")
    route: Annotated[list[Stop], Field(max_length=64)] | None = Field(None, description="remaining stops of a busy driver, next first")
    pending_stops: Annotated[int, Field(ge=0, le=64), _INTEGRAL] | None = Field(
        None, description="remaining stops when the route is unknown"
    )

    @model_validator(mode="after")
    def _position(self) -> DriverIn:
        _check_position(self.node, self.x, self.y)
        return self


class OrderIn(_Model):
    """A pending order (waiting for a driver)."""

    id: _ID
    pickup: Location
    dropoff: Location
    placed: _Time
    ready: _Time | None = Field(None, description="earliest pickup (default: placed)")
    deadline: _Time
    volume: Annotated[float, Field(ge=0, le=1e6)] = Field(1.0, description="litres")
    service_level: Literal["express", "standard", "same_day"] = "standard"
    fee: Annotated[int, Field(ge=0, le=10**9), _INTEGRAL] | None = Field(None, description="cents charged (default: the scenario's quote)")
    tip: Annotated[int, Field(ge=0, le=10**9), _INTEGRAL] = Field(0, description="cents, passed to the driver")
    declines: Annotated[int, Field(ge=0, le=1000), _INTEGRAL] = Field(0, description="offers declined so far (escalation)")


def _no_duplicates(items: list[Any], what: str) -> None:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        j = seen.setdefault(it.id, i)
        if j != i:
            raise ValueError(f"{what}[{i}].id: duplicate {what[:-1]} id {it.id!r} (also {what}[{j}])")


class DispatchRequest(_Model):
    now: _Time
    drivers: Annotated[list[DriverIn], Field(max_length=MAX_DRIVERS)]
    orders: Annotated[list[OrderIn], Field(max_length=MAX_ORDERS)]

    @model_validator(mode="after")
    def _unique(self) -> DispatchRequest:
        _no_duplicates(self.drivers, "drivers")
        _no_duplicates(self.orders, "orders")
        return self


class Assignment(BaseModel):
    order_id: str
    driver_id: str
    pickup_eta_s: float = Field(description="seconds from now until the driver can be at the pickup")
    payout: int = Field(description="cents offered to the driver (tip excluded)")
    level: int = Field(description="escalation level of the offer (0 = base payout)")


class DispatchResponse(BaseModel):
    policy: str
    now: float
    assignments: list[Assignment]
    held: list[str] = Field(description="order ids left unassigned this time")


class RepositionRequest(DispatchRequest):
    pass


class Move(BaseModel):
    driver_id: str
    zone: int
    x: float = Field(description="zone target: x metres of a node in the zone")
    y: float
    node: int


class RepositionResponse(BaseModel):
    rule: str
    moves: list[Move]


class QuoteRequest(_Model):
    now: _Time
    order: OrderIn
    driver: DriverIn | None = Field(None, description="quote the payout for this driver (default: a gig car driver at the pickup)")
    level: Annotated[
        int,
        Field(ge=0, le=15, description="escalation level; above the scenario's top level the top level applies (as the payout cap does)"),
        _INTEGRAL,
    ] = 0
    surge: Annotated[float, Field(ge=1.0, le=100.0)] = 1.0


class QuoteResponse(BaseModel):
    fee: int = Field(description="cents quoted to the customer (tip excluded)")
    payout: int = Field(description="cents offered to the driver at the level (tip excluded)")
    tip: int
    margin: int = Field(description="fee - payout, cents")
    level: int


class RequestError(ValueError):
    """A request that validated but does not fit the scenario; ``loc`` is the field path."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


# ------------------------------------------------------------------------------------------ state
@dataclass
class Loaded:
    driver_ids: list[str]
    order_ids: list[str]  # in simulator order (sorted by placement)
    n_orders: int


class ServeState:
    """The scenario, one reset simulator and one policy, and the request -> simulator adapter."""

    def __init__(self, scenario: str, policy: str, seed: int = 0) -> None:
        from scipy.spatial import cKDTree

        from agents import make_policy
        from envs import load_scenario
        from envs.core.city import Incidents

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
        vehicles = getattr(getattr(sim.cfg, "fleet", None), "vehicles", {}) or {}
        self.v_speed = np.array([float(vehicles[v].speed) if v in vehicles else 1.0 for v in VEHICLES])
        self.v_cap = np.array([float(vehicles[v].capacity_litres) if v in vehicles else np.inf for v in VEHICLES])
        self._dtpl = {f.name: getattr(sim.drivers, f.name) for f in fields(Drivers)}
        self._otpl = {f.name: getattr(sim.orders, f.name) for f in fields(Orders)}
        self.rep = None

    # --------------------------------------------------------------------------- positions
    def _nodes(self, locs: list[tuple[int | None, float | None, float | None]], where: list[tuple[str | int, ...]]) -> np.ndarray:
        """Node ids of (node, x, y) triples; x/y snapped to the nearest node. Unknown node -> RequestError."""
        out = np.zeros(len(locs), np.int64)
        xy_rows, xy = [], []
        for i, (node, x, y) in enumerate(locs):
            if node is None:
                xy_rows.append(i)
                xy.append((x, y))
            elif node >= self.n_nodes:
                raise RequestError((*where[i], "node"), f"unknown node id {node}: the city has nodes 0..{self.n_nodes - 1}")
            else:
                out[i] = node
        if xy_rows:
            _, idx = self.tree.query(np.asarray(xy, np.float64))
            out[np.asarray(xy_rows)] = idx
        return out

    def _arrays(self, tpl: dict[str, np.ndarray], n: int, fill: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for name, a in tpl.items():
            out[name] = np.full((n, *a.shape[1:]), fill.get(name, 0), dtype=a.dtype)
        return out

    # --------------------------------------------------------------------------- the adapter
    def load(self, now: float, drivers: list[DriverIn], orders: list[OrderIn]) -> Loaded:
        """Overwrite the simulator's state with the request's fleet and open orders at time ``now``."""
        sim, city = self.sim, self.sim.city
        S = sim.S
        n_d = len(drivers)
        # ---- drivers
        d_nodes = self._nodes([(d.node, d.x, d.y) for d in drivers], [("drivers", i) for i in range(n_d)])
        stops: list[tuple[int | None, float | None, float | None]] = []
        stop_where: list[tuple[str | int, ...]] = []
        stop_kind: list[int] = []
        stop_driver: list[int] = []
        stop_pos: list[int] = []
        for i, d in enumerate(drivers):
            if d.status != "busy":
                if d.route or d.pending_stops:
                    field = "route" if d.route else "pending_stops"
                    raise RequestError(("drivers", i, field), f"only a busy driver has stops to make (status is {d.status!r})")
                continue
            if d.route:
                if len(d.route) > S:
                    raise RequestError(("drivers", i, "route"), f"{len(d.route)} stops: the scenario allows at most {S}")
                for j, s in enumerate(d.route):
                    stops.append((s.node, s.x, s.y))
                    stop_where.append(("drivers", i, "route", j))
                    stop_kind.append(STOP_PICKUP if s.kind == "pickup" else STOP_DROPOFF)
                    stop_driver.append(i)
                    stop_pos.append(j)
            else:
                k = 1 if d.pending_stops is None else d.pending_stops
                if k > S:
                    raise RequestError(("drivers", i, "pending_stops"), f"{k} stops: the scenario allows at most {S}")
                for j in range(k):
                    stops.append((int(d_nodes[i]), None, None))
                    stop_where.append(("drivers", i))
                    stop_kind.append(STOP_DROPOFF)
                    stop_driver.append(i)
                    stop_pos.append(j)
        # ---- orders (positions validated before anything is written)
        n_o = len(orders)
        order_where = [("orders", i) for i in range(n_o)]
        pick = self._nodes([(o.pickup.node, o.pickup.x, o.pickup.y) for o in orders], [(*w, "pickup") for w in order_where])
        drop = self._nodes([(o.dropoff.node, o.dropoff.x, o.dropoff.y) for o in orders], [(*w, "dropoff") for w in order_where])
        s_nodes = self._nodes(stops, stop_where) if stops else np.zeros(0, np.int64)

        vidx = np.array([VEHICLES.index(d.vehicle) for d in drivers], np.int64)
        status = np.array([{"offline": PH_OFFLINE, "idle": PH_IDLE, "busy": PH_DRIVING}[d.status] for d in drivers], np.int8)
        cap = np.array([np.nan if d.capacity is None else d.capacity for d in drivers], np.float64)
        cap = np.where(np.isnan(cap), self.v_cap[vidx], cap)
        shift_end = np.array([np.inf if d.shift_end is None else d.shift_end for d in drivers], np.float64)
        owned = np.array([d.owned for d in drivers], bool)
        load = np.array([d.load for d in drivers], np.float64)
        zone = city.zone_of[d_nodes]
        da = self._arrays(
            self._dtpl,
            n_d,
            {"t_verified": -np.inf, "docs_ok": True, "account": ACC_ACTIVE, "t_event": np.inf, "t_depart": np.inf, "t_arrive": np.inf}
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
            {"t_patience": np.inf, "driver": -1, "last_decliner": -1, "t_offer_answer": np.inf, "bundle_id": -1, "surge": 1.0}
            | {"t_assigned": np.nan, "t_pickup": np.nan, "t_delivered": np.nan, "t_cancelled": np.nan, "status": ORDER_OPEN},
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
        oa["declines"][:n_o] = np.minimum(np.array([o.declines for o in orders], np.int64)[order], np.iinfo(np.int16).max)
        oa["t_place"][phantom] = np.inf
        oa["t_ready"][phantom] = -np.inf
        oa["deadline"][phantom] = np.inf
        oa["status"][phantom] = ORDER_ASSIGNED
        fee_given = np.array([-1 if o.fee is None else o.fee for o in orders], np.int64)[order]

        # ---- write into the simulator (nothing above touched it)
        sim.drivers = Drivers(**da)
        sim.orders = Orders(**oa)
        sim.committed = load.copy()
        sim.shift_earn = np.zeros(n_d, np.int64)
        sim.external_accept = np.zeros(n_d, bool)
        sim.t = float(now)
        sim.factor = sim.traffic.factor(sim.t)
        sim.surge = np.ones(city.n_zones)
        sim._lo, sim._next = 0, n_o + 1
        sim.done = False
        Z = city.n_zones
        sim.zone_demand = np.bincount(city.zone_of[pick], minlength=Z).astype(np.float64)
        idle = sim.eligible(idle_only=True)
        sim.zone_supply = np.bincount(city.zone_of[sim.drivers.node[idle]], minlength=Z).astype(np.float64)
        if n_o:
            quoted = sim.quote_cents(np.arange(n_o))
            sim.orders.fee[:n_o] = np.where(fee_given >= 0, fee_given, quoted)
        return Loaded([d.id for d in drivers], [orders[i].id for i in order.tolist()], n_o)

    # --------------------------------------------------------------------------- endpoints' work
    def decide(self) -> Decision:
        """``policy.act`` on the loaded state; an exception becomes a PolicyError."""
        try:
            dec = self.policy.act(self.sim)
        except Exception as exc:  # any policy failure must become a clean 4xx
            raise PolicyError(f"the policy could not dispatch this request: {type(exc).__name__}: {exc}") from exc
        return dec

    def dispatch(self, req: DispatchRequest) -> DispatchResponse:
        ld = self.load(req.now, req.drivers, req.orders)
        dec = self.decide()
        try:
            o = np.asarray(dec.order, np.int64).ravel()
            d = np.asarray(dec.driver, np.int64).ravel()
            lvl = np.zeros(len(o), np.int64) if dec.level is None else np.asarray(dec.level, np.int64).ravel()
            ok = (o >= 0) & (o < ld.n_orders) & (d >= 0) & (d < len(ld.driver_ids)) & (len(o) == len(d) == len(lvl))
            o, d, lvl = o[ok], d[ok], lvl[ok]
            eta = self.sim._pair_eta(o, np.arange(len(d)), d, *self.sim.driver_free(d)) if len(o) else np.zeros(0)
            pay = self.sim.payout_cents(o, d, lvl) if len(o) else np.zeros(0, np.int64)
        except Exception as exc:
            raise PolicyError(f"the policy's decision could not be translated: {type(exc).__name__}: {exc}") from exc
        assigned = set(o.tolist())
        out = [
            Assignment(
                order_id=ld.order_ids[oi],
                driver_id=ld.driver_ids[di],
                pickup_eta_s=float(e) if math.isfinite(e) else -1.0,
                payout=int(p),
                level=int(lv),
            )
            for oi, di, e, p, lv in zip(o.tolist(), d.tolist(), eta.tolist(), pay.tolist(), lvl.tolist(), strict=True)
        ]
        held = [ld.order_ids[i] for i in range(ld.n_orders) if i not in assigned]
        return DispatchResponse(policy=self.policy_name, now=req.now, assignments=out, held=held)

    def reposition(self, req: RepositionRequest) -> RepositionResponse:
        """The served policy's own repositioning rule (``moves``) if it has one (``reposition``, a learned
        repositioning folder), else ``DemandRepositionPolicy.moves`` (demand-following), on the request's state."""
        from agents.heuristics import DemandRepositionPolicy

        if self.rep is None:
            own = hasattr(self.policy, "moves")
            self.rep = self.policy if own else DemandRepositionPolicy()
            self.rep_rule = (
                f"{self.policy_name} (the served policy's repositioning rule)"
                if own
                else "reposition (DemandRepositionPolicy.moves: open + recent orders by zone vs idle drivers)"
            )
        ld = self.load(req.now, req.drivers, req.orders)
        empty = np.zeros(0, np.int64)
        try:
            if hasattr(self.rep, "forget_idle_history"):  # a request carries no idle history
                self.rep.forget_idle_history(self.sim)
            drv, zone = self.rep.moves(self.sim, empty, empty)
            drv, zone = np.asarray(drv, np.int64), np.asarray(zone, np.int64)
        except Exception as exc:
            raise PolicyError(f"repositioning failed: {type(exc).__name__}: {exc}") from exc
        city = self.sim.city
        moves = []
        for di, z in zip(drv.tolist(), zone.tolist(), strict=True):
            node = self._zone_node(z)
            moves.append(
                Move(driver_id=ld.driver_ids[di], zone=z, node=node, x=float(city.node_xy[node, 0]), y=float(city.node_xy[node, 1]))
            )
        return RepositionResponse(rule=self.rep_rule, moves=moves)

    def _zone_node(self, z: int) -> int:
        """A representative node of zone ``z``: the one nearest the zone's centroid."""
        city = self.sim.city
        members = np.flatnonzero(city.zone_of == z)
        c = city.node_xy[members].mean(axis=0)
        return int(members[np.argmin(((city.node_xy[members] - c) ** 2).sum(1))])

    def quote(self, req: QuoteRequest) -> QuoteResponse:
        level = min(req.level, self.sim.n_levels - 1)  # the scenario's top level, as the escalation cap applies
        p = req.order.pickup
        drv = req.driver if req.driver is not None else DriverIn(id="quote", node=p.node, x=p.x, y=p.y)
        self.load(req.now, [drv], [req.order])
        sim = self.sim
        sim.surge = np.full(sim.city.n_zones, float(req.surge))
        sim.orders.surge[0] = req.surge
        fee = int(sim.quote_cents(np.array([0]))[0]) if req.order.fee is None else int(req.order.fee)
        payout = int(sim.payout_cents(np.array([0]), np.array([0]), level)[0])
        return QuoteResponse(fee=fee, payout=payout, tip=req.order.tip, margin=fee - payout, level=level)


class PolicyError(RuntimeError):
    """The policy (or translating its decision) failed on a request that validated."""


# ------------------------------------------------------------------------------------------ metrics
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KNOWN_PATHS = ("/v1/dispatch", "/v1/reposition", "/v1/quote", "/healthz", "/metrics", "/docs", "/openapi.json")


class Metrics:
    """Counters and a latency histogram, rendered in the Prometheus text exposition format (0.0.4)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.errors = 0
        self.policy_errors = 0
        self.buckets = {p: [0] * (len(LATENCY_BUCKETS) + 1) for p in (*KNOWN_PATHS, "other")}
        self.sums = dict.fromkeys(self.buckets, 0.0)

    def observe(self, path: str, status: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else "other"
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        if status >= 400:
            self.errors += 1
        b = self.buckets[path]
        for i, le in enumerate(LATENCY_BUCKETS):
            if seconds <= le:
                b[i] += 1
                break
        else:
            b[-1] += 1
        self.sums[path] += seconds

    def render(self) -> str:
        lines = [
            "# HELP gigdispatch_requests_total HTTP requests by endpoint and status code.",
            "# TYPE gigdispatch_requests_total counter",
        ]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'gigdispatch_requests_total{{endpoint="{path}",status="{status}"}} {n}')
        lines += [
            "# HELP gigdispatch_errors_total HTTP requests answered with a status >= 400.",
            "# TYPE gigdispatch_errors_total counter",
            f"gigdispatch_errors_total {self.errors}",
            "# HELP gigdispatch_policy_errors_total Requests on which the policy (or an unexpected bug) failed (answered 422).",
            "# TYPE gigdispatch_policy_errors_total counter",
            f"gigdispatch_policy_errors_total {self.policy_errors}",
            "# HELP gigdispatch_request_seconds Request latency in the server (body read to response sent).",
            "# TYPE gigdispatch_request_seconds histogram",
        ]
        for path, b in self.buckets.items():
            total = sum(b)
            if not total:
                continue
            acc = 0
            for le, c in zip(LATENCY_BUCKETS, b, strict=False):
                acc += c
                lines.append(f'gigdispatch_request_seconds_bucket{{endpoint="{path}",le="{le}"}} {acc}')
            lines.append(f'gigdispatch_request_seconds_bucket{{endpoint="{path}",le="+Inf"}} {total}')
            lines.append(f'gigdispatch_request_seconds_sum{{endpoint="{path}"}} {self.sums[path]:.6f}')
            lines.append(f'gigdispatch_request_seconds_count{{endpoint="{path}"}} {total}')
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ ASGI guard
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


class GuardMiddleware:
    """Outermost ASGI layer: body-size limit (413), metrics, and a last-resort catch (never a 5xx).

    The request body is read here in full (up to ``max_body_bytes``; a ``Content-Length`` over the
    limit is refused before reading) and replayed to the app. Any exception escaping the app, and any
    5xx the app would send, is answered 422 with the error's message and counted as a policy error.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, int(max_body_bytes)

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        state = {"status": 0, "started": False}

        async def finish(status: int, body: dict[str, Any]) -> None:
            state["status"], state["started"] = status, True
            await _send_json(send, status, body)

        too_big = {
            "detail": [{"loc": ["body"], "msg": f"request body is larger than the limit of {self.max_body} bytes", "type": "too_large"}]
        }
        try:
            for k, v in scope.get("headers", []):
                if k == b"content-length":
                    try:
                        n = int(v)
                    except ValueError:
                        n = -1
                    if n > self.max_body:
                        await finish(413, too_big)
                        return
            chunks, size, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body = msg.get("body", b"")
                size += len(body)
                if size > self.max_body:
                    await finish(413, too_big)
                    return
                chunks.append(body)
                more = msg.get("more_body", False)
            whole = b"".join(chunks)
            replayed = False

            async def replay() -> dict:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": whole, "more_body": False}
                return await receive()

            async def guarded_send(msg: dict) -> None:
                if msg["type"] == "http.response.start":
                    if msg["status"] >= 500:  # never let a 5xx out
                        raise _Escaped(f"internal status {msg['status']}")
                    state["status"], state["started"] = msg["status"], True
                await send(msg)

            await self.app(scope, replay, guarded_send)
        except Exception as exc:  # the last resort: a clean 4xx, counted
            self.metrics.policy_errors += 1
            if not state["started"]:
                await finish(
                    422,
                    {
                        "detail": [
                            {
                                "loc": ["body"],
                                "msg": f"request could not be processed: {type(exc).__name__}: {exc}",
                                "type": "unprocessable",
                            }
                        ]
                    },
                )
        finally:
            if state["status"]:
                self.metrics.observe(path, int(state["status"]), time.perf_counter() - t0)


class _Escaped(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ the app
def _bound_for_city(doc: Any, top_node: int, max_stops: int) -> None:
    """Write the served scenario's limits into an OpenAPI document (in place): ``maximum`` of every integer
    ``node`` property and of ``pending_stops``, ``maxItems`` of ``route`` arrays."""
    if isinstance(doc, dict):
        props = doc.get("properties")
        if isinstance(props, dict):
            for name, key, value in (
                ("node", "maximum", top_node),
                ("pending_stops", "maximum", max_stops),
                ("route", "maxItems", max_stops),
            ):
                prop = props.get(name)
                if not isinstance(prop, dict):
                    continue
                for sch in [prop, *prop.get("anyOf", [])]:
                    if isinstance(sch, dict) and sch.get("type") in ("integer", "array"):
                        sch[key] = min(sch.get(key, value), value)  # only ever tighten a limit
        for v in doc.values():
            _bound_for_city(v, top_node, max_stops)
    elif isinstance(doc, list):
        for v in doc:
            _bound_for_city(v, top_node, max_stops)


def create_app(
    scenario: str,
    policy: str,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    seed: int = 0,
    state: ServeState | None = None,
):
    """The ASGI app. The scenario and policy are loaded in the lifespan (at server start-up), unless
    ``state`` (a ``ServeState`` the caller built at its own start-up, e.g. to report bad names as
    one-line CLI errors before the server starts) is given.

    Returns the outer guard (an ASGI app); the FastAPI app is its ``.app`` attribute.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.serve = state if state is not None else ServeState(scenario, policy, seed=seed)
        # Everything loaded so far (the road network's graph, the policy, the framework) lives as long as
        # the process: move it out of the collector's generations, so that a full collection triggered
        # by a request's temporary objects does not rescan ~100k long-lived objects (a ~45 ms pause,
        # which was the whole p99 tail at 1,000 x 200).
        gc.collect()
        gc.freeze()
        yield
        gc.unfreeze()

    app = FastAPI(
        title="gigdispatch inference service",
        version="1",
        description="Dispatch, repositioning and pricing answers from a gigdispatch policy (the same code as evaluation).",
        lifespan=lifespan,
    )
    base_openapi = app.openapi

    def openapi_for_city() -> dict[str, Any]:
        """The OpenAPI document, with the served city's node-id range and route length (known once the server has started)."""
        doc = base_openapi()
        serve = getattr(app.state, "serve", None)
        if serve is not None and not doc.get("x-node-ids-bounded"):
            _bound_for_city(doc, serve.n_nodes - 1, serve.sim.S)
            doc["x-node-ids-bounded"] = True
        return doc

    app.openapi = openapi_for_city  # type: ignore[method-assign]
    bearer = HTTPBearer(auto_error=False)

    async def auth(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008 - FastAPI's idiom
        if token is None:
            return
        if creds is None or creds.scheme.lower() != "bearer" or not hmac.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": [{"loc": ["body", *exc.loc], "msg": exc.msg, "type": "value_error"}]})

    @app.exception_handler(PolicyError)
    async def _policy_error(request: Request, exc: PolicyError) -> JSONResponse:
        metrics.policy_errors += 1
        return JSONResponse(status_code=422, content={"detail": [{"loc": ["body"], "msg": str(exc), "type": "policy_error"}]})

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = []
        for e in exc.errors()[:50]:
            loc = [x if isinstance(x, int | str) else str(x) for x in e.get("loc", ())]
            field = "body" if e.get("type") == "json_invalid" else (".".join(str(x) for x in loc[1:]) or "body")
            errs.append({"loc": loc, "msg": f"{field}: {e.get('msg', 'invalid')}", "type": e.get("type", "value_error")})
        return JSONResponse(status_code=422, content={"detail": errs})

    def st(request: Request) -> ServeState:
        return request.app.state.serve

    # the bearer requirement (and its OpenAPI security entry) exists only when a token is configured
    guarded = [Depends(auth)] if token is not None else []
    # every 4xx the guard layer and FastAPI can answer, so the OpenAPI document lists them
    errors: dict[int | str, dict[str, str]] = {
        400: {"description": "the body is not valid JSON"},
        413: {"description": "the body is larger than --max-body-bytes"},
    }
    if token is not None:
        errors[401] = {"description": "missing or wrong bearer token"}

    @app.post("/v1/dispatch", response_model=DispatchResponse, dependencies=guarded, responses=errors)
    async def dispatch(req: DispatchRequest, request: Request) -> DispatchResponse:
        """Assign pending orders to drivers with the served policy (``policy.act`` on the request's state)."""
        return st(request).dispatch(req)

    @app.post("/v1/reposition", response_model=RepositionResponse, dependencies=guarded, responses=errors)
    async def reposition(req: RepositionRequest, request: Request) -> RepositionResponse:
        """Move idle drivers towards zones short of drivers (the served policy's rule, else ``DemandRepositionPolicy``'s)."""
        return st(request).reposition(req)

    @app.post("/v1/quote", response_model=QuoteResponse, dependencies=guarded, responses=errors)
    async def quote(req: QuoteRequest, request: Request) -> QuoteResponse:
        """The customer fee (``Simulator.quote_cents``) and the driver payout (``Simulator.payout_cents``) of one order."""
        return st(request).quote(req)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        s = st(request)
        return {"status": "ok", "policy": s.policy_name, "scenario": s.scenario.name, "nodes": s.n_nodes, "zones": int(s.sim.city.n_zones)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_endpoint() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    guard = GuardMiddleware(app, metrics, max_body_bytes)
    guard.fastapi = app  # type: ignore[attr-defined]
    guard.metrics_obj = metrics  # type: ignore[attr-defined]
    return guard
