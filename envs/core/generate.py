"""Sampling one episode's orders and drivers for a synthetic scenario (all vectorised).

Each function takes its own ``np.random.Generator`` (a sub-stream of the episode seed), so adding a
draw to one model does not shift the others.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from gigdispatch.envs.core.city import City
from gigdispatch.envs.core.config import Demand, Fleet, GridScenario, UseCase

USE_CASE_ORDER: tuple[UseCase, ...] = ("b2c", "returns", "b2b", "first_mile")
VEHICLE_ORDER = ("bike", "car", "van")


def _peak_rate(grid: np.ndarray, baseline: float, peaks) -> np.ndarray:
    """The relative rate ``baseline + sum of Gaussian peaks`` at the times ``grid``."""
    rate = np.full(np.shape(grid), float(baseline))
    for p in peaks:
        rate = rate + p.weight * np.exp(-0.5 * ((grid - p.center) / (p.width_hours * 3600.0)) ** 2)
    return rate


def centre_rates(grid: np.ndarray, demand: Demand) -> np.ndarray:
    """(len(grid), C) each demand centre's weighted rate ``weight x profile`` at the times ``grid``."""
    return np.stack([c.weight * _peak_rate(grid, c.baseline, c.peaks) for c in demand.centres], axis=-1)


def demand_rate(grid: np.ndarray, demand: Demand) -> np.ndarray:
    """The day's relative order rate at ``grid``: the centres' sum when there are centres, else the
    baseline + peaks profile."""
    if demand.centres:
        return centre_rates(grid, demand).sum(axis=-1)
    return _peak_rate(grid, demand.baseline, demand.peaks)


def _profile_times(rng: np.random.Generator, n: int, t0: float, t1: float, demand: Demand) -> np.ndarray:
    """``n`` placement times in [t0, t1) from the day's time-of-day profile (``demand_rate``)."""
    grid = np.linspace(t0, t1, 2049)
    rate = demand_rate(grid, demand)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(grid))])
    if cdf[-1] <= 0:
        return np.sort(rng.uniform(t0, t1, size=n))
    return np.sort(np.interp(rng.uniform(0.0, cdf[-1], size=n), cdf, grid))


def centre_xy(city: City, demand: Demand) -> np.ndarray:
    """(C, 2) metres: the demand centres' positions, given as fractions of the city's extent."""
    lo, hi = city.node_xy.min(axis=0), city.node_xy.max(axis=0)
    frac = np.array([[c.x, c.y] for c in demand.centres], dtype=np.float64).reshape(-1, 2)
    return lo + frac * (hi - lo)


