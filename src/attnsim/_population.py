"""Population test metrics without a test set (DESIGN.md §10).

A clean test sample of true class ``y*`` has tokens ``x_t = m_t + eps_t`` with
``m_t in {mu_{y*}, rho mu_{y*}, rho mu_{-y*}, 0}`` by role and ``eps_t ~ N(0, sigma^2 P)``.
The model sees it only through ``z_t = x_t^T q`` (``q = W^T p``) and ``v_t = x_t^T nu``, and
those pairs are independent over ``t`` and bivariate Gaussian (a noiseless token, Magen et al.'s
signal token ``x_t = mu_{y*}``, is a point mass). So the population accuracy and loss are
expectations over ``2T`` scalar Gaussians, whatever ``d``.

Three layers, each usable on its own:

``population_moments``
    the inner products an engine has at hand (``q^T q``, ``q^T nu``, ``nu^T nu``,
    ``q^T mu_+-``, ``nu^T mu_+-``) -> per-class, per-token means and the 2 x 2 covariance
    (one per token when a token is noiseless, Magen et al.'s signal token);
``population_metrics``
    means and covariances -> loss and accuracy by randomised quasi-Monte Carlo, in a numba
    kernel (``_kernels.population``), with as many draws as a requested standard error needs;
``population_metrics_from_params``
    ``(q, nu, config)`` -> the same, for arrays in the coordinates of ``make_data``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtri
from scipy.stats import qmc

from ._config import NOISE_MODES, SIGNAL_NOISE, Config
from ._data import ROLE_RELEVANT, token_roles
from ._datamodel import role_coefficients
from ._data import signals as _signals
from ._kernels import population as _kernel
from ._validation import ConfigError, check_choice

#: Total quasi-random draws per call (over all replicates); with ``se_target`` the most spent.
DEFAULT_N_DRAWS = 2 ** 14
#: Independent scramblings; the standard error is their spread over sqrt(REPLICATES).
DEFAULT_REPLICATES = 8
#: Standard error a run's recorder asks of each save's loss and accuracy (``PopulationSpec``):
#: half the issue's ceiling of 2e-4, and 50x below a 1000-sample test set's ~1e-2.
DEFAULT_SE_TARGET = 1e-4
#: Draws per replicate before a standard error is trusted. The loss of a saturated softmax is
#: a lognormal tail (``E exp(z_t - z_top)``): at 2-16 draws per replicate its spread between
#: scramblings understates the error by up to 5x (balanced preset, flow at tau = 1e8).
MIN_DRAWS_PER_REPLICATE = 2 ** 6
#: Sobol points carry this many bits; a draw is the midpoint of its 2**-bits cell, so it is
#: never exactly 0 or 1 and ``ndtri`` stays finite.
_SOBOL_BITS = 30
#: The order in which classes appear along the first axis of means: y* = +1, then y* = -1.
CLASSES = (1.0, -1.0)
_YS = np.array(CLASSES)
#: ``PopulationSpec.metrics``' Gram correction under isotropic noise (unused by the kernel there).
_NO_CORRECTION = np.zeros((2, 2))


@dataclass(frozen=True)
class PopulationMetrics:
    """Population test loss and accuracy of clean samples, balanced over the two classes.

    Attributes
    ----------
    loss, acc : float
        ``1/2 sum_{y*} E l(y* f)`` and ``1/2 sum_{y*} P(y* f > 0)``.
    loss_se, acc_se : float
        Standard errors of the quadrature (spread of the independent scramblings over
        ``sqrt(replicates)``); 0 when every covariance is 0.
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

def _signal_coefficients(roles, rho) -> np.ndarray:
    """Coefficient of ``mu_+`` and ``mu_-`` in each token's mean, per class: shape (2 classes, T, 2 signals)
    (the data model's ``(mu_{y*}, mu_{-y*})`` coefficients, swapped for ``y* = -1``; ``DataModel.class_means``)."""
    coef = role_coefficients(roles, rho)
    return np.stack([coef, coef[:, ::-1]])


