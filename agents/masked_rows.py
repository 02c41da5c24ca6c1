"""A masked MultiDiscrete action distribution computed as one tensor: rows of categoricals, no Python loop.

Why: sb3-contrib's ``MaskableMultiCategoricalDistribution`` builds one ``torch.distributions.Categorical``
per action slot (64 on Dispatch with pricing), twice per call (once for the logits, once more when the
mask is applied), and loops over them for ``sample``/``log_prob``/``entropy``; at one observation per
rollout step that Python overhead dominates the learner's cost. Here a ``MultiDiscrete(nvec)`` action is
``R = len(nvec)`` *rows*, each row a categorical over ``nvec[r]`` choices; the logits of all rows are one
tensor ``(B, R, C)`` with ``C = max(nvec)`` (a row narrower than ``C`` has its extra columns masked out
for good), so the masked log-softmax is computed once per distribution and ``sample``, ``mode``,
``log_prob`` and ``entropy`` are a few batched tensor ops each.

Row order is SB3's MultiDiscrete order (action entry ``r`` is row ``r``); on Dispatch that is all ``M``
choice rows (``C = K + 1``) and then, with pricing, all ``M`` payout-level rows (``C = L``, padded to
``C = max(K + 1, L)`` columns in the one tensor). Masks are boolean ``(B, R, C)`` (``True`` = allowed); a flat
MaskablePPO mask (``(B, sum(nvec))``, bool or float) becomes that layout through ``rows_mask``.

Masked logits are filled with ``mask_fill(dtype)`` (``-1e9`` in float32/64, a finite value far below any
real logit) rather than ``-inf``: a masked entry's probability is exactly ``0.0`` after ``exp``, the
entropy's ``0 * log 0`` term is ``0 * finite = 0`` (no NaN), and a row with every entry masked (which the
Dispatch policy never produces: hold and level 0 are always allowed) stays finite, uniform over its
columns, instead of NaN. ``torch.distributions`` objects are never built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.distributions import Distribution
from torch import nn

SelfMaskedRows = TypeVar("SelfMaskedRows", bound="MaskedRowsDistribution")


def mask_fill(dtype: th.dtype) -> float:
    """The finite logit given to masked entries: ``-1e9``, or half the dtype's lowest value where that is
    larger (float16), so that subtracting a row's maximum never overflows to ``-inf``."""
    return max(-1e9, float(th.finfo(dtype).min) / 2)


