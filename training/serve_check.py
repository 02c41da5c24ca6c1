"""Recorded dispatch requests, and the check that two served policies decide them identically.

``request_from_sim(sim)`` turns a simulator's state into a ``POST /v1/dispatch`` body (the fleet and
the open orders, in the API's JSON form). ``record_requests`` plays whole days of a scenario with a
policy on seeds >= 1000 (never the evaluation seeds 0-19) and keeps one request per decision epoch that
has open orders and an idle driver: these are the states a live platform would send.

``check_served(a, b, scenario, n)`` serves both policies through the real app (FastAPI's in-process
``TestClient``: the same request parsing, validation, adapter and response code as the uvicorn
process) and requires identical responses (assignments, ETAs, payouts, held orders) on every one of
the ``n`` recorded requests. ``gigdispatch export --check-served N`` runs it for an exported ONNX file
against its checkpoint (see docs/export.md).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.types import ACC_ACTIVE, PH_OFFLINE, SERVICE_LEVELS, STOP_PICKUP, VEHICLES


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def request_from_sim(sim: Simulator) -> dict[str, Any]:
    """The simulator's current fleet and open orders as a ``/v1/dispatch`` request body (ids ``d<i>``, ``o<j>``).

    Drivers: offline (off shift, not active, or with a pending offer, which the service cannot express)
    or busy (a route: its stops in order) or idle; ``load`` is the committed volume. Orders: every open
    order, with its fee, tip and declines.
    """
    dr, od = sim.drivers, sim.orders
    drivers = []
    for i in range(dr.n):
        offline = (
            dr.phase[i] == PH_OFFLINE
            or dr.account[i] != ACC_ACTIVE
            or dr.offer_order[i] >= 0
            or sim.t >= dr.shift_end[i]
        )
        L = int(dr.route_len[i])
        d: dict[str, Any] = {"id": f"d{i}", "node": int(dr.node[i]), "vehicle": VEHICLES[int(dr.vehicle[i])]}
        d["status"] = "offline" if offline else ("busy" if L else "idle")
        if not offline and L:
            d["route"] = [
                {
                    "node": int(dr.route_node[i, j]),
                    "kind": "pickup" if dr.route_kind[i, j] == STOP_PICKUP else "dropoff",
                }
                for j in range(L)
            ]
        cap = _finite(dr.capacity[i])
        if cap is not None:
            d["capacity"] = cap
        d["load"] = float(max(sim.committed[i], 0.0))
        end = _finite(dr.shift_end[i])
        if end is not None:
            d["shift_end"] = end
        d["owned"] = bool(dr.owned[i])
        drivers.append(d)
    orders = []
    for j in sim.open_orders().tolist():
        orders.append(
            {
                "id": f"o{j}",
                "pickup": {"node": int(od.pickup[j])},
                "dropoff": {"node": int(od.dropoff[j])},
                "placed": float(od.t_place[j]),
                "ready": float(od.t_ready[j]),
                "deadline": float(od.deadline[j]),
                "volume": float(od.volume[j]),
                "service_level": SERVICE_LEVELS[int(od.level[j])],
                "fee": int(od.fee[j]),
                "tip": int(od.tip[j]),
                "declines": int(od.declines[j]),
            }
        )
    return {"now": float(sim.t), "drivers": drivers, "orders": orders}


def record_requests(
    scenario: str, n: int, policy: str = "nearest", first_seed: int = 1000, every: int = 1
) -> list[dict[str, Any]]:
    """``n`` requests from days of ``scenario`` run by ``policy`` (seeds ``first_seed``, ``first_seed`` + 1, ...),
    one per ``every``-th decision epoch with open orders and an idle driver."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import load_scenario

    if first_seed < 1000:
        raise ValueError("record_requests: seeds below 1000 are kept for evaluation; use first_seed >= 1000")
    sc = load_scenario(scenario)
    pol = make_policy(policy)
    out: list[dict[str, Any]] = []
    seed = first_seed
    while len(out) < n:
        sim = Simulator(sc)
        sim.reset(seed)
        pol.reset(sim, sim.rng["policy"])
        epoch = 0
        while not sim.done and len(out) < n:
            if sim.open_orders().size and sim.eligible(idle_only=True).any():
                if epoch % every == 0:
                    out.append(request_from_sim(sim))
                epoch += 1
            sim.step(pol.act(sim))
        seed += 1
    return out


def check_served(policy_a: str, policy_b: str, scenario: str, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Send every request to two apps serving ``policy_a`` and ``policy_b``; returns counts and the first difference."""
    from fastapi.testclient import TestClient

    from gigdispatch.service import create_app

    answers: list[list[Any]] = [[], []]
    for side, pol in enumerate((policy_a, policy_b)):
        with TestClient(create_app(scenario, pol)) as client:
            for body in requests:
                r = client.post("/v1/dispatch", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"{pol}: a recorded request was refused ({r.status_code}): {r.text[:300]}")
                a = r.json()
                a.pop("policy", None)  # the policy's name differs by design
                answers[side].append(a)
    differ = [i for i, (x, y) in enumerate(zip(*answers, strict=True)) if x != y]
    n_assign = sum(len(a["assignments"]) for a in answers[0])
    return {
        "requests": len(requests),
        "differing": len(differ),
        "first_difference": None
        if not differ
        else {"request": differ[0], "a": answers[0][differ[0]], "b": answers[1][differ[0]]},
        "assignments": n_assign,
        "requests_with_assignments": int(np.sum([len(a["assignments"]) > 0 for a in answers[0]])),
    }
