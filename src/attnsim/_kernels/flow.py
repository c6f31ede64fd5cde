"""numba kernels of the gradient-flow mode (``dynamics="flow"``).

Everything the flow integrator, its exact-GD start and its Jacobian estimate run
lives here, helpers included, because numba's on-disk cache does not notice
edits to helpers imported from another module.

Conventions (DESIGN.md §4, ``_kernels.py``): ``N = n T`` training tokens stacked
sample-major, ``v = X_all nu`` the token values, ``z`` the scores, ``c = dL/dz``.
Time is measured in GD steps: the flow of the loss with step ``alpha`` is
``d theta / d tau = alpha F(theta)``, ``F = -grad L``; GD is forward Euler on it
with step 1. With ``correct`` the integrated field is the first backward-error
correction ``alpha F - (alpha^2 / 2) F' F`` (the modified equation of Euler,
whose solution follows GD to O(alpha^2) instead of O(alpha)).

Precision at saturation: ``forward`` works relative to each sample's top token.
The softmax is ``s_r = 1 / (1 + sum_{t != r} e^{z_t - z_r})`` for the top token
``r``, ``v_t - f`` is formed as ``(v_t - v_r) - sum_{u != r} s_u (v_u - v_r)``,
so ``1 - s_r``, ``c`` and the relevant-set mass keep their digits when
``1 - s_r`` is far below machine epsilon relative to 1.

State vectors (``ys``, the "small" state integrated componentwise):

- ``mode 0`` (p only, ``p = p0 + K^T a``): ``[z (N) | a (N) | F (n)]``;
- ``mode 2`` (p and the head, ``nu = nu0 + X_all^T beta``, ``v = X_all nu0 + Gxx beta``):
  ``[z (N) | v (N) | a (N) | beta (N) | F (n)]``;
- ``mode 3`` (W, p and the head): ``[z (N) | P (1) | b (N+1) | v (N) | beta (N) | F (n)]``
  plus ``S`` and ``MT`` as in mode 1;
- ``mode 1`` (W and p): ``[z (N) | P (1) | b (N+1) | F (n)]`` plus the matrices
  ``S`` (N, N) and ``MT`` (N, N+1) of ``_kernels.dual_wp_run``, whose
  derivatives are of rank at most 4 and 2: each Runge-Kutta stage stores the
  factors and applies them to vectors instead of forming stage matrices, so a
  step costs O(N^2) per stage plus one rank-32 update of ``S`` and ``MT``.

``F`` (n,) accumulates ``int m_i (1 - m_i) d tau`` over the current call.
"""

import numpy as np
from numba import njit

# The scalar loss helpers and the two W,p sweeps are shared with the GD kernels. numba's on-disk cache keys
# a function on its own file only; the Makefile clears the caches whenever a file of _kernels/ changes.
from .gd import _dot, _dual_coef_sweep, _key_gram_sweep, _logistic_loss, _rows_axpy, _rows_gemv, _rows_gemv_two
from .gd import _neg_dloss as _sigmoid_neg

#: Rows of the per-stage factor array ``FAC`` (8, 12, N+1), mode 1.
#: dS_j = e q^T + q e^T + r z^T + z r^T ;  dM_j = beta c^T + gamma dc^T.
_F_E, _F_Q, _F_R, _F_Z, _F_BETA, _F_C, _F_GAMMA, _F_DC = range(8)

#: What ``_integrate`` integrates: p alone, W and p, or p and the head (the public entry points fix it).
_MODE_P, _MODE_WP, _MODE_P_NU, _MODE_WP_NU = 0, 1, 2, 3


# ------------------------------------------------------------------ scalar helpers


@njit(cache=True)
def _symv(G, x, out):
    """``out = G x`` for symmetric ``G`` (N, N): ``_kernels.gd._rows_gemv``, contiguous row axpys."""
    _rows_gemv(out, G, x)


# ------------------------------------------------------------------ forward and its JVP


@njit(cache=True)
def forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak):
    """Softmax, ``c = dL/dz`` and the quantities its JVP needs, relative to each sample's top token.

    Parameters
    ----------
    z, v : ndarray, shape (N,)
    y : ndarray, shape (n,)
    T : int
    relevant : ndarray of bool, shape (T,)
    s, vf, c : ndarray, shape (N,)
        Output: attention, ``v_t - f_i`` and ``dL/dz``.
    coef, kap : ndarray, shape (n,)
        Output: ``c_it = coef_i s_it vf_it``; ``kap_i = d coef_i / d f_i``.
    top : ndarray of int64, shape (n,)
        Output: index of each sample's largest score.
    frak : ndarray, shape (n,)
        Output (overwritten): ``m_i (1 - m_i)``.

    Returns
    -------
    loss : float
        ``mean_i ell(y_i f_i)``.
    finite : bool
        False when a score or output is not finite.
    """
    n = y.shape[0]
    inv_n = 1.0 / n
    finite = True
    loss = 0.0
    for i in range(n):
        base = i * T
        r = 0
        zr = z[base]
        for t in range(1, T):
            if z[base + t] > zr:
                zr = z[base + t]
                r = t
        rest = 0.0
        for t in range(T):
            if t != r:
                ex = np.exp(z[base + t] - zr)
                s[base + t] = ex
                rest += ex
        total = 1.0 + rest
        vr = v[base + r]
        df = 0.0                                   # f - v_r, small when s_r -> 1
        m_in = 0.0
        m_out = 0.0
        for t in range(T):
            if t == r:
                st = 1.0 / total
            else:
                st = s[base + t] / total
                df += st * (v[base + t] - vr)
            s[base + t] = st
            if relevant[t]:
                m_in += st
            else:
                m_out += st
        f = vr + df
        yi = y[i]
        u = yi * f
        q = _sigmoid_neg(u)                        # -ell'(u)
        co = -inv_n * q * yi
        coef[i] = co
        kap[i] = inv_n * q * _sigmoid_neg(-u)     # sigma(-u) sigma(u), both factors with their digits
        top[i] = r
        for t in range(T):
            if t == r:
                vft = -df
            else:
                vft = (v[base + t] - vr) - df
            vf[base + t] = vft
            c[base + t] = co * s[base + t] * vft
        frak[i] = m_in * m_out
        loss += _logistic_loss(u)
        if not (np.isfinite(f) and np.isfinite(zr)):
            finite = False
    return loss * inv_n, finite


