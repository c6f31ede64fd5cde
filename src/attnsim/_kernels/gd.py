"""numba kernels: the per-step arithmetic of gradient descent.

Every function here takes plain arrays and scalars, allocates nothing inside its
loops, prints nothing and draws no random numbers. The GD loops advance a state
held in caller-owned arrays *in place* by ``n_steps`` updates and return how many
updates they completed: fewer than ``n_steps`` only when a non-finite value
appeared, in which case the state is the last finite iterate.

Notation (DESIGN.md): ``N = n*T`` training tokens stacked sample-major, so token
``t`` of sample ``i`` is row ``i*T + t``; ``v = X_all @ nu`` are the token values;
``z`` the attention scores; ``c = dL/dz``.

All matrix passes are written in "axpy" form (a scalar times a contiguous row
added into a vector) rather than as dot products: axpy loops vectorise without
reassociating floating-point sums, so the kernels are fast *and* give the same
bits on every SIMD width. The matrices they sweep are symmetric (Gram matrices)
or stored in the orientation that makes the sweep contiguous.

Every kernel has a slow NumPy twin with the same signature in ``gd_twins.py``;
``tests/test_kernels.py`` holds the registry that compares them.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True)
def _logistic_loss(u):
    """ell(u) = log(1 + exp(-u)), without overflow for either sign of u."""
    if u >= 0.0:
        return np.log1p(np.exp(-u))
    return -u + np.log1p(np.exp(u))


@njit(cache=True)
def _neg_dloss(u):
    """-ell'(u) = 1 / (1 + exp(u)), the logistic function of -u, without overflow."""
    if u >= 0.0:
        e = np.exp(-u)
        return e / (1.0 + e)
    return 1.0 / (1.0 + np.exp(u))


@njit(cache=True)
def _sample_coefficients(z, v, yi, base, T, inv_n, relevant, s, c):
    """Softmax, output and dL/dz for the T tokens of one sample, relative to its top token.

    Writes ``s[base:base+T]`` and ``c[base:base+T]``; returns ``(f, m, 1 - m)``
    where ``m`` is the softmax mass on the tokens flagged in ``relevant`` (T,).
    DESIGN.md §7: with ``r`` the top token, ``f = v_r + phi``, ``phi = sum_t s_t (v_t - v_r)``
    (the top term is exactly zero) and ``v_t - f = (v_t - v_r) - phi``, so ``c`` keeps its
    relative digits however saturated the softmax is; ``1 - m`` is summed from the other
    tokens, never subtracted. (Used by ``loss_and_grads``; the GD loops use the vectorised
    ``_coefficients_work``, which does the same arithmetic in the same order.)
    """
    zmax = z[base]
    vr = v[base]
    for t in range(1, T):
        if z[base + t] > zmax:
            zmax = z[base + t]
            vr = v[base + t]
    total = 0.0
    for t in range(T):
        e = np.exp(z[base + t] - zmax)
        s[base + t] = e
        total += e
    phi = 0.0
    mass_in = 0.0
    mass_out = 0.0
    for t in range(T):
        st = s[base + t] / total
        s[base + t] = st
        phi += st * (v[base + t] - vr)
        if relevant[t]:
            mass_in += st
        else:
            mass_out += st
    f = vr + phi
    coef = -inv_n * _neg_dloss(yi * f) * yi
    for t in range(T):
        c[base + t] = coef * s[base + t] * ((v[base + t] - vr) - phi)
    return f, mass_in, mass_out


@njit(cache=True)
def _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work):
    """dL/dz for all samples, adding 𝔖_i = m_i (1 - m_i) into ``frak_sum``; scratch ``work`` (3N + 7n,).

    Same arithmetic, in the same order, as ``_sample_coefficients`` applied to each
    sample (so the same bits, top-relative as DESIGN.md §7), but laid out so that it
    vectorises: the tokens are gathered into token-major order (index ``t*n + i``) and
    every reduction over ``t`` runs as ``n`` independent accumulations in the inner loop
    over samples. Sample by sample, the short dependency chains of the softmax (max, sum,
    division, weighted sum) left the core idle most of the time.
    """
    n = y.shape[0]
    N = n * T
    zt = work[0:N]
    vt = work[N:2 * N]
    et = work[2 * N:3 * N]
    o = 3 * N
    zmax = work[o:o + n]
    total = work[o + n:o + 2 * n]
    f = work[o + 2 * n:o + 3 * n]        # phi = f - v_top while accumulating, then f
    m_in = work[o + 3 * n:o + 4 * n]
    m_out = work[o + 4 * n:o + 5 * n]
    coef = work[o + 5 * n:o + 6 * n]
    vtop = work[o + 6 * n:o + 7 * n]
    for i in range(n):
        for t in range(T):
            zt[t * n + i] = z[i * T + t]
            vt[t * n + i] = v[i * T + t]
    for i in range(n):
        zmax[i] = zt[i]
        vtop[i] = vt[i]
        total[i] = 0.0
        f[i] = 0.0
        m_in[i] = 0.0
        m_out[i] = 0.0
    for t in range(1, T):
        for i in range(n):
            zi = zt[t * n + i]
            if zi > zmax[i]:
                zmax[i] = zi
                vtop[i] = vt[t * n + i]
    for t in range(T):
        for i in range(n):
            vt[t * n + i] -= vtop[i]        # delta_t = v_t - v_top, exactly 0 at the top
            e = np.exp(zt[t * n + i] - zmax[i])
            et[t * n + i] = e
            total[i] += e
    for t in range(T):
        for i in range(n):
            st = et[t * n + i] / total[i]
            et[t * n + i] = st
            f[i] += st * vt[t * n + i]
        if relevant[t]:
            for i in range(n):
                m_in[i] += et[t * n + i]
        else:
            for i in range(n):
                m_out[i] += et[t * n + i]
    inv_n = 1.0 / n
    finite = True
    for i in range(n):
        fi = vtop[i] + f[i]
        coef[i] = -inv_n * _neg_dloss(y[i] * fi) * y[i]
        frak_sum[i] += m_in[i] * m_out[i]
        if not np.isfinite(fi):
            finite = False
    for i in range(n):
        ci = coef[i]
        phi = f[i]
        for t in range(T):
            st = et[t * n + i]
            s[i * T + t] = st
            c[i * T + t] = ci * st * (vt[t * n + i] - phi)
    return finite


