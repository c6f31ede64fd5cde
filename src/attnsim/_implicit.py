"""Exact implicit-dimension sampling: Gaussian vectors and a lazy Gaussian matrix in R^d (DESIGN.md §11).

The dual engine reads the problem only through inner products. When every random object is
Gaussian and rotation-invariant, the joint law of those inner products can be drawn without
the d-dimensional vectors: keep an orthonormal basis ``e_0, e_1, ...`` of the directions touched
so far and hold every vector as its coordinates in that basis (an array of shape ``(k_max,)``,
untouched coordinates 0). The ``d - k`` untouched directions are exchangeable, so a fresh
Gaussian vector's component there is a norm ``sigma * chi_{d-k}`` along a direction that
becomes the next basis vector. Drawing N vectors in turn this way is the Bartlett
decomposition of their Gram matrix. ``d`` enters only as degrees of freedom: d = 1e9 costs what
d = 1e2 costs, and no array of size d is ever formed.

A d x d matrix ``W0`` with i.i.d. ``N(0, s^2)`` entries is drawn lazily. Let ``U`` (orthonormal
columns) span the inputs ``W0`` has met, with ``A = W0 U``, and ``V`` span the inputs ``W0^T``
has met, with ``B = W0^T V`` (so ``V^T A = B^T U``). Conditionally on them (Gaussian conditioning
on linear constraints: Bolthausen, "An iterative construction of solutions of the TAP
equations for the Sherrington-Kirkpatrick model", CMP 2014; Bayati & Montanari, "The dynamics
of message passing on dense graphs", IEEE TIT 2011, Lemma 10)::

    W0 = V B^T + (I - V V^T) A U^T + (I - V V^T) W~ (I - U U^T),   W~ an independent copy.

The first two terms are the minimum-norm matrix meeting the constraints; the last is ``W~``
projected (in Frobenius inner product) onto the matrices that meet none of them. So for an
input ``u`` with residual ``r e = (I - U U^T) u`` (``e`` a unit vector),
``W0 e = V B^T e + g`` with ``g ~ N(0, s^2 (I - V V^T))`` fresh, and ``W0 u = A U^T u + r W0 e``.
``W0^T`` is the mirror image (swap ``U, A`` with ``V, B``). Each application costs O(k^2);
a set-up touching k directions costs O(k^3).

New or old. An input counts as lying in the span already met when its residual after two
passes of Gram-Schmidt is at most ``SPAN_RTOL * ||u||``; then its image is the exact
conditional value ``A U^T u`` and no randomness is drawn. Dropping such a residual changes the
image by at most about ``2 SPAN_RTOL`` relative (the operator norm of ``W0`` is about twice its
typical gain ``s sqrt(d)``).

The draws are deterministic given the generators, but they are not the explicit mode's
numbers: the two agree in law (tests/test_implicit.py).
"""

from __future__ import annotations

import math

import numpy as np

from ._validation import ConfigError, check_int

#: An input whose residual off the span already met is at most this times its norm lies in
#: that span: its image is the conditional value, with no randomness drawn.
SPAN_RTOL = 1e-10


