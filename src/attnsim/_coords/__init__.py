"""The coordinate systems of a run: one family, one base class, one registry.

======================  =====================================  ======================
module                  members                                 what they carry
======================  =====================================  ======================
``base``                ``Coordinates`` (abstract), registry,   --
                        ``TrainableSet``
``optimizer``           ``Optimizer`` (GD, NGD, momentum)       --
``primal``              ``PrimalP``, ``PrimalPNu``,             ``W``, ``p``, ``nu``
                        ``PrimalWp``, ``PrimalWpNu``
``dual``                ``DualP``, ``DualPNu``, ``DualWp``,     ``N``-sized coefficients
                        ``DualWpNu``, and the shared set-ups
                        ``DualPSetup``, ``DualWpSetup``
``flow``                ``FlowP``, ``FlowPNu``, ``FlowWp``,     the dual set-ups, integrated
                        ``FlowWpNu``, ``FlowOptions``
``cost``                ``step_costs``, ``choose_engine``,      --
                        ``query_by_matvec``
======================  =====================================  ======================
"""

from . import dual, flow, primal  # noqa: F401 - importing the members registers them
from .base import REGISTRY, TRAINABLE_SETS, Coordinates, HeadObservation, Observation, TrainableSet
from .cost import choose_engine, step_costs
from .flow import FlowOptions, as_flow_options
from .optimizer import Optimizer

#: The dynamics a run can follow.
DYNAMICS = tuple(sorted({key[0] for key in REGISTRY}, key=("gd", "flow").index))


def make_coordinates(pb, *, dynamics: str, engine: str, trainable: str, kern, options=None,
                     optimizer: Optimizer | None = None) -> Coordinates:
    """The registered coordinate system for ``(dynamics, engine, trainable)``, set up on ``pb``: with
    ``options`` (``FlowOptions``) for the flow, ``optimizer`` (None: plain GD) for GD."""
    coords = REGISTRY[(dynamics, engine, trainable)](pb, kern, options if dynamics == "flow" else optimizer)
    coords.align_arrays()
    return coords


__all__ = ["DYNAMICS", "REGISTRY", "TRAINABLE_SETS", "Coordinates", "FlowOptions", "HeadObservation", "Observation",
           "Optimizer", "TrainableSet", "as_flow_options", "choose_engine", "make_coordinates", "step_costs"]
