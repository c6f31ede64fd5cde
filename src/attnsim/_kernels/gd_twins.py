"""Slow NumPy twins of the numba kernels in ``core.py`` and ``gd.py``.

Each twin has the signature of its kernel and the same in-place contract; it is written for
clarity (whole-array NumPy, the formulas of DESIGN.md and of the kernels' docstrings) so that it
can serve as an oracle in the tests and as the ``backend="numpy"`` of ``train``. Scratch arguments
(``fw`` beyond what the core documents, ``gp``, ``ek``, ...) are filled only where the contract says.
"""

import numpy as np

from .._numerics import logistic_loss, neg_dloss, top_relative
from .core import _COEF, _F, _KAP, _MIN, _MOUT, _PHI, _TOP, _TOTAL, _VTOP, _ZMAX
from .gd import GD, MOMENTUM, NGD  # noqa: F401 - the rule codes are the kernels' vocabulary


def forward(z, v, y):
    """Attention, outputs and dL/dz from scores (n, T), relative to each sample's top token:
    ``(s (n, T), f (n,), c (n, T))``."""
    n = z.shape[0]
    s, delta, phi = top_relative(z, v)
    f = v[np.arange(n), np.argmax(z, axis=1)] + phi
    c = (-neg_dloss(y * f) * y / n)[:, None] * s * (delta - phi[:, None])
    return s, f, c


def coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, full):
    """Twin of ``core.coefficients`` (fills the per-sample blocks of ``fw`` and, with ``full``, ``v - f``)."""
    n = y.shape[0]
    N = n * T
    Z, V = z.reshape(n, T), v.reshape(n, T)
    top = np.argmax(Z, axis=1)
    S, D, phi = top_relative(Z, V)
    s2, f, c2 = forward(Z, V, y)
    coef = -neg_dloss(y * f) * y / n
    s[:] = S.ravel()
    c[:] = c2.ravel()
    if h.size:
        h[:] = (coef[:, None] * S).ravel()
    m_in, m_out = S[:, relevant].sum(axis=1), S[:, ~relevant].sum(axis=1)
    frak_sum += m_in * m_out
    blocks = fw[4 * N:].reshape(10, n)
    blocks[_ZMAX], blocks[_TOTAL], blocks[_PHI] = Z.max(axis=1), np.exp(Z - Z.max(axis=1)[:, None]).sum(axis=1), phi
    blocks[_MIN], blocks[_MOUT], blocks[_COEF] = m_in, m_out, coef
    blocks[_VTOP] = V[np.arange(n), top]
    if full:
        blocks[_F] = f
        fw[3 * N:4 * N] = (D - phi[:, None]).ravel()
        blocks[_KAP] = neg_dloss(y * f) * neg_dloss(-y * f) / n
        blocks[_TOP] = top
    return bool(np.all(np.isfinite(f)))


def jvp(dz, dv, s, fw, T, dc, dh):
    """Twin of ``core.jvp``: the JVP of ``(c, h)`` along ``(dz, dv)`` (of ``c`` along ``dz`` if ``dv`` is empty)."""
    n = s.size // T
    N = n * T
    blocks = fw[4 * N:].reshape(10, n)
    coef, kap, top = blocks[_COEF], blocks[_KAP], blocks[_TOP].astype(np.int64)
    rows = np.arange(n)
    DZ, S, VF = dz.reshape(n, T), s.reshape(n, T), fw[3 * N:4 * N].reshape(n, T)
    DV = dv.reshape(n, T) if dv.size else np.zeros((n, T))
    dzr = DZ - DZ[rows, top][:, None]
    dvr = DV - DV[rows, top][:, None]
    w = S * dzr
    dbar, dfz, dvbar = w.sum(axis=1), (w * VF).sum(axis=1), (S * dvr).sum(axis=1)
    dco = kap * (dfz + DV[rows, top] + dvbar)
    dc[:] = (dco[:, None] * S * VF
             + coef[:, None] * S * ((dzr - dbar[:, None]) * VF - dfz[:, None] + dvr - dvbar[:, None])).ravel()
    if dh.size:
        dh[:] = (dco[:, None] * S + coef[:, None] * S * (dzr - dbar[:, None])).ravel()


