"""Population test metrics without a test set (DESIGN.md §10).

A clean test sample of true class ``y*`` has tokens ``x_t = m_t + eps_t`` with
``m_t in {mu_{y*}, rho mu_{y*}, rho mu_{-y*}, 0}`` by role and ``eps_t ~ N(0, sigma^2 P)``.
The model sees it only through ``z_t = x_t^T q`` (``q = W^T p``) and ``v_t = x_t^T nu``, and
those pairs are independent over ``t`` and bivariate Gaussian. So the population accuracy and
loss are expectations over ``2T`` scalar Gaussians, whatever ``d``.

Three layers, each usable on its own:

``population_moments``
    the inner products an engine has at hand (``q^T q``, ``q^T nu``, ``nu^T nu``,
    ``q^T mu_+-``, ``nu^T mu_+-``) -> per-class, per-token means and the 2 x 2 covariance;
``population_metrics``
    means and covariance -> loss and accuracy by randomised quasi-Monte Carlo;
``population_metrics_from_params``
    ``(q, nu, config)`` -> the same, for arrays in the coordinates of ``make_data``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import qmc

from ._config import NOISE_MODES, Config
from ._data import ROLE_RELEVANT, ROLE_WEAK, ROLE_WEAK_OPPOSITE, token_roles
from ._data import signals as _signals
from ._validation import ConfigError, check_choice

#: Total quasi-random draws per call (over all replicates).
DEFAULT_N_DRAWS = 2 ** 14
#: Independent scramblings; the standard error is their spread over sqrt(REPLICATES).
DEFAULT_REPLICATES = 8
#: Sobol points carry this many bits; a draw is the midpoint of its 2**-bits cell, so it is
#: never exactly 0 or 1 and ``ndtri`` stays finite.
_SOBOL_BITS = 30
#: The order in which classes appear along the first axis of means: y* = +1, then y* = -1.
CLASSES = (1.0, -1.0)


@dataclass(frozen=True)
class PopulationMetrics:
    """Population test loss and accuracy of clean samples, balanced over the two classes.

    Attributes
    ----------
    loss, acc : float
        ``1/2 sum_{y*} E l(y* f)`` and ``1/2 sum_{y*} P(y* f > 0)``.
    loss_se, acc_se : float
        Standard errors of the quadrature (spread of the independent scramblings over
        ``sqrt(replicates)``); 0 when the covariance is 0.
    class_loss, class_acc, class_loss_se, class_acc_se : tuple of 2 floats
        The same for each class, in the order ``y* = +1, y* = -1``.
    n_draws : int
        Quasi-random draws used (over all replicates).
    """

    loss: float
    acc: float
    loss_se: float
    acc_se: float
    class_loss: tuple
    class_acc: tuple
    class_loss_se: tuple
    class_acc_se: tuple
    n_draws: int


# --------------------------------------------------------------------------- moments

def population_moments(qq, qnu, nunu, q_mu, nu_mu, *, mu_norm, rho, roles, sigma, noise="isotropic"):
    """Means and covariance of the per-token scores ``(z_t, v_t)`` of a clean test sample.

    Parameters
    ----------
    qq, qnu, nunu : float
        ``q^T q``, ``q^T nu`` and ``nu^T nu`` (``q = W^T p``).
    q_mu, nu_mu : array_like, shape (2,)
        ``(q^T mu_+, q^T mu_-)`` and ``(nu^T mu_+, nu^T mu_-)``.
    mu_norm : float
        ``||mu_+|| = ||mu_-||`` (the signals are orthogonal, DESIGN.md §5).
    rho : float
        Strength of the weakly relevant tokens.
    roles : array_like of int, shape (T,)
        Role code of each position (``_data.token_roles``).
    sigma : float
        Standard deviation of the token noise.
    noise : {"isotropic", "orthogonal"}
        ``orthogonal`` noise has covariance ``sigma^2 P`` with ``P`` the projector off
        ``span(mu_+, mu_-)``, applied here through ``q^T P q = q^T q - sum_± (q^T mu_±)^2 / ||mu||^2``.

    Returns
    -------
    mean_z, mean_v : ndarray, shape (2, T)
        ``m_t^T q`` and ``m_t^T nu`` for ``y* = +1`` (row 0) and ``y* = -1`` (row 1).
    cov : ndarray, shape (2, 2)
        ``sigma^2 [[q^T P q, q^T P nu], [q^T P nu, nu^T P nu]]``, the same for every token.

    Examples
    --------
    >>> mz, mv, cov = population_moments(2.0, 0.0, 1.0, [1.0, 0.0], [0.5, -0.5], mu_norm=1.0,
    ...                                  rho=0.1, roles=[0, 1, 2, 3], sigma=1.0)
    >>> mz.tolist(), cov.tolist()
    ([[1.0, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0]], [[2.0, 0.0], [0.0, 1.0]])
    """
    check_choice("noise", noise, NOISE_MODES)
    q_mu = _vector2("q_mu", q_mu)
    nu_mu = _vector2("nu_mu", nu_mu)
    roles = np.asarray(roles)
    if roles.ndim != 1 or roles.size == 0 or not np.isin(roles, (0, 1, 2, 3)).all():
        raise ConfigError(f"roles must be a non-empty 1-d array of role codes 0..3; got {roles!r}")
    if not mu_norm > 0:
        raise ConfigError(f"mu_norm must be > 0; got {mu_norm!r}")
    # Signal coefficient of mu_+ and mu_- in each token, per class: shape (2 classes, T, 2 signals).
    coef = np.zeros((2, roles.size, 2))
    for c in range(2):
        same, other = c, 1 - c  # y* = +1 -> mu_{y*} = mu_+ (index 0)
        coef[c, roles == ROLE_RELEVANT, same] = 1.0
        coef[c, roles == ROLE_WEAK, same] = rho
        coef[c, roles == ROLE_WEAK_OPPOSITE, other] = rho
    mean_z = coef @ q_mu
    mean_v = coef @ nu_mu
    gram = np.array([[qq, qnu], [qnu, nunu]], dtype=np.float64)
    if noise == "orthogonal":
        a = np.stack([q_mu, nu_mu])  # rows: q, nu; columns: mu_+, mu_-
        gram = gram - (a @ a.T) / mu_norm ** 2
        # P q and P nu are computed as differences; clip round-off below zero on the diagonal, and
        # the off-diagonal to Cauchy-Schwarz (with nu in span(mu_+-), nu^T P nu is round-off).
        gram[[0, 1], [0, 1]] = np.maximum(gram[[0, 1], [0, 1]], 0.0)
        bound = np.sqrt(gram[0, 0] * gram[1, 1])
        gram[0, 1] = gram[1, 0] = np.clip(gram[0, 1], -bound, bound)
    return mean_z, mean_v, sigma ** 2 * gram


def _vector2(name, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (2,):
        raise ConfigError(f"{name} must have shape (2,) (one entry per class signal mu_+, mu_-); got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- quadrature

def _sqrt_2x2(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root ``S`` (``S S = cov``) of a 2 x 2 PSD matrix, with no division by 0.

    ``sqrt(C) = (C + s I) / t`` with ``s = sqrt(det C)`` and ``t = sqrt(tr C + 2 s)``; it is
    exact for rank-1 ``C`` (``s = 0``), so ``nu`` parallel to ``q`` needs no special case, and
    ``t = 0`` only for ``C = 0``.
    """
    a, b, c = cov[0, 0], cov[0, 1], cov[1, 1]
    s = np.sqrt(max(a * c - b * b, 0.0))
    t = np.sqrt(a + c + 2.0 * s)
    if t == 0.0:
        return np.zeros((2, 2))
    return np.array([[a + s, b], [b, c + s]]) / t


