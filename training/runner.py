"""Playing policies on seeds: episodes, their KPIs and decision latencies, over worker processes.

One episode is one (policy, scenario, seed). Every policy plays the same seeds of a scenario, so a seed
is the same day for all of them (common random numbers: the comparisons of ``training.report`` are
paired). Episodes run in worker processes (``concurrent.futures.ProcessPoolExecutor``); each worker
loads a scenario once and reuses its ``Simulator`` (and each policy object, reset at the start of every
episode as the ``Policy`` contract requires) for all the episodes it is given. The outcome of an
episode depends on its seed only, never on the worker that ran it or on the number of workers.

Decision latency is the wall time of each ``policy.act`` call.

With ``backend="ray"`` the same tasks run as Ray tasks (``ray.remote`` calls of the same worker function, on this
machine or on a Ray cluster: ``address``), collected as they finish; the results are in task order and equal to the
process pool's (the tasks are deterministic given their seeds). ``ray`` is imported only then. A sweep's finished
episodes go to a journal as they arrive (``training.journal``), from which a restarted sweep takes them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.envs.core.errors import InputError

_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


# ------------------------------------------------------------------------------ what is played
def parse_policy(text: str) -> tuple[str, str]:
    """``SPEC`` or ``LABEL=SPEC`` -> (label, spec).

    SPEC is a registry name or a checkpoint folder; ``LABEL=`` names the policy in the results (to run
    one policy twice with different labels, or to give a checkpoint folder a short name).
    """
    text = str(text).strip()
    if not text:
        raise InputError("--policy: empty name")
    if "=" in text and not Path(text).exists():
        label, spec = (s.strip() for s in text.split("=", 1))
        if not _LABEL.match(label) or not spec:
            raise InputError(
                f"--policy {text!r}: expected NAME or LABEL=NAME (label of letters, digits, '_', '-', '.', '+')"
            )
        return label, spec
    label = text.rstrip("/") if Path(text).is_dir() else text
    return label, text


def resolve_policies(policies: Iterable[str | tuple[str, str]]) -> list[tuple[str, str]]:
    """Parse and check the policies (each is made once here so that a bad name fails before any work)."""
    from gigdispatch.agents import make_policy

    out: list[tuple[str, str]] = []
    for p in policies:
        label, spec = p if isinstance(p, tuple) else parse_policy(p)
        if any(label == lab for lab, _ in out):
            raise InputError(f"--policy: {label!r} is given twice (use LABEL=NAME to run one policy under two labels)")
        make_policy(spec)  # raises UnknownPolicyError with a clear message (unknown, not available, folder)
        out.append((label, spec))
    if not out:
        raise InputError("--policy: give at least one policy")
    return out


def resolve_scenarios(scenarios: Iterable[str]) -> list[tuple[str, str]]:
    """(label, spec) per scenario: the scenario's own name, or the spec where two names collide."""
    from gigdispatch.envs import load_scenario

    specs = [str(s) for s in scenarios]
    if not specs:
        raise InputError("--scenario: give at least one scenario")
    dup = {s for s in specs if specs.count(s) > 1}
    if dup:
        raise InputError(f"--scenario: {sorted(dup)[0]!r} is given more than once")
    names = [load_scenario(s).name for s in specs]  # raises ScenarioError naming the problem
    return [(n if names.count(n) == 1 else s, s) for n, s in zip(names, specs, strict=True)]


def check_seeds(seeds: Sequence[int], what: str = "--seeds") -> list[int]:
    """``seeds`` as a list of ints; ``InputError`` unless there is at least one and they are distinct and >= 0."""
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise InputError(f"{what}: no seeds")
    if any(s < 0 for s in seed_list) or len(set(seed_list)) != len(seed_list):
        raise InputError(f"{what}: seeds must be distinct and >= 0, got {seed_list}")
    return seed_list


# ------------------------------------------------------------------------------------ the episodes
_SIMS: dict[str, Any] = {}  # per worker process: scenario spec -> Simulator
_POLICIES: dict[str, Any] = {}  # per worker process: policy spec -> Policy


