"""``python -m gigdispatch.training.mdrp_tune``: tune ``mdrp-rolling`` per instance class as Reyes et al.
(2018) did, and write the tuned ``policy.json``.

The paper ran random parameter configurations on a few instances of each class and kept, per class, the
one with the lowest mean click-to-door among those that left at most 0.5 % of the orders undelivered on
most of them. Here:

* ``--configs N`` random configurations (``--seed`` fixes them) over ``SPACE`` below;
* every configuration runs on every instance matched by ``--match`` (default ``[012]*``: seeds 0-2, the
  tuning instances; seeds 3-4 are kept apart as the check, and seeds 5-9 are never used);
* per class (the instance name without its seed digit), the configuration with the lowest mean
  click-to-door among those with at most ``--max-undelivered`` undelivered on at least
  ``--majority`` of the class's instances; a class with none gets the best configuration overall (the
  lowest mean click-to-door among those within the undelivered limit on average), which is also the
  file's default ``params``.

Every (configuration, instance) result goes to ``OUT/runs.jsonl`` and the tuned file to ``OUT/policy.json``,
both written atomically at the end (a search stopped half-way writes nothing). ``--from-runs RUNS`` selects again
from a recorded search's ``runs.jsonl`` (another ``--max-undelivered`` or ``--majority``) without running it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.agents.mdrp_rolling import FORMAT
from gigdispatch.envs.core.atomic import atomic_write_text
from gigdispatch.envs.core.errors import InputError
from gigdispatch.training.argtypes import add_progress_flags, whole_number
from gigdispatch.training.io import atomic_write_json, ensure_out_dir
from gigdispatch.training.mdrp import _instance_task, find_instances, variant_of
from gigdispatch.training.runner import check_workers, default_workers, run_tasks

# parameter -> the values a random configuration draws from (a list: one of them; (low, high, decimals):
# uniform, rounded)
SPACE: dict[str, Any] = {
    "f_minutes": [1, 2, 3, 5],
    "horizon_minutes": [10, 15, 20, 25, 30],
    "beta": (0.0, 1.0, 2),
    "theta": (0.0, 1.0, 2),
    "gamma": (1.0, 10.0, 1),
    "override_minutes": [15, 20, 25],
    "max_bundle": [2, 3, 4],
    "idle_reposition": [0, 1],
    "urgency_groups": [0, 1],
}
AUDITED = "replay_violations"  # kept too when the replay audit reports it
KEEP = (
    "instance",
    "variant",
    "click_to_door_mean_min",
    "undelivered_rate",
    "cost_per_order",
    "ready_to_pickup_mean_min",
)


def random_configs(n: int, seed: int) -> list[dict[str, float]]:
    """``n`` configurations drawn from ``SPACE`` with ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c: dict[str, float] = {}
        for name, space in SPACE.items():
            if isinstance(space, tuple):
                c[name] = float(np.round(rng.uniform(space[0], space[1]), space[2]))
            else:
                c[name] = float(rng.choice(space))
        out.append(c)
    return out


