"""Population test metrics (DESIGN.md §10) against independent oracles.

Oracles: finite test sets drawn by ``make_data`` (so the role, signal and noise conventions of
the data model are checked too, Magen et al.'s noiseless signal token included), plain Monte
Carlo on the 2T Gaussians, closed forms (T = 1, q = 0, saturated softmax, sigma = 0, one
deterministic token beside a Gaussian one) with ``scipy.integrate.quad``, and the quadrature
kernel's slow NumPy twin.
"""

import numpy as np
import pytest
from scipy import integrate
from scipy.special import softmax
from scipy.stats import norm

import attnsim
from attnsim import Config, ConfigError, make_data, population_metrics, population_metrics_from_params, \
    population_moments
from attnsim._data import token_roles
from attnsim._kernels import population as kernel
from attnsim._kernels import population_twins as twin
from attnsim._population import DEFAULT_SE_TARGET, MIN_DRAWS_PER_REPLICATE, standard_normal_draws

N_SE = 3.0


# --------------------------------------------------------------------------- oracles

def empirical_metrics(X, y, q, nu):
    """Loss and accuracy of a finite test set, per class (y* = +1, -1), with standard errors."""
    z = X @ q
    v = X @ nu
    u = y * np.sum(softmax(z, axis=1) * v, axis=1)
    loss = np.logaddexp(0.0, -u)
    out = {}
    for c, cls in enumerate((1.0, -1.0)):
        sel = y == cls
        n = sel.sum()
        a = np.mean(u[sel] > 0)
        out[c] = (loss[sel].mean(), loss[sel].std(ddof=1) / np.sqrt(n), a, np.sqrt(a * (1 - a) / n))
    return out


def assert_matches_finite_set(pop, emp, label):
    """Each class and the balanced average agree within N_SE combined standard errors."""
    for c in (0, 1):
        l_e, l_se, a_e, a_se = emp[c]
        for what, p, p_se, e, e_se in (("loss", pop.class_loss[c], pop.class_loss_se[c], l_e, l_se),
                                       ("acc", pop.class_acc[c], pop.class_acc_se[c], a_e, a_se)):
            se = np.hypot(p_se, e_se)
            assert abs(p - e) <= N_SE * se, f"{label}: class {c} {what}: population {p} vs finite set {e} (se {se})"
    for what, p, p_se, k in (("loss", pop.loss, pop.loss_se, 0), ("acc", pop.acc, pop.acc_se, 2)):
        e = 0.5 * (emp[0][k] + emp[1][k])
        e_se = 0.5 * np.hypot(emp[0][k + 1], emp[1][k + 1])
        se = np.hypot(p_se, e_se)
        assert abs(p - e) <= N_SE * se, f"{label}: {what}: population {p} vs finite set {e} (se {se})"


def monte_carlo(mean_z, mean_v, cov, n, rng):
    """Plain Monte Carlo over the 2T Gaussians, per class: (loss, loss_se, acc, acc_se)."""
    T = mean_z.shape[1]
    out = {}
    for c, cls in enumerate((1.0, -1.0)):
        zv = rng.multivariate_normal(np.zeros(2), cov, size=(n, T), method="eigh")
        z = zv[..., 0] + mean_z[c]
        v = zv[..., 1] + mean_v[c]
        u = cls * np.sum(softmax(z, axis=1) * v, axis=1)
        loss = np.logaddexp(0.0, -u)
        a = np.mean(u > 0)
        out[c] = (loss.mean(), loss.std(ddof=1) / np.sqrt(n), a, np.sqrt(a * (1 - a) / n))
    return out


def gaussian_loss(m, s):
    """E log(1 + exp(-(m + s X))), X ~ N(0, 1), by adaptive quadrature."""
    if s == 0:
        return float(np.logaddexp(0.0, -m))
    val, _ = integrate.quad(lambda x: np.logaddexp(0.0, -(m + s * x)) * norm.pdf(x), -40, 40, epsabs=1e-13,
                            limit=200)
    return val


