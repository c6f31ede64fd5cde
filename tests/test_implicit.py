"""The implicit space (DESIGN.md §11) draws the same law as explicit Gaussian sampling.

Oracles, all independent of ``_implicit``:

- explicit Gaussian sampling at small d (real d-vectors, a dense W0), compared by two-sample
  Kolmogorov-Smirnov tests on many scalar statistics of one set-up;
- exact Wishart moments derived by hand (``expected_moments``), checked within ``N_SE``
  standard errors;
- adjoint identities (``<W0 a, b> = <a, W0^T b>``) that any correct conditioning satisfies
  exactly, draw by draw;
- at d = 1e9, the concentration of the Grams at their expected scale, and memory that does not
  grow with d.

Each law test is shown to fail on planted errors (chi with d - k +- 1 degrees of freedom, a
missing conditioning term, a fresh part not projected off the span met), by monkeypatching the
planted error into ``_implicit`` and asserting that the same statistic rejects.

The helpers (``ExplicitSpace``, ``setup_statistics``, ``draw_statistics``, ``ks_pvalues``) take a
scenario function, so end-to-end law tests (population inputs after GD steps) can reuse them:
write a scenario ``f(space, rng, law) -> dict[str, float]`` against the common API of
``VirtualSpace`` and ``ExplicitSpace`` and pass it as ``scenario=``.
"""

import functools
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np
import pytest
from scipy import stats

from attnsim import ConfigError
from attnsim import _implicit
from attnsim._implicit import SPAN_RTOL, LazyGaussianMatrix, VirtualSpace

#: Family-wise level of the two-sample tests of one set-up (Bonferroni over its statistics).
FAMILY_ALPHA = 1e-3
#: Moments must lie within this many standard errors of their exact values.
N_SE = 4.0
#: Draws per sample of every two-sample test.
N_DRAWS = 2000


# --------------------------------------------------------------------------- the explicit twin

class ExplicitMatrix:
    """A dense d x d matrix behind the API of ``LazyGaussianMatrix``."""

    def __init__(self, W):
        self.W = W

    def matvec(self, u):
        return self.W @ u

    def rmatvec(self, v):
        return self.W.T @ v

    def matmat(self, X):
        return self.W @ X

    def rmatmat(self, X):
        return self.W.T @ X

    def freeze(self):
        pass


class ExplicitSpace:
    """The explicit twin of ``VirtualSpace``: vectors are arrays of shape (d,)."""

    def __init__(self, d):
        self.d = d
        self.k = 0

    def new_direction(self):
        e = np.zeros(self.d)
        e[self.k] = 1.0
        self.k += 1
        return e

    def gaussian(self, sigma, n, rng, *, off=0):
        x = sigma * rng.standard_normal((n, self.d))
        x[:, :off] = 0.0   # the projector off e_0 ... e_{off-1}
        return x

    def gaussian_matrix(self, s, rng):
        return ExplicitMatrix(s * rng.standard_normal((self.d, self.d)))


# --------------------------------------------------------------------------- one set-up, its statistics

@dataclass(frozen=True)
class Law:
    """Sizes and scales of a law test. ``off`` = 0 (isotropic noise) or 2 (noise off mu_+-)."""

    d: int = 48
    N: int = 12
    sigma: float = 1.3       # token noise
    s: float = 0.25          # W0 entries
    sigma_p: float = 0.7     # p0 entries
    mu_norm: float = 2.5
    off: int = 0

    @property
    def k_max(self):
        # mu_+-, N tokens, p0; W0 on N tokens and mu_+-; W0^T on p0, N keys and mu_+.
        return 3 * self.N + 8

    @property
    def d_noise(self):
        """Rank of the noise covariance."""
        return self.d - self.off