def cached_simulator(spec: str) -> Any:
    """This process's Simulator for a scenario spec (the scenario is loaded once per process)."""
    sim = _SIMS.get(spec)
    if sim is None:
        from gigdispatch.envs import Simulator, load_scenario

        sim = _SIMS[spec] = Simulator(load_scenario(spec))
    return sim


def cached_policy(spec: str) -> Any:
    """This process's policy object for a spec (``reset`` at every episode)."""
    pol = _POLICIES.get(spec)
    if pol is None:
        from gigdispatch.agents import make_policy

        pol = _POLICIES[spec] = make_policy(spec)
    return pol


def clear_caches() -> None:
    _SIMS.clear()
    _POLICIES.clear()


def run_episode(
    sim: Any, policy: Any, seed: int, after_step: Callable[[Any], None] | None = None
) -> tuple[dict[str, float], np.ndarray]:
    """Run one day like ``Simulator.run`` and time each ``policy.act`` call.

    Returns the KPIs (with ``wall_seconds``) and the decision latencies in milliseconds.
    ``after_step(sim)`` is called after every step (to measure something the arrays do not keep).
    """
    from gigdispatch.envs import compute_kpis

    t0 = time.perf_counter()
    sim.reset(seed)
    policy.reset(sim, sim.rng["policy"])
    lat: list[float] = []
    clock = time.perf_counter
    while not sim.done:
        a = clock()
        dec = policy.act(sim)
        lat.append(clock() - a)
        sim.step(dec)
        if after_step is not None:
            after_step(sim)
    kpis = compute_kpis(sim)
    kpis["wall_seconds"] = time.perf_counter() - t0
    return kpis, np.asarray(lat, dtype=np.float64) * 1000.0


