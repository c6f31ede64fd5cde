"""The att-SVM (DESIGN.md §9) against solvers that share none of its algebra.

Oracles: (a) enumeration of the active sets of the primal KKT system on tiny problems
(M <= 10), in d-dimensional coordinates, with the constraint matrix built row by row here;
(b) scipy's SLSQP on the primal; (c) closed forms (one constraint; a symmetric toy with
known multipliers). The identities ``||p^mm||^2 = sum(lambda)`` and ``p = K^T D^T lambda`` are
checked with D built explicitly as a matrix. Infeasible selections are constructed so that
the contradiction is known in advance.
"""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.optimize import minimize

import attnsim
from attnsim import AttSVM, ConfigError, att_svm, att_svm_gram, mm_cosine_dual, optimal_tokens, selected_tokens
from attnsim import _att_svm

seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------- oracles (independent of the module)


def constraint_rows(keys, selected):
    """A (M, d) with rows k_{i alpha_i} - k_it, in the order i, then t != alpha_i; and the (i, t) of each."""
    rows, where = [], []
    n, T, _ = keys.shape
    for i in range(n):
        for t in range(T):
            if t != selected[i]:
                rows.append(keys[i, selected[i]] - keys[i, t])
                where.append((i, t))
    return np.array(rows), where


def difference_matrix(selected, T):
    """D (M, N): row (i, t) is +1 at i*T + alpha_i and -1 at i*T + t."""
    n = len(selected)
    D = []
    for i in range(n):
        for t in range(T):
            if t != selected[i]:
                row = np.zeros(n * T)
                row[i * T + selected[i]] = 1.0
                row[i * T + t] = -1.0
                D.append(row)
    return np.array(D)


def enumerate_active_sets(A):
    """Minimum-norm p with A p >= 1 by trying every active set S (A_S p = 1, min-norm solution).

    Returns (p, min margin of the best candidate) or (None, best min margin seen) if no
    candidate is feasible (then the problem is infeasible: the optimum, when it exists, is
    the min-norm solution of its own active set).
    """
    M = A.shape[0]
    best, best_norm, best_slack = None, np.inf, -np.inf
    for size in range(1, M + 1):
        for S in itertools.combinations(range(M), size):
            AS = A[list(S)]
            p, *_ = np.linalg.lstsq(AS, np.ones(size), rcond=None)
            if np.max(np.abs(AS @ p - 1.0)) > 1e-9:
                continue  # A_S p = 1 inconsistent
            slack = float(np.min(A @ p)) - 1.0
            best_slack = max(best_slack, slack)
            if slack >= -1e-9 and np.linalg.norm(p) < best_norm:
                best, best_norm = p, np.linalg.norm(p)
    return best, best_slack


def slsqp(A, p_feasible):
    """min 1/2 ||p||^2 s.t. A p >= 1 by SLSQP on the primal (d-dimensional).

    Solved for q = p / c with c = ||p_feasible|| (a known feasible point, so ||q|| <= 1):
    SLSQP's stopping rule is absolute in the objective and stalls on unscaled problems
    whose max-margin norm is large.
    """
    c = np.linalg.norm(p_feasible)
    Ac = A * c
    res = minimize(lambda q: 0.5 * q @ q, p_feasible / c, jac=lambda q: q, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda q: Ac @ q - 1.0, "jac": lambda q: Ac}],
                   options={"ftol": 1e-15, "maxiter": 500})
    # status 8 ("positive directional derivative in linesearch") is SLSQP stalling at an
    # optimum it cannot improve within ftol; the caller compares the point, whatever it is.
    assert res.status in (0, 8), res.message
    return c * res.x


