"""Simulator core: NumPy only (no gymnasium, pettingzoo, torch or HTTP imports).

What every layer shares lives here: the simulator and its state, the ``Policy`` interface, the seed
rule (``seeding``), and the error base (``errors.GigdispatchError``).
"""

from gigdispatch.envs.core.errors import GigdispatchError, InputError
from gigdispatch.envs.core.kpis import KPI_DOC, compute_kpis
from gigdispatch.envs.core.policy import Policy
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import EVAL_SEEDS, MIN_TRAIN_SEED, SeedSchedule
from gigdispatch.envs.core.sim import ActionError, Decision, Simulator
from gigdispatch.envs.core.state import EpisodeState

__all__ = [
    "EVAL_SEEDS",
    "KPI_DOC",
    "MIN_TRAIN_SEED",
    "ActionError",
    "Decision",
    "EpisodeState",
    "GigdispatchError",
    "InputError",
    "Policy",
    "Scenario",
    "SeedSchedule",
    "Simulator",
    "compute_kpis",
]
