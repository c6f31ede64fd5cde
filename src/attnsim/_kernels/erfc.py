"""``erfc`` that vectorises: glibc's algorithm, written out so that LLVM can run it on SIMD lanes.

The population kernel takes ``0.5 * erfc(-x)`` (the normal CDF) of every draw; numba lowers
``math.erfc`` to a scalar call into the C library, which keeps the loop around it from
vectorising. ``erfc_main`` is glibc's ``erfc`` (2.36; fdlibm's ``s_erf.c`` with Shimizu's split
of the polynomials into partial sums, whose order of operations, read from the machine code of
the x86-64 ``libm.so.6``, decides the bits): ``1 - x - x R(x^2)`` on ``|x| < 0.84375``,
``1 - erx - P(s)/Q(s)`` with ``s = |x| - 1`` on ``[0.84375, 1.25)``, and on ``[1.25, 28)``
``exp(-z^2 - 0.5625) exp((z - x)(z + x) + R(s)/S(s)) / x`` with ``s = 1/x^2`` and ``z`` ``x`` with
its low 32 bits cleared (one pair of rational functions below ``1/0.35``, another above); for
negative ``x`` the same pieces give ``2 - erfc(|x|)`` (``1 + (erx + P/Q)``, ``2 - r/x``), and ``2``
below -6. That ``erfc`` is the plain SSE2 build (no fused multiply-adds); its two ``exp`` calls go
to glibc's FMA build of ``exp``, whose bits ``exp.exp_main`` gives while its argument stays inside
``|arg| < 512``. All four ranges are evaluated in one pass, with one set of coefficients selected
per lane (the shorter polynomials padded with zero terms, which add exact zeros) and the results
selected, so there is no branch.

On ``a < ERFC_MAIN_LIMIT`` (``-inf`` included; ``a <= -6`` gives ``2.0``, as glibc's
``2 - tiny`` rounds) it returns glibc's bits exactly (``tests/test_libm_ports.py`` checks millions of
arguments against the library and fdlibm's error bound against mpmath); beyond, ``exp``'s first
argument leaves ``exp_main``'s range. ``in_erfc_main`` flags the lanes inside (False for NaN); a
loop redoes the others with ``math.erfc``.
"""

import numpy as np

from .exp import _bits, _double, exp_main
from .jit import njit

#: ``erfc_main`` is glibc's ``erfc`` for ``a`` below this: ``-(22.5^2) - 0.5625 > -512`` keeps both
#: of its ``exp`` arguments in ``exp_main``'s range (glibc's ``erfc`` underflows to 0 near 27.3).
ERFC_MAIN_LIMIT = 22.5

_ERX = float.fromhex("0x1.b0ac160000000p-1")     # 0.84506291151 rounded to single precision
_ONE_MINUS_ERX = float.fromhex("0x1.3d4fa80000000p-3")
_HIGH_WORD = np.uint64(0xffffffff00000000)       # fdlibm's SET_LOW_WORD(z, 0)

# Each range's numerator c0..c7 and denominator d1..d8 (d0 = 1), in the one form (and order)
#   P = (((c0 + t c1) + t^2 (c2 + t c3)) + t^4 (c4 + t c5)) + t^6 (c6 + t c7)
#   Q = ((((1 + t d1) + t^2 (d2 + t d3)) + t^4 (d4 + t d5)) + t^6 (d6 + t d7)) + t^8 d8
# (t^4 = t^2 t^2, t^6 = t^2 t^4, t^8 = t^4 t^4) in which glibc evaluates the longest, ra/sa; the
# shorter ones are it with zero coefficients, whose terms add exact zeros (c + t 0 = c, P + 0 = P).
# The coefficients, a polynomial every two rows: fdlibm's pp, qq (|x| < 0.84375, t = x^2), pa, qa
# (0.84375 <= |x| < 1.25, t = |x| - 1), ra, sa (1.25 <= |x| < 1/0.35, t = 1/x^2), rb, sb (1/0.35 <= |x| < 28,
# t = 1/x^2).
_TABLE = """
  0x1.06eba8214db68p-3  -0x1.4cd7d691cb913p-2  -0x1.d2a51dbd7194fp-6  -0x1.7a291236668e4p-8
-0x1.8ead6120016acp-16                      0                      0                      0
  0x1.97779cddadc09p-2   0x1.0a54c5536cebap-4   0x1.4d022c4d36b0fp-8  0x1.15dc9221c1a10p-13
-0x1.09c4342a26120p-18                      0                      0                      0
 -0x1.359b8bef77538p-9   0x1.a8d00ad92b34dp-2  -0x1.7d240fbb8c3f1p-2   0x1.45fca805120e4p-2
 -0x1.c63983d3e28ecp-4   0x1.22a36599795ebp-5  -0x1.1bf380a96073fp-9                      0
  0x1.b3e6618eee323p-4   0x1.14af092eb6f33p-1   0x1.2635cd99fe9a7p-4   0x1.02660e763351fp-3
  0x1.bedc26b51dd1cp-7   0x1.88b545735151dp-7                      0                      0
 -0x1.43412600d6435p-7  -0x1.63416e4ba7360p-1  -0x1.51e0441b0e726p+3  -0x1.f300ae4cba38dp+5
 -0x1.44cb184282266p+7  -0x1.7135cebccabb2p+7  -0x1.4526557e4d2f2p+6  -0x1.3a0efc69ac25cp+3
  0x1.3a6b9bd707687p+4   0x1.1350c526ae721p+7   0x1.b290dd58a1a71p+8   0x1.42b1921ec2868p+9
  0x1.ad02157700314p+8   0x1.b28a3ee48ae2cp+6   0x1.a47ef8e484a93p+2  -0x1.eeff2ee749a62p-5
 -0x1.4341239e86f4ap-7  -0x1.993ba70c285dep-1  -0x1.1c209555f995ap+4  -0x1.4145d43c5ed98p+7
 -0x1.3ec881375f228p+9 -0x1.004616a2e5992p+10  -0x1.e384e9bdc383fp+8                      0
  0x1.e568b261d5190p+4   0x1.45cae221b9f0ap+8  0x1.802eb189d5118p+10  0x1.8ffb7688c246ap+11
 0x1.3f219cedf3be6p+11   0x1.da874e79fe763p+8  -0x1.670e242712d62p+4                      0
"""

