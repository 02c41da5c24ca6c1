"""The simulator's state: ``Orders`` and ``Drivers`` (``types.py``), the ledger, the random streams, and
``EpisodeState``, every other value of one episode. ``SimulatorBase`` names the attributes that every
phase of a step (``decision``, ``queries``, ``routing``, ``movement``, ``settlement``, ``demand``) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gigdispatch.envs.core.city import City, Traffic
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.ledger import Ledger
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.types import ACC_ACTIVE, ACC_APPLICANT, ORDER_FUTURE, PH_OFFLINE, Drivers, Orders

COUNTERS = (  # the keys of ``EpisodeState.counters``
    "invalid",
    "conflicts",
    "insert_failed",
    "released_after_shift",
    "resequenced",
    "eta_updates",
    "disputes",
    "logins_flex",
)


@dataclass(slots=True)
class EpisodeState:
    """The per-episode values besides ``Orders``, ``Drivers``, the ledger and the random streams.

    Shapes as in ``types.py``: ``D`` drivers, ``Z`` zones. Money is integer cents, times float seconds.
    """

    seed: int | None  # the seed ``reset`` drew the episode from (None: fresh OS entropy, or a loaded state)
    traffic: Traffic  # the episode's traffic: time-of-day profile and its sampled incidents
    t: float  # the clock: start of the next step
    done: bool  # the day is over (step raises)
    factor: np.ndarray  # (Z,) float64 zone slowdown factors in force (read at the start of each step)
    surge: np.ndarray  # (Z,) float64 surge multiplier per zone (recomputed at the end of each step)
    zone_demand: np.ndarray  # (Z,) float64 open orders by pickup zone, as of the end of the last step
    zone_supply: np.ndarray  # (Z,) float64 idle eligible drivers by zone, as of the end of the last step
    committed: np.ndarray  # (D,) float64 litres of the orders in each driver's route or on board
    shift_earn: np.ndarray  # (D,) int64   cents earned in the current shift (for the hourly guarantee)
    external_accept: np.ndarray  # (D,) bool drivers whose offers are answered from outside, via respond()
    first_live: int  # orders before this index are all settled (terminal or lost)
    next_order: int  # first order not yet placed (orders are sorted by placement time)
    bundles: int  # pickup visits so far (the next visit's ``orders.bundle_id``)
    recent_eph: float  # EWMA of platform-wide driver earnings per online hour (euros), pulls flex drivers on
    fees: int  # running total of fees + tips charged, cents (the ledger is the record)
    payouts: int  # running total paid or owed to drivers, cents
    refunds: int  # running total refunded to customers, cents
    accounts_next: float  # next time an applicant is verified or a suspension ends (-inf: check now)
    online_peak: int  # most drivers online at once so far
    counters: dict[str, int]  # event counts, keys ``COUNTERS``
    events: list[tuple[np.ndarray, ...]]  # (t, driver, order, kind, node) per stop event, when recording
    placed_src: np.ndarray | None = None  # the ``orders.t_place`` array that ``placed_list`` was built from
    placed_list: list[float] = field(default_factory=list)  # ``placed_src`` as a list, for ``bisect``
    # (D,) float64 when each driver's idle clock started: its last work or log-on (``fleet.idle``: log-off
    # patience; None until the first step that uses it)
    idle_since: np.ndarray | None = None
    # (D,) float64 when each driver started waiting where it is: ``idle_since`` or a later platform move
    # (``fleet.idle``: the drift-home clock)
    wait_since: np.ndarray | None = None
    # (D,) bool each driver's current leg is driven with nothing on board (``empty_m``; set as a leg starts)
    leg_empty: np.ndarray | None = None
    # (D,) float64 since when each driver has stood at its node (inf while on a leg or unknown; kept only with
    # ``fleet.service_from_arrival``)
    stand_since: np.ndarray | None = None

    @classmethod
    def at(
        cls, t: float, traffic: Traffic, n_drivers: int, n_zones: int, seed: int | None = None, placed: int = 0
    ) -> EpisodeState:
        """A state at time ``t`` with nothing earned, committed or counted yet: the first ``placed`` orders are
        placed (``reset``: none), surge 1 everywhere, zone counts 0, the traffic factors read at ``t``."""
        return cls(
            seed=seed,
            traffic=traffic,
            t=float(t),
            done=False,
            factor=traffic.factor(float(t)),
            surge=np.ones(n_zones),
            zone_demand=np.zeros(n_zones),
            zone_supply=np.zeros(n_zones),
            committed=np.zeros(n_drivers),
            shift_earn=np.zeros(n_drivers, np.int64),
            external_accept=np.zeros(n_drivers, bool),
            first_live=0,
            next_order=int(placed),
            bundles=0,
            recent_eph=0.0,
            fees=0,
            payouts=0,
            refunds=0,
            accounts_next=-np.inf,
            online_peak=0,
            counters=dict.fromkeys(COUNTERS, 0),
            events=[],
        )


def initial_orders(static: dict[str, np.ndarray]) -> Orders:
    """``Orders`` from one episode's static order arrays (``Scenario.sample``): all in the future, nothing set."""
    n_o = len(static["t_place"])
    nan = np.nan
    return Orders(
        **static,
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
        t_at_pickup=np.full(n_o, nan),
        t_pickup=np.full(n_o, nan),
        t_delivered=np.full(n_o, nan),
        t_cancelled=np.full(n_o, nan),
        refund=np.zeros(n_o, np.int64),
        bundle_id=np.full(n_o, -1, np.int64),
    )