def dual_setup(space, rng, law):
    """Draw the vectors of one dual set-up in ``space`` (explicit or virtual), in the engine's order.

    Signals, tokens, p0, keys ``W0 x_j``, then ``W0^T`` of p0 and of the keys, then ``W0 mu_+-``
    and ``W0^T mu_+`` (new inputs met after the other side has been conditioned); ``W0`` is
    frozen at the end. Returns a dict of the vectors (rows of 2-d arrays) and ``W0``.
    """
    v = {"mu_p": law.mu_norm * space.new_direction(), "mu_m": law.mu_norm * space.new_direction()}
    v["X"] = space.gaussian(law.sigma, law.N, rng, off=law.off)
    v["p0"] = space.gaussian(law.sigma_p, 1, rng)[0]
    v["W0"] = W0 = space.gaussian_matrix(law.s, rng)
    v["K"] = W0.matmat(v["X"].T).T               # keys k_j = W0 x_j
    v["w0t_p0"] = W0.rmatvec(v["p0"])
    v["WK"] = W0.rmatmat(v["K"].T).T             # W0^T W0 x_j
    v["w0_mu"] = W0.matvec(v["mu_p"])
    v["w0_mum"] = W0.matvec(v["mu_m"])
    v["w0t_mu"] = W0.rmatvec(v["mu_p"])
    W0.freeze()
    return v


def setup_statistics(space, rng, law):
    """Named scalar statistics of one ``dual_setup``.

    They cover the Gram of the tokens, of the keys, ``Gqq = Q^T Q`` with ``Q = [p0, W0 X^T]``, and
    the products with ``W0^T W0 x_j``, ``W0^T p0``, ``W0 mu_+-`` and ``mu_+`` that the dual set-up
    reads.
    """
    v = dual_setup(space, rng, law)
    X, K, WK, p0, mu_p = v["X"], v["K"], v["WK"], v["p0"], v["mu_p"]
    w0t_p0, w0_mu, w0t_mu = v["w0t_p0"], v["w0_mu"], v["w0t_mu"]
    last = law.N - 1
    return {
        "x0_sq": X[0] @ X[0], "xlast_sq": X[last] @ X[last], "x_trace": np.sum(X * X),
        "x01": X[0] @ X[1], "xlast_pair": X[last - 1] @ X[last], "x_mu": X[last] @ mu_p,
        "k0_sq": K[0] @ K[0], "klast_sq": K[last] @ K[last], "k01": K[0] @ K[1], "k_trace": np.sum(K * K),
        "p0_sq": p0 @ p0, "p0_k0": p0 @ K[0], "p0_klast": p0 @ K[last],
        "wtwx_x": WK[0] @ X[1], "wtwx_mu": WK[0] @ mu_p, "wtwx_sq": WK[0] @ WK[0], "wtwx_01": WK[0] @ WK[1],
        "w0tp0_sq": w0t_p0 @ w0t_p0, "w0tp0_x0": w0t_p0 @ X[0], "w0tp0_mu": w0t_p0 @ mu_p,
        "w0mu_sq": w0_mu @ w0_mu, "w0mu_p0": w0_mu @ p0, "w0mu_k0": w0_mu @ K[0], "w0mu_w0mum": w0_mu @ v["w0_mum"],
        "w0tmu_x0": w0t_mu @ X[0], "w0tmu_sq": w0t_mu @ w0t_mu,
    }


def make_space(kind, law):
    return ExplicitSpace(law.d) if kind == "explicit" else VirtualSpace(law.d, law.k_max)


def draw_statistics(kind, seed, law, n_draws=N_DRAWS, scenario=setup_statistics, space=make_space):
    """``n_draws`` independent runs of ``scenario`` in a fresh ``space(kind, law)`` each.

    ``kind`` is "explicit" or "implicit"; the two streams of one ``seed`` are independent
    (distinct seed sequences). Returns a dict: statistic name -> ndarray, shape (n_draws,).
    """
    rng = np.random.default_rng([seed, 0 if kind == "explicit" else 1])
    rows = [scenario(space(kind, law), rng, law) for _ in range(n_draws)]
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def ks_pvalues(a, b):
    """Two-sample KS p-value of every statistic the two dicts share."""
    return {name: stats.ks_2samp(a[name], b[name], method="asymp").pvalue for name in a if name in b}


def family_threshold(pvalues):
    return FAMILY_ALPHA / len(pvalues)


