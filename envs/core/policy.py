"""The one policy interface every gigdispatch policy implements (heuristics, learned, oracle), and the
payout-escalation rule the built-in policies share (``escalation_levels``).

It lives in the core because everything that runs a day (the environments' platform side, the
evaluation runner, the service) needs it, and it depends only on ``Simulator`` and ``Decision``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from gigdispatch.envs.core.sim import Decision, Simulator


class Policy(ABC):
    """A dispatch policy: at each decision epoch it reads the simulator's state and returns a Decision.

    ``reset`` is called once per episode, after ``Simulator.reset(seed)``, with the episode's own
    ``policy`` random stream (policies never create their own RNG, so a seed fixes the whole rollout).
    ``act`` must not change the simulator: it reads arrays and the helpers ``open_orders()``,
    ``candidates()``, ``pickup_eta()``, ``payout_cents()``, ``accept_prob()``, ``at_risk()``.
    """

    name: ClassVar[str] = "policy"

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:  # noqa: B027 - optional hook
        """Start of an episode."""

    @abstractmethod
    def act(self, sim: Simulator) -> Decision:
        """The decision for the current epoch."""


def escalation_levels(sim: Simulator, orders: np.ndarray) -> np.ndarray:
    """The auction lever as the built-in heuristics pull it: re-offer at level = offers declined so far."""
    p = sim.cfg.pricing.payout
    if not p.auto_escalate:
        return np.zeros(len(orders), np.int64)
    return np.minimum(sim.orders.declines[orders].astype(np.int64), sim.n_levels - 1)
