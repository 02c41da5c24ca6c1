"""Replay of the Grubhub Meal Delivery Routing Problem instances (Reyes et al., 2018).

An instance folder holds ``orders.txt``, ``couriers.txt``, ``restaurants.txt`` and
``instance_parameters.txt`` (tab-separated, one header line; times in minutes, coordinates in metres).
The replay follows the MDRP rules:

* travel time = ceil(euclidean metres / meters_per_minute) minutes (``EuclideanCity``), no traffic;
* pickup service and drop-off service, half on arrival and half on departure; a pickup never
  before the order's ready time (``pickup = max(ready, arrival + s/2)``), the arrival being when the courier
  got there, also when it stood at the restaurant before it was given the order
  (``fleet.service_from_arrival``);
* an order placed at a whole minute is seen at that minute's decision (``horizon.inclusive_placement``);
* bundles only from one restaurant (``same_pickup_bundles``), with no size limit beyond the route length;
* couriers pick up only before their off time, and may deliver after it;
* courier pay = max(pay_per_order x orders delivered, pay_per_hour x shift hours) (per-order payout
  plus an hourly-guarantee top-up), couriers always accept, no customer fees, no cancellations;
* the SLA deadline is the target click-to-door (40 min), so ``on_time_rate`` is the share within it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import ValidationError

from gigdispatch.envs.core.city import EuclideanCity
from gigdispatch.envs.core.config import Fleet, GridScenario, Horizon, Payout, Pricing, Sla, Traffic
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.scenarios.errors import ScenarioError, format_validation_error

REQUIRED = ("orders.txt", "couriers.txt", "restaurants.txt", "instance_parameters.txt")
COLUMNS = {
    "orders.txt": ("order", "x", "y", "placement_time", "restaurant", "ready_time"),
    "couriers.txt": ("courier", "x", "y", "on_time", "off_time"),
    "restaurants.txt": ("restaurant", "x", "y"),
}
PARAM_NAMES = (
    "meters_per_minute",
    "pickup_service_minutes",
    "dropoff_service_minutes",
    "target_click_to_door",
    "maximum_click_to_door",
    "pay_per_order",
    "guaranteed_pay_per_hour",
)
MAX_ROUTE_STOPS = 16  # bundles of up to 8 orders (the published solutions average 1.09 orders per bundle)


def is_mdrp_folder(path: Path) -> bool:
    return path.is_dir() and (path / "orders.txt").exists() and (path / "couriers.txt").exists()


def _read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not an ASCII text file ({exc.reason} at byte {exc.start})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ScenarioError(f"{path}: the file is empty (expected a header line and data rows)")
    header = lines[0].split("\t")
    rows = [ln.split("\t") for ln in lines[1:]]
    return [h.strip() for h in header], rows


def _numeric(path: Path, rows: list[list[str]], col: int, name: str) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.float64)
    for i, r in enumerate(rows):
        try:
            v = float(r[col])
        except (IndexError, ValueError):
            got = r[col] if col < len(r) else "<missing>"
            raise ScenarioError(f"{path}: row {i + 2}, column '{name}': expected a number, got {got!r}") from None
        if not np.isfinite(v):
            raise ScenarioError(f"{path}: row {i + 2}, column '{name}': must be finite, got {r[col]!r}")
        out[i] = v
    return out


def _load_table(folder: Path, fname: str) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """The text columns (the id, an order's restaurant) and the numeric columns of one instance file."""
    path = folder / fname
    header, rows = _read_table(path)
    want = COLUMNS[fname]
    if tuple(header[: len(want)]) != want:
        raise ScenarioError(f"{path}: header must be {' '.join(want)} (tab-separated), got {' '.join(header)}")
    for i, r in enumerate(rows):
        if len(r) != len(want):
            raise ScenarioError(f"{path}: row {i + 2} has {len(r)} fields, expected {len(want)} ({', '.join(want)})")
    text = {want[0]: [r[0].strip() for r in rows]}
    num: dict[str, np.ndarray] = {}
    for c, name in enumerate(want[1:], start=1):
        if name == "restaurant":
            text[name] = [r[c].strip() for r in rows]
        else:
            num[name] = _numeric(path, rows, c, name)
    ids = text[want[0]]
    if len(set(ids)) != len(ids):
        raise ScenarioError(f"{path}: column '{want[0]}' has duplicate ids")
    if not rows:
        raise ScenarioError(f"{path}: no data rows")
    return text, num


def load_mdrp(folder: str | Path) -> Scenario:
    """Load an MDRP instance folder as a scenario (errors name the file, row and column)."""
    folder = Path(folder)
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise ScenarioError(f"{folder}: not an MDRP instance folder, missing {', '.join(missing)}")
    order_txt, orders = _load_table(folder, "orders.txt")
    courier_txt, couriers = _load_table(folder, "couriers.txt")
    rest_txt, rest = _load_table(folder, "restaurants.txt")
    ppath = folder / "instance_parameters.txt"
    _, prow = _read_table(ppath)
    if len(prow) != 1 or len(prow[0]) != len(PARAM_NAMES):
        raise ScenarioError(f"{ppath}: expected one row of {len(PARAM_NAMES)} values ({', '.join(PARAM_NAMES)})")
    params = {name: float(_numeric(ppath, prow, c, name)[0]) for c, name in enumerate(PARAM_NAMES)}
    for name in PARAM_NAMES:
        svc = name in ("pickup_service_minutes", "dropoff_service_minutes")
        if params[name] < 0 or (params[name] == 0 and not svc):
            raise ScenarioError(
                f"{ppath}: '{name}' must be {'non-negative' if svc else 'positive'}, got {params[name]:g}"
            )

    rid = {r: i for i, r in enumerate(rest_txt["restaurant"])}
    unknown = [i for i, r in enumerate(order_txt["restaurant"]) if r not in rid]
    if unknown:
        i = unknown[0]
        raise ScenarioError(
            f"{folder / 'orders.txt'}: row {i + 2}, column 'restaurant': "
            f"unknown restaurant id {order_txt['restaurant'][i]!r} (not in restaurants.txt)"
        )
    for fname, table, cols in (
        ("orders.txt", orders, ("placement_time", "ready_time")),
        ("couriers.txt", couriers, ("on_time", "off_time")),
    ):
        for col in cols:
            neg = np.flatnonzero(table[col] < 0)
            if neg.size:
                i = int(neg[0])
                raise ScenarioError(
                    f"{folder / fname}: row {i + 2}, column '{col}': "
                    f"minutes from the start of the day cannot be negative, got {table[col][i]:g}"
                )
    if (orders["ready_time"] < orders["placement_time"]).any():
        i = int(np.argmax(orders["ready_time"] < orders["placement_time"]))
        raise ScenarioError(f"{folder / 'orders.txt'}: row {i + 2}: ready_time is before placement_time")
    if (couriers["off_time"] <= couriers["on_time"]).any():
        i = int(np.argmax(couriers["off_time"] <= couriers["on_time"]))
        raise ScenarioError(f"{folder / 'couriers.txt'}: row {i + 2}: off_time must be after on_time")

    n_r, n_o, n_c = len(rid), len(order_txt["order"]), len(courier_txt["courier"])
    # nodes: restaurants, then order drop-offs, then courier start points
    xy = np.concatenate(
        [
            np.stack([rest["x"], rest["y"]], 1),
            np.stack([orders["x"], orders["y"]], 1),
            np.stack([couriers["x"], couriers["y"]], 1),
        ]
    )
    city = EuclideanCity(xy, params["meters_per_minute"])
    r_of = np.array([rid[r] for r in order_txt["restaurant"]], dtype=np.int32)
    order_idx = np.argsort(orders["placement_time"], kind="stable")
    t_place = orders["placement_time"][order_idx] * 60.0
    t_ready = orders["ready_time"][order_idx] * 60.0
    target = params["target_click_to_door"] * 60.0
    fixed_orders = {
        "t_place": t_place,
        "t_ready": t_ready,
        "deadline": t_place + target,
        "t_patience": np.full(n_o, np.inf),
        "pickup": r_of[order_idx],
        "dropoff": (n_r + order_idx).astype(np.int32),
        "volume": np.zeros(n_o, np.float32),
        "value": np.zeros(n_o, np.float32),
        "tip": np.zeros(n_o, np.int64),
        "level": np.zeros(n_o, np.int8),
        "use_case": np.zeros(n_o, np.int8),
        "group": r_of[order_idx],
    }
    on, off = couriers["on_time"] * 60.0, couriers["off_time"] * 60.0
    ones = np.ones(n_c)
    fixed_drivers: dict[str, np.ndarray] = {
        "vehicle": np.ones(n_c, np.int8),
        "speed": ones.copy(),
        "capacity": np.full(n_c, np.inf),
        "owned": np.zeros(n_c, bool),
        "always_accept": np.ones(n_c, bool),
        "flex": np.zeros(n_c, bool),
        "shift_start": on,
        "shift_end": off,
        "home": (n_r + n_o + np.arange(n_c)).astype(np.int32),
        "pref_zone": np.zeros(n_c, np.int32),
        "accept_bias": np.zeros(n_c),
        "response_s": np.zeros(n_c),
        "service_factor": ones.copy(),
        "instant_pay": np.zeros(n_c, bool),
        "t_verified": np.full(n_c, -np.inf),
        "docs_ok": np.ones(n_c, bool),
    }
    start = float(min(on.min(), t_place.min()))
    end = float(max(off.max(), t_place.max() + 60.0))
    try:
        cfg = GridScenario(
            name=f"mdrp:{folder.name}",
            description=f"MDRP instance {folder.name} ({n_o} orders, {n_c} couriers, {n_r} restaurants)",
            horizon=Horizon(
                start=start,
                end=end,
                step_seconds=60.0,
                inclusive_placement=True,
                drain_minutes=params["maximum_click_to_door"] * 2,
            ),
            traffic=Traffic(enabled=False, incidents_per_hour=0.0),
            fleet=Fleet(
                drivers=n_c,
                pickup_service_minutes=params["pickup_service_minutes"],
                dropoff_service_minutes=params["dropoff_service_minutes"],
                service_time_sd=0.0,
                geofence_m=0.0,
                service_from_arrival=True,
                max_route_stops=MAX_ROUTE_STOPS,
                late_streak_to_suspend=10**6,
                flex_share=0.0,
                flex_login_per_hour=0.0,
                applicant_share=0.0,
            ),
            pricing=Pricing(
                enabled=False,
                payout=Payout(
                    base=params["pay_per_order"],
                    per_km=0.0,
                    free_km=0.0,
                    surge_incentive=0.0,
                    hourly_guarantee=params["guaranteed_pay_per_hour"],
                    escalation_step=0.0,
                    escalation_levels=1,
                    auto_escalate=False,
                    dispute_rate=0.0,
                ),
            ),
            sla=Sla(late_refund_share=0.0, cancel_penalty=0.0),
            same_pickup_bundles=True,
        )
    except ValidationError as err:  # a value the scenario schema rejects (belt and braces: checked above)
        raise ScenarioError(format_validation_error(str(folder), err)) from None
    return Scenario(
        name=cfg.name,
        cfg=cfg,
        city=city,
        source=str(folder),
        fixed_orders=fixed_orders,
        fixed_drivers=fixed_drivers,
        meta={"mdrp": params, "order_ids": [order_txt["order"][i] for i in order_idx], "n_restaurants": n_r},
    )
