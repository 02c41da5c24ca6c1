"""``algo: dagger``: a set network learns to dispatch from a teacher policy by imitation (DAgger).

Why imitation: a random dispatcher loses money every day, so PPO from scratch spends most of its budget
finding what a matching heuristic already knows (``docs/training.md``: 300k steps reach two thirds of the
nearest-driver heuristic's margin). Behaviour cloning from a strong policy, with DAgger's fix for the drift
between the teacher's states and the learner's (Ross, Gordon & Bagnell, AISTATS 2011), is the standard way
to get a neural dispatcher off the ground (``../shared/guides/learning-dispatch.md``).

What is learned, and how:

1. **Round 0**: the teacher (``dagger.teacher``, by default the shipped Hungarian dispatcher
   ``checkpoints/dispatch``) plays ``dagger.days_per_round`` training days of Dispatch-v2. At every epoch its
   ``Decision`` is written as the Dispatch-v2 action (each slot order's candidate column or hold, and the
   payout level); Dispatch-v2's bundle columns hold every pair the shipped dispatcher offers, so the labels
   are exact (pairs outside the slots or candidates are counted: ``unlabelled``).
2. **Round r >= 1**: new training days are played with the network acting at each epoch with probability
   ``1 - beta**r`` (else the teacher), and the teacher labels every state visited. The network is trained
   on all rounds' samples so far (``dagger.epochs`` passes, Adam at ``dagger.learning_rate``, minibatches of
   ``dagger.batch_size`` epochs): cross-entropy of the teacher's choice of every real order slot, and of its
   payout level where it offered. The network is ``agents.setnet.DispatchSetPolicy`` inside a MaskablePPO
   model, so the checkpoint is a MaskablePPO ``.zip`` that ``evaluate``, ``serve`` and a PPO fine-tuning
   run load as they load any learned policy.
3. **Decoding**: the network's per-order distributions are turned into offers by ``match_choices``
   (``agents.set_decode``: the most likely joint choice in which no driver is named twice, with a
   ``hold_bias`` against holding). After each round the network is played on the held-out days
   (``eval.seeds``, never training days, never the evaluation seeds 0-19) with each bias of
   ``dagger.hold_biases``; the best (network, bias) pair by mean platform margin is ``checkpoints/best.zip``
   with ``decode.json``.

Run folder: ``checkpoints/latest.zip`` (after every round), ``best.zip``, ``decode.json``, ``data/round-N.npz``
(each round's samples), ``dagger_state.json`` (rounds done, per-round record) and ``tb/`` (TensorBoard:
``dagger/loss``, ``dagger/accuracy``, ``eval/profit_mean`` and the held-out ``dispatch/*`` KPIs), all
written atomically. ``--resume`` continues from the last complete round and gives the run an uninterrupted
one would (every round's draws come from ``[seed, round]``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gigdispatch.agents.set_decode import match_action
from gigdispatch.envs.core.atomic import atomic_write_bytes
from gigdispatch.envs.core.seeding import SeedSchedule
from gigdispatch.training.config import TrainConfig
from gigdispatch.training.io import atomic_write_json
from gigdispatch.training.runs import BEST, CHECKPOINTS, KPI_TAGS, LATEST, TB, RunLog, number, save_checkpoint

STATE = "dagger_state.json"
DECODE = "decode.json"
DATA = "data"


@dataclass
class Samples:
    """Epochs the teacher labelled, packed: sample ``i`` has ``n[i]`` real order slots, its rows are
    ``orders[off[i]:off[i+1]]`` (likewise ``candidates``, ``choice``, ``level``), its globals ``globals[i]``."""

    orders: np.ndarray  # (rows, Fo) float32
    candidates: np.ndarray  # (rows, K, Fc) float32
    globals: np.ndarray  # (N, G) float32
    n: np.ndarray  # (N,) int64
    choice: np.ndarray  # (rows,) int64: the teacher's candidate column, K = hold
    level: np.ndarray  # (rows,) int64: its payout level (0 where it held)

    @property
    def off(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.n)])

    @classmethod
    def concat(cls, parts: list[Samples]) -> Samples:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    def save(self, path: Path) -> None:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{f: getattr(self, f) for f in self.__dataclass_fields__})
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> Samples:
        with np.load(path) as z:
            return cls(**{f: z[f] for f in cls.__dataclass_fields__})


def teacher_action(env: Any, decision: Any) -> tuple[np.ndarray, int]:
    """The Dispatch-v1/v2 action of a teacher's ``Decision`` at the env's current epoch, and how many of its
    pairs have no slot or candidate column (they are left as hold)."""
    M, K = env.M, env.K
    a = np.zeros(env.action_space.shape, np.int64)
    a[:M] = K
    n = len(env._slots)
    order, driver = np.asarray(decision.order, np.int64), np.asarray(decision.driver, np.int64)
    level = np.zeros(len(order), np.int64) if decision.level is None else np.asarray(decision.level, np.int64)
    if len(order) == 0 or n == 0:
        return a, len(order)
    slot_of = {int(o): i for i, o in enumerate(env._slots)}
    rows = np.array([slot_of.get(int(o), -1) for o in order.tolist()], np.int64)
    found = rows >= 0
    hit = np.zeros(len(order), bool)
    col = np.zeros(len(order), np.int64)
    if found.any():
        match = env._cand[rows[found]] == driver[found, None]
        hit[found] = match.any(axis=1)
        col[found] = match.argmax(axis=1)
    a[rows[hit]] = col[hit]
    if env.pricing:
        a[M + rows[hit]] = level[hit]
    return a, int((~hit).sum())


def make_env(cfg: TrainConfig, seeds: list[int]) -> Any:
    """The run's Dispatch-v1/v2 env playing ``seeds`` in order."""
    from gigdispatch.training.envs import dispatch_env

    return dispatch_env(cfg, SeedSchedule(seeds=seeds))


