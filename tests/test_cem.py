"""The scored-match policy (agents/scored.py) and its cross-entropy-method training (training/cem.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gigdispatch.training.config import load_config

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
    from gigdispatch.agents.scored import PARAMS, check_params
    from gigdispatch.training.cem import NAMES, to_params

    zero = to_params(np.zeros(len(NAMES)))
    assert {k: zero[k] for k in PARAMS} == pytest.approx({k: v[0] for k, v in PARAMS.items()})
    assert zero["max_level"] == 1
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = to_params(rng.normal(0, 3, len(NAMES)))
        assert check_params(p) == p  # every vector is a valid policy


def test_scored_match_without_its_levers_is_value_hungarian() -> None:
    """With batching off, max_level 0 and no hold the scored policy decides exactly like value-hungarian
    (level-0 offers)."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.scored import ScoredMatchPolicy
    from gigdispatch.envs import Simulator, load_scenario

    sim = Simulator(load_scenario("default"))
    sc = ScoredMatchPolicy(
        {"max_level": 0, "hold_below": -1e9, "batching": 0, "value_weight": 0.5}
    )  # value-hungarian's weights
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
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.scored import ScoredMatchPolicy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.training.cem import train_cem

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
    from gigdispatch.training.cli import main

    cfg = _cfg(tmp_path, "cem.iterations=1")
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "searched 1 CEM iterations (8 simulated days)" in out
    (run,) = (tmp_path / "runs").iterdir()
    lines = out.splitlines()  # not a terminal: the run folder, then one line per evaluation and iteration
    assert lines[0] == f"run folder: {run}"
    assert [ln.split("] ", 1)[1].split(":")[0] for ln in lines if "] " in ln] == ["start", "iteration 1/1"]
    assert len(lines) == 4 and lines[-1].startswith("searched 1 CEM iterations")
    state = (run / "cem_state.json").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # finished: nothing left to do, one line
    out = capsys.readouterr().out
    assert out == f"--resume {run}: the run is finished (8 of 8 simulated days); nothing left to do\n"
    assert (run / "cem_state.json").read_bytes() == state
    for name in (
        "config.yaml",
        "command.txt",
        "git_revision.txt",
        "seed",
        "policy.json",
        "cem_state.json",
        "progress.json",
    ):
        assert (run / name).is_file(), name


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"format": "nope"}, "format must be"),
        ({"format": "gigdispatch-scored-match/1"}, "params: missing"),
        ({"format": "gigdispatch-scored-match/1", "params": {"time_value": -1}}, "params.time_value: must be >= 0"),
        ({"format": "gigdispatch-scored-match/1", "params": {"bogus": 1}}, "params.bogus: unknown parameter"),
        (
            {"format": "gigdispatch-scored-match/1", "params": {"level_threshold": "x"}},
            "params.level_threshold: must be a finite number",
        ),
        ({"format": "gigdispatch-scored-match/1", "params": {}, "values": "missing.npz"}, "values: no such file"),
    ],
)
def test_bad_policy_files_name_the_field(tmp_path: Path, doc: dict, needle: str) -> None:
    from gigdispatch.agents.registry import UnknownPolicyError, make_policy

    (tmp_path / "policy.json").write_text(json.dumps(doc))
    with pytest.raises(UnknownPolicyError, match=needle.replace("(", r"\(")):
        make_policy(str(tmp_path))
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(UnknownPolicyError, match="not a readable JSON"):
        make_policy(str(tmp_path))


def test_cem_config_errors() -> None:
    from gigdispatch.training.config import ConfigError

    with pytest.raises(ConfigError, match="use env: dispatch"):
        load_config(ROOT / "configs/train/match-default.yaml", ["env=fleet"])
    with pytest.raises(ConfigError, match="cem: elite: 50 elite of a population of 12"):
        load_config(ROOT / "configs/train/match-default.yaml", ["cem.elite=50"])


def test_combine_runs_into_one_policy_per_scenario(tmp_path: Path) -> None:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.training.cem import main, train_cem

    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(tmp_path, "cem.iterations=1")
    train_cem(cfg, run, resume=False)
    (run / "config.yaml").write_text(cfg.to_yaml())
    out = tmp_path / "shipped"
    assert main(["--run", str(run), "--out", str(out)]) == 0
    doc = json.loads((out / "policy.json").read_text())
    name = load_scenario(str(TINY)).name
    assert list(doc["scenarios"]) == [name] and (out / f"config-{name}.yaml").is_file()
    pol = make_policy(str(out))
    sim = Simulator(load_scenario(str(TINY)))
    sim.reset(5000)
    pol.reset(sim, sim.rng["policy"])
    assert pol.params == doc["scenarios"][name]
    assert main(["--run", str(run), "--run", str(run), "--out", str(out)]) == 2  # two runs of one scenario
    assert main(["--run", str(tmp_path), "--out", str(out)]) == 2  # not a run folder


def test_scored_match_with_batching_offers_to_busy_drivers() -> None:
    from gigdispatch.agents.scored import ScoredMatchPolicy
    from gigdispatch.envs import Simulator, load_scenario

    sim = Simulator(load_scenario("default"))
    pol = ScoredMatchPolicy({"batching": 1, "hold_below": -1e9})
    sim.reset(1002)
    pol.reset(sim, sim.rng["policy"])
    to_busy = 0
    while not sim.done:
        dec = pol.act(sim)
        if len(dec.driver):
            to_busy += int((sim.drivers.route_len[dec.driver] > 0).sum())
        sim.step(dec)
    assert to_busy > 0


def test_shipped_dispatch_policy_loads_evaluates_and_serves() -> None:
    """checkpoints/dispatch is accepted as a policy by evaluate (make_policy) and by the service."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gigdispatch.agents import make_policy
    from gigdispatch.agents.scored import ScoredMatchPolicy
    from gigdispatch.service import create_app
    from gigdispatch.training.serve_check import record_requests

    shipped = ROOT / "checkpoints/dispatch"
    pol = make_policy(str(shipped))
    assert isinstance(pol, ScoredMatchPolicy) and {"default", "city-1000"} <= set(pol.by_scenario)
    requests = record_requests("default", 5, first_seed=9100, every=20)
    with TestClient(create_app("default", str(shipped))) as client:
        answers = [client.post("/v1/dispatch", json=r) for r in requests]
    assert all(a.status_code == 200 for a in answers)
    assert sum(len(a.json()["assignments"]) for a in answers) > 0
