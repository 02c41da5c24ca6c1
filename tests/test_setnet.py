"""The set-network policy (``agents.setnet``) and its masked row distribution (``agents.masked_rows``).

Checked: equivariance to permuting order slots and candidates (the value invariant), masks (from the
observation alone and ANDed with an explicit MaskablePPO mask: masked choices have probability 0 and are
never drawn, padded slots always hold at level 0), log-probabilities and entropies against
``torch.distributions.Categorical`` (the reference, here only), weight transfer across ``(M, K)`` and
padding invariance, and short PPO / MaskablePPO runs on a tiny fake env with save/load round trips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

th = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

import gymnasium as gym  # noqa: E402
from gymnasium import spaces  # noqa: E402

from gigdispatch.agents.masked_rows import MaskedRowsDistribution  # noqa: E402
from gigdispatch.agents.setnet import DispatchSetPolicy  # noqa: E402
from gigdispatch.envs.core.errors import InputError  # noqa: E402

th.set_num_threads(1)
FO, FC, FG = 12, 9, 6


def make_spaces(m: int, k: int, n_levels: int = 0) -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    """Dispatch-v1 spaces: M order slots, K candidates, L payout levels (0: no pricing half)."""
    obs = spaces.Dict(
        {
            "orders": spaces.Box(-5, 5, (m, FO), np.float32),
            "candidates": spaces.Box(-5, 5, (m, k, FC), np.float32),
            "globals": spaces.Box(-5, 5, (FG,), np.float32),
        }
    )
    nvec = [k + 1] * m + ([n_levels] * m if n_levels else [])
    return obs, spaces.MultiDiscrete(nvec)


def random_obs(rng: np.random.Generator, b: int, m: int, k: int, p_order: float = 0.6) -> dict[str, np.ndarray]:
    """A batch of valid-looking observations: real orders in random slots (not a prefix), random valid
    candidates, padded rows all zeros."""
    orders = rng.uniform(-1, 1, (b, m, FO)).astype(np.float32)
    cands = rng.uniform(-1, 1, (b, m, k, FC)).astype(np.float32)
    ov = rng.random((b, m)) < p_order
    cv = (rng.random((b, m, k)) < 0.6) & ov[..., None]
    orders[..., 0] = ov
    cands[..., 0] = cv
    orders[~ov] = 0.0
    cands[~cv] = 0.0
    return {"orders": orders, "candidates": cands, "globals": rng.uniform(-1, 1, (b, FG)).astype(np.float32)}


def env_mask(obs: dict[str, np.ndarray], n_levels: int) -> np.ndarray:
    """The env's flat MaskablePPO mask derived as Dispatch does: candidate valid, hold always; level 0 always,
    every level on a real order slot."""
    cv = obs["candidates"][..., 0] > 0.5
    b, m, _ = cv.shape
    choice = np.concatenate([cv, np.ones((b, m, 1), bool)], axis=-1).reshape(b, -1)
    if not n_levels:
        return choice
    lv = np.zeros((b, m, n_levels), bool)
    lv[..., 0] = True
    lv[obs["orders"][..., 0] > 0.5] = True
    return np.concatenate([choice, lv.reshape(b, -1)], axis=1)


def obs_and_strict_mask(
    rng: np.random.Generator, b: int, m: int, k: int, n_levels: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``b`` observations, the first without a real order, and a flat explicit mask stricter than the env's
    (about 30 % of its allowed entries dropped; hold and level 0 stay allowed)."""
    obs = random_obs(rng, b, m, k)
    for key in ("orders", "candidates"):
        obs[key][0] = 0.0
    allowed = env_mask(obs, n_levels)
    keep = rng.random(allowed.shape) < 0.7
    keep[:, k : m * (k + 1) : k + 1] = True
    if n_levels:
        keep[:, m * (k + 1) :: n_levels] = True
    return obs, allowed & keep


def make_policy(m: int, k: int, n_levels: int, seed: int = 0, **kw: Any) -> DispatchSetPolicy:
    th.manual_seed(seed)
    obs_space, act_space = make_spaces(m, k, n_levels)
    return DispatchSetPolicy(obs_space, act_space, lambda _: 3e-4, **kw)


