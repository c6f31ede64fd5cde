"""Diagnostics of ``attnsim._analysis`` against hand-computed cases and invariants."""

import math

import numpy as np
import pytest

import attnsim
from attnsim import _analysis as an
from attnsim import Result


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _fake(scores, *, margins=None, noisy=None, y=None, y_true=None, roles=None, frak_cum=None,
          train_acc=None, test_acc=None, steps=None):
    """A Result whose recorded arrays are set by hand (only what the diagnostics read)."""
    scores = np.asarray(scores, dtype=float)
    S, n, T = scores.shape
    roles = np.array([0, 1, 2] + [3] * (T - 3), dtype=np.int8) if roles is None else np.asarray(roles, np.int8)
    att = _softmax(scores)
    nan_s = np.full(S, np.nan)
    noisy = np.zeros(n, bool) if noisy is None else np.asarray(noisy, bool)
    y = np.ones(n) if y is None else np.asarray(y, float)
    y_true = y.copy() if y_true is None else np.asarray(y_true, float)
    mass = att[..., roles == 0].sum(-1)
    return Result(
        steps=np.arange(S, dtype=np.int64) * 10 if steps is None else np.asarray(steps, np.int64),
        train_loss=nan_s, train_acc=nan_s if train_acc is None else np.asarray(train_acc, float),
        train_acc_clean=nan_s, train_acc_noisy=nan_s, test_loss=nan_s,
        test_acc=nan_s if test_acc is None else np.asarray(test_acc, float),
        margins=np.zeros((S, n)) if margins is None else np.asarray(margins, float),
        scores=scores, attention=att, relevant_mass=mass, frak_s=mass * (1 - mass),
        frak_cum=np.zeros((S, n)) if frak_cum is None else np.asarray(frak_cum, float),
        p_norm=nan_s, w_dist=nan_s, query_norm=nan_s, p_probe=np.zeros((S, 0)), query_probe=np.zeros((S, 0)),
        p=np.zeros(2), W=np.zeros((2, 2)), y=y, y_true=y_true, noisy=noisy, relevant=roles == 0, roles=roles,
    )


def test_role_mass_sums_each_role_of_a_hand_made_attention():
    # s = (1, 2, 3, 4, 6) / 16 on roles R, W, W-, I, I
    res = _fake(np.log([[[1.0, 2.0, 3.0, 4.0, 6.0]]]))
    np.testing.assert_allclose(an.role_mass(res)[0, 0], [1 / 16, 2 / 16, 3 / 16, 10 / 16], rtol=1e-12)


def test_role_mass_of_a_missing_role_is_zero_and_rows_sum_to_one():
    res = _fake(np.log([[[1.0, 3.0], [2.0, 2.0]]]), roles=[0, 3])
    rm = an.role_mass(res)
    np.testing.assert_allclose(rm[0, 0], [0.25, 0.0, 0.0, 0.75])
    np.testing.assert_allclose(rm.sum(-1), 1.0)


def test_argmax_token_and_fitted_masks():
    scores = np.array([[[0.0, 2.0, 1.0], [5.0, 0.0, 0.0]], [[3.0, 2.0, 1.0], [0.0, 0.0, 7.0]]])
    margins = np.array([[0.1, -0.2], [0.3, 0.4]])
    res = _fake(scores, margins=margins, noisy=[False, True])
    assert an.argmax_token(res).tolist() == [[1, 0], [0, 2]]
    assert an.fitted(res).tolist() == [[True, False], [True, True]]
    assert an.noisy_fitted(res).tolist() == [[False], [True]]


def test_frak_sums_groups_by_true_class_and_noise():
    # samples: 0 clean +, 1 clean +, 2 clean -, 3 noisy (true +, observed -), 4 noisy (true -)
    cum = np.array([[0.0, 0, 0, 0, 0], [1.0, 3.0, 2.0, 0.5, 1.5]])
    res = _fake(np.zeros((2, 5, 3)), frak_cum=cum, noisy=[0, 0, 0, 1, 1],
                y=[1, 1, -1, -1, 1], y_true=[1, 1, -1, 1, -1])
    fs = an.frak_sums(res)
    assert (fs.n_clean_pos, fs.n_clean_neg, fs.n_noisy) == (2, 1, 2)
    np.testing.assert_allclose(fs.clean_pos, [0, 4.0])
    np.testing.assert_allclose(fs.clean_neg, [0, 2.0])
    np.testing.assert_allclose(fs.noisy, [0, 2.0])
    assert np.isnan(fs.clean_noisy_ratio[0])            # 0 / 0
    assert fs.clean_noisy_ratio[1] == pytest.approx(3.0)  # 6 / 2
    assert fs.clean_noisy_ratio_per_sample[1] == pytest.approx((6 / 3) / (2 / 2))
    assert fs.class_balance[1] == pytest.approx((4 / 2) / (2 / 1))


