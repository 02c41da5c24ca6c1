"""Dashboard benchmark (``gigdispatch dashboard``), printed as JSON. Three questions, on ``city-1000``:

1. **Frames**: how long building one live frame takes and how big it is. The day is played with the policy;
   every ``--every``-th step a frame is built as the live server builds it (``FrameBuilder.frame`` +
   compact JSON + the SSE event bytes FastAPI sends, ``fastapi.sse.format_sse_event``), with and without the
   scorecard table (live frames carry it once a second). Reported: p50 / p95 / max milliseconds and KB.
2. **Nobody watching**: a whole day through the dashboard's live loop (``LiveRun.run``, speed 0, no viewer)
   against the same day through ``Simulator.run`` (what ``gigdispatch simulate`` runs), interleaved
   ``--repeats`` times; the ratio of the medians. Also with one viewer taking frames at ``--fps``.
3. **Replay**: the day recorded (``Recorder``) -- its size, the load time of ``ReplayRun``, and the time to
   seek to 200 random minutes (``frame_at``: the frame the slider asks for).

    python -m benchmarks.bench_dashboard                       # city-1000, hungarian
    python -m benchmarks.bench_dashboard --policy nearest --repeats 3 --out results/bench_dashboard.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit


def _pcts(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {
        "p50": round(float(np.median(a)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
    }


def frames(scenario: str, policy: str, every: int) -> dict[str, Any]:
    from fastapi.sse import format_sse_event

    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.frames import FrameBuilder, dumps

    sim = Simulator(load_scenario(scenario))
    pol = make_policy(policy)
    sim.reset(0)
    pol.reset(sim, sim.rng["policy"])
    fb = FrameBuilder(sim, pol.name, 0)
    ms: dict[bool, list[float]] = {False: [], True: []}
    kb: dict[bool, list[float]] = {False: [], True: []}
    step = 0
    while not sim.done:
        sim.step(pol.act(sim))
        step += 1
        if step % every:
            continue
        for table in (False, True):
            t0 = time.perf_counter()
            text = dumps(fb.frame(step, table=table))
            wire = format_sse_event(data_str=text, event="frame")
            ms[table].append((time.perf_counter() - t0) * 1000.0)
            kb[table].append(len(wire) / 1024.0)
    return {
        "frames_measured": len(ms[False]),
        "build_and_encode_ms": _pcts(ms[False]),
        "build_and_encode_ms_with_table": _pcts(ms[True]),
        "frame_kb": _pcts(kb[False]),
        "frame_kb_with_table": _pcts(kb[True]),
        "target_ms": 20.0,
        "target_kb": 100.0,
    }


def _live_day(scenario: str, policy: str, viewer_fps: float | None) -> float:
    """Wall seconds of one day through ``LiveRun.run`` at speed 0 (one viewer draining frames, or none)."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.service.dashboard import LiveRun

    async def go() -> float:
        run = LiveRun(
            Simulator(load_scenario(scenario)), make_policy(policy), policy, 0, speed=0.0, fps=viewer_fps or 5
        )
        q: asyncio.Queue[str] | None = None
        drain = None
        if viewer_fps:
            q = asyncio.Queue(maxsize=8)
            run.viewers.add(q)

            async def take() -> None:
                while True:
                    await q.get()

            drain = asyncio.create_task(take())
        await run.run()
        if drain is not None:
            drain.cancel()
        return run.wall_seconds

    return asyncio.run(go())


def _plain_day(scenario: str, policy: str) -> float:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario

    sim = Simulator(load_scenario(scenario))
    pol = make_policy(policy)
    t0 = time.perf_counter()
    sim.run(pol, seed=0)
    return time.perf_counter() - t0


def unwatched(scenario: str, policy: str, repeats: int, fps: float) -> dict[str, Any]:
    plain, alone, watched = [], [], []
    for _ in range(repeats):  # interleaved: the machine's drift hits all three alike
        plain.append(_plain_day(scenario, policy))
        alone.append(_live_day(scenario, policy, None))
        watched.append(_live_day(scenario, policy, fps))
    p, a, w = statistics.median(plain), statistics.median(alone), statistics.median(watched)
    return {
        "simulate_s": [round(x, 3) for x in plain],
        "dashboard_unwatched_s": [round(x, 3) for x in alone],
        "dashboard_one_viewer_s": [round(x, 3) for x in watched],
        "unwatched_over_simulate": round(a / p, 3),
        "one_viewer_over_simulate": round(w / p, 3),
        "target_unwatched_over_simulate": 1.10,
    }


def replay(scenario: str, policy: str) -> dict[str, Any]:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.frames import Recorder
    from gigdispatch.service.dashboard import ReplayRun

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day.jsonl.xz"
        sim = Simulator(load_scenario(scenario))
        pol = make_policy(policy)
        rec = Recorder(path, pol.name, 0)
        t0 = time.perf_counter()
        sim.run(pol, seed=0, progress=rec)
        rec.close()
        rec_s = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        run = ReplayRun(str(path))
        load_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        t_lo, t_hi = float(run.times[0]), float(run.times[-1])
        seeks = []
        for minute in rng.uniform(t_lo, t_hi, 200) // 60:
            t0 = time.perf_counter()
            body = run.frame_at(float(minute) * 60.0)
            assert body is not None
            seeks.append((time.perf_counter() - t0) * 1000.0)
    return {
        "frames": len(run.frames),
        "record_day_s": round(rec_s, 3),
        "file_mb": round(size / 1e6, 2),
        "load_s": round(load_s, 3),
        "seek_ms": _pcts(seeks),
        "target_seek_s": 1.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenario", default="city-1000", help="scenario [default: %(default)s]")
    ap.add_argument("--policy", default="hungarian", help="policy [default: %(default)s]")
    ap.add_argument("--every", type=int, default=10, help="measure a frame every N steps [default: %(default)s]")
    ap.add_argument("--repeats", type=int, default=3, help="days per variant in part 2 [default: %(default)s]")
    ap.add_argument(
        "--fps", type=float, default=5.0, help="the viewer's frames per second in part 2 [default: %(default)s]"
    )
    ap.add_argument("--out", help="also write the JSON here (atomically; the folder must exist)")
    args = ap.parse_args()
    result = {
        "benchmark": "dashboard",
        "scenario": args.scenario,
        "policy": args.policy,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "frames": frames(args.scenario, args.policy, args.every),
        "unwatched": unwatched(args.scenario, args.policy, args.repeats, args.fps),
        "replay": replay(args.scenario, args.policy),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
