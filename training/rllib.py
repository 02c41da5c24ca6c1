"""``gigdispatch train --backend rllib``: the fleet env on Ray RLlib, for runs that outgrow one machine.

The PettingZoo fleet env (``envs.parallel_env``: Fleet-v1, or Fleet-v0 with ``fleet.obs_version: 0``) goes
through RLlib's own ``ParallelPettingZooEnv`` wrapper; every driver maps to one shared policy (``"shared"``), a
PPO ``RLModule`` whose action logits are masked with the observation's ``action_mask`` (``MaskedFleetModule``:
invalid actions get a logit of ``FLOAT_MIN``, so they are never sampled and carry no probability in the PPO
loss). The run's ``ppo``
settings (learning rate, gamma, GAE lambda, clip, entropy and value coefficients, network) and its
``rllib`` section (iterations, env runners, batch sizes, epochs, episode length) configure RLlib's PPO
(new API stack).

Episodes are seeded from ``train_seeds`` (all >= 1000, never the evaluation seeds): each env copy
cycles through them in an order drawn from ``seed`` + its runner index, ignoring the seeds RLlib passes.

Locally ``ray.init()`` starts a one-machine Ray; with ``--address`` (``auto``, ``HOST:PORT`` or
``ray://HOST:10001``) the run joins that cluster, and ``rllib.num_env_runners`` sampling actors spread
over its nodes (each needs gigdispatch installed, e.g. through the cluster's runtime environment); the learner
runs in this process. ``progress.json`` names the Ray node of every env runner (``env_runner_nodes``), and the
run says on how many nodes they are (``tests/test_ray_cluster.py`` trains on a two-node cluster; see
docs/distributed.md). An address where no cluster answers is one line, at once (``runner.probe_address``).

The run folder is the SB3 backend's (``training.runs``): ``config.yaml``, ``command.txt``,
``git_revision.txt``, ``seed``, ``progress.json`` (after every iteration), ``tb/`` (TensorBoard:
``rllib/episode_return_mean``, ``rllib/env_steps``, ``rllib/iteration_seconds``) and
``checkpoints/rllib/`` (``Algorithm.save_to_path``, written into a scratch folder and swapped in
whole after every iteration, so a killed run keeps its last complete checkpoint). ``--resume RUN_DIR``
restores it and runs the remaining iterations; a finished run is left as it is, without starting Ray.
``log`` gets the run folder and one line per iteration (or a progress bar on a terminal: ``progress``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gigdispatch.envs.core.errors import InputError
from gigdispatch.training.config import TrainConfig
from gigdispatch.training.io import atomic_write_json
from gigdispatch.training.runner import probe_address
from gigdispatch.training.runs import (
    CHECKPOINTS,
    PROGRESS,
    RLLIB_CHECKPOINT,
    TB,
    RunLog,
    finished_line,
    number,
    read_progress,
    write_run_files,
)

ENV_NAME = "gigdispatch-fleet"
POLICY_ID = "shared"


class RLlibError(InputError):
    """A bad RLlib run request (the wrong env, Ray missing, an unreachable cluster address)."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.rllib
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        raise RLlibError(
            f"--backend rllib needs the 'rllib' extra (Ray RLlib, torch): {exc.name} is not installed; "
            "pip install 'gigdispatch[rllib]'"
        ) from None
    return ray


