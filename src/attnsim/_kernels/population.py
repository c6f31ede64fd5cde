"""numba kernel of the population test metrics: the quadrature over quasi-random draws.

Given per-token Gaussian moments of the scores and values ``(z_t, v_t)`` of a clean test
sample (DESIGN.md §10; ``attnsim._population``), ``population_quadrature`` averages, per class
and per independent scrambling, the logistic loss and the conditional accuracy over the draws,
doubling the draws it spends until the standard error asked for is reached, and writes the
estimates and their standard errors. Everything a save needs after its 2 x 2 covariance
happens here, in one call: the recorder's Python overhead is a few numpy operations.

The NumPy twin with the same signature is ``population_twins.population_quadrature``;
``tests/test_population.py`` compares them.
"""

import math

import numpy as np
from numba import njit

#: ``0.5 erfc(-x) == 1.0`` exactly in float64 for ``x >= ERFC_ONE`` (``erfc(6) = 2.2e-17``, below
#: half an ulp of 2), so the normal CDF of a conditional mean 6+ standard deviations positive
#: is 1.0 without calling ``erfc``: same bits, and saturated runs spend most draws there.
ERFC_ONE = 6.0
#: Softmax weights are products of two exponentials when a class's mean scores lie within
#: ``FACTOR_RANGE`` of their maximum (``_sums``): the top token's product then stays a normal number.
FACTOR_RANGE = 300.0
#: Most draws a block (``attnsim._population.standard_normal_draws``): the SIMD-parallel axis of
#: ``_sums``; its scratch stays in L1.
BLOCK = 64


@njit(cache=True)
def _logistic_loss(u):
    """ell(u) = log(1 + exp(-u)), without overflow for either sign of u."""
    if u >= 0.0:
        return math.log1p(math.exp(-u))
    return -u + math.log1p(math.exp(u))


@njit(cache=True)
def _conditional(cov, root, beta, cvar):
    """Per token: the symmetric square root of ``cov[t]`` into ``root[t]``, the regression ``beta[t]``
    of ``v`` on ``z`` and its residual variance ``cvar[t]``.

    ``sqrt(C) = (C + s I) / t`` with ``s = sqrt(det C)``, ``t = sqrt(tr C + 2 s)``: exact for
    rank-1 ``C`` (``nu`` parallel to ``q``), and ``t = 0`` only for ``C = 0`` (a noiseless token).
    """
    for t in range(cov.shape[0]):
        a, b, c = cov[t, 0, 0], cov[t, 0, 1], cov[t, 1, 1]
        s = math.sqrt(max(a * c - b * b, 0.0))
        tr = math.sqrt(a + c + 2.0 * s)
        if tr > 0.0:
            root[t, 0, 0], root[t, 0, 1] = (a + s) / tr, b / tr
            root[t, 1, 0], root[t, 1, 1] = b / tr, (c + s) / tr
        else:
            root[t, 0, 0] = root[t, 0, 1] = root[t, 1, 0] = root[t, 1, 1] = 0.0
        beta[t] = b / a if a > 0.0 else 0.0
        cvar[t] = max(c - beta[t] * b, 0.0)


