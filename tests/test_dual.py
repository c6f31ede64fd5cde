"""Dual (Gram) coordinates against primal coordinates and the NumPy twins over long runs.

The three implementations of the same GD iterates (numba dual, numba primal, NumPy
twin of the dual kernel) must give the same trajectories, to 1e-9 relative, over at
least 10^4 steps: loss, margins, attention, and the test-set figures when there is a
test set. Problems are drawn by hypothesis in both regimes N = nT < d (where the dual
engine is the fast one) and N > d (where it carries more numbers than the primal).
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsim import SaveAt, prepare, train
from attnsim._problem import Problem
from tools.coords_grid import TRAINABLE

LONG = 10_000
#: (rtol, atol) for the trajectories; atol only matters where a value is ~0
#: (attention mass on a token that has been switched off).
TOL = dict(rtol=1e-9, atol=1e-12)


def _problem(seed, n, T, d, n_test, lr_scale):
    """A random problem whose scores stay O(1-10) for 10^4 steps at the returned lr."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d)) / np.sqrt(d)
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    y[rng.random(n) < 0.2] *= -1.0                       # some "noisy" labels
    W0 = rng.uniform(-1, 1, (d, d)) / np.sqrt(d)
    p0 = rng.standard_normal(d) / np.sqrt(d)
    nu = rng.standard_normal(d)
    arrays = dict(X=X, y=y, W0=W0, p0=p0, nu=nu)
    if n_test:
        arrays.update(X_test=rng.standard_normal((n_test, T, d)) / np.sqrt(d),
                      y_test=np.where(np.arange(n_test) % 2 == 0, 1.0, -1.0))
    return arrays, lr_scale


def _run_all(arrays, lr, steps, trainable, n_saves=40, twin=True, **opt):
    kw = dict(lr=lr, steps=steps, trainable=trainable, save_at=SaveAt.log(steps, n_saves), **opt)
    out = {"dual": train(**arrays, **kw, engine="dual"), "primal": train(**arrays, **kw, engine="primal")}
    if twin:
        out["numpy dual"] = train(**arrays, **kw, engine="dual", backend="numpy")
    return out


def _assert_same_trajectory(results, has_test, where):
    ref = results["primal"]
    assert ref.success, ref.message
    for name, res in results.items():
        assert res.success, f"{name}: {res.message}; {where}"
        np.testing.assert_array_equal(res.steps, ref.steps)
        for field in ("train_loss", "margins", "attention", "scores", "frak_cum", "p_norm", "query_norm",
                      "p_probe", "query_probe"):
            np.testing.assert_allclose(getattr(res, field), getattr(ref, field), **TOL,
                                       err_msg=f"{field}: {name} vs primal; {where}")
        if has_test:
            for field in ("test_loss", "test_acc"):
                np.testing.assert_allclose(getattr(res, field), getattr(ref, field), **TOL,
                                           err_msg=f"{field}: {name} vs primal; {where}")
        np.testing.assert_allclose(res.w_dist, ref.w_dist, rtol=1e-7, atol=1e-12,
                                   err_msg=f"w_dist: {name} vs primal; {where}")
        np.testing.assert_allclose(res.p, ref.p, rtol=1e-9, atol=1e-11, err_msg=f"p: {name}; {where}")
        np.testing.assert_allclose(res.nu, ref.nu, rtol=1e-9, atol=1e-11, err_msg=f"nu: {name}; {where}")
        for field in ("nu_norm", "nu_probe"):
            np.testing.assert_allclose(getattr(res, field), getattr(ref, field), **TOL,
                                       err_msg=f"{field}: {name} vs primal; {where}")
        # ||nu - nu0|| from beta^T Gxx beta: a difference of squares in the dual, as w_dist
        np.testing.assert_allclose(res.nu_dist, ref.nu_dist, rtol=1e-7, atol=1e-12,
                                   err_msg=f"nu_dist: {name} vs primal; {where}")
        assert (res.W is None) == (ref.W is None), f"W stored only when trained; {where}"
        if res.W is not None:
            np.testing.assert_allclose(res.W, ref.W, rtol=1e-9, atol=1e-11, err_msg=f"W: {name}; {where}")


