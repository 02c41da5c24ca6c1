"""``DaysSimulator``: several days in one set of arrays are, field for field, the days a ``Simulator`` plays alone."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from gigdispatch.agents.registry import make_policy
from gigdispatch.envs.core.days import DaysSimulator
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.core.types import Drivers, Orders
from gigdispatch.envs.scenarios.loader import load_scenario

SKIP_STATE = {"traffic", "accounts_next", "events", "placed_src", "placed_list", "seed"}


def _same(a, b, where: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, where
    if a.dtype.kind == "f":
        assert np.array_equal(a, b, equal_nan=True), where
    else:
        assert np.array_equal(a, b), where


def assert_same_day(alone: Simulator, merged: Simulator, where: str) -> None:
    for cls, x, y in ((Orders, alone.orders, merged.orders), (Drivers, alone.drivers, merged.drivers)):
        for f in fields(cls):
            _same(getattr(x, f.name), getattr(y, f.name), f"{where}: {cls.__name__.lower()}.{f.name}")
    for f in fields(alone.state):
        if f.name in SKIP_STATE:
            continue
        va, vb = getattr(alone.state, f.name), getattr(merged.state, f.name)
        if isinstance(va, dict):
            assert va == vb, f"{where}: state.{f.name}"
        elif va is None or vb is None:
            assert va is None and vb is None, f"{where}: state.{f.name}"
        else:
            _same(va, vb, f"{where}: state.{f.name}")
    for col in ("t", "t_settle", "kind", "order", "driver", "cents"):
        _same(alone.ledger.column(col), merged.ledger.column(col), f"{where}: ledger.{col}")


def _play(scenario: object, policies: list[str], seeds: list[int], check_every: int) -> None:
    sc = load_scenario(scenario)  # type: ignore[arg-type]
    alone = [Simulator(sc, early_end=False) for _ in seeds]
    pols = [make_policy(p) for p in policies]
    for sim, pol, s in zip(alone, pols, seeds, strict=True):
        sim.reset(s)
        pol.reset(sim, sim.rng["policy"])
    days = DaysSimulator(sc, len(seeds))
    days.reset(seeds=seeds)
    for i, sim in enumerate(alone):
        assert_same_day(sim, days.day(i), f"day {i} at reset")
    step = 0
    while not days.done:
        decs = [pol.act(sim) for pol, sim in zip(pols, alone, strict=True)]
        out = [sim.step(dec) for sim, dec in zip(alone, decs, strict=True)]
        merged = days.merge([days.to_global(i, dec) for i, dec in enumerate(decs)])
        r = days.step(merged)
        step += 1
        for i, o in enumerate(out):
            for key, v in o.items():
                assert r[key][i] == v, f"step {step} day {i}: {key}"
        assert all(sim.done == days.done for sim in alone)
        if step % check_every == 0 or days.done:
            for i, sim in enumerate(alone):
                assert_same_day(sim, days.day(i), f"step {step} day {i}")
    for i, sim in enumerate(alone):
        ka, kb = compute_kpis(sim), compute_kpis(days.day(i))
        assert ka.keys() == kb.keys()
        for k in ka:
            assert ka[k] == kb[k] or (np.isnan(ka[k]) and np.isnan(kb[k])), k


def test_three_days_of_default_are_the_days_alone() -> None:
    _play("default", ["nearest", "batching", "hungarian"], [3001, 3002, 3003], check_every=25)


def test_random_moves_take_backs_and_auctions_are_the_days_alone() -> None:
    _play("default", ["random", "reposition", "auction", "sla-priority"], [3011, 3012, 3013, 3014], check_every=60)


def test_days_with_traffic_incidents_and_flex_drivers_are_the_days_alone() -> None:
    import yaml

    from gigdispatch.envs.scenarios.loader import parse_config

    text = (
        "horizon: {start: '11:00', end: '14:00', drain_minutes: 30}\n"
        "traffic: {incidents_per_hour: 4.0}\n"
        "fleet: {drivers: 60, flex_share: 0.4}\n"
        "demand: {orders: 700}"
    )
    cfg = parse_config(yaml.safe_load(text), "incidents")
    _play(cfg, ["batching", "hungarian", "random"], [3021, 3022, 3023], check_every=20)


def test_bad_day_counts_are_refused_in_one_line() -> None:
    sc = load_scenario("default")
    with pytest.raises(InputError, match="n_days"):
        DaysSimulator(sc, 0)
    days = DaysSimulator(sc, 2)
    with pytest.raises(InputError, match="seeds"):
        days.reset(seeds=[1])


def test_bench_days_prints_the_merged_step_against_the_days_alone(capsys) -> None:
    import json

    from benchmarks.bench_days import main

    assert main(["--days", "2", "--seed", "4100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["days"] == 2 and out["steps"] == DaysSimulator(load_scenario("default"), 1).n_steps
    assert out["ms_per_merged_step"] > 0 and out["speedup"] > 0
