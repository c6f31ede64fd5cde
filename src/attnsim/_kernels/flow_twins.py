"""Slow NumPy twins of the flow kernels in ``flow.py`` (same signatures, same in-place contracts).

``forward``, ``jvp_c``, ``jvp_ch``, the exact-GD loops and the power iterations are the same
formulas in whole-array NumPy. The integrators ``flow_p_run``,
``flow_p_nu_run`` and ``flow_wp_run`` are an independent method on the same field: SciPy's DOP853
(``scipy.integrate.solve_ivp``) over the flattened state, with the field written
from the formulas of ``flow._stage_wp``'s docstring; they agree with the kernels
to the integrators' tolerances, not to the last bit.
"""

import numpy as np

from .._numerics import logistic_loss, neg_dloss, top_relative


def forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak):
    """Twin of ``flow.forward``: everything relative to each sample's top token."""
    n = y.shape[0]
    Z, V = z.reshape(n, T), v.reshape(n, T)
    r = np.argmax(Z, axis=1)
    S, D, df = top_relative(Z, V)                # softmax, v_t - v_top, f - v_top
    f = V[np.arange(n), r] + df
    u = y * f
    q = neg_dloss(u)
    co = -q * y / n
    VF = D - df[:, None]
    s[:] = S.ravel()
    vf[:] = VF.ravel()
    coef[:] = co
    kap[:] = q * neg_dloss(-u) / n
    top[:] = r
    c[:] = (co[:, None] * S * VF).ravel()
    frak[:] = S[:, relevant].sum(axis=1) * S[:, ~relevant].sum(axis=1)
    finite = bool(np.all(np.isfinite(f)) and np.all(np.isfinite(Z.max(axis=1))))
    return float(np.mean(logistic_loss(u))), finite


def jvp_c(dz, s, vf, coef, kap, top, T, dc):
    """Twin of ``flow.jvp_c``: ``dc = (dc/dz) dz`` at the point of the last ``forward``."""
    n = top.shape[0]
    DZ, S, VF = dz.reshape(n, T), s.reshape(n, T), vf.reshape(n, T)
    dzr = DZ - DZ[np.arange(n), top][:, None]
    w = S * dzr
    dbar, df = w.sum(axis=1), (w * VF).sum(axis=1)
    dco = kap * df
    dc[:] = (dco[:, None] * S * VF + coef[:, None] * S * ((dzr - dbar[:, None]) * VF - df[:, None])).ravel()


def jvp_ch(dz, dv, s, vf, coef, kap, top, T, dc, dh):
    """Twin of ``flow.jvp_ch``: the JVP of ``(c, h)`` along ``(dz, dv)``, ``h_t = coef s_t``."""
    n = top.shape[0]
    rows = np.arange(n)
    DZ, DV, S, VF = dz.reshape(n, T), dv.reshape(n, T), s.reshape(n, T), vf.reshape(n, T)
    dzr = DZ - DZ[rows, top][:, None]
    dvr = DV - DV[rows, top][:, None]
    w = S * dzr
    dbar, dfz, dvbar = w.sum(axis=1), (w * VF).sum(axis=1), (S * dvr).sum(axis=1)
    dco = kap * (dfz + DV[rows, top] + dvbar)
    dc[:] = (dco[:, None] * S * VF
             + coef[:, None] * S * ((dzr - dbar[:, None]) * VF - dfz[:, None] + dvr - dvbar[:, None])).ravel()
    dh[:] = (dco[:, None] * S + coef[:, None] * S * (dzr - dbar[:, None])).ravel()


def _scratch(z, y):
    N, n = z.shape[0], y.shape[0]
    return np.empty(N), np.empty(N), np.empty(n), np.empty(n), np.empty(n, dtype=np.int64), np.empty(N), np.empty(n)


def gd_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak, w):
    """Twin of ``flow.gd_p_run``."""
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        frak_sum += frak
        a -= lr * c
        z -= lr * (Gkk @ c)
    return n_steps


def gd_wp_run(z, S, P, b, MT, Gxx, v, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak, e,
              Sc, Hc):
    """Twin of ``flow.gd_wp_run``: the recurrences of ``gd.dual_wp_run``, ``(b, M)`` every step."""
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        frak_sum += frak
        _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc)
    return n_steps