def gram_error_bound(A, p_ref, keys=None):
    """The forward-error scale of any Gram-form (normal-equations) solution.

    Solving through ``A_S A_S^T`` squares the condition number kappa of the active rows
    ``A_S`` of the reference solution, so agreement can only be expected to ~eps kappa^2; from
    ``Gkk`` (``keys`` given) a row ``a_m`` also loses eps ||k||^2 / ||a_m||^2 to cancellation.
    This is the bound of the method, not a floor: for the typical instance it is ~1e-14.

    It grows without limit (past 1 once kappa is ~1e7), so a draw whose bound exceeds
    ``BOUND_CEILING`` is discarded (``assume``): there the Gram method promises no digits
    and a comparison would pass whatever it computed.
    """
    on = np.abs(A @ p_ref - 1.0) <= 1e-8
    kappa = np.linalg.cond(A[on]) if on.sum() > 1 else 1.0
    amp = 1.0
    if keys is not None:
        amp += np.max(np.sum(keys**2, axis=-1)) / np.min(np.sum(A[on] ** 2, axis=1))
    bound = 100 * np.finfo(float).eps * kappa**2 * amp
    assume(bound <= BOUND_CEILING)
    return bound


#: The largest error bound a comparison accepts (kappa^2 amp <= ~4.5e7): six digits at least.
BOUND_CEILING = 1e-6


def direction_error(p, q):
    return float(np.linalg.norm(p / np.linalg.norm(p) - q / np.linalg.norm(q)))


def separable_instance(seed, n, T, d, unit=False, witness=False):
    """Keys and a selection made separable by construction: alpha_i = argmax_t k_it^T p_star.

    With ``witness``, also a feasible point (p_star scaled to margin 1).
    """
    rng = np.random.default_rng(seed)
    keys = rng.standard_normal((n, T, d))
    if unit:
        keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    p_star = rng.standard_normal(d)
    sel = np.argmax(keys @ p_star, axis=1)
    if not witness:
        return keys, sel
    A, _ = constraint_rows(keys, sel)
    return keys, sel, p_star / np.min(A @ p_star)


tiny = st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(1, 4)).filter(lambda s: s[0] * (s[1] - 1) <= 10)


# --------------------------------------------------------------------- against the oracles


@given(seed=seeds, size=tiny)
def test_matches_active_set_enumeration_on_separable_selections(seed, size):
    keys, sel = separable_instance(seed, *size)
    A, _ = constraint_rows(keys, sel)
    p_ref, _ = enumerate_active_sets(A)
    svm = att_svm(keys, sel)
    assert svm.status == "optimal" and svm.feasible and svm.reason == "", (svm.status, svm.reason)
    bound = gram_error_bound(A, p_ref)
    assert direction_error(svm.p, p_ref) <= max(1e-9, bound)
    assert svm.norm == pytest.approx(np.linalg.norm(p_ref), rel=max(1e-10, bound))
    assert np.min(A @ svm.p) >= 1 - max(1e-10, bound)


@given(seed=seeds, size=tiny)
def test_feasibility_of_arbitrary_selections_agrees_with_enumeration(seed, size):
    rng = np.random.default_rng(seed)
    n, T, d = size
    keys = rng.standard_normal((n, T, d))
    sel = rng.integers(0, T, n)
    A, _ = constraint_rows(keys, sel)
    p_ref, _ = enumerate_active_sets(A)
    svm = att_svm(keys, sel)
    if p_ref is None:
        assert (svm.status, svm.feasible) == ("infeasible", False), svm.reason
        assert svm.reason.startswith("no p separates the selection")
        assert np.isnan(svm.p).all() and svm.norm == np.inf
    else:
        assert svm.status == "optimal", svm.reason
        bound = gram_error_bound(A, p_ref)
        assert direction_error(svm.p, p_ref) <= max(1e-9, bound)
        assert svm.norm == pytest.approx(np.linalg.norm(p_ref), rel=max(1e-10, bound))


