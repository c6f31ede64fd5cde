"""``log1p`` that vectorises: glibc's algorithm, written out so that LLVM can run it eight lanes wide.

The population kernel takes the logistic loss ``log1p(exp(-|u|)) + max(-u, 0)`` of every draw and
class (``population._sums``); numba lowers ``np.log1p`` to a scalar call into the C library, and
those calls, with ``exp``'s, were a third of the kernel's time. ``log1p_unit`` is glibc's ``log1p``
(fdlibm's algorithm: ``1 + x = 2^k (1 + f)`` with ``sqrt(2)/2 < 1 + f < sqrt(2)``, a correction
``c`` for the rounding of ``1 + x``, ``log(1 + f)`` from ``s = f / (2 + f)`` and a degree-14
polynomial in ``s``) in the build glibc selects on CPUs with FMA, every fused multiply-add where
that build has one (``exp._fma``), as branch-free selects. On ``0 <= x < 2^53`` it returns that
build's bits (``tests/test_libm_ports.py`` checks millions of arguments against the library and the
one-ulp bound against mpmath); negative, huge and non-finite arguments are outside its domain
(the loss never asks for them).
"""

import numpy as np

from .exp import _bits, _double, _fma
from .jit import njit

_LN2_HI, _LN2_LO = float.fromhex("0x1.62e42feep-1"), float.fromhex("0x1.a39ef35793c76p-33")
#: fdlibm's Lp1 .. Lp7, the polynomial in s^2
_LP1, _LP2, _LP3, _LP4, _LP5, _LP6, _LP7 = (float.fromhex(h) for h in """
    0x1.5555555555593p-1 0x1.999999997fa04p-2 0x1.2492494229359p-2 0x1.c71c51d8e78afp-3
    0x1.7466496cb03dep-3 0x1.39a09d078c69fp-3 0x1.2f112df3e5244p-3""".split())
_TWO_THIRDS = 0.66666666666666666


@njit(cache=True, inline="always")
def _high(x):
    """The upper 32 bits of a float64, as a signed integer (fdlibm's ``GET_HIGH_WORD``)."""
    return np.int64(_bits(x) >> np.uint64(32))


@njit(cache=True, inline="always")
def log1p_unit(x):
    """glibc's ``log1p(x)`` for ``0 <= x < 2^53``, bit for bit (module docstring)."""
    hx = _high(x)
    # x >= sqrt(2) - 1: 1 + x = 2^k u with u normalised into [sqrt(2)/2, sqrt(2)), c the rounding of 1 + x
    u = 1.0 + x
    hu = _high(u)
    k = (hu >> 20) - 1023
    c = (1.0 - (u - x) if k > 0 else x - (u - 1.0)) / u
    hu &= 0x000fffff
    upper = hu >= 0x6a09e                              # u >= sqrt(2): halve it
    top = np.uint64(hu | (0x3fe00000 if upper else 0x3ff00000)) << np.uint64(32)
    un = _double((_bits(u) & np.uint64(0xffffffff)) | top)
    # below sqrt(2) - 1: k = 0, f = x exactly
    small = hx < 0x3fda827a
    k = 0 if small else (k + 1 if upper else k)
    hu = 1 if small else ((0x00100000 - hu) >> 2 if upper else hu)
    f = x if small else un - 1.0
    kd = float(k)
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    z6 = z4 * z2
    R = _fma(z6, _fma(z, _LP7, _LP6), _fma(z4, _fma(z, _LP5, _LP4), _fma(z, _LP1, z2 * _fma(z, _LP3, _LP2))))
    main = (f - (hfsq - s * (hfsq + R)) if k == 0
            else _fma(kd, _LN2_HI, -((hfsq - (s * (hfsq + R) + _fma(kd, _LN2_LO, c))) - f)))
    # |f| < 2^-20 (u within 2^-20 of a power of two): a shorter series, or exactly k ln 2 + c
    Rs = _fma(-f, _TWO_THIRDS, 1.0) * hfsq
    near = f - Rs if k == 0 else _fma(kd, _LN2_HI, -((Rs - _fma(kd, _LN2_LO, c)) - f))
    exact = 0.0 if k == 0 else _fma(kd, _LN2_HI, _fma(kd, _LN2_LO, c))
    out = main if hu != 0 else (near if f != 0.0 else exact)
    # x < 2^-29: x - x^2 / 2, or x itself below 2^-54
    tiny = x if hx < 0x3c900000 else _fma(-(x * x), 0.5, x)
    return tiny if hx < 0x3e200000 else out
