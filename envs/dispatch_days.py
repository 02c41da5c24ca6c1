"""``gigdispatch/Dispatch-v3``: Dispatch-v1's observation and actions on a fixed clock, with a vector form whose
days are one set of arrays (``core.days.DaysSimulator``), so that N days cost far less than N times one.

``gymnasium.make("gigdispatch/Dispatch-v3", scenario="default")`` is one day (``DispatchEnvV3``);
``gymnasium.make_vec("gigdispatch/Dispatch-v3", num_envs=8, scenario="default")`` is eight
(``DispatchVecEnvV3``; ``envs.sb3_vec.SB3VecEnv`` hands it to stable-baselines3). Both run the same code
(``DaysDispatch``): the one-day env is the vector form with one day.

What differs from v1, and why: in v1 an env step is the next simulator step with something to decide, so days
advance by different numbers of simulator steps and cannot share a clock. In v3 **every simulator step is a
decision epoch** (``horizon.step_seconds`` apart; an epoch with no open order has nothing valid but *hold*) and
**every day runs to ``horizon.end`` + drain** (``Simulator.n_steps`` env steps; 540 on ``default``). So the
days of the vector form start, step and end together, and all of them are reset at once.

Observation and action spaces, masks, rewards (platform profit of the step) and ``info`` are v1's
(``DispatchEnvV1``). Candidates are v1's rule (the ``k`` eligible drivers with room and time, by pickup ETA,
over all of a day's eligible drivers, the order's last decliner left out), with ties broken by driver id.

**Same days.** Day ``i`` of the vector env reset with ``seed=s`` is the day the one-day env plays after
``reset(seed=s + i)``: the same observations, masks, rewards and KPIs for the same actions
(``tests/test_dispatch_v3.py``). Later days follow each sub-env's ``SeedSchedule`` as in v1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from gigdispatch.envs.core.arrays import nz
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.days import DaysSimulator
from gigdispatch.envs.core.decision import Decision
from gigdispatch.envs.core.kpis import compute_kpis
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.envs.dispatch_env import CANDIDATE_FEATURES, CLIP, GLOBAL_FEATURES, ORDER_FEATURES, slot_features
from gigdispatch.envs.dispatch_vec import RowsVectorEnv, vector_seeds
from gigdispatch.envs.scenarios.loader import load_scenario


def top_k_by_id(e: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest finite entries of each row of ``e`` (rows, m), ascending, equal entries by column:
    ``(ids, eta)``, each (rows, k), -1/inf padded; ``ids`` (rows, m) names the columns. Unlike
    ``EtaQueries.top_k`` the result does not depend on ``m`` or on padding columns of ``inf``."""
    rows, m = e.shape
    kk = min(k, m)
    out_ids = np.full((rows, k), -1, np.int64)
    out_e = np.full((rows, k), np.inf)
    if rows == 0 or kk == 0:
        return out_ids, out_e
    if kk < m:
        vk = np.partition(e, kk - 1, axis=1)[:, kk - 1 : kk]  # the kk-th smallest value of each row
        less = e < vk
        eq = e == vk
        need = kk - less.sum(axis=1, keepdims=True)
        take = less | (eq & (np.cumsum(eq, axis=1) <= need))  # ties at the boundary: the lowest columns
    else:
        take = np.ones_like(e, bool)
    r, c = np.nonzero(take)  # row-major: each row's columns ascending, kk per row
    pe = e[r, c].reshape(rows, kk)
    pc = c.reshape(rows, kk)
    srt = np.argsort(pe, axis=1, kind="stable")
    pe = np.take_along_axis(pe, srt, axis=1)
    pc = np.take_along_axis(pc, srt, axis=1)
    chosen = np.take_along_axis(ids, pc, axis=1)
    out_ids[:, :kk] = np.where(np.isfinite(pe), chosen, -1)
    out_e[:, :kk] = pe
    return out_ids, out_e


