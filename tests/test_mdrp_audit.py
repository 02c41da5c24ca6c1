"""The MDRP replay checks (``training/mdrp_audit.py``): clean on real replays of every registered policy, and each
check fires, alone, on a violation built on purpose in a finished replay.

The violations are built by editing a finished simulator's arrays and its event log consistently (what the
simulator would have recorded had it broken that one rule), so that exactly one check can object; each test fails
if its check is taken out of ``audit_replay``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from simtools import MDRP_DIR

from gigdispatch.agents import make_policy
from gigdispatch.agents.registry import policy_names
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.types import ORDER_DELIVERED, ORDER_PICKED, STOP_DROPOFF, STOP_PICKUP
from gigdispatch.envs.scenarios.mdrp import load_mdrp
from gigdispatch.training.mdrp import mdrp_metrics
from gigdispatch.training.mdrp_audit import (
    CHECKS,
    AssignmentLog,
    Violation,
    audit_replay,
    count_by_check,
    event_table,
)
from gigdispatch.training.runner import run_episode, run_tasks

SMALL = "0r50t100s1p100"  # 242 orders, 61 couriers: a replay takes a fraction of a second
SEED0 = sorted(str(p) for p in MDRP_DIR.glob("0*") if p.is_dir()) if MDRP_DIR.is_dir() else []
MIN = 60.0


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(mdrp_dir: Path) -> tuple[Simulator, np.ndarray]:
    """A finished replay of the small instance with ``nearest`` (clean), and its assignment log."""
    sim = Simulator(load_mdrp(mdrp_dir / SMALL), record_events=True)
    log = AssignmentLog()
    run_episode(sim, make_policy("nearest"), 0, after_step=log)
    return sim, log.first


@pytest.fixture
def sim(finished: tuple[Simulator, np.ndarray]) -> Simulator:
    """A deep copy of the finished replay, for one test to break."""
    return finished[0].copy()


def _checks(sim: Simulator, first: np.ndarray | None = None) -> set[str]:
    return {v.check for v in audit_replay(sim, first)}


def _set_events(sim: Simulator, ev: dict[str, np.ndarray]) -> None:
    """Replace the event log by the flat table ``ev`` (one batch; the audit reads the concatenation)."""
    sim.state.events = [(ev["t"], ev["courier"], ev["order"], ev["kind"], ev["node"])]


def _event_index(ev: dict[str, np.ndarray], order: int, kind: int) -> int:
    (i,) = np.flatnonzero((ev["order"] == order) & (ev["kind"] == kind))
    return int(i)


def _visits(sim: Simulator, courier: int) -> list[tuple[float, int, int, list[int]]]:
    """The courier's visits from the arrays, in time order: (time, kind, node, orders); at one time drop-offs first."""
    od = sim.orders
    mine = np.flatnonzero((od.driver == courier) & np.isfinite(od.t_pickup))
    out: dict[tuple[float, int, int], list[int]] = {}
    for o in mine.tolist():
        out.setdefault((float(od.t_pickup[o]), STOP_PICKUP, int(od.pickup[o])), []).append(o)
        if od.status[o] == ORDER_DELIVERED:
            out.setdefault((float(od.t_delivered[o]), STOP_DROPOFF, int(od.dropoff[o])), []).append(o)
    return sorted(((t, k, n, v) for (t, k, n), v in out.items()), key=lambda x: (x[0], x[1] != STOP_DROPOFF))


def _half(sim: Simulator, kind: int) -> float:
    return (sim.pickup_svc if kind == STOP_PICKUP else sim.drop_svc) / 2.0


def _slack_before(sim: Simulator, courier: int, i: int) -> float:
    """Seconds visit ``i`` of the courier could move earlier before the travel rule objects."""
    vs = _visits(sim, courier)
    t, k, n, _ = vs[i]
    if i == 0:
        t0, k0, n0 = float(sim.drivers.shift_start[courier]), -1, int(sim.drivers.home[courier])
    else:
        t0, k0, n0, _ = vs[i - 1]
    need = (0.0 if k0 < 0 else _half(sim, k0)) + float(sim.city.travel_s(n0, n)) + _half(sim, k)
    return t - t0 - need