def loss_and_grads(X, y, W, p, nu):
    """Twin of ``gd.loss_and_grads``: scores ``X W^T p``, DESIGN.md §2."""
    loss, grad_W, grad_p, _ = loss_and_grads_head(X, y, W, p, nu)
    return loss, grad_W, grad_p


def loss_and_grads_head(X, y, W, p, nu):
    """Twin of ``gd.loss_and_grads_head``: ``(loss, grad_W, grad_p, grad_nu)``, DESIGN.md §8."""
    n, T, d = X.shape
    z = X @ (W.T @ p)
    v = X @ nu
    s, f, c = forward(z, v, y)
    loss = float(np.mean(logistic_loss(y * f)))
    g = np.einsum("it,itk->k", c, X)
    h = (-neg_dloss(y * f) * y / n)[:, None] * s
    return loss, np.outer(p, g), W @ g, np.einsum("it,itk->k", h, X)


# ------------------------------------------------------------------ the rules


def _pow2(x):
    """``x`` scaled by the power of two that brings its largest entry into [0.5, 1)."""
    m = float(np.max(np.abs(x), initial=0.0))
    return x if m == 0.0 or not np.isfinite(m) else np.ldexp(x, -int(np.frexp(m)[1]))


def _direction(rule, param, c, h, vc, vh):
    """Twin of ``gd._direction``."""
    if rule == NGD:
        if param != 0.0 or h.size == 0:
            c[:], h[:] = _pow2(c), _pow2(h)
        else:
            ch = _pow2(np.concatenate([c, h]))
            c[:], h[:] = ch[:c.size], ch[c.size:]
    elif rule == MOMENTUM:
        vc *= param
        vc += c if vc.size else 0.0
        vh *= param
        vh += h if vh.size else 0.0
        return (vc if vc.size else c), (vh if vh.size else h)
    return c, h


def _step_sizes(rule, lr, param, n2p, n2w, n2nu):
    """Twin of ``gd._step_sizes``."""
    if rule != NGD:
        return lr, lr, lr
    if param != 0.0:
        return tuple(lr / np.sqrt(n2) if n2 > 0 else 0.0 for n2 in (n2p, n2w, n2nu))
    tot = n2p + n2w + n2nu
    a = lr / np.sqrt(tot) if tot > 0 else 0.0
    return a, a, a


# ------------------------------------------------------------------ the step kernels


def primal_p_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vc, vh,
                 gp, gnu, fw):
    """Twin of ``gd.primal_p_run``: the gradients as vectors."""
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
            return step
        dc, dh = _direction(rule, param, c, h, vc, vh)
        gp[:] = K.T @ dc
        gn = X.T @ dh if h.size else np.zeros(0)
        ap, _, anu = _step_sizes(rule, lr, param, gp @ gp, 0.0, gn @ gn)
        p -= ap * gp
        z[:] = K @ p
        if h.size:
            nu -= anu * gn
            v[:] = X @ nu
    return n_steps


def primal_wp_run(W, p, u, z, nu, v, X, XT, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vh, VW, vp,
                  g, gp, gnu, fw):
    """Twin of ``gd.primal_wp_run``: ``grad_W`` the dense ``p g^T``, the velocities dense too."""
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
            return step
        dc, dh = _direction(rule, param, c, h, np.zeros(0), vh)
        g[:] = X.T @ dc
        grad_p, grad_W = W @ g, np.outer(p, g)
        gn = X.T @ dh if h.size else np.zeros(0)
        ap, aw, anu = _step_sizes(rule, lr, param, grad_p @ grad_p, float(np.sum(grad_W * grad_W)), gn @ gn)
        if VW.size:
            VW[:] = param * VW + grad_W
            vp[:] = param * vp + grad_p
            grad_W, grad_p = VW, vp
        W -= aw * grad_W
        p -= ap * grad_p
        u[:] = W.T @ p
        z[:] = X @ u
        if h.size:
            nu -= anu * gn
            v[:] = X @ nu
    return n_steps


