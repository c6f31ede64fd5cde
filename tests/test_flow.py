"""Gradient-flow mode (issue 6): the analytic correction, the O(alpha) / O(alpha^2) laws against
exact GD, agreement with GD to 10^6 steps, tolerance scaling, long horizons, determinism."""

from decimal import Decimal, getcontext

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import attnsim
from attnsim import SaveAt, train
from attnsim._engine import prepare
from attnsim._kernels import core
from attnsim._kernels import flow as fk
from attnsim._kernels import gd_twins as _reference
from attnsim._validation import ConfigError

from tools.coords_grid import FLOW_TRAINABLE as TRAINABLE


@st.composite
def problems(draw, max_n=4, max_T=4, max_d=6):
    """A small random problem: tokens, labels, head and initialisation of order one."""
    n = draw(st.integers(2, max_n))
    T = draw(st.integers(2, max_T))
    d = draw(st.integers(2, max_d))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return dict(
        X=rng.standard_normal((n, T, d)), y=np.where(rng.random(n) < 0.5, -1.0, 1.0),
        W0=np.eye(d) + 0.3 * rng.standard_normal((d, d)), p0=0.3 * rng.standard_normal(d),
        nu=rng.standard_normal(d),
    )


def _lr_for(prob, trainable, target):
    """Step size with ``alpha rho(F') = target`` at initialisation (so the asymptotics in alpha hold)."""
    run = prepare(**prob, lr=1.0, steps=1, trainable=trainable, dynamics="flow")
    rho = run.coords._rho()
    return float(min(1.0, target / max(rho, 1e-12)))


def _gd(prob, trainable, lr, steps, save_at=None):
    return train(**prob, lr=lr, steps=steps, trainable=trainable, engine="dual", save_at=save_at)


def _flow_run(prob, trainable, lr, steps, save_at=None, **opts):
    return train(**prob, lr=lr, steps=steps, trainable=trainable, save_at=save_at, dynamics="flow", flow=opts)


# ------------------------------------------------------------------ the field itself


def field(coords, correction=None) -> dict:
    """The field the integrator follows, ``d/dtau`` of each state block at the current state
    (its first Runge-Kutta stage). Keys: ``z``, ``a`` (N,) for p; ``z``, ``v``, ``a``, ``beta`` (N,)
    for p and the head; ``z``, ``P``, ``b`` (N+1,), ``S`` (N, N), ``MT`` (N, N+1) for W and p (and
    ``v``, ``beta`` with the head); ``frak`` (n,)."""
    pb, st = coords.pb, coords.state
    corr = coords.options.correction if correction is None else bool(correction)
    N, n = pb.N, pb.n
    ys = st["ys"]
    k = np.zeros(ys.size)
    FAC, work = np.zeros((8, 12, N + 1)), np.zeros((13, N + 1))
    s, fw = np.empty(N), np.zeros(core.fw_size(n, pb.T))
    head = coords.trained.trains_head
    if coords.trained.trains_W:
        fk._stage(fk._MODE_WP, head, 0, np.zeros(12), ys, st["S"], st["MT"], coords.Gxx, coords.Gxx, pb.v, pb.y,
                  pb.T, pb.relevant, pb.lr, corr, k, FAC, work, s, fw)
        E, Qv, R, Z, BETA, C, GAM, DC = (FAC[i, 0] for i in range(8))
        S = np.outer(E[:N], Qv[:N]) + np.outer(Qv[:N], E[:N]) + np.outer(R[:N], Z[:N]) + np.outer(Z[:N], R[:N])
        MT = np.outer(C[:N], BETA) + np.outer(DC[:N], GAM)
        out = {"z": k[:N], "P": k[N], "b": k[N + 1:2 * N + 2], "S": S, "MT": MT}
        if head:
            out.update(v=k[2 * N + 2:3 * N + 2], beta=k[3 * N + 2:4 * N + 2])
        return {**out, "frak": k[(4 if head else 2) * N + 2:]}
    empty = np.zeros((0, 0))
    fk._stage(fk._MODE_P, head, 0, np.zeros(12), ys, empty, empty, coords.Gkk, coords.Gxx if head else coords.Gkk,
              pb.v, pb.y, pb.T, pb.relevant, pb.lr, corr, k, FAC, work, s, fw)
    if head:
        return {"z": k[:N], "v": k[N:2 * N], "a": k[2 * N:3 * N], "beta": k[3 * N:4 * N], "frak": k[4 * N:]}
    return {"z": k[:N], "a": k[N:2 * N], "frak": k[2 * N:]}


