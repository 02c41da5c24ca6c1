"""``algo: cem``: the cross-entropy method (policy search) for the parameters of a policy family.

``cem.policy`` picks the family: ``scored-match`` (``agents.scored``, dispatch; the default) or
``reposition`` (``agents.reposition``, nearest dispatch plus learned re-spreading of idle drivers);
``cem.objective`` the day's KPI to maximise: ``platform_margin`` (the default), ``on_time_rate``, or
``eph_minus_click_to_door`` (driver earnings per online hour in EUR minus mean click-to-door in minutes:
repositioning judged for drivers and customers at once; ``COMBINED_OBJECTIVES``).
The text below describes the dispatch family; the repositioning one is searched the same way.

Dispatch is a matching problem each epoch; the literature's policies that work at scale score
candidate pairs (with learned state values) and let an assignment solver pick the matching. Here the
score's weights, the hold rule and the payout lever (``agents.scored``) are learned directly on the
objective, the day's platform margin, by the cross-entropy method (a derivative-free policy-search
algorithm; Rubinstein 1999, used for RL policies since Szita & Lorincz 2006):

1. keep a Gaussian over the parameter vector ``x`` (mean 0 = the value-hungarian weights with the auction
   lever; per-coordinate std ``cem.sigma``); ``x`` maps to the parameters through each one's kind
   (log scale for non-negative weights, linear in euros for ``hold_below``, logistic for the threshold,
   rounded for ``max_level``);
2. each iteration draw ``cem.population`` vectors, run every one on the same ``cem.seeds_per_iteration``
   training days (common random numbers: the days are drawn from ``train_seeds``, all >= 1000), and score
   it by its mean margin;
3. refit the Gaussian to the ``cem.elite`` best (plus ``cem.extra_noise``, decaying, against early
   collapse), and evaluate the new mean on the held-out ``eval.seeds`` (>= 1000, disjoint from training);
4. write ``policy.json`` with the parameters that scored best on the held-out days so far (the starting
   point included: a search that finds nothing better ships its start), and the search
   state (``cem_state.json``) after every iteration, both atomically: ``--resume`` continues from the
   last complete iteration and reproduces the uninterrupted run (the draws come from a generator seeded
   by ``seed`` and the iteration number).

The rollouts run in ``cem.workers`` processes, or with ``cem.backend: ray`` as Ray tasks on every CPU of a private
Ray or of the cluster at ``gigdispatch train --address`` (``runner.run_tasks``; the same days give the same
scores, so the search is the same on either backend). TensorBoard: ``cem/population_mean``, ``cem/elite_mean``,
``cem/sigma_mean``, ``eval/profit_mean`` and the ``dispatch/*`` KPIs of the held-out days.

The search needs neither torch nor stable-baselines3: without the ``rl`` extra (torch, TensorBoard) it runs
the same and writes no ``tb/`` (one line says so; the per-iteration record is in ``cem_state.json``).
``runlog`` (``training.runs.RunLog``) gets one line per evaluation of the start and per iteration.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.envs.core.errors import InputError
from gigdispatch.training.config import TrainConfig
from gigdispatch.training.io import atomic_write_json, atomic_write_text
from gigdispatch.training.runner import portable_spec, ray_session, run_tasks
from gigdispatch.training.runs import (
    CEM_STATE,
    COMMAND,
    CONFIG,
    GIT_REVISION,
    KPI_TAGS,
    POLICY,
    TB,
    RunLog,
    number,
    read_record,
)


def family(name: str) -> tuple[str, dict[str, tuple[float, str]], list[str]]:
    """``(format, PARAMS, NAMES)`` of a searchable policy family (``cem.policy``)."""
    if name == "scored-match":
        from gigdispatch.agents.scored import FORMAT, PARAMS

        return FORMAT, PARAMS, [*PARAMS, "max_level"]
    if name == "reposition":
        from gigdispatch.agents.reposition import FORMAT as RFORMAT
        from gigdispatch.agents.reposition import PARAMS as RPARAMS

        return RFORMAT, RPARAMS, list(RPARAMS)
    raise InputError(f"cem.policy: unknown policy family {name!r} (scored-match or reposition)")


NAMES = family("scored-match")[2]  # the scored-match search coordinates (kept for callers and tests)


def to_params(x: np.ndarray, policy: str = "scored-match") -> dict[str, Any]:
    """The parameters of a policy family for a search vector (one coordinate per name of ``family(policy)``)."""
    _, params, names = family(policy)
    out: dict[str, Any] = {}
    for v, name in zip(x.tolist(), names, strict=True):
        if name == "max_level":
            out[name] = int(np.clip(np.rint(1.0 + v), 0, 3))
            continue
        default, kind = params[name]
        if kind == "pos":
            out[name] = float(default * np.exp(np.clip(v, -6.0, 6.0)))
        elif kind == "switch":
            out[name] = 1.0 if v > -1.0 else 0.0  # on at the start (0); switched off below -1 sigma-ish
        elif kind == "prob":
            z = np.log(default / (1.0 - default)) + v
            out[name] = float(1.0 / (1.0 + np.exp(-z)))
        else:  # real, in euros
            out[name] = float(default + 5.0 * v)
    return out


_SCEN: dict[str, Any] = {}


def _make(policy: str, params: dict[str, Any], values: str | None) -> Any:
    if policy == "reposition":
        from gigdispatch.agents.reposition import CoverageRepositionPolicy

        return CoverageRepositionPolicy(params)
    from gigdispatch.agents.scored import ScoredMatchPolicy

    return ScoredMatchPolicy(params, values_path=values)


def _margin(task: tuple[str, str, dict[str, Any], int, str | None]) -> dict[str, float]:
    """One simulated day of a policy of the family with these parameters: its KPIs (a worker process
    caches the scenario)."""
    from gigdispatch.envs import Simulator, load_scenario

    scenario, policy, params, seed, values = task
    if scenario not in _SCEN:
        _SCEN[scenario] = load_scenario(scenario)
    sim = Simulator(_SCEN[scenario])
    kpis = sim.run(_make(policy, params, values), seed=seed)
    return {k: float(v) for k, v in kpis.items() if isinstance(v, int | float)}


class _RayPool:
    """``Pool.map`` over Ray tasks (``runner.run_tasks`` with ``backend="ray"``, inside the search's Ray session)."""

    def map(self, fn: Any, tasks: list[Any]) -> list[Any]:
        return run_tasks(fn, tasks, None, False, "cem", "day", backend="ray")


def _evaluate(
    pool: Any,
    scenario: str,
    params_list: list[dict[str, Any]],
    seeds: list[int],
    values: str | None,
    policy: str = "scored-match",
) -> list[list[dict]]:
    tasks = [(scenario, policy, p, s, values) for p in params_list for s in seeds]
    res = pool.map(_margin, tasks) if pool is not None else [_margin(t) for t in tasks]
    n = len(seeds)
    return [res[i * n : (i + 1) * n] for i in range(len(params_list))]


# objectives that combine KPIs of a day: name -> {kpi: weight}
COMBINED_OBJECTIVES: dict[str, dict[str, float]] = {
    # repositioning judged on both sides: drivers' earnings per online hour (EUR/h) and customers' wait (min)
    "eph_minus_click_to_door": {"driver_earnings_per_hour": 1.0, "click_to_door_mean_min": -1.0},
}


def objective_value(row: dict, key: str) -> float:
    """The day's value of an objective: a KPI, or a ``COMBINED_OBJECTIVES`` weighted sum (nan if a term is)."""
    if key in COMBINED_OBJECTIVES:
        return float(sum(w * float(row.get(k, np.nan)) for k, w in COMBINED_OBJECTIVES[key].items()))
    return float(row.get(key, np.nan))


def _mean(rows: list[dict], key: str) -> float:
    vals = [v for v in (objective_value(r, key) for r in rows) if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


class _NoWriter:
    """Stands in for TensorBoard's ``SummaryWriter`` when torch / TensorBoard are not installed."""

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _writer(run_dir: Path, runlog: RunLog) -> Any:
    """TensorBoard's writer into ``run_dir/tb``, or ``_NoWriter`` (and one line) without torch / TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch and tensorboard come with the 'rl' extra; the search does not need them
        missing = getattr(exc, "name", None) or "tensorboard"
        runlog.say(
            f"no TensorBoard logs ({missing} is not installed; pip install 'gigdispatch[rl]' for tb/): "
            f"every iteration is recorded in {CEM_STATE}"
        )
        return _NoWriter()
    return SummaryWriter(str(run_dir / TB))


def train_cem(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool = False,
    runlog: RunLog | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) the search; returns the final state. Writes ``policy.json`` and ``cem_state.json``.

    ``runlog`` reports the start's evaluation and every iteration (default: silent, or a bar if ``progress``).
    ``address``: with ``cem.backend: ray``, the Ray cluster the rollouts run on (default: a private local Ray)."""
    import multiprocessing as mp

    runlog = runlog if runlog is not None else RunLog(None, bar=progress)
    c = cfg.cem
    _, _, names = family(c.policy)
    n = len(names)
    obj = c.objective
    state_file = run_dir / CEM_STATE
    if resume and state_file.is_file():
        st = json.loads(state_file.read_text())
    else:
        st = {
            "iteration": 0,
            "mean": [0.0] * n,
            "std": [c.sigma] * n,
            "best_eval": None,
            "best_params": None,
            "history": [],
        }
    scenario = portable_spec(str(cfg.scenario))  # a file: the same one on every Ray node
    values = portable_spec(c.values) if c.values else c.values
    train_seeds = list(cfg.train_seeds)
    eval_seeds = list(cfg.eval.seeds)[: cfg.eval.episodes]
    session = contextlib.ExitStack()
    pool: Any = None
    if c.backend == "ray":
        session.enter_context(ray_session(address))  # a bad --address fails here, before the first rollout
        pool = _RayPool()
    elif c.workers > 1:
        pool = mp.get_context("spawn" if os.name == "nt" else "fork").Pool(c.workers)
    writer = _writer(run_dir, runlog)
    try:
        if st["best_eval"] is None and st["iteration"] == 0:  # the starting point, on the held-out days
            start = to_params(np.zeros(n), c.policy)
            rows = _evaluate(pool, scenario, [start], eval_seeds, values, c.policy)[0]
            st["start_eval"] = _mean(rows, obj)
            st["best_eval"], st["best_params"] = st["start_eval"], start  # the start is a candidate too
            runlog.step(0, f"start: held-out {obj} {number(st['start_eval'])} ({len(eval_seeds)} days)")
        runlog.start(c.iterations, st["iteration"], "iter", cfg.name)
        while st["iteration"] < c.iterations:
            it = st["iteration"]
            rng = np.random.default_rng([cfg.seed, it])
            mean, std = np.asarray(st["mean"]), np.asarray(st["std"])
            xs = mean + std * rng.standard_normal((c.population, n))
            xs[0] = mean  # the current mean is always a candidate
            seeds = [
                int(s)
                for s in rng.choice(train_seeds, size=min(c.seeds_per_iteration, len(train_seeds)), replace=False)
            ]
            cands = [to_params(x, c.policy) for x in xs]
            scores = np.array([_mean(r, obj) for r in _evaluate(pool, scenario, cands, seeds, values, c.policy)])
            elite = xs[np.argsort(-scores)[: c.elite]]
            extra = c.extra_noise * max(0.0, 1.0 - it / max(1, c.iterations - 1))
            st["mean"] = elite.mean(axis=0).tolist()
            st["std"] = (elite.std(axis=0) + extra).tolist()
            params = to_params(np.asarray(st["mean"]), c.policy)
            rows = _evaluate(pool, scenario, [params], eval_seeds, values, c.policy)[0]
            ev = _mean(rows, obj)
            if st["best_eval"] is None or ev > st["best_eval"]:
                st["best_eval"], st["best_params"] = ev, params
            st["iteration"] = it + 1
            rec = {
                "iteration": it + 1,
                "train_seeds": seeds,
                "population_mean": float(np.mean(scores)),
                "elite_mean": float(np.sort(scores)[-c.elite :].mean()),
                "best_candidate": float(scores.max()),
                "eval_objective_mean": ev,
                "eval_profit_mean": _mean(rows, "platform_margin"),
                "params": params,
            }
            st["history"].append(rec)
            step = st["iteration"]
            writer.add_scalar("cem/population_mean", rec["population_mean"], step)
            writer.add_scalar("cem/elite_mean", rec["elite_mean"], step)
            writer.add_scalar("cem/sigma_mean", float(np.mean(st["std"])), step)
            writer.add_scalar("eval/profit_mean", rec["eval_profit_mean"], step)
            writer.add_scalar(f"eval/{obj}", ev, step)
            for key, tag in KPI_TAGS.items():
                v = _mean(rows, key)
                if np.isfinite(v):
                    writer.add_scalar(tag, v, step)
            writer.flush()
            _write_policy(run_dir, cfg, st)
            atomic_write_json(state_file, st)
            runlog.step(
                step,
                f"iteration {step}/{c.iterations}: training days {obj} mean {number(rec['population_mean'])}, "
                f"elite {number(rec['elite_mean'])}; held-out {number(ev)} (best {number(st['best_eval'])})",
            )
    finally:
        runlog.close()
        if pool is not None and not isinstance(pool, _RayPool):
            pool.close()
            pool.join()
        session.close()
        writer.close()
    return st  # policy.json was written with every iteration's state


def _write_policy(run_dir: Path, cfg: TrainConfig, st: dict[str, Any]) -> None:
    fmt, _, names = family(cfg.cem.policy)
    params = st["best_params"] or to_params(np.zeros(len(names)), cfg.cem.policy)
    doc: dict[str, Any] = {
        "format": fmt,
        "params": params,
        "scenario": str(cfg.scenario),
        "trained": {
            "algo": "cem",
            "iterations": st["iteration"],
            "objective": cfg.cem.objective,
            "held_out_objective_mean": st["best_eval"],
            "start_held_out_objective_mean": st.get("start_eval"),
            "eval_seeds": list(cfg.eval.seeds)[: cfg.eval.episodes],
        },
    }
    if cfg.cem.policy == "scored-match":
        doc["values"] = cfg.cem.values
    atomic_write_json(run_dir / POLICY, doc)


def combine(runs: list[Path], out: Path, add: bool = False) -> dict[str, Any]:
    """One shipped policy from several CEM runs (one per scenario): ``out/policy.json`` with each run's
    parameters under ``scenarios`` (by the run's scenario name), the first run's as the fallback
    ``params``, and each run's provenance; each run's ``config.yaml`` is copied as ``config-<scenario>.yaml``.
    ``add``: keep the scenarios of the ``out/policy.json`` already there (and its fallback) and add or
    replace those of ``runs``."""
    import yaml

    from gigdispatch.envs import load_scenario

    if not runs:
        raise InputError("--run: give at least one CEM run folder")
    from gigdispatch.agents.reposition import FORMAT as RFORMAT
    from gigdispatch.agents.scored import FORMAT

    scenarios: dict[str, Any] = {}
    trained: dict[str, Any] = {}
    first = None
    fmt = None
    kept: dict[str, Any] = {}
    if add:
        try:
            kept = json.loads((out / POLICY).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"--add: cannot read {out / POLICY} to add to ({exc})") from None
        if kept.get("format") not in (FORMAT, RFORMAT) or not isinstance(kept.get("scenarios"), dict):
            raise InputError(f"--add: {out / POLICY} is not a combined CEM policy (format and scenarios)")
        fmt, first = kept["format"], kept.get("params")
    for run in runs:
        doc_path = run / POLICY
        if not doc_path.is_file() or not (run / CONFIG).is_file():
            raise InputError(f"--run {run}: not a CEM run folder (needs {POLICY} and {CONFIG})")
        doc = json.loads(doc_path.read_text())
        if doc.get("format") not in (FORMAT, RFORMAT):
            raise InputError(
                f"--run {run}: policy.json has format {doc.get('format')!r}, not {FORMAT!r} or {RFORMAT!r}"
            )
        if fmt is not None and doc["format"] != fmt:
            raise InputError(f"--run {run}: policy.json has format {doc['format']!r}, the first run's is {fmt!r}")
        fmt = doc["format"]
        name = load_scenario(doc["scenario"]).name
        if name in scenarios:
            raise InputError(f"--run {run}: a second run for scenario {name!r}")
        scenarios[name] = doc["params"]
        rev = read_record(run, GIT_REVISION, default="unknown")
        cmd = read_record(run, COMMAND)
        trained[name] = {**doc["trained"], "run": run.name, "command": cmd, "git_revision": rev}
        out.mkdir(parents=True, exist_ok=True)
        cfg = yaml.safe_load((run / CONFIG).read_text())
        atomic_write_text(out / f"config-{name}.yaml", yaml.safe_dump(cfg, sort_keys=False))
        first = first or doc["params"]
    if add:
        scenarios = {**{k: v for k, v in kept["scenarios"].items() if k not in scenarios}, **scenarios}
        trained = {**{k: v for k, v in kept.get("trained", {}).items() if k not in trained}, **trained}
    result = {"format": fmt, "params": first, "scenarios": scenarios, "trained": trained}
    if fmt == FORMAT:
        result["values"] = None
    atomic_write_json(out / POLICY, result)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m gigdispatch.training.cem",
        description="Combine CEM runs (gigdispatch train with algo: cem), one per scenario, "
        "into one shipped policy folder (scored-match or reposition).",
    )
    ap.add_argument(
        "--run",
        action="append",
        type=Path,
        required=True,
        metavar="RUN_DIR",
        help="a CEM run folder (repeatable; the first is the fallback)",
    )
    ap.add_argument(
        "--out", type=Path, required=True, metavar="FOLDER", help="the policy folder to write (policy.json + configs)"
    )
    ap.add_argument(
        "--add",
        action="store_true",
        help="keep the scenarios of the policy.json already in --out and add (or replace) those of the runs",
    )
    args = ap.parse_args(argv)
    try:
        res = combine(args.run, args.out, add=args.add)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out / 'policy.json'}: scenarios {', '.join(res['scenarios'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
