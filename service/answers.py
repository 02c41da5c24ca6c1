"""What each endpoint computes on a loaded ``ServeState``: dispatch, repositioning and quotes.

Each function loads the request into the served simulator (``ServeState.load``), asks the policy (or
the simulator's pricing) and translates the result back to the caller's ids. An exception of the
policy, or of translating its decision, becomes a ``PolicyError`` (a bug of ours: answered 500).
"""

from __future__ import annotations

import math

import numpy as np

from gigdispatch.envs.core import Decision
from gigdispatch.envs.core.city import City
from gigdispatch.service.errors import PolicyError
from gigdispatch.service.schemas import (
    Assignment,
    DispatchRequest,
    DispatchResponse,
    DriverIn,
    Move,
    QuoteRequest,
    QuoteResponse,
    RepositionRequest,
    RepositionResponse,
)
from gigdispatch.service.state import ServeState


def decide(state: ServeState) -> Decision:
    """``policy.act`` on the loaded state; an exception becomes a PolicyError."""
    try:
        if hasattr(state.policy, "forget_idle_history"):  # a request carries no idle history
            state.policy.forget_idle_history(state.sim)
        return state.policy.act(state.sim)
    except Exception as exc:
        raise PolicyError(f"the policy could not dispatch this request: {type(exc).__name__}: {exc}") from exc


def dispatch(state: ServeState, req: DispatchRequest) -> DispatchResponse:
    """Assign the request's open orders to its drivers with the served policy."""
    ld = state.load(req.now, req.drivers, req.orders)
    dec = decide(state)
    sim = state.sim
    try:
        o = np.asarray(dec.order, np.int64).ravel()
        d = np.asarray(dec.driver, np.int64).ravel()
        lvl = np.zeros(len(o), np.int64) if dec.level is None else np.asarray(dec.level, np.int64).ravel()
        ok = (o >= 0) & (o < ld.n_orders) & (d >= 0) & (d < len(ld.driver_ids)) & (len(o) == len(d) == len(lvl))
        o, d, lvl = o[ok], d[ok], lvl[ok]
        eta = sim.pair_eta(o, np.arange(len(d)), d, *sim.driver_free(d)) if len(o) else np.zeros(0)
        pay = sim.payout_cents(o, d, lvl) if len(o) else np.zeros(0, np.int64)
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
    return DispatchResponse(policy=state.policy_name, now=req.now, assignments=out, held=held)


def zone_node(city: City, z: int) -> int:
    """A representative node of zone ``z``: the one nearest the zone's centroid."""
    members = np.flatnonzero(city.zone_of == z)
    c = city.node_xy[members].mean(axis=0)
    return int(members[np.argmin(((city.node_xy[members] - c) ** 2).sum(1))])


def reposition(state: ServeState, req: RepositionRequest) -> RepositionResponse:
    """Moves of idle drivers by ``ServeState.repositioner`` (the served policy's rule, else
    ``DemandRepositionPolicy.moves``) on the request's state."""
    rep, rule = state.repositioner()
    ld = state.load(req.now, req.drivers, req.orders)
    empty = np.zeros(0, np.int64)
    try:
        if hasattr(rep, "forget_idle_history"):  # a request carries no idle history
            rep.forget_idle_history(state.sim)
        drv, zone = rep.moves(state.sim, empty, empty)
        drv, zone = np.asarray(drv, np.int64), np.asarray(zone, np.int64)
    except Exception as exc:
        raise PolicyError(f"repositioning failed: {type(exc).__name__}: {exc}") from exc
    city = state.sim.city
    moves = []
    for di, z in zip(drv.tolist(), zone.tolist(), strict=True):
        node = zone_node(city, z)
        xy = city.node_xy[node]
        moves.append(Move(driver_id=ld.driver_ids[di], zone=z, node=node, x=float(xy[0]), y=float(xy[1])))
    return RepositionResponse(rule=rule, moves=moves)


def quote(state: ServeState, req: QuoteRequest) -> QuoteResponse:
    """The customer fee (``Simulator.quote_cents``) and the driver payout (``Simulator.payout_cents``)."""
    sim = state.sim
    level = min(req.level, sim.n_levels - 1)  # the scenario's top level, as the escalation cap applies
    p = req.order.pickup
    drv = req.driver if req.driver is not None else DriverIn(id="quote", node=p.node, x=p.x, y=p.y)
    # the default driver stands at the pickup: an error in its position is the pickup's
    drv_path = ("driver",) if req.driver is not None else ("order", "pickup")
    state.load(req.now, [drv], [req.order], driver_paths=[drv_path], order_paths=[("order",)])
    sim.surge = np.full(sim.city.n_zones, float(req.surge))
    sim.orders.surge[0] = req.surge
    fee = int(sim.quote_cents(np.array([0]))[0]) if req.order.fee is None else int(req.order.fee)
    payout = int(sim.payout_cents(np.array([0]), np.array([0]), level)[0])
    return QuoteResponse(fee=fee, payout=payout, tip=req.order.tip, margin=fee - payout, level=level)
