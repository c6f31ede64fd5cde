"""Where a regime changes along one Config field, by bisection on runs kept in a sweep folder.

A grid column spends one run per grid value to place a boundary to within one grid step;
bisection places it to a relative width ``rtol`` in ``2 + ceil(log2(log(hi/lo) / log(1 + rtol)))``
runs (9 runs for a factor 4 at 2 %, where a grid of that resolution needs 72).
``trace_boundary`` bisects every (base, point of ``at``, seed) at once: each level is one
``attnsim.sweep`` call holding the next value of every bracket still open, so independent
brackets share the sweep's worker pool, and every run lands in the sweep folder. The
bisection path is a deterministic function of the regimes found, so a rerun of the same call
finds each of its points in the folder and simulates nothing, and a rerun with a larger
``max_runs`` or a smaller ``rtol`` continues where the first stopped.

Regimes are read with ``attnsim.classify_regime`` at the last save time of each run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field as dataclass_field

import numpy as np

from ._analysis import REGIMES, classify_regime
from ._batch import check_dynamics
from ._config import Config, field_names, field_type
from ._io import write_csv_atomic
from ._pool import check_workers, local_pool
from ._result import FINISHED
from ._sweep import Sweep, grid_configs, sweep
from ._validation import ConfigError, check_choice, check_float, check_int

SCALES = ("log", "linear")

#: Outcome of one bracket (``BoundaryTable`` column ``status``) and what to do about it.
BOUNDARY_STATUSES = {
    "converged": "the bracket [lo, hi] is at most rtol wide (or an integer field has no value left "
                 "strictly inside it)",
    "max_runs": "max_runs runs were spent before the bracket reached rtol: rerun with a larger max_runs "
                "(the runs so far are reused) or a larger rtol",
    "not bracketed": "lo and hi are not in the two regimes of `between`: move or widen [lo, hi], or trace "
                     "another pair of regimes",
    "third regime": "a run inside the bracket is in neither regime of `between`, so the change is not a "
                    "single step there: narrow [lo, hi], or trace each boundary of the third regime",
    "run stopped": "a run did not finish (it diverged, or the flow stopped stiff), so its regime is not read "
                   "at the horizon: see its Result in the sweep folder; lower lr or change the flow options",
}

#: ``classify_regime`` options that ``trace_boundary(classify=...)`` passes on.
CLASSIFY_OPTIONS = ("benign_test_acc", "fit_train_acc")

#: Fields that identify a run rather than parametrise it: not an axis to bisect.
_NOT_AXES = ("seed", "init_seed")


def _midpoint(lo: float, hi: float, scale: str) -> float:
    """Geometric midpoint on the log scale, arithmetic on the linear one."""
    if scale == "log":
        return math.sqrt(lo) * math.sqrt(hi)  # no overflow of lo * hi
    return lo + (hi - lo) / 2


def _width(lo: float, hi: float, scale: str) -> float:
    """Relative width of ``[lo, hi]``: ``hi/lo - 1`` (log), ``(hi - lo) / max(|lo|, |hi|)`` (linear)."""
    if scale == "log":
        return hi / lo - 1.0
    return (hi - lo) / max(abs(lo), abs(hi))


# --------------------------------------------------------------------- one bracket


@dataclass
class _Bisection:
    """The state of one bracket: the next values to run (``todo``) and what each run said (``tell``).

    Pure bookkeeping, no simulation: the values it asks for depend only on the regimes it was told.
    """

    field: str
    lo: float
    hi: float
    between: tuple[str, str]
    scale: str
    rtol: float
    max_runs: int
    integer: bool
    regime_lo: str | None = None
    regime_hi: str | None = None
    status: str | None = None
    message: str = ""
    evaluations: list = dataclass_field(default_factory=list)  # (value, regime name), in order of evaluation

    def _name(self, value) -> str:
        return f"{self.field}={value!r}"

    def _mid(self):
        mid = _midpoint(self.lo, self.hi, self.scale)
        return int(round(mid)) if self.integer else mid

    def todo(self) -> list:
        """Values to run next: both ends first, then one midpoint a level, none once settled."""
        if self.status is not None:
            return []
        if self.regime_lo is None:
            return [self.lo, self.hi]
        return [self._mid()]

    def tell(self, outcomes: Mapping) -> None:
        """Take ``{value: (regime name, Result.status, Result.message)}`` for every value of ``todo()``."""
        values = self.todo()
        ends = self.regime_lo is None
        for value in values:
            self.evaluations.append((value, outcomes[value][0]))
        if ends:
            self.regime_lo, self.regime_hi = outcomes[self.lo][0], outcomes[self.hi][0]
        for value in values:
            regime, run_status, run_message = outcomes[value]
            if run_status != FINISHED:
                self.status = "run stopped"
                self.message = f"the run at {self._name(value)} stopped ({run_status}): {run_message}"
                return
        if ends:
            if sorted((self.regime_lo, self.regime_hi)) != sorted(self.between):
                self.status = "not bracketed"
                self.message = (f"{self._name(self.lo)} gives {self.regime_lo!r} and {self._name(self.hi)} gives "
                                f"{self.regime_hi!r}, not the pair {self.between}")
                return
        else:
            (mid,) = values
            regime = outcomes[mid][0]
            if regime == self.regime_lo:
                self.lo = mid
            elif regime == self.regime_hi:
                self.hi = mid
            else:
                self.status = "third regime"
                self.message = (f"{self._name(mid)} gives {regime!r}, inside [{self.lo!r}, {self.hi!r}] whose ends "
                                f"give {self.regime_lo!r} and {self.regime_hi!r}")
                return
        self._settle()

    def _settle(self):
        width = _width(self.lo, self.hi, self.scale)
        mid = self._mid()
        if width <= self.rtol:
            self.status = "converged"
            self.message = f"width {width:.3g} <= rtol={self.rtol:g} after {self.runs} runs"
        elif not self.lo < mid < self.hi:
            self.status = "converged"
            self.message = f"no value of {self.field} strictly between {self.lo!r} and {self.hi!r}"
        elif self.runs >= self.max_runs:
            self.status = "max_runs"
            self.message = f"width {width:.3g} > rtol={self.rtol:g} after max_runs={self.max_runs} runs"

    @property
    def runs(self) -> int:
        return len(self.evaluations)

    def row(self) -> dict:
        """The bracket's columns of a ``BoundaryTable`` row."""
        found = self.status in ("converged", "max_runs")
        return {"field": self.field, "lo": self.lo, "hi": self.hi, "regime_lo": self.regime_lo,
                "regime_hi": self.regime_hi, "width": _width(self.lo, self.hi, self.scale),
                "boundary": _midpoint(self.lo, self.hi, self.scale) if found else math.nan, "runs": self.runs,
                "status": self.status, "message": self.message, "evaluations": tuple(self.evaluations)}