# N < d: n*T <= 12 tokens in d in [16, 24]; N > d: n*T >= 15 tokens in d in [3, 6].
SHAPES = {
    "N<d": dict(n=st.integers(2, 4), T=st.integers(2, 3), d=st.integers(16, 24)),
    "N>d": dict(n=st.integers(5, 7), T=st.integers(3, 4), d=st.integers(3, 6)),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("trainable", TRAINABLE)
@pytest.mark.parametrize("with_test", [False, True], ids=["no-test", "test"])
@settings(max_examples=2)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), lr=st.sampled_from([0.2, 1.0]))
def test_dual_primal_and_twin_agree_over_ten_thousand_steps(shape, trainable, with_test, data, seed, lr):
    n, T, d = (data.draw(SHAPES[shape][k], label=k) for k in ("n", "T", "d"))
    arrays, _ = _problem(seed, n, T, d, n_test=5 if with_test else 0, lr_scale=lr)
    results = _run_all(arrays, lr, LONG, trainable)
    where = (f"reproduce with _problem({seed}, {n}, {T}, {d}, {5 if with_test else 0}, {lr}), "
             f"trainable={trainable!r}, steps={LONG}")
    assert results["dual"].engine == "dual" and results["primal"].engine == "primal"
    _assert_same_trajectory(results, with_test, where)


@pytest.mark.parametrize("trainable", ["Wp", "p", "Wp+nu", "p+nu"])
@pytest.mark.parametrize("ngd_norm", ["joint", "block"])
@settings(max_examples=1)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(sorted(SHAPES)))
def test_normalised_gd_dual_primal_and_twin_agree_over_ten_thousand_steps(trainable, ngd_norm, data, seed, shape):
    """optimizer="ngd": the norms from the Grams (c^T Gkk c, c^T S c, P c^T Gxx c, h^T Gxx h) and the
    per-step (a_p, a_W) of the blocked (b, M) recurrence against the primal norms of the vectors.
    Steps of 2e-3 keep the softmax gaps moderate (every step has length lr, so the parameters
    grow linearly; past gaps of ~700 the coefficients underflow and no float64 direction is exact)."""
    n, T, d = (data.draw(SHAPES[shape][k], label=k) for k in ("n", "T", "d"))
    arrays, _ = _problem(seed, n, T, d, n_test=5, lr_scale=2e-3)
    results = _run_all(arrays, 2e-3, LONG, trainable, optimizer="ngd", ngd_norm=ngd_norm)
    _assert_same_trajectory(results, True, f"_problem({seed}, {n}, {T}, {d}, 5, 2e-3), trainable={trainable!r}, "
                                           f"optimizer='ngd', ngd_norm={ngd_norm!r}, steps={LONG}")


