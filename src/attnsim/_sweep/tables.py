"""A sweep folder as tables: one row per point (``Sweep.table``), one row per point and save
time (``Sweep.to_frame``, ``Sweep.to_csv``), a summary figure on a 2-D grid (``Sweep.grid_mean``)."""

from __future__ import annotations

import math

import numpy as np

from .._config import field_names
from .._io import write_csv_atomic

#: Per-save columns of ``to_frame`` / ``to_csv``, after the Config fields and ``POINT_COLUMNS``.
SERIES = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy", "test_loss", "test_acc",
          "test_loss_se", "test_acc_se", "p_norm", "w_dist", "query_norm", "mean_relevant_mass_clean",
          "mean_relevant_mass_noisy")
#: Per-point columns: the point's key, outcome and dynamics.
POINT_COLUMNS = ("key", "status", "dynamics", "regime")


def table(sweep) -> list[dict]:
    """One row per point: its config fields and summary figures."""
    return [{**p.config.to_dict(), **p.summary, "key": p.key} for p in sweep.points.values()]


def columns() -> list[str]:
    """Column names of the per-save table: Config fields, ``POINT_COLUMNS``, ``step``, ``SERIES``."""
    return [*field_names(), *POINT_COLUMNS, "step", *SERIES]


def _sorted_points(sweep) -> list:
    """The points ordered by their Config fields (numbers before text), then dynamics and key."""
    def order(value):
        return (0, value, "") if isinstance(value, (int, float)) and value is not None else (1, 0, str(value))

    return sorted(sweep.points.values(), key=lambda p: ([order(getattr(p.config, f)) for f in field_names()],
                                                          p.recording.get("dynamics", "gd"), p.key))


def _point_columns(sweep, point) -> dict:
    """One point's rows as columns (lists of equal length, one entry per save time)."""
    res = sweep.load(point.key)
    S = res.steps.size
    cols = {name: [value] * S for name, value in point.config.to_dict().items()}
    meta = {"key": point.key, "status": res.status, "dynamics": res.extra.get("dynamics", "gd"),
            "regime": point.summary.get("regime")}
    cols.update({name: [meta[name]] * S for name in POINT_COLUMNS})
    cols["step"] = res.steps.tolist()
    with np.errstate(invalid="ignore"):
        masses = {"mean_relevant_mass_clean": res.relevant_mass[:, ~res.noisy].mean(axis=1) if np.any(~res.noisy)
                  else np.full(S, np.nan),
                  "mean_relevant_mass_noisy": res.relevant_mass[:, res.noisy].mean(axis=1) if np.any(res.noisy)
                  else np.full(S, np.nan)}
    for name in SERIES:
        cols[name] = (masses[name] if name in masses else getattr(res, name)).astype(float).tolist()
    return cols


def to_frame(sweep):
    """The per-save table as a pandas DataFrame (``Sweep.to_frame``)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("Sweep.to_frame needs pandas: pip install 'attnsim[pandas]' (or pandas); "
                          "Sweep.to_csv(path) writes the same table without it") from None
    names = columns()
    data = {name: [] for name in names}
    for point in _sorted_points(sweep):
        for name, values in _point_columns(sweep, point).items():
            data[name].extend(values)
    return pd.DataFrame(data, columns=names)


def to_csv(sweep, path) -> int:
    """Write the per-save table to ``path`` atomically (``Sweep.to_csv``); the number of data rows."""
    names = columns()

    def cell(value):
        if value is None:
            return ""
        return repr(value) if isinstance(value, float) else value

    def rows():
        for point in _sorted_points(sweep):
            cols = _point_columns(sweep, point)
            for k in range(len(cols["step"])):
                yield [cell(cols[name][k]) for name in names]

    return write_csv_atomic(path, names, rows())


def grid_mean(points, metric: str, x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Average the summary figure ``metric`` of ``points`` on the grid of their ``x`` and ``y`` fields.

    Returns
    -------
    xs : ndarray, shape (nx,)
    ys : ndarray, shape (ny,)
    mean : ndarray, shape (ny, nx)
        NaN where no point (or only NaN values) exists.
    count : ndarray of int, shape (ny, nx)
    """
    xs = np.array(sorted({getattr(p.config, x) for p in points}), dtype=float)
    ys = np.array(sorted({getattr(p.config, y) for p in points}), dtype=float)
    total = np.zeros((ys.size, xs.size))
    count = np.zeros((ys.size, xs.size), dtype=np.int64)
    for p in points:
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
