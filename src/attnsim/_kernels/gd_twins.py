"""Slow NumPy twins of the numba GD kernels in ``gd.py``.

Each twin has the signature of its kernel and the same in-place contract; it is
written for clarity (whole-array NumPy, the formulas of DESIGN.md) so that it can
serve as an oracle in the tests and as the ``backend="numpy"`` of ``train``.
"""

import numpy as np

from .._numerics import logistic_loss, neg_dloss, outputs, top_relative


def forward(z, v, y):
    """Attention, outputs and dL/dz from scores, relative to each sample's top token.

    Parameters
    ----------
    z, v : ndarray, shape (n, T)
    y : ndarray, shape (n,)

    Returns
    -------
    s : ndarray, shape (n, T)
    f : ndarray, shape (n,)
    c : ndarray, shape (n, T)
    """
    n = z.shape[0]
    s, delta, phi = top_relative(z, v)
    f = v[np.arange(n), np.argmax(z, axis=1)] + phi
    c = (-neg_dloss(y * f) * y / n)[:, None] * s * (delta - phi[:, None])
    return s, f, c


def _coefficients_work(z, v, y, T, relevant, s, c, frak_sum, work=None):
    """Twin of ``gd._coefficients_work`` (needs no scratch)."""
    n = y.shape[0]
    s2, f, c2 = forward(z.reshape(n, T), v.reshape(n, T), y)
    s[:] = s2.ravel()
    c[:] = c2.ravel()
    frak_sum += s2[:, relevant].sum(axis=1) * s2[:, ~relevant].sum(axis=1)
    return bool(np.all(np.isfinite(f)))


def loss_and_grads(X, y, W, p, nu):
    """Twin of ``gd.loss_and_grads``: scores ``X W^T p``, DESIGN.md §2."""
    loss, grad_W, grad_p, _ = loss_and_grads_head(X, y, W, p, nu)
    return loss, grad_W, grad_p


def _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum, work=None):
    """Twin of ``gd._head_coefficients_work``: also ``h_it = (1/n) ell'(y_i f_i) y_i s_it``."""
    n = y.shape[0]
    finite = _coefficients_work(z, v, y, T, relevant, s, c, frak_sum)
    _, f = outputs(z.reshape(n, T), v.reshape(n, T))
    h[:] = ((-neg_dloss(y * f) * y / n)[:, None] * s.reshape(n, T)).ravel()
    return finite


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


def primal_p_run(p, z, K, KT, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """Twin of ``gd.primal_p_run``."""
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum):
            return step
        p -= lr * (K.T @ c)
        z[:] = K @ p
    return n_steps


def primal_wp_run(W, p, u, z, X, XT, v, y, T, relevant, lr, n_steps, frak_sum, s, c, g):
    """Twin of ``gd.primal_wp_run``."""
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum):
            return step
        g[:] = X.T @ c
        grad_p = W @ g
        W -= lr * np.outer(p, g)
        p -= lr * grad_p
        u[:] = W.T @ p
        z[:] = X @ u
    return n_steps


def primal_p_nu_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, n_steps, frak_sum, s, c, h):
    """Twin of ``gd.primal_p_nu_run``."""
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum):
            return step
        p -= lr * (K.T @ c)
        nu -= lr * (X.T @ h)
        z[:] = K @ p
        v[:] = X @ nu
    return n_steps


def primal_wp_nu_run(W, p, u, z, nu, v, X, XT, y, T, relevant, lr, n_steps, frak_sum, s, c, h, g):
    """Twin of ``gd.primal_wp_nu_run``."""
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum):
            return step
        g[:] = X.T @ c
        grad_p = W @ g
        W -= lr * np.outer(p, g)
        p -= lr * grad_p
        nu -= lr * (X.T @ h)
        u[:] = W.T @ p
        z[:] = X @ u
        v[:] = X @ nu
    return n_steps


def dual_p_nu_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, c, h, eh):
    """Twin of ``gd.dual_p_nu_run``."""
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum):
            return step
        a -= lr * c
        z -= lr * (Gkk @ c)
        beta -= lr * h
        v -= lr * (Gxx @ h)
    return n_steps


