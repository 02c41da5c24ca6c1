"""A real Ray cluster: a head node (``ray start --head`` on 127.0.0.1) and a second node joined to it, one CPU each
(``tests/raycluster.py``). On it: a small ``gigdispatch evaluate --backend ray --address`` sweep, a two-iteration
``gigdispatch train --backend rllib --address`` run with one env runner per node, a small CEM search with
``cem.backend=ray`` and an mdrp run on two instances; both nodes must have done work, the figures must equal the
process pool's, every socket of the cluster (and of its drivers) must listen on 127.0.0.1 only, and stopping it must
leave no process behind.

Marked ``slow`` (about a minute on two cores; it runs in CI with the rest). Alone:
``.venv/bin/python -m pytest -q tests/test_ray_cluster.py -s`` (``-s`` prints what ran where).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from raycluster import FILES, MDRP_MATCH, LocalRayCluster, figures, journal_lines, same_episode

from gigdispatch.training.evaluate import evaluate
from gigdispatch.training.journal import task_key

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from gigdispatch.training.cli import main; sys.exit(main())"]
SEEDS = "0-7"
CEM = [
    "--config",
    str(ROOT / "configs/train/match-default.yaml"),
    f"scenario={ROOT / 'configs/train/scenarios/tiny.yaml'}",
    "cem.iterations=1",
    "cem.population=4",
    "cem.elite=2",
    "cem.seeds_per_iteration=2",
    "eval.seeds=5000-5001",
    "eval.episodes=2",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    pytest.importorskip("ray.rllib")
    c = LocalRayCluster(nodes=2, num_cpus=1, object_store_mb=200)
    t0 = time.perf_counter()
    try:
        c.start()
        print(f"\ncluster: head + 1 node at {c.address}, 1 CPU each, up in {time.perf_counter() - t0:.1f} s")
        yield c
    finally:
        c.stop()
        c.remove()


def run_on(cluster: LocalRayCluster, argv: list[str], seen: set[str], timeout_s: float = 240) -> str:
    """Run a gigdispatch command as a driver of the cluster; the sockets the cluster listens on meanwhile go to
    ``seen``; returns its output (it must exit 0)."""
    proc = subprocess.Popen(
        [*CLI, *argv], env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None:
        seen |= cluster.listening(drivers={proc.pid})
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{argv[0]} on the cluster did not finish in {timeout_s} s")
        time.sleep(0.5)
    out = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def listened() -> set[str]:
    return set()


@pytest.fixture(scope="module")
def eval_nodes(cluster: LocalRayCluster, listened: set[str], tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("on-cluster")
    t0 = time.perf_counter()
    argv = ["evaluate", "--backend", "ray", "--address", cluster.address, "--seeds", SEEDS, "--out", str(out)]
    run_on(cluster, [*argv, "--no-plots", "--no-progress"], listened)
    wall = time.perf_counter() - t0
    lines = journal_lines(out)
    nodes = [ln["node"] for ln in lines]
    print(f"evaluate: {len(lines)} episodes in {wall:.1f} s; per node: { {n[:8]: nodes.count(n) for n in set(nodes)} }")

    pool = tmp_path_factory.mktemp("pool")
    evaluate(["default"], ["nearest"], SEEDS, pool, workers=1, progress=False, plots=False)
    by_task = {task_key(ln["task"]): ln["result"] for ln in journal_lines(pool)}
    assert all(same_episode(by_task[task_key(ln["task"])], ln["result"]) for ln in lines)
    for name in FILES:
        assert figures(out, name) == figures(pool, name), name
    assert "2 Ray task(s) at once on the Ray cluster at" in (out / "report.md").read_text()
    return set(nodes)


def test_an_evaluate_sweep_runs_on_both_nodes_with_the_process_pools_figures(eval_nodes: set[str]) -> None:
    assert len(eval_nodes) == 2


def test_rllib_trains_two_iterations_with_an_env_runner_on_each_node(
    cluster: LocalRayCluster, eval_nodes: set[str], listened: set[str], tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    argv = ["train", "--backend", "rllib", "--address", cluster.address]
    argv += ["--config", str(ROOT / "configs/train/rllib-smoke.yaml"), "rllib.num_env_runners=2"]
    said = run_on(cluster, [*argv, "--out", str(tmp_path), "--no-progress"], listened)
    (run,) = tmp_path.iterdir()
    prog = json.loads((run / "progress.json").read_text())
    print(f"rllib: {prog['iteration']} iterations, {prog['env_steps']} env steps in {time.perf_counter() - t0:.1f} s;")
    print(f"  env runners on nodes {[n[:8] for n in prog['env_runner_nodes']]}")
    assert prog["done"] and prog["iteration"] == 2 and prog["env_steps"] > 0
    assert set(prog["env_runner_nodes"]) == eval_nodes  # one env runner on each node of the cluster
    assert "2 env runner(s) on 2 Ray node(s)" in said


def test_a_cem_search_on_the_cluster_equals_the_process_pool(
    cluster: LocalRayCluster, listened: set[str], tmp_path: Path
) -> None:
    from gigdispatch.training.config import load_config
    from gigdispatch.training.train import train

    t0 = time.perf_counter()
    run_on(
        cluster,
        ["train", *CEM, "cem.backend=ray", "--address", cluster.address, "--out", str(tmp_path / "r")],
        listened,
    )
    wall = time.perf_counter() - t0
    cfg = load_config(CEM[1], [*CEM[2:], "cem.workers=1"])
    here = train(cfg, tmp_path / "p")
    (on_ray,) = (tmp_path / "r").iterdir()
    a, b = (json.loads((d / "cem_state.json").read_text()) for d in (on_ray, here))
    print(f"cem: 1 iteration on the cluster in {wall:.1f} s; the same search state as the process pool: {a == b}")
    assert a == b


def test_mdrp_on_the_cluster_equals_the_process_pool(
    cluster: LocalRayCluster, listened: set[str], mdrp_dir: Path, tmp_path: Path
) -> None:
    from gigdispatch.training.mdrp import run_mdrp

    argv = ["mdrp", "--instances", str(mdrp_dir), "--match", MDRP_MATCH, "--backend", "ray", "--address"]
    run_on(cluster, [*argv, cluster.address, "--out", str(tmp_path / "r"), "--no-progress"], listened)
    run_mdrp(mdrp_dir, ["nearest"], tmp_path / "p", workers=1, progress=False, match=MDRP_MATCH)
    ours, pool = (figures(tmp_path / d, "instances.csv") for d in ("r", "p"))
    nodes = {json.loads(line)["node"] for line in (tmp_path / "r" / "instances.jsonl").read_text().splitlines()}
    print(f"mdrp: {len(ours)} instances on {len(nodes)} node(s); the same rows as the process pool: {ours == pool}")
    assert len(ours) == 2 and ours == pool


def test_every_socket_of_the_cluster_listens_on_127_0_0_1(listened: set[str]) -> None:
    assert listened, "no listening socket was seen"
    assert {a.rsplit(":", 1)[0] for a in listened} == {"127.0.0.1"}, sorted(listened)
    print(f"listening: {len(listened)} sockets, all on 127.0.0.1")


def test_stopping_the_cluster_leaves_no_process(cluster: LocalRayCluster) -> None:
    killed = cluster.stop()
    assert cluster.processes() == []
    print(f"stopped: no process left ({len(killed)} had to be killed after SIGTERM)")