#: The four ranges' 16 coefficients (numerator, then denominator), range after range (``k`` in
#: ``erfc_main`` numbers them): ``_TABLE``'s C99 hex floats in reading order.
_COEF = np.array([float.fromhex(h) for h in _TABLE.split()])


@njit(cache=True, inline="always")
def _pick(k, j):
    """Coefficient ``j`` of range ``k``, as selects between constants (16 gathers from ``_COEF``
    took twice as long)."""
    return _COEF[j] if k == 0 else (_COEF[16 + j] if k == 1 else (_COEF[32 + j] if k == 2 else _COEF[48 + j]))


@njit(cache=True, inline="always")
def in_erfc_main(a):
    """True where ``erfc_main(a)`` is glibc's ``erfc(a)``: ``a < ERFC_MAIN_LIMIT`` (False for NaN)."""
    return a < ERFC_MAIN_LIMIT


@njit(cache=True, inline="always")
def erfc_main(a):
    """glibc's ``erfc(a)`` for ``a < ERFC_MAIN_LIMIT``, bit for bit (module docstring); beyond, not
    glibc's."""
    ix = np.int64((_bits(a) >> np.uint64(32)) & np.uint64(0x7fffffff))
    neg = _bits(a) >> np.uint64(63) != np.uint64(0)
    x = abs(a)
    # the range: 0 below 0.84375, 1 below 1.25, 2 below 1/0.35, 3 above
    k = (np.int64(ix >= 0x3feb0000) + np.int64(ix >= 0x3ff40000) + np.int64(ix >= 0x4006db6d))
    # t: x^2, |x| - 1, 1/x^2, 1/x^2; glibc's partial sums, in its order (the form above _TABLE)
    s = 1.0 / (x * x)
    t = a * a if k == 0 else (x - 1.0 if k == 1 else s)
    t2 = t * t
    t4 = t2 * t2
    t6 = t2 * t4
    p1 = _pick(k, 0) + t * _pick(k, 1)
    p2 = _pick(k, 2) + t * _pick(k, 3)
    p3 = _pick(k, 4) + t * _pick(k, 5)
    p4 = _pick(k, 6) + t * _pick(k, 7)
    q1 = 1.0 + t * _pick(k, 8)
    q2 = _pick(k, 9) + t * _pick(k, 10)
    q3 = _pick(k, 11) + t * _pick(k, 12)
    q4 = _pick(k, 13) + t * _pick(k, 14)
    P = ((p1 + t2 * p2) + t4 * p3) + t6 * p4
    Q = (((q1 + t2 * q2) + t4 * q3) + t6 * q4) + (t4 * t4) * _pick(k, 15)
    y = P / Q
    # |x| < 0.84375: 1 - (x + x y) below 1/4, 1/2 - (x y + (x - 1/2)) above
    small = (1.0 - (a + a * y)) if (neg or ix < 0x3fd00000) else (0.5 - (a * y + (a - 0.5)))
    # 0.84375 <= |x| < 1.25
    mid = 1.0 + (_ERX + y) if neg else _ONE_MINUS_ERX - y
    # 1.25 <= |x| < 28
    z = _double(_bits(x) & _HIGH_WORD)
    r = (exp_main(-z * z - 0.5625) * exp_main((z - x) * (z + x) + y)) / x
    big = 2.0 - r if neg else r
    out = small if k == 0 else (mid if k == 1 else big)
    out = 2.0 if (neg and ix >= 0x40180000) else out    # x <= -6: 2 - tiny
    return 1.0 - a if ix < 0x3c700000 else out           # |x| < 2^-56
