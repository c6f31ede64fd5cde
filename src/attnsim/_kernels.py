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

Every kernel has a slow NumPy twin with the same signature in ``_reference.py``;
``tests/test_kernels.py`` holds the registry that compares them.
"""

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
    """Softmax, output and dL/dz for the T tokens of one sample.

    Writes ``s[base:base+T]`` and ``c[base:base+T]``; returns ``(f, m, 1 - m)``
    where ``m`` is the softmax mass on the tokens flagged in ``relevant`` (T,).
    ``1 - m`` is summed from the other tokens, not subtracted, so that it keeps
    its digits when the relevant token is selected.
    """
    zmax = z[base]
    for t in range(1, T):
        if z[base + t] > zmax:
            zmax = z[base + t]
    total = 0.0
    for t in range(T):
        e = np.exp(z[base + t] - zmax)
        s[base + t] = e
        total += e
    f = 0.0
    mass_in = 0.0
    mass_out = 0.0
    for t in range(T):
        st = s[base + t] / total
        s[base + t] = st
        f += st * v[base + t]
        if relevant[t]:
            mass_in += st
        else:
            mass_out += st
    coef = -inv_n * _neg_dloss(yi * f) * yi
    for t in range(T):
        c[base + t] = coef * s[base + t] * (v[base + t] - f)
    return f, mass_in, mass_out


@njit(cache=True)
def coefficients(z, v, y, T, relevant, s, c, frak_sum):
    """dL/dz for all samples; adds 𝔖_i = m_i (1 - m_i) into ``frak_sum``.

    Parameters
    ----------
    z, v : ndarray, shape (N,)
        Scores and token values, sample-major.
    y : ndarray, shape (n,)
        Observed labels in {-1, +1}.
    T : int
        Tokens per sample.
    relevant : ndarray of bool, shape (T,)
        Positions forming the relevant set R.
    s, c : ndarray, shape (N,)
        Output: attention and dL/dz.
    frak_sum : ndarray, shape (n,)
        Accumulator for 𝔖_i at the current iterate.

    Returns
    -------
    finite : bool
        False when some sample's output is not finite.
    """
    n = y.shape[0]
    inv_n = 1.0 / n
    finite = True
    for i in range(n):
        f, m_in, m_out = _sample_coefficients(z, v, y[i], i * T, T, inv_n, relevant, s, c)
        frak_sum[i] += m_in * m_out
        if not np.isfinite(f):
            finite = False
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
    relevant = np.zeros(T, dtype=np.bool_)
    loss = 0.0
    for i in range(n):
        f, _, _ = _sample_coefficients(z, v, y[i], i * T, T, 1.0 / n, relevant, s, c)
        loss += _logistic_loss(y[i] * f)
    loss /= n
    g = np.zeros(d)
    for i in range(n):
        for t in range(T):
            cj = c[i * T + t]
            for k in range(d):
                g[k] += cj * X[i, t, k]
    grad_p = np.zeros(d)
    grad_W = np.empty((d, d))
    for r in range(d):
        acc = 0.0
        for k in range(d):
            acc += W[r, k] * g[k]
            grad_W[r, k] = p[r] * g[k]
        grad_p[r] = acc
    return loss, grad_W, grad_p


# ---------------------------------------------------------------- primal GD loops


@njit(cache=True)
def primal_p_run(p, z, K, KT, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """GD on p alone with fixed keys ``K = X_all W0^T``.

    State: ``p`` (d,) and the scores ``z = K p`` (N,), both updated in place.
    ``K`` is (N, d) and ``KT`` its transpose (d, N), C-contiguous, so that both
    ``K^T c`` and ``K p`` are contiguous sweeps.
    """
    N = z.shape[0]
    d = p.shape[0]
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, frak_sum):
            return step
        for j in range(N):
            a = lr * c[j]
            for k in range(d):
                p[k] -= a * K[j, k]
        for j in range(N):
            z[j] = 0.0
        for k in range(d):
            pk = p[k]
            for j in range(N):
                z[j] += pk * KT[k, j]
    return n_steps


@njit(cache=True)
def primal_wp_run(W, p, u, z, X, XT, v, y, T, relevant, lr, n_steps, frak_sum, s, c, g):
    """Simultaneous GD on W and p in primal coordinates.

    State: ``W`` (d, d), ``p`` (d,), the effective query ``u = W^T p`` (d,) and
    the scores ``z = X_all u`` (N,). One sweep over W per step: for each row r,
    ``(W g)_r`` is read from the old row, the row takes its rank-one update
    ``-lr p_r g^T``, and the new ``u = W'^T p'`` is accumulated from the new row.
    ``X`` is (N, d) and ``XT`` its transpose (d, N).
    """
    N = z.shape[0]
    d = p.shape[0]
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, frak_sum):
            return step
        for k in range(d):
            g[k] = 0.0
        for j in range(N):
            cj = c[j]
            for k in range(d):
                g[k] += cj * X[j, k]
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
        for j in range(N):
            z[j] = 0.0
        for k in range(d):
            uk = u[k]
            for j in range(N):
                z[j] += uk * XT[k, j]
    return n_steps


# ------------------------------------------------------------------ dual GD loops


@njit(cache=True)
def dual_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """GD on p alone in dual coordinates ``p = p0 + K^T a``.

    State: ``a`` (N,) and ``z = K p0 + Gkk a`` (N,), updated in place.
    ``Gkk = K K^T`` (N, N), symmetric. Cost per step O(N^2), independent of d.
    """
    N = z.shape[0]
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, frak_sum):
            return step
        for l in range(N):
            al = lr * c[l]
            a[l] -= al
            for j in range(N):
                z[j] -= al * Gkk[l, j]
    return n_steps


@njit(cache=True)
def dual_wp_run(z, S, P, b, MT, Gxx, v, y, T, relevant, lr, n_steps, frak_sum, s, c, e, Sc, Hc):
    """Simultaneous GD on W and p in dual coordinates, cost O(N^2) per step.

    State, all updated in place (``k_j = W x_j`` are the current keys):

    - ``z`` (N,): scores ``z_j = k_j^T p``;
    - ``S`` (N, N): key Gram matrix ``S_jl = k_j^T k_l``;
    - ``P`` (1,): ``||p||^2``;
    - ``b`` (N+1,) and ``MT`` (N, N+1): ``p = Q b`` and ``W = W0 + Q M X_all``
      with ``Q = [p0, W0 X_all^T]`` and ``MT = M^T``; kept so that test scores,
      ``||W - W0||`` and the final parameters can be formed at save times.

    With ``g = X_all^T c`` and ``e = Gxx c`` (``e_j = x_j^T g``), the joint step
    ``W' = W - lr p g^T``, ``p' = p - lr W g`` gives

        z'  = z - lr S c - lr P e + lr^2 (z.c) e
        S'  = S - lr (e z^T + z e^T) + lr^2 P e e^T
        P'  = P - 2 lr z.c + lr^2 c^T S c
        b'  = b - lr (E c + M e),     M' = M - lr b c^T

    (``E = [0; I]``). Three sweeps of an N x N matrix per step.
    """
    N = z.shape[0]
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, frak_sum):
            return step
        for j in range(N):
            e[j] = 0.0
            Sc[j] = 0.0
        for l in range(N):
            cl = c[l]
            for j in range(N):
                e[j] += cl * Gxx[l, j]
        zc = 0.0
        for j in range(N):
            zc += z[j] * c[j]
        Pk = P[0]
        lr2P = lr * lr * Pk
        # Sc accumulates from each old row before that row is overwritten; S is
        # symmetric, so row l also serves as column l.
        for l in range(N):
            cl = c[l]
            el = e[l]
            zl = z[l]
            f1 = lr * el
            f2 = lr * zl
            f3 = lr2P * el
            for j in range(N):
                sj = S[l, j]
                Sc[j] += cl * sj
                S[l, j] = sj - f1 * z[j] - f2 * e[j] + f3 * e[j]
        cSc = 0.0
        for j in range(N):
            cSc += c[j] * Sc[j]
        # b' = b - lr (E c + M e); M' = M - lr b c^T, with M stored transposed.
        Hc[0] = 0.0
        for j in range(N):
            Hc[j + 1] = c[j]
        for j in range(N):
            ej = e[j]
            lcj = lr * c[j]
            for r in range(N + 1):
                m = MT[j, r]
                Hc[r] += ej * m
                MT[j, r] = m - lcj * b[r]
        for r in range(N + 1):
            b[r] -= lr * Hc[r]
        corr = lr * lr * zc
        for j in range(N):
            z[j] = z[j] - lr * Sc[j] - lr * Pk * e[j] + corr * e[j]
        P[0] = Pk - 2.0 * lr * zc + lr * lr * cSc
    return n_steps
