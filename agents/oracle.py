"""The hindsight oracle: certified bounds on a day's profit and click-to-door, and a plan that runs.

At ``reset(sim, rng)`` the oracle reads the whole episode from the simulator's arrays -- every order
(placement, ready time, pickup, drop-off, deadline, patience, volume, tip, the pre-drawn conversion
uniform ``u_convert``), every driver (shift, home, speed, capacity, service factor, owned or gig,
applicant documents) and the travel-time metric -- and computes, before the day is run:

* ``profit_upper``: a **certified upper bound** on the KPI ``platform_margin`` that *any* policy can
  reach on this seed under ``sim.run(policy, seed)``, for every run that ends with no order in flight
  (the KPI ``orders_open`` is 0); ``profit_upper_by_open_eur[h]`` extends it to runs that end with
  ``h`` orders in flight and ``profit_upper_any`` to every run. It is the value of a Lagrangian dual
  of a linear relaxation (solved with HiGHS through ``scipy.optimize.linprog``), evaluated from the
  dual multipliers, so it is valid whatever the solver's tolerance.
* ``click_to_door_lower_by_delivered_min[k - 1]``: a **certified lower bound** on the KPI
  ``click_to_door_mean_min`` of any run that delivers ``k`` orders (the mean of the ``k`` smallest
  per-order lower bounds on drop-off - placement).

Per created order the margin is ``fee - payout - late refund`` if delivered, ``-cancel penalty`` if
cancelled and ``fee + tip`` if still in flight when the day closes; the owned fleet's wages (and, where
configured, the gig drivers' hourly guarantee) come off the total. The relaxation bounds each fee by
the largest surge the open orders of its pickup zone could produce and by the conversion draw, each
payout by its level-0, zero-pickup-distance value (no acceptance randomness, no escalation), and lets
each order be served by the gig fleet or an owned driver subject only to per-driver time budgets whose
per-order charges are provable lower bounds on service and driving time (bundles of up to ``S/2``
pickups and ``S`` drop-offs per visit and ``S`` orders on board allowed). ``docs/oracle.md`` lists every
relaxation step and why it only removes constraints.

The oracle is also a runnable policy: a second, *realistic* linear programme (plausible rather than
provable per-order times) is rounded to a plan -- which orders the owned fleet should take and which
are not worth a gig payout -- and ``act`` carries it out with a min-cost matching of open orders to idle
drivers. Its KPIs from ``compute_kpis`` are realised ones; the bounds are ``policy.bounds`` (a JSON-safe
dict) after ``reset``, and ``bounds_for_run(policy.bounds, kpis)`` gives the bounds that hold for one run.

"Small enough": ``orders x drivers <= max_pairs`` (default 40 million) and, where the geofence is
positive, at most ``max_nodes`` city nodes (an all-pairs shortest-path pass); bigger scenarios raise
``ValueError`` naming the sizes.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment, linprog
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import csgraph_from_dense, floyd_warshall

from gigdispatch.agents.base import Policy, escalation_levels
from gigdispatch.envs.core.errors import GigdispatchError
from gigdispatch.envs.core.sim import Decision, Simulator

BIG = 1e18
_GEO_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # city -> {geofence: (N, N) seconds}


# ----------------------------------------------------------------------------------------- metric
def geo_travel_s(city: Any, geofence_m: float, max_nodes: int = 4000) -> np.ndarray:
    """(N, N) lower bound on the free-flow car seconds a driver needs to get from node ``a`` to node ``b``.

    A leg of free-flow time ``ff`` and road length ``d`` ends when ``ff * min(1, g / d)`` is left (the
    arrival geofence ``g``) and the driver is then placed on the node, so a sequence of legs through
    intermediate nodes can be shorter than the direct trip. The bound is the shortest path over the
    complete graph with leg costs ``ff * max(0, 1 - g / d)`` (Floyd-Warshall, cached per city). Without a
    geofence it is the city's own travel time (a metric). Traffic only slows legs down (factor >= 1).
    """
    n = int(city.n_nodes)
    key = float(geofence_m)
    if key > 0 and n > max_nodes:
        raise ValueError(
            f"oracle: not computed: the city has {n} nodes, more than max_nodes={max_nodes} "
            "for the all-pairs travel-time bound "
            "(needed with a geofence); pass a larger max_nodes to try anyway"
        )
    per = _GEO_CACHE.get(city)
    if per is None:
        per = {}
        _GEO_CACHE[city] = per
    if key in per:
        return per[key]
    idx = np.arange(n)
    tt = np.asarray(city.travel_s(idx[:, None], idx[None, :]), dtype=np.float64)
    if key > 0:
        dd = np.asarray(city.dist_m(idx[:, None], idx[None, :]), dtype=np.float64)
        cost = tt * np.clip(1.0 - key / np.maximum(dd, 1e-12), 0.0, 1.0)
        np.fill_diagonal(cost, np.inf)  # no self-loops; a zero off-diagonal cost stays an edge
        geo = floyd_warshall(csgraph_from_dense(cost, null_value=np.inf), directed=True)
        np.fill_diagonal(geo, 0.0)
        geo = np.minimum(geo, tt)
    else:
        geo = tt.copy()
    geo = np.maximum(geo - 1e-3, 0.0)  # the city stores float32 times: stay on the safe side
    geo.setflags(write=False)
    per[key] = geo
    return geo


# ------------------------------------------------------------------------------------------ model
@dataclass
class _Episode:
    """Everything the relaxation needs, read from the simulator right after ``reset``.

    Drivers are grouped in classes (each owned driver its own class, or owned drivers grouped by vehicle
    and shift when there are many; the gig fleet one class). A *column* is a way to deliver an order: by
    a class, and for owned classes also "late, towards a suspension" (see ``docs/oracle.md``).
    """

    conv: np.ndarray  # (O,) bool  the order can convert (is created) at some surge
    fee1: np.ndarray  # (O,) cents quoted at surge 1
    fee_max: np.ndarray  # (O,) cents: the largest fee that can be charged (surge cap, conversion draw)
    tip: np.ndarray  # (O,) cents
    u_val: np.ndarray  # (O,) cents: the margin of the order if neither delivered nor in flight at the end
    must: (
        np.ndarray
    )  # (O,) bool: created for sure and never cancelled: delivered in any run that ends with none in flight
    ctd_min_s: np.ndarray  # (O,) seconds: lower bound on drop-off - placement (inf: nobody can deliver it)
    cls_owned: np.ndarray  # (C,) bool
    tau_a: np.ndarray  # (O, C) seconds charged per order, row A (service + entry legs)
    tau_b: np.ndarray  # (O, C) row B (service + driving shared by the orders on board)
    bud_a: np.ndarray  # (C,) seconds available for row A (shift windows + after-shift slack)
    bud_b: np.ndarray  # (C,)
    tau_plan: np.ndarray  # (O, C) realistic seconds per order (plan only)
    bud_plan: np.ndarray  # (C,)
    col_cls: np.ndarray  # (M,) class of each column
    col_late: np.ndarray  # (M,) bool: the column counts towards an owned driver's suspension
    val: np.ndarray  # (O, M) cents: most the order adds to the margin when delivered by the column (-BIG: cannot)
    val_floor: np.ndarray  # (O, M) the same with gig pay left to the hourly-guarantee floor (branch B)
    credit: float  # cents of owned wage a late owned delivery can save (suspension / k)
    wage_cls: np.ndarray  # (C,) cents: owned wage lower bound per class (caps the savings)
    wage_lb: int  # cents the owned fleet is paid at least without suspensions
    floor_lb: int  # cents the gig drivers are paid at least by the hourly guarantee (0: none)
    k_max: int  # most orders that can be in flight when the day closes
    n_orders: int


def step_times(sim: Simulator) -> np.ndarray:
    """The simulator's step times exactly as it computes them (``t = t + dt`` from ``t_start``)."""
    n = int(sim.n_steps) + 3
    return np.cumsum(np.concatenate([[sim.t_start], np.full(n, sim.dt)]))


