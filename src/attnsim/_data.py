"""Synthetic token sequences with label noise (paper §3 and the official code), and initialisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._config import Config
from ._validation import ConfigError
from ._datamodel import (ROLE_IRRELEVANT, ROLE_NAMES, ROLE_RELEVANT, ROLE_WEAK,  # noqa: F401 - re-exported
                         ROLE_WEAK_OPPOSITE, DataModel, token_roles)

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


def _head(rng, config, mu_pos, mu_neg) -> np.ndarray:
    if config.head_init == "zero":
        return np.zeros_like(mu_pos)
    if config.head_init == "gaussian":
        return rng.standard_normal(config.d) * config.sigma_nu
    diff = mu_pos - mu_neg
    return diff / np.linalg.norm(diff) * config.effective_head_scale


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

    Raises
    ------
    ConfigError
        For ``config.space == "implicit"``, whose arrays are never d-dimensional (``run_data``
        gives its coordinates).
    """
    _explicit_only(config, "make_data")
    rngs = _rngs(config)
    mu_pos, mu_neg = signals(config)
    nu = _head(rngs["head"], config, mu_pos, mu_neg)
    model = DataModel.from_config(config)

    y_true = model.true_labels(rngs["train"], config.n_train)
    X = model.tokens(rngs["train"], y_true, mu_pos, mu_neg)
    noisy = model.flips(rngs["train"], y_true)
    y = np.where(noisy, -y_true, y_true)

    y_test = model.true_labels(rngs["test"], config.n_test)
    X_test = model.tokens(rngs["test"], y_test, mu_pos, mu_neg)
    return Data(
        X=X, y=y, y_true=y_true, noisy=noisy, X_test=X_test, y_test=y_test,
        roles=model.roles.copy(), relevant=model.relevant, mu_pos=mu_pos, mu_neg=mu_neg, nu=nu,
    )


def _explicit_only(config: Config, name: str) -> None:
    if config.space != "explicit":
        raise ConfigError(f"{name} draws d-dimensional arrays, which space='implicit' never forms (d={config.d}); "
                          f"use config.replace(space='explicit') at a d that fits in memory, or "
                          f"attnsim.run_data(config) for the implicit draw's coordinates")


def run_data(config: Config) -> Data:
    """The training data a run of ``config`` sees: ``make_data(config)``, or for
    ``space="implicit"`` the same arrays in the coordinates of its virtual basis (``X`` of shape
    (n, T, k) with ``k = config.implicit_dimension``, no test set), whose inner products have
    the law of the explicit ones. What the analysis functions read (``noise_probes``,
    ``decompose_query``) comes from here, so they work in both spaces.

    Examples
    --------
    >>> cfg = Config(space="implicit", init="official-gaussian", test_metrics="population", n_test=0,
    ...              d=10**9, n_train=4, T=3)
    >>> run_data(cfg).X.shape == (4, 3, cfg.implicit_dimension)
    True
    """
    return draw_implicit(config).data if config.space == "implicit" else make_data(config)