def random_params(rng, d, scale=1.5):
    """A query with sizeable signal and noise components, and a head with both too."""
    q = rng.standard_normal(d) * scale / np.sqrt(d)
    q[:2] += rng.normal(0.0, scale, size=2)
    nu = rng.standard_normal(d) * 0.5 / np.sqrt(d)
    nu[:2] += np.array([0.6, -0.6]) + rng.normal(0.0, 0.2, size=2)
    return q, nu


CASES = {  # data models exercising every role, rho away from 0 and both noise modes
    "iso": dict(noise="isotropic"),
    "orth": dict(noise="orthogonal"),
    "iso-roles": dict(noise="isotropic", T=7, n_relevant=2, n_weak=1, n_weak_opposite=2),
    "orth-roles": dict(noise="orthogonal", T=7, n_relevant=1, n_weak=2, n_weak_opposite=2, sigma_eps=0.7),
    # Magen et al.'s data model: the relevant token is exactly mu_{y*}, the others orthogonal noise
    "noiseless": dict(noise="orthogonal", signal_noise="noiseless", T=3, n_relevant=1, n_weak=1, n_weak_opposite=0),
    "noiseless-iso": dict(noise="isotropic", signal_noise="noiseless", T=5, n_relevant=2, n_weak=1,
                          n_weak_opposite=1),
}


def moments_of(cfg, data, q, nu):
    return population_moments(
        q @ q, q @ nu, nu @ nu, [q @ data.mu_pos, q @ data.mu_neg], [nu @ data.mu_pos, nu @ data.mu_neg],
        mu_norm=cfg.signal_norm, rho=cfg.rho, roles=data.roles, sigma=cfg.sigma_eps, noise=cfg.noise,
        signal_noise=cfg.signal_noise)


def per_token(cov, T):
    return np.broadcast_to(cov, (T, 2, 2))


def case_config(name, **kw):
    return Config(**{**dict(n_train=4, d=8, signal_norm=2.0, rho=0.5, eta=0.0), **CASES[name], **kw})


# --------------------------------------------------------------------------- moments

@pytest.mark.parametrize("name", CASES)
def test_moments_match_noiseless_tokens_exactly(name, rng):
    # sigma = 0: every test token is its role's mean, so the moments are exact inner products.
    cfg = case_config(name, sigma_eps=0.0, n_test=4)
    data = make_data(cfg)
    q, nu = random_params(rng, cfg.d)
    mz, mv, cov = moments_of(cfg, data, q, nu)
    for c, cls in enumerate((1.0, -1.0)):
        X = data.X_test[data.y_test == cls][0]
        np.testing.assert_allclose(mz[c], X @ q, rtol=0, atol=1e-12)
        np.testing.assert_allclose(mv[c], X @ nu, rtol=0, atol=1e-12)
    assert cov.shape == ((cfg.T, 2, 2) if cfg.signal_noise == "noiseless" else (2, 2)) and not cov.any()