def _first_ge(grid: np.ndarray, x: np.ndarray | float) -> np.ndarray:
    """The first step time >= x (the last one when none is); a scalar for a scalar ``x``."""
    i = np.searchsorted(grid, np.asarray(x, dtype=np.float64), side="left")
    return grid[np.minimum(i, grid.size - 1)]


def _first_gt(grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The first step time > x (the last one when none is)."""
    i = np.searchsorted(grid, np.asarray(x, dtype=np.float64), side="right")
    return grid[np.minimum(i, grid.size - 1)]


def _quote_cents(sim: Simulator, idx: np.ndarray, surge: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fee (cents) the simulator would quote for orders ``idx`` at the given surge (``Simulator.quote_cents``),
    and the fee in euros before surge (``Simulator.quote_base_eur``)."""
    return sim.quote_cents(idx, surge), np.asarray(sim.quote_base_eur(idx), dtype=np.float64)


def _surge_cap(sim: Simulator, conv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(O,) the largest surge an order can be quoted with.

    An order placed in the step from ``grid[k]`` is quoted with the surge computed at ``grid[k]`` (the
    initial 1 for k = 0): ``1 + sensitivity * max(demand / max(idle, 1) - 1, 0)``, capped. With the
    surge basis ``requests`` (the default) the demand is the zone's requests of the last window, which no
    policy changes: over one idle driver it is the cap. With the basis ``open`` it is the open orders: those
    then were placed before ``grid[k]`` and had not been cancelled; those whose patience ran out before
    ``grid[k - 1]`` were. Counting all other convertible orders of the zone over one idle driver gives a
    cap no policy can exceed (a loop over zones, vectorised over orders).
    """
    cfg, od = sim.cfg, sim.orders
    sp = cfg.pricing.surge
    n = od.n
    if not (cfg.pricing.enabled and sp.enabled) or n == 0:
        return np.ones(n)
    zone = sim.city.zone_of[od.pickup].astype(np.int64)
    k = np.maximum(np.searchsorted(grid, od.t_place, side="right") - 1, 0)
    t_k, t_km1 = grid[k], grid[np.maximum(k - 1, 0)]
    pat = np.maximum(od.t_patience, od.t_place)
    cap = np.ones(n)
    if sp.basis == "requests":
        # demand = every order requested in the zone in (grid[k] - window, grid[k]), converted or not: it does
        # not depend on the policy, so over one idle driver this count gives the cap exactly
        for z in np.unique(zone).tolist():
            sel = zone == z
            tp = np.sort(od.t_place[sel])
            hi = np.searchsorted(tp, t_k[sel], side="left")
            lo = np.searchsorted(tp, t_k[sel] - sp.window_min * 60.0, side="right")
            n_req = np.maximum(hi - lo, 0).astype(np.float64)
            cap[sel] = np.clip(1.0 + sp.sensitivity * np.maximum(n_req - 1.0, 0.0), 1.0, sp.max)
        cap[k == 0] = 1.0
        return cap
    for z in np.unique(zone).tolist():
        mz = conv & (zone == z)
        tp, pz = np.sort(od.t_place[mz]), np.sort(pat[mz])
        sel = zone == z
        placed = np.searchsorted(tp, t_k[sel], side="left")  # placed before grid[k]
        gone = np.searchsorted(pz, t_km1[sel], side="left")  # out of patience before grid[k - 1]
        n_open = np.maximum(placed - gone, 0).astype(np.float64)
        cap[sel] = np.clip(1.0 + sp.sensitivity * np.maximum(n_open - 1.0, 0.0), 1.0, sp.max)
    cap[k == 0] = 1.0
    return cap


def _driver_windows(sim: Simulator, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per driver: whether it can ever work, its first log-on (a step time) and the end of its pickups.

    Applicants become active at the first step time at or after ``t_verified`` (never with bad
    documents); scheduled drivers log on at the first step time in ``[shift_start, shift_end)``; flex
    drivers may log on from the start and their sessions end by the horizon's end.
    """
    dr, cfg = sim.drivers, sim.cfg
    t0, t_end = sim.t_start, sim.t_end
    applicant = np.isfinite(dr.t_verified)
    never = applicant & ~dr.docs_ok
    t_act = np.where(applicant, dr.t_verified, -np.inf)
    flex = dr.flex.astype(bool)
    s = np.where(flex, t0, dr.shift_start)
    e = np.where(flex, t_end, dr.shift_end)
    on = _first_ge(grid, np.maximum(np.maximum(s, t_act), t0))
    if cfg.fleet.flex_login_per_hour <= 0:
        never = never | (flex & ~np.isfinite(dr.shift_start))
    active = ~never & (on < e)
    return {"active": active, "on": on, "end": e, "flex": flex}


def _classes(sim: Simulator, active: np.ndarray, max_owned_classes: int = 40) -> np.ndarray:
    """(D,) class id per driver (-1: never works): owned drivers one class each (grouped by vehicle and
    shift when there are more than ``max_owned_classes``), every other driver in the last class."""
    dr = sim.drivers
    cls = np.full(dr.n, -1, np.int64)
    owned = np.flatnonzero(active & dr.owned)
    if owned.size <= max_owned_classes:
        cls[owned] = np.arange(owned.size)
        n_own = owned.size
    else:
        key = np.stack(
            [dr.vehicle[owned], np.round(dr.shift_start[owned] / 1800.0), np.round(dr.shift_end[owned] / 1800.0)],
            axis=1,
        )
        _, inv = np.unique(key, axis=0, return_inverse=True)
        cls[owned] = inv.ravel()
        n_own = int(inv.max()) + 1
    cls[active & ~dr.owned] = n_own
    return cls


def _read_episode(sim: Simulator, max_pairs: int, max_nodes: int) -> _Episode:
    """Build the relaxation's data from the simulator (read only; vectorised over orders and drivers)."""
    cfg, od, dr, city = sim.cfg, sim.orders, sim.drivers, sim.city
    n_o, n_d = od.n, dr.n
    if n_o * max(n_d, 1) > max_pairs:
        raise ValueError(
            f"oracle: not computed for scenario {cfg.name!r}: {n_o} orders x {n_d} drivers = "
            f"{n_o * n_d:,} order-driver pairs, more than max_pairs={max_pairs:,} "
            "(the earliest-delivery table is that large); pass a larger max_pairs to try anyway"
        )
    pr, fl, sla, pay = cfg.pricing, cfg.fleet, cfg.sla, cfg.pricing.payout
    t_end, day_end = sim.t_end, sim.day_end
    grid = step_times(sim)
    S = int(fl.max_route_stops)
    psvc, dsvc = fl.pickup_service_minutes * 60.0, fl.dropoff_service_minutes * 60.0
    geo = geo_travel_s(city, fl.geofence_m, max_nodes)
    allo = np.arange(n_o)
    p_node, q_node = od.pickup.astype(np.int64), od.dropoff.astype(np.int64)
    trip_geo = geo[p_node, q_node]

    # ---- conversion and fees: the surge cap and the conversion draw bound the fee
    placed = od.t_place < t_end  # orders are placed only before the horizon's end
    pen = sim.cancel_penalty_cents()
    if pr.enabled:
        e_el, ref = cfg.demand.conversion_elasticity, pr.fee.reference
        fee1, base_eur = _quote_cents(sim, allo, np.ones(n_o))
        conv = placed & (od.u_convert < np.exp(-e_el * np.maximum(fee1 / 100.0 / ref - 1.0, 0.0)))
        s_cap = _surge_cap(sim, conv, grid)
        fee_cap = np.maximum(_quote_cents(sim, allo, s_cap)[0], fee1) + 1
        if e_el > 0:
            with np.errstate(divide="ignore"):
                lnu = -np.log(od.u_convert)
            # converts only while exp(-e (fee / 100 / ref - 1)) > u, i.e. fee < 100 ref (1 - ln(u) / e)
            f_conv = np.where(od.u_convert > 0, np.ceil(100.0 * ref * (1.0 + lnu / e_el)) + 1.0, np.inf)
        else:
            f_conv = np.full(n_o, np.inf)
        fee_max = np.maximum(np.minimum(fee_cap.astype(np.float64), f_conv), fee1 + 1.0).astype(np.int64)
        sure = conv & (od.u_convert < np.exp(-e_el * np.maximum((fee_cap + 1) / 100.0 / ref - 1.0, 0.0)))
    else:
        fee1, fee_max = np.zeros(n_o, np.int64), np.zeros(n_o, np.int64)
        base_eur, s_cap = np.zeros(n_o), np.ones(n_o)
        conv = placed.copy()
        sure = conv.copy()
    tip = np.where(conv, od.tip, 0).astype(np.int64)
    # neither delivered nor in flight at the end: lost (0) or cancelled (-penalty, certain if it converts for sure)
    u_val = np.where(sure, -pen, 0).astype(np.float64)

    # ---- drivers and classes
    win = _driver_windows(sim, grid)
    active = win["active"]
    cls = _classes(sim, active)
    C = int(cls.max()) + 1 if (cls >= 0).any() else 0
    act_idx = np.flatnonzero(active)
    dt = sim.dt
    # an always-accept driver takes an offer at once; any other driver's answer is applied after the
    # step's movement, so it starts towards the pickup one step later at the earliest
    lag = np.where(dr.always_accept | (dr.response_s <= 0), 0.0, dt)
    sf, speed, cap = dr.service_factor, dr.speed, dr.capacity
    hp, hd = psvc * sf / 2.0, dsvc * sf / 2.0
    t_dec = _first_gt(grid, od.t_place)  # created at the end of its placement step: offered from then on

    # ---- earliest drop-off per (order, class), in chunks of orders, vectorised over drivers
    tdel = np.full((n_o, C), np.inf)
    if act_idx.size and n_o:
        d = act_idx[np.argsort(cls[act_idx], kind="stable")]
        c_sorted = cls[d]
        starts = np.flatnonzero(np.r_[True, c_sorted[1:] != c_sorted[:-1]])
        present = c_sorted[starts]
        home, on, end = dr.home[d].astype(np.int64), win["on"][d], win["end"][d]
        chunk = max(1, 2_000_000 // d.size)
        for lo in range(0, n_o, chunk):
            o = allo[lo : lo + chunk]
            # at the pickup no earlier than: the offer (+ lag), the log-on, the drive from home
            arr = np.maximum(
                np.maximum(t_dec[o][:, None], on[None, :]) + lag[d][None, :],
                on[None, :] + geo[home[None, :], p_node[o][:, None]] / speed[d][None, :],
            )
            tp = np.maximum(
                arr + hp[d][None, :], od.t_ready[o][:, None]
            )  # pickup: half the service, and the ready time
            ok = (tp <= end[None, :] + 1e-6) & (od.volume[o][:, None] <= cap[d][None, :] + 1e-9)
            td = np.where(ok, tp + hp[d][None, :] + trip_geo[o][:, None] / speed[d][None, :] + hd[d][None, :], np.inf)
            tdel[np.ix_(o, present)] = np.minimum.reduceat(td, starts, axis=1)
    tdel[~conv] = np.inf
    ctd_min_s = (tdel.min(axis=1) if C else np.full(n_o, np.inf)) - od.t_place

    # ---- per-order time charges (provable lower bounds) and the plan's realistic times
    cnt_p = np.bincount(p_node[conv], minlength=city.n_nodes)
    cnt_q = np.bincount(q_node[conv], minlength=city.n_nodes)
    n_q = np.maximum(cnt_q[q_node], 1).astype(np.float64)
    g_p = np.minimum(S // 2, np.maximum(cnt_p[p_node], 1)).astype(np.float64)  # orders per pickup visit
    g_q = np.minimum(S, n_q)  # orders per drop-off visit
    entry_node = (geo + np.diag(np.full(geo.shape[0], np.inf))).min(axis=0)  # the nearest other node, into each node
    entry_node = np.where(np.isfinite(entry_node), entry_node, 0.0)
    vol_min = float(od.volume[conv].min()) if conv.any() else 1.0
    owned_cls = np.zeros(C, bool)
    sf_c, sp_c, k_c = np.ones(C), np.ones(C), np.ones(C)
    span_c, n_c, sfmax_c, spmin_c = np.zeros(C), np.zeros(C), np.ones(C), np.ones(C)
    for c in range(C):  # a loop over classes (owned drivers, the gig fleet), each vectorised
        m = cls == c
        owned_cls[c] = bool(dr.owned[m].any())
        sf_c[c], sfmax_c[c] = float(sf[m].min()), float(sf[m].max())
        sp_c[c], spmin_c[c] = float(speed[m].max()), float(speed[m].min())
        cap_c = float(cap[m].max())
        k_c[c] = float(
            S if vol_min <= 0 or not np.isfinite(cap_c) else max(1, min(S, math.floor(cap_c / vol_min + 1e-9)))
        )
        span_c[c] = float(np.maximum(win["end"][m] - win["on"][m], 0.0).sum())
        n_c[c] = float(m.sum())
    drop_svc = (dsvc / g_q)[:, None] * sf_c[None, :]
    svc = (psvc / g_p)[:, None] * sf_c[None, :] + drop_svc
    entry = (entry_node[q_node] / n_q)[:, None] / sp_c[None, :]
    carry = trip_geo[:, None] / (sp_c * k_c)[None, :]
    tau_a, tau_b = svc + entry, svc + carry
    # after its shift a driver only drops what it carries (<= S orders); it may also start next to a stop
    one = (psvc + dsvc) * sfmax_c + float(entry_node.max()) / spmin_c
    post_a = (drop_svc + entry)[conv].max(axis=0) if conv.any() else np.zeros(C)
    post_b = (drop_svc + carry)[conv].max(axis=0) if conv.any() else np.zeros(C)
    bud_a = span_c + n_c * (one + S * post_a)
    bud_b = span_c + n_c * (one + S * post_b)
    sample = q_node[np.linspace(0, n_o - 1, num=min(n_o, 256)).astype(np.int64)] if n_o else np.zeros(0, np.int64)
    approach = np.median(geo[sample][:, p_node], axis=0) if sample.size else np.zeros(n_o)
    tau_plan = ((psvc + dsvc) * sf_c)[None, :] + (trip_geo + approach)[:, None] / sp_c[None, :]

    # ---- when can the day end? Not before the horizon's end, nor before every order sure to be created
    # is delivered or cancelled (or the drain runs out)
    day_end_t = float(_first_ge(grid, day_end - 1e-9))
    t_cancel = _first_ge(grid, od.t_patience)
    must = sure & placed
    resolve = np.minimum(tdel.min(axis=1) if C else np.full(n_o, np.inf), t_cancel)[must]
    r_max = float(resolve.max()) if resolve.size else t_end
    t_close = min(day_end_t, float(_first_ge(grid, max(t_end, min(r_max, day_end)))))

    # ---- fixed costs: owned wages and the gig hourly guarantee (lower bounds, no suspensions)
    k_s = max(int(fl.late_streak_to_suspend), 1)
    susp_s = fl.suspension_minutes * 60.0 + dt  # most log-off time one suspension causes
    hours_s = np.maximum(np.minimum(win["end"], t_close) - win["on"], 0.0)
    flex = win["flex"]
    wage_rate = pay.owned_hourly_cost * 100.0 / 3600.0  # cents per second
    wage_d = np.where(active & dr.owned & ~flex, np.maximum(np.floor(wage_rate * hours_s) - 1.0, 0.0), 0.0)
    wage_cls = np.array([float(wage_d[cls == c].sum()) for c in range(C)])
    # savings need a suspension, i.e. late_streak_to_suspend late deliveries by one driver
    wage_cls = np.where(np.isfinite(tdel).sum(axis=0) >= k_s, wage_cls, 0.0) if C else wage_cls
    wage_lb = int(wage_d.sum())
    credit = (wage_rate * susp_s + 1.0) / k_s if wage_rate > 0 else 0.0
    hourly = pay.hourly_guarantee
    floor_lb, credit_gig = 0, 0.0
    if hourly is not None and hourly > 0:
        g_rate = hourly * 100.0 / 3600.0
        g_d = np.where(active & ~dr.owned & ~flex, np.maximum(np.floor(g_rate * hours_s) - 1.0, 0.0), 0.0)
        floor_lb = int(g_d.sum())
        credit_gig = (g_rate * susp_s + 1.0) / k_s

    # ---- values per (order, column)
    share = float(sla.late_refund_share)
    fm = fee_max.astype(np.float64)
    refund_max = np.round(fm * share)
    late = tdel > (od.deadline[:, None] + 1e-3)  # (O, C) late whoever of the class delivers it
    trip_km = city.dist_m(p_node, q_node) / 1000.0
    p0 = pay.base + pay.per_km * np.maximum(trip_km - pay.free_km, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s_hi = np.where(base_eur > 0, np.minimum(s_cap, (fm + 0.5) / (100.0 * np.maximum(base_eur, 1e-12))), 1.0)
    s_hi = np.maximum(s_hi, 1.0)

    def gig_env(s: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Affine upper envelope of (fee - late refund) and of (fee - late refund - level-0 payout) at surge s."""
        fee_s = np.minimum(100.0 * base_eur * s + 0.5, fm)
        fee_part = (1.0 - rho) * fee_s + 0.5  # fee - round(fee * rho) <= (1 - rho) fee + 1/2
        pay_s = np.maximum(100.0 * (p0 + pay.surge_incentive * (s - 1.0)) - 0.5, 0.0)
        return fee_part - pay_s, fee_part

    cols_cls, cols_late, vals, vals_floor = [], [], [], []
    for c in range(C):
        ok = np.isfinite(tdel[:, c])
        if owned_cls[c]:  # no payout; a late delivery refunds part of the fee
            on_time = np.where(late[:, c], fm - refund_max, fm) + 1.0
            cols_cls.append(c)
            cols_late.append(False)
            vals.append(np.where(ok, on_time, -BIG))
            if credit > 0:
                cols_cls.append(c)
                cols_late.append(True)
                vals.append(np.where(ok, fm - refund_max + 1.0, -BIG))
        else:
            rho = np.where(late[:, c], share, 0.0)
            n1, f1 = gig_env(np.ones(n_o), rho)
            n2, f2 = gig_env(s_hi, rho)
            cols_cls.append(c)
            cols_late.append(False)
            vals.append(np.where(ok, np.maximum(n1, n2) + 1.0, -BIG))
            # branch B: the guarantee floor stands for everything paid to gig drivers, tips included
            vals_floor.append((len(vals) - 1, np.where(ok, np.maximum(f1, f2) + tip + 1.0 + credit_gig, -BIG)))
    val = np.stack(vals, axis=1) if vals else np.zeros((n_o, 0))
    val_floor = val.copy()
    for j, v in vals_floor:
        val_floor[:, j] = v

    # ---- orders that can be in flight when the day closes: route stops and a pending offer per driver,
    # and orders whose customers do not give up within the day
    stay_open = conv & (t_cancel > day_end_t)
    k_max = int(min(int(conv.sum()), int(active.sum()) * (S + 1) + int(stay_open.sum())))
    return _Episode(
        conv=conv,
        fee1=fee1,
        fee_max=fee_max,
        tip=tip,
        u_val=u_val,
        must=sure & (t_cancel > day_end_t),
        ctd_min_s=ctd_min_s,
        cls_owned=owned_cls,
        tau_a=tau_a,
        tau_b=tau_b,
        bud_a=bud_a,
        bud_b=bud_b,
        tau_plan=tau_plan,
        bud_plan=span_c,
        col_cls=np.array(cols_cls, np.int64),
        col_late=np.array(cols_late, bool),
        val=val,
        val_floor=val_floor,
        credit=float(credit),
        wage_cls=wage_cls,
        wage_lb=wage_lb,
        floor_lb=floor_lb,
        k_max=k_max,
        n_orders=n_o,
    )


# --------------------------------------------------------------------------------------------- LP
@dataclass
class _LPResult:
    bound: float  # cents: the Lagrangian dual value at the solver's multipliers (a certified upper bound)
    primal: float  # cents: the solver's optimum (for information)
    x: np.ndarray  # (O, M) primal shares of each column


def _solve(
    ep: _Episode,
    rows: list[tuple[np.ndarray, np.ndarray]],
    branches: list[tuple[np.ndarray, float]],
    savings: bool,
    must: np.ndarray | None = None,
) -> _LPResult | None:
    """max w  s.t.  w <= const_b + sum coef_b[i, m] x_im + sum_c sigma_c  (each branch b);
    sum_m x_im <= 1;  sum_{i, m in class c} tau_r[i, c] x_im <= budget_r[c]  (each row r, class c);
    sigma_c <= credit * sum_{i, late m in class c} x_im;  0 <= sigma_c <= wage_c;  0 <= x <= 1.

    ``sigma_c`` (only with ``savings``) is the owned wage that suspensions of class ``c`` can save;
    ``must`` (O,) marks orders that have to be delivered (``sum_m x_im = 1``; None when none is possible).
    The returned ``bound`` is the Lagrangian dual value at the solver's (clipped) multipliers -- valid
    for any multipliers, so it does not depend on the solver's accuracy.
    """
    n_o, M = ep.val.shape
    C = ep.cls_owned.size
    usable = np.zeros((n_o, M), bool)
    for coef, _ in branches:
        usable |= coef > -BIG / 2
    must = np.zeros(n_o, bool) if must is None else must
    if must.any() and not usable[must].any(axis=1).all():
        return None
    ii, mm = np.nonzero(usable)
    cc = ep.col_cls[mm]
    n_x = ii.size
    nb = len(branches)
    sig_cls = np.flatnonzero(ep.cls_owned & (ep.wage_cls > 0)) if (savings and ep.credit > 0) else np.zeros(0, np.int64)
    n_s = sig_cls.size
    if n_x == 0 and n_s == 0:
        const = min(k for _, k in branches)
        return _LPResult(bound=float(const), primal=float(const), x=np.zeros((n_o, M)))
    i_w = n_x + n_s  # the column of w
    r_i: list[npt.ArrayLike] = []  # the constraint matrix in blocks: rows, columns, values
    r_j: list[npt.ArrayLike] = []
    r_v: list[npt.ArrayLike] = []
    b_ub: list[float] = []
    for b, (coef, const) in enumerate(branches):
        r_i += [np.full(n_x, b), np.full(n_s, b), [b]]
        r_j += [np.arange(n_x), n_x + np.arange(n_s), [i_w]]
        r_v += [-coef[ii, mm], -np.ones(n_s), [1.0]]
        b_ub.append(const)
    used, o_row = np.unique(ii, return_inverse=True)
    r_i.append(nb + o_row)
    r_j.append(np.arange(n_x))
    r_v.append(np.ones(n_x))
    b_ub += [1.0] * used.size
    base = nb + used.size
    mx = np.flatnonzero(must[ii])  # delivered for sure: -sum_m x_im <= -1
    m_used, m_row = np.unique(ii[mx], return_inverse=True)
    r_i.append(base + m_row)
    r_j.append(mx)
    r_v.append(-np.ones(mx.size))
    b_ub += [-1.0] * m_used.size
    base += m_used.size
    for r, (tau, bud) in enumerate(rows):
        r_i.append(base + r * C + cc)
        r_j.append(np.arange(n_x))
        r_v.append(tau[ii, cc])
        b_ub += list(bud)
    base_s = base + len(rows) * C
    if n_s:
        pos = np.full(C, -1)
        pos[sig_cls] = np.arange(n_s)
        late_x = np.flatnonzero(ep.col_late[mm] & (pos[cc] >= 0))
        r_i += [base_s + np.arange(n_s), base_s + pos[cc[late_x]]]
        r_j += [n_x + np.arange(n_s), late_x]
        r_v += [np.ones(n_s), np.full(late_x.size, -ep.credit)]
        b_ub += [0.0] * n_s
    A = coo_matrix(
        (np.concatenate([np.asarray(v, float) for v in r_v]), (np.concatenate(r_i), np.concatenate(r_j))),
        shape=(base_s + n_s, i_w + 1),
    ).tocsr()
    cost = np.zeros(i_w + 1)
    cost[-1] = -1.0
    bounds = [(0.0, 1.0)] * n_x + [(0.0, float(ep.wage_cls[c])) for c in sig_cls] + [(None, None)]
    # the interior-point method is faster on big instances (city-1000: 4 s against 10), simplex on small ones
    method = "highs-ipm" if n_x > 200_000 else "highs"
    res = linprog(cost, A_ub=A, b_ub=np.asarray(b_ub), bounds=bounds, method=method)
    if res.status == 2:  # infeasible: some order that must be delivered cannot be with the time available
        return None
    if res.status != 0:
        raise RuntimeError(f"oracle: the linear programme failed ({res.message})")
    x = np.zeros((n_o, M))
    x[ii, mm] = res.x[:n_x]
    y = -np.asarray(res.ineqlin.marginals)  # >= 0 for a minimisation with <= rows
    mu = np.clip(y[:nb], 0.0, None)
    mu = mu / mu.sum() if mu.sum() > 0 else np.eye(nb)[0]
    lam = np.clip(y[base:base_s], 0.0, None).reshape(len(rows), C)
    eta = np.zeros(C)
    eta[sig_cls] = np.clip(y[base_s:], 0.0, None)
    # L = sum_b mu_b const_b + sum_r lam_r . budget_r + sum_c max(0, 1 - eta_c) wage_c
    #     + sum_i max(0, max_m (mu . coef[i, m] - sum_r lam_r[c] tau_r[i, c] + eta_c credit [m late]))
    v = np.zeros(n_x)
    for b, (coef, _) in enumerate(branches):
        v += mu[b] * coef[ii, mm]
    for r, (tau, _) in enumerate(rows):
        v -= lam[r][cc] * tau[ii, cc]
    v += np.where(ep.col_late[mm], eta[cc] * ep.credit, 0.0)
    best = np.full(n_o, -np.inf)
    np.maximum.at(best, ii, v)
    # an order that may go undelivered contributes max(0, best); one that must be delivered, its best column
    best = np.where(must, best, np.maximum(best, 0.0))
    best[~np.isfinite(best)] = 0.0
    bound = float(sum(mu[b] * k for b, (_, k) in enumerate(branches)))
    bound += float(sum(float(lam[r] @ bud) for r, (_, bud) in enumerate(rows)))
    bound += float((np.maximum(1.0 - eta[sig_cls], 0.0) * ep.wage_cls[sig_cls]).sum())
    bound += float(best.sum())
    return _LPResult(bound=bound, primal=float(-res.fun), x=x)


# ------------------------------------------------------------------------------------------ bounds
def compute_bounds(
    sim: Simulator, max_pairs: int = 40_000_000, max_nodes: int = 4000
) -> tuple[dict[str, Any], _Episode, np.ndarray]:
    """The certified bounds of the episode just reset in ``sim`` (read only), the episode data, and the
    (O, M) solution of the realistic plan LP. ``bounds`` is the JSON-safe dict of ``docs/oracle.md``."""
    ep = _read_episode(sim, max_pairs, max_nodes)
    u_sum = float(ep.u_val[ep.conv].sum())
    coef_a = ep.val - ep.u_val[:, None]
    branches = [(coef_a, u_sum - ep.wage_lb)]
    if ep.floor_lb > 0:
        branches.append((ep.val_floor - ep.u_val[:, None], u_sum - ep.wage_lb - ep.floor_lb))
    rows = [(ep.tau_a, ep.bud_a), (ep.tau_b, ep.bud_b)]
    lp = _solve(ep, rows, branches, savings=True)
    assert lp is not None  # without orders that must be delivered the programme is always feasible
    u_relaxed = math.ceil(lp.bound - 1e-9) / 100.0
    # with nothing in flight at the end, orders that are never cancelled have been delivered
    strict = _solve(ep, rows, branches, savings=True, must=ep.must) if ep.must.any() else lp
    u0 = math.ceil(strict.bound - 1e-9) / 100.0 if strict is not None else u_relaxed
    # an order in flight at the end keeps its fee and tip and pays nothing
    gain = (ep.fee_max + ep.tip + 1).astype(np.float64)[ep.conv] - ep.u_val[ep.conv]
    gain = np.sort(np.maximum(gain, 0.0))[::-1]
    h_max = min(ep.k_max, gain.size)
    # a run with h orders in flight: its other orders fit the relaxed programme, the h orders add their gain
    by_open = u_relaxed + np.ceil(np.concatenate([[0.0], np.cumsum(gain[:h_max])])) / 100.0
    by_open[0] = u0
    ctd = np.sort(ep.ctd_min_s[np.isfinite(ep.ctd_min_s)]) / 60.0
    ctd = np.maximum(ctd - 1e-6, 0.0)
    prefix = np.cumsum(ctd) / np.arange(1, ctd.size + 1) if ctd.size else np.zeros(0)
    # the plan: realistic times, no slack, no suspensions (only the ranking of the orders matters)
    plan_lp = _solve(ep, [(ep.tau_plan, ep.bud_plan)], [(coef_a, u_sum - ep.wage_lb)], savings=False)
    assert plan_lp is not None  # no order must be delivered: feasible
    plan = plan_lp.x
    bounds: dict[str, Any] = {
        "profit_upper": u0,
        "profit_upper_any": float(by_open[-1]),
        "click_to_door_lower_all": float(prefix[-1]) if prefix.size else float("nan"),
        "click_to_door_lower_min": float(prefix[0]) if prefix.size else float("nan"),
        "certified": True,
        "method": "Lagrangian dual of an LP relaxation (HiGHS via scipy.optimize.linprog) for profit; "
        "per-order earliest drop-off for click-to-door",
        "valid_for": "any policy run with sim.run(policy, seed) on this scenario and seed: "
        "profit_upper if orders_open == 0 "
        "at the end, profit_upper_by_open_eur[h] if orders_open == h, profit_upper_any always; "
        "click_to_door_lower_by_delivered_min[k - 1] if orders_delivered == k (bounds_for_run does the lookup)",
        "gap_notes": "relaxed: acceptance randomness and escalation (level-0 payout, zero pickup distance); "
        "routing (per-order "
        "time charges allow S/2 pickups and S drop-offs per visit and S orders on board); traffic (free flow); "
        "surge (capped by "
        "every convertible order of the zone being open with one idle driver); see docs/oracle.md",
        "lp_primal_eur": (strict or lp).primal / 100.0,
        "orders_must_deliver": int(ep.must.sum()),
        "orders_convertible": int(ep.conv.sum()),
        "orders_deliverable": int(ctd.size),
        "max_orders_in_flight_at_end": int(h_max),
        "wages_lower_eur": ep.wage_lb / 100.0,
        "guarantee_floor_eur": ep.floor_lb / 100.0,
        "profit_upper_by_open_eur": [float(v) for v in by_open],
        "click_to_door_lower_by_delivered_min": [float(v) for v in prefix],
    }
    return bounds, ep, plan


def bounds_for_run(bounds: dict[str, Any], kpis: dict[str, float]) -> dict[str, float]:
    """The bounds that hold for one run of any policy on the bounds' scenario and seed, from its KPIs:
    ``profit_upper`` from ``orders_open`` (orders in flight at the end), ``click_to_door_lower`` from
    ``orders_delivered`` (nan when nothing was delivered, like the KPI)."""
    by_open = bounds["profit_upper_by_open_eur"]
    h = int(kpis["orders_open"])
    if not 0 <= h < len(by_open):
        raise ValueError(
            f"bounds_for_run: orders_open={h} is outside 0..{len(by_open) - 1} (a run of another scenario or seed?)"
        )
    prefix = bounds["click_to_door_lower_by_delivered_min"]
    k = int(kpis["orders_delivered"])
    if not 0 <= k <= len(prefix):
        raise ValueError(
            f"bounds_for_run: orders_delivered={k} is outside 0..{len(prefix)} (a run of another scenario or seed?)"
        )
    return {"profit_upper": float(by_open[h]), "click_to_door_lower": float(prefix[k - 1]) if k > 0 else float("nan")}


class PolicyNotResetError(GigdispatchError, RuntimeError):
    """The oracle was asked to act on (or bound) a day it was not reset for: its plan is made in ``reset``."""


RESET_FIRST = "call policy.reset(sim, sim.rng['policy']) after sim.reset(seed)"


class OraclePolicy(Policy):
    """Hindsight oracle: certified bounds at ``reset`` (``self.bounds``), then a plan carried out online.

    The plan (a realistic LP over the whole day, rounded) marks the orders the owned fleet should take
    and the orders no gig payout is worth. ``act`` matches the oldest open orders (up to ``2 x idle
    drivers + 16``) to idle eligible drivers among each order's ``k`` nearest by a min-cost assignment:
    cost = payout (euros; 0 for the owned fleet) + ``eta_weight`` x pickup minutes + the expected late
    refund - ``plan_bonus`` for an owned driver on an order the plan gives the owned fleet; gig drivers
    are not offered orders the plan skips. Declined orders are re-offered at the escalation level the
    heuristics use, and never to the driver who declined last.

    ``max_pairs`` / ``max_nodes``: the size limits (see the module docstring); bigger scenarios raise
    ``ValueError`` at ``reset``.
    """

    name = "oracle"

    def __init__(
        self,
        k: int = 8,
        eta_weight: float = 0.05,
        owned_minute: float = 0.25,
        wait_share: float = 0.5,
        plan_bonus: float = 1.0,
        max_pairs: int = 40_000_000,
        max_nodes: int = 4000,
    ) -> None:
        if k < 1:
            raise ValueError(f"oracle: k must be >= 1, got {k}")
        if max_pairs < 1 or max_nodes < 1:
            raise ValueError("oracle: max_pairs and max_nodes must be >= 1")
        self.k = int(k)
        self.eta_weight = float(eta_weight)
        self.owned_minute = float(owned_minute)
        self.wait_share = float(wait_share)
        self.plan_bonus = float(plan_bonus)
        self.max_pairs = int(max_pairs)
        self.max_nodes = int(max_nodes)
        self.bounds: dict[str, Any] | None = None
        self._prefer_owned = np.zeros(0, bool)
        self._skip_gig = np.zeros(0, bool)
        self._day: tuple[int | None, int] | None = None  # (seed, orders) of the day the plan is for

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        """Compute the bounds and the plan for the episode just reset (deterministic; ``rng`` is unused)."""
        bounds, ep, plan = compute_bounds(sim, self.max_pairs, self.max_nodes)
        self.bounds = bounds
        n_o = ep.n_orders
        served = plan.sum(axis=1)
        col_owned = ep.cls_owned[ep.col_cls]
        self._prefer_owned = plan[:, col_owned].sum(axis=1) >= 0.5 if col_owned.any() else np.zeros(n_o, bool)
        gig_val = ep.val[:, ~col_owned].max(axis=1) if (~col_owned).any() else np.full(n_o, -BIG)
        # a gig payout is not worth it when delivering loses more than cancelling would
        self._skip_gig = (served < 0.5) & (gig_val < ep.u_val) & ~ep.must
        self._day = (sim.seed, int(sim.orders.n))

    def bounds_for(self, kpis: dict[str, float]) -> dict[str, float]:
        """``bounds_for_run(self.bounds, kpis)`` for a run on the seed of the last ``reset``."""
        if self.bounds is None:
            raise PolicyNotResetError(f"oracle: no bounds yet: {RESET_FIRST}")
        return bounds_for_run(self.bounds, kpis)

    def act(self, sim: Simulator) -> Decision:
        if self._day != (sim.seed, int(sim.orders.n)):
            why = "was never reset" if self._day is None else f"was reset for another day (seed {self._day[0]})"
            raise PolicyNotResetError(f"oracle: the policy {why}: {RESET_FIRST}")
        orders = sim.open_orders()
        idle = sim.eligible(idle_only=True)
        n_idle = int(idle.sum())
        if orders.size == 0 or n_idle == 0:
            return Decision()
        od, dr = sim.orders, sim.drivers
        # hindsight: the customers' patience is known; the orders closest to giving up come first
        orders = orders[np.argsort(od.t_patience[orders], kind="stable")]
        window = orders[: 2 * n_idle + 16]
        ids, eta = sim.candidates(window, self.k, among=idle)
        ids = sim.drop_last_decliners(window, ids)
        valid = ids >= 0
        if not valid.any():
            return Decision()
        d = np.where(valid, ids, 0)
        o2 = np.broadcast_to(window[:, None], ids.shape)
        lvl = escalation_levels(sim, window)
        pay_c = sim.payout_cents(o2, d, lvl[:, None])
        p_acc = sim.accept_prob(o2, d, pay_c)
        owned = dr.owned[d]
        eta_s = np.where(np.isfinite(eta), eta, 0.0)
        trip = sim.city.travel_s(od.pickup[window], od.dropoff[window])[:, None] / dr.speed[d]
        late = sim.t + eta_s + trip > od.deadline[window][:, None]
        fee = od.fee[window].astype(np.float64)[:, None] / 100.0
        refund = late * np.round(fee * 100.0 * sim.cfg.sla.late_refund_share) / 100.0
        gain = fee - pay_c / 100.0 - refund  # margin if delivered this way
        # what the order is worth if left open now: cancelled (-penalty) when its patience runs out this
        # step, otherwise most of a typical gig delivery's margin
        pen = sim.cancel_penalty_cents() / 100.0
        urgent = od.t_patience[window] <= sim.t + sim.dt + 1e-9
        typical = np.where(valid, gain, -np.inf).max(axis=1)
        wait = np.where(urgent, -pen, self.wait_share * np.maximum(typical, -pen))
        # an order whose customer never gives up would stay in flight: it is served whatever it costs (the
        # oracle does not keep fees of orders it never delivers)
        never = od.t_patience[window] > sim.day_end
        worst = np.where(valid, gain, np.inf).min(axis=1)
        wait = np.where(never, np.minimum(-pen, worst - 1.0), wait)[:, None]
        inc = p_acc * (gain - wait)  # expected gain of making the offer now over waiting
        opp = np.where(owned, self.owned_minute, self.eta_weight) * eta_s / 60.0
        cost = -inc + opp - self.plan_bonus * (owned & self._prefer_owned[window][:, None])
        valid &= ~(~owned & self._skip_gig[window][:, None]) & ((cost < 0) | never[:, None])
        cols, inv = np.unique(d[valid], return_inverse=True)
        if cols.size == 0:
            return Decision()
        w = window.size
        # one dummy column per order (cost 0): an order may stay unmatched
        mat = np.full((w, cols.size + w), BIG)
        r = np.nonzero(valid)[0]
        mat[r, inv] = cost[valid]
        mat[np.arange(w), cols.size + np.arange(w)] = np.where(never, BIG / 4, 0.0)  # these take any driver
        rows, cidx = linear_sum_assignment(mat)
        keep = (cidx < cols.size) & (mat[rows, cidx] < BIG / 8)
        o = window[rows[keep]]
        dd = cols[cidx[keep]]
        srt = np.argsort(o, kind="stable")
        o, dd = o[srt], dd[srt]
        return Decision(order=o, driver=dd, level=escalation_levels(sim, o))