def _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc):
    e[:] = Gxx @ c
    Sc[:] = S @ c
    zc, Pk = z @ c, P[0]
    Hc[:] = np.concatenate(([0.0], c)) + MT.T @ e
    MT -= lr * np.outer(c, b)
    b -= lr * Hc
    S[:] = S - lr * (np.outer(e, z) + np.outer(z, e)) + lr * lr * Pk * np.outer(e, e)
    z[:] = z - lr * Sc - lr * Pk * e + lr * lr * zc * e
    P[0] = Pk - 2.0 * lr * zc + lr * lr * (c @ Sc)


def gd_p_nu_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak,
                h, w, wh):
    """Twin of ``flow.gd_p_nu_run``."""
    n = y.shape[0]
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        frak_sum += frak
        h[:] = (coef[:, None] * s.reshape(n, T)).ravel()
        a -= lr * c
        z -= lr * (Gkk @ c)
        beta -= lr * h
        v -= lr * (Gxx @ h)
    return n_steps


def gd_wp_nu_run(z, S, P, b, MT, beta, v, Gxx, y, T, relevant, lr, n_steps, frak_sum,
                 s, vf, coef, kap, top, c, frak, e, Sc, Hc, h, eh):
    """Twin of ``flow.gd_wp_nu_run``: ``gd_wp_run``'s step plus the head, from the same iterate."""
    n = y.shape[0]
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        h[:] = (coef[:, None] * s.reshape(n, T)).ravel()
        eh[:] = Gxx @ h
        frak_sum += frak
        beta -= lr * h
        v -= lr * eh
        _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc)
    return n_steps


def _start(vec, shape, seed):
    """The kernels' deterministic start vector when ``vec`` is zero."""
    if not np.sqrt(np.sum(vec * vec)) > 0.0:
        vec[...] = np.sin(seed[0] + seed[1] * np.arange(vec.size)).reshape(shape)


def spectral_p(z, Gkk, v, y, T, relevant, vec, n_iter):
    """Twin of ``flow.spectral_p``."""
    s, vf, coef, kap, top, c, frak = _scratch(z, y)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    _start(vec, vec.shape, (1.0, 0.7))
    vec /= np.sqrt(vec @ vec)
    out = np.empty_like(z)

    def apply(x):
        jvp_c(Gkk @ x, s, vf, coef, kap, top, T, out)
        return out
    return _power(apply, vec, n_iter)


def _power(apply, vec, n_iter):
    """Power iterations ``vec <- apply(vec) / |apply(vec)|`` from a unit ``vec`` (updated in place);
    the larger of the last two ratios (they can alternate), 0 when the image vanishes."""
    rho = 0.0
    for it in range(n_iter):
        out = apply(vec)
        nrm = np.sqrt(out @ out)
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:
            rho = max(rho, nrm)
        vec[:] = out / nrm
    return rho


def spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, n_iter):
    """Twin of ``flow.spectral_wp``: the JVP of ``F(b, M) = (-H c, -b c^T)`` by its formula
    (``spectral_wp_nu`` without the head's block)."""
    return spectral_wp_nu(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, np.empty(0), n_iter)


def spectral_p_nu(z, v, Gkk, Gxx, y, T, relevant, vec, n_iter):
    """Twin of ``flow.spectral_p_nu``: ``F' (wa, wb) = -J (Gkk wa, Gxx wb)``."""
    s, vf, coef, kap, top, c, frak = _scratch(z, y)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    _start(vec, vec.shape, (1.0, 0.7))
    vec /= np.sqrt(vec @ vec)
    N = z.shape[0]
    dc, dh = np.empty(N), np.empty(N)

    def apply(x):
        jvp_ch(Gkk @ x[:N], Gxx @ x[N:], s, vf, coef, kap, top, T, dc, dh)
        return np.concatenate([dc, dh])
    return _power(apply, vec, n_iter)


