"""The sweep folder: its layout, the index of finished points, and ``Sweep`` to read it.

::

    folder/
        sweep.json          what was asked for (base config, grids, save times), one entry per call
        index.jsonl         one JSON line per finished point: key, config, file, summary figures
        points/<key>.npz    the Result of that point (``Result.save``, written atomically)

The ``.npz`` files are the truth; the index is a cache, appended one whole line at a time
(``_io.append_json_line``), that ``Sweep.open`` repairs from the files if a run was killed
mid-write.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

import numpy as np

from .._config import Config, field_names
from .._io import ResultFileError, append_json_line, write_json_atomic
from .._result import load
from .._validation import ConfigError
from . import tables
from .keys import recording_of
from .point import summary

INDEX = "index.jsonl"
HEADER = "sweep.json"
POINTS = "points"
FORMAT_VERSION = 1


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

    #: Per-save columns of ``to_frame`` / ``to_csv``, after the Config fields and ``POINT_COLUMNS``.
    SERIES = tables.SERIES
    #: Per-point columns: the point's key, outcome and dynamics.
    POINT_COLUMNS = tables.POINT_COLUMNS

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
            self._append(SweepPoint(key, result.config, rel, summary(result), recording_of(result)))

    def __len__(self):
        return len(self.points)

    def __contains__(self, key):
        return key in self.points

    def path(self, key) -> str:
        return os.path.join(self.folder, POINTS, f"{key}.npz")

    def load(self, key):
        """The ``Result`` of one point.

        Raises
        ------
        KeyError
            If the sweep has no finished point of that key (``points``, ``select``).
        ResultFileError
            If its file is missing or damaged.
        """
        if key not in self.points:
            raise KeyError(f"no finished point {key!r} in the sweep at {self.folder}; its {len(self.points)} "
                           "keys are those of sweep.points, or find points by their fields with sweep.select(d=..., ...)")
        return load(self.path(key))

    def select(self, **fields_) -> list[SweepPoint]:
        """Points whose config matches every given field value.

        Raises
        ------
        ConfigError
            For a name that is not a ``Config`` field.
        """
        unknown = sorted(set(fields_) - set(field_names()))
        if unknown:
            raise ConfigError(f"select() takes Config fields; {', '.join(map(repr, unknown))} "
                              f"{'is not one' if len(unknown) == 1 else 'are not'}; the fields are {field_names()}")
        return [p for p in self.points.values()
                if all(getattr(p.config, k) == v for k, v in fields_.items())]

    # ---------------------------------------------------------------- tables (``tables``)
    def table(self) -> list[dict]:
        """One row per point: its config fields and summary figures."""
        return tables.table(self)

    def columns(self) -> list[str]:
        """Column names of ``to_frame`` and ``to_csv``: Config fields, ``POINT_COLUMNS``, ``step``, ``SERIES``."""
        return tables.columns()

    def to_frame(self):
        """The sweep as a pandas DataFrame: one row per point and save time (``columns()``).

        Reads every point's Result file. Needs pandas (``pip install 'attnsim[pandas]'``);
        ``to_csv`` writes the same table without it.

        Returns
        -------
        pandas.DataFrame
            Config fields as columns (``None`` for unset optional fields), then ``key``,
            ``status``, ``dynamics``, ``regime`` (of the final save; None unless the run
            finished), ``step`` and the recorded figures (``SERIES``; NaN where not recorded).

        Raises
        ------
        ImportError
            If pandas is not installed, saying how to install it.
        """
        return tables.to_frame(self)

    def to_csv(self, path) -> int:
        """Write the table of ``to_frame`` to ``path`` as CSV, atomically; no pandas needed.

        Floats are written in full precision (``repr``), NaN as ``nan``, ``None`` as an empty
        field. Returns the number of data rows.

        Examples
        --------
        >>> import os, tempfile
        >>> from attnsim import Config, sweep
        >>> tmp = tempfile.TemporaryDirectory()
        >>> sw = sweep(tmp.name, Config(d=20, n_test=0, steps=5), grid={"eta": [0.0, 0.2]}, n_saves=3, workers=1,
        ...            progress=False)
        >>> sw.to_csv(os.path.join(tmp.name, "table.csv"))   # 2 points x 3 save times
        6
        >>> tmp.cleanup()
        """
        return tables.to_csv(self, path)

    def grid_mean(self, metric: str, x: str, y: str, **fixed) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Average a summary metric over the other axes (seeds, ...) on the (x, y) grid of the points
        matching ``fixed``: ``(xs (nx,), ys (ny,), mean (ny, nx), count (ny, nx))``, NaN where no point
        (or only NaN values) exists (``attnsim._sweep.tables.grid_mean``)."""
        return tables.grid_mean(self.select(**fixed), metric, x, y)

    # ---------------------------------------------------------------- writing
    def _append(self, point: SweepPoint):
        entry = {"key": point.key, "config": point.config.to_dict(), "file": point.file, "summary": point.summary,
                 "save": point.recording}
        append_json_line(os.path.join(self.folder, INDEX), entry)
        self.points[point.key] = point

    def _store(self, key, result, save):
        rel = os.path.join(POINTS, f"{key}.npz")
        result.save(os.path.join(self.folder, rel))
        self._append(SweepPoint(key, result.config, rel, summary(result), save))

    def _log_request(self, request: dict):
        path = os.path.join(self.folder, HEADER)
        header = {"kind": "attnsim.Sweep", "format_version": FORMAT_VERSION, "requests": []}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                header = json.load(fh)
        header["requests"].append(request)
        write_json_atomic(path, header)
