"""What came out of a run: one ``Result`` object, and its exact round trip through ``.npz``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ._compact import REBUILD, CompactParams
from ._config import Config
from ._io import ResultFileError, read_npz, write_npz_atomic

#: Version of the ``.npz`` layout written by ``Result.save``. Version 2 may hold the final
#: parameters as a dual state (``Result.compact``); ``load`` reads versions 1 and 2.
FORMAT_VERSION = 2
_READABLE = (1, 2)

#: The final parameters, which a compact Result rebuilds on first access.
_PARAMS = ("W", "p", "nu")

FINISHED = "finished"
DIVERGED = "diverged"
INTERRUPTED = "interrupted"
MAX_STEPS_REACHED = "max_steps_reached"
STEP_SIZE_COLLAPSED = "step_size_collapsed"

#: Every outcome of a run, with what it means. ``Result.message`` says the specifics
#: (where it happened and what to do).
STATUSES = {
    FINISHED: "the run reached its last save time",
    DIVERGED: "a value became non-finite (an overflow); the message names the step and the quantity",
    INTERRUPTED: "stopped by Ctrl-C or SIGTERM; a checkpoint resumes it",
    MAX_STEPS_REACHED: "the flow used FlowOptions.max_steps integrator steps (a stiff stretch): raise max_steps, "
                       "or use dynamics='gd' for that stretch",
    STEP_SIZE_COLLAPSED: "the flow's step size fell below FlowOptions.h_min",
}


class _FinalParam:
    """Data descriptor of a final parameter (``W``, ``p``, ``nu``): an array or None, or in a compact
    Result the marker ``REBUILD`` until first read, when all of them still marked are rebuilt
    (``CompactParams.rebuild``) and kept."""

    def __init__(self, required: bool):
        self.required = required

    def __set_name__(self, owner, name):
        self.name, self.slot = name, f"_{name}_value"

    def __get__(self, obj, owner=None):
        if obj is None:       # the dataclass asks the class for a default: none for W and p, None for nu
            if self.required:
                raise AttributeError(self.name)
            return None
        if obj.__dict__[self.slot] is REBUILD:
            obj._rebuild(with_W=self.name == "W")
        return obj.__dict__[self.slot]

    def __set__(self, obj, value):
        obj.__dict__[self.slot] = value
        rebuilt = obj.__dict__.setdefault("_from_state", set())
        if value is REBUILD:
            rebuilt.add(self.name)
        else:                 # assigned by hand: the state no longer says what it is
            rebuilt.discard(self.name)


@dataclass(eq=False)
class Result:
    """Everything recorded by one training run.

    Arrays indexed by save time have a leading axis of length ``S = len(steps)``,
    the save times actually reached (fewer than requested if the run diverged or
    was interrupted). A value recorded at ``steps[k]`` is the state after that many
    GD updates.

    Attributes
    ----------
    steps : ndarray of int64, shape (S,)
    train_loss, train_acc : ndarray, shape (S,)
    train_acc_clean, train_acc_noisy : ndarray, shape (S,)
        Accuracy on the observed labels of the clean and the noisy samples
        (NaN when the run has no noisy, or no clean, samples).
    test_loss, test_acc : ndarray, shape (S,)
        On the drawn test set, or with ``Config.test_metrics="population"`` the population
        expectations (DESIGN.md §10); NaN without either.
    test_loss_se, test_acc_se : ndarray, shape (S,)
        Standard errors of the population quadrature; NaN for sample metrics (and in files
        written before they existed).
    margins : ndarray, shape (S, n)
        ``y_i f(X_i)``.
    scores : ndarray, shape (S, n, T)
        Attention logits ``z_it = x_it^T W^T p`` (gaps of these are exact where
        the softmax has saturated).
    attention : ndarray, shape (S, n, T)
        Softmax ``s_it``.
    relevant_mass : ndarray, shape (S, n)
        ``m_i = sum_{t in R} s_it``.
    frak_s : ndarray, shape (S, n)
        ``m_i (1 - m_i)``.
    frak_cum : ndarray, shape (S, n)
        ``sum_{tau' < tau} m_i(tau') (1 - m_i(tau'))``, accumulated at every step. With
        ``dynamics="flow"``: that sum over the exact-GD start, then ``int m_i (1 - m_i) d tau``.
    p_norm, w_dist : ndarray, shape (S,)
        ``||p||`` and ``||W - W0||_F``.
    query_norm : ndarray, shape (S,)
        ``||W^T p||``, the norm of the effective query (NaN in files written before it existed).
    p_probe, query_probe : ndarray, shape (S, k)
        ``<p, r_j>`` and ``<W^T p, r_j>`` for the probe directions ``r_j`` given to
        ``train`` (for ``simulate``: ``mu_+`` and ``mu_-``); ``k = 0`` without probes.
    nu_norm, nu_dist : ndarray, shape (S,)
        ``||nu||`` and ``||nu - nu0||`` (``nu_dist`` is 0 unless the head is trained).
    nu_align : ndarray, shape (S,)
        Cosine of ``nu`` with ``r_0 - r_1``, the first two probe directions: for ``simulate``
        ``mu_+ - mu_-``, the direction of the official head. NaN with fewer than two probes.
    nu_probe : ndarray, shape (S, k)
        ``<nu, r_j>``.
    p : ndarray, shape (d,), or None
    W : ndarray, shape (d, d), or None
        Final parameters (after the last recorded step). For a diverged run they are the
        iterate at the step named in ``message``, where something became non-finite.
        ``W`` is None when it was not trained (it is ``W0``, which the caller has). All three are
        None for an implicit run (``Config(space="implicit")``), which never forms a d-vector.
        In a compact Result (see ``compact``) ``W``, ``p`` and ``nu`` are rebuilt when first read,
        and kept: the data and initialisation are drawn again from ``config`` and the final dual
        state is read out as the run would have, to the bit (under the BLAS thread settings of
        the run; under others, to a few ulps, with a warning). At d = 4500 that is about 1 CPU-s
        and the memory of the run's ``W0`` and ``W``; too little memory raises
        ``MemoryBudgetError``, a digest mismatch (data drawn differently by another numpy or
        attnsim version) ``ResultFileError``.
    nu : ndarray, shape (d,), or None
        Final head (the initial head when it was not trained). None for an implicit run and for
        files written before attnsim stored it.
    compact : bool
        Whether the final parameters are held as what determines them: the O(N^2) final
        state of dual coordinates (``p = Q b``, ``W = W0 + Q M X``, ``nu = nu0 + X^T beta``;
        DESIGN.md §4) and ``config``, whose seeds draw ``X``, ``W0``, ``p0``, ``nu0`` again.
        Results of runs prepared from a ``Config`` in dual coordinates are compact
        (``simulate``, ``prepare_run`` and its ``Run.result(config)``, ``attnsim run``, sweeps,
        ``resume``): their files stay small whatever d is. Results in primal coordinates and
        of ``train`` (arrays, no seeds to draw them again) hold ``W``, ``p``, ``nu`` as arrays,
        and their files grow as d^2 when W is trained.
    y, y_true : ndarray, shape (n,)
        Observed and true training labels (``y_true = y`` when unknown).
    noisy : ndarray of bool, shape (n,)
    relevant : ndarray of bool, shape (T,)
    roles : ndarray of int8, shape (T,)
        Role codes (``attnsim.ROLE_NAMES``); all irrelevant but R when unknown.
    config : Config or None
    engine : str
        ``"primal"`` or ``"dual"``.
    status : str
        One of ``attnsim.STATUSES``: ``"finished"``, ``"diverged"``, ``"interrupted"``, and for
        the flow ``"max_steps_reached"`` or ``"step_size_collapsed"``.
    message : str
        Human-readable status, e.g. ``"diverged at step 1234: non-finite attention scores"``;
        for a stop that is not divergence it says what to do.
    wall_time, compile_time : float
        Seconds spent stepping and recording, and compiling or loading kernels.
    extra : dict
        JSON-serialisable extras; with ``dynamics="flow"`` the integrator's record
        (``dynamics``, tolerances, ``gd_start_steps``, ``rhs_evals``, ``accepted_steps``,
        ``rejected_steps``, ...); with ``max_margin`` set, ``extra["max_margin"]``: the att-SVM's
        ``selection`` rule, ``keys``, ``selected`` (n,), ``feasible``, ``status``, ``message``,
        ``reason``, ``norm`` (``||p^mm||``, None when infeasible), ``sample_margin`` (n,)
        (``min_{t != alpha_i} (k_{i alpha_i} - k_it)^T p^mm``, >= 1, = 1 on the support),
        ``n_support`` and the solver's ``kkt`` residuals; a flow point of a sweep adds ``path``
        (``"flow"``, or the rerun that produced it, e.g. ``"flow rerun: max_steps=1000000"``) and
        ``attempts`` (the outcomes of the runs before it).
    mm_cos : ndarray, shape (S,), or None
        With ``max_margin`` (``train``, ``simulate``): ``cos angle(p(tau), p^mm)`` (p trained),
        or ``cos angle(q(tau), q^mm)`` for the effective query ``q = W^T p`` (W trained), against
        the att-SVM of ``extra["max_margin"]["selected"]``. NaN where the iterate is zero or the
        selection is infeasible; None without ``max_margin``.
    mm_margin : ndarray, shape (S, n), or None
        Each sample's normalised margin relative to the SVM's:
        ``||p^mm|| min_{t != alpha_i} (z_{i alpha_i} - z_it) / ||p||`` (``||q||`` for W trained).
        It is ``<= 1`` for the worst sample at every save (``p^mm`` has the largest margin) and
        tends to ``extra["max_margin"]["sample_margin"]`` when the direction converges. Negative
        while sample ``i`` does not yet rank its selected token first.
    """

    steps: np.ndarray
    train_loss: np.ndarray
    train_acc: np.ndarray
    train_acc_clean: np.ndarray
    train_acc_noisy: np.ndarray
    test_loss: np.ndarray
    test_acc: np.ndarray
    margins: np.ndarray
    scores: np.ndarray
    attention: np.ndarray
    relevant_mass: np.ndarray
    frak_s: np.ndarray
    frak_cum: np.ndarray
    p_norm: np.ndarray
    w_dist: np.ndarray
    query_norm: np.ndarray
    p_probe: np.ndarray
    query_probe: np.ndarray
    p: np.ndarray | None = _FinalParam(required=True)
    W: np.ndarray | None = _FinalParam(required=True)
    y: np.ndarray
    y_true: np.ndarray
    noisy: np.ndarray
    relevant: np.ndarray
    roles: np.ndarray
    # the head's record; None only in Results built by hand or files written before it existed
    nu: np.ndarray | None = _FinalParam(required=False)
    nu_norm: np.ndarray | None = None
    nu_dist: np.ndarray | None = None
    nu_align: np.ndarray | None = None
    nu_probe: np.ndarray | None = None
    config: Config | None = None
    engine: str = ""
    status: str = FINISHED
    message: str = FINISHED
    wall_time: float = 0.0
    compile_time: float = 0.0
    extra: dict = field(default_factory=dict)
    mm_cos: np.ndarray | None = None
    mm_margin: np.ndarray | None = None
    test_loss_se: np.ndarray | None = None
    test_acc_se: np.ndarray | None = None

    def __post_init__(self):
        # Results built without them (older code, files) have no quadrature: NaN, one per save.
        for name in ("test_loss_se", "test_acc_se"):
            if getattr(self, name) is None:
                setattr(self, name, np.full(np.shape(self.steps)[:1], np.nan))
        self._compact: CompactParams | None = None        # set by Run.result and load

    def __repr__(self):      # the dataclass's would rebuild W, p and nu to print them
        steps = f"steps {self.steps[0]}..{self.steps[-1]} at {len(self.steps)} saves" if len(self.steps) else "no saves"
        return (f"Result(status={self.status!r}, engine={self.engine!r}, {steps}, "
                f"{'compact' if self.compact else 'parameters as arrays'})")

    @property
    def compact(self) -> bool:
        """Whether ``W``, ``p``, ``nu`` are held as a dual state and rebuilt on request (see the class docstring)."""
        return self._compact is not None and bool(self.__dict__.get("_from_state"))

    def _raw(self, name):
        """A final parameter as held: an array, None or ``REBUILD`` (reading it would rebuild it)."""
        return self.__dict__[f"_{name}_value"]

    def _rebuild(self, with_W: bool) -> None:
        """Rebuild the final parameters still marked ``REBUILD`` (``W`` only when ``with_W``)."""
        if self._compact is None:
            raise ResultFileError("this Result marks its final parameters for rebuilding but holds no dual state; "
                                  "build Results with Run.result or load them with attnsim.load")
        W, p, nu = self._compact.rebuild(with_W=with_W and self._raw("W") is REBUILD)
        for name, value in (("W", W), ("p", p), ("nu", nu)):
            if self._raw(name) is REBUILD and value is not None:
                self.__dict__[f"_{name}_value"] = value       # still from the state: saved as the state

    @property
    def success(self) -> bool:
        return self.status == FINISHED

    @property
    def final_step(self) -> int:
        return int(self.steps[-1])

    def summary(self) -> dict:
        """Final scalar figures, for printing."""
        last = {
            "status": self.message,
            "engine": self.engine,
            "steps": self.final_step,
            "train_loss": float(self.train_loss[-1]),
            "train_acc": float(self.train_acc[-1]),
            "train_acc_clean": float(self.train_acc_clean[-1]),
            "train_acc_noisy": float(self.train_acc_noisy[-1]),
            "test_loss": float(self.test_loss[-1]),
            "test_acc": float(self.test_acc[-1]),
            **({"test_loss_se": float(self.test_loss_se[-1]), "test_acc_se": float(self.test_acc_se[-1])}
               if np.isfinite(self.test_acc_se[-1]) else {}),
            "mean_relevant_mass_clean": float(np.mean(self.relevant_mass[-1][~self.noisy]))
            if np.any(~self.noisy) else float("nan"),
            "mean_relevant_mass_noisy": float(np.mean(self.relevant_mass[-1][self.noisy]))
            if np.any(self.noisy) else float("nan"),
            "p_norm": float(self.p_norm[-1]),
            **({} if self.mm_cos is None else {
                "one_minus_mm_cos": float(1.0 - self.mm_cos[-1]),
                "att_svm": f"{self.extra['max_margin']['status']}, selected "
                           f"{self.extra['max_margin']['selected']}"}),
            "w_dist": float(self.w_dist[-1]),
            "nu_dist": float(self.nu_dist[-1]) if self.nu_dist is not None else float("nan"),
            "wall_time_s": self.wall_time,
            "compile_time_s": self.compile_time,
        }
        return last

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        """Write to a NumPy ``.npz`` file atomically (temporary file, fsync, rename).

        A compact Result writes its dual state (O(N^2)) in place of ``W``, ``p``, ``nu``, rebuilt
        or not: the file's size does not depend on d.
        """
        arrays = {}
        rebuilt = sorted(self.__dict__.get("_from_state", ())) if self._compact is not None else []
        for f in dataclasses.fields(self):
            value = self._raw(f.name) if f.name in _PARAMS else getattr(self, f.name)
            if isinstance(value, np.ndarray) and f.name not in rebuilt:
                arrays[f.name] = value
        params = None
        if rebuilt:
            state, params = self._compact.to_file()
            arrays.update(state)
            params["rebuilt"] = rebuilt
        meta = {
            "format_version": FORMAT_VERSION,
            "kind": "attnsim.Result",
            "config": None if self.config is None else self.config.to_dict(),
            "engine": self.engine,
            "status": self.status,
            "message": self.message,
            "wall_time": self.wall_time,
            "compile_time": self.compile_time,
            "extra": self.extra,
            "params": params,
        }
        write_npz_atomic(path, arrays, meta)


def load(path) -> Result:
    """Read a ``Result`` written by ``Result.save`` (no pickle is ever loaded).

    Raises
    ------
    ResultFileError
        If the file is missing, truncated, corrupted, or of another format version.
    """
    arrays, meta = read_npz(path, "attnsim.Result", _READABLE)
    names = [f.name for f in dataclasses.fields(Result) if f.name not in
             ("config", "engine", "status", "message", "wall_time", "compile_time", "extra")]
    try:
        config = None if meta["config"] is None else Config.from_dict(meta["config"])
        scalars = dict(engine=str(meta["engine"]), status=str(meta["status"]), message=str(meta["message"]),
                       wall_time=float(meta["wall_time"]), compile_time=float(meta["compile_time"]),
                       extra=dict(meta.get("extra") or {}))
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise ResultFileError(f"{path}: metadata is incomplete or invalid ({type(exc).__name__}: {exc})") from None
    params = meta.get("params")          # a compact Result's dual state (format 2)
    compact = None
    if params is not None:
        try:
            compact = CompactParams.from_file(arrays, params, config, path)
            rebuilt = [str(name) for name in params["rebuilt"]]
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise ResultFileError(f"{path}: the record of the final parameters is incomplete or invalid "
                                  f"({type(exc).__name__}: {exc})") from None
        if not set(rebuilt) <= set(_PARAMS) or not compact.state:
            raise ResultFileError(f"{path}: the record of the final parameters names {rebuilt} and holds "
                                  f"{len(compact.state)} state arrays; the file is damaged")
        arrays.update({name: REBUILD for name in rebuilt})
    arrays.setdefault("W", None)           # not stored when W was not trained
    arrays.setdefault("p", None)           # not stored by implicit runs (space="implicit")
    arrays.setdefault("mm_cos", None)      # only recorded with max_margin (and absent from older files)
    arrays.setdefault("mm_margin", None)
    if "nu_norm" not in arrays and "steps" in arrays and "p_probe" in arrays:
        # written before the head was recorded: the head was fixed, its figures unknown
        S, k = arrays["p_probe"].shape
        arrays.update(nu_norm=np.full(S, np.nan), nu_dist=np.zeros(S), nu_align=np.full(S, np.nan),
                      nu_probe=np.full((S, k), np.nan))
    arrays.setdefault("nu", None)          # absent in files written before the head was stored
    for late in ("query_norm", "test_loss_se", "test_acc_se"):  # written before these were recorded
        if "steps" in arrays and late not in arrays:
            arrays[late] = np.full(arrays["steps"].shape[:1], np.nan)
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ResultFileError(f"{path}: missing arrays {missing}")
    if arrays["steps"].ndim != 1 or arrays["steps"].dtype.kind != "i":
        raise ResultFileError(f"{path}: array 'steps' must be 1-D integers; got {arrays['steps'].dtype}"
                              f"{arrays['steps'].shape}")
    S = arrays["steps"].shape[0]
    for name in names:
        if name in ("p", "W", "nu", "y", "y_true", "noisy", "relevant", "roles") or arrays[name] is None:
            continue
        if arrays[name].shape[:1] != (S,):
            raise ResultFileError(f"{path}: array {name!r} has shape {arrays[name].shape}, expected leading {S}")
    if scalars["status"] not in STATUSES:
        raise ResultFileError(f"{path}: unknown status {scalars['status']!r}; expected one of {tuple(STATUSES)}")
    result = Result(**{name: arrays[name] for name in names}, config=config, **scalars)
    result._compact = compact
    return result