@functools.lru_cache(maxsize=None)
def honest(kind, off, seed=1):
    """Cached honest draws of the default ``Law`` (shared by the law, moment and plant tests)."""
    return draw_statistics(kind, seed, Law(off=off))


# --------------------------------------------------------------------------- exact moments

def expected_moments(law):
    """Exact moments of ``setup_statistics``, derived by hand.

    Notation: d' = rank of the noise covariance (d or d - 2), mu = ||mu_+||, rows w_r of W0 are
    i.i.d. N(0, s^2 I_d), and for vectors a, b fixed relative to W0 the pairs (w_r^T a, w_r^T b)
    are i.i.d. over the d rows with covariance s^2 [[|a|^2, <a,b>], [<a,b>, |b|^2]], so by
    Isserlis E<W0 a, W0 b>^2 = s^4 (d |a|^2 |b|^2 + (d^2 + d) <a,b>^2).

    - ||x||^2 = sigma^2 chi^2_{d'}: mean sigma^2 d', variance 2 sigma^4 d'; the trace over N
      independent tokens is sigma^2 chi^2_{N d'}.
    - <x_i, x_j> given x_i is N(0, sigma^2 |x_i|^2): E<x_i,x_j>^2 = sigma^4 d'.
    - ||W0 x||^2 = s^2 |x|^2 chi^2_d: mean s^2 sigma^2 d d'.
    - E<k_i,k_j>^2 = s^4 (d E|x_i|^2|x_j|^2 + (d^2+d) E<x_i,x_j>^2) = s^4 sigma^4 (d d'^2 + (d^2+d) d').
    - <p0, k> given k is N(0, sigma_p^2 |k|^2): E = sigma_p^2 s^2 sigma^2 d d'; |p0|^2 mean sigma_p^2 d.
    - E<W0^T W0 x, mu>^2 = E<W0 x, W0 mu>^2 = s^4 sigma^2 mu^2 (d d' + (d^2+d) [off = 0]),
      as E|x|^2 = sigma^2 d' and E<x, mu>^2 = sigma^2 mu^2 if the noise keeps e_0, else 0.
    - E||W0^T W0 x||^2 = E x^T (sum_r w_r w_r^T)^2 x with E[(w w^T)^2] = s^4 (d+2) I and
      E[w w^T] = s^2 I: s^4 (d (d+2) + d (d-1)) E|x|^2 = s^4 d (2d+1) sigma^2 d'.
    - ||W0 mu||^2 = s^2 mu^2 chi^2_d: mean s^2 mu^2 d, variance 2 s^4 mu^4 d;
      E<W0 mu, p0>^2 = sigma_p^2 s^2 mu^2 d.

    Returns a list of (label, function of the statistics dict -> per-draw values, exact mean).
    """
    d, dn, N = law.d, law.d_noise, law.N
    sg, s, sp, mu = law.sigma, law.s, law.sigma_p, law.mu_norm
    on_e0 = 1.0 if law.off == 0 else 0.0
    return [
        ("E x_trace", lambda t: t["x_trace"], sg**2 * N * dn),
        ("Var x_trace", lambda t: (t["x_trace"] - sg**2 * N * dn) ** 2, 2 * sg**4 * N * dn),
        ("E xlast_sq", lambda t: t["xlast_sq"], sg**2 * dn),
        ("Var xlast_sq", lambda t: (t["xlast_sq"] - sg**2 * dn) ** 2, 2 * sg**4 * dn),
        ("E x01^2", lambda t: t["x01"] ** 2, sg**4 * dn),
        ("E xlast_pair^2", lambda t: t["xlast_pair"] ** 2, sg**4 * dn),
        ("E k_trace", lambda t: t["k_trace"], N * s**2 * sg**2 * d * dn),
        ("E klast_sq", lambda t: t["klast_sq"], s**2 * sg**2 * d * dn),
        ("E k01^2", lambda t: t["k01"] ** 2, s**4 * sg**4 * (d * dn**2 + (d**2 + d) * dn)),
        ("E p0_sq", lambda t: t["p0_sq"], sp**2 * d),
        ("E p0_klast^2", lambda t: t["p0_klast"] ** 2, sp**2 * s**2 * sg**2 * d * dn),
        ("E wtwx_mu^2", lambda t: t["wtwx_mu"] ** 2, s**4 * sg**2 * mu**2 * (d * dn + (d**2 + d) * on_e0)),
        ("E wtwx_sq", lambda t: t["wtwx_sq"], s**4 * d * (2 * d + 1) * sg**2 * dn),
        ("E w0mu_sq", lambda t: t["w0mu_sq"], s**2 * mu**2 * d),
        ("Var w0mu_sq", lambda t: (t["w0mu_sq"] - s**2 * mu**2 * d) ** 2, 2 * s**4 * mu**4 * d),
        ("E w0mu_p0^2", lambda t: t["w0mu_p0"] ** 2, sp**2 * s**2 * mu**2 * d),
        ("E w0tmu_sq", lambda t: t["w0tmu_sq"], s**2 * mu**2 * d),
    ]


