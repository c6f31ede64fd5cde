"""How ``dynamics="gd"`` moves: the optimiser of a run, as the coordinate systems hand it to the kernels.

The rules themselves are compiled code (``_kernels.gd.RULES``: GD, normalised GD, heavy-ball
momentum); this is the validated record a run carries (``Optimizer``), and the only place that
turns it into the kernels' ``(rule, param)`` and the run's velocity state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernels.gd import RULES
from .._validation import ConfigError, check_float


@dataclass(frozen=True)
class Optimizer:
    """The optimiser of a GD run (checked at the boundary: ``Config``, ``train``).

    Parameters
    ----------
    name : {"gd", "ngd", "momentum"}
    ngd_norm : {"joint", "block"}
        ``"ngd"``: one norm over all trained blocks, or one per block.
    momentum : float or None
        ``"momentum"``: beta in [0, 1), ``vel <- beta vel + grad``, ``theta <- theta - lr vel``.
    """

    name: str = "gd"
    ngd_norm: str = "joint"
    momentum: float | None = None

    def __post_init__(self):
        """The rules between the fields (each field's own vocabulary is checked where it is passed)."""
        if self.name != "ngd" and self.ngd_norm != "joint":
            raise ConfigError(f"ngd_norm applies only with optimizer='ngd'; got ngd_norm={self.ngd_norm!r} with "
                              f"optimizer={self.name!r}; drop ngd_norm or set optimizer='ngd'")
        if self.name != "momentum" and self.momentum is not None:
            raise ConfigError(f"momentum applies only with optimizer='momentum'; got momentum={self.momentum!r} "
                              f"with optimizer={self.name!r}; drop momentum or set optimizer='momentum'")
        if self.name == "momentum":
            if self.momentum is None:
                raise ConfigError("optimizer='momentum' needs momentum=beta in [0, 1) (vel <- beta vel + grad, "
                                  "theta <- theta - lr vel); got momentum=None; pass e.g. momentum=0.9")
            object.__setattr__(self, "momentum", check_float(
                "momentum", self.momentum, nonnegative=True, hi=1.0, hi_open=True,
                hint="beta lies in [0, 1) (PyTorch's SGD convention), e.g. momentum=0.9"))

    @property
    def rule(self):
        """The kernels' ``Rule`` (code, whether it reads the block norms, whether it carries a velocity)."""
        return RULES[self.name]

    @property
    def param(self) -> float:
        """The rule's parameter in the kernels: NGD's per-block flag, momentum's beta, else 0."""
        if self.name == "ngd":
            return 1.0 if self.ngd_norm == "block" else 0.0
        return float(self.momentum) if self.name == "momentum" else 0.0

    def velocity(self, **shapes) -> dict:
        """Zero velocities of the given shapes (state of the run), none unless the rule carries them."""
        return {k: np.zeros(shape) for k, shape in shapes.items()} if self.rule.velocity else {}

    def extra(self) -> dict:
        """JSON-serialisable record for ``Result.extra`` (nothing for plain GD)."""
        if self.name == "ngd":
            return {"optimizer": "ngd", "ngd_norm": self.ngd_norm}
        if self.name == "momentum":
            return {"optimizer": "momentum", "momentum": float(self.momentum)}
        return {}
