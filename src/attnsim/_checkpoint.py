"""Checkpoints: the complete state of a run in progress, written atomically, restored exactly.

A checkpoint holds ``Run.state_dict()`` (the iterate in whichever coordinates the
run uses, the step counters, the recorder buffers and the save steps) plus the
``Config`` as JSON, the engine and backend, and a fingerprint of the data. The
data themselves are not stored: ``restore`` regenerates them from the config's
seeds and refuses to continue if their fingerprint differs (another numpy or
attnsim version drawing other numbers). Continuing from a checkpoint gives the
same bits as the uninterrupted run, because a GD step does not depend on how
the steps are split into chunks.

Examples
--------
>>> import os, tempfile
>>> from attnsim import Config, SaveAt, prepare_run
>>> cfg = Config(d=20, n_train=6, T=4, n_test=5, steps=50)
>>> run = prepare_run(cfg, SaveAt.log(50, 10))
>>> while run.step < 20:
...     _ = run.advance()
>>> path = os.path.join(tempfile.mkdtemp(), "ck.npz")
>>> save_checkpoint(path, run, cfg)
>>> resumed = restore(path)
>>> resumed.step == run.step
True
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._config import Config
from ._io import ResultFileError, read_npz, write_npz_atomic
from ._result import FINISHED, INTERRUPTED
from ._run import Run
from ._saveat import SaveAt
from ._validation import ConfigError, check_float
from ._version import __version__

CHECKPOINT_KIND = "attnsim.Checkpoint"

#: Version of the checkpoint layout; ``load_checkpoint`` refuses others.
CHECKPOINT_VERSION = 1


def fingerprint(run) -> str:
    """SHA-256 of every array that defines the problem of ``run`` (data, initialisation, lr).

    Returns
    -------
    str
        64 hex digits; equal fingerprints mean bit-identical problems.
    """
    pb = run.pb
    h = hashlib.sha256()
    # None: the identity; an implicit space's W0 is an operator: hash what the run has seen of it
    W0 = np.array([]) if pb.W0 is None else pb.keys_of(pb.X) if pb.implicit else pb.W0
    for name, arr in (("X", pb.X), ("y", pb.y), ("W0", W0), ("p0", pb.p0), ("nu", pb.nu), ("Xt", pb.Xt),
                      ("yt", pb.yt), ("relevant", pb.relevant), ("probes", pb.probes),
                      ("lr", np.array([pb.lr])), ("save_steps", run.save_steps)):
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def save_checkpoint(path, run, config: Config, *, extra: dict | None = None, data_fingerprint: str | None = None):
    """Write the complete state of ``run`` to ``path`` atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : str or os.PathLike
    run : Run
        Built by ``attnsim.prepare_run(config, ...)``.
    config : Config
        The configuration the run was prepared from (its data are regenerated on restore).
    extra : dict, optional
        JSON-serialisable bookkeeping kept with the checkpoint (the CLI stores its output path).
    data_fingerprint : str, optional
        ``fingerprint(run)`` if already known (it hashes the whole data set).
    """
    arrays = run.state_dict()
    arrays["probes"] = run.pb.probes
    meta = {
        "format_version": CHECKPOINT_VERSION,
        "kind": CHECKPOINT_KIND,
        "config": config.to_dict(),
        "engine": run.coords.engine,
        "trainable": run.coords.trainable,
        "dynamics": run.coords.dynamics,
        "flow": run.coords.options_dict(),
        "max_margin": (run.max_margin if run.max_margin is None or isinstance(run.max_margin, str)
                       else [int(t) for t in run.max_margin]),
        "backend": run.coords.backend,
        "fingerprint": data_fingerprint or fingerprint(run),
        "step": int(run.step),
        "total_steps": int(run.total_steps),
        "status": run.status,
        "message": run.message,
        "wall_time": float(run.wall_time),
        "compile_time": float(run.compile_time),
        "versions": _versions(),
        "threads": blas_threads(),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "extra": dict(extra or {}),
    }
    write_npz_atomic(path, arrays, meta)


class CheckpointWarning(UserWarning):
    """Resuming in an environment that may change the last bits of the arithmetic."""


_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def blas_threads() -> dict:
    """What decides the BLAS thread count: its environment variables and the CPU count.

    BLAS products (the Gram matrices precomputed by the engine) can round differently with
    another thread count, so a resume is bit-identical only where these agree.
    """
    return {**{k: os.environ.get(k) for k in _THREAD_VARS}, "cpu_count": os.cpu_count()}


def _versions() -> dict:
    import numba

    return {"attnsim": __version__, "numpy": np.__version__, "numba": numba.__version__}


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checkpoint file's contents, checked for consistency but not yet bound to data.

    Attributes
    ----------
    path : str
    config : Config
    engine : str
        ``"primal"`` or ``"dual"`` (already resolved from ``"auto"``).
    backend : str
    fingerprint : str
    state : dict of str to ndarray
        ``Run.state_dict()`` at the time of writing.
    probes : ndarray, shape (k, d)
    step, total_steps : int
    status, message : str
    wall_time, compile_time : float
    extra : dict
    """

    path: str
    config: Config
    engine: str
    backend: str
    fingerprint: str
    state: dict
    probes: np.ndarray
    step: int
    total_steps: int
    status: str
    message: str
    wall_time: float
    compile_time: float
    extra: dict = field(default_factory=dict)
    threads: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    dynamics: str = "gd"
    flow: dict | None = None
    max_margin: str | list | None = None

    @property
    def save_steps(self) -> np.ndarray:
        return self.state["save_steps"]