def moment_zscores(draws, law):
    """(sample mean - exact mean) / standard error, per moment of ``expected_moments``."""
    out = {}
    for label, f, exact in expected_moments(law):
        v = f(draws)
        out[label] = (v.mean() - exact) / (v.std(ddof=1) / np.sqrt(v.size))
    return out


# --------------------------------------------------------------------------- the honest law

@pytest.mark.parametrize("off", [0, 2])
def test_implicit_setup_matches_explicit_sampling_in_law(off):
    p = ks_pvalues(honest("explicit", off), honest("implicit", off))
    worst = min(p, key=p.get)
    assert p[worst] > family_threshold(p), f"off={off}: {worst} rejects (KS p = {p[worst]:.3g}); all: {p}"


@pytest.mark.parametrize("off", [0, 2])
@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_setup_moments_are_exact_wishart_moments(kind, off):
    """The oracle holds for the explicit twin too (a check of the derivation itself)."""
    z = moment_zscores(honest(kind, off), Law(off=off))
    bad = {k: round(v, 2) for k, v in z.items() if not abs(v) <= N_SE}
    assert not bad, f"{kind}, off={off}: moments off by more than {N_SE} standard errors: {bad}"


def test_zero_noise_touches_nothing_and_draws_nothing():
    space = VirtualSpace(d=100, k_max=10)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    x = space.gaussian(0.0, 4, rng, off=0)
    W0 = space.gaussian_matrix(0.0, rng)
    assert np.array_equal(x, np.zeros((4, 10))) and space.k == 0
    assert np.array_equal(W0.matvec(space.new_direction()), np.zeros(10))
    assert space.k == 1 and rng.bit_generator.state == state


def test_law_holds_when_every_direction_is_touched():
    """d = k_max = 5 and 8 tokens: once k = d the complement is {0}; later vectors live on the touched coordinates."""
    law = Law(d=5, N=8)

    def tokens_and_keys(space, rng, law):
        X = space.gaussian(law.sigma, law.N, rng)
        K = space.gaussian_matrix(law.s, rng).matmat(X.T).T
        G, Gk = X @ X.T, K @ K.T
        return {"g00": G[0, 0], "g77": G[7, 7], "g67": G[6, 7], "gk77": Gk[7, 7], "gk06": Gk[0, 6],
                "logdet_last5": np.linalg.slogdet(G[3:, 3:])[1]}

    def full_space(kind, law):
        return ExplicitSpace(law.d) if kind == "explicit" else VirtualSpace(law.d, law.d)

    draws = {kind: draw_statistics(kind, 7, law, scenario=tokens_and_keys, space=full_space)
             for kind in ("explicit", "implicit")}
    p = ks_pvalues(draws["explicit"], draws["implicit"])
    assert min(p.values()) > family_threshold(p), p


# --------------------------------------------------------------------------- planted errors

def plant_chi(monkeypatch, shift):
    monkeypatch.setattr(VirtualSpace, "_chi", lambda self, rng: np.sqrt(rng.chisquare(self.d - self.k + shift)))


