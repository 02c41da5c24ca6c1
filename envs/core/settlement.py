"""Money and accounts: proof of delivery (phase 3), accounts and shifts (phase 5), cancellations
(phase 6) and the close of the day.

A drop-off pays the driver (payout + tip, settled now for instant-pay drivers, at the daily cycle
otherwise; a disputed payout misses its distance bonus until the next cycle), refunds part of the fee
when late and updates the scorecard, which may suspend the driver. A cancelled order, and one still in
flight when the day closes, refunds fee + tip + the cancellation penalty (``cancel_refund_cents``). A
shift closes with the hourly guarantee top-up or the owned-fleet wage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gigdispatch.envs.core.arrays import EPS, first_occurrence, nz
from gigdispatch.envs.core.queries import Queries
from gigdispatch.envs.core.types import (
    ACC_ACCESS_DENIED,
    ACC_ACTIVE,
    ACC_APPLICANT,
    ACC_SUSPENDED,
    LED_CORRECTION,
    LED_GUARANTEE,
    LED_PAYOUT,
    LED_REFUND,
    LED_WAGE,
    ORDER_ASSIGNED,
    ORDER_CANCELLED,
    ORDER_DELIVERED,
    ORDER_OFFERED,
    ORDER_OPEN,
    ORDER_PICKED,
    PH_IDLE,
    PH_OFFLINE,
)

AddAt = Callable[[np.ndarray, np.ndarray, np.ndarray | int], None]  # np.add.at, or _add_unique


def _add_unique(a: np.ndarray, idx: np.ndarray, v: np.ndarray | int) -> None:
    """``np.add.at`` for indices known to be distinct (buffered fancy indexing is then exact and faster)."""
    a[idx] += v


class SettlementPhase(Queries):
    """Deliveries paid and scored, refunds, shifts opened and closed, accounts."""

    # ------------------------------------------------------------------------------ refund rules
    def cancel_penalty_cents(self) -> int:
        """Cents credited to a customer on top of the full refund when the order is cancelled or never
        delivered (``sla.cancel_penalty``; 0 when pricing is off)."""
        return round(self.cfg.sla.cancel_penalty * 100.0) if self.cfg.pricing.enabled else 0

    def cancel_refund_cents(self, orders: np.ndarray) -> np.ndarray:
        """(len(orders),) cents refunded when ``orders`` are cancelled or never delivered: fee + tip +
        ``cancel_penalty_cents()``."""
        od = self.orders
        return od.fee[orders] + od.tip[orders] + self.cancel_penalty_cents()

    def _refund_unserved(self, orders: np.ndarray, t: float) -> None:
        """Book ``cancel_refund_cents`` of ``orders`` at time ``t``."""
        refund = self.cancel_refund_cents(orders)
        m = refund > 0
        if m.any():
            self.ledger.add(t, t, LED_REFUND, orders[m], -1, refund[m])
        self.orders.refund[orders] += refund
        self._book("refunds", orders, "o", refund)

    # ------------------------------------------------------------------------------- deliveries
    def _deliver(self, o: np.ndarray, d: np.ndarray, t: np.ndarray) -> None:
        """Proof of delivery of orders ``o`` by drivers ``d`` at times ``t``: payout, late refund, scorecard."""
        dr, od = self.drivers, self.orders
        # one drop-off per driver is the usual case: plain fancy-index updates are then exact
        unique = bool(first_occurrence(d).all())
        add = _add_unique if unique else np.add.at
        od.status[o] = ORDER_DELIVERED
        od.t_delivered[o] = t
        vol = -od.volume[o]
        add(dr.load, d, vol)
        add(self.state.committed, d, vol)
        late = t > od.deadline[o] + EPS
        self._pay_deliveries(o, d, t, add)
        # late deliveries: partial refund of the fee
        refund = np.where(late, np.round(od.fee[o] * self.cfg.sla.late_refund_share).astype(np.int64), 0)
        if refund.any():
            m = refund > 0
            self.ledger.add(t[m], t[m], LED_REFUND, o[m], d[m], refund[m])
            od.refund[o[m]] += refund[m]
            self._book("refunds", o, "o", refund)
        self._score_deliveries(o, d, t, late, unique, add)

    def _pay_deliveries(self, o: np.ndarray, d: np.ndarray, t: np.ndarray, add: AddAt) -> None:
        """Payout + tip on proof of delivery; a disputed payout misses its distance bonus until the next cycle."""
        dr, od, st = self.drivers, self.orders, self.state
        p = self.cfg.pricing.payout
        pay, tip = od.payout[o], od.tip[o]
        bonus_eur = p.per_km * np.maximum(self.city.dist_m(od.pickup[o], od.dropoff[o]) / 1000.0 - p.free_km, 0.0)
        bonus = np.minimum(np.round(bonus_eur * 100.0).astype(np.int64), pay)
        disputed = (self._draw(o, "random", of="o") < p.dispute_rate) & (bonus > 0)
        paid = pay - np.where(disputed, bonus, 0)
        instant = dr.instant_pay[d]
        t_settle = np.where(instant, t, self.day_end)
        self.ledger.add(t, t_settle, LED_PAYOUT, o, d, paid + tip)
        if disputed.any():
            self._count("disputes", o[disputed], "o")
            nxt = np.where(instant[disputed], self.day_end, self.day_end + 86400.0)
            self.ledger.add(t[disputed], nxt, LED_CORRECTION, o[disputed], d[disputed], bonus[disputed])
        earned = paid + tip + np.where(disputed, bonus, 0)
        add(dr.earnings, d, earned)
        add(st.shift_earn, d, earned)
        self._book("payouts", d, "d", earned)

    def _score_deliveries(
        self, o: np.ndarray, d: np.ndarray, t: np.ndarray, late: np.ndarray, unique: bool, add: AddAt
    ) -> None:
        """Scorecard: deliveries, on-time, rating (lower when late); a streak of late deliveries suspends."""
        dr, cfg = self.drivers, self.cfg
        add(dr.deliveries, d, 1)
        add(dr.on_time, d, (~late).astype(np.int32))
        late_min = np.maximum(t - self.orders.deadline[o], 0.0) / 60.0
        noise = self._draw(o, "normal", 0.0, 0.3, of="o")
        rating = np.minimum(np.maximum(4.9 - 0.05 * late_min + noise, 1.0), 5.0)
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
            dr.t_suspended_until[sus] = self._latest(t, d, sus) + cfg.fleet.suspension_minutes * 60.0
            self.state.accounts_next = min(self.state.accounts_next, float(dr.t_suspended_until[sus].min()))
            dr.suspensions[sus] += 1
            dr.late_streak[sus] = 0

    # ---------------------------------------------------------------------------- accounts, shifts
    def _close_shift(self, d: np.ndarray, t: float) -> None:
        """Drivers ``d`` log off: account online time; pay the hourly guarantee top-up or the owned-fleet
        wage."""
        if d.size == 0:
            return
        dr, p = self.drivers, self.cfg.pricing.payout
        dr.online_s[d] += t - dr.t_online_since[d]
        hours = np.maximum(np.minimum(t, dr.shift_end[d]) - dr.t_online_since[d], 0.0) / 3600.0
        owned = dr.owned[d]
        wage = np.where(owned, np.round(p.owned_hourly_cost * hours * 100.0), 0).astype(np.int64)
        if p.hourly_guarantee is not None:
            target = np.round(p.hourly_guarantee * hours * 100.0).astype(np.int64)
            top = np.where(~owned, np.maximum(target - self.state.shift_earn[d], 0), 0)
        else:
            top = np.zeros(d.size, np.int64)
        for kind, amount in ((LED_WAGE, wage), (LED_GUARANTEE, top)):
            m = amount > 0
            if m.any():
                self.ledger.add(t, self.day_end, kind, -1, d[m], amount[m])
                np.add.at(dr.earnings, d[m], amount[m])
                self._book("payouts", d[m], "d", amount[m])
        self.state.shift_earn[d] = 0
        dr.t_online_since[d] = np.nan
        dr.phase[d] = PH_OFFLINE
        dr.shift_closed[d] = True

    # ---------------------------------------------------------------------------- accounts, shifts
    def _accounts(self, t: float) -> None:
        """Verify applicants and end suspensions that are due (skipped until the next one is due)."""
        if t < self.state.accounts_next:
            return
        dr = self.drivers
        ver = (dr.account == ACC_APPLICANT) & (dr.t_verified <= t)
        dr.account[ver & dr.docs_ok] = ACC_ACTIVE
        dr.account[ver & ~dr.docs_ok] = ACC_ACCESS_DENIED
        back = (dr.account == ACC_SUSPENDED) & (dr.t_suspended_until <= t)
        dr.account[back] = ACC_ACTIVE
        pending = np.concatenate(
            [dr.t_verified[dr.account == ACC_APPLICANT], dr.t_suspended_until[dr.account == ACC_SUSPENDED]]
        )
        self.state.accounts_next = float(pending.min()) if pending.size else np.inf

    def _login(self, t: float) -> int:
        """Drivers whose shift starts log on (flex drivers drawn first); returns how many logged on."""
        dr = self.drivers
        f = self.cfg.fleet
        st = self.state
        if t < self.t_end and f.flex_login_per_hour > 0:
            pool = nz(dr.flex & (dr.account == ACC_ACTIVE) & (dr.phase == PH_OFFLINE) & ~np.isfinite(dr.shift_start))
            if pool.size:
                on = pool[self._draw(pool, "random") < self._flex_login_p(pool)]
                dur = self._draw(on, "uniform", f.flex_session_hours[0], f.flex_session_hours[1]) * 3600.0
                dr.shift_start[on] = t
                dr.shift_end[on] = np.minimum(t + dur, self.t_end)
                self._count("logins_flex", on, "d")
        on = (dr.account == ACC_ACTIVE) & (dr.phase == PH_OFFLINE) & (dr.shift_start <= t) & (t < dr.shift_end)
        idx = nz(on)
        dr.phase[idx] = PH_IDLE
        dr.leg_to[idx] = dr.node[idx]
        dr.t_online_since[idx] = t
        self._stood(idx, t)
        dr.shift_closed[idx] = False
        st.shift_earn[idx] = 0
        return int(idx.size)

    def _logoff(self, t: float) -> int:
        """Idle drivers past their shift end, or suspended, log off; returns how many stay online."""
        dr = self.drivers
        idle = (dr.phase == PH_IDLE) & (dr.offer_order < 0) & (dr.route_len == 0)
        off = idle & ((t >= dr.shift_end) | (dr.account == ACC_SUSPENDED))
        idx = nz(off)
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
            self._update_recent_eph(online, t)
        return n_on

    # ---------------------------------------------------------------------------- cancellations
    def _cancel(self, t: float) -> None:
        """Open or offered orders past their customer's patience cancel (refund + penalty)."""
        sl = self.active_orders()
        od, dr = self.orders, self.drivers
        st = od.status[sl]
        c = sl.start + nz(((st == ORDER_OPEN) | (st == ORDER_OFFERED)) & (od.t_patience[sl] <= t))
        if c.size == 0:
            return
        offered = c[od.status[c] == ORDER_OFFERED]
        dr.offer_order[od.driver[offered]] = -1
        od.status[c] = ORDER_CANCELLED
        od.t_cancelled[c] = t
        od.driver[c] = -1
        od.t_offer_answer[c] = np.inf
        self._refund_unserved(c, t)

    def _close_day(self) -> None:
        """End of the day: orders still in flight were never delivered, so their customers get the fee and tip
        back plus the cancellation penalty (the platform keeps nothing for an undelivered order; they stay
        counted as ``orders_open``); then every online driver's shift is closed."""
        sl = self.active_orders()
        st = self.orders.status[sl]
        in_flight = (st == ORDER_OPEN) | (st == ORDER_OFFERED) | (st == ORDER_ASSIGNED) | (st == ORDER_PICKED)
        left = sl.start + nz(in_flight)
        if left.size:
            self._refund_unserved(left, self.state.t)
        online = nz(self.drivers.phase != PH_OFFLINE)
        self._close_shift(online, self.state.t)