def collect(
    cfg: TrainConfig,
    policy: Any,
    teacher: Any,
    seeds: list[int],
    share: float,
    rng: np.random.Generator,
    hold_bias: float,
    runlog: RunLog,
) -> tuple[Samples, dict[str, float]]:
    """Play ``seeds`` (the network acting at an epoch with probability ``share``, else the teacher) and label
    every epoch with the teacher's action."""
    env = make_env(cfg, seeds)
    M = env.M
    parts: dict[str, list[np.ndarray]] = {f: [] for f in Samples.__dataclass_fields__}
    unlabelled = labelled = 0
    for _ in seeds:
        obs, _ = env.reset()
        teacher.reset(env.sim, env.sim.rng["policy"])
        while True:
            a_t, miss = teacher_action(env, teacher.act(env.sim))
            n = len(env._slots)
            unlabelled += miss
            labelled += int((a_t[:n] < env.K).sum())
            parts["orders"].append(obs["orders"][:n].copy())
            parts["candidates"].append(obs["candidates"][:n].copy())
            parts["globals"].append(obs["globals"][None].copy())
            parts["n"].append(np.array([n], np.int64))
            parts["choice"].append(a_t[:n].copy())
            parts["level"].append(a_t[M : M + n].copy() if env.pricing else np.zeros(n, np.int64))
            a = match_action(policy, env, obs, hold_bias) if share > 0 and rng.random() < share else a_t
            obs, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                break
        runlog.say(f"  collected day {env.sim.seed}: {len(parts['n'])} epochs so far")
    env.close()
    return Samples(**{f: np.concatenate(v) for f, v in parts.items()}), {
        "unlabelled": float(unlabelled),
        "labelled": float(labelled),
    }


