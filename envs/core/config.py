"""Typed scenario configuration. Every field has a default; unknown keys are rejected.

Times of day are written ``"HH:MM"`` (or seconds since midnight as a number); durations in the unit
named by the field.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Frac = Annotated[float, Field(ge=0.0, le=1.0)]
Pos = Annotated[float, Field(gt=0.0)]
NonNeg = Annotated[float, Field(ge=0.0)]
Count = Annotated[int, Field(ge=0)]
UseCase = Literal["b2c", "returns", "b2b", "first_mile"]

_T = TypeVar("_T")

# Size limits. A day's arrays are allocated whole at reset, so the counts that size them are bounded to
# what one simulator process holds comfortably in memory; each limit is well above the built-in
# city-1000 (26,000 requested, ~21,000 converted orders, 1,000 drivers, 40 hotspots, 1 incident an hour).
# docs/scenarios.md lists them (``SIZE_LIMITS``, rendered by envs/scenarios/docgen.py).
MAX_ORDERS = 1_000_000  # expected orders a day, flash sales included: ~260 B each at reset (arrays, ledger): ~0.3 GB
MAX_DRIVERS = 200_000  # drivers: ~360 B each at reset (driver and route arrays, 8 stops): ~0.07 GB
MAX_HOTSPOTS = 80 * 80  # pickup clusters: one per node of the largest grid (city.size up to 80 x 80)
MAX_INCIDENTS_PER_HOUR = 60.0  # traffic incidents citywide: one a minute
MAX_CLOCK_HOURS = 48  # times of day are below 48:00 (a day may run past midnight)
MAX_DRAIN_MINUTES = 24 * 60.0  # the run-on after the horizon's end: at most a day
SIZE_LIMITS: tuple[tuple[str, str, str], ...] = (
    ("demand.orders", f"{MAX_ORDERS:,}", "expected orders a day; with the flash sales' extra orders"),
    ("fleet.drivers", f"{MAX_DRIVERS:,}", "drivers"),
    ("demand.hotspots", f"{MAX_HOTSPOTS:,}", "pickup clusters: one per node of the largest grid"),
    ("traffic.incidents_per_hour", f"{MAX_INCIDENTS_PER_HOUR:g}", "incidents an hour, citywide: one a minute"),
    ("times of day", f"below {MAX_CLOCK_HOURS}:00", "horizon, peaks and flash sales, as text or seconds"),
    ("horizon.drain_minutes", f"{MAX_DRAIN_MINUTES:,.0f}", "minutes after the horizon's end: at most a day"),
)


def check_range(value: tuple[float, float]) -> tuple[float, float]:
    """A ``(low, high)`` pair with ``low <= high``; otherwise ``ValueError`` saying which is which."""
    low, high = value
    if low > high:
        raise ValueError(f"a (low, high) range needs low <= high, got low {low:g} above high {high:g}")
    return value


# a (low, high) range whose two ends are of type _T: ``Range[Pos]``, ``Range[NonNeg]``
Range = Annotated[tuple[_T, _T], AfterValidator(check_range)]


def parse_clock(value: object) -> float:
    """``"HH:MM"`` or ``"HH:MM:SS"`` (hours may exceed 23 for a day that runs past midnight) -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a time of day 'HH:MM' or seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a time of day cannot be negative")
        if not value < MAX_CLOCK_HOURS * 3600:  # also NaN
            raise ValueError(
                f"a time of day is below {MAX_CLOCK_HOURS}:00 ({MAX_CLOCK_HOURS * 3600:,} s), got {value:g}"
            )
        return float(value)
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) in (2, 3) and all(p.isdigit() for p in parts):
            h, m = int(parts[0]), int(parts[1])
            s = int(parts[2]) if len(parts) == 3 else 0
            if m < 60 and s < 60 and h < MAX_CLOCK_HOURS:
                return float(h * 3600 + m * 60 + s)
    raise ValueError(f"expected a time of day 'HH:MM', got {value!r}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ClockModel(_Model):
    clock_fields: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _clock_fields(cls, v: object, info):
        if info.field_name in cls.clock_fields:
            return parse_clock(v)
        return v


class Horizon(_ClockModel):
    clock_fields: ClassVar[tuple[str, ...]] = ("start", "end")
    start: float = parse_clock("10:00")
    end: float = parse_clock("18:00")
    step_seconds: Pos = 60.0
    # after ``end`` no new orders; the episode runs on this long to finish deliveries
    drain_minutes: Annotated[float, Field(ge=0.0, le=MAX_DRAIN_MINUTES)] = 60.0
    # which step an order placed exactly on a step boundary t belongs to: False, the one starting at t (orders
    # placed in [t0, t1) are seen at the decision at t1); True, the one ending at t (placed in (t0, t1], seen at
    # t1, those placed at ``start`` at the first decision): seen at its placement minute, as the MDRP
    # instances' whole-minute placement times are
    inclusive_placement: bool = False

    @model_validator(mode="after")
    def _order(self) -> Horizon:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class GridCity(_Model):
    kind: Literal["grid"] = "grid"
    size: tuple[Annotated[int, Field(ge=2, le=80)], Annotated[int, Field(ge=2, le=80)]] = (20, 20)
    spacing_m: Pos = 250.0
    jitter_m: NonNeg = 30.0
    arterial_every: Annotated[int, Field(ge=1)] = 5
    arterial_mps: Pos = 12.5
    residential_mps: Pos = 7.0
    drop_edges: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.05
    zones: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (4, 4)
    layout_seed: Count = 7  # the map is part of the scenario, not of the episode seed


class TrafficPeak(_ClockModel):
    clock_fields: ClassVar[tuple[str, ...]] = ("center",)
    center: float
    width_hours: Pos = 1.0
    amplitude: NonNeg = 0.4


class Traffic(_Model):
    enabled: bool = True
    peaks: tuple[TrafficPeak, ...] = (
        TrafficPeak(center=parse_clock("08:30"), amplitude=0.5),
        TrafficPeak(center=parse_clock("17:30"), width_hours=1.5, amplitude=0.6),
    )
    centre_weight: NonNeg = 0.6  # zones near the centre get up to (1 + centre_weight) x the peak
    incidents_per_hour: Annotated[float, Field(ge=0.0, le=MAX_INCIDENTS_PER_HOUR)] = 0.5
    incident_factor: Range[Pos] = (1.5, 2.5)
    incident_minutes: Range[Pos] = (20.0, 60.0)


class DemandPeak(_ClockModel):
    clock_fields: ClassVar[tuple[str, ...]] = ("center",)
    center: float
    width_hours: Pos = 1.0
    weight: NonNeg = 1.0


class FlashSale(_ClockModel):
    clock_fields: ClassVar[tuple[str, ...]] = ("start",)
    start: float
    minutes: Pos = 30.0
    zone: Annotated[int, Field(ge=0)] = 0
    multiplier: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] = 4.0  # x the zone's rate; see MAX_ORDERS