def test_frak_sums_of_a_real_run_start_at_uniform_attention():
    # p0 = 0: every token has s = 1/T, so after one step frak_cum = (1/T)(1 - 1/T) for each sample.
    cfg = attnsim.Config(d=40, n_test=0, steps=5, eta=0.2)
    res = attnsim.simulate(cfg, save_at=[1])
    fs = an.frak_sums(res)
    one = (1 / 8) * (7 / 8)
    np.testing.assert_allclose(fs.clean_pos[1], 8 * one, rtol=1e-12)   # 10 positive, 2 flipped
    np.testing.assert_allclose(fs.noisy[1], 4 * one, rtol=1e-12)
    assert fs.clean_noisy_ratio[1] == pytest.approx(4.0)


def test_gaps_are_anchor_minus_each_score():
    # sample 0 clean: anchor R (position 0); sample 1 noisy: anchor W_{-Y*} (position 2)
    scores = np.array([[[3.0, 1.0, 0.0, -1.0], [0.0, 1.0, 4.0, 2.5]]])
    res = _fake(scores, noisy=[False, True], y=[1, 1], y_true=[1, -1])
    g = an.gaps(res)
    np.testing.assert_allclose(g[0, 0], [np.nan, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(g[0, 1], [4.0, 3.0, np.nan, 1.5])
    np.testing.assert_allclose(an.min_gap(res), [[2.0, 1.5]])


def test_anchor_of_a_noisy_sample_follows_the_token_values_when_given():
    res = _fake(np.zeros((1, 2, 4)), noisy=[False, True], y=[1, -1], y_true=[1, 1])
    values = np.array([[0.7, 0.07, -0.07, 0.0], [0.7, 0.07, -0.07, -0.3]])
    # noisy sample has y = -1: y * v = (-0.7, -0.07, 0.07, 0.3), argmax is position 3, not W_{-Y*}
    assert an.anchor_tokens(res, values).tolist() == [0, 3]
    assert an.anchor_tokens(res).tolist() == [0, 2]
    with pytest.raises(attnsim.ConfigError, match=r"values must have shape \(n, T\)"):
        an.anchor_tokens(res, values[:, :3])


def test_growth_function_closed_forms():
    T = 8
    assert an.growth(math.log(T), T) == pytest.approx(2 * math.log(T))
    assert an.growth(0.0, T) == pytest.approx(2 * math.sinh(-math.log(T)))
    assert an.growth(0.0, T) == pytest.approx(1 / T - T)   # 2 sinh(-log T) = 1/T - T


@pytest.mark.parametrize("x", [-3.0, 0.0, 1.5, 6.0, 12.0])
def test_growth_derivative_is_inverse_softmax_curvature(x):
    # one token leading T others by x: s = e^x / (e^x + T), and 1 / (s (1 - s)) = g'(x)
    T = 8
    s = math.exp(x) / (math.exp(x) + T)
    h = 1e-5
    dg = (an.growth(x + h, T) - an.growth(x - h, T)) / (2 * h)
    assert dg == pytest.approx(1 / (s * (1 - s)), rel=1e-7)


def test_first_passage_resolution_and_never():
    steps = [0, 1, 10, 100]
    assert an.first_passage(steps, [0.1, 0.5, 1.0, 1.0], 1.0) == 10
    assert an.first_passage(steps, [np.nan, 0.5, 0.7, 0.8], 0.9) == an.NEVER
    assert an.first_passage(steps, [np.nan, 0.9, 0.3, 0.1], 0.3, above=False) == 10


def test_noisy_fit_times_first_fit_even_if_later_lost():
    margins = np.array([[-1, -1, -1], [-1, 1, -1], [1, -1, -1], [1, 1, -1.0]])
    res = _fake(np.zeros((4, 3, 3)), margins=margins, noisy=[True, True, True], steps=[0, 5, 50, 500])
    assert an.noisy_fit_times(res).tolist() == [50, 5, an.NEVER]


def test_time_to_fit_all_and_test_levels():
    res = _fake(np.zeros((3, 2, 3)), train_acc=[0.5, 1.0, 1.0], test_acc=[0.8, 0.9, 0.99], steps=[0, 7, 70])
    res.test_loss = np.array([0.7, 0.6, 0.45])
    assert an.time_to_fit_all(res) == 7
    assert an.time_to_test_acc(res, 0.95) == 70
    assert an.time_to_test_loss(res, 0.6) == 7
    assert an.time_to_test_loss(res, 0.1) == an.NEVER


@pytest.mark.parametrize("train_acc, test_acc, expected", [
    (0.8, 1.0, "not overfitting"),
    (1.0, 0.996, "benign overfitting"),
    (1.0, 0.867, "harmful overfitting"),
    (1.0, 0.95, "benign overfitting"),     # threshold is inclusive
])
def test_classify_regime_thresholds(train_acc, test_acc, expected):
    res = _fake(np.zeros((1, 2, 3)), train_acc=[train_acc], test_acc=[test_acc])
    res.train_acc_noisy = np.array([np.nan])
    regime = an.classify_regime(res)
    assert regime.name == expected and str(regime) == expected
    assert regime.test_acc == test_acc


def test_classify_regime_without_test_set_uses_clean_relevant_mass():
    selected = _fake(np.array([[[9.0, 0, 0], [9.0, 0, 0]]]), train_acc=[1.0])
    uniform = _fake(np.zeros((1, 2, 3)), train_acc=[1.0])
    assert an.classify_regime(selected).name == "benign overfitting"
    assert an.classify_regime(uniform).name == "harmful overfitting"


def test_token_noise_removes_exactly_the_role_signal():
    cfg = attnsim.Config(d=30, n_train=4, n_test=0, eta=0.5, rho=0.3, noise="orthogonal")
    data = attnsim.make_data(cfg)
    eps = an.token_noise(data, cfg.rho)
    # orthogonal noise has no component on mu_+ / mu_- (e_1, e_2)
    np.testing.assert_allclose(eps[..., :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(eps[..., 2:], data.X[..., 2:])


def test_decompose_query_matches_a_direct_projection_of_the_final_query():
    cfg = attnsim.Config(d=120, n_train=6, T=4, n_test=0, eta=0.34, steps=200, lr=0.05)
    res = attnsim.simulate(cfg, probes="noise", engine="primal")
    dec = an.decompose_query(res)
    data = attnsim.make_data(cfg)
    basis = an.noise_probes(cfg, data)                   # (2 + nT, d)
    q = res.W.T @ res.p
    coef = np.linalg.lstsq(basis.T, q, rcond=None)[0]     # q ~ basis^T coef
    norms2 = np.sum(basis ** 2, axis=1)
    np.testing.assert_allclose(dec.signal[-1], coef[:2] * norms2[:2], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(dec.noise[-1].ravel(), coef[2:] * norms2[2:], rtol=1e-6, atol=1e-10)
    assert dec.signal_norm[-1] == pytest.approx(np.linalg.norm(basis[:2].T @ coef[:2]), rel=1e-6)
    assert dec.noise_norm[-1] == pytest.approx(np.linalg.norm(basis[2:].T @ coef[2:]), rel=1e-6)
    # p0 = 0: the query starts at zero
    np.testing.assert_allclose(dec.signal[0], 0.0)
    assert dec.noise_norm[0] == 0.0


def test_decompose_query_refuses_runs_without_noise_probes():
    res = attnsim.simulate(attnsim.Config(d=20, n_test=0, steps=2))
    with pytest.raises(attnsim.ConfigError, match="probes='noise'"):
        an.decompose_query(res)


def test_simulate_rejects_an_unknown_probe_name():
    with pytest.raises(attnsim.ConfigError, match="probes must be None, 'noise'"):
        attnsim.simulate(attnsim.Config(d=20, n_test=0, steps=2), probes="signal")


def test_token_values_of_a_trained_head():
    from attnsim import Config, make_data, simulate, token_values

    cfg = Config(d=20, n_train=6, T=4, n_test=0, steps=40, trainable="p+nu")
    data, res = make_data(cfg), simulate(cfg)
    np.testing.assert_array_equal(token_values(data), data.X @ data.nu)
    np.testing.assert_allclose(token_values(data, res.nu), np.einsum("itk,k->it", data.X, res.nu), rtol=1e-12)
    assert not np.allclose(token_values(data, res.nu), token_values(data))