@njit(cache=True)
def loss_and_grads(X, y, W, p, nu):
    """Closed-form loss and gradients of the paper's model.

    Parameters
    ----------
    X : ndarray, shape (n, T, d)
    y : ndarray, shape (n,)
    W : ndarray, shape (d, d)
    p, nu : ndarray, shape (d,)

    Returns
    -------
    loss : float
    grad_W : ndarray, shape (d, d)
        The rank-one matrix ``p g^T``.
    grad_p : ndarray, shape (d,)
        ``W g``.
    """
    loss, grad_W, grad_p, _ = loss_and_grads_head(X, y, W, p, nu)
    return loss, grad_W, grad_p


@njit(cache=True)
def loss_and_grads_head(X, y, W, p, nu):
    """``loss_and_grads`` and the head's gradient ``grad_nu = X_all^T h`` (d,),
    ``h_it = (1/n) ell'(y_i f_i) y_i s_it`` (DESIGN.md §8).

    Returns
    -------
    loss : float
    grad_W : ndarray, shape (d, d)
    grad_p, grad_nu : ndarray, shape (d,)
    """
    n, T, d = X.shape
    u = np.zeros(d)
    for r in range(d):
        pr = p[r]
        for k in range(d):
            u[k] += pr * W[r, k]
    N = n * T
    z = np.empty(N)
    v = np.empty(N)
    for i in range(n):
        for t in range(T):
            zt = 0.0
            vt = 0.0
            for k in range(d):
                zt += X[i, t, k] * u[k]
                vt += X[i, t, k] * nu[k]
            z[i * T + t] = zt
            v[i * T + t] = vt
    s = np.empty(N)
    c = np.empty(N)
    h = np.empty(N)
    relevant = np.zeros(T, dtype=np.bool_)
    loss = 0.0
    inv_n = 1.0 / n
    for i in range(n):
        f, _, _ = _sample_coefficients(z, v, y[i], i * T, T, inv_n, relevant, s, c)
        loss += _logistic_loss(y[i] * f)
        coef = -inv_n * _neg_dloss(y[i] * f) * y[i]
        for t in range(T):
            h[i * T + t] = coef * s[i * T + t]
    loss /= n
    g = np.zeros(d)
    grad_nu = np.zeros(d)
    for i in range(n):
        for t in range(T):
            cj = c[i * T + t]
            hj = h[i * T + t]
            for k in range(d):
                g[k] += cj * X[i, t, k]
                grad_nu[k] += hj * X[i, t, k]
    grad_p = np.zeros(d)
    grad_W = np.empty((d, d))
    for r in range(d):
        acc = 0.0
        for k in range(d):
            acc += W[r, k] * g[k]
            grad_W[r, k] = p[r] * g[k]
        grad_p[r] = acc
    return loss, grad_W, grad_p, grad_nu


# ------------------------------------------------------------ sweep helpers
#
# The N x N passes of the dual loops are unrolled by four rows: each element of
# the output vector is loaded and stored once per four rows instead of once per
# row. The expression ``x - a0 g0 - a1 g1 - a2 g2 - a3 g3`` evaluates left to
# right, i.e. in exactly the order of four successive single-row axpys, so the
# unrolled sweeps give the same bits as the plain ones (and vectorise just as
# well: no reduction is reassociated).


@njit(cache=True)
def _rows_axpy(x, G, w, scale):
    """``x[j] -= sum_l (scale w[l]) G[l, j]``, accumulated over rows l in order.

    x : (m,), G : (k, m), w : (k,).
    """
    k = G.shape[0]
    m = x.shape[0]
    k4 = k - k % 4
    for l in range(0, k4, 4):
        a0 = scale * w[l]
        a1 = scale * w[l + 1]
        a2 = scale * w[l + 2]
        a3 = scale * w[l + 3]
        g0 = G[l]
        g1 = G[l + 1]
        g2 = G[l + 2]
        g3 = G[l + 3]
        for j in range(m):
            x[j] = x[j] - a0 * g0[j] - a1 * g1[j] - a2 * g2[j] - a3 * g3[j]
    for l in range(k4, k):
        a = scale * w[l]
        g = G[l]
        for j in range(m):
            x[j] -= a * g[j]


@njit(cache=True)
def _rows_axpy_pair(x1, x2, G, w1, w2, scale):
    """``_rows_axpy(x1, G, w1, scale)`` and ``_rows_axpy(x2, G, w2, scale)`` in one pass over the
    rows of ``G`` (k, m): each element of ``G`` is loaded once for both vectors, and each vector
    accumulates in the same order as alone (so the same bits as the two calls).

    The dual sweeps are bound by the stream of ``G`` from L2, not by arithmetic, so two vectors
    against one matrix cost little more than one (``benchmarks/ANALYSIS.md``).
    """
    k = G.shape[0]
    m = x1.shape[0]
    k4 = k - k % 4
    for l in range(0, k4, 4):
        a0 = scale * w1[l]
        a1 = scale * w1[l + 1]
        a2 = scale * w1[l + 2]
        a3 = scale * w1[l + 3]
        b0 = scale * w2[l]
        b1 = scale * w2[l + 1]
        b2 = scale * w2[l + 2]
        b3 = scale * w2[l + 3]
        g0, g1, g2, g3 = G[l], G[l + 1], G[l + 2], G[l + 3]
        for j in range(m):
            q0 = g0[j]
            q1 = g1[j]
            q2 = g2[j]
            q3 = g3[j]
            x1[j] = x1[j] - a0 * q0 - a1 * q1 - a2 * q2 - a3 * q3
            x2[j] = x2[j] - b0 * q0 - b1 * q1 - b2 * q2 - b3 * q3
    for l in range(k4, k):
        a = scale * w1[l]
        bb = scale * w2[l]
        g = G[l]
        for j in range(m):
            x1[j] -= a * g[j]
            x2[j] -= bb * g[j]


