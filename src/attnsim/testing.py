"""Test helpers for your own implementation of the paper's attention model.

Check a PyTorch, JAX or NumPy implementation of ``f(X) = nu^T X^T softmax(X W^T p)`` and its
logistic loss against attnsim: random problems with a controlled softmax saturation
(``problems``), gradients (``assert_gradients_match``), gradient-descent trajectories
(``assert_trajectory_matches``) and whole training loops on the paper's data
(``assert_training_matches``).

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
``DEFAULT_MAX_GAP = 15``, and a default tolerance (``DEFAULT_RTOL = "float64"``, `float64_rtol`)
that follows this error model problem by problem: ~1e-12 at small gaps, so that float32 arithmetic
(errors of 1e-9 to 1e-7) fails, growing with the gap up to 1e-4. The planted bugs a test is for
(a transposed ``W``, a missing ``1/n``, a softmax over the wrong axis) fail by O(1). Ask for larger
gaps only for an implementation that is accurate in saturation (DESIGN.md §7).
"""

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from ._config import Config
from ._data import init_params, make_data
from ._engine import train
from ._kernels.gd import loss_and_grads
from ._numerics import logistic_loss, neg_dloss, norm, top_relative
from ._validation import ConfigError

__all__ = ["DEFAULT_MAX_GAP", "DEFAULT_RTOL", "Problem", "assert_gradients_match", "assert_training_matches",
           "assert_trajectory_matches", "float64_rtol", "problems"]

