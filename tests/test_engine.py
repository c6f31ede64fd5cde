"""``train`` end to end: against the plain NumPy GD loop, across engines and backends,
and the internal consistency of every recorded quantity."""

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from attnsim import ConfigError, SaveAt, train
from tools import rounding
from tools.plain_gd import gd_trajectory
from attnsim._coords import REGISTRY
from tools.coords_grid import ENGINES, GD


def make_problem(seed, n=5, T=4, d=7, n_test=6, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    W0 = rng.uniform(-1, 1, (d, d)) / np.sqrt(d) * scale
    p0 = rng.standard_normal(d) * scale / np.sqrt(d)
    nu = rng.standard_normal(d)
    X_test = rng.standard_normal((n_test, T, d))
    y_test = np.where(np.arange(n_test) % 2 == 0, 1.0, -1.0)
    probes = rng.standard_normal((2, d))
    return dict(X=X, y=y, W0=W0, p0=p0, nu=nu), dict(X_test=X_test, y_test=y_test, probes=probes)


def plain_figures(arrays, extra, lr, steps, trainable, **kw):
    """Everything the comparisons below read, from the plain loop and the plain formulas: the
    trajectory's scores, the final W, p, nu, and the last save's figures (``rounding.spread``'s outputs)."""
    scores, W, p, nu = gd_trajectory(arrays["X"], arrays["y"], arrays["W0"], arrays["p0"], arrays["nu"], lr,
                                     steps, trainable, final_nu=True, **kw)
    q = W.T @ p
    et = np.exp(extra["X_test"] @ q)
    f_test = np.sum(et / et.sum(axis=1, keepdims=True) * (extra["X_test"] @ nu), axis=1)
    e = np.exp(scores)                        # unsaturated here: the plain formulas are exact enough
    attention = e / e.sum(axis=2, keepdims=True)
    r = extra["probes"][0] - extra["probes"][1]
    return dict(scores=scores, attention=attention, W=W, p=p, nu=nu,
                test_margins=extra["y_test"] * f_test,
                test_loss=np.mean(np.log(1.0 + np.exp(-extra["y_test"] * f_test))),
                margins=arrays["y"] * np.sum(attention[-1] * (arrays["X"] @ nu), axis=1),
                p_probe=extra["probes"] @ p, query_probe=extra["probes"] @ q, p_norm=np.linalg.norm(p),
                query_norm=np.linalg.norm(q), w_dist=np.linalg.norm(W - arrays["W0"]),
                nu_dist=np.linalg.norm(nu - arrays["nu"]), nu_norm=np.linalg.norm(nu), nu_probe=extra["probes"] @ nu,
                nu_align=nu @ r / np.linalg.norm(nu) / np.linalg.norm(r))


def rounding_allowed(arrays, extra, lr, steps, trainable, **kw):
    """``(plain, check)``: the plain figures, and ``check(name, actual, rtol, floor)`` comparing a
    recorded figure with its plain value within ``rtol`` plus ``tools.rounding``'s allowance (100
    times what the plain loop itself moves when X, W0, p0, nu move by one ulp). Large steps make
    some 30-step trajectories amplify rounding a millionfold; cases that can say nothing at the
    1e-5 level (a relative spread above 1e-7) are not drawn (``assume``)."""
    plain, spreads = rounding.spread(lambda a: plain_figures(a, extra, lr, steps, trainable, **kw), arrays,
                                     movable=("X", "W0", "p0", "nu"))
    assume(rounding.testable(spreads, plain))

    def check(name, actual, rtol=1e-9, floor=1e-11):
        rounding.assert_close(actual, plain[name], rtol=rtol, atol=rounding.allowed(spreads[name], floor),
                              err_msg=name)

    return plain, check


# The head-trained sets have their own version below, which also checks the head's figures.
@pytest.mark.parametrize("engine, trainable", [(e, t) for e, t in GD if not t.endswith("+nu")])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), T=st.integers(1, 5), d=st.integers(2, 9),
       lr=st.sampled_from([0.05, 0.5, 2.0]))
