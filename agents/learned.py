"""A policy trained by ``gigdispatch train`` on Dispatch-v0, acting in the simulator like any other ``Policy``.

``LearnedDispatchPolicy("runs/dispatch-default-...")`` reads the run's ``config.yaml`` and loads
``checkpoints/best.zip`` (or ``latest.zip`` when there is no best yet); a path to a ``.zip`` inside a
run folder loads that checkpoint. It sees the simulator through exactly the observation code the
model was trained on: it wraps the given simulator in a ``DispatchEnv`` built with the run's env
arguments (``max_orders``, ``k``, ``idle_only``) and calls that env's ``prepare`` (slot orders and
candidates), ``observe`` and ``decode``; neither touches the simulator's state. Actions are deterministic
(``predict(..., deterministic=True)``, with the env's action masks for MaskablePPO) and are decoded as
``DispatchEnv.step`` does: masked-out choices hold, a driver chosen by two orders goes to the older one.

Loading owns what it reads: the algorithm table (``ALGORITHMS``: a run's ``algo`` -> the
stable-baselines3 class that loads its checkpoints) and the few keys of ``config.yaml`` it needs
(``env``, ``algo``, ``dispatch.*``), read from the YAML with plain checks (``read_run_config``), not
through the training config schema; a key that is missing or of the wrong kind is a one-line
``LearnedPolicyError`` naming it. ``training.runs`` writes run folders with these file names.

Every SB3 checkpoint is loaded through ``load_model``: a file that does not load (truncated, not a zip,
damaged weights) is a one-line ``CorruptCheckpointError`` naming the file and saying to re-train or restore
it, and a missing torch / stable-baselines3 a ``MissingExtraError`` naming the ``rl`` extra, so
``simulate``, ``evaluate``, ``serve``, ``export`` and ``train --resume`` all show the same line.

Epochs: the policy decides at every simulator step where some pending order has a candidate (the
env's decision epochs); elsewhere it returns an empty ``Decision``.

A run of ``env: fleet`` is a driver policy, not a dispatch one: ``run_env`` tells them apart and
``agents.fleet_learned.LearnedFleetPolicy`` plays it (``make_policy`` picks the class). An RLlib run
(``checkpoints/rllib/``) is no policy here; ``resolve_checkpoint`` says so in one line.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gigdispatch.agents.base import Policy
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.sim import Decision, Simulator

# a run's ``algo`` -> "module:Class" of the stable-baselines3 model that saves and loads its checkpoints
ALGORITHMS: dict[str, str] = {
    "maskable_ppo": "sb3_contrib:MaskablePPO",
    "ppo": "stable_baselines3:PPO",
    "dagger": "sb3_contrib:MaskablePPO",  # imitation (training.dagger) into a MaskablePPO model's set policy
}
MASKED_ALGORITHMS = frozenset({"maskable_ppo", "dagger"})  # these predict with the env's action masks
# a run's ``env`` -> the class whose observation code the model was trained on (``envs.dispatch_env``)
# the observation code each run's policy acts through; a Dispatch-v3 run's through v1's (the same features)
DISPATCH_ENVS = {
    "dispatch": "DispatchEnv",
    "dispatch-v1": "DispatchEnvV1",
    "dispatch-v2": "DispatchEnvV2",
    "dispatch-v3": "DispatchEnvV1",
}
DECODE_FILE = "decode.json"  # a run's decoding of the set policy's rows ({"decode": "match", "hold_bias": b})
# the run folder's files this module reads
RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
BEST = "best.zip"
LATEST = "latest.zip"
RLLIB_CHECKPOINT = "rllib"  # under checkpoints/: an RLlib run (``training.rllib``), which no policy here loads


RL_EXTRA = "pip install 'gigdispatch[rl]'"  # what installs torch, stable-baselines3 and sb3-contrib


class LearnedPolicyError(InputError):
    """A run folder or checkpoint that cannot act as a learned policy; the message names the path and why."""


class CorruptCheckpointError(LearnedPolicyError):
    """A checkpoint ``.zip`` that exists but does not load (truncated, not a zip, damaged weights); the message
    names the file, what is wrong with it and what to do."""


class MissingExtraError(LearnedPolicyError):
    """An optional dependency (torch, stable-baselines3, sb3-contrib) is not installed; the message names it and
    the extra that installs it."""


def algo_class(algo: str) -> Any:
    """The stable-baselines3 class of ``algo`` (imported here: SB3 is an optional dependency).

    ``LearnedPolicyError`` for an unknown ``algo``, ``MissingExtraError`` (one line naming the missing module
    and the ``rl`` extra) when SB3 or torch is not installed."""
    spec = ALGORITHMS.get(algo)
    if spec is None:
        raise LearnedPolicyError(f"algo {algo!r}: not a stable-baselines3 algorithm (one of {', '.join(ALGORITHMS)})")
    module, cls = spec.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"algo {algo!r} needs the 'rl' extra (torch, stable-baselines3, sb3-contrib): "
            f"{exc.name or module} is not installed; {RL_EXTRA}"
        ) from None


def _damage(exc: BaseException) -> str:
    """What is wrong with a checkpoint that failed to load, in a few words (no library's own advice)."""
    import zipfile

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, zipfile.BadZipFile) or "zip-file" in text or "zip file" in text:
        return "not a zip archive (truncated, or not a checkpoint)"
    if isinstance(exc, EOFError) or "truncated" in text.lower() or "CRC" in text:
        return "the archive is truncated or damaged"
    if "No data found" in text or "No params found" in text:
        return "the archive holds no model data (truncated or incomplete)"
    if "Weights only load failed" in text or type(exc).__name__ in ("UnpicklingError", "PicklingError"):
        return "its weights (a .pth file inside) do not load"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def _set_policy_kwargs_without_pair_size(ckpt: Path) -> dict[str, Any] | None:
    """A ``DispatchSetPolicy`` checkpoint whose saved ``policy_kwargs`` lack ``pair_size`` (every one saved
    before it existed, when the pair encoder was ``hidden_size`` wide, and any built with the class default):
    those kwargs with ``pair_size`` read off the saved pair weights, for SB3's ``load(custom_objects=...)``.
    ``None`` for any other checkpoint, or one this cannot read (``load`` then reports what is wrong)."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(ckpt) as z:
            data = json.loads(z.read("data"))
            pk = data.get("policy_kwargs")
            if not isinstance(pk, dict) or "pair_size" in pk or ":serialized:" in pk:
                return None
            if "setnet" not in str(data.get("policy_class", {}).get("__module__", "")):
                return None
            import torch

            state = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu", weights_only=True)
        return {**pk, "pair_size": int(state["features_extractor.pair.0.weight"].shape[0])}
    except Exception:  # unreadable here: let SB3's load say what is wrong
        return None


def load_model(algo: str, ckpt: Path, device: str = "cpu", **kwargs: Any) -> Any:
    """``algo``'s SB3 model loaded from ``ckpt`` (``kwargs`` go to ``load``).

    A file that does not load (truncated, not a zip, damaged weights, a foreign zip) is a one-line
    ``CorruptCheckpointError`` naming the file and what to do; SB3 or torch missing, ``MissingExtraError``."""
    cls = algo_class(algo)
    try:
        legacy = _set_policy_kwargs_without_pair_size(ckpt)
        if legacy is not None and "custom_objects" not in kwargs:
            kwargs = {**kwargs, "custom_objects": {"policy_kwargs": legacy}}
        return cls.load(ckpt, device=device, **kwargs)
    except Exception as exc:  # zipfile, json, pickle, torch and SB3's own assertions: a damaged file
        raise CorruptCheckpointError(
            f"checkpoint {str(ckpt)!r}: not a loadable SB3 checkpoint ({algo}): {_damage(exc)}; "
            "re-train it or restore it from a copy"
        ) from None


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint .zip) for a run folder or a checkpoint file; ``LearnedPolicyError`` naming what is
    missing."""
    p = Path(path)
    if p.is_file() and p.suffix == ".zip":
        run = p.parent.parent if p.parent.name == CHECKPOINTS else p.parent
        ckpt = p
    elif p.is_dir():
        run = p
        ckpt = next((p / CHECKPOINTS / n for n in (BEST, LATEST) if (p / CHECKPOINTS / n).is_file()), p / "missing")
        if not ckpt.is_file() and (p / CHECKPOINTS / RLLIB_CHECKPOINT).is_dir():
            raise LearnedPolicyError(
                f"policy {str(path)!r}: an RLlib run ({CHECKPOINTS}/{RLLIB_CHECKPOINT}); only stable-baselines3 runs "
                "(the default backend) act as a policy in evaluate, serve and export"
            )
        if not ckpt.is_file():
            raise LearnedPolicyError(
                f"policy {str(path)!r}: a folder, but not a training run "
                f"(no {CHECKPOINTS}/{BEST} or {CHECKPOINTS}/{LATEST})"
            )
    else:
        raise LearnedPolicyError(f"policy {str(path)!r}: no such run folder or checkpoint file")
    if not (run / RUN_CONFIG).is_file():
        raise LearnedPolicyError(f"policy {str(path)!r}: no {RUN_CONFIG} in the run folder {str(run)!r}")
    return run, ckpt


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}: must be a whole number >= 1, got {value!r}")
    return value