@given(seed=seeds, n=st.integers(1, 6), T=st.integers(2, 8), d=st.integers(2, 10))
def test_matches_slsqp_on_tarzanagh_sized_unit_norm_instances(seed, n, T, d):
    keys, sel, p_feasible = separable_instance(seed, n, T, d, unit=True, witness=True)
    A, _ = constraint_rows(keys, sel)
    p_ref = slsqp(A, p_feasible)
    svm = att_svm(keys, sel)
    assert svm.status == "optimal", svm.reason
    bound = gram_error_bound(A, p_ref)
    assert direction_error(svm.p, p_ref) <= max(1e-9, bound)
    assert svm.norm == pytest.approx(np.linalg.norm(p_ref), rel=max(1e-9, bound))
    assert np.min(A @ svm.p) >= 1 - max(1e-10, bound)


def test_single_constraint_closed_form():
    a = np.array([3.0, -4.0, 0.0])                 # k_alpha - k_t, ||a|| = 5
    keys = np.array([[a + 1.0, np.ones(3)]])
    svm = att_svm(keys, [0])
    np.testing.assert_allclose(svm.p, a / 25.0, rtol=0, atol=1e-15)
    assert svm.norm == pytest.approx(0.2, rel=1e-14)
    np.testing.assert_allclose(svm.multipliers, [[0.0, 1 / 25.0]], rtol=1e-13)
    np.testing.assert_allclose(svm.token_coef, [[1 / 25.0, -1 / 25.0]], rtol=1e-13)
    assert svm.margins[0, 1] == pytest.approx(1.0, rel=1e-14) and svm.margins[0, 0] == np.inf


def test_symmetric_toy_known_multipliers():
    # k_alpha = e1 against -e1, e2, -e2: constraints 2 p1 >= 1, p1 - p2 >= 1, p1 + p2 >= 1 give
    # p = (1, 0), with lambda = 1/2 on the two binding rows and 0 on the slack one (margin 2).
    keys = np.array([[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]])
    svm = att_svm(keys, [0])
    np.testing.assert_allclose(svm.p, [1.0, 0.0], atol=1e-14)
    np.testing.assert_allclose(svm.multipliers, [[0.0, 0.0, 0.5, 0.5]], atol=1e-14)
    np.testing.assert_array_equal(svm.support, [[False, False, True, True]])
    np.testing.assert_allclose(svm.margins, [[np.inf, 2.0, 1.0, 1.0]], rtol=1e-14)
    assert svm.norm == pytest.approx(1.0, rel=1e-14)


# --------------------------------------------------------------------- identities of the dual


@given(seed=seeds, n=st.integers(1, 5), T=st.integers(2, 6), d=st.integers(1, 12))
def test_dual_identities_norm_is_sum_of_multipliers_and_p_is_KT_DT_lambda(seed, n, T, d):
    keys, sel = separable_instance(seed, n, T, d)
    svm = att_svm(keys, sel)
    assert svm.status == "optimal", svm.reason
    D = difference_matrix(sel, T)
    K = keys.reshape(n * T, d)
    lam = svm.multipliers[np.arange(T)[None, :] != sel[:, None]]        # (M,) in D's row order
    assert np.all(svm.multipliers[np.arange(n), sel] == 0) and np.all(lam >= 0)
    np.testing.assert_allclose(svm.token_coef.ravel(), D.T @ lam, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(svm.p, K.T @ (D.T @ lam), rtol=1e-11, atol=1e-13 * np.abs(svm.p).max())
    assert svm.p @ svm.p == pytest.approx(lam.sum(), rel=1e-11)
    assert svm.norm ** 2 == pytest.approx(lam.sum(), rel=1e-13)
    A, _ = constraint_rows(keys, sel)
    margins = A @ svm.p
    np.testing.assert_allclose(svm.margins[np.arange(T)[None, :] != sel[:, None]], margins, rtol=1e-12)
    np.testing.assert_array_equal(svm.margins[np.arange(n), sel], np.inf)
    # complementary slackness and the support
    assert np.max(np.abs(lam * (margins - 1.0))) <= 1e-10 * lam.sum()
    on = svm.support[np.arange(T)[None, :] != sel[:, None]]
    assert np.all(np.abs(margins[on] - 1.0) <= 1e-9)
    assert np.all(lam[~on] <= 1e-10 * lam.max())
    assert all(np.isfinite(v) for v in svm.kkt.values())


@given(seed=seeds, n=st.integers(1, 4), T=st.integers(2, 5), d0=st.integers(1, 4), extra=st.integers(0, 30))
def test_same_multipliers_when_keys_are_embedded_in_higher_dimension(seed, n, T, d0, extra):
    keys, sel = separable_instance(seed, n, T, d0)
    d = d0 + extra
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 1).standard_normal((d, d0)))   # orthonormal columns
    small, big = att_svm(keys, sel), att_svm(keys @ Q.T, sel)
    assert small.status == big.status == "optimal"
    scale = small.multipliers.max()
    np.testing.assert_allclose(big.multipliers, small.multipliers, rtol=0, atol=1e-9 * scale)
    assert big.norm == pytest.approx(small.norm, rel=1e-10)
    np.testing.assert_allclose(big.p, Q @ small.p, rtol=0, atol=1e-9 * small.norm)