@pytest.mark.parametrize("name", CASES)
def test_moments_match_empirical_moments_of_make_data(name, rng):
    cfg = case_config(name, n_test=20000, seed=5)
    data = make_data(cfg)
    q, nu = random_params(rng, cfg.d)
    mz, mv, cov = moments_of(cfg, data, q, nu)
    cov_t = per_token(cov, cfg.T)
    z, v = data.X_test @ q, data.X_test @ nu  # (n, T)
    resid = []
    for c, cls in enumerate((1.0, -1.0)):
        sel = data.y_test == cls
        n = sel.sum()
        for emp, pop, var in ((z[sel], mz[c], cov_t[:, 0, 0]), (v[sel], mv[c], cov_t[:, 1, 1])):
            se = np.sqrt(var / n)
            # + round-off for a noiseless token, whose every draw is its mean
            assert np.all(np.abs(emp.mean(axis=0) - pop) <= N_SE * se + 1e-12), (name, c, emp.mean(axis=0), pop, se)
        resid.append(np.stack([z[sel] - mz[c], v[sel] - mv[c]], axis=-1))   # (n, T, 2)
    r = np.concatenate(resid)
    quiet = ~cov_t.any(axis=(1, 2))                  # noiseless tokens: exactly their means
    assert quiet.sum() == (cfg.n_relevant if cfg.signal_noise == "noiseless" else 0)
    assert np.abs(r[:, quiet]).max(initial=0.0) < 1e-12 * (1 + np.abs(mz).max() + np.abs(mv).max())
    noisy = r[:, ~quiet].reshape(-1, 2)
    cov = cov_t[~quiet][0]
    assert np.array_equal(cov_t[~quiet], per_token(cov, (~quiet).sum()))
    emp_cov = noisy.T @ noisy / len(noisy)  # the means are known: no degrees of freedom lost
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / len(noisy))
    assert np.all(np.abs(emp_cov - cov) <= N_SE * se), (name, emp_cov, cov, se)
    if cfg.noise == "orthogonal":  # P must matter here, or the test cannot tell the modes apart
        gram = np.array([[q @ q, q @ nu], [q @ nu, nu @ nu]]) * cfg.sigma_eps ** 2
        assert np.abs(gram - cov).max() > 10 * se.max()


def test_moments_roles_follow_the_class():
    # Relevant carries mu_{y*}, weak rho mu_{y*}, weak-opposite rho mu_{-y*}, irrelevant nothing.
    mz, mv, _ = population_moments(1.0, 0.0, 1.0, [3.0, 5.0], [7.0, 11.0], mu_norm=1.0, rho=0.5,
                                   roles=[0, 1, 2, 3], sigma=1.0)
    assert mz.tolist() == [[3.0, 1.5, 2.5, 0.0], [5.0, 2.5, 1.5, 0.0]]
    assert mv.tolist() == [[7.0, 3.5, 5.5, 0.0], [11.0, 5.5, 3.5, 0.0]]


# --------------------------------------------------------------------------- against finite test sets

@pytest.mark.parametrize("name", CASES)
def test_population_matches_finite_test_set_random_params(name, rng):
    cfg = case_config(name, n_test=100_000, seed=11)
    data = make_data(cfg)
    q, nu = random_params(rng, cfg.d)
    pop = population_metrics_from_params(q, nu, cfg)
    assert 0.55 < pop.acc < 0.99  # informative: neither chance nor saturated
    assert_matches_finite_set(pop, empirical_metrics(data.X_test, data.y_test, q, nu), name)


@pytest.mark.parametrize("noise", ["isotropic", "orthogonal"])
def test_population_matches_finite_test_set_trained_params(noise):
    cfg = Config(d=10, n_train=20, n_test=0, steps=400, lr=0.5, signal_norm=3.0, rho=0.5, head_scale=1.0,
                 noise=noise, seed=3)
    res = attnsim.simulate(cfg)
    q = res.W.T @ res.p
    nu = make_data(cfg).nu
    pop = population_metrics_from_params(q, nu, cfg)
    test = make_data(cfg.replace(n_test=100_000, seed=4))  # same data model, fresh test set
    assert 0.5 < pop.acc < 0.99
    assert_matches_finite_set(pop, empirical_metrics(test.X_test, test.y_test, q, nu), noise)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_population_matches_million_sample_test_set(name, rng):
    cfg = case_config(name, n_test=100_000)
    q, nu = random_params(rng, cfg.d)
    pop = population_metrics_from_params(q, nu, cfg, n_draws=2 ** 18)
    chunks = [make_data(cfg.replace(seed=s)) for s in range(10)]  # independent test streams
    X = np.concatenate([c.X_test for c in chunks])
    y = np.concatenate([c.y_test for c in chunks])
    assert_matches_finite_set(pop, empirical_metrics(X, y, q, nu), name)


# --------------------------------------------------------------------------- against Monte Carlo and closed forms