def to_t(obs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {key: th.as_tensor(v) for key, v in obs.items()}


def probs_and_value(policy: DispatchSetPolicy, obs: dict[str, np.ndarray], mask: Any = None) -> tuple[Any, Any]:
    with th.no_grad():
        dist = policy.get_distribution(to_t(obs), mask)
        return dist.probs.clone(), policy.predict_values(to_t(obs))


M, K, L = 6, 4, 3


@pytest.fixture(scope="module")
def policy() -> DispatchSetPolicy:
    # a non-trivial init scale on the heads, so the permutation checks compare distinct numbers
    return make_policy(M, K, L, ortho_init=False)


def test_order_slot_permutation_permutes_rows_and_keeps_value(policy: DispatchSetPolicy) -> None:
    rng = np.random.default_rng(1)
    obs = random_obs(rng, 5, M, K)
    perm = rng.permutation(M)
    pobs = {"orders": obs["orders"][:, perm], "candidates": obs["candidates"][:, perm], "globals": obs["globals"]}
    p, v = probs_and_value(policy, obs)
    pp, pv = probs_and_value(policy, pobs)
    rows = np.concatenate([perm, M + perm])  # choice rows, then level rows, each permuted
    assert th.allclose(pp, p[:, rows], atol=1e-6)
    assert th.allclose(pv, v, atol=1e-5)
    assert not th.allclose(p[:, :M], p[:, perm], atol=1e-4)  # the rows do differ: the check has teeth


def test_candidate_permutation_permutes_candidate_probs_only(policy: DispatchSetPolicy) -> None:
    rng = np.random.default_rng(2)
    obs = random_obs(rng, 4, M, K, p_order=1.0)
    perms = np.stack([rng.permutation(K) for _ in range(M)])  # one permutation per order slot
    pc = np.take_along_axis(obs["candidates"], perms[None, :, :, None], axis=2)
    p, v = probs_and_value(policy, obs)
    pp, pv = probs_and_value(policy, {**obs, "candidates": pc})
    expect = th.gather(p[:, :M, :K], 2, th.as_tensor(perms)[None].expand(p.shape[0], -1, -1))
    assert th.allclose(pp[:, :M, :K], expect, atol=1e-6)
    assert th.allclose(pp[:, :M, K], p[:, :M, K], atol=1e-6)  # hold
    assert th.allclose(pp[:, M:], p[:, M:], atol=1e-6)  # payout levels
    assert th.allclose(pv, v, atol=1e-5)


@pytest.mark.parametrize("explicit", ["none", "bool", "float"])
def test_masked_choices_have_zero_probability_and_are_never_sampled(policy: DispatchSetPolicy, explicit: str) -> None:
    rng = np.random.default_rng(3)
    obs = random_obs(rng, 3, M, K)
    obs_allowed = env_mask(obs, L)
    allowed, mask = obs_allowed, None
    if explicit != "none":
        # a stricter mask than the obs allows: drop random entries, keep hold and level 0
        keep = rng.random(allowed.shape) < 0.5
        n_choice = M * (K + 1)
        keep[:, K : n_choice : K + 1] = True
        keep[:, n_choice::L] = True
        allowed = obs_allowed & keep
        if explicit == "bool":
            mask = allowed
        else:  # as the rollout buffer passes it, and allowing more than the obs does: the obs must still win
            mask = th.as_tensor((allowed | ~obs_allowed).astype(np.float32))
    rows_allowed = policy.action_dist.rows_mask(allowed)
    p, _ = probs_and_value(policy, obs, mask)
    assert (p[~rows_allowed] == 0).all() and (p[rows_allowed] > 0).all()
    assert th.allclose(p.sum(-1), th.ones(p.shape[:2]))
    # many draws at once: each observation repeated
    reps = 400
    big = {key: np.repeat(v, reps, axis=0) for key, v in obs.items()}
    big_mask = None if mask is None else np.repeat(np.asarray(mask), reps, axis=0)
    with th.no_grad():
        actions, _, _ = policy(to_t(big), action_masks=big_mask)
    big_allowed = rows_allowed.repeat_interleave(reps, dim=0)
    assert th.gather(big_allowed, 2, actions.unsqueeze(-1)).all()
    padded = th.as_tensor(big["orders"][..., 0] == 0)
    assert padded.any() and (~padded).any()
    assert (actions[:, :M][padded] == K).all() and (actions[:, M:][padded] == 0).all()
    # and the allowed entries that are not rare do come up
    drawn = th.zeros_like(big_allowed).scatter_(2, actions.unsqueeze(-1), True)
    drawn = drawn.view(len(p), reps, *p.shape[1:]).any(dim=1)
    assert drawn[p > 0.03].all()


def test_log_prob_and_entropy_match_torch_categorical() -> None:
    m, k, n_lv = 3, 2, 2
    pol = make_policy(m, k, n_lv, seed=4, ortho_init=False)
    rng = np.random.default_rng(4)
    obs = random_obs(rng, 4, m, k)
    with th.no_grad():
        actions, _, logp = pol(to_t(obs))
        _, logp2, ent = pol.evaluate_actions(to_t(obs), actions.float())
        dist = pol.get_distribution(to_t(obs))
        p = dist.probs
    hand = th.log(th.gather(p, 2, actions.unsqueeze(-1)).squeeze(-1)).sum(1)
    assert th.allclose(logp, hand, atol=1e-5) and th.allclose(logp2, hand, atol=1e-5)
    ref_ent = th.zeros(4)
    ref_lp = th.zeros(4)
    for row in range(2 * m):
        width = k + 1 if row < m else n_lv
        cat = th.distributions.Categorical(probs=p[:, row, :width])
        ref_ent += cat.entropy()
        ref_lp += cat.log_prob(actions[:, row])
    assert th.allclose(ent, ref_ent, atol=1e-5)
    assert th.allclose(logp, ref_lp, atol=1e-5)
    assert th.isfinite(ent).all() and (ent > 0).all()
    assert th.equal(dist.mode(), p.argmax(dim=-1))  # deterministic actions: the most likely allowed entry


def test_distribution_layout_and_all_masked_row_is_finite() -> None:
    dist = MaskedRowsDistribution([3, 3, 2])
    flat = np.array([[1, 0, 1, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1, 0, 1]], bool)
    rows = dist.rows_mask(flat)
    expect = th.tensor(
        [[[1, 0, 1], [0, 1, 1], [1, 0, 0]], [[0, 0, 0], [1, 1, 1], [0, 1, 0]]], dtype=th.bool
    )  # the third row is 2 wide
    assert (rows == expect).all()
    dist.proba_distribution(th.randn(2, 3, 3, requires_grad=True), rows)
    assert th.isfinite(dist.log_probs).all() and th.isfinite(dist.entropy()).all()
    some = expect.any(-1, keepdim=True)  # rows with an allowed entry: masked entries exactly 0
    assert (dist.probs[~expect & some] == 0).all() and (dist.probs[expect] > 0).all()
    assert th.allclose(dist.probs[1, 0], th.full((3,), 1 / 3))  # the fully masked row: uniform, not NaN
    assert th.equal(dist.rows_mask(flat.astype(np.float32)), expect)  # the rollout buffer's 0/1 floats
    lp = dist.log_prob(th.tensor([[0, 2, 0], [1, 1, 1]]))
    lp.sum().backward()
    with pytest.raises(ValueError, match="action_masks: expected 8 entries"):
        dist.rows_mask(np.ones((2, 7), bool))
    # the SB3 entry points: a flat latent through proba_distribution_net, then sb3-contrib's apply_masking
    net = dist.proba_distribution_net(latent_dim=5)
    actions, logp = dist.log_prob_from_params(net(th.randn(2, 5)), flat)
    assert th.gather(expect, 2, actions.unsqueeze(-1))[expect.any(-1)].all()
    assert th.allclose(logp, th.log(th.gather(dist.probs, 2, actions.unsqueeze(-1))).sum((1, 2)))
    dist.apply_masking(np.array([[1, 1, 0, 1, 1, 1, 1, 1]] * 2, bool))  # narrows: drops row 0, column 2
    assert (dist.probs[0, 0] == th.tensor([1.0, 0.0, 0.0])).all()
    assert th.allclose(dist.log_prob(dist.mode()), dist.log_probs.amax(-1).sum(-1))


@pytest.mark.parametrize("activation", ["ReLU", "Tanh", "Sigmoid"])  # fast path; masked max; act(0) != 0
def test_weights_transfer_across_sizes_and_padding_invariance(activation: str) -> None:
    act = getattr(th.nn, activation)
    big = make_policy(32, 8, 3, seed=5, ortho_init=False, activation_fn=act)
    small = make_policy(16, 4, 3, seed=6, activation_fn=act)
    small.load_state_dict(big.state_dict())  # strict: no layer depends on M or K
    rng = np.random.default_rng(5)
    obs = random_obs(rng, 3, 16, 4)
    # the same observation padded into the larger sizes (extra slots and candidates invalid)
    pad = {
        "orders": np.zeros((3, 32, FO), np.float32),
        "candidates": np.zeros((3, 32, 8, FC), np.float32),
        "globals": obs["globals"],
    }
    pad["orders"][:, :16] = obs["orders"]
    pad["candidates"][:, :16, :4] = obs["candidates"]
    ps, vs = probs_and_value(small, obs)
    pb, vb = probs_and_value(big, pad)
    assert th.allclose(vs, vb, atol=1e-5)
    assert th.allclose(pb[:, :16, :4], ps[:, :16, :4], atol=1e-6)  # candidates
    assert th.allclose(pb[:, :16, 8], ps[:, :16, 4], atol=1e-6)  # hold
    assert th.allclose(pb[:, 32:48, :3], ps[:, 16:, :3], atol=1e-6)  # payout levels
    assert (pb[:, 16:32, 8] == 1).all()  # the added slots hold


@pytest.mark.parametrize("activation", ["ReLU", "Tanh"])  # Tanh: the per-observation max without the zero start
def test_a_batch_equals_its_observations_one_by_one(activation: str) -> None:
    # the trunk packs the real orders of the whole batch: nothing may leak between observations, and the
    # one-observation shortcuts must agree with the batched reductions (an empty observation included)
    pol = make_policy(M, K, L, seed=8, ortho_init=False, activation_fn=getattr(th.nn, activation))
    obs = random_obs(np.random.default_rng(8), 5, M, K)
    for key in ("orders", "candidates"):
        obs[key][2] = 0.0
    mask = env_mask(obs, L)
    p, v = probs_and_value(pol, obs, mask)
    for i in range(5):
        one = {key: arr[i : i + 1] for key, arr in obs.items()}
        pi, vi = probs_and_value(pol, one, mask[i : i + 1])
        assert th.allclose(pi, p[i : i + 1], atol=1e-6) and th.allclose(vi, v[i : i + 1], atol=1e-5)
    rows = pol.action_dist.rows_mask(mask)  # a row-layout action mask gives the same as the flat one
    assert th.allclose(probs_and_value(pol, obs, rows)[0], p)
    assert (p[2, :M, K] == 1).all() and (p[2, M:, 0] == 1).all()  # the empty observation holds at level 0


def test_set_max_gradient_matches_autograd_max() -> None:
    from gigdispatch.agents.setnet import _SumMaxOverSet

    gen = th.Generator().manual_seed(9)
    x = th.randn(40, 8, 5, generator=gen, dtype=th.float64)
    x[3] = 0.0  # a set of invalid (zeroed) members: the max is a tie at 0
    w = th.randn(5, 16, generator=gen, dtype=th.float64, requires_grad=True)
    g_sum, g_max = th.randn(2, 40, 16, generator=gen, dtype=th.float64)
    grads = []
    for custom in (True, False):
        a = th.relu(x @ w)
        total, mx = _SumMaxOverSet.apply(a) if custom else (a.sum(1), a.max(1).values)
        ((total * g_sum).sum() + (mx * g_max).sum()).backward()
        grads.append(w.grad.clone())
        w.grad = None
    assert th.allclose(grads[0], grads[1]) and grads[0].abs().sum() > 0


@pytest.mark.parametrize(
    ("n_levels", "pair_layers", "explicit", "pair_size"),
    [(L, 1, "none", None), (L, 1, "bool", 8), (0, 2, "float", None), (L, 2, "float", 8)],
)
def test_numpy_rollout_forward_equals_the_torch_path(
    n_levels: int, pair_layers: int, explicit: str, pair_size: int | None
) -> None:
    m, k = 6, 4
    pol = make_policy(m, k, n_levels, seed=10, ortho_init=False, pair_layers=pair_layers, pair_size=pair_size)
    obs, allowed = obs_and_strict_mask(np.random.default_rng(10), 6, m, k, n_levels)
    # one observation at a time, and batches (a rollout's one observation per env, some without a real order)
    for i, (lo, hi) in enumerate([(j, j + 1) for j in range(6)] + [(0, 6), (1, 4)]):
        one = to_t({key: arr[lo:hi] for key, arr in obs.items()})
        mask: Any = None
        if explicit == "bool":
            mask = allowed[lo:hi]
        elif explicit == "float":
            mask = th.as_tensor(allowed[lo:hi].astype(np.float32))
        with th.no_grad():
            assert pol._numpy_ready(one, mask) is not False  # the numpy path is the one under test
            for det in (False, True):
                outs = []
                for numpy_rollout in (True, False):
                    pol.numpy_rollout = numpy_rollout
                    th.manual_seed(i)  # the same Gumbel draws: the same actions
                    outs.append(pol(one, deterministic=det, action_masks=mask))
                pol.numpy_rollout = True
                (a1, v1, lp1), (a2, v2, lp2) = outs
                b = hi - lo
                assert a1.dtype == a2.dtype == th.int64 and a1.shape == a2.shape == (b, pol.action_dist.n_rows)
                assert th.equal(a1, a2)
                assert v1.shape == v2.shape == (b, 1) and th.allclose(v1, v2, atol=1e-5)
                assert lp1.shape == lp2.shape == (b,) and th.allclose(lp1, lp2, atol=1e-4)
    # anything else takes the torch path: a batch over the limit, gradients, another activation
    big = to_t({key: np.repeat(arr, 11, axis=0) for key, arr in obs.items()})  # 66 > NUMPY_MAX_BATCH
    with th.no_grad():
        assert pol._numpy_ready(big, None) is False
    assert pol._numpy_ready(to_t({key: arr[:1] for key, arr in obs.items()}), None) is False
    tanh = make_policy(m, k, n_levels, activation_fn=th.nn.Tanh)
    with th.no_grad():
        assert tanh._numpy_ready(to_t({key: arr[:1] for key, arr in obs.items()}), None) is False


@pytest.mark.parametrize(("n_levels", "pair_size"), [(L, None), (0, None), (L, 8)])
def test_training_path_equals_the_dense_distribution_and_plain_autograd(n_levels: int, pair_size: int | None) -> None:
    """``evaluate_actions`` (the update's path: the fused pair function, log-probabilities and entropies over
    the real orders' rows only) gives the values, log-probabilities, entropies and weight gradients of the
    plain path (autograd through ``linear``/``relu``/``_SumMaxOverSet``, the dense ``(B, rows, C)``
    distribution), with and without an explicit mask, and with a pair encoder narrower than the trunk."""
    m, k = 6, 4
    pol = make_policy(m, k, n_levels, seed=12, ortho_init=False, pair_size=pair_size)
    obs, allowed = obs_and_strict_mask(np.random.default_rng(12), 9, m, k, n_levels)
    with th.no_grad():
        th.manual_seed(3)
        actions = pol(to_t(obs), action_masks=allowed)[0]  # actions the masks allow, as a rollout stores
    # no mask, one flat mask per observation (bool, float), one flat mask for every observation
    cases: list[Any] = [None, allowed, th.as_tensor(allowed.astype(np.float32)), allowed[1]]
    for mask in cases:
        outs = []
        for fast in (True, False):
            pol.features_extractor.fused_pairs = fast
            f = pol.extract_features(to_t(obs))
            if fast:
                v, lp, ent = pol.evaluate_actions(to_t(obs), actions, action_masks=mask)
            else:
                dist = pol._distribution(f, mask)
                v, lp, ent = pol._value(f), dist.log_prob(actions), dist.entropy()
            pol.zero_grad()
            (v.sum() + (lp * th.arange(1.0, 10.0)).sum() + ent.sum()).backward()
            grads = {n: p.grad.clone() for n, p in pol.named_parameters() if p.grad is not None}
            outs.append((v.detach(), lp.detach(), ent.detach(), grads))
        pol.features_extractor.fused_pairs = True
        (v1, lp1, e1, g1), (v2, lp2, e2, g2) = outs
        assert th.allclose(v1, v2, atol=1e-5) and th.allclose(lp1, lp2, atol=1e-4) and th.allclose(e1, e2, atol=1e-4)
        assert lp1[0] == 0 and e1[0] == 0 and (lp1[1:] < 0).all()  # no real order: the one allowed action
        assert g1.keys() == g2.keys() and "features_extractor.pair.0.weight" in g1
        for name in g1:
            assert th.allclose(g1[name], g2[name], atol=1e-4), name
    # a row-layout explicit mask is not the flat one: the dense distribution serves it, with the same result
    rows = pol.action_dist.rows_mask(allowed)
    with th.no_grad():
        assert th.allclose(
            pol.evaluate_actions(to_t(obs), actions, action_masks=rows)[1],
            pol.evaluate_actions(to_t(obs), actions, action_masks=allowed)[1],
            atol=1e-4,
        )
    if pair_size is not None:
        assert pol.features_extractor.pair[0].weight.shape[0] == pair_size
        assert pol.order_head.weight.shape[0] == pair_size + 1 + n_levels


def test_no_real_order_at_all_holds_with_a_finite_value(tmp_path: Path) -> None:
    pol = make_policy(M, K, L, seed=7)
    empty = {key: np.zeros_like(v) for key, v in random_obs(np.random.default_rng(0), 2, M, K).items()}
    with th.no_grad():
        actions, values, logp = pol(to_t(empty))
    assert (actions[:, :M] == K).all() and (actions[:, M:] == 0).all()
    assert th.isfinite(values).all() and th.allclose(logp, th.zeros(2))
    # the policy alone saves and loads (SB3's BasePolicy.save / load through the constructor parameters)
    pol.save(str(tmp_path / "policy.pt"))
    again = DispatchSetPolicy.load(str(tmp_path / "policy.pt"))
    obs = random_obs(np.random.default_rng(7), 2, M, K)
    assert np.array_equal(pol.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])


