"""Hand-built scenarios: your own nodes, orders and drivers, replayed exactly (tests, case studies).

Travel uses the MDRP metric (``ceil(euclidean metres / meters_per_minute)`` whole minutes) so that
outcomes can be worked out by hand. Times are seconds since midnight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gigdispatch.envs.core.city import EuclideanCity
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.scenarios.loader import parse_config

ORDER_DEFAULTS: dict[str, Any] = {
    "ready": None,
    "deadline": None,
    "patience": np.inf,
    "volume": 1.0,
    "value": 20.0,
    "tip": 0,
    "level": 1,
    "use_case": 0,
}
DRIVER_DEFAULTS: dict[str, Any] = {
    "start": 0.0,
    "end": 86_400.0,
    "capacity": np.inf,
    "always_accept": True,
    "owned": False,
    "speed": 1.0,
    "accept_bias": 0.0,
    "response_s": 30.0,
    "instant_pay": True,
    "service_factor": 1.0,
}

BASE_CONFIG: dict[str, Any] = {
    "traffic": {"enabled": False, "incidents_per_hour": 0.0},
    "fleet": {
        "flex_share": 0.0,
        "flex_login_per_hour": 0.0,
        "applicant_share": 0.0,
        "geofence_m": 0.0,
        "service_time_sd": 0.0,
        "pickup_service_minutes": 2.0,
        "dropoff_service_minutes": 2.0,
    },
    "pricing": {"surge": {"enabled": False}, "payout": {"dispute_rate": 0.0}},
}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def fixed_scenario(
    nodes_xy: Sequence[Sequence[float]],
    orders: Sequence[dict[str, Any]],
    drivers: Sequence[dict[str, Any]],
    config: dict[str, Any] | None = None,
    meters_per_minute: float = 300.0,
    name: str = "fixed",
    zone_grid: tuple[int, int] = (1, 1),
) -> Scenario:
    """Build a scenario from explicit data.

    ``orders``: dicts with ``t_place``, ``pickup``, ``dropoff`` (node ids) and optionally ``ready``,
    ``deadline`` (default placement + 60 min), ``patience`` (customer gives up this many seconds after
    placement while unassigned), ``volume``, ``value``, ``tip`` (cents), ``level``, ``use_case``.
    ``drivers``: dicts with ``node`` and optionally ``start``, ``end``, ``capacity``, ``always_accept``,
    ``owned``, ``speed``, ``accept_bias``, ``response_s``, ``instant_pay``, ``service_factor``.
    ``config``: scenario fields (as in YAML) on top of a quiet base (no traffic, no flex, no applicants).
    ``zone_grid``: the zones, a grid of cells over the nodes' bounding box (default: one zone).
    """
    cfg_dict = _merge(BASE_CONFIG, config or {})
    cfg_dict.setdefault("name", name)
    cfg_dict = _merge(cfg_dict, {"fleet": {"drivers": max(1, len(drivers))}})
    if "horizon" not in cfg_dict:
        t_last = max([o["t_place"] for o in orders] + [0.0])
        cfg_dict["horizon"] = {"start": 0.0, "end": t_last + 60.0, "step_seconds": 60.0, "drain_minutes": 240.0}
    cfg: GridScenario = parse_config(cfg_dict, f"fixed scenario {name!r}")
    xy = np.asarray(nodes_xy, dtype=np.float64)
    city = EuclideanCity(xy, meters_per_minute, zone_grid=zone_grid)
    o = [{**ORDER_DEFAULTS, **x} for x in sorted(orders, key=lambda x: x["t_place"])]
    d = [{**DRIVER_DEFAULTS, **x} for x in drivers]
    t_place = np.array([x["t_place"] for x in o], dtype=np.float64)
    fixed_orders: dict[str, np.ndarray] = {
        "t_place": t_place,
        "t_ready": np.array([x["ready"] if x["ready"] is not None else x["t_place"] for x in o], dtype=np.float64),
        "deadline": np.array(
            [x["deadline"] if x["deadline"] is not None else x["t_place"] + 3600.0 for x in o], dtype=np.float64
        ),
        "t_patience": t_place + np.array([x["patience"] for x in o], dtype=np.float64),
        "pickup": np.array([x["pickup"] for x in o], dtype=np.int32),
        "dropoff": np.array([x["dropoff"] for x in o], dtype=np.int32),
        "volume": np.array([x["volume"] for x in o], dtype=np.float32),
        "value": np.array([x["value"] for x in o], dtype=np.float32),
        "tip": np.array([x["tip"] for x in o], dtype=np.int64),
        "level": np.array([x["level"] for x in o], dtype=np.int8),
        "use_case": np.array([x["use_case"] for x in o], dtype=np.int8),
        "group": np.array([x["pickup"] for x in o], dtype=np.int32),
    }
    n = len(d)
    fixed_drivers: dict[str, np.ndarray] = {
        "vehicle": np.ones(n, np.int8),
        "speed": np.array([x["speed"] for x in d], dtype=np.float64),
        "capacity": np.array([x["capacity"] for x in d], dtype=np.float64),
        "owned": np.array([x["owned"] for x in d], dtype=bool),
        "always_accept": np.array([x["always_accept"] or x["owned"] for x in d], dtype=bool),
        "flex": np.zeros(n, bool),
        "shift_start": np.array([x["start"] for x in d], dtype=np.float64),
        "shift_end": np.array([x["end"] for x in d], dtype=np.float64),
        "home": np.array([x["node"] for x in d], dtype=np.int32),
        "pref_zone": np.zeros(n, np.int32),
        "accept_bias": np.array([x["accept_bias"] for x in d], dtype=np.float64),
        "response_s": np.array([x["response_s"] for x in d], dtype=np.float64),
        "service_factor": np.array([x["service_factor"] for x in d], dtype=np.float64),
        "instant_pay": np.array([x["instant_pay"] for x in d], dtype=bool),
        "t_verified": np.full(n, -np.inf),
        "docs_ok": np.ones(n, bool),
    }
    return Scenario(
        name=cfg.name, cfg=cfg, city=city, source="<fixed>", fixed_orders=fixed_orders, fixed_drivers=fixed_drivers
    )
