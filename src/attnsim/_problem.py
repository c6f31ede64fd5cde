"""One training problem as the engine sees it: validated, flattened, read-only arrays."""

from __future__ import annotations

import numpy as np

from ._implicit import LazyGaussianMatrix
from ._validation import ConfigError


class Problem:
    """Validated, flattened arrays of one training problem (read-only inside the engine).

    Attributes
    ----------
    n, T, d, N : int
        Samples, tokens per sample, dimension and ``N = n T``.
    X : ndarray, shape (N, d)      training tokens, sample-major
    v : ndarray, shape (N,)        token values ``X nu``
    y : ndarray, shape (n,)
    Xt : ndarray, shape (Nt, d)    test tokens (Nt = 0 without a test set)
    vt : ndarray, shape (Nt,)
    yt : ndarray, shape (n_test,)
    W0 : ndarray, shape (d, d), LazyGaussianMatrix, or None
        None is the identity, never materialised while W is fixed (``w0_mul``, ``w0t_mul``).
        A ``LazyGaussianMatrix`` is the implicit space's ``W0`` (``Config(space="implicit")``):
        the arrays are then coordinates in a virtual basis, ``d`` is its size, and ``W0`` is
        only ever applied (``keys_of``, ``w0_mul``, ``w0t_mul``), never formed.
    implicit : bool
        True when the arrays are coordinates of an implicit space (``p``, ``W``, ``nu`` are then
        not available as d-vectors).
    p0, nu : ndarray, shape (d,)
    lr : float
    probes : ndarray, shape (k, d)       the caller's probe directions
    population : PopulationSpec or None  population test metrics instead of a test set
    probes_all : ndarray, shape (k', d)  what the coordinates project on: ``probes``, then
                                         ``population.directions(nu)`` (k' = k + 3) if set
    relevant : ndarray of bool, shape (T,)
    n_saves : int
        The run's save times (0: not known). Set-ups that either form a product once or apply
        ``W0`` at every save choose by it (``_coords.cost.query_by_matvec``).
    """

    def __init__(self, X, y, W0, p0, nu, lr, X_test, y_test, relevant, probes, population=None, implicit=False,
                 n_saves=0):
        self.implicit = implicit
        self.n_saves = n_saves
        self.n, self.T, self.d = X.shape
        self.N = self.n * self.T
        self.X = X.reshape(self.N, self.d)
        self.y = y
        self.W0, self.p0, self.nu = W0, p0, nu
        self.lr = lr
        self.v = self.X @ nu
        self.n_test = 0 if X_test is None else X_test.shape[0]
        self.Xt = np.zeros((0, self.d)) if X_test is None else X_test.reshape(-1, self.d)
        self.yt = np.zeros(0) if y_test is None else y_test
        self.vt = self.Xt @ nu
        self.relevant = relevant
        self.probes = probes
        self.population = population
        self.probes_all = probes if population is None else np.concatenate([probes, population.directions(nu)])

    @property
    def w0_kind(self) -> str:
        """How ``W0`` is given: ``"dense"``, ``"identity"`` (None) or ``"implicit"`` (an operator)."""
        if isinstance(self.W0, LazyGaussianMatrix):
            return "implicit"
        return "identity" if self.W0 is None else "dense"

    def keys_of(self, A):
        """``A @ W0^T`` for A of shape (m, d): the keys of the tokens in the rows of A."""
        if isinstance(self.W0, LazyGaussianMatrix):
            return self.W0.matmat(A.T).T
        return A if self.W0 is None else A @ self.W0.T

    def w0_mul(self, A):
        """``W0 @ A`` for A of shape (d,) or (d, m)."""
        if isinstance(self.W0, LazyGaussianMatrix):
            return self.W0.matvec(A) if A.ndim == 1 else self.W0.matmat(A)
        return A if self.W0 is None else self.W0 @ A

    def w0t_mul(self, A):
        """``W0^T @ A`` for A of shape (d,) or (d, m)."""
        if isinstance(self.W0, LazyGaussianMatrix):
            return self.W0.rmatvec(A) if A.ndim == 1 else self.W0.rmatmat(A)
        return A if self.W0 is None else self.W0.T @ A

    def W0_dense(self):
        """``W0`` as a (d, d) array (the identity built only here, when W is trained).

        Raises
        ------
        ConfigError
            In an implicit space, where ``W0`` exists only as an operator.
        """
        if isinstance(self.W0, LazyGaussianMatrix):
            raise ConfigError("W0 of an implicit space (space='implicit') is never formed; use engine='dual' "
                              "(the only engine of the implicit space), or space='explicit' for W itself")
        return np.eye(self.d) if self.W0 is None else self.W0