def _few_saves_run(arrays, trainable, steps, few, probes, **kw):
    """The run of ``few`` saves, asserted to read the query by matvec (no W0^T product formed)."""
    run = prepare(**arrays, lr=1.0, steps=steps, trainable=trainable, save_at=few, probes=probes, engine="dual", **kw)
    assert run.coords.query_matvec
    assert not any(hasattr(run.coords, name) for name in ("Q_norm", "R_q", "G_AA", "R_q1"))
    run.warm_up()
    run.run()
    return run.result()


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_few_saves_read_the_query_by_matvec_as_the_grams_and_the_primal_engine_do(trainable):
    """No test set and 8 saves or fewer per N tokens: the dual set-up skips ``W0^T`` times its basis
    (an O(d^2 N) product) and forms ``q = W^T p`` at each save (``_coords.cost.query_by_matvec``).
    Its norm and probes against the same run saved often enough to form the product (everything
    else bit-identical), primal coordinates (which form ``q`` too) and the materialised W, p."""
    arrays, _ = _problem(3, 6, 4, 30, n_test=0, lr_scale=1.0)         # N = 24: 3 saves read by matvec
    probes = np.random.default_rng(1).standard_normal((2, 30))
    steps, few = 3000, [0, 100, 3000]
    res = _few_saves_run(arrays, trainable, steps, few, probes)
    kw = dict(lr=1.0, steps=steps, trainable=trainable, probes=probes)
    grams = train(**arrays, **kw, save_at=sorted(set(few) | set(range(0, steps + 1, 75))), engine="dual")
    primal = train(**arrays, **kw, save_at=few, engine="primal")
    at = np.searchsorted(grams.steps, few)
    for name in ("scores", "train_loss", "p_norm", "w_dist", "p_probe", "nu_norm", "frak_cum"):
        np.testing.assert_array_equal(getattr(res, name), getattr(grams, name)[at], err_msg=name)
    for other, rtol in ((grams, 1e-13), (primal, 1e-11)):
        np.testing.assert_allclose(res.query_norm, other.query_norm[np.searchsorted(other.steps, few)], rtol=rtol)
        np.testing.assert_allclose(res.query_probe, other.query_probe[np.searchsorted(other.steps, few)],
                                   rtol=rtol, atol=rtol * np.abs(res.query_probe).max())
    q = (arrays["W0"] if res.W is None else res.W).T @ res.p
    assert res.query_norm[-1] == pytest.approx(np.linalg.norm(q), rel=1e-13)
    np.testing.assert_allclose(res.query_probe[-1], probes @ q, rtol=1e-13, atol=1e-13 * np.abs(q).max())


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_a_zero_query_is_read_without_reading_W0(trainable, monkeypatch):
    """p0 = 0 (the official init): at step 0 the query ``W0^T p0`` is exactly 0, so the warm-up's and the
    first save's read-outs skip the d^2 matvec; the later saves still form it, and every save reads
    what the primal engine does."""
    arrays, _ = _problem(3, 6, 4, 30, n_test=0, lr_scale=1.0)
    arrays["p0"] = np.zeros(30)
    probes = np.random.default_rng(1).standard_normal((2, 30))
    steps, few = 3000, [0, 100, 3000]
    primal = train(**arrays, lr=1.0, steps=steps, trainable=trainable, probes=probes, save_at=few, engine="primal")
    vectors, w0t_mul = [], Problem.w0t_mul

    def counted(pb, A):
        if A.ndim == 1:
            vectors.append(A.copy())
        return w0t_mul(pb, A)

    monkeypatch.setattr(Problem, "w0t_mul", counted)
    res = _few_saves_run(arrays, trainable, steps, few, probes)
    assert len(vectors) == 2 and all(v.any() for v in vectors), [np.abs(v).max() for v in vectors]
    assert res.query_norm[0] == 0.0 and not res.query_probe[0].any()
    np.testing.assert_allclose(res.query_norm, primal.query_norm, rtol=1e-11)
    np.testing.assert_allclose(res.query_probe, primal.query_probe, rtol=1e-11,
                               atol=1e-11 * np.abs(res.query_probe).max())


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_a_flow_run_with_few_saves_reads_the_query_of_its_materialised_parameters(trainable):
    arrays, _ = _problem(3, 6, 4, 30, n_test=0, lr_scale=1.0)
    probes = np.random.default_rng(1).standard_normal((2, 30))
    res = _few_saves_run(arrays, trainable, 10**6, [0, 100, 10**6], probes, dynamics="flow")
    assert res.success, res.message
    q = (arrays["W0"] if res.W is None else res.W).T @ res.p
    assert res.query_norm[-1] == pytest.approx(np.linalg.norm(q), rel=1e-13)
    np.testing.assert_allclose(res.query_probe[-1], probes @ q, rtol=1e-13, atol=1e-13 * np.abs(q).max())
    assert res.query_norm[0] == pytest.approx(np.linalg.norm(arrays["W0"].T @ arrays["p0"]), rel=1e-15)


@pytest.mark.parametrize("change, reads_by_matvec", [
    ({}, True),
    ({"save_at": [0, 10, 20, 30]}, False),                  # 8 x 4 saves > N = 24: the product pays
    ({"X_test": "test set"}, False),                         # the test scores read the product anyway
    ({"W0": None}, False),                                   # the identity: the product is free
])
def test_the_query_is_read_by_matvec_only_when_that_is_cheaper(change, reads_by_matvec):
    arrays, _ = _problem(3, 6, 4, 30, n_test=2, lr_scale=1.0)
    kw = dict(lr=1.0, steps=30, save_at=[0, 10, 30], engine="dual")
    if "X_test" not in change:
        del arrays["X_test"], arrays["y_test"]
    arrays.update({k: v for k, v in change.items() if k in arrays and k != "X_test"})
    kw.update({k: v for k, v in change.items() if k == "save_at"})
    for trainable in TRAINABLE:
        assert prepare(**arrays, **kw, trainable=trainable).coords.query_matvec is reads_by_matvec, trainable


def test_dual_tracks_primal_at_the_official_shape():
    """N = 160 tokens in d = 400: the dual Wp recurrences (S, ||p||^2, b, M) stay exact."""
    rng = np.random.default_rng(7)
    n, T, d = 20, 8, 400
    arrays, _ = _problem(int(rng.integers(2**31)), n, T, d, n_test=30, lr_scale=1.0)
    results = _run_all(arrays, 1.0, 2000, "Wp", twin=False)
    _assert_same_trajectory(results, True, "official shape, d=400, 2000 steps")


@pytest.mark.slow
@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=int(os.environ.get("ATTNSIM_DUAL_EXAMPLES", "6")))
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8), T=st.integers(2, 5), d=st.integers(3, 40),
       with_test=st.booleans())
