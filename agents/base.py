"""The policy interface and the helpers the built-in policies share (both defined in ``envs.core.policy``)."""

from __future__ import annotations

from gigdispatch.envs.core.policy import Policy, escalation_levels

__all__ = ["Policy", "escalation_levels"]
