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

import hashlib
import itertools
import json
import math
import os
import sys
import time
import typing
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, fields

import numpy as np

from ._batch import _single_threaded_env
from ._config import Config
from ._result import ResultFileError, load
from ._saveat import SaveAt
from ._validation import ConfigError

INDEX = "index.jsonl"
HEADER = "sweep.json"
POINTS = "points"
FORMAT_VERSION = 1

#: Environment set in local worker processes so that BLAS does not oversubscribe the cores
#: (each worker already occupies one).


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
    hints = typing.get_type_hints(Config)
    if not sep or not values.strip():
        raise ConfigError(f"grid axis must look like FIELD=V1,V2,... or FIELD=LO:HI:STEP; got {text!r}")
    if name not in hints:
        raise ConfigError(f"grid field {name!r} is not a Config field; allowed: {[f.name for f in fields(Config)]}")
    hint = hints[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint

    def convert(token):
        token = token.strip()
        if optional and token.lower() == "none":
            return None
        try:
            if base is int:
                value = float(token.replace("_", ""))
                if value != int(value):
                    raise ValueError
                return int(value)
            return base(token)
        except ValueError:
            raise ConfigError(f"grid field {name!r}: cannot read {token!r} as {base.__name__}") from None

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


def point_key(config: Config, save: dict) -> str:
    """Stable 16-hex-digit key of a grid point: hash of its config and recording options."""
    text = json.dumps({"config": config.to_dict(), "save": save}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _summary(result) -> dict:
    from ._analysis import classify_regime, frak_sums, time_to_fit_all

    fs = frak_sums(result)
    out = {
        "status": result.status,
        "steps": result.final_step,
        "train_loss": float(result.train_loss[-1]),
        "test_loss": float(result.test_loss[-1]),
        "train_acc": float(result.train_acc[-1]),
        "test_acc": float(result.test_acc[-1]),
        "train_acc_noisy": float(result.train_acc_noisy[-1]),
        "regime": classify_regime(result).name,
        "frak_clean_noisy_ratio": float(fs.clean_noisy_ratio[-1]),
        "time_to_fit_all": time_to_fit_all(result),
        "engine": result.engine,
        "wall_time": result.wall_time,
    }
    # NaN is not JSON: store None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def run_point(config: Config, n_saves: int = 200, probes=None, keep_params: bool = False, engine: str = "auto"):
    """Simulate one grid point (what each worker runs). Returns the ``Result``.

    The final ``W`` (d x d, 32 MB at d = 2000) is dropped unless ``keep_params``.
    """
    from ._experiment import simulate

    result = simulate(config, SaveAt.log(config.steps, n_saves), engine=engine, probes=probes)
    if not keep_params:
        result.W = np.zeros((0, 0))
    return result


# --------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class Point:
    """One finished grid point of a sweep folder."""

    key: str
    config: Config
    file: str
    summary: dict


class Sweep:
    """A sweep folder opened for reading (and extending with ``sweep(folder, ...)``).

    Attributes
    ----------
    folder : str
    points : dict of str to Point
        Finished points by key.
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.points: dict[str, Point] = {}

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
                        self.points[entry["key"]] = Point(entry["key"], Config.from_dict(entry["config"]),
                                                          entry["file"], entry["summary"])
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
            self._append(Point(key, result.config, rel, _summary(result)))

    def __len__(self):
        return len(self.points)

    def __contains__(self, key):
        return key in self.points

    def path(self, key) -> str:
        return os.path.join(self.folder, POINTS, f"{key}.npz")

    def load(self, key):
        """The ``Result`` of one point."""
        return load(self.path(key))

    def select(self, **fields_) -> list[Point]:
        """Points whose config matches every given field value."""
        return [p for p in self.points.values()
                if all(getattr(p.config, k) == v for k, v in fields_.items())]

    def table(self) -> list[dict]:
        """One row per point: its config fields and summary figures."""
        return [{**p.config.to_dict(), **p.summary, "key": p.key} for p in self.points.values()]

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
    def _append(self, point: Point):
        entry = {"key": point.key, "config": point.config.to_dict(), "file": point.file, "summary": point.summary}
        with open(os.path.join(self.folder, INDEX), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        self.points[point.key] = point

    def _store(self, key, result):
        rel = os.path.join(POINTS, f"{key}.npz")
        result.save(os.path.join(self.folder, rel))
        self._append(Point(key, result.config, rel, _summary(result)))

    def _log_request(self, request: dict):
        path = os.path.join(self.folder, HEADER)
        header = {"kind": "attnsim.Sweep", "format_version": FORMAT_VERSION, "requests": []}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                header = json.load(fh)
        header["requests"].append(request)
        _write_json_atomic(path, header)


def _write_json_atomic(path, obj):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _local_executor(workers):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child inherits BLAS thread pools and numba state of the parent
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def sweep(folder, base: Config | None = None, *, grid=None, seeds=None, configs=None, n_saves: int = 200,
          probes=None, keep_params: bool = False, engine: str = "auto", executor: Executor | None = None,
          workers: int | None = None, scheduler: str | None = None, progress: bool = True) -> Sweep:
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
    save = {"n_saves": int(n_saves), "probes": probes, "keep_params": bool(keep_params)}

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
                sw._store(key, run_point(cfg, n_saves, probes, keep_params, engine))
                if bar is not None:
                    bar.update(1)
        else:
            _run_pool(sw, todo, save, engine, executor, workers, scheduler, bar, failures)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        first_key, first_err = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} sweep points failed (finished points are saved; "
                           f"rerun to retry); first: {todo[first_key].to_dict()}: {first_err}")
    return sw


def _run_pool(sw, todo, save, engine, executor, workers, scheduler, bar, failures):
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
        executor = owned = _local_executor(workers or os.cpu_count() or 1)
    futures = {}
    try:
        with _single_threaded_env():
            for key, cfg in todo.items():
                fut = executor.submit(run_point, cfg, save["n_saves"], save["probes"], save["keep_params"], engine)
                futures[fut] = key
        for fut in as_completed(futures):
            key = futures.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - a failed point must not lose the others
                failures.append((key, f"{type(exc).__name__}: {exc}"))
            else:
                sw._store(key, result)
            if bar is not None:
                bar.update(1)
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise
    finally:
        if owned is not None:
            owned.shutdown(wait=True, cancel_futures=True) if _accepts_cancel(owned) else owned.shutdown(wait=True)
        if client is not None:
            client.close()


def _accepts_cancel(executor) -> bool:
    import inspect

    try:
        return "cancel_futures" in inspect.signature(executor.shutdown).parameters
    except (TypeError, ValueError):
        return False



# --------------------------------------------------------------------- command line


def add_sweep_arguments(parser, add_config_flags) -> None:
    """Arguments of ``attnsim sweep`` (``add_config_flags`` adds one flag per Config field)."""
    parser.add_argument("folder", help="results folder (created, or extended if it exists)")
    parser.add_argument("--preset", default="balanced", help="base preset for the fields not swept (default balanced)")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=VALUES",
                        help="a swept Config field: FIELD=V1,V2,... or FIELD=LO:HI:STEP (inclusive); repeatable")
    parser.add_argument("--seeds", default=None, metavar="VALUES",
                        help="seeds to run at every grid point: 0,1,2 or 0:9 (default: the base seed)")
    parser.add_argument("--saves", default="200", metavar="N", help="log-spaced save times per run (default 200)")
    parser.add_argument("--workers", default=None, metavar="N",
                        help="local worker processes (default: all cores; 1 runs in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on the Dask distributed scheduler at ADDRESS (needs attnsim[dask])")
    parser.add_argument("--engine", default="auto", help="auto, primal or dual (default auto)")
    parser.add_argument("--probes", default=None, choices=["noise"],
                        help="also record W^T p along every training token's noise vector")
    parser.add_argument("--keep-params", action="store_true", help="keep the final W (d x d) in every file")
    parser.add_argument("--show", action="store_true", help="print the finished points of FOLDER and exit")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar over grid points (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    add_config_flags(parser)


def _positive_int(flag, text):
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value == int(value) and value >= 1):
        raise ConfigError(f"{flag} must be an integer >= 1; got {text!r}")
    return int(value)


def format_table(sw: Sweep, columns=None) -> str:
    """The finished points as an aligned text table (swept fields first)."""
    rows = sw.table()
    if not rows:
        return "(no finished points)"
    config_cols = [f.name for f in fields(Config)]
    varying = [c for c in config_cols if len({json.dumps(r[c]) for r in rows}) > 1]
    columns = columns or varying + ["train_acc", "test_acc", "train_loss", "test_loss", "regime", "status"]

    def fmt(value):
        if value is None:
            return "nan"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    def sort_key(r):
        return [json.dumps(r[c]) if not isinstance(r[c], (int, float)) else r[c] for c in varying]

    cells = [[fmt(r.get(c)) for c in columns] for r in sorted(rows, key=sort_key)]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def run_sweep_command(args, base_config, stderr_isatty: bool) -> int:
    """``attnsim sweep``: the CLI turns ConfigError / ResultFileError into one line and exit 2."""
    if args.show:
        print(format_table(Sweep.open(args.folder)))
        return 0
    base = base_config(args)
    grid = dict(parse_grid_arg(text) for text in args.grid)
    seeds = None
    if args.seeds is not None:
        if "seed" in grid:
            raise ConfigError("give the seeds either as --seeds or as --grid seed=..., not both")
        seeds = parse_grid_arg(f"seed={args.seeds}")[1]
    n_saves = _positive_int("--saves", args.saves)
    if n_saves < 2:
        raise ConfigError(f"--saves must be >= 2; got {n_saves}")
    workers = None if args.workers is None else _positive_int("--workers", args.workers)
    if args.engine not in ("auto", "primal", "dual"):
        raise ConfigError(f"--engine must be one of auto, primal, dual; got {args.engine!r}")
    if os.path.exists(args.folder) and not os.path.isdir(args.folder):
        raise ConfigError(f"folder {args.folder!r} is a file; give a folder for the sweep results")
    configs = grid_configs(base, grid, seeds)   # validates every point before any work
    progress = stderr_isatty if args.progress is None else args.progress
    print(f"attnsim sweep: {len(configs)} points ({' x '.join(f'{k}[{len(v)}]' for k, v in grid.items()) or 'base'}"
          f"{f' x seed[{len(seeds)}]' if seeds else ''}) -> {args.folder}", flush=True)
    t0 = time.perf_counter()
    try:
        sw = sweep(args.folder, base, grid=grid, seeds=seeds, n_saves=n_saves, probes=args.probes,
                   keep_params=args.keep_params, engine=args.engine, workers=workers, scheduler=args.scheduler,
                   progress=progress)
    except RuntimeError as exc:
        print(f"attnsim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(format_table(sw))
    print(f"{len(sw)} finished points in {args.folder} ({time.perf_counter() - t0:.1f} s)")
    return 0


__all__ = ["Point", "Sweep", "format_table", "grid_configs", "parse_grid_arg", "point_key", "run_point", "sweep"]