def test_dual_and_primal_agree_over_a_hundred_thousand_steps(trainable, seed, n, T, d, with_test):
    arrays, _ = _problem(seed, n, T, d, n_test=7 if with_test else 0, lr_scale=0.5)
    results = _run_all(arrays, 0.5, 100_000, trainable, twin=False)
    _assert_same_trajectory(results, with_test, f"_problem({seed}, {n}, {T}, {d}, {7 if with_test else 0}, 0.5)")


@pytest.mark.parametrize("trainable", ["Wp+nu", "p+nu"])
def test_dual_tracks_primal_with_the_head_at_the_official_shape(trainable):
    """N = 160 tokens in d = 400 with the head trained: beta, v = X nu0 + Gxx beta stay exact."""
    rng = np.random.default_rng(8)
    arrays, _ = _problem(int(rng.integers(2**31)), 20, 8, 400, n_test=30, lr_scale=1.0)
    results = _run_all(arrays, 1.0, 2000, trainable, twin=False)
    assert results["dual"].nu_dist[-1] > 0.1 * np.linalg.norm(arrays["nu"]), "the head must move"
    _assert_same_trajectory(results, True, f"official shape, d=400, 2000 steps, trainable={trainable!r}")


def test_dual_stops_at_the_same_non_finite_step_as_primal():
    """A step size that overflows the joint update: both engines report divergence at the
    same step and keep what they recorded before it. (With p alone the scores only grow
    linearly and stay finite, so there is nothing to compare there.)"""
    arrays, _ = _problem(3, 4, 3, 10, n_test=0, lr_scale=1.0)
    arrays["X"] = arrays["X"] * 30.0
    kw = dict(lr=1e300, steps=50, trainable="Wp", save_at=SaveAt.linear(50, 51))
    dual = train(**arrays, **kw, engine="dual")
    primal = train(**arrays, **kw, engine="primal")
    assert dual.status == primal.status == "diverged"
    assert dual.final_step == primal.final_step
    assert dual.message.startswith(f"diverged at step {dual.final_step + 1}")
    assert np.all(np.isfinite(dual.train_loss))


def test_kernel_state_is_the_whole_iterate():
    """Splitting a run into advance() chunks of any size gives the same bits as one call."""
    from attnsim._engine import prepare

    arrays, _ = _problem(11, 3, 3, 12, n_test=4, lr_scale=0.5)
    outs = []
    for chunks in ([3000], [1, 2, 997, 2000]):
        run = prepare(**arrays, lr=0.5, steps=3000, trainable="Wp", engine="dual")
        frak = np.zeros(3)
        for k in chunks:
            assert run.coords.advance(k, frak) == k
        outs.append({k: v.copy() for k, v in run.coords.state.items()} | {"frak": frak})
    for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k], err_msg=k)


# ------------------------------------------------------------------ heavy-ball momentum


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=1)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(sorted(SHAPES)),
       beta=st.sampled_from([0.5, 0.9]))
def test_momentum_dual_primal_and_twin_agree_over_ten_thousand_steps(trainable, data, seed, shape, beta):
    """optimizer="momentum": the velocity as dual coefficients (``vc``, ``vh``; ``bv``, ``Mv`` with W) against
    the dense primal velocities and the NumPy twin. lr (1 - beta) = 0.05 keeps the heavy ball's effective
    step at GD's 0.5 (see ``test_dual_and_primal_agree_over_a_hundred_thousand_steps``)."""
    n, T, d = (data.draw(SHAPES[shape][k], label=k) for k in ("n", "T", "d"))
    lr = 0.05 * (1 - beta) / 0.1
    arrays, _ = _problem(seed, n, T, d, n_test=5, lr_scale=lr)
    results = _run_all(arrays, lr, LONG, trainable, optimizer="momentum", momentum=beta)
    assert results["dual"].extra == {"optimizer": "momentum", "momentum": beta}
    _assert_same_trajectory(results, True, f"_problem({seed}, {n}, {T}, {d}, 5, {lr}), trainable={trainable!r}, "
                                           f"optimizer='momentum', momentum={beta}, steps={LONG}")


@pytest.mark.parametrize("engine", ["primal", "dual"])
@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=3)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 4), T=st.integers(2, 4), d=st.integers(2, 7),
       beta=st.floats(0.0, 0.95), w0_identity=st.booleans())
