"""The coefficient core shared by every kernel, its JVP, and the sweep primitives.

``coefficients`` is the one place where scores become attention, outputs and the coefficients
of the gradient (DESIGN.md §2, §7, §8): every GD, NGD and momentum loop, the flow's exact-GD
start and its Runge-Kutta stages, ``loss_and_grads`` and the Jacobian estimates call it, so
they all do the same arithmetic in the same order. ``jvp`` is its directional derivative, for
the flow's corrected field and the Jacobian estimates.

Notation: ``N = n*T`` training tokens stacked sample-major (token ``t`` of sample ``i`` is row
``i*T + t``), ``v`` the token values, ``z`` the scores, ``c = dL/dz``, ``h = dL/dv``.

The matrix passes are written in "axpy" form (a scalar times a contiguous row added into a
vector) rather than as dot products: axpy loops vectorise without reassociating floating-point
sums, so the kernels are fast *and* give the same bits on every SIMD width. The N x N passes are
unrolled by four rows: ``x - a0 g0 - a1 g1 - a2 g2 - a3 g3`` evaluates left to right, in exactly
the order of four successive single-row axpys, so the unrolled sweeps give the bits of the plain
ones. Sweeping two vectors against one matrix in one pass (``*_two`` with ``G1 is G2``, W0 = I)
gives the bits of two passes. Every ``exp`` is ``exp.py``'s: glibc's, written out so that the
softmax's loop over samples vectorises, with glibc's bits.
"""

import numpy as np

from .exp import exp, exp_main, in_main
from .jit import njit
from .log1p import log1p_unit

#: Per-sample blocks of the core's scratch ``fw`` after the dense blocks (``fw_size``).
_ZMAX, _TOTAL, _PHI, _MIN, _MOUT, _COEF, _VTOP, _KAP, _TOP, _F = range(10)


@njit(cache=True)
def _fw_size(n, T):
    """Length of the scratch array ``fw`` of ``coefficients`` for ``n`` samples of ``T`` tokens."""
    return 4 * n * T + 10 * n


def fw_size(n, T):
    """Length of the scratch array ``fw`` of ``coefficients`` for ``n`` samples of ``T`` tokens."""
    return _fw_size(n, T)


@njit(cache=True)
def _logistic_loss(u):
    """ell(u) = log(1 + exp(-u)), without overflow for either sign of u."""
    if u >= 0.0:
        return np.log1p(exp(-u))
    return -u + np.log1p(exp(u))


@njit(cache=True, inline="always")
def _logistic_loss_main(u):
    """``_logistic_loss(u)`` for ``|u| < exp.MAIN_LIMIT`` with the vectorising ``exp_main`` and
    ``log1p_unit``: the same operations, so glibc's bits, on SIMD lanes in a loop (``population``)."""
    e = log1p_unit(exp_main(-abs(u)))
    return e if u >= 0.0 else -u + e


@njit(cache=True)
def _neg_dloss(u):
    """-ell'(u) = 1 / (1 + exp(u)), the logistic function of -u, without overflow."""
    if u >= 0.0:
        e = exp(-u)
        return e / (1.0 + e)
    return 1.0 / (1.0 + exp(u))


@njit(cache=True)
def _block(fw, n, T, k):
    """Per-sample block ``k`` (``_ZMAX`` ... ``_F``) of the scratch ``fw``, shape (n,)."""
    o = 4 * n * T + k * n
    return fw[o:o + n]


