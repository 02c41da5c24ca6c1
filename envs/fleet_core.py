"""The drivers' side of the simulator as arrays: one row per driver, shared by the PettingZoo env
(``envs.fleet_env``) and the batched stable-baselines3 adapter (``envs.fleet_vec``).

Actions (``Discrete(10)``) per driver:

| action | meaning | valid when |
|---|---|---|
| 0 | stay / no-op; declines a pending offer | always |
| 1 | accept the pending offer | an offer is pending |
| 2..9 | move to neighbouring zone ``zone_neighbors[zone, action - 2]`` | idle, no offer, that neighbour exists |

Observation versions (``FleetCore(obs_version=...)``): version 0 is ``OBS_FIELDS_V0`` (41 fields: the driver's own
state, then open orders and idle drivers in its zone and its 8 neighbours); version 1, the latest, is
``OBS_FIELDS_V1``: version 0's 41 fields and then ``placed_0..8``, the orders requested (placed, converted or not)
in the last ``FORECAST_MIN`` minutes by pickup zone in the same 9 zones -- the recent demand a driver can read as a
forecast of the next minutes'. Version 0's rows are unchanged, and the version changes no dynamics.

An invalid action is treated as 0 and counted (``info["invalid_driver_actions"]``: the drivers' actions of the
step that the mask did not allow). The drivers' moves join the platform's offers in one ``Decision``; the
entries the simulator skips (a move of a driver offered an order in the same step) are the day's KPI
``invalid_decision_pairs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gigdispatch.envs.core.arrays import nz
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.nearest import NearestPolicy
from gigdispatch.envs.core.policy import Policy
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ACC_ACTIVE, PH_DRIVING, PH_IDLE, PH_OFFLINE, PH_SERVICE, VEHICLES
from gigdispatch.envs.scenarios.loader import load_scenario

N_ACTIONS = 10
OBS_FIELDS_V0 = (
    "online",
    "idle",
    "driving",
    "at_stop",
    "load_share",
    "route_stops",
    "has_offer",
    "offer_payout",
    "offer_tip",
    "offer_pickup_km",
    "offer_trip_km",
    "offer_in_preferred_zone",
    "tod_sin",
    "tod_cos",
    "x",
    "y",
    "in_preferred_zone",
    "performance",
    "earnings_per_hour",
    "bike",
    "car",
    "van",
    "shift_left",
    *[f"demand_{i}" for i in range(9)],
    *[f"supply_{i}" for i in range(9)],
)
FORECAST_MIN = 15.0  # placed_*: the orders requested in the last 15 minutes
OBS_FIELDS_V1 = (*OBS_FIELDS_V0, *[f"placed_{i}" for i in range(9)])
OBS_FIELDS_BY_VERSION = {0: OBS_FIELDS_V0, 1: OBS_FIELDS_V1}
OBS_DIMS = {v: len(fields) for v, fields in OBS_FIELDS_BY_VERSION.items()}  # {0: 41, 1: 50}
OBS_VERSION = 1  # the latest observation version: what new code and the envs' defaults use
OBS_FIELDS = OBS_FIELDS_BY_VERSION[OBS_VERSION]
OBS_DIM = OBS_DIMS[OBS_VERSION]
N_OWN = OBS_FIELDS_V0.index("demand_0")  # the fields before the zone ones (18 demand/supply, 9 more placed_*)
CLIP = 5.0
# one row of the (D, 10) bool action mask seen as two fields: actions 0-1 as a uint16, the 8 moves as a uint64
_MASK_ROW = np.dtype(
    {"names": ["stay_accept", "moves"], "formats": ["<u2", "<u8"], "offsets": [0, 2], "itemsize": N_ACTIONS}
)


def check_obs_version(obs_version: int, what: str = "obs_version") -> int:
    """``obs_version`` as an int if it is one of ``OBS_DIMS`` (0, 1); else ``InputError`` naming ``what``."""
    if isinstance(obs_version, bool) or not isinstance(obs_version, int | np.integer) or obs_version not in OBS_DIMS:
        versions = ", ".join(f"{v} ({d} fields)" for v, d in OBS_DIMS.items())
        raise InputError(f"{what}: must be one of {versions}, got {obs_version!r}")
    return int(obs_version)


def obs_version_of_dim(dim: int) -> int | None:
    """The observation version whose rows have ``dim`` fields (41: 0, 50: 1); None for any other width."""
    return next((v for v, d in OBS_DIMS.items() if d == dim), None)


class PlatformPolicyError(InputError, TypeError):
    """``platform_policy`` is not a policy object (a name, say); the message says what to pass instead."""


def check_platform_policy(platform_policy: Policy | None) -> Policy:
    """``platform_policy``, or a new ``NearestPolicy`` for ``None``; ``PlatformPolicyError`` if it is not a policy."""
    if platform_policy is None:
        return NearestPolicy()
    if isinstance(platform_policy, Policy):
        return platform_policy
    if isinstance(platform_policy, str):
        got = f"the name {platform_policy!r}"
        example = platform_policy
    else:
        got = f"a {type(platform_policy).__name__}"
        example = "hungarian"
    raise PlatformPolicyError(
        f"platform_policy: pass a Policy object (e.g. gigdispatch.agents.make_policy({example!r})) or None "
        f"for the nearest-driver dispatcher, not {got}"
    )


class FleetCore:
    """Drivers as agents over one ``Simulator``; the platform side is a ``Policy`` object (default
    ``NearestPolicy()``). ``obs_version`` picks the observation rows (0: ``OBS_FIELDS_V0``, 1, the default:
    ``OBS_FIELDS_V1``); ``obs_dim`` / ``obs_fields`` are that version's width and field names."""

    def __init__(
        self,
        scenario: str | GridScenario | Scenario = "default",
        platform_policy: Policy | None = None,
        reward: str = "own",
        obs_version: int = OBS_VERSION,
    ) -> None:
        if reward not in ("own", "platform"):
            raise InputError(
                f"reward: must be 'own' (the driver's earnings minus its costs) or 'platform', got {reward!r}"
            )
        self.obs_version = check_obs_version(obs_version)
        self.obs_fields: tuple[str, ...] = OBS_FIELDS_BY_VERSION[self.obs_version]
        self.obs_dim = OBS_DIMS[self.obs_version]
        self.policy = check_platform_policy(platform_policy)
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.sim = Simulator(self.scenario)
        self.reward_mode = reward
        cfg = self.scenario.cfg
        names = [v for v in VEHICLES]
        self._cost_km = np.array([cfg.fleet.vehicles[n].cost_per_km if n in cfg.fleet.vehicles else 0.0 for n in names])
        city = self.scenario.city
        xy = city.node_xy
        self._lo = xy.min(axis=0)
        self._inv_span = 1.0 / np.maximum(xy.max(axis=0) - self._lo, 1.0)
        xy01 = (xy - self._lo) * self._inv_span  # (N, 2) node positions scaled to 0..1 (float64)
        self._zone9 = np.concatenate([np.arange(city.n_zones)[:, None], city.zone_neighbors], axis=1)  # (Z, 9)
        self._zone9_ok = self._zone9 >= 0
        self._zone9_idx_t = np.where(self._zone9_ok, self._zone9, 0).T  # (9, Z)
        # the zone rows: 9 demand, 9 supply and, from version 1, 9 placed (orders requested in the last
        # FORECAST_MIN minutes); 0.1 per order/driver, 0 for missing neighbours
        n_rows = self.obs_dim - N_OWN  # 18 (version 0) or 27
        ok = np.concatenate([self._zone9_ok] * (n_rows // 9), axis=1).T  # (n_rows, Z)
        self._zone_scale = np.where(ok, 0.1, 0.0)
        self._zone_tbl = np.zeros((n_rows, city.n_zones))
        # driver-major copy in float32, plus one all-zero row (index Z) that inactive drivers read
        self._zone_rows32 = np.zeros((city.n_zones + 1, n_rows), np.float32)
        self._window = np.array([-FORECAST_MIN * 60.0, 0.0])  # placed_*: [t - 900 s, t)
        self._node_x01 = np.ascontiguousarray(xy01[:, 0])
        self._node_y01 = np.ascontiguousarray(xy01[:, 1])
        # the 8 "move to neighbour i" flags of each zone as one uint64 (bytes 0/1), for a 1-D gather per step
        self._moves64 = np.ascontiguousarray(self._zone9_ok[:, 1:]).view("<u8").ravel()
        self.n = 0
        self._mask = np.zeros((0, N_ACTIONS), bool)

    # ----------------------------------------------------------------------------------------- API
    def reset(self, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Start day ``seed`` on the core's own simulator; returns ``(obs (D, F), mask (D, A))``."""
        self.sim.reset(seed)
        self.attach(self.sim)
        return self._observe()

    def attach(self, sim: Simulator, rng: np.random.Generator | None = None) -> None:
        """Play the episode just loaded into ``sim`` (a simulator of this core's scenario, reset by its owner):
        its drivers answer their own offers, the platform policy is reset with ``rng`` (default: the episode's
        ``policy`` stream) and the per-driver arrays are fitted. ``reset`` calls it on the core's own simulator;
        a policy that plays the drivers inside someone else's day (``agents.fleet_learned``) calls it at its own
        ``reset``, so that both play the same day."""
        self.sim = sim
        sim.external_accept[:] = ~sim.drivers.always_accept  # the agents answer their own offers
        self.policy.reset(sim, sim.rng["policy"] if rng is None else rng)
        self.fit_drivers()
        self.invalid_driver_actions = 0  # over the day so far

    def fit_drivers(self) -> None:
        """The per-driver arrays (sizes, one-hot vehicles, capacities, costs) for the drivers now in ``self.sim``;
        again whenever its ``drivers`` are replaced (``Simulator.load_state``, as the service does per request)."""
        sim = self.sim
        self.n = sim.drivers.n
        self._rows = np.arange(self.n)
        self._vehicle_1hot_t = np.ascontiguousarray(np.eye(3, dtype=np.float32)[sim.drivers.vehicle].T)  # (3, D), fixed
        self._ob = np.zeros(
            (N_OWN, self.n), np.float32
        )  # the own-state fields, feature-major scratch, rewritten every step
        cap = sim.drivers.capacity
        self._inv_capacity = np.where(np.isfinite(cap), 1.0 / np.maximum(cap, 1e-9), 0.0)  # unlimited: load share 0
        self._cost_m = self._cost_km[sim.drivers.vehicle] / 1000.0  # euros per metre, fixed for the episode
        self._earn = sim.drivers.earnings.copy()
        self._driven = sim.drivers.driven_m.copy()
        self._mask = np.zeros((self.n, N_ACTIONS), bool)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, dict[str, Any]]:
        """Apply one action per driver; returns ``(obs (D, F), mask (D, A), reward (D,), done, info)``."""
        sim, dr = self.sim, self.sim.drivers
        dec, invalid = self.decide(actions)
        terms = sim.step(dec)
        if self.reward_mode == "own":  # euros earned minus the driving cost of the metres driven this step
            earn = (dr.earnings - self._earn) * 0.01
            cost = (dr.driven_m - self._driven) * self._cost_m
            reward = (earn - cost).astype(np.float32)
        else:
            reward = np.full(self.n, terms["profit"], np.float32)
        np.copyto(self._earn, dr.earnings)
        np.copyto(self._driven, dr.driven_m)
        obs, mask = self._observe()
        info = {"invalid_driver_actions": invalid, "platform_profit": terms["profit"], "sim_time": sim.t}
        return obs, mask, reward, bool(sim.done), info

    def decide(self, actions: np.ndarray) -> tuple[Decision, int]:
        """The step's ``Decision`` for one action per driver (against the mask of the last observation) and the
        number of invalid actions (treated as 0, added to ``invalid_driver_actions``).

        Changes the simulator as the step does before its decision: the pending offers are answered now
        (``Simulator.respond``; 0 declines, 1 accepts). The platform policy then decides on the state after
        those answers, and the drivers' moves join its decision."""
        sim, dr = self.sim, self.sim.drivers
        a, invalid = self.valid_actions(actions)
        self.invalid_driver_actions += invalid
        # 1. answers to pending offers (0 declines, 1 accepts)
        pending = nz(dr.offer_order >= 0)
        if pending.size:
            sim.respond(pending, a[pending] == 1)
        # 2. moves of idle drivers to a neighbouring zone
        movers, zones = self.move_targets(a)
        # 3. the platform's dispatch decision, with the drivers' own moves
        dec = self.policy.act(sim)
        dec = Decision(
            order=dec.order,
            driver=dec.driver,
            level=dec.level,
            reposition_driver=movers,
            reposition_zone=zones,
            unassign=dec.unassign,
        )
        return dec, invalid

    def valid_actions(self, actions: np.ndarray) -> tuple[np.ndarray, int]:
        """``actions`` (one per driver) as int64 with every action the last mask does not allow set to 0, and
        how many those were. ``ValueError`` unless there is one action per driver."""
        a = np.asarray(actions).reshape(-1)
        if a.shape[0] != self.n:
            raise ValueError(f"actions: expected one per driver ({self.n}), got {a.shape[0]}")
        a = a.astype(np.int64)
        in_range = (a >= 0) & (a < N_ACTIONS)
        if in_range.all():  # the usual case: one gather from the masks
            ok = self._mask[self._rows, a]
        else:
            ok = in_range
            ok[ok] = self._mask[nz(ok), a[ok]]
        invalid = int((~ok).sum())
        return np.where(ok, a, 0), invalid

    def move_targets(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(drivers, zones) of the move actions (2..9) among valid ``actions``: each mover's neighbouring zone."""
        sim = self.sim
        movers = nz(actions >= 2)
        zones = sim.city.zone_neighbors[sim.city.zone_of[sim.drivers.node[movers]], actions[movers] - 2]
        return movers, zones

    def action_masks(self) -> np.ndarray:
        """(D, 10) bool: the valid actions of each driver now."""
        return self._mask

    def observe(self) -> tuple[np.ndarray, np.ndarray]:
        """``(obs (D, F), mask (D, A))`` of the simulator's current state (what ``reset`` and ``step`` return);
        the mask becomes the one ``decide`` checks actions against."""
        return self._observe()

    # ----------------------------------------------------------------------------------- internals
    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        sim, dr, od = self.sim, self.sim.drivers, self.sim.orders
        n = self.n
        phase = dr.phase
        active = (phase != PH_OFFLINE) & (dr.account == ACC_ACTIVE)
        offer = dr.offer_order >= 0
        idle = (phase == PH_IDLE) & (dr.route_len == 0) & ~offer
        node = dr.node
        zone = sim.city.zone_of[node]
        # masks: the 8 move flags of a zone packed in one uint64 (Z,), so one 1-D gather serves every driver
        # and each row's first two bytes (no-op, accept) as one little-endian uint16: 1 + 256 * accept
        mask = np.empty((n, N_ACTIONS), bool)
        rows = mask.view(_MASK_ROW).reshape(n)
        rows["stay_accept"] = np.where(offer & active, np.uint16(257), np.uint16(1))
        np.multiply(self._moves64[zone], idle & active, out=rows["moves"])
        self._mask = mask
        # observation, built feature-major (contiguous rows) in obs_fields order, then transposed once;
        # offer features only where an offer is pending
        ob = self._ob
        ob[0] = active
        ob[1] = idle
        ob[2] = phase == PH_DRIVING
        ob[3] = phase == PH_SERVICE
        np.multiply(sim.committed, self._inv_capacity, out=ob[4], casting="unsafe")
        np.multiply(dr.route_len, 1.0 / sim.S, out=ob[5], casting="unsafe")
        ob[6:12] = 0.0
        oi = offer.nonzero()[0]
        if oi.size:
            o = dr.offer_order[oi]
            ob[6, oi] = 1.0
            ob[7, oi] = np.minimum(od.payout[o] / 1000.0, CLIP)
            ob[8, oi] = np.minimum(od.tip[o] / 500.0, CLIP)
            ob[9, oi] = np.minimum(sim.city.dist_m(dr.leg_to[oi], od.pickup[o]) / 5000.0, CLIP)
            ob[10, oi] = np.minimum(sim.city.dist_m(od.pickup[o], od.dropoff[o]) / 5000.0, CLIP)
            ob[11, oi] = sim.city.zone_of[od.pickup[o]] == dr.pref_zone[oi]
        tod = (sim.t % 86400.0) / 86400.0 * 2 * np.pi
        ob[12] = np.sin(tod)
        ob[13] = np.cos(tod)
        # position in the city (0..1), interpolated along the leg for driving drivers
        nx, ny = self._node_x01, self._node_y01
        ob[14] = nx[node]
        ob[15] = ny[node]
        drv = (phase == PH_DRIVING).nonzero()[0]
        if drv.size:
            frac = 1.0 - dr.leg_left[drv] / np.maximum(dr.leg_ff[drv], 1e-9)
            to, at = dr.leg_to[drv], node[drv]
            ob[14, drv] += (nx[to] - nx[at]) * frac
            ob[15, drv] += (ny[to] - ny[at]) * frac
        ob[16] = zone == dr.pref_zone
        ob[17] = dr.performance()
        online_h = (sim.t - dr.t_online_since) * (
            1.0 / 3600.0
        )  # nan offline (so 0 below); inactive rows are zeroed last
        earn = np.where(online_h > 0.05, sim.shift_earn / (2000.0 * np.maximum(online_h, 0.05)), 0.0)
        np.minimum(earn, CLIP, out=ob[18], casting="unsafe")
        ob[19:22] = self._vehicle_1hot_t
        ob[22] = np.minimum(np.maximum((dr.shift_end - sim.t) * (1.0 / (4 * 3600.0)), 0.0), 1.0)
        # own zone + 8 neighbours: one per-zone table (18 rows: 9 demand, 9 supply, and in version 1 9 placed;
        # Z columns), one gather
        tbl, zone9 = self._zone_tbl, self._zone9_idx_t
        tbl[:9] = sim.zone_demand[zone9]
        tbl[9:18] = sim.zone_supply[zone9]
        if self.obs_version >= 1:  # orders placed in [t - 900 s, t), by pickup zone (orders sorted by placement)
            lo, hi = np.searchsorted(od.t_place, sim.t + self._window).tolist()
            hi = min(hi, sim.state.next_order)  # never one not placed (none is, after the horizon's end)
            tbl[18:] = sim.zone_demand_of(slice(min(lo, hi), hi))[zone9]
        tbl *= self._zone_scale
        np.minimum(tbl, CLIP, out=tbl)  # counts are >= 0
        self._zone_rows32[:-1] = tbl.T  # the float32 rounding happens here once per zone, not once per driver
        # off shift, suspended, not yet verified: zeroed observation (own fields times 0, the zero zone row)
        ob *= active
        out = np.empty((n, self.obs_dim), np.float32)
        out[:, :N_OWN] = ob.T
        out[:, N_OWN:] = self._zone_rows32[np.where(active, zone, self._zone_rows32.shape[0] - 1)]
        return out, mask
