"""Whole-array NumPy numerics shared by the recorder, the analysis functions and the kernels' twins.

Only what is evaluated once per save time (or in tests) lives here; the per-step
arithmetic is in the numba kernels of ``_kernels``.
"""

import numpy as np


def logistic_loss(u):
    """ell(u) = log(1 + exp(-u)), elementwise, without overflow."""
    u = np.asarray(u, dtype=np.float64)
    return np.where(u >= 0, np.log1p(np.exp(-np.abs(u))), -u + np.log1p(np.exp(-np.abs(u))))


def neg_dloss(u):
    """-ell'(u) = 1 / (1 + exp(u)), elementwise, without overflow."""
    u = np.asarray(u, dtype=np.float64)
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, e / (1.0 + e), 1.0 / (1.0 + e))


def softmax_rows(z):
    """Softmax over the last axis with the maximum subtracted."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def norm(x) -> float:
    """Euclidean/Frobenius norm that stays finite for huge finite entries (|x| up to 1e308).

    NumPy's pairwise sum rather than ``np.linalg.norm``: the latter calls BLAS ``ddot``,
    whose threaded summation order (hence last bits) depends on the BLAS thread count.
    """
    m = float(np.max(np.abs(x), initial=0.0))
    if m == 0.0 or not np.isfinite(m):
        return m
    return m * float(np.sqrt(np.sum(np.square(x / m))))
