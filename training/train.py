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
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.agents.learned import MASKED_ALGORITHMS, algo_class, load_model, read_decode
from gigdispatch.agents.set_decode import match_action
from gigdispatch.envs.core.errors import InputError
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.training.cem import train_cem
from gigdispatch.training.config import TrainConfig, check_batch_size, load_config
from gigdispatch.training.envs import dispatch_env
from gigdispatch.training.errors import TrainError
from gigdispatch.training.io import atomic_write_bytes
from gigdispatch.training.rllib import train_rllib
from gigdispatch.training.runner import import_ray, probe_address
from gigdispatch.training.runs import (
    BEST,
    CHECKPOINTS,
    KPI_TAGS,
    LATEST,
    POLICY,
    TB,
    RunLog,
    finished_line,
    load_run_config,
    new_run_dir,
    number,
    read_progress,
    save_checkpoint,
    write_progress,
    write_run_files,
)

__all__ = ["KPI_TAGS", "TrainError", "build_model", "evaluate_model", "make_train_env", "seed_everything", "train"]


# ------------------------------------------------------------------------------------------- envs
def fleet_env(cfg: TrainConfig, seed_schedule: SeedSchedule) -> Any:
    """``FleetVecEnv`` with the run's ``fleet`` settings (the platform policy by name, the observation version),
    playing the days of ``seed_schedule``."""
    from gigdispatch.agents import make_policy
    from gigdispatch.envs.fleet_vec import FleetVecEnv

    policy = make_policy(cfg.fleet.platform_policy)
    with warnings.catch_warnings():  # FleetVecEnv has no render_mode attribute; SB3 warns about it
        warnings.filterwarnings("ignore", message="The `render_mode` attribute is not defined")
        return FleetVecEnv(
            cfg.scenario,
            platform_policy=policy,
            reward=cfg.fleet.reward,
            seed_schedule=seed_schedule,
            obs_version=cfg.fleet.obs_version,
        )


def train_schedule(cfg: TrainConfig) -> SeedSchedule:
    """The training days: ``train_seeds`` cycled in an order drawn from ``seed``, whatever seed SB3 passes."""
    return train_schedules(cfg, 1)[0]


def train_schedules(cfg: TrainConfig, n: int) -> list[SeedSchedule]:
    """``n`` training schedules that share out ``train_seeds`` (shuffled by ``seed``): sub-env ``i`` plays every
    ``n``-th seed from the ``i``-th on, cycled, so the days at once are different days. The order is the one
    ``SeedSchedule(seeds=train_seeds, shuffle=seed)`` plays: with ``n = 1``, that schedule."""
    order = np.random.default_rng(cfg.seed).permutation(np.asarray(cfg.train_seeds, np.int64))
    if len(order) < n:
        order = np.resize(order, n)  # fewer seeds than envs: some days are played by two envs
    return [SeedSchedule(seeds=order[i::n].tolist(), ignore_reset_seed=True) for i in range(n)]


def make_train_env(cfg: TrainConfig) -> Any:
    """The SB3 VecEnv used for training: ``Monitor``-wrapped Dispatch-v0 in a DummyVecEnv; for ``dispatch-v1`` /
    ``-v2`` / ``-v3`` the ``dispatch.num_envs`` days of their vector env through ``SB3VecEnv`` (``VecMonitor``;
    v3's days are one ``DaysSimulator``); or the fleet."""
    if cfg.env == "fleet":
        env = fleet_env(cfg, train_schedule(cfg))
        try:  # one env per driver: known once the scenario is loaded (the config checks env: dispatch)
            check_batch_size(cfg.ppo, env.num_envs)
        except ValueError:
            env.close()
            raise
        return env
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    if cfg.env in ("dispatch-v1", "dispatch-v2", "dispatch-v3"):
        from gigdispatch.envs.dispatch_days import DispatchVecEnvV3  # v3: the days in one set of simulator arrays
        from gigdispatch.envs.dispatch_vec import DispatchVecEnv, DispatchVecEnvV2
        from gigdispatch.envs.sb3_vec import SB3VecEnv

        d = cfg.dispatch
        extra = {"bundle_k": d.bundle_k} if cfg.env == "dispatch-v2" else {}
        cls: Any = {"dispatch-v1": DispatchVecEnv, "dispatch-v2": DispatchVecEnvV2, "dispatch-v3": DispatchVecEnvV3}
        vec = cls[cfg.env](
            num_envs=d.num_envs,
            scenario=cfg.scenario,
            max_orders=d.max_orders,
            k=d.k,
            reward_scale=d.reward_scale,
            idle_only=d.idle_only,
            seed_schedules=train_schedules(cfg, d.num_envs),
            **extra,
        )
        return VecMonitor(SB3VecEnv(vec))
    return DummyVecEnv([lambda: Monitor(dispatch_env(cfg, train_schedule(cfg)))])