def hourly_counts(sim: Any) -> dict[str, np.ndarray]:
    """Per hour of the day (index = hour since midnight), counts of this episode.

    ``created``, ``cancelled``, ``delivered_by_place``, ``on_time``, ``ctd_sum_min`` are by hour of
    placement; ``delivered`` by hour of delivery. All arrays have one entry per hour up to the end of
    the day (``sim.day_end``), so they add up across episodes of one scenario.
    """
    from gigdispatch.envs.core.types import ORDER_CANCELLED, ORDER_DELIVERED, ORDER_FUTURE, ORDER_LOST

    od = sim.orders
    n_h = math.ceil(max(sim.day_end, sim.t) / 3600.0) + 1
    st = od.status
    created = (st != ORDER_FUTURE) & (st != ORDER_LOST)
    dlv = st == ORDER_DELIVERED
    h_place = np.clip((od.t_place // 3600.0).astype(np.int64), 0, n_h - 1)
    h_del = np.clip((np.nan_to_num(od.t_delivered[dlv]) // 3600.0).astype(np.int64), 0, n_h - 1)
    ctd = (od.t_delivered[dlv] - od.t_place[dlv]) / 60.0
    on_time = od.t_delivered[dlv] <= od.deadline[dlv] + 1e-9

    def count(h: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(h, weights=w, minlength=n_h)[:n_h].astype(np.float64)

    return {
        "created": count(h_place[created]),
        "cancelled": count(h_place[st == ORDER_CANCELLED]),
        "delivered": count(h_del),
        "delivered_by_place": count(h_place[dlv]),
        "on_time": count(h_place[dlv][on_time]),
        "ctd_sum_min": count(h_place[dlv], ctd),
        "first_hour": np.array([sim.t_start // 3600.0]),
    }


@dataclass
class EpisodeResult:
    policy: str
    scenario: str
    seed: int
    kpis: dict[str, float]
    latency_ms: np.ndarray
    hourly: dict[str, np.ndarray] = field(default_factory=dict)
    bounds: dict[str, Any] | None = None  # the oracle's certified bounds for this scenario and seed

    @property
    def reward(self) -> float:
        return float(self.kpis["platform_margin"])

    def to_record(self) -> dict[str, Any]:
        """Everything of the episode as JSON-able values (a journal line's ``result``; ``from_record`` reads it)."""
        return {
            "policy": self.policy,
            "scenario": self.scenario,
            "seed": int(self.seed),
            "kpis": {k: v.item() if isinstance(v, np.generic) else v for k, v in self.kpis.items()},
            "latency_ms": self.latency_ms.tolist(),
            "hourly": {k: np.asarray(v).tolist() for k, v in self.hourly.items()},
            "bounds": self.bounds,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> EpisodeResult:
        """The episode ``to_record`` wrote (the same numbers: latencies as float32, hourly counts as float64)."""
        return cls(
            str(rec["policy"]),
            str(rec["scenario"]),
            int(rec["seed"]),
            dict(rec["kpis"]),
            np.asarray(rec["latency_ms"], dtype=np.float32),
            {k: np.asarray(v, dtype=np.float64) for k, v in rec["hourly"].items()},
            bounds=rec.get("bounds"),
        )


def record_name(policy_label: str, scenario_label: str, seed: int) -> str:
    """The file ``evaluate --record DIR`` writes for one episode: ``POLICY__SCENARIO__seedN.jsonl.xz`` (characters
    other than letters, digits, ``.``, ``-`` and ``_`` become ``_``)."""
    safe = [re.sub(r"[^A-Za-z0-9._-]", "_", x) for x in (policy_label, scenario_label)]
    return f"{safe[0]}__{safe[1]}__seed{seed}.jsonl.xz"


def episode_task(task: tuple[Any, ...]) -> EpisodeResult:
    """Worker entry point: one (policy label, policy spec, scenario label, scenario spec, seed[, record folder]);
    with a record folder the day is also recorded there (``envs.frames.Recorder``, ``record_name``)."""
    p_label, p_spec, s_label, s_spec, seed = task[:5]
    record_dir = task[5] if len(task) > 5 else None
    sim = cached_simulator(s_spec)
    policy = cached_policy(p_spec)
    if record_dir:
        from gigdispatch.envs.frames import Recorder

        rec = Recorder(Path(record_dir) / record_name(p_label, s_label, seed), policy.name, seed)
        try:
            kpis, lat = run_episode(sim, policy, seed, after_step=rec)
        except BaseException:
            rec.abort()
            raise
        rec.close()
    else:
        kpis, lat = run_episode(sim, policy, seed)
    bounds = getattr(policy, "bounds", None)
    return EpisodeResult(p_label, s_label, seed, kpis, lat.astype(np.float32), hourly_counts(sim), bounds=bounds)


def attach_bounds(results: list[EpisodeResult]) -> dict[tuple[str, int], dict[str, Any]]:
    """Where the oracle ran, add to every run on the same scenario and seed the certified bounds that
    hold for that run (``bound_profit_upper`` >= its reward, ``bound_ctd_lower`` <= its click-to-door)."""
    from gigdispatch.agents.oracle import bounds_for_run

    by_seed = {(r.scenario, r.seed): r.bounds for r in results if r.bounds}
    for r in results:
        b = by_seed.get((r.scenario, r.seed))
        if b is not None:
            run = bounds_for_run(b, r.kpis)
            r.kpis["bound_profit_upper"] = run["profit_upper"]
            r.kpis["bound_ctd_lower"] = run["click_to_door_lower"]
    return by_seed


# ---------------------------------------------------------------------------------- running tasks
BACKENDS = ("process", "ray")
RAY_INSTALL = "pip install 'ray==2.60.0' (or the 'rllib' extra: pip install 'gigdispatch[rllib]')"


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"--workers: must be a whole number >= 1, got {workers!r}")
    return workers


def check_backend(backend: str, address: str | None) -> str:
    """``backend`` when it is one of ``BACKENDS`` and ``address`` goes with it (only Ray joins a cluster)."""
    if backend not in BACKENDS:
        raise InputError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if address is not None and backend != "ray":
        raise InputError("--address: a Ray cluster address is only used with --backend ray")
    return backend


def check_ray_backend(backend: str, address: str | None) -> str:
    """``check_backend``, and for Ray that it is installed and a cluster answers at ``address``: a command fails on
    these before it writes anything."""
    check_backend(backend, address)
    if backend == "ray":
        import_ray()
        if address is not None:
            probe_address(address)
    return backend


def import_ray(what: str = "--backend ray") -> Any:
    """``ray``, imported here only (the process pool needs no Ray); one line naming ``what`` when it is missing."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise InputError(f"{what} needs Ray: {exc.name} is not installed; {RAY_INSTALL}") from None
    return ray


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """``InputError`` naming ``--address`` unless something accepts a connection at ``HOST:PORT`` (or
    ``ray://HOST:PORT``): ``ray.init`` would otherwise wait minutes on an address where no cluster runs.
    ``auto`` (Ray's own discovery: ``RAY_ADDRESS``, or the cluster ``ray start`` began here) is not probed."""
    if address == "auto":
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(
            f"--address {address}: no Ray cluster answers there ({reason}); start one with 'ray start --head' "
            "or give its head node's HOST:PORT"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the duration of the block: the cluster at ``address`` (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``),
    or without one a private Ray started on this machine with ``num_cpus`` CPUs (default: all), shut down after.
    A Ray the caller has already initialised is used as it is and left running. A missing Ray, an address where no
    cluster answers or one Ray refuses is one ``InputError`` line naming ``--address`` (or ``--backend ray``)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address is not None:
        probe_address(address)
    where: dict[str, Any] = {"address": address} if address else {"address": "local", "num_cpus": num_cpus}
    try:
        ray.init(**where, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:
        what = f"--address {address}: could not join the Ray cluster" if address else "--backend ray: could not start"
        raise InputError(f"{what} ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _on_node(fn: Callable[[Any], Any], task: Any) -> tuple[Any, str]:
    """One Ray task: ``fn(task)`` and the id of the Ray node that ran it."""
    import ray

    return fn(task), ray.get_runtime_context().get_node_id()


def progress_bar(enabled: bool | None, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (``enabled=None``: only when stderr is a terminal)."""
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


OnResult = Callable[[int, Any, "str | None"], None]


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int | None,
    progress: bool | None,
    desc: str,
    unit: str,
    backend: str = "process",
    address: str | None = None,
    on_result: OnResult | None = None,
    info: dict[str, Any] | None = None,
) -> list[Any]:
    """``[fn(t) for t in tasks]``, results in task order.

    ``backend="process"``: over ``workers`` processes (in this process when 1). ``backend="ray"``: as Ray tasks
    (``ray.remote`` calls of ``fn``, one CPU each) on the cluster at ``address`` or a private local Ray (``workers``
    CPUs), at most ``workers`` at once (default: every CPU of the cluster), collected with ``ray.wait`` as they
    finish; a task whose node is lost is run again elsewhere (Ray's retries: the tasks are deterministic).
    ``on_result(index, result, node)`` is called in this process for each task as it finishes (``node``: the Ray
    node id, None in the process pool); a worker's error is raised here as the worker raised it. ``info`` (if
    given) gets ``backend``, ``workers`` (tasks at once) and ``nodes`` (Ray node id -> tasks it ran).
    """
    check_backend(backend, address)
    results: list[Any] = [None] * len(tasks)
    info = info if info is not None else {}
    info.update(backend=backend, nodes={})
    bar = progress_bar(progress, len(tasks), desc, unit)

    def finished(i: int, res: Any, node: str | None) -> None:
        results[i] = res
        if node is not None:
            info["nodes"][node] = info["nodes"].get(node, 0) + 1
        if on_result is not None:
            on_result(i, res, node)
        bar.update(1)

    try:
        if not tasks:
            info["workers"] = 0
        elif backend == "ray":
            _run_ray(fn, tasks, workers, address, finished, info)
        else:
            _run_processes(fn, tasks, check_workers(workers), finished, info)
        return results
    finally:
        bar.close()


def _run_processes(
    fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, finished: OnResult, info: dict[str, Any]
) -> None:
    info["workers"] = min(workers, len(tasks))
    if workers <= 1 or len(tasks) <= 1:
        try:
            for i, t in enumerate(tasks):
                finished(i, fn(t), None)
        finally:
            clear_caches()
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        pending: dict[Future[Any], int] = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    finished(pending.pop(f), f.result(), None)  # f.result() re-raises a worker's error here
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _run_ray(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int | None,
    address: str | None,
    finished: OnResult,
    info: dict[str, Any],
) -> None:
    with ray_session(address, num_cpus=workers) as ray:
        remote = ray.remote(num_cpus=1)(_on_node)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(1, min(workers or cpus, len(tasks)))  # tasks in flight: enough to keep every CPU busy
        info["workers"] = window
        pending: dict[Any, int] = {}
        nxt = 0
        try:
            while nxt < len(tasks) or pending:
                while nxt < len(tasks) and len(pending) < window:
                    pending[remote.remote(fn, tasks[nxt])] = nxt
                    nxt += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        res, node = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        raise exc.cause from exc  # the worker's own error (an InputError stays one line)
                    finished(i, res, node)
        except BaseException:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise


def add_backend_flags(p: argparse.ArgumentParser, unit: str) -> None:
    """``--backend process|ray`` and ``--address`` (``args.backend``, ``args.address``)."""
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="process",
        help=f"process: {unit}s in worker processes on this machine; ray: as Ray tasks, on a private Ray on this "
        "machine or on the cluster at --address (needs Ray installed) [default: %(default)s]",
    )
    p.add_argument(
        "--address",
        metavar="RAY_ADDRESS",
        help="with --backend ray: the Ray cluster to run on (HOST:PORT of its head node, ray://HOST:10001, or auto); "
        "--workers then caps the tasks at once [default: every CPU of the cluster]",
    )


def portable_spec(spec: str, registry: Iterable[str] = ()) -> str:
    """``spec`` as an absolute path when it names a file or folder here (and no name of ``registry``), so that a
    worker on a Ray node, whose working folder is not this one, opens the same file; other specs as they are."""
    if spec in registry or not Path(spec).exists():
        return spec
    return str(Path(spec).resolve())


def run_episodes(
    scenarios: Sequence[tuple[str, str]],
    policies: Sequence[tuple[str, str]],
    seeds: Sequence[int],
    workers: int | None,
    progress: bool | None = None,
    record_dir: str | None = None,
    backend: str = "process",
    address: str | None = None,
    journal: str | os.PathLike[str] | None = None,
    fresh: bool = False,
    info: dict[str, Any] | None = None,
) -> tuple[list[EpisodeResult], int]:
    """Every (label, spec) policy on every (label, spec) scenario on the same ``seeds``; the results (with the
    oracle's bounds attached, where it ran) and the number of tasks. ``record_dir``: record every day there.
    ``backend``, ``address``, ``workers``: where the episodes run (``run_tasks``).

    ``journal``: a file (``training.journal``) that gets every episode as it finishes; the episodes of this sweep
    already in it (a killed run's) are taken from it, not run again (``fresh``: empty it first). ``info`` (if given)
    gets ``run_tasks``'s and ``taken`` (episodes from the journal), ``ran``, and ``notes`` (lines saying so).

    Scenario by scenario, seed by seed: consecutive tasks share a scenario, which each worker has loaded once.
    """
    from gigdispatch.agents.registry import POLICIES
    from gigdispatch.training.journal import TaskJournal, code_stamp

    tail = (str(Path(record_dir).resolve()),) if record_dir else ()
    pols = [(pl, portable_spec(ps, POLICIES)) for pl, ps in policies]
    scens = [(sl, portable_spec(ss)) for sl, ss in scenarios]
    tasks = [(pl, ps, sl, ss, seed, *tail) for sl, ss in scens for seed in seeds for pl, ps in pols]
    info = info if info is not None else {}
    found: list[EpisodeResult | None] = [None] * len(tasks)
    book = TaskJournal(journal, fresh=fresh, stamp=code_stamp()) if journal is not None else None
    try:
        if book is not None:
            for i, (rec, _node) in book.take(tasks).items():
                found[i] = EpisodeResult.from_record(rec)
        todo = [i for i, r in enumerate(found) if r is None]

        def keep(j: int, res: EpisodeResult, node: str | None) -> None:
            if book is not None:
                book.append(tasks[todo[j]], res.to_record(), node)

        ran = run_tasks(
            episode_task,
            [tasks[i] for i in todo],
            workers,
            progress,
            "evaluate",
            "episode",
            backend=backend,
            address=address,
            on_result=keep,
            info=info,
        )
    finally:
        if book is not None:
            book.close()
    for i, res in zip(todo, ran, strict=True):
        found[i] = res
    results = [r for r in found if r is not None]
    info.update(taken=len(tasks) - len(todo), ran=len(todo))
    info["notes"] = book.notes(len(tasks) - len(todo), len(tasks), "episode") if book is not None else []
    attach_bounds(results)
    return results, len(tasks)