DEFAULT_MAX_GAP = 15.0
DEFAULT_RTOL = "float64"     # the tolerance honest float64 autodiff meets on each problem (`float64_rtol`)
_EPS = float(np.finfo(np.float64).eps)
_EPS32 = float(np.finfo(np.float32).eps)
# float64_rtol = min(CEILING, max(FLOOR, FACTOR * eps * cond)). Calibration (python tests/autodiff_errors.py:
# three honest float64 autodiff models, 8 200 draws at gaps 0..40): error / (eps cond) <= 31, so FACTOR leaves
# a margin of 30; a model with log(1 + exp(u)) in float32 is off by >= 1e-9 in the loss, whose cond is ~1-10.
_RTOL_FACTOR = 1000.0
_RTOL_FLOOR = 1e-12          # float32 rounding is >= 1e-9 where it shows at all (measured)
_RTOL_CEILING = 1e-4         # honest autodiff reaches 1e-6 at gap 15 (d = 1, near-tied top tokens); bugs are >= 1e-3
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
    ``[0, max_gap]`` to a relative 1e-9, never above it (hypothesis tries 0, ``max_gap`` and
    values in between; the target 0 gives ``p = 0``, the paper's initialisation). Each draw
    costs a few passes over the scores (at most ~120, whatever hypothesis asks for).

    Parameters
    ----------
    n, T, d : int or (int, int)
        Sizes, or inclusive ranges: samples (>= 1), tokens per sample (>= 2), dimension (>= 1).
    scale : float or (float, float)
        Range of the scale of ``W`` and ``nu`` (> 0).
    max_gap : float
        Upper bound on ``problem.gap`` (>= 0). The default, `DEFAULT_MAX_GAP`, is where float64
        autodiff through a softmax is still accurate to ~1e-8 (module docstring), below the
        ceiling 1e-4 of `float64_rtol` (rare draws reach 1e-6).

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


def _ratio(a, b):
    return a / b if b > 0 else np.inf


def _float64_error_scales(X, y, W, p, nu):
    """``eps`` times the condition number of loss, ``grad_W`` and ``grad_p`` under honest float64 autodiff.

    First-order rounding analysis of the usual evaluation (scores, a max-subtracted softmax, ``f``,
    ``log(1 + e^u)``, reverse mode): ``v_t - f`` is formed as a difference, so each token's
    coefficient carries an absolute error ~``eps (|v_t| + |f|)`` times its weight, and the scores
    carry their own rounding ``eps kappa_t``, ``kappa_t = |x_t|^T |W|^T |p|``. The condition number
    is the sum of those error terms over the size of the exact gradient, computed top-relative
    (DESIGN.md §7). In saturation it is ``~e^G |v| / |v_top - v_second|`` at top-score gap ``G``:
    the ``eps e^G`` of the module docstring, with the data's own prefactor.
    """
    n = len(y)
    z, v = X @ (W.T @ p), X @ nu
    s, delta, phi = top_relative(z, v)
    f = v[np.arange(n), np.argmax(z, axis=1)] + phi
    weight = neg_dloss(y * f) / n
    g = np.einsum("it,itk->k", (weight * y)[:, None] * s * (delta - phi[:, None]), X)
    kappa = np.abs(X) @ (np.abs(W).T @ np.abs(p))
    terms = weight[:, None] * s * (np.abs(v) + np.abs(f)[:, None]) * (1.0 + kappa)
    bound = np.einsum("it,itk->k", terms, np.abs(X))
    loss_terms = np.sum(weight * (np.abs(f) + np.abs(v).max(axis=1)))
    return {"loss": _EPS * (1.0 + _ratio(loss_terms, np.mean(logistic_loss(y * f)))),
            "grad_W": _EPS * _ratio(norm(bound), norm(g)),
            "grad_p": _EPS * _ratio(norm(np.abs(W) @ bound), norm(W @ g))}


def float64_rtol(problem):
    """The relative tolerances honest float64 autodiff meets on ``problem``: the default of the checks.

    ``min(1e-4, max(1e-12, 1000 eps cond))`` for each of the loss, ``grad_W`` and ``grad_p``, where
    ``cond`` is the quantity's condition number under the usual float64 evaluation (a max-subtracted
    softmax, ``v - f`` formed as a difference, reverse mode): about 1 to 10 at small top-score gaps
    and ``~e^G |v| / |v_top - v_second|`` at gap ``G``, where autodiff loses ``G / ln 10`` digits.
    Honest float64 models (``autograd`` with the max held constant as ``torch.softmax`` and
    ``jax.nn.softmax`` do, or differentiated through, and hand-written backpropagation) stay below
    31 eps cond over 8 200 draws at gaps 0 to 40 (``python tests/autodiff_errors.py``), so the
    factor 1000 leaves a margin of 30, while a model computing ``log(1 + exp(u))`` in float32 is off
    by 1e-9 to 1e-7 in the loss, whose tolerance stays near 1e-12: it fails on every draw. The
    ceiling 1e-4 lies below every formula bug (errors of 1e-3 and up) and above what honest
    autodiff reaches at the default ``max_gap`` 15 (1.4e-6 on a rare draw: d = 1, two near-tied
    top tokens, the error ``eps e^G`` times both their value and their token ratio); a problem that
    needs more (gaps above ~25 for autodiff through a softmax) fails with a message saying so.

    Parameters
    ----------
    problem : Problem

    Returns
    -------
    dict
        ``{"loss": float, "grad_W": float, "grad_p": float}``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> prob = Problem(rng.standard_normal((3, 4, 2)), np.array([1.0, -1.0, 1.0]),
    ...                rng.standard_normal((2, 2)), rng.standard_normal(2), rng.standard_normal(2))
    >>> prob.gap, {name: f"{r:.0e}" for name, r in float64_rtol(prob).items()}
    (0.4966184346076439, {'loss': '1e-12', 'grad_W': '9e-12', 'grad_p': '2e-11'})
    >>> saturated = Problem(prob.X, prob.y, prob.W, 10 * prob.p, prob.nu)      # gap 5: e^5 ~ 150
    >>> {name: f"{r:.0e}" for name, r in float64_rtol(saturated).items()}
    {'loss': '1e-12', 'grad_W': '2e-08', 'grad_p': '4e-08'}
    """
    return _rtols(_float64_error_scales(*problem.arrays()))


def _rtols(scales):
    """`float64_rtol` from the error scales ``eps cond`` (an infinite or NaN cond gets the ceiling)."""
    return {name: min(_RTOL_CEILING, max(_RTOL_FLOOR, _RTOL_FACTOR * scale)) if scale < np.inf else _RTOL_CEILING
            for name, scale in scales.items()}


def _compare(name, got, expected, rtol, atol):
    """``(None, error)`` if ``||got - expected|| <= atol + rtol ||expected||``, else ``(description, error)``."""
    diff = got - expected
    err, size = norm(diff), norm(expected)
    rel = err / size if size > 0 else (0.0 if err == 0 else np.inf)
    if err <= atol + rtol * size:
        return None, rel
    worst = np.unravel_index(int(np.argmax(np.abs(np.where(np.isnan(diff), np.inf, diff)))), np.shape(diff))
    e, g = expected[worst], got[worst]
    entry_rel = abs(g - e) / abs(e) if e != 0 else np.inf
    where = f"entry {list(map(int, worst))}" if np.ndim(expected) else "value"
    return (f"{name}: norm-wise relative error {rel:.3e} > rtol = {rtol:.1e}{f' (+ atol {atol:g})' if atol else ''} "
            f"(||got - expected|| / ||expected||); worst {where}: expected {float(e)!r}, got {float(g)!r} "
            f"(relative error {entry_rel:.3e})"), rel


_FLOAT32_BAND = (1e-10, 1e-4)    # float32 rounding, from a single cast (>= 1e-9 measured) to a cast inside a cancellation


def _why(errors, scales, gap):
    """One line on what the failing relative errors look like, given float64 autodiff's error scales there."""
    worst = max(errors, key=lambda k: errors[k] if np.isfinite(errors[k]) else np.inf)
    err, scale = errors[worst], scales[worst]
    at = f"at top-score gap {gap:.3g}"
    if _RTOL_FACTOR * scale > _RTOL_CEILING:
        return (f"{at}, float64 autodiff through a softmax is itself only accurate to ~{scale:.0e} on this problem "
                f"({worst}), which is no reference: check at a smaller max_gap (the default 15 is safe), or compute "
                "v - f relative to each sample's top token as attnsim does (docs/testing.md)")
    if not err < _FLOAT32_BAND[1]:
        return (f"errors of {err:.0e} are not rounding ({worst}; float64 autodiff is accurate to ~{scale:.0e} {at}): "
                "look for a bug in the formula (a transposed W, a missing 1/n, a softmax over the wrong axis, a sign)")
    if err >= _FLOAT32_BAND[0]:
        return (f"errors of ~{err:.0e} {at} look like float32 arithmetic (float32's eps is {_EPS32:.1e}; honest "
                f"float64 autodiff is accurate to ~{scale:.0e} here): look for a float32 tensor or cast "
                "(.float(), torch.tensor of float32 data, JAX without jax_enable_x64, np.float32)")
    return (f"errors of ~{err:.0e} {at} exceed float64 rounding (~{scale:.0e} here) but not by a float32 margin: "
            "an inaccurate float64 formulation (log(1 + exp(u)) instead of logaddexp, 1 - s instead of a sum) "
            "or a tiny bug")


def _rtol_mode(rtol):
    if isinstance(rtol, str) and rtol == "float64":
        return "float64"
    if isinstance(rtol, (int, float, np.floating, np.integer)) and not isinstance(rtol, bool) and 0 <= rtol < np.inf:
        return "flat"
    raise ConfigError(f"rtol must be 'float64' (the tolerance honest float64 autodiff meets on each problem) or a "
                      f"finite number >= 0; got {rtol!r}")


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
    rtol : "float64" or float
        ``"float64"`` (the default, `DEFAULT_RTOL`): each quantity gets the tolerance honest
        float64 autodiff meets on this problem, `float64_rtol` (1e-12 at small top-score gaps,
        growing like ``eps e^G`` in saturation, at most 1e-4), so float32 arithmetic anywhere in
        ``fn`` fails. A number: the same flat tolerance for all three.
    atol : float
        Each quantity ``a`` (loss, ``grad_W`` of shape (d, d), ``grad_p`` of shape (d,))
        must satisfy ``||a - a_ref|| <= atol + rtol ||a_ref||`` (2-norm, Frobenius for
        ``grad_W``).

    Raises
    ------
    AssertionError
        Naming each quantity that fails (``loss``, ``grad_W``, ``grad_p``), its norm-wise
        relative error and tolerance, the worst entry (index, expected, got, its relative error),
        the problem's top-score gap, and a last line saying what errors of that size look like
        (float32 arithmetic, a bug in the formula, or a gap where float64 autodiff is no
        reference); or a wrong shape or number of outputs.
    ConfigError
        ``rtol`` neither ``"float64"`` nor a number >= 0.

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
    names = ("loss", "grad_W", "grad_p")
    scales = _float64_error_scales(*problem.arrays())
    rtols = _rtols(scales) if _rtol_mode(rtol) == "float64" else dict.fromkeys(names, float(rtol))
    failures, errors = [], {}
    for name, g, e in zip(names, got, [np.asarray(loss, dtype=np.float64), grad_W, grad_p]):
        msg, errors[name] = _compare(name, g, e, rtols[name], atol)
        if msg:
            failures.append(msg)
    if failures:
        failing = {name: errors[name] for name in names if any(m.startswith(name + ":") for m in failures)}
        raise AssertionError(f"gradients do not match attnsim.loss_and_grads on {problem!r} "
                             f"(top-score gap {problem.gap:.4g}):\n  " + "\n  ".join(failures)
                             + "\n  why: " + _why(failing, scales, problem.gap))


def _gd_step(X, y, W, p, nu, lr, trainable):
    """One exact GD step (attnsim's closed-form gradients) from ``(W, p)``: ``(W_new, p_new, grad_W, grad_p)``."""
    _, grad_W, grad_p = loss_and_grads(X, y, W, p, nu)
    return (W - lr * grad_W if trainable == "Wp" else W), p - lr * grad_p, grad_W, grad_p


def _step_allowance(X, y, W, p, nu, lr, trainable, rtol):
    """Allowed 2-norm errors ``(W, p)`` of one step from ``(W, p)``, and the exact step.

    ``"float64"``: the new iterate's own rounding (`_RTOL_FLOOR` of its norm) plus ``lr`` times the
    gradient error honest float64 autodiff makes at ``(W, p)`` (`float64_rtol`). A number: that
    relative tolerance on each new iterate.
    """
    W1, p1, grad_W, grad_p = _gd_step(X, y, W, p, nu, lr, trainable)
    if _rtol_mode(rtol) == "flat":
        return (rtol * norm(W1), rtol * norm(p1)), (W1, p1)
    r = _rtols(_float64_error_scales(X, y, W, p, nu))
    allow_W = _RTOL_FLOOR * norm(W1) + (lr * r["grad_W"] * norm(grad_W) if trainable == "Wp" else 0.0)
    return (allow_W, _RTOL_FLOOR * norm(p1) + lr * r["grad_p"] * norm(grad_p)), (W1, p1)


def _close(a, b, allowed):
    return norm(a - b) <= allowed


def _diagnose_step(X, y, nu, lr, trainable, old, new, exact, allowed, older=None):
    """What the user's step ``old -> new`` is, when it is not the exact GD step ``old -> exact``."""
    (W0, p0), (W1, p1), (We, pe) = old, new, exact
    if trainable == "p" and not _close(W1, W0, allowed[0]):
        return "W moved although trainable='p': only p is trained, W must stay W0"
    du = np.concatenate([(W1 - W0).ravel(), p1 - p0])
    de = np.concatenate([(We - W0).ravel(), pe - p0])
    if norm(de) > 0:
        c = float(du @ de / (de @ de))
        if norm(du - c * de) <= 1e-6 * norm(de) and abs(c - 1) > 1e-6:
            if abs(c) < 1e-6:
                return "the parameters did not move (an update skipped, or the iterate recorded before its update)"
            twice = (" (the update applied twice?)" if abs(c - 2) < 1e-6 else
                     " (lr multiplied in twice?)" if abs(c - lr) < 1e-6 * lr else "")
            return f"the update is {c:.6g} x the GD step, a step size of {c * lr:.6g} instead of lr = {lr:g}{twice}"
    candidates = []
    if trainable == "Wp":
        _, p_seq, _, _ = _gd_step(X, y, We, p0, nu, lr, trainable)
        candidates.append((_close(W1, We, allowed[0]) and _close(p1, p_seq, 1e-6 * norm(p_seq)),
                           "p was updated from the already-updated W; both updates must use the old iterate"))
        W_seq, _, _, _ = _gd_step(X, y, W0, pe, nu, lr, trainable)
        candidates.append((_close(p1, pe, allowed[1]) and _close(W1, W_seq, 1e-6 * norm(W_seq)),
                           "W was updated from the already-updated p; both updates must use the old iterate"))
    if older is not None:
        _, _, stale_W, stale_p = _gd_step(X, y, *older, nu, lr, trainable)
        for name, got, stale, other_ok in (("W", W1, W0 - lr * stale_W, _close(p1, pe, allowed[1])),
                                           ("p", p1, p0 - lr * stale_p, _close(W1, We, allowed[0]))):
            if trainable == "Wp" or name == "p":
                candidates.append((other_ok and _close(got, stale, 1e-6 * norm(stale)),
                                   f"{name} was updated with the gradient of the iterate before (a stale gradient)"))
    for hit, what in candidates:
        if hit:
            return what
    return None


def _describe(name, got, expected, allowed):
    err, size = norm(got - expected), norm(expected)
    rel = err / size if size > 0 else np.inf
    return f"{name}: error {err:.3e} (relative {rel:.3e}) > allowed {allowed:.1e}"


def _check_iterates(Ws, ps, X, y, nu, lr, trainable, rtol, who):
    """First step ``k`` (1-based) whose iterate is not one exact GD step from the user's iterate ``k - 1``."""
    for k in range(1, len(ps)):
        old, new = (Ws[k - 1], ps[k - 1]), (Ws[k], ps[k])
        allowed, exact = _step_allowance(X, y, *old, nu, lr, trainable, rtol)
        if _close(new[0], exact[0], allowed[0]) and _close(new[1], exact[1], allowed[1]):
            continue
        lines = [_describe(f"{name}_{k}", g, e, a) for name, g, e, a in zip("Wp", new, exact, allowed)
                 if not _close(g, e, a)]
        older = (Ws[k - 2], ps[k - 2]) if k >= 2 else None
        what = _diagnose_step(X, y, nu, lr, trainable, old, new, exact, allowed, older)
        hint = f"\n  why: {what}" if what else ""
        if what is None and _rtol_mode(rtol) == "float64":
            rel = max(norm(g - e) / max(norm(e - o), 1e-300) for g, e, o in zip(new, exact, old))
            if _FLOAT32_BAND[0] <= rel < _FLOAT32_BAND[1]:
                hint = (f"\n  why: the update is off by ~{rel:.0e} of its size, which looks like float32 arithmetic "
                        f"(float32's eps is {_EPS32:.1e}); check the gradients with assert_gradients_match")
        return (f"step {k} of {len(ps) - 1} is not a GD step from {who}'s iterate {k - 1} (exact step: "
                f"attnsim.loss_and_grads, lr={lr:g}, trainable={trainable!r})"
                + (f"; steps 1..{k - 1} are" if k > 1 else "") + ":\n  "
                + "\n  ".join(lines) + hint)
    return None


def _check_trainable(trainable, returns):
    if trainable not in ("Wp", "p"):
        raise ConfigError(f"trainable must be 'Wp' or 'p' here ({returns}); got {trainable!r}; "
                          "a model with a trained head can check its gradients against "
                          "attnsim.loss_and_grads_head")


def _final_failures(W, p, X, ref_W, ref_p, rtol, atol=0.0):
    """Descriptions of the final ``W``, ``p`` and scores ``X W^T p`` that miss the reference."""
    scores = np.einsum("itk,k->it", X, W.T @ p)
    ref_scores = np.einsum("itk,k->it", X, ref_W.T @ ref_p)
    return [msg for msg, _ in (_compare(name, g, e, rtol, atol) for name, g, e in
                               (("W", W, ref_W), ("p", p, ref_p), ("scores", scores, ref_scores))) if msg]


def assert_trajectory_matches(step_fn, problem, steps, *, lr=0.1, trainable="Wp", rtol=DEFAULT_RTOL, atol=0.0):
    """Iterate ``step_fn`` and check each step, and the end, against attnsim's exact GD.

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
    rtol : "float64" or float
        ``"float64"`` (the default): every step must be one exact GD step (attnsim's closed-form
        gradients) from ``step_fn``'s own previous iterate, to the new iterate's rounding plus
        ``lr`` times the gradient error honest float64 autodiff makes there (`float64_rtol`), so
        the first wrong step is named, whatever the dynamics does to rounding later; then the
        final ``W``, ``p`` and scores must match `attnsim.train` to 1e-4. A number: only the
        final ``W`` (d, d), ``p`` (d,) and scores ``X W^T p`` (n, T) are compared with
        `attnsim.train`, to ``atol + rtol ||ref||`` each.
    atol : float
        With a number ``rtol``.

    Raises
    ------
    AssertionError
        Naming the first step that is not a GD step (its errors, and what the step looks like:
        a multiple of the GD step, p updated from the new W, a stale gradient), or each final
        quantity that fails (``W``, ``p``, ``scores``) with its norm-wise relative error and worst entry.
    ConfigError
        ``trainable`` not ``"Wp"`` or ``"p"``, or a bad ``rtol``.

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
    _check_trainable(trainable, "step_fn returns (W, p)")
    mode = _rtol_mode(rtol)
    W, p = np.array(problem.W), np.array(problem.p)
    X, y, nu = problem.X, problem.y, problem.nu
    Ws, ps = [W], [p]
    for k in range(steps):
        out = step_fn(np.array(X), np.array(y), W, p, np.array(nu), lr)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise AssertionError(f"step_fn must return (W_new, p_new); got {type(out).__name__} at step {k}")
        W, p = (_to_numpy(a).copy() for a in out)
        _check_shape("W_new", W, problem.W.shape, f"step_fn at step {k}")
        _check_shape("p_new", p, problem.p.shape, f"step_fn at step {k}")
        Ws.append(W)
        ps.append(p)
    context = f"after {steps} steps (lr={lr}, trainable={trainable!r}) from {problem!r}"
    if mode == "float64":
        bad = _check_iterates(Ws, ps, X, y, nu, lr, trainable, rtol, "step_fn")
        if bad:
            raise AssertionError(f"trajectory does not match attnsim's GD {context}: {bad}")
    ref = train(*problem.arrays(), lr=lr, steps=steps, trainable=trainable, engine="primal", save_at=[0, steps])
    if not ref.success:
        raise AssertionError(f"attnsim.train did not finish on {problem!r}: {ref.message}")
    ref_W = np.array(problem.W) if ref.W is None else ref.W      # p only: W stays W0 (not stored)
    failures = _final_failures(W, p, X, ref_W, ref.p, _RTOL_CEILING if mode == "float64" else float(rtol), atol)
    if failures:
        note = ("\n  why: every step is a GD step to float64 rounding, so the dynamics amplified the rounding "
                "(a smaller lr or fewer steps compare cleanly)" if mode == "float64" else "")
        raise AssertionError(f"trajectory does not match attnsim.train {context}:\n  " + "\n  ".join(failures) + note)


_TRAINING_CONFIG = Config(n_train=8, n_test=1, d=16, eta=0.25, lr=0.1, steps=50, seed=0)


def _gd_path(X, y, W, p, nu, lr, steps, trainable, *, sequential=None):
    """Iterates ``[(W_0, p_0), ..., (W_steps, p_steps)]`` of exact GD, or of a planted loop bug.

    ``sequential="p"``: p updated from the new W; ``"W"``: W updated from the new p.
    """
    path = [(W, p)]
    for _ in range(steps):
        W1, p1, _, _ = _gd_step(X, y, W, p, nu, lr, trainable)
        if sequential == "p":
            p1 = _gd_step(X, y, W1, p, nu, lr, trainable)[1]
        elif sequential == "W":
            W1 = _gd_step(X, y, W, p1, nu, lr, trainable)[0]
        W, p = W1, p1
        path.append((W, p))
    return path


def _low_precision(*outs) -> str | None:
    """The dtype name of the first returned array (or of a trajectory's first iterate) held in fewer
    than 64 bits (numpy, torch, jax), else None: such a loop cannot meet float64 tolerances."""
    for a in outs:
        first = a[0] if isinstance(a, (list, tuple)) and len(a) else a
        name = str(getattr(first, "dtype", "")).removeprefix("torch.")
        if name in ("float32", "float16", "bfloat16"):
            return name
    return None


def _as_iterates(a):
    if isinstance(a, (list, tuple)):
        return np.stack([_to_numpy(x) for x in a])
    return _to_numpy(a)


def _diagnose_final(W, p, X, y, W0, p0, nu, lr, steps, trainable, path):
    """Which common loop bug the final ``(W, p)`` matches, if any."""
    def near(path_end):
        Wc, pc = path_end
        return norm(W - Wc) <= 1e-9 * max(norm(Wc), 1e-300) and norm(p - pc) <= 1e-9 * max(norm(pc), 1e-300)
    extra = path + [_gd_step(X, y, *path[-1], nu, lr, trainable)[:2]]
    candidates = [(extra[steps - 1], f"it matches exact GD after {steps - 1} updates: the loop runs one update "
                                     "too few (an off-by-one in its range)"),
                  (extra[steps + 1], f"it matches exact GD after {steps + 1} updates: the loop runs one update "
                                     "too many (an off-by-one in its range)"),
                  (_gd_path(X, y, W0, p0, nu, 2 * lr, steps, trainable)[-1],
                   f"it matches exact GD with step 2 lr = {2 * lr:g}: the update applied twice"),
                  (_gd_path(X, y, W0, p0, nu, lr * lr, steps, trainable)[-1],
                   f"it matches exact GD with step lr^2 = {lr * lr:g}: lr multiplied in twice")]
    if trainable == "Wp":
        candidates += [(_gd_path(X, y, W0, p0, nu, lr, steps, trainable, sequential="p")[-1],
                        "it matches GD with p updated from the already-updated W: W and p must both be updated "
                        "from the same old iterate"),
                       (_gd_path(X, y, W0, p0, nu, lr, steps, trainable, sequential="W")[-1],
                        "it matches GD with W updated from the already-updated p: W and p must both be updated "
                        "from the same old iterate")]
    for end, what in candidates:
        if near(end):
            return what
    return None


def assert_training_matches(train_fn, config=None, *, rtol=DEFAULT_RTOL):
    """Run your whole training loop on the paper's data and check it against `attnsim.train`.

    Parameters
    ----------
    train_fn : callable
        Your full-batch gradient descent, ``train_fn(X, y, W0, p0, nu, lr, steps)``, in the paper's
        notation (scores ``X W^T p``, ``f = nu^T X^T softmax(scores)``, loss
        ``mean log(1 + exp(-y f))``; ``W`` and ``p`` both updated from the same old iterate; with
        ``config.trainable == "p"`` only ``p`` moves). It gets writable float64 copies of
        ``X`` (n, T, d), ``y`` (n,), ``W0`` (d, d), ``p0`` (d,), ``nu`` (d,), and ``lr`` (float)
        and ``steps`` (int), and returns either

        - the final iterate ``(W, p)``, shapes (d, d) and (d,), after ``steps`` updates; or
        - the trajectory ``(Ws, ps)``, shapes (steps + 1, d, d) and (steps + 1, d) (or lists of
          that many arrays): ``Ws[0], ps[0]`` are ``W0, p0``, ``Ws[k], ps[k]`` the iterate after
          ``k`` updates. Then the first step that is not a GD step is located.

        Outputs as in `assert_gradients_match` (torch tensors are detached).
    config : attnsim.Config, optional
        The data (`attnsim.make_data`), initialisation (`attnsim.init_params`; ``W0 = I`` is passed
        as an array for ``w0="identity"``), ``lr``, ``steps`` and ``trainable`` (``"Wp"`` or
        ``"p"``). Default: the paper's data at a small size,
        ``Config(n_train=8, n_test=1, d=16, eta=0.25, lr=0.1, steps=50, seed=0)`` (official
        initialisation, so ``p0 = 0``; gaps grow to ~5).
    rtol : "float64" or float
        ``"float64"`` (the default): a trajectory must take every step as an exact GD step from
        its own previous iterate, to float64 rounding (as in `assert_trajectory_matches`), and end
        within 1e-4 of `attnsim.train`; a final iterate must match `attnsim.train` to the sum of
        those per-step allowances along the exact path. A number: the relative tolerance of each
        step (trajectory) or of the final ``W``, ``p`` and scores.

    Raises
    ------
    AssertionError
        For a trajectory, the first step that is not a GD step (its errors, and what it looks like:
        a multiple of the GD step as when lr is applied twice, p updated from the new W, a stale
        gradient, no move); for a final iterate, its errors and which common loop bug it matches
        (one update too few or too many, lr twice, W and p updated from different iterates);
        or a wrong number of outputs, iterates or shapes.
    ConfigError
        ``config`` not a Config, ``trainable`` other than ``"Wp"`` or ``"p"``, or a bad ``rtol``.

    Examples
    --------
    >>> import numpy as np
    >>> import attnsim
    >>> def my_train(X, y, W0, p0, nu, lr, steps):
    ...     W, p = W0, p0
    ...     for _ in range(steps):
    ...         _, grad_W, grad_p = attnsim.loss_and_grads(X, y, W, p, nu)   # your gradients here
    ...         W, p = W - lr * grad_W, p - lr * grad_p
    ...     return W, p
    >>> assert_training_matches(my_train)
    >>> assert_training_matches(lambda *a: my_train(*a[:-1], a[-1] - 1))
    Traceback (most recent call last):
    ...
    AssertionError: final (W, p) of train_fn does not match attnsim.train after 50 steps ...
    """
    config = _TRAINING_CONFIG if config is None else config
    if not isinstance(config, Config):
        raise ConfigError(f"config must be an attnsim.Config (the data, initialisation, lr and steps); got "
                          f"{type(config).__name__}; e.g. attnsim.Config(n_train=8, d=16, steps=50)")
    trainable, lr, steps = config.trainable, config.lr, config.steps
    _check_trainable(trainable, "train_fn returns W and p")
    mode = _rtol_mode(rtol)
    data = make_data(config)
    W0, p0 = init_params(config)
    W0 = np.eye(config.d) if W0 is None else W0
    X, y, nu = data.X, data.y, data.nu
    out = train_fn(np.array(X), np.array(y), np.array(W0), np.array(p0), np.array(nu), float(lr), int(steps))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise AssertionError(f"train_fn must return (W, p) or a trajectory (Ws, ps); got {type(out).__name__}"
                             f"{' of length ' + str(len(out)) if isinstance(out, (tuple, list)) else ''}")
    low = _low_precision(out[0], out[1])
    low = (f"train_fn returned {low} arrays, whose rounding alone exceeds these float64 tolerances: compute in "
           "float64 (torch.float64, jax with jax_enable_x64, numpy's default)") if low else None
    W, p = _as_iterates(out[0]), _as_iterates(out[1])
    d = config.d
    context = (f"after {steps} steps (lr={lr:g}, trainable={trainable!r}) on make_data(config) with "
               f"n={config.n_train}, T={config.T}, d={d}, seed={config.seed}")
    ref = train(X, y, W0, p0, nu, lr=lr, steps=steps, trainable=trainable, engine="primal", save_at=[0, steps])
    if not ref.success:
        raise AssertionError(f"attnsim.train did not finish {context}: {ref.message}; choose another config")
    ref_W = W0 if ref.W is None else ref.W
    if W.shape == (d, d) and p.shape == (d,):
        path = _gd_path(X, y, W0, p0, nu, lr, steps, trainable)
        if mode == "float64":
            allow = np.zeros(2)
            for Wk, pk in path[:-1]:
                allow += _step_allowance(X, y, Wk, pk, nu, lr, trainable, rtol)[0]
            bad = [_describe(name, g, e, a) for name, g, e, a in (("W", W, ref_W, allow[0]), ("p", p, ref.p, allow[1]))
                   if not _close(g, e, a)]
        else:
            bad = _final_failures(W, p, X, ref_W, ref.p, float(rtol))
        if bad:
            what = low or _diagnose_final(W, p, X, y, W0, p0, nu, lr, steps, trainable, path)
            why = what or ("return the trajectory (Ws of shape (steps + 1, d, d), ps of shape (steps + 1, d)) to "
                           "locate the first step that differs")
            raise AssertionError(f"final (W, p) of train_fn does not match attnsim.train {context}:\n  "
                                 + "\n  ".join(bad) + f"\n  why: {why}")
        return
    if W.ndim != 3 or p.ndim != 2 or W.shape[1:] != (d, d) or p.shape[1:] != (d,) or len(W) != len(p):
        raise AssertionError(f"train_fn must return (W, p) of shapes ({d}, {d}) and ({d},), or a trajectory (Ws, ps) "
                             f"of shapes (steps + 1, {d}, {d}) and (steps + 1, {d}); got {W.shape} and {p.shape}")
    if len(p) != steps + 1:
        starts = _close(W[0], W0, 0.0) and _close(p[0], p0, 0.0)
        hint = (f"it starts at (W0, p0), so the loop ran {len(p) - 1} updates" if starts else
                "it does not start at (W0, p0): put the initial iterate first")
        raise AssertionError(f"train_fn returned a trajectory of {len(p)} iterates for steps={steps}; expected "
                             f"steps + 1 = {steps + 1}, the initial (W0, p0) first ({hint})")
    if not (_close(W[0], W0, 0.0) and _close(p[0], p0, 0.0)):
        raise AssertionError("the trajectory from train_fn does not start at the (W0, p0) it was given: "
                             "Ws[0], ps[0] must be the initial iterate (copy it before updating in place)")
    bad = _check_iterates(W, p, X, y, nu, lr, trainable, rtol if mode == "float64" else float(rtol), "train_fn")
    if bad:
        raise AssertionError(f"training loop does not match attnsim's GD {context}: {bad}")
    failures = _final_failures(W[-1], p[-1], X, ref_W, ref.p, _RTOL_CEILING if mode == "float64" else float(rtol))
    if failures:
        raise AssertionError(f"final iterate of train_fn does not match attnsim.train {context}:\n  "
                             + "\n  ".join(failures) + "\n  why: every step is a GD step to float64 rounding, so "
                             "the dynamics amplified the rounding (a smaller lr or fewer steps compare cleanly)")