def test_train_matches_plain_numpy_gd(engine, trainable, seed, n, T, d, lr):
    arrays, extra = make_problem(seed, n, T, d)
    steps = 30
    plain, check = rounding_allowed(arrays, extra, lr, steps, trainable)
    res = train(**arrays, **extra, lr=lr, steps=steps, trainable=trainable, engine=engine,
                save_at=SaveAt.linear(steps, steps + 1))
    assert res.engine == engine and res.success
    np.testing.assert_array_equal(res.steps, np.arange(steps + 1))
    check("scores", res.scores)
    check("attention", res.attention, floor=1e-12)
    check("p", res.p)
    if trainable == "Wp":
        check("W", res.W)
    else:
        assert res.W is None                  # not trained: not stored (it is W0)
    # Test-set figures and probes at the end, from the final parameters, by the plain formulas.
    check("test_loss", res.test_loss[-1], floor=0.0)
    assert res.test_acc[-1] == np.mean(plain["test_margins"] > 0)
    check("p_probe", res.p_probe[-1], rtol=1e-8, floor=1e-10)
    check("query_probe", res.query_probe[-1], rtol=1e-8, floor=1e-10)
    check("p_norm", res.p_norm[-1], floor=0.0)
    check("query_norm", res.query_norm[-1], rtol=1e-8, floor=0.0)
    check("w_dist", res.w_dist[-1], rtol=1e-7, floor=1e-12)


@pytest.mark.parametrize("engine, trainable", GD)
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), T=st.integers(1, 5), d=st.integers(2, 9),
       lr=st.sampled_from([0.05, 0.5, 1.0]))
def test_train_matches_plain_numpy_gd_with_the_head_recorded(engine, trainable, seed, n, T, d, lr):
    """Every trainable set against the plain loop, whose head gradient is written from the formula
    (``plain_gd.grad_head``); the head's figures (nu, nu_dist, nu_norm, nu_probe, nu_align) by hand."""
    arrays, extra = make_problem(seed, n, T, d)
    steps = 30
    plain, check = rounding_allowed(arrays, extra, lr, steps, trainable)
    res = train(**arrays, **extra, lr=lr, steps=steps, trainable=trainable, engine=engine,
                save_at=SaveAt.linear(steps, steps + 1))
    assert res.engine == engine and res.success
    check("scores", res.scores)
    check("p", res.p)
    check("nu", res.nu)
    if trainable.startswith("Wp"):
        check("W", res.W)
    else:
        assert res.W is None
    if trainable.endswith("+nu"):
        check("nu_dist", res.nu_dist[-1], rtol=1e-7, floor=0.0)
        assert res.nu_dist[-1] > 0
    else:
        np.testing.assert_array_equal(res.nu, arrays["nu"])
        np.testing.assert_array_equal(res.nu_dist, 0.0)
    check("nu_norm", res.nu_norm[-1], floor=0.0)
    check("nu_probe", res.nu_probe[-1], rtol=1e-8, floor=1e-10)
    check("nu_align", res.nu_align[-1], rtol=1e-8, floor=1e-12)
    # the test set's outputs use the trained head
    check("test_loss", res.test_loss[-1], floor=0.0)
    check("margins", res.margins[-1], floor=1e-12)


@pytest.mark.parametrize("engine", ["primal", "dual"])
@pytest.mark.parametrize("trainable", ["Wp+nu", "p+nu", "Wp", "p"])
@pytest.mark.parametrize("ngd_norm", ["joint", "block"])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 6), T=st.integers(2, 5), d=st.integers(2, 9),
       lr=st.sampled_from([0.003, 0.02]))
def test_normalised_gd_matches_plain_numpy_loop(engine, trainable, ngd_norm, seed, n, T, d, lr):
    """optimizer="ngd" against the plain loop dividing the gradients by their norms (plain_gd).

    Steps of length <= 0.02 keep the softmax far from saturation over 30 steps: the plain loop's
    ``v - f`` by subtraction loses digits once gaps pass ~20, and a normalised step, unlike a GD
    step, magnifies the relative error of a small gradient to O(lr)."""
    arrays, extra = make_problem(seed, n, T, d)
    steps = 30
    _, check = rounding_allowed(arrays, extra, lr, steps, trainable, ngd=ngd_norm)
    res = train(**arrays, **extra, lr=lr, steps=steps, trainable=trainable, engine=engine, optimizer="ngd",
                ngd_norm=ngd_norm, save_at=SaveAt.linear(steps, steps + 1))
    assert res.success, res.message
    check("scores", res.scores)
    check("p", res.p)
    check("nu", res.nu)
    if trainable.startswith("Wp"):
        check("W", res.W)


