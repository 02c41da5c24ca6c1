"""The fleet environment (PettingZoo): one agent per driver."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from envs.core.config import GridScenario
from envs.core.kpis import compute_kpis
from envs.core.scenario import Scenario
from envs.core.sim import Simulator
from envs.fleet_core import CLIP, N_ACTIONS, OBS_DIM, OBS_FIELDS, FleetCore
from envs.render import RenderMixin


class FleetParallelEnv(RenderMixin, ParallelEnv):
    """Drivers decide whether to accept offers and where to wait; the platform dispatches.

    ## Description
    Every driver of the scenario is an agent ``driver_<i>`` for the whole episode (``possible_agents`` is
    fixed). Each step (one simulator step), each driver answers the offer it holds, if any, and -- when
    idle -- stays or moves to a neighbouring zone. The platform's offers come from a pluggable policy
    (default: ``nearest``); offers reach the drivers in the next observation and are answered in the next
    step. A driver who is off shift, suspended or not yet verified stays an agent with a zeroed
    observation and only the no-op allowed.

    ## Action Space
    ``Discrete(10)``: 0 stay / decline, 1 accept the pending offer, 2..9 move to neighbouring zone
    0..7. Invalid actions are treated as 0 and counted in ``infos[agent]["invalid_actions"]`` (the
    count of the whole step, the same in every agent's info).

    ## Observation Space
    ``Dict(observation=Box(-5, 5, (41,), float32), action_mask=Box(0, 1, (10,), int8))``. The fields
    of ``observation``, in order (``envs.fleet_core.OBS_FIELDS``): online, idle, driving, at stop, load
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
    ``reset(seed=...)`` draws the day; drivers on shift at the start are online and idle at home.

    ## Episode End
    All agents terminate together when the simulated day ends; with ``max_cycles`` set, all are
    truncated after that many steps.

    ## Arguments
    ``scenario`` (name, YAML path, MDRP folder, config or Scenario), ``platform_policy`` (a policy name
    or an ``agents.Policy``), ``reward`` (``"own"`` or ``"platform"``), ``render_mode``, ``max_cycles``.

    ## Version History
    * v0: initial version.
    """

    _render_title = "fleet"
    metadata = {"name": "gigdispatch_fleet_v0", "render_modes": ["rgb_array", "human"], "render_fps": 4, "is_parallelizable": True}

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        platform_policy: Any = "nearest",
        reward: str = "own",
        render_mode: str | None = None,
        max_cycles: int | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.core = FleetCore(scenario, platform_policy, reward)
        self.possible_agents = [f"driver_{i}" for i in range(self.core.scenario.n_drivers)]
        self.agents: list[str] = []
        self.render_mode = render_mode
        self.max_cycles = max_cycles
        self._seed_rng: np.random.Generator | None = None
        self._viewer: Any = None
        self._obs_space = spaces.Dict(
            {
                "observation": spaces.Box(-CLIP, CLIP, (OBS_DIM,), np.float32),
                "action_mask": spaces.Box(0, 1, (N_ACTIONS,), np.int8),
            }
        )
        self._act_space = spaces.Discrete(N_ACTIONS)
        assert len(OBS_FIELDS) == OBS_DIM

    @functools.cache  # noqa: B019 - PettingZoo requires the same object per agent
    def observation_space(self, agent: str) -> spaces.Dict:
        return self._obs_space

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            self._seed_rng = np.random.default_rng(seed)
            episode_seed = seed
        else:
            if self._seed_rng is None:
                self._seed_rng = np.random.default_rng()
            episode_seed = int(self._seed_rng.integers(0, 2**63 - 1))
        obs, mask = self.core.reset(episode_seed)
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
        common = {"invalid_actions": info["invalid_actions"], "platform_profit": info["platform_profit"]}
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
