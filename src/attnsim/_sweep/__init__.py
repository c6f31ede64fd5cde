"""Resumable, file-backed sweeps over Config fields and seeds, on local cores or a cluster.

A sweep folder holds one ``Result`` file per grid point and a small index (``folder``)::

    folder/
        sweep.json          what was asked for (base config, grids, save times), one entry per call
        index.jsonl         one JSON line per finished point: key, config, file, summary figures
        points/<key>.npz    the Result of that point (``Result.save``, written atomically)

A point's key is a hash of its full ``Config`` and of how it is recorded (save times,
probes, whether the final ``W`` is kept; ``keys``), so rerunning a sweep, or a larger grid
that contains it, skips every point whose file exists. The ``.npz`` files are the truth; the
index is a cache that ``Sweep.open`` repairs from them if a run was killed mid-write.

One module per concern: ``grid`` (the points and their command-line spelling), ``keys``
(point keys and recording options), ``point`` (what a worker runs for one point and its
summary), ``folder`` (the folder, its index and ``Sweep``), ``tables`` (the folder as
tables), ``driver`` (``sweep``, on the pool of ``_pool``).
"""

from .driver import sweep
from .folder import FORMAT_VERSION, HEADER, INDEX, POINTS, Sweep, SweepPoint
from .grid import grid_configs, parse_grid_arg
from .keys import DEFAULT_FLOW_RETRIES, point_key, recording
from .point import RETRY_FACTOR, run_point

__all__ = ["DEFAULT_FLOW_RETRIES", "FORMAT_VERSION", "HEADER", "INDEX", "POINTS", "RETRY_FACTOR", "Sweep",
           "SweepPoint", "grid_configs", "parse_grid_arg", "point_key", "recording", "run_point", "sweep"]
