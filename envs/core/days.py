"""``DaysSimulator``: several days of one scenario in one set of arrays, stepped together on one clock.

The simulator's step costs a few hundred NumPy calls whatever the size of the day, so eight days in one set of
arrays cost little more than one. ``DaysSimulator(scenario, n_days)`` holds ``n_days`` days of ``scenario``
side by side and advances all of them with one ``step``; ``day(i)`` is day ``i`` as a plain ``Simulator``.

**Same days.** Day ``i`` of ``reset(seeds)`` is the day ``Simulator(scenario, early_end=False)`` plays after
``reset(seeds[i])``, given the same decisions: the same arrays, money, counters and random draws
(``tests/test_days.py`` compares every field after every step). How:

* **One clock.** The days start together and every day runs to ``horizon.end`` + drain (``early_end=False``),
  so they share ``state.t`` and every time comparison is the single day's.
* **Ids.** Drivers of day ``i`` are ``i * D .. i * D + D - 1`` (every day has the scenario's ``D`` drivers);
  the orders of all days are merged by placement time (stable, so each day keeps its own order), which keeps the
  order cursors and the placement search of one day. Nodes and zones are those of a ``TiledCity``: day ``i``'s
  copy of the city, so each day's zones have their own traffic factors, surge and counts in one array.
* **Per-day bookkeeping.** Counters, fees, payouts, refunds, pickup visits, the flex drivers' pull and the
  recent earnings per hour are kept per day (``(n_days,)`` arrays in ``state``), through the hooks of
  ``state.SimulatorBase``; each day draws from its own random streams, the same number of draws in the same
  order as alone.
* **Decisions** name global ids; ``to_global(i, decision)`` translates a day's own decision.

``step`` returns the step's money terms as ``(n_days,)`` arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from itertools import pairwise
from typing import Any

import numpy as np

from gigdispatch.envs.core.city import TiledCity, Traffic
from gigdispatch.envs.core.decision import Decision
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.ledger import Ledger
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.sim import Simulator, streams
from gigdispatch.envs.core.state import COUNTERS, EpisodeState, initial_drivers, initial_orders
from gigdispatch.envs.core.types import ORDER_CANCELLED, ORDER_DELIVERED, ORDER_LOST, PH_OFFLINE, Drivers, Orders

__all__ = ["DaysSimulator"]

_DRIVER_NODE_FIELDS = ("home", "node", "leg_to")  # (D,) node ids
_ORDER_NODE_FIELDS = ("pickup", "dropoff")


class DaysTraffic:
    """The traffic of several days as one: factors of the tiled zones, incident changes of any day."""

    def __init__(self, days: Sequence[Traffic]) -> None:
        self.days = list(days)

    def factor(self, t: float) -> np.ndarray:
        first = self.days[0]
        if not first.enabled:
            return np.ones(first.n_zones * len(self.days))
        f = np.tile(first.profile(t), len(self.days))  # one scenario: one time-of-day profile
        Z = first.n_zones
        for i, tr in enumerate(self.days):
            tr.apply_incidents(f[i * Z : (i + 1) * Z], t)
        return f

    def incident_changes(self, t0: float, t1: float) -> bool:
        return any(tr.incident_changes(t0, t1) for tr in self.days)


class DaysSimulator(Simulator):
    """``n_days`` days of one scenario in one set of arrays (see the module docstring)."""

    def __init__(self, scenario: Scenario, n_days: int) -> None:
        if isinstance(n_days, bool) or not isinstance(n_days, int | np.integer) or n_days < 1:
            raise InputError(f"n_days: must be an integer >= 1, got {n_days!r}")
        super().__init__(scenario, early_end=False)
        self.n_days = N = int(n_days)
        self.base_city = scenario.city
        self.city = TiledCity(scenario.city, N)
        self.D = scenario.n_drivers
        self.dday = np.repeat(np.arange(N), self.D)  # (N * D,) the day of each driver

    # ------------------------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, seeds: Sequence[int | None] | None = None) -> None:
        """Draw day ``i`` from ``seeds[i]`` (default: ``seed + i``) and start every day at ``horizon.start``."""
        N, D = self.n_days, self.D
        chosen: list[int | None] = (
            [None if seed is None else int(seed) + i for i in range(N)] if seeds is None else list(seeds)
        )
        seeds = chosen
        if len(seeds) != N:
            raise InputError(f"seeds: expected {N} (one per day), got {len(seeds)}")
        self.seeds = chosen
        self.rngs = [streams(s) for s in chosen]
        self.rng = self.rngs[0]
        n_nodes, Z = self.base_city.n_nodes, self.base_city.n_zones
        samples = [self.scenario.sample(r) for r in self.rngs]
        # orders: all days merged by placement time; a stable sort keeps each day's own order
        sizes = [len(o["t_place"]) for o, _, _ in samples]
        oday = np.repeat(np.arange(N), sizes)
        cat = {k: np.concatenate([o[k] for o, _, _ in samples]) for k in samples[0][0]}
        for k in _ORDER_NODE_FIELDS:
            cat[k] = (cat[k] + n_nodes * oday).astype(cat[k].dtype)
        perm = np.argsort(cat["t_place"], kind="stable")
        self.oday = oday[perm]
        self.olocal = (np.arange(len(perm)) - np.repeat(np.cumsum([0, *sizes[:-1]]), sizes))[perm]
        rank = np.empty(len(perm), np.int64)
        rank[perm] = np.arange(len(perm))
        starts = np.cumsum([0, *sizes])
        self.oglobal = [rank[starts[i] : starts[i + 1]] for i in range(N)]  # day i's orders by local index
        orders = initial_orders({k: v[perm] for k, v in cat.items()})
        drv = {k: np.concatenate([d[k] for _, d, _ in samples]) for k in samples[0][1]}
        drv["home"] = (drv["home"] + n_nodes * self.dday).astype(drv["home"].dtype)
        drv["pref_zone"] = (drv["pref_zone"] + Z * self.dday).astype(drv["pref_zone"].dtype)
        self.orders = orders
        self.drivers = initial_drivers(drv, self.S)
        self.ledger = Ledger(capacity=max(1024, 3 * orders.n))
        self.traffic_days = [tr for _, _, tr in samples]
        traffic = DaysTraffic(self.traffic_days)
        st: Any = EpisodeState.at(self.t_start, traffic, N * D, N * Z, seed=None)  # type: ignore[arg-type]
        per_day = {"fees": np.int64, "payouts": np.int64, "refunds": np.int64, "bundles": np.int64}
        for name, dt in per_day.items():
            setattr(st, name, np.zeros(N, dt))
        st.recent_eph = np.zeros(N)
        st.online_peak = np.zeros(N, np.int64)
        st.counters = {k: np.zeros(N, np.int64) for k in COUNTERS}
        self.state = st
        self._ready = True
        self._accounts(self.t_start)
        self._login(self.t_start)
        self._note_online(0)

    def to_global(self, day: int, dec: Decision) -> Decision:
        """Day ``day``'s own decision (its ids as ``day(day)`` names them) with this simulator's ids."""
        og, D = self.oglobal[day], self.D
        n, Z = self.base_city.n_nodes, self.base_city.n_zones
        ids = lambda a, off: np.asarray(a, np.int64) + off  # noqa: E731
        return Decision(
            order=og[np.asarray(dec.order, np.int64)],
            driver=ids(dec.driver, day * D),
            level=dec.level,
            reposition_driver=ids(dec.reposition_driver, day * D),
            reposition_zone=ids(dec.reposition_zone, day * Z),
            unassign=og[np.asarray(dec.unassign, np.int64)],
            reposition_node=None if dec.reposition_node is None else ids(dec.reposition_node, day * n),
            bundle=dec.bundle,
        )

    # ------------------------------------------------------------------------- per-day bookkeeping
    def _day_of(self, ids: np.ndarray, of: str) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        return ids // self.D if of == "d" else self.oday[ids]

    def _count(self, name: str, ids: np.ndarray, of: str) -> None:
        if len(ids):
            c: Any = self.state.counters
            c[name] = c[name] + np.bincount(self._day_of(ids, of), minlength=self.n_days)

    def _book(self, name: str, ids: np.ndarray, of: str, cents: np.ndarray) -> None:
        if len(ids):
            add = np.bincount(self._day_of(ids, of), weights=cents, minlength=self.n_days)
            setattr(self.state, name, getattr(self.state, name) + add.astype(np.int64))

    def _draw(self, ids: np.ndarray, method: str, *args: float, of: str = "d") -> np.ndarray:
        n = len(ids)
        if n == 0:
            return np.zeros(0)
        day = self._day_of(ids, of)
        if (day[1:] >= day[:-1]).all():  # the usual case: the entries come day by day
            cut = [0, *(np.flatnonzero(day[1:] != day[:-1]) + 1).tolist(), n]
            rngs = self.rngs
            return np.concatenate(
                [getattr(rngs[int(day[a])]["behaviour"], method)(*args, size=b - a) for a, b in pairwise(cut)]
            )
        out = np.empty(n)
        for i in np.unique(day).tolist():
            m = day == i
            out[m] = getattr(self.rngs[i]["behaviour"], method)(*args, size=int(m.sum()))
        return out

    def _bundle_ids(self, drivers: np.ndarray, pickup: np.ndarray) -> np.ndarray:
        day = self._day_of(drivers, "d")
        counted = np.bincount(day[pickup], minlength=self.n_days) > 0  # as alone: days with a pickup visit
        order = np.argsort(day, kind="stable")
        sd = day[order]
        rank = np.empty(len(day), np.int64)
        rank[order] = np.arange(len(day)) - np.searchsorted(sd, sd, side="left")
        st: Any = self.state
        ids = st.bundles[day] + rank
        st.bundles = st.bundles + np.where(counted, np.bincount(day, minlength=self.n_days), 0)
        return ids

    def _latest(self, t: np.ndarray, drivers: np.ndarray, of: np.ndarray) -> np.ndarray:
        latest = np.full(self.n_days, -np.inf)
        np.maximum.at(latest, self._day_of(drivers, "d"), t)
        return latest[self._day_of(of, "d")]

    def _flex_login_p(self, pool: np.ndarray) -> np.ndarray:
        Z = self.base_city.n_zones
        st: Any = self.state
        p = np.array(  # each day's scalar, computed as the day alone computes it
            [
                self._login_p(float(st.surge[i * Z : (i + 1) * Z].sum()) / Z, float(st.recent_eph[i]))
                for i in range(self.n_days)
            ]
        )
        return p[self._day_of(pool, "d")]

    def _update_recent_eph(self, online: np.ndarray, t: float) -> None:
        st: Any = self.state
        dr, D = self.drivers, self.D
        for i in range(self.n_days):
            blk = slice(i * D, (i + 1) * D)
            on = online[blk]
            if not on.any():
                continue
            st.recent_eph[i] = self._eph_average(
                float(st.recent_eph[i]), t, dr.t_online_since[blk][on], st.shift_earn[blk][on]
            )

    def _note_online(self, n_online: int) -> None:
        on = np.bincount(self.dday[self.drivers.phase != PH_OFFLINE], minlength=self.n_days)
        st: Any = self.state
        st.online_peak = np.maximum(st.online_peak, on)

    def _on_traffic_change(self, t: float) -> None:
        Z = self.base_city.n_zones
        for i, tr in enumerate(self.traffic_days):
            if tr.incident_changes(t - self.dt, t):
                counters: Any = self.state.counters
                counters["eta_updates"][i] += 1
                self._resequence_in(tr.changed_zones(t - self.dt, t) + i * Z)

    # ---------------------------------------------------------------------------------- one day
    def day(self, i: int) -> Simulator:
        """Day ``i`` as a plain ``Simulator`` (copies, with the day's own ids): what ``Simulator(scenario,
        early_end=False)`` holds at this time of that day. For KPIs (``compute_kpis(sims.day(i))``) and checks."""
        if not 0 <= i < self.n_days:
            raise InputError(f"day: {i} is out of range 0..{self.n_days - 1}")
        D = self.D
        st: Any = self.state
        n, Z = self.base_city.n_nodes, self.base_city.n_zones
        og = self.oglobal[i]
        blk = slice(i * D, (i + 1) * D)
        zs = slice(i * Z, (i + 1) * Z)

        def local_driver(a: np.ndarray) -> np.ndarray:
            return np.where(a >= 0, a - i * D, a).astype(a.dtype)

        def local_order(a: np.ndarray) -> np.ndarray:
            return np.where(a >= 0, self.olocal[np.maximum(a, 0)], a).astype(a.dtype)

        o = {f.name: getattr(self.orders, f.name)[og].copy() for f in fields(Orders)}
        for k in _ORDER_NODE_FIELDS:
            o[k] = (o[k] - i * n).astype(o[k].dtype)
        for k in ("driver", "last_decliner"):
            o[k] = local_driver(o[k])
        d = {f.name: getattr(self.drivers, f.name)[blk].copy() for f in fields(Drivers)}
        for k in _DRIVER_NODE_FIELDS:
            d[k] = (d[k] - i * n).astype(d[k].dtype)
        d["route_node"] = np.where(d["route_node"] >= 0, d["route_node"] - i * n, -1).astype(np.int32)
        d["pref_zone"] = (d["pref_zone"] - i * Z).astype(d["pref_zone"].dtype)
        for k in ("route_order", "offer_order"):
            d[k] = local_order(d[k])
        orders, drivers = Orders(**o), Drivers(**d)
        next_order = int(np.searchsorted(og, st.next_order))
        status = orders.status[:next_order]
        live = np.flatnonzero((status != ORDER_DELIVERED) & (status != ORDER_CANCELLED) & (status != ORDER_LOST))
        day_st = EpisodeState.at(st.t, self.traffic_days[i], D, Z, seed=self.seeds[i])
        day_st.done = st.done
        day_st.factor, day_st.surge = st.factor[zs].copy(), st.surge[zs].copy()
        day_st.zone_demand, day_st.zone_supply = st.zone_demand[zs].copy(), st.zone_supply[zs].copy()
        day_st.committed, day_st.shift_earn = st.committed[blk].copy(), st.shift_earn[blk].copy()
        day_st.external_accept = st.external_accept[blk].copy()
        day_st.first_live, day_st.next_order = int(live[0]) if live.size else next_order, next_order
        for name in ("bundles", "fees", "payouts", "refunds", "online_peak"):
            setattr(day_st, name, int(getattr(st, name)[i]))
        day_st.recent_eph = float(st.recent_eph[i])
        day_st.counters = {k: int(v[i]) for k, v in st.counters.items()}
        for name in ("idle_since", "wait_since", "leg_empty", "stand_since"):
            arr = getattr(st, name)
            setattr(day_st, name, None if arr is None else arr[blk].copy())
        led = self.ledger
        lo, ld = led.column("order"), led.column("driver")
        ent_day = np.where(lo >= 0, self.oday[np.maximum(lo, 0)], ld // D)
        keep = ent_day == i
        ledger = led.subset(keep, local_order(lo[keep]), local_driver(ld[keep]))
        sim = Simulator(self.scenario, early_end=False)
        sim.load_state(orders, drivers, day_st, ledger, rng=self.rngs[i])
        return sim

    @staticmethod
    def merge(decisions: Sequence[Decision]) -> Decision:
        """One decision of several days' decisions (global ids, from ``to_global``), day after day; they must
        agree on ``bundle``, and either all or none name ``reposition_node``."""
        if not decisions:
            return Decision()
        bundles = {bool(d.bundle) for d in decisions}
        if len(bundles) > 1:
            raise InputError("decision.bundle: the days' decisions must agree on bundle")
        by_node = {d.reposition_node is not None for d in decisions if len(d.reposition_driver)}
        if len(by_node) > 1:
            raise InputError("decision.reposition_node: give it for every day's moves or for none")

        def cat(name: str) -> np.ndarray:
            return np.concatenate([np.asarray(getattr(d, name), np.int64).reshape(-1) for d in decisions])

        level = [
            np.zeros(len(d.order), np.int64) if d.level is None else np.asarray(d.level, np.int64) for d in decisions
        ]
        node = None
        if by_node == {True}:
            node = np.concatenate(
                [np.asarray(d.reposition_node if d.reposition_node is not None else [], np.int64) for d in decisions]
            )
        return Decision(
            order=cat("order"),
            driver=cat("driver"),
            level=np.concatenate(level),
            reposition_driver=cat("reposition_driver"),
            reposition_zone=cat("reposition_zone") if node is None else np.zeros(0, np.int64),
            unassign=cat("unassign"),
            reposition_node=node,
            bundle=bundles.pop(),
        )
