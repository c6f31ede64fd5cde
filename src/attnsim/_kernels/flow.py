"""numba kernels of the gradient-flow mode (``dynamics="flow"``): the integrator and its field.

Conventions (DESIGN.md §4, ``core``): ``N = n T`` training tokens stacked sample-major, ``v``
the token values, ``z`` the scores, ``c = dL/dz``, ``h = dL/dv``. Time is measured in GD steps:
the flow of the loss with step ``alpha`` is ``d theta / d tau = alpha F(theta)``, ``F = -grad L``;
GD is forward Euler on it with step 1. With ``correct`` the integrated field is the first
backward-error correction ``alpha F - (alpha^2 / 2) F' F`` (the modified equation of Euler,
whose solution follows GD to O(alpha^2) instead of O(alpha)). The field's ``c``, ``h`` and their
JVP come from the coefficient core (``core.coefficients``, ``core.jvp``), the arithmetic of the GD
kernels; the flow's exact-GD start runs the GD kernels themselves (``gd.dual_p_run``,
``gd.dual_wp_run``).

State vectors (``ys``, the "small" state integrated componentwise):

- p (``p = p0 + K^T a``): ``[z (N) | a (N) | F (n)]``; with the head (``nu = nu0 + X_all^T beta``,
  ``v = X_all nu0 + Gxx beta``) ``[z (N) | v (N) | a (N) | beta (N) | F (n)]``;
- W and p: ``[z (N) | P (1) | b (N+1) | F (n)]``, with the head ``[z | P | b | v (N) | beta (N) | F]``,
  plus the matrices ``S`` (N, N) and ``MT`` (N, N+1) of ``gd.dual_wp_run``, whose derivatives are
  of rank at most 4 and 2: each Runge-Kutta stage stores the factors and applies them to vectors
  instead of forming stage matrices, so a step costs O(N^2) per stage plus one rank-32 update of
  ``S`` and ``MT``.

``F`` (n,) accumulates ``int m_i (1 - m_i) d tau`` over the current call.
"""

import numpy as np

# numba's on-disk cache keys a function on its own file only; the Makefile clears the caches
# whenever a file of _kernels/ changes.
from .core import _dot, _fw_size, _rows_axpy, _rows_gemv, _rows_gemv_two, coefficients, jvp
from .jit import njit

#: Rows of the per-stage factor array ``FAC`` (8, 12, N+1), W and p.
#: dS_j = e q^T + q e^T + r z^T + z r^T ;  dM_j = beta c^T + gamma dc^T.
_F_E, _F_Q, _F_R, _F_Z, _F_BETA, _F_C, _F_GAMMA, _F_DC = range(8)

#: What ``_integrate`` integrates: p (``G = Gkk``, ``G2 = Gxx``) or W and p (``G = Gxx``, ``S``, ``MT``).
_MODE_P, _MODE_WP = 0, 1


# ------------------------------------------------------------------ Jacobian spectral radius


@njit(cache=True)
def _start_vector(vec, phase, stride):
    """A deterministic start for a power iteration (the previous estimate's vector if not zero), normalised."""
    nrm = np.sqrt(_dot(vec, vec))
    if not nrm > 0.0:
        for j in range(vec.shape[0]):
            vec[j] = np.sin(phase + stride * j)
        nrm = np.sqrt(_dot(vec, vec))
    for j in range(vec.shape[0]):
        vec[j] /= nrm