def spectral_wp_nu(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter):
    """Twin of ``flow.spectral_wp_nu``: ``spectral_wp``'s JVP with the head's block (none if
    ``vbeta`` is empty)."""
    s, vf, coef, kap, top, c, frak = _scratch(z, y)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    e, Gb, N = Gxx @ c, Gqq @ b, z.shape[0]
    if not np.sqrt(vb @ vb + np.sum(vMT * vMT) + vbeta @ vbeta) > 0.0:
        vb[:] = np.sin(1.0 + 0.7 * np.arange(N + 1))
        vMT[:] = np.sin(2.0 + 0.37 * np.arange(N * (N + 1))).reshape(N, N + 1)
        vbeta[:] = np.sin(3.0 + 0.53 * np.arange(vbeta.size))
    nrm = np.sqrt(vb @ vb + np.sum(vMT * vMT) + vbeta @ vbeta)
    vb /= nrm
    vMT /= nrm
    vbeta /= nrm
    head = vbeta.size > 0                      # an empty vbeta: W and p only (spectral_wp)
    rho, dc, dh = 0.0, np.empty(N), np.empty(N)
    for it in range(n_iter):
        u2 = Gqq @ vb
        dz = Gxx @ (vMT @ Gb + MT @ u2) + u2[1:]
        jvp_ch(dz, Gxx @ vbeta if head else np.zeros(N), s, vf, coef, kap, top, T, dc, dh)
        ob = -(np.concatenate(([0.0], dc)) + vMT.T @ e + MT.T @ (Gxx @ dc))
        oMT = -(np.outer(c, vb) + np.outer(dc, b))
        obeta = -dh if head else np.empty(0)
        nrm = np.sqrt(ob @ ob + np.sum(oMT * oMT) + obeta @ obeta)
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:
            rho = max(rho, nrm)
        vb[:] = ob / nrm
        vMT[:] = oMT / nrm
        vbeta[:] = obeta / nrm
    return rho


def _field_p_nu(ys, Gkk, Gxx, y, T, relevant, alpha, correct):
    """d/dtau of ``[z | v | a | beta | F]`` (formulas of ``flow._stage_p_nu``)."""
    N, n = Gkk.shape[0], y.shape[0]
    s, vf, coef, kap, top, c, frak = _scratch(ys[:N], y)
    forward(ys[:N], ys[N:2 * N], y, T, relevant, s, vf, coef, kap, top, c, frak)
    h = (coef[:, None] * s.reshape(n, T)).ravel()
    da, db = -alpha * c, -alpha * h
    if correct:
        dc, dh = np.empty(N), np.empty(N)
        jvp_ch(Gkk @ c, Gxx @ h, s, vf, coef, kap, top, T, dc, dh)
        da -= 0.5 * alpha * alpha * dc
        db -= 0.5 * alpha * alpha * dh
    return np.concatenate([Gkk @ da, Gxx @ db, da, db, frak])


