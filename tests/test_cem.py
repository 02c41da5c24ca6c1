"""Issue 5: the scored-match policy (agents/scored.py) and its cross-entropy-method training (training/cem.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs/train/scenarios/tiny.yaml"


def _cfg(tmp: Path, *overrides: str):
    base = {
        "name": "cem-smoke",
        "env": "dispatch",
        "scenario": str(TINY),
        "algo": "cem",
        "cem": {"iterations": 2, "population": 4, "elite": 2, "seeds_per_iteration": 2, "workers": 1},
        "train_seeds": "1000-1099",
        "eval": {"seeds": "5000-5001", "episodes": 2},
    }
    p = tmp / "cem.yaml"
    import yaml

    p.write_text(yaml.safe_dump(base))
    return load_config(p, list(overrides))


def test_search_vector_maps_to_valid_params() -> None:
    from agents.scored import PARAMS, check_params
    from training.cem import NAMES, to_params

    zero = to_params(np.zeros(len(NAMES)))
    assert {k: zero[k] for k in PARAMS} == pytest.approx({k: v[0] for k, v in PARAMS.items()})
    assert zero["max_level"] == 1
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = to_params(rng.normal(0, 3, len(NAMES)))
        assert check_params(p) == p  # every vector is a valid policy


def test_default_scored_match_is_value_hungarian_plus_the_auction_lever() -> None:
    """With max_level 0 and no hold the scored policy decides exactly like value-hungarian with level-0 offers."""
    from agents import make_policy
    from agents.scored import ScoredMatchPolicy
    from envs import Simulator, load_scenario

    sim = Simulator(load_scenario("default"))
    sc = ScoredMatchPolicy({"max_level": 0, "hold_below": -1e9})
    vh = make_policy("value-hungarian")
    sim.reset(1001)
    sc.reset(sim, sim.rng["policy"])
    vh.reset(sim, sim.rng["policy"])
    n = 0
    for _ in range(400):
        a, b = sc.act(sim), vh.act(sim)
        np.testing.assert_array_equal(a.order, b.order)
        np.testing.assert_array_equal(a.driver, b.driver)
        assert a.level is None or (np.asarray(a.level) == 0).all()
        n += len(a.order)
        sim.step(a)
    assert n > 50


def test_cem_run_writes_a_loadable_policy_and_resume_reproduces_it(tmp_path: Path) -> None:
    from agents import make_policy
    from agents.scored import ScoredMatchPolicy
    from envs import Simulator, load_scenario
    from training.cem import train_cem

    full = tmp_path / "full"
    full.mkdir()
    st_full = train_cem(_cfg(tmp_path), full, resume=False)
    assert st_full["iteration"] == 2 and len(st_full["history"]) == 2
    doc = json.loads((full / "policy.json").read_text())
    assert doc["format"] == "gigdispatch-scored-match/1" and doc["trained"]["iterations"] == 2
    pol = make_policy(str(full))
    assert isinstance(pol, ScoredMatchPolicy) and pol.params == doc["params"]
    kpis = Simulator(load_scenario(str(TINY))).run(pol, seed=5000)
    assert kpis["orders_delivered"] > 0

    # killed after the first iteration, then resumed: the same search, to the last number
    part = tmp_path / "part"
    part.mkdir()
    train_cem(_cfg(tmp_path, "cem.iterations=1"), part, resume=False)
    assert json.loads((part / "cem_state.json").read_text())["iteration"] == 1
    st_part = train_cem(_cfg(tmp_path), part, resume=True)
    assert st_part["mean"] == st_full["mean"] and st_part["std"] == st_full["std"]
    assert [h["train_seeds"] for h in st_part["history"]] == [h["train_seeds"] for h in st_full["history"]]
    assert all(min(h["train_seeds"]) >= 1000 for h in st_full["history"])


def test_cli_cem_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    cfg = _cfg(tmp_path, "cem.iterations=1")
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "searched 1 CEM iterations (8 simulated days)" in out
    (run,) = (tmp_path / "runs").iterdir()
    for name in ("config.yaml", "command.txt", "git_revision.txt", "seed", "policy.json", "cem_state.json", "progress.json"):
        assert (run / name).is_file(), name


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"format": "nope"}, "format must be"),
        ({"format": "gigdispatch-scored-match/1"}, "params: missing"),
        ({"format": "gigdispatch-scored-match/1", "params": {"time_value": -1}}, "params.time_value: must be >= 0"),
        ({"format": "gigdispatch-scored-match/1", "params": {"bogus": 1}}, "params.bogus: unknown parameter"),
        ({"format": "gigdispatch-scored-match/1", "params": {"level_threshold": "x"}}, "params.level_threshold: must be a finite number"),
        ({"format": "gigdispatch-scored-match/1", "params": {}, "values": "missing.npz"}, "values: no such file"),
    ],
)
def test_bad_policy_files_name_the_field(tmp_path: Path, doc: dict, needle: str) -> None:
    from agents.registry import UnknownPolicyError, make_policy

    (tmp_path / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(UnknownPolicyError, match=needle.replace("(", r"\(")):
        make_policy(str(tmp_path))
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(UnknownPolicyError, match="not a readable JSON"):
        make_policy(str(tmp_path))


def test_cem_config_errors() -> None:
    from training.config import ConfigError

    with pytest.raises(ConfigError, match="use env: dispatch"):
        load_config(ROOT / "configs/train/match-default.yaml", ["env=fleet"])
    with pytest.raises(ConfigError, match="cem: elite: 50 elite of a population of 12"):
        load_config(ROOT / "configs/train/match-default.yaml", ["cem.elite=50"])