class DemandCentre(_Model):
    """A district whose pickups (restaurants, shops) have their own time-of-day profile: offices busy in the
    morning, the centre at lunch, residential districts at dinner, a venue around an event."""

    name: str = ""
    # where: a fraction of the city's extent from its west (x) and south (y) edge, 0..1
    x: Frac = 0.5
    y: Frac = 0.5  # (y: from the south edge)
    radius_m: Pos = 600.0  # pickups are drawn uniformly within this distance of the centre
    weight: NonNeg = 1.0  # x its profile: the centre's share of the day's orders follows weight x profile
    baseline: NonNeg = 0.0  # relative rate outside its peaks
    peaks: tuple[DemandPeak, ...] = ()

    @model_validator(mode="after")
    def _some_demand(self) -> DemandCentre:
        if self.weight > 0 and self.baseline <= 0 and not any(p.weight > 0 for p in self.peaks):
            raise ValueError("a demand centre needs a positive baseline or a peak with a positive weight")
        return self


class ServiceLevel(_Model):
    minutes: Pos  # deadline after placement (same-day: to the end of the horizon, capped by this)
    share: Frac


class Demand(_Model):
    # expected orders placed over the horizon, before conversion
    orders: Annotated[float, Field(ge=0.0, le=MAX_ORDERS)] = 1500.0
    baseline: NonNeg = 0.4  # relative rate outside the peaks
    peaks: tuple[DemandPeak, ...] = (
        DemandPeak(center=parse_clock("12:30"), weight=1.0),
        DemandPeak(center=parse_clock("19:00"), width_hours=1.5, weight=1.2),
    )
    hotspots: Annotated[int, Field(ge=1, le=MAX_HOTSPOTS)] = 12  # pickup clusters (restaurants, stores, hubs)
    hotspot_radius_m: Pos = 400.0
    # demand centres with their own profiles; when given they replace baseline, peaks and hotspots above: an
    # order's time follows the sum of the centres' weighted profiles, its pickup the centre busiest then
    centres: tuple[DemandCentre, ...] = Field(default=(), max_length=MAX_HOTSPOTS)
    flash_sales: tuple[FlashSale, ...] = ()
    express: ServiceLevel = ServiceLevel(minutes=30, share=0.3)
    standard: ServiceLevel = ServiceLevel(minutes=60, share=0.55)
    same_day: ServiceLevel = ServiceLevel(minutes=480, share=0.15)
    use_cases: dict[UseCase, NonNeg] = {
        "b2c": 0.8,
        "returns": 0.08,
        "b2b": 0.07,
        "first_mile": 0.05,
    }
    drop_radius_m: Pos = 2500.0
    ready_minutes: Range[NonNeg] = (5.0, 20.0)
    patience_minutes: Range[Pos] = (10.0, 30.0)
    volume_litres: Range[Pos] = (2.0, 20.0)  # b2c range; b2b and first-mile are 5x larger
    value: Range[NonNeg] = (10.0, 80.0)
    tip_share: Frac = 0.4  # share of orders with a tip
    tip_mean: NonNeg = 2.0
    conversion_elasticity: NonNeg = 0.8  # P(order | quote) = exp(-e * max(0, fee / reference_fee - 1))

    @field_validator("centres")
    @classmethod
    def _centres(cls, v: tuple[DemandCentre, ...]) -> tuple[DemandCentre, ...]:
        if v and sum(c.weight for c in v) <= 0:
            raise ValueError("at least one demand centre needs a positive weight")
        return v

    @model_validator(mode="after")
    def _shares(self) -> Demand:
        if abs(self.express.share + self.standard.share + self.same_day.share - 1.0) > 1e-6:
            raise ValueError("service level shares (express, standard, same_day) must sum to 1")
        if sum(self.use_cases.values()) <= 0:
            raise ValueError("use_cases: at least one share must be positive")
        return self