@njit(cache=True)
def _same_array(A, B):
    """True when ``A`` and ``B`` are views of the same memory with the same shape (one Gram
    object serving two roles, as the keys and the tokens when W0 = I)."""
    return A.ctypes.data == B.ctypes.data and A.shape == B.shape


@njit(cache=True)
def _rows_axpy_two(x1, x2, G1, G2, w1, w2, scale):
    """``_rows_axpy(x1, G1, w1, scale)`` and ``_rows_axpy(x2, G2, w2, scale)``: one pass
    (``_rows_axpy_pair``) when ``G1`` is ``G2``, two otherwise; the same bits either way."""
    if _same_array(G1, G2):
        _rows_axpy_pair(x1, x2, G1, w1, w2, scale)
    else:
        _rows_axpy(x1, G1, w1, scale)
        _rows_axpy(x2, G2, w2, scale)


@njit(cache=True)
def _rows_gemv(out, G, w):
    """``out[j] = sum_l w[l] G[l, j]`` from zero, rows l in order. out : (m,), G : (k, m)."""
    k = G.shape[0]
    m = out.shape[0]
    k4 = k - k % 4
    for j in range(m):
        out[j] = 0.0
    for l in range(0, k4, 4):
        a0 = w[l]
        a1 = w[l + 1]
        a2 = w[l + 2]
        a3 = w[l + 3]
        g0 = G[l]
        g1 = G[l + 1]
        g2 = G[l + 2]
        g3 = G[l + 3]
        for j in range(m):
            out[j] = out[j] + a0 * g0[j] + a1 * g1[j] + a2 * g2[j] + a3 * g3[j]
    for l in range(k4, k):
        a = w[l]
        g = G[l]
        for j in range(m):
            out[j] += a * g[j]


@njit(cache=True)
def _key_gram_sweep(S, c, z, e, lr, lr2P, Sc):
    """One pass over the symmetric ``S`` (N, N): ``Sc = S c`` from the old rows, and
    ``S[l, :] -= lr e_l z + lr z_l e - lr^2 P e_l e`` (the rank-two joint update).

    Row by row on purpose: unrolled over two rows this loop defeated LLVM's
    runtime alias checks and ran 2-3x slower. Single-row, the inner loop is fully
    vectorised and limited by its two stores per element.
    """
    N = S.shape[0]
    for j in range(N):
        Sc[j] = 0.0
    for l in range(N):
        cl = c[l]
        f1 = lr * e[l]
        f2 = lr * z[l]
        f3 = lr2P * e[l]
        r = S[l]
        for j in range(N):
            sj = r[j]
            Sc[j] += cl * sj
            r[j] = sj - f1 * z[j] - f2 * e[j] + f3 * e[j]


@njit(cache=True)
def _dual_coef_sweep(MT, e, c, b, lr, Hc):
    """One pass over ``MT = M^T`` (N, N+1): ``Hc = E c + M e`` from the old rows, and
    ``M -= lr b c^T`` (row j of MT takes ``-lr c_j b``)."""
    N = MT.shape[0]
    N1 = MT.shape[1]
    Hc[0] = 0.0
    for j in range(N):
        Hc[j + 1] = c[j]
    for j in range(N):
        ej = e[j]
        lcj = lr * c[j]
        row = MT[j]
        for r in range(N1):
            m = row[r]
            Hc[r] += ej * m
            row[r] = m - lcj * b[r]


# ---------------------------------------------------------------- primal GD loops


@njit(cache=True)
def primal_p_run(p, z, K, KT, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """GD on p alone with fixed keys ``K = X_all W0^T``.

    State: ``p`` (d,) and the scores ``z = K p`` (N,), both updated in place.
    ``K`` is (N, d) and ``KT`` its transpose (d, N), C-contiguous, so that both
    ``K^T c`` and ``K p`` are contiguous sweeps.
    """
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work):
            return step
        _rows_axpy(p, K, c, lr)
        _rows_gemv(z, KT, p)
    return n_steps


@njit(cache=True)
def _primal_wp_sweep(W, p, u, g, lr):
    """One sweep over W (d, d): for each row r, ``(W g)_r`` from the old row, the rank-one
    update ``-lr p_r g^T``, ``p_r -= lr (W g)_r``, and ``u = W'^T p'`` accumulated from the new row."""
    d = p.shape[0]
    for k in range(d):
        u[k] = 0.0
    for r in range(d):
        wg = 0.0
        for k in range(d):
            wg += W[r, k] * g[k]
        pr = p[r]
        p_new = pr - lr * wg
        a = lr * pr
        for k in range(d):
            w = W[r, k] - a * g[k]
            W[r, k] = w
            u[k] += p_new * w
        p[r] = p_new