@njit(cache=True)
def coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, full):
    """Attention, outputs and the gradient's coefficients of every sample, relative to its top token.

    Parameters
    ----------
    z, v : ndarray, shape (N,)
        Scores and token values.
    y : ndarray, shape (n,)
    T : int
    relevant : ndarray of bool, shape (T,)
    s, c : ndarray, shape (N,)
        Output: attention ``s`` and ``c = dL/dz``.
    h : ndarray, shape (N,) or (0,)
        Output unless empty: ``h = dL/dv``, ``h_it = (1/n) ell'(y_i f_i) y_i s_it``.
    frak_sum : ndarray, shape (n,)
        Gains ``m_i (1 - m_i)``, ``m_i`` the attention on the relevant tokens.
    fw : ndarray, shape (fw_size(n, T),)
        Scratch; afterwards it holds the per-sample ``coef_i = (1/n) ell'(y_i f_i) y_i`` and, with
        ``full``, the outputs ``f`` and what ``jvp`` needs (``_jvp_views``).
    full : bool
        Also ``f``, ``v_t - f``, ``kap_i = d coef_i / d f_i`` and the top tokens (for ``jvp``).

    Returns
    -------
    finite : bool
        False when an output ``f`` is not finite.

    Notes
    -----
    DESIGN.md §7: with ``r`` the top token, ``delta_t = v_t - v_r``, ``e_t = exp(z_t - z_r)``,
    ``s_t = e_t / sum_u e_u``, ``phi = sum_t s_t delta_t`` (the top term is exactly zero),
    ``f = v_r + phi`` and ``v_t - f = delta_t - phi``, so ``c`` keeps its relative digits however
    saturated the softmax is; ``1 - m`` is summed from the other tokens, never subtracted.
    The tokens are gathered into token-major order (index ``t*n + i``) so that every reduction
    over ``t`` runs as ``n`` independent accumulations in the inner loop over samples: it
    vectorises, where sample by sample the short dependency chains of the softmax left the core
    idle. The sums over ``t`` run in token order for every sample (``e_r = 1`` in its place).
    """
    n = y.shape[0]
    N = n * T
    zt = fw[0:N]
    vt = fw[N:2 * N]
    et = fw[2 * N:3 * N]
    zmax = _block(fw, n, T, _ZMAX)
    total = _block(fw, n, T, _TOTAL)
    phi = _block(fw, n, T, _PHI)
    m_in = _block(fw, n, T, _MIN)
    m_out = _block(fw, n, T, _MOUT)
    coef = _block(fw, n, T, _COEF)
    vtop = _block(fw, n, T, _VTOP)
    for i in range(n):
        for t in range(T):
            zt[t * n + i] = z[i * T + t]
            vt[t * n + i] = v[i * T + t]
    for i in range(n):
        zmax[i] = zt[i]
        vtop[i] = vt[i]
        total[i] = 0.0
        phi[i] = 0.0
        m_in[i] = 0.0
        m_out[i] = 0.0
    for t in range(1, T):
        for i in range(n):
            zi = zt[t * n + i]
            if zi > zmax[i]:
                zmax[i] = zi
                vtop[i] = vt[t * n + i]
    special = False
    for t in range(T):
        for i in range(n):
            vt[t * n + i] -= vtop[i]        # delta_t = v_t - v_top, exactly 0 at the top
            x = zt[t * n + i] - zmax[i]
            special |= not in_main(x)
            e = exp_main(x)                 # glibc's bits, eight lanes at a time (exp.py)
            et[t * n + i] = e
            total[i] += e
    if special:                             # a gap of 512 or more, or a non-finite score: the library
        for i in range(n):
            total[i] = 0.0
        for t in range(T):
            for i in range(n):
                e = exp(zt[t * n + i] - zmax[i])
                et[t * n + i] = e
                total[i] += e
    for t in range(T):
        for i in range(n):
            st = et[t * n + i] / total[i]
            et[t * n + i] = st
            phi[i] += st * vt[t * n + i]
        if relevant[t]:
            for i in range(n):
                m_in[i] += et[t * n + i]
        else:
            for i in range(n):
                m_out[i] += et[t * n + i]
    inv_n = 1.0 / n
    finite = True
    special = False
    for i in range(n):                      # _neg_dloss(u) with exp(-|u|) eight lanes at a time
        fi = vtop[i] + phi[i]
        u = y[i] * fi
        x = -abs(u)
        special |= not in_main(x)
        e = exp_main(x)
        g = e / (1.0 + e) if u >= 0.0 else 1.0 / (1.0 + e)
        coef[i] = -inv_n * g * y[i]
        frak_sum[i] += m_in[i] * m_out[i]
        finite &= np.isfinite(fi)
    if special:                             # a margin of 512 or more, or a non-finite output
        for i in range(n):
            coef[i] = -inv_n * _neg_dloss(y[i] * (vtop[i] + phi[i])) * y[i]
    for i in range(n):
        ci = coef[i]
        ph = phi[i]
        for t in range(T):
            st = et[t * n + i]
            s[i * T + t] = st
            c[i * T + t] = ci * st * (vt[t * n + i] - ph)
    if h.shape[0] > 0:
        for i in range(n):
            ci = coef[i]
            for t in range(T):
                h[i * T + t] = ci * s[i * T + t]
    if full:
        vf = fw[3 * N:4 * N]
        kap = _block(fw, n, T, _KAP)
        top = _block(fw, n, T, _TOP)
        f = _block(fw, n, T, _F)
        for i in range(n):
            f[i] = vtop[i] + phi[i]
            u = y[i] * f[i]
            kap[i] = inv_n * _neg_dloss(u) * _neg_dloss(-u)     # sigma(-u) sigma(u), both with their digits
            top[i] = 0.0                      # a NaN score matches nothing: jvp must still read in bounds
            for t in range(T):
                if zt[t * n + i] == zmax[i]:
                    top[i] = t                # exact in float64; the first maximum, as above
                    break
            for t in range(T):
                vf[i * T + t] = vt[t * n + i] - phi[i]
    return finite


