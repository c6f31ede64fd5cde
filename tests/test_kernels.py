"""Every numba kernel against its slow NumPy twin (same signature, same in-place contract).

The registry below lists each kernel of ``_kernels.gd`` and ``_kernels.flow`` with a
builder of its arguments; a public kernel of either module without an entry here
fails ``test_every_kernel_is_registered_and_has_a_twin``.
"""

import inspect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnsim._kernels import dop853, flow, flow_twins, gd, gd_twins

#: kernel module -> its twin module
MODULES = {gd: gd_twins, flow: flow_twins}


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


def args__coefficients_work(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    z = rng.standard_normal(N) * 3
    return (z, X @ nu, y, T, relevant, np.zeros(N), np.zeros(N), np.zeros(n), np.zeros(3 * N + 7 * n))


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
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
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


# ------------------------------------------------------------ trainable head


def args__head_coefficients_work(seed, n, T, d, steps):
    z, v, y, T, relevant, s, c, frak, work = args__coefficients_work(seed, n, T, d, steps)
    return (z, v, y, T, relevant, s, c, np.zeros(n * T), frak, work)


def args_loss_and_grads_head(seed, n, T, d, steps):
    return args_loss_and_grads(seed, n, T, d, steps)


def args_primal_p_nu_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    K = X @ W0.T
    N = n * T
    return (p0.copy(), K @ p0, nu.copy(), X @ nu, K, np.ascontiguousarray(K.T), X, np.ascontiguousarray(X.T), y, T,
            relevant, 0.3, steps, np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N))


def args_primal_wp_nu_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    u = W0.T @ p0
    N = n * T
    return (W0.copy(), p0.copy(), u, X @ u, nu.copy(), X @ nu, X, np.ascontiguousarray(X.T), y, T, relevant, 0.3,
            steps, np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(d))


def args_dual_p_nu_run(seed, n, T, d, steps):
    """With an even seed W0 = I and one Gram object for keys and tokens (the kernels' shared pass)."""
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Gxx = X @ X.T
    K, Gkk = (X, Gxx) if seed % 2 == 0 else (X @ W0.T, X @ W0.T @ W0 @ X.T)
    return (np.zeros(N), K @ p0, np.zeros(N), X @ nu, Gkk, Gxx, y, T, relevant, 0.3, steps, np.zeros(n),
            np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(N))


def args_dual_wp_nu_run(seed, n, T, d, steps):
    (z, S, P, b, MT, CbT, Eb, nb, Gxx, v, y, T, relevant, lr, steps, frak, s, c, e, Sc, Hc) = \
        args_dual_wp_run(seed, n, T, d, steps)
    N = n * T
    return (z, S, P, b, MT, CbT, Eb, nb, np.zeros(N), v, Gxx, y, T, relevant, lr, steps, frak, s, c, np.zeros(N), e,
            np.zeros(N), Sc, Hc)


# ------------------------------------------------------------ normalised GD


