"""Turning the set policy's per-order distributions into one epoch's offers: ``match_choices``.

``DispatchSetPolicy`` (``agents.setnet``) gives every order slot a distribution over its candidate drivers
and *hold*. Taking each row's argmax lets two orders name one driver (the env then gives the driver to the
older order and the other order waits an epoch); in a dense city that happens at most peak epochs. The
literature's dispatchers score pairs and let an assignment solver resolve such conflicts (Xu et al.,
KDD 2018), and so does this: the joint choice that maximises the sum of the rows' log-probabilities, each
driver chosen at most once,

    max  sum_i log p_i(choice_i) - hold_bias * #{i : choice_i = hold}

one ``linear_sum_assignment`` (``heuristics.match_min_cost``) in which each row's *hold* is a column of its
own. ``hold_bias`` (>= 0 leans towards offering) is a decoding setting picked on held-out training days
(``training.dagger``); the network's outputs are all the decision depends on.

``match_rows`` turns one observation's row log-probabilities (the torch policy's ``row_log_probs``, or the
``row_log_probs`` output of a graph exported by ``gigdispatch export``) into the whole Dispatch-v1/v2 action;
``match_env_rows`` reads the slots and candidates from the env's current epoch; ``match_action`` runs the
torch policy first. The torch and the ONNX policy decode through the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gigdispatch.agents.heuristics import match_min_cost


def match_choices(logp: np.ndarray, cand: np.ndarray, hold_bias: float = 0.0) -> np.ndarray:
    """``(n,)`` choices (candidate column, or ``K`` = hold) for ``n`` order rows.

    ``logp``: ``(n, K + 1)`` log-probabilities of each row's candidates and hold (last); ``cand``: ``(n, K)``
    driver ids, -1 where a column has no candidate (never chosen). Rows with no candidate hold.
    """
    logp = np.asarray(logp, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.int64)
    n, K = cand.shape
    if logp.shape != (n, K + 1):
        raise ValueError(f"logp: expected shape {(n, K + 1)} for {n} rows of {K} candidates, got {logp.shape}")
    out = np.full(n, K, np.int64)
    if n == 0 or not (cand >= 0).any():
        return out
    ok = (cand >= 0) & np.isfinite(logp[:, :K])
    top = int(cand.max()) + 1
    hold_ids = top + np.arange(n)[:, None]  # a column of its own per row: holding never conflicts
    ids = np.concatenate([np.where(ok, cand, -1), hold_ids], axis=1)
    # costs relative to each row's best entry keep the sums small (match_min_cost's BIG must dominate)
    best = np.max(np.where(np.isfinite(logp), logp, -np.inf), axis=1, keepdims=True)
    cost = np.concatenate([np.where(ok, best - logp[:, :K], np.inf), best - logp[:, K:] + float(hold_bias)], axis=1)
    rows, drivers = match_min_cost(ids, cost)
    offer = drivers < top
    r, d = rows[offer], drivers[offer]
    # the chosen driver's column (its likelier one, should a row list the driver twice)
    out[r] = np.argmax(np.where(ok[r] & (cand[r] == d[:, None]), logp[r, :K], -np.inf), axis=1)
    return out


def match_rows(lp: np.ndarray, cand: np.ndarray, n_slots: int, n_levels: int = 0, hold_bias: float = 0.0) -> np.ndarray:
    """The Dispatch-v1/v2 action decoded from one observation's row log-probabilities ``lp`` ``(R, C)`` (the
    ``M`` choice rows, then with pricing the ``M`` payout-level rows; ``DispatchSetPolicy.row_log_probs``'s
    layout, or the ``row_log_probs`` output of an exported graph): the first ``n_slots`` (real) orders'
    choices by ``match_choices`` over their candidate ids ``cand`` ``(M, K)``, the padded slots hold, and with
    ``n_levels`` > 0 each payout level its row's most likely one. ``lp`` may be wider than ``max(K + 1, L)``.
    """
    lp, cand = np.asarray(lp), np.asarray(cand, dtype=np.int64)
    M, K = cand.shape
    rows = 2 * M if n_levels else M
    if lp.ndim != 2 or lp.shape[0] != rows or lp.shape[1] < max(K + 1, n_levels):
        raise ValueError(
            f"lp: expected {rows} rows of at least {max(K + 1, n_levels)} columns for {M} slots of {K} candidates"
            f" and {n_levels} payout levels, got shape {lp.shape}"
        )
    if not 0 <= n_slots <= M:
        raise ValueError(f"n_slots: expected 0..{M}, got {n_slots}")
    a = np.zeros(rows, np.int64)
    a[:M] = K
    a[:n_slots] = match_choices(lp[:n_slots, : K + 1], cand[:n_slots], hold_bias)
    if n_levels:
        a[M:] = lp[M:, :n_levels].argmax(axis=1)
    return a


def match_env_rows(lp: np.ndarray, env: Any, hold_bias: float = 0.0) -> np.ndarray:
    """``match_rows`` at the env's current epoch (after its ``prepare``): its slot orders and candidate ids
    (``env._slots``, ``env._cand``) and payout levels (``env.L`` with pricing)."""
    return match_rows(lp, env._cand, len(env._slots), env.L if env.pricing else 0, hold_bias)


def match_action(policy: Any, env: Any, obs: dict[str, np.ndarray], hold_bias: float = 0.0) -> np.ndarray:
    """The Dispatch-v1/v2 action of a ``DispatchSetPolicy`` at the env's current epoch (after its ``prepare``):
    ``match_env_rows`` over the policy's row log-probabilities (``row_log_probs``)."""
    return match_env_rows(policy.row_log_probs(obs), env, hold_bias)
