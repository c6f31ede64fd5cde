"""``exp`` that vectorises: glibc's algorithm, written out so that LLVM can run it eight lanes wide.

The coefficient core takes ``exp`` of every score gap each step (N = n T of them), and numba
lowers ``np.exp`` to a scalar call into the C library: 160 calls were about half of the core's
time. ``exp_main`` is the main path of glibc's ``exp`` (since 2.28, from ARM's optimized-routines:
``x = k ln2/128 + r``, ``2^(k/128)`` from a 128-entry table, a degree-5 polynomial in ``r``; the
variant glibc selects on CPUs with FMA), with every fused multiply-add where that build has one
(``llvm.fma``, correctly rounded on every CPU). On ``|x| < 512`` it returns glibc's bits exactly
(``tests/test_libm_ports.py`` checks millions of arguments against the library and the 0.51-ulp bound
against mpmath), so runs keep the bits they had, and on other C libraries they now get the same
bits as on glibc. Arguments with ``|x| >= 512``, infinities and NaN take the library's ``exp``
(``exp``; a loop that calls ``exp_main`` flags them and redoes its pass with ``exp``, as
``core.coefficients`` does): glibc's special cases (overflow, subnormal results) stay glibc's.

Found by testing, and the reason for the first ``_fma`` below: glibc's FMA build also fuses
``x N / ln2 + shift``, which decides ``k`` at the table slots' edges (without it, 39 of the
test's 240,000 arguments next to those edges came out one ulp off).
"""

import decimal

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import njit

#: ``exp_main`` is glibc's ``exp`` for ``|x|`` below this; beyond it the library is called.
MAIN_LIMIT = 512.0
_N = 128                                            # table entries: 2^(i/N), i = 0 .. N-1


def _table():
    """glibc's ``__exp_data.tab``: per ``i``, the bits of ``tail`` and of ``scale`` minus ``i << 45``,
    with ``scale`` the double nearest ``2^(i/N)`` and ``tail`` the double nearest ``2^(i/N)/scale - 1``."""
    ctx = decimal.Context(prec=60)
    tab = np.empty(2 * _N, dtype=np.uint64)
    for i in range(_N):
        v = ctx.power(decimal.Decimal(2), decimal.Decimal(i) / _N)
        scale = float(v)
        tail = float(ctx.divide(ctx.subtract(v, decimal.Decimal(scale)), decimal.Decimal(scale)))
        tab[2 * i] = np.float64(tail).view(np.uint64)
        tab[2 * i + 1] = np.uint64(int(np.float64(scale).view(np.uint64)) - (i << 45))
    return tab


_TAB = _table()
_INV_LN2_N = float.fromhex("0x1.71547652b82fep0") * _N
_NEG_LN2_HI_N = float.fromhex("-0x1.62e42fefa0000p-8")
_NEG_LN2_LO_N = float.fromhex("-0x1.cf79abc9e3b3ap-47")
_SHIFT = float.fromhex("0x1.8p52")
_C2 = float.fromhex("0x1.ffffffffffdbdp-2")
_C3 = float.fromhex("0x1.555555555543cp-3")
_C4 = float.fromhex("0x1.55555cf172b91p-5")
_C5 = float.fromhex("0x1.1111167a4d017p-7")


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma``: the instruction, or a correctly rounded call)."""
    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d])), args)
    return types.float64(types.float64, types.float64, types.float64), codegen


@intrinsic
def _bits(typingctx, x):
    """The bits of a float64 as uint64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.uint64(types.float64), codegen


@intrinsic
def _double(typingctx, u):
    """The float64 with the bits of a uint64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@njit(cache=True, inline="always")
def in_main(x):
    """True where ``exp_main(x)`` is glibc's ``exp(x)``: ``|x| < MAIN_LIMIT`` (False for NaN)."""
    return abs(x) < MAIN_LIMIT


@njit(cache=True, inline="always")
def exp_main(x):
    """glibc's ``exp(x)`` for ``|x| < MAIN_LIMIT``, bit for bit (module docstring); beyond, not glibc's
    (wrong once the result is subnormal or overflows)."""
    kd = _fma(_INV_LN2_N, x, _SHIFT)               # k = round(x N / ln2) in the low bits
    ki = _bits(kd)
    kd -= _SHIFT
    r = _fma(kd, _NEG_LN2_LO_N, _fma(kd, _NEG_LN2_HI_N, x))
    idx = 2 * (ki % np.uint64(_N))
    tail = _double(_TAB[idx])
    scale = _double(_TAB[idx + np.uint64(1)] + (ki << np.uint64(45)))
    r2 = r * r
    tmp = _fma(r2 * r2, _fma(r, _C5, _C4), _fma(r2, _fma(r, _C3, _C2), tail + r))
    return _fma(scale, tmp, scale)


@njit(cache=True)
def exp(x):
    """``exp(x)`` with glibc's bits: ``exp_main`` on its range, the library's ``exp`` beyond."""
    if in_main(x):
        return exp_main(x)
    return np.exp(x)
