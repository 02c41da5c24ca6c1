"""Queries on the state that policies, adapters and the simulator itself share (read only).

Which orders are open, which drivers may get an offer, which orders are being served right now, who
declined an order last, where drivers are and in which zone, demand and supply per zone, and what an
offer pays and how likely it is accepted. ETAs and candidate drivers are in ``eta.py``.
"""

from __future__ import annotations

import numpy as np

from gigdispatch.envs.core.arrays import EPS, nz
from gigdispatch.envs.core.state import SimulatorBase
from gigdispatch.envs.core.types import ACC_ACTIVE, ORDER_OPEN, PH_DRIVING, PH_IDLE, PH_OFFLINE, PH_SERVICE

IndexLike = np.ndarray | slice  # order or driver ids, a (n,) bool mask, or a slice of ids


class Queries(SimulatorBase):
    """Orders and drivers by status, zone counts, offer terms."""

    # ------------------------------------------------------------------------------------ orders
    def open_orders(self) -> np.ndarray:
        """Indices of orders waiting for a driver (status open), oldest first."""
        lo, hi = self.state.first_live, self.state.next_order
        return lo + nz(self.orders.status[lo:hi] == ORDER_OPEN)

    def active_orders(self) -> slice:
        """The slice of orders that may still change (placed, not all settled)."""
        return slice(self.state.first_live, self.state.next_order)

    def in_service(self, orders: np.ndarray) -> np.ndarray:
        """(len(orders),) bool: orders with a stop in the visit their driver is serving right now (phase
        service). Those can no longer be taken back with ``Decision.unassign`` (it counts as invalid) nor
        moved by ``resequence``."""
        o = np.asarray(orders)
        d = self.orders.driver[o].astype(np.int64)
        has = d >= 0
        dd = np.maximum(d, 0)
        head = (self.drivers.route_order[dd] == o[:, None]) & self.visit_stops(dd)
        return has & head.any(axis=1)

    def drop_last_decliners(self, orders: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``ids`` (candidate drivers, one row per order of ``orders``) with each order's last decliner
        replaced by -1: a driver who just said no is not asked again at once."""
        return np.where(ids == self.orders.last_decliner[orders][:, None], -1, ids)

    # ----------------------------------------------------------------------------------- drivers
    def eligible(self, idle_only: bool = False) -> np.ndarray:
        """(D,) bool: drivers that may receive an offer now."""
        dr = self.drivers
        t = self.state.t
        if idle_only:  # an empty route and idle or driving imply room for two stops (S >= 2) and being online
            return (
                (dr.account == ACC_ACTIVE)
                & (dr.offer_order < 0)
                & (t < dr.shift_end)
                & (dr.route_len == 0)
                & ((dr.phase == PH_IDLE) | (dr.phase == PH_DRIVING))
            )
        return (
            (dr.account == ACC_ACTIVE)
            & (dr.phase != PH_OFFLINE)
            & (dr.offer_order < 0)
            & (t < dr.shift_end)
            & (dr.route_len + 2 <= self.S)
        )

    def visit_stops(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), S) bool: the route stops of drivers ``rows`` in the visit each is serving right now
        (its first ``group_n`` stops while in phase service); they stay at the head of the route."""
        dr = self.drivers
        return (dr.phase[rows] == PH_SERVICE)[:, None] & (np.arange(self.S)[None, :] < dr.group_n[rows][:, None])

    def driver_xy(self, d: np.ndarray | None = None) -> np.ndarray:
        """(len(d), 2) positions in metres of drivers ``d`` (default: all), interpolated along the current
        leg (straight line)."""
        dr = self.drivers
        d = np.arange(dr.n) if d is None else np.asarray(d, dtype=np.int64)
        xy = self.city.node_xy[dr.node[d]]
        drv = nz(dr.phase[d] == PH_DRIVING)
        g = d[drv]
        frac = np.where(dr.leg_ff[g] > 0, 1.0 - dr.leg_left[g] / np.maximum(dr.leg_ff[g], EPS), 1.0)
        xy[drv] += (self.city.node_xy[dr.leg_to[g]] - xy[drv]) * frac[:, None]
        return xy

    def driver_zone(self, drivers: IndexLike | None = None, heading: bool = False) -> np.ndarray:
        """Zone of each of ``drivers`` (default: all): of the last node reached; with ``heading``, of where
        it stands when idle and of its current leg's end otherwise (a driver repositioning counts in its
        target zone)."""
        dr = self.drivers
        d = slice(None) if drivers is None else drivers
        node = np.where(dr.phase[d] == PH_IDLE, dr.node[d], dr.leg_to[d]) if heading else dr.node[d]
        return self.city.zone_of[node]

    # ------------------------------------------------------------------------------------- zones
    def zone_count(self, zones: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        """(Z,) float64: how many entries of ``zones`` (zone ids) fall in each zone, or the sum of their
        ``weights``."""
        if weights is None:
            return np.bincount(zones, minlength=self.city.n_zones).astype(np.float64)
        return np.bincount(zones, weights=weights, minlength=self.city.n_zones)

    def zone_demand_of(self, orders: IndexLike, weights: np.ndarray | None = None) -> np.ndarray:
        """(Z,) float64: ``orders`` (ids, mask or slice) counted by pickup zone (or their ``weights`` summed).
        ``state.zone_demand`` is this for the open orders, as of the end of the last step."""
        return self.zone_count(self.city.zone_of[self.orders.pickup[orders]], weights)

    def zone_supply_of(self, drivers: IndexLike, heading: bool = False) -> np.ndarray:
        """(Z,) float64: ``drivers`` (ids, mask or slice) counted by ``driver_zone(drivers, heading)``.
        ``state.zone_supply`` is this for the idle eligible drivers by the last node reached, as of the end
        of the last step."""
        return self.zone_count(self.driver_zone(drivers, heading))

    # ------------------------------------------------------------------------------- offer terms
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
        trip_m = self.city.dist_m(o.pickup[orders], o.dropoff[orders])
        km = (pickup_m + trip_m if p.pickup_paid else trip_m) / 1000.0
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
        load = self.state.committed[drivers] / np.maximum(dr.capacity[drivers], 1e-9)
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
