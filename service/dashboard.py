"""The manager dashboard's server (``gigdispatch dashboard``): a day live, or recorded days replayed.

One FastAPI app serves the page (``service/static``, from the package: nothing from the network) and its API:

* ``GET /v1/session`` -- live or replay, the runs shown (one, or two side by side);
* ``GET /v1/runs/{r}/city`` -- the run's static city (``envs.frames.FrameBuilder.city``);
* ``GET /v1/runs/{r}/frames/{i}`` | ``/latest`` | ``/at?t=S`` -- one frame (replay: any; live: the last
  ``RING`` frames published);
* ``GET /v1/stream`` (live) -- server-sent events, ``event: frame``, FastAPI's ``EventSourceResponse`` (with its
  keep-alive comments); a new viewer first gets the frames kept so far, then each new one;
* ``POST /v1/control`` (live) -- pause, play, speed;
* ``GET /v1/orders/{id}``, ``GET /v1/drivers/{id}`` (live) -- the tracking API: status, driver, ETAs, SLA
  deadline; position, route with ETAs, scorecard. 404 for an id the platform does not know.

The live day runs as one asyncio task on the server's event loop (``LiveRun.run``): it steps the simulator
with the policy, paced to ``speed`` simulated seconds per wall second (0: as fast as it goes), and yields to the
loop between bursts of at most ``BURST_S``, so requests are answered between steps and never see a half-done
step (one thread: no lock). Frames are built only for viewers, at most ``fps`` a second: with nobody watching
the day costs what ``gigdispatch simulate`` costs (``benchmarks/bench_dashboard.py`` measures both).

Errors as in ``gigdispatch serve``: a client's mistake is a 4xx naming the field, a bug of ours a 500 with an
error id (the same handlers and guard layer).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from gigdispatch.envs.frames import KPI_SERIES, FrameBuilder, dumps, kpi_point, read_recording
from gigdispatch.service.app import DEFAULT_MAX_BODY_BYTES, _add_error_handlers, _bearer_auth, _internal_error_reporter
from gigdispatch.service.errors import report_internal_error
from gigdispatch.service.guard import GuardMiddleware
from gigdispatch.service.metrics import Metrics

RING = 600  # live frames kept for late viewers and GET .../frames/{i}
BURST_S = 0.02  # at most this long stepping before the loop answers requests
TABLE_EVERY = 5  # live: scorecards in every 5th published frame (once a second at 5 fps)
KPI_EVERY = 5  # live: a point of the KPI series every 5 steps, watched or not (~0.1 ms against a ~1.3 ms step)
SPEED_MAX = 100_000.0


def static_dir() -> Path:
    """The page's files, inside the installed package."""
    return Path(str(resources.files("gigdispatch.service") / "static"))


class Control(BaseModel):
    """``POST /v1/control``: pause or play the day, set its speed (simulated seconds per wall second; 0: as fast
    as the machine can)."""

    model_config = ConfigDict(extra="forbid")
    paused: bool | None = None
    speed: float | None = Field(default=None, ge=0.0, le=SPEED_MAX)