@njit(cache=True)
def jvp_c(dz, s, vf, coef, kap, top, T, dc):
    """Directional derivative ``dc = (dc/dz) dz`` at the point last given to ``forward``.

    Parameters
    ----------
    dz : ndarray, shape (N,)
    s, vf : ndarray, shape (N,)
    coef, kap : ndarray, shape (n,)
    top : ndarray of int64, shape (n,)
    T : int
    dc : ndarray, shape (N,)
        Output.

    Notes
    -----
    With ``dzr_t = dz_t - dz_r`` (r the top token), ``ds_t = s_t (dzr_t - sum_u s_u dzr_u)``,
    ``df = sum_t s_t dzr_t (v_t - f)`` and ``d coef = kap df``:
    ``dc_t = d coef s_t (v_t - f) + coef (ds_t (v_t - f) - s_t df)``.
    """
    n = top.shape[0]
    for i in range(n):
        base = i * T
        r = top[i]
        dz_r = dz[base + r]
        dbar = 0.0
        df = 0.0
        for t in range(T):
            if t != r:
                w = s[base + t] * (dz[base + t] - dz_r)
                dbar += w
                df += w * vf[base + t]
        dco = kap[i] * df
        co = coef[i]
        for t in range(T):
            dzr = 0.0 if t == r else dz[base + t] - dz_r
            st = s[base + t]
            dc[base + t] = dco * st * vf[base + t] + co * st * ((dzr - dbar) * vf[base + t] - df)


@njit(cache=True)
def jvp_ch(dz, dv, s, vf, coef, kap, top, T, dc, dh):
    """Directional derivative of ``(c, h)`` along ``(dz, dv)`` at the point last given to ``forward``.

    ``h = dL/dv``, ``h_t = coef s_t`` (the head's coefficients, p and nu trained).

    Parameters
    ----------
    dz, dv : ndarray, shape (N,)
    s, vf : ndarray, shape (N,)
    coef, kap : ndarray, shape (n,)
    top : ndarray of int64, shape (n,)
    T : int
    dc, dh : ndarray, shape (N,)
        Output.

    Notes
    -----
    With ``dzr_t = dz_t - dz_r``, ``dvr_t = dv_t - dv_r`` (r the top token),
    ``dbar = sum_u s_u dzr_u``, ``df_z = sum_t s_t dzr_t (v_t - f)`` and
    ``df_v = dv_r + sum_t s_t dvr_t`` (so ``dv_t - df_v = dvr_t - sum_u s_u dvr_u``),
    ``df = df_z + df_v`` and ``d coef = kap df``:
    ``dc_t = d coef s_t (v_t - f) + coef s_t ((dzr_t - dbar) (v_t - f) - df_z + dv_t - df_v)``,
    ``dh_t = d coef s_t + coef s_t (dzr_t - dbar)``.
    """
    n = top.shape[0]
    for i in range(n):
        base = i * T
        r = top[i]
        dz_r = dz[base + r]
        dv_r = dv[base + r]
        dbar = 0.0
        dfz = 0.0
        dvbar = 0.0                               # sum_u s_u dvr_u
        for t in range(T):
            if t != r:
                st = s[base + t]
                w = st * (dz[base + t] - dz_r)
                dbar += w
                dfz += w * vf[base + t]
                dvbar += st * (dv[base + t] - dv_r)
        dco = kap[i] * (dfz + dv_r + dvbar)
        co = coef[i]
        for t in range(T):
            dzr = 0.0 if t == r else dz[base + t] - dz_r
            dvr = 0.0 if t == r else dv[base + t] - dv_r
            st = s[base + t]
            dc[base + t] = dco * st * vf[base + t] + co * st * ((dzr - dbar) * vf[base + t] - dfz + dvr - dvbar)
            dh[base + t] = dco * st + co * st * (dzr - dbar)


# ------------------------------------------------------------------ exact GD (the start)


@njit(cache=True)
def _forward_summed(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak, frak_sum):
    """``forward`` at a GD iterate, adding its ``m (1 - m)`` into ``frak_sum``; False if non-finite."""
    _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    if ok:
        for i in range(frak.shape[0]):
            frak_sum[i] += frak[i]
    return ok


@njit(cache=True)
def gd_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak, w):
    """Exact GD on p alone in dual coordinates (``_kernels.dual_p_run`` with the top-relative ``c``).

    State ``a``, ``z`` (N,) updated in place; ``frak_sum`` (n,) gains ``m_i (1 - m_i)``
    at every iterate before its update. Returns the steps completed.
    """
    N = z.shape[0]
    for step in range(n_steps):
        if not _forward_summed(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak, frak_sum):
            return step
        _symv(Gkk, c, w)
        for j in range(N):
            a[j] -= lr * c[j]
            z[j] -= lr * w[j]
    return n_steps