class Vehicle(_Model):
    share: Frac
    speed: Pos  # x the car free-flow speed
    capacity_litres: Pos
    size_class: Annotated[int, Field(ge=0, le=2)]
    cost_per_km: NonNeg = 0.15  # the driver's running cost (fuel, wear), for driver-side rewards


class Acceptance(_Model):
    intercept: float = 0.5
    pay: float = 0.6  # per euro of payout above the reservation pay
    reservation_pay: NonNeg = 5.0
    pickup_km: float = -0.8
    preferred_zone: float = 0.7
    load: float = -1.0  # x fraction of capacity already used
    bias_sd: NonNeg = 0.5  # spread of the individual intercept
    response_seconds: Range[NonNeg] = (10.0, 60.0)


class IdleBehaviour(_Model):
    """What a gig driver does when left without work (owned-fleet drivers wait where they are).

    A driver's two idle clocks start when it logs on and when its last stop is served or its last offer
    answered: the drift-home clock and the log-off patience. A platform repositioning move restarts, by
    ``reposition_renews``: ``nothing`` (a move is no work: both clocks run on), ``drift`` (the driver waits
    where it was sent ``drift_home_minutes`` before heading home; its patience runs on) or ``all`` (both:
    an instruction renews its patience, and it stays online longer).
    """

    # after this many idle minutes a driver standing away from home drives back home (None: it waits)
    drift_home_minutes: Pos | None = None
    # after this many idle minutes a driver standing idle logs off before its shift's end (None: never)
    log_off_minutes: Pos | None = None
    # which idle clocks a platform repositioning move restarts: nothing, drift (drift-home) or all (+ log-off)
    reposition_renews: Literal["nothing", "drift", "all"] = "nothing"


