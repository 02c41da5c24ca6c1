"""``gigdispatch export``: a trained dispatch policy as ONE ONNX graph, verified against the torch policy.

``export_policy(checkpoint, out, check=1000) -> dict`` is the Python API; ``add_parser(sub)`` the subcommand.

Dispatch-v0 runs (SB3's ``MultiInputPolicy``): the graph (``DispatchPolicyGraph``) holds everything
between the env's observation and the action:

* inputs ``orders``, ``candidates``, ``globals`` (float32, batch first, the flat layouts of
  ``DispatchEnv.observation_space``) and ``action_mask`` (bool, batch x ``sum(nvec)``, the layout of
  ``DispatchEnv.action_masks()``);
* SB3's ``MultiInputPolicy`` preprocessing (``preprocess_obs``: Boxes cast to float; ``CombinedExtractor``:
  each key flattened, concatenated in the observation space's key order), the actor MLP and ``action_net``
  (the logits of all MultiDiscrete dimensions, concatenated);
* MaskablePPO runs: invalid logits set to ``-inf`` (SB3 uses -1e8; the argmax is the same, since every
  dimension keeps a valid choice: *hold* and level 0 always are);
  PPO runs: the mask is accepted and ignored, as ``LearnedDispatchPolicy`` predicts without masks;
* the per-dimension argmax (first index on ties, as ``torch.argmax``); output ``action`` (int64,
  batch x n_dims) -- SB3's deterministic action.

Set-network runs (``env: dispatch-v1`` / ``dispatch-v2``, ``algo: maskable_ppo | ppo | dagger``:
``agents.setnet.DispatchSetPolicy``): the graph (``DispatchSetPolicyGraph``, ``build_set_graph_module``)
runs the actor as ``agents.setnet.DenseSetActor`` (every slot and candidate column computed and masked,
instead of the packed trunk's data-dependent ``nonzero``; the same weights and function):

* inputs ``orders`` ``(B, M, Fo)``, ``candidates`` ``(B, M, K, Fc)``, ``globals`` ``(B, G)`` (the row
  layouts of Dispatch-v1/v2) and ``action_mask`` (bool, ``(B, sum(nvec))``); ``M`` and ``K`` are dynamic
  axes as well as the batch (the network has no size that depends on them; the sidecar's shapes are the
  run's);
* output ``action`` (int64, ``(B, M)`` or with pricing ``(B, 2M)``: choices, then payout levels): per row the
  argmax of the masked log-softmax, the MaskablePPO mask ANDed into the observation's own mask (PPO runs:
  the mask is ignored) -- ``model.predict(obs, action_masks=mask, deterministic=True)``;
* output ``row_log_probs`` (float32, ``(B, R, C)``, ``R = M`` or ``2M``, ``C = max(K + 1, L)``): the rows'
  log-probabilities masked by the observation alone, masked entries about -1e9 -- the layout of
  ``DispatchSetPolicy.row_log_probs``, which a joint decoder (``agents.set_decode.match_rows``) reads.
  The sidecar's ``decode`` (``{"decode": "match", "hold_bias": b}``, from the run's ``decode.json``) tells
  ``OnnxDispatchPolicy`` to decode them as ``LearnedDispatchPolicy`` does.

Fleet runs (``env: fleet``, a shared driver policy: ``agents.fleet_learned.LearnedFleetPolicy``): the graph
(``build_fleet_graph_module``) is the actor alone, input ``obs`` (float32, ``(N, F)``: one row per driver in the
fields of the model's observation version, ``F`` = 50 for ``envs.fleet_core.OBS_FIELDS_V1``, 41 for a run trained
on ``OBS_FIELDS_V0``) to output ``logits`` (float32, ``(N, 10)``); a row's greedy action is the argmax
of its logits where the env's mask allows. The check (``--check N``) draws N random driver rows and masks and
requires the ONNX greedy actions to equal ``model.predict(obs, action_masks=mask, deterministic=True)`` on every
row and the logits to be within ``FLEET_LOGIT_ATOL`` of torch's; ``--check-served`` does not apply. The sidecar's
``format`` is ``gigdispatch-fleet-onnx/1``.

Export uses ``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter), opset 17, with a dynamic
batch axis. Verification (``--check N``, default 1000): N observations and masks are recorded from
rollouts of the run's env on held-out seeds (the run's ``eval.seeds``, then the seeds after every training
and evaluation seed; all >= 1000), driven by the torch policy itself, and the ONNX decisions (onnxruntime,
``CPUExecutionProvider``, the whole batch in one call) must equal ``model.predict(obs, action_masks=mask,
deterministic=True)`` on every one. For set-network runs the rollouts are driven by the torch policy's own
decisions (joint decoding with ``decode.json``), the ``row_log_probs`` must be within ``LOGP_ATOL`` (1e-4)
of torch's on every allowed entry and masked where torch's are, and with ``decode.json`` the joint decoding
of each side's log-probabilities (with the env's candidate ids, recorded per state) must give identical
actions. The ``.onnx`` file and its sidecar ``FILE.onnx.json`` are written (atomically) only after the
check passed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.envs.core.errors import GigdispatchError, InputError
from gigdispatch.envs.core.seeding import MIN_TRAIN_SEED
from gigdispatch.training.argtypes import whole_number
from gigdispatch.training.config import TrainConfig
from gigdispatch.training.io import atomic_write_bytes, atomic_write_json, check_out_file
from gigdispatch.training.runs import CONFIG, load_run_config

OPSET = 17
OBS_KEYS = ("orders", "candidates", "globals")
INPUT_NAMES = [*OBS_KEYS, "action_mask"]
OUTPUT_NAME = "action"
ROW_LOG_PROBS = "row_log_probs"  # the set policy's graph: the rows' log-probabilities, for joint decoding
LOGP_ATOL = 1e-4  # the check: ONNX vs torch row log-probabilities on every allowed entry


class ExportError(InputError):
    """Bad input to ``export_policy`` (checkpoint, output path); one line, naming what is wrong."""


class CheckError(GigdispatchError, RuntimeError):
    """The exported graph's decisions differ from the torch policy's."""


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON sidecar of an exported model: ``FILE.onnx`` -> ``FILE.onnx.json``."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def _segments(nvec: list[int]) -> list[tuple[int, int]]:
    """Runs of equal consecutive sizes in ``nvec`` as (count, size): [3,3,3,2,2] -> [(3, 3), (2, 2)]."""
    runs: list[tuple[int, int]] = []
    for n in nvec:
        if runs and runs[-1][1] == n:
            runs[-1] = (runs[-1][0] + 1, n)
        else:
            runs.append((1, int(n)))
    return runs


def build_graph_module(model: Any, masked: bool) -> Any:
    """A ``torch.nn.Module`` mapping (orders, candidates, globals, action_mask) to the deterministic action."""
    import torch
    from stable_baselines3.common.preprocessing import preprocess_obs

    policy = model.policy
    if is_set_policy(model):
        return build_set_graph_module(model, masked)
    if not hasattr(policy, "mlp_extractor"):
        raise ExportError(
            f"the model's policy {type(policy).__name__} cannot be exported to ONNX (only MultiInputPolicy and"
            " DispatchSetPolicy runs can); evaluate and serve the run folder itself instead"
        )
    nvec = [int(n) for n in model.action_space.nvec]
    segments = _segments(nvec)
    obs_space = policy.observation_space
    keys = list(obs_space.spaces)  # SB3's CombinedExtractor concatenates in this order
    if sorted(keys) != sorted(OBS_KEYS):
        raise ExportError(f"the model's observation keys {keys} are not Dispatch-v0's {list(OBS_KEYS)}")

    class DispatchPolicyGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, orders: Any, candidates: Any, globals_: Any, action_mask: Any) -> Any:
            obs = {"orders": orders, "candidates": candidates, "globals": globals_}
            x = preprocess_obs({k: obs[k] for k in keys}, obs_space, normalize_images=policy.normalize_images)
            features = policy.pi_features_extractor(x)
            latent = policy.mlp_extractor.forward_actor(features)
            logits = policy.action_net(latent)
            if masked:
                logits = torch.where(action_mask, logits, torch.full_like(logits, float("-inf")))
            else:  # keep the mask an input of the graph (one interface), without letting it change anything
                logits = logits + action_mask[:, :1].to(logits.dtype) * 0.0
            out, start = [], 0
            for count, size in segments:
                block = logits[:, start : start + count * size].reshape(-1, count, size)
                out.append(torch.argmax(block, dim=-1))
                start += count * size
            return torch.cat(out, dim=1).to(torch.int64)

    return DispatchPolicyGraph().eval()


def is_set_policy(model: Any) -> bool:
    """The model's policy is the set network (``agents.setnet.DispatchSetPolicy``, Dispatch-v1/v2 runs)."""
    from gigdispatch.agents.setnet import DispatchSetPolicy

    return isinstance(model.policy, DispatchSetPolicy)