@njit(cache=True)
def primal_wp_run(W, p, u, z, X, XT, v, y, T, relevant, lr, n_steps, frak_sum, s, c, g):
    """Simultaneous GD on W and p in primal coordinates.

    State: ``W`` (d, d), ``p`` (d,), the effective query ``u = W^T p`` (d,) and
    the scores ``z = X_all u`` (N,). One sweep over W per step: for each row r,
    ``(W g)_r`` is read from the old row, the row takes its rank-one update
    ``-lr p_r g^T``, and the new ``u = W'^T p'`` is accumulated from the new row.
    ``X`` is (N, d) and ``XT`` its transpose (d, N).
    """
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work):
            return step
        _rows_gemv(g, X, c)
        _primal_wp_sweep(W, p, u, g, lr)
        _rows_gemv(z, XT, u)
    return n_steps


# ------------------------------------------------- trainable head (DESIGN.md §8)


@njit(cache=True)
def _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
    """``_coefficients_work`` and also ``h = dL/dv`` (N,): ``h_it = (1/n) ell'(y_i f_i) y_i s_it``.

    The per-sample factor ``(1/n) ell'(y_i f_i) y_i`` is the one ``_coefficients_work`` left in
    its scratch (``work[3N + 5n : 3N + 6n]``), so ``c`` and ``h`` come from the same bits of f.
    ``h`` has no difference in it, so it keeps its relative digits in saturation.
    """
    finite = _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work)
    n = y.shape[0]
    o = 3 * n * T + 5 * n
    for i in range(n):
        ci = work[o + i]
        for t in range(T):
            h[i * T + t] = ci * s[i * T + t]
    return finite


@njit(cache=True)
def primal_p_nu_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, n_steps, frak_sum, s, c, h):
    """Simultaneous GD on p and the head nu with fixed keys ``K = X_all W0^T``.

    State: ``p``, ``nu`` (d,), scores ``z = K p`` and values ``v = X_all nu`` (N,), in place.
    ``grad_p = K^T c``, ``grad_nu = X_all^T h``, both from the old iterate. ``K``, ``X`` are
    (N, d), ``KT``, ``XT`` their transposes (d, N).
    """
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
            return step
        _rows_axpy(p, K, c, lr)
        _rows_axpy(nu, X, h, lr)
        _rows_gemv(z, KT, p)
        _rows_gemv(v, XT, nu)
    return n_steps


@njit(cache=True)
def primal_wp_nu_run(W, p, u, z, nu, v, X, XT, y, T, relevant, lr, n_steps, frak_sum, s, c, h, g):
    """Simultaneous GD on W, p and nu in primal coordinates (``primal_wp_run`` plus the head:
    ``nu -= lr X_all^T h``, ``v = X_all nu``)."""
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
            return step
        _rows_gemv(g, X, c)
        _rows_axpy(nu, X, h, lr)
        _primal_wp_sweep(W, p, u, g, lr)
        _rows_gemv(z, XT, u)
        _rows_gemv(v, XT, nu)
    return n_steps


# ------------------------------------------------------------------ dual GD loops


@njit(cache=True)
def dual_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """GD on p alone in dual coordinates ``p = p0 + K^T a``.

    State: ``a`` (N,) and ``z = K p0 + Gkk a`` (N,), updated in place.
    ``Gkk = K K^T`` (N, N), symmetric. Cost per step O(N^2), independent of d:
    one pass over ``Gkk`` (``2 N^2`` flops, ``8 N^2`` bytes, L2-resident for N <= 200)
    plus the softmax of N scores.
    """
    N = z.shape[0]
    work = np.empty(3 * N + 7 * y.shape[0])
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work):
            return step
        for l in range(N):
            a[l] -= lr * c[l]
        _rows_axpy(z, Gkk, c, lr)
    return n_steps


@njit(cache=True)
def _flush_scratch(N, B):
    """Scratch of a block flush of the (b, M) recurrence: ``Y``, ``Bb`` (B, N+1), ``Ce`` (B, B), ``wb`` (B,)."""
    return np.empty((B, N + 1)), np.empty((B, N + 1)), np.empty((B, B)), np.empty(B)


@njit(cache=True)
def _block_ce(Ce, Eb, CbT, nb):
    """``Ce[t, sigma] = c_sigma . e_t`` over a pending block, accumulated over j across sigma
    (vectorises, no reassociation)."""
    N = CbT.shape[0]
    for t in range(nb):
        ce = Ce[t]
        for q in range(nb):
            ce[q] = 0.0
        for j in range(N):
            a = Eb[t, j]
            cj = CbT[j]
            for q in range(nb):
                ce[q] += a * cj[q]


