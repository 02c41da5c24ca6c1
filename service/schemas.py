"""The service's request and response bodies (pydantic models) and their validators.

Requests are strict: unknown fields, NaN/±inf numbers, strings for numbers and out-of-range values are
rejected (422, naming the field); integral JSON numbers such as ``2.0`` are accepted for integer fields,
as JSON Schema counts them as integers. The OpenAPI document states the rules validation enforces
("node, or x and y", "only a busy driver has stops") through ``json_schema_extra``.

Times are seconds since midnight of the served day, 0 to 7 days. A request must be consistent in time:
an order is ready and due no earlier than it was placed (``ready``, ``deadline`` >= ``placed``), and
placed no later than the request's ``now``. A rule across a model's fields is raised with
``field_error``, which carries the path of the field it names below the model (the app puts it into
the 422's ``loc`` and message). The rules that need the served scenario (positions near its city, the
number of declines an order can have had) are ``ServeState.load``'s.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.json_schema import JsonDict
from pydantic_core import PydanticCustomError

MAX_DRIVERS = 20_000
MAX_ORDERS = 20_000

_ID = Annotated[str, Field(min_length=1, max_length=128, description="caller's id (unique within the request)")]
_Time = Annotated[float, Field(ge=0.0, le=86_400.0 * 7, description="seconds since midnight of the day (0 to 7 days)")]
_Coord = Annotated[float, Field(ge=-1e9, le=1e9, description="metres in the scenario's city frame")]


def _integral(v: object) -> object:
    """JSON numbers like ``12.0`` are integers for JSON Schema; strict validation would reject them."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# on the integer fields of requests (a per-field call, only where an integer is given)
_INTEGRAL = BeforeValidator(_integral)
_Node = Annotated[int, Field(ge=0, description="node id of the scenario's road network"), _INTEGRAL]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


def field_error(loc: tuple[str | int, ...], msg: str) -> PydanticCustomError:
    """The error a model validator raises about a field below its model (``("orders", 3, "placed")``): the
    message is ``msg``; ``ctx["field"]`` is the path, which the app appends to the error's location, so the
    422 names the field as for any other error (``orders.3.placed: ...``)."""
    path = ".".join(str(x) for x in loc)
    return PydanticCustomError("value_error", "{path}: {reason}", {"field": list(loc), "path": path, "reason": msg})


# "node, or x and y, not both" in JSON Schema, so that the OpenAPI document states what validation enforces
_NODE_GIVEN: JsonDict = {"required": ["node"], "properties": {"node": {"type": "integer"}}}
_X_GIVEN: JsonDict = {"required": ["x"], "properties": {"x": {"type": "number"}}}
_Y_GIVEN: JsonDict = {"required": ["y"], "properties": {"y": {"type": "number"}}}
_POSITION_SCHEMA: JsonDict = {
    "oneOf": [
        {"allOf": [_NODE_GIVEN], "not": {"anyOf": [_X_GIVEN, _Y_GIVEN]}},
        {"allOf": [_X_GIVEN, _Y_GIVEN], "not": _NODE_GIVEN},
    ]
}


def _check_position(node: int | None, x: float | None, y: float | None) -> None:
    """A position is a node id, or x and y together; exactly one of the two forms."""
    if node is None:
        if x is None or y is None:
            raise ValueError("give node, or x and y" if x is None and y is None else "x and y must be given together")
    elif x is not None or y is not None:
        raise ValueError("give node or x/y, not both")


class Location(_Model):
    """A place: a node id, or x/y metres (snapped to the nearest node). Exactly one of the two forms."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, json_schema_extra=_POSITION_SCHEMA)

    node: _Node | None = None
    x: _Coord | None = None
    y: _Coord | None = None

    @model_validator(mode="after")
    def _one_form(self) -> Location:
        _check_position(self.node, self.x, self.y)
        return self


class Stop(Location):
    """One stop of a busy driver's route."""

    kind: Literal["pickup", "dropoff"] = "dropoff"


# only a busy driver has stops: otherwise route is null or empty and pending_stops null or 0
_STOPS_ONLY_WHEN_BUSY: JsonDict = {
    "anyOf": [
        {"required": ["status"], "properties": {"status": {"const": "busy"}}},
        {
            "properties": {
                "status": {"enum": ["idle", "offline"]},
                "route": {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]},
                "pending_stops": {"anyOf": [{"type": "null"}, {"const": 0}]},
            }
        },
    ]
}


