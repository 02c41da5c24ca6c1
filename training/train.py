"""``gigdispatch train``: PPO / MaskablePPO on Dispatch-v0 or on the batched fleet env, with checkpoints and resume.

``train(cfg, out_dir, resume=None) -> run_dir`` is the Python API; ``add_parser(sub)`` the subcommand.

* Envs: ``env: dispatch`` trains on ``gigdispatch/Dispatch-v0`` (one env, ``MultiInputPolicy``);
  ``env: fleet`` on ``envs.FleetVecEnv`` (``MlpPolicy``, one shared policy, the drivers are the batch).
  Every training episode is seeded from ``train_seeds`` (all >= 1000), in an order drawn from ``seed``.
* Seeding: one block at the start (``torch.manual_seed``, NumPy, SB3's ``set_random_seed``) and
  ``torch.set_num_threads(torch_threads)`` (1 by default).
* Checkpoints are written at rollout boundaries (after a PPO update, before the next rollout), so a
  checkpoint's weights have been trained on exactly the ``num_timesteps`` it records, and a resumed run
  collects the same rollouts-count as an uninterrupted one: a run killed at any moment (even SIGKILL)
  and resumed ends with the same ``num_timesteps``. The run folder's files are those of ``training.runs``,
  every one written atomically (``training.io.atomic_write_bytes``: temp file in the same folder, fsync,
  ``os.replace``).
* PPO collects whole rollouts of ``n_steps x n_envs`` steps, so the final ``num_timesteps`` is
  ``total_timesteps`` rounded up to a whole number of rollouts.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.agents.learned import MASKED_ALGORITHMS, algo_class
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.training.cem import train_cem
from gigdispatch.training.config import ConfigError, TrainConfig, load_config
from gigdispatch.training.errors import TrainError
from gigdispatch.training.rllib import RLlibError, train_rllib
from gigdispatch.training.runs import (
    BEST,
    CHECKPOINTS,
    KPI_TAGS,
    LATEST,
    POLICY,
    TB,
    load_run_config,
    new_run_dir,
    read_progress,
    save_checkpoint,
    write_progress,
    write_run_files,
)

__all__ = ["KPI_TAGS", "TrainError", "build_model", "evaluate_model", "make_train_env", "seed_everything", "train"]


# ------------------------------------------------------------------------------------------- envs
def dispatch_env(cfg: TrainConfig, seed_schedule: SeedSchedule) -> Any:
    """Dispatch-v0 with the run's ``dispatch`` settings, playing the days of ``seed_schedule``."""
    from gigdispatch.envs.dispatch_env import DispatchEnv

    d = cfg.dispatch
    return DispatchEnv(
        cfg.scenario,
        max_orders=d.max_orders,
        k=d.k,
        reward_scale=d.reward_scale,
        idle_only=d.idle_only,
        seed_schedule=seed_schedule,
    )


