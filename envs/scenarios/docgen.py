"""Write docs/scenarios.md from the scenario schema:
``python -m gigdispatch.envs.scenarios.docgen > docs/scenarios.md``."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel

from gigdispatch.envs.core.config import SIZE_LIMITS, GridScenario, check_range

HEADER = """# Scenario fields

A scenario is a YAML mapping; every field has a default, so a file names only what it changes.
Unknown fields are rejected, and every error names the field and the reason. Times of day are
`"HH:MM"` (or seconds since midnight). A `(low, high)` range needs low <= high; counts and
durations cannot be negative. Built-in scenarios are in `configs/scenarios/`.

An empty file (or one of only comments) is refused, naming the file: write the fields to change, or
`{}` for a day of all the defaults, which is the built-in `default` without its name and description.

This page is generated from `envs/core/config.py` by `python -m gigdispatch.envs.scenarios.docgen`
(a test checks that it is current).
"""

LIMITS = """## Size limits

A day's arrays are allocated whole when it starts, so the counts that size them have an upper bound: what
one simulator process holds comfortably in memory, well above the built-in `city-1000` (26,000 requested
and about 21,000 converted orders a day, 1,000 drivers, 40 hotspots, one incident an hour). A value above
its limit is refused, naming the field. Measured at reset, an order takes about 260 bytes (its arrays
and ledger room) and a driver about 360, so a day at both limits starts in about a third of a gigabyte;
how long it runs depends on the policy.
"""


def _default(v: Any) -> str:
    if type(v).__name__ == "PydanticUndefinedType":
        return "(required)"
    if isinstance(v, BaseModel):
        return "(section)"
    if isinstance(v, tuple | list) and v and isinstance(v[0], BaseModel):
        return json.dumps([x.model_dump() for x in v])
    if isinstance(v, dict):
        return json.dumps({k: (x.model_dump() if isinstance(x, BaseModel) else x) for k, x in v.items()})
    return json.dumps(v) if not isinstance(v, float) or v == v else "nan"


def _walk(model: type[BaseModel], prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for name, f in model.model_fields.items():
        ann = f.annotation
        path = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            _walk(ann, path + ".", rows)
            continue
        t = (
            str(ann)
            .replace("typing.", "")
            .replace("<class '", "")
            .replace("'>", "")
            .replace("gigdispatch.envs.core.config.", "")
        )
        t = re.sub(r"Annotated\[(\w+), FieldInfo\(.*?\]\)\]", r"\1", t)
        if any(getattr(m, "func", None) is check_range for m in f.metadata):
            t += " (low, high)"
        rows.append((path, t, _default(f.default)))


def render() -> str:
    rows: list[tuple[str, str, str]] = []
    _walk(GridScenario, "", rows)
    lines = [HEADER, LIMITS, "| field | limit | what |", "|---|---|---|"]
    lines += [f"| {f'`{f}`' if '.' in f else f} | {limit} | {what} |" for f, limit, what in SIZE_LIMITS]
    lines += ["", "## Fields", "", "| field | type | default |", "|---|---|---|"]
    lines += [f"| `{p}` | `{t}` | `{d}` |".replace("|`", "| `") for p, t, d in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
