"""The numerical layer: numba kernels on plain arrays, each beside its slow NumPy twin.

- ``gd``: the GD loops (primal and dual, p and W,p), ``loss_and_grads`` and the
  save-time sweeps; ``gd_twins``: their NumPy twins.
- ``flow``: the gradient-flow integrator (DOP853 in dual coordinates), its exact-GD
  start and Jacobian estimates; ``flow_twins``: NumPy twins of its pieces.
- ``dop853``: the integrator's tableau and controller constants, as data.

Nothing here knows about configs, results or files (DESIGN.md §6).
"""

from . import gd, gd_twins

#: The kernel module behind each ``backend`` of ``train``.
BACKENDS = {"numba": gd, "numpy": gd_twins}
