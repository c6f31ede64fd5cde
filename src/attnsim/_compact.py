"""Final parameters held as what determines them: a config-driven run in dual coordinates.

In dual coordinates (DESIGN.md §4, §8) the iterate is O(N^2) numbers: ``p = Q b``,
``W = W0 + Q M X`` with ``Q = [p0, W0 X^T]``, ``nu = nu0 + X^T beta``; and ``X``, ``W0``,
``p0``, ``nu0`` are drawn from the config's seeds (``make_data``, ``init_params``). So the
``Result`` of a run prepared from a ``Config`` (``simulate``, ``prepare_run``, the CLI, sweeps,
checkpoints) keeps that final state and a digest of the inputs, not the d x d ``W``: a file is
small whatever d is. On first access, ``Result.W`` (``p``, ``nu``) draws the data and the
initialisation again, checks them against the digest, sets them up in the same coordinates,
loads the state and reads it out with the same ``final_params`` / ``final_nu`` the run would
have called: the same arithmetic on the same numbers, so the same bits (``tests/test_compact.py``;
and across processes: the large-noise run's 4500 x 4500 W rebuilt from a compact file equals the
one an earlier attnsim stored, bit for bit). BLAS products round according to how they are split
among threads, so under another BLAS thread count (``OPENBLAS_NUM_THREADS``, ...) the rebuilt
arrays may differ from the run's in the last bits: at d = 4500, 1 thread against 2, up to 2 ulp of
``max|W|`` (16 ulp of ``max|W - W0|``) and 4 ulp of ``max|p|``, as a rerun of the run itself would
(checkpoints note the same). The environment is recorded, and a rebuild in another one warns.
"""

from __future__ import annotations

import enum
import hashlib
import warnings
from dataclasses import dataclass

import numpy as np

from ._coords.base import TRAINABLE_SETS
from ._config import Config
from ._io import ResultFileError

class _Marker(enum.Enum):
    REBUILD = "rebuilt from the final dual state on first access"


#: What a compact ``Result`` holds in place of ``W``, ``p``, ``nu`` until they are read (an enum
#: member, so that it stays itself through pickling to and from sweep workers).
REBUILD = _Marker.REBUILD

#: Entries of ``W0`` hashed at most (a strided sample): all of them come from one random stream,
#: so a generator that draws other numbers changes the sample; hashing 3.2 GB at d = 20000 would
#: cost seconds.
_W0_SAMPLE = 2 ** 20