@njit(cache=True)
def _flush_dual_coefs(b, MT, CbT, Eb, nb, lrb, Y, Bb, Ce, Hc, w):
    """Apply ``nb`` deferred steps of the ``(b, M)`` recurrence in one go.

    Over a block of steps ``tau = 0 .. nb-1`` with coefficients ``c_tau`` (columns of
    ``CbT`` (N, B)) and ``e_tau = Gxx c_tau`` (rows of ``Eb`` (B, N)),

        b_{tau+1} = b_tau - a_p,tau (E c_tau + M_tau e_tau),    M_{tau+1} = M_tau - a_W,tau b_tau c_tau^T,

    with the step sizes ``lrb[tau] = (a_p, a_W)`` (``lr`` for both under GD, normalised GD's
    per-step sizes otherwise), and ``M_tau e_tau = M_0 e_tau - sum_{sigma < tau} a_W,sigma
    b_sigma (c_sigma . e_tau)``. So one
    pass over ``MT`` gives every ``M_0 e_tau`` (``Y``), a small sequential loop gives the
    ``b_tau`` (``Bb``), and a second pass applies the ``nb`` rank-one updates of ``M``
    together. Each ``MT`` element is read twice and written once per *block* instead of
    read and written every step, which keeps the per-step working set (``Gxx``, ``S``)
    in L2. Scratch: ``Y``, ``Bb`` (B, N+1), ``Ce`` (B, B), ``w`` (B,). ``Hc`` receives the last
    ``E c + M e``.
    """
    N = MT.shape[0]
    N1 = MT.shape[1]
    N4 = N - N % 4
    for t in range(nb):
        yt = Y[t]
        for r in range(N1):
            yt[r] = 0.0
    # Y[t] = M_0 e_t = sum_j e_t[j] MT[j, :], four rows of MT at a time
    for j in range(0, N4, 4):
        r0 = MT[j]
        r1 = MT[j + 1]
        r2 = MT[j + 2]
        r3 = MT[j + 3]
        for t in range(nb):
            a0 = Eb[t, j]
            a1 = Eb[t, j + 1]
            a2 = Eb[t, j + 2]
            a3 = Eb[t, j + 3]
            yt = Y[t]
            for r in range(N1):
                yt[r] = yt[r] + a0 * r0[r] + a1 * r1[r] + a2 * r2[r] + a3 * r3[r]
    for j in range(N4, N):
        row = MT[j]
        for t in range(nb):
            a = Eb[t, j]
            yt = Y[t]
            for r in range(N1):
                yt[r] += a * row[r]
    _block_ce(Ce, Eb, CbT, nb)
    # the b_tau, in order
    for t in range(nb):
        bt = Bb[t]
        for r in range(N1):
            bt[r] = b[r]
        Hc[0] = Y[t, 0]
        for j in range(N):
            Hc[j + 1] = CbT[j, t] + Y[t, j + 1]
        for q in range(t):
            a = lrb[q, 1] * Ce[t, q]
            bq = Bb[q]
            for r in range(N1):
                Hc[r] -= a * bq[r]
        ap = lrb[t, 0]
        for r in range(N1):
            b[r] -= ap * Hc[r]
    # M_nb = M_0 - sum_t a_W,t b_t c_t^T: row j of MT takes -sum_t a_W,t c_t[j] b_t
    for j in range(N):
        for t in range(nb):
            w[t] = lrb[t, 1] * CbT[j, t]
        _rows_axpy(MT[j], Bb[:nb], w, 1.0)


@njit(cache=True)
def dual_wp_run(z, S, P, b, MT, CbT, Eb, nb, Gxx, v, y, T, relevant, lr, n_steps, frak_sum, s, c, e, Sc, Hc):
    """Simultaneous GD on W and p in dual coordinates, cost O(N^2) per step.

    State, all updated in place (``k_j = W x_j`` are the current keys):

    - ``z`` (N,): scores ``z_j = k_j^T p``;
    - ``S`` (N, N): key Gram matrix ``S_jl = k_j^T k_l``;
    - ``P`` (1,): ``||p||^2``;
    - ``b`` (N+1,) and ``MT`` (N, N+1): ``p = Q b`` and ``W = W0 + Q M X_all``
      with ``Q = [p0, W0 X_all^T]`` and ``MT = M^T``, *as of the last block
      boundary*; ``CbT`` (N, B), ``Eb`` (B, N) and ``nb`` (1,) int64 hold the
      ``nb[0] < B`` steps since then (``c`` and ``e = Gxx c`` of each).
      ``dual_wp_flush`` applies them (to copies, at save times).

    With ``g = X_all^T c`` and ``e = Gxx c`` (``e_j = x_j^T g``), the joint step
    ``W' = W - lr p g^T``, ``p' = p - lr W g`` gives

        z'  = z - lr S c - lr P e + lr^2 (z.c) e
        S'  = S - lr (e z^T + z e^T) + lr^2 P e e^T
        P'  = P - 2 lr z.c + lr^2 c^T S c
        b'  = b - lr (E c + M e),     M' = M - lr b c^T

    (``E = [0; I]``). ``(z, S, P)`` is closed: the training dynamics never need
    ``(b, M)``. So each step makes two passes over N x N matrices (``Gxx`` read,
    ``S`` read and written: about ``8 N^2`` flops and ``3 * 8 N^2`` bytes, which
    stay in L2 for N = 160), and every B steps the ``(b, M)`` recurrence of the
    block is applied in one blocked pass (``_flush_dual_coefs``, about ``4 N^2``
    flops per step but ``MT`` streamed once per block instead of twice per step).
    Blocks are counted in absolute steps (the counter is part of the state), so
    the iterates do not depend on how a run is split into calls: same bits in
    one call, in many, or across a checkpoint.
    """
    N = z.shape[0]
    B = CbT.shape[1]
    work = np.empty(3 * N + 7 * y.shape[0])
    Y, Bb, Ce, wb = _flush_scratch(N, B)
    lrb = np.full((B, 2), lr)                      # every step of the block: (a_p, a_W) = (lr, lr)
    k = nb[0]
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work):
            nb[0] = k
            return step
        _rows_gemv(e, Gxx, c)
        k = _dual_wp_step(z, S, P, b, MT, CbT, Eb, k, c, e, Sc, Hc, lr, Y, Bb, Ce, lrb, wb)
    nb[0] = k
    return n_steps


