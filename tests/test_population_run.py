"""Population test metrics recorded by a run (``Config.test_metrics="population"``, issue 13).

The recorder feeds ``population_metrics`` from the dual state (``query_norm`` and the probes
``mu_+-``, ``nu``). Oracles: the materialised final parameters through
``population_metrics_from_params`` (exact plumbing: the same expectation from ``W^T p`` built in
R^d), and finite test sets of 10^5 (10^6, slow) clean samples drawn by ``make_data``'s test
stream, within 3 combined standard errors, for both noise modes and every trainable set: a
trained head (its inner products recovered from the dual state, ``HeadInnerProducts``) and
Magen et al.'s model (noiseless signal token, W = I, head from zero) included.
"""

import numpy as np
import pytest

import attnsim
from attnsim import Config, ConfigError, SaveAt, make_data, population_metrics_from_params
from attnsim._io import read_npz, write_npz_atomic
from attnsim._population import DEFAULT_SE_TARGET
from test_population import assert_matches_finite_set, empirical_metrics

CASES = [(t, n) for t in ("Wp", "p") for n in ("isotropic", "orthogonal")]
SAVES = [0, 40, 150, 400]


def trained_config(trainable, noise, **kw):
    # Non-trivial at d = 10: the query picks up signal and noise, the accuracy is neither 1/2 nor 1.
    return Config(**{**dict(d=10, n_train=20, n_test=0, steps=400, lr=0.5, signal_norm=3.0, rho=0.5, head_scale=1.0,
                            noise=noise, trainable=trainable, seed=3, test_metrics="population"), **kw})


def final_query(res, cfg):
    W = res.W if res.W is not None else attnsim.init_params(cfg)[0]
    return W.T @ res.p


@pytest.fixture(scope="module")
def runs():
    """For every case: the run recorded at SAVES, and shorter runs ending at each save time."""
    out = {}
    for trainable, noise in CASES:
        cfg = trained_config(trainable, noise)
        res = attnsim.simulate(cfg, SaveAt(SAVES))
        prefix = {s: attnsim.simulate(cfg.replace(steps=s), SaveAt([0, s])) for s in SAVES[1:-1]}
        out[trainable, noise] = cfg, res, prefix
    return out


@pytest.mark.parametrize("trainable,noise", CASES)
def test_recorded_population_metrics_equal_those_of_the_materialised_query(runs, trainable, noise):
    """At every save time: the dual state's inner products give what W^T p built in R^d gives."""
    cfg, res, prefix = runs[trainable, noise]
    nu = make_data(cfg).nu
    for k, step in enumerate(SAVES):
        if step == 0:
            W0, p0 = attnsim.init_params(cfg)
            q = W0.T @ p0
        elif step == cfg.steps:
            q = final_query(res, cfg)
        else:
            q = final_query(prefix[step], cfg.replace(steps=step))
        pm = population_metrics_from_params(q, nu, cfg, se_target=DEFAULT_SE_TARGET)   # the recorder's quadrature
        for name, want in (("test_loss", pm.loss), ("test_acc", pm.acc), ("test_loss_se", pm.loss_se),
                           ("test_acc_se", pm.acc_se)):
            got = getattr(res, name)[k]
            assert got == pytest.approx(want, rel=1e-7, abs=1e-12), f"{trainable}/{noise} step {step}: {name}"


@pytest.mark.parametrize("trainable,noise", CASES)
def test_recorded_population_metrics_match_a_finite_test_set(runs, trainable, noise):
    cfg, res, _ = runs[trainable, noise]
    q = final_query(res, cfg)
    nu = make_data(cfg).nu
    pm = population_metrics_from_params(q, nu, cfg, se_target=DEFAULT_SE_TARGET)
    assert (res.test_loss[-1], res.test_acc[-1]) == pytest.approx((pm.loss, pm.acc), rel=1e-7)
    # Informative: training moved the metrics, and the query has a noise component.
    assert abs(res.test_loss[-1] - res.test_loss[0]) > 20 * res.test_loss_se[-1]
    if noise == "isotropic":
        assert 0.5 < pm.acc < 0.99
    test = make_data(cfg.replace(test_metrics="sample", n_test=100_000))  # make_data's own test stream
    assert_matches_finite_set(pm, empirical_metrics(test.X_test, test.y_test, q, nu), f"{trainable}/{noise}")


