"""The data generator against the paper's data model (DESIGN.md §5, REFERENCE.md)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnsim import Config, init_params, make_data
from attnsim._data import ROLE_IRRELEVANT, ROLE_RELEVANT, ROLE_WEAK, ROLE_WEAK_OPPOSITE


def test_official_noisy_set_for_the_paper_setting():
    data = make_data(Config(d=30, n_test=4))
    assert np.flatnonzero(data.noisy).tolist() == [0, 1, 10, 11]
    np.testing.assert_array_equal(data.y_true, np.r_[np.ones(10), -np.ones(10)])
    np.testing.assert_array_equal(data.y, np.where(data.noisy, -data.y_true, data.y_true))


# (n, eta) -> labels flipped in each class, worked out by hand from REFERENCE.md
# ("k = ceil(n eta) flips, floor(k / 2) from each class"): k = 4, 5, 3, 0, 3, 15, 2, 3.
# (30, 0.1): n eta = 3 exactly; (40, 0.049): 1.96 rounds up to 2.
HAND_CHECKED_FLIPS = [((20, 0.2), 2), ((20, 0.25), 2), ((21, 0.1), 1), ((10, 0.0), 0), ((7, 0.3), 1),
                      ((100, 0.15), 7), ((40, 0.049), 1), ((30, 0.1), 1)]


@pytest.mark.parametrize("n_eta, per_class", HAND_CHECKED_FLIPS)
def test_official_label_noise_counts_per_class(n_eta, per_class):
    n, eta = n_eta
    data = make_data(Config(n_train=n, eta=eta, d=3, n_test=0))
    pos = data.y_true > 0
    assert pos.sum() == n // 2
    assert data.noisy[pos].sum() == per_class and data.noisy[~pos].sum() == per_class
    np.testing.assert_array_equal(data.y != data.y_true, data.noisy)


@given(n=st.integers(4, 60), eta=st.floats(0, 0.3))
def test_official_label_noise_is_balanced_contiguous_and_monotone(n, eta):
    """Both classes lose the same number of labels, at the start of each class, and a larger
    eta never flips fewer (no formula: properties of the official layout)."""
    data = make_data(Config(n_train=n, eta=eta, d=3, n_test=0))
    more = make_data(Config(n_train=n, eta=min(eta + 0.05, 0.3), d=3, n_test=0))
    first_neg = n // 2
    k_pos, k_neg = data.noisy[:first_neg].sum(), data.noisy[first_neg:].sum()
    assert k_pos == k_neg
    assert data.noisy[:k_pos].all() and data.noisy[first_neg:first_neg + k_neg].all()
    assert more.noisy.sum() >= data.noisy.sum()


def test_random_label_noise_flips_about_eta(rng):
    data = make_data(Config(n_train=4000, eta=0.3, d=3, n_test=0, label_noise="random", T=4))
    assert abs(data.noisy.mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)


def test_token_roles_carry_their_signals():
    cfg = Config(n_train=6, n_test=4, d=40, sigma_eps=0.0, rho=0.25, signal_norm=3.0,
                 n_relevant=2, n_weak=1, n_weak_opposite=2, T=7)
    data = make_data(cfg)
    assert data.roles.tolist() == [ROLE_RELEVANT] * 2 + [ROLE_WEAK] + [ROLE_WEAK_OPPOSITE] * 2 + [ROLE_IRRELEVANT] * 2
    assert data.relevant.tolist() == [True, True, False, False, False, False, False]
    for X, y in ((data.X, data.y_true), (data.X_test, data.y_test)):
        for i, yi in enumerate(y):
            same, other = (data.mu_pos, data.mu_neg) if yi > 0 else (data.mu_neg, data.mu_pos)
            np.testing.assert_allclose(X[i, 0], same)
            np.testing.assert_allclose(X[i, 2], 0.25 * same)
            np.testing.assert_allclose(X[i, 3], 0.25 * other)
            np.testing.assert_allclose(X[i, 5], 0.0)


def test_signals_are_orthogonal_and_head_is_official():
    data = make_data(Config(d=10, n_test=0, signal_norm=20.0))
    assert data.mu_pos @ data.mu_neg == 0.0
    assert np.linalg.norm(data.mu_pos) == pytest.approx(20.0) == np.linalg.norm(data.mu_neg)
    assert np.linalg.norm(data.nu) == pytest.approx(1 / 20.0)
    assert data.nu @ data.mu_pos == pytest.approx(1 / math.sqrt(2))
    assert data.nu @ data.mu_neg == pytest.approx(-1 / math.sqrt(2))


def test_noise_is_isotropic_with_sigma():
    data = make_data(Config(d=400, n_test=0, sigma_eps=1.7, n_train=40))
    noise = data.X[:, 5:, :]  # irrelevant tokens are pure noise
    assert noise.std() == pytest.approx(1.7, rel=0.01)
    assert abs(noise.mean()) < 0.01


def test_orthogonal_noise_has_no_component_along_the_signals():
    data = make_data(Config(d=50, n_test=10, noise="orthogonal", n_train=8))
    irrelevant = data.X[:, 5:, :]
    assert np.max(np.abs(irrelevant[..., :2])) < 1e-14
    # Relevant tokens are then exactly mu_{y*} on the signal coordinates.
    np.testing.assert_allclose(data.X[:4, 0, :2], np.tile([20.0, 0.0], (4, 1)), atol=1e-13)


def test_test_set_is_independent_of_training_set():
    """Regression for the official code's defect: its test set reused the training seed."""
    cfg = Config(d=30, n_test=20)
    data = make_data(cfg)
    # No test token shares its noise with a training token.
    diff = data.X[:, None, :, 5:] - data.X_test[None, :20, :, 5:]
    assert np.min(np.abs(diff)) > 0
    # Changing the test set size changes neither the training set nor the test noise draws
    # (the labels of the test set are re-balanced, so compare the pure-noise tokens).
    other = make_data(cfg.replace(n_test=50))
    np.testing.assert_array_equal(other.X, data.X)
    np.testing.assert_array_equal(other.X_test[:20, 5:], data.X_test[:, 5:])


def test_determinism_per_seed_and_independent_streams():
    cfg = Config(d=20, n_test=5)
    a, b = make_data(cfg), make_data(cfg)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.X_test, b.X_test)
    c = make_data(cfg.replace(seed=1))
    assert not np.array_equal(a.X, c.X)
    W0a, _ = init_params(cfg)
    W0b, _ = init_params(cfg.replace(init_seed=123))
    W0c, _ = init_params(cfg.replace(init_seed=123, seed=5))
    assert not np.array_equal(W0a, W0b)
    np.testing.assert_array_equal(W0b, W0c)


def test_official_and_gaussian_initialisations():
    d = 300
    W0, p0 = init_params(Config(d=d, n_test=0))
    assert np.all(p0 == 0)
    assert np.abs(W0).max() <= 1 / math.sqrt(d)
    assert W0.std() == pytest.approx(1 / math.sqrt(3 * d), rel=0.01)
    W0, p0 = init_params(Config(d=d, n_test=0, init="gaussian", sigma_w=0.3, sigma_p=2.0))
    assert W0.std() == pytest.approx(0.3, rel=0.01)
    assert p0.std() == pytest.approx(2.0, rel=0.1)