@njit(cache=True)
def spectral_p(z, v, Gkk, Gxx, y, T, relevant, vec, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` for p (and the head), dual coordinates.

    ``F(a) = -c(z0 + Gkk a)``, so ``F' w = -(dc/dz)(Gkk w)``; with the head (``vec`` of size 2N,
    ``[wa | wb]``), ``F(a, beta) = -(c, h)(z0 + Gkk a, v0 + Gxx beta)`` and
    ``F' (wa, wb) = -J (Gkk wa, Gxx wb)``, ``J`` the JVP of ``(c, h)``. ``vec`` is the start
    vector and receives the last iterate (a warm start for the next call). Returns the larger of
    the last two ratios ``||F' w|| / ||w||``.
    """
    N = z.shape[0]
    n = y.shape[0]
    head = vec.shape[0] == 2 * N
    s = np.empty(N); c = np.empty(N); h = np.empty(N if head else 0); w = np.empty(N); wv = np.empty(N)
    fw = np.empty(_fw_size(n, T))
    out = np.empty(vec.shape[0])
    coefficients(z, v, y, T, relevant, s, c, h, np.zeros(n), fw, True)
    _start_vector(vec, 1.0, 0.7)
    rho = 0.0
    for it in range(n_iter):
        if head:
            _rows_gemv_two(w, wv, Gkk, Gxx, vec[:N], vec[N:])
            jvp(w, wv, s, fw, T, out[:N], out[N:])
        else:
            _rows_gemv(w, Gkk, vec)
            jvp(w, wv[:0], s, fw, T, out, out[:0])
        nrm = np.sqrt(_dot(out, out))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for j in range(vec.shape[0]):
            vec[j] = out[j] / nrm
    return rho


@njit(cache=True)
def spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, vbeta, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` for W and p, in (b, M) coordinates.

    ``F(b, M) = (-H c, -b c^T)`` with ``H = E + M Gxx`` and ``z = H^T Gqq b``; the JVP
    along ``(db, dM)`` is ``dz = Gxx (dM^T Gqq b + M^T Gqq db) + (Gqq db)[1:]``,
    ``dF_b = -(dM e + E dc + M Gxx dc)``, ``dF_M = -(db c^T + b dc^T)``. With the head (``vbeta``
    (N,) not empty) ``F`` gains ``-h`` (the beta block); along ``(db, dM, dbeta)``
    ``dv = Gxx dbeta``, ``(dc, dh)`` from the JVP along ``(dz, dv)`` and ``dF_beta = -dh``.
    ``vb`` (N+1,), ``vMT`` (N, N+1) and ``vbeta`` hold the start vector and receive the last iterate.
    """
    N = z.shape[0]
    n = y.shape[0]
    N1 = N + 1
    head = vbeta.shape[0] > 0
    s = np.empty(N); c = np.empty(N); fw = np.empty(_fw_size(n, T))
    e = np.empty(N); Gb = np.empty(N1); u2 = np.empty(N1); u = np.empty(N); dz = np.empty(N)
    dc = np.empty(N); gdc = np.empty(N); ob = np.empty(N1); oMT = np.empty((N, N1))
    dv = np.empty(N); dh = np.empty(vbeta.shape[0]); obeta = np.empty(vbeta.shape[0])
    coefficients(z, v, y, T, relevant, s, c, dh[:0], np.zeros(n), fw, True)
    _rows_gemv(e, Gxx, c)
    _rows_gemv(Gb, Gqq, b)
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
        _rows_gemv(u2, Gqq, vb)
        for j in range(N):
            u[j] = _dot(vMT[j], Gb) + _dot(MT[j], u2)
        _rows_gemv(dz, Gxx, u)
        for j in range(N):
            dz[j] += u2[j + 1]
        if head:
            _rows_gemv(dv, Gxx, vbeta)
            jvp(dz, dv, s, fw, T, dc, dh)
            for j in range(N):
                obeta[j] = -dh[j]
        else:
            jvp(dz, dv[:0], s, fw, T, dc, dh)
        _rows_gemv(gdc, Gxx, dc)
        ob[0] = 0.0                                 # -(E dc + dM e + M Gxx dc)
        for j in range(N):
            ob[j + 1] = -dc[j]
        _rows_axpy(ob, vMT, e, 1.0)
        _rows_axpy(ob, MT, gdc, 1.0)
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


# ------------------------------------------------------------------ the flow's right-hand side


@njit(cache=True)
def _stage_p(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, head, kout, s, fw, W):
    """d ys / d tau for p (and the head); ``ys = [z | a | F]`` (``[z | v | a | beta | F]``).
    Returns False on a non-finite output.

    ``F(a) = -c`` (``F(a, beta) = -(c, h)``), ``F' F = J (Gkk c, Gxx h)`` with ``J`` the JVP of
    ``(c, h)``; ``dz/dtau = Gkk da/dtau`` and ``dv/dtau = Gxx dbeta/dtau`` keep z and v exact.
    """
    N = v.shape[0]
    n = y.shape[0]
    k = 2 if head else 1                           # N-blocks before a
    z = ys[:N]
    vv = ys[N:2 * N] if head else v
    da = kout[k * N:(k + 1) * N]
    db = kout[3 * N:4 * N] if head else kout[:0]
    frak = kout[2 * k * N:2 * k * N + n]
    c = W[0, :N]; h = W[1, :N] if head else W[1, :0]; w1 = W[2, :N]; w2 = W[3, :N]; dc = W[4, :N]
    dh = W[5, :N] if head else W[5, :0]
    frak[:] = 0.0
    ok = coefficients(z, vv, y, T, relevant, s, c, h, frak, fw, correct)
    if correct:
        if head:
            _rows_gemv_two(w1, w2, Gkk, Gxx, c, h)
        else:
            _rows_gemv(w1, Gkk, c)
        jvp(w1, w2[:h.shape[0]], s, fw, T, dc, dh)
        h2 = 0.5 * alpha * alpha
        for j in range(N):
            da[j] = -alpha * c[j] - h2 * dc[j]
        for j in range(db.shape[0]):
            db[j] = -alpha * h[j] - h2 * dh[j]
    else:
        for j in range(N):
            da[j] = -alpha * c[j]
        for j in range(db.shape[0]):
            db[j] = -alpha * h[j]
    if head:
        _rows_gemv_two(kout[:N], kout[N:2 * N], Gkk, Gxx, da, db)
    else:
        _rows_gemv(kout[:N], Gkk, da)
    return ok


@njit(cache=True)
def _lr_sym(S, x, out, i, hA, FAC, correct):
    """``out = S_i x``: ``S`` plus the rank-4 stage derivatives ``j < i`` weighted by ``hA[j]``."""
    _rows_gemv(out, S, x)
    for j in range(i):
        wj = hA[j]
        if wj == 0.0:
            continue
        for f_u, f_v in ((_F_E, _F_Q), (_F_R, _F_Z)):        # dS_j = e q^T + q e^T + r z^T + z r^T
            if f_u == _F_R and not correct:
                break
            u = FAC[f_u, j]
            w = FAC[f_v, j]
            a1 = wj * _dot(w, x)
            a2 = wj * _dot(u, x)
            for l in range(out.shape[0]):
                out[l] += a1 * u[l] + a2 * w[l]


@njit(cache=True)
def _lr_m(MT, x1, x2, out1, out2, both, i, hA, FAC, correct):
    """``out1 = M_i x1`` (and ``out2 = M_i x2`` if ``both``): ``M`` plus rank-2 stage derivatives."""
    N = MT.shape[0]
    if both:
        _rows_gemv_two(out1, out2, MT, MT, x1, x2)
    else:
        _rows_gemv(out1, MT, x1)
    for k in range(i):
        wk = hA[k]
        if wk == 0.0:
            continue
        for f_u, f_v in ((_F_BETA, _F_C), (_F_GAMMA, _F_DC)):      # dM_k = beta c^T + gamma dc^T
            if f_u == _F_GAMMA and not correct:
                break
            u = FAC[f_u, k]
            vk = FAC[f_v, k][:N]
            a1 = wk * _dot(vk, x1)
            for r in range(out1.shape[0]):
                out1[r] += a1 * u[r]
            if both:
                a2 = wk * _dot(vk, x2)
                for r in range(out2.shape[0]):
                    out2[r] += a2 * u[r]


@njit(cache=True)
def _stage_wp(i, hA, ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, head, kout, FAC, W, s, fw):
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
    ``v``, ``dc`` is the JVP of ``c`` along ``(Delta z, Delta v = -Gxx h)`` (``core.jvp``), and the
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
    hh = W[9, :N] if head else W[9, :0]; eh = W[10, :N]; dh = W[11, :N] if head else W[11, :0]
    dvn = W[12, :N] if head else W[12, :0]
    off = 4 * N + 2 if head else 2 * N + 2
    vv = ys[2 * N + 2:3 * N + 2] if head else v
    frak = kout[off:off + n]
    frak[:] = 0.0
    ok = coefficients(z, vv, y, T, relevant, s, c, hh, frak, fw, correct)
    if head:
        _rows_gemv(eh, Gxx, hh)
    _rows_gemv(e, Gxx, c)
    _lr_sym(S, c, Sc, i, hA, FAC, correct)
    ce = _dot(c, e)
    zc = _dot(z, c)
    h2 = 0.5 * alpha * alpha
    if correct:
        for j in range(N):
            dz[j] = -P * e[j] - Sc[j]
        for j in range(dvn.shape[0]):
            dvn[j] = -eh[j]
        jvp(dz, dvn, s, fw, T, dc, dh)
        _rows_gemv(de, Gxx, dc)
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
        _rows_gemv(kout[2 * N + 2:3 * N + 2], Gxx, kbeta)
    return ok


# ------------------------------------------------------------------ the integrator


@njit(cache=True)
def _stage(mode, head, i, hA, ys, S, MT, G, G2, v, y, T, relevant, alpha, correct, kout, FAC, W, s, fw):
    if mode == _MODE_P:
        return _stage_p(ys, G, G2, v, y, T, relevant, alpha, correct, head, kout, s, fw, W)
    return _stage_wp(i, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, head, kout, FAC, W, s, fw)


@njit(cache=True)
def _error_scale(mode, head, N, n, ys, ynew, rtol, atol, sc):
    """Per-component error scale; 0 marks a component left out of the error norm.

    Scores, ``||p||^2``, the values and the 𝔖 integral: ``atol + rtol |y|`` componentwise.
    ``b`` (W and p): ``atol + rtol max_r |b_r|`` (norm-wise: its small entries do not matter on
    their own). ``a`` and ``beta`` are left out: ``z = z0 + Gkk a`` and ``v = v0 + Gxx beta`` are
    controlled.
    """
    m = ys.shape[0]
    for k in range(m):
        sc[k] = atol + rtol * max(abs(ys[k]), abs(ynew[k]))
    if mode == _MODE_P:
        lo = 2 * N if head else N
        for k in range(lo, 2 * lo):
            sc[k] = 0.0
        return
    bmax = 0.0
    for k in range(N + 1, 2 * N + 2):
        bmax = max(bmax, abs(ys[k]), abs(ynew[k]))
    for k in range(N + 1, 2 * N + 2):
        sc[k] = atol + rtol * bmax
    if head:
        for k in range(3 * N + 2, 4 * N + 2):
            sc[k] = 0.0


@njit(cache=True)
def flow_p_run(ys, Gkk, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl, counters):
    """Integrate the flow of p (``ys = [z | a | F]``), or of p and the head (``ys`` of size 4N + n,
    ``[z | v | a | beta | F]``; ``Gxx`` the token Gram, read then only), over ``t_len`` GD steps of
    time; ``Gkk`` is the key Gram, ``v`` (N,) the fixed values (its size only, with the head).
    See ``_integrate`` for the arguments and the return value."""
    empty = np.zeros((0, 0))
    head = ys.shape[0] == 4 * v.shape[0] + y.shape[0]
    return _integrate(_MODE_P, head, ys, empty, empty, Gkk, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io,
                      tol, max_steps, tab, ctl, counters)


@njit(cache=True)
def flow_wp_run(ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab, ctl,
                counters):
    """Integrate the flow of W and p (``ys = [z | P | b | F]`` plus ``S``, ``MT``), or of W, p and the
    head (``ys`` of size 4N + 2 + n, ``[z | P | b | v | beta | F]``; ``v`` (N,) then only gives the size)
    over ``t_len`` GD steps of time; see ``_integrate`` for the arguments and the return value."""
    head = ys.shape[0] == 4 * v.shape[0] + 2 + y.shape[0]
    return _integrate(_MODE_WP, head, ys, S, MT, Gxx, Gxx, v, y, T, relevant, alpha, correct, t_len, h_io, tol,
                      max_steps, tab, ctl, counters)


@njit(cache=True)
def _integrate(mode, head, ys, S, MT, G, G2, v, y, T, relevant, alpha, correct, t_len, h_io, tol, max_steps, tab,
               ctl, counters):
    """Integrate the (corrected) flow over ``t_len`` GD steps of time with adaptive DOP853.

    Parameters
    ----------
    mode : int
        ``_MODE_P`` (``G = Gkk``, ``G2 = Gxx``) or ``_MODE_WP`` (``G = Gxx``, ``S`` and ``MT`` integrated too).
    head : bool
        The head is trained (its blocks are in ``ys``).
    ys : ndarray, shape (m,)
        Small state (module docstring), updated in place. Its 𝔖 block is zeroed first
        and holds ``int m (1 - m) d tau`` over this call on return.
    S : ndarray, shape (N, N)
    MT : ndarray, shape (N, N+1)
        W and p: state, updated in place (shape (0, 0) for p).
    G, G2 : ndarray, shape (N, N)
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
    s = np.empty(N)
    fw = np.empty(_fw_size(n, T))
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
    ok = _stage(mode, head, 0, hA, ys, S, MT, G, G2, v, y, T, relevant, alpha, correct, K[0], FAC, W, s, fw)
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
                if not _stage(mode, head, i, hA, yst, S, MT, G, G2, v, y, T, relevant, alpha, correct, K[i], FAC,
                              W, s, fw):
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
                _error_scale(mode, head, N, n, ys, ynew, rtol, atol, sc)
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
        if mode == _MODE_WP:
            q = 0
            for j in range(12):
                wj = h_try * tabB[j]
                if wj == 0.0:
                    continue
                for f_u, f_v in ((_F_E, _F_Q), (_F_R, _F_Z)):    # dS_j = e q^T + q e^T + r z^T + z r^T
                    if f_u == _F_R and not correct:
                        break
                    for l in range(N):
                        U[q, l] = wj * FAC[f_u, j, l]
                        V[q, l] = FAC[f_v, j, l]
                        U[q + 1, l] = wj * FAC[f_v, j, l]
                        V[q + 1, l] = FAC[f_u, j, l]
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
        if not _stage(mode, head, 0, hA, ys, S, MT, G, G2, v, y, T, relevant, alpha, correct, K[0], FAC, W, s,
                      fw):
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
