"""HTTP inference service benchmark (``gigdispatch serve``), printed as JSON.

Starts a real uvicorn process (``python -m gigdispatch.training.cli serve``) on a free 127.0.0.1 port, then:

1. latency of ``POST /v1/dispatch`` at 100 x 20, 1,000 x 200 and 5,000 x 1,000 drivers x orders
   (one client, keep-alive, bodies encoded once beforehand), each beside the same policy called
   in-process in this process on the same request: ``act`` = ``policy.act`` alone on the loaded
   state, ``handler`` = the whole in-process path (pydantic validation + state load + ``act`` +
   translation back to ids). ``overhead_p50_ms`` = HTTP p50 - in-process p50 (both definitions);
2. throughput under ``--clients`` (32) concurrent clients sending the 1,000 x 200 request for
   ``--duration`` seconds (default 60; the loop stops by itself): requests/s, latency p50/p99, errors.

    python -m benchmarks.bench_serve                              # city-1000's city, nearest, 60 s
    python -m benchmarks.bench_serve --duration 10 --out results/bench_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import time

import numpy as np

from benchmarks.common import emit

SIZES = ((100, 20), (1000, 200), (5000, 1000))


def make_request(n_nodes: int, n_drivers: int, n_orders: int, now: float, seed: int = 1000) -> dict:
    """A synthetic request: 80 % idle drivers, 15 % busy (2-stop routes), 5 % offline; orders of the last 20 min."""
    rng = np.random.default_rng(seed)
    status = rng.choice(["idle", "busy", "offline"], size=n_drivers, p=[0.8, 0.15, 0.05])
    drivers = []
    for i in range(n_drivers):
        d = {"id": f"d{i}", "node": int(rng.integers(n_nodes)), "status": str(status[i])}
        d["vehicle"] = ["bike", "car", "van"][i % 3]
        if status[i] == "busy":
            d["route"] = [{"node": int(rng.integers(n_nodes)), "kind": "pickup"}, {"node": int(rng.integers(n_nodes))}]
            d["load"] = 4.0
        drivers.append(d)
    orders = []
    for j in range(n_orders):
        placed = now - float(rng.uniform(0, 1200))
        orders.append(
            {
                "id": f"o{j}",
                "pickup": {"node": int(rng.integers(n_nodes))},
                "dropoff": {"node": int(rng.integers(n_nodes))},
                "placed": placed,
                "ready": placed + 300.0,
                "deadline": placed + 3600.0,
                "volume": float(rng.uniform(1, 15)),
            }
        )
    return {"now": now, "drivers": drivers, "orders": orders}


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000.0
    p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
    return {"p50_ms": p50, "p99_ms": p99, "mean_ms": float(a.mean()), "n": len(xs)}


def latency_case(base: str, state, body: dict, iters: int) -> dict[str, object]:
    import httpx

    from gigdispatch.service import answers
    from gigdispatch.service.schemas import DispatchRequest

    data = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    http, act, handler = [], [], []
    with httpx.Client(base_url=base, timeout=30.0) as c:
        for _ in range(3):  # warm-up
            c.post("/v1/dispatch", content=data, headers=headers).raise_for_status()
        for _ in range(iters):
            t0 = time.perf_counter()
            r = c.post("/v1/dispatch", content=data, headers=headers)
            http.append(time.perf_counter() - t0)
            r.raise_for_status()
    n_assigned = len(r.json()["assignments"])
    for _ in range(iters):
        t0 = time.perf_counter()
        req = DispatchRequest.model_validate_json(data)
        answers.dispatch(state, req)
        handler.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        state.policy.act(state.sim)  # the state loaded by the dispatch call just above
        act.append(time.perf_counter() - t0)
    h, a, hd = _pct(http), _pct(act), _pct(handler)
    return {
        "drivers": len(body["drivers"]),
        "orders": len(body["orders"]),
        "body_bytes": len(data),
        "assigned": n_assigned,
        "http": h,
        "in_process_act": a,
        "in_process_handler": hd,
        "overhead_p50_ms_vs_act": h["p50_ms"] - a["p50_ms"],
        "overhead_p50_ms_vs_handler": h["p50_ms"] - hd["p50_ms"],
    }


async def _throughput(base: str, data: bytes, clients: int, duration: float) -> dict[str, object]:
    import httpx

    lat: list[float] = []
    errors = {"n": 0, "kinds": {}}
    stop = time.monotonic() + duration
    headers = {"content-type": "application/json"}

    async def worker(c: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/dispatch", content=data, headers=headers)
                ok = r.status_code == 200
                kind = str(r.status_code)
            except httpx.HTTPError as exc:
                ok, kind = False, type(exc).__name__
            lat.append(time.perf_counter() - t0)
            if not ok:
                errors["n"] += 1
                errors["kinds"][kind] = errors["kinds"].get(kind, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60.0, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        wall = time.perf_counter() - t0
    out = {"clients": clients, "duration_s": wall, "requests": len(lat), "requests_per_s": len(lat) / wall}
    return {**out, "errors": errors, **_pct(lat)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="city-1000", help="scenario whose city is served [default: %(default)s]")
    p.add_argument("--policy", default="nearest", help="policy served [default: %(default)s]")
    p.add_argument(
        "--duration", type=float, default=60.0, help="seconds of the throughput phase [default: %(default)s]"
    )
    p.add_argument("--clients", type=int, default=32, help="concurrent clients [default: %(default)s]")
    p.add_argument(
        "--iters", type=int, default=200, help="requests per latency case (the largest: a fifth) [default: %(default)s]"
    )
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if not (0 < args.duration <= 3600) or not (1 <= args.clients <= 1024) or args.iters < 5:
        p.error("--duration must be in (0, 3600], --clients in 1..1024, --iters >= 5")

    from gigdispatch.service.state import ServeState

    state = ServeState(args.scenario, args.policy)
    gc.collect()
    gc.freeze()  # as the server does after loading (service/app.py): long-lived objects out of the collector's way
    n_nodes, now = state.n_nodes, float(state.sim.t_start + 4 * 3600.0)
    from gigdispatch.training.serve_cli import serve_process

    with serve_process(args.scenario, args.policy) as base:
        cases = []
        for n_d, n_o in SIZES:
            iters = args.iters if n_d <= 1000 else max(5, args.iters // 5)
            cases.append(latency_case(base, state, make_request(n_nodes, n_d, n_o, now), iters))
        data = json.dumps(make_request(n_nodes, 1000, 200, now)).encode()
        tp = asyncio.run(_throughput(base, data, args.clients, args.duration))
    mid = next(c for c in cases if c["drivers"] == 1000)
    result = {
        "benchmark": "serve",
        "scenario": args.scenario,
        "policy": args.policy,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "latency": cases,
        "throughput_1000x200": tp,
        "targets": {
            "p99_ms_at_1000x200": mid["http"]["p99_ms"],
            "p99_le_25ms": mid["http"]["p99_ms"] <= 25.0,
            "overhead_p50_ms_vs_handler_at_1000x200": mid["overhead_p50_ms_vs_handler"],
            "overhead_le_2ms": mid["overhead_p50_ms_vs_handler"] <= 2.0,
            "overhead_p50_ms_vs_act_at_1000x200": mid["overhead_p50_ms_vs_act"],
            "zero_errors_32_clients": tp["errors"]["n"] == 0,
        },
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
