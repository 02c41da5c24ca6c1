"""``agents.set_decode.match_choices``: the joint choice of the set policy's rows is the brute-force optimum of
``sum of the rows' log-probabilities - hold_bias x holds`` with every driver chosen at most once; a driver listed
twice in a row is chosen in its likelier column; a row without a candidate holds; a larger ``hold_bias`` never
makes fewer offers; a mis-shaped input is one line naming ``logp``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gigdispatch.agents.set_decode import match_choices


def _score(logp: np.ndarray, choice: np.ndarray, hold_bias: float) -> float:
    K = logp.shape[1] - 1
    return float(logp[np.arange(len(choice)), choice].sum() - hold_bias * (choice == K).sum())


def _feasible(cand: np.ndarray, logp: np.ndarray, choice: np.ndarray) -> bool:
    """Each choice is hold or a listed candidate with a finite log-probability, and no driver is chosen twice."""
    n, K = cand.shape
    if choice.shape != (n,) or ((choice < 0) | (choice > K)).any():
        return False
    offer = np.flatnonzero(choice < K)
    drivers = cand[offer, choice[offer]]
    ok = (drivers >= 0).all() and np.isfinite(logp[offer, choice[offer]]).all()
    return bool(ok and len(set(drivers.tolist())) == len(drivers))


def _brute_force(logp: np.ndarray, cand: np.ndarray, hold_bias: float) -> float:
    """The best score over every feasible joint choice (each row: one of its columns or hold), by enumeration."""
    n, K = cand.shape
    rows = [[(float(logp[i, K]) - hold_bias, -1)] for i in range(n)]  # (gain, driver); hold names no driver
    for i, j in itertools.product(range(n), range(K)):
        if cand[i, j] >= 0 and np.isfinite(logp[i, j]):
            rows[i].append((float(logp[i, j]), int(cand[i, j])))

    def best(i: int, used: frozenset[int]) -> float:
        if i == n:
            return 0.0
        return max(g + best(i + 1, used | {d}) for g, d in rows[i] if d < 0 or d not in used)

    return best(0, frozenset())


@st.composite
def cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Up to 4 rows of up to 3 columns over 4 drivers (so rows compete, and a row may list a driver twice),
    log-softmax rows, and a hold bias."""
    n = draw(st.integers(0, 4))
    K = draw(st.integers(1, 3))
    cand = np.array(draw(st.lists(st.integers(-1, 3), min_size=n * K, max_size=n * K)), np.int64).reshape(n, K)
    logits = np.array(
        draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n * (K + 1), max_size=n * (K + 1))), np.float64
    ).reshape(n, K + 1)
    logits[:, :K][cand < 0] = -np.inf  # a missing candidate has no probability (as the network masks it)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)) if n else logits
    bias = draw(st.sampled_from([0.0, 0.5, 2.0, 5.0]))
    return logp, cand, bias


@settings(max_examples=400)
@given(cases())
def test_match_choices_is_the_brute_force_optimum(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    logp, cand, bias = case
    choice = match_choices(logp, cand, bias)
    assert _feasible(cand, logp, choice), (choice, cand)
    assert _score(logp, choice, bias) == pytest.approx(_brute_force(logp, cand, bias), abs=1e-9)


def test_match_choices_is_the_optimum_on_seeded_larger_cases() -> None:
    """6 rows x 4 columns over 5 drivers (up to 15,625 joint choices each), 40 seeded cases: the optimum too."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, K = 6, 4
        cand = rng.integers(-1, 5, size=(n, K))
        logp = rng.normal(size=(n, K + 1))
        logp[:, :K][cand < 0] = -np.inf
        bias = float(rng.choice([0.0, 1.0, 3.0]))
        choice = match_choices(logp, cand, bias)
        assert _feasible(cand, logp, choice)
        assert _score(logp, choice, bias) == pytest.approx(_brute_force(logp, cand, bias), abs=1e-9)


def test_a_driver_listed_twice_in_a_row_is_chosen_in_its_likelier_column() -> None:
    cand = np.array([[7, 3, 7]])
    for cols, want in (([-3.0, -2.0, -0.5], 2), ([-0.5, -2.0, -3.0], 0)):
        logp = np.array([[*cols, -4.0]])
        assert match_choices(logp, cand, 0.0).tolist() == [want]
    # two rows want driver 7; row 0 lists it twice: the joint optimum gives 7 to row 1 and driver 3 to row 0
    cand = np.array([[7, 3, 7], [7, -1, -1]])
    logp = np.array([[-1.0, -1.5, -0.9, -6.0], [-0.1, -np.inf, -np.inf, -6.0]])
    assert match_choices(logp, cand, 0.0).tolist() == [1, 0]


def test_rows_with_no_candidate_hold() -> None:
    K = 3
    cand = np.array([[-1, -1, -1], [2, -1, 5], [-1, -1, -1]])
    logp = np.log(np.full((3, K + 1), 0.25))
    out = match_choices(logp, cand, 10.0)  # however strong the push to offer
    assert out[0] == K and out[2] == K and out[1] in (0, 2)
    # a listed candidate whose log-probability is -inf (masked) is no candidate either
    logp[1, [0, 2]] = -np.inf
    assert match_choices(logp, cand, 10.0).tolist() == [K, K, K]
    # nothing at all to choose, and no rows
    assert match_choices(np.zeros((2, K + 1)), np.full((2, K), -1), 1.0).tolist() == [K, K]
    assert match_choices(np.zeros((0, K + 1)), np.zeros((0, K), np.int64)).shape == (0,)


def test_a_larger_hold_bias_never_makes_fewer_offers() -> None:
    rng = np.random.default_rng(1)
    biases = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    grew = 0
    for _ in range(60):
        n, K = int(rng.integers(1, 9)), int(rng.integers(1, 5))
        cand = rng.integers(-1, 6, size=(n, K))
        logp = rng.normal(scale=2.0, size=(n, K + 1))
        logp[:, :K][cand < 0] = -np.inf
        offers = [int((match_choices(logp, cand, b) < K).sum()) for b in biases]
        assert offers == sorted(offers), offers
        grew += offers[-1] > offers[0]
    assert grew > 10  # the bias does push towards offering


@pytest.mark.parametrize(
    ("logp_shape", "cand_shape"),
    [((3, 4), (3, 4)), ((2, 5), (3, 4)), ((3,), (3, 4)), ((3, 5, 1), (3, 4))],
)
def test_shape_mismatch_is_one_line_naming_logp(logp_shape: tuple[int, ...], cand_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="logp: expected shape") as err:
        match_choices(np.zeros(logp_shape), np.zeros(cand_shape, np.int64))
    assert "\n" not in str(err.value)
