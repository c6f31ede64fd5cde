"""The points of a sweep: a Cartesian grid over ``Config`` fields, and its command-line spelling."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields

import numpy as np

from .._config import Config, field_names, field_type, parse_field
from .._validation import ConfigError


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
        changes = dict(zip(keys, (plain(v) for v in combo), strict=True))
        try:
            out.append(base.replace(**changes))
        except ConfigError as exc:
            raise ConfigError(f"grid point {changes}: {exc}") from None
    return out


def plain(value):
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
