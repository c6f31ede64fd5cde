"""The kernels' ports of C-library functions (``_kernels/exp.py``, ``log1p.py``, ``erfc.py``): each is
the library's function bit for bit where the claim holds (glibc on x86-64 with FMA), within its
algorithm's error of the true value everywhere (mpmath), and a loop over it runs on SIMD lanes (a loop
over the library's cannot: it is a call). Each port's own cases (its fallback beyond its domain) are
in ``test_exp.py`` and ``test_erfc.py``."""

import math

import mpmath
import numpy as np
import pytest

from attnsim._kernels import erfc as kerfc, exp as kexp, log1p as klog1p
from libm_ports import differing, glibc_with_fma, loop_over, runs_on_simd_lanes, worst_ulps

LIMIT = kerfc.ERFC_MAIN_LIMIT


def _exp_arguments(rng):
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


def _log1p_arguments(rng):
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


def _erfc_arguments(rng):
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



def _accuracy_sample(name, rng):
    """Arguments for the comparison with mpmath (tens of thousands: 100-digit evaluations are slow)."""
    if name == "exp":
        return np.concatenate([rng.uniform(-511, 511, 20_000), -rng.exponential(10.0, 5_000)])
    if name == "log1p":
        return np.concatenate([rng.uniform(0.0, 1.0, 8_000), np.exp(-rng.uniform(0.0, 512.0, 8_000)),
                               1.0 - rng.uniform(0.0, 2.0 ** -17, 2_000), rng.uniform(0.0, 1e6, 2_000)])
    return np.concatenate([rng.uniform(-6.0, LIMIT, 10_000), rng.uniform(-1.25, 1.25, 4_000),
                           rng.uniform(1.25, 6.0, 4_000), rng.uniform(-6.0, -1.25, 2_000)])


#: name -> (the port, the library's function, the bit-for-bit arguments, mpmath's function, the
#: interval the worst error in ulps must lie in, the port's vectorised path (``exp``'s main range,
#: without its library fallback) and a grid for the vectorisation check).
#: exp: glibc's bound for the algorithm is 0.509 ulp. log1p: fdlibm's bound is 1 ulp.
#: erfc: fdlibm's erfc is not correctly rounded: its rational approximations and, above 1.25, the two
#: ``exp``s and the division leave up to a few ulps (on this sample the worst is 2.30 ulps, at
#: x = 1.2073 in [0.84375, 1.25), where ``1 - erx - P/Q`` cancels; 120,000 arguments found 3.46
#: there). The library's erfc has the same bits, so the same errors.
PORTS = {
    "exp": (kexp.exp, np.exp, _exp_arguments, mpmath.exp, (0.45, 0.51), kexp.exp_main, np.linspace(-10.0, 0.0, 64)),
    "log1p": (klog1p.log1p_unit, np.log1p, _log1p_arguments, mpmath.log1p, (0.5, 1.0), klog1p.log1p_unit,
              np.linspace(0.0, 1.0, 64)),
    "erfc": (kerfc.erfc_main, math.erfc, _erfc_arguments, mpmath.erfc, (2.0, 2.5), kerfc.erfc_main,
             np.linspace(-6.0, 6.0, 64)),
}


@pytest.mark.skipif(not glibc_with_fma(), reason="the bit-for-bit claim is about glibc >= 2.28 on x86-64 with FMA")
@pytest.mark.parametrize("name", PORTS)
def test_the_port_is_the_c_librarys_function_bit_for_bit(name):
    port, library, arguments = PORTS[name][:3]
    x = arguments(np.random.default_rng(0))
    assert x.size > 3_000_000
    message = differing(loop_over(port), loop_over(library), x)
    assert not message, message


@pytest.mark.parametrize("name", PORTS)
def test_the_port_is_within_its_algorithms_error_of_the_true_value(name):
    port, _, _, true, (low, high), _, _ = PORTS[name]
    worst = worst_ulps(loop_over(port), _accuracy_sample(name, np.random.default_rng(1)), true)
    assert low < worst <= high, worst


@pytest.mark.parametrize("name", PORTS)
def test_a_loop_over_the_port_runs_on_simd_lanes(name):
    _, library, *_, vectorised, grid = PORTS[name]
    assert runs_on_simd_lanes(vectorised, grid)
    assert not runs_on_simd_lanes(library, grid)