def build_set_graph_module(model: Any, masked: bool) -> Any:
    """A ``torch.nn.Module`` mapping (orders, candidates, globals, action_mask) to (the deterministic action,
    the rows' log-probabilities) for a set-policy model, through ``agents.setnet.DenseSetActor`` (no
    data-dependent shape, so ``M`` and ``K`` stay free in the traced graph).

    ``action``: per row the argmax of the masked log-softmax, the MaskablePPO ``action_mask`` ANDed into the
    observation's own mask for masked runs (as ``predict(..., action_masks=mask)``), ignored for PPO runs (as
    ``LearnedDispatchPolicy`` predicts); choices then levels. ``row_log_probs``: ``(B, R, C)``, the layout of
    ``DispatchSetPolicy.row_log_probs``, masked by the observation alone (what ``agents.set_decode`` decodes)."""
    import torch

    from gigdispatch.agents.setnet import DenseSetActor, masked_log_softmax

    try:
        actor = DenseSetActor(model.policy)
    except InputError as exc:
        raise ExportError(f"the model's set policy cannot be exported to ONNX: {exc}") from None
    n_levels = actor.n_levels

    class DispatchSetPolicyGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.actor = actor

        def forward(self, orders: Any, candidates: Any, globals_: Any, action_mask: Any) -> Any:
            rows = self.actor.rows(orders, candidates, globals_)
            choice_lp = masked_log_softmax(rows.choice_logits, rows.choice_mask)
            level_lp = None
            if rows.level_logits is not None and rows.level_mask is not None:
                level_lp = masked_log_softmax(rows.level_logits, rows.level_mask)
            b, m, width = rows.choice_logits.shape
            if masked:  # the flat MaskablePPO layout: M rows of K + 1 choices, then M rows of L levels
                n_choice = m * width
                allow = action_mask[:, :n_choice].reshape(b, m, width)
                picks = [masked_log_softmax(rows.choice_logits, rows.choice_mask & allow).argmax(dim=-1)]
                if rows.level_logits is not None and rows.level_mask is not None:
                    allow_lv = action_mask[:, n_choice:].reshape(b, m, n_levels)
                    picks.append(masked_log_softmax(rows.level_logits, rows.level_mask & allow_lv).argmax(dim=-1))
            else:  # keep the mask an input of the graph (one interface), without letting it change anything
                keep = action_mask[:, :1].unsqueeze(-1).to(choice_lp.dtype) * 0.0
                picks = [(choice_lp + keep).argmax(dim=-1)]
                if level_lp is not None:
                    picks.append(level_lp.argmax(dim=-1))
            action = torch.cat(picks, dim=1).to(torch.int64)
            return action, self.actor.stack_rows(choice_lp, level_lp)

    return DispatchSetPolicyGraph().eval()


