"""The numerical layer: numba kernels on plain arrays, each beside its slow NumPy twin.

- ``core``: the coefficient core (scores -> attention, outputs, ``c``, ``h``, 𝔖) every kernel
  calls, its JVP, and the sweep primitives;
- ``jit``: the decorator of every kernel (``njit`` with NumPy's error model, so that loops that
  divide vectorise);
- ``exp``: glibc's ``exp`` written out so that it vectorises, with glibc's bits; ``log1p`` and
  ``erfc`` likewise glibc's (the population kernel's logistic loss and normal CDF);
- ``gd``: one step kernel per parametrisation (primal/dual x p, W,p, each with or without the
  head), the optimisers' rules (``RULES``), ``loss_and_grads`` and the save-time sweeps;
  ``gd_twins``: the NumPy twins of ``core`` and ``gd``;
- ``flow``: the gradient-flow integrator (DOP853 in dual coordinates) and its Jacobian
  estimates; ``flow_twins``: their twins;
- ``dop853``: the integrator's tableau and controller constants, as data;
- ``population``: the population test metrics' quadrature; ``population_twins``: its twin.

Nothing here knows about configs, results or files (DESIGN.md §6).
"""

from . import gd, gd_twins

#: The kernel module behind each ``backend`` of ``train``.
BACKENDS = {"numba": gd, "numpy": gd_twins}