def _field_p(ys, Gkk, v, y, T, relevant, alpha, correct):
    N, n = v.shape[0], y.shape[0]
    s, vf, coef, kap, top, c, frak = _scratch(v, y)
    forward(ys[:N], v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    da = -alpha * c
    if correct:
        w2 = np.empty(N)
        jvp_c(Gkk @ c, s, vf, coef, kap, top, T, w2)
        da -= 0.5 * alpha * alpha * w2
    return np.concatenate([Gkk @ da, da, frak])


def _field_wp(x, N, n, Gxx, v, y, T, relevant, alpha, correct, head=False):
    """d/dtau of the flattened ``[z | P | b | F | S | MT]`` (formulas of ``flow._stage_wp``);
    with ``head``, ``[z | P | b | v | beta | F | S | MT]``."""
    N1 = N + 1
    z, P, b = x[:N], x[N], x[N + 1:N + 1 + N1]
    o = (4 * N + 2 if head else 2 * N + 2) + n
    S = x[o:o + N * N].reshape(N, N)
    MT = x[o + N * N:].reshape(N, N1)
    if head:
        v = x[2 * N + 2:3 * N + 2]
    s, vf, coef, kap, top, c, frak = _scratch(z, y)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    h = (coef[:, None] * s.reshape(n, T)).ravel()
    kbeta = -alpha * h
    e, Sc = Gxx @ c, S @ c
    ce, zc = c @ e, z @ c
    Ec_Me = np.concatenate(([0.0], c)) + MT.T @ e            # H c
    kz = -alpha * (P * e + Sc)
    kP = -2.0 * alpha * zc
    kb = -alpha * Ec_Me
    fq = -alpha * z
    fbeta = -alpha * b
    dS = dMT = 0.0
    if correct:
        h2 = 0.5 * alpha * alpha
        dc, dh = np.empty(N), np.empty(N)
        jvp_ch(-P * e - Sc, -(Gxx @ h) if head else np.zeros(N), s, vf, coef, kap, top, T, dc, dh)
        kbeta = kbeta + h2 * dh
        de = Gxx @ dc
        kz -= h2 * (zc * e - P * de + ce * z - S @ dc)
        kP -= alpha * alpha * (P * ce - z @ dc)
        kb -= h2 * (b * ce - np.concatenate(([0.0], dc)) - MT.T @ de)
        fq = fq - h2 * Sc
        fbeta = fbeta - h2 * Ec_Me
        dS = np.outer(h2 * de, z) + np.outer(z, h2 * de)
        dMT = np.outer(dc, h2 * b)
    dS = dS + np.outer(e, fq) + np.outer(fq, e)
    dMT = dMT + np.outer(c, fbeta)
    hd = [Gxx @ kbeta, kbeta] if head else []
    return np.concatenate([kz, [kP], kb, *hd, frak, np.ravel(dS), np.ravel(dMT)])


def _solve(fun, x0, t_len, tol):
    from scipy.integrate import solve_ivp

    rtol, atol, _ = tol
    sol = solve_ivp(lambda t, x: fun(x), (0.0, t_len), x0, method="DOP853", rtol=rtol, atol=atol)
    return sol.y[:, -1], sol.nfev


def _integrate_small(ys, field, t_len, tol, n, counters):
    """SciPy's DOP853 on a state that is ``ys`` alone (its last ``n`` entries, the 𝔖 block, from 0)."""
    ys[ys.shape[0] - n:] = 0.0
    if t_len <= 0.0:
        return 0.0
    x, nfev = _solve(field, ys.copy(), t_len, tol)
    ys[:] = x
    counters[0] += nfev
    return t_len


def _integrate_with_matrices(ys, S, MT, field, t_len, tol, n, counters):
    """SciPy's DOP853 on ``[ys | S | MT]`` flattened; the 𝔖 block of ``ys`` from 0."""
    N = S.shape[0]
    ys[ys.shape[0] - n:] = 0.0
    if t_len <= 0.0:
        return 0.0
    x, nfev = _solve(field, np.concatenate([ys, S.ravel(), MT.ravel()]), t_len, tol)
    m = ys.shape[0]
    ys[:] = x[:m]
    S[:] = x[m:m + N * N].reshape(N, N)
    MT[:] = x[m + N * N:].reshape(N, N + 1)
    counters[0] += nfev
    return t_len


def flow_p_run(ys, Gkk, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl, counters):
    """Twin of ``flow.flow_p_run`` (SciPy's DOP853 on the same field; ``tab`` and ``ctl`` unused)."""
    return _integrate_small(ys, lambda x: _field_p(x, Gkk, v, y, T, relevant, alpha, correct), t_len, tol,
                            y.shape[0], counters)


def flow_wp_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                counters):
    """Twin of ``flow.flow_wp_run`` (SciPy's DOP853 on the flattened state; ``tab`` and ``ctl`` unused)."""
    N, n = v.shape[0], y.shape[0]
    return _integrate_with_matrices(ys, S, MT, lambda x: _field_wp(x, N, n, Gxx, v, y, T, relevant, alpha, correct),
                                    t_len, tol, n, counters)


def flow_p_nu_run(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                  counters):
    """Twin of ``flow.flow_p_nu_run`` (SciPy's DOP853 on the same field; ``tab`` and ``ctl`` unused)."""
    return _integrate_small(ys, lambda x: _field_p_nu(x, Gkk, Gxx, y, T, relevant, alpha, correct), t_len, tol,
                            y.shape[0], counters)


def flow_wp_nu_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                   counters):
    """Twin of ``flow.flow_wp_nu_run`` (SciPy's DOP853 on the flattened state; ``tab`` and ``ctl`` unused)."""
    N, n = v.shape[0], y.shape[0]
    return _integrate_with_matrices(
        ys, S, MT, lambda x: _field_wp(x, N, n, Gxx, v, y, T, relevant, alpha, correct, head=True), t_len, tol, n,
        counters)
