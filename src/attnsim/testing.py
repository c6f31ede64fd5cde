"""Test helpers for your own implementation of the paper's attention model.

Check a PyTorch, JAX or NumPy implementation of ``f(X) = nu^T X^T softmax(X W^T p)`` and its
logistic loss against attnsim: random problems with a controlled softmax saturation
(``problems``), gradients (``assert_gradients_match``) and gradient-descent trajectories
(``assert_trajectory_matches``).

This module imports ``hypothesis`` at its top (it is in attnsim's ``test`` extra, not a
runtime dependency); ``import attnsim`` does not import it. It never imports torch or jax:
outputs are converted with ``.detach().cpu().numpy()`` when they have a ``detach`` method,
and ``numpy.asarray`` otherwise.

How far float64 autodiff can be trusted. A sample whose top score leads the next by a gap
``G`` puts softmax mass ~``e^{-G}`` on its other tokens; autodiff through a softmax (PyTorch
``torch.softmax``, ``jax.nn.softmax``, or any max-subtraction with the max treated as a
constant) forms ``v_top - f`` as a difference, which keeps no digits once ``e^{-G} < eps``,
so its gradient has relative error ~``eps e^G``. Measured against a 50-digit mpmath oracle
(n = 1, T = 8, d = 6, 20 random problems per gap; ``examples/autograd_trust.py``), the
largest relative error of ``grad_p`` from ``torch.softmax`` was 6e-16 at G = 0, 9e-12 at
G = 10, 7e-9 at G = 15, 3e-7 at G = 20, 2e-2 at G = 30 and O(1) from G = 40 on. Hence
``DEFAULT_MAX_GAP = 15`` with ``DEFAULT_RTOL = 1e-6``: an honest float64 autodiff
implementation passes, and the planted bugs a test is for (a transposed ``W``, a missing
``1/n``, a softmax over the wrong axis) fail by O(1). Ask for larger gaps only for an
implementation that is accurate in saturation (DESIGN.md §7).
"""

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ._engine import train
from ._kernels.gd import loss_and_grads
from ._validation import ConfigError

__all__ = ["DEFAULT_MAX_GAP", "DEFAULT_RTOL", "Problem", "assert_gradients_match",
           "assert_trajectory_matches", "problems"]

DEFAULT_MAX_GAP = 15.0
DEFAULT_RTOL = 1e-6
_SNAP_TO_ZERO = 1e-8     # drawn gaps below this become exactly 0 (p = 0), not subnormal scores
_MIN_GAP_RATIO = 1e-6    # a direction's top gap must exceed this fraction of its largest score
_MAX_DIRECTION_DRAWS = 64


def _top_gaps(X, W, p):
    z = np.einsum("itk,k->it", X, W.T @ p)
    top2 = np.sort(z, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True, eq=False, repr=False)
