"""Shared fixtures for the simulator-core tests (helpers are in ``simtools.py``), and the hypothesis profiles.

Hypothesis runs derandomised by default (profile ``ci``: a fixed example sequence, no example database, no
timing-based checks), so the same commit always gives the same result. ``HYPOTHESIS_PROFILE=dev`` selects
random examples with the local example database, for exploration.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from simtools import LINE5, MDRP_DIR

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.scenarios import load_scenario

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def default_scenario() -> Scenario:
    """The built-in ``default`` scenario (the city graph is built once per session)."""
    return load_scenario("default")


@pytest.fixture
def line_nodes() -> list[list[float]]:
    """Five nodes on a line 300 m apart (one minute per hop at 300 m/min)."""
    return [list(p) for p in LINE5]


@pytest.fixture(scope="session")
def mdrp_dir() -> Path:
    """The folder of the public MDRP instances; tests that need it are skipped when it is absent."""
    if not MDRP_DIR.is_dir():
        pytest.skip(f"MDRP data not found at {MDRP_DIR}")
    return MDRP_DIR


@pytest.fixture(scope="module")
def short_day() -> GridScenario:
    """A 40-minute day with 6 drivers: whole days in a few dozen epochs (the Dispatch-v1/v2/v3 tests)."""
    import yaml

    from gigdispatch.envs.scenarios.loader import parse_config

    text = "horizon: {start: '11:00', end: '11:40', drain_minutes: 10}\nfleet: {drivers: 6}"
    return parse_config(yaml.safe_load(text), "short day")
