"""Every numba kernel against its slow NumPy twin (same signature, same in-place contract).

The registry below lists each kernel of ``_kernels.core``, ``_kernels.gd`` and ``_kernels.flow``
with a builder of its arguments; a public kernel of these modules without an entry here
fails ``test_every_kernel_is_registered_and_has_a_twin``.
"""

import inspect

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from attnsim._kernels import core, dop853, flow, flow_twins, gd, gd_twins
from tools import rounding

#: kernel module -> its twin module
MODULES = {core: gd_twins, gd: gd_twins, flow: flow_twins}


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


def _fw(n, T):
    return np.zeros(core.fw_size(n, T))


def args_coefficients(seed, n, T, d, steps):
    """Scores up to saturation; with the head's h (even ``steps``) or without (empty), full or not."""
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    z = rng.standard_normal(N) * (1 + steps)
    return (z, X @ nu, y, T, relevant, np.zeros(N), np.zeros(N), np.zeros(0 if steps % 2 else N), np.zeros(n),
            _fw(n, T), steps % 4 < 2)


def args_jvp(seed, n, T, d, steps):
    """At a point of ``core.coefficients(..., full=True)``; along (dz, dv), or dz alone, by ``steps``."""
    z, v, y, T, relevant, s, c, h, frak, fw, _ = args_coefficients(seed, n, T, d, steps)
    core.coefficients(z, v, y, T, relevant, s, c, h, frak, fw, True)
    rng = np.random.default_rng(seed + 1)
    N = n * T
    head = steps % 2 == 0
    return (rng.standard_normal(N), rng.standard_normal(N if head else 0), s, fw, T, np.zeros(N),
            np.zeros(N if head else 0))


def args_loss_and_grads(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    return (X.reshape(n, T, d), y, W0, p0, nu)


def args_loss_and_grads_head(seed, n, T, d, steps):
    return args_loss_and_grads(seed, n, T, d, steps)


def args_add_matvec_t(seed, n, T, d, steps):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n * T, d)), rng.standard_normal(n * T), rng.standard_normal(d))


def args_dual_w_dist2(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Q = np.concatenate([p0[:, None], W0 @ X.T], axis=1)
    return (rng.standard_normal((N, N + 1)), Q.T @ Q, X @ X.T)


def _opt(steps):
    """``(rule, param, head)`` from the step count, so that hypothesis covers every rule with and without
    the head (even ``steps``, as in every builder here): GD, NGD joint and block, momentum."""
    k = (steps // 2) % 4
    rule = (gd.GD, gd.NGD, gd.NGD, gd.MOMENTUM)[k]
    param = {gd.NGD: float(k == 2), gd.MOMENTUM: 0.7}.get(rule, 0.0)
    return rule, param, steps % 2 == 0


def _vel(rule, *shapes):
    return [np.zeros(sh) if rule == gd.MOMENTUM else np.zeros(np.zeros(sh).ndim * (0,)) for sh in shapes]


def args_primal_p_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    rule, param, head = _opt(steps)
    K = X @ W0.T
    N = n * T
    vc, vh = _vel(rule, N, N if head else 0)
    return (p0.copy(), K @ p0, nu.copy(), X @ nu, K, np.ascontiguousarray(K.T), X, np.ascontiguousarray(X.T), y, T,
            relevant, rule, 0.3, param, steps, np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N if head else 0),
            vc, vh, np.zeros(d), np.zeros(d), _fw(n, T))


def args_primal_wp_run(seed, n, T, d, steps):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    rule, param, head = _opt(steps)
    u = W0.T @ p0
    N = n * T
    vh, VW, vp = _vel(rule, N if head else 0, (d, d), d)
    return (W0.copy(), p0.copy(), u, X @ u, nu.copy(), X @ nu, X, np.ascontiguousarray(X.T), y, T, relevant, rule,
            0.3, param, steps, np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N if head else 0), vh, VW, vp,
            np.zeros(d), np.zeros(d), np.zeros(d), _fw(n, T))


def args_dual_p_run(seed, n, T, d, steps):
    """With an even seed W0 = I and one Gram object for keys and tokens (the kernels' shared pass)."""
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    rule, param, head = _opt(steps)
    N = n * T
    Gxx = X @ X.T
    K, Gkk = (X, Gxx) if seed % 2 == 0 else (X @ W0.T, X @ W0.T @ W0 @ X.T)
    vc, vh = _vel(rule, N, N if head else 0)
    return (np.zeros(N), K @ p0, np.zeros(N), X @ nu, Gkk, Gxx, y, T, relevant, rule, 0.3, param, steps,
            np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N if head else 0), vc, vh, np.zeros(N), np.zeros(N),
            _fw(n, T))


