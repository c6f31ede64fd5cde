"""The vectorising exp of ``_kernels/exp.py`` beyond its main range, and the core's use of it (the claims every
port makes: ``test_libm_ports.py``)."""

import numpy as np
import pytest

from attnsim._kernels import core, exp as kexp
from attnsim._kernels import gd_twins
from libm_ports import loop_over

_library = loop_over(np.exp)                  # numba: a call into the C library's exp
_ours = loop_over(kexp.exp)


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