def _primal_corrected_field(prob, W, p, lr, trainable, eps=1e-5, nu=None):
    """``alpha F - alpha^2/2 F'F`` in (W, p, nu), F' F by central differences of the closed-form gradient
    (the head's part is 0 unless ``nu`` is given: the head is then trained)."""
    head = nu is not None
    nu = prob["nu"] if nu is None else nu

    def F(W, p, nu):
        _, gW, gp, gnu = _reference.loss_and_grads_head(prob["X"], prob["y"], W, p, nu)
        return (-gW if trainable.startswith("Wp") else 0.0 * gW), -gp, (-gnu if head else 0.0 * gnu)

    f = F(W, p, nu)
    a = F(*(x + eps * fx for x, fx in zip((W, p, nu), f)))
    b = F(*(x - eps * fx for x, fx in zip((W, p, nu), f)))
    return tuple(lr * fx - lr**2 / 4 / eps * (ax - bx) for fx, ax, bx in zip(f, a, b))


@pytest.mark.parametrize("trainable", TRAINABLE)
@given(prob=problems())
def test_corrected_field_matches_primal_finite_differences(prob, trainable):
    """The analytic push-forward of alpha F - alpha^2/2 F'F to (z, S, P, b, M) equals the primal one."""
    lr = _lr_for(prob, trainable, 0.05)
    run = prepare(**prob, lr=lr, steps=10, trainable=trainable, dynamics="flow", flow={"gd_start": 0})
    run.coords.advance(3, np.zeros(len(prob["y"])))          # leave the initial point
    W, p = run.coords.final_params()
    W = prob["W0"] if W is None else W                          # p only: W is W0, not stored
    head = trainable.endswith("+nu")
    VW, Vp, Vnu = _primal_corrected_field(prob, W, p, lr, trainable, nu=run.coords.final_nu() if head else None)
    Xa = prob["X"].reshape(-1, W.shape[0])
    got = field(run.coords)
    want_z = Xa @ (VW.T @ p + W.T @ Vp)
    scale = np.abs(want_z).max() + 1e-300
    assert np.abs(got["z"] - want_z).max() <= 1e-6 * scale + 1e-12
    if head:                                                    # the head's dual part
        want_v = Xa @ Vnu
        assert np.abs(got["v"] - want_v).max() <= 1e-6 * (np.abs(want_v).max() + 1e-300) + 1e-12
        assert np.allclose(Xa.T @ got["beta"], Vnu, rtol=0, atol=1e-6 * np.abs(Vnu).max() + 1e-12)
    if trainable == "p+nu":
        assert np.allclose(run.coords.K.T @ got["a"], Vp, rtol=0, atol=1e-6 * np.abs(Vp).max() + 1e-12)
    if trainable.startswith("Wp"):
        co = run.coords
        assert np.allclose(co.Q @ got["b"], Vp, rtol=0, atol=1e-6 * np.abs(Vp).max() + 1e-12)
        dW = co.Q @ got["MT"].T @ Xa
        assert np.allclose(dW, VW, rtol=0, atol=1e-6 * np.abs(VW).max() + 1e-12)
        K = Xa @ W.T
        dK = Xa @ VW.T
        assert np.allclose(got["S"], dK @ K.T + K @ dK.T, rtol=0, atol=1e-6 * np.abs(got["S"]).max() + 1e-12)
        assert got["P"] == pytest.approx(2 * p @ Vp, rel=1e-6, abs=1e-12)


def _core_at(z, v, y, T, rel, head=True):
    """``(c, h)`` concatenated, and ``(s, fw)`` for ``core.jvp``, from the coefficient core."""
    N, n = z.size, y.size
    s, c, h, fw = np.empty(N), np.empty(N), np.empty(N if head else 0), np.zeros(core.fw_size(n, T))
    core.coefficients(z, v, y, T, rel, s, c, h, np.zeros(n), fw, True)
    return np.concatenate([c, h]), (s, fw)