def dual_p_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vc, vh, ek, eh,
               fw):
    """Twin of ``gd.dual_p_run``."""
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
            return step
        dc, dh = _direction(rule, param, c, h, vc, vh)
        Gc = Gkk @ dc
        Gh = Gxx @ dh if h.size else np.zeros(0)
        ap, _, anu = _step_sizes(rule, lr, param, dc @ Gc, 0.0, dh @ Gh)
        a -= ap * dc
        z -= ap * Gc
        if h.size:
            beta -= anu * dh
            v -= anu * Gh
    return n_steps


def dual_wp_run(z, S, P, b, MT, CbT, Eb, lrb, nb, beta, v, Gxx, y, T, relevant, rule, lr, param, n_steps,
                frak_sum, s, c, h, vh, e, eh, Sc, Hc, fw):
    """Twin of ``gd.dual_wp_run`` (see its docstring for the recurrences)."""
    B = CbT.shape[1]
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
            return step
        dc, dh = _direction(rule, param, c, h, np.zeros(0), vh)
        e[:] = Gxx @ dc
        Sc[:] = S @ dc
        Pk, zc, cSc = P[0], z @ dc, dc @ Sc
        Gh = Gxx @ dh if h.size else np.zeros(0)
        ap, aw, anu = _step_sizes(rule, lr, param, cSc, Pk * (dc @ e), dh @ Gh)
        S[:] = S - aw * (np.outer(e, z) + np.outer(z, e)) + aw * aw * Pk * np.outer(e, e)
        z[:] = z - ap * Sc - aw * Pk * e + aw * ap * zc * e
        P[0] = Pk - 2.0 * ap * zc + ap * ap * cSc
        if h.size:
            beta -= anu * dh
            v -= anu * Gh
        CbT[:, nb[0]] = dc
        Eb[nb[0]] = e
        lrb[nb[0]] = (ap, aw)
        nb[0] += 1
        if nb[0] == B:
            dual_wp_flush(b, MT, CbT, Eb, lrb, nb, Hc)
    return n_steps


def dual_wp_heavy_run(z, P, b, MT, bv, MvT, beta, v, Gqq, Gxx, y, T, relevant, rule, lr, param, n_steps, frak_sum,
                      s, c, h, vh, e, eh, Hc, w, t, fw):
    """Twin of ``gd.dual_wp_heavy_run``: ``H = E + M Gxx``, the velocities of ``(b, M)``, ``z = H^T Gqq b``."""
    N = z.size
    E = np.vstack([np.zeros(N), np.eye(N)])
    for step in range(n_steps):
        if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
            return step
        dc, dh = _direction(rule, param, c, h, np.zeros(0), vh)
        ap, aw, anu = _step_sizes(rule, lr, param, 0.0, 0.0, 0.0)
        e[:] = Gxx @ dc
        Hc[:] = (E + MT.T @ Gxx) @ dc
        MvT[:] = param * MvT + np.outer(dc, b)
        MT -= aw * MvT
        bv[:] = param * bv + Hc
        b -= ap * bv
        if h.size:
            beta -= anu * dh
            v -= anu * (Gxx @ dh)
        H = E + MT.T @ Gxx
        z[:] = H.T @ (Gqq @ b)
        P[0] = b @ Gqq @ b
    return n_steps


def dual_wp_flush(b, MT, CbT, Eb, lrb, nb, Hc):
    """Twin of ``gd.dual_wp_flush``: the pending steps one after the other."""
    for t in range(nb[0]):
        c = CbT[:, t]
        ap, aw = lrb[t]
        Hc[:] = np.concatenate(([0.0], c)) + MT.T @ Eb[t]
        MT -= aw * np.outer(c, b)
        b -= ap * Hc
    k = int(nb[0])
    nb[0] = 0
    return k


def add_matvec_t(AT, x, out):
    """Twin of ``gd.add_matvec_t``."""
    out += AT.T @ x
    return out


def dual_w_dist2(MT, Gqq, Gxx):
    """Twin of ``gd.dual_w_dist2``: ``tr(M^T Gqq M Gxx)``."""
    M = MT.T
    return float(np.trace(M.T @ Gqq @ M @ Gxx))
