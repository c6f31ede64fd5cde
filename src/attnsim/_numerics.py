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


def norm(x) -> float:
    """Euclidean/Frobenius norm that stays finite for huge finite entries (|x| up to 1e308).

    NumPy's pairwise sum rather than ``np.linalg.norm``: the latter calls BLAS ``ddot``,
    whose threaded summation order (hence last bits) depends on the BLAS thread count.
    """
    m = float(np.max(np.abs(x), initial=0.0))
    if m == 0.0 or not np.isfinite(m):
        return m
    return m * float(np.sqrt(np.sum(np.square(x / m))))


def top_relative(z, v):
    """Softmax and outputs of each row relative to its top token (DESIGN.md §7).

    Parameters
    ----------
    z, v : ndarray, shape (n, T)
        Scores and token values.

    Returns
    -------
    s : ndarray, shape (n, T)
        Softmax (the top token's ``exp(0) = 1`` over the row sum).
    delta : ndarray, shape (n, T)
        ``v_t - v_top``, exactly 0 at the top token.
    phi : ndarray, shape (n,)
        ``f - v_top = sum_t s_t delta_t``: the output is ``f = v_top + phi`` and
        ``v_t - f = delta_t - phi``, both with their relative digits in saturation.
    """
    rows = np.arange(z.shape[0])
    top = np.argmax(z, axis=1)
    e = np.exp(z - z[rows, top][:, None])
    s = e / e.sum(axis=1, keepdims=True)
    delta = v - v[rows, top][:, None]
    return s, delta, np.sum(s * delta, axis=1)


def outputs(z, v):
    """Attention ``s`` (n, T) and outputs ``f`` (n,) from scores and values (n, T), top-relative."""
    s, delta, phi = top_relative(z, v)
    return s, v[np.arange(z.shape[0]), np.argmax(z, axis=1)] + phi
