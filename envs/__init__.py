"""gigdispatch environments: the simulator core (``envs.core``) and scenarios (``envs.scenarios``)."""

from envs.core import ActionError, Decision, Scenario, Simulator, compute_kpis
from envs.scenarios import ScenarioError, load_scenario

__all__ = ["ActionError", "Decision", "Scenario", "ScenarioError", "Simulator", "compute_kpis", "load_scenario"]