def _head_block(steps):
    """Both flags from the step count, so hypothesis covers all four combinations."""
    return steps % 2 == 0, (steps // 2) % 2 == 0


def args_primal_p_ngd_run(seed, n, T, d, steps):
    (p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, steps, frak, s, c, h) = args_primal_p_nu_run(seed, n, T, d, steps)
    head, block = _head_block(steps)
    return (p, z, nu, v, K, KT, X, XT, y, T, relevant, lr, head, block, steps, frak, s, c, h, np.zeros(d), np.zeros(d))


def args_primal_wp_ngd_run(seed, n, T, d, steps):
    (W, p, u, z, nu, v, X, XT, y, T, relevant, lr, steps, frak, s, c, h, g) = \
        args_primal_wp_nu_run(seed, n, T, d, steps)
    head, block = _head_block(steps)
    return (W, p, u, z, nu, v, X, XT, y, T, relevant, lr, head, block, steps, frak, s, c, h, g, np.zeros(d),
            np.zeros(d))


def args_dual_p_ngd_run(seed, n, T, d, steps):
    (a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, steps, frak, s, c, h, eh) = args_dual_p_nu_run(seed, n, T, d, steps)
    head, block = _head_block(steps)
    return (a, z, beta, v, Gkk, Gxx, y, T, relevant, lr, head, block, steps, frak, s, c, h, np.zeros(n * T), eh)


def args_dual_wp_ngd_run(seed, n, T, d, steps):
    (z, S, P, b, MT, CbT, Eb, nb, beta, v, Gxx, y, T, relevant, lr, steps, frak, s, c, h, e, eh, Sc, Hc) = \
        args_dual_wp_nu_run(seed, n, T, d, steps)
    head, block = _head_block(steps)
    lrb = np.zeros((CbT.shape[1], 2))
    return (z, S, P, b, MT, CbT, Eb, lrb, nb, beta, v, Gxx, y, T, relevant, lr, head, block, steps, frak, s, c, h,
            e, eh, Sc, Hc)


def args_dual_wp_ngd_flush(seed, n, T, d, steps):
    b, MT, CbT, Eb, nb, lr, Hc = args_dual_wp_flush(seed, n, T, d, steps)
    lrb = np.random.default_rng(seed + 1).uniform(0.1, 0.5, (CbT.shape[1], 2))
    return (b, MT, CbT, Eb, lrb, nb, Hc)


# ------------------------------------------------------------------ flow kernels


def _flow_scratch(n, T):
    N = n * T
    return (np.zeros(N), np.zeros(N), np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(N),
            np.zeros(n))


def args_forward(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    z = rng.standard_normal(n * T) * (1 + steps)             # up to saturated scores
    s, vf, coef, kap, top, c, frak = _flow_scratch(n, T)
    return (z, X @ nu, y, T, relevant, s, vf, coef, kap, top, c, frak)


def args_jvp_c(seed, n, T, d, steps):
    z, v, y, T, relevant, s, vf, coef, kap, top, c, frak = args_forward(seed, n, T, d, steps)
    flow.forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    return (np.random.default_rng(seed + 1).standard_normal(n * T), s, vf, coef, kap, top, T, np.zeros(n * T))


def args_jvp_ch(seed, n, T, d, steps):
    dz, s, vf, coef, kap, top, T, dc = args_jvp_c(seed, n, T, d, steps)
    return (dz, np.random.default_rng(seed + 2).standard_normal(n * T), s, vf, coef, kap, top, T, dc,
            np.zeros(n * T))


def _p_nu_state(seed, n, T, d, steps):
    """With an even seed W0 = I and one Gram object for keys and tokens (the kernels' shared pass)."""
    a, z, Gkk, v, y, T, relevant, lr, steps, frak_sum, _, _ = args_dual_p_run(seed, n, T, d, steps)
    _, X, _, _, p0, *_ = _problem(seed, n, T, d)
    Gxx = X @ X.T
    if seed % 2 == 0:
        z, Gkk = X @ p0, Gxx
    return a, z, Gkk, v, Gxx, y, relevant, lr, steps, frak_sum


def args_gd_p_nu_run(seed, n, T, d, steps):
    a, z, Gkk, v, Gxx, y, relevant, lr, steps, frak_sum = _p_nu_state(seed, n, T, d, steps)
    N = n * T
    s, vf, coef, kap, top, c, frak = _flow_scratch(n, T)
    return (a, z, np.zeros(N), v, Gkk, Gxx, y, T, relevant, lr, steps, frak_sum, s, vf, coef, kap, top, c, frak,
            np.zeros(N), np.zeros(N), np.zeros(N))


def args_spectral_p_nu(seed, n, T, d, steps):
    a, z, Gkk, v, Gxx, y, relevant, *_ = _p_nu_state(seed, n, T, d, steps)
    return (z, v, Gkk, Gxx, y, T, relevant, np.zeros(2 * n * T), 2 + steps % 6)


def args_flow_p_nu_run(seed, n, T, d, steps):
    a, z, Gkk, v, Gxx, y, relevant, *_ = _p_nu_state(seed, n, T, d, steps)
    N = n * T
    ys = np.concatenate([z, v, np.zeros(2 * N), np.zeros(n)])
    return (ys, Gkk, Gxx, v, y, T, relevant, 0.3, steps % 2 == 0, float(steps), np.array([1.0]), _FLOW_TOL, 10**6,
            dop853.tableau(), dop853.controller(), np.zeros(3, dtype=np.int64))


def args_gd_p_run(seed, n, T, d, steps):
    a, z, Gkk, v, y, T, relevant, lr, steps, frak_sum, _, _ = args_dual_p_run(seed, n, T, d, steps)
    s, vf, coef, kap, top, c, frak = _flow_scratch(n, T)
    return (a, z, Gkk, v, y, T, relevant, lr, steps, frak_sum, s, vf, coef, kap, top, c, frak, np.zeros(n * T))


def _wp_state(seed, n, T, d):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Q = np.concatenate([p0[:, None], W0 @ X.T], axis=1)
    G = Q.T @ Q
    b = np.zeros(N + 1)
    b[0] = 1.0
    return rng, X, y, nu, relevant, G, b


def args_gd_wp_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    s, vf, coef, kap, top, c, frak = _flow_scratch(n, T)
    return (G[1:, 0].copy(), np.ascontiguousarray(G[1:, 1:]), np.array([G[0, 0]]), b, np.zeros((N, N + 1)),
            X @ X.T, X @ nu, y, T, relevant, 0.3, steps, np.zeros(n), s, vf, coef, kap, top, c, frak,
            np.zeros(N), np.zeros(N), np.zeros(N + 1))


def args_spectral_p(seed, n, T, d, steps):
    a, z, Gkk, v, y, T, relevant, *_ = args_dual_p_run(seed, n, T, d, steps)
    return (z, Gkk, v, y, T, relevant, np.zeros(n * T), 2 + steps % 6)


def args_spectral_wp(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    MT = 0.1 * rng.standard_normal((N, N + 1))
    return (G[1:, 0].copy(), b, MT, G, X @ X.T, X @ nu, y, T, relevant, np.zeros(N + 1), np.zeros((N, N + 1)),
            2 + steps % 6)


def args_gd_wp_nu_run(seed, n, T, d, steps):
    (z, S, P, b, MT, Gxx, v, y, T, relevant, lr, steps, frak_sum, s, vf, coef, kap, top, c, frak, e, Sc,
     Hc) = args_gd_wp_run(seed, n, T, d, steps)
    N = n * T
    return (z, S, P, b, MT, np.zeros(N), v, Gxx, y, T, relevant, lr, steps, frak_sum, s, vf, coef, kap, top, c,
            frak, e, Sc, Hc, np.zeros(N), np.zeros(N))


def args_spectral_wp_nu(seed, n, T, d, steps):
    return (*args_spectral_wp(seed, n, T, d, steps)[:-1], np.zeros(n * T), 2 + steps % 6)


#: Tight tolerances: the twin integrates with another DOP853 implementation (SciPy's),
#: so the two agree to the tolerance, not to the last bit.
_FLOW_TOL = (1e-12, 1e-14, 1e-9)


def args_flow_p_run(seed, n, T, d, steps):
    a, z, Gkk, v, y, T, relevant, *_ = args_dual_p_run(seed, n, T, d, steps)
    N = n * T
    ys = np.concatenate([z, np.zeros(N), np.zeros(n)])
    return (ys, Gkk, v, y, T, relevant, 0.3, steps % 2 == 0, float(steps), np.array([1.0]), _FLOW_TOL, 10**6,
            dop853.tableau(), dop853.controller(), np.zeros(3, dtype=np.int64))


def args_flow_wp_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    ys = np.concatenate([G[1:, 0], [G[0, 0]], b, np.zeros(n)])
    return (ys, np.ascontiguousarray(G[1:, 1:]), np.zeros((N, N + 1)), X @ X.T, X @ nu, y, T, relevant, 0.3,
            steps % 2 == 0, float(steps), np.array([1.0]), _FLOW_TOL, 10**6, dop853.tableau(), dop853.controller(),
            np.zeros(3, dtype=np.int64))


def args_flow_wp_nu_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    ys = np.concatenate([G[1:, 0], [G[0, 0]], b, X @ nu, np.zeros(N), np.zeros(n)])
    return (ys, np.ascontiguousarray(G[1:, 1:]), np.zeros((N, N + 1)), X @ X.T, X @ nu, y, T, relevant, 0.3,
            steps % 2 == 0, float(steps), np.array([1.0]), _FLOW_TOL, 10**6, dop853.tableau(), dop853.controller(),
            np.zeros(3, dtype=np.int64))


#: (kernel module, name) -> builder of its arguments ``(seed, n, T, d, steps)``
REGISTRY = {
    (gd, "add_matvec_t"): args_add_matvec_t,
    (gd, "dual_w_dist2"): args_dual_w_dist2,
    (gd, "_coefficients_work"): args__coefficients_work,
    (gd, "loss_and_grads"): args_loss_and_grads,
    (gd, "primal_p_run"): args_primal_p_run,
    (gd, "primal_wp_run"): args_primal_wp_run,
    (gd, "dual_p_run"): args_dual_p_run,
    (gd, "dual_wp_run"): args_dual_wp_run,
    (gd, "dual_wp_flush"): args_dual_wp_flush,
    (gd, "_head_coefficients_work"): args__head_coefficients_work,
    (gd, "loss_and_grads_head"): args_loss_and_grads_head,
    (gd, "primal_p_nu_run"): args_primal_p_nu_run,
    (gd, "primal_wp_nu_run"): args_primal_wp_nu_run,
    (gd, "dual_p_nu_run"): args_dual_p_nu_run,
    (gd, "dual_wp_nu_run"): args_dual_wp_nu_run,
    (gd, "primal_p_ngd_run"): args_primal_p_ngd_run,
    (gd, "primal_wp_ngd_run"): args_primal_wp_ngd_run,
    (gd, "dual_p_ngd_run"): args_dual_p_ngd_run,
    (gd, "dual_wp_ngd_run"): args_dual_wp_ngd_run,
    (gd, "dual_wp_ngd_flush"): args_dual_wp_ngd_flush,
    (flow, "forward"): args_forward,
    (flow, "jvp_c"): args_jvp_c,
    (flow, "gd_p_run"): args_gd_p_run,
    (flow, "gd_wp_run"): args_gd_wp_run,
    (flow, "spectral_p"): args_spectral_p,
    (flow, "spectral_wp"): args_spectral_wp,
    (flow, "flow_p_run"): args_flow_p_run,
    (flow, "flow_wp_run"): args_flow_wp_run,
    (flow, "jvp_ch"): args_jvp_ch,
    (flow, "gd_p_nu_run"): args_gd_p_nu_run,
    (flow, "spectral_p_nu"): args_spectral_p_nu,
    (flow, "flow_p_nu_run"): args_flow_p_nu_run,
    (flow, "gd_wp_nu_run"): args_gd_wp_nu_run,
    (flow, "spectral_wp_nu"): args_spectral_wp_nu,
    (flow, "flow_wp_nu_run"): args_flow_wp_nu_run,
}
#: Integrator twins agree to their tolerance; the rest to rounding.
RTOL = {(flow, "flow_p_run"): 1e-8, (flow, "flow_wp_run"): 1e-8, (flow, "flow_p_nu_run"): 1e-8,
        (flow, "flow_wp_nu_run"): 1e-8}
#: Arguments that are scratch, or the integrator's own step proposal and counters (method-specific).
NOT_COMPARED = {"work", "w", "wh", "h_io", "counters"}
IDS = {key: f"{key[0].__name__.rsplit('.', 1)[-1]}.{key[1]}" for key in REGISTRY}


def _public_kernels(module):
    return sorted(name for name, obj in vars(module).items()
                  if not name.startswith("_") and hasattr(obj, "py_func") and obj.__module__ == module.__name__)


@pytest.mark.parametrize("module", list(MODULES), ids=lambda m: m.__name__)
def test_every_kernel_is_registered_and_has_a_twin(module):
    names = _public_kernels(module)
    assert names, f"no kernels found in {module.__name__}"
    for name in names + [k for m, k in REGISTRY if m is module and k.startswith("_")]:
        assert (module, name) in REGISTRY, f"kernel {module.__name__}.{name} has no entry in the twin registry"
        twin = getattr(MODULES[module], name, None)
        assert twin is not None, f"kernel {module.__name__}.{name} has no NumPy twin in {MODULES[module].__name__}"
        kernel_params = list(inspect.signature(getattr(module, name).py_func).parameters)
        assert list(inspect.signature(twin).parameters) == kernel_params, f"{name}: signatures differ"


@pytest.mark.parametrize("key", list(REGISTRY), ids=lambda k: IDS[k])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), T=st.integers(1, 6), d=st.integers(1, 12),
       steps=st.integers(0, 20))
def test_kernel_matches_numpy_twin(key, seed, n, T, d, steps):
    module, name = key
    fast_args = REGISTRY[key](seed, n, T, d, steps)
    slow_args = REGISTRY[key](seed, n, T, d, steps)
    fast_out = getattr(module, name)(*fast_args)
    slow_out = getattr(MODULES[module], name)(*slow_args)
    rtol = RTOL.get(key, 1e-9)
    where = f"reproduce with REGISTRY[({module.__name__}, {name!r})]({seed}, {n}, {T}, {d}, {steps})"
    assert (fast_out is None) == (slow_out is None), f"return values differ in kind; {where}"
    fast_out, slow_out = (() if fast_out is None else fast_out), (() if slow_out is None else slow_out)
    for a, b in zip(np.atleast_1d(fast_out) if not isinstance(fast_out, tuple) else fast_out,
                    np.atleast_1d(slow_out) if not isinstance(slow_out, tuple) else slow_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=f"return value; {where}")
    params = list(inspect.signature(getattr(module, name).py_func).parameters)
    for param, a, b in zip(params, fast_args, slow_args, strict=True):
        if isinstance(a, np.ndarray) and param not in NOT_COMPARED:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=f"argument {param}; {where}")


