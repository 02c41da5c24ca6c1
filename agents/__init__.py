"""Policies: the shared interface, heuristics, learned-policy adapters, the hindsight oracle, and the registry."""

from gigdispatch.agents.base import Policy
from gigdispatch.agents.registry import POLICIES, UnknownPolicyError, make_policy

__all__ = ["POLICIES", "Policy", "UnknownPolicyError", "make_policy"]
