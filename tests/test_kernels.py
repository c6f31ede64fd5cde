"""Every numba kernel against its slow NumPy twin (same signature, same in-place contract).

The registry below lists each kernel with a builder of its arguments; a new
kernel without an entry here fails ``test_every_kernel_is_registered``.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnsim import _kernels, _reference


def _problem(seed, n, T, d):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n * T, d))
    y = rng.choice([-1.0, 1.0], size=n)
    W0 = rng.standard_normal((d, d)) / np.sqrt(d)
    p0 = rng.standard_normal(d)
    nu = rng.standard_normal(d) / 2
    relevant = np.zeros(T, dtype=bool)
    relevant[0] = True
    return rng, X, y, W0, p0, nu, relevant


def args_coefficients(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    z = rng.standard_normal(N) * 3
    return (z, X @ nu, y, T, relevant, np.zeros(N), np.zeros(N), np.zeros(n))


def args_loss_and_grads(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    return (X.reshape(n, T, d), y, W0, p0, nu)


def args_primal_p_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    K = X @ W0.T
    N = n * T
    return (p0.copy(), K @ p0, K, np.ascontiguousarray(K.T), X @ nu, y, T, relevant, 0.3, steps,
            np.zeros(n), np.zeros(N), np.zeros(N))


def args_primal_wp_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    u = W0.T @ p0
    N = n * T
    return (W0.copy(), p0.copy(), u, X @ u, X, np.ascontiguousarray(X.T), X @ nu, y, T, relevant, 0.3, steps,
            np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(d))


def args_dual_p_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    K = X @ W0.T
    N = n * T
    return (np.zeros(N), K @ p0, K @ K.T, X @ nu, y, T, relevant, 0.3, steps, np.zeros(n), np.zeros(N),
            np.zeros(N))


def args_dual_wp_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Q = np.concatenate([p0[:, None], W0 @ X.T], axis=1)
    G = Q.T @ Q
    b = np.zeros(N + 1)
    b[0] = 1.0
    B = 4                                        # small block: hypothesis' steps cross several flushes
    return (G[1:, 0].copy(), np.ascontiguousarray(G[1:, 1:]), np.array([G[0, 0]]), b, np.zeros((N, N + 1)),
            np.zeros((N, B)), np.zeros((B, N)), np.zeros(1, dtype=np.int64),
            X @ X.T, X @ nu, y, T, relevant, 0.3, steps, np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N),
            np.zeros(N), np.zeros(N + 1))


def args_dual_wp_flush(seed, n, T, d, steps):
    rng = np.random.default_rng(seed)
    N, B = n * T, 5
    nb = np.array([min(steps, B)], dtype=np.int64)
    return (rng.standard_normal(N + 1), rng.standard_normal((N, N + 1)), rng.standard_normal((N, B)),
            rng.standard_normal((B, N)), nb, 0.3, np.zeros(N + 1))


def args_add_matvec_t(seed, n, T, d, steps):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n * T, d)), rng.standard_normal(n * T), rng.standard_normal(d))


def args_dual_w_dist2(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Q = np.concatenate([p0[:, None], W0 @ X.T], axis=1)
    return (rng.standard_normal((N, N + 1)), Q.T @ Q, X @ X.T)


REGISTRY = {
    "add_matvec_t": args_add_matvec_t,
    "dual_w_dist2": args_dual_w_dist2,
    "coefficients": args_coefficients,
    "loss_and_grads": args_loss_and_grads,
    "primal_p_run": args_primal_p_run,
    "primal_wp_run": args_primal_wp_run,
    "dual_p_run": args_dual_p_run,
    "dual_wp_run": args_dual_wp_run,
    "dual_wp_flush": args_dual_wp_flush,
}


def _public_kernels():
    return sorted(name for name, obj in vars(_kernels).items()
                  if not name.startswith("_") and hasattr(obj, "py_func"))


def test_every_kernel_is_registered_and_has_a_twin():
    for name in _public_kernels():
        assert name in REGISTRY, f"kernel {name} has no entry in the twin registry"
        twin = getattr(_reference, name, None)
        assert twin is not None, f"kernel {name} has no NumPy twin in _reference"
        kernel_params = list(inspect.signature(getattr(_kernels, name).py_func).parameters)
        assert list(inspect.signature(twin).parameters) == kernel_params, f"{name}: signatures differ"


@pytest.mark.parametrize("name", sorted(REGISTRY))
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), T=st.integers(1, 6), d=st.integers(1, 12),
       steps=st.integers(0, 20))
def test_kernel_matches_numpy_twin(name, seed, n, T, d, steps):
    fast_args = REGISTRY[name](seed, n, T, d, steps)
    slow_args = REGISTRY[name](seed, n, T, d, steps)
    fast_out = getattr(_kernels, name)(*fast_args)
    slow_out = getattr(_reference, name)(*slow_args)
    where = f"reproduce with REGISTRY[{name!r}]({seed}, {n}, {T}, {d}, {steps})"
    for a, b in zip(np.atleast_1d(fast_out) if not isinstance(fast_out, tuple) else fast_out,
                    np.atleast_1d(slow_out) if not isinstance(slow_out, tuple) else slow_out):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"return value; {where}")
    for i, (a, b) in enumerate(zip(fast_args, slow_args)):
        if isinstance(a, np.ndarray):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=f"argument {i}; {where}")
