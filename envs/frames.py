"""Dashboard frames: what a manager's screen shows of a running day, as plain JSON-able dicts.

``FrameBuilder(sim)`` reads the simulator's arrays (never changes them):

* ``city()`` -- what does not change during a day: nodes, road segments, zone rectangles, which drivers are
  the owned fleet, the names behind every code;
* ``frame(i)`` -- the state now: every driver's position and status, the open orders with their SLA state and
  service tier, surge and demand - supply per zone, the day's KPIs so far and the ledger's running totals, and
  (``table=True``) every driver's scorecard.

A frame is built from vectorised reads of the arrays (no loop over drivers or orders): ~2-5 ms for ``city-1000``
(``benchmarks/bench_dashboard.py``). Positions are whole metres, money euros with cents, rates 4 decimals, so a
frame is compact JSON.

``Recorder`` (``gigdispatch simulate --record FILE``, ``evaluate --record DIR``) writes a day as xz-compressed JSON
lines: the first line ``{"city": CITY}``, then one frame per step, scorecards every ``table_every`` frames. xz
(``lzma`` preset 1) because consecutive frames repeat most of each other, farther back than gzip's 32 KB window
sees: a ``city-1000`` day is ~3 MB against ~7.7 MB as gzip, and reads back in ~0.2 s. The file appears whole
(written under a temporary name, renamed when the day ends). ``read_recording`` loads one back (xz or gzip),
checked, for ``gigdispatch dashboard --replay``.
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from gigdispatch.envs.core.atomic import _create_temp
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.types import (
    ACC_ACCESS_DENIED,
    ACC_APPLICANT,
    ACC_SUSPENDED,
    ORDER_ASSIGNED,
    ORDER_CANCELLED,
    ORDER_DELIVERED,
    ORDER_FUTURE,
    ORDER_LOST,
    ORDER_OFFERED,
    ORDER_OPEN,
    ORDER_PICKED,
    ORDER_STATUS_NAMES,
    PH_DRIVING,
    PH_OFFLINE,
    SERVICE_LEVELS,
    STOP_DROPOFF,
    VEHICLES,
)

if TYPE_CHECKING:
    from gigdispatch.envs.core.sim import Simulator

FORMAT = "gigdispatch-dashboard/1"
STATUS_NAMES = (
    "idle",
    "to_pickup",
    "delivering",
    "repositioning",
    "off_shift",
    "suspended",
    "applicant",
    "access_denied",
)
ST_IDLE, ST_TO_PICKUP, ST_DELIVERING, ST_REPOSITIONING, ST_OFF_SHIFT, ST_SUSPENDED, ST_APPLICANT, ST_DENIED = range(8)
SLA_NAMES = ("on_track", "at_risk", "late")
ORDER_STATE_NAMES = ("open", "assigned", "picked")  # open includes an offer waiting for its answer
_LIVE = (ORDER_OPEN, ORDER_OFFERED, ORDER_ASSIGNED, ORDER_PICKED)  # created, neither delivered nor cancelled
# the KPI series of the charts (``kpi_point``), with the ``compute_kpis`` key each one equals at the day's end
KPI_SERIES = {
    "on_time_rate": "on_time_rate",
    "click_to_door_min": "click_to_door_mean_min",
    "acceptance_rate": "acceptance_rate",
    "utilisation": "utilization",
    "margin_eur": "platform_margin",
    "surge_mean": "",  # mean surge over zones now
    "cancelled": "orders_cancelled",
}
TABLE_FIELDS = ("acceptance", "on_time", "rating", "service_min", "performance", "earnings", "deliveries")


def clock(t: float) -> str:
    """Seconds since midnight as ``HH:MM`` (past midnight: 24:10, ...)."""
    m = int(t // 60)
    return f"{m // 60:02d}:{m % 60:02d}"


def _num(x: float, nd: int = 4) -> float | None:
    """A float for JSON: rounded, ``None`` for nan (a ratio with nothing to divide)."""
    return None if not math.isfinite(x) else round(float(x), nd)


def driver_status(sim: Simulator) -> np.ndarray:
    """(D,) int8 dashboard status of every driver (``STATUS_NAMES``): account states first (applicant, access
    denied, suspended), then off shift (offline), delivering (an order on board), to pickup (orders assigned,
    none on board), repositioning (driving with an empty route), else idle (standing, or serving nothing)."""
    dr, od = sim.drivers, sim.orders
    out = np.full(dr.n, ST_IDLE, np.int8)
    has_route = dr.route_len > 0
    drop = (dr.route_kind == STOP_DROPOFF) & (dr.route_order >= 0)
    onboard = np.zeros(drop.shape, bool)
    onboard[drop] = od.status[dr.route_order[drop]] == ORDER_PICKED
    carrying = onboard.any(axis=1)
    out[(dr.phase == PH_DRIVING) & ~has_route] = ST_REPOSITIONING
    out[has_route & ~carrying] = ST_TO_PICKUP
    out[carrying] = ST_DELIVERING
    out[dr.phase == PH_OFFLINE] = ST_OFF_SHIFT
    out[dr.account == ACC_SUSPENDED] = ST_SUSPENDED
    out[dr.account == ACC_APPLICANT] = ST_APPLICANT
    out[dr.account == ACC_ACCESS_DENIED] = ST_DENIED
    return out


def order_sla(sim: Simulator, orders: np.ndarray, eta: np.ndarray | None = None) -> np.ndarray:
    """(len(orders),) int8 SLA state (``SLA_NAMES``) of live orders: late once the deadline has passed, at risk
    when the estimated delivery (or, unassigned, the straight trip from now or the ready time) comes within the
    SLA margin of the deadline (``Simulator.at_risk``'s rule), else on track. ``eta``: ``order_eta()``."""
    od = sim.orders
    out = np.zeros(len(orders), np.int8)
    if not len(orders):
        return out
    margin = sim.cfg.sla.at_risk_minutes * 60.0
    e = (sim.order_eta() if eta is None else eta)[orders]
    dl = od.deadline[orders]
    risky = np.isfinite(e) & (e > dl - margin)
    unassigned = np.isin(od.status[orders], (ORDER_OPEN, ORDER_OFFERED))
    if unassigned.any():
        risky[unassigned] = sim.open_at_risk(orders[unassigned])
    out[risky] = 1
    out[sim.t > dl] = 2
    return out


def kpi_point(sim: Simulator) -> dict[str, float | None]:
    """The day so far, as the charts plot it (``KPI_SERIES``): ``compute_kpis``'s definitions, read from the
    placed orders only and counting the online time of drivers still online up to now (``compute_kpis`` books
    a stretch online when the shift ends, so mid-day its utilisation would divide by too little). About a
    tenth of ``compute_kpis``'s cost: the live day samples it every few steps even with nobody watching."""
    od, dr, st = sim.orders, sim.drivers, sim.state
    placed = slice(0, st.next_order)
    status = od.status[placed]
    dlv = np.flatnonzero(status == ORDER_DELIVERED)
    t_del = od.t_delivered[dlv]
    on_time = float((t_del <= od.deadline[dlv] + 1e-9).mean()) if dlv.size else math.nan
    ctd = float((t_del - od.t_place[dlv]).mean()) / 60.0 if dlv.size else math.nan
    gig = ~dr.always_accept
    offers = int(dr.offers[gig].sum())
    accept = float(dr.accepts[gig].sum()) / offers if offers else math.nan
    stretch = np.where(np.isfinite(dr.t_online_since), st.t - dr.t_online_since, 0.0)
    online = float(dr.online_s.sum() + stretch.sum())
    util = float(dr.busy_s.sum()) / online if online > 0 else math.nan
    return {
        "on_time_rate": _num(on_time),
        "click_to_door_min": _num(ctd),
        "acceptance_rate": _num(accept),
        "utilisation": _num(util),
        "margin_eur": round((st.fees - st.payouts - st.refunds) / 100.0, 2),
        "surge_mean": _num(float(st.surge.mean())),
        "cancelled": int((status == ORDER_CANCELLED).sum()),
    }


def zone_rects(sim: Simulator) -> list[list[int]]:
    """A rectangle ``[x0, y0, x1, y1]`` (metres) per zone: the box of its nodes, padded on every side by a
    twentieth of the median zone's span (a grid's cells then nearly meet); a zone without nodes is its centre."""
    city = sim.city
    xy, z = city.node_xy, city.zone_of
    n_z = city.n_zones
    lo = np.full((n_z, 2), np.inf)
    hi = np.full((n_z, 2), -np.inf)
    np.minimum.at(lo, z, xy)
    np.maximum.at(hi, z, xy)
    span = hi - lo
    pad = float(np.median(span[np.isfinite(span).all(axis=1)]) / 20.0) if n_z else 0.0
    empty = ~np.isfinite(lo).all(axis=1)
    lo[empty] = city.zone_xy[empty]
    hi[empty] = city.zone_xy[empty]
    return np.round(np.concatenate([lo - pad, hi + pad], axis=1)).astype(np.int64).tolist()


class FrameBuilder:
    """Frames of one simulator's day (see the module docstring). ``label``: the policy's name, shown."""

    def __init__(self, sim: Simulator, policy: str = "", seed: int | None = None) -> None:
        self.sim = sim
        self.policy = policy
        self.seed = seed

    def city(self) -> dict[str, Any]:
        sim = self.sim
        city = sim.city
        xy = np.round(city.node_xy).astype(np.int64)
        edges = np.array(list(city.graph.edges()), dtype=np.int64).reshape(-1, 2)  # none: planar points (MDRP)
        lo, hi = city.node_xy.min(axis=0), city.node_xy.max(axis=0)
        return {
            "format": FORMAT,
            "scenario": sim.scenario.name,
            "policy": self.policy,
            "seed": self.seed,
            "t_start": float(sim.t_start),
            "t_end": float(sim.day_end),
            "nodes": xy.tolist(),
            "edges": edges.tolist(),
            "zones": zone_rects(sim),
            "bbox": np.round(np.concatenate([lo, hi])).astype(np.int64).tolist(),
            "n_drivers": int(sim.drivers.n),
            "owned": sim.drivers.owned.astype(np.int8).tolist(),
            "status_names": list(STATUS_NAMES),
            "sla_names": list(SLA_NAMES),
            "level_names": list(SERVICE_LEVELS),
            "order_status_names": list(ORDER_STATE_NAMES),
            "kpi_names": list(KPI_SERIES),
            "table_fields": list(TABLE_FIELDS),
        }

    def frame(self, i: int, table: bool = False) -> dict[str, Any]:
        sim = self.sim
        od, st = sim.orders, sim.state
        status = driver_status(sim)
        xy = np.round(sim.driver_xy()).astype(np.int64)
        live = np.arange(st.first_live, st.next_order)
        live = live[np.isin(od.status[live], _LIVE)]
        o_state = np.where(od.status[live] == ORDER_PICKED, 2, np.where(od.status[live] == ORDER_ASSIGNED, 1, 0))
        pxy = np.round(sim.city.node_xy[od.pickup[live]]).astype(np.int64)
        dxy = np.round(sim.city.node_xy[od.dropoff[live]]).astype(np.int64)
        kpi = kpi_point(sim)
        bal = sim.ledger.balances()
        fr: dict[str, Any] = {
            "i": int(i),
            "t": float(st.t),
            "clock": clock(st.t),
            "done": bool(st.done),
            "active": int((status != ST_OFF_SHIFT).sum()),
            "drivers": {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "status": status.tolist()},
            "orders": {
                "id": live.tolist(),
                "px": pxy[:, 0].tolist(),
                "py": pxy[:, 1].tolist(),
                "dx": dxy[:, 0].tolist(),
                "dy": dxy[:, 1].tolist(),
                "status": o_state.tolist(),
                "sla": order_sla(sim, live).tolist(),
                "level": od.level[live].tolist(),
                "driver": od.driver[live].tolist(),
            },
            "zones": {
                "surge": np.round(st.surge, 2).tolist(),
                "gap": np.round(st.zone_demand - st.zone_supply, 1).tolist(),
            },
            "kpi": kpi,
            "ledger": {
                "fees": st.fees / 100.0,
                "payouts": st.payouts / 100.0,
                "refunds": st.refunds / 100.0,
                "margin": bal["platform"] / 100.0,
                "balanced": sum(bal.values()) == 0 and bal["platform"] == st.fees - st.payouts - st.refunds,
            },
        }
        if table:
            fr["table"] = self.table()
        return fr

    def table(self) -> dict[str, list[float]]:
        """Every driver's scorecard (arrays over driver ids; status is in the frame's ``drivers``)."""
        dr = self.sim.drivers
        svc = np.where(dr.service_n > 0, dr.service_sum / np.maximum(dr.service_n, 1) / 60.0, 0.0)
        return {
            "acceptance": np.round(dr.acceptance_rate(), 3).tolist(),
            "on_time": np.round(dr.on_time_rate(), 3).tolist(),
            "rating": np.round(dr.rating(), 2).tolist(),
            "service_min": np.round(svc, 1).tolist(),
            "performance": np.round(dr.performance(), 3).tolist(),
            "earnings": np.round(dr.earnings / 100.0, 2).tolist(),
            "deliveries": dr.deliveries.tolist(),
        }

    # ------------------------------------------------------------------ tracking (one order, one driver)
    def order(self, o: int) -> dict[str, Any] | None:
        """``GET /v1/orders/{id}``: one order as the platform knows it; None if there is no such order yet
        (not placed, or the customer did not order)."""
        sim = self.sim
        od = sim.orders
        if not 0 <= o < od.n or od.status[o] in (ORDER_FUTURE, ORDER_LOST):
            return None
        s = int(od.status[o])
        eta_drop = eta_pick = None
        d = int(od.driver[o])
        if s in (ORDER_ASSIGNED, ORDER_PICKED) and d >= 0:
            eta = sim.route_eta(np.array([d]))[0]
            mine = sim.drivers.route_order[d] == o
            kinds = sim.drivers.route_kind[d]
            drop = mine & (kinds == STOP_DROPOFF)
            pick = mine & (kinds != STOP_DROPOFF)
            eta_drop = _num(float(eta[drop][0]), 1) if drop.any() else None
            eta_pick = _num(float(eta[pick][0]), 1) if pick.any() else None
        live = s in _LIVE
        sla = SLA_NAMES[int(order_sla(sim, np.array([o]))[0])] if live else None
        if not live:
            done_at = od.t_delivered[o]
            sla = "on_track" if math.isfinite(done_at) and done_at <= od.deadline[o] + 1e-9 else "late"
        xy = sim.city.node_xy
        return {
            "id": o,
            "status": ORDER_STATUS_NAMES[s],
            "driver": d if d >= 0 else None,
            "placed": float(od.t_place[o]),
            "ready": float(od.t_ready[o]),
            "deadline": float(od.deadline[o]),
            "eta_pickup": eta_pick,
            "eta_dropoff": eta_drop,
            "picked_up": _num(float(od.t_pickup[o]), 1),
            "delivered": _num(float(od.t_delivered[o]), 1),
            "sla": sla,
            "level": SERVICE_LEVELS[int(od.level[o])],
            "pickup": {
                "node": int(od.pickup[o]),
                "x": round(float(xy[od.pickup[o], 0])),
                "y": round(float(xy[od.pickup[o], 1])),
            },
            "dropoff": {
                "node": int(od.dropoff[o]),
                "x": round(float(xy[od.dropoff[o], 0])),
                "y": round(float(xy[od.dropoff[o], 1])),
            },
            "fee": (int(od.fee[o]) + int(od.tip[o])) / 100.0,
            "payout": int(od.payout[o]) / 100.0,
        }

    def driver(self, d: int) -> dict[str, Any] | None:
        """``GET /v1/drivers/{id}``: position, status, route with ETAs, scorecard; None for an unknown id."""
        sim = self.sim
        dr = sim.drivers
        if not 0 <= d < dr.n:
            return None
        x, y = sim.driver_xy(np.array([d]))[0]
        L = int(dr.route_len[d])
        eta = sim.route_eta(np.array([d]))[0]
        xy = sim.city.node_xy
        route = [
            {
                "kind": "dropoff" if dr.route_kind[d, s] == STOP_DROPOFF else "pickup",
                "order": int(dr.route_order[d, s]),
                "node": int(dr.route_node[d, s]),
                "x": round(float(xy[dr.route_node[d, s], 0])),
                "y": round(float(xy[dr.route_node[d, s], 1])),
                "eta": _num(float(eta[s]), 1),
            }
            for s in range(L)
        ]
        rows = np.array([d])
        svc = float(dr.service_sum[d] / dr.service_n[d] / 60.0) if dr.service_n[d] else 0.0
        return {
            "id": d,
            "status": STATUS_NAMES[int(driver_status(sim)[d])],
            "owned": bool(dr.owned[d]),
            "vehicle": VEHICLES[int(dr.vehicle[d])],
            "x": round(float(x)),
            "y": round(float(y)),
            "zone": int(sim.driver_zone(rows)[0]),
            "route": route,
            "scorecard": {
                "acceptance_rate": round(float(dr.acceptance_rate()[d]), 4),
                "on_time_rate": round(float(dr.on_time_rate()[d]), 4),
                "rating": round(float(dr.rating()[d]), 3),
                "service_min": round(svc, 2),
                "performance": round(float(dr.performance()[d]), 4),
                "deliveries": int(dr.deliveries[d]),
                "offers": int(dr.offers[d]),
                "accepts": int(dr.accepts[d]),
                "suspensions": int(dr.suspensions[d]),
            },
            "earnings": int(dr.earnings[d]) / 100.0,
        }


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON (no spaces), ``NaN`` refused: frames are built with None for n/a."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


# ------------------------------------------------------------------------------------------ recording
class Recorder:
    """Records a day as xz JSON lines (see the module docstring). Call it after every step (an
    ``after_step`` / ``progress`` callback); ``close()`` when the day is over puts the file in place.
    The first call writes the city line, then the frame of the state after the day's first step."""

    def __init__(self, path: str | os.PathLike[str], policy: str = "", seed: int | None = None, table_every: int = 15):
        self.path = Path(path)
        self.policy, self.seed, self.table_every = policy, seed, max(1, int(table_every))
        self._fb: FrameBuilder | None = None
        self._raw: IO[bytes] | None = None
        self._gz: lzma.LZMAFile | None = None
        self._tmp: Path | None = None
        self.frames = 0

    def start(self, sim: Simulator) -> None:
        self._fb = FrameBuilder(sim, self.policy, self.seed)
        fd, self._tmp = _create_temp(self.path.parent, self.path.name)
        self._raw = os.fdopen(fd, "wb")
        self._gz = lzma.LZMAFile(self._raw, mode="wb", preset=1)  # noqa: SIM115 - open across calls, closed in close()
        self._line({"city": self._fb.city()})
        self.frames = 0

    def _line(self, obj: dict[str, Any]) -> None:
        assert self._gz is not None
        self._gz.write(dumps(obj).encode())
        self._gz.write(b"\n")

    def __call__(self, sim: Simulator) -> None:
        if self._fb is None:
            self.start(sim)
        assert self._fb is not None
        self._line(self._fb.frame(self.frames, table=self.frames % self.table_every == 0 or sim.done))
        self.frames += 1

    def close(self) -> None:
        """Finish the file and move it into place (atomic: a reader sees the whole day or nothing)."""
        if self._gz is None or self._raw is None or self._tmp is None:
            return
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._tmp, self.path)
        self._gz = self._raw = self._tmp = None

    def abort(self) -> None:
        """Drop the unfinished file (the run failed): nothing is left under the final name."""
        for f in (self._gz, self._raw):
            if f is not None:
                f.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._gz = self._raw = self._tmp = None


