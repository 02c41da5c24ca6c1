"""Plain struct-of-arrays state of the simulator.

Every entity is a set of NumPy arrays of equal length; one index is one entity. Shapes are given in
comments: ``O`` orders in the episode (all sampled at reset, revealed at their placement time),
``D`` drivers, ``S`` the maximum number of stops in a driver's route. Money is integer cents.
Times are float seconds since midnight of the simulated day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- order status -------------------------------------------------------------------------------
ORDER_FUTURE = 0  # placement time not reached yet
ORDER_LOST = 1  # the customer saw the quote and did not order (never counted as created)
ORDER_OPEN = 2  # created, waiting for a driver
ORDER_OFFERED = 3  # an offer is out to a driver, waiting for the answer
ORDER_ASSIGNED = 4  # accepted, in a driver's route, not picked up
ORDER_PICKED = 5  # on board
ORDER_DELIVERED = 6  # terminal
ORDER_CANCELLED = 7  # terminal: the customer gave up while it was unassigned
ORDER_STATUS_NAMES = ("future", "lost", "open", "offered", "assigned", "picked", "delivered", "cancelled")

# --- driver account (onboarding and discipline) ---------------------------------------------------
ACC_APPLICANT = 0  # documents under verification
ACC_ACCESS_DENIED = 1  # expired or forged documents: never works
ACC_ACTIVE = 2
ACC_SUSPENDED = 3  # STATUS_SUSPENDED: finishes what it carries, gets no offers until the suspension ends
ACCOUNT_NAMES = ("applicant", "access_denied", "active", "suspended")

# --- driver phase (what the driver is physically doing) -------------------------------------------
PH_OFFLINE = 0
PH_IDLE = 1  # online, standing at a node, empty route
PH_DRIVING = 2  # on a leg towards ``leg_to`` (a route stop, or a repositioning target)
PH_SERVICE = 3  # at a stop: waits for the event time (pickup/drop-off), then departs
PHASE_NAMES = ("offline", "idle", "driving", "service")

# --- route stop kinds ----------------------------------------------------------------------------
STOP_PICKUP = 0
STOP_DROPOFF = 1

# --- service levels and use cases ----------------------------------------------------------------
SERVICE_LEVELS = ("express", "standard", "same_day")
USE_CASES = ("b2c", "returns", "b2b", "first_mile")

# --- vehicles --------------------------------------------------------------------------------------
VEHICLES = ("bike", "car", "van")

# --- ledger entry kinds --------------------------------------------------------------------------
LED_FEE = 0  # customer -> platform: fee + tip, at order creation
LED_REFUND = 1  # platform -> customer: cancellation refund + penalty, or late-delivery refund
LED_PAYOUT = 2  # platform -> driver: delivery payout (incl. tip), on proof of delivery
LED_CORRECTION = 3  # platform -> driver: dispute correction, paid in the next settlement cycle
LED_GUARANTEE = 4  # platform -> driver: hourly-guarantee top-up at the end of the shift
LED_WAGE = 5  # platform -> driver: owned-fleet wage for hours on shift
LEDGER_KIND_NAMES = ("fee", "refund", "payout", "correction", "guarantee", "wage")


@dataclass
class Orders:
    """All orders of one episode, sorted by placement time."""

    t_place: np.ndarray  # (O,) float64  placement (click) time
    t_ready: np.ndarray  # (O,) float64  earliest pickup time (food/parcel prepared)
    deadline: np.ndarray  # (O,) float64  SLA deadline
    t_patience: np.ndarray  # (O,) float64  the customer cancels if still unassigned after this
    pickup: np.ndarray  # (O,) int32   pickup node
    dropoff: np.ndarray  # (O,) int32   drop-off node
    volume: np.ndarray  # (O,) float32 litres
    value: np.ndarray  # (O,) float32 goods value
    tip: np.ndarray  # (O,) int64   cents, promised at checkout, passed to the driver on delivery
    level: np.ndarray  # (O,) int8    index into SERVICE_LEVELS
    use_case: np.ndarray  # (O,) int8    index into USE_CASES
    group: np.ndarray  # (O,) int32   pickup group (restaurant id for MDRP; pickup node otherwise)
    u_convert: np.ndarray  # (O,) float64 pre-drawn uniform that decides conversion against the quote
    # dynamic
    status: np.ndarray  # (O,) int8    ORDER_*
    fee: np.ndarray  # (O,) int64   cents quoted and charged (0 until created)
    surge: np.ndarray  # (O,) float32 zone surge multiplier at placement
    driver: np.ndarray  # (O,) int32   assigned (or offered) driver, -1 if none
    payout: np.ndarray  # (O,) int64   cents agreed with the driver (excl. tip)
    payout_level: np.ndarray  # (O,) int8    escalation level of the current/last offer
    declines: np.ndarray  # (O,) int16   offers declined so far
    last_decliner: np.ndarray  # (O,) int32  driver who declined last (-1)
    t_offer_answer: np.ndarray  # (O,) float64 when the offered driver answers
    offer_accept: np.ndarray  # (O,) bool    the pre-drawn answer to the current offer
    t_assigned: np.ndarray  # (O,) float64
    t_at_pickup: np.ndarray  # (O,) float64 the driver reached the pickup stop (nan until then)
    t_pickup: np.ndarray  # (O,) float64
    t_delivered: np.ndarray  # (O,) float64
    t_cancelled: np.ndarray  # (O,) float64
    refund: np.ndarray  # (O,) int64   cents refunded to the customer
    bundle_id: np.ndarray  # (O,) int64   pickup visit that collected the order (-1)

    @property
    def n(self) -> int:
        return int(self.t_place.shape[0])


@dataclass
class Drivers:
    """All drivers of one episode (a fixed set; who works when is in the arrays)."""

    # static per episode
    vehicle: np.ndarray  # (D,) int8    index into VEHICLES
    speed: np.ndarray  # (D,) float64 speed factor vs the car free-flow time (time = ff / speed)
    capacity: np.ndarray  # (D,) float64 volume capacity, litres (inf = unlimited)
    owned: np.ndarray  # (D,) bool    owned fleet: always accepts, paid by the hour
    always_accept: np.ndarray  # (D,) bool
    flex: np.ndarray  # (D,) bool    gig driver without a fixed shift: logs on when earnings/surge are high
    shift_start: np.ndarray  # (D,) float64
    shift_end: np.ndarray  # (D,) float64 no pickups after this; deliveries may finish later
    home: np.ndarray  # (D,) int32   node where the driver logs on
    pref_zone: np.ndarray  # (D,) int32   preferred zone
    accept_bias: np.ndarray  # (D,) float64 individual intercept of the acceptance model
    response_s: np.ndarray  # (D,) float64 mean response delay to an offer
    service_factor: np.ndarray  # (D,) float64 multiplies stop service times
    instant_pay: np.ndarray  # (D,) bool    settled on delivery (else in the daily cycle)
    t_verified: np.ndarray  # (D,) float64 when an applicant's documents are checked (-inf: already)
    docs_ok: np.ndarray  # (D,) bool    documents valid (not expired, not forged)
    # dynamic
    account: np.ndarray  # (D,) int8    ACC_*
    phase: np.ndarray  # (D,) int8    PH_*
    node: np.ndarray  # (D,) int32   last node reached
    leg_to: np.ndarray  # (D,) int32   target node of the current leg (== node when not driving)
    leg_ff: np.ndarray  # (D,) float64 free-flow seconds of the whole current leg (vehicle speed)
    leg_left: np.ndarray  # (D,) float64 free-flow seconds left on the leg
    leg_geo: np.ndarray  # (D,) float64 free-flow seconds of the leg inside the arrival geofence
    leg_dist: np.ndarray  # (D,) float64 metres of the current leg
    driven_m: np.ndarray  # (D,) float64 metres driven so far (all legs, repositioning included)
    empty_m: np.ndarray  # (D,) float64 metres of ``driven_m`` driven with nothing on board
    t_event: np.ndarray  # (D,) float64 service: when the pickup/drop-off happens
    t_depart: np.ndarray  # (D,) float64 service: when the driver leaves the stop
    t_arrive: np.ndarray  # (D,) float64 service: when the driver reached the stop
    event_done: np.ndarray  # (D,) bool   service: the event has been applied
    group_n: np.ndarray  # (D,) int16   service: number of head stops served in this visit
    route_node: np.ndarray  # (D, S) int32 stops, head first (-1 padding)
    route_order: np.ndarray  # (D, S) int32 order of each stop (-1 padding)
    route_kind: np.ndarray  # (D, S) int8  STOP_*
    route_len: np.ndarray  # (D,) int16
    load: np.ndarray  # (D,) float64 litres on board
    offer_order: np.ndarray  # (D,) int32   order of the pending offer (-1)
    t_suspended_until: np.ndarray  # (D,) float64
    t_online_since: np.ndarray  # (D,) float64
    online_s: np.ndarray  # (D,) float64 seconds online so far
    busy_s: np.ndarray  # (D,) float64 seconds driving or at stops with work
    # scorecard
    offers: np.ndarray  # (D,) int32
    accepts: np.ndarray  # (D,) int32
    deliveries: np.ndarray  # (D,) int32
    on_time: np.ndarray  # (D,) int32
    late_streak: np.ndarray  # (D,) int16   consecutive late deliveries
    suspensions: np.ndarray  # (D,) int16
    rating_sum: np.ndarray  # (D,) float64
    rating_n: np.ndarray  # (D,) int32
    service_sum: np.ndarray  # (D,) float64 seconds at stops
    service_n: np.ndarray  # (D,) int32
    earnings: np.ndarray  # (D,) int64   cents paid or owed (payouts, tips, corrections, top-ups, wages)
    shift_closed: np.ndarray  # (D,) bool    guarantee/wage of the current shift settled

    @property
    def n(self) -> int:
        return int(self.vehicle.shape[0])

    def acceptance_rate(self) -> np.ndarray:
        return (self.accepts + 1.0) / (self.offers + 1.0)  # Laplace prior: new drivers score 1

    def on_time_rate(self) -> np.ndarray:
        return (self.on_time + 1.0) / (self.deliveries + 1.0)

    def rating(self) -> np.ndarray:
        return (self.rating_sum + 4.8) / (self.rating_n + 1.0)  # prior 4.8 stars

    def performance(self) -> np.ndarray:
        """Performance score in [0, 1]: 0.3 acceptance + 0.4 on-time + 0.3 rating (scaled 1..5 -> 0..1)."""
        return 0.3 * self.acceptance_rate() + 0.4 * self.on_time_rate() + 0.3 * (self.rating() - 1.0) / 4.0
