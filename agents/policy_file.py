"""``policy.json``: the small parameter files of the policy-search families (``agents.scored``,
``agents.reposition``), read and checked in one place. Every error names the file and the field."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

# a parameter's kind: "pos" >= 0, "prob" and "switch" in [0, 1], "real" any finite number
Spec = dict[str, tuple[float, str]]


def check_numbers(
    params: dict[str, Any], spec: Spec, where: str, error: type[ValueError], also_known: tuple[str, ...] = ()
) -> dict[str, float]:
    """``spec``'s parameters from ``params`` (defaults for missing ones) as floats; an unknown name (other
    than ``also_known``), a non-number or a value outside its kind's range raises ``error`` naming the field."""
    unknown = sorted(set(params) - set(spec) - set(also_known))
    if unknown:
        raise error(f"{where}.{unknown[0]}: unknown parameter (known: {', '.join([*spec, *also_known])})")
    out: dict[str, float] = {}
    for name, (default, kind) in spec.items():
        v = params.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise error(f"{where}.{name}: must be a finite number, got {v!r}")
        if kind == "pos" and v < 0:
            raise error(f"{where}.{name}: must be >= 0, got {v!r}")
        if kind in ("prob", "switch") and not 0.0 <= v <= 1.0:
            raise error(f"{where}.{name}: must be in [0, 1], got {v!r}")
        out[name] = float(v)
    return out


def read_policy_json(
    path: str | os.PathLike, fmt: str, error: type[ValueError], what: str
) -> tuple[Path, dict[str, Any]]:
    """``(file, document)`` of ``policy.json`` (or the one inside the folder ``path``) in format ``fmt``:
    it must hold a ``params`` mapping and, optionally, ``scenarios`` mapping names to such mappings.
    ``what`` says what the file should be, for the missing-file message."""
    f = Path(path)
    if f.is_dir():
        f = f / "policy.json"
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise error(f"{str(f)!r}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{str(f)!r}: not a readable JSON policy file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        got = doc.get("format") if isinstance(doc, dict) else doc
        raise error(f"{str(f)!r}: format must be {fmt!r}, got {got!r}")
    if not isinstance(doc.get("params"), dict):
        raise error(f"{str(f)!r}: params: missing or not a mapping")
    scen = doc.setdefault("scenarios", {})
    if not isinstance(scen, dict):
        raise error(f"{str(f)!r}: scenarios: must map scenario names to params")
    for name, ps in scen.items():
        if not isinstance(ps, dict):
            raise error(f"{str(f)!r}: scenarios.{name}: must be a mapping of params")
    return f, doc