def _positive(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{key}: must be a number > 0, got {value!r}")
    return float(value)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false, got {value!r}")
    return value


def dispatch_env_class(env: str) -> Any:
    """The ``envs.dispatch_env`` class of a run's ``env`` (``DISPATCH_ENVS``: Dispatch-v0 or v1)."""
    from gigdispatch.envs import dispatch_env

    return getattr(dispatch_env, DISPATCH_ENVS[env])


def read_run_yaml(run: Path, what: str = "policy") -> dict[str, Any]:
    """A run's ``config.yaml`` as a mapping; ``LearnedPolicyError`` naming ``what`` and the file if it is not one."""
    import yaml

    f = run / RUN_CONFIG
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LearnedPolicyError(f"{what}: {f}: not a readable YAML file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LearnedPolicyError(f"{what}: {f}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def run_env(path: str | Path) -> Any:
    """The ``env`` a run folder or checkpoint ``.zip`` was trained on (``config.yaml``'s value as written), so that
    a caller picks the policy class that plays it (``agents.registry``: ``fleet`` runs are driver policies,
    ``agents.fleet_learned``); ``LearnedPolicyError`` for what is not a readable run."""
    run, _ = resolve_checkpoint(path)
    return read_run_yaml(run, what=f"policy {str(path)!r}").get("env")


def read_run_config(run: Path, what: str = "policy") -> dict[str, Any]:
    """What a learned policy needs from a run's ``config.yaml``: ``{"algo", "env_kwargs"}`` (the Dispatch-v0
    arguments ``max_orders``, ``k``, ``reward_scale``, ``idle_only``).

    Plain checks, no schema: the file must be a YAML mapping with ``env: dispatch``, an ``algo`` of
    ``ALGORITHMS`` and a ``dispatch`` mapping with the four keys; otherwise ``LearnedPolicyError`` naming
    ``what``, the file and the key.
    """
    f = run / RUN_CONFIG
    data = read_run_yaml(run, what)
    env = data.get("env")
    if env not in DISPATCH_ENVS:
        raise LearnedPolicyError(
            f"{what}: trained on env {env!r}; only {', '.join(repr(e) for e in DISPATCH_ENVS)} runs act as a platform"
            " dispatch policy"
        )
    algo = data.get("algo")
    if algo not in ALGORITHMS:
        raise LearnedPolicyError(f"{what}: {f}: algo: {algo!r} is not one of {', '.join(ALGORITHMS)}")
    d = data.get("dispatch")
    if not isinstance(d, dict):
        raise LearnedPolicyError(f"{what}: {f}: dispatch: expected a mapping of the Dispatch-v0 arguments, got {d!r}")
    try:
        env_kwargs = {
            "max_orders": _whole(d.get("max_orders"), "dispatch.max_orders"),
            "k": _whole(d.get("k"), "dispatch.k"),
            "reward_scale": _positive(d.get("reward_scale"), "dispatch.reward_scale"),
            "idle_only": _flag(d.get("idle_only"), "dispatch.idle_only"),
        }
        if env == "dispatch-v2":
            bk = d.get("bundle_k", 2)
            if isinstance(bk, bool) or not isinstance(bk, int) or not 0 <= bk < env_kwargs["k"]:
                raise ValueError(f"dispatch.bundle_k: expected a whole number in 0..k-1, got {bk!r}")
            env_kwargs["bundle_k"] = bk
    except ValueError as exc:
        raise LearnedPolicyError(f"{what}: {f}: {exc}") from None
    return {"algo": algo, "env": env, "env_kwargs": env_kwargs}


def read_decode(run: Path, what: str = "policy") -> float | None:
    """The ``hold_bias`` of a run's ``decode.json`` (``{"decode": "match", "hold_bias": b}``: the set policy's
    rows decoded jointly by ``agents.set_decode.match_choices``), or None without the file (each row's argmax)."""
    f = run / DECODE_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LearnedPolicyError(f"{what}: {f}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or data.get("decode") != "match":
        raise LearnedPolicyError(f'{what}: {f}: decode: expected "match", got {data!r}')
    b = data.get("hold_bias")
    if isinstance(b, bool) or not isinstance(b, int | float) or not b >= 0 or b == float("inf"):
        raise LearnedPolicyError(f"{what}: {f}: hold_bias: expected a finite number >= 0, got {b!r}")
    return float(b)


class EnvDispatchPolicy(Policy):
    """A dispatch policy that sees the simulator through Dispatch-v0's own observation code.

    ``reset`` wraps the simulator in a ``DispatchEnv`` (built by ``_make_env`` once per scenario, which
    also checks that the model fits it); ``act`` calls the env's ``prepare`` (no order with a candidate:
    empty ``Decision``), ``observe`` and ``action_masks``, asks ``_choose`` for a Dispatch-v0 action and
    ``decode``s it. Neither touches the simulator's state.
    """

    _env: Any = None
    _scenario: Any = None

    def _make_env(self, scenario: Any) -> Any:
        """A ``DispatchEnv`` for ``scenario`` with this model's arguments; ``ValueError`` if the model does not fit."""
        raise NotImplementedError

    def _choose(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        """The model's deterministic Dispatch-v0 action for one observation and its action mask."""
        raise NotImplementedError

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        if self._env is None or self._scenario is not sim.scenario:
            self._env = self._make_env(sim.scenario)
            self._scenario = sim.scenario
        self._env.sim = sim  # the env reads this simulator; it never steps it here

    def act(self, sim: Simulator) -> Decision:
        env = self._env
        if env is None or env.sim is not sim:
            raise RuntimeError(f"{type(self).__name__}.act before reset(sim, rng)")
        if not env.prepare():
            return Decision()
        action = self._choose(env.observe(), env.action_masks())
        return env.decode(np.asarray(action))[0]


class LearnedDispatchPolicy(EnvDispatchPolicy):
    """A MaskablePPO / PPO model trained on Dispatch-v0 (``env: dispatch``), loaded from a run folder.

    Attributes: ``run_dir``, ``checkpoint`` (the .zip loaded), ``algo``, ``masked``, ``env_kwargs`` (the
    Dispatch-v0 arguments of the run) and ``model`` (the SB3 model).
    """

    name: ClassVar[str] = "learned"

    def __init__(self, path: str | Path, device: str = "cpu", torch_threads: int | None = 1) -> None:
        run, ckpt = resolve_checkpoint(path)
        rc = read_run_config(run, what=f"policy {str(path)!r}")
        algo_class(rc["algo"])  # torch and SB3 installed, else one line naming the extra
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        self.run_dir = run
        self.algo: str = rc["algo"]
        self.masked = self.algo in MASKED_ALGORITHMS
        self.env_kwargs: dict[str, Any] = rc["env_kwargs"]
        self.env_name: str = rc["env"]
        try:
            self.model = load_model(self.algo, ckpt, device=device)
        except CorruptCheckpointError as exc:
            raise CorruptCheckpointError(f"policy {str(path)!r}: {exc}") from None
        self.checkpoint = ckpt
        self.hold_bias: float | None = read_decode(run, what=f"policy {str(path)!r}")
        self._policy: Any = self.model.policy  # the network acting on the current scenario (``_make_env``)

    def _make_env(self, scenario: Any) -> Any:
        env = dispatch_env_class(self.env_name)(scenario, **self.env_kwargs)
        self._policy = self.model.policy
        expected = self.model.observation_space
        fits = all(env.observation_space[key].shape == expected[key].shape for key in expected.spaces)
        if fits and env.action_space.shape == self.model.action_space.shape:
            return env
        if self._is_set_policy():  # size-free weights: rebuilt for this scenario's spaces
            self._policy = self._set_policy_for(env)
            return env
        if not fits:
            raise LearnedPolicyError(
                f"policy {str(self.checkpoint)!r}: the model's observation shapes do not fit this scenario"
            )
        raise LearnedPolicyError(
            f"policy {str(self.checkpoint)!r}: trained with action shape {self.model.action_space.shape}, "
            f"this scenario needs {env.action_space.shape} (pricing on/off differs)"
        )

    def _is_set_policy(self) -> bool:
        from gigdispatch.agents.setnet import DispatchSetPolicy

        return isinstance(self.model.policy, DispatchSetPolicy)

    def _set_policy_for(self, env: Any) -> Any:
        """The trained set network on ``env``'s spaces. No weight depends on the order slots, candidates or fleet
        size; a scenario without pricing drops the payout-level logits (its actions have no level half). Features
        or pricing levels that differ are refused in one line."""
        from gigdispatch.agents.setnet import DispatchSetPolicy, dispatch_layout

        old = self.model.policy
        lay = dispatch_layout(env.observation_space, env.action_space)
        where = f"policy {str(self.checkpoint)!r}"
        if (lay.order_features, lay.candidate_features, lay.global_features) != (
            old.layout.order_features,
            old.layout.candidate_features,
            old.layout.global_features,
        ):
            raise LearnedPolicyError(f"{where}: the model's observation features do not fit this scenario's env")
        if lay.n_levels not in (0, old.layout.n_levels):
            raise LearnedPolicyError(
                f"{where}: trained with {old.layout.n_levels} payout levels, this scenario has {lay.n_levels}"
            )
        new = DispatchSetPolicy(
            env.observation_space,
            env.action_space,
            lambda _: 0.0,
            hidden_size=old.hidden_size,
            pair_layers=old.pair_layers,
            activation_fn=old.activation_fn,
            pair_size=old.pair_size,
        )
        state = old.state_dict()
        if lay.n_levels == 0 and old.layout.n_levels:  # keep the query and hold rows of the order head
            keep = old.pair_size + 1
            state["order_head.weight"] = state["order_head.weight"][:keep]
            state["order_head.bias"] = state["order_head.bias"][:keep]
        new.load_state_dict(state)
        new.set_training_mode(False)
        return new.to(old.device)

    def _choose(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        if self.hold_bias is not None:  # the run decodes its set policy jointly (decode.json)
            from gigdispatch.agents.set_decode import match_action

            return match_action(self._policy, self._env, obs, self.hold_bias)
        kw = {"action_masks": mask} if self.masked else {}
        if self._policy is not self.model.policy:  # a set network rebuilt for this scenario's spaces
            return self._policy.predict(obs, deterministic=True, **kw)[0]
        action, _ = self.model.predict(obs, deterministic=True, **kw)
        return action