def build_model(
    cfg: TrainConfig, env: Any, tensorboard_log: str | None = None, algo: str | None = None, policy: str | None = None
) -> Any:
    """A new PPO / MaskablePPO model on ``env`` with the run's ``ppo`` settings (also used by the training
    throughput benchmark, with ``algo``/``policy`` overridden for the CartPole reference)."""
    Algo = algo_class(algo or cfg.algo)
    p = cfg.ppo
    batch = check_batch_size(p, env.num_envs)  # refused when larger than a rollout, never clamped
    policy_kwargs: dict[str, Any] = {"net_arch": list(p.net_arch)}
    if policy is None and cfg.uses_set_policy:
        from gigdispatch.agents.setnet import DispatchSetPolicy

        chosen: Any = DispatchSetPolicy
        policy_kwargs = {"hidden_size": p.hidden, "pair_size": p.pair_hidden}
    else:
        chosen = policy or ("MlpPolicy" if cfg.env == "fleet" else "MultiInputPolicy")
    return Algo(
        chosen,
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
        policy_kwargs=policy_kwargs,
        tensorboard_log=tensorboard_log,
        seed=cfg.seed,
        device=cfg.device,
        verbose=0,
    )


# ------------------------------------------------------------------------------------- evaluation
def evaluate_model(model: Any, cfg: TrainConfig, hold_bias: float | None = None) -> dict[str, float]:
    """Deterministic episodes on the first ``eval.episodes`` held-out seeds, on a separate env instance.

    Dispatch: ``reward_mean`` is the mean episode return (= the day's platform margin x reward_scale).
    Fleet: ``reward_mean`` is the mean over days of the mean driver return. ``profit_mean`` etc. are KPI means.
    """
    seeds = cfg.eval.seeds[: cfg.eval.episodes]
    masked = cfg.algo in MASKED_ALGORITHMS
    returns, kpis = [], []
    if cfg.env != "fleet":
        env = dispatch_env(cfg, SeedSchedule(seeds=seeds))  # the held-out days, in the given order
        for _ in seeds:
            obs, _ = env.reset()
            done, total = False, 0.0
            while not done:
                if hold_bias is not None:  # the run decodes its set network jointly, as it will be played
                    action = match_action(model.policy, env, obs, hold_bias)
                else:
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


def iteration_steps(cfg: TrainConfig, model: Any) -> int:
    """Timesteps of one PPO iteration (a rollout of ``n_steps`` on every env, then the update)."""
    return int(cfg.ppo.n_steps) * int(model.n_envs)


def _eval_text(res: dict[str, float], seconds: float) -> str:
    text = f"eval reward_mean {number(res['reward_mean'])}"
    if "profit_mean" in res:
        text += f", profit_mean {res['profit_mean']:,.1f}"
    return text + f" ({res['episodes']:.0f} days, {seconds:.1f} s)"