def random_moments(rng, T, corr):
    mz = rng.normal(0.0, 1.5, size=(2, T))
    mv = rng.normal(0.0, 1.0, size=(2, T))
    mv[0, 0] += 1.0
    mv[1, 0] -= 1.0
    sz, sv = rng.uniform(0.5, 2.0, size=2)
    cov = np.array([[sz * sz, corr * sz * sv], [corr * sz * sv, sv * sv]])
    return mz, mv, cov


@pytest.mark.parametrize("corr", [0.0, 0.7, -0.9, 1.0])
def test_population_matches_plain_monte_carlo(corr, rng):
    mz, mv, cov = random_moments(rng, 8, corr)
    pop = population_metrics(mz, mv, cov)
    mc = monte_carlo(mz, mv, cov, 200_000, rng)
    assert_matches_finite_set(pop, mc, f"corr={corr}")


def test_single_token_closed_form(rng):
    # T = 1: f = v_1 ~ N(mean_v, cov_vv) whatever the logits.
    mz, mv, cov = random_moments(rng, 1, 0.6)
    pop = population_metrics(mz, mv, cov)
    s = np.sqrt(cov[1, 1])
    for c, cls in enumerate((1.0, -1.0)):
        acc = norm.cdf(cls * mv[c, 0] / s)
        loss = gaussian_loss(cls * mv[c, 0], s)
        assert abs(pop.class_acc[c] - acc) <= N_SE * pop.class_acc_se[c] + 1e-12, (pop, acc)
        assert abs(pop.class_loss[c] - loss) <= N_SE * pop.class_loss_se[c] + 1e-12, (pop, loss)
    assert pop.acc_se < 1e-4 and pop.loss_se < 1e-4


def test_zero_query_uniform_attention_closed_form(rng):
    # q = 0: cov_zz = cov_zv = 0, uniform softmax, f = mean_t v_t ~ N(mean(mean_v), cov_vv / T).
    T = 6
    _, mv, cov = random_moments(rng, T, 0.0)
    cov[0, :] = cov[:, 0] = 0.0
    pop = population_metrics(np.zeros((2, T)), mv, cov)
    s = np.sqrt(cov[1, 1] / T)
    for c, cls in enumerate((1.0, -1.0)):
        m = cls * mv[c].mean()
        assert abs(pop.class_acc[c] - norm.cdf(m / s)) < 1e-12  # exact: one normal CDF per draw
        assert abs(pop.class_loss[c] - gaussian_loss(m, s)) <= N_SE * pop.class_loss_se[c] + 1e-12


def test_saturated_softmax_selects_the_top_token(rng):
    # Logit gaps of ~1000 overflow a softmax not taken relative to the top token (a
    # RuntimeWarning is an error here); the result must be f = v_top.
    mz, mv, cov = random_moments(rng, 8, 0.5)
    mz[:, 3] += 1000.0
    pop = population_metrics(mz, mv, cov)
    s = np.sqrt(cov[1, 1])
    for c, cls in enumerate((1.0, -1.0)):
        assert abs(pop.class_acc[c] - norm.cdf(cls * mv[c, 3] / s)) <= N_SE * pop.class_acc_se[c] + 1e-12
        assert abs(pop.class_loss[c] - gaussian_loss(cls * mv[c, 3], s)) <= N_SE * pop.class_loss_se[c] + 1e-12


def test_zero_covariance_is_deterministic(rng):
    mz, mv, _ = random_moments(rng, 5, 0.0)
    pop = population_metrics(mz, mv, np.zeros((2, 2)))
    for c, cls in enumerate((1.0, -1.0)):
        u = cls * np.sum(softmax(mz[c]) * mv[c])
        assert pop.class_acc[c] == float(u > 0)
        assert pop.class_loss[c] == pytest.approx(np.logaddexp(0.0, -u), rel=1e-13)
    assert pop.acc_se == 0.0 and pop.loss_se == 0.0