def plant_no_conditional_mean(monkeypatch, which):
    """Drop ``V B^T e`` from ``W0 e`` (which="matvec", with ``matmat``) or ``U A^T f`` from ``W0^T f``
    ("rmatvec", with ``rmatmat``)."""
    original = _implicit._conditional_mean
    inside = {"flag": False}

    def flagged(method):
        def call(self, x):
            inside["flag"] = True
            try:
                return method(self, x)
            finally:
                inside["flag"] = False
        return call

    for name in (which, which.replace("vec", "mat")):
        monkeypatch.setattr(LazyGaussianMatrix, name, flagged(getattr(LazyGaussianMatrix, name)))
    monkeypatch.setattr(_implicit, "_conditional_mean",
                        lambda basis, images, E: 0.0 * E if inside["flag"] else original(basis, images, E))


def plant_unprojected_fresh_part(monkeypatch):
    """The fresh part g of a new image drawn N(0, s^2 I) instead of N(0, s^2 (I - V V^T))."""

    def images_of_new(self, E, other):
        G = np.zeros(E.shape)
        for i in range(E.shape[1]):
            G[:self.space.k, i] = self.s * self.rng.standard_normal(self.space.k)
            self.space._grow(self.s, self.rng, G[:, i])
        return _implicit._conditional_mean(other.basis[:, :other.m], other.images[:, :other.m], E) + G

    monkeypatch.setattr(LazyGaussianMatrix, "_images_of_new", images_of_new)


PLANTS = {
    "chi d-k+1": lambda mp: plant_chi(mp, +1),
    "chi d-k-1": lambda mp: plant_chi(mp, -1),
    "no V B^T e in matvec": lambda mp: plant_no_conditional_mean(mp, "matvec"),
    "no U A^T f in rmatvec": lambda mp: plant_no_conditional_mean(mp, "rmatvec"),
    "fresh part not projected off V": plant_unprojected_fresh_part,
}


#: Each plant in one noise mode by default (alternating), in the other under ``-m slow``.
PLANT_CASES = [pytest.param(plant, off, marks=[pytest.mark.slow] if (i + j) % 2 else [])
               for i, plant in enumerate(PLANTS) for j, off in enumerate((0, 2))]


@pytest.mark.parametrize("plant, off", PLANT_CASES)
def test_planted_error_is_rejected_by_the_law_tests(plant, off, monkeypatch):
    """Each planted error fails the two-sample test and the exact moments on the same draws."""
    PLANTS[plant](monkeypatch)
    planted = draw_statistics("implicit", 1, Law(off=off))
    p = ks_pvalues(honest("explicit", off), planted)
    worst = min(p, key=p.get)
    assert p[worst] < family_threshold(p), f"{plant}, off={off}: not rejected, smallest KS p = {p[worst]:.3g} ({worst})"
    z = moment_zscores(planted, Law(off=off))
    assert max(abs(v) for v in z.values()) > N_SE, f"{plant}, off={off}: moments still pass: {z}"


# --------------------------------------------------------------------------- exact identities

def test_conditioning_is_consistent_and_adjoint():
    """V^T A = B^T U, U and V orthonormal, and <W0 a, b> = <a, W0^T b> for every pair met."""
    law = Law(off=2)
    v = dual_setup(VirtualSpace(law.d, law.k_max), np.random.default_rng(11), law)
    W0, X, K, WK, p0, mu = v["W0"], v["X"], v["K"], v["WK"], v["p0"], v["mu_p"]
    w0t_p0, w0_mu, w0t_mu = v["w0t_p0"], v["w0_mu"], v["w0t_mu"]
    U, A, V, B = W0.met()
    assert U.shape[1] == law.N + 2 and V.shape[1] == law.N + 2   # inputs: tokens, mu_+-; p0, keys, mu_+
    scale = np.max(np.abs(A)) * np.max(np.abs(B))
    assert np.max(np.abs(V.T @ A - B.T @ U)) <= 1e-13 * scale
    assert np.max(np.abs(U.T @ U - np.eye(U.shape[1]))) <= 1e-14
    assert np.max(np.abs(V.T @ V - np.eye(V.shape[1]))) <= 1e-14
    pairs = [(K @ K.T, WK @ X.T), (K @ p0, X @ w0t_p0), (w0_mu @ p0, mu @ w0t_p0), (K @ mu, X @ w0t_mu),
             (K @ w0_mu, WK @ mu)]
    for left, right in pairs:
        assert np.allclose(left, right, rtol=1e-12, atol=1e-12 * np.max(np.abs(left))), (left, right)


