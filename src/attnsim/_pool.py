"""The worker pool behind ``train_many``, ``simulate_many`` and ``sweep``.

One single-threaded process per core, ``spawn``ed (a forked child inherits the
parent's BLAS thread pools and numba state), or any ``concurrent.futures.Executor``
the caller passes (a Dask cluster's too). Threaded BLAS in every worker would put
2 x workers threads on the cores, so workers get one BLAS thread each: a spawned
worker reads its environment when it starts, and ``ProcessPoolExecutor`` starts its
workers at ``submit``, so tasks are submitted inside ``single_threaded_env``.

Local workers do not outlive their driver: killed with SIGKILL, a driver cannot shut
its pool down, and its workers would finish their task, find nobody to send it to and
wait for work forever (each holds both ends of the task pipe, so it never sees EOF).
``exit_with_parent`` makes each worker exit as soon as the driver is gone.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
import time
from concurrent.futures import as_completed

from ._validation import ConfigError

_WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMBA_NUM_THREADS": "1"}

#: Seconds between a worker's checks that its driver is still alive (the portable guard).
PARENT_POLL = 0.5
#: ``prctl`` option of Linux (``<linux/prctl.h>``): a signal the kernel sends when the parent dies.
_PR_SET_PDEATHSIG = 1


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


def exit_with_parent(parent_pid: int, *, pdeathsig: bool = True, poll: float | None = PARENT_POLL) -> None:
    """Make this process exit as soon as its parent ``parent_pid`` is gone (a pool worker's initializer).

    Two guards, either of which suffices:

    - on Linux (``pdeathsig``), ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this
      process the moment its parent dies, even inside a compiled kernel (numba loops hold
      the GIL, so no Python thread of the worker runs until they return). The signal follows
      the death of the parent *thread* that started the worker; pool workers are started by
      the thread that submits, which waits for them, or by the pool's own manager thread;
    - everywhere (``poll`` seconds, None for none), a daemon thread that calls ``os._exit``
      once this process has been re-parented, i.e. its parent has died.

    Parameters
    ----------
    parent_pid : int
        The pid of the driver that starts the pool (``os.getpid()`` there).
    pdeathsig : bool
        Ask Linux for the signal (ignored elsewhere, or where ``prctl`` cannot be called).
    poll : float or None
        Seconds between checks of the portable guard.
    """
    if pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):   # no libc or no prctl: the thread below still guards
            pass
    if os.getppid() != parent_pid:          # the parent died before either guard was in place
        os._exit(1)
    if poll is not None:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(poll)
            os._exit(1)

        threading.Thread(target=watch, name="attnsim-exit-with-parent", daemon=True).start()


def local_executor(workers: int):
    """A process pool of ``workers`` spawned, single-threaded workers that exit with this process
    (shut it down after use)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with single_threaded_env():
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=exit_with_parent, initargs=(os.getpid(),))


@contextlib.contextmanager
def local_pool(workers: int):
    """``local_executor(workers)`` for a ``with`` block: shut down at its end, and its workers
    killed first when the block is left by an exception (Ctrl-C, SIGTERM, an error of the
    driver). The driver then no longer waits for tasks whose results it would drop: a worker
    survives a KeyboardInterrupt inside its task and would run its queued tasks to the end."""
    owned = local_executor(workers)
    try:
        yield owned
    except BaseException:
        kill_workers(owned)
        raise
    finally:
        shutdown(owned)


def kill_workers(executor) -> None:
    """SIGKILL the worker processes of a local ``ProcessPoolExecutor`` (its pending futures then
    fail with ``BrokenProcessPool``, and ``shutdown`` returns at once); nothing for other executors."""
    kill = getattr(executor, "kill_workers", None)          # Python >= 3.14
    if kill is not None:
        kill()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        with contextlib.suppress(OSError, ValueError):      # already gone, or closed
            process.kill()


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


_SCHEDULER_HINT = ("give its address as tcp://HOST:PORT (dask scheduler prints it), or leave scheduler out to run "
                   "on local worker processes")


def check_scheduler(scheduler):
    """Raise ConfigError unless Dask distributed is installed and can parse ``scheduler`` as an
    address (None: no scheduler, nothing to check). A ``Client`` built on an address it cannot
    parse fails half-constructed, and its clean-up then breaks the next ``Client`` of the process."""
    if scheduler is None:
        return
    try:
        from distributed.comm.addressing import get_address_host_port, parse_address
        from distributed.comm.registry import get_backend
    except ImportError:
        raise ConfigError("scheduler= needs Dask distributed: pip install 'attnsim[dask]'") from None
    try:
        scheme, _ = parse_address(scheduler)
        get_backend(scheme)
        if scheme != "inproc":
            get_address_host_port(scheduler)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"scheduler={scheduler!r}: not an address of a Dask scheduler ({exc}); "
                          f"{_SCHEDULER_HINT}") from None


@contextlib.contextmanager
def executor_for(workers: int, executor=None, scheduler: str | None = None):
    """The executor to run tasks on: ``executor`` as given (left running), else the Dask cluster at
    ``scheduler``, else a local pool of ``workers`` processes (``local_pool``: its workers killed
    when the block is left by an exception); the last two are shut down on exit.

    Raises
    ------
    ConfigError
        If ``scheduler`` is given and Dask distributed is not installed, or no scheduler answers
        at that address (or it is not an address).
    """
    if executor is not None:
        yield executor
        return
    if scheduler is not None:
        check_scheduler(scheduler)
        from distributed import Client

        try:
            client = Client(scheduler)
        except OSError as exc:                  # nobody answers there (distributed's connect timeout)
            raise ConfigError(f"scheduler={scheduler!r}: cannot connect to a Dask scheduler there ({exc}); "
                              f"{_SCHEDULER_HINT}") from None
        with contextlib.closing(client):
            owned = client.get_executor(pure=False)
            try:
                yield owned
            finally:
                shutdown(owned)
        return
    with local_pool(workers) as owned:
        yield owned


def completed(executor, fn, tasks):
    """Submit ``fn(*task)`` for every task; yield ``(index, future)`` as each one finishes.

    Closing the generator early (an error or an interrupt in the caller) cancels the tasks
    that have not started.
    """
    futures = {}
    try:
        with single_threaded_env():
            for k, task in enumerate(tasks):
                futures[executor.submit(fn, *task)] = k
        for fut in as_completed(futures):
            yield futures.pop(fut), fut
    finally:
        for fut in futures:
            fut.cancel()