def select(rows: list[dict[str, Any]], max_undelivered: float, majority: int) -> dict[str, Any]:
    """The tuned ``policy.json`` document from the result rows (``cid``, ``params`` and ``KEEP`` fields)."""
    per_cid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    per_class: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per_cid[r["cid"]].append(r)
        per_class[r["variant"]][r["cid"]].append(r)
    params = {c: rs[0]["params"] for c, rs in per_cid.items()}

    def ctd(rs: list[dict[str, Any]]) -> float:
        return float(np.mean([r["click_to_door_mean_min"] for r in rs]))

    ok = {c: ctd(rs) for c, rs in per_cid.items() if np.mean([r["undelivered_rate"] for r in rs]) <= max_undelivered}
    if not ok:
        raise InputError(f"no configuration left at most {100 * max_undelivered:g} % undelivered on average")
    best = min(ok, key=lambda c: (ok[c], c))
    classes: dict[str, dict[str, float]] = {}
    for v, cfgs in sorted(per_class.items()):
        good = {
            c: ctd(rs)
            for c, rs in cfgs.items()
            if sum(r["undelivered_rate"] <= max_undelivered for r in rs) >= min(majority, len(rs))
        }
        classes[v] = params[min(good, key=lambda c: (good[c], c))] if good else params[best]
    return {"format": FORMAT, "params": params[best], "scenarios": classes}


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a recorded search (``runs.jsonl``), checked for the fields ``select`` reads; a bad file is an
    ``InputError`` naming the line and the field."""
    f = Path(path)
    try:
        lines = f.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--from-runs {f}: cannot read it ({exc.__class__.__name__}: {exc})") from exc
    rows: list[dict[str, Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{f}: line {i}: not JSON ({exc.msg})") from exc
        if not isinstance(r, dict):
            raise InputError(f"{f}: line {i}: expected an object, got {type(r).__name__}")
        for key, kind in (("cid", int), ("params", dict), ("variant", str)):
            if not isinstance(r.get(key), kind) or isinstance(r.get(key), bool):
                raise InputError(f"{f}: line {i}: field {key!r} missing or not {kind.__name__}")
        for key in ("click_to_door_mean_min", "undelivered_rate"):
            v = r.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
                raise InputError(f"{f}: line {i}: field {key!r} missing or not a finite number")
        rows.append(r)
    if not rows:
        raise InputError(f"{f}: no runs in it")
    return rows


def _task(task: tuple[str, str, int, dict[str, float]]) -> dict[str, Any]:
    folder, spec, cid, cfg = task
    row = _instance_task((folder, [("p", spec)], [0]))[0]
    return {"cid": cid, "params": cfg, **{k: row[k] for k in (*KEEP, AUDITED) if k in row}}


def _search(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Run every random configuration on every instance: the result rows, and a line saying what ran."""
    folders = find_instances(args.instances, args.match)
    workers = check_workers(args.workers)
    configs = random_configs(args.configs, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="mdrp-tune-"))
    tasks = []
    for cid, cfg in enumerate(configs):
        spec = tmp / f"c{cid}"
        spec.mkdir()
        (spec / "policy.json").write_text(json.dumps({"format": FORMAT, "params": cfg}))
        tasks += [(str(f), str(spec), cid, cfg) for f in folders]
    rows: list[dict[str, Any]] = run_tasks(_task, tasks, workers, args.progress, "mdrp-tune", "run")
    used = sorted({variant_of(Path(f).name) for f in folders})
    return rows, f"{len(configs)} configurations x {len(folders)} instances ({len(used)} classes)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gigdispatch.training.mdrp_tune",
        description="Tune mdrp-rolling per MDRP instance class (random configurations, Reyes et al.'s rule) "
        "and write OUT/policy.json and OUT/runs.jsonl.",
        epilog="Example: python -m gigdispatch.training.mdrp_tune --instances ../shared/data/mdrplib/public_instances "
        "--configs 32 --out checkpoints/mdrp",
    )
    ap.add_argument("--instances", help="a folder of MDRP instance folders (not with --from-runs)")
    ap.add_argument(
        "--from-runs",
        metavar="RUNS",
        help="select from this recorded search (a runs.jsonl) instead of running one; --instances, --match, "
        "--configs and --seed are then not used",
    )
    ap.add_argument("--match", default="[012]*", help="instances to tune on (glob) [default: seeds 0-2, '[012]*']")
    ap.add_argument("--configs", type=whole_number(1), default=32, help="random configurations [default: 32]")
    ap.add_argument("--seed", type=whole_number(0), default=1, help="seed of the configurations [default: 1]")
    ap.add_argument("--max-undelivered", type=float, default=0.005, help="undelivered share allowed [default: 0.005]")
    ap.add_argument("--majority", type=whole_number(1), default=2, help="instances of a class within it [default: 2]")
    ap.add_argument("--workers", type=int, default=None, help=f"worker processes [default: {default_workers()}]")
    ap.add_argument("--out", required=True, help="output folder (policy.json, runs.jsonl)")
    add_progress_flags(ap)
    args = ap.parse_args(argv)
    if (args.instances is None) == (args.from_runs is None):
        print("error: give --instances (run a search) or --from-runs (select from a recorded one)", file=sys.stderr)
        return 2
    try:
        out = ensure_out_dir(args.out)
        if args.from_runs is not None:
            rows = read_runs(args.from_runs)
            said = f"selected from {len(rows)} runs of {args.from_runs}"
        else:
            rows, said = _search(args)
        doc = select(rows, args.max_undelivered, args.majority)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(out / "runs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(out / "policy.json", doc)
    print(f"{said}; wrote {out / 'policy.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