def export_bytes(model: Any, masked: bool, obs_shapes: dict[str, tuple[int, ...]], mask_len: int) -> bytes:
    """The ONNX model (bytes) of ``build_graph_module`` with a dynamic batch axis (set policies: also dynamic
    ``max_orders`` and ``k`` axes, and the second output ``row_log_probs``)."""
    import torch

    module = build_graph_module(model, masked)
    example = (
        *tuple(torch.zeros((1, *obs_shapes[k]), dtype=torch.float32) for k in OBS_KEYS),
        torch.ones((1, mask_len), dtype=torch.bool),
    )
    buf = io.BytesIO()
    set_policy = is_set_policy(model)
    outputs = [OUTPUT_NAME, ROW_LOG_PROBS] if set_policy else [OUTPUT_NAME]
    dyn = set_dynamic_axes() if set_policy else {name: {0: "batch"} for name in [*INPUT_NAMES, OUTPUT_NAME]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=DeprecationWarning
        )  # "legacy TorchScript-based exporter": chosen on purpose
        torch.onnx.export(
            module,
            example,
            buf,
            input_names=INPUT_NAMES,
            output_names=outputs,
            dynamic_axes=dyn,
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def set_dynamic_axes() -> dict[str, dict[int, str]]:
    """The free axes of a set policy's graph: the batch, the order slots ``max_orders`` (M) and the candidate
    columns ``k`` (K), and what follows from them (mask and action lengths, the rows' count and width)."""
    return {
        "orders": {0: "batch", 1: "max_orders"},
        "candidates": {0: "batch", 1: "max_orders", 2: "k"},
        "globals": {0: "batch"},
        "action_mask": {0: "batch", 1: "mask_len"},
        OUTPUT_NAME: {0: "batch", 1: "action_dims"},
        ROW_LOG_PROBS: {0: "batch", 1: "rows", 2: "columns"},
    }


def ort_session(model: bytes | str | Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads, sequential execution)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, sess_options=so, providers=["CPUExecutionProvider"])


