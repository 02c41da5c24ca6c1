"""The HTTP inference service (``gigdispatch.service``, ``gigdispatch serve``).

In-process through FastAPI's ``TestClient`` (with ``raise_server_exceptions=False`` so that a 5xx
would show as a status, not hide behind an exception), plus one test that starts a real uvicorn
process on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from gigdispatch.envs.core.errors import GigdispatchError, InputError  # noqa: E402
from gigdispatch.service import create_app  # noqa: E402
from gigdispatch.service.errors import PolicyError, RequestError  # noqa: E402
from gigdispatch.service.schemas import MAX_DRIVERS, DispatchRequest, DriverIn, QuoteRequest  # noqa: E402
from gigdispatch.service.state import ServeState  # noqa: E402

NOW = 12 * 3600.0  # noon: inside the default scenario's day


def make_request(n_drivers: int = 30, n_orders: int = 12, seed: int = 1000) -> dict:
    """A dispatch request on the default city (400 nodes): idle, busy and offline drivers, node and x/y positions."""
    rng = np.random.default_rng(seed)
    drivers = []
    for i in range(n_drivers):
        d: dict = {"id": f"d{i}", "vehicle": ["bike", "car", "van"][i % 3]}
        if i % 4 == 0:
            d["x"], d["y"] = float(rng.uniform(0, 5000)), float(rng.uniform(0, 5000))
        else:
            d["node"] = int(rng.integers(0, 400))
        if i % 7 == 3:
            d["status"] = "busy"
            d["route"] = [{"node": int(rng.integers(0, 400)), "kind": "pickup"}, {"node": int(rng.integers(0, 400))}]
            d["load"] = 5.0
        elif i % 11 == 5:
            d["status"] = "offline"
        drivers.append(d)
    orders = []
    for j in range(n_orders):
        placed = NOW - float(rng.uniform(0, 1200))
        orders.append(
            {
                "id": f"o{j}",
                "pickup": {"node": int(rng.integers(0, 400))},
                "dropoff": {"x": float(rng.uniform(0, 5000)), "y": float(rng.uniform(0, 5000))},
                "placed": placed,
                "ready": placed + 300.0,
                "deadline": placed + 3600.0,
                "volume": float(rng.uniform(1, 20)),
                "tip": int(rng.integers(0, 300)),
            }
        )
    return {"now": NOW, "drivers": drivers, "orders": orders}


@pytest.fixture(scope="module")
def guard():
    return create_app("default", "nearest")


@pytest.fixture(scope="module")
def client(guard):
    with TestClient(guard, raise_server_exceptions=False) as c:
        yield c


def _msgs(r) -> str:
    return " | ".join(f"{e['loc']} {e['msg']}" for e in r.json()["detail"])


def _metrics(c) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics``, parsed with prometheus_client's own parser: (name, labels) -> value."""
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"] == CONTENT_TYPE_LATEST
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(c, name: str, **labels: str) -> float:
    return _metrics(c).get((name, tuple(sorted(labels.items()))), 0.0)