def fleet_env(cfg: TrainConfig, seed_schedule: SeedSchedule) -> Any:
    """``FleetVecEnv`` with the run's ``fleet`` settings (the platform policy by name), playing the days of
    ``seed_schedule``."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs.fleet_vec import FleetVecEnv

    policy = make_policy(cfg.fleet.platform_policy)
    with warnings.catch_warnings():  # FleetVecEnv has no render_mode attribute; SB3 warns about it
        warnings.filterwarnings("ignore", message="The `render_mode` attribute is not defined")
        return FleetVecEnv(cfg.scenario, platform_policy=policy, reward=cfg.fleet.reward, seed_schedule=seed_schedule)


def train_schedule(cfg: TrainConfig) -> SeedSchedule:
    """The training days: ``train_seeds`` cycled in an order drawn from ``seed``, whatever seed SB3 passes."""
    return SeedSchedule(seeds=cfg.train_seeds, shuffle=cfg.seed, ignore_reset_seed=True)


def make_train_env(cfg: TrainConfig) -> Any:
    """The SB3 VecEnv used for training (``Monitor``-wrapped Dispatch-v0 in a DummyVecEnv, or the fleet)."""
    if cfg.env == "fleet":
        return fleet_env(cfg, train_schedule(cfg))
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: Monitor(dispatch_env(cfg, train_schedule(cfg)))])


def build_model(
    cfg: TrainConfig, env: Any, tensorboard_log: str | None = None, algo: str | None = None, policy: str | None = None
) -> Any:
    """A new PPO / MaskablePPO model on ``env`` with the run's ``ppo`` settings (also used by the training
    throughput benchmark, with ``algo``/``policy`` overridden for the CartPole reference)."""
    Algo = algo_class(algo or cfg.algo)
    p = cfg.ppo
    batch = min(p.batch_size, p.n_steps * env.num_envs)
    return Algo(
        policy or ("MultiInputPolicy" if cfg.env == "dispatch" else "MlpPolicy"),
        env,
        n_steps=p.n_steps,
        batch_size=batch,
        learning_rate=p.learning_rate,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        n_epochs=p.n_epochs,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        clip_range=p.clip_range,
        max_grad_norm=p.max_grad_norm,
        policy_kwargs={"net_arch": list(p.net_arch)},
        tensorboard_log=tensorboard_log,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
    )


# ------------------------------------------------------------------------------------- evaluation
def evaluate_model(model: Any, cfg: TrainConfig) -> dict[str, float]:
    """Deterministic episodes on the first ``eval.episodes`` held-out seeds, on a separate env instance.

    Dispatch: ``reward_mean`` is the mean episode return (= the day's platform margin x reward_scale).
    Fleet: ``reward_mean`` is the mean over days of the mean driver return. ``profit_mean`` etc. are KPI means.
    """
    seeds = cfg.eval.seeds[: cfg.eval.episodes]
    masked = cfg.algo in MASKED_ALGORITHMS
    returns, kpis = [], []
    if cfg.env == "dispatch":
        env = dispatch_env(cfg, SeedSchedule(seeds=seeds))  # the held-out days, in the given order
        for _ in seeds:
            obs, _ = env.reset()
            done, total = False, 0.0
            while not done:
                kw = {"action_masks": env.action_masks()} if masked else {}
                action, _ = model.predict(obs, deterministic=True, **kw)
                obs, r, done, _, info = env.step(action)
                total += r
            returns.append(total)
            kpis.append(info["kpis"])
    else:
        venv = fleet_env(cfg, SeedSchedule(seeds=seeds))  # the held-out days, in the given order
        obs = venv.reset()
        for _ in seeds:  # when a day ends the next one starts at once: ``obs`` is its first observation
            while True:
                kw = {"action_masks": venv.action_masks()} if masked else {}
                action, _ = model.predict(obs, deterministic=True, **kw)
                obs, _, dones, infos = venv.step(action)
                if dones.all():
                    break
            returns.append(float(np.mean([i["episode"]["r"] for i in infos])))
            kpis.append(venv.last_kpis or {})
    out = {
        "reward_mean": float(np.mean(returns)),
        "reward_std": float(np.std(returns)),
        "episodes": float(len(returns)),
    }
    for key, tag in KPI_TAGS.items():
        vals = [float(k[key]) for k in kpis if key in k and k[key] == k[key]]
        if vals:
            out[tag.split("/", 1)[1] + "_mean"] = float(np.mean(vals))
    return out


# -------------------------------------------------------------------------------------- callbacks
def _last_kpis(env: Any) -> dict[str, float]:
    """The ``last_kpis`` of the fleet env under any VecEnv wrappers (``{}`` before the first day ends)."""
    while not hasattr(env, "last_kpis") and hasattr(env, "venv"):  # through any VecEnv wrappers
        env = env.venv
    return getattr(env, "last_kpis", None) or {}


def _kpi_callback(cfg: TrainConfig) -> Any:
    """The callback that logs the day's KPIs under ``dispatch/``."""
    from stable_baselines3.common.callbacks import BaseCallback

    class KpiCallback(BaseCallback):
        """Logs the day's KPIs under ``dispatch/`` whenever a training episode (a day) ends."""

        def _on_step(self) -> bool:
            dones = self.locals.get("dones")
            if dones is None or not np.any(dones):
                return True
            if cfg.env == "fleet":
                self._record(_last_kpis(self.training_env))
            else:
                for info, done in zip(self.locals.get("infos", []), dones, strict=False):
                    if done and "kpis" in info:
                        self._record(info["kpis"])
            return True

        def _record(self, kpis: dict[str, float]) -> None:
            for key, tag in KPI_TAGS.items():
                v = kpis.get(key)
                if v is not None and v == v:
                    self.logger.record_mean(tag, float(v))

    return KpiCallback()


def _checkpoint_eval_callback(cfg: TrainConfig, run_dir: Path, total: int, state: dict[str, Any]) -> Any:
    """The callback that evaluates and checkpoints the model; ``state`` is the run's resumable state."""
    from stable_baselines3.common.callbacks import BaseCallback

    ckpt_dir = run_dir / CHECKPOINTS

    class CheckpointEvalCallback(BaseCallback):
        """At rollout boundaries: evaluate every ``eval.every_steps``, checkpoint every ``checkpoint_every_steps``."""

        def __init__(self, state: dict[str, Any]) -> None:
            super().__init__()
            self.state = state

        def _on_training_start(self) -> None:
            self.state.setdefault("last_ckpt", self.model.num_timesteps)
            self.state.setdefault("last_eval", self.model.num_timesteps)

        def _on_rollout_start(self) -> None:
            n = self.model.num_timesteps
            if cfg.eval.every_steps and n - self.state["last_eval"] >= cfg.eval.every_steps:
                self.evaluate()
            if n - self.state["last_ckpt"] >= cfg.checkpoint_every_steps:
                self.checkpoint()

        def _on_step(self) -> bool:
            return True

        def evaluate(self) -> None:
            res = evaluate_model(self.model, cfg)
            for k, v in res.items():
                self.logger.record(f"eval/{k}", v)
            self.state["last_eval"] = self.model.num_timesteps
            best = self.state.get("best_reward")
            if best is None or res["reward_mean"] > best:
                self.state["best_reward"] = res["reward_mean"]
                self.state["best_timesteps"] = self.model.num_timesteps
                save_checkpoint(self.model, ckpt_dir / BEST)

        def checkpoint(self) -> None:
            save_checkpoint(self.model, ckpt_dir / LATEST)
            self.state["last_ckpt"] = self.model.num_timesteps
            write_progress(run_dir, self.model.num_timesteps, total, self.state, done=False)

    return CheckpointEvalCallback(state)


def _tqdm_callback(cfg: TrainConfig, total: int) -> Any:
    """The callback that shows a progress bar of the run's timesteps."""
    from stable_baselines3.common.callbacks import BaseCallback

    class TqdmCallback(BaseCallback):
        def _on_training_start(self) -> None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=self.model.num_timesteps, desc=cfg.name, unit="step", leave=False)

        def _on_step(self) -> bool:
            self.bar.n = self.model.num_timesteps
            if self.n_calls % 64 == 0:
                self.bar.refresh()
            return True

        def _on_training_end(self) -> None:
            self.bar.n = self.model.num_timesteps
            self.bar.close()

    return TqdmCallback()


