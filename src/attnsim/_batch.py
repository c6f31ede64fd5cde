"""Several independent runs in one call, spread over the local cores.

``train_many`` and ``simulate_many`` run one problem per task on a pool of worker
processes (``spawn``ed, one single-threaded process per core) and return the
``Result`` objects in the order of their inputs. Processes rather than numba
``prange`` threads because the runs of a batch rarely share a shape (a phase
diagram varies ``d``, and the Gram matrices of the set-up, which dominate short
runs, are then built in parallel too), and because a process pool needs nothing
from the kernels. Each worker loads the cached kernels once and then takes task
after task.

Any ``concurrent.futures.Executor`` may be passed instead of the local pool (for
example a Dask client's executor); ``workers=1`` runs the batch in this process.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor

from ._config import Config
from ._coords import DYNAMICS
from ._coords.flow import as_flow_options
from ._engine import train
from ._experiment import simulate
from ._pool import check_workers, completed, executor_for
from ._result import Result
from ._validation import ConfigError, check_choice

# Arguments a worker cannot honour: callbacks do not cross process boundaries.
_NOT_BATCHABLE = ("hooks", "progress")


def check_dynamics(dynamics, flow):
    """Validate ``dynamics`` and ``flow`` once, in the calling process; the options as a ``FlowOptions``
    (None for GD)."""
    check_choice("dynamics", dynamics, DYNAMICS)
    if dynamics == "gd":
        if flow is not None:
            raise ConfigError("flow options apply only with dynamics='flow'; got dynamics='gd' and flow set")
        return None
    return as_flow_options(flow)


def _train_task(kwargs: dict) -> Result:
    return train(**kwargs)


def _simulate_task(args) -> Result:
    config, save_at, engine, probes, dynamics, flow = args
    return simulate(config, save_at=save_at, engine=engine, probes=probes, dynamics=dynamics, flow=flow)


def _run(fn, tasks: list, workers, executor: Executor | None, progress: bool) -> list:
    """Apply ``fn`` to every task, in a pool unless one worker suffices; keep the order."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), unit="run", dynamic_ncols=True)
    try:
        if executor is None and check_workers(workers, len(tasks)) == 1:
            out = []
            for task in tasks:
                out.append(fn(task))
                if bar is not None:
                    bar.update(1)
            return out
        out = [None] * len(tasks)
        with executor_for(check_workers(workers, len(tasks)), executor) as pool, \
                contextlib.closing(completed(pool, fn, [(task,) for task in tasks])) as done:
            for k, fut in done:
                out[k] = fut.result()
                if bar is not None:
                    bar.update(1)
        return out
    finally:
        if bar is not None:
            bar.close()


def train_many(problems: Sequence[Mapping], *, workers: int | None = None, executor: Executor | None = None,
               progress: bool = False, **common) -> list[Result]:
    """Run ``train`` on several independent problems, one worker process per core.

    Parameters
    ----------
    problems : sequence of mappings
        Keyword arguments of ``train`` for each run (``X``, ``y``, ``W0``, ``p0``, ``nu``,
        ``lr``, ``steps``, ...). Keys given here override ``common``.
    workers : int, optional
        Worker processes (default: one per core, at most one per problem). ``1`` runs
        the problems one after the other in this process.
    executor : concurrent.futures.Executor, optional
        Run the tasks there instead of a local process pool (it is not shut down).
    progress : bool
        Show a progress bar over finished runs.
    **common
        Keyword arguments of ``train`` shared by all problems, e.g. ``dynamics="flow"`` and
        ``flow=FlowOptions(...)`` (validated here, before any run starts).

    Returns
    -------
    list of Result
        In the order of ``problems``.

    Raises
    ------
    ConfigError
        If a problem is not a mapping, names an argument ``train`` does not take, or
        passes ``hooks``/``progress`` (callbacks cannot reach worker processes); and for
        any invalid argument of a run (raised when that run starts).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> def problem(seed):
    ...     r = np.random.default_rng(seed)
    ...     return dict(X=r.standard_normal((4, 3, 5)), y=np.array([1., 1., -1., -1.]),
    ...                 W0=np.eye(5), p0=np.zeros(5), nu=r.standard_normal(5))
    >>> results = train_many([problem(s) for s in range(3)], lr=0.1, steps=10, workers=1)
    >>> [r.final_step for r in results]
    [10, 10, 10]
    """
    allowed = set(inspect.signature(train).parameters) - set(_NOT_BATCHABLE)
    for key in common:
        if key not in allowed:
            raise ConfigError(f"train_many: unknown or unbatchable argument {key!r}; "
                              f"allowed: {sorted(allowed)}")
    tasks = []
    for k, prob in enumerate(problems):
        if not isinstance(prob, Mapping):
            raise ConfigError(f"problems[{k}] must be a mapping of train() arguments; got {type(prob).__name__}")
        bad = [key for key in prob if key not in allowed]
        if bad:
            raise ConfigError(f"problems[{k}]: unknown or unbatchable argument(s) {bad}; "
                              f"allowed: {sorted(allowed)}")
        task = {**common, **prob}
        if "dynamics" in task or "flow" in task:
            try:
                flow = check_dynamics(task.get("dynamics", "gd"), task.get("flow"))
            except ConfigError as exc:
                raise ConfigError(f"problems[{k}]: {exc}") from None
            if flow is not None:
                task["flow"] = flow
        tasks.append(task)
    if not tasks:
        return []
    return _run(_train_task, tasks, workers, executor, progress)


def simulate_many(configs: Sequence[Config], save_at=None, *, engine: str = "auto", probes=None,
                  dynamics: str = "gd", flow=None, workers: int | None = None, executor: Executor | None = None,
                  progress: bool = False) -> list[Result]:
    """Run ``simulate`` on several configurations, one worker process per core.

    Each worker draws its run's data from the config's seed, so the results are
    those of ``[simulate(c, save_at, engine=engine, dynamics=dynamics, flow=flow) for c in configs]``,
    bit for bit.

    Parameters
    ----------
    configs : sequence of Config
    save_at : None, SaveAt or sequence of int
        Save times shared by all runs (a ``SaveAt`` must then end at every
        config's ``steps``); default: log-spaced per run.
    engine : {"auto", "primal", "dual"}
    probes : None, "noise" or array_like
        As in ``simulate``.
    dynamics : {"gd", "flow"}
        ``flow``: the GD-matched gradient flow (``simulate``), for horizons up to 10^15 steps.
    flow : None, FlowOptions or dict
        Settings of the flow, shared by all runs (checked here, before any run starts).
    workers, executor, progress
        As in ``train_many``.

    Returns
    -------
    list of Result
        In the order of ``configs``, each with its ``config`` set.

    Examples
    --------
    >>> from attnsim import Config
    >>> res = simulate_many([Config(d=50, n_test=0, steps=20, seed=s) for s in (0, 1)], workers=1)
    >>> [r.config.seed for r in res]
    [0, 1]
    """
    flow = check_dynamics(dynamics, flow)
    tasks = []
    for k, config in enumerate(configs):
        if not isinstance(config, Config):
            raise ConfigError(f"configs[{k}] must be an attnsim.Config; got {type(config).__name__}")
        tasks.append((config, save_at, engine, probes, dynamics, flow))
    if not tasks:
        return []
    return _run(_simulate_task, tasks, workers, executor, progress)
