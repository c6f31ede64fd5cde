"""The plainest primal GD loop, written from DESIGN.md §1-2 with nothing of attnsim's: an oracle
for the engines end to end (small, unsaturated problems only: no max shift, no top-relative form)."""

import numpy as np


def loss_and_grads(X, y, W, p, nu):
    """Loss and ``(grad_W, grad_p)`` of ``mean_i log(1 + exp(-y_i nu^T X_i^T softmax(X_i W^T p)))``."""
    n = X.shape[0]
    z = np.einsum("itk,k->it", X, W.T @ p)
    e = np.exp(z)
    s = e / e.sum(axis=1, keepdims=True)
    v = X @ nu
    f = (s * v).sum(axis=1)
    loss = float(np.mean(np.log(1.0 + np.exp(-y * f))))
    dl_df = -y / (1.0 + np.exp(y * f)) / n              # d loss / d f_i
    dl_dz = dl_df[:, None] * s * (v - f[:, None])       # softmax Jacobian applied to v
    g = np.einsum("it,itk->k", dl_dz, X)                # d loss / d (W^T p)
    return loss, np.outer(p, g), W @ g


def grad_head(X, y, W, p, nu):
    """``d loss / d nu``: f_i = nu^T (X_i^T s_i) is linear in nu, so the gradient is
    ``mean_i ell'(y_i f_i) y_i X_i^T s_i`` (the attention-weighted token of each sample)."""
    z = np.einsum("itk,k->it", X, W.T @ p)
    e = np.exp(z)
    s = e / e.sum(axis=1, keepdims=True)
    pooled = np.einsum("it,itk->ik", s, X)              # X_i^T s_i, shape (n, d)
    f = pooled @ nu
    dl_df = -y / (1.0 + np.exp(y * f)) / X.shape[0]
    return dl_df @ pooled


def gd_trajectory(X, y, W0, p0, nu, lr, steps, trainable="Wp", final_nu=False, ngd=None, momentum=None):
    """Scores after each of ``steps`` GD updates, shape (steps + 1, n, T), and the final ``W``, ``p``
    (and ``nu`` if ``final_nu``). ``trainable`` is "p", "Wp", "p+nu" or "Wp+nu".

    ``ngd="joint"``: normalised GD, the trained gradients divided by their joint Euclidean norm;
    ``ngd="block"``: each trained gradient divided by its own norm. ``momentum=beta``: the heavy ball,
    a velocity per parameter, ``vel = beta vel + grad`` (``vel = grad`` at the first step), and the
    parameter moves by ``-lr vel``."""
    W = np.array(W0, dtype=np.float64)
    p = np.array(p0, dtype=np.float64)
    nu = np.array(nu, dtype=np.float64)
    vel = None
    out = [X @ (W.T @ p)]
    for _ in range(steps):
        _, grad_W, grad_p = loss_and_grads(X, y, W, p, nu)
        grad_nu = grad_head(X, y, W, p, nu)
        if ngd is not None:
            grads = {"p": grad_p, "W": grad_W if trainable.startswith("Wp") else 0 * grad_W,
                     "nu": grad_nu if trainable.endswith("+nu") else 0 * grad_nu}
            norms = {k: np.sqrt(np.sum(g ** 2)) for k, g in grads.items()}
            joint = np.sqrt(sum(v ** 2 for v in norms.values()))
            scaled = {k: g / (joint if ngd == "joint" else norms[k]) if norms[k] > 0 else g
                      for k, g in grads.items()}
            grad_p, grad_W, grad_nu = scaled["p"], scaled["W"], scaled["nu"]
        if momentum is not None:
            vel = [grad_W, grad_p, grad_nu] if vel is None else [momentum * v + g for v, g in
                                                                   zip(vel, (grad_W, grad_p, grad_nu))]
            grad_W, grad_p, grad_nu = vel
        if trainable.startswith("Wp"):
            W = W - lr * grad_W
        p = p - lr * grad_p
        if trainable.endswith("+nu"):
            nu = nu - lr * grad_nu
        out.append(X @ (W.T @ p))
    return (np.array(out), W, p, nu) if final_nu else (np.array(out), W, p)