@pytest.mark.parametrize("engine", ["primal", "dual"])
@pytest.mark.parametrize("trainable", ["p", "p+nu"])
@pytest.mark.parametrize("ngd_norm", ["joint", "block"])
def test_every_normalised_step_has_length_lr(engine, trainable, ngd_norm):
    """Known answer: with identity probes p and nu are recorded whole at every step; each step
    moves (p, nu) by exactly lr jointly, or p and nu by lr each."""
    arrays, _ = make_problem(5, n=4, T=3, d=6)
    steps, lr = 25, 0.07
    res = train(**arrays, lr=lr, steps=steps, trainable=trainable, engine=engine, optimizer="ngd",
                ngd_norm=ngd_norm, probes=np.eye(6), save_at=SaveAt.linear(steps, steps + 1))
    dp = np.linalg.norm(np.diff(res.p_probe, axis=0), axis=1)
    dnu = np.linalg.norm(np.diff(res.nu_probe, axis=0), axis=1)
    if trainable == "p":
        np.testing.assert_allclose(dp, lr, rtol=1e-9)
        np.testing.assert_array_equal(dnu, 0.0)
    elif ngd_norm == "joint":
        np.testing.assert_allclose(np.hypot(dp, dnu), lr, rtol=1e-9)
        assert np.all(dp < lr) and np.all(dnu < lr)
    else:
        np.testing.assert_allclose(dp, lr, rtol=1e-9)
        np.testing.assert_allclose(dnu, lr, rtol=1e-9)


def test_normalised_gd_leaves_a_zero_gradient_block_in_place():
    """p0 = 0 makes grad_W = p g^T = 0 at the first step: with the block norm W does not move
    then (no 0/0), p takes a step of length lr."""
    arrays, _ = make_problem(6, n=4, T=3, d=5)
    arrays["p0"] = np.zeros(5)
    res = train(**arrays, lr=0.1, steps=1, trainable="Wp", engine="dual", optimizer="ngd", ngd_norm="block",
                save_at=[0, 1])
    assert res.success and res.w_dist[1] == 0.0
    assert res.p_norm[1] == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize("engine, trainable", GD)
def test_numba_and_numpy_backends_agree(engine, trainable):
    arrays, extra = make_problem(3)
    kw = dict(lr=0.3, steps=200, trainable=trainable, engine=engine)
    fast = train(**arrays, **extra, **kw)
    slow = train(**arrays, **extra, **kw, backend="numpy")
    for name in ("margins", "attention", "frak_cum", "test_loss", "p_norm", "w_dist", "query_probe", "nu_norm",
                 "nu_dist", "nu_probe", "nu"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), rtol=1e-10, atol=1e-13,
                                   err_msg=name)


def test_recorded_quantities_are_consistent():
    arrays, extra = make_problem(11, n=6, T=5)
    relevant = np.array([True, True, False, False, False])
    noisy = np.array([True, False, False, True, False, False])
    steps = 40
    res = train(**arrays, **extra, lr=0.5, steps=steps, relevant=relevant, noisy=noisy,
                save_at=SaveAt.linear(steps, steps + 1))
    m = res.attention[:, :, relevant].sum(axis=2)
    np.testing.assert_allclose(res.relevant_mass, m, rtol=1e-13)
    np.testing.assert_allclose(res.frak_s, m * (1 - m), rtol=1e-10, atol=1e-15)
    # frak_cum[k] sums the per-step values of the k iterates before step k.
    expected_cum = np.vstack([np.zeros(6), np.cumsum(res.frak_s[:-1], axis=0)])
    np.testing.assert_allclose(res.frak_cum, expected_cum, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.margins, res.y * np.sum(res.attention * (arrays["X"] @ arrays["nu"]), axis=2),
                               rtol=1e-12, atol=1e-14)
    correct = res.margins > 0
    np.testing.assert_array_equal(res.train_acc, correct.mean(axis=1))
    np.testing.assert_array_equal(res.train_acc_noisy, correct[:, noisy].mean(axis=1))
    np.testing.assert_array_equal(res.train_acc_clean, correct[:, ~noisy].mean(axis=1))
    np.testing.assert_allclose(res.train_loss, np.mean(np.log1p(np.exp(-res.margins)), axis=1), rtol=1e-13)


def test_uniform_attention_at_p_zero():
    """REFERENCE.md: at p = 0 every token gets s = 1/T, whatever W and X."""
    arrays, extra = make_problem(5, T=7)
    arrays["p0"] = np.zeros_like(arrays["p0"])
    res = train(**arrays, lr=0.1, steps=1)
    np.testing.assert_allclose(res.attention[0], 1 / 7, rtol=1e-15)