def _make_callbacks(cfg: TrainConfig, run_dir: Path, total: int, progress: bool) -> list[Any]:
    """The run's callbacks: KPI logging, evaluation and checkpoints (resuming the run's saved state), a
    progress bar if ``progress``."""
    prog = read_progress(run_dir)
    state = prog["state"] if prog is not None else {}
    cbs: list[Any] = [_kpi_callback(cfg), _checkpoint_eval_callback(cfg, run_dir, total, state)]
    if progress:
        cbs.append(_tqdm_callback(cfg, total))
    return cbs


# ------------------------------------------------------------------------------------------- main
def seed_everything(seed: int, threads: int) -> None:
    """The one seeding block: torch, NumPy's legacy global RNG, Python's random, via SB3 ``set_random_seed``."""
    import torch
    from stable_baselines3.common.utils import set_random_seed

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    set_random_seed(seed)


def train(
    cfg: TrainConfig | None,
    out_dir: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool = False,
    command: str | None = None,
    run_dir: str | Path | None = None,
) -> Path:
    """Train (or resume) one run; returns the run folder.

    ``resume``: an existing run folder; its ``config.yaml`` is used (``cfg`` must be None or equal to it)
    and training continues from ``checkpoints/latest.zip`` with ``reset_num_timesteps=False``.
    ``run_dir``: an exact folder for a new run (else ``out_dir/<name>-<timestamp>``).
    """

    if resume is not None:
        rdir = Path(resume)
        saved = load_run_config(rdir)
        if cfg is not None and cfg.model_dump() != saved.model_dump():
            raise TrainError(
                f"--resume {rdir}: the given config differs from the run's config.yaml; resume without --config"
            )
        cfg = saved
    elif cfg is None:
        raise TrainError("train: a config is needed to start a new run")
    else:
        rdir = Path(run_dir) if run_dir is not None else new_run_dir(cfg, out_dir)
        if rdir.exists() and any(rdir.iterdir()):
            raise TrainError(f"--out {rdir}: the run folder exists and is not empty (use --resume to continue it)")
    seed_everything(cfg.seed, cfg.torch_threads)
    if cfg.algo == "cem":
        from gigdispatch.envs import load_scenario

        load_scenario(cfg.scenario)  # a bad scenario fails here, before the run folder is made
        env = None
    else:
        env = make_train_env(cfg)  # a bad scenario or env argument fails here, before the run folder is made
    ckpt = rdir / CHECKPOINTS
    ckpt.mkdir(parents=True, exist_ok=True)
    write_run_files(rdir, cfg, command or shlex.join(sys.argv), resumed=resume is not None)

    if cfg.algo == "cem":
        st = train_cem(cfg, rdir, resume=resume is not None, progress=progress)
        days = st["iteration"] * cfg.cem.population * cfg.cem.seeds_per_iteration
        write_progress(
            rdir,
            days,
            cfg.cem.iterations * cfg.cem.population * cfg.cem.seeds_per_iteration,
            {"cem": st["history"][-1:]},
            done=True,
        )
        return rdir
    Algo = algo_class(cfg.algo)
    latest = ckpt / LATEST
    if resume is not None and latest.is_file():
        model = Algo.load(latest, env=env, device=cfg.device, tensorboard_log=str(rdir / TB))
        model.set_random_seed(cfg.seed + int(model.num_timesteps))
    else:
        model = build_model(cfg, env, tensorboard_log=str(rdir / TB))
        save_checkpoint(model, latest)  # a loadable checkpoint from the first moment on
        write_progress(rdir, 0, cfg.total_timesteps, {"last_ckpt": 0, "last_eval": 0}, done=False)
    done_steps = int(model.num_timesteps)
    callbacks = _make_callbacks(cfg, rdir, cfg.total_timesteps, progress)
    if done_steps < cfg.total_timesteps:
        model.learn(
            total_timesteps=cfg.total_timesteps - done_steps,
            callback=callbacks,
            reset_num_timesteps=False,
            tb_log_name="run",
            progress_bar=False,
        )
    ce = callbacks[1]
    if cfg.eval.every_steps and ce.state.get("last_eval") != model.num_timesteps:
        ce.evaluate()
    model.logger.dump(model.num_timesteps)
    save_checkpoint(model, latest)
    if not (ckpt / BEST).is_file():
        save_checkpoint(model, ckpt / BEST)
    write_progress(
        rdir, model.num_timesteps, cfg.total_timesteps, {**ce.state, "last_ckpt": model.num_timesteps}, done=True
    )
    env.close()
    return rdir