@given(seed=seeds, n=st.integers(1, 4), T=st.integers(2, 5), d=st.integers(1, 8))
def test_gram_version_gives_the_same_solution_without_p(seed, n, T, d):
    keys, sel = separable_instance(seed, n, T, d)
    K = keys.reshape(n * T, d)
    full, dual = att_svm(keys, sel), att_svm_gram(K @ K.T, T, sel)
    assert isinstance(dual, AttSVM) and dual.p is None and dual.status == "optimal"
    A, _ = constraint_rows(keys, sel)
    rel = max(1e-12, gram_error_bound(A, full.p, keys))
    top = full.multipliers.max()
    np.testing.assert_allclose(dual.multipliers, full.multipliers, rtol=0, atol=rel * top)
    np.testing.assert_allclose(dual.token_coef, full.token_coef, rtol=0, atol=rel * top)
    assert dual.norm == pytest.approx(full.norm, rel=rel)
    np.testing.assert_allclose(dual.margins, full.margins, rtol=max(1e-10, rel))
    # the support is a threshold decision: compare it on the entries far from the threshold
    clear = (full.margins - 1.0 > 1e-6) | (full.multipliers > 1e-6 * top)
    np.testing.assert_array_equal(dual.support[clear], full.support[clear])
    assert np.isnan(dual.kkt["stationarity"])


@given(seed=seeds, n=st.integers(1, 4), T=st.integers(2, 5), d=st.integers(1, 9))
def test_mm_cosine_dual_equals_cosine_of_materialised_vectors(seed, n, T, d):
    keys, sel = separable_instance(seed, n, T, d)
    rng = np.random.default_rng(seed + 7)
    K = keys.reshape(n * T, d)
    p0, a = rng.standard_normal(d), rng.standard_normal(n * T)
    G = K @ K.T
    svm = att_svm_gram(G, T, sel)
    p_mm = att_svm(keys, sel).p
    p = p0 + K.T @ a
    expected = p @ p_mm / (np.linalg.norm(p) * np.linalg.norm(p_mm))
    got = mm_cosine_dual(K @ p0, a, G, p0 @ p0, svm.token_coef, svm.norm)
    assert abs(got - expected) <= 1e-12
    # p(tau) -> t p^mm: cosine 1 along the max-margin direction
    got = mm_cosine_dual(np.zeros(n * T), 1e3 * svm.token_coef.ravel(), G, 0.0, svm.token_coef, svm.norm)
    assert abs(got - 1.0) <= 1e-12


# --------------------------------------------------------------------- infeasible selections (outcomes)


def test_duplicate_key_is_infeasible_and_named():
    keys = np.random.default_rng(3).standard_normal((2, 4, 3))
    keys[1, 2] = keys[1, 0]
    svm = att_svm(keys, [1, 0])
    assert (svm.status, svm.feasible) == ("infeasible", False)
    assert "sample 1 token 2 has the same key as its selected token 0" in svm.reason
    assert np.isnan(svm.p).all() and svm.norm == np.inf and np.isnan(svm.multipliers).all()
    assert not svm.support.any() and not svm.success
    assert svm.message.startswith("infeasible")