# --------------------------------------------------------------------- the table


@dataclass(frozen=True)
class BoundaryTable:
    """What ``trace_boundary`` found: one row per (point of ``at``, seed).

    Attributes
    ----------
    folder : str
        The sweep folder holding every run (``sweep()`` opens it as a ``Sweep``).
    field : str
        The Config field that was bisected.
    scale : {"log", "linear"}
    between : tuple of str
        The two regimes whose boundary was traced.
    rtol : float
    at : tuple of str
        The other fields that were varied: those that differ between the bases, then the ``at``
        grid's keys, in order.
    rows : tuple of dict
        One dict per (base, point of ``at``, seed), in order (bases slowest, seeds fastest), with
        the keys of ``columns()``:

        - the ``at`` fields and ``seed``; ``field``, the bisected field's name;
        - ``lo``, ``hi``: the final bracket; ``regime_lo``, ``regime_hi``: the regimes at its
          ends (either order: the ends' runs decide which side is which);
        - ``width``: ``hi/lo - 1`` (log scale) or ``(hi - lo) / max(|lo|, |hi|)`` (linear);
        - ``boundary``: the bracket's midpoint (geometric on the log scale), NaN unless the
          status is ``converged`` or ``max_runs``;
        - ``runs``: runs this bracket used (whether simulated now or read from the folder);
        - ``status``: one of ``BOUNDARY_STATUSES``; ``message``: what happened, with values;

        and ``evaluations``, not a column: ``(value, regime)`` for every run, in order.
    """

    folder: str
    field: str
    scale: str
    between: tuple
    rtol: float
    at: tuple
    rows: tuple

    #: Columns after the ``at`` fields.
    COLUMNS = ("seed", "field", "lo", "hi", "regime_lo", "regime_hi", "width", "boundary", "runs", "status",
               "message")

    def __len__(self):
        return len(self.rows)

    def columns(self) -> list[str]:
        """Column names of ``to_frame`` and ``to_csv``: the ``at`` fields, then ``COLUMNS``."""
        return [*self.at, *self.COLUMNS]

    def sweep(self) -> Sweep:
        """The sweep folder holding every run of the trace."""
        return Sweep.open(self.folder)

    def to_frame(self):
        """The table as a pandas DataFrame (``columns()``); needs pandas (``attnsim[pandas]``).

        Raises
        ------
        ImportError
            If pandas is not installed, saying how to install it.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("BoundaryTable.to_frame needs pandas: pip install 'attnsim[pandas]' (or pandas); "
                              "BoundaryTable.to_csv(path) writes the same table without it") from None
        names = self.columns()
        return pd.DataFrame([[row[name] for name in names] for row in self.rows], columns=names)

    def to_csv(self, path) -> int:
        """Write the table to ``path`` as CSV, atomically; no pandas needed. Returns the number of rows.

        Floats are written in full precision (``repr``), NaN as ``nan``, ``None`` as an empty field.
        """
        names = self.columns()

        def cell(value):
            if value is None:
                return ""
            return repr(value) if isinstance(value, float) else value

        return write_csv_atomic(path, names, ([cell(row[name]) for name in names] for row in self.rows))

    def across_seeds(self) -> list[dict]:
        """The boundary per point of ``at``, over its seeds.

        Returns
        -------
        list of dict
            One dict per point of ``at``, in grid order: the ``at`` fields, ``seeds`` (rows),
            ``found`` (rows with a boundary: status ``converged`` or ``max_runs``), and over
            those ``median`` (of the logarithms on the log scale, so a geometric median),
            ``min`` and ``max`` of ``boundary``; NaN where none was found.
        """
        groups: dict[tuple, list[dict]] = {}
        for row in self.rows:
            groups.setdefault(tuple(row[name] for name in self.at), []).append(row)
        out = []
        for point, rows in groups.items():
            found = np.array([r["boundary"] for r in rows if math.isfinite(r["boundary"])], dtype=float)
            if found.size == 0:
                median = low = high = math.nan
            else:
                median = float(np.exp(np.median(np.log(found))) if self.scale == "log" else np.median(found))
                low, high = float(found.min()), float(found.max())
            out.append({**dict(zip(self.at, point)), "seeds": len(rows), "found": int(found.size),
                        "median": median, "min": low, "max": high})
        return out


# --------------------------------------------------------------------- the trace


def trace_boundary(folder, base: Config | Sequence[Config], field: str, lo, hi, *,
                   at: Mapping[str, Sequence] | None = None, seeds: Sequence[int] = (0,),
                   between: Sequence[str] = ("harmful overfitting", "benign overfitting"), scale: str = "log",
                   rtol: float = 0.02, max_runs: int = 12, classify: Mapping | None = None, n_saves: int = 50,
                   dynamics: str = "flow", flow=None, flow_retries: int = 1, engine: str = "auto",
                   executor: Executor | None = None, workers: int | None = None,
                   progress: bool = False) -> BoundaryTable:
    """Find where the regime changes along one Config field, by bisection, at every point of a grid.

    For each base (x) point of ``at`` (x) ``seeds``: run ``field = lo`` and ``field = hi``; if one is in
    each regime of ``between`` (either way round), run the midpoint, keep the half whose ends
    differ, and repeat until the bracket is at most ``rtol`` wide or ``max_runs`` runs are spent.
    Every run is a point of the sweep folder ``folder``: all open brackets advance one level per
    ``attnsim.sweep`` call, in parallel over its workers, and a rerun reads them back instead of
    simulating them.

    Parameters
    ----------
    folder : str or path-like
        Sweep folder (created if missing); it may hold other sweeps.
    base : Config, or sequence of Config
        Every field that neither ``field``, ``at`` nor ``seeds`` sets. Several bases are traced
        in the same bisection levels, so that all their brackets share the workers: e.g. one
        base per ``d`` when other fields scale with ``d`` (``lr = 10 / d``), which an ``at`` grid
        cannot say. The fields that differ between the bases are columns of the table.
    field : str
        The numeric Config field to bisect (e.g. ``"signal_norm"``); an integer field (``"d"``)
        is bisected over integers.
    lo, hi : float, or sequence of float (one per base)
        The starting bracket, ``lo < hi`` (``0 < lo`` on the log scale).
    at : mapping of str to sequence, optional
        Values of other Config fields (e.g. ``{"d": [100, 1000], "n_train": [20, 40]}``); one
        bracket per point of their Cartesian product (``attnsim.grid_configs``).
    seeds : sequence of int
        One bracket per seed at every point of ``at``.
    between : pair of str
        The two regimes (names of ``attnsim.REGIMES``) whose boundary is traced.
    scale : {"log", "linear"}
        Bisect at geometric midpoints (``sqrt(lo hi)``) or arithmetic ones.
    rtol : float
        Stop when the bracket's relative width (``BoundaryTable``) is at most this.
    max_runs : int
        Runs per bracket at most, its two ends included.
    classify : mapping, optional
        Options of ``classify_regime`` (``benign_test_acc``, ``fit_train_acc``).
    n_saves : int
        Log-spaced save times per run (only the last one is classified; the others let the
        runs be inspected).
    dynamics, flow, flow_retries, engine, executor, workers, progress
        As in ``attnsim.sweep`` (``progress`` shows a bar per bisection level). The default
        dynamics is the flow: a run's horizon ``base.steps`` costs about as much at 10^12 as at
        10^4.

    Returns
    -------
    BoundaryTable
        One row per (point of ``at``, seed), with the final bracket, the regimes at its ends,
        its width, the boundary estimate and a status from ``BOUNDARY_STATUSES``. A bracket
        whose ends are not in the two regimes, or that meets a third regime inside, is an
        outcome in its row, not an error.

    Raises
    ------
    ConfigError
        For an invalid argument, before any run.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> base = Config(d=200, n_test=0, test_metrics="population", steps=500, lr=0.4)
    >>> table = trace_boundary(tmp.name, base, "signal_norm", 3.78, 12.0, rtol=0.1, n_saves=5,
    ...                        dynamics="gd", workers=1)
    >>> row = table.rows[0]
    >>> row["status"], row["regime_lo"], row["regime_hi"], row["runs"]
    ('converged', 'harmful overfitting', 'benign overfitting', 6)
    >>> 6.0 < row["lo"] < row["hi"] < 7.6 and row["width"] <= 0.1
    True
    >>> tmp.cleanup()
    """
    bases = _check_bases(base)
    ends = [_check_axis(field, lo_b, hi_b, scale, at)[1:3]
            for lo_b, hi_b in zip(_per_base("lo", lo, bases), _per_base("hi", hi, bases))]
    integer = field_type(field)[0] is int
    between = _check_between(between)
    rtol = check_float("rtol", rtol, positive=True, hint="the bracket's relative width at which to stop, e.g. 0.02")
    max_runs = check_int("max_runs", max_runs, minimum=2,
                         hint="the two ends take 2 runs and each bisection one more, e.g. max_runs=12")
    classify = _check_classify(classify)
    seeds = _check_seeds(seeds)
    flow_options = check_dynamics(dynamics, flow)

    varying = tuple(name for name in field_names()
                    if name not in (field, *_NOT_AXES, *(at or ())) and len({getattr(b, name) for b in bases}) > 1)
    at_fields = varying + tuple(at or ())
    points, brackets = [], []
    for b, (lo_b, hi_b) in zip(bases, ends):
        for cfg in grid_configs(b, at, seeds):
            for name, value in (("lo", lo_b), ("hi", hi_b)):   # every end a valid Config before anything runs
                try:
                    cfg.replace(**{field: value})
                except ConfigError as exc:
                    raise ConfigError(f"{name}={value!r} is not a valid {field} at {_describe(cfg, at_fields)}: "
                                      f"{exc}") from None
            points.append(cfg)
            brackets.append(_Bisection(field, lo_b, hi_b, between, scale, rtol, max_runs, integer))

    # One pool for the whole trace: a sweep call's own pool would spawn and warm its workers once a level.
    with contextlib.ExitStack() as stack:
        if executor is None and check_workers(workers, 2 * len(points)) > 1:
            executor = stack.enter_context(local_pool(check_workers(workers, 2 * len(points))))
        while True:
            asks = [b.todo() for b in brackets]
            wanted = {(i, value): points[i].replace(**{field: value})
                      for i, values in enumerate(asks) for value in values}
            if not wanted:
                break
            configs = list(dict.fromkeys(wanted.values()))
            sw = sweep(folder, bases[0], configs=configs, n_saves=n_saves, engine=engine, dynamics=dynamics, flow=flow,
                       flow_retries=flow_retries, executor=executor, workers=workers, progress=progress)
            found = _find_points(sw, configs, dynamics, flow_options, n_saves, flow_retries)
            outcomes = {}
            for cfg in configs:
                result = sw.load(found[cfg].key)
                outcomes[cfg] = (classify_regime(result, **classify).name, result.status, result.message)
            for i, values in enumerate(asks):
                if values:
                    brackets[i].tell({value: outcomes[wanted[i, value]] for value in values})

    rows = tuple({**{name: getattr(cfg, name) for name in at_fields}, "seed": cfg.seed, **b.row()}
                 for cfg, b in zip(points, brackets))
    return BoundaryTable(folder=os.fspath(folder), field=field, scale=scale, between=between, rtol=rtol, at=at_fields,
                         rows=rows)


def _find_points(sw: Sweep, configs, dynamics, flow_options, n_saves, flow_retries) -> dict:
    """The sweep point of each config run with these dynamics and flow options.

    A folder may hold one config recorded several ways; any with the same dynamics and flow
    options reads the same regime. The one just asked for (same ``n_saves`` and
    ``flow_retries``) is preferred, then the first by key, so the choice is deterministic.
    """
    wanted = set(configs)
    flow_dict = dataclasses.asdict(flow_options) if flow_options is not None else None
    best = {}
    for point in sw.select():
        rec = point.recording
        if point.config not in wanted or rec.get("dynamics", "gd") != dynamics:
            continue
        if flow_dict is not None and any(rec.get("flow", {}).get(k, v) != v for k, v in flow_dict.items()):
            continue
        rank = (rec.get("n_saves") != n_saves, rec.get("flow_retries", flow_retries) != flow_retries, point.key)
        if point.config not in best or rank < best[point.config][0]:
            best[point.config] = (rank, point)
    missing = wanted - set(best)
    if missing:  # sweep() has just stored every one of them: only a folder changed under us lands here
        raise RuntimeError(f"{sw.folder}: {len(missing)} point(s) of the trace are missing after the sweep, e.g. "
                           f"{next(iter(missing)).to_dict()}; rerun to run them again")
    return {cfg: point for cfg, (_, point) in best.items()}


def _describe(cfg: Config, at) -> str:
    return ", ".join(f"{name}={getattr(cfg, name)!r}" for name in (*(at or ()), "seed"))


# --------------------------------------------------------------------- validation


def _check_axis(field, lo, hi, scale, at):
    """The bisected field, its bracket as that field's type, and whether it is an integer field."""
    numeric = [name for name in field_names() if name not in _NOT_AXES and field_type(name)[0] in (int, float)]
    if field in _NOT_AXES:
        raise ConfigError(f"field must be a numeric Config field other than the seeds; got {field!r}; pass "
                          "seeds=[...] to repeat the trace over seeds")
    if not isinstance(field, str) or field not in numeric:
        raise ConfigError(f"field must be a numeric Config field; got {field!r}; allowed: {numeric}")
    check_choice("scale", scale, SCALES)
    integer = field_type(field)[0] is int
    kind = dict(hint=f"{field!r} is an integer field") if integer else dict(hint=f"e.g. the bracket of {field!r}")
    lo = check_int("lo", lo, **kind) if integer else check_float("lo", lo, **kind)
    hi = check_int("hi", hi, **kind) if integer else check_float("hi", hi, **kind)
    if not lo < hi:
        raise ConfigError(f"lo must be < hi; got lo={lo!r}, hi={hi!r}; give the bracket in increasing order "
                          "(which end holds which regime is read from the runs)")
    if scale == "log" and not lo > 0:
        raise ConfigError(f"lo must be > 0 with scale='log'; got lo={lo!r}; use a positive lo or scale='linear'")
    if at is not None:
        if not isinstance(at, Mapping):
            raise ConfigError(f"at must be a mapping of Config field to values; got {type(at).__name__}; "
                              "e.g. at={'d': [100, 1000]}")
        if field in at:
            raise ConfigError(f"at must not hold the bisected field {field!r}; got at fields {list(at)}; "
                              "drop it from at")
        if "seed" in at:
            raise ConfigError(f"at must not hold 'seed'; got at fields {list(at)}; pass seeds=[...] instead")
    return field, lo, hi, integer


