"""What a token is: the data model of Sakamoto & Sato (and of Magen et al.), in one object.

A sample of true class ``y*`` has ``T`` tokens ``x_t = a_t mu_{y*} + b_t mu_{-y*} + eps_t`` with
signal coefficients ``(a_t, b_t)`` fixed by the token's role and noise ``eps_t ~ N(0, s_t^2 Pi)``:
``Pi = I`` (isotropic) or the projector off ``span(mu_+, mu_-)`` (orthogonal), ``s_t = sigma_eps``
or 0 on a noiseless signal token. Labels are balanced or Rademacher, with official or random
flips. ``DataModel`` says all of that once; explicit sampling (``make_data``), implicit sampling
(``space="implicit"``, DESIGN.md §11), the population test metrics (§10) and the analysis
(``token_noise``) all ask it instead of re-reading ``Config`` strings.

The paper's model and Magen et al.'s are its instances (``DataModel.from_config(preset("magen"))``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Integer codes of the token roles, in layout order.
ROLE_RELEVANT, ROLE_WEAK, ROLE_WEAK_OPPOSITE, ROLE_IRRELEVANT = 0, 1, 2, 3
ROLE_NAMES = ("R", "W_{Y*}", "W_{-Y*}", "I")


def token_roles(config) -> np.ndarray:
    """Role code of each of the T positions: R first, then W_{Y*}, W_{-Y*}, I."""
    counts = (config.n_relevant, config.n_weak, config.n_weak_opposite, config.n_irrelevant)
    return np.repeat(np.arange(4, dtype=np.int8), counts)


def role_coefficients(roles, rho: float) -> np.ndarray:
    """Signal coefficients ``(a_t, b_t)`` of ``mu_{y*}``, ``mu_{-y*}`` for role codes ``roles`` (T,): shape (T, 2)."""
    roles = np.asarray(roles)
    coef = np.zeros((roles.size, 2))
    coef[roles == ROLE_RELEVANT, 0] = 1.0
    coef[roles == ROLE_WEAK, 0] = rho
    coef[roles == ROLE_WEAK_OPPOSITE, 1] = rho
    return coef


def add_signal(X, coef, y_true, mu_pos, mu_neg) -> np.ndarray:
    """Add the means ``a_t mu_{y*} + b_t mu_{-y*}`` to the tokens ``X`` (n, T, k) of samples with true
    labels ``y_true`` (n,), in place, for coefficients ``coef`` (T, 2) and signals of shape (k,)
    (d-vectors, or coordinates of an implicit space); returns ``X``. Temporaries are (n, k), never
    the size of ``X``."""
    same = np.where(np.asarray(y_true)[:, None] > 0, mu_pos, mu_neg)    # mu_{y*}, (n, k)
    other = np.where(np.asarray(y_true)[:, None] > 0, mu_neg, mu_pos)   # mu_{-y*}
    for t, (a, b) in enumerate(coef):
        if a:
            X[:, t, :] += a * same
        if b:
            X[:, t, :] += b * other
    return X


def signal_part(coef, y_true, mu_pos, mu_neg) -> np.ndarray:
    """The means of ``add_signal`` alone, shape (n, T, k)."""
    return add_signal(np.zeros((np.size(y_true), len(coef), np.size(mu_pos))), coef, y_true, mu_pos, mu_neg)


@dataclass(frozen=True, eq=False)
class DataModel:
    """The law of one sample's tokens and labels.

    Attributes
    ----------
    roles : ndarray of int8, shape (T,)
        Role code of each position (``ROLE_NAMES`` indexes them).
    coef : ndarray, shape (T, 2)
        Signal coefficients ``(a_t, b_t)``: token ``t`` of a class-``y*`` sample has mean
        ``a_t mu_{y*} + b_t mu_{-y*}``. R is ``(1, 0)``, W_{Y*} ``(rho, 0)``, W_{-Y*} ``(0, rho)``,
        I ``(0, 0)``.
    noise_scale : ndarray, shape (T,)
        Standard deviation ``s_t`` of each position's noise: ``sigma_eps``, or 0 on a noiseless
        signal token (``signal_noise="noiseless"``).
    signal_norm : float
        ``||mu_+|| = ||mu_-||``; the signals are orthogonal.
    noise : {"isotropic", "orthogonal"}
        Noise covariance ``s_t^2 I``, or ``s_t^2 P`` with ``P`` the projector off ``span(mu_+, mu_-)``.
    labels : {"balanced", "rademacher"}
    label_noise : {"official", "random"}
    eta : float
    n_flips_official : int
        Labels the official mode flips (half from the start of each class).

    Examples
    --------
    >>> from attnsim import Config
    >>> model = DataModel.from_config(Config())
    >>> model.coef.tolist()[:4], model.noise_scale.tolist()[:2]
    ([[1.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.0, 0.0]], [1.0, 1.0])
    >>> model.class_means()[1, 0].tolist()    # y* = -1, token R: mu_-, i.e. (0, 1) in (mu_+, mu_-)
    [0.0, 1.0]
    """

    roles: np.ndarray
    coef: np.ndarray
    noise_scale: np.ndarray
    signal_norm: float
    noise: str
    labels: str
    label_noise: str
    eta: float
    n_flips_official: int

    @classmethod
    def from_config(cls, config) -> DataModel:
        roles = token_roles(config)
        coef = role_coefficients(roles, config.rho)
        scale = np.full(roles.size, float(config.sigma_eps))
        if config.signal_noise == "noiseless":
            scale[roles == ROLE_RELEVANT] = 0.0
        for arr in (roles, coef, scale):
            arr.flags.writeable = False
        return cls(roles=roles, coef=coef, noise_scale=scale, signal_norm=float(config.signal_norm),
                   noise=config.noise, labels=config.labels, label_noise=config.label_noise, eta=float(config.eta),
                   n_flips_official=config.n_train_noisy_official)

    # ------------------------------------------------------------------ description
    @property
    def T(self) -> int:
        return self.roles.size

    @property
    def relevant(self) -> np.ndarray:
        """The relevant set R, bool (T,)."""
        return self.roles == ROLE_RELEVANT

    @property
    def noiseless(self) -> np.ndarray:
        """Positions with no noise, bool (T,)."""
        return self.noise_scale == 0.0

    def class_means(self) -> np.ndarray:
        """Coefficients of ``(mu_+, mu_-)`` in each token's mean, shape (2, T, 2): class ``y* = +1``
        (row 0) then ``y* = -1`` (row 1). For ``y* = -1`` the roles of ``mu_+`` and ``mu_-`` swap."""
        return np.stack([self.coef, self.coef[:, ::-1]])   # the population metrics' layout

    def signal_part(self, y_true, mu_pos, mu_neg) -> np.ndarray:
        """Mean of every token of samples with true labels ``y_true`` (n,), shape (n, T, k) (``signal_part``)."""
        return signal_part(self.coef, y_true, mu_pos, mu_neg)

    # ------------------------------------------------------------------ labels
    def true_labels(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """True labels (n,): balanced (first ``n // 2`` are +1), or i.i.d. uniform on {-1, +1}."""
        if self.labels == "rademacher":
            return np.where(rng.random(n) < 0.5, 1.0, -1.0)
        y = -np.ones(n)
        y[: n // 2] = 1.0
        return y

    def flips(self, rng: np.random.Generator, y_true: np.ndarray) -> np.ndarray:
        """Which training labels are flipped, bool (n,): official (half at the start of each class)
        or independent with probability ``eta``."""
        n = y_true.size
        if self.label_noise == "random":
            return rng.random(n) < self.eta
        per_class = self.n_flips_official // 2
        mask = np.zeros(n, dtype=bool)
        mask[:per_class] = True
        mask[n // 2: n // 2 + per_class] = True
        return mask

    # ------------------------------------------------------------------ tokens
    def tokens(self, rng: np.random.Generator, y_true: np.ndarray, mu_pos: np.ndarray,
               mu_neg: np.ndarray) -> np.ndarray:
        """Explicit tokens of samples with true labels ``y_true`` (n,), shape (n, T, d).

        The draw is the one the paper's code makes: ``N(0, sigma^2 I)`` for every token (a
        noiseless token's draw is made and discarded, so the others do not depend on it),
        projected off the signals in the orthogonal mode, plus the role's signal.
        """
        n, d = y_true.size, mu_pos.size
        sigma = float(self.noise_scale.max(initial=0.0))
        X = rng.standard_normal((n, self.T, d)) * sigma
        if self.noise == "orthogonal":
            basis = np.stack([mu_pos, mu_neg]) / self.signal_norm
            X -= (X @ basis.T) @ basis
        X[:, self.noiseless, :] = 0.0
        return add_signal(X, self.coef, y_true, mu_pos, mu_neg)

    def tokens_implicit(self, space, rng: np.random.Generator, y_true: np.ndarray, mu_pos: np.ndarray,
                        mu_neg: np.ndarray) -> np.ndarray:
        """Tokens in the coordinates of an implicit space (``_implicit.VirtualSpace``), shape (n, T, k_max).

        ``mu_pos``, ``mu_neg`` must be the space's first two basis vectors (the orthogonal mode
        projects the noise off them). Exact in law: the joint law of all inner products equals
        that of ``tokens`` in dimension ``space.d``.
        """
        n = y_true.size
        noise = np.zeros((n, self.T, space.k_max))
        off = 2 if self.noise == "orthogonal" else 0
        noisy = np.flatnonzero(~self.noiseless)
        if noisy.size and self.noise_scale[noisy[0]] > 0:
            eps = space.gaussian(float(self.noise_scale[noisy[0]]), n * noisy.size, rng, off=off)
            noise[:, noisy, :] = eps.reshape(n, noisy.size, space.k_max)
        return add_signal(noise, self.coef, y_true, mu_pos, mu_neg)

