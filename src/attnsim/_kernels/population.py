"""numba kernel of the population test metrics: the quadrature over quasi-random draws.

Given per-token Gaussian moments of the scores and values ``(z_t, v_t)`` of a clean test
sample (DESIGN.md §10; ``attnsim._population``), ``population_quadrature`` averages, per class
and per independent scrambling, the logistic loss and the conditional accuracy over the draws,
doubling the draws it spends until the standard error asked for is reached, and writes the
estimates and their standard errors. A run's save calls ``population_save``: the moments from
the inner products of ``q`` and ``nu`` (``save_moments``, the operations of
``_population.population_moments``) and the quadrature, in one call; ``check_moments`` is
``population_metrics``' argument checks. So the Python overhead of a save is a few scalars
and one dispatch (about 0.01 ms; 0.05-0.1 ms when its moments were NumPy operations on a
cold cache).

Each draw's loss and conditional accuracy are computed on SIMD lanes, with the vectorising
``exp_main``, ``core._logistic_loss_main`` and ``erfc_main`` (glibc's bits: the kernel's numbers are
those of the scalar library calls it made before); only the sums over draws run in order.

The NumPy twin with the same signature is ``population_twins.population_quadrature``;
``tests/test_population.py`` compares them.
"""

import math

import numpy as np

from .core import _logistic_loss, _logistic_loss_main
from .erfc import erfc_main, in_erfc_main
from .exp import exp, exp_main, in_main
from .jit import njit

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
    el, ec, ex, ea = work[4, 1], work[4, 2], work[4, 3], work[4, 4]   # per draw: the loss, the accuracy's
                                                                       # mean, argument and P(y f > 0 | z)
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
                special = False
                for t in range(T):
                    for b in range(nb):
                        x = nz[t, b] - nzmax[b]
                        special |= not in_main(x)
                        fz[t, b] = exp_main(x)          # glibc's bits, vectorised (exp.py)
                if special:                              # a draw 512 below its top: the library
                    for t in range(T):
                        for b in range(nb):
                            fz[t, b] = exp(nz[t, b] - nzmax[b])
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
                special = below = far = False
                for b in range(nb):                      # SIMD lanes: the loss, the accuracy's argument
                    u = y * (vtop[b] + phi[b] / esum[b])
                    special |= not in_main(u)
                    el[b] = _logistic_loss_main(u)
                    cond = y * (mtop[b] + psi[b] / esum[b])
                    ec[b] = cond
                    x = cond * esum[b] / math.sqrt(2.0 * var[b])    # P(y f > 0 | z) = 0.5 erfc(-x)
                    ex[b] = x
                    below |= (var[b] > 0.0) & (not (x >= ERFC_ONE))
                if special:                              # a margin past 512, or NaN: the library
                    for b in range(nb):
                        el[b] = _logistic_loss(y * (vtop[b] + phi[b] / esum[b]))
                if below:                                # some draw's accuracy below 1 (else, saturated, none)
                    for b in range(nb):
                        x = ex[b]
                        far |= (var[b] > 0.0) & (not in_erfc_main(-x))
                        ea[b] = 1.0 if x >= ERFC_ONE else 0.5 * erfc_main(-x)
                    if far:                              # x <= -22.5, or NaN: the library
                        for b in range(nb):
                            x = ex[b]
                            ea[b] = 1.0 if x >= ERFC_ONE else 0.5 * math.erfc(-x)
                else:
                    for b in range(nb):
                        ea[b] = 1.0
                for b in range(nb):                      # in order: each sum keeps its draws' order
                    loss[c, r] += el[b]
                    if var[b] > 0.0:
                        acc[c, r] += ea[b]
                    elif ec[b] > 0.0:
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


@njit(cache=True)
def _first_max(a, b):
    """Python's ``max(a, b)``: ``a`` unless ``b > a`` (so a NaN ``a`` stays NaN)."""
    return b if b > a else a


@njit(cache=True)
def _first_min(a, b):
    """Python's ``min(a, b)``: ``a`` unless ``b < a``."""
    return b if b < a else a


