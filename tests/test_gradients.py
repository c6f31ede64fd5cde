"""Closed-form loss and gradients (DESIGN.md §2) against autodiff and finite differences."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from hypothesis import given
from hypothesis import strategies as st

from attnsim._kernels import gd as _kernels
from attnsim._kernels import gd_twins as _reference
from attnsim import loss_and_grads, loss_and_grads_head

IMPLEMENTATIONS = {"numba": _kernels.loss_and_grads, "numpy": _reference.loss_and_grads}
HEAD_IMPLEMENTATIONS = {"numba": _kernels.loss_and_grads_head, "numpy": _reference.loss_and_grads_head}


def autograd_loss(W, p, X, y, nu):
    """The model written as plainly as possible, for autograd to differentiate."""
    z = anp.einsum("itk,k->it", X, anp.dot(W.T, p))
    z = z - anp.max(z, axis=1, keepdims=True)
    e = anp.exp(z)
    s = e / anp.sum(e, axis=1, keepdims=True)
    f = anp.sum(s * anp.einsum("itk,k->it", X, nu), axis=1)
    u = y * f
    return anp.mean(anp.logaddexp(0.0, -u))


@st.composite
def problems(draw, scales=(0.0, 0.1, 1.0, 5.0)):
    """Random shapes (n 1-30, T 2-12, d 2-64) and parameters at one of ``scales``.

    The largest scale here (5) keeps the top-score gaps where float64 autograd is itself
    accurate; deeper saturation is checked against the 50-digit oracle (``test_oracle.py``).
    """
    n = draw(st.integers(1, 30))
    T = draw(st.integers(2, 12))
    d = draw(st.integers(2, 64))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from(scales))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    y = rng.choice([-1.0, 1.0], size=n)
    W = rng.standard_normal((d, d)) * scale / np.sqrt(d)
    p = rng.standard_normal(d) * scale / np.sqrt(d)
    nu = rng.standard_normal(d)
    return X, y, W, p, nu, scale


def _relerr(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("impl", sorted(IMPLEMENTATIONS))
@given(problems())
def test_closed_form_matches_autograd(impl, problem):
    X, y, W, p, nu, scale = problem
    loss, grad_W, grad_p = IMPLEMENTATIONS[impl](X, y, W, p, nu)
    ref_loss = autograd_loss(W, p, X, y, nu)
    ref_W = grad(autograd_loss, 0)(W, p, X, y, nu)
    ref_p = grad(autograd_loss, 1)(W, p, X, y, nu)
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-15)
    # Norm-wise relative errors, no absolute floor: at these gaps autograd keeps ~12 digits.
    for name, got, ref in (("grad_p", grad_p, ref_p), ("grad_W", grad_W, ref_W)):
        assert np.linalg.norm(got - ref) <= 1e-9 * np.linalg.norm(ref), f"{name}, scale={scale}"


@given(problems(scales=(0.0, 0.1, 1.0, 2.0)))
def test_closed_form_matches_central_differences(problem):
    """Central differences of the loss along random directions (scales where the loss still
    varies on the scale of the step h; beyond, the gradient is below the loss's rounding)."""
    X, y, W, p, nu, scale = problem
    _, grad_W, grad_p = loss_and_grads(X, y, W, p, nu)
    rng = np.random.default_rng(0)
    h = 1e-5
    for _ in range(3):
        dW = rng.standard_normal(W.shape)
        dp = rng.standard_normal(p.shape)
        f_plus = _reference.loss_and_grads(X, y, W + h * dW, p + h * dp, nu)[0]
        f_minus = _reference.loss_and_grads(X, y, W - h * dW, p - h * dp, nu)[0]
        numeric = (f_plus - f_minus) / (2 * h)
        analytic = np.sum(grad_W * dW) + grad_p @ dp
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_grad_W_is_rank_one_outer_product_of_p(rng):
    X = rng.standard_normal((5, 4, 6))
    y = np.array([1.0, -1.0, 1.0, -1.0, 1.0])
    W = rng.standard_normal((6, 6))
    p = rng.standard_normal(6)
    _, grad_W, grad_p = loss_and_grads(X, y, W, p, rng.standard_normal(6))
    assert np.linalg.matrix_rank(grad_W, tol=1e-12 * np.abs(grad_W).max()) == 1
    # grad_W = p g^T and grad_p = W g for the same g.
    g = grad_W.T @ p / (p @ p)
    np.testing.assert_allclose(grad_p, W @ g, rtol=1e-10)


def test_gradients_are_zero_when_every_token_has_the_same_value(rng):
    """If nu^T x_t is equal across tokens, attention cannot change f: c = 0 exactly."""
    n, T, d = 3, 5, 4
    nu = np.array([1.0, 0.0, 0.0, 0.0])
    X = rng.standard_normal((n, T, d))
    X[:, :, 0] = 0.7
    _, grad_W, grad_p = loss_and_grads(X, np.ones(n), rng.standard_normal((d, d)), rng.standard_normal(d), nu)
    # f = sum_t s_t v equals v up to rounding, so c is rounding-sized.
    assert np.max(np.abs(grad_W)) < 1e-15 and np.max(np.abs(grad_p)) < 1e-15


# ------------------------------------------------------------------ the head (DESIGN.md §8)


@pytest.mark.parametrize("impl", sorted(HEAD_IMPLEMENTATIONS))
@given(problems())
def test_head_closed_form_matches_autograd(impl, problem):
    """``(loss, grad_W, grad_p, grad_nu)`` against autograd's derivatives of the plain model."""
    X, y, W, p, nu, scale = problem
    loss, grad_W, grad_p, grad_nu = HEAD_IMPLEMENTATIONS[impl](X, y, W, p, nu)
    assert loss == pytest.approx(autograd_loss(W, p, X, y, nu), rel=1e-12, abs=1e-15)
    refs = {"grad_W": grad(autograd_loss, 0)(W, p, X, y, nu), "grad_p": grad(autograd_loss, 1)(W, p, X, y, nu),
            "grad_nu": grad(autograd_loss, 4)(W, p, X, y, nu)}
    for name, got in (("grad_W", grad_W), ("grad_p", grad_p), ("grad_nu", grad_nu)):
        ref = refs[name]
        assert np.linalg.norm(got - ref) <= 1e-9 * np.linalg.norm(ref), f"{name}, scale={scale}"


@given(problems(scales=(0.0, 0.1, 1.0, 2.0)))
def test_head_closed_form_matches_central_differences(problem):
    """The directional derivative along (dW, dp, dnu) jointly, by central differences."""
    X, y, W, p, nu, scale = problem
    _, grad_W, grad_p, grad_nu = loss_and_grads_head(X, y, W, p, nu)
    rng = np.random.default_rng(1)
    h = 1e-5
    for _ in range(3):
        dW, dp, dnu = rng.standard_normal(W.shape), rng.standard_normal(p.shape), rng.standard_normal(nu.shape)
        f_plus = _reference.loss_and_grads(X, y, W + h * dW, p + h * dp, nu + h * dnu)[0]
        f_minus = _reference.loss_and_grads(X, y, W - h * dW, p - h * dp, nu - h * dnu)[0]
        numeric = (f_plus - f_minus) / (2 * h)
        analytic = np.sum(grad_W * dW) + grad_p @ dp + grad_nu @ dnu
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-9)


def test_head_gradient_keeps_loss_and_grads_compatible(rng):
    """``loss_and_grads`` keeps its three outputs; ``loss_and_grads_head`` adds grad_nu to the same ones."""
    X, y = rng.standard_normal((4, 3, 5)), np.array([1.0, -1.0, 1.0, -1.0])
    W, p, nu = rng.standard_normal((5, 5)), rng.standard_normal(5), rng.standard_normal(5)
    three = loss_and_grads(X, y, W, p, nu)
    four = loss_and_grads_head(X, y, W, p, nu)
    assert len(three) == 3 and len(four) == 4
    assert three[0] == four[0]
    np.testing.assert_array_equal(three[1], four[1])
    np.testing.assert_array_equal(three[2], four[2])