@njit(cache=True)
def _dual_wp_step(z, S, P, b, MT, CbT, Eb, k, c, e, Sc, Hc, lr, Y, Bb, Ce, lrb, wb):
    """The joint (W, p) step of ``dual_wp_run`` once ``c`` and ``e = Gxx c`` are known:
    ``(z, S, P)`` now, ``(c, e)`` into the pending block (flushed when full). Returns the
    new count of pending steps. ``lrb`` (B, 2) holds ``lr`` for every step of the block."""
    N = z.shape[0]
    B = CbT.shape[1]
    zc = 0.0
    for j in range(N):
        zc += z[j] * c[j]
    Pk = P[0]
    # Sc accumulates from each old row before that row is overwritten; S is
    # symmetric, so row l also serves as column l.
    _key_gram_sweep(S, c, z, e, lr, lr * lr * Pk, Sc)
    cSc = 0.0
    for j in range(N):
        cSc += c[j] * Sc[j]
    corr = lr * lr * zc
    for j in range(N):
        z[j] = z[j] - lr * Sc[j] - lr * Pk * e[j] + corr * e[j]
    P[0] = Pk - 2.0 * lr * zc + lr * lr * cSc
    eb = Eb[k]
    for j in range(N):
        CbT[j, k] = c[j]
        eb[j] = e[j]
    k += 1
    if k == B:
        _flush_dual_coefs(b, MT, CbT, Eb, k, lrb, Y, Bb, Ce, Hc, wb)
        k = 0
    return k


@njit(cache=True)
def _rows_gemv2(out1, out2, G, w1, w2):
    """``out1 = G^T w1`` and ``out2 = G^T w2`` in one pass over the rows of ``G`` (k, m)
    (same per-element order as ``_rows_gemv``, unrolled by two rows)."""
    k = G.shape[0]
    m = out1.shape[0]
    k2 = k - k % 2
    for j in range(m):
        out1[j] = 0.0
        out2[j] = 0.0
    for l in range(0, k2, 2):
        a0 = w1[l]
        a1 = w1[l + 1]
        b0 = w2[l]
        b1 = w2[l + 1]
        g0 = G[l]
        g1 = G[l + 1]
        for j in range(m):
            x0 = g0[j]
            x1 = g1[j]
            out1[j] = out1[j] + a0 * x0 + a1 * x1
            out2[j] = out2[j] + b0 * x0 + b1 * x1
    for l in range(k2, k):
        a = w1[l]
        bb = w2[l]
        g = G[l]
        for j in range(m):
            out1[j] += a * g[j]
            out2[j] += bb * g[j]


@njit(cache=True)
def _rows_gemv_two(out1, out2, G1, G2, w1, w2):
    """``_rows_gemv(out1, G1, w1)`` and ``_rows_gemv(out2, G2, w2)``: one pass (``_rows_gemv2``)
    when ``G1`` is ``G2``, two otherwise; the same bits either way."""
    if _same_array(G1, G2):
        _rows_gemv2(out1, out2, G1, w1, w2)
    else:
        _rows_gemv(out1, G1, w1)
        _rows_gemv(out2, G2, w2)


@njit(cache=True)
def dual_p_nu_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, c, h, eh):
    """GD on p and the head nu in dual coordinates ``p = p0 + K^T a``, ``nu = nu0 + X_all^T beta``.

    State: ``a``, ``z = K p0 + Gkk a``, ``beta``, ``v = X_all nu0 + Gxx beta`` (N,), in place:
    ``a -= lr c``, ``z -= lr Gkk c``, ``beta -= lr h``, ``v -= lr Gxx h`` (DESIGN.md §8).
    ``eh`` (N,) is scratch for ``Gxx h``. Cost per step one sweep over the rows of each N x N
    matrix, independent of d; with W0 = I they are one matrix (``Gkk`` is ``Gxx``), read once
    for both vectors. Either way the same bits as two ``_rows_axpy`` calls.
    """
    N = z.shape[0]
    work = np.empty(3 * N + 7 * y.shape[0])
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
            return step
        for l in range(N):
            a[l] -= lr * c[l]
            beta[l] -= lr * h[l]
        _rows_axpy_two(z, v, Gkk, Gxx, c, h, lr)
    return n_steps


@njit(cache=True)
def dual_wp_nu_run(z, S, P, b, MT, CbT, Eb, nb, beta, v, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, c, h,
                   e, eh, Sc, Hc):
    """Simultaneous GD on W, p and nu in dual coordinates: ``dual_wp_run`` plus the head,
    ``beta -= lr h``, ``v -= lr Gxx h`` (``nu = nu0 + X_all^T beta``). ``e = Gxx c`` and
    ``eh = Gxx h`` come from one pass over ``Gxx`` (DESIGN.md §8)."""
    N = z.shape[0]
    B = CbT.shape[1]
    work = np.empty(3 * N + 7 * y.shape[0])
    Y, Bb, Ce, wb = _flush_scratch(N, B)
    lrb = np.full((B, 2), lr)
    k = nb[0]
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
            nb[0] = k
            return step
        _rows_gemv2(e, eh, Gxx, c, h)
        for j in range(N):
            beta[j] -= lr * h[j]
            v[j] -= lr * eh[j]
        k = _dual_wp_step(z, S, P, b, MT, CbT, Eb, k, c, e, Sc, Hc, lr, Y, Bb, Ce, lrb, wb)
    nb[0] = k
    return n_steps


@njit(cache=True)
def dual_wp_flush(b, MT, CbT, Eb, nb, lr, Hc):
    """Apply the ``nb[0]`` pending steps of ``dual_wp_run``'s ``(b, M)`` recurrence to
    ``b`` (N+1,) and ``MT`` (N, N+1) in place and set ``nb[0] = 0``. Call it on copies
    to read the current ``p = Q b`` and ``W = W0 + Q M X_all`` without changing the
    run's state. Returns the number of steps applied."""
    return _apply_pending(b, MT, CbT, Eb, np.full((CbT.shape[1], 2), lr), nb, Hc)


@njit(cache=True)
def _apply_pending(b, MT, CbT, Eb, lrb, nb, Hc):
    """Flush the ``nb[0]`` pending steps with their step sizes ``lrb`` (B, 2) and reset the counter."""
    Y, Bb, Ce, wb = _flush_scratch(MT.shape[0], CbT.shape[1])
    k = nb[0]
    _flush_dual_coefs(b, MT, CbT, Eb, k, lrb, Y, Bb, Ce, Hc, wb)
    nb[0] = 0
    return k