@njit(cache=True)
def gd_wp_run(z, S, P, b, MT, Gxx, v, y, T, relevant, lr, n_steps, frak_sum,
              s, vf, coef, kap, top, c, frak, e, Sc, Hc):
    """Exact simultaneous GD on W and p (the recurrences of ``_kernels.dual_wp_run``).

    State ``z`` (N,), ``S`` (N, N), ``P`` (1,), ``b`` (N+1,), ``MT`` (N, N+1) updated in
    place. Returns the steps completed.
    """
    for step in range(n_steps):
        if not _forward_summed(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak, frak_sum):
            return step
        _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc)
    return n_steps


@njit(cache=True)
def _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc):
    """One step of ``gd_wp_run``'s recurrences at the coefficients ``c``."""
    N = z.shape[0]
    _symv(Gxx, c, e)
    zc = _dot(z, c)
    Pk = P[0]
    _key_gram_sweep(S, c, z, e, lr, lr * lr * Pk, Sc)
    cSc = _dot(c, Sc)
    _dual_coef_sweep(MT, e, c, b, lr, Hc)
    for r in range(N + 1):
        b[r] -= lr * Hc[r]
    corr = lr * lr * zc
    for j in range(N):
        z[j] = z[j] - lr * Sc[j] - lr * Pk * e[j] + corr * e[j]
    P[0] = Pk - 2.0 * lr * zc + lr * lr * cSc


@njit(cache=True)
def gd_wp_nu_run(z, S, P, b, MT, beta, v, Gxx, y, T, relevant, lr, n_steps, frak_sum,
                 s, vf, coef, kap, top, c, frak, e, Sc, Hc, h, eh):
    """Exact simultaneous GD on W, p and the head: ``gd_wp_run`` plus ``beta -= lr h``,
    ``v -= lr Gxx h``, all from the same iterate. Returns the steps completed."""
    N = z.shape[0]
    for step in range(n_steps):
        if not _forward_summed(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak, frak_sum):
            return step
        _head_of(s, coef, T, h)
        _symv(Gxx, h, eh)
        for j in range(N):
            beta[j] -= lr * h[j]
            v[j] -= lr * eh[j]
        _wp_step(z, S, P, b, MT, Gxx, c, lr, e, Sc, Hc)
    return n_steps


@njit(cache=True)
def _head_of(s, coef, T, h):
    """``h_t = dL/dv_t = coef_i s_t`` from ``forward``'s outputs."""
    for i in range(coef.shape[0]):
        co = coef[i]
        for t in range(T):
            h[i * T + t] = co * s[i * T + t]


@njit(cache=True)
def gd_p_nu_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak,
                h, w, wh):
    """Exact GD on p and the head (``_kernels.gd.dual_p_nu_run`` with the top-relative ``c``).

    State ``a``, ``z``, ``beta``, ``v`` (N,) updated in place: ``a -= lr c``, ``z -= lr Gkk c``,
    ``beta -= lr h``, ``v -= lr Gxx h``. Returns the steps completed.
    """
    N = z.shape[0]
    for step in range(n_steps):
        if not _forward_summed(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak, frak_sum):
            return step
        _head_of(s, coef, T, h)
        _rows_gemv_two(w, wh, Gkk, Gxx, c, h)
        for j in range(N):
            a[j] -= lr * c[j]
            z[j] -= lr * w[j]
            beta[j] -= lr * h[j]
            v[j] -= lr * wh[j]
    return n_steps


# ------------------------------------------------------------------ Jacobian spectral radius


@njit(cache=True)
def spectral_p(z, Gkk, v, y, T, relevant, vec, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` (p only, dual coordinates).

    ``F(a) = -c(z0 + Gkk a)``, so ``F' w = -(dc/dz)(Gkk w)``. ``vec`` (N,) is the start
    vector and receives the last iterate (a warm start for the next call).
    Returns the larger of the last two ratios ``||F' w|| / ||w||``.
    """
    N = z.shape[0]
    n = y.shape[0]
    s = np.empty(N); vf = np.empty(N); c = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64); frak = np.empty(n); w = np.empty(N); out = np.empty(N)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    nrm = np.sqrt(_dot(vec, vec))
    if not nrm > 0.0:
        for j in range(N):
            vec[j] = np.sin(1.0 + 0.7 * j)
        nrm = np.sqrt(_dot(vec, vec))
    for j in range(N):
        vec[j] /= nrm
    rho = 0.0
    for it in range(n_iter):
        _symv(Gkk, vec, w)
        jvp_c(w, s, vf, coef, kap, top, T, out)
        nrm = np.sqrt(_dot(out, out))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for j in range(N):
            vec[j] = out[j] / nrm
    return rho


@njit(cache=True)
def spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` for W and p, in (b, M) coordinates.

    ``F(b, M) = (-H c, -b c^T)`` with ``H = E + M Gxx`` and ``z = H^T Gqq b``; the JVP
    along ``(db, dM)`` is ``dz = Gxx (dM^T Gqq b + M^T Gqq db) + (Gqq db)[1:]``,
    ``dF_b = -(dM e + E dc + M Gxx dc)``, ``dF_M = -(db c^T + b dc^T)``.
    ``vb`` (N+1,) and ``vMT`` (N, N+1) hold the start vector and receive the last iterate.
    """
    return _spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, np.zeros(0), n_iter, False)


@njit(cache=True)
def spectral_wp_nu(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter):
    """``spectral_wp`` with the head: ``F`` gains ``-h`` (the beta block); along ``(db, dM, dbeta)``
    ``dv = Gxx dbeta``, ``(dc, dh)`` from ``jvp_ch(dz, dv)`` and ``dF_beta = -dh``. ``vbeta`` (N,)
    is the head's part of the start vector and receives its last iterate."""
    return _spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter, True)


