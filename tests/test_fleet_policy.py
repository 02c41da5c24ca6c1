"""A trained fleet run (``env: fleet``, a shared driver policy) as a policy everywhere a run folder is one:
``agents.fleet_learned.LearnedFleetPolicy`` plays the day ``FleetVecEnv`` plays, ``make_policy`` /
``gigdispatch evaluate`` take the folder, ``gigdispatch serve`` answers ``/v1/reposition`` from the network, and
``gigdispatch export`` writes the driver actor as ONNX. The model is a tiny MaskablePPO trained for one
iteration (200 timesteps) on ``default``: barely trained, but its greedy actions stay, accept, decline and move."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from gigdispatch.training.config import load_config

pytest.importorskip("sb3_contrib")

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "configs/train/fleet-default.yaml"
TINY = ROOT / "configs/train/scenarios/tiny.yaml"
STEPS = 300  # simulator steps compared against FleetVecEnv on `default`
NOW = 12 * 3600.0


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fleet-default.yaml cut to one PPO iteration: 2 env steps x 100 drivers, one epoch, a [16] network."""
    from gigdispatch.training.train import train

    cfg = load_config(
        FLEET,
        [
            *("total_timesteps=200", "ppo.n_steps=2", "ppo.batch_size=100", "ppo.n_epochs=1", "ppo.net_arch=[16]"),
            *("eval.every_steps=0", "checkpoint_every_steps=1000000"),
        ],
    )
    return train(cfg, run_dir=tmp_path_factory.mktemp("fleet") / "run", command="pytest fleet policy")


def _fleet_vec(scenario: str, seed: int):
    from gigdispatch.agents import make_policy
    from gigdispatch.envs.core.seeding import SeedSchedule
    from gigdispatch.envs.fleet_vec import FleetVecEnv

    return FleetVecEnv(scenario, platform_policy=make_policy("nearest"), seed_schedule=SeedSchedule(seeds=[seed]))


def _state(sim) -> tuple:
    """What a step changed, compared step by step."""
    d, o = sim.drivers, sim.orders
    return (
        sim.t,
        d.node.tobytes(),
        d.phase.tobytes(),
        d.earnings.tobytes(),
        d.offer_order.tobytes(),
        o.status.tobytes(),
        sim.state.fees,
        sim.state.payouts,
    )