def _sobol(d, n, rng):
    try:
        engine = qmc.Sobol(d, scramble=True, bits=_SOBOL_BITS, rng=rng)
    except TypeError:  # scipy < 1.15 spells it seed
        engine = qmc.Sobol(d, scramble=True, bits=_SOBOL_BITS, seed=rng)
    return engine.random_base2(int(n).bit_length() - 1)


@functools.lru_cache(maxsize=16)
def standard_normal_draws(T: int, n_draws: int, replicates: int, seed: int) -> np.ndarray:
    """Scrambled-Sobol standard normal draws, shape (replicates, 2, T, n_draws // replicates).

    Replicate ``r`` is an independent scrambling seeded by child ``r`` of
    ``SeedSequence(seed)``. Row 0 of axis 1 drives the logits, row 1 the values. Draws run
    along the last, contiguous axis so that reductions over the T tokens are T elementwise
    passes (a short trailing axis is several times slower). Cached on the arguments; the
    array is read-only.
    """
    per = n_draws // replicates
    out = np.empty((replicates, 2, T, per))
    for r, child in enumerate(np.random.SeedSequence(seed).spawn(replicates)):
        u = _sobol(2 * T, per, np.random.default_rng(child))
        out[r] = ndtri(u + 2.0 ** -(_SOBOL_BITS + 1)).T.reshape(2, T, per)
    out.flags.writeable = False
    return out