def _batch(data: Samples, idx: np.ndarray, M: int, K: int, torch: Any) -> tuple[dict[str, Any], Any, Any]:
    """Samples ``idx`` padded to ``M`` slots: the observation tensors, the target choices then levels ``(B, 2M)``
    and their weights (1 on real slots; a level only where the teacher offered). Without pricing the policy has
    ``M`` rows and the caller uses the first half."""
    off, n = data.off, data.n[idx]
    B = len(idx)
    src = np.concatenate([np.arange(off[i], off[i + 1]) for i in idx])
    b_of = np.repeat(np.arange(B), n)
    slot = src - np.repeat(off[idx], n)
    Fo, Fc = data.orders.shape[1], data.candidates.shape[2]
    o = np.zeros((B, M, Fo), np.float32)
    c = np.zeros((B, M, K, Fc), np.float32)
    o[b_of, slot] = data.orders[src]
    c[b_of, slot] = data.candidates[src]
    choice = np.full((B, M), K, np.int64)
    level = np.zeros((B, M), np.int64)
    choice[b_of, slot] = data.choice[src]
    level[b_of, slot] = data.level[src]
    w_choice = np.zeros((B, M), np.float32)
    w_choice[b_of, slot] = 1.0
    w_level = np.where(choice < K, w_choice, 0.0).astype(np.float32)
    obs = {
        "orders": torch.as_tensor(o),
        "candidates": torch.as_tensor(c),
        "globals": torch.as_tensor(data.globals[idx]),
    }
    acts = torch.as_tensor(np.concatenate([choice, level], axis=1))
    weights = torch.as_tensor(np.concatenate([w_choice, w_level], axis=1))
    return obs, acts, weights


def fit(policy: Any, data: Samples, cfg: TrainConfig, rng: np.random.Generator) -> dict[str, float]:
    """``dagger.epochs`` passes of cross-entropy on the teacher's choices; returns the last pass's mean loss
    (per real order) and choice accuracy."""
    import torch

    d = cfg.dagger
    M, K = policy.layout.n_orders, policy.layout.n_candidates
    opt = torch.optim.Adam(policy.parameters(), lr=d.learning_rate)
    policy.set_training_mode(True)
    loss_sum = acc_sum = orders = 0.0
    for _ in range(d.epochs):
        perm = rng.permutation(len(data.n))
        loss_sum = acc_sum = orders = 0.0
        for k in range(0, len(perm), d.batch_size):
            idx = perm[k : k + d.batch_size]
            obs, acts, w = _batch(data, idx, M, K, torch)
            dist = policy._distribution(policy.extract_features(obs), None)
            lp_all = dist.log_probs
            rows = lp_all.shape[1]
            lp = lp_all.gather(2, acts[:, :rows].unsqueeze(2)).squeeze(2)
            n_real = w[:, :M].sum()
            loss = -(lp * w[:, :rows]).sum() / n_real
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                right = (lp_all[:, :M].argmax(2) == acts[:, :M]).float()
                acc_sum += float((right * w[:, :M]).sum())
                loss_sum += float(loss) * float(n_real)
                orders += float(n_real)
    policy.set_training_mode(False)
    return {"loss": loss_sum / max(orders, 1.0), "accuracy": acc_sum / max(orders, 1.0)}


def evaluate(cfg: TrainConfig, policy: Any, hold_bias: float) -> dict[str, float]:
    """The network (decoded with ``hold_bias``) on the first ``eval.episodes`` held-out days: KPI means."""
    seeds = list(cfg.eval.seeds)[: cfg.eval.episodes]
    env = make_env(cfg, seeds)
    kpis = []
    for _ in seeds:
        obs, _ = env.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(match_action(policy, env, obs, hold_bias))
            if terminated or truncated:
                kpis.append(info["kpis"])
                break
    env.close()
    out = {"profit_mean": float(np.mean([k["platform_margin"] for k in kpis]))}
    for key, tag in KPI_TAGS.items():
        vals = [float(k[key]) for k in kpis if key in k and k[key] == k[key]]
        if vals:
            out[tag] = float(np.mean(vals))
    return out