def _couriers(sim: Simulator) -> list[int]:
    return sorted(set(sim.orders.driver[np.isfinite(sim.orders.t_pickup)].tolist()))


def _find(sim: Simulator, want: Callable[[int, list[tuple[float, int, int, list[int]]]], Any]) -> Any:
    """The first non-None ``want(courier, visits)`` over the couriers (the test needs one such case)."""
    for c in _couriers(sim):
        hit = want(c, _visits(sim, c))
        if hit is not None:
            return hit
    pytest.fail("no courier in the replay fits the case this test builds")


# ------------------------------------------------------------------------------------------------
# the audit on real replays
# ------------------------------------------------------------------------------------------------
def test_clean_replay(finished: tuple[Simulator, np.ndarray]) -> None:
    sim, first = finished
    assert audit_replay(sim, first) == []
    assert count_by_check([]) == dict.fromkeys(CHECKS, 0)
    # the log kept every assignment the arrays show, none later than the final one
    od = sim.orders
    final = np.isfinite(od.t_assigned)
    assert (first[final] <= od.t_assigned[final]).all()
    assert np.isfinite(first[od.status == ORDER_DELIVERED]).all()


def test_travel_check_is_tight(finished: tuple[Simulator, np.ndarray]) -> None:
    """The rule the audit applies is the simulator's own: many consecutive visits are exactly the minimum apart
    (so the tolerance hides nothing), none closer."""
    sim = finished[0]
    slack = [_slack_before(sim, c, i) for c in _couriers(sim) for i in range(len(_visits(sim, c)))]
    assert min(slack) == 0.0
    assert sum(s == 0.0 for s in slack) > len(slack) / 4


def test_audit_needs_the_event_log(mdrp_dir: Path) -> None:
    sim = Simulator(load_mdrp(mdrp_dir / SMALL))
    run_episode(sim, make_policy("nearest"), 0)
    with pytest.raises(ValueError, match="record_events=True"):
        audit_replay(sim)
    unfinished = Simulator(load_mdrp(mdrp_dir / SMALL), record_events=True)
    unfinished.reset(0)
    with pytest.raises(ValueError, match="not finished"):
        audit_replay(unfinished)


def test_violation_text() -> None:
    v = Violation("ready", (3, 4), (1,), "why")
    assert v.describe(["o0", "o1", "o2", "o3", "o4"], ["c0", "c1"]) == "ready: orders o3, o4, courier c1: why"
    assert v.describe() == "ready: orders #3, #4, courier #1: why"


# ------------------------------------------------------------------------------------------------
# each check, on a violation built on purpose
# ------------------------------------------------------------------------------------------------
def test_once_picked_up_twice(sim: Simulator) -> None:
    """A second pickup of a delivered order by another courier, at its restaurant: the order is in two bundles."""
    ev = event_table(sim)
    od = sim.orders
    o = int(np.flatnonzero(od.status == ORDER_DELIVERED)[0])
    other = (int(od.driver[o]) + 1) % sim.drivers.n
    extra = {
        "t": [od.t_pickup[o] + MIN],
        "courier": [other],
        "order": [o],
        "kind": [STOP_PICKUP],
        "node": [od.pickup[o]],
    }
    _set_events(sim, {k: np.concatenate([ev[k], np.asarray(v, ev[k].dtype)]) for k, v in extra.items()})
    found = audit_replay(sim)
    assert {v.check for v in found} == {"once"}
    assert found[0].orders == (o,) and "picked up 2 times" in found[0].reason


def test_once_delivered_by_another_courier(sim: Simulator) -> None:
    ev = event_table(sim)
    od = sim.orders
    o = int(np.flatnonzero(od.status == ORDER_DELIVERED)[0])
    other = (int(od.driver[o]) + 1) % sim.drivers.n
    ev["courier"][_event_index(ev, o, STOP_DROPOFF)] = other
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"once"}
    assert found[0].couriers == (int(od.driver[o]), other)