@njit(cache=True)
def _jvp_views(fw, n, T):
    """``(vf, coef, kap, top)`` of the last ``coefficients(..., full=True)``: ``v - f`` (N,), and
    per sample (n,) the factor ``coef``, its derivative ``kap`` and the top token (as float64)."""
    N = n * T
    return fw[3 * N:4 * N], _block(fw, n, T, _COEF), _block(fw, n, T, _KAP), _block(fw, n, T, _TOP)


@njit(cache=True)
def jvp(dz, dv, s, fw, T, dc, dh):
    """Directional derivative of ``(c, h)`` along ``(dz, dv)`` at the point of the last
    ``coefficients(..., full=True)``; ``dv`` and ``dh`` empty: of ``c`` along ``dz`` alone.

    Parameters
    ----------
    dz : ndarray, shape (N,)
    dv : ndarray, shape (N,) or (0,)
    s : ndarray, shape (N,)
        The attention ``coefficients`` wrote.
    fw : ndarray
        Its scratch.
    T : int
    dc : ndarray, shape (N,)
    dh : ndarray, shape (N,) or (0,)
        Output.

    Notes
    -----
    With ``r`` the top token, ``dzr_t = dz_t - dz_r``, ``dvr_t = dv_t - dv_r``,
    ``dbar = sum_u s_u dzr_u``, ``df_z = sum_t s_t dzr_t (v_t - f)``, ``dvbar = sum_u s_u dvr_u``
    (so that ``df = df_z + dv_r + dvbar``) and ``d coef = kap df``:
    ``dc_t = d coef s_t (v_t - f) + coef s_t ((dzr_t - dbar) (v_t - f) - df_z + dvr_t - dvbar)``,
    ``dh_t = d coef s_t + coef s_t (dzr_t - dbar)``.
    """
    n = s.shape[0] // T
    vf, coef, kap, top = _jvp_views(fw, n, T)
    head = dv.shape[0] > 0
    for i in range(n):
        base = i * T
        r = int(top[i])
        dz_r = dz[base + r]
        dbar = 0.0
        dfz = 0.0
        dvbar = 0.0
        for t in range(T):
            if t != r:
                st = s[base + t]
                w = st * (dz[base + t] - dz_r)
                dbar += w
                dfz += w * vf[base + t]
        co = coef[i]
        if not head:
            dco = kap[i] * dfz
            for t in range(T):
                dzr = 0.0 if t == r else dz[base + t] - dz_r
                st = s[base + t]
                dc[base + t] = dco * st * vf[base + t] + co * st * ((dzr - dbar) * vf[base + t] - dfz)
            continue
        dv_r = dv[base + r]
        for t in range(T):
            if t != r:
                dvbar += s[base + t] * (dv[base + t] - dv_r)
        dco = kap[i] * (dfz + dv_r + dvbar)
        for t in range(T):
            dzr = 0.0 if t == r else dz[base + t] - dz_r
            dvr = 0.0 if t == r else dv[base + t] - dv_r
            st = s[base + t]
            dc[base + t] = dco * st * vf[base + t] + co * st * ((dzr - dbar) * vf[base + t] - dfz + dvr - dvbar)
            dh[base + t] = dco * st + co * st * (dzr - dbar)


