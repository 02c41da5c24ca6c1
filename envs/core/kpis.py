"""Episode KPIs, computed from the simulator's arrays (never from counters kept on the side).

A KPI that is a ratio is undefined when its denominator is zero (``on_time_rate`` of a day with nothing
delivered, ``acceptance_rate`` without offers): it is then ``float("nan")``, never 0. Tables and reports
print it as ``n/a``, JSON files hold ``null``, and means and intervals over seeds leave it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gigdispatch.envs.core.types import ACC_ACCESS_DENIED, ORDER_CANCELLED, ORDER_DELIVERED, ORDER_FUTURE, ORDER_LOST

if TYPE_CHECKING:
    from gigdispatch.envs.core.sim import Simulator

# name -> (unit, description); the order is the order of the printed table
KPI_DOC: dict[str, tuple[str, str]] = {
    "orders_created": ("", "orders placed and converted (quoted fee accepted)"),
    "orders_lost": ("", "customers who saw the quote and did not order"),
    "orders_delivered": ("", "orders delivered"),
    "orders_cancelled": ("", "orders cancelled by the customer while unassigned"),
    "orders_open": ("", "orders created but neither delivered nor cancelled when the episode ended"),
    "on_time_rate": ("", "delivered by the SLA deadline / delivered"),
    "undelivered_rate": ("", "1 - delivered / created"),
    "click_to_door_mean_min": ("min", "drop-off - placement, delivered orders"),
    "click_to_door_p90_min": ("min", "90th percentile of click-to-door"),
    "ready_to_pickup_mean_min": ("min", "pickup - ready time"),
    "pickup_leg_mean_min": ("min", "arrival at the pickup stop - acceptance, delivered orders"),
    "overage_mean_min": ("min", "max(0, click-to-door - 40), the MDRP overage"),
    "fees_total": ("EUR", "customer charges: fees + tips of created orders"),
    "payouts_total": ("EUR", "paid or owed to drivers: payouts, tips, corrections, guarantees, wages"),
    "refunds_total": ("EUR", "late-delivery refunds + cancellation refunds and penalties"),
    "platform_margin": ("EUR", "the platform's ledger balance = fees - payouts - refunds"),
    "cost_per_order": ("EUR", "payouts_total / orders_created (the MDRP definition)"),
    "driver_earnings_per_hour": ("EUR/h", "payouts_total / driver hours online"),
    "utilization": ("", "time driving to or serving stops / time online"),
    "empty_km_per_delivery": ("km", "km driven with nothing on board (repositioning, to pickups) / delivered"),
    "idle_share": ("", "1 - utilization: time online with no stop to drive to or serve / time online"),
    "acceptance_rate": ("", "offers accepted / offers made, gig drivers"),
    "orders_per_bundle": ("", "delivered orders / pickup visits that collected them"),
    "drivers_online_peak": ("", "most drivers online at once (sampled per step)"),
    "suspensions": ("", "drivers suspended (three late deliveries in a row)"),
    "access_denied": ("", "applicants refused for expired or forged documents"),
    "disputes": ("", "payouts disputed and corrected in the next cycle"),
    "invalid_decision_pairs": ("", "decision entries skipped as not applicable: offers, moves, take-backs"),
    "sim_seconds": ("s", "simulated time"),
    "wall_seconds": ("s", "wall-clock time of the run (added by the command line)"),
}


def compute_kpis(sim: Simulator) -> dict[str, float]:
    od, dr = sim.orders, sim.drivers
    st = od.status
    created = (st != ORDER_FUTURE) & (st != ORDER_LOST)
    delivered = st == ORDER_DELIVERED
    n_created = int(created.sum())
    n_del = int(delivered.sum())
    ctd = (od.t_delivered[delivered] - od.t_place[delivered]) / 60.0
    r2p = (od.t_pickup[delivered] - od.t_ready[delivered]) / 60.0
    leg = (od.t_at_pickup[delivered] - od.t_assigned[delivered]) / 60.0
    on_time = od.t_delivered[delivered] <= od.deadline[delivered] + 1e-9
    fees = int((od.fee[created] + od.tip[created]).sum())
    payouts = int(dr.earnings.sum())
    refunds = int(od.refund.sum())
    nan = float("nan")  # a ratio with a zero denominator
    hours = float(dr.online_s.sum()) / 3600.0
    util = float(dr.busy_s.sum() / dr.online_s.sum()) if dr.online_s.sum() > 0 else nan
    gig = ~dr.always_accept
    offers = int(dr.offers[gig].sum())
    bundles = np.unique(od.bundle_id[delivered])
    return {
        "orders_created": n_created,
        "orders_lost": int((st == ORDER_LOST).sum()),
        "orders_delivered": n_del,
        "orders_cancelled": int((st == ORDER_CANCELLED).sum()),
        "orders_open": n_created - n_del - int((st == ORDER_CANCELLED).sum()),
        "on_time_rate": float(on_time.mean()) if n_del else nan,
        "undelivered_rate": 1.0 - n_del / n_created if n_created else nan,
        "click_to_door_mean_min": float(ctd.mean()) if n_del else nan,
        "click_to_door_p90_min": float(np.percentile(ctd, 90)) if n_del else nan,
        "ready_to_pickup_mean_min": float(r2p.mean()) if n_del else nan,
        "pickup_leg_mean_min": float(leg.mean()) if n_del else nan,
        "overage_mean_min": float(np.maximum(ctd - 40.0, 0.0).mean()) if n_del else nan,
        "fees_total": fees / 100.0,
        "payouts_total": payouts / 100.0,
        "refunds_total": refunds / 100.0,
        "platform_margin": sim.ledger.balances()["platform"] / 100.0,
        "cost_per_order": payouts / 100.0 / n_created if n_created else nan,
        "driver_earnings_per_hour": payouts / 100.0 / hours if hours > 0 else nan,
        "utilization": util,
        "empty_km_per_delivery": float(dr.empty_m.sum()) / 1000.0 / n_del if n_del else nan,
        "idle_share": 1.0 - util,
        "acceptance_rate": float(dr.accepts[gig].sum() / offers) if offers else nan,
        "orders_per_bundle": n_del / len(bundles) if len(bundles) else nan,
        "drivers_online_peak": int(getattr(sim, "online_peak", 0)),
        "suspensions": int(dr.suspensions.sum()),
        "access_denied": int((dr.account == ACC_ACCESS_DENIED).sum()),
        "disputes": int(sim.counters["disputes"]),
        "invalid_decision_pairs": int(sim.counters["invalid"]),
        "sim_seconds": float(sim.t - sim.t_start),
    }
