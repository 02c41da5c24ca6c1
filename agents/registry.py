"""Policies by name."""

from __future__ import annotations

from collections.abc import Callable

from agents.base import Policy
from agents.nearest import NearestPolicy

POLICIES: dict[str, Callable[[], Policy]] = {
    "nearest": NearestPolicy,
}


class UnknownPolicyError(ValueError):
    pass


def make_policy(name: str) -> Policy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise UnknownPolicyError(f"unknown policy {name!r}: choose one of {', '.join(sorted(POLICIES))}") from None
