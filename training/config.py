"""The typed training configuration (``gigdispatch train --config FILE [key=value ...]``).

A config is a YAML mapping validated by pydantic (``TrainConfig``): unknown keys are rejected, every
value is type-checked, and every error is raised as one ``ConfigError`` (a ``ValueError``) whose
message names the field (dotted path) and the reason. ``key=value`` overrides use dotted keys
(``ppo.learning_rate=1e-4``, ``dispatch.k=4``, ``eval.seeds=[5000,5001]``); the value is parsed as a
YAML scalar/flow value, and an override of a key the schema does not have is rejected.

Seeds (the rule of ``envs/core/seeding.py``): ``train_seeds`` (the episode seeds used for training) and
``eval.seeds`` (held-out seeds of the periodic evaluation) must all be >= ``MIN_TRAIN_SEED`` (1000) --
seeds 0-19 are the evaluation seeds of ``gigdispatch evaluate`` and nothing may be tuned on them -- and
the two sets must not overlap (``check_train_seeds``). Both accept a list of whole numbers or a range
string as ``gigdispatch evaluate --seeds`` does (``"1000-1999"``, read by ``parse_seeds``).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.seeding import check_train_seeds, parse_seeds


class ConfigError(InputError):
    """A bad training config or override; the message names the field and the reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, validate_assignment=True)


def _seed_list(value: Any) -> Any:
    """A list of seeds or a range string (``"1000-1099"``, ``"1000,1005"``) -> list of ints."""
    if isinstance(value, str):
        return parse_seeds(value, what="seeds")
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


ROW_ENVS = ("dispatch-v1", "dispatch-v2", "dispatch-v3")  # the envs with row-shaped observations (the set network's)


class DispatchEnvConfig(_Strict):
    """Keyword arguments of ``gigdispatch/Dispatch-v0`` / ``-v1`` / ``-v2`` (``envs.dispatch_env``), and how
    many days train at once (``env: dispatch-v1`` / ``-v2``: ``envs.dispatch_vec``; ``env: dispatch-v3``: the days
    in one set of simulator arrays, ``envs.dispatch_days``)."""

    max_orders: int = Field(32, ge=1, le=1024)
    k: int = Field(8, ge=1, le=64)
    reward_scale: float = Field(1.0, gt=0)
    idle_only: bool = False
    num_envs: int = Field(1, ge=1, le=256, description="days stepped together (env: dispatch-v1, -v2 or -v3)")
    bundle_k: int = Field(
        2, ge=0, le=63, description="of the k candidates, same-pickup bundle columns (env: dispatch-v2)"
    )


class FleetEnvConfig(_Strict):
    """Keyword arguments of ``envs.FleetVecEnv`` (the drivers are the vector dimension)."""

    reward: Literal["own", "platform"] = "own"
    platform_policy: str = "nearest"
    obs_version: int = Field(
        1,
        description="the drivers' observation rows (envs.fleet_core): 1 with the demand forecast placed_0..8 "
        "(50 fields), 0 without (41)",
    )

    @field_validator("obs_version")
    @classmethod
    def _obs_version(cls, v: int) -> int:
        if v not in (0, 1):
            raise ValueError(f"must be 0 (41 fields) or 1 (50 fields, with the placed_* forecast), got {v}")
        return v