def _checkpoint_eval_callback(cfg: TrainConfig, run_dir: Path, total: int, state: dict[str, Any], log: RunLog) -> Any:
    """The callback that evaluates and checkpoints the model and reports every iteration to ``log``;
    ``state`` is the run's resumable state."""
    from stable_baselines3.common.callbacks import BaseCallback

    ckpt_dir = run_dir / CHECKPOINTS

    class CheckpointEvalCallback(BaseCallback):
        """At rollout boundaries: evaluate every ``eval.every_steps``, checkpoint every ``checkpoint_every_steps``,
        and report the iteration that just ended (one line, or the progress bar)."""

        def __init__(self, state: dict[str, Any]) -> None:
            super().__init__()
            self.state = state
            self.started_at: int | None = None

        def _on_training_start(self) -> None:
            self.started_at = self.model.num_timesteps
            self.state.setdefault("last_ckpt", self.model.num_timesteps)
            self.state.setdefault("last_eval", self.model.num_timesteps)

        def _on_rollout_start(self) -> None:
            n = self.model.num_timesteps
            notes = []
            if cfg.eval.every_steps and n - self.state["last_eval"] >= cfg.eval.every_steps:
                t0 = time.perf_counter()
                res = self.evaluate()
                notes.append(_eval_text(res, time.perf_counter() - t0))
            if n - self.state["last_ckpt"] >= cfg.checkpoint_every_steps:
                self.checkpoint()
                notes.append("checkpoint")
            if n != self.started_at:  # an iteration ended (not the first rollout of this learn call)
                self.report(notes)

        def _on_step(self) -> bool:
            log.move(self.model.num_timesteps)
            return True

        def report(self, notes: list[str]) -> None:
            """One line (or the bar's postfix) for the iteration that ended at the current timestep."""
            n, per = self.model.num_timesteps, iteration_steps(cfg, self.model)
            head = f"iteration {-(-n // per)}/{-(-total // per)}: {n:,}/{total:,} steps"
            log.step(n, "; ".join([head, *notes]))

        def evaluate(self) -> dict[str, float]:
            res = evaluate_model(self.model, cfg, read_decode(run_dir, what="decode.json"))
            for k, v in res.items():
                self.logger.record(f"eval/{k}", v)
            self.state["last_eval"] = self.model.num_timesteps
            best = self.state.get("best_reward")
            if best is None or res["reward_mean"] > best:
                self.state["best_reward"] = res["reward_mean"]
                self.state["best_timesteps"] = self.model.num_timesteps
                save_checkpoint(self.model, ckpt_dir / BEST)
            return res

        def checkpoint(self) -> None:
            save_checkpoint(self.model, ckpt_dir / LATEST)
            self.state["last_ckpt"] = self.model.num_timesteps
            write_progress(run_dir, self.model.num_timesteps, total, self.state, done=False)

    return CheckpointEvalCallback(state)


def _make_callbacks(cfg: TrainConfig, run_dir: Path, total: int, log: RunLog) -> list[Any]:
    """The run's callbacks: KPI logging, then evaluation, checkpoints (resuming the run's saved state) and
    the report of every iteration to ``log``."""
    prog = read_progress(run_dir)
    state = prog["state"] if prog is not None else {}
    return [_kpi_callback(cfg), _checkpoint_eval_callback(cfg, run_dir, total, state, log)]


