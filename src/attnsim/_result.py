"""What came out of a run: one ``Result`` object, and its exact round trip through ``.npz``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ._config import Config
from ._io import ResultFileError, read_npz, write_npz_atomic

#: Version of the ``.npz`` layout written by ``Result.save``; ``load`` refuses others.
FORMAT_VERSION = 1

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
        ``W`` is None when it was not trained (it is ``W0``, which the caller has): a
        d x d matrix is 32 MB at d = 2000. Both are None for an implicit run
        (``Config(space="implicit")``), which never forms a d-vector.
    nu : ndarray, shape (d,), or None
        Final head (the initial head when it was not trained). None for an implicit run and
        for files written before attnsim stored it.
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
    p: np.ndarray | None
    W: np.ndarray | None
    y: np.ndarray
    y_true: np.ndarray
    noisy: np.ndarray
    relevant: np.ndarray
    roles: np.ndarray
    # the head's record; None only in Results built by hand or files written before it existed
    nu: np.ndarray | None = None
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
        """Write to a NumPy ``.npz`` file atomically (temporary file, fsync, rename)."""
        arrays = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
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
        }
        write_npz_atomic(path, arrays, meta)


def load(path) -> Result:
    """Read a ``Result`` written by ``Result.save`` (no pickle is ever loaded).

    Raises
    ------
    ResultFileError
        If the file is missing, truncated, corrupted, or of another format version.
    """
    arrays, meta = read_npz(path, "attnsim.Result", FORMAT_VERSION)
    names = [f.name for f in dataclasses.fields(Result) if f.name not in
             ("config", "engine", "status", "message", "wall_time", "compile_time", "extra")]
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
    try:
        config = None if meta["config"] is None else Config.from_dict(meta["config"])
        scalars = dict(engine=str(meta["engine"]), status=str(meta["status"]), message=str(meta["message"]),
                       wall_time=float(meta["wall_time"]), compile_time=float(meta["compile_time"]),
                       extra=dict(meta.get("extra") or {}))
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise ResultFileError(f"{path}: metadata is incomplete or invalid ({type(exc).__name__}: {exc})") from None
    if scalars["status"] not in STATUSES:
        raise ResultFileError(f"{path}: unknown status {scalars['status']!r}; expected one of {tuple(STATUSES)}")
    return Result(**{name: arrays[name] for name in names}, config=config, **scalars)
