"""Scenarios: typed YAML configs, built-in names, and the MDRP replay."""

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.scenarios.errors import ScenarioError
from gigdispatch.envs.scenarios.loader import builtin_names, configs_dir, load_scenario

__all__ = ["GridScenario", "ScenarioError", "builtin_names", "configs_dir", "load_scenario"]
