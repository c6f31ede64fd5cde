"""A sweep point's key: a hash of its ``Config`` and of how it is recorded.

The key names the point's file (``points/<key>.npz``), so it must never change for a point
that a folder already holds: a field added to ``Config`` later is left out of the key at
the value every earlier run had (``_LATE_FIELDS``), and GD points keep the recording of
folders written before the flow existed. ``tests/test_sweep.py`` pins a few keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from .._config import Config
from .._coords.flow import FlowOptions, as_flow_options

#: Config fields added after the first sweeps were written, with the value every earlier run had:
#: left out of the key at that value, so that existing folders keep their keys.
_LATE_FIELDS = {"test_metrics": "sample", "optimizer": "gd", "ngd_norm": "joint", "momentum": None, "w0": "random",
                "head_init": "official", "sigma_nu": 0.0, "signal_noise": "noisy", "labels": "balanced",
                "space": "explicit"}

#: Reruns a flow point gets by default (``sweep(flow_retries=...)``).
DEFAULT_FLOW_RETRIES = 1


def point_key(config: Config, save: dict) -> str:
    """Stable 16-hex-digit key of a grid point: hash of its config and recording options.

    ``save`` holds ``n_saves``, ``probes``, ``keep_params`` and, for the flow, ``dynamics``
    and the ``flow`` options (``recording``), so a flow run and a GD run of one config are
    different points.
    """
    cfg = {k: v for k, v in config.to_dict().items() if not (k in _LATE_FIELDS and v == _LATE_FIELDS[k])}
    text = json.dumps({"config": cfg, "save": save}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recording(n_saves: int, probes, keep_params: bool, dynamics: str = "gd", flow=None,
              flow_retries: int = DEFAULT_FLOW_RETRIES) -> dict:
    """How a sweep point is recorded (part of its key and of its index entry).

    GD points have the keys of folders written before the flow existed; flow points add
    ``dynamics``, every ``FlowOptions`` field and ``flow_retries``.
    """
    save = {"n_saves": int(n_saves), "probes": probes, "keep_params": bool(keep_params)}
    if dynamics != "gd":
        save.update(dynamics=dynamics, flow=dataclasses.asdict(as_flow_options(flow)), flow_retries=int(flow_retries))
    return save


def recording_of(result) -> dict:
    """What a Result file says about how it was recorded (for re-indexing a file the index lost)."""
    out = {"n_saves": int(result.steps.size), "keep_params": result._raw("W") is not None}   # without rebuilding W
    if result.extra.get("dynamics", "gd") != "gd":
        out.update(dynamics=result.extra["dynamics"],
                   flow={k: result.extra[k] for k in (f.name for f in dataclasses.fields(FlowOptions))
                         if k in result.extra})
    return out