def _clip_psd(gram: np.ndarray) -> np.ndarray:
    """Clip round-off in a 2 x 2 Gram built from differences or from a dual state: diagonal to
    >= 0, off-diagonal to Cauchy-Schwarz (with ``nu`` parallel to ``q``, or in span(mu_+-) under
    orthogonal noise, the exact value sits on the boundary). In place; returns ``gram``."""
    gram[0, 0] = max(gram[0, 0], 0.0)
    gram[1, 1] = max(gram[1, 1], 0.0)
    bound = np.sqrt(gram[0, 0] * gram[1, 1])
    gram[0, 1] = gram[1, 0] = min(max(gram[0, 1], -bound), bound)
    return gram


def _noise_gram(qq, qnu, nunu, q_mu, nu_mu, mu_norm, orthogonal) -> np.ndarray:
    """``[[q^T P q, q^T P nu], [q^T P nu, nu^T P nu]]`` (not yet times sigma^2)."""
    gram = np.array([[qq, qnu], [qnu, nunu]], dtype=np.float64)
    if orthogonal:
        a = np.stack([q_mu, nu_mu])  # rows: q, nu; columns: mu_+, mu_-
        gram = _clip_psd(gram - (a @ a.T) / mu_norm ** 2)  # P q and P nu are differences
    return gram


