"""Shared fixtures for the simulator-core tests (helpers are in ``simtools.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from simtools import LINE5, MDRP_DIR

from envs.core.scenario import Scenario
from envs.scenarios import load_scenario


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