@pytest.mark.parametrize("engine", ENGINES)
def test_inputs_are_never_mutated(engine):
    arrays, extra = make_problem(2)
    copies = {k: v.copy() for k, v in {**arrays, **extra}.items()}
    train(**arrays, **extra, lr=0.5, steps=20, engine=engine)
    for k, v in {**arrays, **extra}.items():
        np.testing.assert_array_equal(v, copies[k], err_msg=k)


def test_without_test_set_test_figures_are_nan():
    arrays, _ = make_problem(4)
    res = train(**arrays, lr=0.1, steps=5)
    assert np.all(np.isnan(res.test_loss)) and np.all(np.isnan(res.test_acc))
    assert res.p_probe.shape == (len(res.steps), 0)


def test_auto_engine_is_recorded_and_is_dual_when_d_exceeds_N():
    arrays, _ = make_problem(6, n=2, T=2, d=40)
    assert train(**arrays, lr=0.1, steps=50).engine == "dual"


# ------------------------------------------------------------------ array placement


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_coordinates_place_their_arrays_on_cache_lines_and_keep_shared_ones_shared(key):
    """``Coordinates.align_arrays``: every state array and array attribute up to ``ALIGN_MAX_BYTES``
    starts on a 64-byte boundary, and an array that two names (or a tuple) held is still one
    object, the one the state holds: the kernels must advance what a checkpoint stores."""
    from attnsim._coords.base import ALIGN_MAX_BYTES
    from attnsim._engine import prepare

    dynamics, engine, trainable = key
    rng = np.random.default_rng(5)
    n, T, d = 4, 3, 40
    X = rng.standard_normal((n, T, d))
    y = np.array([1.0, -1.0, 1.0, -1.0])
    for W0 in (rng.standard_normal((d, d)) / d, None):          # None: W0 = I
        run = prepare(X, y, W0, rng.standard_normal(d), rng.standard_normal(d), lr=0.1, steps=10,
                      trainable=trainable, engine=engine, dynamics=dynamics)
        co = run.coords
        named = {f"state[{k!r}]": v for k, v in co.state.items()}
        named |= {k: v for k, v in vars(co).items() if isinstance(v, np.ndarray)}
        named |= {f"{k}[{i}]": x for k, v in vars(co).items() if isinstance(v, tuple)
                  for i, x in enumerate(v) if isinstance(x, np.ndarray)}
        for name, x in named.items():
            if 64 <= x.nbytes <= ALIGN_MAX_BYTES and x.flags.c_contiguous:
                assert x.ctypes.data % 64 == 0, f"{key} {name} starts {x.ctypes.data % 64} bytes into a line"
        state_ids = {id(v) for v in co.state.values()}
        for name, x in named.items():            # a state array seen under another name is the same object
            if not name.startswith("state["):
                overlaps = [k for k, v in co.state.items() if np.shares_memory(v, x)]
                assert not overlaps or id(x) in state_ids, f"{key} {name} is a stale copy of state {overlaps}"
        if engine == "dual" and trainable == "p+nu" and W0 is None:
            assert co.Gxx is co.Gkk                  # W0 = I: one Gram, swept once for both blocks


@pytest.mark.parametrize("engine", ["primal", "dual"])
@pytest.mark.parametrize("dynamics", ["gd", "flow"])
def test_train_without_the_final_W_records_the_same_arrays(engine, dynamics):
    """``keep_W=False``: ``Result.W`` is None, every other array bit for bit that of ``keep_W=True``."""
    if dynamics == "flow" and engine == "primal":
        engine = "dual"
    arrays, extra = make_problem(3, 4, 3, 7)
    kw = dict(lr=0.5, steps=200, trainable="Wp", engine=engine, dynamics=dynamics)
    full, lean = train(**arrays, **extra, **kw), train(**arrays, **extra, **kw, keep_W=False)
    assert full.W is not None and full.W.shape == (7, 7) and lean.W is None
    for f in dataclasses.fields(full):
        a, b = getattr(full, f.name), getattr(lean, f.name)
        if isinstance(a, np.ndarray) and f.name != "W":
            assert a.tobytes() == b.tobytes(), f.name


def test_train_names_a_keep_w_that_is_not_a_bool():
    arrays, extra = make_problem(3, 4, 3, 7)
    with pytest.raises(ConfigError, match=r"keep_W must be True or False; got 'no'"):
        train(**arrays, lr=0.5, steps=2, keep_W="no")
