"""The vectorising erfc of ``_kernels/erfc.py`` beyond its domain (the claims every port makes:
``test_libm_ports.py``)."""

import math

import numpy as np

from attnsim._kernels import erfc as kerfc
from attnsim._kernels.jit import njit as kernel_njit
from libm_ports import loop_over

LIMIT = kerfc.ERFC_MAIN_LIMIT
_library = loop_over(math.erfc)               # numba: a call into the C library's erfc


@kernel_njit
def _with_fallback(x, out):
    """The caller's pattern: ``erfc_main`` on its domain, the library's ``erfc`` on the lanes it flags."""
    for k in range(x.shape[0]):
        out[k] = kerfc.erfc_main(x[k]) if kerfc.in_erfc_main(x[k]) else math.erfc(x[k])


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
