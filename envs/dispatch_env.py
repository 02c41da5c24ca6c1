"""``gigdispatch/Dispatch-v0``: the platform decides who gets which order, at what payout.

Registered on ``import gigdispatch.envs`` with ``max_episode_steps=MAX_EPISODE_STEPS``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.render import RenderMixin
from gigdispatch.envs.scenarios.loader import load_scenario

ORDER_FEATURES = (
    "valid",
    "age",
    "slack",
    "trip",
    "volume",
    "fee",
    "declines",
    "tip",
    "zone_demand",
    "zone_supply",
    "level",
    "at_risk",
)
CANDIDATE_FEATURES = (
    "valid",
    "pickup_eta",
    "slack",
    "capacity_fit",
    "route_load",
    "accept_prob",
    "performance",
    "preferred_zone",
    "owned",
)
GLOBAL_FEATURES = ("tod_sin", "tod_cos", "progress", "open_orders", "idle_share", "surge")
CLIP = 5.0
# the registered episode limit: a whole 24-hour day plus a 2-hour drain at the default 60 s step
# (``Simulator.n_steps``). Every env step (and the reset) advances at least one simulator step, so the limit
# never cuts short a day of a built-in scenario or an MDRP instance; tests/test_envs.py checks it against them.
MAX_EPISODE_STEPS = 26 * 60


def slot_features(
    sim: Simulator, s: np.ndarray, ids: np.ndarray, eta: np.ndarray, demand: np.ndarray, supply: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The features of slot orders ``s`` (n,) and their candidates ``ids`` (n, K; -1 padded) with pickup ETAs
    ``eta`` at the simulator's time: order rows ``(n, len(ORDER_FEATURES))`` and candidate rows ``(n, K,
    len(CANDIDATE_FEATURES))`` (padded candidates zero), before clipping, and the pairs' flat pickup metres and
    base payouts. ``demand`` / ``supply``: the open orders and idle eligible drivers per zone. Shared by v1 and
    v3 (``envs.dispatch_days``), whose slots may belong to several days of one ``DaysSimulator``."""
    od, dr, t = sim.orders, sim.drivers, sim.t
    n = len(s)
    trip = sim.city.travel_s(od.pickup[s], od.dropoff[s]).astype(np.float64)
    zone = sim.city.zone_of[od.pickup[s]]
    risky = sim.open_at_risk(s, trip)
    o_rows = np.stack(
        [
            np.ones(n),
            (t - od.t_place[s]) / 1800.0,
            (od.deadline[s] - t - trip) / 1800.0,
            trip / 1800.0,
            od.volume[s] / 100.0,
            od.fee[s] / 2000.0,
            od.declines[s] / 4.0,
            od.tip[s] / 500.0,
            demand[zone] / 10.0,
            supply[zone] / 10.0,
            od.level[s] / 2.0,
            risky,
        ],
        axis=1,
    )
    ok = ids >= 0
    d = np.where(ok, ids, 0)
    ss = np.broadcast_to(s[:, None], d.shape)
    eta = np.where(ok, eta, 0.0)
    cap = dr.capacity[d]
    fit = np.where(
        np.isfinite(cap), (cap - sim.committed[d] - od.volume[ss]) / np.where(np.isfinite(cap), cap, 1.0), 1.0
    )
    pickup_m = sim.pickup_m(ss.ravel(), d.ravel())
    pay = sim.payout_cents(ss.ravel(), d.ravel(), 0, pickup_m)
    p_acc = sim.accept_prob(ss.ravel(), d.ravel(), pay, pickup_m).reshape(d.shape)
    perf = dr.performance()[d]
    feats = np.stack(
        [
            ok,
            eta / 1800.0,
            (od.deadline[ss] - t - eta - trip[:, None]) / 1800.0,
            fit,
            dr.route_len[d] / sim.S,
            p_acc,
            perf,
            sim.city.zone_of[od.pickup[ss]] == dr.pref_zone[d],
            dr.owned[d],
        ],
        axis=-1,
    )
    return o_rows, np.where(ok[..., None], feats, 0.0), (pickup_m, pay)


