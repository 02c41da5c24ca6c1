"""Scenarios: typed YAML configs, built-in names, and the MDRP replay."""

from envs.core.config import GridScenario
from envs.scenarios.errors import ScenarioError
from envs.scenarios.loader import builtin_names, configs_dir, load_scenario

__all__ = ["GridScenario", "ScenarioError", "builtin_names", "configs_dir", "load_scenario"]