def population_moments(qq, qnu, nunu, q_mu, nu_mu, *, mu_norm, rho, roles, sigma, noise="isotropic",
                       signal_noise="noisy"):
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
    signal_noise : {"noisy", "noiseless"}
        ``noiseless``: the relevant tokens are exactly ``mu_{y*}`` (``Config.signal_noise``), so
        their ``(z_t, v_t)`` is deterministic and ``cov`` comes per token.

    Returns
    -------
    mean_z, mean_v : ndarray, shape (2, T)
        ``m_t^T q`` and ``m_t^T nu`` for ``y* = +1`` (row 0) and ``y* = -1`` (row 1).
    cov : ndarray, shape (2, 2), or (T, 2, 2) when ``signal_noise="noiseless"``
        ``sigma^2 [[q^T P q, q^T P nu], [q^T P nu, nu^T P nu]]``, the same for every noisy
        token; zero for a noiseless one.

    Examples
    --------
    >>> mz, mv, cov = population_moments(2.0, 0.0, 1.0, [1.0, 0.0], [0.5, -0.5], mu_norm=1.0,
    ...                                  rho=0.1, roles=[0, 1, 2, 3], sigma=1.0)
    >>> mz.tolist(), cov.tolist()
    ([[1.0, 0.1, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0]], [[2.0, 0.0], [0.0, 1.0]])
    >>> _, _, cov = population_moments(2.0, 0.0, 1.0, [1.0, 0.0], [0.5, -0.5], mu_norm=1.0,
    ...                                rho=0.1, roles=[0, 3], sigma=1.0, signal_noise="noiseless")
    >>> cov.tolist()
    [[[0.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 1.0]]]
    """
    check_choice("noise", noise, NOISE_MODES)
    check_choice("signal_noise", signal_noise, SIGNAL_NOISE)
    q_mu = _vector2("q_mu", q_mu)
    nu_mu = _vector2("nu_mu", nu_mu)
    roles = np.asarray(roles)
    if roles.ndim != 1 or roles.size == 0 or not np.isin(roles, (0, 1, 2, 3)).all():
        raise ConfigError(f"roles must be a non-empty 1-d array of role codes 0..3; got {roles!r}")
    if not mu_norm > 0:
        raise ConfigError(f"mu_norm must be > 0; got {mu_norm!r}")
    coef = _signal_coefficients(roles, rho)
    cov = sigma ** 2 * _noise_gram(qq, qnu, nunu, q_mu, nu_mu, mu_norm, noise == "orthogonal")
    if signal_noise == "noiseless":
        cov = np.where((roles == ROLE_RELEVANT)[:, None, None], 0.0, cov)
    return coef @ q_mu, coef @ nu_mu, cov


def _vector2(name, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (2,):
        raise ConfigError(f"{name} must have shape (2,) (one entry per class signal mu_+, mu_-); got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- quadrature

def _sobol(d, n, rng):
    try:
        engine = qmc.Sobol(d, scramble=True, bits=_SOBOL_BITS, rng=rng)
    except TypeError:  # scipy < 1.15 spells it seed
        engine = qmc.Sobol(d, scramble=True, bits=_SOBOL_BITS, seed=rng)
    return engine.random_base2(int(n).bit_length() - 1)


@functools.lru_cache(maxsize=16)
def standard_normal_draws(T: int, n_draws: int, replicates: int, seed: int) -> np.ndarray:
    """Scrambled-Sobol standard normal draws, shape (M / B, replicates, 2, T, B), M = n_draws // replicates.

    Replicate ``r`` is an independent scrambling seeded by child ``r`` of
    ``SeedSequence(seed)``; its draw ``m = j B + b`` is ``[j, r, :, :, b]``, row 0 driving
    the logits, row 1 the values. Blocks of ``B = min(M, _kernels.population.BLOCK)`` draws
    are the kernel's SIMD axis, and block-major order keeps the first draws of every replicate
    in one contiguous piece (a save that stops at 64 draws a replicate reads 64 KB, not 128
    pieces spread over 2 MB: a cold cache cost 0.14 ms a save). The first ``2**k`` draws of a
    replicate are themselves a scrambled Sobol net, so a prefix is a valid smaller rule
    (``population_metrics`` with ``se_target`` extends it by doubling). Cached on the
    arguments; the array is read-only.
    """
    per = n_draws // replicates
    size = min(per, _kernel.BLOCK)
    out = np.empty((per // size, replicates, 2, T, size))
    for r, child in enumerate(np.random.SeedSequence(seed).spawn(replicates)):
        u = _sobol(2 * T, per, np.random.default_rng(child))
        g = ndtri(u + 2.0 ** -(_SOBOL_BITS + 1)).T.reshape(2, T, per // size, size)
        out[:, r] = np.moveaxis(g, 2, 0)
    out.flags.writeable = False
    return out


def _check_draws(n_draws, replicates, se_target):
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
    if se_target is not None and not (isinstance(se_target, (int, float, np.floating)) and se_target > 0
                                      and np.isfinite(se_target)):
        raise ConfigError(f"se_target must be None (spend all n_draws) or a finite number > 0, e.g. 1e-4; "
                          f"got {se_target!r}")


def _per_token_cov(cov, T) -> np.ndarray:
    """``cov`` of shape (2, 2) or (T, 2, 2), validated, as (T, 2, 2) symmetrised."""
    if cov.shape == (2, 2):
        cov = np.broadcast_to(cov, (T, 2, 2))
    elif cov.shape != (T, 2, 2):
        raise ConfigError(f"cov must have shape (2, 2) (covariance of (z_t, v_t), the same for every token) or "
                          f"(T, 2, 2) = ({T}, 2, 2) (one per token); got {cov.shape}")
    a, b, b2, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 0], cov[:, 1, 1]
    tol = 1e-12 * np.maximum(np.maximum(np.abs(a), np.abs(c)), 1e-300)
    bad = (np.abs(b - b2) > tol) | (a < -tol) | (c < -tol) | \
        (b ** 2 > np.maximum(a, 0.0) * np.maximum(c, 0.0) + tol * np.maximum(np.maximum(np.abs(a), np.abs(c)), 1e-300))
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        where = "" if cov.ndim == 2 or T == 1 else f" (token {t})"
        raise ConfigError(f"cov must be symmetric positive semi-definite; got {cov[t].tolist()}{where}")
    return 0.5 * (cov + np.swapaxes(cov, 1, 2))


def population_metrics(mean_z, mean_v, cov, *, n_draws=DEFAULT_N_DRAWS, replicates=DEFAULT_REPLICATES, seed=0,
                       se_target=None):
    """Population loss and accuracy from the per-token Gaussian moments of ``(z_t, v_t)``.

    ``f = sum_t softmax(z)_t v_t`` with ``(z_t, v_t) ~ N((mean_z[c, t], mean_v[c, t]), cov_t)``
    independent over ``t``; class ``c = 0`` is ``y* = +1``, ``c = 1`` is ``y* = -1``.
    Randomised QMC: ``replicates`` independent scramblings of a Sobol sequence in ``2T``
    dimensions, mapped through the inverse normal CDF and the square root of ``cov_t``; both
    classes use the same draws. Deterministic given ``seed``. The accuracy is averaged as
    ``P(y* f > 0 | z)``, a normal CDF since ``f`` is Gaussian given the logits (conditional
    Monte Carlo: same expectation, smooth integrand, several times smaller error than
    counting ``y* f > 0``); when ``v`` is a function of ``z`` (every ``cov_t`` of rank <= 1
    along ``z``) it counts. A token with ``cov_t = 0`` is used at its mean, exactly.

    The sums run in a numba kernel (``_kernels.population``): about 0.1 us per draw and class
    at T = 8 (2**14 draws: ~3 ms), after a one-off ~20 ms to generate (and cache) the draws.
    With ``se_target`` the draws are spent by doubling, from ``MIN_DRAWS_PER_REPLICATE`` per
    replicate, until both standard errors are at most ``se_target`` or ``n_draws`` are used
    (the prefixes of a scrambled Sobol sequence are nets in their own right).

    Parameters
    ----------
    mean_z, mean_v : array_like, shape (2, T)
    cov : array_like, shape (2, 2) or (T, 2, 2)
        Symmetric positive semi-definite (rank 1 and 0 allowed); one for every token, or one per token.
    n_draws : int
        Total draws (the most, with ``se_target``); ``n_draws / replicates`` must be a power of two.
    replicates : int
        Independent scramblings (>= 2) from which the standard error is estimated.
    seed : int
        Seed of the scramblings.
    se_target : float or None
        Stop at the first doubling whose loss and accuracy standard errors are both at most
        this; None spends all ``n_draws``.

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
    >>> m = population_metrics([[1.0, 0.0]], [[1.0, 0.0]], np.eye(2))
    Traceback (most recent call last):
    ...
    attnsim._validation.ConfigError: mean_z and mean_v must both have shape (2, T) (class y*=+1, then y*=-1; one column a token); got (1, 2) and (1, 2)
    """
    mean_z = np.asarray(mean_z, dtype=np.float64)
    mean_v = np.asarray(mean_v, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean_z.ndim != 2 or mean_z.shape[0] != 2 or mean_z.shape[1] < 1 or mean_v.shape != mean_z.shape:
        raise ConfigError(
            f"mean_z and mean_v must both have shape (2, T) (class y*=+1, then y*=-1; one column a "
            f"token); got {mean_z.shape} and {mean_v.shape}"
        )
    T = mean_z.shape[1]
    sym = np.empty((T, 2, 2))
    if cov.shape not in ((2, 2), (T, 2, 2)) or _kernel.check_moments(
            np.ascontiguousarray(mean_z), np.ascontiguousarray(mean_v), np.ascontiguousarray(cov).reshape(-1, 2, 2),
            sym):
        # the kernel's checks failed (or the shape is wrong): the NumPy checks say why
        for name, arr in (("mean_z", mean_z), ("mean_v", mean_v), ("cov", cov)):
            if not np.isfinite(arr).all():
                raise ConfigError(f"{name} must be finite; got {arr.tolist()}")
        sym = _per_token_cov(cov, T)
    _check_draws(n_draws, replicates, se_target)
    cov = sym
    return _quadrature(mean_z, mean_v, cov, int(n_draws), int(replicates), int(seed), se_target)


def _quadrature(mean_z, mean_v, cov, n_draws, replicates, seed, se_target) -> PopulationMetrics:
    """``population_metrics`` on validated arrays, ``cov`` of shape (T, 2, 2), in the numba kernel."""
    draws = standard_normal_draws(mean_z.shape[1], n_draws, replicates, seed)     # (M / B, R, 2, T, B)
    out = np.empty((2, 3, 2))            # (loss, acc) x (class +1, class -1, balanced) x (estimate, se)
    first, se = _draw_schedule(n_draws, replicates, se_target)
    used = _kernel.population_quadrature(np.ascontiguousarray(mean_z), np.ascontiguousarray(mean_v),
                                         np.ascontiguousarray(cov), _YS, draws, first, se, out)
    return _from_out(out, used, replicates)


def _draw_schedule(n_draws, replicates, se_target) -> tuple[int, float]:
    """The kernel's ``(first, se_target)``: draws per scrambling before the first standard error is
    read (all of them without a target), and the target (-1: spend every draw)."""
    if se_target is None:
        return n_draws // replicates, -1.0
    return MIN_DRAWS_PER_REPLICATE, float(se_target)


def _from_out(out, used, replicates) -> PopulationMetrics:
    """The kernel's ``out`` (2, 3, 2) and draws per scrambling ``used``, as ``PopulationMetrics``."""
    (cl0, cl1, (loss, loss_se)), (ca0, ca1, (acc, acc_se)) = out.tolist()
    return PopulationMetrics(
        loss=loss, acc=acc, loss_se=loss_se, acc_se=acc_se,
        class_loss=(cl0[0], cl1[0]), class_acc=(ca0[0], ca1[0]),
        class_loss_se=(cl0[1], cl1[1]), class_acc_se=(ca0[1], ca1[1]),
        n_draws=int(used) * replicates,
    )


