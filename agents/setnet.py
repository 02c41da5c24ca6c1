"""A set network actor-critic for Dispatch-v1 that PPO and MaskablePPO both train: ``DispatchSetPolicy``.

Why: SB3's ``MultiInputPolicy`` flattens the order and candidate tables into one vector, so it neither
shares weights across order slots / candidate columns nor knows that their order is arbitrary, and
sb3-contrib's masked MultiDiscrete distribution loops over 64 ``torch.distributions.Categorical``. Here
every (order, candidate) pair goes through one shared encoder, pooling is masked mean + max over the
valid members of a set, and the action distribution is ``MaskedRowsDistribution`` (one masked
log-softmax over a ``(B, rows, choices)`` tensor). No layer's size depends on ``M`` (order slots) or ``K``
(candidates per order), so one ``state_dict`` loads into a policy built for other sizes; the outputs are
equivariant to permuting order slots, and to permuting candidates within an order (the value invariant).

Observation (``spaces.Dict``, v1 layout): ``orders`` ``(M, Fo)``, ``candidates`` ``(M, K, Fc)``, ``globals``
``(G,)``, feature 0 of orders and candidates being ``valid`` (1/0). Action: ``MultiDiscrete([K + 1] * M)``
(candidate ``j`` or hold = ``K`` per order) or, with pricing, ``MultiDiscrete([K + 1] * M + [L] * M)``.

Network (hidden size ``H = hidden_size``, pair width ``Hp = pair_size``; ``R`` = the real orders of the whole
batch, packed: padded slots are not computed, their only choice is hold at level 0, which the mask gives them):

* pair encoder: ``pair_layers`` (1) bias-free layers + ReLU over ``[candidate, its order, globals]`` for
  every candidate column of every real order -> ``(R, K, Hp)``, exactly 0 on invalid pairs;
* order encoder over ``[order, globals, masked mean and max of its valid pairs]`` -> ``(R, H)``;
* cross-order context: mean over each observation's real orders, mixed back into each order (residual);
* heads: candidate logit = pair encoding · query(order encoding); hold and payout-level logits from the
  order encoding; value from the mean and max over the observation's real orders plus the globals. The
  trunk is shared by actor and critic.

The pair tensor (``R·K`` rows; on the default scenario ~6 real orders of 32 slots per observation) is the
update's dominant cost, so it gets one layer, a narrower width than the trunk (32 against 64) and a bilinear
readout; the update runs its pair layer, ReLU, sum and max as one autograd function (``_PairReluSumMax``) and
its log-probabilities and entropies over the real orders' rows only. No Python loop runs over orders or
candidates. The rollout's batch (one observation per env) is dominated by per-op dispatch instead, so
``forward`` on up to ``NUMPY_MAX_BATCH`` observations without autograd runs in numpy
(``DispatchSetPolicy._forward_numpy``).

Masking: the mask is derived from the observation (a candidate is allowed where its ``valid`` is 1 and its
order's is too; hold always; level 0 always, every level on a real order slot) so plain ``PPO`` masks
correctly; an ``action_masks`` argument (MaskablePPO's flat mask, or the ``(B, rows, choices)`` layout)
is combined with it by logical AND.

Export: ``DenseSetActor(policy)`` is the same actor (the same weights, shared) without data-dependent
shapes: every slot and candidate column is computed and masked instead of packed, so it traces into an
ONNX graph with free ``M`` and ``K`` (``training.export``; ReLU only).

One class for both algorithms: ``DispatchSetPolicy`` subclasses sb3-contrib's
``MaskableActorCriticPolicy`` (MaskablePPO requires that) and SB3's ``ActorCriticPolicy`` (what ``PPO``
is typed for); it initialises only their common base ``BasePolicy`` and overrides every method of either
parent that touches the networks (``forward``, ``evaluate_actions``, ``get_distribution``, ``_predict``,
``predict_values``, ``extract_features``, ``_build``), so neither parent's MLP/``action_net`` is built;
``predict`` is sb3-contrib's (it accepts ``action_masks``; PPO calls it without). ``policy.mlp_extractor``,
``action_net`` and ``value_net`` in the flat-MLP sense do not exist.

Usage::

    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    from gigdispatch.agents.setnet import DispatchSetPolicy

    PPO(DispatchSetPolicy, env, policy_kwargs={"hidden_size": 64})
    MaskablePPO(DispatchSetPolicy, env, policy_kwargs={"hidden_size": 64})
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from gigdispatch.agents.masked_rows import MaskedRowsDistribution, mask_fill
from gigdispatch.envs.core.errors import InputError

ORDERS, CANDIDATES, GLOBALS = "orders", "candidates", "globals"
#: the pair encoder's default width (``pair_size``): the ``(R, K, Hp)`` pair tensor is the update's dominant
#: cost, and 32 imitates as well as the trunk's 64 (docs/training.md); ``None`` gives it the trunk's width
#: (``hidden_size``), as every policy saved before ``pair_size`` existed has
PAIR_SIZE = 32
#: the largest batch ``forward`` runs in numpy without autograd (a rollout step: one observation per env)
NUMPY_MAX_BATCH = 64


class SetFeatures(NamedTuple):
    """The trunk's output, packed over the real orders of the batch: what the policy's heads read.

    ``R`` is the number of real orders (``orders[..., 0] == 1``) over the whole batch, in row-major order of
    (observation, slot); padded slots are not computed at all (their only choice is hold at level 0, which
    the distribution's mask gives them without a network output). On the default scenario an observation
    holds ~6 real orders of its 32 slots, so the pair tensor is ``R x K`` rows instead of ``B x M x K``."""

    pairs: th.Tensor  # (R, K, H) pair encodings of the real orders' candidate columns; exactly 0 on invalid ones
    orders: th.Tensor  # (R, H) order encodings, cross-order context mixed in
    order_obs: th.Tensor  # (R,) int64: the observation (batch row) of each real order
    order_slot: th.Tensor  # (R,) int64: its flat slot index, observation * M + slot
    cand_valid: th.Tensor  # (R, K) bool: the candidate is valid
    order_count: th.Tensor  # (B, 1) number of real orders per observation, at least 1 (the mean's divisor)
    globals: th.Tensor  # (B, G)


class DispatchLayout(NamedTuple):
    """Sizes read off a Dispatch-v1 observation and action space."""

    n_orders: int  # M
    n_candidates: int  # K
    order_features: int  # Fo
    candidate_features: int  # Fc
    global_features: int  # G
    n_levels: int  # L (0: no pricing half in the action)


def _box(observation_space: spaces.Dict, key: str, ndim: int) -> spaces.Box:
    space = observation_space.spaces.get(key)
    if not isinstance(space, spaces.Box) or len(space.shape) != ndim:
        raise InputError(f"observation_space[{key!r}]: expected a Box with {ndim} dimensions, got {space}")
    return space


def dispatch_layout(observation_space: spaces.Space, action_space: spaces.Space) -> DispatchLayout:
    """Check the spaces against the Dispatch-v1 layout and return its sizes (``InputError`` naming the field
    that does not fit)."""
    if not isinstance(observation_space, spaces.Dict):
        raise InputError(
            f"observation_space: expected a Dict (Dispatch-v1 layout), got {type(observation_space).__name__}"
        )
    o = _box(observation_space, ORDERS, 2).shape
    c = _box(observation_space, CANDIDATES, 3).shape
    g = _box(observation_space, GLOBALS, 1).shape
    if c[0] != o[0]:
        raise InputError(f"observation_space['candidates']: {c[0]} order rows, but 'orders' has {o[0]}")
    m, k = int(o[0]), int(c[1])
    if not isinstance(action_space, spaces.MultiDiscrete) or action_space.nvec.ndim != 1:
        raise InputError(f"action_space: expected a 1-D MultiDiscrete, got {action_space}")
    nvec = action_space.nvec.astype(int)
    if len(nvec) not in (m, 2 * m) or not (nvec[:m] == k + 1).all():
        raise InputError(
            f"action_space: expected MultiDiscrete([K+1]*M [+ [L]*M]) with M={m}, K={k}, got {nvec.tolist()}"
        )
    n_levels = 0
    if len(nvec) == 2 * m:
        n_levels = int(nvec[m])
        if not (nvec[m:] == n_levels).all():
            raise InputError(f"action_space: the payout-level half must be one level count, got {nvec[m:].tolist()}")
    return DispatchLayout(m, k, int(o[1]), int(c[2]), int(g[0]), n_levels)


class _SumMaxOverSet(th.autograd.Function):
    """Sum and max of a nonnegative ``x`` ``(N, S, H)`` over the set axis ``S``, with a cheaper backward
    than autograd's: the forward is ``amax`` (vectorised; ``max(dim)`` also computes indices, ~25x slower
    on CPU) and the backward one comparison against the saved maximum, with the sum's gradient added in
    place (autograd's ``amax`` backward: ~2x slower; ``max(dim)``'s scatter backward is cheap but not
    its forward).

    Tied maxima each receive the full gradient (``amax`` would split it); this is only used on ReLU-like
    outputs, where ties are the activation's flat parts (0, or ReLU6's 6), whose own backward then
    zeroes that gradient, so the parameter gradients are those of ``max``."""

    @staticmethod
    def forward(ctx: Any, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        mx = x.amax(dim=1)
        ctx.save_for_backward(x, mx)
        return x.sum(dim=1), mx

    @staticmethod
    def backward(ctx: Any, g_sum: th.Tensor | None, g_max: th.Tensor | None) -> th.Tensor:
        x, mx = ctx.saved_tensors
        if g_max is None:
            assert g_sum is not None
            return g_sum.unsqueeze(1).expand_as(x).clone()
        # a float 1/0 comparison written straight into a float output (a bool result and a cast: ~10x
        # slower on CPU), then in-place scaling: no broadcast addcmul (slow) and no extra temporaries
        grad = th.eq(x, mx.unsqueeze(1), out=th.empty_like(x)).mul_(g_max.unsqueeze(1))
        return grad if g_sum is None else grad.add_(g_sum.unsqueeze(1))


class _PairReluSumMax(th.autograd.Function):
    """One bias-free layer + ReLU over the pair inputs and the sum and max of its output over the candidate
    axis: ``x`` ``(R, K, F)`` (no gradient), ``weight`` ``(H, F)`` -> ``pairs = relu(x @ weight.T)``
    ``(R, K, H)``, its sum and its max over ``K`` ``(R, H)`` each (the default trunk's pair encoder).

    The same function autograd would build from ``linear``, ``relu_`` and ``_SumMaxOverSet``, with one
    backward instead of three: the gradients reaching ``pairs`` (the candidate logits'), its sum and its max
    are added in one buffer, the ReLU's mask applied in place, and the weight gradient computed as
    ``(x.T @ g).T``: on CPU that orientation of the tall, thin product is ~2x faster than autograd's
    ``g.T @ x``. Ties in the max each get the full gradient, as in ``_SumMaxOverSet``."""

    @staticmethod
    def forward(ctx: Any, x: th.Tensor, weight: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        r, k, fin = x.shape
        pairs = th.mm(x.reshape(r * k, fin), weight.t()).view(r, k, -1).clamp_min_(0.0)
        mx = pairs.amax(dim=1)
        ctx.save_for_backward(x, pairs, mx)
        return pairs, pairs.sum(dim=1), mx

    @staticmethod
    def backward(
        ctx: Any, g_pairs: th.Tensor | None, g_sum: th.Tensor | None, g_max: th.Tensor | None
    ) -> tuple[None, th.Tensor]:
        x, pairs, mx = ctx.saved_tensors
        r, k, h = pairs.shape
        if g_max is not None:
            g = th.eq(pairs, mx.unsqueeze(1), out=th.empty_like(pairs)).mul_(g_max.unsqueeze(1))
        else:
            g = th.zeros_like(pairs)
        if g_sum is not None:
            g.add_(g_sum.unsqueeze(1))
        if g_pairs is not None:
            g.add_(g_pairs)
        g.mul_(th.gt(pairs, 0.0, out=th.empty_like(pairs)))  # the ReLU's mask (a float 1/0 comparison: fast)
        g_weight = th.mm(x.reshape(r * k, -1).t(), g.view(r * k, h)).t()
        return None, g_weight


def masked_mean_max(
    x: th.Tensor, valid: th.Tensor, zeroed: bool = False, nonneg: bool = False
) -> tuple[th.Tensor, th.Tensor]:
    """Mean and max of ``x`` ``(N, S, H)`` over the set axis ``S`` counting only ``valid`` ``(N, S)`` (bool)
    members; an empty set gives zeros for both (no NaN, no ``-inf``). ``zeroed``: the caller guarantees
    exact zeros on invalid members, so the plain sum is the masked sum; with ``nonneg`` too (``x >= 0``
    from a ReLU-like activation) the plain max is the masked max, computed by ``_SumMaxOverSet`` where a
    gradient is needed (fewer passes over ``x``)."""
    count = valid.sum(dim=1, keepdim=True, dtype=x.dtype).clamp_min_(1.0)
    if zeroed and nonneg:
        if th.is_grad_enabled() and x.requires_grad:
            total, mx = _SumMaxOverSet.apply(x)
        else:
            total, mx = x.sum(dim=1), x.amax(dim=1)
        return total / count, mx
    mean = (x if zeroed else x * valid.unsqueeze(-1)).sum(dim=1) / count
    mx = x.masked_fill(~valid.unsqueeze(-1), mask_fill(x.dtype)).amax(dim=1)
    return mean, mx * valid.any(dim=1, keepdim=True)


# Per-observation reductions over packed rows (R, H) with their observation index ``obs_of`` (R,); with one
# observation (the rollout's batch) they are plain reductions / broadcasts, a few tensor ops fewer per step.
def _obs_sum(x: th.Tensor, obs_of: th.Tensor, b: int) -> th.Tensor:
    """Sum of each observation's rows: ``(B, H)``, 0 for an observation without rows."""
    if b == 1:
        return x.sum(dim=0, keepdim=True)
    return x.new_zeros((b, x.shape[1])).index_add_(0, obs_of, x)


class _ObsMaxNonneg(th.autograd.Function):
    """Max of each observation's rows of a nonnegative ``x`` ``(R, H)``: ``(B, H)``, 0 for an observation
    without rows; the backward is one comparison against the gathered maximum (autograd's ``scatter_reduce``
    amax backward: several passes and casts, ~0.4 ms an update). Ties each get the full gradient, as in
    ``_SumMaxOverSet`` (only used on ReLU-like outputs)."""

    @staticmethod
    def forward(ctx: Any, x: th.Tensor, obs_of: th.Tensor, b: int) -> th.Tensor:
        index = obs_of.unsqueeze(1).expand(-1, x.shape[1])
        out = x.new_zeros((b, x.shape[1])).scatter_reduce_(0, index, x, "amax", include_self=True)
        ctx.save_for_backward(x, out, obs_of)
        return out

    @staticmethod
    def backward(ctx: Any, g: th.Tensor) -> tuple[th.Tensor, None, None]:
        x, out, obs_of = ctx.saved_tensors
        grad = th.eq(x, out.index_select(0, obs_of), out=th.empty_like(x))
        return grad.mul_(g.index_select(0, obs_of)), None, None


def _obs_max(x: th.Tensor, obs_of: th.Tensor, b: int, nonneg: bool) -> th.Tensor:
    """Max of each observation's rows: ``(B, H)``, 0 for an observation without rows (``nonneg``: the
    caller guarantees ``x >= 0``, so the zero start can take part in the max)."""
    if b == 1 and x.shape[0]:
        return x.amax(dim=0, keepdim=True)
    if nonneg and x.requires_grad and th.is_grad_enabled():
        return _ObsMaxNonneg.apply(x, obs_of, b)
    index = obs_of.unsqueeze(1).expand(-1, x.shape[1])
    return x.new_zeros((b, x.shape[1])).scatter_reduce_(0, index, x, "amax", include_self=nonneg)


def _obs_rows(y: th.Tensor, obs_of: th.Tensor, b: int) -> th.Tensor:
    """Each row's observation entry of ``y`` ``(B, H)``: ``(R, H)`` (one observation: ``y`` itself, which
    broadcasts)."""
    return y if b == 1 else y.index_select(0, obs_of)


class DispatchSetExtractor(BaseFeaturesExtractor):
    """The shared trunk (pair encoder, order encoder, cross-order context) as an SB3 features extractor;
    ``forward`` returns ``SetFeatures`` rather than one flat tensor (``features_dim`` = ``hidden_size``).

    Pair encoder: ``pair_layers`` bias-free layers over ``[candidate, order, globals] * valid`` (the
    candidate's ``valid`` feature, 1 on every real pair, is the bias), so an invalid pair's input is zero
    and, for activations with ``act(0) = 0``, so is its encoding: sums over candidates are the masked sums
    without a mask pass. With ReLU (nonnegative) the plain max is also the masked max. The pair tensor
    covers the real orders only (``R·K`` rows, ``SetFeatures``), the update's dominant cost, hence one layer
    by default (its readout, the candidate logit, is a second, order-conditioned layer: ``pair · query(order)``)."""

    def __init__(
        self,
        observation_space: spaces.Dict,
        hidden_size: int = 64,
        activation_fn: type[nn.Module] = nn.ReLU,
        pair_layers: int = 1,
        pair_size: int | None = PAIR_SIZE,
    ) -> None:
        super().__init__(observation_space, features_dim=hidden_size)
        if int(pair_layers) < 1:
            raise InputError(f"pair_layers: expected a positive int, got {pair_layers}")
        fo = _box(observation_space, ORDERS, 2).shape[1]
        fc = _box(observation_space, CANDIDATES, 3).shape[2]
        fg = _box(observation_space, GLOBALS, 1).shape[0]
        h = hidden_size
        hp = h if pair_size is None else int(pair_size)  # the pair encoder's width
        self.pair_size = hp
        self.act = activation_fn()
        # the pair layers' outputs are fresh tensors that ReLU's backward does not need: apply it in place there
        relu_like = issubclass(activation_fn, nn.ReLU | nn.ReLU6)
        self.act_inplace: nn.Module = activation_fn(inplace=True) if relu_like else self.act
        zero = float(self.act(th.zeros(1)).abs().item())
        self.zero_at_zero = zero == 0.0  # act(0) = 0: invalid pairs stay exactly 0 through the pair layers
        self.nonneg = relu_like  # and, outputs >= 0, the plain max is the masked max
        self.pair = nn.ModuleList(
            [nn.Linear(fc + fo + fg, hp, bias=False)]
            + [nn.Linear(hp, hp, bias=False) for _ in range(int(pair_layers) - 1)]
        )
        self.order_in = nn.Linear(fo + fg + 2 * hp, h)
        # the default (one layer, plain ReLU): the pair encoder's training forward/backward as one function
        self.fused_pairs = int(pair_layers) == 1 and activation_fn is nn.ReLU
        self.mix_self = nn.Linear(h, h)
        self.mix_ctx = nn.Linear(h, h, bias=False)

    def forward(self, observations: dict[str, th.Tensor]) -> SetFeatures:
        orders, cands, glob = observations[ORDERS], observations[CANDIDATES], observations[GLOBALS]
        b, m, k = cands.shape[:3]
        # pack the real orders of the whole batch: (B*M, ...) rows -> the R rows whose order is valid
        order_valid = orders[..., 0] > 0.5  # (B, M)
        slot = order_valid.reshape(-1).nonzero().squeeze(1)  # (R,) flat observation * M + slot
        obs_of = slot // m  # (R,)
        orders = orders.reshape(b * m, -1).index_select(0, slot)  # (R, Fo)
        cands = cands.reshape(b * m, k, -1).index_select(0, slot)  # (R, K, Fc)
        cand_valid = cands[..., 0] > 0.5  # (R, K); the order is valid by construction
        valid = cand_valid.unsqueeze(-1)  # (R, K, 1)
        glob_rows = glob.expand(slot.shape[0], -1) if b == 1 else glob.index_select(0, obs_of)
        ctx = th.cat([orders, glob_rows], dim=-1)  # (R, Fo + G)
        pairs = th.cat([cands, ctx.unsqueeze(1).expand(-1, k, -1)], dim=-1).mul_(valid)  # (R, K, Fc + Fo + G)
        if self.fused_pairs and th.is_grad_enabled() and self.pair[0].weight.requires_grad:
            pairs, total, mx = _PairReluSumMax.apply(pairs, self.pair[0].weight)
            mean = total / cand_valid.sum(dim=1, keepdim=True, dtype=total.dtype).clamp_min_(1.0)
        else:
            for layer in self.pair:
                pairs = self.act_inplace(layer(pairs))
            if not self.zero_at_zero:
                pairs = pairs * valid
            mean, mx = masked_mean_max(pairs, cand_valid, zeroed=True, nonneg=self.nonneg)
        enc = self.act(self.order_in(th.cat([ctx, mean, mx], dim=-1)))  # (R, H)
        count = order_valid.sum(dim=1, keepdim=True, dtype=enc.dtype).clamp_min_(1.0)  # (B, 1)
        pooled = _obs_sum(enc, obs_of, b) / count  # (B, H) mean over real orders
        enc = enc + self.act(self.mix_self(enc) + _obs_rows(self.mix_ctx(pooled), obs_of, b))
        return SetFeatures(pairs, enc, obs_of, slot, cand_valid, count, glob)


class DispatchSetPolicy(MaskableActorCriticPolicy, ActorCriticPolicy):
    """Set-network actor-critic for Dispatch-v1; one class for ``PPO`` and ``MaskablePPO`` (module docstring).

    ``policy_kwargs``: ``hidden_size`` (64: the order encoder, context and heads), ``pair_size`` (32: the
    pair encoder and the candidate logits' query; ``None``: ``hidden_size``), ``pair_layers`` (1: layers of
    the pair encoder; each extra ``Hp x Hp`` layer adds about a third to the training step), ``activation_fn``
    (``nn.ReLU``; others work, with a few more masking passes), ``ortho_init`` (True: SB3's
    orthogonal init, gain 0.01 on the logit heads and 1 on the value output), ``optimizer_class`` /
    ``optimizer_kwargs`` (Adam, ``eps=1e-5`` as SB3). ``use_sde`` is accepted because PPO always passes it,
    and must be False.

    Constructing one turns off ``torch.distributions`` argument validation process-wide
    (``torch.distributions.Distribution.set_default_validate_args(False)``): this policy never builds a
    torch distribution, but SB3 code running in the same process (a ``MultiInputPolicy`` baseline,
    sb3-contrib's masked distributions) does, once per action slot and step, and the checks cost more than
    the sampling there.
    """

    features_extractor: DispatchSetExtractor
    action_dist: MaskedRowsDistribution  # type: ignore[assignment]  # not a MaskableDistribution: our row layout
    #: run ``forward`` on a rollout's small batch without autograd in numpy (``_forward_numpy``); False: torch only
    numpy_rollout: bool = True
    _offsets: th.Tensor
    _mask_base: th.Tensor
    _flat_index: th.Tensor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        hidden_size: int = 64,
        pair_layers: int = 1,
        activation_fn: type[nn.Module] = nn.ReLU,
        pair_size: int | None = PAIR_SIZE,
        ortho_init: bool = True,
        use_sde: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
    ) -> None:
        if use_sde:
            raise InputError("use_sde: gSDE needs a continuous (Box) action space; DispatchSetPolicy is discrete")
        if int(hidden_size) < 1:
            raise InputError(f"hidden_size: expected a positive int, got {hidden_size}")
        if pair_size is not None and int(pair_size) < 1:
            raise InputError(f"pair_size: expected a positive int or None, got {pair_size}")
        self.layout = dispatch_layout(observation_space, action_space)
        if optimizer_kwargs is None:
            optimizer_kwargs = {"eps": 1e-5} if optimizer_class is th.optim.Adam else {}
        th.distributions.Distribution.set_default_validate_args(False)
        # both parents' __init__ build a flat MLP and an SB3 distribution; only their common base is wanted
        BasePolicy.__init__(
            self,
            observation_space,
            action_space,
            features_extractor_class=DispatchSetExtractor,
            features_extractor_kwargs={
                "hidden_size": int(hidden_size),
                "activation_fn": activation_fn,
                "pair_layers": int(pair_layers),
                "pair_size": None if pair_size is None else int(pair_size),
            },
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=normalize_images,
            squash_output=False,
        )
        self.hidden_size = int(hidden_size)
        self.pair_layers = int(pair_layers)
        self.activation_fn = activation_fn
        self.ortho_init = ortho_init
        self.use_sde = False
        self.dist_kwargs = None
        self.log_std_init = 0.0
        self.net_arch: list[int] = []
        self.share_features_extractor = True
        self.features_extractor = self.make_features_extractor()  # type: ignore[assignment]
        self.pair_size = self.features_extractor.pair_size  # None resolved there: hidden_size
        self.features_dim = self.features_extractor.features_dim
        self.pi_features_extractor = self.features_extractor
        self.vf_features_extractor = self.features_extractor
        self.action_dist = MaskedRowsDistribution(action_space.nvec)  # type: ignore[attr-defined]
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        """The heads, the row-layout gather indices, the weight init and the optimizer (the trunk is the
        features extractor)."""
        h, lay = self.hidden_size, self.layout
        self.act = self.activation_fn()
        # per order: the query (candidate logit = pair encoding · query), then the hold and payout-level logits
        self.order_head = nn.Linear(h, self.pair_size + 1 + lay.n_levels)
        self.value_hidden = nn.Linear(2 * h + lay.global_features, h)
        self.value_out = nn.Linear(h, 1)
        offsets, mask_base, flat_index = self._row_layout()
        # size-dependent constants, not weights: non-persistent, so a state_dict moves between sizes
        self.register_buffer("_offsets", offsets, persistent=False)
        self.register_buffer("_mask_base", mask_base, persistent=False)
        self.register_buffer("_flat_index", flat_index, persistent=False)
        if self.ortho_init:
            gains = {
                self.features_extractor: np.sqrt(2),
                self.value_hidden: np.sqrt(2),
                self.order_head: 0.01,
                self.value_out: 1.0,
            }
            for module, gain in gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def _row_layout(self) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Where a real order's outputs go in one observation's distribution rows, the mask of an observation
        with no real order, and where each row entry sits in a flat MaskablePPO mask, all for rows stored
        column-major: ``(C, R_rows)`` in memory, seen as ``(R_rows, C)`` through a transpose (what
        ``MaskedRowsDistribution`` computes its row-wise softmaxes fastest on).

        ``offsets`` ``(K + 1 + L,)``: relative to the order's choice row (``slot``), the positions of its
        ``K`` candidate logits, its hold logit and its ``L`` payout-level logits (level row ``M + slot``).
        ``mask_base`` ``(C * R_rows,)``: hold allowed on every choice row and level 0 on every level row, all
        else masked; a real order then allows its valid candidates and every level (written at ``offsets``).
        Columns past a row's width stay masked (and their logits 0). ``flat_index`` ``(C * R_rows,)``: the
        flat mask entry of each row entry; 0 (any entry) past a row's width, where ``mask_base`` is False
        and the AND with it keeps the entry masked."""
        m, k, n_lv = self.layout.n_orders, self.layout.n_candidates, self.layout.n_levels
        n_rows, c = self.action_dist.n_rows, self.action_dist.n_cols
        offsets = np.concatenate([np.arange(k + 1) * n_rows, np.arange(n_lv) * n_rows + m])
        base = np.zeros((c, n_rows), bool)
        base[k, :m] = True
        if n_lv:
            base[0, m:] = True
        widths = np.asarray(self.action_dist.nvec)
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
        cols = np.arange(c)[:, None]
        flat_index = np.where(cols < widths[None, :], starts[None, :] + cols, 0)  # (C, R_rows)
        return (
            th.from_numpy(offsets.astype(np.int64)),
            th.from_numpy(base.reshape(-1)),
            th.from_numpy(flat_index.reshape(-1).astype(np.int64)),
        )

    def _flat_mask(self, m: th.Tensor, b: int) -> th.Tensor | None:
        """``m`` as MaskablePPO's flat masks ``(B or 1, sum(nvec))`` (one per observation, or one for all),
        or ``None`` if it is laid out otherwise."""
        n_flat = self.action_dist.n_flat
        if m.dim() <= 2 and m.shape[-1] == n_flat and m.numel() in (n_flat, b * n_flat):
            return m.reshape(-1, n_flat)
        return None

    def _explicit_mask(self, action_masks: th.Tensor | np.ndarray, b: int) -> th.Tensor:
        """An ``action_masks`` argument as ``(B or 1, C, R_rows)`` bool, column-major like ``_row_layout``,
        to AND into the obs-derived mask. A flat MaskablePPO mask is gathered with one ``index_select``
        (before the 0/1 threshold: on CPU it is ~8x faster on float than on bool); its entries past a row's
        width are arbitrary, which the AND with the obs-derived mask (False there) makes harmless. Any other
        layout, and the errors, go through ``MaskedRowsDistribution.rows_mask``."""
        dist = self.action_dist
        m = th.as_tensor(action_masks, device=self._flat_index.device)
        flat = self._flat_mask(m, b)
        if flat is not None:
            rows = flat.index_select(1, self._flat_index)
            if rows.dtype != th.bool:
                rows = rows > 0.5
            return rows.view(-1, dist.n_cols, dist.n_rows)
        return dist.rows_mask(m, batch_size=b).transpose(1, 2)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = BaseModel._get_constructor_parameters(self)
        data.update(
            hidden_size=self.hidden_size,
            pair_size=self.pair_size,
            pair_layers=self.pair_layers,
            activation_fn=self.activation_fn,
            ortho_init=self.ortho_init,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # ------------------------------------------------------------------ network pieces
    def extract_features(  # type: ignore[override]
        self, obs: PyTorchObs, features_extractor: BaseFeaturesExtractor | None = None
    ) -> SetFeatures:
        """SB3's preprocessing followed by the set trunk. Every entry is a ``Box`` (``dispatch_layout``), for
        which SB3's ``preprocess_obs`` is a ``float()`` cast: done here directly (it runs once per rollout step)."""
        assert isinstance(obs, dict)
        return (features_extractor or self.features_extractor)(
            {key: obs[key].float() for key in (ORDERS, CANDIDATES, GLOBALS)}
        )

    def _order_logits(self, f: SetFeatures) -> tuple[th.Tensor, th.Tensor]:
        """Each real order's candidate logits ``(R, K)`` (pair encoding · the query read off the order
        encoding) and its hold and payout-level logits ``(R, 1 + L)``."""
        head = self.order_head(f.orders)
        query, per_order = head[:, : self.pair_size], head[:, self.pair_size :]  # (R, Hp), (R, 1 + L)
        # vecdot, not a broadcast product + sum (~2x slower with its backward) or bmm (~2.5x)
        return th.linalg.vecdot(f.pairs, query.unsqueeze(1)), per_order

    def _distribution(self, f: SetFeatures, action_masks: th.Tensor | np.ndarray | None) -> MaskedRowsDistribution:
        """Row logits and the obs-derived mask (ANDed with ``action_masks`` if given) -> the distribution.

        The real orders' outputs (candidate logits, hold, payout levels) and mask entries are written into
        the flat rows (column-major, ``_row_layout``) with one ``index_copy`` each; padded slots keep logit 0
        and the base mask (hold, level 0)."""
        b = f.globals.shape[0]
        dist = self.action_dist
        cand, per_order = self._order_logits(f)
        width = dist.n_rows * dist.n_cols
        # each real order's choice row in the flat (B, C, R_rows) layout: obs * C * R_rows + slot
        start = f.order_slot if b == 1 else f.order_slot + f.order_obs * (width - self.layout.n_orders)
        pos = (start.unsqueeze(1) + self._offsets).reshape(-1)  # (R * (K + 1 + L),)
        values = th.cat([cand, per_order], dim=1).reshape(-1)
        logits = values.new_zeros(b * width).index_copy_(0, pos, values).view(b, dist.n_cols, dist.n_rows)
        allowed = th.cat([f.cand_valid, f.cand_valid.new_ones((cand.shape[0], per_order.shape[1]))], dim=1)
        base = self._mask_base.expand(b, -1).clone(memory_format=th.contiguous_format)  # a copy (repeat: ~3x slower)
        mask = base.view(-1).index_copy_(0, pos, allowed.view(-1)).view(b, dist.n_cols, dist.n_rows)
        if action_masks is not None:
            mask &= self._explicit_mask(action_masks, b)
        return dist.proba_distribution(logits.transpose(1, 2), mask.transpose(1, 2), width_masked=True)

    def _value(self, f: SetFeatures) -> th.Tensor:
        """State values ``(B, 1)`` from the mean and max of the order encodings over each observation's real
        orders (both 0 for an observation without one) and the globals."""
        b = f.globals.shape[0]
        mean = _obs_sum(f.orders, f.order_obs, b) / f.order_count
        mx = _obs_max(f.orders, f.order_obs, b, nonneg=self.features_extractor.nonneg)
        return self.value_out(self.act(self.value_hidden(th.cat([mean, mx, f.globals], dim=-1))))

    # ------------------------------------------------------------------ a rollout's small batch without autograd
    def _numpy_ready(self, obs: PyTorchObs, action_masks: th.Tensor | np.ndarray | None) -> np.ndarray | bool:
        """Whether ``forward`` may take the numpy path (``_forward_numpy``): switched on, no gradient wanted,
        a batch of 1 to ``NUMPY_MAX_BATCH`` float32 CPU observations, ReLU, float32 CPU weights, and
        ``action_masks`` absent or one flat MaskablePPO mask per observation. Returns those masks as a flat
        numpy array, ``True`` without them, ``False`` if not."""
        if not (self.numpy_rollout and self.activation_fn is nn.ReLU) or th.is_grad_enabled():
            return False
        if not isinstance(obs, dict) or self._flat_index.device.type != "cpu":
            return False
        b = None
        for key in (ORDERS, CANDIDATES, GLOBALS):
            t = obs.get(key)
            if not isinstance(t, th.Tensor) or t.dtype != th.float32 or t.device.type != "cpu" or t.dim() < 2:
                return False
            b = t.shape[0] if b is None else b
            if t.shape[0] != b or not 1 <= b <= NUMPY_MAX_BATCH:
                return False
        if self.order_head.weight.dtype != th.float32:
            return False
        if action_masks is None:
            return True
        if isinstance(action_masks, th.Tensor):
            if action_masks.device.type != "cpu":
                return False
            action_masks = action_masks.numpy()
        flat = np.asarray(action_masks)
        assert b is not None
        if flat.size != b * self.action_dist.n_flat or flat.shape[-1] != self.action_dist.n_flat:
            return False
        return flat.reshape(-1)

    def _forward_numpy(
        self, obs: dict[str, th.Tensor], deterministic: bool, flat_mask: np.ndarray | None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``forward`` for a small batch (a rollout step: one observation per env), in numpy on the weights'
        memory: the same network, masks and Gumbel draws from torch's generator in the torch path's order, so a
        seed gives the same actions.

        Why: a rollout step runs the network on a batch of one observation per env, where every torch op costs
        a few microseconds of dispatch whatever its size; the ~90 ops of the torch path cost ~0.4-0.6 ms per
        step, about a third of the env's own step with one env, and numpy's ~60 calls about half of that."""
        ex, dist, h, hp = self.features_extractor, self.action_dist, self.hidden_size, self.pair_size
        w_in, b_in, w_self, b_self = (
            t.detach().numpy() for t in (ex.order_in.weight, ex.order_in.bias, ex.mix_self.weight, ex.mix_self.bias)
        )
        orders, cands, glob = (obs[key].numpy() for key in (ORDERS, CANDIDATES, GLOBALS))
        b, m, k, fc = cands.shape
        fo = orders.shape[2]
        slot = np.flatnonzero(orders[:, :, 0].reshape(-1) > 0.5)  # flat observation * M + slot, as the torch path
        obs_of = slot // m
        r = slot.shape[0]
        picked = cands.reshape(b * m, k, fc)[slot]  # (R, K, Fc)
        cand_valid = picked[:, :, 0] > 0.5
        ctx = np.empty((r, fo + glob.shape[1]), np.float32)
        ctx[:, :fo] = orders.reshape(b * m, fo)[slot]
        ctx[:, fo:] = glob[obs_of]
        x = np.empty((r, k, fc + ctx.shape[1]), np.float32)
        x[:, :, :fc] = picked
        x[:, :, fc:] = ctx[:, None, :]
        x *= cand_valid[:, :, None]
        flat_pairs = x.reshape(r * k, x.shape[2])
        for layer in ex.pair:
            assert isinstance(layer, nn.Linear)
            flat_pairs = flat_pairs @ layer.weight.detach().numpy().T
            np.maximum(flat_pairs, 0.0, out=flat_pairs)
        pairs = flat_pairs.reshape(r, k, hp)
        mean = pairs.sum(axis=1) / np.maximum(cand_valid.sum(axis=1, keepdims=True, dtype=np.float32), 1.0)
        enc = np.concatenate([ctx, mean, pairs.max(axis=1)], axis=1) @ w_in.T + b_in
        np.maximum(enc, 0.0, out=enc)
        # per-observation mean (and, for the value, max) over its real orders: one-hot sums, segment maxima
        count = np.bincount(obs_of, minlength=b).astype(np.float32)
        onehot = (obs_of[None, :] == np.arange(b)[:, None]).astype(np.float32)  # (B, R)
        n = np.maximum(count, 1.0)[:, None]
        pooled = onehot @ enc / n  # (B, H)
        mix = enc @ w_self.T + b_self + (pooled @ ex.mix_ctx.weight.detach().numpy().T)[obs_of]
        enc = enc + np.maximum(mix, 0.0, out=mix)
        head = enc @ self.order_head.weight.detach().numpy().T + self.order_head.bias.detach().numpy()
        query, per_order = head[:, :hp], head[:, hp:]
        cand = np.matmul(pairs, query[:, :, None])[:, :, 0]  # (R, K)
        # the torch path's row layout: (B, C, R_rows), real orders written at their offsets
        width = dist.n_cols * dist.n_rows
        pos = (obs_of[:, None] * width + (slot % m)[:, None] + self._offsets.numpy()).reshape(-1)
        logits = np.zeros(b * width, np.float32)
        logits[pos] = np.concatenate([cand, per_order], axis=1).reshape(-1)
        mask = np.tile(self._mask_base.numpy(), b)
        mask[pos] = np.concatenate([cand_valid, np.ones((r, per_order.shape[1]), bool)], axis=1).reshape(-1)
        if flat_mask is not None:
            picked_mask = flat_mask.reshape(b, -1)[:, self._flat_index.numpy()].reshape(-1)
            mask &= picked_mask if picked_mask.dtype == bool else picked_mask > 0.5
        mask3 = mask.reshape(b, dist.n_cols, dist.n_rows)
        shifted = np.where(mask3, logits.reshape(b, dist.n_cols, dist.n_rows), np.float32(mask_fill(th.float32)))
        shifted -= shifted.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (B, C, R_rows)
        if deterministic:
            actions = log_probs.argmax(axis=1)
        else:  # the torch path's draws: uniforms in (B, C, R_rows) memory order, -Gumbel = log(-log U)
            with np.errstate(divide="ignore"):
                neg_gumbel = np.log(-np.log(th.rand(b, dist.n_cols, dist.n_rows).numpy()))
            actions = np.where(mask3, log_probs - neg_gumbel, -np.inf).argmax(axis=1)
        log_prob = np.take_along_axis(log_probs, actions[:, None, :], axis=1)[:, 0, :].sum(axis=1, dtype=np.float32)
        top = np.zeros((b, h), np.float32)  # enc >= 0 (ReLU + ReLU residual): 0 is the max of no rows
        if r:
            starts = np.searchsorted(obs_of, np.arange(b))
            has = count > 0
            top[has] = np.maximum.reduceat(enc, starts[has], axis=0)
        hidden = np.concatenate([onehot @ enc / n, top, glob], axis=1) @ self.value_hidden.weight.detach().numpy().T
        hidden += self.value_hidden.bias.detach().numpy()
        value = np.maximum(hidden, 0.0, out=hidden) @ self.value_out.weight.detach().numpy().T
        value += self.value_out.bias.detach().numpy()
        return (
            th.from_numpy(actions.astype(np.int64)),
            th.from_numpy(value.astype(np.float32).reshape(b, 1)),
            th.from_numpy(log_prob.astype(np.float32)),
        )

    # ------------------------------------------------------------------ what PPO / MaskablePPO call
    def forward(
        self, obs: PyTorchObs, deterministic: bool = False, action_masks: th.Tensor | np.ndarray | None = None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Actions ``(B, R)``, values ``(B, 1)`` and the actions' log-probabilities ``(B,)``.

        A rollout step (up to ``NUMPY_MAX_BATCH`` observations, no autograd, the default ReLU on CPU) runs in numpy
        (``_forward_numpy``, the same function of the same weights; ``numpy_rollout = False`` turns it off)."""
        ready = self._numpy_ready(obs, action_masks)
        if ready is not False:
            assert isinstance(obs, dict)
            return self._forward_numpy(obs, deterministic, None if ready is True else ready)
        f = self.extract_features(obs)
        dist = self._distribution(f, action_masks)
        actions = dist.get_actions(deterministic=deterministic)
        return actions, self._value(f), dist.log_prob(actions)

    def evaluate_actions(
        self, obs: PyTorchObs, actions: th.Tensor, action_masks: th.Tensor | np.ndarray | None = None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Values ``(B, 1)``, log-probabilities ``(B,)`` and entropies ``(B,)`` of ``actions`` under the policy."""
        f = self.extract_features(obs)
        packed = self._packed_log_prob_entropy(f, actions, action_masks)
        if packed is not None:
            return self._value(f), packed[0], packed[1]
        dist = self._distribution(f, action_masks)
        return self._value(f), dist.log_prob(actions), dist.entropy()

    def _packed_log_prob_entropy(
        self, f: SetFeatures, actions: th.Tensor, action_masks: th.Tensor | np.ndarray | None
    ) -> tuple[th.Tensor, th.Tensor] | None:
        """``evaluate_actions``' log-probabilities and entropies ``(B,)`` computed over the real orders' rows
        only (``2R`` rows with pricing, ``R`` without) instead of all ``B x rows``: a padded slot has one
        allowed entry (hold; level 0), so its log-probability and entropy are exactly 0 and it adds nothing
        to either sum. ``None`` (the caller takes the dense distribution) for an ``action_masks`` layout
        other than MaskablePPO's flat one.

        The explicit mask's entries of each real order's rows are gathered and ANDed with the obs-derived
        ones, as ``_distribution`` does; the softmaxes run over the transposed ``(C, R)`` layout (CPU's
        (log-)softmax over a short last axis is slow, ``MaskedRowsDistribution._normalise``)."""
        b = f.globals.shape[0]
        dist, lay = self.action_dist, self.layout
        explicit = None
        if action_masks is not None:
            explicit = self._flat_mask(th.as_tensor(action_masks, device=self._flat_index.device), b)
            if explicit is None:
                return None
            explicit = explicit.expand(b, -1).reshape(-1)  # (B * n_flat,)
        cand, per_order = self._order_logits(f)  # (R, K), (R, 1 + L)
        slot = f.order_slot - f.order_obs * lay.n_orders  # (R,) slot within its observation
        flat_row = f.order_obs * dist.n_rows + slot  # (R,) the choice row in the flat (B * rows) actions
        k = lay.n_candidates
        # choice rows: (K + 1, R), candidates then hold
        logits = th.cat([cand.t(), per_order[:, :1].t()], dim=0)
        allowed = th.cat([f.cand_valid.t(), f.cand_valid.new_ones((1, cand.shape[0]))], dim=0)
        rows: list[tuple[th.Tensor, th.Tensor | None, int]] = [(logits, allowed, 0)]
        if lay.n_levels:
            rows.append((per_order[:, 1:].t(), None, lay.n_orders))
        flat_acts = actions.reshape(b * dist.n_rows).long()  # (B * rows,)
        log_prob = cand.new_zeros(cand.shape[0])
        entropy = cand.new_zeros(cand.shape[0])
        for lg, ok, row_offset in rows:
            width = lg.shape[0]
            if explicit is not None:
                # flat mask entry of (order, column): obs * n_flat + start of its row + column (rows of one kind
                # share a width, so a row's start is row * width past the kind's first row)
                first = 0 if row_offset == 0 else lay.n_orders * (k + 1)
                start = f.order_obs * dist.n_flat + first + slot * width  # (R,)
                idx = (start.unsqueeze(0) + th.arange(width, device=start.device).unsqueeze(1)).reshape(-1)
                got = explicit.index_select(0, idx).view(width, -1)
                got = got if got.dtype == th.bool else got > 0.5
                ok = got if ok is None else ok & got
            filled = lg if ok is None else lg.masked_fill(~ok, mask_fill(lg.dtype))
            lp = th.log_softmax(filled, dim=0)  # (width, R)
            a = flat_acts.index_select(0, flat_row + row_offset).unsqueeze(0)  # (1, R)
            log_prob = log_prob + lp.gather(0, a).squeeze(0)
            entropy = entropy - (th.softmax(filled, dim=0) * lp).sum(dim=0)
        out_lp = log_prob.new_zeros(b).index_add_(0, f.order_obs, log_prob)
        out_ent = entropy.new_zeros(b).index_add_(0, f.order_obs, entropy)
        return out_lp, out_ent

    def get_distribution(  # type: ignore[override]
        self, obs: PyTorchObs, action_masks: th.Tensor | np.ndarray | None = None
    ) -> MaskedRowsDistribution:
        """The masked action distribution for ``obs`` (the shared ``self.action_dist``, re-parameterised)."""
        return self._distribution(self.extract_features(obs), action_masks)

    def _predict(
        self, observation: PyTorchObs, deterministic: bool = False, action_masks: th.Tensor | np.ndarray | None = None
    ) -> th.Tensor:
        return self.get_distribution(observation, action_masks).get_actions(deterministic=deterministic)

    def row_log_probs(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """``(R, C)`` log-probabilities of one observation's action rows (the ``M`` choice rows, then with
        pricing the ``M`` payout-level rows; masked entries hold a large negative fill), for decoders that
        choose jointly over the rows (``agents.set_decode.match_choices``)."""
        obs, _ = self.obs_to_tensor(observation)
        with th.no_grad():
            lp = self.get_distribution(obs).log_probs
        assert lp is not None
        return lp[0].cpu().numpy()

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        """State values ``(B, 1)``."""
        return self._value(self.extract_features(obs))


class DenseRows(NamedTuple):
    """The actor's row logits and obs-derived masks of a batch, every slot and column computed (``DenseSetActor``).

    Padded slots get logit 0 everywhere (as the packed policy's rows); their masks allow hold and level 0 only."""

    choice_logits: th.Tensor  # (B, M, K + 1): candidate columns, then hold
    choice_mask: th.Tensor  # (B, M, K + 1) bool: valid candidate of a real order, or hold
    level_logits: th.Tensor | None  # (B, M, L) payout-level logits (None without pricing)
    level_mask: th.Tensor | None  # (B, M, L) bool: every level on a real order, level 0 on a padded one


def masked_log_softmax(logits: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Log-softmax over the last axis with masked entries at ``mask_fill`` (``MaskedRowsDistribution``'s rule)."""
    return th.log_softmax(th.where(mask, logits, mask_fill(logits.dtype)), dim=-1)


class DenseSetActor(nn.Module):
    """The actor of a ``DispatchSetPolicy`` without data-dependent shapes, for tracing and ONNX export.

    Why: the policy's trunk packs the real orders of a batch (``nonzero``: a shape that depends on the data)
    and writes its outputs back with ``index_copy``; an exported graph must have static ops. Here every one of
    the ``M`` slots and ``K`` columns is computed on batch-first tensors and masked instead: pair inputs are
    zeroed where the pair is not valid (its candidate's or its order's ``valid`` is 0), so with the bias-free
    pair layers and ReLU its encoding is exactly 0 and the plain sum and max over candidates are the masked
    ones; the cross-order mean counts the real orders only; padded slots' logits are set to 0. Same weights
    (the policy's modules, shared, not copied), same masking rules, same function as the packed policy on
    every valid entry, up to float rounding. No size depends on ``M`` or ``K``, so a traced graph takes any.

    ``forward(orders (B, M, Fo), candidates (B, M, K, Fc), globals (B, G))`` returns the choice rows'
    log-probabilities ``(B, M, K + 1)`` (hold last) and, with pricing, the level rows' ``(B, M, L)`` (else
    None); ``rows`` the logits and masks; ``stack_rows`` the policy's ``(B, R, C)`` row layout. Only ReLU (the
    default activation) is supported: the zero-at-zero and nonnegativity the masking relies on are ReLU's.
    """

    def __init__(self, policy: DispatchSetPolicy) -> None:
        super().__init__()
        if policy.activation_fn is not nn.ReLU:
            raise InputError(
                f"activation_fn: the dense set actor supports nn.ReLU only, got {policy.activation_fn.__name__}"
            )
        ex = policy.features_extractor
        self.pair, self.order_in, self.mix_self, self.mix_ctx = ex.pair, ex.order_in, ex.mix_self, ex.mix_ctx
        self.order_head = policy.order_head
        self.pair_size = policy.pair_size
        self.n_levels = policy.layout.n_levels

    def rows(self, orders: th.Tensor, candidates: th.Tensor, globals_: th.Tensor) -> DenseRows:
        """Row logits and obs-derived masks of a batch (``DenseRows``)."""
        orders, candidates, globals_ = orders.float(), candidates.float(), globals_.float()
        m, k = candidates.shape[1], candidates.shape[2]
        order_valid = orders[..., 0] > 0.5  # (B, M)
        pair_valid = (candidates[..., 0] > 0.5) & order_valid.unsqueeze(-1)  # (B, M, K)
        ctx = th.cat([orders, globals_.unsqueeze(1).expand(-1, m, -1)], dim=-1)  # (B, M, Fo + G)
        x = th.cat([candidates, ctx.unsqueeze(2).expand(-1, -1, k, -1)], dim=-1)  # (B, M, K, Fc + Fo + G)
        x = th.where(pair_valid.unsqueeze(-1), x, th.zeros_like(x))
        for layer in self.pair:
            x = th.relu(layer(x))  # exactly 0 on invalid pairs: no bias, relu(0) = 0
        count = pair_valid.sum(dim=2, keepdim=True, dtype=x.dtype).clamp_min(1.0)  # (B, M, 1)
        mean, mx = x.sum(dim=2) / count, x.amax(dim=2)  # x >= 0 and 0 where invalid: the masked max
        enc = th.relu(self.order_in(th.cat([ctx, mean, mx], dim=-1)))  # (B, M, H)
        real = order_valid.unsqueeze(-1)  # (B, M, 1)
        n_real = order_valid.sum(dim=1, keepdim=True, dtype=enc.dtype).clamp_min(1.0)  # (B, 1)
        pooled = th.where(real, enc, th.zeros_like(enc)).sum(dim=1) / n_real  # (B, H): mean over real orders
        enc = enc + th.relu(self.mix_self(enc) + self.mix_ctx(pooled).unsqueeze(1))
        head = self.order_head(enc)  # (B, M, H + 1 + L)
        h = self.pair_size
        query = head[..., :h]
        cand = th.matmul(x, query.unsqueeze(-1)).squeeze(-1)  # (B, M, K): pair encoding · query
        choice = th.cat([cand, head[..., h : h + 1]], dim=-1)
        choice = th.where(real, choice, th.zeros_like(choice))
        choice_mask = th.cat([pair_valid, th.ones_like(order_valid).unsqueeze(-1)], dim=-1)
        if not self.n_levels:
            return DenseRows(choice, choice_mask, None, None)
        levels = head[..., h + 1 :]
        levels = th.where(real, levels, th.zeros_like(levels))
        level_mask = th.cat([th.ones_like(real), real.expand(-1, -1, self.n_levels - 1)], dim=-1)
        return DenseRows(choice, choice_mask, levels, level_mask)

    def forward(
        self, orders: th.Tensor, candidates: th.Tensor, globals_: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """The choice rows' log-probabilities ``(B, M, K + 1)`` and the level rows' ``(B, M, L)`` (None without
        pricing), masked by the observation alone (as ``DispatchSetPolicy.get_distribution(obs)``)."""
        r = self.rows(orders, candidates, globals_)
        level = None
        if r.level_logits is not None and r.level_mask is not None:
            level = masked_log_softmax(r.level_logits, r.level_mask)
        return masked_log_softmax(r.choice_logits, r.choice_mask), level

    def stack_rows(self, choice: th.Tensor, level: th.Tensor | None) -> th.Tensor:
        """Choice rows ``(B, M, K + 1)`` and level rows ``(B, M, L)`` as the policy's row layout ``(B, R, C)``:
        the ``M`` choice rows then the ``M`` level rows, ``C = max(K + 1, L)`` columns, a row's columns past its
        width at ``mask_fill`` (the packed policy's log-probabilities there are that fill minus the row's
        log-sum-exp: the same float32 value, or within a few units of it). Traced, ``C`` follows ``K``."""
        if level is None:
            return choice
        b, m, width = choice.shape
        fill = mask_fill(choice.dtype)
        # pad both halves to K + 1 + L columns, then keep the first C: no Python branch on a (traced) size
        wide = th.cat(
            [
                th.cat([choice, choice.new_full((b, m, self.n_levels), fill)], dim=-1),
                th.cat([level, level.new_full((b, m, width), fill)], dim=-1),
            ],
            dim=1,
        )
        c = th.clamp(width, min=self.n_levels) if isinstance(width, th.Tensor) else max(width, self.n_levels)
        return wide.index_select(2, th.arange(c, device=wide.device))
