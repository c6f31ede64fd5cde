"""Checks applied once, at the boundary, with messages that name the field, the rule and the value."""

from __future__ import annotations

import numbers

import numpy as np


class ConfigError(ValueError):
    """A user-supplied value breaks a documented rule. The message names field, rule and value."""


def check_int(name, value, *, minimum=None, maximum=None):
    """Return ``value`` as int, or raise ConfigError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and np.isfinite(value) and float(value) == int(value):
            value = int(value)
        else:
            raise ConfigError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}; got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_float(name, value, *, positive=False, nonnegative=False, lo=None, hi=None, hi_open=False):
    """Return ``value`` as a finite float, or raise ConfigError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ConfigError(f"{name} must be finite; got {value}")
    if positive and not value > 0:
        raise ConfigError(f"{name} must be > 0; got {value}")
    if nonnegative and not value >= 0:
        raise ConfigError(f"{name} must be >= 0; got {value}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be >= {lo}; got {value}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        rule = f"< {hi}" if hi_open else f"<= {hi}"
        raise ConfigError(f"{name} must be {rule}; got {value}")
    return value


def check_choice(name, value, allowed):
    """Return ``value`` if it is one of ``allowed``, else raise ConfigError listing them."""
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def check_array(name, value, *, ndim=None, shape=None):
    """Return ``value`` as a C-contiguous float64 copy with finite entries and the given shape.

    ``shape`` may hold ``None`` for a free axis.
    """
    try:
        arr = np.array(value, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a real array; got {type(value).__name__} ({exc})") from None
    if ndim is not None and arr.ndim != ndim:
        raise ConfigError(f"{name} must be {ndim}-dimensional; got shape {arr.shape}")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape)):
            if want is not None and want != got:
                raise ConfigError(
                    f"{name} must have shape {tuple('*' if s is None else s for s in shape)}; "
                    f"got {arr.shape} (axis {axis} is {got}, expected {want})"
                )
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ConfigError(f"{name} must be finite; got {arr[tuple(bad)]} at index {tuple(int(i) for i in bad)}")
    return arr


def check_labels(name, value, n):
    """Return labels as a float64 array of +-1 of length ``n``."""
    arr = check_array(name, value, ndim=1, shape=(n,))
    bad = ~np.isin(arr, (-1.0, 1.0))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ConfigError(f"{name} must hold only -1 and +1; got {arr[i]} at index {i}")
    return arr