class Problem:
    """One problem of the paper's model, float64 throughout.

    Attributes
    ----------
    X : ndarray, shape (n, T, d)
    y : ndarray, shape (n,)
        Labels in {-1.0, +1.0}.
    W : ndarray, shape (d, d)
    p, nu : ndarray, shape (d,)
    seed, scale : optional
        How ``problems`` drew it (``None`` for a problem built by hand).

    The arrays are read-only; ``arrays()`` returns writable copies in the order
    ``(X, y, W, p, nu)`` that the checked functions take.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    >>> prob = Problem(X, np.array([1.0]), np.eye(2), np.array([3.0, 1.0]), np.array([1.0, -1.0]))
    >>> prob.gap, prob.n, prob.T, prob.d
    (2.0, 1, 2, 2)
    """

    X: np.ndarray
    y: np.ndarray
    W: np.ndarray
    p: np.ndarray
    nu: np.ndarray
    seed: int | None = None
    scale: float | None = None

    def __post_init__(self):
        for name in ("X", "y", "W", "p", "nu"):
            a = np.array(getattr(self, name), dtype=np.float64)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
        n, T, d = self.X.shape
        if T < 2 or self.y.shape != (n,) or self.W.shape != (d, d) or self.p.shape != (d,) or self.nu.shape != (d,):
            raise ValueError(f"Problem needs X (n, T >= 2, d), y (n,), W (d, d), p (d,), nu (d,); got X {self.X.shape}, "
                             f"y {self.y.shape}, W {self.W.shape}, p {self.p.shape}, nu {self.nu.shape}")

    n = property(lambda self: self.X.shape[0])
    T = property(lambda self: self.X.shape[1])
    d = property(lambda self: self.X.shape[2])

    @property
    def gaps(self):
        """ndarray, shape (n,): each sample's top-score gap ``z_top - z_second``."""
        return _top_gaps(self.X, self.W, self.p)

    @property
    def gap(self):
        """float: the largest top-score gap over the samples."""
        return float(self.gaps.max())

    @property
    def min_gap(self):
        """float: the smallest top-score gap over the samples."""
        return float(self.gaps.min())

    def arrays(self):
        """Writable copies ``(X, y, W, p, nu)``."""
        return tuple(np.array(a) for a in (self.X, self.y, self.W, self.p, self.nu))

    def __repr__(self):
        drawn = "" if self.seed is None else f", seed={self.seed}, scale={self.scale!r}"
        return (f"Problem(n={self.n}, T={self.T}, d={self.d}, gap={self.gap!r}, min_gap={self.min_gap!r}, "
                f"y={self.y.tolist()}{drawn})")


def _range(name, value, low):
    lo, hi = (value, value) if np.isscalar(value) else tuple(value)
    if not (low <= lo <= hi):
        raise ValueError(f"problems: {name} must be an int >= {low} or a range (lo, hi) with {low} <= lo <= hi; "
                         f"got {value!r}")
    return int(lo), int(hi)


def _direction(X, W, rng):
    """A random ``p`` direction whose largest top gap is not a rounding tie.

    A direction whose gap is tiny next to its scores (measure zero, but drawn now and then) would
    leave the rescaled gap at the mercy of the scores' rounding, so it is redrawn, a bounded
    number of times.
    """
    for _ in range(_MAX_DIRECTION_DRAWS):
        direction = rng.standard_normal(X.shape[2])
        z = np.einsum("itk,k->it", X, W.T @ direction)
        raw = _top_gaps(X, W, direction).max()
        if raw > _MIN_GAP_RATIO * np.abs(z).max():
            return direction, raw
    raise RuntimeError(f"problems: {_MAX_DIRECTION_DRAWS} random directions all tied their top scores "
                       f"(X {X.shape}, scale of W {np.abs(W).max():.3g}); widen the ranges of T, d or scale")


def _scale_to_gap(X, W, p, gap):
    """``p`` rescaled so that the computed largest top gap lies in ``[gap (1 - ~1e-9), gap]``.

    One rescale lands within the scores' rounding of ``gap``; if that overshoots, each further
    pass shrinks by a factor twice as far from 1 as the last (``2**-52, 2**-51, ...``), so at
    most ~53 passes reach ``p = 0`` (gap exactly 0): termination is guaranteed, and in practice
    the first or second pass is below ``gap``. Returns ``(p, passes)``.
    """
    current = _top_gaps(X, W, p).max()
    shrink, passes = 0.0, 1
    while current > gap:
        p = p * ((gap / current) * (1.0 - shrink))
        shrink = 2.0 ** -52 if shrink == 0.0 else min(1.0, 2.0 * shrink)
        current = _top_gaps(X, W, p).max()
        passes += 1
    return p, passes


def _build(n, T, d, seed, scale, gap, y):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    W = rng.standard_normal((d, d)) * (scale / np.sqrt(d))
    nu = rng.standard_normal(d) * (scale / np.sqrt(d))
    direction, raw = _direction(X, W, rng)
    p, _ = _scale_to_gap(X, W, direction * (gap / raw), gap)
    return Problem(X, np.asarray(y, dtype=np.float64), W, p, nu, seed=seed, scale=scale)