@given(prob=problems(), seed=st.integers(0, 2**32 - 1))
def test_jvp_of_c_matches_central_differences(prob, seed):
    """``core.jvp`` along dz alone (no head): the JVP of c against central differences of the core."""
    n, T, d = prob["X"].shape
    N = n * T
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal(N)
    dz = rng.standard_normal(N)
    v = prob["X"].reshape(N, d) @ prob["nu"]
    rel = np.zeros(T, dtype=bool)
    rel[0] = True
    c, (s, fw) = _core_at(z, v, prob["y"], T, rel, head=False)
    _, _, c_ref = _reference.forward(z.reshape(n, T), v.reshape(n, T), prob["y"])
    assert np.allclose(c, c_ref.ravel(), rtol=1e-12, atol=1e-15)
    dc = np.empty(N)
    core.jvp(dz, np.zeros(0), s, fw, T, dc, np.zeros(0))
    h = 1e-6
    fd = (_core_at(z + h * dz, v, prob["y"], T, rel, False)[0] - _core_at(z - h * dz, v, prob["y"], T, rel, False)[0])
    fd /= 2 * h
    assert np.allclose(dc, fd, rtol=1e-5, atol=1e-9 * (np.abs(fd).max() + 1e-12))


@given(prob=problems(), seed=st.integers(0, 2**32 - 1))
def test_jvp_of_c_and_h_matches_central_differences(prob, seed):
    """``core.jvp``: the JVP of (c, h) = (dL/dz, dL/dv) along (dz, dv), scores up to saturation; along
    dz alone it is the head-free JVP of c."""
    n, T, d = prob["X"].shape
    N = n * T
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal(N)
    v = prob["X"].reshape(N, d) @ prob["nu"]
    dz, dv = rng.standard_normal(N), rng.standard_normal(N)
    rel = np.zeros(T, dtype=bool)
    rel[0] = True
    ch, (s, fw) = _core_at(z, v, prob["y"], T, rel)
    _, _, c_ref = _reference.forward(z.reshape(n, T), v.reshape(n, T), prob["y"])
    assert np.allclose(ch[:N], c_ref.ravel(), rtol=1e-12, atol=1e-15)
    dc, dh = np.empty(N), np.empty(N)
    core.jvp(dz, dv, s, fw, T, dc, dh)
    eps = 1e-6
    fd = (_core_at(z + eps * dz, v + eps * dv, prob["y"], T, rel)[0]
          - _core_at(z - eps * dz, v - eps * dv, prob["y"], T, rel)[0]) / (2 * eps)
    got = np.concatenate([dc, dh])
    assert np.allclose(got, fd, rtol=1e-5, atol=1e-9 * (np.abs(fd).max() + 1e-12))
    core.jvp(dz, np.zeros(N), s, fw, T, dc, dh)            # dv = 0: the JVP of c along dz alone
    want = np.empty(N)
    core.jvp(dz, np.zeros(0), s, fw, T, want, np.zeros(0))
    assert np.allclose(dc, want, rtol=1e-13, atol=1e-15 * (np.abs(want).max() + 1e-300))


def test_core_keeps_digits_when_one_token_saturates():
    """1 - s_top = 1e-13: c, the relevant mass and 1 - m keep ~12 digits (exact decimal oracle)."""
    getcontext().prec = 60
    T = 4
    z = np.array([0.0, -30.0, -31.0, -29.9])
    v = np.array([0.7, -0.2, 0.1, 0.3])
    y = np.array([1.0])
    rel = np.array([True, False, False, False])
    s, c, frak = np.empty(T), np.empty(T), np.zeros(1)
    core.coefficients(z, v, y, T, rel, s, c, np.zeros(0), frak, np.zeros(core.fw_size(1, T)), False)
    ez = [Decimal(float(x)).exp() for x in z]
    tot = sum(ez)
    sd = [e / tot for e in ez]
    f = sum(si * Decimal(float(vi)) for si, vi in zip(sd, v))
    q = 1 / (1 + f.exp())                                  # -ell'(f), y = 1
    cd = [-q * si * (Decimal(float(vi)) - f) for si, vi in zip(sd, v)]
    assert 1e-14 < float(1 - sd[0]) < 1e-12
    for t in range(T):
        assert abs(c[t] - float(cd[t])) <= 1e-12 * abs(float(cd[t]))
    m = sd[0]
    assert abs(frak[0] - float(m * (1 - m))) <= 1e-12 * float(m * (1 - m))


