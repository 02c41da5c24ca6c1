"""Policies: the shared interface, heuristics, and (later) learned adapters and the oracle."""

from agents.base import Policy
from agents.registry import POLICIES, UnknownPolicyError, make_policy

__all__ = ["POLICIES", "Policy", "UnknownPolicyError", "make_policy"]