def ort_inputs(obs: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The feed of the graph: observations as float32 batches, the mask as a bool batch (a single obs gets a
    batch of 1)."""
    feed = {k: np.asarray(obs[k], dtype=np.float32) for k in OBS_KEYS}
    m = np.asarray(mask, dtype=bool)
    if feed["globals"].ndim == 1:
        feed = {k: v[None] for k, v in feed.items()}
        m = m[None]
    return {**feed, "action_mask": m}


# ----------------------------------------------------------------------------------- verification
def fresh_seed(cfg: TrainConfig) -> int:
    """The first seed after every training and held-out seed of the run (and never below ``MIN_TRAIN_SEED``)."""
    return max([*cfg.train_seeds, *cfg.eval.seeds, MIN_TRAIN_SEED - 1]) + 1


def held_out_seeds(cfg: TrainConfig, count: int) -> list[int]:
    """``count`` held-out seeds: the run's ``eval.seeds``, then the seeds after every training and evaluation seed."""
    seeds = [int(s) for s in cfg.eval.seeds if int(s) not in set(cfg.train_seeds)]
    nxt = fresh_seed(cfg)
    while len(seeds) < count:
        seeds.append(nxt)
        nxt += 1
    return seeds[:count]


def record_rollouts(
    learned: Any, cfg: TrainConfig, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[int]]:
    """``n`` Dispatch-v0 observations, masks and the torch policy's deterministic actions, from rollouts on
    held-out seeds of the run's config ``cfg`` driven by that policy (``predict(..., action_masks=mask,
    deterministic=True)``; no mask for PPO). Returns (obs batch, mask batch, action batch, seeds used)."""
    from gigdispatch.envs.core.seeding import SeedSchedule
    from gigdispatch.training.envs import dispatch_env

    model = learned.model
    seeds = held_out_seeds(cfg, 10_000)
    env = dispatch_env(cfg, SeedSchedule(seeds=seeds))  # in this order
    obs_rows: dict[str, list[np.ndarray]] = {k: [] for k in OBS_KEYS}
    masks, actions, used = [], [], []
    while len(actions) < n:
        if len(used) >= len(seeds):
            raise CheckError(f"could not record {n} decision epochs in {len(seeds)} days")
        obs, _ = env.reset()
        used.append(int(seeds[len(used)]))
        done = False
        while not done and len(actions) < n:
            mask = env.action_masks()
            kw = {"action_masks": mask} if learned.masked else {}
            action, _ = model.predict(obs, deterministic=True, **kw)
            for k in OBS_KEYS:
                obs_rows[k].append(np.asarray(obs[k], np.float32).copy())
            masks.append(mask.copy())
            actions.append(np.asarray(action, np.int64).copy())
            obs, _, done, _, _ = env.step(action)
    env.close()
    return {k: np.stack(v) for k, v in obs_rows.items()}, np.stack(masks), np.stack(actions), used


def check_decisions(onnx_model: bytes | str | Path, learned: Any, cfg: TrainConfig, n: int) -> dict[str, Any]:
    """Record ``n`` realistic observations (``record_rollouts``) and compare the ONNX actions with torch's.

    Raises ``CheckError`` naming how many differ and the first one; returns the check's record."""
    obs, masks, torch_actions, seeds = record_rollouts(learned, cfg, n)
    sess = ort_session(onnx_model)
    onnx_actions = sess.run([OUTPUT_NAME], ort_inputs(obs, masks))[0]
    if onnx_actions.shape != torch_actions.shape:
        raise CheckError(f"the ONNX actions have shape {onnx_actions.shape}, the torch policy's {torch_actions.shape}")
    differ = np.flatnonzero((onnx_actions != torch_actions).any(axis=1))
    if differ.size:
        i = int(differ[0])
        raise CheckError(
            f"the ONNX decisions differ from the torch policy's on {differ.size} of {n} observations "
            f"(first: #{i}, onnx {onnx_actions[i].tolist()} vs torch {torch_actions[i].tolist()})"
        )
    single = sess.run([OUTPUT_NAME], ort_inputs({k: v[0] for k, v in obs.items()}, masks[0]))[
        0
    ]  # batch of one works too
    if not np.array_equal(single[0], torch_actions[0]):
        raise CheckError("the ONNX decision for a batch of one differs from the torch policy's")
    return {
        "observations": int(n),
        "identical": int(n),
        "seeds": seeds,
        "held_actions_share": float(
            np.mean(torch_actions[:, : learned.env_kwargs["max_orders"]] == learned.env_kwargs["k"])
        ),
    }


def record_set_rollouts(learned: Any, cfg: TrainConfig, n: int) -> dict[str, Any]:
    """``n`` Dispatch-v1/v2 states of a set-policy run, from rollouts on held-out seeds driven by the torch
    policy's own decisions (``LearnedDispatchPolicy``'s: the rows decoded by ``agents.set_decode`` when the
    run has ``decode.json``, else ``predict``). Per state: the observation and mask, the torch policy's
    deterministic ``predict`` action (``argmax``), the action it takes (``decided``), its row log-probabilities
    (``row_log_probs``), and the env's candidate ids and slot count (``cand``, ``n_slots``: what the joint
    decoder reads besides the log-probabilities)."""
    from gigdispatch.agents.set_decode import match_env_rows
    from gigdispatch.envs.core.seeding import SeedSchedule
    from gigdispatch.training.train import dispatch_env

    model, hold_bias = learned.model, learned.hold_bias
    seeds = held_out_seeds(cfg, 10_000)
    env = dispatch_env(cfg, SeedSchedule(seeds=seeds))  # in this order
    rec: dict[str, list[Any]] = {
        k: [] for k in [*OBS_KEYS, "action_mask", "argmax", "decided", ROW_LOG_PROBS, "cand", "n_slots"]
    }
    used: list[int] = []
    while len(rec["decided"]) < n:
        if len(used) >= len(seeds):
            raise CheckError(f"could not record {n} decision epochs in {len(seeds)} days")
        obs, _ = env.reset()
        used.append(int(seeds[len(used)]))
        done = False
        while not done and len(rec["decided"]) < n:
            mask = env.action_masks()
            kw = {"action_masks": mask} if learned.masked else {}
            argmax, _ = model.predict(obs, deterministic=True, **kw)
            lp = model.policy.row_log_probs(obs)
            action = argmax if hold_bias is None else match_env_rows(lp, env, hold_bias)
            for k in OBS_KEYS:
                rec[k].append(np.asarray(obs[k], np.float32).copy())
            rec["action_mask"].append(mask.copy())
            rec["argmax"].append(np.asarray(argmax, np.int64).copy())
            rec["decided"].append(np.asarray(action, np.int64).copy())
            rec[ROW_LOG_PROBS].append(np.asarray(lp, np.float32).copy())
            rec["cand"].append(env._cand.copy())
            rec["n_slots"].append(len(env._slots))
            obs, _, done, _, _ = env.step(action)
    env.close()
    out: dict[str, Any] = {k: np.stack(v) if k != "n_slots" else np.asarray(v, np.int64) for k, v in rec.items()}
    out["seeds"] = used
    out["n_levels"] = int(env.L) if env.pricing else 0
    return out


def check_set_decisions(onnx_model: bytes | str | Path, learned: Any, cfg: TrainConfig, n: int) -> dict[str, Any]:
    """``check_decisions`` for a set-policy run: on ``n`` recorded states (``record_set_rollouts``) the graph's
    ``action`` must equal the torch ``predict`` action, its ``row_log_probs`` torch's within ``LOGP_ATOL`` on
    every allowed entry (and be masked where torch's are), and, for a run with ``decode.json``, the joint
    decoding of each side's log-probabilities (``agents.set_decode.match_rows``) must give identical actions."""
    from gigdispatch.agents.set_decode import match_rows

    rec = record_set_rollouts(learned, cfg, n)
    sess = ort_session(onnx_model)
    feed = ort_inputs({k: rec[k] for k in OBS_KEYS}, rec["action_mask"])
    onnx_actions, onnx_lp = sess.run([OUTPUT_NAME, ROW_LOG_PROBS], feed)
    torch_actions, torch_lp = rec["argmax"], rec[ROW_LOG_PROBS]
    if onnx_actions.shape != torch_actions.shape or onnx_lp.shape != torch_lp.shape:
        raise CheckError(
            f"the ONNX outputs have shapes {onnx_actions.shape}, {onnx_lp.shape}; the torch policy's "
            f"{torch_actions.shape}, {torch_lp.shape}"
        )
    allowed = torch_lp > _MASKED
    if not np.array_equal(onnx_lp > _MASKED, allowed):
        raise CheckError("the ONNX row log-probabilities mask other entries than the torch policy's")
    max_diff = float(np.abs(onnx_lp - torch_lp)[allowed].max(initial=0.0))
    if not max_diff <= LOGP_ATOL:
        raise CheckError(f"the ONNX row log-probabilities differ from torch's by up to {max_diff:.3g} (> {LOGP_ATOL})")
    differ = np.flatnonzero((onnx_actions != torch_actions).any(axis=1))
    what = "argmax"
    if not differ.size and learned.hold_bias is not None:
        what = "match"
        onnx_actions = np.stack(
            [
                match_rows(onnx_lp[i], rec["cand"][i], int(rec["n_slots"][i]), rec["n_levels"], learned.hold_bias)
                for i in range(n)
            ]
        )
        torch_actions = rec["decided"]
        differ = np.flatnonzero((onnx_actions != torch_actions).any(axis=1))
    if differ.size:
        i = int(differ[0])
        raise CheckError(
            f"the ONNX decisions ({what}) differ from the torch policy's on {differ.size} of {n} observations "
            f"(first: #{i}, onnx {onnx_actions[i].tolist()} vs torch {torch_actions[i].tolist()})"
        )
    single = sess.run([OUTPUT_NAME], ort_inputs({k: rec[k][0] for k in OBS_KEYS}, rec["action_mask"][0]))[0]
    if not np.array_equal(single[0], rec["argmax"][0]):
        raise CheckError("the ONNX decision for a batch of one differs from the torch policy's")
    m, k = learned.env_kwargs["max_orders"], learned.env_kwargs["k"]
    return {
        "observations": int(n),
        "identical": int(n),
        "seeds": rec["seeds"],
        "held_actions_share": float(np.mean(rec["decided"][:, :m] == k)),
        "decode": what,
        "max_log_prob_diff": max_diff,
    }


_MASKED = -1e8  # log-probabilities below this are masked entries (``mask_fill``: -1e9, minus the row's log-sum-exp)


# ------------------------------------------------------------------------------------------ fleet runs
FLEET_FORMAT = "gigdispatch-fleet-onnx/1"
FLEET_INPUT = "obs"
FLEET_OUTPUT = "logits"
FLEET_LOGIT_ATOL = 1e-4  # the check: ONNX vs torch logits


def build_fleet_graph_module(model: Any) -> Any:
    """A ``torch.nn.Module`` mapping the fleet env's driver rows ``obs`` ``(N, F)`` to the actor's action
    logits ``(N, N_ACTIONS)``: SB3's ``MlpPolicy`` preprocessing (``preprocess_obs``: the Box as float), its
    features extractor, the actor MLP and ``action_net``. The greedy action of a row is the argmax of its logits
    where the mask allows (what ``predict(..., action_masks=mask, deterministic=True)`` picks)."""
    import torch
    from stable_baselines3.common.preprocessing import preprocess_obs

    policy = model.policy
    if not hasattr(policy, "mlp_extractor"):
        raise ExportError(f"the fleet model's policy {type(policy).__name__} is not SB3's MlpPolicy; cannot export it")
    space = policy.observation_space

    class FleetActorGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy

        def forward(self, obs: Any) -> Any:
            x = preprocess_obs(obs, space, normalize_images=policy.normalize_images)
            latent = policy.mlp_extractor.forward_actor(policy.pi_features_extractor(x))
            return policy.action_net(latent)

    return FleetActorGraph().eval()


def fleet_obs_dim(model: Any) -> int:
    """The width of the driver rows ``model`` reads (its observation space: 41 or 50, the run's version)."""
    return int(model.observation_space.shape[0])


def export_fleet_bytes(model: Any) -> bytes:
    """The ONNX model (bytes) of ``build_fleet_graph_module`` with a dynamic batch (driver) axis, for rows of the
    model's own width."""
    import torch

    module = build_fleet_graph_module(model)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, on purpose
        torch.onnx.export(
            module,
            (torch.zeros((1, fleet_obs_dim(model)), dtype=torch.float32),),
            buf,
            input_names=[FLEET_INPUT],
            output_names=[FLEET_OUTPUT],
            dynamic_axes={FLEET_INPUT: {0: "batch"}, FLEET_OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buf.getvalue()


def random_fleet_rows(n: int, seed: int = 0, obs_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random driver rows of ``obs_dim`` fields (default: the latest version's, ``OBS_DIM``) and masks: half
    the rows uniform on 0..1 (where most fields live), half on the whole observation box (-CLIP..CLIP); each mask
    allows stay (always allowed in the env) and each other action with probability 1/2."""
    from gigdispatch.envs.fleet_core import CLIP, N_ACTIONS, OBS_DIM

    dim = OBS_DIM if obs_dim is None else obs_dim
    rng = np.random.default_rng(seed)
    half = n // 2
    obs = np.concatenate([rng.uniform(0.0, 1.0, (half, dim)), rng.uniform(-CLIP, CLIP, (n - half, dim))])
    mask = rng.random((n, N_ACTIONS)) < 0.5
    mask[:, 0] = True
    return obs.astype(np.float32), mask


def check_fleet_decisions(onnx_model: bytes | str | Path, learned: Any, n: int) -> dict[str, Any]:
    """On ``n`` random driver rows and masks (``random_fleet_rows``): the greedy actions of the ONNX logits (masked
    argmax for masked runs, plain argmax for PPO) must equal ``model.predict(obs, action_masks=mask,
    deterministic=True)`` on every row, and the logits torch's within ``FLEET_LOGIT_ATOL``; ``CheckError`` names
    how many differ and the first."""
    import torch

    obs, mask = random_fleet_rows(n, obs_dim=fleet_obs_dim(learned.model))
    logits = ort_session(onnx_model).run([FLEET_OUTPUT], {FLEET_INPUT: obs})[0]
    with torch.no_grad():
        torch_logits = build_fleet_graph_module(learned.model)(torch.from_numpy(obs)).numpy()
    max_diff = float(np.abs(logits - torch_logits).max(initial=0.0))
    if not max_diff <= FLEET_LOGIT_ATOL:
        raise CheckError(f"the ONNX logits differ from torch's by up to {max_diff:.3g} (> {FLEET_LOGIT_ATOL})")
    onnx_actions = np.argmax(np.where(mask, logits, -np.inf) if learned.masked else logits, axis=1)
    torch_actions = learned.actions(obs, mask)
    differ = np.flatnonzero(onnx_actions != torch_actions)
    if differ.size:
        i = int(differ[0])
        raise CheckError(
            f"the ONNX greedy actions differ from the torch policy's on {differ.size} of {n} driver rows "
            f"(first: #{i}, onnx {int(onnx_actions[i])} vs torch {int(torch_actions[i])})"
        )
    return {"rows": int(n), "identical": int(n), "rows_from": "random", "max_logit_diff": max_diff}


def load_fleet(checkpoint: str | Path) -> Any:
    """``LearnedFleetPolicy`` for a fleet run folder or checkpoint; ``ExportError`` (one line) for anything else."""
    from gigdispatch.agents import make_policy
    from gigdispatch.agents.fleet_learned import LearnedFleetPolicy

    p = Path(checkpoint)
    try:
        return LearnedFleetPolicy(p, make_platform=make_policy)
    except ValueError as exc:
        raise ExportError(f"--checkpoint {str(p)!r}: {exc}".splitlines()[0]) from None


def export_fleet_policy(checkpoint: str | Path, out: Path, check: int) -> dict[str, Any]:
    """``export_policy`` for a fleet run: the shared driver actor as ONNX (``obs`` -> ``logits``), verified on
    ``check`` random driver rows (``check_fleet_decisions``), then ``out`` and its sidecar written. The input is
    the model's rows: its observation version's width and fields (``learned.obs_version``)."""
    from gigdispatch.envs.fleet_core import N_ACTIONS, OBS_DIMS, OBS_FIELDS_BY_VERSION

    learned = load_fleet(checkpoint)
    obs_dim, fields = OBS_DIMS[learned.obs_version], OBS_FIELDS_BY_VERSION[learned.obs_version]
    cfg = load_run_config(learned.run_dir, what="--checkpoint")
    t0 = time.perf_counter()
    data = export_fleet_bytes(learned.model)
    t_export = time.perf_counter() - t0
    verified = None
    if check:
        t0 = time.perf_counter()
        verified = check_fleet_decisions(data, learned, check)
        verified["seconds"] = round(time.perf_counter() - t0, 3)
    meta = {
        "format": FLEET_FORMAT,
        "config": str((learned.run_dir / CONFIG).resolve()),
        "checkpoint": str(learned.checkpoint.resolve()),
        "algo": learned.algo,
        "masked": bool(learned.masked),
        "scenario": str(cfg.scenario),
        "env": "fleet",
        "platform_policy": learned.platform_name,
        "obs_version": learned.obs_version,
        "input": {"name": FLEET_INPUT, "shape": ["batch", obs_dim], "dtype": "float32", "fields": list(fields)},
        "output": {"name": FLEET_OUTPUT, "shape": ["batch", N_ACTIONS], "dtype": "float32"},
        "actions": "0 stay / decline the pending offer, 1 accept it, 2..9 move to zone_neighbors[zone, action - 2]",
        "greedy": "argmax of the logits where the env's action mask allows"
        if learned.masked
        else "argmax of the logits (PPO: no mask; a forbidden action counts as 0)",
        **_provenance(t_export, verified, data),
    }
    atomic_write_bytes(out, data)
    atomic_write_json(sidecar_path(out), meta)
    return meta


def _is_fleet_run(checkpoint: str | Path) -> bool:
    """The run folder or ``.zip`` was trained on ``env: fleet`` (anything unreadable: False, ``load_learned`` says
    what is wrong with it)."""
    from gigdispatch.agents.learned import run_env

    try:
        return run_env(checkpoint) == "fleet"
    except ValueError:
        return False


# ------------------------------------------------------------------------------------------- export
def _provenance(t_export: float, verified: dict[str, Any] | None, data: bytes) -> dict[str, Any]:
    """The sidecar fields every export records, dispatch graph or fleet actor: how it was exported (opset,
    exporter, library versions, seconds), what the check found, and the model's size."""
    return {
        "opset": OPSET,
        "exporter": "torch.onnx.export(dynamo=False)",
        "versions": _versions(),
        "export_seconds": round(t_export, 3),
        "verified": verified,
        "bytes": len(data),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "onnx", "onnxruntime", "stable-baselines3", "sb3-contrib", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def load_learned(checkpoint: str | Path) -> Any:
    """``LearnedDispatchPolicy`` for a run folder or checkpoint; ``ExportError`` for anything that is not one."""
    from gigdispatch.agents.learned import LearnedDispatchPolicy

    p = Path(checkpoint)
    try:
        return LearnedDispatchPolicy(p)
    except ValueError as exc:
        if str(exc).startswith("policy "):  # the run folder / config checks of LearnedDispatchPolicy
            raise ExportError(f"--checkpoint {str(p)!r}: {exc}") from None
        raise ExportError(f"--checkpoint {str(p)!r}: not a loadable SB3 checkpoint ({exc})".splitlines()[0]) from None
    except Exception as exc:  # a corrupted or foreign .zip: zipfile, pickle, torch errors
        raise ExportError(
            f"--checkpoint {str(p)!r}: not a loadable SB3 checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]
        ) from None


def export_policy(checkpoint: str | Path, out: str | Path, check: int = 1000, check_served: int = 0) -> dict[str, Any]:
    """Export, verify on ``check`` recorded observations (0: no check) and, served, on ``check_served``
    recorded dispatch requests (0: no check), then write ``out`` and its sidecar.

    Returns the sidecar's content. ``ExportError`` for bad input, ``CheckError`` when decisions differ
    (nothing is written then)."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"--out {str(out)!r}: the file name must end with .onnx")
    if out.is_dir():
        raise ExportError(f"--out {str(out)!r}: is a folder")
    check_out_file(out, "--out", error=ExportError)  # its folder must exist: never created for a file
    if check < 0:
        raise ExportError(f"--check: must be >= 0, got {check}")
    if check_served < 0:
        raise ExportError(f"--check-served: must be >= 0, got {check_served}")
    if _is_fleet_run(checkpoint):  # a driver policy: the actor's logits, not a dispatch graph
        if check_served:
            raise ExportError(
                f"--check-served: compares /v1/dispatch answers of a dispatch graph; {str(checkpoint)!r} is a fleet "
                "run (a driver policy), drop --check-served"
            )
        return export_fleet_policy(checkpoint, out, check)
    learned = load_learned(checkpoint)
    from gigdispatch.envs.scenarios.loader import load_scenario

    cfg, model = load_run_config(learned.run_dir, what="--checkpoint"), learned.model
    try:  # the env class and arguments the run trained on (Dispatch-v0 or v1), and the model's fit to them
        env = learned._make_env(load_scenario(cfg.scenario))
    except ValueError as exc:
        raise ExportError(f"--checkpoint {str(checkpoint)!r}: {exc}") from None
    shapes = {k: tuple(int(s) for s in model.observation_space[k].shape) for k in OBS_KEYS}
    if (
        any(env.observation_space[k].shape != shapes[k] for k in OBS_KEYS)
        or env.action_space.shape != model.action_space.shape
    ):
        raise ExportError(
            f"--checkpoint {str(checkpoint)!r}: the model's spaces do not fit its run's scenario and dispatch settings"
        )
    nvec = [int(n) for n in model.action_space.nvec]
    mask_len = int(sum(nvec))
    t0 = time.perf_counter()
    data = export_bytes(model, learned.masked, shapes, mask_len)
    t_export = time.perf_counter() - t0
    set_policy = is_set_policy(model)
    if learned.hold_bias is not None and not set_policy:
        raise ExportError(
            f"--checkpoint {str(checkpoint)!r}: decode.json: joint decoding needs the set policy, the model's is "
            f"{type(model.policy).__name__}"
        )
    verified = None
    if check:
        t0 = time.perf_counter()
        verified = (check_set_decisions if set_policy else check_decisions)(data, learned, cfg, check)
        verified["seconds"] = round(time.perf_counter() - t0, 3)
    run_dir = learned.run_dir
    meta = {
        "format": "gigdispatch-dispatch-onnx/1",
        "config": str((run_dir / CONFIG).resolve()),
        "checkpoint": str(learned.checkpoint.resolve()),
        "algo": learned.algo,
        "masked": bool(learned.masked),
        "scenario": str(cfg.scenario),
        "env": learned.env_name,
        "dispatch": dict(learned.env_kwargs),
        "inputs": {
            **{k: {"shape": ["batch", *shapes[k]], "dtype": "float32"} for k in OBS_KEYS},
            "action_mask": {"shape": ["batch", mask_len], "dtype": "bool"},
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(nvec)], "dtype": "int64"},
        "action_nvec": nvec,
        # the run's joint decoding of the set policy's rows (decode.json), which OnnxDispatchPolicy applies
        "decode": None if learned.hold_bias is None else {"decode": "match", "hold_bias": learned.hold_bias},
        **_provenance(t_export, verified, data),
    }
    if set_policy:
        lay = model.policy.layout
        meta["outputs"] = [OUTPUT_NAME, ROW_LOG_PROBS]
        meta[ROW_LOG_PROBS] = {
            "shape": ["batch", len(nvec), max(lay.n_candidates + 1, lay.n_levels)],
            "dtype": "float32",
            "rows": "M choice rows (K candidates, hold), then with pricing M payout-level rows",
        }
        meta["dynamic_axes"] = {
            name: {str(a): label for a, label in axes.items()} for name, axes in set_dynamic_axes().items()
        }
    if check_served:
        meta["verified_served"] = _check_served(learned, cfg, data, meta, check_served)
    atomic_write_bytes(out, data)
    atomic_write_json(sidecar_path(out), meta)
    return meta


def _check_served(learned: Any, cfg: TrainConfig, data: bytes, meta: dict[str, Any], n: int) -> dict[str, Any]:
    """Serve the checkpoint and the ONNX graph (from a scratch copy) and compare their answers on ``n``
    requests recorded from held-out days (seeds >= 1000); ``CheckError`` when any answer differs."""
    import tempfile

    from gigdispatch.training.serve_check import check_served, record_requests

    t0 = time.perf_counter()
    # days used neither in training nor in its evaluation
    requests = record_requests(str(cfg.scenario), n, policy="nearest", first_seed=fresh_seed(cfg))
    with tempfile.TemporaryDirectory(prefix="gigdispatch-export-") as tmp:
        scratch = Path(tmp) / "policy.onnx"
        scratch.write_bytes(data)
        sidecar_path(scratch).write_text(json.dumps(meta))
        res = check_served(str(learned.run_dir), str(scratch), str(cfg.scenario), requests)
    if res["differing"]:
        f = res["first_difference"]
        raise CheckError(
            f"{res['differing']} of {res['requests']} served answers differ (first: request #{f['request']})"
        )
    res["seconds"] = round(time.perf_counter() - t0, 3)
    return res


# -------------------------------------------------------------------------------------------- CLI
def cmd_export(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError as exc:
        print(
            f"error: exporting needs onnx and onnxruntime (the 'serve' extra): {exc.name} is not installed",
            file=sys.stderr,
        )
        return 2
    try:
        meta = export_policy(args.checkpoint, args.out, check=args.check, check_served=args.check_served)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except CheckError as exc:
        print(f"error: verification failed: {exc}; nothing written", file=sys.stderr)
        return 1
    if meta["format"] == FLEET_FORMAT:
        return _print_fleet_export(meta, args.out)
    print(
        f"exported {meta['checkpoint']} ({meta['algo']}, action dims {len(meta['action_nvec'])}) "
        f"to {args.out} ({meta['bytes']:,} bytes)"
    )
    v = meta["verified"]
    if v is None:
        print("not verified (--check 0)")
    else:
        print(
            f"verified: {v['identical']}/{v['observations']} ONNX decisions identical to the torch policy's "
            f"(onnxruntime CPU; observations from {len(v['seeds'])} held-out days, "
            f"seeds {v['seeds'][0]}..{v['seeds'][-1]}; {v['seconds']:.1f} s)"
        )
        if "max_log_prob_diff" in v:
            print(
                f"row log-probabilities within {v['max_log_prob_diff']:.2g} of torch's; decisions compared: "
                f"{'argmax and the run decode.json joint decoding' if v['decode'] == 'match' else 'argmax'}"
            )
    vs = meta.get("verified_served")
    if vs:
        print(
            f"served: {vs['requests'] - vs['differing']}/{vs['requests']} /v1/dispatch answers identical, "
            "ONNX file vs checkpoint "
            f"({vs['assignments']:,} assignments in {vs['requests_with_assignments']} requests; {vs['seconds']:.1f} s)"
        )
    print(f"sidecar: {sidecar_path(args.out)}")
    return 0


def _print_fleet_export(meta: dict[str, Any], out: str) -> int:
    """What ``gigdispatch export`` says about an exported fleet actor."""
    print(
        f"exported {meta['checkpoint']} ({meta['algo']}, fleet driver actor: obs (batch, {meta['input']['shape'][1]})"
        f" -> logits (batch, {meta['output']['shape'][1]})) to {out} ({meta['bytes']:,} bytes)"
    )
    v = meta["verified"]
    if v is None:
        print("not verified (--check 0)")
    else:
        print(
            f"verified: {v['identical']}/{v['rows']} ONNX greedy actions identical to the torch policy's on random "
            f"driver rows (onnxruntime CPU; logits within {v['max_logit_diff']:.2g}; {v['seconds']:.1f} s)"
        )
    print(f"sidecar: {sidecar_path(out)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained dispatch policy to ONNX (masking and argmax inside) and verify it",
        description=(
            "Export the policy of a training run (MaskablePPO/PPO on Dispatch-v0, or the set network of a "
            "Dispatch-v1/v2 run: maskable_ppo, ppo, dagger) as one ONNX graph: observation "
            "preprocessing, action masking and the per-dimension argmax inside (set networks: also the rows' "
            "log-probabilities, for the run's joint decoding); a fleet run's driver actor as driver rows -> "
            "action logits. "
            "Verifies the ONNX decisions against "
            "the torch policy on N recorded observations before writing FILE.onnx and FILE.onnx.json. "
            "See docs/export.md."
        ),
        epilog="Example: gigdispatch export --checkpoint runs/dispatch-default-20261121-120000 --out dispatch.onnx",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        metavar="RUN_FOLDER_OR_ZIP",
        help="training run folder (best.zip, else latest.zip) or a .zip",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE.onnx",
        help="the ONNX file to write, in an existing folder (its sidecar is FILE.onnx.json)",
    )
    p.add_argument(
        "--check",
        type=whole_number(0),
        default=1000,
        metavar="N",
        help="observations to verify (0: none) [default: %(default)s]",
    )
    p.add_argument(
        "--check-served",
        type=whole_number(0),
        default=0,
        metavar="N",
        help="also serve the checkpoint and the ONNX file and compare their /v1/dispatch answers "
        "on N requests recorded "
        "from held-out days (0: skip) [default: %(default)s]",
    )
    p.set_defaults(func=cmd_export)