class VirtualSpace:
    """R^d of which at most ``k_max`` directions are ever touched.

    Vectors are coordinate arrays of shape ``(k_max,)`` in an orthonormal basis ``e_0, e_1, ...``
    of the touched directions (untouched coordinates are 0). ``d`` may be huge (1e9): nothing of
    size d is ever formed.

    Parameters
    ----------
    d : int
        The dimension of the space; at least ``k_max``.
    k_max : int
        How many directions may be touched: one per :meth:`new_direction`, one per vector of
        :meth:`gaussian` with ``sigma > 0``, one per new input of a :class:`LazyGaussianMatrix`
        or of its transpose.

    Attributes
    ----------
    d, k_max : int
    k : int
        Directions touched so far; coordinates ``k, ..., k_max - 1`` of every vector are 0.

    Raises
    ------
    ConfigError
        If ``d < k_max``: the virtual basis must fit in the space.

    Examples
    --------
    >>> space = VirtualSpace(d=10**9, k_max=8)
    >>> mu = 20.0 * space.new_direction()
    >>> x = space.gaussian(1.0, 2, np.random.default_rng(0))
    >>> x.shape, space.k
    ((2, 8), 3)
    >>> print(np.round(np.sum(x * x, axis=1) / space.d, 3), x @ mu == 20.0 * x[:, 0])
    [1. 1.] [ True  True]
    """

    def __init__(self, d: int, k_max: int):
        self.d = check_int("d", d, minimum=1)
        self.k_max = check_int("k_max", k_max, minimum=1)
        if self.d < self.k_max:
            raise ConfigError(
                f"d must be >= k_max = {self.k_max} (the implicit space holds up to k_max touched "
                f"directions: about 3 N + 8 plus the probes); got d={self.d}; use space='explicit' "
                f"for d this small")
        self.k = 0

    def _full(self):
        return RuntimeError(
            f"the virtual basis is full: all k_max={self.k_max} directions are touched; size k_max "
            f"for every vector drawn and every new input of W0 and W0^T")

    def new_direction(self) -> np.ndarray:
        """The coordinates of a fresh unit vector ``e_k``; touches it (``k`` grows by one).

        Deterministic: the first two calls of a set-up place ``mu_+`` at ``e_0`` and ``mu_-`` at
        ``e_1``.

        Returns
        -------
        ndarray, shape (k_max,)
        """
        if self.k == self.k_max:
            raise self._full()
        e = np.zeros(self.k_max)
        e[self.k] = 1.0
        self.k += 1
        return e

    def _chi(self, rng):
        """``chi_{d-k}``: the norm of a standard Gaussian on the untouched complement."""
        return math.sqrt(rng.chisquare(self.d - self.k))

    def _grow(self, sigma, rng, out):
        """Add to ``out`` the part of an ``N(0, sigma^2 I_d)`` vector on the untouched complement.

        Its direction is uniform there and becomes the new basis vector ``e_k``, so it is the
        norm ``sigma * chi_{d-k}`` on coordinate ``k``. Once every direction is touched
        (``k == d``) the complement is {0}: nothing is drawn.
        """
        if self.k == self.d:
            return
        if self.k == self.k_max:
            raise self._full()
        out[self.k] = sigma * self._chi(rng)
        self.k += 1

    def gaussian(self, sigma: float, n: int, rng: np.random.Generator, *, off: int = 0) -> np.ndarray:
        """``n`` independent vectors ``~ N(0, sigma^2 Pi)``, drawn in turn (Bartlett).

        Each has i.i.d. ``N(0, sigma^2)`` coordinates on the touched directions ``Pi`` keeps and
        on the untouched complement a component of norm ``sigma * chi_{d-k}`` along a new basis
        vector (``k`` grows by one per vector). With ``sigma == 0`` nothing is touched or drawn.

        Parameters
        ----------
        sigma : float
            Standard deviation per coordinate, >= 0.
        n : int
            Number of vectors.
        rng : numpy.random.Generator
            Draws, per vector, ``k - off`` normals and then one chi-square.
        off : int, optional
            ``Pi = I`` for 0, else the projector off ``e_0, ..., e_{off-1}`` (``off = 2`` with
            ``mu_+-`` at ``e_0, e_1``: noise orthogonal to the signals). At most ``k``.

        Returns
        -------
        ndarray, shape (n, k_max)
        """
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0; got {sigma}")
        if not 0 <= off <= self.k:
            raise ValueError(f"off must be in [0, k={self.k}] (project off touched directions only); got {off}")
        out = np.zeros((n, self.k_max))
        if sigma == 0:
            return out
        for i in range(n):
            out[i, off:self.k] = sigma * rng.standard_normal(self.k - off)
            self._grow(sigma, rng, out[i])
        return out

    def gaussian_matrix(self, s: float, rng: np.random.Generator) -> LazyGaussianMatrix:
        """A d x d matrix with i.i.d. ``N(0, s^2)`` entries, drawn lazily from ``rng``."""
        return LazyGaussianMatrix(self, s, rng)


class _Side:
    """The inputs one side of a lazy matrix has met: orthonormal ``basis`` columns and their
    ``images``; and ``given``, the value returned for each input applied so far (its bytes as the
    key), at most ``2 k_max`` of them (as much memory as ``basis`` and ``images``)."""

    __slots__ = ("basis", "images", "m", "given")

    def __init__(self, k_max):
        self.basis = np.zeros((k_max, k_max))
        self.images = np.zeros((k_max, k_max))
        self.m = 0
        self.given = {}