def test_bad_spaces_are_one_line_errors() -> None:
    obs_space, _ = make_spaces(4, 2)
    with pytest.raises(InputError, match=r"action_space: expected MultiDiscrete\(\[K\+1\]\*M"):
        DispatchSetPolicy(obs_space, spaces.MultiDiscrete([4] * 4), lambda _: 1e-3)
    flat = spaces.Dict({"orders": spaces.Box(-5, 5, (48,), np.float32)})
    with pytest.raises(InputError, match=r"observation_space\['orders'\]: expected a Box with 2 dimensions"):
        DispatchSetPolicy(flat, spaces.MultiDiscrete([3] * 4), lambda _: 1e-3)


class FakeDispatchEnv(gym.Env):
    """Random Dispatch-v1-shaped observations; reward for holding order slot 0 (something learnable)."""

    def __init__(self, m: int = 5, k: int = 3, n_levels: int = 2) -> None:
        self.observation_space, self.action_space = make_spaces(m, k, n_levels)
        self._starts = np.cumsum(np.concatenate([[0], self.action_space.nvec[:-1]]))  # flat mask offsets
        self.m, self.k, self.n_levels = m, k, n_levels
        self._t = 0
        self._obs: dict[str, np.ndarray] = {}

    def _draw(self) -> dict[str, np.ndarray]:
        self._obs = {key: v[0] for key, v in random_obs(self.np_random, 1, self.m, self.k).items()}
        return self._obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        allowed = self.action_masks()[self._starts + action]
        assert allowed.all(), "the policy took a masked action"
        self._t += 1
        return self._draw(), float(action[0] == self.k), self._t >= 16, False, {}

    def action_masks(self) -> np.ndarray:
        return env_mask({key: v[None] for key, v in self._obs.items()}, self.n_levels)[0]


@pytest.mark.parametrize("algo", ["ppo", "maskable_ppo"])
def test_ppo_and_maskable_ppo_learn_and_round_trip(algo: str, tmp_path: Path) -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    cls = PPO if algo == "ppo" else MaskablePPO
    env = FakeDispatchEnv(n_levels=2 if algo == "ppo" else 0)
    model = cls(
        DispatchSetPolicy,
        env,
        n_steps=64,
        batch_size=32,
        n_epochs=2,
        seed=0,
        device="cpu",
        policy_kwargs={"hidden_size": 16},
    )
    model.learn(256)
    assert model.num_timesteps == 256
    path = tmp_path / "model.zip"
    model.save(path)
    loaded = cls.load(path, device="cpu")
    assert type(loaded.policy) is DispatchSetPolicy and loaded.policy.hidden_size == 16
    obs, _ = env.reset(seed=7)
    kw: dict[str, Any] = {"action_masks": env.action_masks()} if algo == "maskable_ppo" else {}
    a1, _ = model.predict(obs, deterministic=True, **kw)
    a2, _ = loaded.predict(obs, deterministic=True, **kw)
    assert np.array_equal(a1, a2) and a1.shape == env.action_space.shape
    for p1, p2 in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert th.equal(p1, p2)