def random_node_in_zone(city: City, zones: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly drawn node of each given zone (any node where a zone has none)."""
    by_zone = np.argsort(city.zone_of, kind="stable")
    counts = np.bincount(city.zone_of, minlength=city.n_zones)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    u = rng.random(len(zones))
    cnt = counts[zones]
    pick = by_zone[np.minimum(first[zones] + (u * cnt).astype(np.int64), len(by_zone) - 1)]
    fallback = (u * city.n_nodes).astype(np.int64)
    return np.where(cnt > 0, pick, fallback).astype(np.int32)


def sample_orders(cfg: GridScenario, city: City, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static fields of the episode's orders, sorted by placement time."""
    d = cfg.demand
    t0, t1 = cfg.horizon.start, cfg.horizon.end
    tree = cKDTree(city.node_xy)
    n_nodes = city.n_nodes
    # hotspots: pickup clusters, drawn towards the centre
    centre = city.node_xy.mean(axis=0)
    spread = np.abs(city.node_xy - centre).max(axis=0) * 0.6
    hs_xy = centre + rng.normal(0.0, 0.5, size=(d.hotspots, 2)) * spread
    hs_node = tree.query(hs_xy)[1].astype(np.int32)
    hs_w = rng.lognormal(0.0, 0.6, size=d.hotspots)
    hs_w /= hs_w.sum()

    n = int(rng.poisson(d.orders))
    t_place = _profile_times(rng, n, t0, t1, d)
    hot = rng.choice(d.hotspots, size=n, p=hs_w)

    def near(xy_centre: np.ndarray, radius: float | np.ndarray) -> np.ndarray:
        ang = rng.uniform(0, 2 * np.pi, size=len(xy_centre))
        rad = radius * np.sqrt(rng.uniform(0, 1, size=len(xy_centre)))
        pts = xy_centre + np.stack([np.cos(ang), np.sin(ang)], axis=1) * rad[:, None]
        return tree.query(pts)[1].astype(np.int32)

    if d.centres:
        # each order at the centre busiest at its time: P(centre c | t) = w_c r_c(t) / sum
        rates = centre_rates(t_place, d)
        rates = rates / np.maximum(rates.sum(axis=1, keepdims=True), 1e-300)
        u = rng.random(n)
        which = np.minimum((np.cumsum(rates, axis=1) < u[:, None]).sum(axis=1), len(d.centres) - 1)
        radius = np.array([c.radius_m for c in d.centres])
        pickup = near(centre_xy(city, d)[which], radius[which])
    else:
        pickup = near(city.node_xy[hs_node[hot]], d.hotspot_radius_m)
    dropoff = near(city.node_xy[pickup], d.drop_radius_m)
    uc_names = [u for u in USE_CASE_ORDER]
    uc_p = np.array([d.use_cases.get(u, 0.0) for u in uc_names])
    use_case = rng.choice(len(uc_names), size=n, p=uc_p / uc_p.sum()).astype(np.int8)
    hub = hs_node[np.argmax(hs_w)]  # the busiest hotspot doubles as the hub
    rand_nodes = rng.integers(0, n_nodes, size=n).astype(np.int32)
    other_hot = hs_node[rng.choice(d.hotspots, size=n, p=hs_w)]
    # returns: customer -> hub; b2b: store -> store; first mile: supplier -> hub
    ret, b2b, fm = use_case == 1, use_case == 2, use_case == 3
    pickup = np.where(ret | fm, rand_nodes, pickup)
    dropoff = np.where(ret | fm, hub, np.where(b2b, other_hot, dropoff)).astype(np.int32)

    # flash sales: extra orders picked up in one zone during a window
    extra = []
    zone_of_pick = city.zone_of[pickup]
    for fs in d.flash_sales:
        share = float(np.mean(zone_of_pick == fs.zone)) if n else 0.0
        share = max(share, 1.0 / city.n_zones)
        win_share = min(1.0, fs.minutes * 60.0 / (t1 - t0))
        k = int(rng.poisson((fs.multiplier - 1.0) * d.orders * share * win_share * 2.0))
        zone_nodes = np.flatnonzero(city.zone_of == fs.zone)
        if k == 0 or zone_nodes.size == 0:
            continue
        tp = rng.uniform(fs.start, min(fs.start + fs.minutes * 60.0, t1), size=k)
        pk = zone_nodes[rng.integers(0, zone_nodes.size, size=k)].astype(np.int32)
        extra.append((tp, pk, near(city.node_xy[pk], d.drop_radius_m), np.zeros(k, np.int8)))
    if extra:
        t_place = np.concatenate([t_place] + [e[0] for e in extra])
        pickup = np.concatenate([pickup] + [e[1] for e in extra])
        dropoff = np.concatenate([dropoff] + [e[2] for e in extra])
        use_case = np.concatenate([use_case] + [e[3] for e in extra])
        order = np.argsort(t_place, kind="stable")
        t_place, pickup, dropoff, use_case = t_place[order], pickup[order], dropoff[order], use_case[order]
    n = len(t_place)

    same = pickup == dropoff  # keep every order a real trip
    dropoff[same] = (dropoff[same] + 1) % n_nodes

    big = (use_case == 2) | (use_case == 3)
    volume = rng.uniform(d.volume_litres[0], d.volume_litres[1], size=n) * np.where(big, 5.0, 1.0)
    ready = t_place + np.where(
        use_case == 0,
        rng.uniform(d.ready_minutes[0], d.ready_minutes[1], size=n) * 60.0,
        rng.uniform(0.0, 5.0, size=n) * 60.0,
    )
    lv_p = np.array([d.express.share, d.standard.share, d.same_day.share])
    level = rng.choice(3, size=n, p=lv_p / lv_p.sum()).astype(np.int8)
    minutes = np.array([d.express.minutes, d.standard.minutes, d.same_day.minutes])[level]
    deadline = t_place + minutes * 60.0
    end_of_day = t1 + cfg.horizon.drain_minutes * 60.0
    deadline = np.where(level == 2, np.minimum(deadline, end_of_day), deadline)
    deadline = np.maximum(deadline, ready + 60.0)
    patience = t_place + rng.uniform(d.patience_minutes[0], d.patience_minutes[1], size=n) * 60.0
    value = rng.uniform(d.value[0], d.value[1], size=n)
    tip = np.where(rng.random(n) < d.tip_share, np.round(rng.exponential(d.tip_mean, size=n) * 100), 0)
    return {
        "t_place": t_place,
        "t_ready": ready,
        "deadline": deadline,
        "t_patience": patience,
        "pickup": pickup.astype(np.int32),
        "dropoff": dropoff.astype(np.int32),
        "volume": volume.astype(np.float32),
        "value": value.astype(np.float32),
        "tip": tip.astype(np.int64),
        "level": level,
        "use_case": use_case.astype(np.int8),
        "group": pickup.astype(np.int32),
        "u_convert": rng.random(n),
    }


def sample_drivers(cfg: GridScenario, city: City, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static fields of the episode's drivers."""
    f: Fleet = cfg.fleet
    n = f.drivers
    t0, t1 = cfg.horizon.start, cfg.horizon.end
    owned = np.zeros(n, bool)
    owned[rng.permutation(n)[: round(n * f.owned_share)]] = True
    gig = ~owned
    flex = gig & (rng.random(n) < f.flex_share)
    names = [v for v in VEHICLE_ORDER if v in f.vehicles]
    shares = np.array([f.vehicles[v].share for v in names])
    vidx = rng.choice(len(names), size=n, p=shares / shares.sum())
    vehicle = np.array([VEHICLE_ORDER.index(names[i]) for i in vidx], dtype=np.int8)
    speed = np.array([f.vehicles[names[i]].speed for i in range(len(names))])[vidx]
    capacity = np.array([f.vehicles[names[i]].capacity_litres for i in range(len(names))])[vidx]
    # shifts start with the demand (an hour ahead of a draw from the order profile)
    length = rng.uniform(f.shift_hours[0], f.shift_hours[1], size=n) * 3600.0
    start = _profile_times(rng, n, t0, t1, cfg.demand)
    start = rng.permutation(start) - 3600.0
    start = np.clip(start, t0, np.maximum(t0, t1 - length))
    # owned fleet: two blocks covering the day
    half = (t1 - t0) / 2.0
    own_start = np.where(rng.random(n) < 0.5, t0, t0 + half)
    start = np.where(owned, own_start, start)
    end = np.where(owned, np.minimum(own_start + max(half, 3600.0), t1), np.minimum(start + length, t1))
    start = np.where(flex, np.inf, start)  # flex drivers log on by choice
    end = np.where(flex, -np.inf, end)
    if f.home_zones:  # drivers live in these districts
        pref_zone = np.asarray(f.home_zones, np.int32)[rng.integers(0, len(f.home_zones), size=n)]
    else:
        pref_zone = rng.integers(0, city.n_zones, size=n).astype(np.int32)
    home = random_node_in_zone(city, pref_zone, rng)
    a = f.acceptance
    applicant = rng.random(n) < f.applicant_share
    docs_ok = ~(applicant & (rng.random(n) < f.bad_documents_share))
    t_verified = np.where(applicant, t0 + rng.uniform(0.0, 2 * 3600.0, size=n), -np.inf)
    return {
        "vehicle": vehicle,
        "speed": speed.astype(np.float64),
        "capacity": capacity.astype(np.float64),
        "owned": owned,
        "always_accept": owned.copy(),
        "flex": flex,
        "shift_start": start,
        "shift_end": end,
        "home": home,
        "pref_zone": pref_zone,
        "accept_bias": rng.normal(0.0, a.bias_sd, size=n),
        "response_s": rng.uniform(a.response_seconds[0], a.response_seconds[1], size=n),
        "service_factor": rng.lognormal(0.0, f.service_time_sd, size=n),
        "instant_pay": rng.random(n) < f.instant_pay_share,
        "t_verified": t_verified,
        "docs_ok": docs_ok,
    }