# ------------------------------------------- normalised GD (DESIGN.md §8, Tarzanagh et al.)
#
# One kernel per coordinate system covers every trainable set: ``head`` says whether nu is
# trained (when not, the nu/v/beta arguments are left untouched), W is trained by the Wp
# kernels only. Each step has Euclidean length ``lr`` over all trained blocks jointly, or,
# with ``block``, each trained block (W, p, nu) has length ``lr``. A block whose gradient is
# exactly zero does not move (``p0 = 0`` gives ``grad_W = p g^T = 0`` at the first step).


@njit(cache=True)
def _ngd_steps(lr, block, n2p, n2w, n2nu):
    """Step sizes ``(a_p, a_W, a_nu)`` from the squared gradient norms of the blocks (0 if untrained)."""
    if block:
        ap = lr / np.sqrt(n2p) if n2p > 0.0 else 0.0
        aw = lr / np.sqrt(n2w) if n2w > 0.0 else 0.0
        anu = lr / np.sqrt(n2nu) if n2nu > 0.0 else 0.0
        return ap, aw, anu
    tot = n2p + n2w + n2nu
    a = lr / np.sqrt(tot) if tot > 0.0 else 0.0
    return a, a, a


@njit(cache=True)
def _pow2_normalise(x):
    """Scale ``x`` in place by the power of two that brings its largest entry into [0.5, 1)
    (exact: ``ldexp``; nothing to do for an all-zero or non-finite ``x``)."""
    m = 0.0
    for j in range(x.shape[0]):
        m = max(m, abs(x[j]))
    if m == 0.0 or not np.isfinite(m):
        return
    k = -math.frexp(m)[1]                 # up to 1074 for a subnormal m: 2**k itself may overflow
    for j in range(x.shape[0]):
        x[j] = math.ldexp(x[j], k)


@njit(cache=True)
def _ngd_rescale(c, h, head, block):
    """Rescale the coefficients before a normalised step: the step does not depend on the
    gradient's scale, and the squared norms then neither underflow nor lose digits when the
    softmax saturates (``c ~ exp(-gap)``). Jointly normalised blocks share one power of two;
    with ``block`` each of ``c`` (W and p) and ``h`` (nu) gets its own."""
    if block or not head:
        _pow2_normalise(c)
        if head:
            _pow2_normalise(h)
        return
    m = 0.0
    for j in range(c.shape[0]):
        m = max(m, abs(c[j]), abs(h[j]))
    if m == 0.0 or not np.isfinite(m):
        return
    k = -math.frexp(m)[1]
    for j in range(c.shape[0]):
        c[j] = math.ldexp(c[j], k)
        h[j] = math.ldexp(h[j], k)


@njit(cache=True)
def _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, work, head, block):
    """``c`` and ``h`` of a normalised step: ``_head_coefficients_work``, then rescaled by a power
    of two (``_ngd_rescale``: the direction is all that matters). False if non-finite."""
    if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work):
        return False
    _ngd_rescale(c, h, head, block)
    return True


@njit(cache=True)
def _dot(x, w):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j] * w[j]
    return acc


@njit(cache=True)
def primal_p_ngd_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h,
                     gp, gnu):
    """Normalised GD on p (and nu if ``head``) with fixed keys ``K = X_all W0^T``, primal.

    State as ``primal_p_nu_run``; ``gp``, ``gnu`` (d,) are scratch for the gradients
    ``K^T c`` and ``X_all^T h``, whose norms set the step.
    """
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, work, head, block):
            return step
        _rows_gemv(gp, K, c)
        n2nu = 0.0
        if head:
            _rows_gemv(gnu, X, h)
            n2nu = _dot(gnu, gnu)
        ap, _, anu = _ngd_steps(lr, block, _dot(gp, gp), 0.0, n2nu)
        for k in range(p.shape[0]):
            p[k] -= ap * gp[k]
        _rows_gemv(z, KT, p)
        if head:
            for k in range(nu.shape[0]):
                nu[k] -= anu * gnu[k]
            _rows_gemv(v, XT, nu)
    return n_steps


@njit(cache=True)
def primal_wp_ngd_run(W, p, u, z, nu, v, X, XT, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h, g,
                      gp, gnu):
    """Normalised GD on W, p (and nu if ``head``), primal: ``||grad_p|| = ||W g||``,
    ``||grad_W||_F = ||p|| ||g||``. Two sweeps over W a step (``W g``, then the update)."""
    d = p.shape[0]
    work = np.empty(3 * z.shape[0] + 7 * y.shape[0])
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, work, head, block):
            return step
        _rows_gemv(g, X, c)
        for r in range(d):
            acc = 0.0
            for k in range(d):
                acc += W[r, k] * g[k]
            gp[r] = acc
        n2nu = 0.0
        if head:
            _rows_gemv(gnu, X, h)
            n2nu = _dot(gnu, gnu)
        ap, aw, anu = _ngd_steps(lr, block, _dot(gp, gp), _dot(p, p) * _dot(g, g), n2nu)
        for k in range(d):
            u[k] = 0.0
        for r in range(d):
            a = aw * p[r]
            p_new = p[r] - ap * gp[r]
            for k in range(d):
                w = W[r, k] - a * g[k]
                W[r, k] = w
                u[k] += p_new * w
            p[r] = p_new
        _rows_gemv(z, XT, u)
        if head:
            for k in range(d):
                nu[k] -= anu * gnu[k]
            _rows_gemv(v, XT, nu)
    return n_steps