def test_placement_assigned_before_placement(finished: tuple[Simulator, np.ndarray], sim: Simulator) -> None:
    """An assignment the log saw a minute before the order was placed (taken back and reassigned later)."""
    first = finished[1].copy()
    o = int(np.flatnonzero(sim.orders.status == ORDER_DELIVERED)[10])
    first[o] = sim.orders.t_place[o] - MIN
    assert _checks(sim, first) == {"placement"}
    assert _checks(sim, None) == set()  # only the log saw it: the final assignment is fine


def test_placement_final_assignment_before_placement(sim: Simulator) -> None:
    """An order placed after its (final) assignment: the placement moves past the assignment time."""
    od = sim.orders
    o = int(np.flatnonzero((od.status == ORDER_DELIVERED) & (od.t_pickup - od.t_assigned >= 2 * MIN))[0])
    od.t_place[o] = od.t_assigned[o] + MIN
    found = audit_replay(sim)
    assert {v.check for v in found} == {"placement"}
    assert [v.orders for v in found] == [(o,)]


def test_off_time(sim: Simulator) -> None:
    """The courier's off time a minute before its last pickup."""
    od, dr = sim.orders, sim.drivers
    o = int(np.nanargmax(np.where(np.isfinite(od.t_pickup), od.t_pickup, -np.inf)))
    c = int(od.driver[o])
    dr.shift_end[c] = od.t_pickup[o] - MIN
    found = audit_replay(sim)
    assert {v.check for v in found} == {"off_time"}
    assert all(v.couriers == (c,) for v in found) and any(o in v.orders for v in found)


def test_ready_pickup_moved_before_ready(sim: Simulator) -> None:
    """A pickup visit (arrays and events) moved a minute earlier, before the food is ready, where the courier had
    waited for it: the travel rule still holds, only the ready time is broken."""
    od = sim.orders

    def waited(c: int, vs: list[tuple[float, int, int, list[int]]]) -> list[int] | None:
        for i, (t, k, _, orders) in enumerate(vs):
            ready = od.t_ready[orders].max()
            if (
                k == STOP_PICKUP
                and t == ready
                and t - MIN >= od.t_place[orders].max()
                and _slack_before(sim, c, i) >= MIN
            ):
                return orders
        return None

    orders = _find(sim, waited)
    ev = event_table(sim)
    od.t_pickup[orders] -= MIN
    for o in orders:
        ev["t"][_event_index(ev, o, STOP_PICKUP)] -= MIN
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"ready"}
    assert set(found[0].orders) <= set(orders)


def test_route_never_delivered(sim: Simulator) -> None:
    """A picked-up order that never reaches its customer (status, time and drop-off event gone)."""
    od = sim.orders
    o = int(np.flatnonzero(od.status == ORDER_DELIVERED)[5])
    od.status[o] = ORDER_PICKED
    od.t_delivered[o] = np.nan
    ev = event_table(sim)
    keep = np.ones(len(ev["t"]), bool)
    keep[_event_index(ev, o, STOP_DROPOFF)] = False
    _set_events(sim, {k: v[keep] for k, v in ev.items()})
    found = audit_replay(sim)
    assert {v.check for v in found} == {"route"}
    assert "never delivered" in found[0].reason


def test_route_on_board_at_the_next_pickup(sim: Simulator) -> None:
    """A courier's last two routes P1 D1 P2 D2 become P1 P2 D2 D1: D1 moved to right after D2, as fast as the
    travel rule allows (P1 -> P2 directly is no faster than through D1), so only the route rule is broken."""

    def last_two_single(c: int, vs: list[tuple[float, int, int, list[int]]]) -> tuple[int, int, int] | None:
        kinds = [k for _, k, _, _ in vs[-4:]]
        if len(vs) >= 4 and kinds == [STOP_PICKUP, STOP_DROPOFF, STOP_PICKUP, STOP_DROPOFF]:
            (_, _, _, a), (_, _, _, b) = vs[-4], vs[-2]
            if len(a) == 1 and len(b) == 1:
                return c, a[0], b[0]
        return None

    courier, o1, o2 = _find(sim, last_two_single)
    od = sim.orders
    t_new = od.t_delivered[o2] + _half(sim, STOP_DROPOFF) + sim.city.travel_s(od.dropoff[o2], od.dropoff[o1])
    t_new += _half(sim, STOP_DROPOFF)
    od.t_delivered[o1] = t_new
    ev = event_table(sim)
    ev["t"][_event_index(ev, o1, STOP_DROPOFF)] = t_new
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"route"}
    assert found[0].orders == (o1,) and found[0].couriers == (courier,) and "still on board" in found[0].reason


