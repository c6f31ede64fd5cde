"""The coordinate systems of a run: one family, one base class, one registry.

======================  =====================================  ======================
module                  members                                 what they carry
======================  =====================================  ======================
``base``                ``Coordinates`` (abstract), registry    --
``primal``              ``PrimalP``, ``PrimalWp``               ``W``, ``p``
``dual``                ``DualP``, ``DualWp`` (GD), and the     ``N``-sized coefficients
                        shared set-ups ``DualPSetup``,
                        ``DualWpSetup``
``head``                ``PrimalPNu``, ``PrimalWpNu``,          the above and ``nu``
                        ``DualPNu``, ``DualWpNu``               (or its ``beta``)
``ngd``                   ``NgdPrimalP`` ... ``NgdDualWpNu``      as their GD counterparts
``flow``                ``FlowP``, ``FlowPNu``, ``FlowWp``,     the dual set-ups, integrated
                        ``FlowWpNu``, ``FlowOptions``
``cost``                ``step_costs``, ``choose_engine``       --
======================  =====================================  ======================
"""

from . import dual, flow, head, ngd, primal  # noqa: F401 - importing the members registers them
from .base import REGISTRY, Coordinates, HeadObservation, Observation
from .cost import choose_engine, step_costs
from .flow import FlowOptions, as_flow_options

#: The dynamics a run can follow.
DYNAMICS = tuple(sorted({key[0] for key in REGISTRY}, key=("gd", "flow").index))


def make_coordinates(pb, *, dynamics: str, engine: str, trainable: str, kern, options=None,
                     optimizer: str = "gd") -> Coordinates:
    """The registered coordinate system for ``(dynamics, engine, trainable, optimizer)``, set up on ``pb``."""
    return REGISTRY[(dynamics, engine, trainable, optimizer)](pb, kern, options)


__all__ = ["DYNAMICS", "REGISTRY", "Coordinates", "FlowOptions", "HeadObservation", "Observation", "as_flow_options",
           "choose_engine", "make_coordinates", "step_costs"]