@njit(cache=True)
def dual_p_ngd_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h, ek, eh):
    """Normalised GD on p (and nu if ``head``) in dual coordinates: ``||grad_p||^2 = c^T Gkk c``,
    ``||grad_nu||^2 = h^T Gxx h`` from the passes ``ek = Gkk c``, ``eh = Gxx h`` the step needs anyway
    (one pass for both when ``Gkk`` is ``Gxx``, W0 = I)."""
    N = z.shape[0]
    work = np.empty(3 * N + 7 * y.shape[0])
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, work, head, block):
            return step
        n2nu = 0.0
        if head:
            _rows_gemv_two(ek, eh, Gkk, Gxx, c, h)
            n2nu = _dot(h, eh)
        else:
            _rows_gemv(ek, Gkk, c)
        ap, _, anu = _ngd_steps(lr, block, _dot(c, ek), 0.0, n2nu)
        for j in range(N):
            a[j] -= ap * c[j]
            z[j] -= ap * ek[j]
        if head:
            for j in range(N):
                beta[j] -= anu * h[j]
                v[j] -= anu * eh[j]
    return n_steps


@njit(cache=True)
def dual_wp_ngd_run(z, S, P, b, MT, CbT, Eb, lrb, nb, beta, v, Gxx, y, T, relevant, lr, head, block, n_steps,
                    frak_sum, s, c, h, e, eh, Sc, Hc):
    """Normalised GD on W, p (and nu if ``head``) in dual coordinates, O(N^2) a step.

    ``||grad_p||^2 = c^T S c``, ``||grad_W||_F^2 = ||p||^2 c^T Gxx c = P (c . e)``,
    ``||grad_nu||^2 = h^T Gxx h``. With step sizes ``a_p``, ``a_W`` (``W' = W - a_W p g^T``,
    ``p' = p - a_p W g``) the closed state moves as

        z' = z - a_p S c - a_W P e + a_W a_p (z.c) e
        S' = S - a_W (e z^T + z e^T) + a_W^2 P e e^T
        P' = P - 2 a_p z.c + a_p^2 c^T S c

    and ``(b, M)`` as in ``dual_wp_run`` with each step's ``(a_p, a_W)`` kept in ``lrb`` (B, 2)
    until its block is flushed (``dual_wp_ngd_flush``). ``S c`` is needed before S is
    updated, so this costs one N x N pass more than GD.
    """
    N = z.shape[0]
    B = CbT.shape[1]
    work = np.empty(3 * N + 7 * y.shape[0])
    Y, Bb, Ce, wb = _flush_scratch(N, B)
    k = nb[0]
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, work, head, block):
            nb[0] = k
            return step
        _rows_gemv2(e, eh, Gxx, c, h)
        _rows_gemv(Sc, S, c)
        Pk = P[0]
        n2nu = _dot(h, eh) if head else 0.0
        cSc = _dot(c, Sc)
        ap, aw, anu = _ngd_steps(lr, block, cSc, Pk * _dot(c, e), n2nu)
        zc = _dot(z, c)
        _key_gram_sweep(S, c, z, e, aw, aw * aw * Pk, Sc)
        corr = aw * ap * zc
        for j in range(N):
            z[j] = z[j] - ap * Sc[j] - aw * Pk * e[j] + corr * e[j]
        P[0] = Pk - 2.0 * ap * zc + ap * ap * cSc
        if head:
            for j in range(N):
                beta[j] -= anu * h[j]
                v[j] -= anu * eh[j]
        eb = Eb[k]
        for j in range(N):
            CbT[j, k] = c[j]
            eb[j] = e[j]
        lrb[k, 0] = ap
        lrb[k, 1] = aw
        k += 1
        if k == B:
            _flush_dual_coefs(b, MT, CbT, Eb, k, lrb, Y, Bb, Ce, Hc, wb)
            k = 0
    nb[0] = k
    return n_steps


@njit(cache=True)
def dual_wp_ngd_flush(b, MT, CbT, Eb, lrb, nb, Hc):
    """``dual_wp_flush`` for ``dual_wp_ngd_run``'s pending block (step sizes in ``lrb``)."""
    return _apply_pending(b, MT, CbT, Eb, lrb, nb, Hc)


# ------------------------------------------------------------ save-time kernels


@njit(cache=True)
def add_matvec_t(AT, x, out):
    """``out += AT^T x`` with ``AT`` (k, m) stored row-major, x (k,), out (m,); returns ``out``.

    Test-set scores at save times: a contiguous axpy sweep over the stored cross
    Gram (serial, so it does not fight the other runs for cores the way a
    threaded BLAS matvec does).
    """
    k = AT.shape[0]
    m = out.shape[0]
    for l in range(k):
        a = x[l]
        row = AT[l]
        for j in range(m):
            out[j] += a * row[j]
    return out


@njit(cache=True)
def dual_w_dist2(MT, Gqq, Gxx):
    """``||W - W0||_F^2 = tr(M^T Gqq M Gxx)`` for ``W - W0 = Q M X_all``.

    MT : (N, N+1) = M^T, Gqq : (N+1, N+1), Gxx : (N, N). About ``4 N^3`` flops,
    done serially at save times only.
    """
    N = MT.shape[0]
    N1 = MT.shape[1]
    M = np.empty((N1, N))
    for j in range(N):
        for r in range(N1):
            M[r, j] = MT[j, r]
    A = np.zeros((N1, N))              # Gqq M
    B = np.zeros((N1, N))              # M Gxx
    for r in range(N1):
        _rows_gemv(A[r], M, Gqq[r])    # Gqq symmetric: row r is column r
        _rows_gemv(B[r], Gxx, M[r])
    total = 0.0
    for r in range(N1):
        for j in range(N):
            total += A[r, j] * B[r, j]
    return total
