"""The vectorising exp of ``_kernels/exp.py``: glibc's bits where glibc is the library, its error bound everywhere."""

import math
import platform
import re

import mpmath
import numpy as np
import pytest
from numba import njit

from attnsim._kernels import core, exp as kexp
from attnsim._kernels import gd_twins


@njit
def _library(x, out):
    for k in range(x.shape[0]):
        out[k] = np.exp(x[k])                 # numba: a call into the C library's exp


@njit                                         # not cached: it inlines exp.py, whose changes a cache would miss
def _ours(x, out):
    for k in range(x.shape[0]):
        out[k] = kexp.exp(x[k])


def _glibc_with_fma():
    """The scope of the bit-for-bit claim: glibc >= 2.28 (the optimized-routines exp) on x86-64 with FMA."""
    name, version = platform.libc_ver()
    if name != "glibc" or platform.machine() != "x86_64":
        return False
    major, minor = (int(v) for v in version.split(".")[:2])
    try:
        flags = re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split()
    except (OSError, AttributeError):
        return False
    return (major, minor) >= (2, 28) and "fma" in flags


def _arguments(rng):
    """Uniform over the main range and the scores' side of it, every table slot at its edges, tiny
    arguments, both sides of +-512, the under- and overflow thresholds, and random bit patterns."""
    slots = (np.arange(-60000, 60000) + 0.5) * math.log(2) / 128
    return np.concatenate([
        rng.uniform(-512, 512, 2_000_000), -rng.exponential(20.0, 1_000_000),
        np.nextafter(slots, np.inf), np.nextafter(slots, -np.inf),
        rng.uniform(-1e-15, 1e-15, 100_000), [0.0, -0.0, 5e-324, -5e-324, 2.0 ** -54, -(2.0 ** -54)],
        rng.uniform(-520, -505, 100_000), rng.uniform(505, 520, 100_000),
        np.nextafter(512.0, 0.0) * np.array([1.0, -1.0]), [512.0, -512.0, 709.78, 709.79, -745.13, -745.14],
        [np.inf, -np.inf, np.nan],
        rng.integers(0, 2 ** 64, 500_000, dtype=np.uint64).view(np.float64),
    ])


@pytest.mark.skipif(not _glibc_with_fma(), reason="the bit-for-bit claim is about glibc >= 2.28 on x86-64 with FMA")
def test_exp_is_the_c_librarys_exp_bit_for_bit():
    x = _arguments(np.random.default_rng(0))
    ours, lib = np.empty_like(x), np.empty_like(x)
    _ours(x, ours)
    _library(x, lib)
    differ = (ours.view(np.uint64) != lib.view(np.uint64)) & ~(np.isnan(ours) & np.isnan(lib))
    assert not differ.any(), f"{differ.sum()} of {x.size} differ, first at x = {x[differ][:5].tolist()}"


def test_exp_is_within_half_an_ulp_and_a_bit_of_the_true_value():
    """glibc's bound for this algorithm is 0.509 ulp; checked against mpmath at 100 digits."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-511, 511, 20_000), -rng.exponential(10.0, 5_000)])
    ours = np.empty_like(x)
    _ours(x, ours)
    mpmath.mp.dps = 100
    worst = 0.0
    for xi, yi in zip(x, ours, strict=True):
        true = mpmath.exp(mpmath.mpf(float(xi)))
        ulp = math.ulp(float(true))
        worst = max(worst, float(abs(mpmath.mpf(float(yi)) - true) / ulp))
    assert 0.45 < worst <= 0.51, worst


def test_beyond_the_main_range_the_library_answers():
    x = np.array([512.0, 600.0, 709.7, 710.0, 1e300, np.inf, -512.0, -600.0, -745.1, -746.0, -1e300, -np.inf, np.nan])
    ours, lib = np.empty_like(x), np.empty_like(x)
    _ours(x, ours)
    _library(x, lib)
    np.testing.assert_array_equal(ours, lib)
    assert ours[5] == np.inf and ours[11] == 0.0 and np.isnan(ours[12]) and 0.0 < ours[8] < 1e-320


@pytest.mark.parametrize("gap, margin", [(511.0, 1.0), (600.0, 1.0), (800.0, 1.0), (1.0, 800.0), (700.0, 900.0)])
def test_the_core_takes_the_library_beyond_the_main_range(gap, margin):
    """A sample whose scores spread by ``gap``, outputs of size ``margin``: the vectorised passes
    flag arguments past 512 and the core redoes the softmax (from zero) or the loss derivative
    with the library's exp; against the NumPy twin."""
    n, T = 5, 8
    N = n * T
    rng = np.random.default_rng(2)
    z = rng.standard_normal(N)
    z[3 * T + 2] -= gap
    z[1 * T + 5] += gap
    v = margin * (1.0 + 0.1 * rng.standard_normal(N)) * np.repeat([1.0, -1.0, -1.0, 1.0, 1.0], T)
    y = np.array([1.0, -1.0, 1.0, 1.0, -1.0])
    relevant = np.zeros(T, dtype=bool)
    relevant[0] = True
    out = []
    for impl in (core, gd_twins):
        s, c, h, frak = np.empty(N), np.empty(N), np.empty(N), np.zeros(n)
        assert impl.coefficients(z, v, y, T, relevant, s, c, h, frak, np.zeros(core.fw_size(n, T)), False)
        out.append((s, c, h, frak))
    for a, b in zip(*out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-300)


def test_a_nan_score_leaves_the_top_token_in_range_for_the_jvp():
    """With a NaN score no token equals the maximum; the top token the JVP indexes with must still be
    a token (it read uninitialised scratch before)."""
    n, T = 3, 4
    z = np.arange(n * T, dtype=float)
    z[4] = np.nan                        # the first token of sample 1: its maximum stays NaN
    s, c, h = np.empty(n * T), np.empty(n * T), np.empty(0)
    fw = np.full(core.fw_size(n, T), 1e300)
    ok = core.coefficients(z, np.ones(n * T), np.ones(n), T, np.ones(T, dtype=bool), s, c, h, np.zeros(n), fw, True)
    top = core._jvp_views(fw, n, T)[3]
    assert not ok and np.all((top >= 0) & (top < T)), top
