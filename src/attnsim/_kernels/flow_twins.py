"""Slow NumPy twins of the flow kernels in ``flow.py`` (same signatures, same in-place contracts).

The power iterations are the same formulas in whole-array NumPy, on the twins of the coefficient
core (``gd_twins.coefficients``, ``gd_twins.jvp``). The integrators ``flow_p_run`` and
``flow_wp_run`` are an independent method on the same field: SciPy's DOP853
(``scipy.integrate.solve_ivp``) over the flattened state, with the field written from the
formulas of ``flow._stage_wp``'s docstring; they agree with the kernels to the integrators'
tolerances, not to the last bit.
"""

import numpy as np

from .core import fw_size
from .gd_twins import coefficients, jvp


def _core(z, v, y, T, relevant, head):
    """``(s, c, h, frak, fw)`` at ``(z, v)``: the core's outputs, ``h`` empty without the head."""
    N, n = z.shape[0], y.shape[0]
    s, c, h, frak, fw = np.empty(N), np.empty(N), np.empty(N if head else 0), np.zeros(n), np.zeros(fw_size(n, T))
    coefficients(z, v, y, T, relevant, s, c, h, frak, fw, True)
    return s, c, h, frak, fw


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


def spectral_p(z, v, Gkk, Gxx, y, T, relevant, vec, n_iter):
    """Twin of ``flow.spectral_p``: ``F' w = -J (Gkk w)``, with the head ``F' (wa, wb) = -J (Gkk wa, Gxx wb)``."""
    N = z.shape[0]
    head = vec.size == 2 * N
    s, c, h, frak, fw = _core(z, v, y, T, relevant, head)
    if not np.sqrt(vec @ vec) > 0.0:
        vec[:] = np.sin(1.0 + 0.7 * np.arange(vec.size))
    vec /= np.sqrt(vec @ vec)
    dc, dh = np.empty(N), np.empty(N if head else 0)

    def apply(x):
        jvp(Gkk @ x[:N], Gxx @ x[N:] if head else np.zeros(0), s, fw, T, dc, dh)
        return np.concatenate([dc, dh])
    return _power(apply, vec, n_iter)


def spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter):
    """Twin of ``flow.spectral_wp``: the JVP of ``F(b, M) = (-H c, -b c^T)`` by its formula, with the
    head's block (none if ``vbeta`` is empty)."""
    head = vbeta.size > 0
    s, c, _, frak, fw = _core(z, v, y, T, relevant, False)
    e, Gb, N = Gxx @ c, Gqq @ b, z.shape[0]
    if not np.sqrt(vb @ vb + np.sum(vMT * vMT) + vbeta @ vbeta) > 0.0:
        vb[:] = np.sin(1.0 + 0.7 * np.arange(N + 1))
        vMT[:] = np.sin(2.0 + 0.37 * np.arange(N * (N + 1))).reshape(N, N + 1)
        vbeta[:] = np.sin(3.0 + 0.53 * np.arange(vbeta.size))
    nrm = np.sqrt(vb @ vb + np.sum(vMT * vMT) + vbeta @ vbeta)
    vb /= nrm
    vMT /= nrm
    vbeta /= nrm
    rho, dc, dh = 0.0, np.empty(N), np.empty(N)
    for it in range(n_iter):
        u2 = Gqq @ vb
        dz = Gxx @ (vMT @ Gb + MT @ u2) + u2[1:]
        jvp(dz, Gxx @ vbeta if head else np.zeros(N), s, fw, T, dc, dh)
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


def _field_p(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, head):
    """d/dtau of ``[z | a | F]``, with the head ``[z | v | a | beta | F]`` (formulas of ``flow._stage_p``)."""
    N = v.shape[0]
    s, c, h, frak, fw = _core(ys[:N], ys[N:2 * N] if head else v, y, T, relevant, head)
    da, db = -alpha * c, -alpha * h
    if correct:
        dc, dh = np.empty(N), np.empty(h.size)
        jvp(Gkk @ c, Gxx @ h if head else np.zeros(0), s, fw, T, dc, dh)
        da -= 0.5 * alpha * alpha * dc
        db -= 0.5 * alpha * alpha * dh
    hd = [Gxx @ db] if head else []
    return np.concatenate([Gkk @ da, *hd, da, db, frak])


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
    s, c, h, frak, fw = _core(z, v, y, T, relevant, True)
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
        jvp(-P * e - Sc, -(Gxx @ h) if head else np.zeros(N), s, fw, T, dc, dh)
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


def flow_p_run(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl, counters):
    """Twin of ``flow.flow_p_run`` (SciPy's DOP853 on the same field; ``tab`` and ``ctl`` unused)."""
    head = ys.shape[0] == 4 * v.shape[0] + y.shape[0]
    return _integrate_small(ys, lambda x: _field_p(x, Gkk, Gxx, v, y, T, relevant, alpha, correct, head), t_len,
                            tol, y.shape[0], counters)


def flow_wp_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                counters):
    """Twin of ``flow.flow_wp_run`` (SciPy's DOP853 on the flattened state; ``tab`` and ``ctl`` unused)."""
    N, n = v.shape[0], y.shape[0]
    head = ys.shape[0] == 4 * N + 2 + n
    return _integrate_with_matrices(
        ys, S, MT, lambda x: _field_wp(x, N, n, Gxx, v, y, T, relevant, alpha, correct, head=head), t_len, tol, n,
        counters)