def train_dagger(cfg: TrainConfig, run_dir: Path, env: Any, model: Any, resume: bool, runlog: RunLog) -> dict[str, Any]:
    """Run (or continue) DAgger into ``model`` (a MaskablePPO with the set policy on ``env``); returns the state."""
    import torch

    from gigdispatch.agents.registry import make_policy

    d = cfg.dagger
    ckpt = run_dir / CHECKPOINTS
    data_dir = run_dir / DATA
    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = run_dir / STATE
    st: dict[str, Any] = {"round": 0, "best": None, "history": []}
    if resume and state_file.is_file():
        st = json.loads(state_file.read_text())
    if resume:  # the weights the last complete round ended with (round-0.zip: the initial ones), not latest.zip:
        # a kill between a round's checkpoints and its state leaves latest.zip a round ahead of the state
        model.set_parameters(str(ckpt / f"round-{st['round']}.zip"))
    teacher = make_policy(d.teacher)
    policy = model.policy
    seeds = list(cfg.train_seeds)
    parts = [Samples.load(data_dir / f"round-{r}.npz") for r in range(st["round"])]
    writer = _writer(run_dir)
    runlog.start(d.rounds, st["round"], "round", cfg.name)
    try:
        while st["round"] < d.rounds:
            r = st["round"]
            rng = np.random.default_rng([cfg.seed, r])
            torch.manual_seed(cfg.seed * 1000 + r)
            days = [int(s) for s in np.resize(seeds, (r + 1) * d.days_per_round)[r * d.days_per_round :]]
            share = 0.0 if r == 0 else 1.0 - d.beta**r
            bias = st["best"]["hold_bias"] if st["best"] else d.hold_biases[0]
            new, counts = collect(cfg, policy, teacher, days, share, rng, bias, runlog)
            new.save(data_dir / f"round-{r}.npz")
            parts.append(new)
            fitted = fit(policy, Samples.concat(parts), cfg, rng)
            evals = {b: evaluate(cfg, policy, b) for b in d.hold_biases}
            b_best = max(evals, key=lambda b: evals[b]["profit_mean"])
            ev = evals[b_best]
            rec = {
                "round": r + 1,
                "days": days,
                "network_share": share,
                "samples": int(sum(len(p.n) for p in parts)),
                **counts,
                **fitted,
                "held_out_by_bias": {str(b): e["profit_mean"] for b, e in evals.items()},
                "hold_bias": b_best,
                "eval_profit_mean": ev["profit_mean"],
            }
            save_checkpoint(model, ckpt / f"round-{r + 1}.zip")  # what --resume continues from
            save_checkpoint(model, ckpt / LATEST)
            if st["best"] is None or ev["profit_mean"] > st["best"]["eval_profit_mean"]:
                save_checkpoint(model, ckpt / BEST)
                st["best"] = {"round": r + 1, "hold_bias": b_best, "eval_profit_mean": ev["profit_mean"]}
                atomic_write_json(run_dir / DECODE, {"decode": "match", "hold_bias": b_best, "round": r + 1})
            st["history"].append(rec)
            st["round"] = r + 1
            atomic_write_json(state_file, st)
            for key, value in (("dagger/loss", fitted["loss"]), ("dagger/accuracy", fitted["accuracy"])):
                writer.add_scalar(key, value, r + 1)
            for tag, value in ev.items():
                writer.add_scalar("eval/profit_mean" if tag == "profit_mean" else tag, value, r + 1)
            writer.flush()
            runlog.step(
                r + 1,
                f"round {r + 1}/{d.rounds}: {rec['samples']:,} samples, loss {fitted['loss']:.3f}, accuracy "
                f"{fitted['accuracy']:.3f}; held-out margin {number(ev['profit_mean'])} (hold_bias {b_best}; "
                f"best {number(st['best']['eval_profit_mean'])})",
            )
    finally:
        writer.close()
    return st


def _writer(run_dir: Path) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / TB))