# ------------------------------------------------------------------ agreement with exact GD


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=8)
@given(prob=problems())
def test_uncorrected_flow_is_first_order_in_alpha(prob, trainable):
    """||flow - GD(alpha)|| / ||flow - GD(alpha/2)|| ~ 2 at the same flow time."""
    lr = _lr_for(prob, trainable, 0.01)
    steps = 200
    fl = _flow_run(prob, trainable, lr, steps, save_at=[steps], correction=False, gd_start=0, rtol=1e-12,
                   atol=1e-14)
    g1 = _gd(prob, trainable, lr, steps, save_at=[steps])
    g2 = _gd(prob, trainable, lr / 2, 2 * steps, save_at=[2 * steps])
    e1 = np.linalg.norm(fl.scores[-1] - g1.scores[-1])
    e2 = np.linalg.norm(fl.scores[-1] - g2.scores[-1])
    assume(e1 >= 1e-9 * (1 + np.linalg.norm(fl.scores[-1])))   # nothing moved: no law to see
    head = trainable.endswith("+nu")
    if head:
        h1, h2 = np.linalg.norm(fl.nu - g1.nu), np.linalg.norm(fl.nu - g2.nu)
        assume(h1 > 1e-9 * (1 + np.linalg.norm(fl.nu)))
    assert 1.9 < e1 / e2 < 2.1, (e1, e2)
    if head:
        assert 1.9 < h1 / h2 < 2.1, (h1, h2)


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=8)
@given(prob=problems())
def test_corrected_flow_is_second_order_in_alpha(prob, trainable):
    """With the backward-error correction the gap to GD falls like alpha^2 (ratio ~ 4)."""
    lr = _lr_for(prob, trainable, 0.01)
    steps = 200
    opts = dict(gd_start=0, rtol=1e-13, atol=1e-15)
    f1 = _flow_run(prob, trainable, lr, steps, save_at=[steps], **opts)
    f2 = _flow_run(prob, trainable, lr / 2, 2 * steps, save_at=[2 * steps], **opts)
    g1 = _gd(prob, trainable, lr, steps, save_at=[steps])
    g2 = _gd(prob, trainable, lr / 2, 2 * steps, save_at=[2 * steps])
    e1 = np.linalg.norm(f1.scores[-1] - g1.scores[-1])
    e2 = np.linalg.norm(f2.scores[-1] - g2.scores[-1])
    assume(e1 >= 1e-10 * (1 + np.linalg.norm(g1.scores[-1])))  # nothing moved: no law to see
    head = trainable.endswith("+nu")
    if head:
        h1, h2 = np.linalg.norm(f1.nu - g1.nu), np.linalg.norm(f2.nu - g2.nu)
        assume(h1 > 1e-10 * (1 + np.linalg.norm(g1.nu)))
    assert 3.6 < e1 / e2 < 4.4, (e1, e2)
    if head:
        assert 3.6 < h1 / h2 < 4.4, (h1, h2)


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=3)
@given(prob=problems(max_n=3, max_T=3, max_d=5))
def test_default_flow_matches_exact_gd_to_a_million_steps(prob, trainable):
    """Correction + exact-GD start (defaults): max |Delta log s| <= 1e-6 over tau <= 10^6."""
    lr = _lr_for(prob, trainable, 0.05)
    steps = 10**6
    sa = SaveAt.log(steps, 40)
    g = _gd(prob, trainable, lr, steps, save_at=sa)
    f = _flow_run(prob, trainable, lr, steps, save_at=sa)
    assert f.success and g.success
    assert np.array_equal(f.steps, g.steps)
    assert np.abs(np.log(f.attention) - np.log(g.attention)).max() <= 1e-6


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=5)
@given(prob=problems())
def test_integrator_error_falls_with_rtol(prob, trainable):
    """Global error of the integrator against a tight reference shrinks with rtol, about in proportion."""
    lr = _lr_for(prob, trainable, 0.05)
    steps = 10**4
    ref = _flow_run(prob, trainable, lr, steps, gd_start=0, rtol=1e-13, atol=1e-15)
    errs = []
    for rtol in (1e-5, 1e-7, 1e-9):
        r = _flow_run(prob, trainable, lr, steps, gd_start=0, rtol=rtol, atol=rtol * 1e-3)
        errs.append(np.abs(r.scores - ref.scores).max() / (1 + np.abs(ref.scores).max()))
        assert errs[-1] <= 100 * rtol, (rtol, errs)
    assert errs[2] <= errs[0] or errs[0] < 1e-10     # else both sit at the rounding floor


# ------------------------------------------------------------------ long horizons