def test_rank_one_covariance_head_parallel_to_query(rng):
    # nu = k q in the noise: v_t - mean_v = k (z_t - mean_z); no NaN, and agrees with Monte Carlo
    # and with the nearly-degenerate neighbour.
    mz, mv, _ = random_moments(rng, 4, 0.0)
    k = -0.8
    cov = 1.3 * np.array([[1.0, k], [k, k * k]])
    pop = population_metrics(mz, mv, cov)
    assert np.isfinite([pop.loss, pop.acc, pop.loss_se, pop.acc_se]).all()
    assert_matches_finite_set(pop, monte_carlo(mz, mv, cov, 200_000, rng), "rank one")
    near = population_metrics(mz, mv, cov + np.diag([0.0, 1e-10]))
    assert abs(near.loss - pop.loss) < 1e-4 and abs(near.acc - pop.acc) < 1e-3


def test_orthogonal_noise_query_in_signal_span_has_no_logit_noise():
    # q in span(mu_+-): q^T P q is a difference that must come out as 0, not a negative round-off.
    cfg = Config(d=6, signal_norm=3.0, noise="orthogonal", n_test=0)
    q = np.array([0.1, 0.3, 0, 0, 0, 0]) * 7.0
    nu = np.array([1.0, -1.0, 0.2, 0, 0, 0])
    mz, mv, cov = population_moments(q @ q, q @ nu, nu @ nu, [3 * q[0], 3 * q[1]], [3.0, -3.0], mu_norm=3.0,
                                     rho=0.1, roles=token_roles(cfg), sigma=1.0, noise="orthogonal")
    assert cov[0, 0] >= 0 and abs(cov[0, 0]) < 1e-14 and abs(cov[0, 1]) < 1e-14
    assert cov[1, 1] == pytest.approx(0.04)
    pop = population_metrics_from_params(q, nu, cfg)
    assert np.isfinite([pop.loss, pop.acc]).all()


# --------------------------------------------------------------------------- quadrature properties

def test_same_seed_same_bits_and_other_seed_other_draws(rng):
    mz, mv, cov = random_moments(rng, 8, 0.3)
    a = population_metrics(mz, mv, cov, seed=7)
    standard_normal_draws.cache_clear()
    b = population_metrics(mz, mv, cov, seed=7)
    assert a == b
    c = population_metrics(mz, mv, cov, seed=8)
    assert c.loss != a.loss
    assert abs(c.loss - a.loss) <= N_SE * np.hypot(a.loss_se, c.loss_se)


def test_standard_error_is_honest_across_seeds(rng):
    # The spread of the estimate over independent seeds is what the reported SE claims.
    mz, mv, cov = random_moments(rng, 8, 0.5)
    runs = [population_metrics(mz, mv, cov, n_draws=2 ** 10, seed=s) for s in range(32)]
    for what in ("loss", "acc"):
        spread = np.std([getattr(r, what) for r in runs], ddof=1)
        claimed = np.sqrt(np.mean([getattr(r, what + "_se") ** 2 for r in runs]))
        assert 0.6 < spread / claimed < 1.6, (what, spread, claimed)


def test_standard_error_shrinks_at_least_at_the_monte_carlo_rate(rng):
    mz, mv, cov = random_moments(rng, 8, 0.5)
    sizes = 2 ** np.arange(10, 17, 2)
    for what in ("loss_se", "acc_se"):
        se = [np.sqrt(np.mean([getattr(population_metrics(mz, mv, cov, n_draws=int(n), seed=s), what) ** 2
                               for s in range(4)])) for n in sizes]
        slope = np.polyfit(np.log(sizes), np.log(se), 1)[0]
        assert slope < -0.45, (what, slope, se)


def test_default_accuracy_is_far_below_finite_test_set_noise(rng):
    mz, mv, cov = random_moments(rng, 8, 0.5)
    pop = population_metrics(mz, mv, cov)
    assert pop.n_draws == 2 ** 14
    assert pop.acc_se < 1e-3 and pop.loss_se < 1e-3  # a 1000-sample test set: ~1e-2