def test_travel_drop_off_too_soon(sim: Simulator) -> None:
    """A drop-off one second sooner after the courier's previous visit than travel and service allow."""

    def tight_drop(c: int, vs: list[tuple[float, int, int, list[int]]]) -> int | None:
        for i, (_, k, _, orders) in enumerate(vs):
            if k == STOP_DROPOFF and i > 0 and _slack_before(sim, c, i) == 0.0:
                return orders[0]
        return None

    o = _find(sim, tight_drop)
    od = sim.orders
    od.t_delivered[o] -= 1.0
    ev = event_table(sim)
    ev["t"][_event_index(ev, o, STOP_DROPOFF)] -= 1.0
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"travel"}
    assert o in found[0].orders and "needs" in found[0].reason


def test_travel_first_visit_too_soon_after_on_time(sim: Simulator) -> None:
    """The courier's on time moved later, so that it could not have reached its first restaurant in time."""
    od, dr = sim.orders, sim.drivers
    o = int(np.nanargmin(np.where(np.isfinite(od.t_pickup), od.t_pickup, np.inf)))
    c = int(od.driver[o])
    first_t = _visits(sim, c)[0][0]
    dr.shift_start[c] = first_t - _half(sim, STOP_PICKUP) + 1.0  # not even the arrival half fits
    found = audit_replay(sim)
    assert {v.check for v in found} == {"travel"}
    assert found[0].couriers == (c,) and "on-location" in found[0].reason


@pytest.mark.parametrize("kind", [STOP_PICKUP, STOP_DROPOFF])
def test_place_courier_elsewhere(sim: Simulator, kind: int) -> None:
    """The event log puts the courier at another node than the order's restaurant (drop-off node)."""
    od = sim.orders
    o = int(np.flatnonzero(od.status == ORDER_DELIVERED)[3])
    own = od.pickup if kind == STOP_PICKUP else od.dropoff
    ev = event_table(sim)
    ev["node"][_event_index(ev, o, kind)] = (int(own[o]) + 1) % sim.city.n_nodes
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"place"}
    assert found[0].orders == (o,)


def test_record_bundle_id_of_another_visit(sim: Simulator) -> None:
    """An order's bundle id names another pickup visit (orders per bundle would be miscounted)."""
    od = sim.orders
    a, b = (int(x) for x in np.flatnonzero(od.status == ORDER_DELIVERED)[:2])
    assert od.bundle_id[a] != od.bundle_id[b]
    od.bundle_id[a] = od.bundle_id[b]
    found = audit_replay(sim)
    assert {v.check for v in found} == {"record"}
    assert "bundle id" in found[0].reason


def test_record_array_and_event_disagree(sim: Simulator) -> None:
    """The event log's pickup time of an order differs by a second from the order's ``t_pickup``."""
    od = sim.orders
    o = int(np.flatnonzero(od.status == ORDER_DELIVERED)[7])
    ev = event_table(sim)
    ev["t"][_event_index(ev, o, STOP_PICKUP)] += 1.0
    _set_events(sim, ev)
    found = audit_replay(sim)
    assert {v.check for v in found} == {"record"}
    assert found[0].orders == (o,) and "pickup time differs" in found[0].reason


def test_every_check_has_a_violation_test() -> None:
    """Each check named in ``CHECKS`` is built on purpose above (a new check needs its own test)."""
    names = {n.removeprefix("test_").split("_")[0] for n in globals() if n.startswith("test_")}
    assert {c.split("_")[0] for c in CHECKS} <= names


# ------------------------------------------------------------------------------------------------
# gigdispatch mdrp: every replay audited
# ------------------------------------------------------------------------------------------------
def test_instance_task_audits_every_replay(mdrp_dir: Path) -> None:
    from gigdispatch.training.mdrp import _instance_task

    rows = _instance_task((str(mdrp_dir / SMALL), [("nearest", "nearest")], [0, 1]))
    assert [r["replay_violations"] for r in rows] == [0, 0]
    assert all(r["violations"] == [] for r in rows)