class MaskedRowsDistribution(Distribution):
    """``MultiDiscrete(nvec)`` as ``R = len(nvec)`` masked categorical rows held in one ``(B, R, C)`` tensor.

    ``proba_distribution(action_logits, mask)`` sets the parameters: ``action_logits`` ``(B, R, C)`` (or the
    flat ``(B, R * C)`` that ``proba_distribution_net`` produces) and an optional bool ``mask`` of the same
    row shape; columns ``>= nvec[r]`` are always masked. ``apply_masking(flat_or_rows_mask)`` narrows it
    further (sb3-contrib's ``MaskableDistribution`` call, so code written for MaskablePPO works).
    ``log_prob``/``entropy`` return ``(B,)`` (summed over rows); ``sample``/``mode`` return ``(B, R)`` int64.
    """

    def __init__(self, nvec: Sequence[int] | np.ndarray) -> None:
        super().__init__()
        sizes = [int(n) for n in np.asarray(nvec).reshape(-1)]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"nvec: expected a non-empty list of positive choice counts, got {sizes}")
        self.nvec = tuple(sizes)
        self.n_rows = len(sizes)
        self.n_cols = max(sizes)
        width = th.arange(self.n_cols)[None, :] < th.tensor(sizes)[:, None]  # (R, C): column exists in row
        self._width = width
        self._dense = bool(width.all())  # every row has all C columns: flat and row layouts coincide
        # for each (row, column) of the row layout, its entry in the flat MaskablePPO mask, or one past the
        # end (a False column appended before the gather) for columns past the row's width
        self.n_flat = sum(sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        gather = np.where(width.numpy(), starts[:, None] + np.arange(self.n_cols)[None, :], self.n_flat)
        # gathered column-major ((C, R) in memory, seen as (R, C)): the layout _normalise is fastest on
        self._gather = th.from_numpy(np.ascontiguousarray(gather.T).reshape(-1).astype(np.int64))
        self.logits: th.Tensor | None = None  # (B, R, C) raw logits as given
        self.mask: th.Tensor | None = None  # (B, R, C) bool, width mask included
        self.log_probs: th.Tensor | None = None  # (B, R, C) masked log-softmax
        self._probs: th.Tensor | None = None
        self._filled_t: th.Tensor | None = None  # (B, C, R) masked logits, transposed (what the softmaxes run on)

    # ------------------------------------------------------------------ layout helpers
    def _on(self, t: th.Tensor, device: th.device) -> th.Tensor:
        return t if t.device == device else t.to(device)

    def rows_mask(self, mask: th.Tensor | np.ndarray, batch_size: int | None = None) -> th.Tensor:
        """A mask in row layout ``(B, R, C)`` bool from either that layout or MaskablePPO's flat
        ``(B, sum(nvec))`` / ``(sum(nvec),)`` (numpy or torch, bool or 0/1 float). ``batch_size``: the logits'
        batch, which the mask count must equal (or be 1, broadcast)."""
        m = th.as_tensor(mask)
        n_flat = self.n_flat
        in_rows = m.dim() >= 2 and m.shape[-2:] == (self.n_rows, self.n_cols)
        if in_rows or (m.shape[-1] == n_flat and self._dense):  # already (or, all rows full width, also) rows
            rows = m.reshape(-1, self.n_rows, self.n_cols)
        elif m.shape[-1] == n_flat:
            # gathered before the 0/1 -> bool threshold: index_select on float is ~8x faster than on bool on CPU
            # (the rollout buffer's masks are float); the appended 0 column fills the columns past a row's width
            flat = m.reshape(-1, n_flat)
            flat = th.cat([flat, flat.new_zeros((flat.shape[0], 1))], dim=1)
            gathered = flat.index_select(1, self._on(self._gather, flat.device))
            rows = gathered.view(-1, self.n_cols, self.n_rows).transpose(1, 2)
        else:
            raise ValueError(
                f"action_masks: expected {n_flat} entries per observation (sum of nvec) or shape (B, {self.n_rows}, "
                f"{self.n_cols}), got shape {tuple(m.shape)}"
            )
        if rows.dtype != th.bool:
            rows = rows > 0.5
        if batch_size is not None and rows.shape[0] not in (1, batch_size):
            raise ValueError(f"action_masks: {rows.shape[0]} masks for a batch of {batch_size} observations")
        return rows

    # ------------------------------------------------------------------ SB3 Distribution API
    def proba_distribution_net(self, latent_dim: int) -> nn.Module:
        """A linear layer from a flat latent to all rows' logits (``(B, R * C)``, which
        ``proba_distribution`` reshapes), for use with an SB3-style flat latent; the Dispatch set policy
        computes its row logits itself and does not call this."""
        return nn.Linear(latent_dim, self.n_rows * self.n_cols)

    def proba_distribution(
        self: SelfMaskedRows,
        action_logits: th.Tensor,
        mask: th.Tensor | np.ndarray | None = None,
        width_masked: bool = False,
    ) -> SelfMaskedRows:
        """Set the logits ``(B, R, C)`` (or flat ``(B, R * C)``) and optional mask; computes the masked
        log-softmax once. Returns ``self``. ``width_masked``: the caller guarantees that ``mask`` is already a
        bool ``(B, R, C)`` tensor on the logits' device with every column past its row's width ``False`` (the
        Dispatch policy's, built per rollout step): it is used as is, without conversion or the width AND."""
        logits = action_logits.reshape(-1, self.n_rows, self.n_cols)
        self.logits = logits
        if width_masked and isinstance(mask, th.Tensor):
            self.mask = mask
        elif mask is None:
            self.mask = self._on(self._width, logits.device).expand_as(logits)
        else:
            width = self._on(self._width, logits.device)
            self.mask = self.rows_mask(mask, batch_size=logits.shape[0]).to(logits.device) & width
        self._normalise()
        return self

    def apply_masking(self, masks: th.Tensor | np.ndarray | None) -> None:
        """Narrow the current mask by ``masks`` (flat MaskablePPO layout or row layout; ``None``: no-op),
        as sb3-contrib's ``MaskableDistribution.apply_masking`` does; recomputes the log-softmax."""
        if masks is None:
            return
        if self.logits is None or self.mask is None:
            raise ValueError("apply_masking: call proba_distribution first (no logits set)")
        self.mask = self.mask & self.rows_mask(masks, batch_size=self.logits.shape[0]).to(self.logits.device)
        self._normalise()

    def _normalise(self) -> None:
        assert self.logits is not None and self.mask is not None
        filled = th.where(self.mask, self.logits, mask_fill(self.logits.dtype))
        # over the rows' columns, computed on the (B, C, R) transpose: CPU's log-softmax over a short last
        # axis (C = 9) is ~20x slower than over a middle axis with a long contiguous inner one. When the
        # inputs are already stored column-major (the Dispatch policy's are) the transpose is contiguous,
        # otherwise log_softmax copies it once; log_probs is then a (B, R, C) view
        self._filled_t = filled.transpose(1, 2)
        self.log_probs = th.log_softmax(self._filled_t, dim=1).transpose(1, 2)
        self._probs = None

    @property
    def probs(self) -> th.Tensor:
        """``(B, R, C)`` probabilities; exactly ``0.0`` where masked."""
        if self._probs is None:
            self._require()
            assert self._filled_t is not None
            # a softmax of the masked logits, not exp(log_probs): CPU's exp takes a slow path on the masked
            # entries' huge negative log-probabilities (~8x slower over the whole tensor); the softmax's
            # internal exp does not, and underflows them to exactly 0 just the same
            self._probs = th.softmax(self._filled_t, dim=1).transpose(1, 2)
        return self._probs

    def _require(self) -> th.Tensor:
        if self.log_probs is None:
            raise ValueError("MaskedRowsDistribution: call proba_distribution first (no logits set)")
        return self.log_probs

    def log_prob(self, actions: th.Tensor) -> th.Tensor:
        """Sum over rows of each row's log-probability of its action entry: ``(B, R)`` actions -> ``(B,)``
        (float actions from a rollout buffer are cast to int64)."""
        lp = self._require()
        idx = actions.reshape(lp.shape[0], self.n_rows, 1).long()
        return lp.gather(2, idx).squeeze(2).sum(dim=1)

    def entropy(self) -> th.Tensor:
        """Sum over rows of each row's entropy, ``(B,)``; masked entries (probability 0) contribute 0."""
        lp = self._require()
        # masked entries: probability exactly 0 times a finite log-probability (the fill), so 0 * log 0 is 0
        return -(self.probs * lp).sum(dim=(1, 2))

    def sample(self) -> th.Tensor:
        """One draw per row by the Gumbel-max trick over the masked log-probabilities, ``(B, R)`` int64;
        masked entries get ``-inf`` scores and are never drawn (a fully masked row returns column 0)."""
        lp = self._require()
        assert self.mask is not None
        # -Gumbel(0, 1) draws as log(-log U): CPU's exponential_ costs ~5x a uniform_ draw on a rollout's
        # small tensor (U = 0 gives a -inf score, never drawn)
        neg_gumbel = th.rand_like(lp).log_().neg_().log_()
        return th.where(self.mask, lp - neg_gumbel, float("-inf")).argmax(dim=2)

    def mode(self) -> th.Tensor:
        """The most likely allowed entry of each row, ``(B, R)`` int64."""
        return self._require().argmax(dim=2)

    def actions_from_params(
        self, action_logits: th.Tensor, mask: th.Tensor | np.ndarray | None = None, deterministic: bool = False
    ) -> th.Tensor:
        """Set the parameters and return actions (``mode`` if ``deterministic`` else ``sample``)."""
        self.proba_distribution(action_logits, mask)
        return self.get_actions(deterministic=deterministic)

    def log_prob_from_params(
        self, action_logits: th.Tensor, mask: th.Tensor | np.ndarray | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """Set the parameters, sample actions and return them with their log-probabilities."""
        actions = self.actions_from_params(action_logits, mask)
        return actions, self.log_prob(actions)