#: Columns of ``matmat`` / ``rmatmat`` applied together: against the inputs met before them in
#: matrix products, against one another in order (n = 80: the set-up 5.3 s one column at a
#: time, memory-bound matrix-vector products over a basis of up to 1,925 x 1,280).
BLOCK = 128


def _conditional_mean(basis, images, E):
    """``V B^T E``: what the other side's constraints say about ``W0 E`` for ``E`` (k_max,) or
    (k_max, q), unit columns off this side's span."""
    return basis @ (images.T @ E)


class LazyGaussianMatrix:
    """A d x d matrix ``W0`` with i.i.d. ``N(0, s^2)`` entries, drawn lazily in a :class:`VirtualSpace`.

    Every application is conditioned on all applications so far (module docstring): an input in
    the span already met gets its exact conditional value, a new one draws
    ``g ~ N(0, s^2 (I - V V^T))`` and touches one new direction.

    Parameters
    ----------
    space : VirtualSpace
        Where inputs and images live; new directions are taken from it.
    s : float
        Entry standard deviation, >= 0 (0: the zero matrix, nothing touched or drawn).
    rng : numpy.random.Generator
        Draws, per new input, ``k`` normals and then one chi-square.

    Examples
    --------
    >>> space = VirtualSpace(d=10**6, k_max=6)
    >>> W0 = space.gaussian_matrix(1e-3, np.random.default_rng(0))
    >>> x = space.gaussian(1.0, 1, np.random.default_rng(1))[0]
    >>> key = W0.matvec(x)                    # new input: touches one direction
    >>> back = W0.rmatvec(key)                # new for W0^T: touches another
    >>> space.k, bool(np.allclose(back @ x, key @ key))
    (3, True)
    >>> W0.freeze()
    >>> bool(np.array_equal(W0.matvec(2 * x), 2 * key))   # in the span met: no randomness
    True
    """

    def __init__(self, space: VirtualSpace, s: float, rng: np.random.Generator):
        if not s >= 0:
            raise ValueError(f"s must be >= 0; got {s}")
        self.space = space
        self.s = float(s)
        self.rng = rng
        self._in = _Side(space.k_max)    # U, A = W0 U
        self._out = _Side(space.k_max)   # V, B = W0^T V
        self._frozen = False

    def met(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Copies of what ``W0`` has met: ``(U, A, V, B)``, ``U`` (k_max, m_U) the orthonormal basis
        of its inputs and ``A = W0 U``, ``V`` (k_max, m_V) that of ``W0^T``'s and ``B = W0^T V``."""
        return tuple(x[:, :side.m].copy() for side in (self._in, self._out) for x in (side.basis, side.images))

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        """From now on an input outside the span already met raises RuntimeError.

        A run's set-up applies ``W0`` to every vector it will need and then freezes, so that no
        later code path can draw randomness in an order of its own.
        """
        self._frozen = True

    def matvec(self, u) -> np.ndarray:
        """``W0 u``.

        Parameters
        ----------
        u : array_like, shape (k_max,)

        Returns
        -------
        ndarray, shape (k_max,)
        """
        return self._apply(self._column(u, "W0"), self._in, self._out, "W0")[:, 0]

    def rmatvec(self, v) -> np.ndarray:
        """``W0^T v``, shapes as :meth:`matvec`."""
        return self._apply(self._column(v, "W0^T"), self._out, self._in, "W0^T")[:, 0]

    def matmat(self, X) -> np.ndarray:
        """``W0 X`` for ``X`` of shape (k_max, m): the same draws and values as :meth:`matvec` on
        the columns in order (up to rounding), in blocks of ``BLOCK`` columns."""
        return self._apply(self._columns(X, "W0"), self._in, self._out, "W0")

    def rmatmat(self, X) -> np.ndarray:
        """``W0^T X`` for ``X`` of shape (k_max, m), as :meth:`matmat`."""
        return self._apply(self._columns(X, "W0^T"), self._out, self._in, "W0^T")

    def _column(self, x, name):
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.space.k_max,):
            raise ValueError(f"{name} applies to coordinate arrays of shape ({self.space.k_max},); got {x.shape}")
        return x[:, None]

    def _columns(self, X, name):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] != self.space.k_max:
            raise ValueError(f"{name} applies to columns of shape ({self.space.k_max}, m); got {X.shape}")
        return X

    def _apply(self, X, this, other, name):
        """Apply the side whose met inputs are ``this`` (``other`` holds the transpose's) to the
        columns of ``X`` (k_max, c) in order; ``BLOCK`` columns at a time.

        A column applied before gets the value it got then (``_Side.given``): it lies in the
        span met, so applying it again would draw nothing and only round differently. (The
        dual set-up applies ``W0`` and ``W0^T`` again to the tokens and keys the draw met.)
        """
        out = np.empty(X.shape)
        keys = [X[:, j].tobytes() for j in range(X.shape[1])]
        todo = []
        for j, key in enumerate(keys):
            if key in this.given:
                out[:, j] = this.given[key]
            else:
                todo.append(j)
        for start in range(0, len(todo), BLOCK):
            cols = todo[start:start + BLOCK]
            out[:, cols] = self._apply_block(X[:, cols], this, other, name)
        for j in todo:
            if len(this.given) < 2 * self.space.k_max:
                this.given[keys[j]] = out[:, j].copy()
        return out

    def _apply_block(self, X, this, other, name):
        """One block of ``_apply``: ``X`` (k_max, b) in order.

        Each column is projected off the inputs met, in two passes of classical Gram-Schmidt:
        one pass leaves in the residual ``w`` a component of about eps * ||x|| along the span,
        large against ``r = ||w||`` when x nearly lies in it; the second removes it ("twice is
        enough": Parlett, The Symmetric Eigenvalue Problem, 1980, §6-9). Against the ``m0`` inputs
        met before the block both passes are matrix products; against those the block itself
        adds, the columns go in order. A column is new when ``r > SPAN_RTOL ||x||``: ``e = w / r``
        joins the basis, and ``W0 e`` is drawn (``_images_of_new``, after the block's Gram-Schmidt:
        it draws the same numbers in the same order). Then ``W0 x = A c + r W0 e``, with ``c`` the
        coefficients of ``x`` on the basis.
        """
        m0, b = this.m, X.shape[1]
        W = X.copy()
        if m0:
            basis = this.basis[:, :m0]
            C = basis.T @ X
            W -= basis @ C
            C2 = basis.T @ W
            W -= basis @ C2
            C += C2
            out = this.images[:, :m0] @ C
        else:
            out = np.zeros(X.shape)
        R = np.zeros((b, b))        # coefficients on the inputs new in this block (row q: the q-th)
        q = 0
        for j in range(b):
            w = W[:, j]
            if q:
                new = this.basis[:, m0:m0 + q]
                c = new.T @ w
                w -= new @ c
                c2 = new.T @ w
                w -= new @ c2
                R[:q, j] = c + c2
            r = math.sqrt(w @ w)
            if r <= SPAN_RTOL * math.sqrt(X[:, j] @ X[:, j]):
                continue
            if self._frozen:
                raise RuntimeError(
                    f"{name} is frozen and met an input outside the span of the {m0 + q} inputs already met "
                    f"(relative residual {r / math.sqrt(X[:, j] @ X[:, j]):.3g} > {SPAN_RTOL}); apply it to every "
                    f"vector the run needs during set-up")
            if m0 + q == this.basis.shape[1]:
                raise self.space._full()
            this.basis[:, m0 + q] = w / r
            R[q, j] = r
            q += 1
        if q:
            this.images[:, m0:m0 + q] = self._images_of_new(this.basis[:, m0:m0 + q], other)
            this.m = m0 + q
            out += this.images[:, m0:m0 + q] @ R[:q]
        return out

    def _images_of_new(self, E, other):
        """``W0 E`` for unit columns ``E`` (k_max, q) off this side's span, in order:
        ``V B^T e + g``, ``g ~ N(0, s^2 (I - V V^T))``.

        Per column, ``k`` normals and then one chi-square (``VirtualSpace._grow``). ``V`` lies in the
        coordinates touched before, where the grown coordinate of ``g`` is 0, so projecting after
        growing projects ``g`` itself."""
        mo = other.m
        basis = other.basis[:, :mo]
        G = np.zeros(E.shape)
        if self.s > 0:
            for i in range(E.shape[1]):
                k = self.space.k
                G[:k, i] = self.s * self.rng.standard_normal(k)
                self.space._grow(self.s, self.rng, G[:, i])
            G -= basis @ (basis.T @ G)
        return _conditional_mean(basis, other.images[:, :mo], E) + G