def _wp_state(seed, n, T, d):
    rng, X, y, W0, p0, nu, relevant = _problem(seed, n, T, d)
    N = n * T
    Q = np.concatenate([p0[:, None], W0 @ X.T], axis=1)
    G = Q.T @ Q
    b = np.zeros(N + 1)
    b[0] = 1.0
    return rng, X, y, nu, relevant, G, b


def args_dual_wp_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    rule, param, head = _opt(steps)
    rule = gd.GD if rule == gd.MOMENTUM else rule           # momentum runs in dual_wp_heavy_run
    N = n * T
    B = 4                                        # small block: hypothesis' steps cross several flushes
    return (G[1:, 0].copy(), np.ascontiguousarray(G[1:, 1:]), np.array([G[0, 0]]), b, np.zeros((N, N + 1)),
            np.zeros((N, B)), np.zeros((B, N)), np.zeros((B, 2)), np.zeros(1, dtype=np.int64), np.zeros(N), X @ nu,
            X @ X.T, y, T, relevant, rule, 0.3, param, steps, np.zeros(n), np.zeros(N), np.zeros(N),
            np.zeros(N if head else 0), np.zeros(0), np.zeros(N), np.zeros(N), np.zeros(N), np.zeros(N + 1),
            _fw(n, T))


def args_dual_wp_heavy_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    _, _, head = _opt(steps)
    N = n * T
    return (G[1:, 0].copy(), np.array([G[0, 0]]), b, np.zeros((N, N + 1)), np.zeros(N + 1), np.zeros((N, N + 1)),
            np.zeros(N), X @ nu, G, X @ X.T, y, T, relevant, gd.MOMENTUM, 0.3, 0.1 * (steps % 10), steps,
            np.zeros(n), np.zeros(N), np.zeros(N), np.zeros(N if head else 0), np.zeros(N if head else 0),
            np.zeros(N), np.zeros(N), np.zeros(N + 1), np.zeros(N + 1), np.zeros(N), _fw(n, T))


def args_dual_wp_flush(seed, n, T, d, steps):
    rng = np.random.default_rng(seed)
    N, B = n * T, 5
    nb = np.array([min(steps, B)], dtype=np.int64)
    return (rng.standard_normal(N + 1), rng.standard_normal((N, N + 1)), rng.standard_normal((N, B)),
            rng.standard_normal((B, N)), rng.uniform(0.1, 0.5, (B, 2)), nb, np.zeros(N + 1))


# ------------------------------------------------------------------ flow kernels


def args_spectral_p(seed, n, T, d, steps):
    """With the head for even ``steps``; with an even seed W0 = I and one Gram object for keys and tokens."""
    a, z, beta, v, Gkk, Gxx, y, T, relevant, *_ = args_dual_p_run(seed, n, T, d, steps)
    N = n * T
    return (z, v, Gkk, Gxx, y, T, relevant, np.zeros(N if steps % 2 else 2 * N), 2 + steps % 6)