def signals(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """``(mu_+, mu_-) = (||mu|| e_1, ||mu|| e_2)`` in dimension ``config.d`` (the official code's)."""
    mu_pos = np.zeros(config.d)
    mu_pos[0] = config.signal_norm
    mu_neg = np.zeros(config.d)
    mu_neg[1] = config.signal_norm
    return mu_pos, mu_neg


def init_params(config: Config) -> tuple[np.ndarray | None, np.ndarray]:
    """Initial ``(W0, p0)`` of shapes (d, d) and (d,), from the initialisation stream.

    ``W0`` is None for ``w0="identity"``: ``train`` reads it as the identity, which it never
    builds while W is fixed (d = 11000 would be a 1 GB matrix). Not for ``space="implicit"``
    (``ConfigError``)."""
    _explicit_only(config, "init_params")
    rng = _rngs(config)["init"]
    d = config.d
    identity = config.w0 == "identity"
    if config.init == "official":
        if identity:
            return None, np.zeros(d)
        bound = 1.0 / np.sqrt(d)
        return rng.uniform(-bound, bound, size=(d, d)), np.zeros(d)
    W0 = None if identity else _scaled_normal(rng, (d, d), w0_scale(config))
    if config.init == "official-gaussian":
        return W0, np.zeros(d)
    p0 = rng.standard_normal(d) * config.sigma_p
    return W0, p0


def _scaled_normal(rng, shape, scale):
    """``rng.standard_normal(shape) * scale``, scaled in place: no second d x d array (at d = 8000,
    its 512 MB of fresh pages took longer than the draws)."""
    out = rng.standard_normal(shape)
    out *= scale
    return out


def w0_scale(config: Config) -> float:
    """Standard deviation of the Gaussian ``W0`` entries: ``sigma_w`` for ``init="gaussian"``; for
    ``init="official-gaussian"``, ``1/sqrt(3d)``, the variance of the official ``U(-1/sqrt(d), 1/sqrt(d))``."""
    if config.init == "official-gaussian":
        return 1.0 / np.sqrt(3.0 * config.d)
    return float(config.sigma_w)


@dataclass(frozen=True, eq=False)
class ImplicitDraw:
    """One synthetic problem of ``Config(space="implicit")``, in the coordinates of a virtual space.

    Every vector is a coordinate array of length ``k = config.implicit_dimension`` in an
    orthonormal basis of the directions the problem touches (DESIGN.md §11); inner products of
    coordinates are inner products in R^d, whose joint law is that of ``make_data`` and
    ``init_params`` at the same ``d`` (with ``W0`` Gaussian or the identity).

    Attributes
    ----------
    data : Data
        As ``make_data`` returns it, with ``d`` replaced by ``k``: ``X`` (n, T, k), ``mu_pos``,
        ``mu_neg`` and ``nu`` (k,) (``mu_+- = ||mu|| e_{0,1}`` of the virtual basis); no test set
        (``X_test`` of shape (0, T, k)).
    W0 : attnsim._implicit.LazyGaussianMatrix or None
        The Gaussian ``W0`` as an operator, already applied to every vector a run's set-up asks
        of it and frozen; None for the identity.
    p0 : ndarray, shape (k,)
    space : attnsim._implicit.VirtualSpace
    """

    data: Data
    W0: object
    p0: np.ndarray
    space: object


def draw_implicit(config: Config) -> ImplicitDraw:
    """Draw the problem of ``config`` (``space="implicit"``) without any d-dimensional array.

    Streams as in ``make_data``: tokens, labels and flips from the training stream, the head
    from the head stream, ``p0`` and ``W0`` from the initialisation stream; the virtual basis
    is shared and touched in that order (``mu_+``, ``mu_-``, token noises, head, ``p0``, then the
    keys ``W0 x_j`` and ``W0^T`` of ``p0`` and of the keys), so the draw is deterministic given
    the seeds and does not depend on which coordinates a run uses afterwards. Cost
    O(N k^2) whatever ``d`` is.
    """
    from ._implicit import VirtualSpace

    rngs = _rngs(config)
    space = VirtualSpace(config.d, config.implicit_dimension)
    mu_pos = space.new_direction() * config.signal_norm
    mu_neg = space.new_direction() * config.signal_norm
    model = DataModel.from_config(config)
    y_true = model.true_labels(rngs["train"], config.n_train)
    X = model.tokens_implicit(space, rngs["train"], y_true, mu_pos, mu_neg)
    noisy = model.flips(rngs["train"], y_true)
    k = space.k_max
    if config.head_init == "gaussian":
        nu = space.gaussian(config.sigma_nu, 1, rngs["head"])[0]
    else:
        nu = _head(rngs["head"], config, mu_pos, mu_neg)
    p0 = np.zeros(k)
    if config.init == "gaussian" and config.sigma_p > 0:
        p0 = space.gaussian(config.sigma_p, 1, rngs["init"])[0]
    W0 = None
    if config.w0 == "random":
        W0 = space.gaussian_matrix(w0_scale(config), rngs["init"])
        keys = W0.matmat(X.reshape(-1, k).T)                    # (k, N): W0 x_j
        W0.rmatmat(np.column_stack([p0, keys]) if np.any(p0) else keys)
        W0.freeze()
    data = Data(X=X, y=np.where(noisy, -y_true, y_true), y_true=y_true, noisy=noisy,
                X_test=np.zeros((0, model.T, k)), y_test=np.zeros(0), roles=model.roles.copy(),
                relevant=model.relevant, mu_pos=mu_pos, mu_neg=mu_neg, nu=nu)
    return ImplicitDraw(data=data, W0=W0, p0=p0, space=space)
