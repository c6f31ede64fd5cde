"""The base class of every coordinate system, and the registry of its members.

A coordinate system holds the iterate of one run in its own variables
(``state``), advances it with its kernel, and reports what the recorder needs.
The engine (``attnsim._run.Run``), checkpoints and the recorder call only the
methods defined here; members are looked up in ``REGISTRY`` by
``(dynamics, engine, trainable, optimizer)``.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import numpy as np

from .._kernels import gd as _gd
from .._numerics import norm


class Observation(NamedTuple):
    """What the recorder reads at a save time.

    Attributes
    ----------
    z : ndarray, shape (N,)         training scores
    z_test : ndarray, shape (Nt,)   test scores
    p_norm, w_dist : float          ``||p||`` and ``||W - W0||_F``
    p_probe : ndarray, shape (k,)   ``<p, r_j>``
    query_probe : ndarray, shape (k,)   ``<W^T p, r_j>``
    query_norm : float              ``||W^T p||``, the effective query's norm
    """

    z: np.ndarray
    z_test: np.ndarray
    p_norm: float
    w_dist: float
    p_probe: np.ndarray
    query_probe: np.ndarray
    query_norm: float


class HeadObservation(NamedTuple):
    """The head's part of what the recorder reads at a save time.

    Attributes
    ----------
    v : ndarray, shape (N,)          training token values ``X nu``
    v_test : ndarray, shape (Nt,)    test token values
    nu_norm, nu_dist : float         ``||nu||`` and ``||nu - nu0||``
    nu_probe : ndarray, shape (k,)   ``<nu, r_j>``
    """

    v: np.ndarray
    v_test: np.ndarray
    nu_norm: float
    nu_dist: float
    nu_probe: np.ndarray


#: Readable names of state arrays, for divergence messages.
STATE_NAMES = {
    "p": "p", "W": "W", "u": "query W^T p", "z": "attention scores z", "a": "dual coefficients a",
    "S": "key Gram matrix S", "P": "||p||^2", "b": "dual coefficients b", "MT": "dual coefficients M",
    "ys": "flow state (z, ||p||^2, dual coefficients)",
    "nu": "head nu", "v": "token values v", "beta": "dual head coefficients beta",
}

#: ``(dynamics, engine, trainable, optimizer) -> class``, filled by ``register``.
REGISTRY: dict[tuple[str, str, str, str], type[Coordinates]] = {}


def register(cls):
    """Class decorator: enter a concrete coordinate system into ``REGISTRY``."""
    key = (cls.dynamics, cls.engine, cls.trainable, cls.optimizer)
    if key in REGISTRY:
        raise RuntimeError(f"coordinates {key} registered twice ({REGISTRY[key].__name__}, {cls.__name__})")
    REGISTRY[key] = cls
    return cls


def quadratic_norm(c0: float, lin: np.ndarray, G: np.ndarray, x: np.ndarray) -> float:
    """``sqrt(c0 + 2 lin.x + x^T G x)``, the norm of a vector ``v0 + B x`` given ``c0 = |v0|^2``,
    ``lin = B^T v0`` and ``G = B^T B``; evaluated with ``x`` scaled to ``|x| <= 1`` so that a huge
    but finite vector does not overflow its own squared norm."""
    if not np.any(x):      # exact, and finite even when G overflowed (keys ~1e100 before a divergence)
        return float(np.sqrt(max(c0, 0.0)))
    scale = max(float(np.max(np.abs(x), initial=0.0)), 1.0)
    xs = x / scale
    with np.errstate(over="ignore", invalid="ignore"):   # an overflowed Gram (inf * 0): NaN, not a warning
        sq = c0 / scale / scale + 2.0 * (xs @ lin) / scale + xs @ (G @ xs)
    return scale * np.sqrt(max(sq, 0.0))


class Coordinates(abc.ABC):
    """One way of carrying the iterate of a run.

    Parameters
    ----------
    pb : attnsim._problem.Problem
    kern : module
        The kernels (``_kernels.gd`` or its NumPy twins ``_kernels.gd_twins``).
    options : object or None
        Settings of the dynamics (``FlowOptions`` for the flow; None for GD).

    Attributes
    ----------
    state : dict of str to ndarray
        Every array that, with the problem, defines the iterate exactly (what a
        checkpoint stores). Updated in place.
    """

    engine: ClassVar[str] = ""       # "primal" or "dual"
    trainable: ClassVar[str] = ""    # "p", "Wp", "p+nu" or "Wp+nu"
    dynamics: ClassVar[str] = "gd"   # "gd" or "flow"
    #: State entries that are bookkeeping, not the iterate: NaN there is not divergence.
    diagnostics: ClassVar[frozenset] = frozenset()
    optimizer: ClassVar[str] = "gd"  # "gd" or "ngd" (normalised GD, ``_coords.ngd``)

    def __init__(self, pb, kern, options=None):
        self.pb = pb
        self.kern = kern
        self.options = options
        self.state: dict[str, np.ndarray] = {}

    @property
    def backend(self) -> str:
        """``"numba"`` or ``"numpy"`` (the slow twins)."""
        return "numba" if self.kern is _gd else "numpy"

    @abc.abstractmethod
    def advance(self, n_steps: int, frak_sum: np.ndarray) -> int:
        """Advance by ``n_steps`` GD steps of time, adding each step's 𝔖 into ``frak_sum`` (n,).

        Returns the whole steps completed: fewer only when a value became non-finite
        (the state is then the last finite iterate) or ``stop()`` says why.
        """

    @abc.abstractmethod
    def observe(self) -> Observation:
        """The recorder's quantities at the current iterate (no side effects)."""

    @abc.abstractmethod
    def final_params(self, with_W: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """``(W, p)`` at the current iterate, materialised; ``W`` is None when it is not trained,
        or not asked for (``with_W=False``: a d x d product and 8 d^2 bytes saved)."""

    def observe_head(self) -> HeadObservation:
        """The head's quantities at the current iterate; here the fixed head ``nu0``.
        Members that train the head override it (``_coords.head``)."""
        pb = self.pb
        return HeadObservation(pb.v, pb.vt, norm(pb.nu), 0.0, pb.probes @ pb.nu)

    def final_nu(self) -> np.ndarray:
        """The head ``nu`` (d,) at the current iterate, materialised."""
        return self.pb.nu.copy()

    def warm_up(self) -> None:
        """Compile (or load from cache) the kernels that ``advance`` and ``observe`` call."""
        self.advance(0, np.zeros(self.pb.n))
        self.observe()

    def plan(self, to_save: int, suggested: int) -> int:
        """Steps the run should ask ``advance`` for next, given the steps left to the next
        save time and the chunk the run would choose by wall time."""
        return suggested

    def stop(self) -> tuple[str, str] | None:
        """``(status, message)`` when the last ``advance`` stopped short for a reason other than
        a non-finite value (e.g. the flow's step limit); None otherwise."""
        return None

    def extra(self) -> dict:
        """JSON-serialisable record of the dynamics, for ``Result.extra``."""
        return {}

    def key_gram(self) -> np.ndarray:
        """Gram (N, N) of the keys the attention scores are linear in, for the att-SVM.

        ``K K^T`` with ``K = X W0^T`` when only ``p`` is trained (``z = K p``); ``X X^T`` when
        ``W`` is trained too (``z = X q`` with the effective query ``q = W^T p``). Members that
        hold it already return theirs; this default forms it once, O(N^2 d).
        """
        pb = self.pb
        if not self.trainable.startswith("Wp"):
            K = pb.keys_of(pb.X)
            return K @ K.T
        return pb.X @ pb.X.T

    def options_dict(self) -> dict | None:
        """The options as a JSON-serialisable dict (for checkpoints); None for GD."""
        return None

    def nonfinite_state(self) -> str:
        """Readable names of the state arrays that are no longer finite ("" if all are)."""
        bad = [STATE_NAMES.get(k, k) for k, v in self.state.items()
               if k not in self.diagnostics and v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        return ", ".join(bad)