def test_mdrp_run_with_violations_writes_and_says_so(
    mdrp_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replay with violations: the results are written, every file counts or lists them, the CLI exits 1."""
    import gigdispatch.training.mdrp_audit as audit
    from gigdispatch.training.cli import main

    real = audit.audit_replay

    def broken(sim: Any, first: np.ndarray | None = None) -> list[Violation]:
        return [*real(sim, first), Violation("travel", (0,), (1,), "made up for this test")]

    monkeypatch.setattr(audit, "audit_replay", broken)
    out = tmp_path / "res"
    rc = main(["mdrp", "--instances", str(mdrp_dir / SMALL), "--out", str(out), "--workers", "1", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1
    assert cap.out.rstrip().splitlines()[-1] == "replay checks: 1 violation over 1 replay"
    assert "made up for this test" in cap.err and "a bug of ours" in cap.err
    header, row = (out / "instances.csv").read_text().splitlines()
    assert row.split(",")[header.split(",").index("replay_violations")] == "1"
    report = (out / "report.md").read_text()
    assert "**replay checks: 1 violation over 1 replay**" in report and "made up for this test" in report
    assert "a bug of ours" in report
    lines = (out / "violations.csv").read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"nearest,{SMALL},0,travel,")


def test_mdrp_run_clean(mdrp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.cli import main

    out = tmp_path / "res"
    rc = main(["mdrp", "--instances", str(mdrp_dir / SMALL), "--out", str(out), "--workers", "1", "--no-progress"])
    assert rc == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "replay checks: 0 violations over 1 replay"
    assert "No replay broke any of them." in (out / "report.md").read_text()
    assert (out / "violations.csv").read_text().splitlines() == ["policy,instance,seed,check,orders,couriers,reason"]


# ------------------------------------------------------------------------------------------------
# every registered policy on the 24 seed-0 instances
# ------------------------------------------------------------------------------------------------
# Every name in the registry runs on an MDRP instance (couriers always accept, no pricing: the heuristics, the
# untrained `scored-match` and `learned-reposition` with their default parameters, `oracle` with the whole day,
# and whatever is added later, e.g. `mdrp-rolling`). Policies that need a checkpoint (a training run folder, a
# .zip, an .onnx, a policy.json) are paths, not registry names, and are not run here.
POLICIES = policy_names()


def _audit_instance(folder: str) -> dict[str, list[str]]:
    """Worker: every registered policy on one instance (seed 0); per policy, its violations."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    sim = Simulator(load_mdrp(folder), record_events=True)
    ids = list(sim.scenario.meta["order_ids"])
    out = {}
    for name in POLICIES:
        log = AssignmentLog()
        run_episode(sim, make_policy(name), 0, after_step=log)
        out[name] = [f"{Path(folder).name}: {v.describe(ids)}" for v in audit_replay(sim, log.first)]
        m = mdrp_metrics(sim, 0.0)  # and no policy, not even `oracle`, beats the floor
        if not m["click_to_door_floor_min"] <= m["click_to_door_mean_min"] + 1e-9:
            out[name].append(f"{Path(folder).name}: click-to-door {m['click_to_door_mean_min']} below its floor")
    return out


@pytest.fixture(scope="module")
def seed0_audits(mdrp_dir: Path) -> dict[str, list[str]]:
    """Every registered policy on the 24 seed-0 instances, over two worker processes (as ``gigdispatch mdrp``)."""
    assert len(SEED0) == 24, SEED0
    results = run_tasks(_audit_instance, SEED0, 2, False, "audit", "instance")
    merged: dict[str, list[str]] = {p: [] for p in POLICIES}
    for res in results:
        for p, bad in res.items():
            merged[p].extend(bad)
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_seed0_replays_pass_the_checks(seed0_audits: dict[str, list[str]], policy: str) -> None:
    bad = seed0_audits[policy]
    assert bad == [], "\n".join(bad)
