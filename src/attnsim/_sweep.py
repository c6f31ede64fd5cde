"""Resumable, file-backed sweeps over Config fields and seeds, on local cores or a cluster.

A sweep folder holds one ``Result`` file per grid point and a small index::

    folder/
        sweep.json          what was asked for (base config, grids, save times), one entry per call
        index.jsonl         one JSON line per finished point: key, config, file, summary figures
        points/<key>.npz    the Result of that point (``Result.save``, written atomically)

A point's key is a hash of its full ``Config`` and of how it is recorded (save times,
probes, whether the final ``W`` is kept), so rerunning a sweep, or a larger grid that
contains it, skips every point whose file exists. The ``.npz`` files are the truth; the
index is a cache that ``Sweep.open`` repairs from them if a run was killed mid-write.

Workers never touch the folder: they return the ``Result`` and the calling process writes
it, so any ``concurrent.futures.Executor`` works, including a Dask cluster without a
shared filesystem (``attnsim`` must be importable on its workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, fields

import numpy as np

from ._batch import check_dynamics
from ._config import Config, field_names, field_type, parse_field
from ._coords.flow import FlowOptions, as_flow_options
from ._io import ResultFileError, write_csv_atomic, write_json_atomic
from ._pool import local_executor, shutdown, single_threaded_env
from ._result import load
from ._saveat import SaveAt
from ._validation import ConfigError

INDEX = "index.jsonl"
HEADER = "sweep.json"
POINTS = "points"
FORMAT_VERSION = 1

# --------------------------------------------------------------------- grid


def grid_configs(base: Config, grid: Mapping[str, Sequence] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[Config]:
    """Every ``Config`` of the Cartesian product of ``grid`` (field -> values) applied to ``base``.

    ``seeds`` is shorthand for ``grid["seed"]``. Order: the grid's fields vary from the
    slowest (first) to the fastest (last), seeds fastest of all.

    Raises
    ------
    ConfigError
        For an unknown field, an empty value list, or a combination Config rejects
        (the message names the point).

    Examples
    --------
    >>> [(c.d, c.seed) for c in grid_configs(Config(), {"d": [100, 200]}, seeds=[0, 1])]
    [(100, 0), (100, 1), (200, 0), (200, 1)]
    """
    grid = dict(grid or {})
    if seeds is not None:
        if "seed" in grid:
            raise ConfigError("give the seeds either as seeds=... or as grid['seed'], not both")
        grid["seed"] = list(seeds)
    names = [f.name for f in fields(Config)]
    for name, values in grid.items():
        if name not in names:
            raise ConfigError(f"grid field {name!r} is not a Config field; allowed: {names}")
        if isinstance(values, (str, bytes)) or len(values) == 0:
            raise ConfigError(f"grid field {name!r} needs a non-empty list of values; got {values!r}")
    out = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        changes = dict(zip(keys, (_plain(v) for v in combo)))
        try:
            out.append(base.replace(**changes))
        except ConfigError as exc:
            raise ConfigError(f"grid point {changes}: {exc}") from None
    return out


def _plain(value):
    """NumPy scalars to Python scalars (Config and JSON want plain types)."""
    return value.item() if isinstance(value, np.generic) else value


def parse_grid_arg(text: str) -> tuple[str, list]:
    """Parse one ``FIELD=VALUES`` command-line grid axis.

    ``VALUES`` is a comma-separated list (``d=250,500,1000``) or an inclusive range
    ``LO:HI:STEP`` (``signal_norm=5:100:2.5``; ``STEP`` defaults to 1). Values are
    converted to the field's type; ``none`` means ``None`` for optional fields.

    Examples
    --------
    >>> parse_grid_arg("d=250:1000:250")
    ('d', [250, 500, 750, 1000])
    >>> parse_grid_arg("eta=0,0.1")
    ('eta', [0.0, 0.1])
    """
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not values.strip():
        raise ConfigError(f"grid axis must look like FIELD=V1,V2,... or FIELD=LO:HI:STEP; got {text!r}")
    if name not in field_names():
        raise ConfigError(f"grid field {name!r} is not a Config field; allowed: {field_names()}")
    base, _ = field_type(name)

    def convert(token):
        try:
            return parse_field(name, token)
        except ConfigError:
            raise ConfigError(f"grid field {name!r}: cannot read {token.strip()!r} as {base.__name__}") from None

    if ":" in values and base in (int, float):
        parts = values.split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"grid field {name!r}: a range is LO:HI or LO:HI:STEP; got {values!r}")
        try:
            lo, hi = float(parts[0]), float(parts[1])
            step = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise ConfigError(f"grid field {name!r}: cannot read the range {values!r} (LO:HI:STEP numbers)") from None
        if not (step > 0 and hi >= lo):
            raise ConfigError(f"grid field {name!r}: range {values!r} needs HI >= LO and STEP > 0")
        count = int(math.floor((hi - lo) / step + 1e-9)) + 1
        out = [lo + k * step for k in range(count)]
        return name, [convert(repr(round(v, 12))) for v in out]
    return name, [convert(v) for v in values.split(",")]


# --------------------------------------------------------------------- keys and points


#: Config fields added after the first sweeps were written, with the value every earlier run had:
#: left out of the key at that value, so that existing folders keep their keys.
_LATE_FIELDS = {"test_metrics": "sample", "optimizer": "gd", "ngd_norm": "joint", "momentum": None, "w0": "random",
                "head_init": "official", "sigma_nu": 0.0, "signal_noise": "noisy", "labels": "balanced"}


def point_key(config: Config, save: dict) -> str:
    """Stable 16-hex-digit key of a grid point: hash of its config and recording options.

    ``save`` holds ``n_saves``, ``probes``, ``keep_params`` and, for the flow, ``dynamics``
    and the ``flow`` options (``recording``), so a flow run and a GD run of one config are
    different points.
    """
    cfg = {k: v for k, v in config.to_dict().items() if not (k in _LATE_FIELDS and v == _LATE_FIELDS[k])}
    text = json.dumps({"config": cfg, "save": save}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _summary(result) -> dict:
    from ._analysis import classify_regime, frak_sums, time_to_fit_all

    fs = frak_sums(result)
    final = result.summary()
    out = {key: final[key] for key in ("steps", "train_loss", "test_loss", "train_acc", "test_acc",
                                       "train_acc_noisy", "engine")}
    out.update(status=result.status, regime=classify_regime(result).name,
               frak_clean_noisy_ratio=float(fs.clean_noisy_ratio[-1]), time_to_fit_all=time_to_fit_all(result),
               test_loss_se=float(result.test_loss_se[-1]), test_acc_se=float(result.test_acc_se[-1]),
               dynamics=result.extra.get("dynamics", "gd"),
               path=result.extra.get("path", result.extra.get("dynamics", "gd")), wall_time=result.wall_time)
    # NaN is not JSON: store None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


#: Flow outcomes that a rerun with a larger budget can turn into a finished run.
_RETRYABLE = ("max_steps_reached", "step_size_collapsed")
#: Each rerun multiplies ``max_steps`` by this (after ``max_steps_reached``) or divides ``h_min``
#: by it (after ``step_size_collapsed``).
RETRY_FACTOR = 10
#: Reruns a flow point gets by default (``sweep(flow_retries=...)``).
DEFAULT_FLOW_RETRIES = 1


def recording(n_saves: int, probes, keep_params: bool, dynamics: str = "gd", flow=None,
              flow_retries: int = DEFAULT_FLOW_RETRIES) -> dict:
    """How a sweep point is recorded (part of its key and of its index entry).

    GD points have the keys of folders written before the flow existed; flow points add
    ``dynamics``, every ``FlowOptions`` field and ``flow_retries``.
    """
    save = {"n_saves": int(n_saves), "probes": probes, "keep_params": bool(keep_params)}
    if dynamics != "gd":
        save.update(dynamics=dynamics, flow=dataclasses.asdict(as_flow_options(flow)), flow_retries=int(flow_retries))
    return save


def run_point(config: Config, n_saves: int = 200, probes=None, keep_params: bool = False, engine: str = "auto",
              dynamics: str = "gd", flow=None, flow_retries: int = 0):
    """Simulate one grid point (what each worker runs). Returns the ``Result``.

    The final ``W`` (d x d, 32 MB at d = 2000) is dropped (``Result.W = None``) unless ``keep_params``.

    No run left behind: a flow run that stops with ``max_steps_reached`` (a stiff stretch) or
    ``step_size_collapsed`` is run again from the start, up to ``flow_retries`` times, with
    ``max_steps`` multiplied (``h_min`` divided) by ``RETRY_FACTOR``. ``Result.extra["path"]``
    says which path produced the result (``"flow"``, or ``"flow rerun: max_steps=1000000"``) and
    ``extra["attempts"]`` lists the earlier outcomes; a point that still stops keeps its status.
    """
    from ._experiment import prepare_run

    def simulate(config, save_at, *, engine, probes, dynamics, flow):   # without the final W unless kept
        run = prepare_run(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=flow)
        run.warm_up()
        run.run()
        return run.result(config, keep_W=keep_params)

    save_at = SaveAt.log(config.steps, n_saves)
    opts = as_flow_options(flow) if dynamics == "flow" else flow
    result = simulate(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=opts)
    if dynamics == "flow":
        attempts = []
        while result.status in _RETRYABLE and len(attempts) < flow_retries:
            attempts.append({"status": result.status, "message": result.message, "final_step": result.final_step,
                             "max_steps": opts.max_steps, "h_min": opts.h_min, "wall_time": result.wall_time})
            if result.status == "max_steps_reached":
                opts = dataclasses.replace(opts, max_steps=opts.max_steps * RETRY_FACTOR)
                change = f"max_steps={opts.max_steps}"
            else:
                opts = dataclasses.replace(opts, h_min=opts.h_min / RETRY_FACTOR)
                change = f"h_min={opts.h_min:g}"
            result = simulate(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=opts)
            result.extra["path"] = f"flow rerun: {change}"
        result.extra.setdefault("path", "flow")
        result.extra["attempts"] = attempts
    if not keep_params:
        result.W = None
    return result


def _recording_of(result) -> dict:
    """What a Result file says about how it was recorded (for re-indexing a file the index lost)."""
    out = {"n_saves": int(result.steps.size), "keep_params": result.W is not None}
    if result.extra.get("dynamics", "gd") != "gd":
        out.update(dynamics=result.extra["dynamics"],
                   flow={k: result.extra[k] for k in (f.name for f in dataclasses.fields(FlowOptions))
                         if k in result.extra})
    return out


# --------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class SweepPoint:
    """One finished grid point of a sweep folder (``Sweep.points``, ``Sweep.select``).

    Attributes
    ----------
    key : str
        16 hex digits, a hash of the config and the recording options (``point_key``).
    config : Config
    file : str
        The point's Result file, relative to the sweep folder.
    summary : dict
        Final figures (losses, accuracies, regime, status, dynamics, ...), NaN stored as None.
    recording : dict
        How it was recorded (``n_saves``, ``probes``, ``keep_params``; for the flow also
        ``dynamics`` and the ``flow`` options); empty for points indexed before it was stored.
    """

    key: str
    config: Config
    file: str
    summary: dict
    recording: dict = dataclasses.field(default_factory=dict)


class Sweep:
    """A sweep folder opened for reading (and extending with ``sweep(folder, ...)``).

    Attributes
    ----------
    folder : str
    points : dict of str to SweepPoint
        Finished points by key.
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.points: dict[str, SweepPoint] = {}

    # ---------------------------------------------------------------- reading
    @classmethod
    def open(cls, folder, *, repair: bool = True) -> Sweep:
        """Read the index of ``folder``; with ``repair``, index point files it lacks.

        Raises
        ------
        ResultFileError
            If ``folder`` holds no sweep.
        """
        self = cls(folder)
        header = os.path.join(self.folder, HEADER)
        if not os.path.exists(header):
            raise ResultFileError(f"{self.folder}: not an attnsim sweep folder (no {HEADER})")
        index = os.path.join(self.folder, INDEX)
        if os.path.exists(index):
            with open(index, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line torn by a crash; its file is re-indexed below
                    path = os.path.join(self.folder, entry["file"])
                    if os.path.exists(path):
                        self.points[entry["key"]] = SweepPoint(entry["key"], Config.from_dict(entry["config"]),
                                                               entry["file"], entry["summary"],
                                                               entry.get("save", {}))
        if repair:
            self._repair()
        return self

    def _repair(self):
        folder = os.path.join(self.folder, POINTS)
        if not os.path.isdir(folder):
            return
        for name in sorted(os.listdir(folder)):
            key, ext = os.path.splitext(name)
            if ext != ".npz" or key in self.points:
                continue
            rel = os.path.join(POINTS, name)
            try:
                result = load(os.path.join(self.folder, rel))
            except ResultFileError:
                continue
            self._append(SweepPoint(key, result.config, rel, _summary(result), _recording_of(result)))

    def __len__(self):
        return len(self.points)

    def __contains__(self, key):
        return key in self.points

    def path(self, key) -> str:
        return os.path.join(self.folder, POINTS, f"{key}.npz")

    def load(self, key):
        """The ``Result`` of one point."""
        return load(self.path(key))

    def select(self, **fields_) -> list[SweepPoint]:
        """Points whose config matches every given field value."""
        return [p for p in self.points.values()
                if all(getattr(p.config, k) == v for k, v in fields_.items())]

    def table(self) -> list[dict]:
        """One row per point: its config fields and summary figures."""
        return [{**p.config.to_dict(), **p.summary, "key": p.key} for p in self.points.values()]

    # ---------------------------------------------------------------- tables over save times
    #: Per-save columns of ``to_frame`` / ``to_csv``, after the Config fields and ``POINT_COLUMNS``.
    SERIES = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy", "test_loss", "test_acc",
              "test_loss_se", "test_acc_se", "p_norm", "w_dist", "query_norm", "mean_relevant_mass_clean",
              "mean_relevant_mass_noisy")
    #: Per-point columns: the point's key, outcome and dynamics.
    POINT_COLUMNS = ("key", "status", "dynamics", "regime")

    def columns(self) -> list[str]:
        """Column names of ``to_frame`` and ``to_csv``: Config fields, ``POINT_COLUMNS``, ``step``, ``SERIES``."""
        return [*field_names(), *self.POINT_COLUMNS, "step", *self.SERIES]

    def _sorted_points(self) -> list[SweepPoint]:
        def order(value):
            return (0, value, "") if isinstance(value, (int, float)) and value is not None else (1, 0, str(value))

        return sorted(self.points.values(), key=lambda p: ([order(getattr(p.config, f)) for f in field_names()],
                                                             p.recording.get("dynamics", "gd"), p.key))

    def _point_columns(self, point: SweepPoint) -> dict:
        """One point's rows as columns (lists of equal length, one entry per save time)."""
        res = self.load(point.key)
        S = res.steps.size
        cols = {name: [value] * S for name, value in point.config.to_dict().items()}
        meta = {"key": point.key, "status": res.status, "dynamics": res.extra.get("dynamics", "gd"),
                "regime": point.summary.get("regime")}
        cols.update({name: [meta[name]] * S for name in self.POINT_COLUMNS})
        cols["step"] = res.steps.tolist()
        with np.errstate(invalid="ignore"):
            masses = {"mean_relevant_mass_clean": res.relevant_mass[:, ~res.noisy].mean(axis=1) if np.any(~res.noisy)
                      else np.full(S, np.nan),
                      "mean_relevant_mass_noisy": res.relevant_mass[:, res.noisy].mean(axis=1) if np.any(res.noisy)
                      else np.full(S, np.nan)}
        for name in self.SERIES:
            cols[name] = (masses[name] if name in masses else getattr(res, name)).astype(float).tolist()
        return cols

    def to_frame(self):
        """The sweep as a pandas DataFrame: one row per point and save time (``columns()``).

        Reads every point's Result file. Needs pandas (``pip install 'attnsim[pandas]'``);
        ``to_csv`` writes the same table without it.

        Returns
        -------
        pandas.DataFrame
            Config fields as columns (``None`` for unset optional fields), then ``key``,
            ``status``, ``dynamics``, ``regime`` (of the final save), ``step`` and the
            recorded figures (``SERIES``; NaN where not recorded).

        Raises
        ------
        ImportError
            If pandas is not installed, saying how to install it.
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Sweep.to_frame needs pandas: pip install 'attnsim[pandas]' (or pandas); "
                              "Sweep.to_csv(path) writes the same table without it") from None
        names = self.columns()
        data = {name: [] for name in names}
        for point in self._sorted_points():
            for name, values in self._point_columns(point).items():
                data[name].extend(values)
        return pd.DataFrame(data, columns=names)

    def to_csv(self, path) -> int:
        """Write the table of ``to_frame`` to ``path`` as CSV, atomically; no pandas needed.

        Floats are written in full precision (``repr``), NaN as ``nan``, ``None`` as an empty
        field. Returns the number of data rows.

        Examples
        --------
        >>> import os, tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sw = sweep(tmp.name, Config(d=20, n_test=0, steps=5), grid={"eta": [0.0, 0.2]}, n_saves=3, workers=1,
        ...            progress=False)
        >>> sw.to_csv(os.path.join(tmp.name, "table.csv"))   # 2 points x 3 save times
        6
        >>> tmp.cleanup()
        """
        names = self.columns()

        def cell(value):
            if value is None:
                return ""
            return repr(value) if isinstance(value, float) else value

        def rows():
            for point in self._sorted_points():
                cols = self._point_columns(point)
                for k in range(len(cols["step"])):
                    yield [cell(cols[name][k]) for name in names]

        return write_csv_atomic(path, names, rows())

    def grid_mean(self, metric: str, x: str, y: str, **fixed) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Average a summary metric over the other axes (seeds, ...) on the (x, y) grid.

        Returns
        -------
        xs : ndarray, shape (nx,)
        ys : ndarray, shape (ny,)
        mean : ndarray, shape (ny, nx)
            NaN where no point (or only NaN values) exists.
        count : ndarray of int, shape (ny, nx)
        """
        pts = self.select(**fixed)
        xs = np.array(sorted({getattr(p.config, x) for p in pts}), dtype=float)
        ys = np.array(sorted({getattr(p.config, y) for p in pts}), dtype=float)
        total = np.zeros((ys.size, xs.size))
        count = np.zeros((ys.size, xs.size), dtype=np.int64)
        for p in pts:
            value = p.summary.get(metric)
            if value is None or not math.isfinite(value):
                continue
            i = np.searchsorted(ys, getattr(p.config, y))
            j = np.searchsorted(xs, getattr(p.config, x))
            total[i, j] += value
            count[i, j] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return xs, ys, mean, count

    # ---------------------------------------------------------------- writing
    def _append(self, point: SweepPoint):
        entry = {"key": point.key, "config": point.config.to_dict(), "file": point.file, "summary": point.summary,
                 "save": point.recording}
        with open(os.path.join(self.folder, INDEX), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self.points[point.key] = point

    def _store(self, key, result, save):
        rel = os.path.join(POINTS, f"{key}.npz")
        result.save(os.path.join(self.folder, rel))
        self._append(SweepPoint(key, result.config, rel, _summary(result), save))

    def _log_request(self, request: dict):
        path = os.path.join(self.folder, HEADER)
        header = {"kind": "attnsim.Sweep", "format_version": FORMAT_VERSION, "requests": []}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                header = json.load(fh)
        header["requests"].append(request)
        write_json_atomic(path, header)


def sweep(folder, base: Config | None = None, *, grid=None, seeds=None, configs=None, n_saves: int = 200,
          probes=None, keep_params: bool = False, engine: str = "auto", dynamics: str = "gd", flow=None,
          flow_retries: int = DEFAULT_FLOW_RETRIES, executor: Executor | None = None, workers: int | None = None, scheduler: str | None = None,
          progress: bool = True) -> Sweep:
    """Run every point of a grid that ``folder`` does not hold yet; return the opened ``Sweep``.

    Parameters
    ----------
    folder : str or path-like
        Results folder; created if missing, extended if it exists.
    base : Config, optional
        Fields not on the grid (default ``Config()``, the balanced preset).
    grid : mapping of str to sequence, optional
        Config field -> values; the Cartesian product is swept (``grid_configs``).
    seeds : sequence of int, optional
        Shorthand for ``grid["seed"]``.
    configs : sequence of Config, optional
        Explicit points instead of (or in addition to) the grid.
    n_saves : int
        Log-spaced save times per run.
    probes : None or "noise"
        Passed to ``simulate``.
    keep_params : bool
        Keep the final ``W`` in each file (d x d floats; off by default).
    engine : {"auto", "primal", "dual"}
    dynamics : {"gd", "flow"}
        ``flow``: the GD-matched gradient flow (``simulate``), for horizons up to 10^15 steps.
        Part of each point's key, with the flow options: GD and flow results of one config
        are different points of the same folder.
    flow : None, FlowOptions or dict
        Settings of the flow (default ``FlowOptions()``).
    flow_retries : int
        Reruns of a flow point that stopped stiff (``max_steps_reached``) or with a collapsed
        step, each with ``RETRY_FACTOR`` times the budget (``run_point``); the summary's ``path``
        says which run produced the file.
    executor : concurrent.futures.Executor, optional
        Where to run the points. Default: a process pool over ``workers`` local cores
        (all of them), or the Dask cluster at ``scheduler``.
    workers : int, optional
        Local processes (default ``os.cpu_count()``); 1 runs in this process.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``); needs ``attnsim[dask]``.
    progress : bool
        A bar over grid points with the estimated time left.

    Returns
    -------
    Sweep

    Raises
    ------
    ConfigError
        For invalid grids or options, before any point runs.

    Examples
    --------
    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> base = Config(d=20, n_test=0, steps=5)
    >>> len(sweep(tmp.name, base, grid={"eta": [0.0, 0.2]}, workers=1, progress=False))
    2
    >>> sw = sweep(tmp.name, base, grid={"eta": [0.0, 0.1, 0.2]}, workers=1, progress=False)  # runs eta=0.1 only
    >>> sorted(p.config.eta for p in sw.points.values())
    [0.0, 0.1, 0.2]
    >>> tmp.cleanup()
    """
    base = Config() if base is None else base
    if probes not in (None, "noise"):
        raise ConfigError(f"probes must be None or 'noise' in a sweep; got {probes!r}")
    if not isinstance(n_saves, (int, np.integer)) or n_saves < 2:
        raise ConfigError(f"n_saves must be an integer >= 2; got {n_saves!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1; got {workers!r}")
    if sum(x is not None for x in (executor, scheduler)) > 1:
        raise ConfigError("give at most one of executor= and scheduler=")
    todo_configs = list(configs or [])
    if grid is not None or seeds is not None or not todo_configs:
        todo_configs += grid_configs(base, grid, seeds)
    flow = check_dynamics(dynamics, flow)
    if isinstance(flow_retries, bool) or not isinstance(flow_retries, (int, np.integer)) or flow_retries < 0:
        raise ConfigError(f"flow_retries must be an integer >= 0; got {flow_retries!r}")
    save = recording(n_saves, probes, keep_params, dynamics, flow, flow_retries)

    folder = os.fspath(folder)
    os.makedirs(os.path.join(folder, POINTS), exist_ok=True)
    sw = Sweep(folder)
    sw._log_request({"base": base.to_dict(), "grid": {k: [_plain(v) for v in vals] for k, vals in (grid or {}).items()},
                     "seeds": None if seeds is None else [int(s) for s in seeds], "n_points": len(todo_configs),
                     **save, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    sw = Sweep.open(folder)

    todo = {}
    for cfg in todo_configs:
        key = point_key(cfg, save)
        if key not in sw and key not in todo:
            todo[key] = cfg
    if not todo:
        return sw

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="point", dynamic_ncols=True, mininterval=0.5,
                   desc=f"sweep {os.path.basename(os.path.abspath(folder))}")
    failures = []
    try:
        if executor is None and scheduler is None and (workers == 1 or len(todo) == 1):
            for key, cfg in todo.items():
                sw._store(key, run_point(cfg, n_saves, probes, keep_params, engine, dynamics, flow,
                                            save.get("flow_retries", 0)), save)
                if bar is not None:
                    bar.update(1)
        else:
            _run_pool(sw, todo, save, engine, dynamics, flow, executor, workers, scheduler, bar, failures)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        first_key, first_err = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} sweep points failed (finished points are saved; "
                           f"rerun to retry); first: {todo[first_key].to_dict()}: {first_err}")
    return sw


def _run_pool(sw, todo, save, engine, dynamics, flow, executor, workers, scheduler, bar, failures):
    owned = None
    client = None
    if scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigError("scheduler= needs Dask distributed: pip install 'attnsim[dask]'") from None
        client = Client(scheduler)
        executor = owned = client.get_executor(pure=False)
    elif executor is None:
        executor = owned = local_executor(workers or os.cpu_count() or 1)
    futures = {}
    try:
        with single_threaded_env():
            for key, cfg in todo.items():
                fut = executor.submit(run_point, cfg, save["n_saves"], save["probes"], save["keep_params"], engine,
                                      dynamics, flow, save.get("flow_retries", 0))
                futures[fut] = key
        for fut in as_completed(futures):
            key = futures.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed point must not lose the others
                failures.append((key, f"{type(exc).__name__}: {exc}"))
            else:
                sw._store(key, result, save)
            if bar is not None:
                bar.update(1)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    finally:
        if owned is not None:
            shutdown(owned)
        if client is not None:
            client.close()


__all__ = ["Sweep", "SweepPoint", "grid_configs", "parse_grid_arg", "point_key", "recording", "run_point", "sweep"]
