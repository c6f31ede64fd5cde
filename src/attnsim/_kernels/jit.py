"""The decorator of every kernel: numba's ``njit`` with NumPy's error model.

Under numba's default (Python's) error model every float division checks its divisor and may
raise ``ZeroDivisionError``; that branch keeps LLVM from vectorising any loop that divides
(the population kernel's ``phi / esum``, ``log1p``'s ``f / (2 + f)``, the coefficient core's
normalisations). NumPy's model divides as IEEE 754 does (``x / 0`` is ``inf`` or ``nan``, an
integer ``// 0`` is 0), so the quotients keep their bits and the loops their SIMD lanes. No
kernel divides by a zero it has not already excluded: each checks its divisors (``esum > 0``,
``tot > 0.0``) or its results' finiteness (``ok``), as it did under Python's model.
"""

import functools

from numba import njit as _njit

#: ``numba.njit`` with ``error_model="numpy"`` (module docstring); takes ``njit``'s other options.
njit = functools.partial(_njit, error_model="numpy")
