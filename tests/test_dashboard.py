"""The dashboard's frames, recordings and server (``envs/frames.py``, ``service/dashboard.py``,
``gigdispatch dashboard``), without a browser (``test_dashboard_browser.py`` drives the page).

Frames are checked on a hand-built day whose every driver's status is known; the server is the real one,
``gigdispatch dashboard`` in a child process on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gigdispatch.envs import Simulator, load_scenario
from gigdispatch.envs.core.decision import Decision
from gigdispatch.envs.frames import (
    STATUS_NAMES,
    FrameBuilder,
    Recorder,
    RecordingError,
    driver_status,
    dumps,
    read_recording,
)
from gigdispatch.envs.scenarios.fixed import fixed_scenario
from gigdispatch.training.serve_cli import server_process

MIN = 60.0
# a line of nodes 300 m apart (1 min each at the fixed scenarios' 300 m/min)
NODES = [(0, 0), (300, 0), (600, 0), (900, 0), (1200, 0), (1500, 0)]


def _status(sim: Simulator) -> list[str]:
    return [STATUS_NAMES[s] for s in driver_status(sim)]


# ------------------------------------------------------------------------------------------------ frames
@pytest.fixture
def day() -> Simulator:
    """Five drivers, each in a different state at 3 min: d0 idle at node 0; d1 sent to the pickup of order 0
    at node 5 (5 min away: still on the way, nothing on board); d2 has picked order 1 at its own node and is
    delivering it; d3 repositioning to node 5; d4 off shift until 30 min."""
    orders = [
        {"t_place": 0.0, "pickup": 5, "dropoff": 4, "deadline": 2 * MIN},  # late by 3 min
        {"t_place": 0.0, "pickup": 2, "dropoff": 0, "deadline": 60 * MIN},
    ]
    drivers = [{"node": 0}, {"node": 0}, {"node": 2}, {"node": 1}, {"node": 3, "start": 30 * MIN}]
    sim = Simulator(fixed_scenario(NODES, orders, drivers, config={"horizon": {"start": 0.0, "end": 3600.0}}))
    sim.reset(seed=0)
    sim.step()  # orders open from 1 min
    sim.step(
        Decision(
            order=np.array([0, 1]),
            driver=np.array([1, 2]),
            reposition_driver=np.array([3]),
            reposition_node=np.array([5]),
        )
    )
    sim.step()
    return sim


def test_driver_status_tells_every_state_apart(day: Simulator) -> None:
    assert _status(day) == ["idle", "to_pickup", "delivering", "repositioning", "off_shift"]


def test_frame_holds_what_the_arrays_say(day: Simulator) -> None:
    fb = FrameBuilder(day, "hand", 0)
    fr = json.loads(dumps(fb.frame(3, table=True)))
    assert fr["i"] == 3 and fr["t"] == 3 * MIN and fr["clock"] == "00:03"
    assert fr["active"] == 4  # everyone but the driver off shift
    assert fr["drivers"]["status"] == [int(s) for s in driver_status(day)]
    # driver 1 is 2 min into the 5-min leg from node 0 to node 5 (1500 m): at x = 600 (interpolated)
    assert fr["drivers"]["x"][1] == pytest.approx(day.driver_xy(np.array([1]))[0, 0], abs=0.5)
    o = fr["orders"]
    assert o["id"] == [0, 1]
    assert o["status"] == [1, 2]  # assigned, picked up
    assert o["driver"] == [1, 2]
    assert o["sla"][0] == 2  # its deadline (2 min) has passed
    assert (o["px"][0], o["py"][0], o["dx"][0]) == (1500, 0, 1200)
    led = fr["ledger"]
    assert led["balanced"] is True
    assert led["margin"] == pytest.approx(led["fees"] - led["payouts"] - led["refunds"])
    assert len(fr["table"]["rating"]) == 5 and fr["table"]["deliveries"] == [0, 0, 0, 0, 0]
    assert set(fr["kpi"]) == set(fb.city()["kpi_names"])


def test_tracking_answers_match_the_route(day: Simulator) -> None:
    fb = FrameBuilder(day, "hand", 0)
    o = fb.order(1)
    assert o is not None and o["status"] == "picked" and o["driver"] == 2
    eta = day.route_eta(np.array([2]))[0]
    assert o["eta_dropoff"] == pytest.approx(eta[0], abs=0.1)  # its drop-off is the route's only stop
    assert o["eta_pickup"] is None  # already on board
    assert fb.order(99) is None and fb.order(-1) is None
    d = fb.driver(1)
    assert d is not None and d["status"] == "to_pickup"
    assert [(s["kind"], s["order"]) for s in d["route"]] == [("pickup", 0), ("dropoff", 0)]
    assert d["route"][0]["eta"] < d["route"][1]["eta"]
    assert fb.driver(5) is None


def test_kpi_point_is_the_days_kpis_so_far() -> None:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import compute_kpis
    from gigdispatch.envs.frames import KPI_SERIES, kpi_point

    sim = Simulator(load_scenario("default"))
    pol = make_policy("nearest")
    sim.reset(seed=0)
    pol.reset(sim, sim.rng["policy"])
    utils = []
    while not sim.done:
        sim.step(pol.act(sim))
        u = kpi_point(sim)["utilisation"]
        if u is not None:
            utils.append(u)
    # mid-day too it is a share of the time online so far (drivers still online count up to now)
    assert utils and min(utils) >= 0.0 and max(utils) <= 1.0
    end, k = kpi_point(sim), compute_kpis(sim)
    for name, key in KPI_SERIES.items():
        if key:
            assert end[name] == pytest.approx(k[key], abs=1e-4), name


def test_a_future_order_is_unknown() -> None:
    orders = [{"t_place": 10 * MIN, "pickup": 1, "dropoff": 2}]
    sim = Simulator(fixed_scenario(NODES, orders, [{"node": 0}]))
    sim.reset(seed=0)
    sim.step()
    assert FrameBuilder(sim).order(0) is None  # not placed yet: the platform does not know it


# --------------------------------------------------------------------------------------------- recordings
def _record(tmp_path: Path, scenario: str = "default", policy: str = "nearest", seed: int = 0) -> Path:
    out = tmp_path / f"{policy}.jsonl.xz"
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", "simulate", "--scenario", scenario, "--policy", policy,
         "--seed", str(seed), "--record", str(out), "--no-progress", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("rec")
    return _record(d, policy="nearest"), _record(d, policy="hungarian")


def test_a_recorded_day_is_every_step_of_the_day(recorded: tuple[Path, Path]) -> None:
    city, frames, times = read_recording(recorded[0])
    sim = Simulator(load_scenario("default"))
    kpis = sim.run(__import__("gigdispatch.agents", fromlist=["make_policy"]).make_policy("nearest"), seed=0)
    assert city["scenario"] == "default" and city["policy"] == "nearest" and city["seed"] == 0
    assert len(frames) == round((sim.t - sim.t_start) / sim.dt)  # one frame per step
    assert np.all(np.diff(times) == sim.dt)
    last = json.loads(frames[-1])
    assert last["done"] is True and "table" in last
    # the last frame's running KPIs are the day's KPIs
    assert last["kpi"]["on_time_rate"] == pytest.approx(kpis["on_time_rate"], abs=1e-4)
    assert last["ledger"]["margin"] == pytest.approx(kpis["platform_margin"], abs=0.01)
    assert sum(json.loads(f).get("table") is not None for f in frames) >= len(frames) // 15


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        (b"", "not a recording"),
        (b"plain text\n", "not a recording"),
        (gzip.compress(b"not json\n"), "line 1 is not JSON"),
        (lzma.compress(b'{"city": {"format": "other"}}\n'), "is not a gigdispatch-dashboard/1 city line"),
        (lzma.compress(b'{"city": {"format": "gigdispatch-dashboard/1"}}\n'), "no frames"),
        (lzma.compress(b'{"city": {"format": "gigdispatch-dashboard/1"}}\n{"i":0}\n'), "line 2 is not a frame"),
        (lzma.compress(b"\x00" * 10)[:20], "cannot read"),
    ],
)
def test_a_bad_recording_is_one_line_naming_it(tmp_path: Path, content: bytes | None, reason: str) -> None:
    p = tmp_path / "day.jsonl.xz"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(RecordingError, match=reason) as exc:
        read_recording(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_a_failed_recording_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "day.jsonl.xz"
    out.write_bytes(b"an older file")
    sim = Simulator(load_scenario("default"))
    sim.reset(seed=0)
    rec = Recorder(out, "nearest", 0)
    rec(sim)
    rec.abort()
    assert out.read_bytes() == b"an older file"  # nothing already there is lost
    assert [p.name for p in tmp_path.iterdir()] == ["day.jsonl.xz"]  # and no temporary file is left


def test_dashboard_cli_names_a_bad_replay_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.jsonl.xz"
    bad.write_text("hello")
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", "dashboard", "--replay", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "not a recording" in r.stderr and str(bad) in r.stderr


# ------------------------------------------------------------------------------------------- the server
def _sse_frames(
    base: str, n: int, headers: dict[str, str] | None = None, timeout: float = 60.0, until_done: bool = False
) -> list[dict]:
    """The first ``n`` frames of ``/v1/stream`` (``until_done``: up to the first that ends the day)."""
    out: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{base}/v1/stream", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "frame":
                out.append(json.loads(line.split(":", 1)[1]))
                if len(out) >= n or (until_done and out[-1]["done"]):
                    break
    return out


@pytest.fixture(scope="module")
def live() -> Any:
    """The real dashboard on 127.0.0.1: ``default`` with ``hungarian``, 10 simulated minutes a second."""
    with server_process(
        "dashboard", "--scenario", "default", "--policy", "hungarian", "--speed", "600", "--fps", "10", wait_s=60
    ) as base:
        yield base


def test_live_stream_frames_advance_and_match_the_session(live: str) -> None:
    s = httpx.get(f"{live}/v1/session").json()
    assert s["mode"] == "live" and s["runs"][0]["policy"] == "hungarian" and s["runs"][0]["scenario"] == "default"
    city = httpx.get(f"{live}/v1/runs/0/city").json()
    assert city["format"] == "gigdispatch-dashboard/1" and len(city["owned"]) == city["n_drivers"]
    frames = _sse_frames(live, 6)
    idx = [f["i"] for f in frames]
    assert idx == sorted(idx) and idx[-1] > idx[0]
    for f in frames:
        assert len(f["drivers"]["x"]) == city["n_drivers"]
        assert f["active"] == sum(s != STATUS_NAMES.index("off_shift") for s in f["drivers"]["status"])
    k = httpx.get(f"{live}/v1/runs/0/kpis").json()
    assert k["t"] == sorted(set(k["t"])) and len(k["t"]) >= 1  # sampled every 5 steps, watched or not
    assert all(len(v) == len(k["t"]) for v in k["kpi"].values()) and set(k["kpi"]) == set(city["kpi_names"])


def test_tracking_api_agrees_with_the_frame(live: str) -> None:
    httpx.post(f"{live}/v1/control", json={"paused": True}).raise_for_status()
    try:
        time.sleep(0.3)
        fr = httpx.get(f"{live}/v1/runs/0/frames/latest").json()
        assert httpx.get(f"{live}/v1/runs/0/frames/latest").json()["i"] == fr["i"]  # paused: nothing moves
        o = fr["orders"]
        assert o["id"], "no open order at this time of the day"
        for k, oid in enumerate(o["id"][:10]):
            body = httpx.get(f"{live}/v1/orders/{oid}").json()
            assert body["id"] == oid
            assert body["status"] == ("open", "assigned", "picked")[o["status"][k]] or body["status"] == "offered"
            assert body["driver"] == (o["driver"][k] if o["driver"][k] >= 0 else None)
            assert body["sla"] == ("on_track", "at_risk", "late")[o["sla"][k]]
            if body["status"] in ("assigned", "picked"):
                assert body["eta_dropoff"] >= fr["t"] - 1e-6
                drv = httpx.get(f"{live}/v1/drivers/{body['driver']}").json()
                drops = [s["eta"] for s in drv["route"] if s["order"] == oid and s["kind"] == "dropoff"]
                assert drops == [pytest.approx(body["eta_dropoff"], abs=0.1)]
    finally:
        httpx.post(f"{live}/v1/control", json={"paused": False}).raise_for_status()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("GET", "/v1/orders/999999", None, 404, "order 999999: no such order"),
        ("GET", "/v1/drivers/100000", None, 404, "driver 100000: no such driver"),
        ("GET", "/v1/orders/abc", None, 422, "order_id"),
        ("GET", "/v1/runs/3/city", None, 404, "run 3: no such run"),
        ("GET", "/v1/runs/0/frames/at?t=nan", None, 422, "t: must be a finite number"),
        ("POST", "/v1/control", {"speed": -1}, 422, "speed"),
        ("POST", "/v1/control", {"paused": "maybe"}, 422, "paused"),
        ("POST", "/v1/control", {"fast": True}, 422, "fast"),
    ],
)
def test_bad_requests_name_the_field(
    live: str, method: str, path: str, body: dict | None, status: int, text: str
) -> None:
    r = httpx.request(method, f"{live}{path}", json=body)
    assert r.status_code == status
    assert text in json.dumps(r.json())


def test_the_bearer_token_guards_the_api_not_the_page() -> None:
    with server_process("dashboard", "--scenario", "default", "--speed", "0", "--token", "s3cret", wait_s=60) as base:
        assert httpx.get(f"{base}/v1/session").status_code == 401
        assert httpx.get(f"{base}/v1/session", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{base}/").status_code == 200  # the page itself holds no data
        frames = _sse_frames(base, 1, headers={"Authorization": "Bearer s3cret"})
        assert frames[0]["i"] >= 0


def test_a_day_run_to_its_end_stays_on_the_last_frame() -> None:
    with server_process("dashboard", "--scenario", "default", "--speed", "0", wait_s=60) as base:
        deadline = time.monotonic() + 120
        while not httpx.get(f"{base}/v1/session").json()["done"]:
            assert time.monotonic() < deadline, "the day did not end"
            time.sleep(0.5)
        last = httpx.get(f"{base}/v1/runs/0/frames/latest").json()
        assert last["done"] is True
        seen = _sse_frames(base, 1000, until_done=True)  # the frames kept, then the day as it ended
        assert seen[-1]["i"] == last["i"] and seen[-1]["done"] is True


def test_replay_serves_any_frame_and_seeks_by_time(recorded: tuple[Path, Path]) -> None:
    _, frames, times = read_recording(recorded[0])
    with server_process("dashboard", "--replay", str(recorded[0]), "--replay", str(recorded[1]), wait_s=60) as base:
        s = httpx.get(f"{base}/v1/session").json()
        assert s["mode"] == "replay" and [r["policy"] for r in s["runs"]] == ["nearest", "hungarian"]
        assert s["runs"][0]["frames"] == len(frames)
        k = len(frames) // 2 + 3  # a frame without its own scorecards: the latest ones come with it
        fr = httpx.get(f"{base}/v1/runs/0/frames/{k}").json()
        assert fr == {**json.loads(frames[k]), "table": fr["table"]}
        t = float(times[k]) + 30.0  # between two frames: the one at or before
        assert httpx.get(f"{base}/v1/runs/0/frames/at", params={"t": t}).json()["i"] == fr["i"]
        other = httpx.get(f"{base}/v1/runs/1/frames/at", params={"t": t}).json()
        assert other["t"] == fr["t"]  # the same minute of the other policy's day (same seed, same clock)
        assert httpx.get(f"{base}/v1/runs/0/frames/{len(frames)}").status_code == 404
        k = httpx.get(f"{base}/v1/runs/0/kpis").json()  # every recorded frame's KPIs
        assert (
            k["t"] == times.tolist() and k["kpi"]["on_time_rate"][-1] == json.loads(frames[-1])["kpi"]["on_time_rate"]
        )
        r = httpx.get(f"{base}/v1/orders/1")
        assert r.status_code == 404 and "only while a day runs live" in r.json()["detail"]


def test_evaluate_records_every_day(tmp_path: Path) -> None:
    from gigdispatch.training.evaluate import evaluate

    evaluate(["default"], ["nearest"], [0, 1], tmp_path / "out", workers=1, plots=False, record=str(tmp_path / "rec"))
    names = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert names == ["nearest__default__seed0.jsonl.xz", "nearest__default__seed1.jsonl.xz"]
    assert read_recording(tmp_path / "rec" / names[1])[0]["seed"] == 1


def test_a_policy_that_fails_mid_day_stops_the_day_with_an_error_id(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from gigdispatch.agents import make_policy
    from gigdispatch.service.dashboard import LiveRun

    class Breaks:
        name = "breaks"

        def __init__(self) -> None:
            self.inner, self.calls = make_policy("nearest"), 0

        def reset(self, sim: Simulator, rng: Any) -> None:
            self.inner.reset(sim, rng)

        def act(self, sim: Simulator) -> Decision:
            self.calls += 1
            if self.calls > 30:
                raise ZeroDivisionError("a bug")
            return self.inner.act(sim)

    run = LiveRun(Simulator(load_scenario("default")), Breaks(), "breaks", 0, speed=0.0)
    with caplog.at_level("ERROR", logger="gigdispatch.service"):
        asyncio.run(asyncio.wait_for(run.run(), 60))
    st = run.state()
    assert st["done"] is False and run.steps == 30  # stopped where it failed, not run on
    err = st["error"]
    assert "ZeroDivisionError" in err["detail"] and len(err["error_id"]) == 32
    assert any(getattr(r, "error_id", None) == err["error_id"] for r in caplog.records)  # logged under that id
    assert json.loads(run.current_frame())["i"] == 30  # the last good state is still served
