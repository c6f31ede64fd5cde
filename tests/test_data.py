"""The data generator against the paper's data model (DESIGN.md §5, REFERENCE.md)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attnsim
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


# ------------------------------------------------- the neighbouring models' data and initialisation


def test_identity_w0_is_not_materialised_and_trains_as_the_identity():
    cfg = Config(d=12, n_train=4, T=3, n_test=5, steps=60, w0="identity", trainable="p+nu")
    W0, p0 = attnsim.init_params(cfg)
    assert W0 is None and np.array_equal(p0, np.zeros(12))
    data = attnsim.make_data(cfg)
    for engine in ("primal", "dual"):
        res = attnsim.simulate(cfg, engine=engine)
        ref = attnsim.train(data.X, data.y, np.eye(12), p0, data.nu, lr=cfg.lr, steps=cfg.steps, trainable="p+nu",
                            X_test=data.X_test, y_test=data.y_test, engine=engine,
                            probes=np.stack([data.mu_pos, data.mu_neg]), save_at=res.steps)
        np.testing.assert_allclose(res.margins, ref.margins, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(res.nu, ref.nu, rtol=1e-12, atol=1e-15)
    with_w = attnsim.simulate(cfg.replace(trainable="Wp"), engine="dual")
    assert with_w.W.shape == (12, 12)          # built once W is trained


@pytest.mark.parametrize("head_init", ["zero", "gaussian", "official"])
def test_head_initialisations(head_init):
    cfg = Config(d=40, n_train=4, n_test=0, head_init=head_init, sigma_nu=0.3, seed=3)
    nu = attnsim.make_data(cfg).nu
    if head_init == "zero":
        np.testing.assert_array_equal(nu, 0.0)
    elif head_init == "gaussian":
        assert nu.std() == pytest.approx(0.3, rel=0.35) and abs(nu.mean()) < 0.2
        # the head has its own stream: the tokens do not change with it
        np.testing.assert_array_equal(attnsim.make_data(cfg).X, attnsim.make_data(cfg.replace(head_init="zero")).X)
    else:
        assert np.linalg.norm(nu) == pytest.approx(1 / 20) and nu[0] == -nu[1] > 0


def test_noiseless_signal_token_keeps_the_other_tokens_noise():
    cfg = Config(d=30, n_train=6, n_test=4, T=4, signal_noise="noiseless")
    data, noisy = attnsim.make_data(cfg), attnsim.make_data(cfg.replace(signal_noise="noisy"))
    mu = np.where(data.y_true[:, None] > 0, data.mu_pos, data.mu_neg)
    np.testing.assert_array_equal(data.X[:, 0, :], mu)
    np.testing.assert_array_equal(data.X[:, 1:, :], noisy.X[:, 1:, :])
    assert np.std(noisy.X[:, 0, :] - mu) > 0.5


def test_rademacher_labels_are_iid_signs():
    cfg = Config(d=10, n_train=400, n_test=300, labels="rademacher", label_noise="random", eta=0.0)
    data = attnsim.make_data(cfg)
    for y in (data.y_true, data.y_test):
        assert set(np.unique(y)) == {-1.0, 1.0} and abs(np.mean(y)) < 0.15
    assert not np.array_equal(data.y_true[:200], np.ones(200))     # not the balanced layout
    assert not np.any(data.noisy)


def test_magen_preset_is_the_reproduction_setting():
    cfg = attnsim.preset("magen")
    assert (cfg.T, cfg.n_relevant, cfg.n_weak, cfg.n_weak_opposite) == (2, 1, 0, 0)
    assert (cfg.n_train, cfg.n_test, cfg.d, cfg.signal_norm, cfg.eta, cfg.lr, cfg.steps) == \
        (100, 100, 11000, 5.0, 0.1, 0.025, 150)
    assert (cfg.noise, cfg.signal_noise, cfg.label_noise, cfg.labels) == \
        ("orthogonal", "noiseless", "random", "rademacher")
    assert (cfg.w0, cfg.trainable, cfg.head_init) == ("identity", "p+nu", "zero")
    W0, p0 = attnsim.init_params(cfg)
    assert W0 is None and not np.any(p0)


def test_magen_model_first_step_moves_only_the_head():
    """From p = 0 and nu = 0 every value v = x^T nu is 0, so c = dL/dz = 0 and only nu moves at the
    first step, by lr * (1/n) sum_i y_i / 2 * (x_i1 + x_i2) (s = 1/2, -ell'(0) = 1/2)."""
    cfg = attnsim.preset("magen", d=60, n_train=10, n_test=0, steps=1)
    data = attnsim.make_data(cfg)
    res = attnsim.simulate(cfg, save_at=[0, 1])
    assert res.p_norm[1] == 0.0
    expected = cfg.lr * np.mean(data.y[:, None] * 0.5 * 0.5 * data.X.sum(axis=1), axis=0)
    np.testing.assert_allclose(res.nu, expected, rtol=1e-12, atol=1e-16)