class Fleet(_Model):
    drivers: Annotated[int, Field(ge=1, le=MAX_DRIVERS)] = 100
    owned_share: Frac = 0.1
    flex_share: Frac = 0.2
    applicant_share: Frac = 0.1
    bad_documents_share: Frac = 0.25  # of applicants
    vehicles: dict[Literal["bike", "car", "van"], Vehicle] = {
        "bike": Vehicle(share=0.45, speed=0.55, capacity_litres=40, size_class=0, cost_per_km=0.02),
        "car": Vehicle(share=0.45, speed=1.0, capacity_litres=150, size_class=1, cost_per_km=0.2),
        "van": Vehicle(share=0.10, speed=0.85, capacity_litres=800, size_class=2, cost_per_km=0.3),
    }
    shift_hours: Range[Pos] = (4.0, 8.0)
    flex_login_per_hour: NonNeg = 0.3  # base log-on rate of an offline flex driver
    flex_surge_gain: NonNeg = 3.0  # x (mean surge - 1)
    flex_session_hours: Range[Pos] = (1.0, 3.0)
    flex_reference_hourly: Pos = 15.0  # earnings per online hour above this draw more flex drivers online
    acceptance: Acceptance = Acceptance()
    late_streak_to_suspend: Annotated[int, Field(ge=1)] = 3
    suspension_minutes: Pos = 60.0
    pickup_service_minutes: NonNeg = 3.0
    dropoff_service_minutes: NonNeg = 2.0
    service_time_sd: NonNeg = 0.2  # spread of the individual service-time factor
    geofence_m: NonNeg = 50.0
    # where the arrival half of a stop's service starts for a driver that was already standing at the stop's
    # node when the stop was given to it: False, when it is given (the driver walks in then); True (the MDRP
    # rule, ``pickup = max(ready, arrival + s/2)`` with the courier's real arrival), when the driver got there
    service_from_arrival: bool = False
    max_route_stops: Annotated[int, Field(ge=2, le=64)] = 8
    instant_pay_share: Frac = 0.5
    # zones the drivers live in (each driver's home and preferred zone drawn uniformly from them; empty: any)
    home_zones: tuple[Annotated[int, Field(ge=0)], ...] = ()
    idle: IdleBehaviour = IdleBehaviour()

    @model_validator(mode="after")
    def _shares(self) -> Fleet:
        total = sum(v.share for v in self.vehicles.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"vehicles: shares must sum to 1 (got {total:g})")
        if self.max_route_stops % 2:
            raise ValueError("max_route_stops must be even (a pickup and a drop-off per order)")
        return self


class Fee(_Model):
    base: NonNeg = 3.0
    per_km: NonNeg = 0.8
    size: tuple[NonNeg, NonNeg, NonNeg] = (0.0, 1.5, 6.0)  # by the smallest vehicle size class that fits
    express: NonNeg = 3.0
    standard: NonNeg = 1.0
    same_day: NonNeg = 0.0
    reference: Pos = 9.0  # the fee customers expect; conversion falls above it


class Surge(_Model):
    enabled: bool = True
    # surge = 1 + sensitivity * max(0, demand / idle drivers in the zone - 1), capped at max. demand:
    #   "requests": orders requested in the zone in the last window_min minutes (converted or not): the
    #               request rate, which the platform's dispatch decisions do not change;
    #   "open":     orders open (waiting for a driver) in the zone: a backlog the platform controls --
    #               holding orders raises the fee (a learned policy finds this; see docs/simulator.md).
    basis: Literal["requests", "open"] = "requests"
    window_min: Annotated[float, Field(gt=0.0, le=240.0)] = 5.0
    sensitivity: NonNeg = 0.5
    max: Annotated[float, Field(ge=1.0)] = 2.0