def problems(*, n=(1, 8), T=(2, 12), d=(1, 16), scale=(0.1, 3.0), max_gap=DEFAULT_MAX_GAP):
    """Hypothesis strategy for `Problem` with a controlled top-score gap.

    Tokens are standard normal, ``W`` and ``nu`` have entries ``N(0, scale^2 / d)``, labels
    are drawn one by one (both signs). ``p`` is a random direction rescaled so that the
    largest top-score gap over the samples, ``problem.gap``, equals a drawn target in
    ``[0, max_gap]`` (hypothesis tries 0, ``max_gap`` and values in between; the target 0
    gives ``p = 0``, the paper's initialisation).

    Parameters
    ----------
    n, T, d : int or (int, int)
        Sizes, or inclusive ranges: samples (>= 1), tokens per sample (>= 2), dimension (>= 1).
    scale : float or (float, float)
        Range of the scale of ``W`` and ``nu`` (> 0).
    max_gap : float
        Upper bound on ``problem.gap`` (>= 0). The default, `DEFAULT_MAX_GAP`, is where float64
        autodiff through a softmax is still accurate to `DEFAULT_RTOL` (module docstring).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of Problem

    Examples
    --------
    >>> from hypothesis import given, settings
    >>> @settings(max_examples=5, database=None)
    ... @given(problems(n=(1, 3), T=4, d=(2, 5), max_gap=10.0))
    ... def check(prob):
    ...     assert prob.X.shape[1] == 4 and 0.0 <= prob.gap <= 10.0
    >>> check()
    """
    n, T, d = _range("n", n, 1), _range("T", T, 2), _range("d", d, 1)
    lo, hi = (scale, scale) if np.isscalar(scale) else tuple(scale)
    if not (0.0 < lo <= hi < np.inf):
        raise ValueError(f"problems: scale must be > 0 or a range (lo, hi) with 0 < lo <= hi; got {scale!r}")
    if not (0.0 <= max_gap < np.inf):
        raise ValueError(f"problems: max_gap must be finite and >= 0; got {max_gap!r}")

    @st.composite
    def strategy(draw):
        nn = draw(st.integers(*n))
        shape = (nn, draw(st.integers(*T)), draw(st.integers(*d)))
        s = draw(st.floats(lo, hi)) if lo < hi else lo
        gap = draw(st.one_of(st.sampled_from([0.0, float(max_gap)]), st.floats(0.0, float(max_gap))))
        gap = 0.0 if gap < _SNAP_TO_ZERO else gap
        y = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=nn, max_size=nn))
        seed = draw(st.integers(0, 2**32 - 1))
        return _build(*shape, seed, s, gap, y)

    return strategy()


def _to_numpy(a):
    if hasattr(a, "detach"):         # torch tensors, without importing torch
        a = a.detach()
        a = a.cpu() if hasattr(a, "cpu") else a
        a = a.numpy() if hasattr(a, "numpy") else a
    return np.asarray(a, dtype=np.float64)


def _norm(a):
    """2-norm without the underflow of squaring entries of size 1e-300 (saturated gradients)."""
    a = np.abs(np.ravel(a))
    m = a.max(initial=0.0)
    if m == 0.0 or not np.isfinite(m):
        return m
    return m * float(np.sqrt(np.sum((a / m) ** 2)))


def _compare(name, got, expected, rtol, atol):
    """None if ``||got - expected|| <= atol + rtol ||expected||``, else a description."""
    diff = got - expected
    err, size = _norm(diff), _norm(expected)
    if err <= atol + rtol * size:
        return None
    rel = err / size if size > 0 else np.inf
    worst = np.unravel_index(int(np.argmax(np.abs(np.where(np.isnan(diff), np.inf, diff)))), np.shape(diff))
    e, g = expected[worst], got[worst]
    entry_rel = abs(g - e) / abs(e) if e != 0 else np.inf
    where = f"entry {list(map(int, worst))}" if np.ndim(expected) else "value"
    return (f"{name}: norm-wise relative error {rel:.3e} > rtol = {rtol:g}{f' (+ atol {atol:g})' if atol else ''} "
            f"(||got - expected|| / ||expected||); worst {where}: expected {float(e)!r}, got {float(g)!r} "
            f"(relative error {entry_rel:.3e})")


