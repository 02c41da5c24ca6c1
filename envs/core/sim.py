"""The gigdispatch simulator core: vectorised over drivers and orders, NumPy only.

Within one step, from ``t`` to ``t + dt``, events happen in this order:

1. **Decision** (at ``t``): the policy's unassignments, offers and repositioning moves are applied.
   Invalid pairs are skipped and counted (``info["invalid"]``); malformed decisions raise
   ``ActionError``. Conflicts resolve first-come: a driver or an order named twice keeps its first pair.
   Drivers that always accept (owned fleet) take the order at once.
2. **Traffic**: the zone slowdown factors for the step are read; an incident that starts or ends
   in the step re-sequences the routes of the drivers in its zone. ETAs follow from the factors.
3. **Movement and stops**: every driver advances through as many *arrive -> pickup/drop-off ->
   depart* transitions as fit in the step, each at its exact time (an inner loop over transitions,
   vectorised over drivers). Arrival fires when the driver is within the geofence of the stop.
   Pickups wait for the ready time; a pickup that would fall after the driver's shift end is
   released back to open. Drop-offs settle the payout (proof of delivery), update the scorecard
   and may suspend the driver.
4. **Offer answers** due by ``t + dt``: accepted orders are inserted into the driver's route,
   declined ones re-open (with their decline count raised, the auction lever).
5. **Accounts and shifts**: applicants are verified, suspensions end, drivers log on (scheduled
   shifts, and flex drivers drawn by surge and earnings) and log off when idle past shift end
   (closing the shift: hourly guarantee top-up or owned-fleet wage).
6. **Cancellations**: unassigned orders past their customer's patience cancel (refund + penalty).
7. **New orders** placed in the step are quoted (fee with the zone's surge) and convert or not.
8. **Surge** per zone is recomputed from open orders and idle drivers.

The episode ends at ``horizon.end + drain`` or earlier, once the horizon has passed and no order is
left in flight. All randomness comes from ``reset(seed)`` through named sub-streams.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np

from envs.core.ledger import Ledger
from envs.core.scenario import Scenario
from envs.core.types import (
    ACC_ACCESS_DENIED,
    ACC_ACTIVE,
    ACC_APPLICANT,
    ACC_SUSPENDED,
    LED_CORRECTION,
    LED_FEE,
    LED_GUARANTEE,
    LED_PAYOUT,
    LED_REFUND,
    LED_WAGE,
    ORDER_ASSIGNED,
    ORDER_CANCELLED,
    ORDER_DELIVERED,
    ORDER_FUTURE,
    ORDER_LOST,
    ORDER_OFFERED,
    ORDER_OPEN,
    ORDER_PICKED,
    PH_DRIVING,
    PH_IDLE,
    PH_OFFLINE,
    PH_SERVICE,
    STOP_DROPOFF,
    STOP_PICKUP,
    Drivers,
    Orders,
)

RNG_STREAMS = ("demand", "fleet", "traffic", "behaviour", "policy")
_EPS = 1e-9


class ActionError(ValueError):
    """A decision that does not have the documented form (wrong shape, type or id range)."""


@dataclass
class Decision:
    """What a policy does at one decision epoch. All fields are 1-D integer arrays.

    ``order[i]`` is offered to ``driver[i]`` at escalation ``level[i]`` (0 = base payout);
    ``reposition_driver[j]`` (an idle driver) moves to ``reposition_zone[j]`` (its centre node; if it
    accepts an offer on the way it diverts from where it is); ``unassign`` lists
    assigned-but-not-picked-up orders to take back (they re-open and may be offered again).
    """

    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    driver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    level: np.ndarray | None = None
    reposition_driver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reposition_zone: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unassign: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def first_occurrence(a: np.ndarray) -> np.ndarray:
    """Bool mask of the first occurrence of each value in 1-D ``a`` (a dict for short arrays, a sort for long)."""
    if len(a) <= 64:
        values = a.tolist()
        if len(set(values)) == len(values):  # no repeats (the usual case)
            return np.ones(len(a), bool)
        seen: set[int] = set()
        out = np.zeros(len(a), bool)
        for i, v in enumerate(values):
            if v not in seen:
                seen.add(v)
                out[i] = True
        return out
    if (a[1:] > a[:-1]).all():  # strictly increasing (e.g. from nonzero()): no repeats
        return np.ones(len(a), bool)
    out = np.zeros(len(a), bool)
    out[np.unique(a, return_index=True)[1]] = True
    return out


def _add_unique(a: np.ndarray, idx: np.ndarray, v: np.ndarray | int) -> None:
    """``np.add.at`` for indices known to be distinct (buffered fancy indexing is then exact and faster)."""
    a[idx] += v


def _nz(mask: np.ndarray) -> np.ndarray:
    """Indices of the True entries of a 1-D mask (``np.flatnonzero`` without its Python-level ravel)."""
    return mask.nonzero()[0]


class _Rows:
    """Read-only view of some drivers' fields: ``_Rows(drivers, rows).node == drivers.node[rows]``."""

    def __init__(self, drivers: Drivers, rows: np.ndarray) -> None:
        self._d, self._rows = drivers, rows

    def __getattr__(self, name: str) -> np.ndarray:
        value = getattr(self._d, name)[self._rows]
        setattr(self, name, value)
        return value


