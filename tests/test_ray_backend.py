"""``--backend ray`` and the sweep journal: evaluate on Ray equals evaluate on the process pool episode for episode, a
sweep killed mid-way and started again finishes with every episode exactly once, the journal's rules (a torn line,
another sweep, another revision, one writer), and the one-line errors (``--address`` without Ray, no cluster there,
Ray not installed). Ray runs only in subprocesses, bound to 127.0.0.1 with a token of the test's own
(``tests/raycluster.py``); the two-node cluster is ``tests/test_ray_cluster.py``."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from raycluster import FILES, MDRP_MATCH, figures, journal_lines, loopback_env, new_token, same_episode

from gigdispatch.training.cli import main
from gigdispatch.training.evaluate import JOURNAL, evaluate
from gigdispatch.training.journal import TaskJournal, task_key
from gigdispatch.training.runner import EpisodeResult, run_tasks

CLI = [sys.executable, "-c", "import sys; from gigdispatch.training.cli import main; sys.exit(main())"]


# ------------------------------------------------------------------------------------------ the journal
def test_an_episode_reads_back_from_its_record_exactly() -> None:
    res = EpisodeResult(
        "nearest",
        "default",
        3,
        {"platform_margin": 12.5, "orders_created": 7, "click_to_door_mean_min": float("nan"), "x": np.float64(0.1)},
        np.asarray([0.123456789, 2.5], dtype=np.float32),
        {"created": np.asarray([0.0, 3.0, 1.0 / 3.0])},
        bounds={"profit_upper_by_open_eur": [1.0, 2.0]},
    )
    line = json.dumps(res.to_record())  # through JSON text, as the journal holds it
    back = EpisodeResult.from_record(json.loads(line))
    assert (back.policy, back.scenario, back.seed, back.bounds) == (res.policy, res.scenario, res.seed, res.bounds)
    assert back.kpis["orders_created"] == 7 and isinstance(back.kpis["orders_created"], int)
    assert back.kpis["x"] == 0.1 and math.isnan(back.kpis["click_to_door_mean_min"])
    assert back.latency_ms.dtype == np.float32 and np.array_equal(back.latency_ms, res.latency_ms)
    assert np.array_equal(back.hourly["created"], res.hourly["created"])


def test_a_torn_line_is_cut_a_damaged_one_skipped_other_sweeps_left_out(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    tasks = [("a", 0), ("a", 1), ("a", 2)]
    with TaskJournal(path, stamp="rev1") as book:
        book.append(tasks[0], {"v": 0})
        book.append(("b", 9), {"v": 9})  # a task of another sweep
    with TaskJournal(path, stamp="rev2") as book:
        book.append(tasks[1], {"v": 1})  # written by another revision of the code
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b"not json\n")
        f.write(b'{"task": ["a", 2], "stamp": "rev1", "node": null, "res')  # a kill cut this line short
    with TaskJournal(path, stamp="rev1") as book:
        got = book.take(tasks)
        assert got == {0: ({"v": 0}, None)}
        assert (book.other, book.damaged, book.cut) == (2, 1, True)
        assert path.read_bytes() == whole + b"not json\n"  # the torn tail is gone, the rest is kept
        book.append(tasks[2], {"v": 2}, node="n1")
        notes = book.notes(1, 3, "episode")
    assert len(notes) == 4 and "1 of 3 episodes taken" in notes[0]
    with TaskJournal(path, stamp="rev1") as book:
        assert book.take(tasks) == {0: ({"v": 0}, None), 2: ({"v": 2}, "n1")}
    with TaskJournal(path, stamp="rev1", fresh=True) as book:
        assert book.take(tasks) == {} and path.read_bytes() == b""


def test_one_run_at_a_time_writes_a_journal(tmp_path: Path) -> None:
    from gigdispatch.envs.core.errors import InputError

    pytest.importorskip("fcntl")
    with TaskJournal(tmp_path / "j.jsonl"), pytest.raises(InputError, match="another run is writing"):
        TaskJournal(tmp_path / "j.jsonl")


def test_tasks_are_keyed_by_their_json_text() -> None:
    assert task_key(("p", "s", 3)) == task_key(["p", "s", 3]) != task_key(("p", "s", 4))


def test_results_arrive_in_task_order_and_each_is_reported_once() -> None:
    seen: list[tuple[int, int]] = []
    info: dict = {}
    out = run_tasks(
        abs, [-3, 1, -2, 5], 2, False, "t", "task", on_result=lambda i, r, n: seen.append((i, r)), info=info
    )
    assert out == [3, 1, 2, 5] and sorted(seen) == [(0, 3), (1, 1), (2, 2), (3, 5)]
    assert info["backend"] == "process" and info["workers"] == 2 and info["nodes"] == {}


# ------------------------------------------------------------------------------ a sweep killed mid-way
def test_a_killed_sweep_restarted_finishes_with_every_episode_exactly_once(tmp_path: Path) -> None:
    """SIGKILL to the sweep (and its worker processes) once some episodes are in the journal; the same command again
    runs only the rest; the files equal an uninterrupted run's; every episode is in the journal exactly once."""
    out = tmp_path / "killed"
    seeds = "0-23"
    argv = [*CLI, "evaluate", "--seeds", seeds, "--workers", "2", "--out", str(out), "--no-plots", "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not ((out / JOURNAL).is_file() and (out / JOURNAL).read_bytes().count(b"\n") >= 4):
            assert proc.poll() is None, f"the sweep ended before it was killed: {proc.stderr and proc.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its process pool, as a kill -9 or an OOM kill would
        proc.wait()
    done_before = (out / JOURNAL).read_bytes().count(b"\n")
    assert 4 <= done_before < 24 and not (out / "episodes.csv").exists()

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    taken = int(again.stdout.split(" of 24 episodes taken")[0].rsplit("\n", 1)[-1])
    assert taken >= done_before  # what the journal held when killed (plus a line written as the kill came)

    lines = journal_lines(out)
    keys = [task_key(line["task"]) for line in lines]
    assert len(lines) == 24 and len(set(keys)) == 24  # every episode exactly once
    assert sorted(line["task"][4] for line in lines) == list(range(24))

    whole = tmp_path / "whole"
    evaluate(["default"], ["nearest"], seeds, whole, workers=2, progress=False, plots=False)
    for name in FILES:
        assert figures(out, name) == figures(whole, name), name
    assert "taken from" in (out / "report.md").read_text()


def test_a_finished_sweep_again_takes_everything_and_fresh_starts_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    args = ["evaluate", "--seeds", "0-1", "--workers", "1", "--out", str(out), "--no-plots", "--no-progress"]
    assert main(args) == 0
    first = (out / JOURNAL).read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert "2 of 2 episodes taken from" in capsys.readouterr().out and (out / JOURNAL).read_text() == first
    assert main([*args, "--policy", "hungarian"]) == 0  # another sweep: nothing of the journal is used
    said = capsys.readouterr().out
    assert "taken" not in said and "2 episode(s) of another sweep or code revision" in said
    assert main([*args, "--fresh"]) == 0
    assert "taken" not in capsys.readouterr().out and len(journal_lines(out)) == 2


def test_mdrp_takes_the_instances_of_its_journal(
    mdrp_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    args = ["mdrp", "--instances", str(mdrp_dir), "--match", MDRP_MATCH, "--out", str(out), "--no-progress"]
    assert main([*args, "--workers", "2"]) == 0
    first = figures(out, "instances.csv")
    lines = (out / "instances.jsonl").read_text().splitlines()
    assert len(first) == 2 and len(lines) == 2
    capsys.readouterr()
    assert main([*args, "--workers", "1"]) == 0
    assert "2 of 2 instances taken from" in capsys.readouterr().out
    assert figures(out, "instances.csv") == first and (out / "instances.jsonl").read_text().splitlines() == lines


# ------------------------------------------------------------------------------------- Ray = process pool
@pytest.fixture(scope="module")
def ray_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a driver that starts a private Ray: its temp folder in /tmp (short: Ray's socket paths
    must fit), removed after."""
    pytest.importorskip("ray")
    root = Path(tempfile.mkdtemp(prefix="gdray-", dir="/tmp"))
    yield loopback_env(new_token(tmp_path_factory.mktemp("token")), tmp_root=root)
    shutil.rmtree(root, ignore_errors=True)


def test_evaluate_on_ray_equals_the_process_pool_episode_for_episode(tmp_path: Path, ray_env: dict[str, str]) -> None:
    """The same sweep on a private Ray (two CPUs, tasks finishing out of order) and in the process pool: every
    episode's figures equal; the Ray run takes the first episodes from the pool run's journal (resume across
    backends) and runs the rest as Ray tasks."""
    pool, on_ray = tmp_path / "pool", tmp_path / "ray"
    seeds = "0-5"
    evaluate(["default"], ["nearest", "hungarian"], seeds, pool, workers=2, progress=False, plots=False)
    on_ray.mkdir()
    (on_ray / JOURNAL).write_text("".join(ln + "\n" for ln in (pool / JOURNAL).read_text().splitlines()[:3]))
    argv = [*CLI, "evaluate", "--policy", "nearest", "--policy", "hungarian", "--seeds", seeds, "--backend", "ray"]
    argv += ["--workers", "2", "--out", str(on_ray), "--no-plots", "--no-progress"]
    r = subprocess.run(argv, capture_output=True, text=True, env=ray_env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 of 12 episodes taken" in r.stdout

    a = {task_key(ln["task"]): ln for ln in journal_lines(pool)}
    b = {task_key(ln["task"]): ln for ln in journal_lines(on_ray)}
    assert a.keys() == b.keys() and len(b) == 12
    assert all(same_episode(a[k]["result"], b[k]["result"]) for k in a)
    ray_nodes = [ln["node"] for ln in journal_lines(on_ray)[3:]]
    assert len(ray_nodes) == 9 and all(isinstance(n, str) and len(n) > 20 for n in ray_nodes)  # Ray node ids
    for name in FILES:
        assert figures(on_ray, name) == figures(pool, name), name
    report = (on_ray / "report.md").read_text()
    assert "2 Ray task(s) at once on a private Ray on this machine" in report and "--backend ray" in report


# ------------------------------------------------------------------------------------------- one line
def test_address_needs_the_ray_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--address", "127.0.0.1:6379", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address" in err and "--backend ray" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["evaluate", "mdrp"])
def test_no_cluster_at_the_address_is_one_line_at_once(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    extra = ["--instances", str(tmp_path)] if command == "mdrp" else []
    t0 = time.perf_counter()
    rc = main([command, *extra, "--backend", "ray", "--address", "127.0.0.1:1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--address 127.0.0.1:1: no Ray cluster answers there" in err, err
    assert time.perf_counter() - t0 < 20 and not (tmp_path / "o").exists()


def test_ray_not_installed_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    assert main(["evaluate", "--backend", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--backend ray needs Ray" in err and "pip install" in err


def test_the_commands_do_not_import_ray_unless_asked() -> None:
    code = (
        "import sys; import gigdispatch.training.cli, gigdispatch.training.evaluate, gigdispatch.training.mdrp, "
        "gigdispatch.training.cem, gigdispatch.training.journal; print('ray' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