def test_inputs_in_the_span_met_get_the_conditional_value_without_randomness():
    law = Law()
    space = VirtualSpace(law.d, law.k_max)
    rng = np.random.default_rng(5)
    X = space.gaussian(law.sigma, 3, rng)
    W0 = space.gaussian_matrix(law.s, rng)
    K = W0.matmat(X.T).T
    k_before = space.k
    W0.freeze()
    state = rng.bit_generator.state
    coef = np.array([0.3, -1.7, 2.25])
    # a residual of 1e-12 relative (below SPAN_RTOL) still counts as in the span
    wobble = 1e-2 * SPAN_RTOL * np.linalg.norm(coef @ X) * space.new_direction()
    assert np.allclose(W0.matvec(coef @ X + wobble), coef @ K, rtol=1e-12, atol=1e-12 * np.max(np.abs(K)))
    assert space.k == k_before + 1 and rng.bit_generator.state == state   # only new_direction touched
    assert np.array_equal(W0.matvec(np.zeros(law.k_max)), np.zeros(law.k_max))
    with pytest.raises(RuntimeError, match=r"W0 is frozen and met an input outside the span of the 3 inputs"):
        W0.matvec(X[0] + 1e-6 * space.new_direction())
    with pytest.raises(RuntimeError, match=r"W0\^T is frozen and met an input outside the span of the 0 inputs"):
        W0.rmatvec(K[0])


def test_a_nearly_dependent_input_keeps_the_basis_orthonormal():
    """Relative residual 1e-8 (new, but barely): the second Gram-Schmidt pass keeps U orthonormal.

    The inputs met are generic, ill-conditioned combinations of the tokens. One pass would
    leave a component of about eps * ||u|| * cond along U in a residual of 1e-8 * ||u||: a loss
    of orthogonality near 1e-6 (measured 6.7e-6 with one pass, 2.2e-16 with two).
    """
    space = VirtualSpace(d=10**9, k_max=40)
    rng = np.random.default_rng(8)
    X = space.gaussian(1.0, 8, rng)
    Y = np.linalg.qr(rng.standard_normal((8, 8)))[0] * np.logspace(0, 3, 8) @ X
    W0 = space.gaussian_matrix(1 / np.sqrt(space.d), rng)
    W0.matmat(Y.T)
    u = rng.standard_normal(8) @ Y
    u += 1e-8 * np.linalg.norm(u) * space.new_direction()
    W0.matvec(u)
    U = W0.met()[0]
    assert U.shape[1] == 9
    assert np.max(np.abs(U.T @ U - np.eye(9))) <= 1e-14


def _dependent_columns(space, rng, n, block):
    """(k_max, n) inputs: Gaussian columns, and every fifth a combination of two earlier ones (one
    in the same block of ``block`` columns where there is one, one in an earlier block), with a
    zero column; the rank is what the Gaussian columns give."""
    X = space.gaussian(1.0, n, rng).T
    for j in range(5, n, 5):
        X[:, j] = 0.7 * X[:, j - 1] - 1.3 * X[:, max(0, j - block - 1)]
    X[:, 3] = 0.0
    return X


