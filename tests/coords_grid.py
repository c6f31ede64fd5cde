"""The engine x trainable x dynamics grids of the tests, read from the coordinate family's registry.

A new coordinate system registered in ``attnsim._coords`` joins every test parametrised by
these lists without a test file being edited.
"""

from attnsim._coords import REGISTRY

#: (engine, trainable) of every GD member
GD = sorted((engine, trainable) for dynamics, engine, trainable in REGISTRY if dynamics == "gd")
ENGINES = sorted({engine for engine, _ in GD})
TRAINABLE = sorted({trainable for _, trainable in GD})
#: trainable sets the flow covers
FLOW_TRAINABLE = sorted(trainable for dynamics, _, trainable in REGISTRY if dynamics == "flow")