# ------------------------------------------------------------------ sweeps


@njit(cache=True)
def _dot(x, w):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j] * w[j]
    return acc


@njit(cache=True, inline="always")
def _four(w, l, scale):
    """``scale * w[l .. l + 3]``: a register block's four coefficients."""
    return scale * w[l], scale * w[l + 1], scale * w[l + 2], scale * w[l + 3]


@njit(cache=True, inline="always")
def _four_rows(G, l):
    """Rows ``l .. l + 3`` of ``G``: a register block's four rows."""
    return G[l], G[l + 1], G[l + 2], G[l + 3]


@njit(cache=True)
def _rows_axpy(x, G, w, scale):
    """``x[j] -= sum_l (scale w[l]) G[l, j]``, accumulated over rows l in order. x (m,), G (k, m), w (k,)."""
    k = G.shape[0]
    m = x.shape[0]
    k4 = k - k % 4
    for l in range(0, k4, 4):
        a0, a1, a2, a3 = _four(w, l, scale)
        g0, g1, g2, g3 = _four_rows(G, l)
        for j in range(m):
            x[j] = x[j] - a0 * g0[j] - a1 * g1[j] - a2 * g2[j] - a3 * g3[j]
    for l in range(k4, k):
        a = scale * w[l]
        g = G[l]
        for j in range(m):
            x[j] -= a * g[j]


@njit(cache=True)
def _same_array(A, B):
    """True when ``A`` and ``B`` are views of the same memory with the same shape (one Gram
    object serving two roles, as the keys and the tokens when W0 = I)."""
    return A.ctypes.data == B.ctypes.data and A.shape == B.shape


@njit(cache=True)
def _rows_axpy_two(x1, x2, G1, G2, w1, w2, scale1, scale2):
    """``_rows_axpy(x1, G1, w1, scale1)`` and ``_rows_axpy(x2, G2, w2, scale2)``: one pass over
    the rows when ``G1`` is ``G2`` (each element of G loaded once for both vectors, each vector
    accumulating in its own order: the bits of the two calls), two passes otherwise.

    The dual sweeps are bound by streaming ``G``, not by arithmetic, so two vectors against one
    matrix cost little more than one (``benchmarks/ANALYSIS.md``).
    """
    if not _same_array(G1, G2):
        _rows_axpy(x1, G1, w1, scale1)
        _rows_axpy(x2, G2, w2, scale2)
        return
    k = G1.shape[0]
    m = x1.shape[0]
    k4 = k - k % 4
    for l in range(0, k4, 4):
        a0, a1, a2, a3 = _four(w1, l, scale1)
        b0, b1, b2, b3 = _four(w2, l, scale2)
        g0, g1, g2, g3 = _four_rows(G1, l)
        for j in range(m):
            q0 = g0[j]
            q1 = g1[j]
            q2 = g2[j]
            q3 = g3[j]
            x1[j] = x1[j] - a0 * q0 - a1 * q1 - a2 * q2 - a3 * q3
            x2[j] = x2[j] - b0 * q0 - b1 * q1 - b2 * q2 - b3 * q3
    for l in range(k4, k):
        a = scale1 * w1[l]
        bb = scale2 * w2[l]
        g = G1[l]
        for j in range(m):
            x1[j] -= a * g[j]
            x2[j] -= bb * g[j]


@njit(cache=True)
def _rows_gemv(out, G, w):
    """``out[j] = sum_l w[l] G[l, j]`` from zero, rows l in order. out (m,), G (k, m).

    ``_rows_axpy`` with ``scale = -1``: ``x - (-w) g`` is ``x + w g`` exactly, so these are the
    bits of the plain accumulation.
    """
    out[:] = 0.0
    _rows_axpy(out, G, w, -1.0)


@njit(cache=True)
def _rows_gemv_two(out1, out2, G1, G2, w1, w2):
    """``_rows_gemv(out1, G1, w1)`` and ``_rows_gemv(out2, G2, w2)``: one pass when ``G1`` is ``G2``
    (``_rows_axpy_two``), two otherwise; the same bits either way."""
    out1[:] = 0.0
    out2[:] = 0.0
    _rows_axpy_two(out1, out2, G1, G2, w1, w2, -1.0, -1.0)
