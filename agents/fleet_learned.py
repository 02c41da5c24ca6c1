"""A driver policy trained by ``gigdispatch train`` on the fleet env (``env: fleet``), playing a whole day in the
simulator like any other ``Policy``.

A fleet run trains one shared driver network through ``envs.FleetVecEnv``: every driver's observation row
goes through it and it picks, per driver, stay / accept the pending offer / move to one of the 8 neighbouring
zones (``envs.fleet_core``). ``LearnedFleetPolicy("runs/fleet-default-...")`` reads the run's ``config.yaml``
and loads ``checkpoints/best.zip`` (or ``latest.zip``; a ``.zip`` inside a run folder loads that checkpoint),
then plays both sides of the day the way the env does, through the env's own code (``FleetCore``: the
observation, the mask, the validity rule and the application of the actions are its, not rewritten here):

* the platform side is the run's ``fleet.platform_policy`` (``nearest``, ``envs.core.nearest.NearestPolicy``,
  by default), asked after the drivers' answers, as in the env;
* every driver whose offers are answered from outside (``Simulator.external_accept``: all but the
  always-accepting owned fleet, set at ``reset`` as the env does) accepts or declines its pending offer as the
  network says, through ``Simulator.respond``, and every idle driver moves to the neighbouring zone the network
  picks (``Decision.reposition_*``) or stays.

Actions are greedy: ``model.predict(obs, deterministic=True)`` with the env's action masks for MaskablePPO runs
(a PPO run predicts without masks and an action its mask forbids counts as 0, stay / decline, as in the env).
So ``Simulator.run(LearnedFleetPolicy(run), seed=s)`` plays the very day the model plays in ``FleetVecEnv`` on
day ``s`` with deterministic actions.

Unlike a platform policy, ``act`` changes the simulator before it returns: the drivers' answers to their
pending offers are this policy's to give, and they are given now (``Simulator.respond``), before the platform
decides on the state after them -- exactly the order of ``FleetCore.step``.

In the service (``gigdispatch serve``) the network answers ``/v1/reposition`` (``moves``: the drivers it sends
to a neighbouring zone), and ``/v1/dispatch`` is the platform policy's answer (a request carries no pending
offer, so there is nothing to accept or decline there). A request's fleet replaces the simulator's drivers; the
per-driver arrays are refitted whenever that happens (``FleetCore.fit_drivers``).

The observation version is the model's: a model that reads 41-field rows was trained on version 0 (every run from
before ``fleet.obs_version``), one that reads 50 on version 1, and the core observes the day in that version.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gigdispatch.agents.base import Policy
from gigdispatch.agents.learned import (
    RUN_CONFIG,
    CorruptCheckpointError,
    LearnedPolicyError,
    algo_class,
    load_model,
    read_run_yaml,
    resolve_checkpoint,
)
from gigdispatch.envs.core.nearest import NearestPolicy
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.fleet_core import N_ACTIONS, OBS_DIMS, FleetCore, obs_version_of_dim

# the algorithms of a fleet run (``training.train``: ``env: fleet`` trains SB3's MlpPolicy with one of these)
FLEET_ALGORITHMS = ("maskable_ppo", "ppo")
FLEET_MASKED = frozenset({"maskable_ppo"})  # these predict with the env's action masks


def read_fleet_config(run: Path, what: str = "policy") -> dict[str, Any]:
    """What a fleet policy needs from a run's ``config.yaml``: ``{"algo", "platform_policy"}``.

    Plain checks, no schema: ``env: fleet``, an ``algo`` of ``FLEET_ALGORITHMS`` and, if given, a ``fleet``
    mapping whose ``platform_policy`` is a name (default ``nearest``, the training config's default);
    otherwise ``LearnedPolicyError`` naming ``what``, the file and the key."""
    f = run / RUN_CONFIG
    data = read_run_yaml(run, what)
    if data.get("env") != "fleet":
        raise LearnedPolicyError(f"{what}: {f}: env: {data.get('env')!r} is not 'fleet' (a driver policy's run)")
    algo = data.get("algo")
    if algo not in FLEET_ALGORITHMS:
        raise LearnedPolicyError(f"{what}: {f}: algo: {algo!r} is not one of {', '.join(FLEET_ALGORITHMS)}")
    fleet = data.get("fleet", {})
    if fleet is None:
        fleet = {}
    if not isinstance(fleet, dict):
        raise LearnedPolicyError(f"{what}: {f}: fleet: expected a mapping of the FleetVecEnv arguments, got {fleet!r}")
    platform = fleet.get("platform_policy", "nearest")
    if not isinstance(platform, str) or not platform.strip():
        raise LearnedPolicyError(f"{what}: {f}: fleet.platform_policy: expected a policy name, got {platform!r}")
    return {"algo": algo, "platform_policy": platform}


class LearnedFleetPolicy(Policy):
    """A fleet run's shared driver network for every driver, with the run's platform policy dispatching.

    ``make_platform``: makes the platform policy from the run's ``fleet.platform_policy`` name
    (``agents.make_policy`` passes itself); without it only ``nearest`` can be made. Attributes: ``run_dir``,
    ``checkpoint`` (the .zip loaded), ``algo``, ``masked``, ``platform_name``, ``platform`` (the platform policy),
    ``model`` (the SB3 model) and ``obs_version`` (the observation rows it reads, from its observation space).
    """

    name: ClassVar[str] = "learned-fleet"

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        torch_threads: int | None = 1,
        make_platform: Callable[[str], Policy] | None = None,
    ) -> None:
        where = f"policy {str(path)!r}"
        run, ckpt = resolve_checkpoint(path)
        rc = read_fleet_config(run, what=where)
        self.run_dir = run
        self.algo: str = rc["algo"]
        self.masked = self.algo in FLEET_MASKED
        self.platform_name: str = rc["platform_policy"]
        self.platform = self._make_platform(self.platform_name, make_platform, f"{where}: {run / RUN_CONFIG}")
        algo_class(self.algo)  # torch and SB3 installed, else one line naming the extra
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        try:
            self.model = load_model(self.algo, ckpt, device=device)
        except CorruptCheckpointError as exc:  # named as a fleet run's: a dispatch checkpoint may sit under one
            raise CorruptCheckpointError(f"{where} (env 'fleet'): {exc}") from None
        self.checkpoint = ckpt
        self.obs_version = self._check_spaces(where)
        self._core: FleetCore | None = None
        self._drivers: Any = None  # the ``sim.drivers`` object the core's per-driver arrays were fitted to

    @staticmethod
    def _make_platform(name: str, make: Callable[[str], Policy] | None, where: str) -> Policy:
        """The platform policy ``name``; ``LearnedPolicyError`` naming ``fleet.platform_policy`` if it cannot be
        made."""
        if make is None:
            if name != "nearest":
                raise LearnedPolicyError(
                    f"{where}: fleet.platform_policy: {name!r} needs the policy registry: make the run's policy with "
                    "gigdispatch.agents.make_policy (or pass make_platform)"
                )
            return NearestPolicy()
        try:
            policy = make(name)
        except ValueError as exc:
            raise LearnedPolicyError(f"{where}: fleet.platform_policy: {exc}") from None
        if not isinstance(policy, Policy):
            raise LearnedPolicyError(f"{where}: fleet.platform_policy: {name!r} made a {type(policy).__name__}")
        return policy

    def _check_spaces(self, where: str) -> int:
        """The observation version of the model: it reads the fleet env's driver rows of one version (``(41,)``:
        0, ``(50,)``: 1, ``OBS_DIMS``) and picks one of its ``N_ACTIONS``; ``LearnedPolicyError`` otherwise."""
        obs_shape = getattr(self.model.observation_space, "shape", None)
        n = getattr(self.model.action_space, "n", None)
        version = obs_version_of_dim(obs_shape[0]) if obs_shape is not None and len(obs_shape) == 1 else None
        if version is None or n is None or int(n) != N_ACTIONS:
            rows = " or ".join(f"({d},)" for d in OBS_DIMS.values())
            raise LearnedPolicyError(
                f"{where}: trained on env 'fleet', but the model reads observations of shape {obs_shape} and has "
                f"{n} actions, not the fleet env's {rows} driver rows and {N_ACTIONS} actions"
            )
        return version

    # ---------------------------------------------------------------------------------------- policy
    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        """Start playing the episode just loaded into ``sim``: ``FleetCore.attach`` (drivers answer their own
        offers, the platform policy reset with ``rng``), on a core built once per scenario (observing in the
        model's ``obs_version``)."""
        if self._core is None or self._core.scenario is not sim.scenario:
            self._core = FleetCore(sim.scenario, platform_policy=self.platform, obs_version=self.obs_version)
        self._core.attach(sim, rng)
        self._drivers = sim.drivers

    def act(self, sim: Simulator) -> Decision:
        """The drivers' greedy actions on the current state, applied as ``FleetCore.step`` applies them: answers
        to pending offers now, then the platform's decision with the drivers' moves."""
        core = self._attached(sim)
        obs, mask = core.observe()
        dec, _ = core.decide(self.actions(obs, mask))
        return dec

    def moves(
        self, sim: Simulator, offered_drivers: np.ndarray, offered_orders: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(drivers, zones): the drivers the network sends to a neighbouring zone now, leaving out
        ``offered_drivers`` (offered an order this epoch: the simulator would skip their move). Reads the
        simulator only; what ``/v1/reposition`` answers."""
        core = self._attached(sim)
        obs, mask = core.observe()
        a, _ = core.valid_actions(self.actions(obs, mask))
        drivers, zones = core.move_targets(a)
        keep = ~np.isin(drivers, np.asarray(offered_drivers, np.int64))
        return drivers[keep], zones[keep]

    def actions(self, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(D,) int64: the network's greedy action per driver row of ``obs`` (``mask`` applied for masked runs)."""
        if obs.shape[0] == 0:
            return np.zeros(0, np.int64)
        kw = {"action_masks": mask} if self.masked else {}
        action, _ = self.model.predict(obs, deterministic=True, **kw)
        return np.asarray(action, np.int64).reshape(-1)

    def _attached(self, sim: Simulator) -> FleetCore:
        """The core playing ``sim``, its per-driver arrays refitted if ``sim``'s drivers were replaced."""
        core = self._core
        if core is None or core.sim is not sim:
            raise RuntimeError(f"{type(self).__name__}.act before reset(sim, rng)")
        if sim.drivers is not self._drivers:  # Simulator.load_state (the service: every request's fleet)
            core.fit_drivers()
            self._drivers = sim.drivers
        return core
