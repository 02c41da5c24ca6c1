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
   (closing the shift: hourly guarantee top-up or owned-fleet wage); with ``fleet.idle``, gig drivers
   idle too long drive home or log off early.
6. **Cancellations**: unassigned orders past their customer's patience cancel (refund + penalty).
7. **New orders** placed in the step are quoted (fee with the zone's surge) and convert or not.
8. **Surge** per zone is recomputed from open orders and idle drivers.

The episode ends at ``horizon.end + drain`` or earlier, once the horizon has passed and no order is
left in flight. All randomness comes from ``reset(seed)`` through named sub-streams.

The phases live in their own modules, one mixin class each: ``decision.py`` (1 and 4), ``routing.py``
(2, and inserting orders into routes), ``movement.py`` (3), ``settlement.py`` (the drop-off settlement
of 3, then 5, 6 and the close of the day), ``demand.py`` (7, 8), and the read-only queries policies use in
``queries.py`` and ``eta.py``. The state is ``orders`` and ``drivers`` (``types.py``), ``ledger``, ``rng``
and ``state`` (``state.EpisodeState``: clock, cursors, counters, per-zone and per-driver running values).
"""

from __future__ import annotations

from copy import deepcopy
from operator import attrgetter
from typing import Any

import numpy as np

from gigdispatch.envs.core.arrays import EPS
from gigdispatch.envs.core.decision import ActionError, Decision, DecisionPhase
from gigdispatch.envs.core.demand import DemandPhase
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.eta import EtaQueries
from gigdispatch.envs.core.ledger import Ledger
from gigdispatch.envs.core.movement import MovementPhase
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.state import EpisodeState, initial_drivers, initial_orders
from gigdispatch.envs.core.types import PH_OFFLINE, Drivers, Orders

__all__ = ["RNG_STREAMS", "ActionError", "Decision", "EpisodeState", "Simulator", "streams"]

RNG_STREAMS = ("demand", "fleet", "traffic", "behaviour", "policy")


def streams(seed: int | None) -> dict[str, np.random.Generator]:
    """The named random streams (``RNG_STREAMS``) of an episode, spawned from one ``SeedSequence(seed)``."""
    children = np.random.SeedSequence(seed).spawn(len(RNG_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(RNG_STREAMS, children, strict=True)}


def _state_field(name: str, doc: str) -> property:
    """A read-write attribute of the simulator that is ``state.<name>``."""

    def set_value(sim: Simulator, value: Any) -> None:
        setattr(sim.state, name, value)

    return property(attrgetter(f"state.{name}"), set_value, doc=doc)


class Simulator(DecisionPhase, MovementPhase, DemandPhase, EtaQueries):
    """One city, one day. ``reset(seed)`` draws an episode; ``step(decision)`` advances one step.

    ``early_end`` (default True): the day ends once the horizon has passed and nothing is in flight; with False
    every day runs to ``horizon.end`` + drain, ``n_steps`` steps (what ``DaysSimulator`` needs: its days share
    one clock)."""

    def __init__(self, scenario: Scenario, record_events: bool = False, early_end: bool = True) -> None:
        self.scenario = scenario
        self.early_end = bool(early_end)
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
        self.size_caps = np.array([v.capacity_litres for v in vs])
        self.size_cls = np.array([v.size_class for v in vs])
        fee = c.pricing.fee
        self.speed_fee = np.array([fee.express, fee.standard, fee.same_day])  # by service level
        self.size_fee = np.array(fee.size)  # by vehicle size class
        self._ready = False  # an episode is loaded (reset or load_state)

    # ---------------------------------------------------------------------------------- episode state
    def reset(self, seed: int | None = None) -> None:
        """Draw the episode of ``seed`` (orders, drivers, traffic) and start it at ``horizon.start``."""
        self.rng = streams(seed)
        o, d, traffic = self.scenario.sample(self.rng)
        self.orders = initial_orders(o)
        self.drivers = initial_drivers(d, self.S)
        self.ledger = Ledger(capacity=max(1024, 3 * self.orders.n))
        self.state = EpisodeState.at(self.t_start, traffic, self.drivers.n, self.city.n_zones, seed=seed)
        self._ready = True
        self._accounts(self.t_start)
        self._login(self.t_start)
        if self.cfg.horizon.inclusive_placement:  # the orders placed at the start are seen at the first decision
            self._place_orders(self.t_start, self.t_start)
            self._update_surge()
        self.state.online_peak = int((self.drivers.phase != PH_OFFLINE).sum())

    def load_state(
        self,
        orders: Orders,
        drivers: Drivers,
        state: EpisodeState,
        ledger: Ledger | None = None,
        rng: dict[str, np.random.Generator] | None = None,
    ) -> None:
        """Set a whole episode state at once: ``orders``, ``drivers`` and ``state`` as given (not copied), the
        ``ledger`` (default: a new, empty one) and the random streams (default: the current ones, or those
        of ``state.seed`` on a simulator never reset). The next ``step`` goes on from ``state.t``.

        ``EpisodeState.at(t, traffic, n_drivers, n_zones, placed=orders.n)`` is a state at ``t`` with every
        order placed and nothing earned or counted; ``count_zones()`` then fills the zone counts from the
        loaded arrays. Raises ``InputError`` naming the field when a shape does not fit.
        """
        n_o, n_d, Z = orders.n, drivers.n, self.city.n_zones
        for name, arr, n in (
            ("state.committed", state.committed, n_d),
            ("state.shift_earn", state.shift_earn, n_d),
            ("state.external_accept", state.external_accept, n_d),
            ("state.factor", state.factor, Z),
            ("state.surge", state.surge, Z),
            ("state.zone_demand", state.zone_demand, Z),
            ("state.zone_supply", state.zone_supply, Z),
        ):
            if np.shape(arr) != (n,):
                raise InputError(f"{name}: shape {np.shape(arr)}, expected ({n},)")
        if drivers.route_node.shape != (n_d, self.S):
            raise InputError(f"drivers.route_node: shape {drivers.route_node.shape}, expected ({n_d}, {self.S})")
        if not 0 <= state.first_live <= state.next_order <= n_o:
            raise InputError(
                f"state.next_order: need 0 <= first_live ({state.first_live}) <= next_order ({state.next_order})"
                f" <= orders ({n_o})"
            )
        if rng is not None:
            self.rng = rng
        elif not self._ready:
            self.rng = streams(state.seed)
        self.orders, self.drivers, self.state = orders, drivers, state
        self.ledger = Ledger(capacity=max(1024, 3 * n_o)) if ledger is None else ledger
        self._ready = True

    def copy(self) -> Simulator:
        """A deep, independent copy (arrays, ledger, random streams, state): stepping either one never changes
        the other, and both replay the same. The scenario (config and city, read only) is shared."""
        memo: dict[int, Any] = {id(x): x for x in (self.scenario, self.cfg, self.city)}
        return deepcopy(self, memo)

    # ------------------------------------------------------------------------------------------ step
    def step(self, decision: Decision | None = None) -> dict[str, float]:
        """Advance one step. Returns the step's money terms (euros) and counts."""
        if not self._ready:
            raise RuntimeError("call reset(seed) before step()")
        st = self.state
        if st.done:
            raise RuntimeError("the episode is over: call reset(seed) to start another")
        fees0, pay0, ref0 = st.fees, st.payouts, st.refunds
        invalid0 = st.counters["invalid"]
        if decision is not None:
            self._apply(decision)
        t0, t1 = st.t, st.t + self.dt
        st.factor = st.traffic.factor(t0)
        if st.traffic.incident_changes(t0 - self.dt, t0):
            self._on_traffic_change(t0)
        self._move(t0, t1)
        self._answer_offers(t1)
        self._accounts(t1)
        self._idle_behaviour(t1)
        n_online = self._logoff(t1)
        n_online += self._login(t1)
        self._note_online(n_online)
        self._cancel(t1)
        self._place_orders(t0, t1)
        self._update_surge()
        self._update_window()
        st.t = t1
        if st.t >= self.day_end - EPS or (self.early_end and st.t >= self.t_end and self._nothing_in_flight()):
            self._close_day()
            st.done = True
        fees1, pay1, ref1 = st.fees, st.payouts, st.refunds
        return {
            "fees": (fees1 - fees0) / 100.0,
            "payouts": (pay1 - pay0) / 100.0,
            "refunds": (ref1 - ref0) / 100.0,
            "profit": ((fees1 - fees0) - (pay1 - pay0) - (ref1 - ref0)) / 100.0,
            "invalid": (st.counters["invalid"] - invalid0) * 1.0,  # a float (per day: an array)
        }

    def _note_online(self, n_online: int) -> None:
        """``state.online_peak`` after the log-ons of a step (``n_online`` drivers online now)."""
        self.state.online_peak = max(self.state.online_peak, n_online)

    # -------------------------------------------------------------------------------- convenience
    def run(self, policy, seed: int | None = None, progress=None) -> dict[str, float]:
        """Reset with ``seed`` and run ``policy`` to the end of the day; returns the KPIs."""
        from gigdispatch.envs.core.kpis import compute_kpis

        self.reset(seed)
        policy.reset(self, self.rng["policy"])
        while not self.state.done:
            self.step(policy.act(self))
            if progress is not None:
                progress(self)
        return compute_kpis(self)

    @property
    def n_steps(self) -> int:
        """Upper bound on the number of steps in an episode."""
        return int(np.ceil((self.day_end - self.t_start) / self.dt))

    # ------------------------------------------------------- fields of ``state``, read and written here too
    seed = _state_field("seed", "The seed of the episode (``state.seed``).")
    traffic = _state_field("traffic", "The episode's traffic (``state.traffic``).")
    t = _state_field("t", "The clock: start of the next step (``state.t``).")
    done = _state_field("done", "The day is over (``state.done``).")
    factor = _state_field("factor", "(Z,) zone slowdown factors in force (``state.factor``).")
    surge = _state_field("surge", "(Z,) surge multiplier per zone (``state.surge``).")
    zone_demand = _state_field("zone_demand", "(Z,) open orders by pickup zone (``state.zone_demand``).")
    zone_supply = _state_field("zone_supply", "(Z,) idle eligible drivers by zone (``state.zone_supply``).")
    committed = _state_field("committed", "(D,) litres in each route or on board (``state.committed``).")
    shift_earn = _state_field("shift_earn", "(D,) cents earned in the current shift (``state.shift_earn``).")
    external_accept = _state_field("external_accept", "(D,) offers answered via respond() (``state.external_accept``).")
    counters = _state_field("counters", "Event counts (``state.counters``).")
    events = _state_field("events", "Stop events, when recording (``state.events``).")
    online_peak = _state_field("online_peak", "Most drivers online at once (``state.online_peak``).")