def _check_shape(name, got, shape, who):
    if got.shape != shape:
        raise AssertionError(f"{name} from {who} has shape {got.shape}, expected {shape}")


def assert_gradients_match(fn, problem, *, rtol=DEFAULT_RTOL, atol=0.0):
    """Check ``fn``'s loss and gradients against `attnsim.loss_and_grads`.

    Parameters
    ----------
    fn : callable
        ``fn(X, y, W, p, nu) -> (loss, grad_W, grad_p)`` with the shapes below; anything
        ``numpy.asarray`` accepts (torch tensors are detached and moved to the CPU). It gets
        writable float64 NumPy copies of the problem's arrays.
    problem : Problem
        ``X`` (n, T, d), ``y`` (n,), ``W`` (d, d), ``p`` (d,), ``nu`` (d,).
    rtol, atol : float
        Each quantity ``a`` (loss, ``grad_W`` of shape (d, d), ``grad_p`` of shape (d,))
        must satisfy ``||a - a_ref|| <= atol + rtol ||a_ref||`` (2-norm, Frobenius for
        ``grad_W``).

    Raises
    ------
    AssertionError
        Naming each quantity that fails (``loss``, ``grad_W``, ``grad_p``), its norm-wise
        relative error, the worst entry (index, expected, got, its relative error) and the
        problem's top-score gap; or a wrong shape or number of outputs.

    Examples
    --------
    >>> import numpy as np
    >>> def mine(X, y, W, p, nu):
    ...     z = X @ (W.T @ p)
    ...     s = np.exp(z - z.max(axis=1, keepdims=True))
    ...     s /= s.sum(axis=1, keepdims=True)
    ...     v = X @ nu
    ...     f = (s * v).sum(axis=1)
    ...     dz = s * (v - f[:, None]) * (-y / (1 + np.exp(y * f)) / len(y))[:, None]
    ...     g = np.einsum("it,itk->k", dz, X)
    ...     return np.mean(np.logaddexp(0, -y * f)), np.outer(p, g), W @ g
    >>> rng = np.random.default_rng(0)
    >>> prob = Problem(rng.standard_normal((3, 4, 2)), np.array([1.0, -1.0, 1.0]),
    ...                rng.standard_normal((2, 2)), rng.standard_normal(2), rng.standard_normal(2))
    >>> assert_gradients_match(mine, prob)
    >>> assert_gradients_match(lambda *a: (mine(*a)[0], mine(*a)[1].T, mine(*a)[2]), prob)
    Traceback (most recent call last):
    ...
    AssertionError: gradients do not match attnsim.loss_and_grads on Problem(n=3, T=4, d=2, ...
      grad_W: norm-wise relative error ...
    """
    out = fn(*problem.arrays())
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise AssertionError(f"fn must return (loss, grad_W, grad_p); got {type(out).__name__} "
                             f"{'of length ' + str(len(out)) if isinstance(out, (tuple, list)) else ''}".rstrip())
    got = [_to_numpy(a) for a in out]
    if got[0].size != 1:
        raise AssertionError(f"loss from fn has shape {got[0].shape}, expected a scalar")
    got[0] = got[0].reshape(())
    d = problem.d
    _check_shape("grad_W", got[1], (d, d), "fn")
    _check_shape("grad_p", got[2], (d,), "fn")
    loss, grad_W, grad_p = loss_and_grads(*problem.arrays())
    expected = [np.asarray(loss, dtype=np.float64), grad_W, grad_p]
    failures = [msg for msg in (_compare(name, g, e, rtol, atol)
                                for name, g, e in zip(("loss", "grad_W", "grad_p"), got, expected)) if msg]
    if failures:
        raise AssertionError(f"gradients do not match attnsim.loss_and_grads on {problem!r} "
                             f"(top-score gap {problem.gap:.4g}):\n  " + "\n  ".join(failures))