# ------------------------------------------------------------------------------------------- main
def seed_everything(seed: int, threads: int, torch: bool = True) -> None:
    """The one seeding block: torch, NumPy's legacy global RNG, Python's random, via SB3 ``set_random_seed``;
    with ``torch=False`` (``algo: cem``, which runs without the ``rl`` extra) NumPy's and Python's only."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    if not torch:
        return
    import torch as th
    from stable_baselines3.common.utils import set_random_seed

    th.set_num_threads(threads)
    th.manual_seed(seed)
    set_random_seed(seed)


def _resolve_run(
    cfg: TrainConfig | None, out_dir: str | Path, resume: str | Path | None, run_dir: str | Path | None
) -> tuple[TrainConfig, Path]:
    """The run's config and folder: the saved ones for ``resume`` (``cfg`` must be None or equal), else ``cfg``
    and a new, empty folder."""
    if resume is not None:
        rdir = Path(resume)
        saved = load_run_config(rdir)
        if cfg is not None and cfg.model_dump() != saved.model_dump():
            raise TrainError(
                f"--resume {rdir}: the given config differs from the run's config.yaml; resume without --config"
            )
        return saved, rdir
    if cfg is None:
        raise TrainError("train: a config is needed to start a new run")
    rdir = Path(run_dir) if run_dir is not None else new_run_dir(cfg, out_dir)
    if rdir.exists() and any(rdir.iterdir()):
        raise TrainError(f"--out {rdir}: the run folder exists and is not empty (use --resume to continue it)")
    return cfg, rdir


def train(
    cfg: TrainConfig | None,
    out_dir: str | Path = "runs",
    resume: str | Path | None = None,
    progress: bool = False,
    command: str | None = None,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    address: str | None = None,
) -> Path:
    """Train (or resume) one run; returns the run folder.

    ``resume``: an existing run folder; its ``config.yaml`` is used (``cfg`` must be None or equal to it)
    and training continues from ``checkpoints/latest.zip`` with ``reset_num_timesteps=False``. A run whose
    ``progress.json`` says done is returned as it is (``training.runs.finished_line`` says so); one whose
    last checkpoint already holds every timestep (stopped during its final evaluation) is finished: evaluated,
    ``best.zip`` and ``progress.json`` written.
    ``run_dir``: an exact folder for a new run (else ``out_dir/<name>-<timestamp>``).
    ``log``: where the run says what it does (``print`` in the CLI): the run folder first, then one line per
    iteration (PPO: a rollout and its update) with the evaluations and checkpoints, unless ``progress``
    shows a bar instead.
    ``address``: the Ray cluster of a CEM search with ``cem.backend: ray`` (else ``TrainError``).
    """
    cfg, rdir = _resolve_run(cfg, out_dir, resume, run_dir)
    if address is not None and not (cfg.algo == "cem" and cfg.cem.backend == "ray"):
        raise TrainError(
            "--address: a Ray cluster address is only used with --backend rllib, or by a CEM search with "
            "cem.backend=ray"
        )
    if cfg.algo == "cem" and cfg.cem.backend == "ray":  # Ray installed and the cluster there, before any folder
        import_ray("cem.backend=ray")
        if address is not None:
            probe_address(address)
    if resume is not None and finished_line(rdir) is not None:
        return rdir  # nothing left to do
    model = None
    if cfg.algo == "cem":
        from gigdispatch.envs import load_scenario

        seed_everything(cfg.seed, cfg.torch_threads, torch=False)  # the search needs no torch
        load_scenario(cfg.scenario)  # a bad scenario fails here, before the run folder is made
        env = None
    else:
        algo_class(cfg.algo)  # torch and SB3 installed (else one line naming the 'rl' extra), before any folder
        seed_everything(cfg.seed, cfg.torch_threads)
        env = make_train_env(cfg)  # a bad scenario or env argument fails here, before the run folder is made
        latest = rdir / CHECKPOINTS / LATEST
        if resume is not None and latest.is_file():  # a damaged checkpoint fails here, before anything is written
            model = load_model(cfg.algo, latest, device=cfg.device, env=env, tensorboard_log=str(rdir / TB))
    ckpt = rdir / CHECKPOINTS
    ckpt.mkdir(parents=True, exist_ok=True)
    write_run_files(rdir, cfg, command or shlex.join(sys.argv), resumed=resume is not None)
    runlog = RunLog(log, bar=progress)
    runlog.say(f"run folder: {rdir}")
    try:
        if cfg.algo == "cem":
            _train_cem_run(cfg, rdir, resume is not None, runlog, address)
        elif cfg.algo == "dagger":
            _train_dagger_run(cfg, rdir, env, model, runlog)
        else:
            _train_sb3(cfg, rdir, env, model, runlog)
    finally:
        runlog.close()
    return rdir


def _train_cem_run(cfg: TrainConfig, rdir: Path, resume: bool, runlog: RunLog, address: str | None = None) -> None:
    st = train_cem(cfg, rdir, resume=resume, runlog=runlog, address=address)
    days = st["iteration"] * cfg.cem.population * cfg.cem.seeds_per_iteration
    write_progress(
        rdir,
        days,
        cfg.cem.iterations * cfg.cem.population * cfg.cem.seeds_per_iteration,
        {"cem": st["history"][-1:]},
        done=True,
    )


def _train_dagger_run(cfg: TrainConfig, rdir: Path, env: Any, model: Any, runlog: RunLog) -> None:
    """DAgger (``training.dagger``) into the resumed run's model, or a new MaskablePPO set-policy model."""
    from gigdispatch.training.dagger import train_dagger

    resume = model is not None
    if model is None:
        model = build_model(cfg, env, tensorboard_log=str(rdir / TB))
        save_checkpoint(model, rdir / CHECKPOINTS / "round-0.zip")  # the initial weights, for a resume before round 1
        save_checkpoint(model, rdir / CHECKPOINTS / LATEST)  # a loadable checkpoint from the first moment on
    st = train_dagger(cfg, rdir, env, model, resume, runlog)
    write_progress(rdir, st["round"], cfg.dagger.rounds, {"dagger": st["history"][-1:]}, done=True)
    env.close()


