"""The service's errors: a client's (4xx, naming the field) and ours (500 with an error id, logged).

``RequestError`` is a request that validated but does not fit the served scenario (an unknown node id,
x/y far outside its city, a route longer than the scenario allows, more declines than offers since
placed): answered 422 with the field's path. ``PolicyError`` wraps an
exception of the policy (or of translating its decision): a bug of ours, answered like any other
unexpected exception by ``report_internal_error``: 500 with ``{"detail": "internal error", "error_id"}``,
the traceback logged under that id on the ``gigdispatch.service`` logger.
"""

from __future__ import annotations

import logging
import uuid

from gigdispatch.envs.core.errors import GigdispatchError, InputError

logger = logging.getLogger("gigdispatch.service")


class RequestError(InputError):
    """A request that validated but does not fit the scenario; ``loc`` is the field path, ``msg`` the reason."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(f"{field_path(loc)}: {msg}")
        self.loc, self.msg = loc, msg


class PolicyError(GigdispatchError, RuntimeError):
    """The policy (or translating its decision) failed on a request that validated: a bug, not the client's."""


def field_path(loc: tuple[str | int, ...] | list[str | int]) -> str:
    """``("drivers", 3, "node")`` -> ``"drivers.3.node"`` (the form every 422 message starts with)."""
    return ".".join(str(x) for x in loc)


def report_internal_error(exc: BaseException, method: str, path: str) -> dict[str, str]:
    """Log ``exc`` with its traceback under a new error id; returns the 500 body that carries the id.

    The log record has the id as its ``error_id`` attribute and in its message.
    """
    error_id = uuid.uuid4().hex
    logger.error(
        "internal error %s on %s %s: %s: %s",
        error_id,
        method,
        path,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"error_id": error_id},
    )
    return {"detail": "internal error", "error_id": error_id}