# ------------------------------------------------------------------------------------------------ live
class KpiSeries:
    """The KPI series of one day for the charts (``GET /v1/runs/{r}/kpis``): times and a list per KPI."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.kpi: dict[str, list[float | None]] = {name: [] for name in KPI_SERIES}

    def add(self, t: float, point: dict[str, Any]) -> None:
        if self.t and t <= self.t[-1]:
            return
        self.t.append(t)
        for name, series in self.kpi.items():
            series.append(point.get(name))

    def body(self) -> dict[str, Any]:
        return {"t": self.t, "kpi": self.kpi}


class LiveRun:
    """One day stepped live with a policy (see the module docstring)."""

    def __init__(self, sim: Any, policy: Any, policy_name: str, seed: int, speed: float = 60.0, fps: float = 5.0):
        self.sim, self.policy, self.seed = sim, policy, int(seed)
        self.label = f"{policy_name} seed {seed}"
        self.policy_name = policy_name
        self.builder = FrameBuilder(sim, policy_name, seed)
        self.speed, self.fps = float(speed), float(fps)
        self.paused = False
        self.ring: deque[tuple[int, float, str]] = deque(maxlen=RING)  # (frame index, sim time, JSON)
        self.viewers: set[asyncio.Queue[str]] = set()
        self.published = 0
        self.steps = 0
        self.kpis = KpiSeries()
        self.step_seconds = 0.0  # wall time inside policy.act + sim.step
        self.wall_seconds = 0.0  # wall time from start to the end of the day
        self.finished = asyncio.Event()
        self.error: dict[str, str] | None = None  # the policy or the simulator failed: the day stopped there
        sim.reset(seed)
        policy.reset(sim, sim.rng["policy"])
        self.city_obj = self.builder.city()
        self._anchor = (time.perf_counter(), float(sim.t))
        self._frame_cache: tuple[int, str] | None = None

    # -- frames
    def frame_index(self) -> int:
        return self.steps

    @property
    def n_frames(self) -> int:
        """Frames so far: one per step, the day as reset left it included."""
        return self.steps + 1

    def latest(self) -> str:
        return self.current_frame()

    def current_frame(self) -> str:
        """The frame of the state now (built once per state)."""
        i = self.frame_index()
        if self._frame_cache is None or self._frame_cache[0] != i:
            table = self.published % TABLE_EVERY == 0 or self.sim.done
            self._frame_cache = (i, dumps(self.builder.frame(i, table=table)))
        return self._frame_cache[1]

    def publish(self) -> None:
        """Send the current frame to every viewer and keep it in the ring."""
        text = self.current_frame()
        i = self.frame_index()
        if not self.ring or self.ring[-1][0] != i:
            self.ring.append((i, float(self.sim.t), text))
            self.published += 1
        for q in list(self.viewers):
            if q.full():  # a slow viewer skips frames rather than holding memory
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(text)

    def frame(self, i: int) -> str | None:
        if i == self.frame_index():
            return self.current_frame()
        if not self.ring or i < self.ring[0][0] or i > self.ring[-1][0]:
            return None
        k = bisect.bisect_left([j for j, _, _ in self.ring], i)
        j, _, text = self.ring[k]
        return text if j == i else None

    def frame_at(self, t: float) -> str | None:
        if t >= self.sim.t:
            return self.current_frame()
        k = bisect.bisect_right([t_ for _, t_, _ in self.ring], t) - 1
        return self.ring[k][2] if k >= 0 else None

    def control(self, c: Control) -> dict[str, Any]:
        if c.speed is not None:
            self.speed = float(c.speed)
        if c.paused is not None:
            self.paused = bool(c.paused)
            if self.paused:
                self.publish()  # viewers see the state it paused in, not the last frame sent before
        self._anchor = (time.perf_counter(), float(self.sim.t))  # pacing restarts from now
        return self.state()

    def state(self) -> dict[str, Any]:
        out = {"paused": self.paused, "speed": self.speed, "t": float(self.sim.t), "done": bool(self.sim.done)}
        return out | ({"error": self.error} if self.error else {})

    # -- the day
    async def run(self) -> None:
        """Step the day to its end, paced, publishing frames to viewers at most ``fps`` a second. A bug of ours
        (the policy or the simulator raising) stops the day where it is: logged under an error id, which
        ``/v1/session`` then carries, and the last good frame stays on screen."""
        try:
            await self._run()
        except Exception as exc:
            self.error = report_internal_error(exc, "DAY", f"t={self.sim.t:.0f}") | {
                "detail": f"the day stopped at {self.sim.t:.0f} s: {type(exc).__name__} (a bug: see the server log)"
            }
            self.finished.set()

    async def _run(self) -> None:
        sim, clock = self.sim, time.perf_counter
        start = clock()
        last_pub = -math.inf
        self.publish()
        while not sim.done:
            if self.paused:
                await asyncio.sleep(0.05)
                continue
            now = clock()
            due = math.inf
            if self.speed > 0:
                a_wall, a_t = self._anchor
                due = a_t + self.speed * (now - a_wall)
                if sim.t >= due:  # ahead of the clock: wait for it (or for the next frame time)
                    await asyncio.sleep(min(0.05, max((sim.t - due) / self.speed, 0.001)))
                    continue
            burst_end = now + BURST_S
            while True:
                a = clock()
                sim.step(self.policy.act(sim))
                self.step_seconds += clock() - a
                self.steps += 1
                if self.steps % KPI_EVERY == 0:
                    self.kpis.add(float(sim.t), kpi_point(sim))
                if sim.done or sim.t >= due or clock() >= burst_end:
                    break
            if self.viewers and clock() - last_pub >= 1.0 / self.fps:
                self.publish()
                last_pub = clock()
            await asyncio.sleep(0)
        self.wall_seconds = clock() - start
        self.kpis.add(float(sim.t), kpi_point(sim))
        self.publish()  # the last frame (done), kept on screen
        self.finished.set()


# ---------------------------------------------------------------------------------------------- replay
class ReplayRun:
    """A recorded day (``envs.frames.Recorder``): frames served by index or time, each with the latest
    scorecards at or before it (recordings hold them every few frames)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.city_obj, self.frames, self.times = read_recording(path)
        self.label = f"{self.city_obj.get('policy') or Path(path).name} seed {self.city_obj.get('seed')}"
        self.policy_name = str(self.city_obj.get("policy", ""))
        self.seed = self.city_obj.get("seed")
        tables: list[int] = []
        self._tables: dict[int, bytes] = {}
        last = -1
        for k, line in enumerate(self.frames):
            if b'"table":' in line:
                self._tables[k] = json.dumps(json.loads(line)["table"], separators=(",", ":")).encode()
                last = k
            tables.append(last)
        self._table_of = tables
        self.kpis = KpiSeries()
        for line, t in zip(self.frames, self.times.tolist(), strict=True):
            self.kpis.add(t, _kpi_of(line))

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def latest(self) -> bytes:
        """The day's last frame (a recording holds at least one: ``read_recording``)."""
        body = self.frame(len(self.frames) - 1)
        assert body is not None
        return body

    def frame(self, i: int) -> bytes | None:
        if not 0 <= i < len(self.frames):
            return None
        line = self.frames[i]
        src = self._table_of[i]
        if src < 0 or src == i:
            return line
        return line[:-1] + b',"table":' + self._tables[src] + b"}"

    def frame_at(self, t: float) -> bytes | None:
        k = int(np.searchsorted(self.times, t, side="right")) - 1  # the frame at or before t
        return self.frame(max(k, 0))