# -------------------------------------------------------------------------------------------- CLI
def cmd_train(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    command = shlex.join(["gigdispatch", *sys.argv[1:]])
    if args.address and args.backend != "rllib":
        print("error: --address: a Ray cluster address is only used with --backend rllib", file=sys.stderr)
        return 2
    try:
        if args.backend == "rllib":
            return _cmd_train_rllib(args, progress, command)
        if args.resume:
            if args.config or args.overrides:
                raise TrainError("--resume continues a run with its own config.yaml; do not give --config or overrides")
            run_dir = train(None, resume=args.resume, progress=progress, command=command)
        else:
            if not args.config:
                raise TrainError("--config is required (or --resume RUN_DIR)")
            cfg = load_config(args.config, args.overrides)
            out = Path(args.out) if args.out else Path("runs")
            run_dir = train(cfg, out, progress=progress, command=command)
    except (ConfigError, TrainError) as exc:  # ValueErrors naming the field: one line, exit status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prog = read_progress(run_dir) or {}
    if "cem" in prog.get("state", {}):
        pol = json.loads((run_dir / POLICY).read_text())["trained"]
        print(
            f"searched {pol['iterations']} CEM iterations ({prog['num_timesteps']:,} simulated days); "
            f"held-out {pol['objective']} "
            f"{pol['start_held_out_objective_mean']:,.4g} at the start, {pol['held_out_objective_mean']:,.4g} best; "
            f"policy: {run_dir / 'policy.json'}"
        )
        return 0
    print(f"trained {prog['num_timesteps']:,} steps; run folder: {run_dir}")
    return 0


def _cmd_train_rllib(args: argparse.Namespace, progress: bool, command: str) -> int:
    try:
        if args.resume:
            if args.config or args.overrides:
                raise TrainError("--resume continues a run with its own config.yaml; do not give --config or overrides")
            run_dir = Path(args.resume)
            cfg = load_run_config(run_dir)
        else:
            if not args.config:
                raise TrainError("--config is required (or --resume RUN_DIR)")
            cfg = load_config(args.config, args.overrides)
            run_dir = new_run_dir(cfg, Path(args.out) if args.out else Path("runs"))
        state = train_rllib(
            cfg, run_dir, resume=bool(args.resume), address=args.address, command=command, progress=progress
        )
    except (ConfigError, TrainError, RLlibError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = state["history"][-1] if state["history"] else {}
    ret = last.get("episode_return_mean")
    print(
        f"RLlib PPO: {state['iteration']} iterations, {state['env_steps']:,} env steps"
        + (f", episode return mean {ret:.2f}" if ret is not None else "")
        + f"; run folder: {run_dir}"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train PPO / MaskablePPO on Dispatch-v0 or the fleet env (checkpoints, TensorBoard, resume)",
        description=(
            "Train a policy from a YAML config (see configs/train/ and docs/training.md). KEY=VALUE overrides set "
            "config fields by dotted key (ppo.learning_rate=1e-4, dispatch.k=4). Writes a run folder with the resolved "
            "config, checkpoints/latest.zip and best.zip, progress.json and TensorBoard logs (tb/)."
        ),
        epilog="Example: gigdispatch train --config configs/train/dispatch-default.yaml "
        "total_timesteps=50000 --out runs/",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, dotted keys, YAML values")
    p.add_argument("--config", help="YAML training config (e.g. configs/train/dispatch-default.yaml)")
    p.add_argument("--out", help="parent folder of the new run folder <name>-<timestamp> [default: runs/]")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument(
        "--backend",
        choices=("sb3", "rllib"),
        default="sb3",
        help="sb3: stable-baselines3 / sb3-contrib in this process; "
        "rllib: the fleet env on Ray RLlib (the 'rllib' extra) [default: %(default)s]",
    )
    p.add_argument(
        "--address",
        metavar="RAY_ADDRESS",
        help="with --backend rllib: join this Ray cluster (auto, HOST:PORT or ray://HOST:10001) "
        "instead of starting a local Ray",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=cmd_train)