@njit(cache=True)
def _sums(mean_z, mean_v, root, beta, cvar, ez, ez_ok, ys, draws, start, stop, loss, acc, work):
    """Add the loss and conditional accuracy of draws ``start .. stop - 1`` of every scrambling
    into ``loss``, ``acc`` (C, R).

    Draws go in the blocks of ``draws``, the block's draws along the innermost loops:
    every operation but ``exp``, ``log1p`` and ``erfc`` then runs on SIMD lanes, and each
    draw's sums over tokens keep their sequential order (no reassociation, no fastmath).

    ``ez[c, t] = exp(mean_z[c, t] - max_t mean_z[c])`` (C, T) is computed once a call, so a
    draw needs T exponentials, ``fz_t = exp(nz_t - max nz)``, for all classes:
    ``exp(z_t - z_top) = ez_t fz_t / (ez_top fz_top)``. This is used for class ``c`` when its
    means lie within ``FACTOR_RANGE`` of their maximum (``ez_ok[c]``): the top token beats the
    noisiest one, so ``nz_top >= max nz - FACTOR_RANGE`` and ``ez_top fz_top >= exp(-600)``, a
    normal number; a product ``ez_t fz_t`` that underflows (or is subnormal) then stands for a
    true weight below ``exp(-708 + 600)``, 1e-47 of the top token's. Other classes take one
    exponential per token and draw.
    """
    C, T = mean_z.shape
    R = draws.shape[1]
    nz, nv, fz = work[0], work[1], work[2]                     # (T, B)
    nzmax, ztop, vtop, mtop, inv = work[3, 0], work[3, 1], work[3, 2], work[3, 3], work[3, 4]
    esum, phi, psi, var = work[3, 5], work[3, 6], work[3, 7], work[4, 0]      # (B,)
    factor = False
    for c in range(C):
        factor = factor or ez_ok[c]
    size = draws.shape[4]
    m0 = start
    while m0 < stop:
        j = m0 // size
        off = m0 - j * size
        nb = min(size - off, stop - m0)
        m0 += nb
        for r in range(R):
            for t in range(T):
                a00, a01, a10, a11 = root[t, 0, 0], root[t, 0, 1], root[t, 1, 0], root[t, 1, 1]
                for b in range(nb):
                    g0 = draws[j, r, 0, t, off + b]
                    g1 = draws[j, r, 1, t, off + b]
                    nz[t, b] = a00 * g0 + a01 * g1
                    nv[t, b] = a10 * g0 + a11 * g1
            if factor:
                for b in range(nb):
                    nzmax[b] = nz[0, b]
                for t in range(1, T):
                    for b in range(nb):
                        nzmax[b] = max(nzmax[b], nz[t, b])
                for t in range(T):
                    for b in range(nb):
                        fz[t, b] = math.exp(nz[t, b] - nzmax[b])
            for c in range(C):
                # the top token of each draw: its score, value, conditional mean and factored weight
                for b in range(nb):
                    ztop[b] = mean_z[c, 0] + nz[0, b]
                    vtop[b] = mean_v[c, 0] + nv[0, b]
                    mtop[b] = mean_v[c, 0] + beta[0] * nz[0, b]
                    inv[b] = ez[c, 0] * fz[0, b]
                for t in range(1, T):
                    for b in range(nb):
                        zt = mean_z[c, t] + nz[t, b]
                        up = zt > ztop[b]
                        ztop[b] = zt if up else ztop[b]
                        vtop[b] = mean_v[c, t] + nv[t, b] if up else vtop[b]
                        mtop[b] = mean_v[c, t] + beta[t] * nz[t, b] if up else mtop[b]
                        inv[b] = ez[c, t] * fz[t, b] if up else inv[b]
                for b in range(nb):
                    esum[b] = phi[b] = psi[b] = var[b] = 0.0
                if ez_ok[c]:
                    for b in range(nb):
                        inv[b] = 1.0 / inv[b]
                    for t in range(T):
                        for b in range(nb):
                            e = ez[c, t] * fz[t, b] * inv[b]
                            esum[b] += e
                            phi[b] += e * (mean_v[c, t] + nv[t, b] - vtop[b])   # the top term is exactly 0
                            psi[b] += e * (mean_v[c, t] + beta[t] * nz[t, b] - mtop[b])
                            var[b] += e * e * cvar[t]
                else:
                    for t in range(T):
                        for b in range(nb):
                            e = math.exp(mean_z[c, t] + nz[t, b] - ztop[b])
                            esum[b] += e
                            phi[b] += e * (mean_v[c, t] + nv[t, b] - vtop[b])
                            psi[b] += e * (mean_v[c, t] + beta[t] * nz[t, b] - mtop[b])
                            var[b] += e * e * cvar[t]
                y = ys[c]
                for b in range(nb):
                    loss[c, r] += _logistic_loss(y * (vtop[b] + phi[b] / esum[b]))
                    cond = y * (mtop[b] + psi[b] / esum[b])
                    if var[b] > 0.0:
                        x = cond * esum[b] / math.sqrt(2.0 * var[b])    # P(y f > 0 | z) = 0.5 erfc(-x)
                        acc[c, r] += 1.0 if x >= ERFC_ONE else 0.5 * math.erfc(-x)
                    elif cond > 0.0:
                        acc[c, r] += 1.0


