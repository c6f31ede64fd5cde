"""The engine x trainable x dynamics x optimizer grids of the tests, read from the coordinate
family's registry and the optimisers' rules.

A new coordinate system registered in ``attnsim._coords`` (or a new rule in ``_kernels.gd.RULES``)
joins every test parametrised by these lists without a test file being edited.
"""

from attnsim._coords import REGISTRY
from attnsim._kernels.gd import RULES

#: (engine, trainable) of every GD member (each runs every optimiser)
GD = sorted((engine, trainable) for dynamics, engine, trainable in REGISTRY if dynamics == "gd")
ENGINES = sorted({engine for engine, _ in GD})
TRAINABLE = sorted({trainable for _, trainable in GD})
#: the optimisers
OPTIMIZERS = sorted(RULES)
#: (engine, trainable) of every normalised-GD member
NGD = GD
#: trainable sets the flow covers
FLOW_TRAINABLE = sorted(trainable for dynamics, _, trainable in REGISTRY if dynamics == "flow")