def _check_draws(n_draws, replicates):
    for name, value in (("n_draws", n_draws), ("replicates", replicates)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")
    per = n_draws // replicates
    if replicates < 2 or n_draws % replicates or per < 2 or per & (per - 1):
        raise ConfigError(
            f"n_draws / replicates must be a power of two >= 2 (Sobol points come in 2**m) with "
            f"replicates >= 2 (for a standard error); got n_draws={n_draws}, replicates={replicates}; "
            f"e.g. n_draws=2**14, replicates=8"
        )


def _logistic_loss(u):
    # The two branches log1p(exp(-u)) for u >= 0 and -u + log1p(exp(u)) for u < 0, in one form.
    return np.maximum(-u, 0.0) + np.log1p(np.exp(-np.abs(u)))


def population_metrics(mean_z, mean_v, cov, *, n_draws=DEFAULT_N_DRAWS, replicates=DEFAULT_REPLICATES, seed=0):
    """Population loss and accuracy from the per-token Gaussian moments of ``(z_t, v_t)``.

    ``f = sum_t softmax(z)_t v_t`` with ``(z_t, v_t) ~ N((mean_z[c, t], mean_v[c, t]), cov)``
    independent over ``t``; class ``c = 0`` is ``y* = +1``, ``c = 1`` is ``y* = -1``.
    Randomised QMC: ``replicates`` independent scramblings of a Sobol sequence in ``2T``
    dimensions, mapped through the inverse normal CDF and the square root of ``cov``; both
    classes use the same draws. Deterministic given ``seed``. The accuracy is averaged as
    ``P(y* f > 0 | z)``, a normal CDF since ``f`` is Gaussian given the logits (conditional
    Monte Carlo: same expectation, smooth integrand, several times smaller error than
    counting ``y* f > 0``); when ``v`` is a function of ``z`` (rank-1 ``cov``) it counts.
    Cost: about 2.5 ms for T = 8 at the default 2**14 draws, after a one-off ~20 ms to
    generate (and cache) the draws.

    Parameters
    ----------
    mean_z, mean_v : array_like, shape (2, T)
    cov : array_like, shape (2, 2)
        Symmetric positive semi-definite (rank 1 and 0 allowed).
    n_draws : int
        Total draws; ``n_draws / replicates`` must be a power of two.
    replicates : int
        Independent scramblings (>= 2) from which the standard error is estimated.
    seed : int
        Seed of the scramblings.

    Returns
    -------
    PopulationMetrics

    Raises
    ------
    ConfigError
        On wrong shapes, non-finite values, a covariance that is not symmetric PSD, or
        ``n_draws`` / ``replicates`` that do not make a power of two.

    Examples
    --------
    >>> m = population_metrics([[1.0], [-1.0]], [[1.0], [-1.0]], np.zeros((2, 2)))
    >>> m.acc, m.acc_se, round(m.loss, 6)
    (1.0, 0.0, 0.313262)
    """
    mean_z = np.asarray(mean_z, dtype=np.float64)
    mean_v = np.asarray(mean_v, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean_z.ndim != 2 or mean_z.shape[0] != 2 or mean_z.shape[1] < 1 or mean_v.shape != mean_z.shape:
        raise ConfigError(
            f"mean_z and mean_v must both have shape (2, T) (class y*=+1, then y*=-1; one column a "
            f"token); got {mean_z.shape} and {mean_v.shape}"
        )
    if cov.shape != (2, 2):
        raise ConfigError(f"cov must have shape (2, 2) (covariance of (z_t, v_t)); got {cov.shape}")
    for name, arr in (("mean_z", mean_z), ("mean_v", mean_v), ("cov", cov)):
        if not np.isfinite(arr).all():
            raise ConfigError(f"{name} must be finite; got {arr.tolist()}")
    scale = max(abs(cov[0, 0]), abs(cov[1, 1]), 1e-300)
    tol = 1e-12 * scale
    if abs(cov[0, 1] - cov[1, 0]) > tol or cov[0, 0] < -tol or cov[1, 1] < -tol or \
            cov[0, 1] ** 2 > max(cov[0, 0], 0.0) * max(cov[1, 1], 0.0) + tol * scale:
        raise ConfigError(f"cov must be symmetric positive semi-definite; got {cov.tolist()}")
    _check_draws(n_draws, replicates)
    T = mean_z.shape[1]

    cov = 0.5 * (cov + cov.T)
    root = _sqrt_2x2(cov)
    # Given the logits, f = sum_t s_t v_t is exactly Gaussian: v_t | z_t has mean
    # mean_v + beta (z_t - mean_z) and variance cvar. So P(y f > 0 | z) is a normal CDF, and
    # averaging it over the logit draws (conditional Monte Carlo) replaces a step function
    # by a smooth one: the accuracy then gets the QMC rate, not the Monte Carlo one.
    beta = cov[0, 1] / cov[0, 0] if cov[0, 0] > 0 else 0.0
    cvar = max(cov[1, 1] - beta * cov[0, 1], 0.0)
    draws = standard_normal_draws(T, int(n_draws), int(replicates), int(seed))  # (R, 2, T, M)
    loss = np.empty((2, replicates))
    acc = np.empty((2, replicates))
    # One replicate at a time: arrays of T * M doubles stay in cache and below malloc's mmap
    # threshold (a single pass over all draws is 4x slower, from page faults on every call).
    for r, (g0, g1) in enumerate(draws):
        noise_z = root[0, 0] * g0 + root[0, 1] * g1  # (T, M)
        noise_v = root[1, 0] * g0 + root[1, 1] * g1
        for c, y in enumerate(CLASSES):
            z = noise_z + mean_z[c][:, None]
            # Softmax relative to each draw's top token: the largest weight is exactly 1, the sum >= 1.
            z -= z.max(axis=0)
            e = np.exp(z, out=z)
            e /= e.sum(axis=0)
            u = y * np.einsum("tm,tm->m", e, noise_v + mean_v[c][:, None])
            loss[c, r] = _logistic_loss(u).mean()
            cond = y * np.einsum("tm,tm->m", e, beta * noise_z + mean_v[c][:, None])
            if cvar > 0:
                acc[c, r] = ndtr(cond / np.sqrt(cvar * np.einsum("tm,tm->m", e, e))).mean()
            else:  # v is a function of z: f is its conditional mean
                acc[c, r] = np.count_nonzero(cond > 0) / cond.size

    def mean_se(x):  # x: (..., R) -> estimates and their standard errors
        return x.mean(axis=-1), x.std(axis=-1, ddof=1) / np.sqrt(replicates)

    cl, cl_se = mean_se(loss)
    ca, ca_se = mean_se(acc)
    tl, tl_se = mean_se(loss.mean(axis=0))
    ta, ta_se = mean_se(acc.mean(axis=0))
    return PopulationMetrics(
        loss=float(tl), acc=float(ta), loss_se=float(tl_se), acc_se=float(ta_se),
        class_loss=tuple(map(float, cl)), class_acc=tuple(map(float, ca)),
        class_loss_se=tuple(map(float, cl_se)), class_acc_se=tuple(map(float, ca_se)),
        n_draws=int(n_draws),
    )


# --------------------------------------------------------------------------- inside a run

@dataclass(frozen=True, eq=False)
class PopulationSpec:
    """The data model's test distribution, as a run's recorder needs it (``Config.test_metrics="population"``).

    The engine appends ``mu_+``, ``mu_-`` and the head ``nu`` to its probe directions
    (``directions``), so that every save time has ``q^T mu_+-`` and ``q^T nu`` from the dual
    state at O(N) cost; with ``||q||`` (``query_norm``) that is all ``metrics`` needs.

    Attributes
    ----------
    mu_pos, mu_neg : ndarray, shape (d,)
    mu_norm, rho, sigma : float
    roles : ndarray of int8, shape (T,)
    noise : {"isotropic", "orthogonal"}
    n_draws, replicates, seed : int
        Quadrature settings (``population_metrics``).
    """

    mu_pos: np.ndarray
    mu_neg: np.ndarray
    mu_norm: float
    rho: float
    roles: np.ndarray
    sigma: float
    noise: str
    n_draws: int = DEFAULT_N_DRAWS
    replicates: int = DEFAULT_REPLICATES
    seed: int = 0

    @classmethod
    def from_config(cls, config: Config, *, signals=None, **quadrature) -> PopulationSpec:
        """The spec of ``config``'s data model; ``signals`` gives ``(mu_+, mu_-)`` in other
        coordinates (an implicit space's), default ``make_data``'s d-vectors."""
        mu_pos, mu_neg = _signals(config) if signals is None else signals
        return cls(mu_pos=mu_pos, mu_neg=mu_neg, mu_norm=config.signal_norm, rho=config.rho,
                   roles=token_roles(config), sigma=config.sigma_eps, noise=config.noise, **quadrature)

    #: Rows ``directions`` appends to the probes: mu_+, mu_-, nu.
    N_DIRECTIONS = 3

    def directions(self, nu: np.ndarray) -> np.ndarray:
        """``[mu_+, mu_-, nu]``, shape (3, d): the probes whose ``<W^T p, r>`` the metrics need."""
        return np.stack([self.mu_pos, self.mu_neg, nu])

    def metrics(self, qq, q_mu, q_nu, nunu, nu_mu) -> PopulationMetrics:
        """Population metrics from the inner products of ``q = W^T p`` and ``nu`` (see ``population_moments``)."""
        mean_z, mean_v, cov = population_moments(qq, q_nu, nunu, q_mu, nu_mu, mu_norm=self.mu_norm, rho=self.rho,
                                                 roles=self.roles, sigma=self.sigma, noise=self.noise)
        return population_metrics(mean_z, mean_v, cov, n_draws=self.n_draws, replicates=self.replicates,
                                  seed=self.seed)


# --------------------------------------------------------------------------- from parameters

def population_metrics_from_params(q, nu, config: Config, *, n_draws=DEFAULT_N_DRAWS,
                                   replicates=DEFAULT_REPLICATES, seed=0) -> PopulationMetrics:
    """Population test metrics of the query ``q = W^T p`` and head ``nu`` under ``config``'s data model.

    Uses ``config``'s signals (``mu_± = ||mu|| e_{1,2}``, as ``make_data``), ``rho``,
    token roles, ``sigma_eps`` and noise mode; see ``population_metrics`` for the rest.

    Parameters
    ----------
    q, nu : array_like, shape (d,)
        For a result ``res``: ``q = res.W.T @ res.p``; ``nu = make_data(config).nu``.
    config : Config

    Examples
    --------
    >>> cfg = Config(d=10, signal_norm=2.0)
    >>> nu = (np.eye(10)[0] - np.eye(10)[1]) / np.sqrt(2) / cfg.signal_norm  # make_data's head
    >>> m = population_metrics_from_params(np.zeros(10), nu, cfg)  # uniform attention
    >>> round(m.acc, 4)  # y* f = mean_t y* v_t ~ N(1 / (sqrt(2) T), ||nu||^2 / T): Phi(sqrt(2 / T))
    0.6915
    """
    q = np.asarray(q, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    if q.shape != (config.d,) or nu.shape != (config.d,):
        raise ConfigError(f"q and nu must have shape (d,) = ({config.d},); got {q.shape} and {nu.shape}")
    mu_pos, mu_neg = _signals(config)
    mean_z, mean_v, cov = population_moments(
        q @ q, q @ nu, nu @ nu, [q @ mu_pos, q @ mu_neg], [nu @ mu_pos, nu @ mu_neg],
        mu_norm=config.signal_norm, rho=config.rho, roles=token_roles(config), sigma=config.sigma_eps,
        noise=config.noise,
    )
    return population_metrics(mean_z, mean_v, cov, n_draws=n_draws, replicates=replicates, seed=seed)