SHARED_GRAM = [(gd, "dual_p_nu_run"), (gd, "dual_p_ngd_run"), (flow, "gd_p_nu_run"), (flow, "spectral_p_nu"),
               (flow, "flow_p_nu_run")]


@pytest.mark.parametrize("key", SHARED_GRAM, ids=lambda k: IDS[k])
@given(seed=st.integers(0, 2**31 - 1).map(lambda k: 2 * k), n=st.integers(1, 6), T=st.integers(1, 6),
       d=st.integers(1, 12), steps=st.integers(1, 20))
def test_one_gram_for_keys_and_tokens_gives_the_bits_of_two(key, seed, n, T, d, steps):
    """With W0 = I the p+nu kernels sweep the one Gram once for both vectors; that must give
    exactly the bits of the two-matrix path, which the same kernel takes for an equal copy."""
    module, name = key
    shared = REGISTRY[key](seed, n, T, d, steps)
    j = next(j for j, b in enumerate(shared) if isinstance(b, np.ndarray) and any(a is b for a in shared[:j]))
    copied = list(REGISTRY[key](seed, n, T, d, steps))
    copied[j] = copied[j].copy()
    out_shared, out_copied = getattr(module, name)(*shared), getattr(module, name)(*copied)
    np.testing.assert_array_equal(np.asarray(out_shared, dtype=object), np.asarray(out_copied, dtype=object))
    for param, a, b in zip(inspect.signature(getattr(module, name).py_func).parameters, shared, copied, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=f"argument {param}")


def test_dop853_tableau_is_consistent():
    """Row sums of A are the nodes; the 8th-order weights sum to 1, the error weights to 0."""
    A, B, E3, E5 = dop853.tableau()
    np.testing.assert_allclose(A.sum(axis=1), dop853.NODES, rtol=0, atol=1e-15)
    assert B.sum() == pytest.approx(1.0, abs=1e-15)
    assert E5.sum() == pytest.approx(0.0, abs=1e-15) and E3.sum() == pytest.approx(0.0, abs=1e-15)
