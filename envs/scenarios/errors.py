"""Errors raised for bad scenarios: each message names the file or field and the reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gigdispatch.envs.core.errors import InputError

if TYPE_CHECKING:
    from pydantic import ValidationError


class ScenarioError(InputError):
    """A scenario name, file or field that cannot be used; the message says which and why."""


def format_validation_error(source: str, err: ValidationError) -> str:
    """The message of a ``ScenarioError`` for a config the schema rejects: one line per invalid field."""
    lines = [f"scenario {source}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<top level>"
        msg = e["msg"].removeprefix("Value error, ")  # a validator's own message is the reason
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/scenarios.md for the fields)"
        got = e.get("input")
        got_s = "" if e["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{got_s}")
    return "\n".join(lines)