def _init_weights(model: Any, source: str, rdir: Path) -> None:
    """Start ``model`` from the policy weights of the run folder or ``.zip`` ``source`` (``ppo.init_from``), and
    copy its ``decode.json`` (the joint decoding of a set network) into the new run; one line if it does not fit."""
    from gigdispatch.agents.learned import DECODE_FILE, LearnedPolicyError, read_run_config, resolve_checkpoint

    try:
        run, ckpt = resolve_checkpoint(source)
        algo = read_run_config(run, what="ppo.init_from")["algo"]
        src = load_model(algo, ckpt, device=str(model.device))
        model.policy.load_state_dict(src.policy.state_dict())
    except LearnedPolicyError as exc:
        raise TrainError(str(exc)) from None
    except RuntimeError as exc:  # load_state_dict: other layers or sizes
        first = str(exc).splitlines()[0]
        raise TrainError(f"ppo.init_from: {source}: its policy does not fit this run's ({first})") from None
    if (run / DECODE_FILE).is_file():
        atomic_write_bytes(rdir / DECODE_FILE, (run / DECODE_FILE).read_bytes())


def _train_sb3(cfg: TrainConfig, rdir: Path, env: Any, model: Any, runlog: RunLog) -> None:
    """Train ``model`` (the resumed run's, or None: a new one) to ``total_timesteps`` and finish the run."""
    ckpt = rdir / CHECKPOINTS
    latest = ckpt / LATEST
    if model is not None:
        model.set_random_seed(cfg.seed + int(model.num_timesteps))
    else:
        model = build_model(cfg, env, tensorboard_log=str(rdir / TB))
        if cfg.ppo.init_from:
            _init_weights(model, cfg.ppo.init_from, rdir)
        save_checkpoint(model, latest)  # a loadable checkpoint from the first moment on
        write_progress(rdir, 0, cfg.total_timesteps, {"last_ckpt": 0, "last_eval": 0}, done=False)
    total = cfg.total_timesteps
    callbacks = _make_callbacks(cfg, rdir, total, runlog)
    runlog.start(total, int(model.num_timesteps), "step", cfg.name)
    if model.num_timesteps < total:
        model.learn(
            total_timesteps=total - int(model.num_timesteps),
            callback=callbacks,
            reset_num_timesteps=False,
            tb_log_name="run",
            progress_bar=False,
        )
    else:  # the last checkpoint holds every timestep: no learn() sets up the logger and the callbacks
        from stable_baselines3.common.utils import configure_logger

        model.set_logger(configure_logger(0, str(rdir / TB), "run", reset_num_timesteps=False))
        for cb in callbacks:
            cb.init_callback(model)
    ce = callbacks[1]
    n = int(model.num_timesteps)
    save_checkpoint(model, latest)  # the final weights first: a run stopped in the final evaluation resumes here
    write_progress(rdir, n, total, {**ce.state, "last_ckpt": n}, done=False)
    notes = []
    if cfg.eval.every_steps and ce.state.get("last_eval") != n:
        t0 = time.perf_counter()
        res = ce.evaluate()
        notes.append(_eval_text(res, time.perf_counter() - t0))
    model.logger.dump(n)
    if not (ckpt / BEST).is_file():
        save_checkpoint(model, ckpt / BEST)
    write_progress(rdir, n, total, {**ce.state, "last_ckpt": n}, done=True)
    ce.report([*notes, "checkpoint"])
    env.close()