@pytest.mark.slow
@pytest.mark.parametrize("trainable,noise", CASES)
def test_recorded_population_metrics_match_a_million_sample_test_set(runs, trainable, noise):
    cfg, res, _ = runs[trainable, noise]
    q = final_query(res, cfg)
    nu = make_data(cfg).nu
    pm = population_metrics_from_params(q, nu, cfg, n_draws=2 ** 18)
    assert res.test_loss[-1] == pytest.approx(pm.loss, abs=3 * np.hypot(pm.loss_se, res.test_loss_se[-1]))
    parts = [make_data(cfg.replace(test_metrics="sample", n_test=100_000, seed=s)) for s in range(10)]
    X = np.concatenate([p.X_test for p in parts])
    y = np.concatenate([p.y_test for p in parts])
    assert_matches_finite_set(pm, empirical_metrics(X, y, q, nu), f"{trainable}/{noise} 10^6")


@pytest.mark.parametrize("trainable", ["Wp", "p"])
def test_flow_records_population_metrics_of_its_final_parameters(trainable):
    cfg = trained_config(trainable, "isotropic", steps=10 ** 5, lr=0.05)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 20), dynamics="flow", flow={"gd_start": 50})
    assert res.status == "finished"
    pm = population_metrics_from_params(final_query(res, cfg), make_data(cfg).nu, cfg, se_target=DEFAULT_SE_TARGET)
    assert (res.test_loss[-1], res.test_acc[-1]) == pytest.approx((pm.loss, pm.acc), rel=1e-7)


def test_population_run_draws_no_test_set_and_keeps_user_probes():
    cfg = trained_config("Wp", "isotropic", steps=20)
    run = attnsim.prepare_run(cfg)
    assert run.pb.Xt.shape == (0, cfg.d)
    res = attnsim.simulate(cfg)
    assert res.p_probe.shape[1] == 2 and res.query_probe.shape[1] == 2   # mu_+, mu_- only, as for sample metrics
    assert np.all(np.isfinite(res.test_loss)) and np.all(res.test_acc_se >= 0)


def test_sample_metrics_have_nan_standard_errors():
    res = attnsim.simulate(Config(d=10, n_test=5, steps=5))
    assert np.all(np.isfinite(res.test_loss)) and np.all(np.isnan(res.test_loss_se)) and np.all(np.isnan(res.test_acc_se))


def test_population_metrics_survive_save_load_and_old_files_load(tmp_path):
    res = attnsim.simulate(trained_config("p", "isotropic", steps=20))
    res.save(tmp_path / "r.npz")
    back = attnsim.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.test_loss_se, res.test_loss_se)
    arrays, meta = read_npz(tmp_path / "r.npz", "attnsim.Result", attnsim._result.FORMAT_VERSION)
    del arrays["test_loss_se"], arrays["test_acc_se"]          # a file written before they existed
    write_npz_atomic(tmp_path / "old.npz", arrays, meta)
    old = attnsim.load(tmp_path / "old.npz")
    assert old.test_loss_se.shape == res.steps.shape and np.all(np.isnan(old.test_acc_se))
    np.testing.assert_array_equal(old.test_loss, res.test_loss)


def test_population_run_resumes_from_a_checkpoint_bit_for_bit(tmp_path):
    cfg = trained_config("Wp", "orthogonal", steps=300)
    ref = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 30))
    run = attnsim.prepare_run(cfg, SaveAt.log(cfg.steps, 30))
    while run.step < 123:
        run.advance(rate=37.0, max_seconds=1.0)
    attnsim.save_checkpoint(tmp_path / "ck.npz", run, cfg)
    back = attnsim.resume(tmp_path / "ck.npz")
    for name in ("test_loss", "test_acc", "test_loss_se", "test_acc_se", "query_probe"):
        assert getattr(back, name).tobytes() == getattr(ref, name).tobytes(), name