def test_momentum_matches_a_plain_numpy_heavy_ball(engine, trainable, seed, n, T, d, beta, w0_identity):
    """Every score of 150 heavy-ball steps, and the final W, p, nu, against ``plain_gd.gd_trajectory``
    (a loop from DESIGN.md §1-2 that shares no code with attnsim); W0 = I takes the shared-Gram path."""
    from tools.plain_gd import gd_trajectory

    arrays, _ = _problem(seed, n, T, d, n_test=0, lr_scale=0.3)
    if w0_identity:
        arrays["W0"] = None
    steps = 150
    res = train(**arrays, lr=0.3, steps=steps, trainable=trainable, engine=engine, optimizer="momentum",
                momentum=beta, save_at=SaveAt.linear(steps, steps + 1))
    W0 = np.eye(d) if arrays["W0"] is None else arrays["W0"]
    scores, W, p, nu = gd_trajectory(arrays["X"], arrays["y"], W0, arrays["p0"], arrays["nu"], 0.3, steps,
                                     trainable, final_nu=True, momentum=beta)
    where = f"_problem({seed}, {n}, {T}, {d}, 0, 0.3), engine={engine!r}, beta={beta}, W0=I: {w0_identity}"
    assert res.success, res.message
    np.testing.assert_allclose(res.scores, scores, rtol=1e-9, atol=1e-12, err_msg=where)
    np.testing.assert_allclose(res.p, p, rtol=1e-9, atol=1e-12, err_msg=where)
    np.testing.assert_allclose(res.nu, nu, rtol=1e-9, atol=1e-12, err_msg=where)
    if res.W is not None:
        np.testing.assert_allclose(res.W, W, rtol=1e-9, atol=1e-12, err_msg=where)


@pytest.mark.parametrize("engine", ["primal", "dual"])
@pytest.mark.parametrize("trainable", TRAINABLE)
def test_momentum_matches_torch_sgd(engine, trainable):
    """``torch.optim.SGD(momentum=beta)`` on the same loss (float64, autograd): the reference the convention
    is named after. Runs where torch is installed (the ``bench`` extra)."""
    torch = pytest.importorskip("torch")
    arrays, _ = _problem(5, 4, 3, 9, n_test=0, lr_scale=0.3)
    lr, beta, steps = 0.3, 0.8, 100
    res = train(**arrays, lr=lr, steps=steps, trainable=trainable, engine=engine, optimizer="momentum",
                momentum=beta, save_at=SaveAt.linear(steps, 2))
    t = {k: torch.tensor(arrays[k], dtype=torch.float64) for k in ("X", "y", "W0", "p0", "nu")}
    W, p, nu = (t["W0"].clone().requires_grad_(), t["p0"].clone().requires_grad_(), t["nu"].clone().requires_grad_())
    params = [p] + ([W] if trainable.startswith("Wp") else []) + ([nu] if trainable.endswith("+nu") else [])
    opt = torch.optim.SGD(params, lr=lr, momentum=beta)
    for _ in range(steps):
        opt.zero_grad()
        s = torch.softmax(t["X"] @ (W.T @ p), dim=1)
        f = (s * (t["X"] @ nu)).sum(dim=1)
        torch.nn.functional.softplus(-t["y"] * f).mean().backward()
        opt.step()
    with torch.no_grad():
        scores = (t["X"] @ (W.T @ p)).numpy()
    np.testing.assert_allclose(res.scores[-1], scores, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.p, p.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.nu, nu.detach().numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("engine,trainable", [("dual", "Wp+nu"), ("dual", "p"), ("primal", "Wp"),
                                              ("primal", "p+nu")])
def test_momentum_resumes_from_a_checkpoint_bit_identically(tmp_path, engine, trainable):
    """The velocity is state: a run checkpointed mid-way and resumed is the uninterrupted run, bit for bit."""
    import dataclasses

    from attnsim import Config, Result, prepare_run, resume, save_checkpoint

    cfg = Config(d=20, n_train=6, T=4, n_test=10, steps=1500, trainable=trainable, optimizer="momentum",
                 momentum=0.9, lr=5e-3)
    save = SaveAt.log(cfg.steps, 30)
    run = prepare_run(cfg, save, engine=engine)
    run.run()
    ref = run.result(cfg)
    assert ref.success
    run = prepare_run(cfg, save, engine=engine)
    while run.step < 737:
        run.advance(rate=100.0, max_seconds=1.0)
    assert any(k in run.coords.state for k in ("vc", "VW", "bv")), "the velocity is part of the state"
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    got = resume(tmp_path / "ck.npz")
    for f in dataclasses.fields(Result):
        a, b = getattr(got, f.name), getattr(ref, f.name)
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes(), f"{f.name} differs after resume ({engine}, {trainable})"