@pytest.mark.parametrize("trainable", TRAINABLE)
@settings(max_examples=5)
@given(prob=problems())
def test_flow_reaches_1e15_finite_with_non_increasing_loss(prob, trainable):
    """Saturating problems reach 10^15; stiff ones (an interior attention equilibrium) stop with
    a message saying so. Either way what was recorded is finite and the loss never rises."""
    lr = _lr_for(prob, trainable, 0.05)
    steps = 10**15
    r = _flow_run(prob, trainable, lr, steps, save_at=SaveAt.log(steps, 60), max_steps=3000)
    if r.success:
        assert r.steps[-1] == steps
    else:
        assert r.status == "max_steps_reached", r.message
        assert "the flow is stiff here" in r.message and r.extra["accepted_steps"] + r.extra["rejected_steps"] >= 3000
    assert r.steps.dtype == np.int64
    for name in ("scores", "attention", "train_loss", "frak_cum", "p_norm", "w_dist"):
        assert np.all(np.isfinite(getattr(r, name))), name
    after = r.steps >= r.extra["gd_start_steps"]
    loss = r.train_loss[after]
    assert np.all(np.diff(loss) <= 1e-12 * (1 + np.abs(loss[:-1])))
    assert np.all(np.diff(r.frak_cum, axis=0) >= -1e-12)
    assert r.extra["dynamics"] == "flow" and r.extra["rhs_evals"] > 0


def test_flow_on_the_official_setting_reaches_1e15_for_both_sets():
    for trainable in TRAINABLE:
        cfg = attnsim.preset("balanced", trainable=trainable, steps=10**15, n_test=50)
        r = attnsim.simulate(cfg, save_at=SaveAt.log(10**15, 50), dynamics="flow")
        assert r.success, r.message
        assert r.train_acc[-1] == 1.0
        assert np.all(np.isfinite(r.test_loss))
        assert r.extra["gd_start_steps"] > 0 and r.extra["accepted_steps"] > 0


# ------------------------------------------------------------------ the engine contract


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_flow_result_does_not_depend_on_chunking(trainable, rng):
    prob = dict(
        X=rng.standard_normal((3, 3, 4)), y=np.array([1.0, -1.0, 1.0]), W0=np.eye(4),
        p0=0.2 * rng.standard_normal(4), nu=rng.standard_normal(4))
    lr = _lr_for(prob, trainable, 0.05)
    kw = dict(lr=lr, steps=10**9, trainable=trainable, save_at=SaveAt.log(10**9, 30), dynamics="flow")
    a = prepare(**prob, **kw)
    a.warm_up()
    a.run()
    b = prepare(**prob, **kw)
    b.warm_up()
    while not b.done:
        b.advance(max_seconds=1e-9, rate=1.0)          # the smallest chunks the Run can ask for
    ra, rb = a.result(), b.result()
    assert np.array_equal(ra.scores, rb.scores)
    assert np.array_equal(ra.frak_cum, rb.frak_cum)


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_flow_checkpoint_resume_is_bit_identical(trainable, rng):
    prob = dict(X=rng.standard_normal((3, 3, 4)), y=np.array([1.0, -1.0, -1.0]), W0=np.eye(4),
                p0=0.2 * rng.standard_normal(4), nu=rng.standard_normal(4))
    lr = _lr_for(prob, trainable, 0.05)
    kw = dict(lr=lr, steps=10**12, trainable=trainable, save_at=SaveAt.log(10**12, 40), dynamics="flow")
    full = prepare(**prob, **kw)
    full.run()
    part = prepare(**prob, **kw)
    for _ in range(25):
        part.advance()
    sd = part.state_dict()
    resumed = prepare(**prob, **kw)
    resumed.load_state_dict(sd)
    resumed.run()
    assert np.array_equal(full.result().scores, resumed.result().scores)
    assert full.result().extra == resumed.result().extra


def test_flow_result_round_trips_with_its_counters(tmp_path, rng):
    prob = dict(X=rng.standard_normal((2, 3, 3)), y=np.array([1.0, -1.0]), W0=np.eye(3), p0=np.zeros(3),
                nu=rng.standard_normal(3))
    r = train(**prob, lr=0.1, steps=10**6, dynamics="flow")
    r.save(tmp_path / "r.npz")
    back = attnsim.load(tmp_path / "r.npz")
    assert back.extra == r.extra
    assert set(r.extra) >= {"dynamics", "rhs_evals", "accepted_steps", "rejected_steps", "gd_start_steps",
                            "rtol", "atol", "correction"}


def _switch_under(law, rho_tol):
    """``(step, checks)`` of the automatic switch when ``alpha rho`` follows ``law(tau)``: the
    decision rule of ``_Flow._decide`` (switch at the first check with ``alpha rho <= rho_tol``)."""
    from attnsim._coords.flow import _next_check

    tau, checks = 0, 0
    while True:
        ar = law(tau)
        checks += 1
        if ar <= rho_tol:
            return tau, checks
        tau = _next_check(tau, ar, rho_tol)