class PPOConfig(_Strict):
    """PPO / MaskablePPO hyperparameters (stable-baselines3 names and meanings)."""

    n_steps: int = Field(512, ge=1)
    batch_size: int = Field(128, ge=2)
    learning_rate: float = Field(3e-4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    n_epochs: int = Field(10, ge=1)
    ent_coef: float = Field(0.0, ge=0)
    vf_coef: float = Field(0.5, ge=0)
    clip_range: float = Field(0.2, gt=0)
    max_grad_norm: float = Field(0.5, gt=0)
    net_arch: list[int] = Field(default_factory=lambda: [64, 64])
    policy: Literal["auto", "mlp", "set"] = Field(
        "auto",
        description="the network: 'set' (agents.setnet, env: dispatch-v1/-v2), 'mlp' (SB3's MultiInputPolicy/MlpPolicy"
        " with net_arch); 'auto' is 'set' on dispatch-v1/-v2, 'mlp' elsewhere",
    )
    hidden: int = Field(64, ge=4, le=1024, description="width of the set network's layers (policy: set)")
    pair_hidden: int | None = Field(
        32,
        ge=4,
        le=1024,
        description="width of the set network's pair encoder, the (order, candidate) layer that dominates a"
        " training step's cost (policy: set); null: the same as hidden (every run before this field existed)",
    )
    init_from: str | None = Field(
        None,
        description="a run folder or .zip whose policy weights start this run (same env, policy and sizes; e.g. a"
        " DAgger run, for PPO fine-tuning); its decode.json, if any, is copied into the run",
    )

    @field_validator("net_arch")
    @classmethod
    def _arch(cls, v: list[int]) -> list[int]:
        if not v or any(n < 1 for n in v):
            raise ValueError("must be a non-empty list of layer widths >= 1")
        return v


class EvalConfig(_Strict):
    """Periodic evaluation on held-out seeds (a separate env instance, deterministic actions)."""

    every_steps: int = Field(0, ge=0, description="0: no periodic evaluation")
    seeds: list[int] = Field(default_factory=lambda: list(range(2000, 2005)))
    episodes: int = Field(5, ge=1)

    @field_validator("seeds", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _seed_list(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed")
        check_train_seeds(v, what="held-out seeds")
        if len(set(v)) != len(v):
            raise ValueError("a seed is given more than once")
        return v

    @model_validator(mode="after")
    def _episodes(self) -> EvalConfig:
        if self.episodes > len(self.seeds):
            raise ValueError(f"episodes: {self.episodes} episodes need at least as many seeds, got {len(self.seeds)}")
        return self


class RLlibConfig(_Strict):
    """``gigdispatch train --backend rllib`` (the fleet env on Ray RLlib's PPO); ignored by the SB3 backend."""

    iterations: int = Field(10, ge=1, description="PPO iterations (one sample + update each)")
    num_env_runners: int = Field(0, ge=0, description="sampling actors (0: sample in the driver process)")
    train_batch_size: int = Field(
        4000, ge=1, description="env steps sampled per iteration (each is one step of every driver)"
    )
    minibatch_size: int = Field(512, ge=1)
    num_epochs: int = Field(5, ge=1)
    max_cycles: int | None = Field(
        None, ge=1, description="truncate episodes after this many steps (default: the whole day)"
    )


class CEMConfig(_Strict):
    """``algo: cem``: the cross-entropy method over a policy family's parameters (``training/cem.py``)."""

    iterations: int = Field(10, ge=1)
    population: int = Field(12, ge=2)
    elite: int = Field(3, ge=1)
    seeds_per_iteration: int = Field(6, ge=1, description="training days every candidate of an iteration is run on")
    sigma: float = Field(0.5, gt=0, description="initial std of every search coordinate")
    extra_noise: float = Field(0.1, ge=0, description="added to the refitted std, decaying to 0 over the iterations")
    workers: int = Field(2, ge=1, description="rollout processes (backend: process)")
    backend: Literal["process", "ray"] = Field(
        "process",
        description="process: rollouts in `workers` processes here; ray: as Ray tasks on every CPU of a private Ray "
        "or of the cluster at `gigdispatch train --address` (docs/distributed.md)",
    )
    values: str | None = Field(None, description="value table (.npz); default: the scenario's shipped table")
    policy: Literal["scored-match", "reposition"] = Field("scored-match", description="the policy family searched")
    objective: Literal["platform_margin", "on_time_rate", "eph_minus_click_to_door"] = Field(
        "platform_margin",
        description="the day's KPI maximised (eph_minus_click_to_door: driver EUR per online hour - click-to-door min)",
    )

    @model_validator(mode="after")
    def _elite(self) -> CEMConfig:
        if self.elite > self.population:
            raise ValueError(f"elite: {self.elite} elite of a population of {self.population}")
        return self


class DaggerConfig(_Strict):
    """``algo: dagger``: imitation of a teacher policy by the set network (``training/dagger.py``)."""

    teacher: str = Field("checkpoints/dispatch", description="the policy imitated: a registry name or a policy path")
    rounds: int = Field(4, ge=1, description="collection + training rounds (round 0: the teacher plays)")
    days_per_round: int = Field(4, ge=1, description="new training days played per round")
    epochs: int = Field(15, ge=1, description="passes over all samples so far, per round")
    batch_size: int = Field(256, ge=1, description="epochs (observations) per minibatch")
    learning_rate: float = Field(1e-3, gt=0)
    beta: float = Field(
        0.5, ge=0, le=1, description="the teacher plays an epoch of round r >= 1 with probability beta**r"
    )
    hold_biases: list[float] = Field(
        default_factory=lambda: [0.0, 2.0, 3.5, 5.0],
        description="decoding biases against holding tried on the held-out days after each round",
    )

    @field_validator("hold_biases")
    @classmethod
    def _biases(cls, v: list[float]) -> list[float]:
        if not v or any(not math.isfinite(b) or b < 0 for b in v):
            raise ValueError("must be a non-empty list of finite numbers >= 0")
        return v


class TrainConfig(_Strict):
    """One training run. See ``docs/training.md`` for every field."""

    name: str = Field("train", pattern=r"^[A-Za-z0-9_.+-]+$")
    env: Literal["dispatch", "dispatch-v1", "dispatch-v2", "dispatch-v3", "fleet"] = "dispatch"
    scenario: str = "default"
    dispatch: DispatchEnvConfig = Field(default_factory=DispatchEnvConfig)
    fleet: FleetEnvConfig = Field(default_factory=FleetEnvConfig)
    algo: Literal["maskable_ppo", "ppo", "cem", "dagger"] = "maskable_ppo"
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    rllib: RLlibConfig = Field(default_factory=RLlibConfig)
    cem: CEMConfig = Field(default_factory=CEMConfig)
    dagger: DaggerConfig = Field(default_factory=DaggerConfig)
    total_timesteps: int = Field(100_000, ge=1)
    seed: int = Field(0, ge=0, description="seeds torch, numpy, SB3 and the order of the training seeds")
    train_seeds: list[int] = Field(default_factory=lambda: list(range(1000, 2000)))
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint_every_steps: int = Field(10_000, ge=1)
    torch_threads: int = Field(1, ge=1)
    device: Literal["cpu", "cuda", "auto"] = "cpu"

    @field_validator("train_seeds", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        return _seed_list(v)

    @field_validator("train_seeds")
    @classmethod
    def _train_seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one seed")
        return check_train_seeds(v, what="training episode seeds")

    @model_validator(mode="after")
    def _cem_env(self) -> TrainConfig:
        if self.algo == "cem" and self.env != "dispatch":
            raise ValueError("algo: cem searches a dispatch policy's parameters: use env: dispatch")
        return self

    @model_validator(mode="after")
    def _batch(self) -> TrainConfig:
        if self.algo not in ("cem", "dagger") and self.env != "fleet":  # fleet: one env per driver, known later
            check_batch_size(self.ppo, n_envs=self.dispatch.num_envs, error=ValueError)
        return self

    @model_validator(mode="after")
    def _bundle(self) -> TrainConfig:
        d = self.dispatch
        if self.env == "dispatch-v2" and d.bundle_k >= d.k:
            raise ValueError(
                f"dispatch.bundle_k: {d.bundle_k} bundle columns leave none of the dispatch.k = {d.k} columns for"
                " the nearest drivers; lower dispatch.bundle_k or raise dispatch.k"
            )
        return self

    @model_validator(mode="after")
    def _v1_only(self) -> TrainConfig:
        rows = self.env in ROW_ENVS
        if self.dispatch.num_envs > 1 and not rows:
            raise ValueError(
                f"dispatch.num_envs: {self.dispatch.num_envs} days at once needs env: dispatch-v1, -v2 or -v3"
            )
        if self.ppo.policy == "set" and not rows:
            raise ValueError("ppo.policy: 'set' reads row-shaped observations: use env: dispatch-v1, -v2 or -v3")
        if self.algo == "dagger" and (self.env not in ("dispatch-v1", "dispatch-v2") or self.ppo.policy == "mlp"):
            raise ValueError("algo: dagger trains the set network: use env: dispatch-v2 (or -v1) and ppo.policy: set")
        return self

    @property
    def uses_set_policy(self) -> bool:
        """The run's network is the set policy (``agents.setnet``)."""
        return self.ppo.policy == "set" or (self.ppo.policy == "auto" and self.env in ROW_ENVS)

    @model_validator(mode="after")
    def _disjoint(self) -> TrainConfig:
        both = sorted(set(self.train_seeds) & set(self.eval.seeds))
        if both:
            raise ValueError(f"eval.seeds: held-out seeds must not be training seeds, both contain {both[:5]}")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def check_batch_size(ppo: PPOConfig, n_envs: int, error: type[Exception] = ConfigError) -> int:
    """``ppo.batch_size``, refused (``error``, naming both fields) when it is larger than one rollout of
    ``ppo.n_steps x n_envs`` steps: SB3 would then train on minibatches of the whole rollout instead.
    ``n_envs`` is 1 for ``env: dispatch``, ``dispatch.num_envs`` for ``dispatch-v1``, the drivers for ``fleet``."""
    rollout = ppo.n_steps * n_envs
    if ppo.batch_size > rollout:
        envs = "1 env" if n_envs == 1 else f"{n_envs:,} envs"
        raise error(
            f"ppo.batch_size: {ppo.batch_size:,} is larger than a rollout of ppo.n_steps {ppo.n_steps:,} x "
            f"{envs} = {rollout:,} steps; set ppo.batch_size <= {rollout:,} or raise ppo.n_steps"
        )
    return ppo.batch_size


# ---------------------------------------------------------------------------------------- loading
def _format(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required"
        shown = repr(err.get("input"))
        got = (
            f" (got {shown})"
            if err["type"] not in ("extra_forbidden", "missing", "value_error") and len(shown) < 80
            else ""
        )
        parts.append(f"{loc}: {msg}{got}" if err["loc"] else f"{msg}{got}")
    return f"{source}: " + "; ".join(parts)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=VALUE"`` -> (["a", "b"], VALUE parsed as YAML); raises ConfigError on a malformed override."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE (e.g. ppo.learning_rate=1e-4)")
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty part in the key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a copy of ``data``; a key the schema does not have is rejected."""
    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        model: type[BaseModel] | None = TrainConfig
        node = out
        for i, p in enumerate(parts):
            if model is None or p not in model.model_fields:
                where = ".".join(parts[:i]) or "the config"
                raise ConfigError(f"override {'.'.join(parts)}: unknown key {p!r} in {where}")
            ann = model.model_fields[p].annotation
            sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
            if i == len(parts) - 1:
                node[p] = value
            else:
                if sub is None:
                    raise ConfigError(f"override {'.'.join(parts)}: {'.'.join(parts[: i + 1])} has no sub-keys")
                child = node.get(p)
                if not isinstance(child, dict):
                    child = node[p] = {}
                node = child
            model = sub
    return out


def build_config(
    data: Any, overrides: list[str] | None = None, source: str = "config", base_dir: Path | None = None
) -> TrainConfig:
    """Validate a mapping (+ overrides) into a ``TrainConfig``; ``ConfigError`` names the field and reason.

    A ``scenario`` that is a relative path existing next to the config file (``base_dir``) is made absolute,
    so the resolved config works from any folder.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    data = apply_overrides(data, list(overrides or []))
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None
    if base_dir is not None:
        p = Path(cfg.scenario)
        if not p.is_absolute() and (base_dir / p).exists() and not p.exists():
            cfg.scenario = str((base_dir / p).resolve())
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML training config; the default ``name`` is the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    return build_config(data, overrides, source=str(path), base_dir=path.parent)
