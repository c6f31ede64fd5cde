"""The worker pool behind ``train_many``, ``simulate_many`` and ``sweep``.

One single-threaded process per core, ``spawn``ed (a forked child inherits the
parent's BLAS thread pools and numba state), or any ``concurrent.futures.Executor``
the caller passes. Threaded BLAS in every worker would put 2 x workers threads on
the cores, so workers get one BLAS thread each.
"""

from __future__ import annotations

import contextlib
import inspect
import os

from ._validation import ConfigError

_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMBA_NUM_THREADS": "1"}


@contextlib.contextmanager
def single_threaded_env():
    """Set single-threaded BLAS in the environment that spawned workers inherit."""
    saved = {k: os.environ.get(k) for k in _WORKER_ENV}
    for k, v in _WORKER_ENV.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_workers(workers, n_tasks) -> int:
    """Worker processes to start: ``workers`` (None: one per core), at most one per task."""
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int or None (one per core); got {workers!r}")
    return max(1, min(workers, n_tasks))


def local_executor(workers: int):
    """A process pool of ``workers`` spawned, single-threaded workers (shut it down after use)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with single_threaded_env():
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def shutdown(executor) -> None:
    """Shut an executor down, cancelling what has not started where it supports that."""
    try:
        cancels = "cancel_futures" in inspect.signature(executor.shutdown).parameters
    except (TypeError, ValueError):
        cancels = False
    if cancels:
        executor.shutdown(wait=True, cancel_futures=True)
    else:
        executor.shutdown(wait=True)