def _module_class() -> type:
    """``MaskedFleetModule`` (defined lazily: importing RLlib takes seconds)."""
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.torch_utils import FLOAT_MIN

    class MaskedFleetModule(DefaultPPOTorchRLModule):
        """PPO module over the ``observation`` part of the fleet env's Dict observation; logits of actions
        whose ``action_mask`` entry is 0 are set to ``FLOAT_MIN``."""

        def __init__(self, *args: Any, observation_space: Any = None, **kwargs: Any) -> None:
            self._dict_space = observation_space
            super().__init__(*args, observation_space=observation_space["observation"], **kwargs)

        def setup(self) -> None:
            super().setup()  # the encoder is built for the observation features (41 or 50: obs_version)
            self.observation_space = self._dict_space  # what the env hands over: the Dict, mask included

        @staticmethod
        def _split(batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            obs = batch[Columns.OBS]
            return obs["action_mask"], {**batch, Columns.OBS: obs["observation"]}

        def _masked(self, out: dict[str, Any], mask: Any) -> dict[str, Any]:
            logits = out[Columns.ACTION_DIST_INPUTS]
            out[Columns.ACTION_DIST_INPUTS] = logits.masked_fill(mask == 0, FLOAT_MIN)
            return out

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, inner = self._split(batch)
            return self._masked(super()._forward(inner, **kwargs), mask)

        def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, inner = self._split(batch)
            return self._masked(super()._forward_train(inner, **kwargs), mask)

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Any:
            if embeddings is None:
                batch = self._split(batch)[1]
            return super().compute_values(batch, embeddings)

    return MaskedFleetModule


def make_env(env_config: dict[str, Any]) -> Any:
    """The RLlib env: ``ParallelPettingZooEnv`` over ``envs.parallel_env`` (Fleet-v0 or -v1, the run's
    ``fleet.obs_version``), days seeded from ``train_seeds``."""
    import numpy as np
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from gigdispatch import envs
    from gigdispatch.agents import make_policy

    seeds = list(env_config["train_seeds"])
    order = np.random.default_rng(
        int(env_config["seed"]) + 7919 * int(getattr(env_config, "worker_index", 0))
    ).permutation(len(seeds))

    class SeededFleet(ParallelPettingZooEnv):
        def __init__(self) -> None:
            super().__init__(
                envs.parallel_env(
                    version=int(env_config["obs_version"]),
                    scenario=env_config["scenario"],
                    platform_policy=make_policy(env_config["platform_policy"]),  # the name in env_config
                    reward=env_config["reward"],
                    max_cycles=env_config["max_cycles"],
                )
            )
            self._k = 0

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            day = seeds[int(order[self._k % len(seeds)])]  # never RLlib's seed: those may be evaluation seeds
            self._k += 1
            return super().reset(seed=day, options=options)

    return SeededFleet()


def build_config(cfg: TrainConfig) -> Any:
    """RLlib's ``PPOConfig`` for the run."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    p, r = cfg.ppo, cfg.rllib
    env_config = {
        "scenario": str(cfg.scenario),
        "platform_policy": cfg.fleet.platform_policy,
        "reward": cfg.fleet.reward,
        "obs_version": cfg.fleet.obs_version,
        "max_cycles": r.max_cycles,
        "train_seeds": list(cfg.train_seeds),
        "seed": cfg.seed,
    }
    spec = RLModuleSpec(
        module_class=_module_class(), model_config={"fcnet_hiddens": list(p.net_arch), "vf_share_layers": False}
    )
    return (
        PPOConfig()
        .environment(ENV_NAME, env_config=env_config)
        .framework("torch")
        .multi_agent(policies={POLICY_ID}, policy_mapping_fn=lambda agent_id, *args, **kwargs: POLICY_ID)
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={POLICY_ID: spec}))
        .env_runners(
            num_env_runners=r.num_env_runners,
            rollout_fragment_length="auto",
            num_cpus_per_env_runner=1,
            # wait for the whole batch: RLlib's default (60 s) drops a slower env runner's samples, and an
            # iteration then trains on nothing (fleet-rllib's 32,000 env steps of 100 drivers take longer)
            sample_timeout_s=None,
        )
        .learners(num_learners=0)
        .training(
            lr=p.learning_rate,
            gamma=p.gamma,
            lambda_=p.gae_lambda,
            clip_param=p.clip_range,
            entropy_coeff=p.ent_coef,
            vf_loss_coeff=p.vf_coef,
            grad_clip=p.max_grad_norm,
            train_batch_size_per_learner=r.train_batch_size,
            minibatch_size=min(r.minibatch_size, r.train_batch_size),
            num_epochs=r.num_epochs,
        )
        .debugging(seed=cfg.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=5)
    )


def _metric(res: dict[str, Any], *path: str) -> float | None:
    node: Any = res
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    try:
        return float(node)
    except (TypeError, ValueError):
        return None


def _save(algo: Any, ckpt: Path) -> None:
    """Save into a scratch folder, then swap it in: the previous checkpoint stays whole until the new one is."""
    scratch = ckpt.with_name(ckpt.name + ".tmp")
    old = ckpt.with_name(ckpt.name + ".old")
    shutil.rmtree(scratch, ignore_errors=True)
    algo.save_to_path(str(scratch.resolve()))
    if ckpt.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(ckpt, old)
    os.replace(scratch, ckpt)
    shutil.rmtree(old, ignore_errors=True)


def runner_nodes(algo: Any) -> list[str]:
    """The Ray node id of each remote env runner of ``algo`` (none when sampling runs in this process)."""
    import ray

    def node(_runner: Any) -> str:
        return ray.get_runtime_context().get_node_id()

    if algo.env_runner_group is None or algo.env_runner_group.num_remote_env_runners() == 0:
        return []
    return [str(n) for n in algo.env_runner_group.foreach_env_runner(node, local_env_runner=False)]


def train_rllib(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    address: str | None = None,
    command: str = "",
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``cfg.rllib.iterations`` PPO iterations; returns the final progress record (that of a
    finished run as it is, when resuming one)."""
    if cfg.env != "fleet":
        raise RLlibError(f"--backend rllib trains the fleet env (env: fleet), not env: {cfg.env}")
    if resume and finished_line(run_dir) is not None:
        return read_progress(run_dir) or {}  # nothing left to do
    ray = _import_ray()
    if address is not None:
        probe_address(address)  # before any folder: ray.init waits minutes on an address where no cluster runs
    from ray.tune.registry import register_env
    from torch.utils.tensorboard import SummaryWriter

    runlog = RunLog(log, bar=progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / CHECKPOINTS / RLLIB_CHECKPOINT
    ckpt.parent.mkdir(exist_ok=True)
    write_run_files(run_dir, cfg, command, resumed=resume)
    runlog.say(f"run folder: {run_dir}")
    state: dict[str, Any] = {
        "backend": "rllib",
        "iteration": 0,
        "iterations": cfg.rllib.iterations,
        "env_steps": 0,
        "history": [],
    }
    saved = read_progress(run_dir) if resume else None
    if saved is not None:
        state = saved
    # Ray's C++ core worker logs to this process's stderr and prints error lines (``E ... core_worker.cc``) on
    # runs that succeed. Its backend log level quiets them unless the user set one (docs/training.md).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            logging_level="ERROR",
        )
    except Exception as exc:  # a wrong address or an unreachable cluster: one line, not a traceback
        raise RLlibError(
            f"--address {address!r}: could not start or reach Ray ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    try:
        register_env(ENV_NAME, make_env)
        algo = build_config(cfg).build_algo()
        if resume and ckpt.is_dir():
            algo.restore_from_path(str(ckpt.resolve()))
        state["env_runner_nodes"] = runner_nodes(algo)
        if state["env_runner_nodes"]:
            n_nodes = len(set(state["env_runner_nodes"]))
            runlog.say(f"{len(state['env_runner_nodes'])} env runner(s) on {n_nodes} Ray node(s)")
        writer = SummaryWriter(str(run_dir / TB))
        runlog.start(cfg.rllib.iterations, state["iteration"], "iter", cfg.name)
        while state["iteration"] < cfg.rllib.iterations:
            t0 = time.perf_counter()
            res = algo.train()
            secs = time.perf_counter() - t0
            state["iteration"] += 1
            steps = (
                _metric(res, "num_env_steps_sampled_lifetime")
                or _metric(res, "env_runners", "num_env_steps_sampled_lifetime")
                or 0.0
            )
            ret = _metric(res, "env_runners", "episode_return_mean")
            rec = {
                "iteration": state["iteration"],
                "env_steps": int(steps),
                "episode_return_mean": ret,
                "seconds": round(secs, 3),
            }
            state["env_steps"] = int(steps)
            state["history"].append(rec)
            it = state["iteration"]
            writer.add_scalar("rllib/env_steps", steps, it)
            writer.add_scalar("rllib/iteration_seconds", secs, it)
            if ret is not None:
                writer.add_scalar("rllib/episode_return_mean", ret, it)
            writer.flush()
            _save(algo, ckpt)
            atomic_write_json(run_dir / PROGRESS, {**state, "done": state["iteration"] >= cfg.rllib.iterations})
            runlog.step(
                it,
                f"iteration {it}/{cfg.rllib.iterations}: {int(steps):,} env steps"
                + (f", episode return mean {number(ret)}" if ret is not None else "")
                + f", {secs:.1f} s",
            )
        writer.close()
        algo.stop()
    finally:
        runlog.close()
        ray.shutdown()
    state["done"] = True
    atomic_write_json(run_dir / PROGRESS, state)
    return state