def dual_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, c):
    """Twin of ``gd.dual_p_run``."""
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum):
            return step
        a -= lr * c
        z -= lr * (Gkk @ c)
    return n_steps


def dual_wp_run(z, S, P, b, MT, CbT, Eb, nb, Gxx, v, y, T, relevant, lr, n_steps, frak_sum, s, c, e, Sc, Hc):
    """Twin of ``gd.dual_wp_run`` (see its docstring for the recurrences).

    Same contract: ``(b, MT)`` advance by whole blocks of ``B = CbT.shape[1]`` steps,
    the steps since the last block boundary wait in ``CbT``, ``Eb``, ``nb``.
    """
    for step in range(n_steps):
        if not _coefficients_work(z, v, y, T, relevant, s, c, frak_sum):
            return step
        _joint_step(z, S, P, b, MT, CbT, Eb, nb, Gxx, c, e, Sc, Hc, lr)
    return n_steps


def dual_wp_nu_run(z, S, P, b, MT, CbT, Eb, nb, beta, v, Gxx, y, T, relevant, lr, n_steps, frak_sum, s, c, h,
                   e, eh, Sc, Hc):
    """Twin of ``gd.dual_wp_nu_run``: ``dual_wp_run``'s step plus ``beta -= lr h``, ``v -= lr Gxx h``."""
    for step in range(n_steps):
        if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum):
            return step
        eh[:] = Gxx @ h
        v_new = v - lr * eh
        beta -= lr * h
        # the (W, p) step reads the old v only through c, already computed
        _joint_step(z, S, P, b, MT, CbT, Eb, nb, Gxx, c, e, Sc, Hc, lr)
        v[:] = v_new
    return n_steps


def _joint_step(z, S, P, b, MT, CbT, Eb, nb, Gxx, c, e, Sc, Hc, lr):
    """One joint (W, p) step of ``dual_wp_run`` from known ``c`` (the twin's own helper)."""
    B = CbT.shape[1]
    e[:] = Gxx @ c
    Sc[:] = S @ c
    zc = z @ c
    Pk = P[0]
    S[:] = S - lr * (np.outer(e, z) + np.outer(z, e)) + lr * lr * Pk * np.outer(e, e)
    z[:] = z - lr * Sc - lr * Pk * e + lr * lr * zc * e
    P[0] = Pk - 2.0 * lr * zc + lr * lr * (c @ Sc)
    CbT[:, nb[0]] = c
    Eb[nb[0]] = e
    nb[0] += 1
    if nb[0] == B:
        dual_wp_flush(b, MT, CbT, Eb, nb, lr, Hc)


def dual_wp_flush(b, MT, CbT, Eb, nb, lr, Hc):
    """Twin of ``gd.dual_wp_flush``: ``dual_wp_ngd_flush`` with every step size ``lr``."""
    return dual_wp_ngd_flush(b, MT, CbT, Eb, np.full((CbT.shape[1], 2), lr), nb, Hc)


def add_matvec_t(AT, x, out):
    """Twin of ``gd.add_matvec_t``."""
    out += AT.T @ x
    return out


def dual_w_dist2(MT, Gqq, Gxx):
    """Twin of ``gd.dual_w_dist2``: ``tr(M^T Gqq M Gxx)``."""
    M = MT.T
    return float(np.trace(M.T @ Gqq @ M @ Gxx))


# ------------------------------------------------------------------ normalised GD


def _ngd_steps(lr, block, n2p, n2w, n2nu):
    """Twin of ``gd._ngd_steps``."""
    if block:
        return tuple(lr / np.sqrt(n2) if n2 > 0 else 0.0 for n2 in (n2p, n2w, n2nu))
    tot = n2p + n2w + n2nu
    a = lr / np.sqrt(tot) if tot > 0 else 0.0
    return a, a, a


def _pow2(x):
    """``x`` scaled by the power of two that brings its largest entry into [0.5, 1)."""
    m = float(np.max(np.abs(x), initial=0.0))
    return x if m == 0.0 or not np.isfinite(m) else np.ldexp(x, -int(np.frexp(m)[1]))


def _ngd_rescale(c, h, head, block):
    """Twin of ``gd._ngd_rescale``."""
    if block or not head:
        c[:] = _pow2(c)
        if head:
            h[:] = _pow2(h)
        return
    ch = _pow2(np.concatenate([c, h]))
    c[:], h[:] = ch[:c.size], ch[c.size:]