def _check_bases(base) -> list[Config]:
    if isinstance(base, Config):
        return [base]
    if isinstance(base, (str, bytes)) or not isinstance(base, Sequence) or len(base) == 0:
        raise ConfigError(f"base must be a Config or a non-empty sequence of Configs; got {type(base).__name__}; "
                          "e.g. base=attnsim.Config(d=200)")
    for i, b in enumerate(base):
        if not isinstance(b, Config):
            raise ConfigError(f"base[{i}] must be a Config; got {type(b).__name__}")
    if len(set(base)) != len(base):
        raise ConfigError(f"base must not repeat a Config; got {len(base)} bases, {len(set(base))} distinct; "
                          "drop the repeated ones")
    return list(base)


def _per_base(name, value, bases) -> list:
    """``value`` for every base: one number for all, or a sequence of one per base."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value] * len(bases)
    if len(value) != len(bases):
        raise ConfigError(f"{name} must be a number or a sequence of one per base; got {len(value)} values "
                          f"for {len(bases)} bases")
    return list(value)


def _check_between(between) -> tuple[str, str]:
    rule = f"between must be two distinct names of attnsim.REGIMES ({', '.join(map(repr, REGIMES))})"
    if isinstance(between, str) or not isinstance(between, Sequence) or len(between) != 2:
        raise ConfigError(f"{rule}; got {between!r}; e.g. between=('harmful overfitting', 'benign overfitting')")
    for name in between:
        if name not in REGIMES:
            raise ConfigError(f"{rule}; got {name!r} in between={tuple(between)!r}; use the full names")
    if between[0] == between[1]:
        raise ConfigError(f"{rule}; got the same regime twice, between={tuple(between)!r}; name two regimes")
    return tuple(between)


def _check_classify(classify) -> dict:
    classify = dict(classify or {})
    unknown = sorted(set(classify) - set(CLASSIFY_OPTIONS))
    if unknown:
        raise ConfigError(f"classify options {unknown} are not known; allowed: {', '.join(CLASSIFY_OPTIONS)} "
                          "(the thresholds of attnsim.classify_regime)")
    return {name: check_float(f"classify[{name!r}]", value, lo=0.0, hi=1.0, hint="an accuracy in [0, 1]")
            for name, value in classify.items()}


def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
        raise ConfigError(f"seeds must be a non-empty sequence of integers; got {seeds!r}; e.g. seeds=(0, 1, 2)")
    seeds = [check_int("seeds", s, minimum=0, hint="seeds are integers >= 0") for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct; got {seeds}; drop the repeated ones")
    return seeds


__all__ = ["BOUNDARY_STATUSES", "BoundaryTable", "trace_boundary"]
