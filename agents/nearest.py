"""Nearest available driver, first come first served (defined in ``envs.core.nearest``, the fleet
environments' default platform side)."""

from __future__ import annotations

from gigdispatch.envs.core.nearest import NearestPolicy, fcfs_match

__all__ = ["NearestPolicy", "fcfs_match"]