def assert_trajectory_matches(step_fn, problem, steps, *, lr=0.1, trainable="Wp", rtol=DEFAULT_RTOL, atol=0.0):
    """Iterate ``step_fn`` and check the result against `attnsim.train`.

    Parameters
    ----------
    step_fn : callable
        One full-batch GD step, ``step_fn(X, y, W, p, nu, lr) -> (W_new, p_new)``, both
        updates from the same iterate (with ``trainable="p"`` it must return ``W``
        unchanged). Outputs as in `assert_gradients_match`.
    problem : Problem
        The initial point: ``X`` (n, T, d), ``y`` (n,), ``W`` (d, d), ``p`` (d,), ``nu`` (d,).
    steps : int
        Number of steps, >= 1.
    lr : float
        Step size.
    trainable : {"Wp", "p"}
    rtol, atol : float
        Tolerances for the final ``W`` (d, d), ``p`` (d,) and scores ``X W^T p`` (n, T), each
        norm-wise as in `assert_gradients_match`.

    Raises
    ------
    AssertionError
        Naming each quantity that fails (``W``, ``p``, ``scores``), the number of steps, its
        norm-wise relative error and worst entry.

    Examples
    --------
    >>> import numpy as np
    >>> import attnsim
    >>> def step(X, y, W, p, nu, lr):          # one GD step from any gradient function
    ...     _, grad_W, grad_p = attnsim.loss_and_grads(X, y, W, p, nu)
    ...     return W - lr * grad_W, p - lr * grad_p
    >>> rng = np.random.default_rng(1)
    >>> prob = Problem(rng.standard_normal((2, 3, 2)), np.array([1.0, -1.0]),
    ...                rng.standard_normal((2, 2)), rng.standard_normal(2), rng.standard_normal(2))
    >>> assert_trajectory_matches(step, prob, 50, lr=0.5)
    """
    if trainable not in ("Wp", "p"):
        raise ConfigError(f"trainable must be 'Wp' or 'p' here (step_fn returns (W, p)); got {trainable!r}; "
                          "a model with a trained head can check its gradients against "
                          "attnsim.loss_and_grads_head")
    W, p = np.array(problem.W), np.array(problem.p)
    X, y, nu = problem.X, problem.y, problem.nu
    for k in range(steps):
        out = step_fn(np.array(X), np.array(y), W, p, np.array(nu), lr)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"step_fn must return (W_new, p_new); got {type(out).__name__} at step {k}")
        W, p = (_to_numpy(a).copy() for a in out)
        _check_shape("W_new", W, problem.W.shape, f"step_fn at step {k}")
        _check_shape("p_new", p, problem.p.shape, f"step_fn at step {k}")
    ref = train(*problem.arrays(), lr=lr, steps=steps, trainable=trainable, engine="primal", save_at=[0, steps])
    if not ref.success:
        raise AssertionError(f"attnsim.train did not finish on {problem!r}: {ref.message}")
    scores = np.einsum("itk,k->it", X, W.T @ p)
    ref_W = np.array(problem.W) if ref.W is None else ref.W      # p only: W stays W0 (not stored)
    failures = [msg for msg in (_compare(name, g, e, rtol, atol)
                                for name, g, e in (("W", W, ref_W), ("p", p, ref.p), ("scores", scores, ref.scores[-1])))
                if msg]
    if failures:
        raise AssertionError(f"trajectory does not match attnsim.train after {steps} steps (lr={lr}, "
                             f"trainable={trainable!r}) from {problem!r}:\n  " + "\n  ".join(failures))