def _next_check_of(tau, ar):
    from attnsim._coords.flow import _next_check

    return _next_check(tau, ar, 5e-4)


def test_next_check_grows_the_step_count_by_half_or_goes_where_one_over_tau_crosses():
    tol = 5e-4
    assert [_next_check_of(t, ar) for t, ar in [(0, 1.0), (16, 1.0), (100, 1e-2), (1000, float("nan"))]] == \
        [16, 32, 150, 1500]
    assert _next_check_of(1000, 1.2e-3) == 1500          # 2.4x above: half the count on, as before
    assert _next_check_of(1000, 6e-4) == 1200            # 1.2x above: 1/tau crosses at 1200
    assert _next_check_of(1000, 5.05e-4) == 1031         # at least 1/32 of the count on
    assert _next_check_of(100, 5.05e-4) == 116           # and at least 16 steps
    assert _next_check_of(10_000, tol * (1 + 1e-9)) == 10_312


@pytest.mark.parametrize("slope", [0.6, 1.0, 1.2, 1.5])
def test_the_automatic_switch_lands_near_where_alpha_rho_crosses_rho_tol(slope):
    """Against ``alpha rho = c tau^-slope`` (near the switch the paper's runs fall with slopes 1.03 to
    1.4), for crossings from 40 to 10^6 steps: the switch comes after the crossing and at most a
    factor ``max(1.5^(1 - 1/slope), 1 + 1/32)`` (plus 16 steps) after it, where the checks at every
    half-count growth overshoot by up to 1.5 (median about 1.22); and with at most 6 checks more than
    they take."""
    tol = 5e-4
    for crossing in np.geomspace(40, 1e6, 23):
        c = tol * crossing ** slope
        law = lambda tau: c * max(tau, 1) ** -slope  # noqa: E731
        step, checks = _switch_under(law, tol)
        first = next(t for t in range(int(crossing) - 1, int(crossing) + 3) if law(t) <= tol)
        bound = max(1.5 ** (1 - 1 / slope), 1 + 1 / 32) * first + 16
        assert first <= step <= bound, (slope, crossing, step, first)
        halves = int(np.ceil(np.log(max(first, 16) / 16) / np.log(1.5))) + 2
        assert checks <= halves + 6, (slope, crossing, checks, halves)


def test_gd_start_fixed_count_is_exact_gd(rng):
    prob = dict(X=rng.standard_normal((3, 2, 3)), y=np.array([1.0, -1.0, 1.0]), W0=np.eye(3),
                p0=rng.standard_normal(3), nu=rng.standard_normal(3))
    g = train(**prob, lr=0.05, steps=500, save_at=SaveAt.linear(500, 11), engine="dual")
    f = train(**prob, lr=0.05, steps=500, save_at=SaveAt.linear(500, 11), dynamics="flow",
              flow={"gd_start": 500})
    assert np.allclose(f.scores, g.scores, rtol=1e-12, atol=1e-12)
    assert f.extra["gd_start_steps"] == 500 and f.extra["rhs_evals"] == 0


@pytest.mark.parametrize("flow, match", [
    ({"rtol": 0}, "flow.rtol must be > 0"),
    ({"gd_start": "soon"}, "flow.gd_start must be 'auto' or an integer >= 0"),
    ({"gd_start": -1}, "flow.gd_start must be >= 0"),
    ({"correction": "yes"}, "flow.correction must be True or False"),
    ({"tolerance": 1e-3}, r"flow options \['tolerance'\] are not known"),
    ({"max_steps": 0}, "flow.max_steps must be >= 1"),
    (3, "flow must be None, a FlowOptions or a dict"),
])
def test_flow_options_are_validated(flow, match, rng):
    prob = dict(X=rng.standard_normal((2, 2, 2)), y=np.array([1.0, -1.0]), W0=np.eye(2), p0=np.zeros(2),
                nu=np.ones(2))
    with pytest.raises(ConfigError, match=match):
        train(**prob, lr=0.1, steps=10, dynamics="flow", flow=flow)