@pytest.mark.parametrize("block", [7, _implicit.BLOCK])
def test_blocks_draw_what_columns_one_at_a_time_draw(block, monkeypatch):
    """``matmat`` / ``rmatmat`` in blocks (Gram-Schmidt against the block's own new inputs in
    order, the new images drawn together) draw the same numbers as ``matvec`` / ``rmatvec`` on
    the columns one at a time, meet the same inputs and give the same values, to rounding; with
    dependent and zero columns inside and across blocks."""
    monkeypatch.setattr(_implicit, "BLOCK", block)
    n = 3 * block + 5
    spaces, outs = [], []
    for by_block in (True, False):
        space = VirtualSpace(d=10**6, k_max=3 * n + 4)
        rng = np.random.default_rng(21)
        X = _dependent_columns(space, rng, n, block)
        W0 = space.gaussian_matrix(1e-3, rng)
        if by_block:
            K = W0.matmat(X)
            back = W0.rmatmat(K)
        else:
            K = np.column_stack([W0.matvec(x) for x in X.T])
            back = np.column_stack([W0.rmatvec(k) for k in K.T])
        spaces.append((space.k, rng.bit_generator.state))
        outs.append((K, back) + W0.met())
    assert spaces[0] == spaces[1]
    assert outs[0][2].shape[1] == n - len(range(5, n, 5)) - 1        # U: one input per independent column
    for a, b in zip(outs[0], outs[1], strict=True):
        assert a.shape == b.shape
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))


def test_an_input_applied_again_gets_the_value_it_got_then():
    """W0 is one matrix: applied again to an input it has met, it returns the value it gave then,
    bit for bit, whether alone or among new combinations, and draws nothing; the values handed out
    are copies."""
    space = VirtualSpace(d=10**6, k_max=40)
    rng = np.random.default_rng(4)
    X = space.gaussian(1.0, 10, rng)
    W0 = space.gaussian_matrix(1e-3, rng)
    K = W0.matmat(X.T)
    back = W0.rmatmat(K)
    W0.freeze()
    state, k = rng.bit_generator.state, space.k
    again = W0.matmat(X.T)
    assert again.tobytes() == K.tobytes()
    again[:] = 0.0
    mixed = W0.matmat(np.column_stack([X[3], 0.5 * X[2] + X[4], X[0]]))
    assert mixed[:, 0].tobytes() == K[:, 3].tobytes() and mixed[:, 2].tobytes() == K[:, 0].tobytes()
    assert np.allclose(mixed[:, 1], 0.5 * K[:, 2] + K[:, 4], rtol=0, atol=1e-13 * np.max(np.abs(K)))
    assert W0.rmatvec(K[:, 7]).tobytes() == back[:, 7].tobytes()
    assert rng.bit_generator.state == state and space.k == k


def test_the_values_remembered_are_bounded_by_twice_the_basis():
    """The memo of inputs applied holds at most 2 k_max of them (as much memory as the basis and the
    images): past that, inputs met before are applied again, in the span, without drawing."""
    space = VirtualSpace(d=10**6, k_max=12)
    rng = np.random.default_rng(6)
    X = space.gaussian(1.0, 4, rng)
    W0 = space.gaussian_matrix(1e-3, rng)
    K = W0.matmat(X.T)
    W0.freeze()
    combos = rng.standard_normal((4, 3 * space.k_max))
    W0.matmat(X.T @ combos)
    assert len(W0._in.given) == 2 * space.k_max
    late = X.T @ combos[:, -1]                      # applied after the memo was full: not remembered
    assert np.allclose(W0.matvec(late), K @ combos[:, -1], rtol=0, atol=1e-13 * np.max(np.abs(K)))
    assert len(W0._in.given) == 2 * space.k_max


def test_draws_are_deterministic_given_the_generator():
    outs = [setup_statistics(VirtualSpace(Law().d, Law().k_max), np.random.default_rng(9), Law()) for _ in range(2)]
    assert outs[0] == outs[1]


# --------------------------------------------------------------------------- errors

def test_d_below_k_max_is_a_config_error():
    with pytest.raises(ConfigError, match=r"d must be >= k_max = 44 .*got d=40; use space='explicit'"):
        VirtualSpace(d=40, k_max=44)
    with pytest.raises(ConfigError, match=r"k_max must be >= 1; got 0"):
        VirtualSpace(d=40, k_max=0)