def load_checkpoint(path) -> Checkpoint:
    """Read and check a checkpoint written by ``save_checkpoint`` (``allow_pickle=False``).

    Raises
    ------
    ResultFileError
        If the file is missing, truncated, corrupted, of another kind or format version,
        or its records contradict each other.
    """
    path = str(path)
    arrays, meta = read_npz(path, CHECKPOINT_KIND, version=CHECKPOINT_VERSION)
    hint = "; the file is damaged: resume from another checkpoint or start the run again"
    try:
        config = Config.from_dict(meta["config"])
        engine, backend, fp = str(meta["engine"]), str(meta["backend"]), str(meta["fingerprint"])
        step, total = int(meta["step"]), int(meta["total_steps"])
        status, message = str(meta["status"]), str(meta["message"])
        wall, compile_time = float(meta["wall_time"]), float(meta["compile_time"])
        extra = dict(meta.get("extra") or {})
        threads, versions = dict(meta.get("threads") or {}), dict(meta.get("versions") or {})
        dynamics, flow = str(meta.get("dynamics", "gd")), meta.get("flow")
        max_margin = meta.get("max_margin")     # absent from checkpoints written before it existed
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ResultFileError(f"{path}: checkpoint metadata is incomplete or invalid ({type(exc).__name__}: "
                              f"{exc}){hint}") from None
    if engine not in ("primal", "dual") or backend not in ("numba", "numpy"):
        raise ResultFileError(f"{path}: unknown engine {engine!r} or backend {backend!r}{hint}")
    for key in ("counters", "save_steps", "frak_sum", "probes"):
        if key not in arrays:
            raise ResultFileError(f"{path}: checkpoint lacks the array {key!r}{hint}")
    counters, save_steps = arrays["counters"], arrays["save_steps"]
    if counters.shape != (3,) or counters.dtype.kind != "i" or save_steps.ndim != 1 or save_steps.dtype.kind != "i":
        raise ResultFileError(f"{path}: checkpoint counters or save steps have the wrong type or shape{hint}")
    if (int(counters[0]) != step or save_steps.size == 0 or int(save_steps[-1]) != total
            or int(save_steps[-1]) != config.steps or not 0 <= step <= total
            or not 0 <= int(counters[2]) <= int(counters[1]) <= save_steps.size):
        raise ResultFileError(f"{path}: checkpoint counters {counters.tolist()} contradict its metadata "
                              f"(step {step} of {total}, config.steps={config.steps}){hint}")
    probes = arrays.pop("probes")
    return Checkpoint(path=path, config=config, engine=engine, backend=backend, fingerprint=fp, state=arrays,
                      probes=probes, step=step, total_steps=total, status=status, message=message,
                      wall_time=wall, compile_time=compile_time, extra=extra, threads=threads, versions=versions,
                      dynamics=dynamics, flow=flow, max_margin=max_margin)


