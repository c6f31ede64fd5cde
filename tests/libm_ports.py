"""What the tests of the kernels' ports of C-library functions share (``test_libm_ports``, ``test_exp``,
``test_erfc``): the loops that call the library and the port, the scope of the bit-for-bit claims,
the error against mpmath, and the check that a loop over a port runs on SIMD lanes."""

import math
import platform
import re

import mpmath
import numpy as np

from attnsim._kernels.jit import njit as kernel_njit


def glibc_with_fma():
    """The scope of the bit-for-bit claims: glibc >= 2.28 on x86-64 with FMA (the builds of ``exp``
    and ``log1p`` that glibc selects there, and its ``erfc``)."""
    name, version = platform.libc_ver()
    if name != "glibc" or platform.machine() != "x86_64":
        return False
    major, minor = (int(v) for v in version.split(".")[:2])
    try:
        flags = re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split()
    except (OSError, AttributeError):
        return False
    return (major, minor) >= (2, 28) and "fma" in flags


def loop_over(f):
    """``loop(x, out)``: ``out[k] = f(x[k])``, compiled as the kernels are (NumPy's error model), not
    cached (it inlines the port's module, whose changes a cache would miss). ``f`` a numba function
    (a port, or a library call such as ``np.exp`` or ``math.erfc``, which numba lowers to a call)."""
    @kernel_njit
    def loop(x, out):
        for k in range(x.shape[0]):
            out[k] = f(x[k])
    return loop


def differing(ours, library, x):
    """A message naming the arguments where the loops ``ours`` and ``library`` (``loop_over``) give
    results that differ in their bits, '' where none does (two NaNs count as equal)."""
    a, b = np.empty_like(x), np.empty_like(x)
    ours(x, a)
    library(x, b)
    differ = (a.view(np.uint64) != b.view(np.uint64)) & ~(np.isnan(a) & np.isnan(b))
    return f"{differ.sum()} of {x.size} differ, first at x = {x[differ][:5].tolist()}" if differ.any() else ""


def worst_ulps(ours, x, true):
    """Largest error of the loop ``ours`` over ``x``, in ulps of the true value ``true(mpf)`` at 100 digits."""
    values = np.empty_like(x)
    ours(x, values)
    mpmath.mp.dps = 100
    worst = 0.0
    for xi, yi in zip(x, values, strict=True):
        exact = true(mpmath.mpf(float(xi)))
        worst = max(worst, float(abs(mpmath.mpf(float(yi)) - exact) / math.ulp(float(exact))))
    return worst


#: Calls into the C library's math functions (or LLVM's ``exp``, which lowers to them lane by lane).
_LIBRARY_CALL = re.compile(r"call [^@\n]*@(llvm\.exp\.|exp\b|log1p\b|erfc\b)")


def runs_on_simd_lanes(f, x):
    """True when LLVM vectorised a loop over ``f`` (its IR holds 4- or 8-wide double vectors) with
    no call into the C library's ``exp``, ``log1p`` or ``erfc`` left in it."""
    loop = loop_over(f)
    loop(x, np.empty_like(x))
    ir = "".join(loop.inspect_llvm().values())
    return ("<8 x double>" in ir or "<4 x double>" in ir) and not _LIBRARY_CALL.search(ir)