class DispatchEnv(RenderMixin, gym.Env):
    """The platform's dispatch problem as a Gymnasium environment.

    ## Description
    One episode is one simulated day of a gigdispatch scenario (``envs.core.Simulator``). At each
    decision epoch the agent (the platform) sees up to ``max_orders`` pending orders, oldest first,
    each with its ``k`` best candidate drivers (eligible drivers with room, ranked by pickup ETA), and
    chooses for each order one candidate or *hold*. Where the scenario has pricing on, it also chooses a
    payout level per order (the escalation lever). Epochs with nothing to decide (no pending order has a
    candidate) are simulated through without asking the agent.

    ## Action Space
    ``MultiDiscrete([k + 1] * max_orders)`` -- slot ``i``: ``0..k-1`` offers order ``i`` to that
    candidate, ``k`` holds it. With pricing, ``MultiDiscrete([k + 1] * max_orders + [L] * max_orders)``,
    the second half being the payout level ``0..L-1`` (payout x ``min(1 + step * level, cap)``).
    ``action_masks()`` returns the flat boolean mask for MaskablePPO: *hold* and level 0 are always
    valid; a candidate is valid where it exists. ``split_mask(mask)`` cuts it into the per-slot tuple
    ``action_space.sample(mask=...)`` takes; ``sample_action()`` draws a random valid action.
    **Invalid or conflicting choices**: a masked-out choice is treated as *hold* and counted in
    ``info["invalid_dispatch_actions"]`` (the agent's choices; the day's KPI ``invalid_decision_pairs``
    counts something else: the decision entries the simulator skipped as not applicable); when two
    orders choose the same driver, the older order gets it and the other is held (``info["conflicts"]``)
    -- conflicts are resolved here, so masks stay per-order.

    ## Observation Space
    ``Dict`` of three flat ``Box(-5, 5, float32)`` vectors (values scaled and clipped to [-5, 5]); the
    shapes below are the row-major layouts of those vectors (``obs["orders"].reshape(max_orders, 12)``):

    - ``orders``, ``(max_orders, 12)``: valid (0/1), age since placement (/30 min), slack to deadline
      after the direct trip (/30 min), trip time (/30 min), volume (/100 L), fee (/20 EUR), declines (/4),
      tip (/5 EUR), open orders in the pickup zone (/10), idle drivers in the zone (/10), service level
      (0 express, 0.5 standard, 1 same-day), at risk (0/1).
    - ``candidates``, ``(max_orders, k, 9)``: valid, pickup ETA (/30 min), slack after pickup ETA + trip
      (/30 min), capacity fit ((capacity - load - volume) / capacity, inf capacity = 1), route load
      (stops / max stops), acceptance probability at the base payout, performance score, pickup in the
      driver's preferred zone, owned fleet.
    - ``globals``, ``(6,)``: sin and cos of the time of day, share of the horizon elapsed, open orders
      (/100), idle share of drivers, mean surge - 1.

    Padded order and candidate rows are all zeros.

    ## Rewards
    Platform profit over the simulated time between two decisions, in EUR x ``reward_scale``:
    ``+ fees`` (customer fees and tips of orders placed) ``- payouts`` (driver payouts, tips,
    corrections, guarantees, wages) ``- refunds`` (late-delivery refunds, cancellation refunds and
    penalties -- the SLA and cancellation penalties). The three terms are in ``info``. Profit made
    while ``reset`` simulates up to the first decision is added to the first step's reward, so an
    episode's undiscounted return equals the day's platform margin.

    ## Starting State
    ``reset(seed=s)`` plays day ``s`` (orders, drivers, traffic: the day ``Simulator.reset(s)`` plays);
    ``reset()`` plays the next day of the ``seed_schedule`` (by default drawn from ``default_rng(s)``
    after a reset with seed ``s``, as Gymnasium's ``np_random`` would). The first observation is the
    first epoch with something to decide.

    ## Episode End
    Terminated when the simulated day ends (``horizon.end`` + drain, or earlier once the horizon has
    passed and nothing is in flight). At the end, ``info["kpis"]`` holds the day's KPIs. The env itself
    never truncates; ``gymnasium.make`` adds a ``TimeLimit`` of ``max_episode_steps=1560``
    (``MAX_EPISODE_STEPS``: 24 hours plus a 2-hour drain at 60 s steps), longer than any day of the
    built-in scenarios (``default`` 540 simulator steps, ``city-1000`` 960) or the MDRP instances, so it
    never fires there. A scenario with shorter steps or a longer day passes its own limit, ``sim.n_steps``:
    ``gymnasium.make(..., scenario=..., max_episode_steps=n)``.

    ## Arguments
    ``scenario``: built-in name, YAML path, MDRP instance folder, a ``GridScenario`` config or a
    compiled ``Scenario``; ``max_orders`` (32) and ``k`` (8): observation sizes; ``reward_scale``
    (1.0); ``idle_only`` (False): candidates only among idle drivers (no batching);
    ``render_mode``: ``"rgb_array"`` or ``"human"``; ``seed_schedule``: a ``SeedSchedule``, which day
    each reset without a seed plays (``SeedSchedule(seeds=[...])``: a list of days in turn).

    ## Version History
    * v0: initial version; registered with its episode limit; ``seed_schedule`` is an argument (the days
      played for a seed are unchanged).
    * v0, same dynamics: the step info's ``invalid_actions`` is named ``invalid_dispatch_actions``, the
      KPI ``invalid_actions`` is ``invalid_decision_pairs``; a ratio KPI with a zero denominator is NaN;
      ``split_mask`` and ``sample_action`` added.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 4}
    _render_title = "Dispatch-v0"
    order_features: tuple[str, ...] = ORDER_FEATURES  # the columns of the observation's arrays
    candidate_features: tuple[str, ...] = CANDIDATE_FEATURES
    observation_space: spaces.Dict
    action_space: spaces.MultiDiscrete

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        max_orders: int = 32,
        k: int = 8,
        reward_scale: float = 1.0,
        idle_only: bool = False,
        render_mode: str | None = None,
        seed_schedule: SeedSchedule | None = None,
    ) -> None:
        if max_orders < 1:
            raise ValueError(f"max_orders must be >= 1, got {max_orders}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.sim = Simulator(self.scenario)
        self.M, self.K = int(max_orders), int(k)
        self.reward_scale = float(reward_scale)
        self.idle_only = bool(idle_only)
        self.render_mode = render_mode
        self.seed_schedule = seed_schedule if seed_schedule is not None else SeedSchedule()
        self.pricing = bool(self.scenario.cfg.pricing.enabled) and self.sim.n_levels > 1
        self.L = self.sim.n_levels if self.pricing else 1
        self._obs_shapes = self._observation_shapes()
        self.observation_space = spaces.Dict(
            {key: spaces.Box(-CLIP, CLIP, shape, np.float32) for key, shape in self._obs_shapes.items()}
        )
        nvec = [self.K + 1] * self.M + ([self.L] * self.M if self.pricing else [])
        self.action_space = spaces.MultiDiscrete(np.array(nvec, dtype=np.int64))
        self._slots = np.zeros(0, np.int64)  # order ids in the observation's slots
        self._cand = np.full((self.M, self.K), -1, np.int64)
        self._viewer: Any = None
        self._carry = 0.0

    def _observation_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes of the observation's three arrays (v0: flat vectors; ``DispatchEnvV1``: rows)."""
        return {
            "orders": (self.M * len(self.order_features),),
            "candidates": (self.M * self.K * len(self.candidate_features),),
            "globals": (len(GLOBAL_FEATURES),),
        }

    # ------------------------------------------------------------------------------------------ API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self.sim.reset(self.seed_schedule.day(seed))
        info = self._advance(None)
        self._carry = info["profit"]  # money made before the first decision is paid out with the first step
        return self._observe(), info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self.sim.done:
            raise RuntimeError("the episode is over: call reset()")
        dec, bad, conflicts = self.decode(action)
        info = self._advance(dec)
        info["invalid_dispatch_actions"] = bad
        info["conflicts"] = conflicts
        reward = (info["profit"] + self._carry) * self.reward_scale
        self._carry = 0.0
        terminated = bool(self.sim.done)
        if terminated:
            info["kpis"] = compute_kpis(self.sim)
        obs = self._observe()
        if self.render_mode == "human":
            self.render()
        return obs, float(reward), terminated, False, info

    def decode(self, action: np.ndarray) -> tuple[Decision, int, int]:
        """The ``Decision`` an action stands for at the current epoch, with the number of invalid choices
        (treated as *hold*) and of conflicts (two orders choosing one driver: the older order gets it).
        Reads the epoch's slots and candidates; changes nothing."""
        a = np.asarray(action)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {a.shape}")
        choice = a[: self.M].astype(np.int64)
        level = a[self.M :].astype(np.int64) if self.pricing else np.zeros(self.M, np.int64)
        n = len(self._slots)
        valid_slot = np.arange(self.M) < n
        offer = valid_slot & (choice >= 0) & (choice < self.K)
        cand = np.where(offer, self._cand[np.arange(self.M), np.clip(choice, 0, self.K - 1)], -1)
        bad = (offer & (cand < 0)) | (choice < 0) | (choice > self.K) | (~valid_slot & (choice != self.K))
        bad |= (level < 0) | (level >= self.L)
        offer &= cand >= 0
        level = np.clip(level, 0, self.L - 1)
        rows = np.flatnonzero(offer)
        drivers = cand[rows]
        _, first = np.unique(drivers, return_index=True)  # the older order wins a contested driver
        keep = np.zeros(len(rows), bool)
        keep[first] = True
        rows = rows[keep]
        dec = Decision(order=self._slots[rows], driver=cand[rows], level=level[rows])
        return dec, int(bad.sum()), int((~keep).sum())

    def prepare(self) -> bool:
        """Choose this epoch's slot orders and their candidates; True when some order has a candidate."""
        return self._prepare()

    def observe(self) -> dict[str, np.ndarray]:
        """The observation of the current epoch (after ``prepare``)."""
        return self._observe()

    def action_masks(self) -> np.ndarray:
        """Flat boolean mask over the MultiDiscrete action (MaskablePPO's convention)."""
        cand_ok = np.zeros((self.M, self.K + 1), bool)
        cand_ok[:, : self.K] = self._cand >= 0
        cand_ok[:, self.K] = True
        parts = [cand_ok.ravel()]
        if self.pricing:
            lv = np.zeros((self.M, self.L), bool)
            lv[:, 0] = True
            lv[: len(self._slots), :] = True
            parts.append(lv.ravel())
        return np.concatenate(parts)

    def split_mask(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The flat mask of ``action_masks()`` (default: the current one) as the tuple of one ``int8`` array per
        action slot that ``action_space.sample(mask=...)`` takes: ``env.action_space.sample(mask=env.split_mask())``.
        """
        flat = np.asarray(self.action_masks() if mask is None else mask).reshape(-1)
        nvec = self.action_space.nvec
        if flat.size != int(nvec.sum()):
            raise ValueError(f"mask: expected {int(nvec.sum())} entries (action_masks()), got {flat.size}")
        return tuple(part.astype(np.int8) for part in np.split(flat, np.cumsum(nvec)[:-1]))

    def sample_action(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """A random action that the current mask allows: per slot, uniform over its valid choices (and levels).
        ``rng``: the generator to draw from (default: ``action_space.np_random``, seeded by
        ``action_space.seed(s)``)."""
        gen = self.action_space.np_random if rng is None else rng
        mask = self.action_masks()
        n_choice = self.M * (self.K + 1)
        groups = [mask[:n_choice].reshape(self.M, self.K + 1)]
        if self.pricing:
            groups.append(mask[n_choice:].reshape(self.M, self.L))
        # per row, the valid entry with the largest uniform draw (hold and level 0 are always valid)
        picks = [np.argmax(np.where(g, gen.random(g.shape), -1.0), axis=1) for g in groups]
        return np.concatenate(picks).astype(self.action_space.dtype)

    # gymnasium types Env.render with a TypeVar bound to no class parameter, so no concrete type overrides it
    def render(self) -> np.ndarray | None:  # type: ignore[override]
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
        return RenderMixin.render(self)

    def _render_sim(self) -> Simulator:
        return self.sim

    # ------------------------------------------------------------------------------------ internals
    def _advance(self, decision: Decision | None) -> dict[str, Any]:
        """Apply ``decision``, then simulate until an epoch with something to decide (or the end)."""
        tot = {"fees": 0.0, "payouts": 0.0, "refunds": 0.0, "profit": 0.0}
        steps = 0
        while not self.sim.done:
            r = self.sim.step(decision)
            decision = None
            steps += 1
            for key in tot:
                tot[key] += r[key]
            if self._prepare():
                break
        info: dict[str, Any] = {**tot, "sim_steps": steps, "sim_time": self.sim.t}
        if self.sim.done:
            self._slots = np.zeros(0, np.int64)
            self._cand[:] = -1
        return info

    def _prepare(self) -> bool:
        """Pick the slot orders and their candidates; True when some order has a candidate."""
        sim = self.sim
        op = sim.open_orders()
        if op.size == 0:
            return False
        slots = op[: self.M]
        ids, eta = self._candidates(slots)
        ids = sim.drop_last_decliners(slots, ids)
        if not (ids >= 0).any():
            return False
        self._slots = slots
        self._cand[:] = -1
        self._cand[: len(slots)] = ids
        self._eta = np.full((self.M, self.K), np.inf)
        self._eta[: len(slots)] = np.where(ids >= 0, eta, np.inf)
        return True

    def _candidates(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, eta)``, each ``(len(slots), K)``: the slot orders' candidate drivers (-1 padded) and pickup ETAs."""
        return self.sim.candidates(slots, self.K, idle_only=self.idle_only)

    def _observe(self) -> dict[str, np.ndarray]:
        o_feat, c_feat, g = self._features()
        return {
            "orders": np.clip(o_feat, -CLIP, CLIP, out=o_feat).reshape(self._obs_shapes["orders"]),
            "candidates": np.clip(c_feat, -CLIP, CLIP, out=c_feat).reshape(self._obs_shapes["candidates"]),
            "globals": np.clip(g, -CLIP, CLIP, out=g),
        }

    def _features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The epoch's features before clipping: orders ``(M, len(ORDER_FEATURES))``, candidates
        ``(M, K, len(CANDIDATE_FEATURES))`` and globals ``(len(GLOBAL_FEATURES),)``, float32, padded rows zero."""
        sim, dr = self.sim, self.sim.drivers
        M, K = self.M, self.K
        o_feat = np.zeros((M, len(ORDER_FEATURES)), np.float32)
        c_feat = np.zeros((M, K, len(CANDIDATE_FEATURES)), np.float32)
        n = len(self._slots)
        op = sim.open_orders()
        demand = sim.zone_demand_of(op)
        idle = sim.eligible(idle_only=True)
        supply = sim.zone_supply_of(idle)
        self._zone_counts = (demand, supply)  # what a subclass's features reuse (``DispatchEnvV2``)
        if n:
            o_feat[:n], c_feat[:n], self._pair_terms = slot_features(
                sim, self._slots, self._cand[:n], self._eta[:n], demand, supply
            )  # the pairs' (flat) pickup metres and base payouts, reused by a subclass's features
        tod = (sim.t % 86400.0) / 86400.0 * 2 * np.pi
        g = np.array(
            [
                np.sin(tod),
                np.cos(tod),
                (sim.t - sim.t_start) / max(sim.day_end - sim.t_start, 1.0),
                op.size / 100.0,
                idle.sum() / max(dr.n, 1),
                sim.surge.mean() - 1.0,
            ],
            np.float32,
        )
        return o_feat, c_feat, g


class DispatchEnvV1(DispatchEnv):
    """``gigdispatch/Dispatch-v1``: Dispatch-v0's days, decisions, actions, masks and rewards, with the observation
    as rows of sets, so that a network can share weights across order slots and candidates.

    ## Observation Space
    ``Dict`` of three ``Box(-5, 5, float32)`` arrays, the features of ``DispatchEnv`` (same order, scaling and
    clipping) in their natural shapes:

    - ``orders``, ``(max_orders, 12)``: one row per order slot (``ORDER_FEATURES``; column 0 is *valid*);
    - ``candidates``, ``(max_orders, k, 9)``: one row per order-candidate pair (``CANDIDATE_FEATURES``;
      column 0 is *valid*);
    - ``globals``, ``(6,)`` (``GLOBAL_FEATURES``).

    Padded rows are all zeros, and the valid columns carry the whole action mask: choice ``j`` of slot ``i`` is
    valid exactly where ``candidates[i, j, 0] == 1`` (hold always), and payout levels above 0 exactly where
    ``orders[i, 0] == 1``. So a policy can mask itself from the observation (``agents.setnet``), and
    ``action_masks()`` is the same mask as a flat vector for MaskablePPO.

    ## Vector form
    ``gymnasium.make_vec("gigdispatch/Dispatch-v1", num_envs=8)`` is ``DispatchVecEnv``: eight days in one
    process, each day the day a single env plays for the same seed (``envs.dispatch_vec``).
    ``vectorization_mode="async"`` runs one day per subprocess instead. ``envs.sb3_vec.SB3VecEnv`` hands
    either to stable-baselines3.

    ## Version History
    * v1: the observation's arrays have their row shapes (v0: the same values, flattened); everything else as v0.
    """

    _render_title = "Dispatch-v1"

    def _observation_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "orders": (self.M, len(self.order_features)),
            "candidates": (self.M, self.K, len(self.candidate_features)),
            "globals": (len(GLOBAL_FEATURES),),
        }


ORDER_FEATURES_V2 = (*ORDER_FEATURES, "dropoff_demand", "dropoff_supply", "older_orders")
CANDIDATE_FEATURES_V2 = (
    *CANDIDATE_FEATURES,
    "margin",
    "accept_prob_top",
    "bundle",
    "bundle_hold",
    "driver_orders",
    "driver_rank",
)


class DispatchEnvV2(DispatchEnvV1):
    """``gigdispatch/Dispatch-v2``: Dispatch-v1 with bundle candidates and the features a pair score needs.

    Days, decisions, actions, masks and rewards are v1's; what differs is who the candidates are and what a
    policy sees of them.

    - **Candidates.** Of the ``k`` (default 10) candidate columns of each order, the first ``k - bundle_k`` are
      the eligible drivers nearest by pickup ETA (v1's), the last ``bundle_k`` (default 2) are drivers already
      due at the order's pickup (same node and group, the visit not under way: ``sim.bundle_candidates``),
      whom the order can join without a detour. With these columns the action space holds every decision
      the shipped Hungarian dispatcher (``checkpoints/dispatch``) makes, so it can be imitated exactly.
    - **Features.** Orders add ``dropoff_demand`` and ``dropoff_supply`` (open orders and idle drivers in the
      drop-off zone, /10: where the driver ends up) and ``older_orders`` (open orders placed before this
      one among the slots, /10). Candidates add ``margin`` (fee - base payout of the pair, /2000 cents, the
      fee's scale), ``accept_prob_top`` (acceptance probability at the top payout level), ``bundle`` (1 in
      the bundle columns), ``bundle_hold`` (how much later the joined visit happens, /1800 s; 0 elsewhere),
      ``driver_orders`` (other slot orders listing the same driver, /4) and ``driver_rank`` (how many of them
      the driver reaches sooner, /4): the competition for a driver that a matching resolves.

    ## Version History
    * v2: bundle candidate columns (``bundle_k``), ``k`` 10 by default, 3 order and 6 candidate features more.
    """

    _render_title = "Dispatch-v2"
    order_features = ORDER_FEATURES_V2
    candidate_features = CANDIDATE_FEATURES_V2

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        max_orders: int = 32,
        k: int = 10,
        reward_scale: float = 1.0,
        idle_only: bool = False,
        render_mode: str | None = None,
        seed_schedule: SeedSchedule | None = None,
        bundle_k: int = 2,
    ) -> None:
        if isinstance(bundle_k, bool) or not isinstance(bundle_k, int | np.integer) or not 0 <= bundle_k < k:
            raise ValueError(f"bundle_k must be a whole number in 0..k-1 ({k - 1}), got {bundle_k!r}")
        self.bundle_k = int(bundle_k)
        super().__init__(scenario, max_orders, k, reward_scale, idle_only, render_mode, seed_schedule)
        self._hold = np.zeros((self.M, self.K))

    def _candidates(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sim, b, n = self.sim, self.bundle_k, len(slots)
        among = sim.eligible(self.idle_only)
        ids, eta = sim.candidates(slots, self.K - b, among=among)
        self._hold[:] = 0.0
        if b:
            bids, beta, hold = sim.bundle_candidates(slots, among, b)
            ids, eta = np.concatenate([ids, bids], axis=1), np.concatenate([eta, beta], axis=1)
            self._hold[:n, self.K - b :] = hold
        return ids, eta

    def _contention(self, ids: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each valid pair of the ``(n, K)`` candidate table: how many *other* slot orders list the same
        driver (``driver_orders``), and how many of those the driver reaches sooner (``driver_rank``: 0 when
        this order is the driver's nearest). Two orders wanting one driver is what a matching resolves; these
        let a per-order network see it. A driver listed twice for one order counts once."""
        n, K = ids.shape
        others = np.zeros((n, K))
        rank = np.zeros((n, K))
        r, c = np.nonzero(ok)
        if r.size == 0:
            return others, rank
        d, e = ids[r, c], self._eta[r, c]
        # a (driver, order) pair listed twice takes its sooner ETA in both entries, so they sort side by side
        _, pair = np.unique(d * n + r, return_inverse=True)
        e_pair = np.full(pair.max() + 1, np.inf)
        np.minimum.at(e_pair, pair, e)
        e = e_pair[pair]
        srt = np.lexsort((r, e, d))  # by driver, then ETA (ties: older order first)
        d_s, r_s = d[srt], r[srt]
        first = np.ones(srt.size, bool)  # first entry of each (driver, order) pair
        first[1:] = (d_s[1:] != d_s[:-1]) | (r_s[1:] != r_s[:-1])
        start = np.searchsorted(d_s, d_s, side="left")
        seen = np.cumsum(first)  # distinct orders up to here, counting from the first driver's run
        base = seen[start] - 1  # distinct orders before this driver's run
        rk = seen - 1 - base  # distinct orders of the driver reached sooner (a repeat keeps its rank)
        total = np.bincount(d_s, weights=first.astype(np.float64), minlength=int(d_s.max()) + 1)[d_s]
        others[r[srt], c[srt]] = total - 1
        rank[r[srt], c[srt]] = rk
        return others, rank

    def _features(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o1, c1, g = super()._features()
        sim, od = self.sim, self.sim.orders
        M, K, n = self.M, self.K, len(self._slots)
        o_feat = np.zeros((M, len(self.order_features)), np.float32)
        c_feat = np.zeros((M, K, len(self.candidate_features)), np.float32)
        o_feat[:, : o1.shape[1]] = o1
        c_feat[..., : c1.shape[2]] = c1
        if n:
            s = self._slots
            zone = sim.city.zone_of[od.dropoff[s]]
            demand, supply = self._zone_counts  # v1's, computed just now on this epoch
            o_feat[:n, o1.shape[1] :] = (
                np.stack(
                    [
                        demand[zone],
                        supply[zone],
                        np.arange(n),  # the slots hold the open orders oldest first
                    ],
                    axis=1,
                )
                / 10.0
            )
            ids = self._cand[:n]
            ok = ids >= 0
            d = np.where(ok, ids, 0).ravel()
            ss = np.broadcast_to(s[:, None], ids.shape).ravel()
            pickup_m, pay0 = self._pair_terms  # v1's candidate features computed them for these pairs
            top = sim.payout_cents(ss, d, sim.n_levels - 1, pickup_m) if self.pricing else pay0
            p_top = sim.accept_prob(ss, d, top, pickup_m)
            bundle = np.zeros(ids.shape)
            bundle[:, K - self.bundle_k :] = 1.0
            others, rank = self._contention(ids, ok)
            extra = np.stack(
                [
                    ((od.fee[ss] - pay0) / 2000.0).reshape(ids.shape),
                    p_top.reshape(ids.shape),
                    bundle,
                    self._hold[:n] / 1800.0,
                    others / 4.0,
                    rank / 4.0,
                ],
                axis=-1,
            )
            c_feat[:n, :, c1.shape[2] :] = np.where(ok[..., None], extra, 0.0)
        return o_feat, c_feat, g