def test_dynamics_argument_is_validated(rng):
    prob = dict(X=rng.standard_normal((2, 2, 2)), y=np.array([1.0, -1.0]), W0=np.eye(2), p0=np.zeros(2),
                nu=np.ones(2))
    with pytest.raises(ConfigError, match="dynamics must be one of 'gd', 'flow'"):
        train(**prob, lr=0.1, steps=10, dynamics="ode")
    with pytest.raises(ConfigError, match="dynamics='flow' runs in dual coordinates"):
        train(**prob, lr=0.1, steps=10, dynamics="flow", engine="primal")
    with pytest.raises(ConfigError, match="flow options apply only with dynamics='flow'"):
        train(**prob, lr=0.1, steps=10, flow={"rtol": 1e-6})


@pytest.mark.slow
@pytest.mark.parametrize("trainable", TRAINABLE)
def test_flow_matches_exact_gd_on_the_official_setting_to_a_million_steps(trainable):
    """The issue's target on the paper's setting: |Delta log s| <= 1e-6 over tau <= 10^6 (measured ~2e-8)."""
    steps = 10**6
    cfg = attnsim.preset("balanced", trainable=trainable, steps=steps, n_test=0)
    sa = SaveAt.log(steps, 61)
    g = attnsim.simulate(cfg, save_at=sa, engine="dual")
    f = attnsim.simulate(cfg, save_at=sa, dynamics="flow")
    assert np.abs(np.log(f.attention) - np.log(g.attention)).max() <= 1e-6


def test_flow_checkpoint_file_restores_a_flow_run(tmp_path):
    from attnsim import prepare_run, restore, save_checkpoint

    cfg = attnsim.Config(d=12, n_train=4, n_test=5, steps=10**12, trainable="p")
    kw = dict(save_at=SaveAt.log(10**12, 30), dynamics="flow", flow={"rtol": 1e-9})
    full = prepare_run(cfg, **kw)
    full.run()
    part = prepare_run(cfg, **kw)
    for _ in range(20):
        part.advance()
    save_checkpoint(tmp_path / "ck.npz", part, cfg)
    back = restore(tmp_path / "ck.npz")
    assert back.coords.options.rtol == 1e-9
    back.run()
    assert np.array_equal(back.result().scores, full.result().scores)


def test_cli_runs_the_flow_to_1e15(tmp_path):
    from attnsim.cli import main

    out = tmp_path / "flow.npz"
    assert main(["run", "--d", "30", "--n-test", "10", "--steps", "1e15", "--saves", "40", "--dynamics", "flow",
                 "--no-progress", "--out", str(out)]) == 0
    res = attnsim.load(out)
    assert res.final_step == 10**15 and res.extra["dynamics"] == "flow"


def test_cli_rejects_flow_with_the_primal_engine(capsys):
    from attnsim.cli import main

    assert main(["run", "--d", "30", "--steps", "100", "--dynamics", "flow", "--engine", "primal"]) == 2
    assert "dynamics='flow' runs in dual coordinates" in capsys.readouterr().err


def test_cli_rejects_an_unknown_dynamics(capsys):
    from attnsim.cli import main

    assert main(["run", "--d", "30", "--steps", "100", "--dynamics", "ode"]) == 2
    assert "--dynamics must be one of gd, flow; got 'ode'" in capsys.readouterr().err


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_flow_records_the_query_norm_of_its_final_parameters(trainable, rng):
    """``query_norm`` comes from the dual state (Grams); the materialised W^T p is the oracle."""
    X = rng.standard_normal((4, 3, 6))
    prob = dict(X=X, y=np.array([1.0, -1.0, 1.0, -1.0]), W0=rng.standard_normal((6, 6)) / 3,
                p0=rng.standard_normal(6), nu=rng.standard_normal(6))
    res = train(**prob, lr=0.2, steps=10**6, trainable=trainable, dynamics="flow")
    W = prob["W0"] if res.W is None else res.W
    assert res.success, res.message
    assert res.query_norm[-1] == pytest.approx(np.linalg.norm(W.T @ res.p), rel=1e-9)
    assert res.query_norm[0] == pytest.approx(np.linalg.norm(prob["W0"].T @ prob["p0"]), rel=1e-12)


