"""Simulator core: NumPy only (no gymnasium, pettingzoo, torch or HTTP imports)."""

from envs.core.kpis import KPI_DOC, compute_kpis
from envs.core.scenario import Scenario
from envs.core.sim import ActionError, Decision, Simulator

__all__ = ["KPI_DOC", "ActionError", "Decision", "Scenario", "Simulator", "compute_kpis"]
