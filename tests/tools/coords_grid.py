"""The engine x trainable x dynamics x optimizer grids of the tests, read from the coordinate
family's registry.

A new coordinate system registered in ``attnsim._coords`` joins every test parametrised by
these lists without a test file being edited.
"""

from attnsim._coords import REGISTRY

#: (engine, trainable) of every plain-GD member
GD = sorted((engine, trainable) for dynamics, engine, trainable, optimizer in REGISTRY
            if dynamics == "gd" and optimizer == "gd")
ENGINES = sorted({engine for engine, _ in GD})
TRAINABLE = sorted({trainable for _, trainable in GD})
#: (engine, trainable) of every normalised-GD member
NGD = sorted((engine, trainable) for dynamics, engine, trainable, optimizer in REGISTRY if optimizer == "ngd")
#: trainable sets the flow covers
FLOW_TRAINABLE = sorted(trainable for dynamics, _, trainable, _ in REGISTRY if dynamics == "flow")