def restore(checkpoint) -> Run:
    """Rebuild the run a checkpoint was written from, at the step it was written.

    The data and initialisation are regenerated from the stored config's seeds and
    compared with the stored fingerprint; then the saved state is loaded.

    Parameters
    ----------
    checkpoint : str, os.PathLike or Checkpoint

    Returns
    -------
    Run
        Ready for ``warm_up()`` and ``run()``; an interrupted run is marked running again.

    Raises
    ------
    ResultFileError
        If the file is unreadable, or the regenerated data differ from the checkpoint's.
    """
    from ._experiment import prepare_run

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    kwargs = {"probes": ck.probes}     # the probe directions as recorded, whatever produced them
    if ck.dynamics == "flow":
        kwargs.update(dynamics="flow", flow=ck.flow)
    if ck.max_margin is not None:
        kwargs["max_margin"] = ck.max_margin if isinstance(ck.max_margin, str) else np.asarray(ck.max_margin)
    run = prepare_run(ck.config, SaveAt(ck.save_steps), engine=ck.engine, backend=ck.backend, **kwargs)
    fp = fingerprint(run)
    if fp != ck.fingerprint:
        raise ResultFileError(
            f"{ck.path}: the data regenerated from the checkpoint's config differ from those it was written "
            f"with (fingerprint {fp[:12]} != {ck.fingerprint[:12]}); resume with the attnsim and numpy versions "
            "that wrote it, or start the run again"
        )
    expected = run.state_dict()
    for key, arr in expected.items():
        got = ck.state.get(key)
        if got is None or got.shape != arr.shape or got.dtype != arr.dtype:
            raise ResultFileError(
                f"{ck.path}: state array {key!r} is "
                f"{'missing' if got is None else f'{got.dtype}{got.shape}'}, expected {arr.dtype}{arr.shape}; "
                "the checkpoint was written by an incompatible attnsim version"
            )
    run.load_state_dict(ck.state)
    _warn_if_environment_differs(ck)
    run.wall_time = ck.wall_time
    run.compile_time = ck.compile_time
    if ck.status in (FINISHED, INTERRUPTED):  # an interrupted run simply continues
        run.status, run.message = FINISHED, FINISHED
    else:  # diverged or stopped: the outcome stands
        run.status, run.message = ck.status, ck.message
    return run


def _warn_if_environment_differs(ck) -> None:
    now_threads, now_versions = blas_threads(), _versions()
    diffs = [f"{k}={ck.threads.get(k)!r} then, {now_threads.get(k)!r} now" for k in now_threads
             if ck.threads and ck.threads.get(k) != now_threads.get(k)]
    diffs += [f"{k} {ck.versions.get(k)} then, {now_versions.get(k)} now" for k in now_versions
              if ck.versions and ck.versions.get(k) != now_versions.get(k)]
    if diffs:
        warnings.warn(f"{ck.path} was written in another environment ({'; '.join(diffs)}); the resumed run is "
                      "exact GD but may differ in the last bits from an uninterrupted run; set the same "
                      "thread variables to reproduce it bit for bit", CheckpointWarning, stacklevel=3)


class CheckpointHook:
    """``Run.run`` hook that writes a checkpoint whenever ``every`` seconds have passed since the last.

    Parameters
    ----------
    path : str or os.PathLike
    config : Config
    every : float
        Seconds between checkpoints (> 0). The check runs between chunks (~0.25 s).
    extra : dict, optional
        Stored with every checkpoint (see ``save_checkpoint``).

    Attributes
    ----------
    written : int
        Checkpoints written so far.
    """

    def __init__(self, path, config: Config, every: float, *, extra: dict | None = None, clock=time.monotonic):
        self.path = path
        self.config = config
        self.every = check_float("checkpoint_every", every, positive=True)
        self.extra = dict(extra or {})
        self.clock = clock
        self.last = clock()
        self.written = 0
        self._fingerprint = None

    def __call__(self, run) -> None:
        if self.clock() - self.last >= self.every:
            self.write(run)

    def write(self, run) -> None:
        """Write a checkpoint now."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(run)
        save_checkpoint(self.path, run, self.config, extra=self.extra, data_fingerprint=self._fingerprint)
        self.written += 1
        self.last = self.clock()


def resume(path, *, progress=False, hooks=()):
    """Continue the run saved in the checkpoint ``path`` to its end.

    Returns
    -------
    Result
        Identical, array for array, to the Result of the uninterrupted run
        (``wall_time`` and ``compile_time`` aside).
    """
    ck = load_checkpoint(path)
    run = restore(ck)
    run.warm_up()
    run.run(progress=progress, hooks=hooks)
    return run.result(ck.config)


__all__ = ["CHECKPOINT_KIND", "CHECKPOINT_VERSION", "Checkpoint", "CheckpointHook", "CheckpointWarning",
           "blas_threads", "fingerprint",
           "load_checkpoint", "restore", "resume", "save_checkpoint"]
