"""Slow NumPy twin of the population quadrature kernel in ``population.py``.

Same signature and contract as ``population.population_quadrature``, written as whole-array
NumPy over the draws (the softmax relative to each draw's top token, DESIGN.md §7; square
roots by eigendecomposition rather than the kernel's closed form) so that it can serve as the
kernel's oracle in ``tests/test_population.py``.
"""

import numpy as np
from scipy.special import ndtr

from .._numerics import logistic_loss


def _sums(mean_z, mean_v, cov, ys, g):
    """Per class and scrambling, the summed loss and conditional accuracy of the draws ``g`` (R, 2, T, m)."""
    lam, U = np.linalg.eigh(cov)                                        # (T, 2), (T, 2, 2)
    root = U @ (np.sqrt(np.maximum(lam, 0.0))[..., None] * np.swapaxes(U, 1, 2))
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    beta = np.divide(b, a, out=np.zeros_like(a), where=a > 0)
    cvar = np.maximum(c - beta * b, 0.0)
    nz = np.einsum("tk,rktm->rmt", root[:, 0], g)                       # (R, m, T)
    nv = np.einsum("tk,rktm->rmt", root[:, 1], g)
    loss, acc = [], []
    for cls, y in enumerate(ys):
        z = mean_z[cls] + nz
        v = mean_v[cls] + nv
        mean = mean_v[cls] + beta * nz                                  # E[v | z]
        top = np.argmax(z, axis=-1)[..., None]
        e = np.exp(z - np.take_along_axis(z, top, axis=-1))
        s = e / e.sum(axis=-1, keepdims=True)
        vtop = np.take_along_axis(v, top, axis=-1)[..., 0]
        mtop = np.take_along_axis(mean, top, axis=-1)[..., 0]
        f = vtop + np.sum(s * (v - vtop[..., None]), axis=-1)
        cond = y * (mtop + np.sum(s * (mean - mtop[..., None]), axis=-1))
        var = np.sum(s * s * cvar, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(var > 0, ndtr(cond / np.sqrt(var)), (cond > 0).astype(float))
        loss.append(logistic_loss(y * f).sum(axis=-1))
        acc.append(p.sum(axis=-1))
    return np.array(loss), np.array(acc)


def population_quadrature(mean_z, mean_v, cov, ys, draws, first, se_target, out):
    """Twin of ``population.population_quadrature``."""
    C = mean_z.shape[0]
    n_blocks, R, _, T, size = draws.shape
    M = n_blocks * size
    draws = np.moveaxis(draws, 0, 3).reshape(R, 2, T, M)     # (R, 2, T, M): draw m = j size + b
    loss = np.zeros((C, R))
    acc = np.zeros((C, R))
    done, stop = 0, min(max(first, 1), M)
    while True:
        dl, da = _sums(mean_z, mean_v, cov, ys, draws[..., done:stop])
        loss += dl
        acc += da
        done = stop
        for k, x in enumerate((loss / done, acc / done)):
            per = np.concatenate([x, x.mean(axis=0, keepdims=True)])        # (C + 1, R)
            out[k, :, 0] = per.mean(axis=1)
            out[k, :, 1] = per.std(axis=1, ddof=1) / np.sqrt(R)
        if done == M or (out[0, C, 1] <= se_target and out[1, C, 1] <= se_target):
            return done
        stop = min(2 * done, M)
