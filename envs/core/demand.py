"""Phases 7 and 8 of a step, the demand side: new orders are quoted and convert or not; surge per zone.

Also the cursors over the orders (sorted by placement time): ``state.next_order``, the first order not
placed yet, and ``state.first_live``, before which every order is settled.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from gigdispatch.envs.core.arrays import nz
from gigdispatch.envs.core.queries import Queries
from gigdispatch.envs.core.types import LED_FEE, ORDER_CANCELLED, ORDER_DELIVERED, ORDER_LOST, ORDER_OPEN


class DemandPhase(Queries):
    """Quotes, placement and conversion of new orders, zone counts and surge, the order cursors."""

    def quote_base_eur(self, orders: np.ndarray | slice) -> np.ndarray:
        """The customer fee (euros) of orders before surge: base + distance + size class + speed tier."""
        fee, od = self.cfg.pricing.fee, self.orders
        km = self.city.dist_m(od.pickup[orders], od.dropoff[orders]) / 1000.0
        cls = self.size_cls[np.minimum(np.searchsorted(self.size_caps, od.volume[orders]), len(self.size_cls) - 1)]
        speed = self.speed_fee[od.level[orders]]
        return fee.base + fee.per_km * km + self.size_fee[cls] + speed

    def quote_cents(self, orders: np.ndarray | slice, surge: np.ndarray | None = None) -> np.ndarray:
        """The customer fee (cents) quoted for orders now: ``quote_base_eur`` times the surge of each order's
        pickup zone (``surge``: one multiplier per order instead)."""
        if surge is None:
            surge = self.state.surge[self.city.zone_of[self.orders.pickup[orders]]]
        return np.round(self.quote_base_eur(orders) * surge * 100.0).astype(np.int64)

    def _placed(self) -> list[float]:
        """The orders' placement times (sorted) as a Python list, for ``bisect``; rebuilt when the orders are
        replaced."""
        st, tp = self.state, self.orders.t_place
        if st.placed_src is not tp:
            st.placed_src, st.placed_list = tp, tp.tolist()
        return st.placed_list

    def _place_orders(self, t0: float, t1: float) -> None:
        """Orders placed in ``[t0, t1)`` (``horizon.inclusive_placement``: ``(t0, t1]``) and before
        ``horizon.end`` are quoted; converted ones open and are charged fee + tip."""
        od, st = self.orders, self.state
        lo = st.next_order
        placed = self._placed()
        if self.cfg.horizon.inclusive_placement and t1 < self.t_end:
            hi = bisect_right(placed, t1)
        else:
            hi = bisect_left(placed, min(t1, self.t_end))
        hi = max(hi, lo)
        st.next_order = hi
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
        od.surge[new] = st.surge[self.city.zone_of[od.pickup[new]]]
        c = lo + conv.nonzero()[0]
        od.fee[c] = fee[conv]
        od.tip[lo + (~conv).nonzero()[0]] = 0
        charge = od.fee[c] + od.tip[c]
        m = charge > 0
        if m.any():
            self.ledger.add(od.t_place[c[m]], od.t_place[c[m]], LED_FEE, c[m], -1, charge[m])
        self._book("fees", c, "o", charge)

    def count_zones(self) -> None:
        """Recount ``state.zone_demand`` (open orders by pickup zone) and ``state.zone_supply`` (idle eligible
        drivers by the zone of the last node reached) from the arrays, as the end of every step does."""
        st = self.state
        st.zone_demand = self.zone_demand_of(self.open_orders())
        st.zone_supply = self.zone_supply_of(self.eligible(idle_only=True))

    def _update_surge(self) -> None:
        """Zone demand and supply (``count_zones``), then the surge per zone."""
        self.count_zones()
        st = self.state
        demand, supply = st.zone_demand, st.zone_supply
        sp = self.cfg.pricing.surge
        if not (self.cfg.pricing.enabled and sp.enabled):
            return
        if sp.basis == "requests":  # requests of the last window (orders are sorted by placement time)
            lo = bisect_right(self._placed(), st.t + self.dt - sp.window_min * 60.0)
            demand = self.zone_demand_of(slice(lo, st.next_order))
        ratio = demand / np.maximum(supply, 1.0)
        st.surge = np.minimum(np.maximum(1.0 + sp.sensitivity * np.maximum(ratio - 1.0, 0.0), 1.0), sp.max)

    def _update_window(self) -> None:
        """Move ``state.first_live`` past the orders settled at the front."""
        st = self.state
        status = self.orders.status[st.first_live : st.next_order]
        live = nz((status != ORDER_DELIVERED) & (status != ORDER_CANCELLED) & (status != ORDER_LOST))
        st.first_live += int(live[0]) if live.size else len(status)

    def _nothing_in_flight(self) -> bool:
        """No order is in flight, and none is still to be placed before the horizon ends."""
        st = self.state
        if st.next_order < self.orders.n and self.orders.t_place[st.next_order] < self.t_end:
            return False
        return st.first_live >= st.next_order
