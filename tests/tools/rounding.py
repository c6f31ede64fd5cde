"""What float64 can determine about a computation: how far its outputs move when its inputs move by one ulp.

Two correct implementations of one computation round differently. Where the computation keeps
its digits (most cases) they agree to 1e-12; where it does not (large steps that amplify rounding
by 1e6 in 30 steps, a result that is the small difference of large terms), no implementation can
agree with another beyond what the computation itself keeps. ``spread`` measures that with the
*reference* (the NumPy twin, the plain loop), independently of the code under test: its outputs'
largest change when every float64 input entry is moved by about one ulp in a random direction.
A comparison then allows ``FACTOR`` times that spread (``allowed``) on top of its fixed tolerance,
and a property test ``hypothesis.assume``\\ s the case is ``testable`` at all (relative spread at
most ``TESTABLE``, so that the allowance stays below ``FACTOR * TESTABLE = 1e-5``).
"""

import numpy as np

#: Random one-ulp moves of the inputs per estimate.
DRAWS = 4
#: How many times the reference's own spread a comparison allows: the code under test rounds at
#: every step, the estimate moves the inputs once.
FACTOR = 100.0
#: Relative spread above which a case can say nothing at the 1e-5 level.
TESTABLE = 1e-7


def moved(value, rng):
    """A copy of ``value`` with every float64 entry multiplied by ``1 +- 2^-52`` (about one ulp,
    either way; zeros stay zero); other values are returned as they are."""
    if isinstance(value, np.ndarray) and value.dtype == np.float64:
        return value * (1.0 + rng.choice([-1.0, 1.0], value.shape) * 2.0 ** -52)
    return value


def spread(outputs, inputs, *, movable=None, draws=DRAWS, seed=0):
    """``(base, spread)``: ``base = outputs(inputs)``, a dict of name to array, and per name the
    largest absolute change of that array (elementwise) over ``draws`` calls of ``outputs`` on
    ``inputs`` with the entries of the ``movable`` names (default all) moved by ``moved``.

    ``inputs`` is a dict of name to value; ``outputs`` must not modify it (pass it copies)."""
    rng = np.random.default_rng(seed)
    base = {k: np.asarray(v, dtype=np.float64) for k, v in outputs(inputs).items()}
    out = {k: np.zeros_like(v) for k, v in base.items()}
    names = inputs.keys() if movable is None else movable
    for _ in range(draws):
        got = outputs({k: moved(v, rng) if k in names else v for k, v in inputs.items()})
        for k, v in got.items():
            with np.errstate(invalid="ignore"):
                out[k] = np.fmax(out[k], np.abs(np.asarray(v, dtype=np.float64) - base[k]))
    return base, out


def relative(spread_arr, ref):
    """The spread relative to the reference's largest entry (0 for an all-zero reference)."""
    scale = float(np.max(np.abs(ref), initial=0.0))
    return float(np.max(spread_arr, initial=0.0)) / scale if scale > 0 else 0.0


def testable(spreads, base):
    """Whether every output's relative spread is at most ``TESTABLE`` (finite)."""
    return all(np.isfinite(relative(spreads[k], base[k])) and relative(spreads[k], base[k]) <= TESTABLE
               for k in base)


def allowed(spread_arr, floor):
    """Elementwise absolute tolerance: ``max(floor, FACTOR * spread)``."""
    return np.maximum(floor, FACTOR * spread_arr)


def assert_close(actual, desired, *, rtol, atol, err_msg=""):
    """``|actual - desired| <= rtol |desired| + atol`` elementwise, ``atol`` an array (``allowed``)
    or a number; NaN matches NaN, and an infinity the same infinity, in the same place (as in
    ``np.testing.assert_allclose``). The message names the worst entry, its difference and its
    allowance."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(desired, dtype=np.float64)
    assert a.shape == b.shape, f"shapes {a.shape} and {b.shape}; {err_msg}"
    same = (np.isnan(a) & np.isnan(b)) | (a == b)
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - b))
        limit = rtol * np.abs(b) + np.broadcast_to(atol, b.shape)
        bad = ~same & ~(np.isfinite(diff) & (diff <= limit))
        excess = np.where(bad, np.nan_to_num(diff - limit, nan=np.inf), -np.inf)
    if bad.any():
        worst = np.unravel_index(int(np.argmax(excess)), b.shape) if b.ndim else ()
        raise AssertionError(f"{int(bad.sum())} of {b.size} entries differ beyond rtol={rtol:g} plus the rounding "
                             f"allowance; worst at {tuple(int(i) for i in worst)}: {a[worst]!r} against {b[worst]!r}, "
                             f"difference {diff[worst]:.3g}, allowed {limit[worst]:.3g}; {err_msg}")