def inputs_digest(pb) -> str:
    """SHA-256 of what the final parameters depend on besides the state: ``X``, ``W0`` (a strided
    sample of at most ``_W0_SAMPLE`` entries; ``I`` is recorded as such), ``p0`` and ``nu0``."""
    h = hashlib.sha256()
    W0 = np.array([]) if pb.W0 is None else pb.W0.reshape(-1)[::max(1, pb.W0.size // _W0_SAMPLE)]
    for name, arr in (("X", pb.X), ("W0", W0), ("p0", pb.p0), ("nu0", pb.nu)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.data)            # the buffer itself: tobytes() would copy W0
    return h.hexdigest()


@dataclass(frozen=True, eq=False)
class CompactParams:
    """The final state of a dual run prepared from ``config``, from which ``W``, ``p`` and ``nu`` are rebuilt.

    Attributes
    ----------
    config : Config
        The run's config; its seeds draw ``X``, ``W0``, ``p0``, ``nu0`` again.
    state : dict of str to ndarray
        ``Coordinates.state`` at the end (O(N^2) numbers; e.g. ``b``, ``MT`` and the pending block).
    dynamics, backend : str
    flow : dict or None
        ``Coordinates.options_dict()``: the flow's options (its state layout depends on them).
    digest : str
        ``inputs_digest`` of the run's inputs.
    threads : dict
        ``blas_threads()`` where the Result was made (what decides the rounding of BLAS products).
    origin : str
        The file it was read from ("" in memory), for messages.
    """

    config: Config
    state: dict
    dynamics: str
    backend: str
    flow: dict | None
    digest: str
    threads: dict
    origin: str = ""

    @classmethod
    def of_run(cls, run, config: Config) -> CompactParams:
        from ._checkpoint import blas_threads

        coords = run.coords
        return cls(config=config, state={k: v.copy() for k, v in coords.state.items()}, dynamics=coords.dynamics,
                   backend=coords.backend, flow=coords.options_dict(), digest=inputs_digest(run.pb),
                   threads=blas_threads())

    # ------------------------------------------------------------------ files
    def to_file(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` for ``Result.save``: the state as ``params/<name>``, the rest as JSON."""
        arrays = {f"params/{k}": v for k, v in self.state.items()}
        meta = {"form": "dual state", "dynamics": self.dynamics, "backend": self.backend, "flow": self.flow,
                "digest": self.digest, "threads": self.threads}
        return arrays, meta

    @classmethod
    def from_file(cls, arrays: dict, meta: dict, config: Config, path) -> CompactParams:
        """The inverse of ``to_file``; pops the ``params/`` arrays."""
        if config is None or meta.get("form") != "dual state":
            raise ResultFileError(f"{path}: final parameters stored as {meta.get('form')!r} without a config; "
                                  "the file is damaged or of another attnsim version")
        state = {key.removeprefix("params/"): arrays.pop(key) for key in [k for k in arrays if k.startswith("params/")]}
        return cls(config=config, state=state, dynamics=str(meta["dynamics"]), backend=str(meta["backend"]),
                   flow=meta.get("flow"), digest=str(meta["digest"]), threads=dict(meta.get("threads") or {}),
                   origin=str(path))

    # ------------------------------------------------------------------ rebuild
    def rebuild(self, with_W: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(W, p, nu)`` at the stored state; ``W`` None unless ``with_W`` and trained.

        Raises
        ------
        MemoryBudgetError
            If the data, ``W0`` and the set-up would not fit in the memory available.
        ResultFileError
            If the data drawn again differ from the run's (another numpy or attnsim version), or
            the state does not fit this attnsim's coordinates.
        """
        from ._checkpoint import blas_threads
        from ._experiment import prepare_run, run_memory_check

        where = f"{self.origin}: " if self.origin else ""
        config = self.config.replace(n_test=0)       # the test set plays no part in W, p, nu
        final_W = with_W and TRAINABLE_SETS[config.trainable].trains_W
        run_memory_check(config, engine="dual", n_saves=2, probes=None, final_W=final_W,
                         what=f"rebuilding Result.{'W' if final_W else 'p'} (d={config.d})")
        run = prepare_run(config, [0, config.steps], engine="dual", backend=self.backend, dynamics=self.dynamics,
                          flow=self.flow)
        if inputs_digest(run.pb) != self.digest:
            raise ResultFileError(
                f"{where}the data and initialisation drawn again from the config differ from those the run used; "
                "W, p and nu cannot be rebuilt: load the file with the attnsim and numpy versions that wrote it")
        state = run.coords.state
        if set(state) != set(self.state) or any(state[k].shape != self.state[k].shape
                                                or state[k].dtype != self.state[k].dtype for k in state):
            raise ResultFileError(f"{where}the stored dual state {sorted(self.state)} does not fit this attnsim's "
                                  f"coordinates {sorted(state)}; load the file with the attnsim version that wrote it")
        for k in state:
            state[k][...] = self.state[k]
        now = blas_threads()
        if self.threads and now != self.threads:
            diffs = "; ".join(f"{k}={self.threads.get(k)!r} then, {now.get(k)!r} now" for k in now
                              if self.threads.get(k) != now.get(k))
            warnings.warn(f"{where}rebuilding the final parameters in another BLAS environment ({diffs}): they may "
                          "differ from the run's in the last bits; set the same thread variables to rebuild them "
                          "bit for bit", UserWarning, stacklevel=4)
        W, p = run.coords.final_params(with_W=final_W)
        return W, p, run.coords.final_nu()