class DriverIn(_Model):
    """A driver as the caller sees it. Position: ``node``, or ``x`` and ``y``."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        strict=True,
        json_schema_extra={**_POSITION_SCHEMA, "allOf": [_STOPS_ONLY_WHEN_BUSY]},
    )

    id: _ID
    node: _Node | None = None
    x: _Coord | None = None
    y: _Coord | None = None
    status: Literal["idle", "busy", "offline"] = "idle"
    vehicle: Literal["bike", "car", "van"] = "car"
    capacity: Annotated[float, Field(gt=0, le=1e6)] | None = Field(
        default=None, description="litres (default: the vehicle type's)"
    )
    load: Annotated[float, Field(ge=0, le=1e6)] = Field(
        default=0.0, description="litres on board or committed to the route"
    )
    shift_end: _Time | None = Field(default=None, description="no pickups after this time (default: no limit)")
    owned: bool = Field(default=False, description="owned fleet: always accepts, paid by the hour (payout 0)")
    route: Annotated[list[Stop], Field(max_length=64)] | None = Field(
        default=None, description="remaining stops of a busy driver, next first"
    )
    pending_stops: Annotated[int, Field(ge=0, le=64), _INTEGRAL] | None = Field(
        default=None, description="remaining stops when the route is unknown"
    )

    @model_validator(mode="after")
    def _position(self) -> DriverIn:
        _check_position(self.node, self.x, self.y)
        return self


class OrderIn(_Model):
    """A pending order (waiting for a driver)."""

    id: _ID
    pickup: Location
    dropoff: Location
    placed: _Time
    ready: _Time | None = Field(default=None, description="earliest pickup (default: placed)")
    deadline: _Time
    volume: Annotated[float, Field(ge=0, le=1e6)] = Field(default=1.0, description="litres")
    service_level: Literal["express", "standard", "same_day"] = "standard"
    fee: Annotated[int, Field(ge=0, le=10**9), _INTEGRAL] | None = Field(
        default=None, description="cents charged (default: the scenario's quote)"
    )
    tip: Annotated[int, Field(ge=0, le=10**9), _INTEGRAL] = Field(default=0, description="cents, passed to the driver")
    declines: Annotated[int, Field(ge=0, le=1000), _INTEGRAL] = Field(
        default=0,
        description="offers declined so far (escalation); at most (now - placed) / the served scenario's "
        "step_seconds, plus one (an order is offered at most once per decision step)",
    )

    @field_validator("ready", "deadline")
    @classmethod
    def _not_before_placed(cls, v: float | None, info: ValidationInfo) -> float | None:
        placed = info.data.get("placed")  # absent when placed itself was refused
        if v is not None and placed is not None and v < placed:
            what = "ready" if info.field_name == "ready" else "due"
            msg = f"{v:g} is before placed ({placed:g}): an order is {what} no earlier than it is placed"
            raise PydanticCustomError("value_error", "{reason}", {"reason": msg})
        return v


def _no_duplicates(items: list[Any], what: str) -> None:
    seen: dict[str, int] = {}
    for i, it in enumerate(items):
        j = seen.setdefault(it.id, i)
        if j != i:
            raise field_error((what, i, "id"), f"duplicate {what[:-1]} id {it.id!r} (also {what}.{j}.id)")


def check_placed_by(now: float, orders: list[tuple[tuple[str | int, ...], OrderIn]]) -> None:
    """Every order (given with its path, ``("orders", 3)``) was placed by ``now``."""
    for loc, o in orders:
        if o.placed > now:
            msg = f"{o.placed:g} is after now ({now:g}): the orders of a request are placed by now"
            raise field_error((*loc, "placed"), msg)


class DispatchRequest(_Model):
    now: _Time
    drivers: Annotated[list[DriverIn], Field(max_length=MAX_DRIVERS)]
    orders: Annotated[list[OrderIn], Field(max_length=MAX_ORDERS)]

    @model_validator(mode="after")
    def _unique(self) -> DispatchRequest:
        _no_duplicates(self.drivers, "drivers")
        _no_duplicates(self.orders, "orders")
        check_placed_by(self.now, [(("orders", i), o) for i, o in enumerate(self.orders)])
        return self


class Assignment(BaseModel):
    order_id: str
    driver_id: str
    pickup_eta_s: float = Field(description="seconds from now until the driver can be at the pickup")
    payout: int = Field(description="cents offered to the driver (tip excluded)")
    level: int = Field(description="escalation level of the offer (0 = base payout)")


class DispatchResponse(BaseModel):
    policy: str
    now: float
    assignments: list[Assignment]
    held: list[str] = Field(description="order ids left unassigned this time")


class RepositionRequest(DispatchRequest):
    pass


class Move(BaseModel):
    driver_id: str
    zone: int
    x: float = Field(description="zone target: x metres of a node in the zone")
    y: float
    node: int


class RepositionResponse(BaseModel):
    rule: str
    moves: list[Move]


class QuoteRequest(_Model):
    now: _Time
    order: OrderIn
    driver: DriverIn | None = Field(
        default=None, description="quote the payout for this driver (default: a gig car driver at the pickup)"
    )
    level: Annotated[
        int,
        Field(
            ge=0,
            le=15,
            description="escalation level; above the scenario's top level the top level applies "
            "(as the payout cap does)",
        ),
        _INTEGRAL,
    ] = 0
    surge: Annotated[float, Field(ge=1.0, le=100.0)] = 1.0

    @model_validator(mode="after")
    def _placed_by_now(self) -> QuoteRequest:
        check_placed_by(self.now, [(("order",), self.order)])
        return self


class QuoteResponse(BaseModel):
    fee: int = Field(description="cents quoted to the customer (tip excluded)")
    payout: int = Field(description="cents offered to the driver at the level (tip excluded)")
    tip: int
    margin: int = Field(description="fee - payout, cents")
    level: int


class InternalErrorResponse(BaseModel):
    """The answer to a request that hit a bug of the service (500); the id is in the service's log."""

    detail: Literal["internal error"]
    error_id: str = Field(description="hex id of the log record that holds the traceback")