@njit(cache=True)
def _mean_se(x, scale, R):
    """Mean and standard error (spread over sqrt(R)) of ``x[r] * scale``, r < R.

    Shifted by the first value: equal values (a deterministic integrand) give exactly that
    value and a standard error of exactly 0, not the round-off of summing them."""
    x0 = x[0] * scale
    shift = 0.0
    for r in range(R):
        shift += x[r] * scale - x0
    shift /= R
    ss = 0.0
    for r in range(R):
        ss += (x[r] * scale - x0 - shift) ** 2
    return x0 + shift, math.sqrt(ss / (R - 1) / R)


@njit(cache=True)
def population_quadrature(mean_z, mean_v, cov, ys, draws, first, se_target, out):
    """Population loss and accuracy by randomised QMC, spending draws until ``se_target``.

    Token ``t`` of class ``c`` under draw ``m = j B + b`` of scrambling ``r``, ``g = draws[j, r, :, :, b]`` (2, T), has
    ``(z_t, v_t) = (mean_z[c, t], mean_v[c, t]) + sqrt(cov[t]) g[:, t]``. The softmax is taken
    relative to the top token (DESIGN.md §7), ``f = v_top + sum_t s_t (v_t - v_top)``. Given the
    scores, ``f`` is Gaussian with mean ``sum_t s_t (mean_v + beta_t (z_t - mean_z))`` and
    variance ``sum_t s_t^2 cvar_t``; the accuracy averages ``P(y f > 0 | z)``, a normal CDF, or
    the indicator of a positive mean when that variance is 0 (zero-noise tokens are exact).

    The first ``first`` draws of each scrambling are summed, then twice as many, and so on,
    until the balanced loss and accuracy both have standard errors ``<= se_target`` or all
    ``M`` draws are used (``se_target <= 0``: all of them).

    Parameters
    ----------
    mean_z, mean_v : ndarray, shape (C, T)
        Per-class, per-token means.
    cov : ndarray, shape (T, 2, 2)
        Per-token covariance of ``(z_t, v_t)``, symmetric PSD.
    ys : ndarray, shape (C,)
        The class label ``y*`` of each class.
    draws : ndarray, shape (M / B, R, 2, T, B)
        Standard normal draws, ``R`` independent scramblings of ``M`` each, in blocks of ``B <= BLOCK``
        (block-major, so that the first draws of every scrambling are one contiguous piece of memory).
    first : int
        Draws per scrambling before the first standard error is looked at.
    se_target : float
    out : ndarray, shape (2, C + 1, 2)
        Written: ``out[k, j] = (estimate, standard error)`` of the loss (``k = 0``) and the
        accuracy (``k = 1``) of class ``j < C`` and, at ``j = C``, of their average.

    Returns
    -------
    int
        Draws per scrambling used.
    """
    C, T = mean_z.shape
    R, M = draws.shape[1], draws.shape[0] * draws.shape[4]
    root = np.empty((T, 2, 2))
    beta = np.empty(T)
    cvar = np.empty(T)
    _conditional(cov, root, beta, cvar)
    loss = np.zeros((C, R))
    acc = np.zeros((C, R))
    work = np.zeros((5, max(T, 8), BLOCK))     # zeros: fz is read (times 0) when no class factors
    ez = np.empty((C, T))
    ez_ok = np.empty(C, dtype=np.bool_)
    for c in range(C):
        zmax = -np.inf
        for t in range(T):
            zmax = max(zmax, mean_z[c, t])
        ez_ok[c] = True
        for t in range(T):
            ez[c, t] = math.exp(mean_z[c, t] - zmax)
            ez_ok[c] = ez_ok[c] and mean_z[c, t] - zmax >= -FACTOR_RANGE
    bal = np.empty(R)
    done = 0
    stop = min(max(first, 1), M)
    while True:
        _sums(mean_z, mean_v, root, beta, cvar, ez, ez_ok, ys, draws, done, stop, loss, acc, work)
        done = stop
        scale = 1.0 / done
        for k in range(2):
            x = loss if k == 0 else acc
            for c in range(C):
                out[k, c, 0], out[k, c, 1] = _mean_se(x[c], scale, R)
            for r in range(R):
                bal[r] = 0.0
                for c in range(C):
                    bal[r] += x[c, r]
                bal[r] /= C
            out[k, C, 0], out[k, C, 1] = _mean_se(bal, scale, R)
        if done == M or (out[0, C, 1] <= se_target and out[1, C, 1] <= se_target):
            return done
        stop = min(2 * done, M)