def test_deterministic_token_beside_a_gaussian_one_closed_form(rng):
    # T = 2, token 0 noiseless at (a, b), token 1 ~ N((0, 0), diag(sz^2, sv^2)): given z_1 = x,
    # f ~ N(s_1(x) * 0 + s_0(x) b, s_1(x)^2 sv^2) with s_1 = 1 / (1 + exp(a - x)): the accuracy is a
    # 1-d integral over x, the loss a 2-d one (inner Gaussian by quad too).
    a, b, sz, sv = 0.7, 0.9, 1.3, 0.8
    cov = np.array([np.zeros((2, 2)), np.diag([sz ** 2, sv ** 2])])
    pop = population_metrics([[a, 0.0], [a, 0.0]], [[b, 0.0], [-b, 0.0]], cov)

    def weights(x):
        s1 = 1.0 / (1.0 + np.exp(a - x))
        return 1.0 - s1, s1

    def acc(x):
        s0, s1 = weights(x)
        return norm.cdf(s0 * b / (s1 * sv)) * norm.pdf(x, scale=sz)

    def loss(x):
        s0, s1 = weights(x)
        return gaussian_loss(s0 * b, s1 * sv) * norm.pdf(x, scale=sz)

    want_acc = integrate.quad(acc, -12 * sz, 12 * sz, epsabs=1e-12)[0]
    want_loss = integrate.quad(loss, -12 * sz, 12 * sz, epsabs=1e-11)[0]
    for c in (0, 1):   # y* f has the same law in both classes here
        assert abs(pop.class_acc[c] - want_acc) <= N_SE * pop.class_acc_se[c] + 1e-9, (pop, want_acc)
        assert abs(pop.class_loss[c] - want_loss) <= N_SE * pop.class_loss_se[c] + 1e-9, (pop, want_loss)
    assert 0 < pop.acc_se < 1e-4 and 0 < pop.loss_se < 1e-4


def test_all_tokens_noiseless_is_deterministic(rng):
    mz, mv, _ = random_moments(rng, 3, 0.0)
    pop = population_metrics(mz, mv, np.zeros((3, 2, 2)), se_target=1e-3)
    for c, cls in enumerate((1.0, -1.0)):
        u = cls * np.sum(softmax(mz[c]) * mv[c])
        assert pop.class_acc[c] == float(u > 0)
        assert pop.class_loss[c] == pytest.approx(np.logaddexp(0.0, -u), rel=1e-13)
    assert pop.acc_se == 0.0 and pop.loss_se == 0.0
    assert pop.n_draws == 8 * MIN_DRAWS_PER_REPLICATE     # the first look suffices


# --------------------------------------------------------------------------- the kernel and its twin

def kernel_cases():
    """Named (mean_z, mean_v, cov (T, 2, 2)) covering every branch of the kernel."""
    rng = np.random.default_rng(20)
    out = {}
    for corr in (0.0, 0.6, -1.0):
        mz, mv, cov = random_moments(rng, 8, corr)
        out[f"corr={corr}"] = (mz, mv, per_token(cov, 8).copy())
    mz, mv, cov = random_moments(rng, 5, 0.4)
    cov_t = per_token(cov, 5).copy()
    cov_t[[0, 3]] = 0.0                                     # noiseless tokens
    out["noiseless"] = (mz, mv, cov_t)
    mz, mv, cov = random_moments(rng, 4, 0.3)
    out["mean gaps 1000"] = (mz + [[1000.0, 0, -500, 0]], mv, per_token(cov, 4).copy())   # factors underflow
    out["noise sd 200"] = (mz, mv, per_token(cov * 4e4, 4).copy())                       # per-draw fallback
    # means 800 apart, noise sd 600: the factor exp(-800) of a token underflows to 0 while its
    # noise can make it the top token, whose true weight is 1
    out["underflow compensated"] = (np.array([[0.0, -800.0, -400.0], [-400.0, -800.0, 0.0]]), mv[:, :3],
                                    per_token(np.array([[3.6e5, 300.0], [300.0, 1.0]]), 3).copy())
    mz, mv, cov = random_moments(rng, 1, 0.5)
    out["T=1"] = (mz, mv, per_token(cov, 1).copy())
    mz, mv, _ = random_moments(rng, 6, 0.0)
    cov_t = np.zeros((6, 2, 2))
    cov_t[1:, 0, 0] = 2.0                                   # v a function of z: accuracy counts
    out["rank one in z"] = (mz, mv, cov_t)
    return out