class RecordingError(InputError):
    """A recording that cannot be replayed: one line naming the file and the reason."""


def read_recording(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[bytes], np.ndarray]:
    """(city, frames as JSON bytes, frame times) of a recorded day; ``RecordingError`` naming the file and the
    line for anything that is not one (missing, not gzip, not JSON, no city line, frames out of order)."""
    p = Path(path)
    where = f"--replay {str(path)!r}"
    if not p.is_file():
        raise RecordingError(f"{where}: no such file (record a day with 'gigdispatch simulate --record FILE')")
    try:
        with p.open("rb") as f:
            magic = f.read(6)
        opener = lzma.open if magic == b"\xfd7zXZ\x00" else gzip.open if magic[:2] == b"\x1f\x8b" else None
        if opener is None:
            raise RecordingError(f"{where}: not a recording (neither xz nor gzip; record one with --record)")
        with opener(p, "rb") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise RecordingError(f"{where}: cannot read the recording ({exc})") from None
    if not lines:
        raise RecordingError(f"{where}: empty file")
    try:
        head = json.loads(lines[0])
    except ValueError:
        raise RecordingError(f"{where}: line 1 is not JSON") from None
    city = head.get("city") if isinstance(head, dict) else None
    if not isinstance(city, dict) or city.get("format") != FORMAT:
        raise RecordingError(f"{where}: line 1 is not a {FORMAT} city line (is this a recorded day?)")
    frames = [ln for ln in lines[1:] if ln.strip()]
    if not frames:
        raise RecordingError(f"{where}: no frames after the city line (the day was not recorded)")
    times = np.empty(len(frames))
    last = -np.inf
    for n, ln in enumerate(frames):
        t = _frame_time(ln)
        if t is None:
            raise RecordingError(f"{where}: line {n + 2} is not a frame (no 't')")
        if t < last:
            raise RecordingError(f"{where}: line {n + 2}: frame time {t} goes back in time")
        times[n] = last = t
    return city, frames, times


def _frame_time(line: bytes) -> float | None:
    """The ``t`` of a frame line: read from its head (frames start ``{"i":N,"t":T,``) without parsing all of it,
    falling back to a full parse."""
    head = line[:64]
    k = head.find(b'"t":')
    if k >= 0:
        end = head.find(b",", k)
        try:
            return float(head[k + 4 : end])
        except ValueError:
            pass
    try:
        t = json.loads(line).get("t")
    except (ValueError, AttributeError):
        return None
    return float(t) if isinstance(t, int | float) else None