# ------------------------------------------------------------------------------------------ happy paths
def test_healthz_and_openapi(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["policy"] == "nearest" and r.json()["nodes"] == 400
    spec = client.get("/openapi.json").json()
    for path in ("/v1/dispatch", "/v1/reposition", "/v1/quote"):
        assert path in spec["paths"]
    assert "DispatchRequest" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_dispatch_equals_policy_act_on_the_same_state(client):
    req = make_request()
    r = client.post("/v1/dispatch", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"] == "nearest"
    # an independent service state, loaded with the same request, and the policy called directly
    ref = ServeState("default", "nearest")
    parsed = DispatchRequest.model_validate(req)
    ld = ref.load(parsed.now, parsed.drivers, parsed.orders)
    dec = ref.policy.act(ref.sim)
    pairs = zip(dec.order, dec.driver, dec.level, strict=True)
    expected = [(ld.order_ids[o], ld.driver_ids[d], int(lv)) for o, d, lv in pairs]
    got = [(a["order_id"], a["driver_id"], a["level"]) for a in body["assignments"]]
    assert got == expected
    assert len(got) > 0
    assert sorted(body["held"] + [a["order_id"] for a in body["assignments"]]) == sorted(o["id"] for o in req["orders"])
    # the state the policy saw is the request's: positions, statuses, orders
    sim = ref.sim
    by_id = {d["id"]: d for d in req["drivers"]}
    for i, did in enumerate(ld.driver_ids):
        if "node" in by_id[did]:
            assert sim.drivers.node[i] == by_id[did]["node"]
    xy = np.array([[d["x"], d["y"]] for d in req["drivers"] if "x" in d])
    snapped = sim.drivers.node[[i for i, d in enumerate(req["drivers"]) if "x" in d]]
    assert (snapped == sim.city.nearest_node(xy)).all()
    assert set(sim.open_orders().tolist()) == set(range(len(req["orders"])))
    # only online, unassigned-offer drivers are used; payouts are the simulator's
    status = {d["id"]: d.get("status", "idle") for d in req["drivers"]}
    assert all(status[a["driver_id"]] != "offline" for a in body["assignments"])
    o_idx = np.array([ld.order_ids.index(a["order_id"]) for a in body["assignments"]])
    d_idx = np.array([ld.driver_ids.index(a["driver_id"]) for a in body["assignments"]])
    assert [a["payout"] for a in body["assignments"]] == sim.payout_cents(o_idx, d_idx, dec.level).tolist()
    assert all(a["pickup_eta_s"] >= 0 for a in body["assignments"])
    # same request, same answer
    assert client.post("/v1/dispatch", json=req).json() == body


def test_dispatch_empty_and_no_drivers(client):
    r = client.post("/v1/dispatch", json={"now": NOW, "drivers": [], "orders": []})
    assert r.status_code == 200 and r.json()["assignments"] == [] and r.json()["held"] == []
    req = make_request(n_drivers=0, n_orders=3)
    r = client.post("/v1/dispatch", json=req)
    assert r.status_code == 200 and r.json()["assignments"] == [] and sorted(r.json()["held"]) == ["o0", "o1", "o2"]


def test_dispatch_respects_capacity_and_shift(client):
    base = {
        "now": NOW,
        "orders": [
            {"id": "o", "pickup": {"node": 10}, "dropoff": {"node": 20}}
            | {"placed": NOW - 60, "deadline": NOW + 3600, "volume": 50.0}
        ],
    }
    small = {**base, "drivers": [{"id": "bike", "node": 10, "vehicle": "bike", "capacity": 10.0}]}
    assert client.post("/v1/dispatch", json=small).json()["held"] == ["o"]
    gone = {**base, "drivers": [{"id": "late", "node": 10, "vehicle": "van", "shift_end": NOW - 1}]}
    assert client.post("/v1/dispatch", json=gone).json()["held"] == ["o"]
    ok = {**base, "drivers": [{"id": "van", "node": 10, "vehicle": "van"}]}
    a = client.post("/v1/dispatch", json=ok).json()["assignments"]
    assert [(x["order_id"], x["driver_id"]) for x in a] == [("o", "van")]


def test_reposition_moves_idle_drivers_towards_demand(client):
    # every idle driver stands at node 0; all the orders are picked up in a neighbouring zone
    city = ServeState("default", "nearest").sim.city
    home_zone = int(city.zone_of[0])
    target = int(next(z for z in city.zone_neighbors[home_zone] if z >= 0))
    pick = int(np.flatnonzero(city.zone_of == target)[0])
    drivers = [{"id": f"d{i}", "node": 0} for i in range(12)]
    drivers.append({"id": "busy", "node": 0, "status": "busy", "pending_stops": 2})
    orders = [
        {"id": f"o{j}", "pickup": {"node": pick}, "dropoff": {"node": 0}, "placed": NOW - 600 + j}
        | {"deadline": NOW + 3600}
        for j in range(8)
    ]
    r = client.post("/v1/reposition", json={"now": NOW, "drivers": drivers, "orders": orders})
    assert r.status_code == 200, r.text
    moves = r.json()["moves"]
    assert moves, r.json()
    assert all(m["driver_id"].startswith("d") for m in moves)  # idle drivers only, each once
    assert len({m["driver_id"] for m in moves}) == len(moves)
    assert all(m["zone"] == target for m in moves)
    assert all(city.zone_of[m["node"]] == m["zone"] for m in moves)
    assert all(np.allclose(city.node_xy[m["node"]], [m["x"], m["y"]]) for m in moves)
    # no demand: no moves
    r = client.post("/v1/reposition", json={"now": NOW, "drivers": drivers, "orders": []})
    assert r.status_code == 200 and r.json()["moves"] == []


def test_quote_matches_simulator_pricing(client):
    order = {"id": "q", "pickup": {"node": 5}, "dropoff": {"node": 300}, "placed": NOW, "deadline": NOW + 3600}
    order |= {"volume": 3.0, "tip": 150}
    r = client.post("/v1/quote", json={"now": NOW, "order": order})
    assert r.status_code == 200, r.text
    q = r.json()
    ref = ServeState("default", "nearest")
    parsed = QuoteRequest.model_validate({"now": NOW, "order": order})
    ref.load(NOW, [DriverIn(id="x", node=5)], [parsed.order])
    assert q["fee"] == int(ref.sim.quote_cents(np.array([0]))[0]) > 0
    assert q["payout"] == int(ref.sim.payout_cents(np.array([0]), np.array([0]), 0)[0]) > 0
    assert q["tip"] == 150 and q["margin"] == q["fee"] - q["payout"]
    # escalation raises the payout; surge raises the fee; an owned driver is paid 0; a given fee is echoed
    assert client.post("/v1/quote", json={"now": NOW, "order": order, "level": 2}).json()["payout"] > q["payout"]
    assert client.post("/v1/quote", json={"now": NOW, "order": order, "surge": 2.0}).json()["fee"] > q["fee"]
    owned = {"id": "own", "node": 5, "owned": True}
    assert client.post("/v1/quote", json={"now": NOW, "order": order, "driver": owned}).json()["payout"] == 0
    assert client.post("/v1/quote", json={"now": NOW, "order": {**order, "fee": 999}}).json()["fee"] == 999
    r = client.post("/v1/quote", json={"now": NOW, "order": order, "level": 999})
    assert r.status_code == 422 and "level" in _msgs(r)
    # above the scenario's top level (default: 4 levels) the top level applies, as the payout cap does
    top = client.post("/v1/quote", json={"now": NOW, "order": order, "level": 3}).json()
    above = client.post("/v1/quote", json={"now": NOW, "order": order, "level": 10}).json()
    assert above["level"] == 3 and above["payout"] == top["payout"]
    # JSON Schema counts 2.0 as an integer: integral floats are accepted for integer fields, others are not
    assert client.post("/v1/quote", json={"now": NOW, "order": {**order, "tip": 150.0}}).json()["tip"] == 150
    assert client.post("/v1/quote", json={"now": NOW, "order": {**order, "tip": 150.5}}).status_code == 422


# ------------------------------------------------------------------------------------------ validation
def _drv(**kw):
    return {"id": "d", "node": 1, **kw}


def _ord(**kw):
    return {"id": "o", "pickup": {"node": 2}, "dropoff": {"node": 3}, "placed": NOW, "deadline": NOW + 600, **kw}


BAD = [
    ({"drivers": [], "orders": []}, "now"),  # missing now
    ({"now": NOW, "orders": []}, "drivers"),
    ({"now": "noon", "drivers": [], "orders": []}, "now"),
    ({"now": NOW, "drivers": [_drv(node=10**6)], "orders": []}, "node"),
    ({"now": NOW, "drivers": [_drv(node=-1)], "orders": []}, "node"),
    ({"now": NOW, "drivers": [_drv(node="7")], "orders": []}, "node"),
    ({"now": NOW, "drivers": [{"id": "d"}], "orders": []}, "node"),
    ({"now": NOW, "drivers": [{"id": "d", "x": 5.0}], "orders": []}, "x and y"),
    ({"now": NOW, "drivers": [_drv(x=1.0, y=2.0)], "orders": []}, "not both"),
    ({"now": NOW, "drivers": [_drv(status="asleep")], "orders": []}, "status"),
    ({"now": NOW, "drivers": [_drv(vehicle="rocket")], "orders": []}, "vehicle"),
    ({"now": NOW, "drivers": [_drv(capacity=-1.0)], "orders": []}, "capacity"),
    ({"now": NOW, "drivers": [_drv(load=-1.0)], "orders": []}, "load"),
    ({"now": NOW, "drivers": [_drv(), _drv()], "orders": []}, "duplicate driver id"),
    ({"now": NOW, "drivers": [_drv(id="")], "orders": []}, "id"),
    ({"now": NOW, "drivers": [_drv(colour="red")], "orders": []}, "colour"),
    ({"now": NOW, "drivers": [_drv(status="busy", route=[{"node": 1}] * 9)], "orders": []}, "route"),
    ({"now": NOW, "drivers": [_drv(status="busy", route=[{"node": 99999}])], "orders": []}, "route"),
    ({"now": NOW, "drivers": [_drv(status="busy", pending_stops=40)], "orders": []}, "pending_stops"),
    ({"now": NOW, "drivers": [], "orders": [_ord(), _ord()]}, "duplicate order id"),
    ({"now": NOW, "drivers": [], "orders": [_ord(pickup={"node": 400})]}, "pickup"),
    ({"now": NOW, "drivers": [], "orders": [_ord(dropoff={})]}, "dropoff"),
    ({"now": NOW, "drivers": [], "orders": [_ord(deadline=None)]}, "deadline"),
    ({"now": NOW, "drivers": [], "orders": [_ord(volume="big")]}, "volume"),
    ({"now": NOW, "drivers": [], "orders": [_ord(tip=1.5)]}, "tip"),
    ({"now": NOW, "drivers": [], "orders": [_ord(service_level="warp")]}, "service_level"),
    ({"now": NOW, "drivers": [], "orders": [{"id": "o"}]}, "pickup"),
    ({"now": NOW, "drivers": {"id": "d"}, "orders": []}, "drivers"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
@pytest.mark.parametrize("path", ["/v1/dispatch", "/v1/reposition"])
def test_bad_requests_get_422_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert field in _msgs(r)


# requests that are well formed but inconsistent: in time, with the served city (400 nodes at about 0..4750 m;
# 60 s steps), or with the number of offers an order can have had; each gets a 422 whose loc and msg name the field
INCONSISTENT = [
    ({"now": NOW, "drivers": [], "orders": [_ord(deadline=NOW - 60)]}, "orders.0.deadline"),
    ({"now": NOW, "drivers": [], "orders": [_ord(ready=NOW - 60)]}, "orders.0.ready"),
    (
        {"now": NOW, "drivers": [], "orders": [_ord(), _ord(id="p", placed=NOW + 60, deadline=NOW + 900)]},
        "orders.1.placed",
    ),
    ({"now": -5.0, "drivers": [], "orders": []}, "now"),
    ({"now": NOW, "drivers": [], "orders": [_ord(placed=NOW - 600, declines=999)]}, "orders.0.declines"),
    ({"now": NOW, "drivers": [_drv(shift_end=-1.0)], "orders": []}, "drivers.0.shift_end"),
    ({"now": NOW, "drivers": [{"id": "d", "x": 1e9, "y": 100.0}], "orders": []}, "drivers.0.x"),
    ({"now": NOW, "drivers": [{"id": "d", "x": 100.0, "y": -1e9}], "orders": []}, "drivers.0.y"),
    ({"now": NOW, "drivers": [], "orders": [_ord(dropoff={"x": -1e9, "y": -1e9})]}, "orders.0.dropoff.x"),
    ({"now": NOW, "drivers": [_drv(status="busy", route=[{"x": 6e3, "y": 0.0}])], "orders": []}, "drivers.0.route.0.x"),
    ({"now": NOW, "drivers": [_drv(), _drv()], "orders": []}, "drivers.1.id"),
]


def _loc(field: str) -> list:
    return ["body", *(int(x) if x.isdigit() else x for x in field.split("."))]


@pytest.mark.parametrize(("body", "field"), INCONSISTENT, ids=[f for _, f in INCONSISTENT])
@pytest.mark.parametrize("path", ["/v1/dispatch", "/v1/reposition"])
def test_inconsistent_requests_get_422_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["detail"][0]
    assert err["msg"].startswith(f"{field}: "), r.text
    assert err["loc"] == _loc(field), r.text


@pytest.mark.parametrize(
    ("order", "driver", "field"),
    [
        (_ord(placed=NOW + 1, deadline=NOW + 900), None, "order.placed"),
        (_ord(deadline=NOW - 1), None, "order.deadline"),
        (_ord(declines=999), None, "order.declines"),
        (_ord(pickup={"x": 1e9, "y": 0.0}), None, "order.pickup.x"),  # the default driver stands there too
        (_ord(), {"id": "q", "x": 0.0, "y": 1e9}, "driver.y"),
        (_ord(), {"id": "q", "node": 1, "shift_end": -1.0}, "driver.shift_end"),
    ],
)
def test_inconsistent_quotes_get_422_naming_the_field(client, order, driver, field):
    body = {"now": NOW, "order": order} | ({} if driver is None else {"driver": driver})
    r = client.post("/v1/quote", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["msg"].startswith(f"{field}: "), r.text
    assert r.json()["detail"][0]["loc"] == _loc(field), r.text


def test_consistent_requests_at_the_limits_are_accepted(client):
    """The limits themselves are accepted: ready and deadline at placed, placed at now, time 0, the most
    declines an order can have had (one per 60 s step since placed, plus one), x/y just inside the margin."""
    (x_lo, y_lo), (x_hi, y_hi) = client.app.app.state.serve.xy_box  # the city's nodes +- 1,000 m
    city = ServeState("default", "nearest").sim.city
    assert np.allclose([x_lo, y_lo], city.node_xy.min(axis=0) - 1000.0)
    assert np.allclose([x_hi, y_hi], city.node_xy.max(axis=0) + 1000.0)
    orders = [
        _ord(id="a", ready=NOW, deadline=NOW),
        _ord(id="b", placed=NOW - 600, deadline=NOW + 600, declines=11),
        _ord(id="c", placed=0.0, ready=0.0, deadline=NOW + 60, pickup={"x": x_lo + 1.0, "y": y_hi - 1.0}),
    ]
    drivers = [_drv(shift_end=0.0), {"id": "e", "x": x_hi - 1.0, "y": y_lo + 1.0}]
    for path in ("/v1/dispatch", "/v1/reposition"):
        r = client.post(path, json={"now": NOW, "drivers": drivers, "orders": orders})
        assert r.status_code == 200, r.text
    r = client.post("/v1/dispatch", json={"now": 0.0, "drivers": drivers, "orders": [orders[2]]})
    assert r.status_code == 200, r.text
    one_more = [*orders[:1], {**orders[1], "declines": 12}]
    r = client.post("/v1/dispatch", json={"now": NOW, "drivers": drivers, "orders": one_more})
    assert r.status_code == 422 and r.json()["detail"][0]["msg"].startswith("orders.1.declines: 12 declines"), r.text
    # the OpenAPI document carries the served city's x/y box
    spec = client.get("/openapi.json").json()
    x = spec["components"]["schemas"]["Location"]["properties"]["x"]["anyOf"][0]
    assert (x["minimum"], x["maximum"]) == (x_lo, x_hi)


def test_states_the_simulator_reaches_are_accepted(client):
    """Requests recorded from simulated days (declines, times, positions as the simulator has them) all pass."""
    from gigdispatch.training.serve_check import record_requests

    requests = record_requests("default", 30, every=10)
    assert max(o["declines"] for req in requests for o in req["orders"]) >= 1
    for body in requests:
        r = client.post("/v1/dispatch", json=body)
        assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{", "JSON"),
        (b"", "body"),
        (b"[]", "body"),
        (b'{"now": NaN, "drivers": [], "orders": []}', "now"),
        (b'{"now": Infinity, "drivers": [], "orders": []}', "now"),
        (b'{"now": 1e999, "drivers": [], "orders": []}', "now"),
        (b'{"now": 43200, "drivers": [{"id": "d", "x": NaN, "y": 1}], "orders": []}', "x"),
        (
            b'{"now": 43200, "drivers": [], "orders": [{"id": "o", "pickup": {"node": 1}, "dropoff": {"node": 2}, '
            b'"placed": 1, "deadline": -Infinity}]}',
            "deadline",
        ),
    ],
)
def test_malformed_and_non_finite_json(client, raw, field):
    r = client.post("/v1/dispatch", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in _msgs(r)


def test_count_limits():
    body = {"now": NOW, "drivers": [_drv(id=f"d{i}") for i in range(MAX_DRIVERS + 1)], "orders": []}
    with pytest.raises(Exception, match="drivers"):
        DispatchRequest.model_validate(body)


def test_oversize_body_gets_413():
    with TestClient(create_app("default", "nearest", max_body_bytes=2048), raise_server_exceptions=False) as c:
        big = make_request(n_drivers=60, n_orders=10)
        r = c.post("/v1/dispatch", json=big)
        assert r.status_code == 413 and "2048" in r.text
        # without Content-Length (chunked): the same limit while reading
        data = json.dumps(big).encode()
        chunks = iter([data[:1000], data[1000:]])
        r = c.post("/v1/dispatch", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/dispatch", json={"now": NOW, "drivers": [], "orders": []}).status_code == 200
        assert 'status="413"' in c.get("/metrics").text


def test_never_a_5xx_on_mutated_requests(client):
    """Many randomly broken requests (seeded): every answer is 200 or 4xx, never 5xx."""
    rng = np.random.default_rng(1234)
    base = make_request(n_drivers=8, n_orders=5)
    junk = [None, -1, 0, 10**12, -(10**12), 1e308, "", "x", [], {}, True, 3.5, {"node": 1}, [{"node": 1}]]
    statuses = set()
    for _ in range(150):
        body = json.loads(json.dumps(base))
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(0, 3)
            if kind == 0:
                body["now"] = junk[rng.integers(len(junk))]
            else:
                items = body["drivers"] if kind == 1 else body["orders"]
                it = items[rng.integers(len(items))]
                key = list(it)[rng.integers(len(it))]
                it[key] = junk[rng.integers(len(junk))]
        path = ["/v1/dispatch", "/v1/reposition"][int(rng.integers(2))]
        r = client.post(path, json=body)
        statuses.add(r.status_code)
        assert r.status_code < 500, (path, body, r.text)
    assert 422 in statuses
    assert _value(client, "gigdispatch_internal_errors_total") == 0  # no request hit a bug


def _internal_error_record(caplog, error_id: str) -> logging.LogRecord:
    recs = [r for r in caplog.records if r.name == "gigdispatch.service" and getattr(r, "error_id", None) == error_id]
    assert len(recs) == 1, [r.getMessage() for r in caplog.records]
    assert error_id in recs[0].getMessage() and recs[0].levelno == logging.ERROR
    return recs[0]


def test_a_failing_policy_is_a_500_with_an_error_id_logged_and_counted(client, monkeypatch, caplog):
    state = client.app.app.state.serve

    def boom(sim):
        raise RuntimeError("simulated policy bug")

    before = _metrics(client)
    monkeypatch.setattr(state.policy, "act", boom)
    with caplog.at_level(logging.ERROR, logger="gigdispatch.service"):
        r = client.post("/v1/dispatch", json=make_request(n_drivers=3, n_orders=2))
    monkeypatch.undo()
    assert r.status_code == 500, r.text
    body = r.json()
    assert set(body) == {"detail", "error_id"} and body["detail"] == "internal error"
    assert re.fullmatch(r"[0-9a-f]{32}", body["error_id"])
    assert "simulated policy bug" not in r.text  # the details are in the log, not in the answer
    rec = _internal_error_record(caplog, body["error_id"])
    assert rec.exc_info is not None and isinstance(rec.exc_info[1], PolicyError)
    assert isinstance(rec.exc_info[1].__cause__, RuntimeError)
    assert "simulated policy bug" in caplog.text and "Traceback" in caplog.text
    after = _metrics(client)
    for name in ("gigdispatch_internal_errors_total", "gigdispatch_policy_errors_total"):
        assert after[(name, ())] == before[(name, ())] + 1
    key = ("gigdispatch_requests_total", (("endpoint", "/v1/dispatch"), ("status", "500")))
    assert after[key] == before.get(key, 0.0) + 1
    assert client.post("/v1/dispatch", json=make_request(n_drivers=3, n_orders=2)).status_code == 200


def test_an_unexpected_exception_anywhere_is_a_500(client, monkeypatch, caplog):
    """A bug outside the policy (here in the state adapter) reaches the catch-all handler: 500, logged, counted."""
    state = client.app.app.state.serve

    def broken(*args, **kwargs):
        raise KeyError("simulated adapter bug")

    internal = _value(client, "gigdispatch_internal_errors_total")
    policy = _value(client, "gigdispatch_policy_errors_total")
    monkeypatch.setattr(state, "load", broken)
    with caplog.at_level(logging.ERROR, logger="gigdispatch.service"):
        r = client.post("/v1/quote", json={"now": NOW, "order": _ord()})
    monkeypatch.undo()
    assert r.status_code == 500 and r.json()["detail"] == "internal error", r.text
    rec = _internal_error_record(caplog, r.json()["error_id"])
    assert isinstance(rec.exc_info[1], KeyError) and "/v1/quote" in rec.getMessage()
    assert _value(client, "gigdispatch_internal_errors_total") == internal + 1
    assert _value(client, "gigdispatch_policy_errors_total") == policy  # not the policy's
    assert client.post("/v1/quote", json={"now": NOW, "order": _ord()}).status_code == 200


def test_the_guard_answers_500_when_nothing_else_answered(caplog):
    """The last resort: an exception escaping the wrapped app before any answer started is a 500 with an id."""
    guard = create_app("default", "nearest")

    async def crashing_app(scope, receive, send):
        raise ZeroDivisionError("simulated framework bug")

    guard.app = crashing_app
    with caplog.at_level(logging.ERROR, logger="gigdispatch.service"):
        r = TestClient(guard).post("/v1/dispatch", json={"now": NOW, "drivers": [], "orders": []})
    assert r.status_code == 500 and r.json()["detail"] == "internal error"
    _internal_error_record(caplog, r.json()["error_id"])
    assert guard.metrics.value("gigdispatch_internal_errors_total") == 1
    assert guard.metrics.value("gigdispatch_requests_total", endpoint="/v1/dispatch", status="500") == 1


def test_client_errors_are_4xx_naming_the_field_not_internal_errors(client):
    """A request error found while loading the state (unknown node id, too many stops) is a 422 whose message
    starts with the field's path; it is an InputError, and not counted as a bug."""
    internal = _value(client, "gigdispatch_internal_errors_total")
    cases = [
        ({"now": NOW, "drivers": [_drv(), _drv(id="e", node=123456)], "orders": []}, "drivers.1.node: unknown node id"),
        ({"now": NOW, "drivers": [], "orders": [_ord(dropoff={"node": 400})]}, "orders.0.dropoff.node: unknown"),
        ({"now": NOW, "drivers": [_drv(status="busy", pending_stops=40)], "orders": []}, "drivers.0.pending_stops: 40"),
        ({"now": NOW, "drivers": [_drv(pending_stops=1)], "orders": []}, "drivers.0.pending_stops: only a busy"),
    ]
    for body, start in cases:
        r = client.post("/v1/dispatch", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["msg"].startswith(start), r.text
    assert _value(client, "gigdispatch_internal_errors_total") == internal
    err = RequestError(("drivers", 2, "node"), "unknown node id 7")
    assert isinstance(err, InputError) and isinstance(err, GigdispatchError) and str(err).startswith("drivers.2.node:")
    assert issubclass(PolicyError, GigdispatchError) and not issubclass(PolicyError, InputError)


def test_a_policy_with_idle_history_serves_any_fleet_size():
    """The learned repositioning policy keeps per-driver idle history; /v1/dispatch forgets it per request
    (as /v1/reposition does), so a fleet of another size than the scenario's is not a bug."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints/reposition"
    with TestClient(create_app("default", str(shipped)), raise_server_exceptions=False) as c:
        for n in (7, 40):
            r = c.post("/v1/dispatch", json=make_request(n_drivers=n, n_orders=5))
            assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------------------ auth, metrics
def test_bearer_token_required_when_set():
    with TestClient(create_app("default", "nearest", token="s3cret"), raise_server_exceptions=False) as c:
        body = {"now": NOW, "drivers": [], "orders": []}
        assert c.post("/v1/dispatch", json=body).status_code == 401
        assert c.post("/v1/dispatch", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/v1/quote", json=body, headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.post("/v1/dispatch", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert 'endpoint="/v1/dispatch",status="401"' in c.get("/metrics").text


def test_metrics_count_requests(client):
    """Counts per app (a registry of its own: the module's app has answered many requests by now)."""
    with TestClient(create_app("default", "nearest"), raise_server_exceptions=False) as c:
        for _ in range(3):
            c.post("/v1/dispatch", json={"now": NOW, "drivers": [], "orders": []})
        c.post("/v1/dispatch", json={"now": "x"})
        c.get("/nowhere")
        m = _metrics(c)
        text = c.get("/metrics").text

    def req(endpoint: str, status: str) -> float:
        return m[("gigdispatch_requests_total", (("endpoint", endpoint), ("status", status)))]

    assert req("/v1/dispatch", "200") == 3 and req("/v1/dispatch", "422") == 1 and req("other", "404") == 1
    assert m[("gigdispatch_errors_total", ())] == 2
    assert m[("gigdispatch_internal_errors_total", ())] == 0 and m[("gigdispatch_policy_errors_total", ())] == 0
    assert m[("gigdispatch_request_seconds_count", (("endpoint", "/v1/dispatch"),))] == 4
    assert m[("gigdispatch_request_seconds_bucket", (("endpoint", "/v1/dispatch"), ("le", "+Inf")))] == 4
    assert m[("gigdispatch_request_seconds_bucket", (("endpoint", "/v1/dispatch"), ("le", "10.0")))] == 4
    assert "# TYPE gigdispatch_request_seconds histogram" in text
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["gigdispatch_requests"] == "counter" and families["gigdispatch_internal_errors"] == "counter"
    assert families["gigdispatch_request_seconds"] == "histogram"
    assert _value(client, "gigdispatch_requests_total", endpoint="/v1/dispatch", status="200") > 3


def test_cli_rejects_bad_names_in_one_line():
    from gigdispatch.training.cli import main

    assert main(["serve", "--scenario", "no-such-city"]) == 2
    assert main(["serve", "--policy", "no-such-policy"]) == 2


# ------------------------------------------------------------------------------------------ a real server
def test_real_uvicorn_process():
    """The service as a real uvicorn process on a free loopback port (started and always stopped by the helper)."""
    from gigdispatch.training.serve_cli import serve_process

    with (
        serve_process("default", "nearest", "--token", "tok", wait_s=30.0) as base,
        httpx.Client(base_url=base, timeout=5.0) as c,
    ):
        h = {"Authorization": "Bearer tok"}
        req = make_request()
        r = c.post("/v1/dispatch", json=req, headers=h)
        assert r.status_code == 200 and r.json()["assignments"]
        assert c.post("/v1/dispatch", json=req).status_code == 401
        oops = c.post("/v1/dispatch", content=b"{oops", headers={**h, "content-type": "application/json"})
        assert oops.status_code == 422
        assert _value(c, "gigdispatch_requests_total", endpoint="/v1/dispatch", status="200") == 1