def initial_drivers(static: dict[str, np.ndarray], max_stops: int) -> Drivers:
    """``Drivers`` from one episode's static driver arrays: offline at home, empty routes, clean scorecards;
    applicants (a finite ``t_verified``) wait for their documents to be checked."""
    n_d = len(static["vehicle"])
    S = max_stops
    zf = np.zeros(n_d)
    applicant = np.isfinite(static["t_verified"])
    return Drivers(
        **static,
        account=np.where(applicant, ACC_APPLICANT, ACC_ACTIVE).astype(np.int8),
        phase=np.full(n_d, PH_OFFLINE, np.int8),
        node=static["home"].copy(),
        leg_to=static["home"].copy(),
        leg_ff=zf.copy(),
        leg_left=zf.copy(),
        leg_geo=zf.copy(),
        leg_dist=zf.copy(),
        driven_m=zf.copy(),
        empty_m=zf.copy(),
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


class SimulatorBase:
    """The attributes every phase of the simulator reads (set by ``Simulator.__init__`` and ``reset``)."""

    # fixed by the scenario (``__init__``)
    scenario: Scenario
    cfg: GridScenario
    city: City
    record_events: bool  # append every stop event to ``state.events``
    dt: float  # step length, seconds
    t_start: float  # horizon start
    t_end: float  # horizon end: no order is placed after it
    day_end: float  # horizon end + drain: the episode ends by then
    S: int  # route slots per driver (``fleet.max_route_stops``)
    n_levels: int  # payout escalation levels
    pickup_svc: float  # seconds of service at a pickup (times the driver's service factor)
    drop_svc: float  # seconds of service at a drop-off
    size_caps: np.ndarray  # (V,) litres each vehicle size class carries, ascending
    size_cls: np.ndarray  # (V,) the size class of each entry of ``size_caps``
    speed_fee: np.ndarray  # (3,) euros of the fee's speed term by service level
    size_fee: np.ndarray  # (V,) euros of the fee's size term by size class
    # one episode (``reset`` or ``load_state``)
    orders: Orders
    drivers: Drivers
    ledger: Ledger
    rng: dict[str, np.random.Generator]  # the named streams (``sim.RNG_STREAMS``)
    state: EpisodeState

    # ------------------------------------------------------------------------ per-day bookkeeping
    # What a step counts, books and draws goes through these few methods. Here, one day: the totals and
    # counters of ``state`` and the ``behaviour`` stream. ``days.DaysSimulator`` (several days in one set of
    # arrays) keeps them per day, each day drawing from its own stream, so that every day is the day a
    # ``Simulator`` plays alone.
    def _count(self, name: str, ids: np.ndarray, of: str) -> None:
        """Count one ``state.counters[name]`` event per entry of ``ids`` (order ids with ``of="o"``, driver ids
        with ``of="d"``)."""
        self.state.counters[name] += len(ids)

    def _book(self, name: str, ids: np.ndarray, of: str, cents: np.ndarray) -> None:
        """Add ``cents`` (aligned with ``ids``, orders or drivers as in ``_count``) to ``state.<name>``
        (``fees``, ``payouts`` or ``refunds``)."""
        st = self.state
        setattr(st, name, getattr(st, name) + int(cents.sum()))

    def _draw(self, ids: np.ndarray, method: str, *args: float, of: str = "d") -> np.ndarray:
        """One draw per entry of ``ids`` from the ``behaviour`` stream: ``rng.<method>(*args, size=len(ids))``."""
        return getattr(self.rng["behaviour"], method)(*args, size=len(ids))

    def _stand_since(self) -> np.ndarray:
        """(D,) float64: since when each driver has stood at its node (``state.stand_since``; inf: on a leg, or
        not known, as on a loaded state; ``fleet.service_from_arrival``)."""
        st = self.state
        if st.stand_since is None or len(st.stand_since) != self.drivers.n:
            st.stand_since = np.full(self.drivers.n, np.inf)
        return st.stand_since

    def _stood(self, d: np.ndarray, t: float | np.ndarray) -> None:
        """Drivers ``d`` stand at their node from ``t`` on (kept only with ``fleet.service_from_arrival``)."""
        if self.cfg.fleet.service_from_arrival:
            self._stand_since()[d] = t

    def _bundle_ids(self, drivers: np.ndarray, pickup: np.ndarray) -> np.ndarray:
        """Visit ids for the stop visits that ``drivers`` serve now (one each; ``pickup``: which are pickup visits),
        numbered in turn from ``state.bundles``, which moves past all of them (a day's visits are numbered in
        the calls that include a pickup visit)."""
        st = self.state
        ids = st.bundles + np.arange(len(drivers))
        st.bundles += len(drivers)
        return ids

    def _latest(self, t: np.ndarray, drivers: np.ndarray, of: np.ndarray) -> np.ndarray | float:
        """The latest of the event times ``t`` (aligned with ``drivers``) of this call, as seen by drivers ``of``
        (a suspension runs from the last delivery of the batch that caused it)."""
        return t.max()

    def _flex_login_p(self, pool: np.ndarray) -> np.ndarray | float:
        """Probability that each offline flex driver of ``pool`` logs on in this step: higher with the mean surge
        and with the platform's recent earnings per online hour."""
        st = self.state
        return self._login_p(float(st.surge.sum()) / len(st.surge), st.recent_eph)

    def _login_p(self, mean_surge: float, recent_eph: float) -> float:
        """``_flex_login_p`` of a day whose zones' mean surge and recent earnings per hour are these."""
        f = self.cfg.fleet
        ref = max(f.flex_reference_hourly, 1e-9)
        pull = 1.0 + f.flex_surge_gain * max(mean_surge - 1.0, 0.0) + max(recent_eph / ref - 1.0, 0.0)
        return 1.0 - np.exp(-f.flex_login_per_hour * pull * self.dt / 3600.0)

    def _update_recent_eph(self, online: np.ndarray, t: float) -> None:
        """``state.recent_eph``: the moving average of what the drivers online (a (D,) mask) earn per online hour."""
        st = self.state
        st.recent_eph = self._eph_average(st.recent_eph, t, self.drivers.t_online_since[online], st.shift_earn[online])

    @staticmethod
    def _eph_average(prev: float, t: float, online_since: np.ndarray, shift_earn: np.ndarray) -> float:
        """The moving average ``prev`` of earnings per online hour after one more step: drivers online since
        ``online_since`` have earned ``shift_earn`` cents in their shifts by ``t``."""
        hours = max(float((t - online_since).sum()) / 3600.0, 1e-9)
        eph = float(shift_earn.sum()) / 100.0 / hours
        return 0.9 * prev + 0.1 * eph