@njit(cache=True)
def _spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter, head):
    """Power-iteration estimate of the spectral radius of ``F'`` for W and p, in (b, M) coordinates.

    ``F(b, M) = (-H c, -b c^T)`` with ``H = E + M Gxx`` and ``z = H^T Gqq b``; the JVP
    along ``(db, dM)`` is ``dz = Gxx (dM^T Gqq b + M^T Gqq db) + (Gqq db)[1:]``,
    ``dF_b = -(dM e + E dc + M Gxx dc)``, ``dF_M = -(db c^T + b dc^T)``.
    ``vb`` (N+1,) and ``vMT`` (N, N+1) hold the start vector and receive the last iterate.
    """
    N = z.shape[0]
    n = y.shape[0]
    N1 = N + 1
    s = np.empty(N); vf = np.empty(N); c = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64); frak = np.empty(n)
    e = np.empty(N); Gb = np.empty(N1); u2 = np.empty(N1); u = np.empty(N); dz = np.empty(N)
    dc = np.empty(N); gdc = np.empty(N); ob = np.empty(N1); oMT = np.empty((N, N1))
    dv = np.empty(N); dh = np.empty(N); obeta = np.empty(vbeta.shape[0])
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    _symv(Gxx, c, e)
    _symv(Gqq, b, Gb)
    nrm = np.sqrt(_dot(vb, vb) + np.sum(vMT * vMT) + _dot(vbeta, vbeta))
    if not nrm > 0.0:
        for r in range(N1):
            vb[r] = np.sin(1.0 + 0.7 * r)
        for j in range(N):
            for r in range(N1):
                vMT[j, r] = np.sin(2.0 + 0.37 * (j * N1 + r))
        for j in range(vbeta.shape[0]):
            vbeta[j] = np.sin(3.0 + 0.53 * j)
        nrm = np.sqrt(_dot(vb, vb) + np.sum(vMT * vMT) + _dot(vbeta, vbeta))
    vb /= nrm
    vMT /= nrm
    vbeta /= nrm
    rho = 0.0
    for it in range(n_iter):
        _symv(Gqq, vb, u2)
        for j in range(N):
            u[j] = _dot(vMT[j], Gb) + _dot(MT[j], u2)
        _symv(Gxx, u, dz)
        for j in range(N):
            dz[j] += u2[j + 1]
        if head:
            _symv(Gxx, vbeta, dv)
            jvp_ch(dz, dv, s, vf, coef, kap, top, T, dc, dh)
            for j in range(N):
                obeta[j] = -dh[j]
        else:
            jvp_c(dz, s, vf, coef, kap, top, T, dc)
        _symv(Gxx, dc, gdc)
        ob[0] = 0.0
        for j in range(N):
            ob[j + 1] = dc[j]
        for j in range(N):
            ej = e[j]
            gj = gdc[j]
            for r in range(N1):
                ob[r] += ej * vMT[j, r] + gj * MT[j, r]
        for r in range(N1):
            ob[r] = -ob[r]
        for j in range(N):
            cj = c[j]
            dcj = dc[j]
            for r in range(N1):
                oMT[j, r] = -(vb[r] * cj + b[r] * dcj)
        nrm = np.sqrt(_dot(ob, ob) + np.sum(oMT * oMT) + _dot(obeta, obeta))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for r in range(N1):
            vb[r] = ob[r] / nrm
        for j in range(N):
            for r in range(N1):
                vMT[j, r] = oMT[j, r] / nrm
        for j in range(vbeta.shape[0]):
            vbeta[j] = obeta[j] / nrm
    return rho