def test_two_samples_with_swapped_selection_contradict():
    # sample 0 needs (k1 - k2)^T p >= 1, sample 1 (same keys) needs (k2 - k1)^T p >= 1.
    k = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.5]])
    svm = att_svm(np.stack([k, k]), [0, 1])
    assert (svm.status, svm.feasible) == ("infeasible", False)
    assert "the constraints of samples [0, 1] contradict" in svm.reason
    assert svm.kkt["certificate"] <= 1e-12
    gram = att_svm_gram(np.vstack([k, k]) @ np.vstack([k, k]).T, 2, [0, 1])
    assert gram.status == "infeasible" and "samples [0, 1]" in gram.reason


@pytest.mark.parametrize("weights", [(0.5, 0.5, 0.0), (1 / 3, 1 / 3, 1 / 3), (0.2, 0.3, 0.5)])
def test_selected_key_inside_the_hull_of_the_others_is_infeasible(weights):
    # A single sample with distinct keys: k_alpha a convex combination of the others can never
    # score strictly above all of them.
    others = np.array([[2.0, 0.0], [-1.0, 1.5], [-1.0, -2.0]])
    k_alpha = np.asarray(weights) @ others
    keys = np.vstack([others[:1], [k_alpha], others[1:]])[None]
    svm = att_svm(keys, [1])
    assert (svm.status, svm.feasible) == ("infeasible", False), svm.reason
    assert "samples [0] contradict" in svm.reason


def test_a_vertex_of_the_hull_is_feasible_where_an_interior_point_is_not():
    keys = np.array([[[2.0, 0.0], [0.0, 0.0], [-1.0, 1.5], [-1.0, -2.0]]])
    assert att_svm(keys, [0]).status == "optimal"
    assert att_svm(keys, [1]).status == "infeasible"


# --------------------------------------------------------------------- distinct non-optimal outcomes


def test_kkt_residuals_above_the_bound_make_the_status_inaccurate():
    keys, sel = separable_instance(11, 3, 4, 3)
    svm = att_svm(keys, sel, kkt_tol=1e-300)   # no floating-point solution meets this bound
    assert svm.status == "inaccurate" and svm.feasible and not svm.success
    assert svm.reason.startswith("KKT check failed (kkt_tol = 1e-300)")
    assert np.isfinite(svm.p).all()


def test_nnls_iteration_limit_is_its_own_outcome(monkeypatch):
    def stuck(E, f, maxiter=None):
        raise RuntimeError("Maximum number of iterations reached.")

    monkeypatch.setattr(_att_svm, "nnls", stuck)
    keys, sel = separable_instance(5, 2, 3, 2)
    svm = att_svm(keys, sel)
    assert (svm.status, svm.feasible) == ("max_iterations", False)
    assert "Maximum number of iterations" in svm.reason and np.isnan(svm.p).all()


def test_statuses_have_distinct_messages():
    assert set(_att_svm.MESSAGES) == {"optimal", "infeasible", "inaccurate", "max_iterations"}
    assert len(set(_att_svm.MESSAGES.values())) == 4
    assert all(msg.startswith(key) for key, msg in _att_svm.MESSAGES.items())


# --------------------------------------------------------------------- selections


def test_selected_tokens_reads_the_argmax_attention_at_a_save_index():
    att = np.zeros((3, 2, 4))
    att[0, 0, 1] = att[0, 1, 3] = 1.0
    att[2, 0, 2] = att[2, 1, 0] = 1.0
    result = SimpleNamespace(attention=att)
    np.testing.assert_array_equal(selected_tokens(result), [2, 0])
    np.testing.assert_array_equal(selected_tokens(result, at=0), [1, 3])
    assert selected_tokens(result).dtype == np.int64
    with pytest.raises(ConfigError, match=r"at must be <= 2; got 3"):
        selected_tokens(result, at=3)
    with pytest.raises(ConfigError, match=r"at must be >= -3; got -4"):
        selected_tokens(result, at=-4)


