"""attnsim.loss_and_grads and attnsim.train against a 50-digit mpmath oracle (tests/tools/mp_oracle.py).

The oracle evaluates the model directly (softmax, weighted sum, logistic loss) and its chain
rule in arbitrary precision from the same float64 inputs; top-score gaps range up to 700, where
float64 autodiff has no correct digits left (DESIGN.md §7).
"""

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings

import attnsim
from attnsim.testing import Problem, problems

from tools import mp_oracle

RTOL = 1e-11
ENTRY_FLOOR = 1e-2    # entries at least this fraction of the array's norm are also checked one by one


def _norm(a):
    a = np.abs(np.ravel(a))
    m = a.max(initial=0.0)
    return m * np.sqrt(np.sum((a / m) ** 2)) if m > 0 else 0.0


#: Below this magnitude float64 is subnormal and keeps fewer than 53 bits (gradients reach
#: ~1e-300 at gap 700): relative accuracy is promised for entries above it only.
SUBNORMAL_EDGE = 1e3 * np.finfo(np.float64).tiny


def _assert_close(name, got, expected, prob, rtol=RTOL):
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    size = _norm(expected)
    err = _norm(got - expected)
    assert err <= rtol * size + SUBNORMAL_EDGE, (
        f"{name}: norm-wise relative error {err / size if size else np.inf:.3e} at gap {prob.gap:.4g}")
    big = (np.abs(expected) >= max(ENTRY_FLOOR * size, SUBNORMAL_EDGE)) & (expected != 0)
    if big.any():
        rel = np.abs(got - expected)[big] / np.abs(expected)[big]
        assert rel.max() <= rtol, f"{name}: entrywise relative error {rel.max():.3e} at gap {prob.gap:.4g}"


def score_condition(prob):
    """``max_it sum_k |x_itk| (|W|^T |p|)_k``: the size of the terms of the score sums. Any float64
    evaluation of the scores from these inputs errs by about eps times this in absolute terms, and
    a saturated softmax turns that into the same relative error of the small attention weights."""
    return float(np.max(np.abs(prob.X) @ (np.abs(prob.W).T @ np.abs(prob.p))))


def _check_against_oracle(prob):
    loss, grad_W, grad_p = attnsim.loss_and_grads(*prob.arrays())
    ref_loss, ref_W, ref_p = mp_oracle.gradients(*prob.arrays())
    # The bound: 1e-11, plus the scores' own rounding 4 eps kappa (1e-12 for kappa ~ 10^3).
    rtol = RTOL + 4 * np.finfo(np.float64).eps * score_condition(prob)
    _assert_close("loss", loss, ref_loss, prob, rtol)
    _assert_close("grad_W", grad_W, ref_W, prob, rtol)
    _assert_close("grad_p", grad_p, ref_p, prob, rtol)


@settings(max_examples=15)
@given(problems(n=(1, 6), T=(2, 12), d=(1, 8), scale=(0.1, 1.0), max_gap=700.0))
def test_loss_and_grads_head_match_mp_oracle_up_to_gap_700(prob):
    """The head's gradient (and the other three outputs) of ``loss_and_grads_head``, numba and twin."""
    from attnsim._kernels import gd_twins

    ref_loss, ref_W, ref_p = mp_oracle.gradients(*prob.arrays())
    ref_nu = mp_oracle.head_gradient(*prob.arrays())
    for impl in (attnsim.loss_and_grads_head, gd_twins.loss_and_grads_head):
        loss, grad_W, grad_p, grad_nu = impl(*prob.arrays())
        _assert_close("loss", loss, ref_loss, prob)
        _assert_close("grad_W", grad_W, ref_W, prob)
        _assert_close("grad_p", grad_p, ref_p, prob)
        _assert_close("grad_nu", grad_nu, ref_nu, prob)


@settings(max_examples=25)
@given(problems(n=(1, 6), T=(2, 12), d=(1, 8), scale=(0.1, 1.0), max_gap=700.0))
def test_loss_and_grads_match_mp_oracle_up_to_gap_700(prob):
    _check_against_oracle(prob)


@settings(max_examples=25)
@given(problems(n=(1, 6), T=(2, 12), d=(1, 8), scale=(0.1, 1.0), max_gap=10.0))
def test_loss_and_grads_match_mp_oracle_below_gap_10(prob):
    _check_against_oracle(prob)


@pytest.mark.slow
@settings(max_examples=300)
@given(problems(n=(1, 12), T=(2, 12), d=(1, 16), scale=(0.1, 1.0), max_gap=700.0))
def test_loss_and_grads_match_mp_oracle_many_problems(prob):
    _check_against_oracle(prob)


@pytest.mark.parametrize("gap", [0.7, 30.0, 300.0])
def test_oracle_agrees_with_mpmath_numerical_differentiation(rng, gap):
    """Cross-check of the oracle's chain rule: mpmath.diff of the mp loss, at the oracle's precision."""
    X = rng.standard_normal((2, 3, 2))
    W = rng.standard_normal((2, 2))
    p = rng.standard_normal(2)
    z = np.einsum("itk,k->it", X, W.T @ p)
    top2 = np.sort(z, axis=1)[:, -2:]
    p *= gap / (top2[:, 1] - top2[:, 0]).max()
    prob = Problem(X, np.array([1.0, -1.0]), W, p, rng.standard_normal(2))
    _, dW, dp = mp_oracle.gradients_mp(*prob.arrays())
    with mpmath.workdps(mp_oracle._digits_for(prob.gap) + 30):
        loss = mp_oracle.loss_mp(*prob.arrays())
        Wm = [mpmath.mpf(float(a)) for a in prob.W.ravel()]
        pm = [mpmath.mpf(float(a)) for a in prob.p]
        for r in range(2):
            num = mpmath.diff(lambda t: loss(Wm, pm[:r] + [t] + pm[r + 1:]), pm[r])
            assert abs(num - dp[r]) <= mpmath.mpf(10) ** -40 * abs(dp[r])
        for j in range(4):
            num = mpmath.diff(lambda t: loss(Wm[:j] + [t] + Wm[j + 1:], pm), Wm[j])
            assert abs(num - dW[j]) <= mpmath.mpf(10) ** -40 * abs(dW[j])


