"""The base class of every coordinate system, the trainable sets, and the registry of the members.

A coordinate system holds the iterate of one run in its own variables
(``state``), advances it with its kernels, and reports what the recorder needs.
The engine (``attnsim._run.Run``), checkpoints and the recorder call only the
methods defined here; members are looked up in ``REGISTRY`` by
``(dynamics, engine, trainable)``. What is trained is one object, a ``TrainableSet``:
code asks it (``trains_W``, ``trains_head``), never the set's name.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import numpy as np

from .._kernels import gd as _gd
from .._kernels.core import fw_size
from .._numerics import norm


class TrainableSet(NamedTuple):
    """What a run trains: ``p`` always, ``W`` and the head ``nu`` or not."""

    name: str
    trains_W: bool
    trains_head: bool


#: The trainable sets by name (``Config.trainable``, ``train(trainable=...)``).
TRAINABLE_SETS = {t.name: t for t in (TrainableSet("Wp", True, False), TrainableSet("p", False, False),
                                      TrainableSet("Wp+nu", True, True), TrainableSet("p+nu", False, True))}


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
    "vc": "momentum velocity of p (coefficients)", "vh": "momentum velocity of nu (coefficients)",
    "VW": "momentum velocity of W", "vp": "momentum velocity of p", "bv": "momentum velocity (dual coefficients b)",
    "MvT": "momentum velocity (dual coefficients M)",
}

#: ``(dynamics, engine, trainable) -> class``, filled by ``register``.
REGISTRY: dict[tuple[str, str, str], type[Coordinates]] = {}


def register(cls):
    """Class decorator: enter a concrete coordinate system into ``REGISTRY``."""
    key = (cls.dynamics, cls.engine, cls.trained.name)
    if key in REGISTRY:
        raise RuntimeError(f"coordinates {key} registered twice ({REGISTRY[key].__name__}, {cls.__name__})")
    REGISTRY[key] = cls
    return cls


#: Largest array ``Coordinates.align_arrays`` moves (N x N state at N = 700 is 3.9 MB).
ALIGN_MAX_BYTES = 4 << 20


def aligned_copy(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``x`` whose data start on a 64-byte (cache-line) boundary."""
    buf = np.empty(x.nbytes + 64, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64
    out = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


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
    """One way of carrying the iterate of a run: the base class of the family.

    Parameters
    ----------
    pb : attnsim._problem.Problem
        Read only through ``pb.X``, ``pb.Xt``, ``pb.p0``, ``pb.nu``, ``pb.probes_all`` (and the
        fixed ``pb.v``, ``pb.vt``, ``pb.y``, ``pb.T``, ``pb.relevant``, ``pb.lr``, sizes) and the
        products with W0 (``keys_of``, ``w0_mul``, ``w0t_mul``, ``W0_dense``): never ``pb.W0``, so
        a problem whose W0 is an operator works unchanged.
    kern : module
        The kernels (``_kernels.gd`` or its NumPy twins ``_kernels.gd_twins``).
    options : object or None
        Settings of the dynamics: ``FlowOptions`` for the flow, an ``Optimizer`` for GD
        (None: plain GD).

    Attributes
    ----------
    state : dict of str to ndarray
        Every array that, with the problem, defines the iterate exactly (what a
        checkpoint stores). Updated in place.
    trained : TrainableSet
        What the member trains (class attribute).

    Adding a member
    ---------------
    A member is a subclass (usually of a set-up shared with its siblings: ``DualPSetup``,
    ``DualWpSetup``, ``_coords.flow._Flow``) registered with ``@register``. It sets the class
    attributes ``engine`` ("primal" or "dual"), ``dynamics`` ("gd" or "flow") and ``trained``
    (``TRAINABLE_SETS[name]``); the trainable sets of one parametrisation share a class and differ
    by a one-line subclass that sets ``trained``. It implements:

    - ``__init__(pb, kern, options)``: call ``super().__init__`` first, then allocate the scratch
      its kernels need and fill ``self.state`` with the iterate at step 0 (a checkpoint stores
      exactly ``state``, so everything the next step reads must be there);
    - ``advance(n_steps, frak_sum)``: run its kernels; return the steps completed;
    - ``observe()`` and ``final_params(with_W)``: read the iterate, without side effects;
    - ``observe_head()`` and ``final_nu()`` when it trains the head;

    and may override ``plan``, ``stop``, ``extra``, ``key_gram``, ``options_dict``,
    ``warm_up``. Nothing else is asked of it: the engine never tests its type or name.
    """

    engine: ClassVar[str] = ""       # "primal" or "dual"
    dynamics: ClassVar[str] = "gd"   # "gd" or "flow"
    trained: ClassVar[TrainableSet] = TRAINABLE_SETS["p"]
    #: State entries that are bookkeeping, not the iterate: NaN there is not divergence.
    diagnostics: ClassVar[frozenset] = frozenset()

    def __init__(self, pb, kern, options=None):
        self.pb = pb
        self.kern = kern
        self.options = options
        self.state: dict[str, np.ndarray] = {}
        N = pb.N
        # the coefficient core's outputs and scratch, shared by every member's kernels
        self.s, self.c = np.empty(N), np.empty(N)
        self.h = np.empty(N if self.trained.trains_head else 0)
        self.fw = np.empty(fw_size(pb.n, pb.T))
        self.none = np.empty(0)

    def align_arrays(self) -> None:
        """Move every C-contiguous array attribute and ``state`` entry onto a 64-byte boundary (a
        copy, only where it is not there already; arrays that were one object stay one object, also
        inside tuple attributes). A member that keeps a state array in another container must
        say so here.

        The kernels' sweeps load whole cache lines of their N x N matrices; an array that starts
        16 bytes into a line (where large allocations land) splits every 64-byte load in two and
        ran the sweeps 20-25 % slower. Values and bits are unchanged: only addresses move. Arrays
        over ``ALIGN_MAX_BYTES`` (d-sized ones: ``W``, the keys) stay where they are: they stream
        from memory, and a copy would double a large footprint.
        """
        moved: dict[int, np.ndarray] = {}

        def placed(x):
            if (not isinstance(x, np.ndarray) or not 64 <= x.nbytes <= ALIGN_MAX_BYTES
                    or x.ctypes.data % 64 == 0 or not x.flags.c_contiguous):
                return x
            if id(x) not in moved:
                moved[id(x)] = aligned_copy(x)
            return moved[id(x)]

        for name, value in self.state.items():
            self.state[name] = placed(value)
        for name, value in list(vars(self).items()):
            if isinstance(value, np.ndarray):
                setattr(self, name, placed(value))
            elif isinstance(value, tuple):                   # e.g. (state["nu"], state["v"]): moved alike
                setattr(self, name, tuple(placed(x) for x in value))

    @property
    def trainable(self) -> str:
        """The name of the trainable set (``trained.name``)."""
        return self.trained.name

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
        Members that train the head override it (``primal._Primal``, ``dual.DualSetup``)."""
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
        if not self.trained.trains_W:
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