def test_optimal_tokens_is_the_most_label_aligned_token():
    X = np.array([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], [[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]])
    nu = np.array([1.0, 1.0])                 # values 1, 2, -3
    np.testing.assert_array_equal(optimal_tokens(X, [1, -1], nu), [1, 2])
    with pytest.raises(ConfigError, match=r"y must hold only -1 and \+1; got 0.0"):
        optimal_tokens(X, [1, 0], nu)
    with pytest.raises(ConfigError, match=r"nu must have shape \(2,\)"):
        optimal_tokens(X, [1, 1], [1.0, 1.0, 1.0])


# --------------------------------------------------------------------- bad input raises


@pytest.mark.parametrize("keys, selected, match", [
    (np.zeros((2, 3)), [0, 0], r"keys must be 3-dimensional; got shape \(2, 3\)"),
    (np.zeros((2, 1, 3)), [0, 0], r"keys must have n >= 1, T >= 2, d >= 1 .*got shape \(2, 1, 3\)"),
    (np.full((1, 2, 2), np.nan), [0], r"keys must be finite; got nan at index \(0, 0, 0\)"),
    (np.eye(2)[None], [0, 1], r"selected must have shape \(1,\), one token index per sample; got shape \(2,\)"),
    (np.eye(2)[None], [2], r"selected must hold token indices in \[0, T\) = \[0, 2\); got 2 at index 0"),
    (np.eye(2)[None], [-1], r"selected must hold token indices in \[0, T\) = \[0, 2\); got -1 at index 0"),
    (np.eye(2)[None], [0.5], r"selected must hold integer token indices; got 0.5 at index 0"),
    (np.eye(2)[None], [True], r"selected must hold integer token indices; got dtype bool"),
    (np.eye(2)[None], ["a"], r"selected must hold integer token indices; got dtype <U1"),
])
def test_bad_input_raises_config_error_naming_argument_rule_and_value(keys, selected, match):
    with pytest.raises(ConfigError, match=match):
        att_svm(keys, selected)


def test_bad_gram_input_raises_config_error():
    G = np.eye(4)
    with pytest.raises(ConfigError, match=r"T must divide N = Gkk.shape\[0\] = 4 .*got T = 3"):
        att_svm_gram(G, 3, [0])
    with pytest.raises(ConfigError, match=r"Gkk must be symmetric .*max \|Gkk - Gkk\^T\| = 1.000e\+00"):
        att_svm_gram(G + np.triu(np.ones((4, 4)), 1), 2, [0, 0])
    with pytest.raises(ConfigError, match=r"Gkk must be positive semidefinite .*eigenvalue -"):
        att_svm_gram(-np.eye(4), 2, [0, 0])
    with pytest.raises(ConfigError, match=r"Gkk must be square, shape \(N, N\); got \(4, 2\)"):
        att_svm_gram(np.ones((4, 2)), 2, [0, 0])
    with pytest.raises(ConfigError, match=r"selected must have shape \(2,\)"):
        att_svm_gram(G, 2, [0])
    with pytest.raises(ConfigError, match=r"tol must be <= 1.0; got 2.0"):
        att_svm_gram(G, 2, [0, 0], tol=2.0)


def test_mm_cosine_dual_rejects_mismatched_shapes_and_an_infeasible_norm():
    G = np.eye(3)
    with pytest.raises(ConfigError, match=r"a must have shape \(3,\)"):
        mm_cosine_dual(np.zeros(3), np.zeros(2), G, 1.0, np.ones(3), 1.0)
    with pytest.raises(ConfigError, match=r"norm_mm must be finite; got inf"):
        mm_cosine_dual(np.zeros(3), np.zeros(3), G, 1.0, np.ones(3), np.inf)


def test_public_surface():
    for name in ("AttSVM", "att_svm", "att_svm_gram", "mm_cosine_dual", "optimal_tokens", "selected_tokens"):
        assert name in attnsim.__all__ and hasattr(attnsim, name)
