"""The vectorising erfc of ``_kernels/erfc.py``: the C library's bits where that is glibc, fdlibm's error bound everywhere."""

import math

import mpmath
import numpy as np
import pytest
from numba import njit

from attnsim._kernels import erfc as kerfc
from attnsim._kernels.jit import njit as kernel_njit
from test_exp import _glibc_with_fma

LIMIT = kerfc.ERFC_MAIN_LIMIT


@njit
def _library(x, out):
    for k in range(x.shape[0]):
        out[k] = math.erfc(x[k])              # numba: a call into the C library's erfc


@kernel_njit                                  # NumPy's error model, as the kernels (1 / x^2 = inf at x = 0);
def _ours(x, out):                            # not cached: it inlines erfc.py, whose changes a cache would miss
    for k in range(x.shape[0]):
        out[k] = kerfc.erfc_main(x[k])


@kernel_njit
def _with_fallback(x, out):
    """The caller's pattern: ``erfc_main`` on its domain, the library's ``erfc`` on the lanes it flags."""
    for k in range(x.shape[0]):
        out[k] = kerfc.erfc_main(x[k]) if kerfc.in_erfc_main(x[k]) else math.erfc(x[k])


def _double(high):
    """The float64 whose upper 32 bits are ``high`` and lower 32 bits zero (fdlibm's range edges)."""
    return float(np.uint64(high << 32).view(np.float64))


#: The edges of glibc's ranges (its tests of the high word, and the decimal values they stand for):
#: 2^-56 (1 - x below), 2^-28, 1/4 (the two formulas below 0.84375), 0.84375, 1.25, 1/0.35, 6 (2 below -6).
EDGES = np.array([_double(0x3c700000), 2.0 ** -28, _double(0x3fd00000), _double(0x3feb0000), _double(0x3ff40000),
                  _double(0x4006db6d), 1 / 0.35, _double(0x40180000)])


def _steps(centre, n):
    """The ``2 n + 1`` doubles nearest ``centre``, ``n`` ulps each side."""
    bits = np.float64(centre).view(np.int64) + np.arange(-n, n + 1, dtype=np.int64)
    return bits.view(np.float64)


def _arguments(rng):
    """Uniform over the domain and over the caller's (-6, 6), dense on both sides of every range edge
    and its negative (ulp by ulp, then within 10^-9 and 10^-5 relative), tiny and subnormal arguments,
    up to the domain's limit, at and below -6 (and -inf), and random bit patterns in the domain."""
    edges = np.concatenate([EDGES, -EDGES])
    near = [_steps(e, 2_000) for e in edges]
    near += [e * (1.0 + rng.uniform(-1e-9, 1e-9, 20_000)) for e in edges]
    near += [e * (1.0 + rng.uniform(-1e-5, 1e-5, 20_000)) for e in edges]
    near += [np.nextafter(edges, 0.0), np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]
    bits = rng.integers(0, 2 ** 64, 1_000_000, dtype=np.uint64).view(np.float64)
    six = np.float64(6.0).view(np.int64)
    below_six = rng.integers(0, six, 500_000, dtype=np.int64).view(np.float64) * rng.choice([-1.0, 1.0], 500_000)
    return np.concatenate([
        rng.uniform(-6.0, LIMIT, 2_000_000), rng.uniform(-6.0, 6.0, 1_000_000),
        rng.uniform(-1.25, 1.25, 500_000), rng.uniform(-2.0 ** -20, 2.0 ** -20, 100_000),
        rng.uniform(-2.0 ** -55, 2.0 ** -55, 10_000), rng.uniform(-1e-300, 1e-300, 10_000),
        [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, -2.2250738585072014e-308],
        *near, _steps(np.nextafter(LIMIT, 0.0), 2_000)[:2_001], LIMIT - rng.uniform(0.0, 1.0, 20_000),
        rng.uniform(-30.0, -6.0, 20_000), [-6.0, -28.0, -1e300, -np.inf],
        bits[bits < LIMIT], below_six,
    ])


@pytest.mark.skipif(not _glibc_with_fma(), reason="the bit-for-bit claim is about glibc on x86-64 with FMA")
def test_erfc_is_the_c_librarys_erfc_bit_for_bit():
    x = _arguments(np.random.default_rng(0))
    assert np.all(x < LIMIT) and x.size > 5_000_000
    ours, lib = np.empty_like(x), np.empty_like(x)
    _ours(x, ours)
    _library(x, lib)
    differ = ours.view(np.uint64) != lib.view(np.uint64)
    assert not differ.any(), f"{differ.sum()} of {x.size} differ, first at x = {x[differ][:5].tolist()}"


def test_erfc_is_within_fdlibms_error_of_the_true_value():
    """fdlibm's erfc is not correctly rounded: its rational approximations and, above 1.25, the two
    ``exp``s and the division leave up to a few ulps; checked against mpmath at 100 digits (on this
    sample the worst is 2.30 ulps, at ``x`` = 1.2073 in ``[0.84375, 1.25)``, where ``1 - erx - P/Q``
    cancels; 120,000 arguments found 3.46 there). The library's erfc has the same bits, so the same errors."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-6.0, LIMIT, 10_000), rng.uniform(-1.25, 1.25, 4_000),
                        rng.uniform(1.25, 6.0, 4_000), rng.uniform(-6.0, -1.25, 2_000)])
    ours = np.empty_like(x)
    _ours(x, ours)
    mpmath.mp.dps = 100
    worst = 0.0
    for xi, yi in zip(x, ours, strict=True):
        true = mpmath.erfc(mpmath.mpf(float(xi)))
        worst = max(worst, float(abs(mpmath.mpf(float(yi)) - true) / math.ulp(float(true))))
    assert 2.0 < worst < 2.5, worst


def test_in_erfc_main_flags_the_domain_and_the_library_answers_beyond():
    x = np.array([-np.inf, -1e300, -6.0, -1.0, 0.0, 1.0, 22.0, np.nextafter(LIMIT, 0.0),
                  LIMIT, 25.0, 27.0, 27.3, 28.0, 1e300, np.inf, np.nan])
    inside = np.array([kerfc.in_erfc_main(v) for v in x])
    np.testing.assert_array_equal(inside, x < LIMIT)
    ours, lib = np.empty_like(x), np.empty_like(x)
    _with_fallback(x, ours)
    _library(x, lib)
    np.testing.assert_array_equal(ours, lib)
    assert ours[0] == 2.0 and ours[-3] == 0.0 and np.isnan(ours[-1])


def test_a_loop_over_erfc_runs_on_simd_lanes():
    """The point of the port: under the kernels' decorator a loop over it vectorises (a loop over the
    library's ``erfc`` cannot: it is a call)."""
    @kernel_njit
    def loop(x, out):
        for k in range(x.shape[0]):
            out[k] = kerfc.erfc_main(x[k])

    x = np.linspace(-6.0, 6.0, 64)
    out = np.empty_like(x)
    loop(x, out)
    ir = "".join(loop.inspect_llvm().values())
    assert "<8 x double>" in ir or "<4 x double>" in ir