def args_spectral_wp(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    MT = 0.1 * rng.standard_normal((N, N + 1))
    return (G[1:, 0].copy(), b, MT, G, X @ X.T, X @ nu, y, T, relevant, np.zeros(N + 1), np.zeros((N, N + 1)),
            np.zeros(0 if steps % 2 else N), 2 + steps % 6)


#: Tight tolerances: the twin integrates with another DOP853 implementation (SciPy's),
#: so the two agree to the tolerance, not to the last bit.
_FLOW_TOL = (1e-12, 1e-14, 1e-9)


def args_flow_p_run(seed, n, T, d, steps):
    """With the head for even ``steps``; with an even seed W0 = I (one Gram object)."""
    a, z, beta, v, Gkk, Gxx, y, T, relevant, *_ = args_dual_p_run(seed, n, T, d, steps)
    N = n * T
    head = steps % 2 == 0
    ys = np.concatenate([z, v, np.zeros(2 * N), np.zeros(n)]) if head else np.concatenate([z, np.zeros(N + n)])
    return (ys, Gkk, Gxx, v, y, T, relevant, 0.3, steps % 4 < 2, float(steps), np.array([1.0]), _FLOW_TOL, 10**6,
            dop853.tableau(), dop853.controller(), np.zeros(3, dtype=np.int64))


def args_flow_wp_run(seed, n, T, d, steps):
    rng, X, y, nu, relevant, G, b = _wp_state(seed, n, T, d)
    N = n * T
    head = [X @ nu, np.zeros(N)] if steps % 2 == 0 else []
    ys = np.concatenate([G[1:, 0], [G[0, 0]], b, *head, np.zeros(n)])
    return (ys, np.ascontiguousarray(G[1:, 1:]), np.zeros((N, N + 1)), X @ X.T, X @ nu, y, T, relevant, 0.3,
            steps % 4 < 2, float(steps), np.array([1.0]), _FLOW_TOL, 10**6, dop853.tableau(), dop853.controller(),
            np.zeros(3, dtype=np.int64))


#: (kernel module, name) -> builder of its arguments ``(seed, n, T, d, steps)``
REGISTRY = {
    (core, "coefficients"): args_coefficients,
    (core, "jvp"): args_jvp,
    (gd, "loss_and_grads"): args_loss_and_grads,
    (gd, "loss_and_grads_head"): args_loss_and_grads_head,
    (gd, "add_matvec_t"): args_add_matvec_t,
    (gd, "dual_w_dist2"): args_dual_w_dist2,
    (gd, "primal_p_run"): args_primal_p_run,
    (gd, "primal_wp_run"): args_primal_wp_run,
    (gd, "dual_p_run"): args_dual_p_run,
    (gd, "dual_wp_run"): args_dual_wp_run,
    (gd, "dual_wp_heavy_run"): args_dual_wp_heavy_run,
    (gd, "dual_wp_flush"): args_dual_wp_flush,
    (flow, "spectral_p"): args_spectral_p,
    (flow, "spectral_wp"): args_spectral_wp,
    (flow, "flow_p_run"): args_flow_p_run,
    (flow, "flow_wp_run"): args_flow_wp_run,
}
#: Integrator twins agree to their tolerance; the rest to rounding.
RTOL = {(flow, "flow_p_run"): 1e-8, (flow, "flow_wp_run"): 1e-8}
#: Arguments that are scratch (filled only where the rule needs them), or the integrator's own step proposal and
#: counters (method-specific). ``fw`` is compared from its documented part on (``_compared``).
NOT_COMPARED = {"w", "t", "gp", "gnu", "ek", "eh", "h_io", "counters"}
IDS = {key: f"{key[0].__name__.rsplit('.', 1)[-1]}.{key[1]}" for key in REGISTRY}


def _compared(param, a, n, T):
    """The part of an argument the contract defines: the core's scratch ``fw`` from ``v - f`` on."""
    return a[3 * n * T:] if param == "fw" else a


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


def _results(call, args, params, n, T):
    """``call(*args)`` on copies of ``args``: ``{"return i": ...}`` for its return values and
    ``{param: ...}`` for every compared array argument after the call."""
    copies = {id(a): a.copy() for a in args if isinstance(a, np.ndarray)}    # one array passed twice stays one
    args = [copies[id(a)] if isinstance(a, np.ndarray) else a for a in args]
    out = call(*args)
    out = () if out is None else out if isinstance(out, tuple) else np.atleast_1d(out)
    got = {f"return {i}": np.asarray(v) for i, v in enumerate(out)}
    got.update({param: _compared(param, a, n, T) for param, a in zip(params, args, strict=True)
                if isinstance(a, np.ndarray) and param not in NOT_COMPARED})
    return got


@pytest.mark.parametrize("key", list(REGISTRY), ids=lambda k: IDS[k])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), T=st.integers(1, 6), d=st.integers(1, 12),
       steps=st.integers(0, 20))
def test_kernel_matches_numpy_twin(key, seed, n, T, d, steps):
    """Every argument and return value of the kernel against its twin's, to ``rtol`` (1e-9) plus 100
    times what the twin itself moves when its inputs move by one ulp (``tools.rounding``): over 20
    steps some small random problems (n = 1, d = 1) amplify rounding a millionfold, and there no two
    orders of summation can agree to 1e-9. Cases whose twin moves by more than 1e-7 are not drawn."""
    module, name = key
    params = list(inspect.signature(getattr(module, name).py_func).parameters)
    args = REGISTRY[key](seed, n, T, d, steps)
    twin = getattr(MODULES[module], name)
    base, spreads = rounding.spread(lambda inputs: _results(twin, list(inputs.values()), params, n, T),
                                    dict(enumerate(args)))
    assume(rounding.testable(spreads, base))
    fast = _results(getattr(module, name), args, params, n, T)
    rtol = RTOL.get(key, 1e-9)
    where = f"reproduce with REGISTRY[({module.__name__}, {name!r})]({seed}, {n}, {T}, {d}, {steps})"
    assert fast.keys() == base.keys(), f"return values differ in kind; {where}"
    for label, b in base.items():
        rounding.assert_close(fast[label], b, rtol=rtol, atol=rounding.allowed(spreads[label], 1e-12),
                              err_msg=f"{label}; {where}")


SHARED_GRAM = [(gd, "dual_p_run"), (flow, "spectral_p"), (flow, "flow_p_run")]


@pytest.mark.parametrize("key", SHARED_GRAM, ids=lambda k: IDS[k])
@given(seed=st.integers(0, 2**31 - 1).map(lambda k: 2 * k), n=st.integers(1, 6), T=st.integers(1, 6),
       d=st.integers(1, 12), steps=st.integers(1, 10).map(lambda k: 2 * k))
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
