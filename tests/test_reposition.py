"""The learned repositioning policy (agents/reposition.py) and its CEM training (cem.policy: reposition)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gigdispatch.envs import Simulator, load_scenario
from gigdispatch.envs.core.types import PH_IDLE

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/train/scenarios/tiny.yaml"


def test_search_vector_maps_to_valid_reposition_params() -> None:
    from gigdispatch.agents.reposition import PARAMS, check_params
    from gigdispatch.training.cem import family, to_params

    _, _, names = family("reposition")
    zero = to_params(np.zeros(len(names)), "reposition")
    assert zero == pytest.approx({k: v[0] for k, v in PARAMS.items()})
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = to_params(rng.normal(0, 3, len(names)), "reposition")
        assert check_params(p) == p


def test_moves_are_valid_and_only_of_standing_idle_drivers_without_an_offer() -> None:
    """On a busy day the policy repositions drivers, every move is one the simulator applies (no invalid
    counts), never of a driver offered an order in the same decision, and within its travel-time limit."""
    from gigdispatch.agents.reposition import CoverageRepositionPolicy

    sim = Simulator(load_scenario("default"))
    pol = CoverageRepositionPolicy({"idle_wait_s": 0.0, "move_share": 1.0})
    sim.reset(1003)
    pol.reset(sim, sim.rng["policy"])
    moved = 0
    while not sim.done:
        dec = pol.act(sim)
        d, z = dec.reposition_driver, dec.reposition_zone
        if d.size:
            assert not np.isin(d, dec.driver).any()
            assert (sim.drivers.phase[d] == PH_IDLE).all() and (sim.drivers.route_len[d] == 0).all()
            tt = sim.city.travel_s(sim.drivers.node[d], sim.city.zone_node[z]) / sim.drivers.speed[d]
            assert (tt <= pol.params["max_travel_s"] + 1e-6).all()
            moved += d.size
        sim.step(dec)
    assert moved > 100
    assert sim.counters["invalid"] == 0


def test_move_share_zero_is_nearest() -> None:
    """With no moves allowed the policy decides exactly like nearest: the repositioning is the only difference."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.reposition import CoverageRepositionPolicy

    sc = load_scenario("default")
    a = Simulator(sc).run(CoverageRepositionPolicy({"move_share": 0.0}), seed=1004)
    b = Simulator(sc).run(make_policy("nearest"), seed=1004)
    assert a == b


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"format": "gigdispatch-reposition/1"}, "params: missing"),
        ({"format": "gigdispatch-reposition/1", "params": {"move_share": 2}}, "params.move_share: must be in [0, 1]"),
        ({"format": "gigdispatch-reposition/1", "params": {"history_min": -1}}, "params.history_min: must be >= 0"),
        ({"format": "gigdispatch-reposition/1", "params": {"bogus": 1}}, "params.bogus: unknown parameter"),
        ({"format": "gigdispatch-reposition/1", "params": {}, "scenarios": {"x": 3}}, "scenarios.x: must be a mapping"),
    ],
)
def test_bad_reposition_files_name_the_field(tmp_path: Path, doc: dict, needle: str) -> None:
    from gigdispatch.agents.registry import UnknownPolicyError, make_policy

    (tmp_path / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(UnknownPolicyError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        make_policy(str(tmp_path))


def test_cem_searches_the_reposition_family_and_writes_a_loadable_policy(tmp_path: Path) -> None:
    import yaml

    from gigdispatch.agents import make_policy
    from gigdispatch.agents.reposition import CoverageRepositionPolicy
    from gigdispatch.training.cem import train_cem
    from gigdispatch.training.config import load_config

    base = {
        "name": "rep-smoke",
        "env": "dispatch",
        "scenario": str(TINY),
        "algo": "cem",
        "cem": {
            "policy": "reposition",
            "objective": "on_time_rate",
            "iterations": 1,
            "population": 3,
            "elite": 2,
            "seeds_per_iteration": 1,
            "workers": 1,
        },
        "train_seeds": "1000-1099",
        "eval": {"seeds": "5000-5001", "episodes": 2},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(base))
    cfg = load_config(tmp_path / "c.yaml", [])
    run = tmp_path / "run"
    run.mkdir()
    st = train_cem(cfg, run, resume=False)
    assert st["iteration"] == 1 and 0.0 <= st["best_eval"] <= 1.0
    doc = json.loads((run / "policy.json").read_text())
    assert doc["format"] == "gigdispatch-reposition/1" and doc["trained"]["objective"] == "on_time_rate"
    pol = make_policy(str(run))
    assert isinstance(pol, CoverageRepositionPolicy) and pol.default_params == doc["params"]
    kpis = Simulator(load_scenario(str(TINY))).run(pol, seed=5000)
    assert kpis["orders_delivered"] > 0


def test_served_learned_repositioning_answers_with_its_own_rule() -> None:
    """``gigdispatch serve --policy checkpoints/reposition``: /v1/reposition uses the learned rule."""
    from fastapi.testclient import TestClient

    from gigdispatch.service import create_app

    with TestClient(create_app("default", str(ROOT / "checkpoints/reposition")), raise_server_exceptions=False) as c:
        city = Simulator(load_scenario("default")).city
        home_zone = int(city.zone_of[0])
        target = int(next(z for z in city.zone_neighbors[home_zone] if z >= 0))
        pick = int(np.flatnonzero(city.zone_of == target)[0])
        now = 12 * 3600.0
        drivers = [{"id": f"d{i}", "node": 0} for i in range(12)]
        orders = [
            {
                "id": f"o{j}",
                "pickup": {"node": pick},
                "dropoff": {"node": 0},
                "placed": now - 600 + j,
                "deadline": now + 3600,
            }
            for j in range(8)
        ]
        r = c.post("/v1/reposition", json={"now": now, "drivers": drivers, "orders": orders})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rule"].startswith("learned-reposition")
        assert body["moves"] and all(m["zone"] != home_zone for m in body["moves"])
        assert c.post("/v1/dispatch", json={"now": now, "drivers": drivers, "orders": orders}).status_code == 200