def test_oracle_precision_budget_is_enough_at_gap_700(rng):
    X = rng.standard_normal((1, 4, 3))
    W = rng.standard_normal((3, 3))
    p = rng.standard_normal(3)
    z = X[0] @ (W.T @ p)
    top2 = np.sort(z)[-2:]
    prob = Problem(X, np.array([-1.0]), W, p * 700.0 / (top2[1] - top2[0]), rng.standard_normal(3))
    assert prob.gap == pytest.approx(700.0, rel=1e-12)
    mp_oracle.gradients(*prob.arrays(), check=True)     # asserts 45 stable digits


# --- trajectories -------------------------------------------------------------------------

def _saturated_problem(seed, gap, trainable):
    """n = 2, T = 3, d = 3 with its largest top-score gap equal to ``gap``; sample 0 is
    misclassified by its top token so that GD pulls its attention out of saturation.

    The step is sized from the oracle's gradient so that the effective query ``W^T p`` moves
    by 1e-6 of its norm a step: an O(1) relative error in the gradient then shows in the
    parameters after 10^2 steps, while the gaps change by under 1 % over 10^3 steps.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((2, 3, 3))
    W = rng.standard_normal((3, 3)) / np.sqrt(3)
    nu = rng.standard_normal(3) / np.sqrt(3)
    p = rng.standard_normal(3)
    z = np.einsum("itk,k->it", X, W.T @ p)
    top2 = np.sort(z, axis=1)[:, -2:]
    p *= gap / (top2[:, 1] - top2[:, 0]).max()
    z = np.einsum("itk,k->it", X, W.T @ p)
    v = X @ nu
    top = z.argmax(axis=1)
    y = -np.sign(v[np.arange(2), top])          # both samples' top tokens carry the wrong sign ...
    y[1] = -y[1]                                 # ... then sample 1 is made right: both labels occur
    prob = Problem(X, y, W, p, nu)
    _, dW, dp = mp_oracle.gradients(*prob.arrays())
    dq = W.T @ dp + (dW.T @ p if trainable == "Wp" else 0.0)     # d(W^T p)/d(lr) at the first step
    lr = 1e-6 * np.linalg.norm(W.T @ p) / np.linalg.norm(dq)
    return prob, lr


def _log_softmax(z):
    """log s from float scores, relative-accurate for the top token too."""
    top = z.max(axis=1, keepdims=True)
    rest = np.exp(z - top)
    rest[np.arange(z.shape[0]), z.argmax(axis=1)] = 0.0
    return (z - top) - np.log1p(rest.sum(axis=1, keepdims=True))


def _check_trajectory(seed, gap, steps, trainable, rtol):
    prob, lr = _saturated_problem(seed, gap, trainable)
    res = attnsim.train(*prob.arrays(), lr=lr, steps=steps, trainable=trainable, engine="primal",
                        save_at=[0, steps])
    assert res.success, res.message
    Wm, pm, zm = mp_oracle.train(*prob.arrays(), lr=lr, steps=steps, trainable=trainable, budget_gap=gap + 50.0)
    _assert_close("p", res.p, mp_oracle.to_float(pm), prob, rtol)
    if trainable == "Wp":
        _assert_close("W", res.W, mp_oracle.to_float(Wm, (3, 3)), prob, rtol)
    else:                                   # W is not trained: not stored, and the oracle kept it fixed
        assert res.W is None and np.array_equal(mp_oracle.to_float(Wm, (3, 3)), prob.W)
    _assert_close("log attention", _log_softmax(res.scores[-1]), mp_oracle.log_softmax(zm, 2, 3), prob, rtol)
    # the test is sensitive: p really moved, by far more than the tolerance
    moved = max(np.linalg.norm(mp_oracle.to_float(pm) - prob.p) / np.linalg.norm(prob.p),
                np.linalg.norm(mp_oracle.to_float(Wm, (3, 3)) - prob.W) / np.linalg.norm(prob.W))
    assert moved > 1e3 * rtol


@pytest.mark.parametrize("trainable", ["p", "Wp"])   # the sets mp_oracle.gradients differentiates
@pytest.mark.parametrize("gap", [3.0, 40.0, 300.0])
def test_train_follows_mp_gd_for_100_steps(gap, trainable):
    _check_trajectory(seed=11, gap=gap, steps=100, trainable=trainable, rtol=1e-10)


# Trajectories stop short of gap 700: there the gradient (~e^-700 |v| |x|) underflows and GD
# does not move. W and p trained together from gap 300 widen the gap past 10^4 within the
# 1000 steps, beyond any affordable precision of the oracle, so that set stops at 100.
TRAJECTORY_CASES = [(g, "p") for g in (3.0, 20.0, 40.0, 100.0, 300.0)] + [(g, "Wp") for g in (3.0, 20.0, 40.0, 100.0)]


@pytest.mark.slow
@pytest.mark.parametrize("gap, trainable", TRAJECTORY_CASES)
def test_train_follows_mp_gd_for_1000_steps(gap, trainable):
    _check_trajectory(seed=11, gap=gap, steps=1000, trainable=trainable, rtol=1e-9)