# ---------------------------------------------------------------------------------------- the day
@pytest.mark.filterwarnings("ignore:The `render_mode` attribute")
def test_policy_plays_the_fleet_env_day(fleet_run: Path) -> None:
    """On ``default``, seed 5000: the policy in the bare simulator and the model driving FleetVecEnv
    deterministically (with masks) go through the same states for STEPS steps, and the network's actions in
    that span include accepts, declines and moves (each path of the policy is exercised)."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.fleet_learned import LearnedFleetPolicy
    from gigdispatch.envs import Simulator, load_scenario

    pol = make_policy(str(fleet_run))
    assert isinstance(pol, LearnedFleetPolicy) and pol.masked and pol.checkpoint.name == "best.zip"
    venv = _fleet_vec("default", 5000)
    obs = venv.reset()
    env_states, counts = [], {"accept": 0, "decline": 0, "move": 0}
    for _ in range(STEPS):
        mask = venv.action_masks()
        action, _ = pol.model.predict(obs, action_masks=mask, deterministic=True)
        counts["accept"] += int((action == 1).sum())
        counts["decline"] += int((mask[:, 1] & (action == 0)).sum())
        counts["move"] += int((action >= 2).sum())
        obs, _, _, _ = venv.step(action)
        env_states.append(_state(venv.core.sim))
    assert min(counts.values()) > 0, counts

    sim = Simulator(load_scenario("default"))
    sim.reset(5000)
    pol.reset(sim, sim.rng["policy"])
    for i in range(STEPS):
        sim.step(pol.act(sim))
        assert _state(sim) == env_states[i], f"step {i}: the policy's day left FleetVecEnv's"
    assert sim.state.counters == venv.core.sim.state.counters
    assert pol._core.invalid_driver_actions == 0  # masked greedy actions are always valid


@pytest.mark.filterwarnings("ignore:The `render_mode` attribute")
def test_whole_day_kpis_equal_the_env_and_evaluate_takes_the_folder(fleet_run: Path, tmp_path: Path) -> None:
    """A whole day of the 8-driver tiny scenario: Simulator.run's KPIs equal FleetVecEnv's, and
    ``gigdispatch evaluate --policy learned=<run>`` plays it (the same margin in episodes.csv)."""
    import csv

    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.training.cli import main

    venv = _fleet_vec(str(TINY), 5000)
    pol = make_policy(str(fleet_run))
    obs = venv.reset()
    while True:
        action, _ = pol.model.predict(obs, action_masks=venv.action_masks(), deterministic=True)
        obs, _, dones, _ = venv.step(action)
        if dones.all():
            break
    kpis = Simulator(load_scenario(str(TINY))).run(pol, seed=5000)
    for key in ("platform_margin", "orders_delivered", "acceptance_rate", "invalid_decision_pairs"):
        assert kpis[key] == venv.last_kpis[key], key

    argv = ["evaluate", "--scenario", str(TINY), "--policy", f"learned={fleet_run}", "--seeds", "5000"]
    assert main([*argv, "--workers", "1", "--out", str(tmp_path / "eval"), "--no-plots"]) == 0
    with open(tmp_path / "eval" / "episodes.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["policy"] == "learned"]
    assert len(rows) == 1 and float(rows[0]["platform_margin"]) == pytest.approx(kpis["platform_margin"])


# ---------------------------------------------------------------------------------------- errors
def _broken_copy(fleet_run: Path, tmp_path: Path, edit) -> Path:
    run = tmp_path / "broken"
    shutil.copytree(fleet_run, run, ignore=shutil.ignore_patterns("tb"))
    data = yaml.safe_load((run / "config.yaml").read_text())
    edit(data, run)
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    return run


def _cartpole_zip(data: dict, run: Path) -> None:
    """A PPO model of another env (CartPole: 4 observations, 2 actions) as the run's best checkpoint."""
    from stable_baselines3 import PPO

    data["algo"] = "ppo"
    PPO("MlpPolicy", "CartPole-v1", n_steps=8, batch_size=8, device="cpu").save(run / "checkpoints" / "best.zip")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c, r: c.update(algo="dagger"), "algo: 'dagger' is not one of maskable_ppo, ppo"),
        (lambda c, r: c.update(fleet=[1]), "fleet: expected a mapping"),
        (lambda c, r: c["fleet"].update(platform_policy="nope"), "fleet.platform_policy: unknown policy 'nope'"),
        (
            lambda c, r: (r / "checkpoints" / "best.zip").write_bytes(b"PK\x03\x04 not a zip"),
            "(env 'fleet'): checkpoint",
        ),
        (_cartpole_zip, "trained on env 'fleet', but the model reads observations of shape (4,)"),
        (
            lambda c, r: [shutil.rmtree(r / "checkpoints"), (r / "checkpoints" / "rllib").mkdir(parents=True)],
            "an RLlib run (checkpoints/rllib)",
        ),
    ],
)
def test_a_broken_fleet_folder_is_one_line(
    fleet_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, needle: str
) -> None:
    from gigdispatch.agents import UnknownPolicyError, make_policy
    from gigdispatch.training.cli import main

    run = _broken_copy(fleet_run, tmp_path, edit)
    with pytest.raises(UnknownPolicyError) as err:
        make_policy(str(run))
    msg = str(err.value)
    assert needle in msg and str(run) in msg and "\n" not in msg, msg
    argv = ["evaluate", "--scenario", str(TINY), "--policy", str(run), "--seeds", "5000", "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    err_text = capsys.readouterr().err.strip()
    assert needle in err_text and len(err_text.splitlines()) == 1 and "Traceback" not in err_text, err_text


def test_the_platform_policy_is_the_runs(fleet_run: Path, tmp_path: Path) -> None:
    """``fleet.platform_policy`` is made through the registry; without it only ``nearest`` can be."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.fleet_learned import LearnedFleetPolicy
    from gigdispatch.agents.learned import LearnedPolicyError

    run = _broken_copy(fleet_run, tmp_path, lambda c, r: c["fleet"].update(platform_policy="hungarian"))
    assert make_policy(str(run)).platform.name == "hungarian"
    assert LearnedFleetPolicy(fleet_run).platform.name == "nearest"
    with pytest.raises(LearnedPolicyError, match=r"fleet\.platform_policy: 'hungarian' needs the policy registry"):
        LearnedFleetPolicy(run)


# ---------------------------------------------------------------------------------------- serve
def _request(n_drivers: int, seed: int) -> dict:
    """Idle drivers spread over the default city (some busy), a few open orders."""
    rng = np.random.default_rng(seed)
    drivers = []
    for i in range(n_drivers):
        d: dict = {"id": f"d{i}", "node": int(rng.integers(0, 400)), "vehicle": ["bike", "car", "van"][i % 3]}
        if i % 5 == 4:
            d |= {"status": "busy", "pending_stops": 1}
        drivers.append(d)
    orders = [
        {"id": f"o{j}", "pickup": {"node": int(rng.integers(0, 400))}, "dropoff": {"node": int(rng.integers(0, 400))}}
        | {"placed": NOW - 300.0, "deadline": NOW + 3600.0}
        for j in range(4)
    ]
    return {"now": NOW, "drivers": drivers, "orders": orders}


def _network_moves(state, model) -> set[tuple[str, int]]:
    """(driver index, zone) the network sends on the state loaded in ``state.sim``: the env's observation of it
    (a fresh FleetCore), the actor's logits argmax over the allowed actions, moves 2..9 to the neighbour."""
    import torch

    from gigdispatch.envs.fleet_core import FleetCore

    core = FleetCore(state.scenario)
    core.sim = state.sim
    core.fit_drivers()
    obs, mask = core.observe()
    with torch.no_grad():
        logits = model.policy.get_distribution(torch.as_tensor(obs)).distribution.logits.numpy()
    action = np.argmax(np.where(mask, logits, -np.inf), axis=1)
    sim = state.sim
    zone = sim.city.zone_of[sim.drivers.node]
    return {(int(d), int(sim.city.zone_neighbors[zone[d], action[d] - 2])) for d in np.flatnonzero(action >= 2)}


def test_serve_answers_reposition_from_the_network(fleet_run: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gigdispatch.service import create_app
    from gigdispatch.service.schemas import RepositionRequest

    guard = create_app("default", str(fleet_run))
    with TestClient(guard, raise_server_exceptions=False) as client:
        assert client.get("/healthz").json()["policy"] == "learned-fleet"
        state = guard.app.state.serve
        for n_drivers, seed in ((60, 1), (7, 2), (60, 3)):  # fleets of other sizes than the scenario's 100
            req = _request(n_drivers, seed)
            r = client.post("/v1/reposition", json=req)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["rule"].startswith("learned-fleet")
            got = {(m["driver_id"], m["zone"]) for m in body["moves"]}
            parsed = RepositionRequest(**req)
            ld = state.load(parsed.now, parsed.drivers, parsed.orders)
            want = {(ld.driver_ids[d], z) for d, z in _network_moves(state, state.policy.model)}
            assert got == want
            assert all(not m["driver_id"].endswith(("4", "9")) for m in body["moves"])  # the busy ones stay
        assert got, "the network moved no driver: the comparison says nothing"
        r = client.post("/v1/dispatch", json=_request(30, 4))
        assert r.status_code == 200 and r.json()["policy"] == "learned-fleet", r.text


# ---------------------------------------------------------------------------------------- export
@pytest.mark.filterwarnings("ignore:The `render_mode` attribute")
def test_export_writes_the_driver_actor(fleet_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``gigdispatch export`` on a fleet run: obs -> logits, verified on 1000 random rows; the file's greedy
    actions also equal the model's on real driver rows of a FleetVecEnv day; --check-served is one line."""
    pytest.importorskip("onnxruntime")
    from gigdispatch.agents import make_policy
    from gigdispatch.training.cli import main
    from gigdispatch.training.export import ort_session, sidecar_path

    out = tmp_path / "fleet.onnx"
    assert main(["export", "--checkpoint", str(fleet_run), "--out", str(out)]) == 0
    assert "verified: 1000/1000 ONNX greedy actions identical" in capsys.readouterr().out
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["format"] == "gigdispatch-fleet-onnx/1" and meta["verified"]["identical"] == 1000
    assert meta["input"]["shape"] == ["batch", 50] and meta["output"]["shape"] == ["batch", 10]
    assert meta["obs_version"] == 1 and meta["input"]["fields"][41:] == [f"placed_{i}" for i in range(9)]

    model = make_policy(str(fleet_run)).model
    sess = ort_session(out)
    venv = _fleet_vec("default", 5001)
    obs = venv.reset()
    for _ in range(20):
        mask = venv.action_masks()
        action, _ = model.predict(obs, action_masks=mask, deterministic=True)
        logits = sess.run(["logits"], {"obs": obs.astype(np.float32)})[0]
        assert np.array_equal(np.argmax(np.where(mask, logits, -np.inf), axis=1), action)
        obs, _, _, _ = venv.step(action)

    argv = ["export", "--checkpoint", str(fleet_run), "--out", str(tmp_path / "x.onnx"), "--check-served", "5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--check-served" in err and "fleet run" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.onnx").exists()