def _kpi_of(line: bytes) -> dict[str, Any]:
    """A frame line's ``kpi`` object, parsed alone (it holds numbers only: its closing brace is the first)."""
    k = line.find(b'"kpi":')
    if k < 0:
        return {}
    end = line.find(b"}", k)
    try:
        out = json.loads(line[k + 6 : end + 1])
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


# --------------------------------------------------------------------------------------------------- app
def _json(body: str | bytes) -> Response:
    return Response(body, media_type="application/json")


def create_dashboard_app(
    live: LiveRun | None = None,
    replays: list[ReplayRun] | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> GuardMiddleware:
    """The dashboard's ASGI app, for one live run or one or two replays (exactly one of the two). The live day
    starts stepping when the server starts (the lifespan) and its task is cancelled when the server stops."""
    if (live is None) == (not replays):
        raise ValueError("create_dashboard_app: give a live run or one or two replays")
    runs: list[Any] = [live] if live is not None else list(replays or [])
    metrics = Metrics()
    internal_error = _internal_error_reporter(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(live.run()) if live is not None else None
        app.state.day = task
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(
        title="gigdispatch dashboard",
        version="1",
        description="A city's day live or replayed, and the tracking API (orders, drivers) of the live day.",
        lifespan=lifespan,
    )
    _add_error_handlers(app, metrics, internal_error)
    guarded = [Depends(_bearer_auth(token))] if token is not None else []
    _add_view_routes(app, runs, live, guarded)
    if live is not None:
        _add_live_routes(app, live, guarded)
    else:
        _add_replay_refusals(app, guarded)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "mode": "live" if live is not None else "replay", "runs": len(runs)}

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        from gigdispatch.service.metrics import CONTENT_TYPE

        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return GuardMiddleware(app, metrics, max_body_bytes, internal_error)


def _add_view_routes(app: FastAPI, runs: list[Any], live: LiveRun | None, guarded: list[Any]) -> None:
    """The page, the session, each run's city and frames (live and replay alike)."""
    static = static_dir()
    app.mount("/static", StaticFiles(directory=static), name="static")

    def run_of(r: int) -> Any:
        if not 0 <= r < len(runs):
            raise HTTPException(status_code=404, detail=f"run {r}: no such run (runs are 0..{len(runs) - 1})")
        return runs[r]

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(static / "index.html", media_type="text/html")

    @app.get("/v1/session", dependencies=guarded)
    async def session() -> dict[str, Any]:
        out = []
        for r, run in enumerate(runs):
            n = run.n_frames
            city = run.city_obj
            out.append(
                {
                    "run": r,
                    "label": run.label,
                    "scenario": city["scenario"],
                    "policy": run.policy_name,
                    "seed": run.seed,
                    "frames": n,
                }
            )
        body: dict[str, Any] = {"mode": "live" if live is not None else "replay", "runs": out, "kpi_series": True}
        if live is not None:
            body |= {"fps": live.fps, **live.state()}
        return body

    @app.get("/v1/runs/{r}/city", dependencies=guarded)
    async def city(r: int) -> Response:
        run = run_of(r)
        return _json(dumps(run.city_obj))

    @app.get("/v1/runs/{r}/kpis", dependencies=guarded)
    async def kpis(r: int) -> dict[str, Any]:
        """The day's KPI series so far (replay: every frame; live: every few steps, watched or not)."""
        return run_of(r).kpis.body()

    @app.get("/v1/runs/{r}/frames/latest", dependencies=guarded)
    async def latest(r: int) -> Response:
        run = run_of(r)
        return _json(run.latest())

    @app.get("/v1/runs/{r}/frames/at", dependencies=guarded)
    async def frame_at(r: int, t: float = Query(..., description="simulated seconds since midnight")) -> Response:
        if not math.isfinite(t):
            raise HTTPException(status_code=422, detail="t: must be a finite number of seconds since midnight")
        body = run_of(r).frame_at(t)
        if body is None:
            raise HTTPException(status_code=404, detail=f"t={t}: no frame kept at or before this time")
        return _json(body)

    @app.get("/v1/runs/{r}/frames/{i}", dependencies=guarded)
    async def frame(r: int, i: int) -> Response:
        body = run_of(r).frame(i)
        if body is None:
            raise HTTPException(status_code=404, detail=f"frame {i}: not kept (live days keep the last {RING})")
        return _json(body)


def _add_live_routes(app: FastAPI, live: LiveRun, guarded: list[Any]) -> None:
    """The live day's stream, controls and tracking API (a replay has none of them: 404)."""

    @app.get("/v1/stream", response_class=EventSourceResponse, dependencies=guarded)
    async def stream() -> AsyncIterator[ServerSentEvent]:
        run = live
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=8)
        backlog = [text for _, _, text in run.ring]
        run.viewers.add(q)
        try:
            for text in backlog:
                yield ServerSentEvent(raw_data=text, event="frame")
            now = run.current_frame()
            if not backlog or backlog[-1] is not now:  # then the state as it is now
                yield ServerSentEvent(raw_data=now, event="frame")
            while True:
                text = await q.get()
                yield ServerSentEvent(raw_data=text, event="frame")
        finally:
            run.viewers.discard(q)

    @app.post("/v1/control", dependencies=guarded)
    async def control(c: Control) -> dict[str, Any]:
        return live.control(c)

    @app.get("/v1/orders/{order_id}", dependencies=guarded)
    async def order(order_id: int) -> dict[str, Any]:
        run = live
        body = run.builder.order(order_id)
        if body is None:
            raise HTTPException(status_code=404, detail=f"order {order_id}: no such order (not placed yet, or unknown)")
        return body

    @app.get("/v1/drivers/{driver_id}", dependencies=guarded)
    async def driver(driver_id: int) -> dict[str, Any]:
        run = live
        body = run.builder.driver(driver_id)
        if body is None:
            raise HTTPException(
                status_code=404, detail=f"driver {driver_id}: no such driver (ids are 0..{run.sim.drivers.n - 1})"
            )
        return body


def _add_replay_refusals(app: FastAPI, guarded: list[Any]) -> None:
    """In a replay the live-only paths answer 404 saying why (not FastAPI's bare "Not Found")."""

    def refuse(what: str) -> None:
        raise HTTPException(status_code=404, detail=f"{what}: only while a day runs live (this is a replay)")

    @app.get("/v1/stream", dependencies=guarded, include_in_schema=False)
    async def stream() -> None:
        refuse("/v1/stream")

    @app.post("/v1/control", dependencies=guarded, include_in_schema=False)
    async def control() -> None:
        refuse("/v1/control")

    @app.get("/v1/orders/{order_id}", dependencies=guarded, include_in_schema=False)
    async def order(order_id: str) -> None:
        refuse("/v1/orders")

    @app.get("/v1/drivers/{driver_id}", dependencies=guarded, include_in_schema=False)
    async def driver(driver_id: str) -> None:
        refuse("/v1/drivers")