@pytest.mark.parametrize("case", list(kernel_cases()))
@pytest.mark.parametrize("se_target", [-1.0, 3e-3])
def test_quadrature_kernel_matches_its_numpy_twin(case, se_target):
    mz, mv, cov = kernel_cases()[case]
    # 2**12 draws: blocks of 64, the first look at 8 (a partial block); 2**6: blocks of 8 < BLOCK
    for n_draws, first in ((2 ** 12, 8), (2 ** 6, 2)):
        draws = standard_normal_draws(mz.shape[1], n_draws, 8, 3)
        got, want = np.empty((2, 3, 2)), np.empty((2, 3, 2))
        n_got = kernel.population_quadrature(mz, mv, cov, np.array([1.0, -1.0]), draws, first, se_target, got)
        n_want = twin.population_quadrature(mz, mv, cov, np.array([1.0, -1.0]), draws, first, se_target, want)
        label = f"{case}, se_target={se_target}, n_draws={n_draws}"
        assert n_got == n_want, f"{label}: draws {n_got} vs {n_want}"
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14, err_msg=label)
        assert np.isfinite(got).all() and (got[1, :, 0] >= 0).all() and (got[1, :, 0] <= 1).all()


def test_se_target_spends_draws_until_the_target(rng):
    mz, mv, cov = random_moments(rng, 8, 0.5)
    full = population_metrics(mz, mv, cov)
    for target in (3e-3, 1e-3, 3e-4):
        pop = population_metrics(mz, mv, cov, se_target=target)
        per = pop.n_draws // 8
        assert MIN_DRAWS_PER_REPLICATE <= per < 2 ** 14 // 8 and per & (per - 1) == 0
        assert pop.loss_se <= target and pop.acc_se <= target
        if per > MIN_DRAWS_PER_REPLICATE:          # the previous doubling had not reached it
            half = population_metrics(mz, mv, cov, n_draws=pop.n_draws // 2)
            assert max(half.loss_se, half.acc_se) > target
        # the same expectation as all 2**14 draws: the prefix of a scrambled net is a net
        for what in ("loss", "acc"):
            assert abs(getattr(pop, what) - getattr(full, what)) <= N_SE * np.hypot(getattr(pop, what + "_se"),
                                                                                 getattr(full, what + "_se"))
    unreachable = population_metrics(mz, mv, cov, n_draws=2 ** 10, se_target=1e-9)
    assert unreachable.n_draws == 2 ** 10 and unreachable.loss_se > 1e-9


@pytest.mark.parametrize("name", CASES)
def test_recorder_path_equals_moments_then_metrics_bit_for_bit(name, rng):
    """``PopulationSpec.metrics`` (moments and quadrature in one kernel call) against the NumPy
    moments ``population_moments`` fed to ``population_metrics``: the same bits, including the
    clipped Gram of a head parallel to the query and of a head orthogonal to the noise."""
    from attnsim._population import PopulationSpec

    cfg = case_config(name)
    data = make_data(cfg)
    spec = PopulationSpec.from_config(cfg, n_draws=2 ** 10, se_target=1e-3)
    for k in range(12):
        q, nu = random_params(rng, cfg.d, scale=[0.3, 1.5, 6.0][k % 3])
        if k % 4 == 1:
            nu = -0.7 * q                                   # rank-1 Gram: round-off clipped to Cauchy-Schwarz
        elif k % 4 == 2:
            nu = np.zeros(cfg.d)
            nu[:2] = (0.5, -0.5)                            # nu in span(mu_+-): P nu = 0
        mz, mv, cov = moments_of(cfg, data, q, nu)
        mu = np.stack([data.mu_pos, data.mu_neg])
        got = spec.metrics(q @ q, mu @ q, q @ nu, nu @ nu, mu @ nu)
        want = population_metrics(mz, mv, cov, n_draws=2 ** 10, se_target=1e-3)
        assert got == want, f"{name}, k={k}: {got} vs {want}"
    nan = spec.metrics(1.0, np.zeros(2), np.inf, np.nan, np.zeros(2))
    assert np.isnan([nan.loss, nan.acc, nan.loss_se, nan.acc_se]).all() and nan.n_draws == 0


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(mean_z=np.zeros((3, 4))), r"mean_z and mean_v must both have shape \(2, T\)"),
    (dict(cov=np.zeros((3, 3))), r"cov must have shape \(2, 2\) .* or \(T, 2, 2\) = \(4, 2, 2\)"),
    (dict(cov=np.zeros((3, 2, 2))), r"cov must have shape \(2, 2\) .* or \(T, 2, 2\) = \(4, 2, 2\)"),
    (dict(cov=np.array([np.eye(2), np.eye(2), [[1.0, 2.0], [2.0, 1.0]], np.eye(2)])),
     r"cov must be symmetric positive semi-definite; got \[\[1.0, 2.0\], \[2.0, 1.0\]\] \(token 2\)"),
    (dict(se_target=0.0), "se_target must be None .* or a finite number > 0"),
    (dict(cov=np.array([[1.0, 2.0], [2.0, 1.0]])), "cov must be symmetric positive semi-definite"),
    (dict(cov=np.array([[1.0, 0.5], [0.0, 1.0]])), "cov must be symmetric positive semi-definite"),
    (dict(cov=np.array([[np.nan, 0.0], [0.0, 1.0]])), "cov must be finite"),
    (dict(n_draws=1000), r"n_draws / replicates must be a power of two"),
    (dict(replicates=1), r"replicates >= 2"),
    (dict(n_draws=0), "n_draws must be a positive integer"),
])
def test_population_metrics_rejects_bad_input(kwargs, match):
    args = dict(mean_z=np.zeros((2, 4)), mean_v=np.zeros((2, 4)), cov=np.eye(2))
    args.update(kwargs)
    if "mean_z" in kwargs:
        args["mean_v"] = np.zeros_like(kwargs["mean_z"])
    with pytest.raises(ConfigError, match=match):
        population_metrics(args.pop("mean_z"), args.pop("mean_v"), args.pop("cov"), **args)


def test_population_moments_and_from_params_reject_bad_input():
    good = dict(mu_norm=1.0, rho=0.1, roles=[0, 3], sigma=1.0)
    with pytest.raises(ConfigError, match="noise must be one of 'isotropic', 'orthogonal'"):
        population_moments(1.0, 0.0, 1.0, [0, 0], [0, 0], **good, noise="gaussian")
    with pytest.raises(ConfigError, match="signal_noise must be one of 'noisy', 'noiseless'"):
        population_moments(1.0, 0.0, 1.0, [0, 0], [0, 0], **good, signal_noise="quiet")
    with pytest.raises(ConfigError, match=r"q_mu must have shape \(2,\)"):
        population_moments(1.0, 0.0, 1.0, [0, 0, 0], [0, 0], **good)
    with pytest.raises(ConfigError, match="roles must be a non-empty 1-d array of role codes"):
        population_moments(1.0, 0.0, 1.0, [0, 0], [0, 0], **{**good, "roles": [0, 7]})
    with pytest.raises(ConfigError, match=r"q and nu must have shape \(d,\) = \(6,\)"):
        population_metrics_from_params(np.zeros(5), np.zeros(6), Config(d=6, n_test=0))