def _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, head, block):
    """Twin of ``gd._ngd_coefficients``."""
    if not _head_coefficients_work(z, v, y, T, relevant, s, c, h, frak_sum):
        return False
    _ngd_rescale(c, h, head, block)
    return True


def primal_p_ngd_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h,
                     gp, gnu):
    """Twin of ``gd.primal_p_ngd_run``: the gradients as vectors, their Euclidean norms."""
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, head, block):
            return step
        gp[:] = K.T @ c
        gnu[:] = X.T @ h if head else 0.0
        ap, _, anu = _ngd_steps(lr, block, gp @ gp, 0.0, gnu @ gnu if head else 0.0)
        p -= ap * gp
        z[:] = K @ p
        if head:
            nu -= anu * gnu
            v[:] = X @ nu
    return n_steps


def primal_wp_ngd_run(W, p, u, z, nu, v, X, XT, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h, g,
                      gp, gnu):
    """Twin of ``gd.primal_wp_ngd_run``: ``||grad_W||_F`` of the dense ``p g^T``."""
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, head, block):
            return step
        g[:] = X.T @ c
        gp[:] = W @ g
        grad_W = np.outer(p, g)
        gnu[:] = X.T @ h if head else 0.0
        ap, aw, anu = _ngd_steps(lr, block, gp @ gp, float(np.sum(grad_W * grad_W)), gnu @ gnu if head else 0.0)
        W -= aw * grad_W
        p -= ap * gp
        u[:] = W.T @ p
        z[:] = X @ u
        if head:
            nu -= anu * gnu
            v[:] = X @ nu
    return n_steps


def dual_p_ngd_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, head, block, n_steps, frak_sum, s, c, h, ek, eh):
    """Twin of ``gd.dual_p_ngd_run``."""
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, head, block):
            return step
        ek[:] = Gkk @ c
        if head:
            eh[:] = Gxx @ h
        ap, _, anu = _ngd_steps(lr, block, c @ ek, 0.0, h @ eh if head else 0.0)
        a -= ap * c
        z -= ap * ek
        if head:
            beta -= anu * h
            v -= anu * eh
    return n_steps


def dual_wp_ngd_run(z, S, P, b, MT, CbT, Eb, lrb, nb, beta, v, Gxx, y, T, relevant, lr, head, block, n_steps,
                    frak_sum, s, c, h, e, eh, Sc, Hc):
    """Twin of ``gd.dual_wp_ngd_run`` (see its docstring for the recurrences)."""
    B = CbT.shape[1]
    for step in range(n_steps):
        if not _ngd_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, head, block):
            return step
        e[:] = Gxx @ c
        eh[:] = Gxx @ h
        Sc[:] = S @ c
        Pk, zc, cSc = P[0], z @ c, c @ Sc
        ap, aw, anu = _ngd_steps(lr, block, cSc, Pk * (c @ e), h @ eh if head else 0.0)
        S[:] = S - aw * (np.outer(e, z) + np.outer(z, e)) + aw * aw * Pk * np.outer(e, e)
        z[:] = z - ap * Sc - aw * Pk * e + aw * ap * zc * e
        P[0] = Pk - 2.0 * ap * zc + ap * ap * cSc
        if head:
            beta -= anu * h
            v -= anu * eh
        CbT[:, nb[0]] = c
        Eb[nb[0]] = e
        lrb[nb[0]] = (ap, aw)
        nb[0] += 1
        if nb[0] == B:
            dual_wp_ngd_flush(b, MT, CbT, Eb, lrb, nb, Hc)
    return n_steps


def dual_wp_ngd_flush(b, MT, CbT, Eb, lrb, nb, Hc):
    """Twin of ``gd.dual_wp_ngd_flush``: the pending steps one after the other."""
    for t in range(nb[0]):
        c = CbT[:, t]
        ap, aw = lrb[t]
        Hc[:] = np.concatenate(([0.0], c)) + MT.T @ Eb[t]
        MT -= aw * np.outer(c, b)
        b -= ap * Hc
    k = int(nb[0])
    nb[0] = 0
    return k