# --------------------------------------------------------------------------- inside a run

@dataclass(frozen=True, eq=False)
class PopulationSpec:
    """The data model's test distribution, as a run's recorder needs it (``Config.test_metrics="population"``).

    The engine appends ``mu_+``, ``mu_-`` and the initial head ``nu0`` to its probe directions
    (``directions``), so that every save time has ``q^T mu_+-`` and ``q^T nu0`` from the dual
    state at O(N) cost; with ``||q||`` (``query_norm``) and the head's own inner products
    (``HeadInnerProducts``) that is all ``metrics`` needs.

    Attributes
    ----------
    mu_pos, mu_neg : ndarray, shape (d,)
    mu_norm, rho, sigma : float
    roles : ndarray of int8, shape (T,)
    noise : {"isotropic", "orthogonal"}
    n_draws, replicates, seed : int
        Quadrature settings (``population_metrics``); ``n_draws`` is the most a save spends.
    signal_noise : {"noisy", "noiseless"}
        ``noiseless``: the relevant tokens carry no noise (``Config.signal_noise``).
    se_target : float or None
        Standard error each save asks of its loss and accuracy (``population_metrics``).
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
    signal_noise: str = "noisy"
    se_target: float | None = DEFAULT_SE_TARGET
    _coef: np.ndarray = field(init=False, repr=False)
    _noisy: np.ndarray = field(init=False, repr=False)
    _save: tuple = field(init=False, repr=False)

    def __post_init__(self):
        check_choice("noise", self.noise, NOISE_MODES)
        check_choice("signal_noise", self.signal_noise, SIGNAL_NOISE)
        _check_draws(self.n_draws, self.replicates, self.se_target)
        roles = np.asarray(self.roles)
        object.__setattr__(self, "_coef", np.ascontiguousarray(_signal_coefficients(roles, self.rho)))
        noisy = np.ones(roles.size, dtype=bool)
        if self.signal_noise == "noiseless":
            noisy[roles == ROLE_RELEVANT] = False
        object.__setattr__(self, "_noisy", noisy)
        # What every save passes to the kernel besides the inner products, formed once: the
        # squares as population_moments forms them (Python's ``**``), the draw schedule.
        object.__setattr__(self, "_save", (self.mu_norm ** 2, float(self.sigma ** 2),
                                           *_draw_schedule(self.n_draws, self.replicates, self.se_target)))

    @classmethod
    def from_config(cls, config: Config, *, signals=None, **quadrature) -> PopulationSpec:
        """The spec of ``config``'s data model; ``signals`` gives ``(mu_+, mu_-)`` in other
        coordinates (an implicit space's), default ``make_data``'s d-vectors."""
        mu_pos, mu_neg = _signals(config) if signals is None else signals
        return cls(mu_pos=mu_pos, mu_neg=mu_neg, mu_norm=config.signal_norm, rho=config.rho,
                   roles=token_roles(config), sigma=config.sigma_eps, noise=config.noise,
                   signal_noise=config.signal_noise, **quadrature)

    #: Rows ``directions`` appends to the probes: mu_+, mu_-, nu0.
    N_DIRECTIONS = 3

    def directions(self, nu: np.ndarray) -> np.ndarray:
        """``[mu_+, mu_-, nu]``, shape (3, d): the probes whose ``<W^T p, r>`` the metrics need."""
        return np.stack([self.mu_pos, self.mu_neg, nu])

    def metrics(self, qq, q_mu, q_nu, nunu, nu_mu) -> PopulationMetrics:
        """Population metrics from the inner products of ``q = W^T p`` and ``nu`` (see ``population_moments``).

        The recorder's path: no validation beyond finiteness, and the 2 x 2 Gram is clipped to
        PSD, since inner products read from a dual state carry round-off that can put it a few
        ulps outside (``nu`` parallel to ``q``). Non-finite inputs give NaN metrics.

        The moments and the quadrature run in one kernel call (``_kernels.population.population_save``,
        the operations of ``population_moments`` in the same order: the same bits); only the
        orthogonal-noise correction ``A A^T / ||mu||^2`` stays a NumPy product, as before.
        """
        q_mu = np.asarray(q_mu, dtype=np.float64)
        nu_mu = np.asarray(nu_mu, dtype=np.float64)
        mu_norm2, sigma2, first, se = self._save
        orthogonal = self.noise == "orthogonal"
        if orthogonal:
            a = np.stack([q_mu, nu_mu])
            corr = (a @ a.T) / mu_norm2
        else:
            corr = _NO_CORRECTION
        out = np.empty((2, 3, 2))
        draws = standard_normal_draws(self._coef.shape[1], self.n_draws, self.replicates, self.seed)
        used = _kernel.population_save(float(qq), float(q_nu), float(nunu), float(q_mu[0]), float(q_mu[1]),
                                       float(nu_mu[0]), float(nu_mu[1]), corr, orthogonal, self._coef, self._noisy,
                                       sigma2, _YS, draws, first, se, out)
        if used < 0:
            nan2 = (np.nan, np.nan)
            return PopulationMetrics(np.nan, np.nan, np.nan, np.nan, nan2, nan2, nan2, nan2, 0)
        return _from_out(out, used, self.replicates)

    def warm_up(self) -> None:
        """Load (or compile) the quadrature kernel and generate the draws, outside any timed save."""
        self.metrics(0.0, np.zeros(2), 0.0, 0.0, np.zeros(2))     # deterministic: the fewest draws


class HeadInnerProducts:
    """``(nu^T nu, (nu^T mu_+, nu^T mu_-), q^T nu)`` at a save time, from what the coordinates report.

    A fixed head ``nu0``: its own products once; ``q^T nu0`` is the probe ``nu0`` of
    ``PopulationSpec.directions``. A trained head (``trainable`` "p+nu", "Wp+nu") is
    ``nu = nu0 + X^T beta`` (DESIGN.md §8; the primal members' ``nu`` moves along the same
    ``X^T h``), and the coordinates report ``v = X nu`` (``observe_head``) and the training
    scores ``z = X q`` (``observe``: ``z_j = <W x_j, p> = <x_j, q>`` for every trainable set).
    So with ``dv = v - X nu0 = Gxx beta``:

        q^T nu    = q^T nu0 + z^T beta
        mu^T nu   = mu^T nu0 + (X mu)^T beta
        nu^T nu   = ||nu||^2                       (``observe_head().nu_norm``)

    with ``beta = Gxx^+ dv``. Any solution of ``Gxx beta = dv`` gives the same products,
    because ``z`` and ``X mu`` lie in the range of ``X`` = that of ``Gxx``: a singular
    ``Gxx`` (``d < N``, or a noiseless signal token repeated in every sample) is exact
    through its pseudo-inverse. Eigen-directions below ``_RCOND * lambda_max`` are dropped: a
    direction of eigenvalue ``lambda`` enters the products through ``X^T u`` of norm
    ``sqrt(lambda)``, so the error of a dropped or kept one is at most
    ``eps ||beta|| ||q|| lambda_max / sqrt(lambda)``-small. One eigendecomposition (O(N^3))
    at set-up, O(N^2) a save.

    Parameters
    ----------
    X : ndarray, shape (N, d)      training tokens
    nu0 : ndarray, shape (d,)      initial head
    mu : ndarray, shape (2, d)     ``mu_+``, ``mu_-``
    gram : ndarray, shape (N, N) or None
        ``X X^T`` for a trained head (None: the head is fixed).
    """

    #: Relative eigenvalue cut of the pseudo-inverse: above round-off (~N eps) with margin.
    _RCOND = 1e-11

    def __init__(self, X, nu0, mu, gram=None):
        self.trained = gram is not None
        self.nu0_mu = mu @ nu0
        self.nunu0 = float(nu0 @ nu0)
        if self.trained:
            self.v0 = X @ nu0
            lam, U = np.linalg.eigh(gram)
            keep = lam > self._RCOND * max(lam[-1], 0.0)
            U = U[:, keep]
            self.pinv = np.ascontiguousarray((U / lam[keep]) @ U.T)
            self.X_mu = np.ascontiguousarray((X @ mu.T).T)            # (2, N)

    def __call__(self, z, v, nu_norm, q_nu0):
        """``(nu^T nu, nu^T mu (2,), q^T nu)`` from the scores ``z`` (N,), values ``v`` (N,),
        ``||nu||`` and ``q^T nu0``."""
        if not self.trained:
            return self.nunu0, self.nu0_mu, q_nu0
        beta = self.pinv @ (v - self.v0)
        return nu_norm * nu_norm, self.nu0_mu + self.X_mu @ beta, q_nu0 + float(z @ beta)


# --------------------------------------------------------------------------- from parameters

def population_metrics_from_params(q, nu, config: Config, *, n_draws=DEFAULT_N_DRAWS,
                                   replicates=DEFAULT_REPLICATES, seed=0, se_target=None) -> PopulationMetrics:
    """Population test metrics of the query ``q = W^T p`` and head ``nu`` under ``config``'s data model.

    Uses ``config``'s signals (``mu_± = ||mu|| e_{1,2}``, as ``make_data``), ``rho``,
    token roles, ``sigma_eps``, noise mode and signal noise; see ``population_metrics`` for
    the rest (``se_target=attnsim._population.DEFAULT_SE_TARGET`` gives what a run records).

    Parameters
    ----------
    q, nu : array_like, shape (d,)
        For a result ``res``: ``q = res.W.T @ res.p`` (``W = W0`` when it is not trained);
        ``nu = res.nu`` (``make_data(config).nu`` when the head is fixed).
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
        noise=config.noise, signal_noise=config.signal_noise,
    )
    return population_metrics(mean_z, mean_v, cov, n_draws=n_draws, replicates=replicates, seed=seed,
                              se_target=se_target)
