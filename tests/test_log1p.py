"""The vectorising log1p of ``_kernels/log1p.py``: the C library's bits where that is glibc's FMA build, one ulp everywhere."""

import math

import mpmath
import numpy as np
import pytest
from numba import njit

from attnsim._kernels import log1p as klog1p
from test_exp import _glibc_with_fma


@njit
def _library(x, out):
    for k in range(x.shape[0]):
        out[k] = np.log1p(x[k])               # numba: a call into the C library's log1p


@njit                                         # not cached: it inlines log1p.py, whose changes a cache would miss
def _ours(x, out):
    for k in range(x.shape[0]):
        out[k] = klog1p.log1p_unit(x[k])


def _arguments(rng):
    """The loss's arguments ``exp(-|u|)``, the unit interval, both sides of every branch's edge
    (sqrt(2) - 1, the halving of u at sqrt(2), |f| < 2^-20 next to 1 and 2, 2^-29, 2^-54),
    integers and random bit patterns up to 2^53."""
    edges = np.array([math.sqrt(2) - 1, 0.41421350836753845, 2.0 ** -29, 2.0 ** -54, 1.0, 3.0, 2.0 ** 52])
    near = np.concatenate([np.nextafter(edges, 0.0), edges, np.nextafter(edges, np.inf)])
    bits = rng.integers(0, np.float64(2.0 ** 53).view(np.int64), 500_000, dtype=np.int64).view(np.float64)
    return np.concatenate([
        np.exp(-rng.uniform(0.0, 512.0, 1_000_000)), np.exp(-rng.exponential(1.0, 500_000)),
        rng.uniform(0.0, 1.0, 1_000_000), 1.0 - rng.uniform(0.0, 2.0 ** -17, 200_000),
        1.0 + rng.uniform(0.0, 2.0 ** -17, 200_000), 0.4142 + rng.uniform(0.0, 4e-5, 200_000),
        rng.uniform(0.0, 2.0 ** -28, 100_000), rng.uniform(0.0, 2.0 ** -53, 10_000),
        np.arange(1.0, 100_000.0), near, [0.0, 5e-324, 2.2250738585072014e-308], bits,
    ])


@pytest.mark.skipif(not _glibc_with_fma(), reason="the bit-for-bit claim is about glibc on x86-64 with FMA")
def test_log1p_is_the_c_librarys_log1p_bit_for_bit():
    x = _arguments(np.random.default_rng(0))
    ours, lib = np.empty_like(x), np.empty_like(x)
    _ours(x, ours)
    _library(x, lib)
    differ = ours.view(np.uint64) != lib.view(np.uint64)
    assert not differ.any(), f"{differ.sum()} of {x.size} differ, first at x = {x[differ][:5].tolist()}"


def test_log1p_is_within_one_ulp_of_the_true_value():
    """fdlibm's bound for this algorithm is 1 ulp; checked against mpmath at 100 digits."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(0.0, 1.0, 8_000), np.exp(-rng.uniform(0.0, 512.0, 8_000)),
                        1.0 - rng.uniform(0.0, 2.0 ** -17, 2_000), rng.uniform(0.0, 1e6, 2_000)])
    ours = np.empty_like(x)
    _ours(x, ours)
    mpmath.mp.dps = 100
    worst = 0.0
    for xi, yi in zip(x, ours, strict=True):
        true = mpmath.log1p(mpmath.mpf(float(xi)))
        worst = max(worst, float(abs(mpmath.mpf(float(yi)) - true) / math.ulp(float(true))))
    assert 0.5 < worst < 1.0, worst


def test_a_loop_over_log1p_runs_on_simd_lanes():
    """The point of the port: under the kernels' decorator a loop over it vectorises (a loop over the
    library's ``log1p`` cannot: it is a call)."""
    from attnsim._kernels.jit import njit as kernel_njit

    @kernel_njit
    def loop(x, out):
        for k in range(x.shape[0]):
            out[k] = klog1p.log1p_unit(x[k])

    x = np.linspace(0.0, 1.0, 64)
    out = np.empty_like(x)
    loop(x, out)
    ir = "".join(loop.inspect_llvm().values())
    assert "<8 x double>" in ir or "<4 x double>" in ir