def _as_ids(name: str, value: object, upper: int) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - numpy accepts almost anything
        raise ActionError(f"decision.{name}: not an array ({exc})") from None
    if arr.ndim != 1:
        raise ActionError(f"decision.{name}: must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ActionError(f"decision.{name}: must hold integer ids, got dtype {arr.dtype}")
    if (arr.view(f"u{arr.itemsize}") >= upper).any() if arr.dtype.isnative else (arr.min() < 0 or arr.max() >= upper):
        # (the unsigned view: negative ids wrap to huge values, so one comparison checks both ends)
        bad = int(arr[(arr < 0) | (arr >= upper)][0])
        raise ActionError(f"decision.{name}: id {bad} is out of range 0..{upper - 1}")
    return arr.astype(np.int64, copy=False)  # the simulator only reads the ids (fancy indexing copies)


class Simulator:
    """One city, one day. ``reset(seed)`` draws an episode; ``step(decision)`` advances one step."""

    def __init__(self, scenario: Scenario, record_events: bool = False) -> None:
        self.scenario = scenario
        self.cfg = scenario.cfg
        self.city = scenario.city
        self.record_events = record_events
        c = self.cfg
        self.dt = float(c.horizon.step_seconds)
        self.t_start = float(c.horizon.start)
        self.t_end = float(c.horizon.end)
        self.day_end = self.t_end + c.horizon.drain_minutes * 60.0
        self.S = int(c.fleet.max_route_stops)
        self.n_levels = int(c.pricing.payout.escalation_levels)
        self.pickup_svc = c.fleet.pickup_service_minutes * 60.0
        self.drop_svc = c.fleet.dropoff_service_minutes * 60.0
        # smallest vehicle size class that can carry a volume (for the fee's size term)
        vs = sorted(c.fleet.vehicles.values(), key=lambda v: v.size_class)
        self._size_caps = np.array([v.capacity_litres for v in vs])
        self._size_cls = np.array([v.size_class for v in vs])
        fee = c.pricing.fee
        self._speed_fee = np.array([fee.express, fee.standard, fee.same_day])  # by service level
        self._size_fee = np.array(fee.size)  # by vehicle size class
        self.t = self.t_start
        self._ready = False
        self._placed_src: np.ndarray | None = None  # the t_place array that _placed_list was built from
        self._placed_list: list[float] = []

    # ------------------------------------------------------------------------------------------ reset
    def reset(self, seed: int | None = None) -> None:
        ss = np.random.SeedSequence(seed)
        self.seed = seed
        self.rng = {name: np.random.default_rng(s) for name, s in zip(RNG_STREAMS, ss.spawn(len(RNG_STREAMS)), strict=True)}
        o, d, self.traffic = self.scenario.sample(self.rng)
        n_o = len(o["t_place"])
        nan = np.nan
        self.orders = Orders(
            **o,
            status=np.full(n_o, ORDER_FUTURE, np.int8),
            fee=np.zeros(n_o, np.int64),
            surge=np.ones(n_o, np.float32),
            driver=np.full(n_o, -1, np.int32),
            payout=np.zeros(n_o, np.int64),
            payout_level=np.zeros(n_o, np.int8),
            declines=np.zeros(n_o, np.int16),
            last_decliner=np.full(n_o, -1, np.int32),
            t_offer_answer=np.full(n_o, np.inf),
            offer_accept=np.zeros(n_o, bool),
            t_assigned=np.full(n_o, nan),
            t_pickup=np.full(n_o, nan),
            t_delivered=np.full(n_o, nan),
            t_cancelled=np.full(n_o, nan),
            refund=np.zeros(n_o, np.int64),
            bundle_id=np.full(n_o, -1, np.int64),
        )
        n_d = len(d["vehicle"])
        S = self.S
        zf = np.zeros(n_d)
        applicant = np.isfinite(d["t_verified"])
        self.drivers = Drivers(
            **d,
            account=np.where(applicant, ACC_APPLICANT, ACC_ACTIVE).astype(np.int8),
            phase=np.full(n_d, PH_OFFLINE, np.int8),
            node=d["home"].copy(),
            leg_to=d["home"].copy(),
            leg_ff=zf.copy(),
            leg_left=zf.copy(),
            leg_geo=zf.copy(),
            leg_dist=zf.copy(),
            driven_m=zf.copy(),
            t_event=np.full(n_d, np.inf),
            t_depart=np.full(n_d, np.inf),
            t_arrive=np.full(n_d, np.inf),
            event_done=np.zeros(n_d, bool),
            group_n=np.zeros(n_d, np.int16),
            route_node=np.full((n_d, S), -1, np.int32),
            route_order=np.full((n_d, S), -1, np.int32),
            route_kind=np.full((n_d, S), -1, np.int8),
            route_len=np.zeros(n_d, np.int16),
            load=zf.copy(),
            offer_order=np.full(n_d, -1, np.int32),
            t_suspended_until=np.full(n_d, -np.inf),
            t_online_since=np.full(n_d, np.nan),
            online_s=zf.copy(),
            busy_s=zf.copy(),
            offers=np.zeros(n_d, np.int32),
            accepts=np.zeros(n_d, np.int32),
            deliveries=np.zeros(n_d, np.int32),
            on_time=np.zeros(n_d, np.int32),
            late_streak=np.zeros(n_d, np.int16),
            suspensions=np.zeros(n_d, np.int16),
            rating_sum=zf.copy(),
            rating_n=np.zeros(n_d, np.int32),
            service_sum=zf.copy(),
            service_n=np.zeros(n_d, np.int32),
            earnings=np.zeros(n_d, np.int64),
            shift_closed=np.zeros(n_d, bool),
        )
        self.shift_earn = np.zeros(n_d, np.int64)  # (D,) cents earned in the current shift
        self.committed = np.zeros(n_d)  # (D,) litres of orders in the route or on board
        # (D,) drivers whose offers are answered from outside (agents in the fleet env) through respond()
        self.external_accept = np.zeros(n_d, bool)
        self.ledger = Ledger(capacity=max(1024, 3 * n_o))
        self._fees = self._payouts = self._refunds = 0  # running totals in cents (the ledger is the record)
        self.t = self.t_start
        self.surge = np.ones(self.city.n_zones)
        self.zone_demand = np.zeros(self.city.n_zones)  # (Z,) open orders by pickup zone, as of the end of the last step
        self.zone_supply = np.zeros(self.city.n_zones)  # (Z,) idle eligible drivers by zone, as of the end of the last step
        self.factor = self.traffic.factor(self.t)
        self._next = 0  # first order not yet placed
        self._lo = 0  # orders before this index are all settled (terminal or lost)
        self._bundles = 0
        self._recent_eph = 0.0  # EWMA of platform-wide driver earnings per online hour (euros)
        self.counters = {
            "invalid": 0,
            "conflicts": 0,
            "insert_failed": 0,
            "released_after_shift": 0,
            "resequenced": 0,
            "eta_updates": 0,
            "disputes": 0,
            "logins_flex": 0,
        }
        self.events: list[tuple[np.ndarray, ...]] = []  # (t, driver, order, kind, node) when recording
        self.done = False
        self._ready = True
        self._accounts_next = -np.inf  # next time an applicant is verified or a suspension ends
        self._accounts(self.t)
        self._login(self.t)
        self.online_peak = int((self.drivers.phase != PH_OFFLINE).sum())

    # ------------------------------------------------------------------------------------------ step
    def step(self, decision: Decision | None = None) -> dict[str, float]:
        """Advance one step. Returns the step's money terms (euros) and counts."""
        if not self._ready:
            raise RuntimeError("call reset(seed) before step()")
        if self.done:
            raise RuntimeError("the episode is over: call reset(seed) to start another")
        fees0, pay0, ref0 = self._money()
        invalid0 = self.counters["invalid"]
        if decision is not None:
            self._apply(decision)
        t0, t1 = self.t, self.t + self.dt
        self.factor = self.traffic.factor(t0)
        if self.traffic.incident_changes(t0 - self.dt, t0):
            self._on_traffic_change(t0)
        self._move(t0, t1)
        self._answer_offers(t1)
        self._accounts(t1)
        n_online = self._logoff(t1)
        n_online += self._login(t1)
        self.online_peak = max(self.online_peak, n_online)
        self._cancel(t1)
        self._place_orders(t0, t1)
        self._update_surge()
        self._update_window()
        self.t = t1
        if self.t >= self.day_end - _EPS or (self.t >= self.t_end and self._nothing_in_flight()):
            self._close_day()
            self.done = True
        fees1, pay1, ref1 = self._money()
        return {
            "fees": (fees1 - fees0) / 100.0,
            "payouts": (pay1 - pay0) / 100.0,
            "refunds": (ref1 - ref0) / 100.0,
            "profit": ((fees1 - fees0) - (pay1 - pay0) - (ref1 - ref0)) / 100.0,
            "invalid": float(self.counters["invalid"] - invalid0),
        }

    def _money(self) -> tuple[int, int, int]:
        return self._fees, self._payouts, self._refunds

    # ------------------------------------------------------------------------------ policy helpers
    def open_orders(self) -> np.ndarray:
        """Indices of orders waiting for a driver (status open), oldest first."""
        lo, hi = self._lo, self._next
        return lo + _nz(self.orders.status[lo:hi] == ORDER_OPEN)

    def active_orders(self) -> slice:
        """The slice of orders that may still change (placed, not all settled)."""
        return slice(self._lo, self._next)

    def eligible(self, idle_only: bool = False) -> np.ndarray:
        """(D,) bool: drivers that may receive an offer now."""
        dr = self.drivers
        if idle_only:  # an empty route and idle or driving imply room for two stops (S >= 2) and being online
            return (
                (dr.account == ACC_ACTIVE)
                & (dr.offer_order < 0)
                & (self.t < dr.shift_end)
                & (dr.route_len == 0)
                & ((dr.phase == PH_IDLE) | (dr.phase == PH_DRIVING))
            )
        return (
            (dr.account == ACC_ACTIVE)
            & (dr.phase != PH_OFFLINE)
            & (dr.offer_order < 0)
            & (self.t < dr.shift_end)
            & (dr.route_len + 2 <= self.S)
        )

    def driver_free(self, drivers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Node and time at which each of ``drivers`` (default: all) finishes its current route, or its
        current leg when it has no route; both arrays are aligned with ``drivers``."""
        dr = self.drivers
        d = np.arange(dr.n) if drivers is None else np.asarray(drivers, dtype=np.int64)
        node = dr.leg_to[d].astype(np.int64)
        t_free = self._leg_arrival(d)
        busy = _nz(dr.route_len[d] > 0)
        if busy.size:
            rows = d[busy]
            eta = self.route_eta(rows)
            last = dr.route_len[rows].astype(np.int64) - 1
            svc = np.where(dr.route_kind[rows, last] == STOP_PICKUP, self.pickup_svc, self.drop_svc) * dr.service_factor[rows]
            t_free[busy] = eta[np.arange(rows.size), last] + svc / 2.0
            node[busy] = dr.route_node[rows, last]
        return node, t_free

    def _leg_arrival(self, d: np.ndarray | None = None) -> np.ndarray:
        """When each of drivers ``d`` (default: all) reaches the end of its current leg (now if not driving)."""
        dr = self.drivers
        if d is None:
            d = np.arange(dr.n)
        phase = dr.phase[d]
        f = self.factor[self.city.zone_of[dr.node[d]]]
        wall = np.maximum(dr.leg_left[d] - dr.leg_geo[d], 0.0) * f
        return np.where(phase == PH_DRIVING, self.t + wall, np.where(phase == PH_SERVICE, dr.t_depart[d], self.t))

    def pickup_eta(self, orders: np.ndarray, drivers: np.ndarray) -> np.ndarray:
        """(len(orders), len(drivers)) seconds from now until each driver could reach each pickup."""
        drivers = np.asarray(drivers, dtype=np.int64)
        node, t_free = self.driver_free(drivers)
        local = np.arange(drivers.size)
        return self._pair_eta(np.asarray(orders)[:, None], local[None, :], drivers, node, t_free)

    def _pair_eta(self, orders: np.ndarray, local: np.ndarray, drivers: np.ndarray, node: np.ndarray, t_free: np.ndarray) -> np.ndarray:
        """Pickup ETA (seconds from now) for broadcast arrays of order ids and positions ``local`` into
        ``drivers`` (whose free node and time are ``node`` and ``t_free``, aligned with ``drivers``)."""
        dn = node[local]
        zf = self.factor[self.city.zone_of[dn]]
        tt = self.city.travel_s(dn, self.orders.pickup[orders])
        return (t_free[local] - self.t) + tt * zf / self.drivers.speed[drivers[local]]

    EXACT_PAIRS = 60_000  # above this many order-driver pairs, candidates are pre-selected with a KD-tree

    def ranks_every_driver(self, n_orders: int, n_drivers: int, k: int) -> bool:
        """Whether ``candidates`` for ``n_orders`` orders among ``n_drivers`` eligible drivers ranks every
        driver (exact), so that a row with fewer than ``k`` entries lists all the order's eligible drivers;
        otherwise it ranks a KD-tree pool of the ``4k`` nearest in straight line."""
        return n_orders * n_drivers <= self.EXACT_PAIRS or n_drivers <= 4 * k

    def candidates(
        self,
        orders: np.ndarray,
        k: int,
        idle_only: bool = False,
        exclude: np.ndarray | None = None,
        among: np.ndarray | None = None,
        free_at: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` eligible drivers by pickup ETA for each order: ``(ids, eta)``, each (len(orders), k), -1/inf padded.

        Drivers that cannot carry the order's volume, or could not pick it up before their shift ends,
        are left out; ``among`` is the (D,) mask of drivers to consider (default ``eligible(idle_only)``,
        for callers that already hold it); ``exclude`` is an optional (D,) mask of
        drivers to leave out too. Exact over all pairs when that is cheap; otherwise the ``4k`` drivers
        nearest in straight line to each pickup (a KD-tree) are ranked by travel-time ETA, which keeps
        the cost O((orders + drivers) log drivers) per call. ``free_at = (node, t_free)``: two (D,) arrays
        holding a caller's ``driver_free(drivers)`` at least at every eligible driver, reused across calls
        within one epoch (the state does not change between them).
        """
        orders = np.asarray(orders, dtype=np.int64)
        elig_mask = self.eligible(idle_only) if among is None else among
        if exclude is not None:
            elig_mask = elig_mask & ~exclude
        elig = _nz(elig_mask)
        n_o = len(orders)
        if n_o == 0 or elig.size == 0:
            return np.full((n_o, k), -1, np.int64), np.full((n_o, k), np.inf)
        if free_at is None:
            node, t_free = self.driver_free(elig)  # aligned with elig
        else:
            node, t_free = free_at[0][elig], free_at[1][elig]
        if self.ranks_every_driver(n_o, elig.size, k):
            return self.top_k(self.feasible_etas(orders, elig, node, t_free), elig, k)
        from scipy.spatial import cKDTree

        tree = cKDTree(self.city.node_xy[node])
        _, local = tree.query(self.city.node_xy[self.orders.pickup[orders]], k=4 * k)
        e = self._pair_eta(orders[:, None], local, elig, node, t_free)  # (n_o, m)
        pool = elig[local]
        dr = self.drivers
        return self.top_k(self._feasible(orders, e, dr.capacity[pool] - self.committed[pool], dr.shift_end[pool]), pool, k)

    def feasible_etas(self, orders: np.ndarray, drivers: np.ndarray, node: np.ndarray, t_free: np.ndarray) -> np.ndarray:
        """(len(orders), len(drivers)) pickup ETAs (seconds from now) of every pair, ``inf`` where the driver cannot
        take the order (its volume over the driver's free room, or a pickup after the shift ends): what
        ``candidates`` ranks when it ranks every driver. ``node``/``t_free`` are the drivers' ``driver_free``
        (aligned with ``drivers``). Each entry depends on its pair only, so a sub-matrix of the result equals
        the result for the sub-sets (callers may cache it within one decision epoch)."""
        dr = self.drivers
        # per-driver terms as (1, m) rows, no gathers through an index grid; _pair_eta's formula, term for term
        zf = self.factor[self.city.zone_of[node]]
        tt = self.city.travel_s_to(self.orders.pickup[orders], node)
        e = (t_free - self.t)[None, :] + tt * zf / dr.speed[drivers]
        return self._feasible(orders, e, (dr.capacity[drivers] - self.committed[drivers])[None, :], dr.shift_end[drivers][None, :])

    def _feasible(self, orders: np.ndarray, e: np.ndarray, room: np.ndarray, shift_end: np.ndarray) -> np.ndarray:
        """``e`` with ``inf`` where the order does not fit the driver's ``room`` or its pickup falls after ``shift_end``."""
        fits = room >= self.orders.volume[orders][:, None]
        # the pickup must happen before the driver's shift ends (no pickups after it)
        t_pick = np.maximum(self.t + e + self.pickup_svc / 2.0, self.orders.t_ready[orders][:, None])
        fits &= t_pick <= shift_end
        return np.where(fits, e, np.inf)

    @staticmethod
    def top_k(e: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` smallest finite entries of each row of ``e``, ascending, as ``(ids, eta)``, each (rows, k),
        -1/inf padded; ``ids`` names the columns: (m,) shared, or (rows, m). Equal entries keep the order
        ``np.argpartition`` leaves them in (a row with at most ``k`` columns: the earlier column first)."""
        n_o, m = e.shape
        kk = min(k, m)
        r = np.arange(n_o)[:, None]
        if kk < m:  # the kk smallest of each row, then those sorted (stable)
            part = np.argpartition(e, kk - 1, axis=1)[:, :kk]
            pe = e[r, part]
            srt = np.argsort(pe, axis=1, kind="stable")
            part = part[r, srt]
            pe = pe[r, srt]
        else:  # every column: one stable sort
            part = np.argsort(e, axis=1, kind="stable")
            pe = e[r, part]
        chosen = ids[part] if ids.ndim == 1 else ids[r, part]
        chosen = np.where(np.isfinite(pe), chosen, -1)
        if kk == k:
            return chosen, pe
        out_ids = np.full((n_o, k), -1, np.int64)
        eta = np.full((n_o, k), np.inf)
        out_ids[:, :kk] = chosen
        eta[:, :kk] = pe
        return out_ids, eta

    def pickup_m(self, orders: np.ndarray, drivers: np.ndarray) -> np.ndarray:
        """Road metres from where each driver's current leg ends to its paired order's pickup."""
        return self.city.dist_m(self.drivers.leg_to[drivers], self.orders.pickup[orders])

    def payout_cents(
        self, orders: np.ndarray, drivers: np.ndarray, level: np.ndarray | int = 0, pickup_m: np.ndarray | None = None
    ) -> np.ndarray:
        """Payout (cents, tip excluded) a driver would get for an order at an escalation level. ``pickup_m``:
        the drivers' ``pickup_m(orders, drivers)``, when the caller already holds it."""
        p = self.cfg.pricing.payout
        o = self.orders
        if pickup_m is None:
            pickup_m = self.pickup_m(orders, drivers)
        km = (pickup_m + self.city.dist_m(o.pickup[orders], o.dropoff[orders])) / 1000.0
        eur = p.base + p.per_km * np.maximum(km - p.free_km, 0.0) + p.surge_incentive * (o.surge[orders] - 1.0)
        mult = np.minimum(1.0 + p.escalation_step * np.asarray(level), p.escalation_cap)
        cents = np.round(eur * mult * 100.0).astype(np.int64)
        return np.where(self.drivers.owned[drivers], 0, cents)

    def accept_prob(
        self, orders: np.ndarray, drivers: np.ndarray, payout_cents: np.ndarray, pickup_m: np.ndarray | None = None
    ) -> np.ndarray:
        """Probability that each driver accepts each paired order at that payout (1 for always-accept drivers).
        ``pickup_m`` as in ``payout_cents``."""
        a = self.cfg.fleet.acceptance
        dr, o = self.drivers, self.orders
        pickup_km = (self.pickup_m(orders, drivers) if pickup_m is None else pickup_m) / 1000.0
        pref = (self.city.zone_of[o.pickup[orders]] == dr.pref_zone[drivers]).astype(np.float64)
        load = self.committed[drivers] / np.maximum(dr.capacity[drivers], 1e-9)
        z = (
            a.intercept
            + dr.accept_bias[drivers]
            + a.pay * (payout_cents / 100.0 - a.reservation_pay)
            + a.pickup_km * pickup_km
            + a.preferred_zone * pref
            + a.load * np.minimum(load, 1.0)
        )
        p = 1.0 / (1.0 + np.exp(-z))
        return np.where(dr.always_accept[drivers], 1.0, p)

    def route_eta(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(len(rows), S) estimated event time (pickup or drop-off) at each route stop under current traffic,
        nan padded; ``rows`` are driver ids (default: all drivers)."""
        o = self.orders
        rows = np.arange(self.drivers.n) if rows is None else np.asarray(rows, dtype=np.int64)
        dr = _Rows(self.drivers, rows)
        n, S = len(rows), self.S
        eta = np.full((n, S), np.nan)
        f = self.factor[self.city.zone_of[dr.node]]
        serving = dr.phase == PH_SERVICE
        t_cur = self._leg_arrival(rows)
        pos = np.where(dr.phase == PH_DRIVING, dr.leg_to, dr.node).astype(np.int64)
        prev_node = np.full(n, -1, np.int64)
        prev_kind = np.full(n, -1, np.int64)
        prev_eta = np.full(n, np.nan)
        visit_end = t_cur.copy()
        for s in range(S):
            valid = s < dr.route_len
            if not valid.any():
                break
            node_s = np.where(valid, dr.route_node[:, s], 0).astype(np.int64)
            kind_s = dr.route_kind[:, s]
            order_s = np.where(valid, dr.route_order[:, s], 0)
            in_service = serving & (s < dr.group_n)
            same_visit = (node_s == prev_node) & (kind_s == prev_kind)
            svc = np.where(kind_s == STOP_PICKUP, self.pickup_svc, self.drop_svc) * dr.service_factor
            travel = np.where(
                s == 0, self.city.travel_s(pos, node_s) * f / dr.speed, self.city.travel_s(np.maximum(prev_node, 0), node_s) * f / dr.speed
            )
            travel = np.where((s == 0) & (dr.phase == PH_DRIVING) & (dr.leg_to == node_s), 0.0, travel)
            arr = visit_end + travel
            ev = np.where(kind_s == STOP_PICKUP, np.maximum(arr + svc / 2.0, o.t_ready[order_s]), arr + svc / 2.0)
            ev = np.where(same_visit, np.where(kind_s == STOP_PICKUP, np.maximum(prev_eta, o.t_ready[order_s]), prev_eta), ev)
            ev = np.where(in_service, dr.t_event, ev)
            new_end = np.where(in_service, dr.t_depart, np.where(same_visit, visit_end + np.maximum(ev - prev_eta, 0.0), ev + svc / 2.0))
            eta[:, s] = np.where(valid, ev, np.nan)
            visit_end = np.where(valid, new_end, visit_end)
            prev_eta = np.where(valid, ev, prev_eta)
            prev_node = np.where(valid, node_s, prev_node)
            prev_kind = np.where(valid, kind_s, prev_kind)
        return eta

    def order_eta(self) -> np.ndarray:
        """(O,) estimated drop-off time of assigned or picked-up orders (nan otherwise)."""
        eta = self.route_eta()
        dr = self.drivers
        out = np.full(self.orders.n, np.nan)
        m = (dr.route_kind == STOP_DROPOFF) & (dr.route_order >= 0)
        out[dr.route_order[m]] = eta[m]
        return out

    def at_risk(self) -> np.ndarray:
        """Orders whose estimated delivery is past their deadline (minus the SLA margin), or that are still
        open although even the nearest driver's trip could not make the deadline."""
        margin = self.cfg.sla.at_risk_minutes * 60.0
        o = self.orders
        eta = self.order_eta()
        risky = _nz(np.isfinite(eta) & (eta > o.deadline - margin))
        op = self.open_orders()
        if op.size:
            trip = self.city.travel_s(o.pickup[op], o.dropoff[op])
            late_open = op[np.maximum(self.t, o.t_ready[op]) + trip > o.deadline[op] - margin]
            risky = np.union1d(risky, late_open)
        return risky

    # ---------------------------------------------------------------------------------- decisions
    def _apply(self, dec: Decision) -> None:
        n_o, n_d = self.orders.n, self.drivers.n
        # validate every field before applying anything: a malformed decision has no effect at all
        un = _as_ids("unassign", dec.unassign, n_o)
        order = _as_ids("order", dec.order, n_o)
        driver = _as_ids("driver", dec.driver, n_d)
        if len(order) != len(driver):
            raise ActionError(f"decision.driver: length {len(driver)} differs from decision.order's {len(order)}")
        level = np.zeros(len(order), np.int64) if dec.level is None else _as_ids("level", dec.level, self.n_levels)
        if len(level) != len(order):
            raise ActionError(f"decision.level: length {len(level)} differs from decision.order's {len(order)}")
        rep_d = _as_ids("reposition_driver", dec.reposition_driver, n_d)
        rep_z = _as_ids("reposition_zone", dec.reposition_zone, self.city.n_zones)
        if len(rep_d) != len(rep_z):
            raise ActionError(f"decision.reposition_zone: length {len(rep_z)} differs from decision.reposition_driver's {len(rep_d)}")
        if un.size:
            # an order whose pickup the driver is serving right now (at the stop) can no longer be taken back
            ok = (self.orders.status[un] == ORDER_ASSIGNED) & ~self._in_service(un)
            self.counters["invalid"] += int((~ok).sum())
            self._release(np.unique(un[ok]))
        if len(order):
            # first-come conflict resolution: keep the first pair naming each order and each driver
            conflict = ~(first_occurrence(order) & first_occurrence(driver))
            self.counters["conflicts"] += int(conflict.sum())
            elig = self.eligible()
            fits = self.committed[driver] + self.orders.volume[order] <= self.drivers.capacity[driver] + _EPS
            valid = ~conflict & (self.orders.status[order] == ORDER_OPEN) & elig[driver] & fits
            self.counters["invalid"] += int((~valid & ~conflict).sum())
            if valid.any():
                self._offer(order[valid], driver[valid], level[valid])
        if len(rep_d):
            dr = self.drivers
            ok = (dr.phase[rep_d] == PH_IDLE) & (dr.route_len[rep_d] == 0) & (dr.offer_order[rep_d] < 0)
            ok &= first_occurrence(rep_d)
            self.counters["invalid"] += int((~ok).sum())
            d, z = rep_d[ok], rep_z[ok]
            if d.size:
                self._set_leg(d, self.city.zone_node[z], geofence=False)

    def _in_service(self, o: np.ndarray) -> np.ndarray:
        """(len(o),) bool: orders with a stop in the visit their driver is serving now (phase service)."""
        dr = self.drivers
        d = self.orders.driver[o].astype(np.int64)
        has = d >= 0
        dd = np.maximum(d, 0)
        head = (dr.route_order[dd] == o[:, None]) & (np.arange(self.S)[None, :] < dr.group_n[dd][:, None])
        return has & (dr.phase[dd] == PH_SERVICE) & head.any(axis=1)

    def _offer(self, o: np.ndarray, d: np.ndarray, level: np.ndarray) -> None:
        dr, od = self.drivers, self.orders
        pickup_m = self.pickup_m(o, d)
        payout = self.payout_cents(o, d, level, pickup_m)
        p = self.accept_prob(o, d, payout, pickup_m)
        rng = self.rng["behaviour"]
        u = rng.random(len(o))
        delay = np.where(dr.always_accept[d], 0.0, dr.response_s[d] * rng.uniform(0.5, 1.5, size=len(o)))
        delay = np.where(self.external_accept[d] & ~dr.always_accept[d], np.inf, delay)  # answered via respond()
        od.status[o] = ORDER_OFFERED
        od.driver[o] = d
        od.payout[o] = payout
        od.payout_level[o] = level
        od.t_offer_answer[o] = self.t + delay
        od.offer_accept[o] = u < p
        dr.offer_order[d] = o
        dr.offers[d] += 1
        now = delay <= 0.0
        if now.any():
            self._resolve_offers(o[now], d[now])  # _apply offered to eligible drivers only

    def respond(self, drivers: np.ndarray, accept: np.ndarray) -> int:
        """Answer pending offers of externally controlled drivers now (``accept[i]`` for ``drivers[i]``).

        Drivers without a pending offer are ignored. Returns how many offers were answered.
        """
        drivers = np.asarray(drivers, dtype=np.int64)
        accept = np.asarray(accept, dtype=bool)
        has = self.drivers.offer_order[drivers] >= 0
        o = self.drivers.offer_order[drivers[has]].astype(np.int64)
        if o.size:
            self.orders.offer_accept[o] = accept[has]
            self._resolve_offers(o)
        return int(o.size)

    def driver_xy(self, d: np.ndarray | None = None) -> np.ndarray:
        """(len(d), 2) positions in metres of drivers ``d`` (default: all), interpolated along the current
        leg (straight line)."""
        dr = self.drivers
        d = np.arange(dr.n) if d is None else np.asarray(d, dtype=np.int64)
        xy = self.city.node_xy[dr.node[d]]
        drv = _nz(dr.phase[d] == PH_DRIVING)
        g = d[drv]
        frac = np.where(dr.leg_ff[g] > 0, 1.0 - dr.leg_left[g] / np.maximum(dr.leg_ff[g], _EPS), 1.0)
        xy[drv] += (self.city.node_xy[dr.leg_to[g]] - xy[drv]) * frac[:, None]
        return xy

    def _answer_offers(self, t1: float) -> None:
        sl = self.active_orders()
        st = self.orders.status[sl]
        due = sl.start + _nz((st == ORDER_OFFERED) & (self.orders.t_offer_answer[sl] <= t1))
        if due.size:
            self._resolve_offers(due)

    def _resolve_offers(self, o: np.ndarray, d: np.ndarray | None = None) -> None:
        """Offers ``o`` are answered now: accepted ones go into the routes, declined ones re-open. ``d``: their
        drivers, passed only by a caller that found them eligible at this very time (answers given at the
        moment of the offer), so that the check whether each can still take the order is skipped."""
        dr, od = self.drivers, self.orders
        if d is None:
            d = od.driver[o].astype(np.int64)
            still = (
                (dr.account[d] == ACC_ACTIVE) & (dr.phase[d] != PH_OFFLINE) & (self.t < dr.shift_end[d]) & (dr.route_len[d] + 2 <= self.S)
            )
            acc = od.offer_accept[o] & still
        else:
            acc = od.offer_accept[o]
        dr.offer_order[d] = -1
        od.t_offer_answer[o] = np.inf
        if acc.all():  # no declines
            dr.accepts[d] += 1
            self._insert(o, d)
            return
        dr.accepts[d[acc]] += 1
        dec_o, dec_d = o[~acc], d[~acc]
        od.status[dec_o] = ORDER_OPEN
        od.driver[dec_o] = -1
        od.declines[dec_o] += 1
        od.last_decliner[dec_o] = dec_d
        if acc.any():
            self._insert(o[acc], d[acc])

    # ------------------------------------------------------------------------------------ routing
    def _set_leg(self, d: np.ndarray, to: np.ndarray, geofence: bool = True) -> None:
        """Start a leg from each driver's node to ``to`` (free-flow seconds at the vehicle's speed). Legs to a
        stop end when the driver enters the stop's geofence; repositioning legs (``geofence=False``) at the node."""
        dr = self.drivers
        frm = dr.node[d]
        ff = self.city.travel_s(frm, to) / dr.speed[d]
        dist = self.city.dist_m(frm, to)
        geo = self.cfg.fleet.geofence_m if geofence else 0.0
        dr.leg_to[d] = to
        dr.leg_ff[d] = ff
        dr.leg_left[d] = ff
        dr.leg_geo[d] = ff * np.minimum(1.0, geo / np.maximum(dist, _EPS))  # 0 when ff is 0 (same node)
        dr.leg_dist[d] = dist
        dr.phase[d] = PH_DRIVING

    def _divert(self, d: np.ndarray) -> None:
        """Drivers ``d`` abandon their repositioning leg where they are: they stop, idle, at the road node
        nearest their interpolated position among the nodes they could have reached from the leg's start
        in the time driven (so a diversion never moves anyone faster than free flow; the start node always
        qualifies). The metres driven so far are already counted."""
        dr, city = self.drivers, self.city
        start = dr.node[d]
        xy = self.driver_xy(d)
        driven = dr.leg_ff[d] - dr.leg_left[d]  # free-flow seconds at the vehicle's speed
        reach = city.travel_s_from(start) / dr.speed[d][:, None] <= driven[:, None] + _EPS
        nx, ny = city.node_xy[:, 0], city.node_xy[:, 1]
        far = (nx[None, :] - xy[:, :1]) ** 2 + (ny[None, :] - xy[:, 1:]) ** 2
        node = np.where(reach, far, np.inf).argmin(axis=1).astype(np.int32)
        dr.node[d] = node
        dr.leg_to[d] = node
        dr.leg_ff[d] = dr.leg_left[d] = dr.leg_geo[d] = dr.leg_dist[d] = 0.0
        dr.phase[d] = PH_IDLE

    def _insert(self, o: np.ndarray, d: np.ndarray) -> None:
        """Put accepted orders into their drivers' routes (each driver at most once per call)."""
        dr, od = self.drivers, self.orders
        od.status[o] = ORDER_ASSIGNED
        od.t_assigned[o] = self.t
        self.committed[d] += od.volume[o]
        empty = dr.route_len[d] == 0
        all_empty = bool(empty.all())
        fo, fd = (o, d) if all_empty else (o[empty], d[empty])
        if fo.size:  # fast path: an empty route becomes [pickup, drop-off]
            dr.route_node[fd, 0], dr.route_node[fd, 1] = od.pickup[fo], od.dropoff[fo]
            dr.route_order[fd, 0] = dr.route_order[fd, 1] = fo
            dr.route_kind[fd, 0], dr.route_kind[fd, 1] = STOP_PICKUP, STOP_DROPOFF
            dr.route_len[fd] = 2
            moving = fd[dr.phase[fd] == PH_DRIVING]  # driving with an empty route: repositioning, or its order taken back
            if moving.size:
                self._divert(moving)
            idle = fd[dr.phase[fd] == PH_IDLE]
            if idle.size:
                self._set_leg(idle, dr.route_node[idle, 0])
        if all_empty:
            return
        for oi, di in zip(o[~empty].tolist(), d[~empty].tolist(), strict=True):
            if not self._insert_one(oi, di):
                self.counters["insert_failed"] += 1
                self._reopen(np.array([oi]))
                od.driver[oi] = -1

    def _route_start(self, d: int) -> tuple[int, float, int]:
        """(node, time, first insertable position) from which driver ``d``'s route can change."""
        dr = self.drivers
        if dr.phase[d] == PH_SERVICE:
            return int(dr.node[d]), float(dr.t_depart[d]), int(dr.group_n[d])
        if dr.phase[d] == PH_DRIVING:
            f = self.factor[self.city.zone_of[dr.node[d]]]
            t = self.t + max(dr.leg_left[d] - dr.leg_geo[d], 0.0) * f
            locked = 1 if (dr.route_len[d] > 0 and dr.route_node[d, 0] == dr.leg_to[d]) else 0
            return int(dr.leg_to[d]), float(t), locked
        return int(dr.node[d]), float(self.t), 0

    def _evaluate(
        self, d: int, nodes: np.ndarray, kinds: np.ndarray, ords: np.ndarray, start_node: int, start_t: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cost and feasibility of candidate routes ``(C, L)`` for driver ``d``: completion time plus a
        heavy weight on lateness; capacity and the same-pickup bundle rule are hard constraints."""
        dr, od = self.drivers, self.orders
        C, L = nodes.shape
        f = self.factor[self.city.zone_of[start_node]] / dr.speed[d]
        t = np.full(C, start_t)
        pos = np.full(C, start_node, np.int64)
        feasible = np.ones(C, bool)
        late = np.zeros(C)
        cap = dr.capacity[d]
        seg_node = np.full(C, -1, np.int64)
        in_drop = np.zeros(C, bool)
        # orders already on board at the start: their drop-offs are in the route, their pickups are not
        n_on = int((od.status[np.unique(ords[0])] == ORDER_PICKED).sum()) if L else 0
        load0 = float(dr.load[d])
        if dr.phase[d] == PH_SERVICE and dr.event_done[d]:
            # the routes still start with the visit being served, whose pickups/drop-offs are already applied
            # to the load and the statuses: start from the state before that visit, not to count it twice
            g = int(dr.group_n[d])
            vol = float(od.volume[dr.route_order[d, :g]].astype(np.float64).sum())
            sign = 1 if dr.route_kind[d, 0] == STOP_PICKUP else -1
            load0 -= sign * vol
            n_on -= sign * g
        load = np.full(C, load0)
        onboard = np.full(C, n_on)
        same_pick = self.cfg.same_pickup_bundles
        for s in range(L):
            n_s, k_s, o_s = nodes[:, s], kinds[:, s], ords[:, s]
            moved = n_s != pos
            t = t + self.city.travel_s(pos, n_s) * f
            svc = np.where(k_s == STOP_PICKUP, self.pickup_svc, self.drop_svc) * dr.service_factor[d]
            t = np.where(moved, t + svc / 2.0, t)
            is_p = k_s == STOP_PICKUP
            t = np.where(is_p, np.maximum(t, od.t_ready[o_s]), t)
            late += np.where(~is_p, np.maximum(t - od.deadline[o_s], 0.0), 0.0)
            feasible &= ~(is_p & (t > dr.shift_end[d]))
            load = load + np.where(is_p, od.volume[o_s], -od.volume[o_s])
            feasible &= load <= cap + _EPS
            if same_pick:
                new_seg = is_p & (in_drop | (seg_node < 0))
                feasible &= ~(new_seg & (onboard > 0))
                feasible &= ~(is_p & ~new_seg & (seg_node >= 0) & (n_s != seg_node))
                seg_node = np.where(new_seg, n_s, seg_node)
                in_drop = np.where(new_seg, False, in_drop | ~is_p)
                onboard = onboard + np.where(is_p, 1, -1)
            nxt_same = np.zeros(C, bool) if s + 1 >= L else (nodes[:, s + 1] == n_s)
            t = np.where(nxt_same, t, t + svc / 2.0)
            pos = n_s
        return t + 10.0 * late, feasible

    def _insert_one(self, o: int, d: int) -> bool:
        """Cheapest feasible insertion of order ``o``'s pickup and drop-off into driver ``d``'s route."""
        dr, od = self.drivers, self.orders
        L = int(dr.route_len[d])
        if L + 2 > self.S:
            return False
        start_node, start_t, first = self._route_start(d)
        base_n, base_k, base_o = dr.route_node[d, :L], dr.route_kind[d, :L], dr.route_order[d, :L]
        ii, jj = np.triu_indices(L + 1)  # pickup before old index i, drop-off before old index j (j >= i)
        keep = ii >= first
        ii, jj = ii[keep], jj[keep]
        if ii.size == 0:
            return False
        C = ii.size
        pos = np.arange(L + 2)[None, :]
        ins_p = ii[:, None] + 0
        ins_d = jj[:, None] + 1
        # source index of each slot in the new route: old stops shift right past the inserted ones
        src = pos - (pos > ins_p).astype(np.int64) - (pos > ins_d).astype(np.int64)
        src = np.clip(src, 0, max(L - 1, 0))
        nodes = np.where(pos == ins_p, od.pickup[o], np.where(pos == ins_d, od.dropoff[o], base_n[src] if L else 0))
        kinds = np.where(pos == ins_p, STOP_PICKUP, np.where(pos == ins_d, STOP_DROPOFF, base_k[src] if L else 0))
        ords = np.where((pos == ins_p) | (pos == ins_d), o, base_o[src] if L else 0)
        cost, ok = self._evaluate(d, nodes, kinds, ords, start_node, start_t)
        if not ok.any():
            return False
        best = int(np.argmin(np.where(ok, cost, np.inf)))
        dr.route_node[d, : L + 2] = nodes[best]
        dr.route_kind[d, : L + 2] = kinds[best]
        dr.route_order[d, : L + 2] = ords[best]
        dr.route_len[d] = L + 2
        del C
        return True

    def resequence(self, d: int) -> bool:
        """Re-insert each not-yet-picked order of driver ``d`` at its cheapest place; True if the route changed."""
        dr, od = self.drivers, self.orders
        L = int(dr.route_len[d])
        if L < 4:
            return False
        start_node, start_t, _ = self._route_start(d)
        before = dr.route_order[d, :L].copy()
        cost0 = self._evaluate(
            d, dr.route_node[d : d + 1, :L], dr.route_kind[d : d + 1, :L], dr.route_order[d : d + 1, :L], start_node, start_t
        )[0][0]
        cand = np.unique(before)
        # orders whose pickup is being served right now stay at the head of the route (as in _route_start)
        movable = [int(x) for x in cand[(od.status[cand] == ORDER_ASSIGNED) & ~self._in_service(cand)]]
        saved = (dr.route_node[d].copy(), dr.route_kind[d].copy(), dr.route_order[d].copy(), int(dr.route_len[d]))
        for oi in movable:
            self._drop_stops(np.array([d]), np.array([oi]))
            if not self._insert_one(oi, d):
                dr.route_node[d], dr.route_kind[d], dr.route_order[d] = saved[0], saved[1], saved[2]
                dr.route_len[d] = saved[3]
                return False
        L2 = int(dr.route_len[d])
        cost1 = self._evaluate(
            d, dr.route_node[d : d + 1, :L2], dr.route_kind[d : d + 1, :L2], dr.route_order[d : d + 1, :L2], start_node, start_t
        )[0][0]
        if cost1 > cost0 + _EPS:  # keep the old order when the greedy pass did not help
            dr.route_node[d], dr.route_kind[d], dr.route_order[d] = saved[0], saved[1], saved[2]
            dr.route_len[d] = saved[3]
            return False
        return not np.array_equal(before, dr.route_order[d, :L])

    def _drop_stops(self, rows: np.ndarray, orders: np.ndarray) -> None:
        """Remove every stop of ``orders`` from the routes of drivers ``rows`` (compacting them)."""
        dr = self.drivers
        ro = dr.route_order[rows]
        keep = (ro >= 0) & ~np.isin(ro, orders)
        idx = np.argsort(~keep, axis=1, kind="stable")
        n_keep = keep.sum(axis=1)
        valid = np.arange(self.S)[None, :] < n_keep[:, None]
        for name in ("route_node", "route_order", "route_kind"):
            a = getattr(dr, name)
            a[rows] = np.where(valid, a[rows[:, None], idx], -1)
        dr.route_len[rows] = n_keep

    def _release(self, o: np.ndarray) -> None:
        """Take assigned (not picked-up) orders back from their drivers: they re-open."""
        if o.size == 0:
            return
        d = self.orders.driver[o].astype(np.int64)
        self._drop_stops(np.unique(d), o)
        np.subtract.at(self.committed, d, self.orders.volume[o])
        self._reopen(o)

    def _reopen(self, o: np.ndarray) -> None:
        od = self.orders
        od.status[o] = ORDER_OPEN
        od.driver[o] = -1
        od.t_assigned[o] = np.nan

    def _on_traffic_change(self, t: float) -> None:
        """An incident started or ended: ETAs follow the new factors; busy routes in the zone are re-sequenced."""
        self.counters["eta_updates"] += 1
        inc = self.traffic.incidents
        changed = ((inc.start > t - self.dt) & (inc.start <= t)) | ((inc.end > t - self.dt) & (inc.end <= t))
        zones = np.unique(inc.zone[changed])
        dr = self.drivers
        cand = _nz(np.isin(self.city.zone_of[dr.node], zones) & (dr.route_len >= 4))
        for d in cand.tolist():  # only drivers with several orders in an affected zone
            if self.resequence(d):
                self.counters["resequenced"] += 1

    # ----------------------------------------------------------------------------------- movement
    def _move(self, t0: float, t1: float) -> None:
        dr = self.drivers
        clk = np.full(dr.n, t0)
        zone_f = self.factor
        cand: np.ndarray | None = None  # after the first pass only drivers that just changed can change again
        step_left = t0 < t1 - _EPS  # in the first pass every clock is at t0
        for _ in range(4 * self.S + 16):
            progressed = False
            touched = []
            if cand is None:
                drv = _nz(dr.phase == PH_DRIVING) if step_left else np.zeros(0, np.int64)
            else:
                drv = cand[(dr.phase[cand] == PH_DRIVING) & (clk[cand] < t1 - _EPS)]
            if drv.size:
                f = zone_f[self.city.zone_of[dr.node[drv]]]
                need = np.maximum(dr.leg_left[drv] - dr.leg_geo[drv], 0.0) * f
                avail = t1 - clk[drv]
                arrive = need <= avail + _EPS
                working = dr.route_len[drv] > 0
                go_on = ~arrive
                p = drv[go_on]
                av = avail[go_on]
                step_ff = av / f[go_on]
                dr.driven_m[p] += dr.leg_dist[p] * step_ff / np.maximum(dr.leg_ff[p], _EPS)
                dr.leg_left[p] -= step_ff
                dr.busy_s[p] += np.where(working[go_on], av, 0.0)
                clk[p] = t1
                a = drv[arrive]
                if a.size:
                    ta = clk[a] + need[arrive]
                    dr.busy_s[a] += np.where(working[arrive], need[arrive], 0.0)
                    clk[a] = ta
                    self._arrive(a, ta, clk)
                    touched.append(a)
                    progressed = True
            if cand is None:
                in_service = dr.phase == PH_SERVICE
                ev = _nz(in_service & ~dr.event_done & (dr.t_event <= t1 + _EPS))
            else:
                ev = cand[(dr.phase[cand] == PH_SERVICE) & ~dr.event_done[cand] & (dr.t_event[cand] <= t1 + _EPS)]
            if ev.size:
                clk[ev] = np.maximum(clk[ev], dr.t_event[ev])
                self._stop_event(ev)
                touched.append(ev)
                progressed = True
            if cand is None:
                dep = _nz((dr.phase == PH_SERVICE) & dr.event_done & (dr.t_depart <= t1 + _EPS))
            else:
                dep = cand[(dr.phase[cand] == PH_SERVICE) & dr.event_done[cand] & (dr.t_depart[cand] <= t1 + _EPS)]
            if dep.size:
                clk[dep] = np.maximum(clk[dep], dr.t_depart[dep])
                self._depart(dep, clk)
                touched.append(dep)
                progressed = True
            if not progressed:
                return
            seen = np.zeros(dr.n, bool)
            for t_ in touched:
                seen[t_] = True
            cand = _nz(seen)  # sorted, distinct
        raise RuntimeError("simulator: too many stop transitions in one step (a zero-time loop?)")

    def _arrive(self, a: np.ndarray, ta: np.ndarray, clk: np.ndarray) -> None:
        """Drivers ``a`` are detected at their leg's end at times ``ta`` (inside the geofence). The part of
        the leg inside the geofence still has to be covered: a stop's pickup/drop-off cannot happen before
        it (it is walked or driven during the service), and a driver going on past the node drives it first."""
        dr, od = self.drivers, self.orders
        geo_ff = dr.leg_geo[a].copy()  # free-flow seconds of the leg still ahead when the geofence fired
        geo_wall = geo_ff * self.factor[self.city.zone_of[dr.node[a]]]
        dr.driven_m[a] += dr.leg_dist[a] * dr.leg_left[a] / np.maximum(dr.leg_ff[a], _EPS)
        dr.node[a] = dr.leg_to[a]
        dr.leg_left[a] = 0.0
        has = dr.route_len[a] > 0
        at_head = has & (dr.route_node[a, 0] == dr.node[a])
        idle = a[~has]
        dr.phase[idle] = PH_IDLE
        go = ~at_head & has
        if go.any():
            g_ = a[go]
            self._set_leg(g_, dr.route_node[g_, 0])
            dr.leg_ff[g_] += geo_ff[go]
            dr.leg_left[g_] += geo_ff[go]
        s, ts, gw = a[at_head], ta[at_head], geo_wall[at_head]
        if s.size == 0:
            return
        rn, rk, ro = dr.route_node[s], dr.route_kind[s], dr.route_order[s]
        L = dr.route_len[s].astype(np.int64)
        same = (rn == rn[:, :1]) & (rk == rk[:, :1]) & (np.arange(self.S)[None, :] < L[:, None])
        g = np.logical_and.accumulate(same, axis=1).sum(axis=1)  # leading run of stops at the same node and kind
        in_g = np.arange(self.S)[None, :] < g[:, None]
        kind = rk[:, 0]
        pick = kind == STOP_PICKUP
        svc = np.where(pick, self.pickup_svc, self.drop_svc) * dr.service_factor[s]
        ready = np.where(in_g, od.t_ready[np.maximum(ro, 0)], -np.inf).max(axis=1)
        at_door = ts + np.maximum(svc / 2.0, gw)  # half the service, and not before reaching the stop itself
        t_ev = np.where(pick, np.maximum(at_door, ready), at_door)
        too_late = pick & (t_ev > dr.shift_end[s] + _EPS)
        if too_late.any():  # no pickups after the shift: give the orders back, go on with the rest
            lt = s[too_late]
            rel = ro[too_late][in_g[too_late]]
            self.counters["released_after_shift"] += int(rel.size)
            self._release(rel)
            has2 = dr.route_len[lt] > 0
            dr.phase[lt[~has2]] = PH_IDLE
            if has2.any():
                self._set_leg(lt[has2], dr.route_node[lt[has2], 0])
        ok = ~too_late
        s, ts, g, t_ev, svc = s[ok], ts[ok], g[ok], t_ev[ok], svc[ok]
        dr.phase[s] = PH_SERVICE
        dr.t_arrive[s] = ts
        dr.t_event[s] = t_ev
        dr.t_depart[s] = t_ev + svc / 2.0
        dr.event_done[s] = False
        dr.group_n[s] = g

    def _stop_event(self, e: np.ndarray) -> None:
        dr, od = self.drivers, self.orders
        g = dr.group_n[e].astype(np.int64)
        in_g = np.arange(self.S)[None, :] < g[:, None]
        rows = np.repeat(e, g)  # one entry per order served at the visit, driver by driver
        ords = dr.route_order[e][in_g].astype(np.int64)
        t_ev = np.repeat(dr.t_event[e], g)
        kind = dr.route_kind[e, 0]
        pick_rows = np.repeat(kind == STOP_PICKUP, g)
        po, pd, pt = ords[pick_rows], rows[pick_rows], t_ev[pick_rows]
        if po.size:
            od.status[po] = ORDER_PICKED
            od.t_pickup[po] = pt
            np.add.at(dr.load, pd, od.volume[po])
            visit = np.repeat(np.arange(len(e)), g)[pick_rows]
            od.bundle_id[po] = self._bundles + visit
            self._bundles += len(e)
        do, dd, dt_ = ords[~pick_rows], rows[~pick_rows], t_ev[~pick_rows]
        if do.size:
            self._deliver(do, dd, dt_)
        if self.record_events:
            self.events.append(
                (t_ev.copy(), rows.copy(), ords.copy(), np.where(pick_rows, STOP_PICKUP, STOP_DROPOFF), dr.node[rows].copy())
            )
        dr.event_done[e] = True

    def _depart(self, p: np.ndarray, clk: np.ndarray) -> None:
        dr = self.drivers
        dwell = dr.t_depart[p] - dr.t_arrive[p]
        dr.service_sum[p] += dwell
        dr.service_n[p] += 1
        dr.busy_s[p] += dwell
        g = dr.group_n[p].astype(np.int64)
        idx = np.arange(self.S)[None, :] + g[:, None]
        valid = idx < self.S
        flat = p[:, None] * self.S + np.minimum(idx, self.S - 1)  # into the (D, S) route arrays, raveled
        for name in ("route_node", "route_order", "route_kind"):
            a = getattr(dr, name)
            a[p] = np.where(valid, a.reshape(-1).take(flat), -1)
        dr.route_len[p] -= g.astype(np.int16)
        dr.group_n[p] = 0
        dr.t_event[p] = dr.t_depart[p] = np.inf
        more = dr.route_len[p] > 0
        dr.phase[p[~more]] = PH_IDLE
        if more.any():
            self._set_leg(p[more], dr.route_node[p[more], 0])

    # ------------------------------------------------------------------------------- settlement
    def _deliver(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> None:
        dr, od, cfg = self.drivers, self.orders, self.cfg
        # one drop-off per driver is the usual case: plain fancy-index updates are then exact
        unique = first_occurrence(d).all()
        add = _add_unique if unique else np.add.at
        od.status[o] = ORDER_DELIVERED
        od.t_delivered[o] = t
        vol = -od.volume[o]
        add(dr.load, d, vol)
        add(self.committed, d, vol)
        deadline, tip = od.deadline[o], od.tip[o]
        late = t > deadline + _EPS
        rng = self.rng["behaviour"]
        # proof of delivery -> payout (+ tip); a disputed payout misses its distance bonus until the next cycle
        p = cfg.pricing.payout
        pay = od.payout[o]
        bonus_eur = p.per_km * np.maximum(self.city.dist_m(od.pickup[o], od.dropoff[o]) / 1000.0 - p.free_km, 0.0)
        bonus = np.minimum(np.round(bonus_eur * 100.0).astype(np.int64), pay)
        disputed = (rng.random(len(o)) < p.dispute_rate) & (bonus > 0)
        paid = pay - np.where(disputed, bonus, 0)
        instant = dr.instant_pay[d]
        t_settle = np.where(instant, t, self.day_end)
        self.ledger.add(t, t_settle, LED_PAYOUT, o, d, paid + tip)
        if disputed.any():
            self.counters["disputes"] += int(disputed.sum())
            nxt = np.where(instant[disputed], self.day_end, self.day_end + 86400.0)
            self.ledger.add(t[disputed], nxt, LED_CORRECTION, o[disputed], d[disputed], bonus[disputed])
        earned = paid + tip + np.where(disputed, bonus, 0)
        add(dr.earnings, d, earned)
        add(self.shift_earn, d, earned)
        self._payouts += int(earned.sum())
        # late deliveries: partial refund of the fee
        refund = np.where(late, np.round(od.fee[o] * cfg.sla.late_refund_share).astype(np.int64), 0)
        if refund.any():
            m = refund > 0
            self.ledger.add(t[m], t[m], LED_REFUND, o[m], d[m], refund[m])
            od.refund[o[m]] += refund[m]
            self._refunds += int(refund.sum())
        # scorecard: deliveries, on-time, rating (lower when late), discipline
        add(dr.deliveries, d, 1)
        add(dr.on_time, d, (~late).astype(np.int32))
        late_min = np.maximum(t - deadline, 0.0) / 60.0
        rating = np.minimum(np.maximum(4.9 - 0.05 * late_min + rng.normal(0.0, 0.3, size=len(o)), 1.0), 5.0)
        add(dr.rating_sum, d, rating)
        add(dr.rating_n, d, 1)
        if unique:
            ud = d
            dr.late_streak[ud] = np.where(late, dr.late_streak[ud] + 1, 0)
        else:
            ud = np.unique(d)
            n_late = np.bincount(d, weights=late.astype(np.float64), minlength=dr.n)[ud]
            n_ok = np.bincount(d, weights=(~late).astype(np.float64), minlength=dr.n)[ud]
            dr.late_streak[ud] = np.where(n_ok > 0, 0, dr.late_streak[ud] + n_late).astype(np.int16)
        sus = ud[(dr.late_streak[ud] >= cfg.fleet.late_streak_to_suspend) & (dr.account[ud] == ACC_ACTIVE)]
        if sus.size:
            dr.account[sus] = ACC_SUSPENDED
            dr.t_suspended_until[sus] = t.max() + cfg.fleet.suspension_minutes * 60.0
            self._accounts_next = min(self._accounts_next, float(dr.t_suspended_until[sus].min()))
            dr.suspensions[sus] += 1
            dr.late_streak[sus] = 0

    def _close_shift(self, d: np.ndarray, t: float) -> None:
        """A driver logs off: account online time; pay the hourly guarantee top-up or the owned-fleet wage."""
        if d.size == 0:
            return
        dr, p = self.drivers, self.cfg.pricing.payout
        dr.online_s[d] += t - dr.t_online_since[d]
        hours = np.maximum(np.minimum(t, dr.shift_end[d]) - dr.t_online_since[d], 0.0) / 3600.0
        owned = dr.owned[d]
        wage = np.where(owned, np.round(p.owned_hourly_cost * hours * 100.0), 0).astype(np.int64)
        if p.hourly_guarantee is not None:
            target = np.round(p.hourly_guarantee * hours * 100.0).astype(np.int64)
            top = np.where(~owned, np.maximum(target - self.shift_earn[d], 0), 0)
        else:
            top = np.zeros(d.size, np.int64)
        for kind, amount in ((LED_WAGE, wage), (LED_GUARANTEE, top)):
            m = amount > 0
            if m.any():
                self.ledger.add(t, self.day_end, kind, -1, d[m], amount[m])
                np.add.at(dr.earnings, d[m], amount[m])
                self._payouts += int(amount[m].sum())
        self.shift_earn[d] = 0
        dr.t_online_since[d] = np.nan
        dr.phase[d] = PH_OFFLINE
        dr.shift_closed[d] = True

    # ---------------------------------------------------------------------------- accounts, shifts
    def _accounts(self, t: float) -> None:
        """Verify applicants and end suspensions that are due (skipped until the next one is due)."""
        if t < self._accounts_next:
            return
        dr = self.drivers
        ver = (dr.account == ACC_APPLICANT) & (dr.t_verified <= t)
        dr.account[ver & dr.docs_ok] = ACC_ACTIVE
        dr.account[ver & ~dr.docs_ok] = ACC_ACCESS_DENIED
        back = (dr.account == ACC_SUSPENDED) & (dr.t_suspended_until <= t)
        dr.account[back] = ACC_ACTIVE
        pending = np.concatenate([dr.t_verified[dr.account == ACC_APPLICANT], dr.t_suspended_until[dr.account == ACC_SUSPENDED]])
        self._accounts_next = float(pending.min()) if pending.size else np.inf

    def _login(self, t: float) -> int:
        """Drivers whose shift starts log on (flex drivers drawn first); returns how many logged on."""
        dr = self.drivers
        f = self.cfg.fleet
        if t < self.t_end and f.flex_login_per_hour > 0:
            pool = _nz(dr.flex & (dr.account == ACC_ACTIVE) & (dr.phase == PH_OFFLINE) & ~np.isfinite(dr.shift_start))
            if pool.size:
                mean_surge = float(self.surge.sum()) / len(self.surge)
                ref = max(f.flex_reference_hourly, 1e-9)
                pull = 1.0 + f.flex_surge_gain * max(mean_surge - 1.0, 0.0) + max(self._recent_eph / ref - 1.0, 0.0)
                p = 1.0 - np.exp(-f.flex_login_per_hour * pull * self.dt / 3600.0)
                rng = self.rng["behaviour"]
                on = pool[rng.random(pool.size) < p]
                dur = rng.uniform(f.flex_session_hours[0], f.flex_session_hours[1], size=on.size) * 3600.0
                dr.shift_start[on] = t
                dr.shift_end[on] = np.minimum(t + dur, self.t_end)
                self.counters["logins_flex"] += int(on.size)
        on = (dr.account == ACC_ACTIVE) & (dr.phase == PH_OFFLINE) & (dr.shift_start <= t) & (t < dr.shift_end)
        idx = _nz(on)
        dr.phase[idx] = PH_IDLE
        dr.leg_to[idx] = dr.node[idx]
        dr.t_online_since[idx] = t
        dr.shift_closed[idx] = False
        self.shift_earn[idx] = 0
        return int(idx.size)

    def _logoff(self, t: float) -> int:
        """Idle drivers past their shift end, or suspended, log off; returns how many stay online."""
        dr = self.drivers
        idle = (dr.phase == PH_IDLE) & (dr.offer_order < 0) & (dr.route_len == 0)
        off = idle & ((t >= dr.shift_end) | (dr.account == ACC_SUSPENDED))
        idx = _nz(off)
        if idx.size:
            # earnings per online hour, for flex drivers deciding to log on
            self._close_shift(idx, t)
            fl = idx[dr.flex[idx]]
            ended = fl[t >= dr.shift_end[fl]]
            dr.shift_start[ended] = np.inf
            dr.shift_end[ended] = -np.inf
        online = dr.phase != PH_OFFLINE
        n_on = int(online.sum())
        if n_on:
            eph = float(self.shift_earn[online].sum()) / 100.0 / max(float((t - dr.t_online_since[online]).sum()) / 3600.0, 1e-9)
            self._recent_eph = 0.9 * self._recent_eph + 0.1 * eph
        return n_on

    # ------------------------------------------------------------------------------- demand side
    def _cancel(self, t: float) -> None:
        sl = self.active_orders()
        od, dr = self.orders, self.drivers
        st = od.status[sl]
        c = sl.start + _nz(((st == ORDER_OPEN) | (st == ORDER_OFFERED)) & (od.t_patience[sl] <= t))
        if c.size == 0:
            return
        offered = c[od.status[c] == ORDER_OFFERED]
        dr.offer_order[od.driver[offered]] = -1
        od.status[c] = ORDER_CANCELLED
        od.t_cancelled[c] = t
        od.driver[c] = -1
        od.t_offer_answer[c] = np.inf
        pen = round(self.cfg.sla.cancel_penalty * 100.0) if self.cfg.pricing.enabled else 0
        refund = od.fee[c] + od.tip[c] + pen
        m = refund > 0
        if m.any():
            self.ledger.add(t, t, LED_REFUND, c[m], -1, refund[m])
        od.refund[c] += refund
        self._refunds += int(refund.sum())

    def quote_cents(self, orders: np.ndarray) -> np.ndarray:
        """The customer fee (cents) quoted for orders now: base + distance + size + speed tier, times surge."""
        fee, od = self.cfg.pricing.fee, self.orders
        km = self.city.dist_m(od.pickup[orders], od.dropoff[orders]) / 1000.0
        cls = self._size_cls[np.minimum(np.searchsorted(self._size_caps, od.volume[orders]), len(self._size_cls) - 1)]
        speed = self._speed_fee[od.level[orders]]
        eur = (fee.base + fee.per_km * km + self._size_fee[cls] + speed) * self.surge[self.city.zone_of[od.pickup[orders]]]
        return np.round(eur * 100.0).astype(np.int64)

    def _placed(self) -> list[float]:
        """The orders' placement times (sorted) as a Python list, for ``bisect``; rebuilt when the orders are replaced."""
        tp = self.orders.t_place
        if self._placed_src is not tp:
            self._placed_src, self._placed_list = tp, tp.tolist()
        return self._placed_list

    def _place_orders(self, t0: float, t1: float) -> None:
        od = self.orders
        lo = self._next
        hi = max(bisect_left(self._placed(), min(t1, self.t_end)), lo)
        self._next = hi
        if hi == lo:
            return
        new = slice(lo, hi)  # orders are sorted by placement: the new ones are one contiguous block
        if self.cfg.pricing.enabled:
            fee = self.quote_cents(new)
            ref = self.cfg.pricing.fee.reference
            p_conv = np.exp(-self.cfg.demand.conversion_elasticity * np.maximum(fee / 100.0 / ref - 1.0, 0.0))
        else:
            fee = np.zeros(hi - lo, np.int64)
            p_conv = np.ones(hi - lo)
        conv = od.u_convert[new] < p_conv
        od.status[new] = np.where(conv, ORDER_OPEN, ORDER_LOST)
        od.surge[new] = self.surge[self.city.zone_of[od.pickup[new]]]
        c = lo + conv.nonzero()[0]
        od.fee[c] = fee[conv]
        od.tip[lo + (~conv).nonzero()[0]] = 0
        charge = od.fee[c] + od.tip[c]
        m = charge > 0
        if m.any():
            self.ledger.add(od.t_place[c[m]], od.t_place[c[m]], LED_FEE, c[m], -1, charge[m])
        self._fees += int(charge.sum())

    def _update_surge(self) -> None:
        """Zone demand (open orders by pickup zone) and supply (idle eligible drivers by zone), then surge."""
        Z = self.city.n_zones
        op = self.open_orders()
        self.zone_demand = demand = np.bincount(self.city.zone_of[self.orders.pickup[op]], minlength=Z).astype(np.float64)
        idle = self.eligible(idle_only=True)
        self.zone_supply = supply = np.bincount(self.city.zone_of[self.drivers.node[idle]], minlength=Z).astype(np.float64)
        sp = self.cfg.pricing.surge
        if not (self.cfg.pricing.enabled and sp.enabled):
            return
        if sp.basis == "requests":  # requests of the last window (orders are sorted by placement time)
            od = self.orders
            lo = bisect_right(self._placed(), self.t + self.dt - sp.window_min * 60.0)
            demand = np.bincount(self.city.zone_of[od.pickup[lo : self._next]], minlength=Z).astype(np.float64)
        ratio = demand / np.maximum(supply, 1.0)
        self.surge = np.minimum(np.maximum(1.0 + sp.sensitivity * np.maximum(ratio - 1.0, 0.0), 1.0), sp.max)

    def _update_window(self) -> None:
        st = self.orders.status[self._lo : self._next]
        live = _nz((st != ORDER_DELIVERED) & (st != ORDER_CANCELLED) & (st != ORDER_LOST))
        self._lo += int(live[0]) if live.size else len(st)

    def _nothing_in_flight(self) -> bool:
        if self._next < self.orders.n and self.orders.t_place[self._next] < self.t_end:
            return False
        return self._lo >= self._next

    def _close_day(self) -> None:
        """End of the day: orders still in flight were never delivered, so their customers get the fee and tip
        back plus the cancellation penalty (the platform keeps nothing for an undelivered order; they stay
        counted as ``orders_open``); then every online driver's shift is closed."""
        sl = self.active_orders()
        st = self.orders.status[sl]
        left = sl.start + _nz((st == ORDER_OPEN) | (st == ORDER_OFFERED) | (st == ORDER_ASSIGNED) | (st == ORDER_PICKED))
        if left.size:
            od = self.orders
            pen = round(self.cfg.sla.cancel_penalty * 100.0) if self.cfg.pricing.enabled else 0
            refund = od.fee[left] + od.tip[left] + pen
            m = refund > 0
            if m.any():
                self.ledger.add(self.t, self.t, LED_REFUND, left[m], -1, refund[m])
            od.refund[left] += refund
            self._refunds += int(refund.sum())
        dr = self.drivers
        online = _nz(dr.phase != PH_OFFLINE)
        self._close_shift(online, self.t)

    # -------------------------------------------------------------------------------- convenience
    def run(self, policy, seed: int | None = None, progress=None) -> dict[str, float]:
        """Reset with ``seed`` and run ``policy`` to the end of the day; returns the KPIs."""
        from envs.core.kpis import compute_kpis

        self.reset(seed)
        policy.reset(self, self.rng["policy"])
        while not self.done:
            self.step(policy.act(self))
            if progress is not None:
                progress(self)
        return compute_kpis(self)

    @property
    def n_steps(self) -> int:
        """Upper bound on the number of steps in an episode."""
        return int(np.ceil((self.day_end - self.t_start) / self.dt))
