"""Phase 1 of a step, the decision, and phase 4, the offer answers.

``Decision`` is what a policy does at one epoch; ``_apply`` validates it (a malformed decision raises
``ActionError`` and has no effect) and applies unassignments, offers and repositioning moves; offers are
answered when due (``_answer_offers``), at once by always-accept drivers, or from outside through
``respond``; accepted orders go into the routes (``routing.py``), declined ones re-open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gigdispatch.envs.core.arrays import EPS, first_occurrence, nz, occurrence_rank
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.routing import RoutingPhase
from gigdispatch.envs.core.types import ACC_ACTIVE, ORDER_ASSIGNED, ORDER_OFFERED, ORDER_OPEN, PH_IDLE, PH_OFFLINE


class ActionError(InputError):
    """A decision that does not have the documented form (wrong shape, type or id range)."""


@dataclass
class Decision:
    """What a policy does at one decision epoch. All fields are 1-D integer arrays.

    ``order[i]`` is offered to ``driver[i]`` at escalation ``level[i]`` (0 = base payout);
    ``reposition_driver[j]`` (an idle driver) moves to ``reposition_zone[j]`` (its centre node) or, when
    ``reposition_node`` is given instead, to ``reposition_node[j]`` (a node id: e.g. a restaurant); if it
    accepts an offer on the way it diverts from where it is, unless the offer's pickup is where it is
    heading. ``unassign`` lists assigned-but-not-picked-up orders to take back (they re-open and may be
    offered again).

    ``bundle``: with ``False`` (the default) a driver named in several pairs gets only the first (the
    others count as conflicts); with ``True`` a driver who always accepts (owned fleet, MDRP couriers)
    gets every order of its pairs in this epoch, in the order given, each inserted into its route as it
    comes, so that a bundle of one restaurant's orders reaches one courier at once. Other drivers still
    get one offer per epoch.
    """

    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    driver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    level: np.ndarray | None = None
    reposition_driver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reposition_zone: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unassign: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reposition_node: np.ndarray | None = None
    bundle: bool = False


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
    # the unsigned view: negative ids wrap to huge values, so one comparison checks both ends
    off = (arr.view(f"u{arr.itemsize}") >= upper).any() if arr.dtype.isnative else (arr.min() < 0 or arr.max() >= upper)
    if off:
        bad = int(arr[(arr < 0) | (arr >= upper)][0])
        raise ActionError(f"decision.{name}: id {bad} is out of range 0..{upper - 1}")
    return arr.astype(np.int64, copy=False)  # the simulator only reads the ids (fancy indexing copies)


class DecisionPhase(RoutingPhase):
    """Applying a ``Decision``; offers and their answers."""

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
        rep_d, targets = self._move_targets(dec)
        if not isinstance(dec.bundle, (bool, np.bool_)):
            raise ActionError(f"decision.bundle: must be true or false, got {dec.bundle!r}")
        if un.size:
            # an order whose pickup the driver is serving right now (at the stop) can no longer be taken back
            ok = (self.orders.status[un] == ORDER_ASSIGNED) & ~self.in_service(un)
            self._count("invalid", un[~ok], "o")
            self._release(np.unique(un[ok]))
        if len(order):
            self._apply_offers(order, driver, level, bool(dec.bundle))
        if len(rep_d):
            dr = self.drivers
            ok = (dr.phase[rep_d] == PH_IDLE) & (dr.route_len[rep_d] == 0) & (dr.offer_order[rep_d] < 0)
            ok &= first_occurrence(rep_d)
            self._count("invalid", rep_d[~ok], "d")
            d = rep_d[ok]
            if d.size:
                self._set_leg(d, targets[ok].astype(np.int32), geofence=False)
                renews = self.cfg.fleet.idle.reposition_renews  # which idle clocks restart (fleet.idle)
                if self.state.wait_since is not None and renews != "nothing":
                    self.state.wait_since[d] = self.state.t  # sent there: the driver waits there
                    if renews == "all" and self.state.idle_since is not None:
                        self.state.idle_since[d] = self.state.t  # and its patience is renewed

    def _move_targets(self, dec: Decision) -> tuple[np.ndarray, np.ndarray]:
        """The checked ``(reposition_driver, target node)`` arrays of a decision: zones' centre nodes, or the
        nodes of ``reposition_node``."""
        rep_d = _as_ids("reposition_driver", dec.reposition_driver, self.drivers.n)
        rep_z = _as_ids("reposition_zone", dec.reposition_zone, self.city.n_zones)
        if dec.reposition_node is None:
            if len(rep_d) != len(rep_z):
                raise ActionError(
                    f"decision.reposition_zone: length {len(rep_z)} differs from "
                    f"decision.reposition_driver's {len(rep_d)}"
                )
            return rep_d, self.city.zone_node[rep_z]
        if len(rep_z):
            raise ActionError("decision.reposition_node: give either reposition_zone or reposition_node, not both")
        rep_n = _as_ids("reposition_node", dec.reposition_node, self.city.n_nodes)
        if len(rep_d) != len(rep_n):
            raise ActionError(
                f"decision.reposition_node: length {len(rep_n)} differs from decision.reposition_driver's {len(rep_d)}"
            )
        return rep_d, rep_n

    def _apply_offers(self, order: np.ndarray, driver: np.ndarray, level: np.ndarray, bundle: bool) -> None:
        """Offer ``order[i]`` to ``driver[i]`` (checked ids), resolving conflicts first-come."""
        # first-come conflict resolution: keep the first pair naming each order and each driver (with
        # ``bundle``, every pair of a driver who always accepts, applied in rounds: its first, its second...)
        if bundle:
            rank = occurrence_rank(driver)
            again = (rank > 0) & ~self.drivers.always_accept[driver]
        else:
            rank = np.zeros(len(driver), np.int64)
            again = ~first_occurrence(driver)
        conflict = ~first_occurrence(order) | again
        self._count("conflicts", order[conflict], "o")
        for r in range(int(rank.max()) + 1):
            here = ~conflict & (rank == r)
            if not here.any():
                continue
            o_r, d_r, l_r = order[here], driver[here], level[here]
            elig = self.eligible()
            fits = self.state.committed[d_r] + self.orders.volume[o_r] <= self.drivers.capacity[d_r] + EPS
            valid = (self.orders.status[o_r] == ORDER_OPEN) & elig[d_r] & fits
            self._count("invalid", o_r[~valid], "o")
            if valid.any():
                self._offer(o_r[valid], d_r[valid], l_r[valid])

    def _offer(self, o: np.ndarray, d: np.ndarray, level: np.ndarray) -> None:
        dr, od = self.drivers, self.orders
        pickup_m = self.pickup_m(o, d)
        payout = self.payout_cents(o, d, level, pickup_m)
        p = self.accept_prob(o, d, payout, pickup_m)
        u = self._draw(d, "random")
        delay = np.where(dr.always_accept[d], 0.0, dr.response_s[d] * self._draw(d, "uniform", 0.5, 1.5))
        # drivers answered from outside: their answer comes through respond()
        delay = np.where(self.state.external_accept[d] & ~dr.always_accept[d], np.inf, delay)
        od.status[o] = ORDER_OFFERED
        od.driver[o] = d
        od.payout[o] = payout
        od.payout_level[o] = level
        od.t_offer_answer[o] = self.state.t + delay
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

    def _answer_offers(self, t1: float) -> None:
        sl = self.active_orders()
        st = self.orders.status[sl]
        due = sl.start + nz((st == ORDER_OFFERED) & (self.orders.t_offer_answer[sl] <= t1))
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
                (dr.account[d] == ACC_ACTIVE)
                & (dr.phase[d] != PH_OFFLINE)
                & (self.state.t < dr.shift_end[d])
                & (dr.route_len[d] + 2 <= self.S)
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
