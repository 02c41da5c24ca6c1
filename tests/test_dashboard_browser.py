"""The dashboard page in a real browser: Debian's headless Chromium (``/usr/bin/chromium``; the README's test
command installs it) driven by Playwright, against the real ``gigdispatch dashboard`` on 127.0.0.1.

Live: the page loads with no console error or warning; it draws one marker per active driver of the frame it
shows; its KPI chart gains points as frames arrive; clicking an order on the map shows the ETA that
``GET /v1/orders/{id}`` returns; every request it makes goes to the server on 127.0.0.1. Replay: two recorded
days side by side; the slider seeks to a minute and both maps show that minute's frames in under a second.

With ``GIGDISPATCH_SCREENSHOTS=DIR`` the screenshots are written to DIR (``docs/img`` holds the ones in the docs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gigdispatch.training.serve_cli import server_process

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="needs Debian's chromium (apt-get install chromium; the README's test command does)",
)
TOKEN = "watch-me"
OFF_SHIFT = 4


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("GIGDISPATCH_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


class Watched:
    """A page with every console message, page error and request it makes recorded."""

    def __init__(self, browser: Any) -> None:
        self.ctx = browser.new_context(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
        self.page = self.ctx.new_page()
        self.console: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def problems(self) -> list[str]:
        return [m for m in self.console if m.split(":", 1)[0] in ("error", "warning", "pageerror")]

    def body(self, name: str) -> int:
        v = self.page.evaluate(f"document.body.dataset.{name}")
        return -1 if v in (None, "") else int(v)

    def wait_body(self, name: str, pred: Any, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            v = self.body(name)
            if pred(v):
                return v
            assert time.monotonic() < deadline, f"body[data-{name}] stayed {v}; console: {self.console[-5:]}"
            time.sleep(0.05)


def _own_origin_only(w: Watched, base: str) -> None:
    foreign = [u for u in w.requests if not (u.startswith(base + "/") or u == base or u.startswith("data:"))]
    assert foreign == [], foreign
    assert base.startswith("http://127.0.0.1:")


def test_live_page(browser: Any, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with server_process(
        "dashboard", "--scenario", "default", "--policy", "hungarian", "--speed", "300", "--token", TOKEN, wait_s=60
    ) as base:
        w = Watched(browser)
        w.page.goto(f"{base}/#token={TOKEN}")
        first = w.wait_body("frame", lambda v: v >= 0)
        # the KPI chart advances as frames arrive
        pts0 = w.wait_body("kpiPoints", lambda v: v >= 1)
        w.wait_body("frame", lambda v: v > first + 5)
        assert w.wait_body("kpiPoints", lambda v: v > pts0) > pts0
        # let the morning fill up, then hold the day still
        w.wait_body("frame", lambda v: v >= 150, timeout_s=60)
        httpx.post(f"{base}/v1/control", json={"paused": True}, headers=auth).raise_for_status()
        fr = httpx.get(f"{base}/v1/runs/0/frames/latest", headers=auth).json()
        w.wait_body("frame", lambda v: v == fr["i"])
        active = sum(s != OFF_SHIFT for s in fr["drivers"]["status"])
        assert active > 0
        assert w.body("markers") == active
        # click an order that is assigned (it has an ETA) and stands apart from the other markers on screen
        target = _isolated_order(w, fr)
        box = w.page.locator("#map").bounding_box()
        x, y = w.page.evaluate("([x, y]) => window.gd.project(x, y)", [target["px"], target["py"]])
        w.page.mouse.click(box["x"] + x, box["y"] + y)
        eta = w.page.locator("#details [data-field=eta_dropoff]")
        eta.wait_for(timeout=10_000)
        api = httpx.get(f"{base}/v1/orders/{target['id']}", headers=auth).json()
        assert api["eta_dropoff"] is not None
        assert float(eta.get_attribute("data-seconds")) == pytest.approx(api["eta_dropoff"], abs=1e-6)
        assert eta.inner_text().strip() == time.strftime("%H:%M:%S", time.gmtime(round(api["eta_dropoff"])))
        w.page.screenshot(path=str(_shots(tmp_path) / "dashboard-live.png"))
        assert w.problems() == []
        _own_origin_only(w, base)
        w.ctx.close()


def _isolated_order(w: Watched, fr: dict[str, Any]) -> dict[str, Any]:
    """An assigned order whose pickup marker is at least 12 CSS px from every other order and driver marker."""
    o, d = fr["orders"], fr["drivers"]
    pts = w.page.evaluate(
        "(xy) => xy.map(([x, y]) => window.gd.project(x, y))",
        [[x, y] for x, y in zip(o["px"], o["py"], strict=True)]
        + [[x, y] for x, y, s in zip(d["x"], d["y"], d["status"], strict=True) if s != OFF_SHIFT],
    )
    n_o = len(o["id"])
    w_px, h_px = w.page.evaluate("(m => [m.clientWidth, m.clientHeight])(document.getElementById('map'))")
    for k in range(n_o):
        if o["status"][k] != 1:
            continue
        px, py = pts[k]
        if not (20 < px < w_px - 20 and 20 < py < h_px - 20):
            continue
        near = [j for j, (qx, qy) in enumerate(pts) if j != k and (qx - px) ** 2 + (qy - py) ** 2 < 12**2]
        if not near:
            return {"id": o["id"][k], "px": o["px"][k], "py": o["py"][k]}
    pytest.fail(f"no assigned order stands apart on the map at frame {fr['i']} ({n_o} open orders)")


def _record(out: Path, policy: str) -> Path:
    path = out / f"{policy}.jsonl.xz"
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", "simulate", "--scenario", "city-1000", "--policy", policy,
         "--record", str(path), "--no-progress", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return path


def test_replay_side_by_side_seeks_in_under_a_second(browser: Any, tmp_path: Path) -> None:
    a, b = _record(tmp_path, "nearest"), _record(tmp_path, "hungarian")
    with server_process("dashboard", "--replay", str(a), "--replay", str(b), wait_s=60) as base:
        w = Watched(browser)
        w.page.goto(f"{base}/")
        w.wait_body("frame", lambda v: v >= 0)
        assert w.wait_body("runCount", lambda v: v == 2) == 2
        for minute in (12 * 60 + 30, 9 * 60 + 5, 19 * 60):  # 12:30, then back to 09:05, then 19:00
            want = httpx.get(f"{base}/v1/runs/0/frames/at", params={"t": minute * 60.0}).json()
            t0 = time.perf_counter()
            w.page.evaluate("(m) => window.gd.seek(m)", minute)
            w.wait_body("frame", lambda v, i=want["i"]: v == i, timeout_s=5)
            w.wait_body("frame1", lambda v, i=want["i"]: v == i, timeout_s=5)
            assert time.perf_counter() - t0 < 1.0
        w.page.wait_for_timeout(1500)  # the driver table refreshes at most once a second
        w.page.screenshot(path=str(_shots(tmp_path) / "dashboard-replay.png"))
        assert w.problems() == []
        _own_origin_only(w, base)
        w.ctx.close()
