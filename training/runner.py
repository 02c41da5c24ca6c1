"""Playing policies on seeds: episodes, their KPIs and decision latencies, over worker processes.

One episode is one (policy, scenario, seed). Every policy plays the same seeds of a scenario, so a seed
is the same day for all of them (common random numbers: the comparisons of ``training.report`` are
paired). Episodes run in worker processes (``concurrent.futures.ProcessPoolExecutor``); each worker
loads a scenario once and reuses its ``Simulator`` (and each policy object, reset at the start of every
episode as the ``Policy`` contract requires) for all the episodes it is given. The outcome of an
episode depends on its seed only, never on the worker that ran it or on the number of workers.

Decision latency is the wall time of each ``policy.act`` call.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
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


def episode_task(task: tuple[str, str, str, str, int]) -> EpisodeResult:
    """Worker entry point: one (policy label, policy spec, scenario label, scenario spec, seed)."""
    p_label, p_spec, s_label, s_spec, seed = task
    sim = cached_simulator(s_spec)
    policy = cached_policy(p_spec)
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
def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"--workers: must be a whole number >= 1, got {workers!r}")
    return workers


def progress_bar(enabled: bool | None, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (``enabled=None``: only when stderr is a terminal)."""
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, leave=False, dynamic_ncols=True)


def run_tasks(
    fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, progress: bool | None, desc: str, unit: str
) -> list[Any]:
    """``[fn(t) for t in tasks]`` over ``workers`` processes (in this process when 1), results in task order."""
    results: list[Any] = [None] * len(tasks)
    bar = progress_bar(progress, len(tasks), desc, unit)
    try:
        if workers <= 1 or len(tasks) <= 1:
            try:
                for i, t in enumerate(tasks):
                    results[i] = fn(t)
                    bar.update(1)
            finally:
                clear_caches()
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
            pending: dict[Future[Any], int] = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        results[pending.pop(f)] = f.result()  # re-raises a worker's error here
                        bar.update(1)
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        return results
    finally:
        bar.close()


def run_episodes(
    scenarios: Sequence[tuple[str, str]],
    policies: Sequence[tuple[str, str]],
    seeds: Sequence[int],
    workers: int,
    progress: bool | None = None,
) -> tuple[list[EpisodeResult], int]:
    """Every (label, spec) policy on every (label, spec) scenario on the same ``seeds``; the results (with the
    oracle's bounds attached, where it ran) and the number of tasks.

    Scenario by scenario, seed by seed: consecutive tasks share a scenario, which each worker has loaded once.
    """
    tasks = [(pl, ps, sl, ss, seed) for sl, ss in scenarios for seed in seeds for pl, ps in policies]
    results: list[EpisodeResult] = run_tasks(episode_task, tasks, workers, progress, "evaluate", "episode")
    attach_bounds(results)
    return results, len(tasks)
