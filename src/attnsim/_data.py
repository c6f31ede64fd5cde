"""Synthetic token sequences with label noise (paper §3 and the official code), and initialisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._config import Config

#: Integer codes of the token roles, in layout order.
ROLE_RELEVANT, ROLE_WEAK, ROLE_WEAK_OPPOSITE, ROLE_IRRELEVANT = 0, 1, 2, 3
ROLE_NAMES = ("R", "W_{Y*}", "W_{-Y*}", "I")

_STREAMS = ("train", "test", "init", "head")


def _rngs(config: Config) -> dict:
    """Independent generators for the training data, the test data, the initialisation of W and p,
    and the head's (a fourth child: the first three are those of ``spawn(3)``, as before)."""
    train, test, init, head = np.random.SeedSequence(config.seed).spawn(4)
    if config.init_seed is not None:
        init = np.random.SeedSequence([config.init_seed, 2])
        head = np.random.SeedSequence([config.init_seed, 3])
    return {name: np.random.default_rng(ss) for name, ss in zip(_STREAMS, (train, test, init, head))}


@dataclass(frozen=True, eq=False)
class Data:
    """Arrays of one synthetic problem and their bookkeeping.

    Attributes
    ----------
    X : ndarray, shape (n, T, d)
        Training tokens.
    y : ndarray, shape (n,)
        Observed (possibly flipped) training labels, +-1 as float64.
    y_true : ndarray, shape (n,)
        True training labels y*.
    noisy : ndarray of bool, shape (n,)
        ``y != y_true``.
    X_test : ndarray, shape (n_test, T, d)
    y_test : ndarray, shape (n_test,)
        Clean test labels.
    roles : ndarray of int8, shape (T,)
        Role code of each position (``ROLE_NAMES`` indexes them).
    relevant : ndarray of bool, shape (T,)
        The relevant set R.
    mu_pos, mu_neg, nu : ndarray, shape (d,)
        Class signals and the linear head (its initial value when the head is trained).
    """

    X: np.ndarray
    y: np.ndarray
    y_true: np.ndarray
    noisy: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    roles: np.ndarray
    relevant: np.ndarray
    mu_pos: np.ndarray
    mu_neg: np.ndarray
    nu: np.ndarray


def token_roles(config: Config) -> np.ndarray:
    """Role code of each of the T positions: R first, then W_{Y*}, W_{-Y*}, I."""
    counts = (config.n_relevant, config.n_weak, config.n_weak_opposite, config.n_irrelevant)
    return np.repeat(np.arange(4, dtype=np.int8), counts)


def _balanced_labels(n: int) -> np.ndarray:
    """First ``n // 2`` samples +1, the rest -1 (the official layout)."""
    y = -np.ones(n)
    y[: n // 2] = 1.0
    return y


def _tokens(rng, y_true, roles, config, mu_pos, mu_neg) -> np.ndarray:
    """Tokens for samples with true labels ``y_true``: role signal plus noise, shape (n, T, d)."""
    n, T, d = y_true.size, roles.size, config.d
    X = rng.standard_normal((n, T, d)) * config.sigma_eps
    if config.noise == "orthogonal":
        basis = np.stack([mu_pos, mu_neg]) / config.signal_norm
        X -= (X @ basis.T) @ basis
    same = np.where(y_true[:, None] > 0, mu_pos, mu_neg)  # mu_{y*}, shape (n, d)
    other = np.where(y_true[:, None] > 0, mu_neg, mu_pos)  # mu_{-y*}
    if config.signal_noise == "noiseless":
        X[:, roles == ROLE_RELEVANT, :] = 0.0      # drawn all the same: the other tokens keep their noise
    X[:, roles == ROLE_RELEVANT, :] += same[:, None, :]
    X[:, roles == ROLE_WEAK, :] += config.rho * same[:, None, :]
    X[:, roles == ROLE_WEAK_OPPOSITE, :] += config.rho * other[:, None, :]
    return X


def _labels(rng, n, config) -> np.ndarray:
    """True labels: balanced (first half +1), or i.i.d. uniform on {-1, +1}."""
    if config.labels == "rademacher":
        return np.where(rng.random(n) < 0.5, 1.0, -1.0)
    return _balanced_labels(n)


def _head(rng, config, mu_pos, mu_neg) -> np.ndarray:
    if config.head_init == "zero":
        return np.zeros(config.d)
    if config.head_init == "gaussian":
        return rng.standard_normal(config.d) * config.sigma_nu
    diff = mu_pos - mu_neg
    return diff / np.linalg.norm(diff) * config.effective_head_scale


def _flip_mask(rng, y_true, config) -> np.ndarray:
    n = y_true.size
    if config.label_noise == "random":
        return rng.random(n) < config.eta
    per_class = config.n_train_noisy_official // 2
    mask = np.zeros(n, dtype=bool)
    mask[:per_class] = True
    mask[n // 2 : n // 2 + per_class] = True
    return mask


def make_data(config: Config) -> Data:
    """Draw the training and test sets of ``config``.

    Training data, label flips and test data come from independent random streams
    of ``config.seed``, so the test set never shares noise with the training set
    (unlike the official code) and changing ``n_test`` does not change the training set.

    Examples
    --------
    >>> data = make_data(Config(n_train=4, n_test=3, d=10, eta=0.5))
    >>> data.X.shape, data.X_test.shape, data.noisy.tolist()
    ((4, 8, 10), (3, 8, 10), [True, False, True, False])
    """
    rngs = _rngs(config)
    d = config.d
    mu_pos = np.zeros(d)
    mu_pos[0] = config.signal_norm
    mu_neg = np.zeros(d)
    mu_neg[1] = config.signal_norm
    nu = _head(rngs["head"], config, mu_pos, mu_neg)
    roles = token_roles(config)

    y_true = _labels(rngs["train"], config.n_train, config)
    X = _tokens(rngs["train"], y_true, roles, config, mu_pos, mu_neg)
    noisy = _flip_mask(rngs["train"], y_true, config)
    y = np.where(noisy, -y_true, y_true)

    y_test = _labels(rngs["test"], config.n_test, config)
    X_test = _tokens(rngs["test"], y_test, roles, config, mu_pos, mu_neg)
    return Data(
        X=X, y=y, y_true=y_true, noisy=noisy, X_test=X_test, y_test=y_test,
        roles=roles, relevant=roles == ROLE_RELEVANT, mu_pos=mu_pos, mu_neg=mu_neg, nu=nu,
    )


def init_params(config: Config) -> tuple[np.ndarray | None, np.ndarray]:
    """Initial ``(W0, p0)`` of shapes (d, d) and (d,), from the initialisation stream.

    ``W0`` is None for ``w0="identity"``: ``train`` reads it as the identity, which it never
    builds while W is fixed (d = 11000 would be a 1 GB matrix)."""
    rng = _rngs(config)["init"]
    d = config.d
    identity = config.w0 == "identity"
    if config.init == "official":
        if identity:
            return None, np.zeros(d)
        bound = 1.0 / np.sqrt(d)
        return rng.uniform(-bound, bound, size=(d, d)), np.zeros(d)
    W0 = None if identity else rng.standard_normal((d, d)) * config.sigma_w
    p0 = rng.standard_normal(d) * config.sigma_p
    return W0, p0
