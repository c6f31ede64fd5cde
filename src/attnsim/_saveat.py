"""When to record: a small frozen spec of save steps, separate from how to step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import ConfigError, check_int, check_steps

#: Default number of log-spaced save times.
DEFAULT_N_SAVES = 200


@dataclass(frozen=True, eq=False)
class SaveAt:
    """Strictly increasing int64 step indices at which a run is recorded.

    A value recorded at save step ``tau`` is the state after ``tau`` updates.
    Step 0 and the last step are always included.

    Parameters
    ----------
    steps : ndarray of int64, shape (n_saves,)

    Examples
    --------
    >>> SaveAt.log(1000, 5).steps
    array([   0,    1,   10,  100, 1000])
    >>> SaveAt.linear(100, 5).steps
    array([  0,  25,  50,  75, 100])
    """

    steps: np.ndarray

    def __post_init__(self):
        steps = np.asarray(self.steps)
        if steps.ndim != 1 or steps.size == 0:
            raise ConfigError(f"save_at must be a non-empty 1-D sequence of steps; got shape {steps.shape}; "
                              "pass e.g. [0, 10, 100] or SaveAt.log(steps)")
        if steps.dtype.kind not in "iuf":
            raise ConfigError(f"save_at must hold whole step numbers; got {steps[:5].tolist()} "
                              f"(dtype {steps.dtype}); pass integers")
        if not np.issubdtype(steps.dtype, np.integer):
            if not np.all(np.isfinite(steps)) or np.any(steps != np.round(steps)):
                raise ConfigError(f"save_at must hold whole step numbers; got {steps[:5].tolist()}; pass integers")
            if np.any(np.abs(steps) > 2.0 ** 62):
                raise ConfigError(f"save_at steps must be below 2**62; got {steps.max():g}")
        steps = steps.astype(np.int64)
        if np.any(np.diff(steps) <= 0):
            bad = int(np.argmax(np.diff(steps) <= 0))
            raise ConfigError(
                "save_at must be strictly increasing; got "
                f"{steps[bad]} then {steps[bad + 1]} at positions {bad}, {bad + 1}; sort it and drop repeats"
            )
        if steps[0] < 0:
            raise ConfigError(f"save_at steps must be >= 0; got {steps[0]}; drop the negative steps")
        steps.setflags(write=False)
        object.__setattr__(self, "steps", steps)

    @property
    def last(self) -> int:
        return int(self.steps[-1])

    def __len__(self):
        return self.steps.size

    def __repr__(self):
        return f"SaveAt(n_saves={len(self)}, first={self.steps[:3].tolist()}, last={self.last})"

    @classmethod
    def log(cls, steps: int, n_saves: int = DEFAULT_N_SAVES) -> SaveAt:
        """About ``n_saves`` log-spaced steps from 0 to ``steps`` (duplicates dropped)."""
        return cls._log(check_steps(steps), check_int("n_saves", n_saves, minimum=2))

    @classmethod
    def _log(cls, steps: int, n_saves: int) -> SaveAt:
        """``log`` for arguments already validated."""
        grid = np.unique(np.round(np.logspace(0.0, np.log10(steps), n_saves - 1)).astype(np.int64))
        return cls(np.concatenate(([0], grid[grid > 0])))

    @classmethod
    def linear(cls, steps: int, n_saves: int = DEFAULT_N_SAVES) -> SaveAt:
        """``n_saves`` evenly spaced steps from 0 to ``steps`` (duplicates dropped)."""
        steps = check_steps(steps)
        n_saves = check_int("n_saves", n_saves, minimum=2)
        return cls(np.unique(np.round(np.linspace(0, steps, n_saves)).astype(np.int64)))

    @classmethod
    def explicit(cls, steps_seq, steps: int) -> SaveAt:
        """The given steps, with 0 and ``steps`` added; all must lie in [0, steps]."""
        steps = check_steps(steps)
        arr = np.asarray(steps_seq)
        spec = cls(arr)  # validates dtype and ordering
        if spec.steps[0] < 0 or spec.last > steps:
            raise ConfigError(
                f"save_at steps must lie in [0, steps={steps}]; got range "
                f"[{spec.steps[0]}, {spec.last}]; drop the out-of-range steps or raise steps"
            )
        return cls(np.unique(np.concatenate(([0], spec.steps, [steps]))))


def as_saveat(save_at, steps: int) -> SaveAt:
    """Turn ``None`` (log-spaced default), a ``SaveAt`` or a sequence into a ``SaveAt`` for ``steps``.

    Raises
    ------
    ConfigError
        If a given ``SaveAt`` does not end at ``steps`` or does not start at 0.
    """
    if save_at is None:
        return SaveAt._log(steps, DEFAULT_N_SAVES)
    if isinstance(save_at, SaveAt):
        if save_at.steps[0] != 0 or save_at.last != steps:
            raise ConfigError(
                f"save_at must run from step 0 to steps={steps}; got [{save_at.steps[0]}, {save_at.last}]; "
                "build it with SaveAt.log(steps), SaveAt.linear(steps) or SaveAt.explicit(seq, steps)"
            )
        return save_at
    return SaveAt.explicit(save_at, steps)