# -------------------------------------------------------------------------------------------- CLI
def _say(text: str) -> None:
    print(text, flush=True)  # a log file or a pipe sees every line as it happens


def _nothing_left(resume: str, backend: str) -> str | None:
    """For ``--resume``: the line saying a finished run has nothing left to do (None: resume it); a run of the
    other backend is a ``TrainError``."""
    run = Path(resume)
    load_run_config(run)  # a run folder, else one line
    prog = read_progress(run) or {}
    if prog and (prog.get("backend") == "rllib") != (backend == "rllib"):
        want = "--backend rllib" if prog.get("backend") == "rllib" else "the sb3 backend (no --backend rllib)"
        raise TrainError(f"--resume {run}: the run was trained with {want}; resume it the same way")
    return finished_line(run)


def cmd_train(args: argparse.Namespace) -> int:
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    command = shlex.join(["gigdispatch", *sys.argv[1:]])
    try:
        if args.resume:
            if args.config or args.overrides:
                raise TrainError("--resume continues a run with its own config.yaml; do not give --config or overrides")
            done = _nothing_left(args.resume, args.backend)
            if done is not None:
                print(done)
                return 0
        if args.backend == "rllib":
            return _cmd_train_rllib(args, progress, command)
        if args.resume:
            run_dir = train(
                None, resume=args.resume, progress=progress, command=command, log=_say, address=args.address
            )
        else:
            if not args.config:
                raise TrainError("--config is required (or --resume RUN_DIR)")
            cfg = load_config(args.config, args.overrides)
            out = Path(args.out) if args.out else Path("runs")
            run_dir = train(cfg, out, progress=progress, command=command, log=_say, address=args.address)
    except InputError as exc:  # ConfigError, TrainError, a damaged checkpoint, a missing extra: one line, status 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prog = read_progress(run_dir) or {}
    if "cem" in prog.get("state", {}):
        pol = json.loads((run_dir / POLICY).read_text())["trained"]
        print(
            f"searched {pol['iterations']} CEM iterations ({prog['num_timesteps']:,} simulated days); "
            f"held-out {pol['objective']} "
            f"{number(pol['start_held_out_objective_mean'])} at the start, "
            f"{number(pol['held_out_objective_mean'])} best; "
            f"policy: {run_dir / 'policy.json'}"
        )
        return 0
    if "dagger" in prog.get("state", {}):
        best = json.loads((run_dir / "dagger_state.json").read_text())["best"]
        print(
            f"imitated for {prog['num_timesteps']} DAgger rounds; best held-out margin "
            f"{number(best['eval_profit_mean'])} (round {best['round']}, hold_bias {best['hold_bias']}); "
            f"policy: {run_dir}"
        )
        return 0
    print(f"trained {prog['num_timesteps']:,} steps; run folder: {run_dir}")
    return 0


def _cmd_train_rllib(args: argparse.Namespace, progress: bool, command: str) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        cfg = load_run_config(run_dir)
    else:
        if not args.config:
            raise TrainError("--config is required (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.overrides)
        run_dir = new_run_dir(cfg, Path(args.out) if args.out else Path("runs"))
    state = train_rllib(
        cfg, run_dir, resume=bool(args.resume), address=args.address, command=command, progress=progress, log=_say
    )
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
        help="train a policy from a YAML config: CEM (policy parameters), PPO / MaskablePPO (SB3) or RLlib PPO "
        "(checkpoints, TensorBoard, resume)",
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
        help="with --backend rllib, or a CEM search with cem.backend=ray: join this Ray cluster (auto, HOST:PORT or "
        "ray://HOST:10001) instead of starting a local Ray",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a progress bar")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")
    p.set_defaults(func=cmd_train)
