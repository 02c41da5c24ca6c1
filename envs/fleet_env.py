"""The fleet environment (PettingZoo): one agent per driver. Registered in PettingZoo's registries on
``import gigdispatch.envs`` as ``gigdispatch/Fleet-v0`` (``FleetParallelEnv``: observation version 0, 41 fields)
and ``gigdispatch/Fleet-v1`` (``FleetParallelEnvV1``: version 1, 50 fields, with the recent demand by zone):
``pettingzoo.make("parallel", "gigdispatch/Fleet-v1", ...)``, or ``"aec"``."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.policy import Policy
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.fleet_core import CLIP, N_ACTIONS, FleetCore
from gigdispatch.envs.render import RenderMixin


class FleetParallelEnv(RenderMixin, ParallelEnv):
    """Drivers decide whether to accept offers and where to wait; the platform dispatches.

    ## Description
    Every driver of the scenario is an agent ``driver_<i>`` for the whole episode (``possible_agents`` is
    fixed). Each step (one simulator step), each driver answers the offer it holds, if any, and -- when
    idle -- stays or moves to a neighbouring zone. The platform's offers come from a pluggable policy
    (default: ``NearestPolicy()``); offers reach the drivers in the next observation and are answered in the next
    step. A driver who is off shift, suspended or not yet verified stays an agent with a zeroed
    observation and only the no-op allowed. Created with ``pettingzoo.make("parallel",
    "gigdispatch/Fleet-v0", scenario=...)`` (or ``gigdispatch.envs.parallel_env(version=0, ...)``; Fleet-v1,
    ``FleetParallelEnvV1``, is the latest).

    ## Action Space
    ``Discrete(10)``: 0 stay / decline, 1 accept the pending offer, 2..9 move to neighbouring zone
    0..7. Invalid actions (not allowed by the agent's ``action_mask``) are treated as 0 and counted in
    ``infos[agent]["invalid_driver_actions"]`` (the count of the whole step, the same in every agent's
    info). The day's KPI ``invalid_decision_pairs`` (in ``infos[agent]["kpis"]`` at the end) is another
    count: the entries of each step's decision the simulator skipped. The drivers' moves are entries of
    that decision, after the platform's offers: a mask-valid move of a driver the platform offers an
    order in the same step is skipped and counted there.

    ## Observation Space
    ``Dict(observation=Box(-5, 5, (41,), float32), action_mask=Box(0, 1, (10,), int8))`` (Fleet-v1,
    ``FleetParallelEnvV1``: ``(50,)``, these 41 fields and 9 more). The fields of ``observation``, in order
    (``envs.fleet_core.OBS_FIELDS_V0``): online, idle, driving, at stop, load
    share, route stops / max, has offer, offer payout (/10 EUR), offer tip (/5 EUR), offer pickup
    distance (/5 km), offer trip distance (/5 km), offer pickup in preferred zone, sin and cos of the
    time of day, x and y in the city (0..1), in preferred zone, performance score, earnings per online
    hour this shift (/20 EUR), bike / car / van, shift time left (/4 h, 0..1), open orders (/10) in the
    own zone and its 8 neighbours, idle drivers (/10) in the same 9 zones (0 where no neighbour).

    ## Rewards
    ``reward="own"`` (default): the driver's earnings in the step (payouts, tips, corrections,
    guarantee top-ups, wages; EUR) minus its running cost (km driven x the vehicle's ``cost_per_km``).
    ``reward="platform"``: every driver gets the platform's profit in the step (fees - payouts - refunds).

    ## Starting State
    ``reset(seed=s)`` plays day ``s`` (the day ``Simulator.reset(s)`` plays); ``reset()`` plays the next
    day of the ``seed_schedule`` (by default drawn from ``default_rng(s)`` after a reset with seed ``s``).
    Drivers on shift at the start are online and idle at home.

    ## Episode End
    All agents terminate together when the simulated day ends; with ``max_cycles`` set, all are
    truncated after that many steps.

    ## Arguments
    ``scenario`` (name, YAML path, MDRP folder, config or Scenario), ``platform_policy`` (a ``Policy``
    object, e.g. ``gigdispatch.agents.make_policy("hungarian")``; ``None``: ``NearestPolicy()``; a name
    raises ``PlatformPolicyError``), ``reward`` (``"own"`` or ``"platform"``), ``render_mode``,
    ``max_cycles``, ``seed_schedule`` (a ``SeedSchedule``: which day each reset without a seed plays).

    ## Version History
    * v1 (``FleetParallelEnvV1``): 9 observation fields more, ``placed_0..8`` (the demand forecast); all else
      as v0.
    * v0: initial version. ``platform_policy`` takes a policy object (a name is refused) and
      ``seed_schedule`` is an argument; the days played for a seed are unchanged.
    """

    obs_version: ClassVar[int] = 0  # the rows of ``envs.fleet_core`` this env observes (``FleetCore.obs_version``)
    _render_title = "fleet"
    metadata: dict[str, Any] = {
        "name": "gigdispatch_fleet_v0",
        "render_modes": ["rgb_array", "human"],
        "render_fps": 4,
        "is_parallelizable": True,
    }

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        platform_policy: Policy | None = None,
        reward: str = "own",
        render_mode: str | None = None,
        max_cycles: int | None = None,
        seed_schedule: SeedSchedule | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.core = FleetCore(scenario, platform_policy, reward, obs_version=self.obs_version)
        self.possible_agents = [f"driver_{i}" for i in range(self.core.scenario.n_drivers)]
        self.agents: list[str] = []
        self.render_mode = render_mode
        self.max_cycles = max_cycles
        self.seed_schedule = seed_schedule if seed_schedule is not None else SeedSchedule()
        self._viewer: Any = None
        self._obs_space = spaces.Dict(
            {
                "observation": spaces.Box(-CLIP, CLIP, (self.core.obs_dim,), np.float32),
                "action_mask": spaces.Box(0, 1, (N_ACTIONS,), np.int8),
            }
        )
        self._act_space: spaces.Discrete = spaces.Discrete(N_ACTIONS)

    @functools.cache  # noqa: B019 - PettingZoo requires the same object per agent
    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, mask = self.core.reset(self.seed_schedule.day(seed))
        if len(self.possible_agents) != self.core.n:
            raise RuntimeError("the scenario's driver count changed between episodes")
        self.agents = list(self.possible_agents)
        self._cycles = 0
        return self._pack(obs, mask), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if not self.agents:
            raise RuntimeError("the episode is over: call reset()")
        get = actions.get
        a = np.fromiter((get(ag) or 0 for ag in self.possible_agents), dtype=np.int64, count=len(self.possible_agents))
        obs, mask, reward, done, info = self.core.step(a)
        self._cycles += 1
        truncated = self.max_cycles is not None and self._cycles >= self.max_cycles and not done
        agents = self.possible_agents
        observations = self._pack(obs, mask)
        rewards = dict(zip(agents, reward.tolist(), strict=True))
        terms = dict.fromkeys(agents, bool(done))
        truncs = dict.fromkeys(agents, bool(truncated))
        common = {"invalid_driver_actions": info["invalid_driver_actions"], "platform_profit": info["platform_profit"]}
        if done:
            common["kpis"] = compute_kpis(self.core.sim)
        infos = {ag: dict(common) for ag in agents}
        if done or truncated:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terms, truncs, infos

    def _pack(self, obs: np.ndarray, mask: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        m8 = mask.astype(np.int8)
        return {ag: {"observation": obs[i], "action_mask": m8[i]} for i, ag in enumerate(self.possible_agents)}

    def _render_sim(self) -> Simulator:
        return self.core.sim


class FleetParallelEnvV1(FleetParallelEnv):
    """``gigdispatch/Fleet-v1``: Fleet-v0's days, agents, actions, masks, rewards and infos, with a demand forecast
    in the observation: what a driver needs to anticipate demand, the time of day (``tod_sin`` / ``tod_cos``,
    already in v0) and the recent demand near it.

    ## Observation Space
    ``Dict(observation=Box(-5, 5, (50,), float32), action_mask=Box(0, 1, (10,), int8))``. The fields of
    ``observation`` (``envs.fleet_core.OBS_FIELDS_V1``): v0's 41, then ``placed_0..8``: the orders requested
    (placed, converted or not) in the last ``FORECAST_MIN`` (15) minutes by pickup zone, in the own zone and its 8
    neighbours (the order of ``demand_*``), /10, clipped at 5, 0 where no neighbour. A zeroed row (off shift,
    suspended, not yet verified) is zero there too. The first 41 fields are v0's, value for value.

    ## Version History
    * v1: ``placed_0..8`` after v0's 41 fields; everything else as v0 (the days played are the same).
    """

    obs_version: ClassVar[int] = 1
    metadata: dict[str, Any] = {**FleetParallelEnv.metadata, "name": "gigdispatch_fleet_v1"}


def aec_env(**kwargs: Any) -> AECEnv:
    """Fleet-v0 through PettingZoo's AEC API (``parallel_to_aec`` of ``FleetParallelEnv``)."""
    return parallel_to_aec(FleetParallelEnv(**kwargs))


def aec_env_v1(**kwargs: Any) -> AECEnv:
    """Fleet-v1 through PettingZoo's AEC API (``parallel_to_aec`` of ``FleetParallelEnvV1``)."""
    return parallel_to_aec(FleetParallelEnvV1(**kwargs))