@njit(cache=True)
def save_moments(qq, qnu, nunu, q_mu0, q_mu1, nu_mu0, nu_mu1, corr, orthogonal, coef, noisy, sigma2,
                 mean_z, mean_v, cov):
    """The per-token moments of a save from the inner products of ``q`` and ``nu`` (``_population.PopulationSpec``).

    The same operations, in the same order, as ``_population.population_moments`` on the
    recorder's path (``_noise_gram``, ``_clip_psd`` with Python's ``max``/``min``, ``coef @ q_mu``,
    ``np.where(noisy, sigma2 * gram, 0)``), so the moments are the same bits.

    Parameters
    ----------
    qq, qnu, nunu : float
        ``q^T q``, ``q^T nu``, ``nu^T nu``.
    q_mu0, q_mu1, nu_mu0, nu_mu1 : float
        ``q^T mu_+``, ``q^T mu_-``, ``nu^T mu_+``, ``nu^T mu_-``.
    corr : ndarray, shape (2, 2)
        ``A A^T / ||mu||^2`` with ``A = [[q_mu], [nu_mu]]``, subtracted when ``orthogonal``.
    orthogonal : bool
    coef : ndarray, shape (C, T, 2)
        Coefficients of ``mu_+``, ``mu_-`` in each class's token means; at most one nonzero per
        ``(c, t)`` (``_signal_coefficients``), so ``a q_0 + b q_1`` is the one product, rounded
        once, whether or not a BLAS forms ``coef @ q_mu`` with a fused multiply-add.
    noisy : ndarray of bool, shape (T,)
    sigma2 : float
        ``sigma ** 2``.
    mean_z, mean_v : ndarray, shape (C, T)
        Written.
    cov : ndarray, shape (T, 2, 2)
        Written: ``sigma2 * gram`` for a noisy token, 0 for a noiseless one.

    Returns
    -------
    bool
        Whether the clipped Gram and the means are all finite (if not, nothing else is meaningful).
    """
    g00, g01, g10, g11 = qq, qnu, qnu, nunu
    if orthogonal:
        g00, g01, g10, g11 = g00 - corr[0, 0], g01 - corr[0, 1], g10 - corr[1, 0], g11 - corr[1, 1]
        g00 = _first_max(g00, 0.0)
        g11 = _first_max(g11, 0.0)
        bound = math.sqrt(g00 * g11)
        g01 = g10 = _first_min(_first_max(g01, -bound), bound)
    g00 = _first_max(g00, 0.0)                 # _clip_psd once more (a no-op after the first)
    g11 = _first_max(g11, 0.0)
    bound = math.sqrt(g00 * g11)
    g01 = g10 = _first_min(_first_max(g01, -bound), bound)
    finite = math.isfinite(g00) and math.isfinite(g01) and math.isfinite(g10) and math.isfinite(g11)
    C, T = mean_z.shape
    for c in range(C):
        for t in range(T):
            mean_z[c, t] = coef[c, t, 0] * q_mu0 + coef[c, t, 1] * q_mu1
            mean_v[c, t] = coef[c, t, 0] * nu_mu0 + coef[c, t, 1] * nu_mu1
            finite = finite and math.isfinite(mean_z[c, t]) and math.isfinite(mean_v[c, t])
    for t in range(T):
        if noisy[t]:
            cov[t, 0, 0], cov[t, 0, 1] = sigma2 * g00, sigma2 * g01
            cov[t, 1, 0], cov[t, 1, 1] = sigma2 * g10, sigma2 * g11
        else:
            cov[t, 0, 0] = cov[t, 0, 1] = cov[t, 1, 0] = cov[t, 1, 1] = 0.0
    return finite


@njit(cache=True)
def population_save(qq, qnu, nunu, q_mu0, q_mu1, nu_mu0, nu_mu1, corr, orthogonal, coef, noisy, sigma2,
                    ys, draws, first, se_target, out):
    """One save's population metrics in one call: ``save_moments``, then ``population_quadrature``.

    Arguments as those two (``coef`` (C, T, 2), ``noisy`` (T,), ``draws`` (M / B, R, 2, T, B),
    ``out`` (2, C + 1, 2) written); returns the draws per scrambling used, or -1 (``out``
    untouched) when the moments are not finite.
    """
    C, T = coef.shape[0], coef.shape[1]
    mean_z = np.empty((C, T))
    mean_v = np.empty((C, T))
    cov = np.empty((T, 2, 2))
    if not save_moments(qq, qnu, nunu, q_mu0, q_mu1, nu_mu0, nu_mu1, corr, orthogonal, coef, noisy, sigma2,
                        mean_z, mean_v, cov):
        return -1
    return population_quadrature(mean_z, mean_v, cov, ys, draws, first, se_target, out)


@njit(cache=True)
def check_moments(mean_z, mean_v, cov, sym):
    """``population_metrics``' checks of its arguments, and the symmetrised per-token covariance.

    ``cov`` (1 or T, 2, 2): one covariance for every token, or one per token; ``sym`` (T, 2, 2)
    is written with ``0.5 (cov_t + cov_t^T)``. Returns 0 when ``mean_z``, ``mean_v`` (C, T)
    and ``cov`` are finite and every ``cov_t`` passes ``_population._per_token_cov``'s test
    (same tolerances, same operations), else 1; the caller then runs the NumPy checks for the
    message.
    """
    C, T = mean_z.shape
    for c in range(C):
        for t in range(T):
            if not (math.isfinite(mean_z[c, t]) and math.isfinite(mean_v[c, t])):
                return 1
    n = cov.shape[0]
    for t in range(n):
        for i in range(2):
            for j in range(2):
                if not math.isfinite(cov[t, i, j]):
                    return 1
    for t in range(n):
        a, b, b2, c = cov[t, 0, 0], cov[t, 0, 1], cov[t, 1, 0], cov[t, 1, 1]
        scale = max(max(abs(a), abs(c)), 1e-300)
        tol = 1e-12 * scale
        if abs(b - b2) > tol or a < -tol or c < -tol or b * b > max(a, 0.0) * max(c, 0.0) + tol * scale:
            return 1
    for t in range(T):
        s = t if n == T else 0
        for i in range(2):
            for j in range(2):
                sym[t, i, j] = 0.5 * (cov[s, i, j] + cov[s, j, i])
    return 0