class DaysDispatch:
    """The dispatch problem of ``n`` days at once over one ``DaysSimulator``: slots, candidates, features,
    masks and decoding, each one vectorised pass over all days (no loop over days or orders)."""

    def __init__(
        self,
        scenario: str | GridScenario | Scenario,
        n: int,
        max_orders: int = 32,
        k: int = 8,
        reward_scale: float = 1.0,
        idle_only: bool = False,
    ) -> None:
        if max_orders < 1:
            raise ValueError(f"max_orders must be >= 1, got {max_orders}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.sim = DaysSimulator(self.scenario, n)
        self.n, self.M, self.K = int(n), int(max_orders), int(k)
        self.D = self.sim.D
        self.reward_scale = float(reward_scale)
        self.idle_only = bool(idle_only)
        self.pricing = bool(self.scenario.cfg.pricing.enabled) and self.sim.n_levels > 1
        self.L = self.sim.n_levels if self.pricing else 1
        self.obs_shapes = {
            "orders": (self.M, len(ORDER_FEATURES)),
            "candidates": (self.M, self.K, len(CANDIDATE_FEATURES)),
            "globals": (len(GLOBAL_FEATURES),),
        }
        self.nvec = np.array([self.K + 1] * self.M + ([self.L] * self.M if self.pricing else []), np.int64)
        self.slots = np.full((self.n, self.M), -1, np.int64)
        self.cand = np.full((self.n, self.M, self.K), -1, np.int64)
        self.eta = np.full((self.n, self.M, self.K), np.inf)

    # ------------------------------------------------------------------------------------- episode
    def reset(self, seeds: Sequence[int | None]) -> dict[str, np.ndarray]:
        self.sim.reset(seeds=list(seeds))
        self._prepare()
        return self._observe()

    def step(self, actions: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, bool, list[dict[str, Any]]]:
        """One epoch of every day: the decoded actions, one simulator step. Returns the observations, the
        rewards ``(n,)``, whether the days ended, and one info per day (with ``kpis`` at the end)."""
        dec, bad, conflicts = self.decode(actions)
        r: Any = self.sim.step(dec)  # per-day arrays
        done = bool(self.sim.done)
        infos: list[dict[str, Any]] = [
            {
                "fees": float(r["fees"][i]),
                "payouts": float(r["payouts"][i]),
                "refunds": float(r["refunds"][i]),
                "profit": float(r["profit"][i]),
                "sim_steps": 1,
                "sim_time": float(self.sim.t),
                "invalid_dispatch_actions": int(bad[i]),
                "conflicts": int(conflicts[i]),
            }
            for i in range(self.n)
        ]
        if done:
            for i, info in enumerate(infos):
                info["kpis"] = compute_kpis(self.sim.day(i))
            self.slots[:] = -1
            self.cand[:] = -1
            self.eta[:] = np.inf
        else:
            self._prepare()
        return self._observe(), np.asarray(r["profit"], np.float64) * self.reward_scale, done, infos

    # ------------------------------------------------------------------------------- actions, masks
    def decode(self, actions: np.ndarray) -> tuple[Decision, np.ndarray, np.ndarray]:
        """The merged ``Decision`` of ``actions`` (n, len(nvec)) and, per day, the invalid choices (treated as
        *hold*) and the conflicts (two orders choosing one driver: the older order gets it), as v1 counts them."""
        a = np.asarray(actions)
        if a.shape != (self.n, len(self.nvec)):
            raise ValueError(f"actions: expected shape {(self.n, len(self.nvec))}, got {a.shape}")
        M, K = self.M, self.K
        choice = a[:, :M].astype(np.int64)
        level = a[:, M:].astype(np.int64) if self.pricing else np.zeros((self.n, M), np.int64)
        valid_slot = self.slots >= 0
        offer = valid_slot & (choice >= 0) & (choice < K)
        cand = np.take_along_axis(self.cand, np.clip(choice, 0, K - 1)[..., None], axis=2)[..., 0]
        cand = np.where(offer, cand, -1)
        bad = (offer & (cand < 0)) | (choice < 0) | (choice > K) | (~valid_slot & (choice != K))
        bad |= (level < 0) | (level >= self.L)
        offer &= cand >= 0
        level = np.clip(level, 0, self.L - 1)
        rows = np.flatnonzero(offer.ravel())  # day by day, slot by slot (driver ids never repeat across days)
        drivers = cand.ravel()[rows]
        _, first = np.unique(drivers, return_index=True)  # the older order wins a contested driver
        keep = np.zeros(len(rows), bool)
        keep[first] = True
        conflicts = np.bincount(rows[~keep] // M, minlength=self.n)
        rows = rows[keep]
        dec = Decision(order=self.slots.ravel()[rows], driver=cand.ravel()[rows], level=level.ravel()[rows])
        return dec, bad.sum(axis=1), conflicts

    def action_masks(self) -> np.ndarray:
        """(n, len-of-flat-mask) boolean masks, v1's layout: candidates that exist, hold, level 0, all levels
        of a valid slot."""
        n, M, K = self.n, self.M, self.K
        cand_ok = np.ones((n, M, K + 1), bool)
        cand_ok[:, :, :K] = self.cand >= 0
        parts = [cand_ok.reshape(n, -1)]
        if self.pricing:
            lv = np.zeros((n, M, self.L), bool)
            lv[:, :, 0] = True
            lv[self.slots >= 0] = True
            parts.append(lv.reshape(n, -1))
        return np.concatenate(parts, axis=1)

    def sample_actions(self, rng: np.random.Generator) -> np.ndarray:
        """(n, len(nvec)) random valid actions: per slot, uniform over its valid choices (and levels)."""
        mask = self.action_masks()
        n, M, K = self.n, self.M, self.K
        groups = [mask[:, : M * (K + 1)].reshape(n, M, K + 1)]
        if self.pricing:
            groups.append(mask[:, M * (K + 1) :].reshape(n, M, self.L))
        picks = [np.argmax(np.where(g, rng.random(g.shape), -1.0), axis=2) for g in groups]
        return np.concatenate(picks, axis=1).astype(np.int64)

    # ------------------------------------------------------------------------------------ internals
    def _prepare(self) -> None:
        """Each day's slots (its ``max_orders`` oldest open orders) and their candidates."""
        sim, D, M, K = self.sim, self.D, self.M, self.K
        op = sim.open_orders()
        day = sim.oday[op]
        order = np.argsort(day, kind="stable")
        op, day = op[order], day[order]
        rank = np.arange(len(op)) - np.searchsorted(day, day, side="left")
        keep = rank < M
        op, day, rank = op[keep], day[keep], rank[keep]
        self.slots[:] = -1
        self.slots[day, rank] = op
        self.cand[:] = -1
        self.eta[:] = np.inf
        if op.size == 0:
            return
        elig = nz(sim.eligible(self.idle_only))
        if elig.size == 0:
            return
        eday = elig // D
        counts = np.bincount(eday, minlength=self.n)
        pos = np.arange(len(elig)) - np.searchsorted(eday, eday, side="left")
        width = int(counts.max())
        node, t_free = sim.driver_free(elig)
        grid = np.full((self.n, width), -1, np.int64)
        grid[eday, pos] = np.arange(len(elig))  # positions into elig, per day
        cols = grid[day]  # (n_slots, width)
        ok = cols >= 0
        c = np.maximum(cols, 0)
        d = elig[c]
        dr, od = sim.drivers, sim.orders
        dn = node[c]
        zf = sim.state.factor[sim.city.zone_of[dn]]
        tt = sim.city.travel_s(dn, od.pickup[op][:, None])
        e = (t_free[c] - sim.t) + tt * zf / dr.speed[d]
        room = dr.capacity[d] - sim.state.committed[d]
        fits = ok & (room >= od.volume[op][:, None])
        t_pick = np.maximum(sim.t + e + sim.pickup_svc / 2.0, od.t_ready[op][:, None])
        fits &= t_pick <= dr.shift_end[d]
        ids, eta = top_k_by_id(np.where(fits, e, np.inf), np.where(ok, d, -1), K)
        ids = sim.drop_last_decliners(op, ids)
        self.cand[day, rank] = ids
        self.eta[day, rank] = np.where(ids >= 0, eta, np.inf)

    def _observe(self) -> dict[str, np.ndarray]:
        """v1's features, for every day: ``orders`` (n, M, 12), ``candidates`` (n, M, K, 9), ``globals`` (n, 6)."""
        sim = self.sim
        n, M, K, D = self.n, self.M, self.K, self.D
        o_feat = np.zeros((n, M, len(ORDER_FEATURES)), np.float32)
        c_feat = np.zeros((n, M, K, len(CANDIDATE_FEATURES)), np.float32)
        op = sim.open_orders()
        demand = sim.zone_demand_of(op)
        idle = sim.eligible(idle_only=True)
        supply = sim.zone_supply_of(idle)
        day, rank = np.nonzero(self.slots >= 0)
        if day.size:
            o_feat[day, rank], c_feat[day, rank], _ = slot_features(
                sim, self.slots[day, rank], self.cand[day, rank], self.eta[day, rank], demand, supply
            )
        tod = (sim.t % 86400.0) / 86400.0 * 2 * np.pi
        g = np.empty((n, len(GLOBAL_FEATURES)), np.float32)
        g[:, 0], g[:, 1] = np.sin(tod), np.cos(tod)
        g[:, 2] = (sim.t - sim.t_start) / max(sim.day_end - sim.t_start, 1.0)
        g[:, 3] = np.bincount(sim.oday[op], minlength=n) / 100.0
        g[:, 4] = np.bincount(sim.dday[idle], minlength=n) / max(D, 1)
        g[:, 5] = sim.surge.reshape(n, -1).mean(axis=1) - 1.0
        return {
            "orders": np.clip(o_feat, -CLIP, CLIP, out=o_feat),
            "candidates": np.clip(c_feat, -CLIP, CLIP, out=c_feat),
            "globals": np.clip(g, -CLIP, CLIP, out=g),
        }


def _spaces(core: DaysDispatch) -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    obs = spaces.Dict({key: spaces.Box(-CLIP, CLIP, shape, np.float32) for key, shape in core.obs_shapes.items()})
    return obs, spaces.MultiDiscrete(core.nvec.copy())


class DispatchEnvV3(gym.Env):
    """``gigdispatch/Dispatch-v3``: one day (see the module docstring); arguments as ``DispatchEnv`` (``scenario``,
    ``max_orders``, ``k``, ``reward_scale``, ``idle_only``, ``seed_schedule``).

    ## Version History
    * v3: v1's observation, actions, masks and rewards; every simulator step is an epoch and every day runs to
      ``horizon.end`` + drain, so that days can share one clock (the vector form batches them); candidate ties
      go to the lower driver id.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        max_orders: int = 32,
        k: int = 8,
        reward_scale: float = 1.0,
        idle_only: bool = False,
        seed_schedule: SeedSchedule | None = None,
    ) -> None:
        self.core = DaysDispatch(scenario, 1, max_orders, k, reward_scale, idle_only)
        self.observation_space, self.action_space = _spaces(self.core)
        self.seed_schedule = seed_schedule if seed_schedule is not None else SeedSchedule()
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        obs = self.core.reset([self.seed_schedule.day(seed)])
        self._done = False
        return {k: v[0] for k, v in obs.items()}, {}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("the episode is over: call reset()")
        a = np.asarray(action)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action: expected shape {self.action_space.shape}, got {a.shape}")
        obs, reward, done, infos = self.core.step(a[None])
        self._done = done
        return {k: v[0] for k, v in obs.items()}, float(reward[0]), done, False, infos[0]

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()[0]

    def sample_action(self, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.core.sample_actions(self.np_random if rng is None else rng)[0]


class DispatchVecEnvV3(RowsVectorEnv):
    """``num_envs`` days of Dispatch-v3 in one ``DaysSimulator`` (same-step autoreset: the days end together and
    are all reset in the step that ends them; ``infos["final_obs"]`` / ``["final_info"]`` hold the ended days).

    Arguments as ``DispatchEnvV3`` plus ``num_envs``, ``seed_schedules`` (one ``SeedSchedule`` per sub-env) and
    ``max_episode_steps`` (None, or at least the day's ``n_steps``: the days are never cut short).
    ``step_rows`` / ``rows`` fill buffers and return per-env infos (what ``envs.sb3_vec.SB3VecEnv`` reads).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 8,
        scenario: str | GridScenario | Scenario = "default",
        max_orders: int = 32,
        k: int = 8,
        reward_scale: float = 1.0,
        idle_only: bool = False,
        seed_schedules: Sequence[SeedSchedule] | None = None,
        max_episode_steps: int | None = None,
    ) -> None:
        self._setup_rows(num_envs, seed_schedules)
        self.core = DaysDispatch(scenario, self.num_envs, max_orders, k, reward_scale, idle_only)
        n_steps = self.core.sim.n_steps
        if max_episode_steps is not None and max_episode_steps < n_steps:
            raise ValueError(
                f"max_episode_steps: {max_episode_steps} would cut the days short; a Dispatch-v3 day is always"
                f" {n_steps} steps (the days share one clock), so leave it out or give at least {n_steps}"
            )
        self.single_observation_space, self.single_action_space = _spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.schedules = (
            list(seed_schedules) if seed_schedules is not None else [SeedSchedule() for _ in range(self.num_envs)]
        )
        self._obs = {}

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start a new day in every sub-env: ``seed`` an int (day ``seed + i`` in sub-env ``i``), one seed (or
        None) per sub-env, or None (each sub-env's next scheduled day)."""
        seeds = vector_seeds(seed, self.num_envs)
        self._obs = self.core.reset([sch.day(s) for sch, s in zip(self.schedules, seeds, strict=True)])
        self._started = True
        return self._copy_obs(), {}

    def step_rows(self, actions: np.ndarray) -> list[dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        obs, rewards, done, infos = self.core.step(np.asarray(actions))
        self._rewards[:] = rewards
        self._terminated[:] = done
        if done:
            final = obs
            obs = self.core.reset([sch.day(None) for sch in self.schedules])
            infos = [
                {"final_obs": {k: v[i] for k, v in final.items()}, "final_info": info} for i, info in enumerate(infos)
            ]
        self._obs = obs
        return infos

    def action_masks(self) -> np.ndarray:
        return self.core.action_masks()

    def sample_actions(self, rng: np.random.Generator) -> np.ndarray:
        return self.core.sample_actions(rng)

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        if name == "action_masks":
            return tuple(self.action_masks())
        raise AttributeError(f"DispatchVecEnvV3 has no per-day method {name!r}")

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return (getattr(self, name),) * self.num_envs

    def set_attr(self, name: str, values: Any | Sequence[Any]) -> None:
        raise AttributeError("DispatchVecEnvV3: the days share one simulator; set attributes on it directly")