def test_a_full_virtual_basis_raises():
    space = VirtualSpace(d=10**6, k_max=3)
    rng = np.random.default_rng(0)
    x = space.gaussian(1.0, 1, rng)[0]
    W0 = space.gaussian_matrix(1.0, rng)
    W0.matvec(x)                         # the image touches the second direction,
    space.new_direction()                # this the third ...
    with pytest.raises(RuntimeError, match=r"the virtual basis is full: all k_max=3 directions"):
        W0.rmatvec(np.ones(3))           # ... so W0^T finds no room for its image
    with pytest.raises(RuntimeError, match=r"virtual basis is full"):
        space.new_direction()


def test_misuse_is_refused():
    space = VirtualSpace(d=100, k_max=4)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"off must be in \[0, k=0\].*got 2"):
        space.gaussian(1.0, 1, rng, off=2)
    with pytest.raises(ValueError, match=r"sigma must be >= 0; got -1.0"):
        space.gaussian(-1.0, 1, rng)
    with pytest.raises(ValueError, match=r"s must be >= 0; got nan"):
        space.gaussian_matrix(float("nan"), rng)
    with pytest.raises(ValueError, match=r"W0 applies to coordinate arrays of shape \(4,\); got \(3,\)"):
        space.gaussian_matrix(1.0, rng).matvec(np.ones(3))


# --------------------------------------------------------------------------- d = 1e9

def test_chi_square_draws_are_accurate_at_a_billion_degrees_of_freedom():
    """The chi_{d-k} draw keeps its law at d ~ 1e9: standardised, it is N(0, 1) to KS accuracy."""
    rng = np.random.default_rng(2)
    df = 1e9 - np.arange(4000)
    z = (np.array([rng.chisquare(f) for f in df]) - df) / np.sqrt(2 * df)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def paper_setup(d, N, rng):
    """A ``dual_setup`` at the paper's scales: unit noise, p0 = 0, the Gaussian twin of the official W0."""
    law = Law(d=d, N=N, sigma=1.0, s=1 / np.sqrt(3 * d), sigma_p=0.0, mu_norm=20.0, off=0)
    space = VirtualSpace(d, law.k_max)
    return space, dual_setup(space, rng, law), law


def test_grams_concentrate_at_their_scale_at_a_billion_dimensions():
    """At d = 1e9: |x|^2/(sigma^2 d) - 1 ~ N(0, 2/d), <x_i,x_j>/(sigma^2 d) ~ N(0, 1/d), |W0 x|^2/(s^2 d |x|^2) = chi^2_d/d.

    Bounds are 6 standard deviations (a 160-token max stays far inside them).
    """
    d, N = 10**9, 160
    space, v, law = paper_setup(d, N, np.random.default_rng(4))
    X, K = v["X"], v["K"]
    G = X @ X.T / (law.sigma**2 * d)
    assert np.max(np.abs(np.diag(G) - 1)) < 6 * np.sqrt(2 / d)
    assert np.max(np.abs(G - np.diag(np.diag(G)))) < 6 / np.sqrt(d)
    assert np.max(np.abs(G - np.diag(np.diag(G)))) > 1 / np.sqrt(d)   # not degenerate: off-diagonals live
    gain = np.sum(K * K, axis=1) / (law.s**2 * d * np.sum(X * X, axis=1))
    assert np.max(np.abs(gain - 1)) < 6 * np.sqrt(2 / d)
    assert space.k == 3 * N + 5   # mu_+-, tokens, keys, W0^T keys, W0 mu_+-, W0^T mu_+ (p0 = 0 touches nothing)


def test_no_array_of_size_d_exists_at_a_billion_dimensions():
    """Peak traced memory of a 160-token set-up is the same at d = 1e9 as at d = 1e4, and small."""
    peaks = {}
    for d in (10**4, 10**9):
        tracemalloc.start()
        try:
            paper_setup(d, 160, np.random.default_rng(4))
            peaks[d] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peaks[10**9] < 16 * 2**20, peaks             # one d-vector would be 8 GB
    assert abs(peaks[10**9] - peaks[10**4]) < 64 * 2**10, peaks