@pytest.mark.parametrize("kwargs,match", [
    (dict(test_metrics="population", n_test=1000),   # left out, n_test is 0 here (issue 17.6)
     r"n_test must be 0 with test_metrics='population'.*got n_test=1000; leave n_test out \(or pass n_test=0\)"),
    (dict(test_metrics="exact", n_test=0), r"test_metrics must be one of"),
])
def test_config_rejects_bad_test_metrics(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Config(**kwargs)


def test_prepare_rejects_a_test_set_with_population_metrics():
    from attnsim._population import PopulationSpec

    cfg = Config(d=6, n_test=0, test_metrics="population")
    data = make_data(cfg.replace(test_metrics="sample", n_test=4))
    W0, p0 = attnsim.init_params(cfg)
    with pytest.raises(ConfigError, match="population test metrics replace the test set; got X_test as well"):
        attnsim.prepare(data.X, data.y, W0, p0, data.nu, lr=0.1, steps=2, X_test=data.X_test, y_test=data.y_test,
                        population=PopulationSpec.from_config(cfg))


def test_orthogonal_moments_stay_psd_when_query_and_head_lie_in_the_signal_span(rng):
    """q, nu in span(mu_+-): P q = P nu = 0 up to round-off, which must not make cov indefinite."""
    for _ in range(200):
        mu = rng.uniform(0.5, 20.0)
        cq, cn = rng.standard_normal(2) * rng.uniform(0.1, 10.0), rng.standard_normal(2) * rng.uniform(0.1, 10.0)
        q_mu, nu_mu = cq * mu, cn * mu          # q = cq_1 e_1 + cq_2 e_2 with mu_+- = mu e_{1,2}
        mz, mv, cov = attnsim.population_moments(cq @ cq, cq @ cn, cn @ cn, q_mu, nu_mu, mu_norm=mu, rho=0.1,
                                                 roles=[0, 1, 2, 3], sigma=1.0, noise="orthogonal")
        assert cov[0, 1] ** 2 <= cov[0, 0] * cov[1, 1]
        assert np.all(np.abs(cov) < 1e-12 * (1 + cq @ cq + cn @ cn))
        attnsim.population_metrics(mz, mv, cov, n_draws=2 ** 6, replicates=2)   # accepted


# --------------------------------------------------------------------------- trained heads, noiseless signal token

HEAD_CASES = {
    # official head, d = 10 < N = 160: X X^T is singular, the pseudo-inverse must still be exact
    "p+nu": dict(trainable="p+nu", lr=0.05),
    "Wp+nu": dict(trainable="Wp+nu", lr=0.05),
    "Wp+nu-orth": dict(trainable="Wp+nu", noise="orthogonal"),
    # d = 60 > N = 40: X X^T invertible
    "p+nu-orth-wide": dict(trainable="p+nu", noise="orthogonal", d=60, n_train=10, T=4),
}
HEAD_SAVES = [0, 20, 150, 400]


def head_config(name):
    if name == "magen":   # Magen et al.: T = 2, the relevant token is exactly mu_{y*} (repeated: X X^T singular)
        return attnsim.preset("magen", d=60, n_train=20, n_test=0, test_metrics="population", seed=3, steps=400)
    kw = dict(HEAD_CASES[name])
    return trained_config(kw.pop("trainable"), kw.pop("noise", "isotropic"), **kw)


def materialised(res, cfg):
    """``(q, nu)`` of a result, built in R^d."""
    W = res.W if res.W is not None else attnsim.init_params(cfg)[0]
    W = np.eye(cfg.d) if W is None else W                # w0="identity"
    return W.T @ res.p, res.nu


@pytest.fixture(scope="module")
def head_runs():
    """For every case: the dual run recorded at HEAD_SAVES and dual runs ending at each inner save."""
    out = {}
    for name in [*HEAD_CASES, "magen"]:
        cfg = head_config(name)
        res = attnsim.simulate(cfg, SaveAt(HEAD_SAVES), engine="dual")
        prefix = {s: attnsim.simulate(cfg.replace(steps=s), SaveAt([0, s]), engine="dual") for s in HEAD_SAVES[1:-1]}
        out[name] = cfg, res, prefix
    return out


@pytest.mark.parametrize("name", [*HEAD_CASES, "magen"])
def test_trained_head_population_metrics_equal_those_of_the_materialised_parameters(head_runs, name):
    """Every save: (nu^T nu, nu^T mu, q^T nu) from beta = Gxx^+ (v - v0) give what q and nu built in R^d give."""
    cfg, res, prefix = head_runs[name]
    assert res.status == "finished" and res.nu_dist[-1] > 0.1       # the head moved
    for k, step in enumerate(HEAD_SAVES):
        if step == 0:
            W0, p0 = attnsim.init_params(cfg)
            q, nu = (p0 if W0 is None else W0.T @ p0), make_data(cfg).nu
        else:
            q, nu = materialised(res if step == cfg.steps else prefix[step], cfg.replace(steps=step))
        pm = population_metrics_from_params(q, nu, cfg, se_target=DEFAULT_SE_TARGET)
        for what, want in (("test_loss", pm.loss), ("test_acc", pm.acc), ("test_loss_se", pm.loss_se),
                           ("test_acc_se", pm.acc_se)):
            assert getattr(res, what)[k] == pytest.approx(want, rel=1e-9, abs=1e-12), f"{name} step {step}: {what}"


@pytest.mark.parametrize("name", [*HEAD_CASES, "magen"])
def test_trained_head_population_metrics_match_a_finite_test_set(head_runs, name):
    cfg, res, _ = head_runs[name]
    q, nu = materialised(res, cfg)
    pm = population_metrics_from_params(q, nu, cfg, se_target=DEFAULT_SE_TARGET)
    assert (res.test_loss[-1], res.test_acc[-1]) == pytest.approx((pm.loss, pm.acc), rel=1e-9)
    assert abs(res.test_loss[-1] - res.test_loss[0]) > 20 * res.test_loss_se[-1]     # training moved them
    assert 0.5 < pm.acc < 0.99
    test = make_data(cfg.replace(test_metrics="sample", n_test=100_000, seed=11))    # a fresh test stream
    assert_matches_finite_set(pm, empirical_metrics(test.X_test, test.y_test, q, nu), name)


@pytest.mark.parametrize("name", ["Wp+nu-orth", "magen"])
def test_trained_head_population_metrics_agree_across_engines_and_the_flow(head_runs, name):
    cfg, dual, _ = head_runs[name]
    primal = attnsim.simulate(cfg, SaveAt(HEAD_SAVES), engine="primal")
    for what in ("test_loss", "test_acc", "test_loss_se", "test_acc_se"):
        np.testing.assert_allclose(getattr(primal, what), getattr(dual, what), rtol=1e-8, atol=1e-12, err_msg=what)
    flow = attnsim.simulate(cfg.replace(steps=10 ** 5, lr=cfg.lr / 10), SaveAt.log(10 ** 5, 12), dynamics="flow",
                            flow={"gd_start": 50})
    assert flow.status == "finished"
    q, nu = materialised(flow, cfg)
    pm = population_metrics_from_params(q, nu, cfg, se_target=DEFAULT_SE_TARGET)
    assert (flow.test_loss[-1], flow.test_acc[-1]) == pytest.approx((pm.loss, pm.acc), rel=1e-7)


def test_head_inner_products_from_a_singular_gram_are_exact(rng):
    """X with repeated rows (Magen's noiseless tokens) and N > d: beta is not unique, the products are."""
    from attnsim._population import HeadInnerProducts

    d, N = 7, 12
    X = rng.standard_normal((N, d))
    X[6:] = X[0]                                           # six copies of one token: rank <= 6 < N
    nu0, q = rng.standard_normal(d), rng.standard_normal(d)
    mu = rng.standard_normal((2, d))
    beta = rng.standard_normal(N) * 10.0 ** rng.uniform(-3, 3, size=N)
    nu = nu0 + X.T @ beta
    hp = HeadInnerProducts(X, nu0, mu, X @ X.T)
    nunu, nu_mu, q_nu = hp(X @ q, X @ nu, np.linalg.norm(nu), q @ nu0)
    scale = np.linalg.norm(nu) * (np.linalg.norm(q) + np.abs(mu).max())
    assert abs(q_nu - q @ nu) < 1e-12 * scale
    np.testing.assert_allclose(nu_mu, mu @ nu, rtol=0, atol=1e-12 * scale)
    assert nunu == pytest.approx(nu @ nu, rel=1e-15)
    fixed = HeadInnerProducts(X, nu0, mu)
    assert fixed(X @ q, X @ nu, 0.0, 1.5) == (nu0 @ nu0, pytest.approx(mu @ nu0), 1.5)


def test_config_accepts_population_metrics_for_every_model():
    for kw in (dict(trainable="p+nu"), dict(trainable="Wp+nu"), dict(signal_noise="noiseless")):
        assert Config(n_test=0, test_metrics="population", **kw).test_metrics == "population"
