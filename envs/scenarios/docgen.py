"""Write docs/scenarios.md from the scenario schema:
``python -m gigdispatch.envs.scenarios.docgen > docs/scenarios.md``."""

from __future__ import annotations

import inspect
import json
import re
import typing
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

REPOSITIONING = """
## Cities where repositioning matters

Four groups of fields make a city where idle drivers wait in the wrong place, as real ones do
(the built-in `city-shift` uses them all):

* `demand.centres`: districts with their own time-of-day profile (offices in the morning, the centre at
  lunch, homes at dinner, a venue's event). An order's time follows the sum of the centres' weighted
  profiles and its pickup the centre busiest at that time (uniform within `radius_m`); with centres,
  `demand.baseline`, `demand.peaks` and `demand.hotspots` are not used for pickups.
* `fleet.home_zones`: the zones drivers live in; each logs on from home (a node of its zone, also its
  preferred zone).
* `fleet.idle`: a gig driver without work drives home after `drift_home_minutes` and logs off after
  `log_off_minutes` (its idle clock starts when it logs on, when its last stop is served or its last offer
  answered, and, with `reposition_renews`, when the platform repositions it). Owned-fleet drivers wait.
* `family`: the scenario has members `NAME@F` (e.g. `city-shift@7`), distinct but alike cities drawn from
  family seed `F`: another road layout, the centres moved, re-weighted and their peaks shifted
  (`envs/scenarios/family.py`). Members 0-19 are evaluation cities, never trained or selected on; training
  uses members from 1000, as with day seeds.

`pricing.payout.pickup_paid: false` pays the distance bonus on the trip alone, not on the pickup leg.
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


def _comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comment in ``config.py``: the one at the end of its line, else the lines just above it."""
    try:
        lines = inspect.getsource(model).splitlines()
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        m = re.match(r"^\s{4}(\w+)\s*:", line)
        if m and m.group(1) in model.model_fields:
            tail = re.search(r"#\s*(.+)$", line)
            text = tail.group(1).strip() if tail else " ".join(above)
            if text:
                out[m.group(1)] = text
        above = []
    return out


def _item_model(ann: Any) -> type[BaseModel] | None:
    """The model of ``tuple[Model, ...]`` or ``Model | None`` fields, whose own fields are listed too."""
    for arg in typing.get_args(ann):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _walk(model: type[BaseModel], prefix: str, rows: list[tuple[str, str, str, str]]) -> None:
    notes = _comments(model)
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
        rows.append((path, t, _default(f.default), notes.get(name, "").replace("|", "/")))
        item = _item_model(ann)
        if item is not None and item.__module__ == GridScenario.__module__:
            _walk(item, path + ("[]." if typing.get_origin(ann) is tuple else "."), rows)


def render() -> str:
    rows: list[tuple[str, str, str, str]] = []
    _walk(GridScenario, "", rows)
    lines = [HEADER, LIMITS, "| field | limit | what |", "|---|---|---|"]
    lines += [f"| {f'`{f}`' if '.' in f else f} | {limit} | {what} |" for f, limit, what in SIZE_LIMITS]
    lines += [REPOSITIONING]
    lines += ["", "## Fields", "", "| field | type | default | what |", "|---|---|---|---|"]
    lines += [f"| `{p}` | `{t}` | `{d}` | {w} |".replace("|`", "| `") for p, t, d, w in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
