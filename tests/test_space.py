"""``Config.space``: the data model's explicit draw, and implicit runs that agree with explicit ones in law.

The oracle of an implicit run is the explicit run of the same config at the same (small) d:
two-sample tests over seeds (the law of every recorded quantity must be the same), at fixed
seeds so that the tests are deterministic. The explicit draw's oracle is the code it
replaced: a hash of ``make_data`` / ``init_params`` outputs computed before the data model
existed.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import attnsim
from attnsim import Config, ConfigError

IMPLICIT = dict(space="implicit", init="official-gaussian", test_metrics="population", n_test=0)


# ----------------------------------------------------------------------------- the data model


def _data_configs():
    out = []
    for noise, sn, ln, roles, init, w0, head in itertools.product(
            ("isotropic", "orthogonal"), ("noisy", "noiseless"), ("official", "random"), ((1, 1, 1), (2, 1, 0)),
            ("official", "gaussian"), ("random", "identity"), ("official", "zero", "gaussian")):
        out.append(Config(noise=noise, signal_noise=sn, label_noise=ln, T=5, n_relevant=roles[0], n_weak=roles[1],
                          n_weak_opposite=roles[2], init=init, w0=w0, head_init=head, d=11, n_train=6, n_test=3,
                          eta=0.34, sigma_p=0.3, sigma_w=0.2, sigma_nu=0.5, seed=len(out)))
    out.append(attnsim.preset("magen", d=40, n_train=10, n_test=4))
    return out


def test_make_data_draws_the_bits_it_drew_before_the_data_model():
    # Regression value: the same hash computed with make_data/init_params as they were before
    # DataModel (commit 9109ac5), over 193 configs covering every data-model option.
    h = hashlib.sha256()
    for c in _data_configs():
        D = attnsim.make_data(c)
        W0, p0 = attnsim.init_params(c)
        for a in (D.X, D.y, D.y_true, D.noisy, D.X_test, D.y_test, D.roles, D.relevant, D.mu_pos, D.mu_neg, D.nu,
                  np.array([]) if W0 is None else W0, p0):
            h.update(np.ascontiguousarray(a).tobytes())
    assert h.hexdigest() == "420a072b4b903cd60e23badadedcb305b1a4eb01e5a9e4160c84763ad6cc9838"


def test_data_model_describes_the_tokens_make_data_draws():
    # The per-position mean and noise variance the model states, against 4000 drawn samples.
    cfg = Config(n_train=4000, n_test=0, d=6, T=5, n_relevant=2, rho=0.3, signal_norm=2.0, sigma_eps=0.5,
                 noise="orthogonal", signal_noise="noiseless", eta=0.0)
    model = attnsim.DataModel.from_config(cfg)
    data = attnsim.make_data(cfg)
    pos = data.y_true > 0
    means = model.class_means() * cfg.signal_norm                   # (2, T, 2): coefficients of e_1, e_2
    for c, rows in enumerate((pos, ~pos)):
        X = data.X[rows]
        emp = X.mean(axis=0)                                         # (T, d)
        se = model.noise_scale[:, None] / np.sqrt(rows.sum()) + 1e-15
        assert np.all(np.abs(emp[:, :2] - means[c]) <= 5 * se)        # orthogonal mode: no noise along e_1, e_2
        assert np.all(np.abs(emp[:, 2:]) <= 5 * se)
        var = X[:, :, 2:].var(axis=0).mean(axis=1)                    # per position, off the signals
        assert np.allclose(var, model.noise_scale ** 2, rtol=0.1, atol=1e-30)
        assert np.all(X[:, :, :2].var(axis=0) < 1e-25)
    assert model.noiseless.tolist() == [True, True, False, False, False]


def test_gaussian_twin_of_the_official_init_has_the_official_variance():
    cfg = Config(init="official-gaussian", d=300)
    W0, p0 = attnsim.init_params(cfg)
    W_off, _ = attnsim.init_params(cfg.replace(init="official"))
    assert not np.any(p0)
    n = W0.size
    # Var of N(0, 1/(3d)) entries: 1/(3d), estimated from d^2 draws (SE of the variance 2 s^4 / n).
    s2 = 1.0 / (3 * cfg.d)
    assert abs(W0.var() - s2) < 4 * s2 * np.sqrt(2.0 / n)
    assert abs(W_off.var() - s2) < 4 * s2 * np.sqrt(0.8 / n)      # the uniform's: Var(U^2)/n = 0.8 s^4 / n
    assert stats.kurtosis(W0.ravel()) == pytest.approx(0.0, abs=0.05)   # Gaussian, not the uniform's -1.2


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("fields, match", [
    (dict(init="official"), r"init='official'.*not rotation-invariant.*official-gaussian"),
    (dict(test_metrics="sample", n_test=10), r"space='implicit' has no d-dimensional test set.*population"),
    (dict(d=100), r"d must be >= 485 .*space='implicit'; got d=100; use space='explicit'"),
    (dict(space="virtual"), r"space must be one of 'explicit', 'implicit'; got 'virtual'"),
])
def test_implicit_space_refuses_what_it_cannot_draw_exactly(fields, match):
    with pytest.raises(ConfigError, match=match):
        Config(**{**IMPLICIT, "d": 10 ** 6, **fields})


def test_implicit_space_refuses_the_primal_engine_probe_arrays_and_d_vectors():
    cfg = Config(**IMPLICIT, d=10 ** 6, n_train=4, T=3, steps=3)
    with pytest.raises(ConfigError, match=r"engine='primal' needs p and W as d-vectors.*engine='auto' or 'dual'"):
        attnsim.simulate(cfg, engine="primal")
    with pytest.raises(ConfigError, match=r"probes must be None, 'noise' or coordinates of shape \(m, \d+\) with space='implicit'; got shape \(1, 10\)"):
        attnsim.simulate(cfg, probes=np.zeros((1, 10)))
    for fn in (attnsim.make_data, attnsim.init_params):
        with pytest.raises(ConfigError, match=r"draws d-dimensional arrays, which space='implicit' never forms"):
            fn(cfg)


# ----------------------------------------------------------------------------- runs


def test_implicit_run_is_deterministic_and_the_same_draw_for_every_coordinate_system():
    cfg = Config(**IMPLICIT, d=10 ** 9, n_train=6, T=4, steps=50, lr=1e-9)
    a, b = attnsim.simulate(cfg), attnsim.simulate(cfg)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.test_loss, b.test_loss)
    assert a.p is None and a.W is None and a.nu is None
    # GD and the flow set up on one draw: the lazily drawn W0 is frozen before either asks for it.
    gd, flow = attnsim.prepare_run(cfg), attnsim.prepare_run(cfg, dynamics="flow")
    assert np.array_equal(gd.coords.Gqq, flow.coords.Gqq) and np.array_equal(gd.coords.Gxx, flow.coords.Gxx)
    # The training data do not depend on the initialisation stream (as in the explicit space).
    other = attnsim.prepare_run(cfg.replace(init_seed=7))
    assert np.array_equal(other.coords.Gxx, gd.coords.Gxx) and not np.array_equal(other.coords.Gqq, gd.coords.Gqq)


def test_implicit_scales_follow_d_at_a_billion():
    # ||x||^2 / d -> sigma^2, ||W0 x||^2 / ||x||^2 -> d s^2 = 1/3 for the official variance.
    cfg = Config(**IMPLICIT, d=10 ** 9, n_train=6, T=4, steps=1, lr=1e-9)
    run = attnsim.prepare_run(cfg)
    Gxx, Gqq = run.coords.Gxx, run.coords.Gqq
    d = cfg.d
    assert np.allclose(np.diag(Gxx) / d, 1.0, atol=5 * np.sqrt(2 / d))
    keys2 = np.diag(Gqq)[1:]
    assert np.allclose(keys2 / np.diag(Gxx), 1 / 3, rtol=5 * np.sqrt(2 / d) * 3)
    off = Gxx[~np.eye(Gxx.shape[0], dtype=bool)]
    assert np.max(np.abs(off)) < 6 * np.sqrt(d) and np.std(off) == pytest.approx(np.sqrt(d), rel=0.2)


def test_implicit_checkpoint_resumes_bit_identically(tmp_path):
    cfg = Config(**IMPLICIT, d=10 ** 7, n_train=4, T=3, steps=400, lr=1e-6)
    whole = attnsim.simulate(cfg, save_at=attnsim.SaveAt.linear(400, 9))
    run = attnsim.prepare_run(cfg, save_at=attnsim.SaveAt.linear(400, 9))
    run.warm_up()
    while run.step < 170:
        run.advance()
    attnsim.save_checkpoint(tmp_path / "ck.npz", run, cfg)
    rest = attnsim.restore(attnsim.load_checkpoint(tmp_path / "ck.npz"))
    rest.run()
    res = rest.result(cfg)
    for name in ("scores", "attention", "test_loss", "query_norm", "frak_cum", "p_norm", "w_dist"):
        assert np.array_equal(getattr(res, name), getattr(whole, name), equal_nan=True), name


def test_cli_runs_the_implicit_space_at_a_billion(tmp_path):
    out = tmp_path / "imp.npz"
    proc = subprocess.run([sys.executable, "-m", "attnsim", "run", "--space", "implicit", "--init", "official-gaussian",
                           "--test-metrics", "population", "--n-test", "0", "--d", "1e9", "--lr", "1e-8",
                           "--steps", "200", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = attnsim.load(out)
    assert res.config.space == "implicit" and res.config.d == 10 ** 9 and res.p is None
    assert out.stat().st_size < 2_000_000
    bad = subprocess.run([sys.executable, "-m", "attnsim", "run", "--space", "implicit", "--d", "1e9",
                          "--out", str(tmp_path / "bad.npz")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    assert "official-gaussian" in bad.stderr and not (tmp_path / "bad.npz").exists()


# ----------------------------------------------------------------------------- the law


def _small(**fields):
    # N = 12 tokens at d = 48 (the implicit space needs d >= 3N + 5 = 41 with a random W0).
    return Config(**{**IMPLICIT, "n_train": 3, "T": 4, "d": 48, "signal_norm": 3.0, "eta": 0.0, "lr": 0.05,
                     "steps": 5, **fields})


def _recorded(cfg, seeds):
    """Per seed: what a run records after ``cfg.steps`` GD steps, as columns of one array."""
    rows = []
    for s in seeds:
        run = attnsim.prepare_run(cfg.replace(seed=s), save_at=[0, cfg.steps])
        run.run()
        r = run.result(cfg)
        rows.append([r.query_norm[0], r.query_norm[-1], r.query_probe[-1, 0], r.query_probe[-1, 1], r.p_norm[-1],
                     r.scores[-1, 0, 0], r.scores[-1, 1, 2], r.test_loss[-1], r.train_loss[-1], r.w_dist[-1]])
    return np.array(rows)


NAMES = ("|q0|", "|q|", "<q,mu+>", "<q,mu->", "|p|", "z_00", "z_12", "population test loss", "train loss", "|W-W0|")


def _two_sample(cfg, n_draws, alpha):
    expl = _recorded(cfg.replace(space="explicit"), range(n_draws))
    impl = _recorded(cfg, range(10 ** 6, 10 ** 6 + n_draws))
    worst = min((stats.ks_2samp(expl[:, j], impl[:, j]).pvalue, NAMES[j]) for j in range(len(NAMES)))
    assert worst[0] > alpha, f"{worst[1]}: explicit and implicit laws differ (KS p = {worst[0]:.2e}) for {cfg}"
    return worst


def test_implicit_runs_have_the_law_of_explicit_runs():
    # 300 runs a side (2000 in the slow twin below, for three models): KS on every recorded
    # quantity, Bonferroni over 10.
    _two_sample(_small(), 300, 1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fields", [dict(), dict(trainable="p", init="gaussian", sigma_p=0.3, sigma_w=0.4,
                                                   noise="orthogonal"), dict(w0="identity")])
def test_implicit_runs_have_the_law_of_explicit_runs_2000_draws(fields):
    _two_sample(_small(**fields), 2000, 1e-4)


def test_the_law_test_rejects_a_planted_wrong_degree_of_freedom(monkeypatch):
    # chi_{d-k+6} instead of chi_{d-k}: every fresh direction slightly too long. A test of the
    # law that passes this is not a test.
    from attnsim import _implicit

    real = _implicit.VirtualSpace._chi

    def planted(self, rng):
        return real(self, rng) * np.sqrt((self.d - self.k + 6) / (self.d - self.k))
    monkeypatch.setattr(_implicit.VirtualSpace, "_chi", planted)
    with pytest.raises(AssertionError, match="explicit and implicit laws differ"):
        _two_sample(_small(), 300, 1e-4)


@pytest.mark.parametrize("fields", [dict(init="gaussian", sigma_p=0.2, sigma_w=0.3, head_init="gaussian", sigma_nu=0.1,
                                         trainable="Wp+nu"),
                                    dict(w0="identity", head_init="gaussian", sigma_nu=0.1, trainable="p+nu"),
                                    dict(trainable="p", noise="orthogonal")])
def test_implicit_dimension_is_enough_at_the_smallest_d_allowed(fields):
    # At d = implicit_dimension every direction the set-up may touch must fit (a full basis raises).
    cfg = Config(**{**IMPLICIT, "n_train": 4, "T": 3, "steps": 3, "lr": 1e-3, **fields})
    cfg = cfg.replace(d=cfg.implicit_dimension)
    run = attnsim.prepare_run(cfg)
    run.run()
    assert run.result(cfg).final_step == 3
    with pytest.raises(ConfigError, match=rf"d must be >= {cfg.implicit_dimension} "):
        cfg.replace(d=cfg.implicit_dimension - 1)


def test_the_implicit_space_defaults_to_population_metrics_and_replace_follows_the_space():
    cfg = Config(space="implicit", init="official-gaussian", d=10 ** 9)
    assert (cfg.test_metrics, cfg.n_test) == ("population", 0)
    there = Config(init="official-gaussian").replace(space="implicit", d=10 ** 6)
    assert (there.test_metrics, there.n_test) == ("population", 0)
    back = there.replace(space="explicit", d=300)      # the same metrics as the implicit run's
    assert (back.test_metrics, back.n_test) == ("population", 0)
    # an explicit choice is kept, and refused where it cannot hold
    assert Config(test_metrics="population").replace(d=300).test_metrics == "population"
    with pytest.raises(ConfigError, match=r"space='implicit' has no d-dimensional test set"):
        Config(test_metrics="sample", space="implicit", init="official-gaussian", d=10 ** 6)


def test_implicit_space_runs_ngd_max_margin_noise_probes_and_batches():
    cfg = Config(space="implicit", init="official-gaussian", d=10 ** 8, n_train=6, T=4, steps=60, lr=1e-7,
                 trainable="p")
    # normalised GD: every step has Euclidean length lr, so ||p(tau) - p0|| <= lr tau, = at tau = 1
    ngd = attnsim.simulate(cfg.replace(optimizer="ngd", lr=0.05), save_at=[0, 1, 60])
    assert ngd.p_norm[1] == pytest.approx(0.05, rel=1e-12) and ngd.p_norm[-1] <= 0.05 * 60 * (1 + 1e-12)
    # the att-SVM record: cosines in [-1, 1] (undefined at p0 = 0), the margin of the worst sample <= 1
    # (p^mm has the largest), and p(tau) turning towards p^mm on the way to tau = 1e9
    mm = attnsim.simulate(cfg.replace(steps=10 ** 9, lr=1e-6), dynamics="flow", max_margin="optimal")
    assert np.isnan(mm.mm_cos[0]) and np.all(np.abs(mm.mm_cos[1:]) <= 1 + 1e-12)
    assert np.all(mm.mm_margin[1:].min(axis=1) <= 1 + 1e-9) and mm.mm_cos[-1] > mm.mm_cos[1]
    # noise probes: the decomposition's coordinates reproduce the recorded <W^T p, r> through the probes' Gram
    res = attnsim.simulate(cfg.replace(trainable="Wp"), probes="noise")
    dec = attnsim.decompose_query(res)
    basis = attnsim.noise_probes(res.config)
    gram = basis @ basis.T
    coef = np.concatenate([dec.signal / np.diag(gram)[:2], dec.noise.reshape(len(res.steps), -1)
                           / np.diag(gram)[2:]], axis=1)
    assert np.allclose(coef @ gram, res.query_probe, rtol=1e-9, atol=1e-9 * np.abs(res.query_probe).max())
    # batches: the same arrays as one at a time
    many = attnsim.simulate_many([cfg, cfg.replace(seed=1)], workers=1)
    assert np.array_equal(many[0].scores, attnsim.simulate(cfg).scores)