@pytest.mark.parametrize("options, status, says", [
    ({"max_steps": 3, "gd_start": 0}, "max_steps_reached", r"raise FlowOptions\.max_steps, or use dynamics='gd'"),
    # h_min is checked when a step is rejected: tight tolerances make rejections certain
    ({"h_min": 1e13, "gd_start": 0, "rtol": 1e-13, "atol": 1e-15}, "step_size_collapsed", r"fell below h_min=1e\+13"),
])
def test_flow_stops_have_their_own_status_not_divergence(options, status, says, rng):
    """A stop of the integrator is an outcome of its own, with a message that says what to do;
    what was recorded before it is kept."""
    X = rng.standard_normal((4, 3, 5))
    prob = dict(X=X, y=np.array([1.0, -1.0, 1.0, -1.0]), W0=np.eye(5), p0=rng.standard_normal(5),
                nu=rng.standard_normal(5))
    res = train(**prob, lr=0.1, steps=10**12, trainable="p", dynamics="flow", flow=options)
    assert res.status == status and not res.success
    assert re.search(says, res.message), res.message
    assert not res.message.startswith("diverged") and res.final_step < 10**12
    assert status in attnsim.STATUSES and np.all(np.isfinite(res.scores))


# ------------------------------------------------------------------ one arithmetic with dynamics="gd"


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_flow_start_is_the_gd_run_bit_for_bit(trainable):
    """The exact-GD start runs the GD kernels themselves: up to the switch, every recorded array of the
    flow's run is dynamics="gd"'s, bit for bit (the pending (b, M) block read the same way)."""
    import dataclasses

    cfg = attnsim.preset("balanced", d=30, n_train=6, n_test=10, trainable=trainable, steps=203)
    save = SaveAt.linear(203, 30)
    g = attnsim.simulate(cfg, save, engine="dual")
    f = attnsim.simulate(cfg, save, dynamics="flow", flow={"gd_start": 203})
    assert f.extra["gd_start_steps"] == 203 and f.success and g.success
    for fld in dataclasses.fields(attnsim.Result):
        a, b = getattr(f, fld.name), getattr(g, fld.name)
        if isinstance(a, np.ndarray):
            assert a.tobytes() == b.tobytes(), f"{fld.name} differs ({trainable})"


def _per_save(res):
    """The per-save arrays of a Result (first axis the save times), by field name."""
    import dataclasses

    n = res.steps.size
    return {f.name: getattr(res, f.name) for f in dataclasses.fields(attnsim.Result)
            if isinstance(getattr(res, f.name), np.ndarray) and getattr(res, f.name).ndim >= 1
            and getattr(res, f.name).shape[0] == n and f.name != "steps"}


@pytest.mark.parametrize("trainable", ["Wp", "p"])
@pytest.mark.parametrize("gd_start, inside", [("auto", True), (600, False)])
def test_a_flow_run_records_the_gd_horizon_inside_its_automatic_start(trainable, gd_start, inside):
    """What the phase diagram reads both horizons from: a flow run to 10^12 with the automatic switch and
    population test metrics records at step 1000, still inside its exact-GD start, what a 1000-step GD run
    records there, bit for bit. A start that ends at step 600 integrates the last 400 steps, and the
    records differ."""
    cfg = attnsim.Config(d=250, steps=10 ** 12, n_test=0, test_metrics="population", trainable=trainable)
    f = attnsim.simulate(cfg, SaveAt.log(10 ** 12, 14), dynamics="flow", flow={"gd_start": gd_start})
    g = attnsim.simulate(cfg.replace(steps=1000), SaveAt.log(1000, 12))
    k = int(np.flatnonzero(f.steps == 1000)[0])
    assert (f.extra["gd_start_steps"] >= 1000) == inside and f.success and g.success
    flow_at, gd_at = _per_save(f), _per_save(g)
    assert flow_at.keys() == gd_at.keys() and {"train_loss", "test_loss", "test_acc", "scores", "frak_cum"} <= set(flow_at)
    same = {name: flow_at[name][k].tobytes() == gd_at[name][-1].tobytes() for name in flow_at}
    if inside:
        assert all(same.values()), [name for name, ok in same.items() if not ok]
    else:
        assert not same["scores"] and not same["train_loss"]


@pytest.mark.parametrize("dynamics", ["gd", "flow"])
def test_one_gram_serves_keys_and_tokens_when_w0_is_the_identity(dynamics):
    """p and the head at W0 = I: the keys are the tokens, so the set-up keeps one Gram for both (swept
    once for both blocks); with a random W0 there are two."""
    for w0, shared in (("identity", True), ("random", False)):
        cfg = attnsim.preset("balanced", d=30, n_train=6, n_test=0, trainable="p+nu", w0=w0, steps=10)
        run = attnsim.prepare_run(cfg, engine="dual", dynamics=dynamics)
        assert (run.coords.Gxx is run.coords.Gkk) == shared, (w0, dynamics)