@njit(cache=True)
def spectral_p_nu(z, v, Gkk, Gxx, y, T, relevant, vec, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` for p and the head (dual coordinates).

    ``F(a, beta) = -(c, h)(z0 + Gkk a, v0 + Gxx beta)``, so ``F' (wa, wb) = -J (Gkk wa, Gxx wb)``
    with ``J`` the JVP of ``jvp_ch``. ``vec`` (2N,) = ``[wa | wb]`` is the start vector and
    receives the last iterate. Returns the larger of the last two ratios ``||F' w|| / ||w||``.
    """
    N = z.shape[0]
    n = y.shape[0]
    s = np.empty(N); vf = np.empty(N); c = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64); frak = np.empty(n); w = np.empty(N); wv = np.empty(N)
    out = np.empty(2 * N)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    nrm = np.sqrt(_dot(vec, vec))
    if not nrm > 0.0:
        for j in range(2 * N):
            vec[j] = np.sin(1.0 + 0.7 * j)
        nrm = np.sqrt(_dot(vec, vec))
    for j in range(2 * N):
        vec[j] /= nrm
    rho = 0.0
    for it in range(n_iter):
        _rows_gemv_two(w, wv, Gkk, Gxx, vec[:N], vec[N:])
        jvp_ch(w, wv, s, vf, coef, kap, top, T, out[:N], out[N:])
        nrm = np.sqrt(_dot(out, out))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for j in range(2 * N):
            vec[j] = out[j] / nrm
    return rho


# ------------------------------------------------------------------ the flow's right-hand side


@njit(cache=True)
def _stage_p(ys, Gkk, v, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top, c, w1, w2):
    """d ys / d tau for p alone; ``ys = [z | a | F]``. Returns False on a non-finite output.

    ``F(a) = -c``, ``F' F = (dc/dz)(Gkk c)``; ``dz/dtau = Gkk da/dtau`` keeps z exact in a.
    """
    N = v.shape[0]
    n = y.shape[0]
    _, ok = forward(ys[:N], v, y, T, relevant, s, vf, coef, kap, top, c, kout[2 * N:2 * N + n])
    da = kout[N:2 * N]
    if correct:
        _symv(Gkk, c, w1)
        jvp_c(w1, s, vf, coef, kap, top, T, w2)
        h2 = 0.5 * alpha * alpha
        for j in range(N):
            da[j] = -alpha * c[j] - h2 * w2[j]
    else:
        for j in range(N):
            da[j] = -alpha * c[j]
    _symv(Gkk, da, kout[:N])
    return ok


@njit(cache=True)
def _stage_p_nu(ys, Gkk, Gxx, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top, W):
    """d ys / d tau for p and the head; ``ys = [z | v | a | beta | F]``. Returns False on a non-finite output.

    ``F(a, beta) = -(c, h)``; ``F' F = J (Gkk c, Gxx h)`` with ``J`` the JVP of ``(c, h)``
    (``jvp_ch``); ``dz/dtau = Gkk da/dtau`` and ``dv/dtau = Gxx dbeta/dtau`` keep z, v exact.
    """
    N = Gkk.shape[0]
    n = y.shape[0]
    c = W[0, :N]; h = W[1, :N]; w1 = W[2, :N]; w2 = W[3, :N]; dc = W[4, :N]; dh = W[5, :N]
    _, ok = forward(ys[:N], ys[N:2 * N], y, T, relevant, s, vf, coef, kap, top, c, kout[4 * N:4 * N + n])
    _head_of(s, coef, T, h)
    da = kout[2 * N:3 * N]
    db = kout[3 * N:4 * N]
    if correct:
        _rows_gemv_two(w1, w2, Gkk, Gxx, c, h)
        jvp_ch(w1, w2, s, vf, coef, kap, top, T, dc, dh)
        h2 = 0.5 * alpha * alpha
        for j in range(N):
            da[j] = -alpha * c[j] - h2 * dc[j]
            db[j] = -alpha * h[j] - h2 * dh[j]
    else:
        for j in range(N):
            da[j] = -alpha * c[j]
            db[j] = -alpha * h[j]
    _rows_gemv_two(kout[:N], kout[N:2 * N], Gkk, Gxx, da, db)
    return ok


@njit(cache=True)
def _lr_sym(S, x, out, i, hA, FAC, correct):
    """``out = S_i x``: ``S`` plus the rank-4 stage derivatives ``j < i`` weighted by ``hA[j]``."""
    _symv(S, x, out)
    for j in range(i):
        wj = hA[j]
        if wj == 0.0:
            continue
        fe = FAC[_F_E, j]
        fq = FAC[_F_Q, j]
        a1 = wj * _dot(fq, x)
        a2 = wj * _dot(fe, x)
        for l in range(out.shape[0]):
            out[l] += a1 * fe[l] + a2 * fq[l]
        if correct:
            fr = FAC[_F_R, j]
            fz = FAC[_F_Z, j]
            a3 = wj * _dot(fz, x)
            a4 = wj * _dot(fr, x)
            for l in range(out.shape[0]):
                out[l] += a3 * fr[l] + a4 * fz[l]


@njit(cache=True)
def _lr_m(MT, x1, x2, out1, out2, both, i, hA, FAC, correct):
    """``out1 = M_i x1`` (and ``out2 = M_i x2`` if ``both``): ``M`` plus rank-2 stage derivatives."""
    N = MT.shape[0]
    N1 = MT.shape[1]
    for r in range(N1):
        out1[r] = 0.0
        out2[r] = 0.0
    for j in range(N):
        a = x1[j]
        bb = x2[j] if both else 0.0
        for r in range(N1):
            m = MT[j, r]
            out1[r] += a * m
            out2[r] += bb * m
    for k in range(i):
        wk = hA[k]
        if wk == 0.0:
            continue
        beta = FAC[_F_BETA, k]
        ck = FAC[_F_C, k][:N]
        a1 = wk * _dot(ck, x1)
        a2 = wk * _dot(ck, x2) if both else 0.0
        for r in range(N1):
            out1[r] += a1 * beta[r]
            out2[r] += a2 * beta[r]
        if correct:
            gam = FAC[_F_GAMMA, k]
            dck = FAC[_F_DC, k][:N]
            a3 = wk * _dot(dck, x1)
            a4 = wk * _dot(dck, x2) if both else 0.0
            for r in range(N1):
                out1[r] += a3 * gam[r]
                out2[r] += a4 * gam[r]


@njit(cache=True)
def _stage_wp(i, hA, ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top,
              head):
    """d ys / d tau for W and p at stage ``i``; ``ys = [z | P | b | F]``.

    ``S`` and ``M`` at this stage are the step's base matrices plus the low-rank stage
    derivatives ``j < i`` weighted by ``hA`` (``h A[i, :]``). Writes this stage's
    factors into ``FAC[:, i]``. With ``Delta z = -P e - S c`` (the field's z-part in
    GD-step units), ``dc = (dc/dz) Delta z``, ``de = Gxx dc``, the correction
    ``F' F`` pushed to (z, S, P) is

        z:  (z.c) e - P de + (c.e) z - S dc
        S:  e (S c)^T + (S c) e^T - de z^T - z de^T
        P:  2 (P (c.e) - z.dc)

    and in the linear (b, M): ``(b (c.e) - E dc - M de,  H c c^T - b dc^T)``.
    (The (z, S, P) terms are the push-forward of the (W, p) correction, not the
    correction of the pushed-forward field: the two differ because (z, S, P) are
    nonlinear in (W, p).) Returns False on a non-finite output.

    With ``head`` (W, p and nu; ``ys = [z | P | b | v | beta | F]``) the values are ``ys``'s
    ``v``, ``dc`` is the JVP of ``c`` along ``(Delta z, Delta v = -Gxx h)`` (``jvp_ch``), and the
    head's block is ``dbeta = -alpha h + (alpha^2/2) dh`` (``dh`` along ``Delta``, so the
    second term is ``-(alpha^2/2) F'F``), ``dv = Gxx dbeta``; the (z, S, P, b, M) formulas are
    unchanged (only ``c``'s derivative sees the head).
    """
    N = v.shape[0]
    n = y.shape[0]
    N1 = N + 1
    z = ys[:N]
    P = ys[N]
    b = ys[N + 1:N + 1 + N1]
    c = W[0, :N]; e = W[1, :N]; Sc = W[2, :N]; dz = W[3, :N]; dc = W[4, :N]; de = W[5, :N]
    Sdc = W[6, :N]; Me = W[7]; Mde = W[8]
    hh = W[9, :N]; eh = W[10, :N]; dh = W[11, :N]; dvn = W[12, :N]
    off = 4 * N + 2 if head else 2 * N + 2
    vv = ys[2 * N + 2:3 * N + 2] if head else v
    _, ok = forward(z, vv, y, T, relevant, s, vf, coef, kap, top, c, kout[off:off + n])
    if head:
        _head_of(s, coef, T, hh)
        _symv(Gxx, hh, eh)
    _symv(Gxx, c, e)
    _lr_sym(S, c, Sc, i, hA, FAC, correct)
    ce = _dot(c, e)
    zc = _dot(z, c)
    h2 = 0.5 * alpha * alpha
    if correct:
        for j in range(N):
            dz[j] = -P * e[j] - Sc[j]
        if head:
            for j in range(N):
                dvn[j] = -eh[j]
            jvp_ch(dz, dvn, s, vf, coef, kap, top, T, dc, dh)
        else:
            jvp_c(dz, s, vf, coef, kap, top, T, dc)
        _symv(Gxx, dc, de)
        _lr_sym(S, dc, Sdc, i, hA, FAC, correct)
        _lr_m(MT, e, de, Me, Mde, True, i, hA, FAC, correct)
        zdc = _dot(z, dc)
        for j in range(N):
            kout[j] = -alpha * (P * e[j] + Sc[j]) - h2 * (zc * e[j] - P * de[j] + ce * z[j] - Sdc[j])
        kout[N] = -2.0 * alpha * zc - alpha * alpha * (P * ce - zdc)
    else:
        _lr_m(MT, e, e, Me, Mde, False, i, hA, FAC, correct)
        for j in range(N):
            kout[j] = -alpha * (P * e[j] + Sc[j])
        kout[N] = -2.0 * alpha * zc
    kb = kout[N + 1:N + 1 + N1]
    fbeta = FAC[_F_BETA, i]
    # H c = E c + M e, with E = [0; I]
    hc0 = Me[0]
    kb[0] = -alpha * hc0
    fbeta[0] = -alpha * b[0]
    if correct:
        kb[0] -= h2 * (b[0] * ce - Mde[0])
        fbeta[0] -= h2 * hc0
    for r in range(1, N1):
        hc = c[r - 1] + Me[r]
        kb[r] = -alpha * hc
        fbeta[r] = -alpha * b[r]
        if correct:
            kb[r] -= h2 * (b[r] * ce - dc[r - 1] - Mde[r])
            fbeta[r] -= h2 * hc
    fe = FAC[_F_E, i]; fq = FAC[_F_Q, i]; fz = FAC[_F_Z, i]; fc = FAC[_F_C, i]
    for j in range(N):
        fe[j] = e[j]
        fq[j] = -alpha * z[j]
        fz[j] = z[j]
        fc[j] = c[j]
    if correct:
        fr = FAC[_F_R, i]; fd = FAC[_F_DC, i]; fg = FAC[_F_GAMMA, i]
        for j in range(N):
            fq[j] -= h2 * Sc[j]
            fr[j] = h2 * de[j]
            fd[j] = dc[j]
        for r in range(N1):
            fg[r] = h2 * b[r]
    if head:
        kbeta = kout[3 * N + 2:4 * N + 2]
        for j in range(N):
            kbeta[j] = -alpha * hh[j] + (h2 * dh[j] if correct else 0.0)   # dh is along -F's (z, v) part
        _symv(Gxx, kbeta, kout[2 * N + 2:3 * N + 2])
    return ok


# ------------------------------------------------------------------ the integrator


@njit(cache=True)
def _stage(mode, i, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top):
    if mode == _MODE_P:
        N = v.shape[0]
        return _stage_p(ys, G, v, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top,
                        W[0, :N], W[1, :N], W[2, :N])
    if mode == _MODE_P_NU:
        return _stage_p_nu(ys, G, S, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top, W)
    return _stage_wp(i, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top,
                     mode == _MODE_WP_NU)


@njit(cache=True)
def _error_scale(mode, N, n, ys, ynew, rtol, atol, sc):
    """Per-component error scale; 0 marks a component left out of the error norm.

    Scores, ``||p||^2`` and the 𝔖 integral: ``atol + rtol |y|`` componentwise.
    ``b`` (W and p): ``atol + rtol max_r |b_r|`` (norm-wise: its small entries do not
    matter on their own). ``a`` (p only) is left out: ``z = z0 + Gkk a`` is controlled; so are
    ``a`` and ``beta`` (p and the head), with ``z`` and ``v = v0 + Gxx beta`` controlled.
    """
    m = ys.shape[0]
    for k in range(m):
        sc[k] = atol + rtol * max(abs(ys[k]), abs(ynew[k]))
    if mode == _MODE_P:
        for k in range(N, 2 * N):
            sc[k] = 0.0
    elif mode == _MODE_P_NU:
        for k in range(2 * N, 4 * N):
            sc[k] = 0.0
    else:
        bmax = 0.0
        for k in range(N + 1, 2 * N + 2):
            bmax = max(bmax, abs(ys[k]), abs(ynew[k]))
        for k in range(N + 1, 2 * N + 2):
            sc[k] = atol + rtol * bmax
        if mode == _MODE_WP_NU:
            for k in range(3 * N + 2, 4 * N + 2):
                sc[k] = 0.0


@njit(cache=True)
def flow_p_run(ys, Gkk, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl, counters):
    """Integrate the flow of p alone (``ys = [z | a | F]``, ``Gkk`` the key Gram) over ``t_len``
    GD steps of time; see ``_integrate`` for the arguments and the return value."""
    empty = np.zeros((0, 0))
    return _integrate(_MODE_P, ys, empty, empty, Gkk, v, y, T, relevant, alpha, correct, t_len, h_io, tol,
                      max_steps, tab, ctl, counters)


@njit(cache=True)
def flow_wp_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                counters):
    """Integrate the flow of W and p (``ys = [z | P | b | F]`` plus ``S``, ``MT``) over ``t_len``
    GD steps of time; see ``_integrate`` for the arguments and the return value."""
    return _integrate(_MODE_WP, ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps,
                      tab, ctl, counters)


@njit(cache=True)
def flow_p_nu_run(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                  counters):
    """Integrate the flow of p and the head (``ys = [z | v | a | beta | F]``, ``Gkk`` the key Gram,
    ``Gxx`` the token Gram) over ``t_len`` GD steps of time; see ``_integrate`` for the arguments
    and the return value. ``v`` (N,) only gives the size: the values are ``ys[N:2N]``."""
    empty = np.zeros((0, 0))
    return _integrate(_MODE_P_NU, ys, Gxx, empty, Gkk, v, y, T, relevant, alpha, correct, t_len, h_io, tol,
                      max_steps, tab, ctl, counters)


@njit(cache=True)
def flow_wp_nu_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                   counters):
    """Integrate the flow of W, p and the head (``ys = [z | P | b | v | beta | F]`` plus ``S``,
    ``MT``) over ``t_len`` GD steps of time; see ``_integrate``. ``v`` (N,) only gives the size."""
    return _integrate(_MODE_WP_NU, ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps,
                      tab, ctl, counters)


@njit(cache=True)
def _integrate(mode, ys, S, MT, G, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
               counters):
    """Integrate the (corrected) flow over ``t_len`` GD steps of time with adaptive DOP853.

    Parameters
    ----------
    mode : int
        ``_MODE_P`` (``G = Gkk``), ``_MODE_WP`` (``G = Gxx``, ``S`` and ``MT`` integrated too) or
        ``_MODE_P_NU`` (``G = Gkk``, ``S = Gxx`` read only) or ``_MODE_WP_NU`` (as ``_MODE_WP``).
    ys : ndarray, shape (m,)
        Small state (module docstring), updated in place. Its 𝔖 block is zeroed first
        and holds ``int m (1 - m) d tau`` over this call on return.
    S : ndarray, shape (N, N)
    MT : ndarray, shape (N, N+1)
        Mode 1 state, updated in place (shape (0, 0) in mode 0; in mode 2 ``S`` is ``Gxx``
        and ``MT`` is (0, 0)).
    G : ndarray, shape (N, N)
    v : ndarray, shape (N,)
    y : ndarray, shape (n,)
    T : int
    relevant : ndarray of bool, shape (T,)
    alpha : float
        GD step size.
    correct : bool
        Integrate ``alpha F - (alpha^2/2) F'F`` instead of ``alpha F``.
    t_len : float
        Time to integrate, in GD steps; the last step is shortened to land on it exactly.
    h_io : ndarray, shape (1,)
        Proposed step in GD steps, updated to the proposal for the next call
        (a step shortened to land on ``t_len`` does not shrink it).
    tol : tuple of float
        ``(rtol, atol, h_min)``: tolerances of the error norm (``_error_scale``), and the
        step below which the call fails (returned time < ``t_len``).
    max_steps : int
        The call stops (returned time < ``t_len``) once ``counters[1] + counters[2]``, the
        accepted and rejected steps of the whole run, reach this: a stiff flow (an attention
        pattern at an interior equilibrium next to a slow saturating one) needs steps bounded
        by the explicit method's stability, not by time.
    tab : tuple of ndarray
        ``(A, B, E3, E5)`` of ``dop853.tableau()``.
    ctl : tuple of float
        The step-size controller, ``dop853.controller()``.
    counters : ndarray of int64, shape (3,)
        Incremented: right-hand-side evaluations, accepted steps, rejected steps.

    Returns
    -------
    t : float
        Time integrated: ``t_len`` on success, less if a non-finite value appeared or
        the step size fell below ``h_min`` or ``max_steps`` was reached (the state is then the
        last accepted one).
    """
    rtol, atol, h_min = tol
    tabA, tabB, tabE3, tabE5 = tab
    safety, min_factor, max_factor, exponent, e3_weight = ctl
    N = v.shape[0]
    n = y.shape[0]
    N1 = N + 1
    m = ys.shape[0]
    K = np.zeros((12, m))
    yst = np.empty(m)
    ynew = np.empty(m)
    sc = np.empty(m)
    FAC = np.zeros((8, 12, N1))
    W = np.zeros((13, N1))
    s = np.empty(N); vf = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64)
    hA = np.zeros(12)
    nb = 0
    for j in range(12):
        if tabB[j] != 0.0:
            nb += 1
    rank = 4 if correct else 2
    U = np.empty((rank * nb, N))
    V = np.empty((rank * nb, N))
    Ub = np.empty((rank * nb // 2, N1))
    Vb = np.empty((rank * nb // 2, N))
    for k in range(m - n, m):
        ys[k] = 0.0
    if t_len <= 0.0:
        return 0.0
    ok = _stage(mode, 0, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, K[0], FAC, W, s, vf, coef, kap, top)
    counters[0] += 1
    if not ok:
        return 0.0
    t = 0.0
    h = h_io[0]
    while t < t_len:
        if counters[1] + counters[2] >= max_steps:
            h_io[0] = h
            return t
        remaining = t_len - t
        h_try = min(h, remaining)
        clipped = h_try < h
        rejected = False
        while True:
            good = True
            for i in range(1, 12):
                for j in range(i):
                    hA[j] = h_try * tabA[i, j]
                for k in range(m):
                    acc = ys[k]
                    for j in range(i):
                        if hA[j] != 0.0:
                            acc += hA[j] * K[j, k]
                    yst[k] = acc
                counters[0] += 1
                if not _stage(mode, i, hA, yst, S, MT, G, v, y, T, relevant, alpha, correct, K[i], FAC, W,
                              s, vf, coef, kap, top):
                    good = False
                    break
            err = np.inf
            if good:
                for k in range(m):
                    acc = 0.0
                    for j in range(12):
                        if tabB[j] != 0.0:
                            acc += tabB[j] * K[j, k]
                    ynew[k] = ys[k] + h_try * acc
                _error_scale(mode, N, n, ys, ynew, rtol, atol, sc)
                e5 = 0.0
                e3 = 0.0
                cnt = 0
                for k in range(m):
                    if sc[k] > 0.0:
                        a5 = 0.0
                        a3 = 0.0
                        for j in range(12):
                            a5 += tabE5[j] * K[j, k]
                            a3 += tabE3[j] * K[j, k]
                        e5 += (a5 / sc[k]) ** 2
                        e3 += (a3 / sc[k]) ** 2
                        cnt += 1
                if e5 == 0.0 and e3 == 0.0:
                    err = 0.0
                else:
                    err = h_try * e5 / np.sqrt((e5 + e3_weight * e3) * cnt)
                if not np.isfinite(err):
                    err = np.inf
            if err <= 1.0:
                break
            counters[2] += 1
            rejected = True
            factor = min_factor if not np.isfinite(err) else max(min_factor, safety * err ** exponent)
            h_try *= factor
            if h_try < h_min:
                h_io[0] = h_try
                return t
        # accept: S and M take their rank-(rank * nb) updates h sum_j B_j dX_j
        if mode == _MODE_WP or mode == _MODE_WP_NU:
            q = 0
            for j in range(12):
                wj = h_try * tabB[j]
                if wj == 0.0:
                    continue
                for l in range(N):
                    U[q, l] = wj * FAC[_F_E, j, l]
                    V[q, l] = FAC[_F_Q, j, l]
                    U[q + 1, l] = wj * FAC[_F_Q, j, l]
                    V[q + 1, l] = FAC[_F_E, j, l]
                q += 2
                if correct:
                    for l in range(N):
                        U[q, l] = wj * FAC[_F_R, j, l]
                        V[q, l] = FAC[_F_Z, j, l]
                        U[q + 1, l] = wj * FAC[_F_Z, j, l]
                        V[q + 1, l] = FAC[_F_R, j, l]
                    q += 2
            for l in range(N):                       # S[l] += sum_k U[k, l] V[k], k in order
                _rows_axpy(S[l], V[:q], U[:q, l], -1.0)
            q = 0
            for j in range(12):
                wj = h_try * tabB[j]
                if wj == 0.0:
                    continue
                for r in range(N1):
                    Ub[q, r] = FAC[_F_BETA, j, r]
                for l in range(N):
                    Vb[q, l] = wj * FAC[_F_C, j, l]
                q += 1
                if correct:
                    for r in range(N1):
                        Ub[q, r] = FAC[_F_GAMMA, j, r]
                    for l in range(N):
                        Vb[q, l] = wj * FAC[_F_DC, j, l]
                    q += 1
            for jj in range(N):                      # MT[jj] += sum_k Vb[k, jj] Ub[k], k in order
                _rows_axpy(MT[jj], Ub[:q], Vb[:q, jj], -1.0)
        for k in range(m):
            ys[k] = ynew[k]
        t = t_len if h_try >= remaining else t + h_try
        counters[1] += 1
        for j in range(12):
            hA[j] = 0.0
        counters[0] += 1
        if not _stage(mode, 0, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, K[0], FAC, W,
                      s, vf, coef, kap, top):
            h_io[0] = h
            return t if t < t_len else np.nextafter(t_len, 0.0)
        if err == 0.0:
            factor = max_factor
        else:
            factor = min(max_factor, safety * err ** exponent)
        if rejected:
            factor = min(1.0, factor)
        h_new = h_try * factor
        h = max(h, h_new) if (clipped and not rejected) else h_new
    h_io[0] = h
    return t