class Payout(_Model):
    base: NonNeg = 4.0
    per_km: NonNeg = 0.6
    free_km: NonNeg = 1.0  # distance bonus for kilometres beyond this (pickup leg + trip)
    pickup_paid: bool = True  # the pickup leg counts in the distance bonus (False: the trip alone)
    surge_incentive: NonNeg = 2.0  # euros per unit of surge above 1
    hourly_guarantee: NonNeg | None = None  # gig drivers: top-up to this per online hour at shift end
    owned_hourly_cost: NonNeg = 16.0
    escalation_step: NonNeg = 0.15  # payout x (1 + step * level) for a re-offer
    escalation_cap: Annotated[float, Field(ge=1.0)] = 1.6
    escalation_levels: Annotated[int, Field(ge=1, le=16)] = 4
    auto_escalate: bool = True  # the built-in heuristics re-offer at level = declines so far
    dispute_rate: Frac = 0.01  # a payout is miscalculated (distance bonus dropped) and corrected next cycle


class Pricing(_Model):
    enabled: bool = True  # False: no customer fees (MDRP), every order converts
    fee: Fee = Fee()
    surge: Surge = Surge()
    payout: Payout = Payout()


class Sla(_Model):
    late_refund_share: Frac = 0.5  # of the fee, refunded on a late delivery
    cancel_penalty: NonNeg = 2.0  # euros credited on top of the full refund when an order is cancelled
    at_risk_minutes: NonNeg = 0.0  # an order is at risk when its ETA is past deadline - this


class Family(_Model):
    """How the members of a scenario family differ from the scenario written (member ``NAME@F`` is drawn from
    family seed ``F``): the road layout, the demand centres' positions, weights and peak times."""

    layout: bool = True  # draw each member's city.layout_seed
    centre_shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1  # centres move up to this fraction of the extent
    time_shift_hours: Annotated[float, Field(ge=0.0, le=6.0)] = 1.0  # each centre's peaks move together, +- this
    weight_sd: NonNeg = 0.25  # each centre's weight x lognormal(0, weight_sd)


class GridScenario(_Model):
    """A synthetic city with generated demand and drivers."""

    name: str = "scenario"
    description: str = ""
    horizon: Horizon = Horizon()
    city: GridCity = GridCity()
    traffic: Traffic = Traffic()
    demand: Demand = Demand()
    fleet: Fleet = Fleet()
    pricing: Pricing = Pricing()
    sla: Sla = Sla()
    same_pickup_bundles: bool = False  # MDRP rule: a route collects from one pickup at a time
    family: Family | None = None  # this scenario has members NAME@F (envs/scenarios/family.py)

    @model_validator(mode="after")
    def _zones(self) -> GridScenario:
        zx, zy = self.city.zones
        if zx > self.city.size[0] or zy > self.city.size[1]:
            raise ValueError("city.zones cannot have more cells than city.size has nodes")
        for i, hz in enumerate(self.fleet.home_zones):
            if hz >= zx * zy:
                raise ValueError(f"fleet.home_zones.{i}: {hz} is not a zone (0..{zx * zy - 1})")
        for i, fs in enumerate(self.demand.flash_sales):
            if fs.zone >= zx * zy:
                raise ValueError(f"demand.flash_sales.{i}.zone: {fs.zone} is not a zone (0..{zx * zy - 1})")
        most = max_expected_orders(self)
        if self.demand.flash_sales and most > MAX_ORDERS:
            raise ValueError(
                f"demand.flash_sales: with demand.orders {self.demand.orders:,.0f} the flash sales can add up to "
                f"{most - self.demand.orders:,.0f} orders, {most:,.0f} in all, above the limit of {MAX_ORDERS:,} "
                "a day: lower their multiplier or minutes, or demand.orders"
            )
        return self


def max_expected_orders(cfg: GridScenario) -> float:
    """The most orders a day of ``cfg`` can expect: ``demand.orders`` plus each flash sale's extra orders
    as ``generate.sample_orders`` draws them, with the whole day's pickups in the sale's zone."""
    d, h = cfg.demand, cfg.horizon
    extra = sum(2.0 * (fs.multiplier - 1.0) * min(1.0, fs.minutes * 60.0 / (h.end - h.start)) for fs in d.flash_sales)
    return d.orders * (1.0 + extra)
