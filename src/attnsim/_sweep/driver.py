"""``sweep``: run the points of a grid that a folder does not hold yet.

Workers never touch the folder: they return the ``Result`` and the calling process writes
it, so any ``concurrent.futures.Executor`` works, including a Dask cluster without a
shared filesystem (``attnsim`` must be importable on its workers). The pool is the one of
``train_many`` (``_pool``).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import Executor

import numpy as np

from .._batch import check_dynamics
from .._config import Config
from .._memory import MemoryBudgetError
from .._pool import check_scheduler, completed, executor_for
from .._validation import ConfigError
from .folder import HEADER, POINTS, Sweep
from .grid import grid_configs, plain
from .keys import DEFAULT_FLOW_RETRIES, point_key, recording
from .point import run_point


def _check_points_fit(configs, save, engine, dynamics) -> None:
    """Refuse the sweep before any point runs, or its folder is made, when a point still to run
    (``configs``) would not fit in this machine's memory on its own (``check_run_fits``, what each
    run checks when it starts): a grid whose largest d cannot run fails now, not hours in."""
    from .._experiment import check_run_fits

    checked = set()
    for cfg in configs:
        # what a run's memory depends on (``_memory.config_memory``, the engine ``check_run_fits`` resolves):
        # the phase diagram's 4563 points are 39 such shapes, and each check reads the system's limits
        shape = (cfg.space, cfg.n_train, cfg.T, cfg.d, cfg.n_test, cfg.w0, cfg.init, cfg.trainable, cfg.steps,
                 cfg.test_metrics)
        if shape in checked:
            continue
        checked.add(shape)
        try:
            check_run_fits(cfg, save["n_saves"], engine=engine, dynamics=dynamics, probes=save["probes"])
        except MemoryBudgetError as exc:
            raise MemoryBudgetError(f"a point of this sweep cannot run, so none was started: {exc}", exc.needed,
                                    exc.available, exc.limit) from None


def sweep(folder, base: Config | None = None, *, grid=None, seeds=None, configs=None, n_saves: int = 200,
          probes=None, keep_params: bool = False, engine: str = "auto", dynamics: str = "gd", flow=None,
          flow_retries: int = DEFAULT_FLOW_RETRIES, executor: Executor | None = None, workers: int | None = None,
          scheduler: str | None = None, progress: bool = True) -> Sweep:
    """Run every point of a grid that ``folder`` does not hold yet; return the opened ``Sweep``.

    Parameters
    ----------
    folder : str or path-like
        Results folder; created if missing, extended if it exists.
    base : Config, optional
        Fields not on the grid (default ``Config()``, the balanced preset).
    grid : mapping of str to sequence, optional
        Config field -> values; the Cartesian product is swept (``grid_configs``).
    seeds : sequence of int, optional
        Shorthand for ``grid["seed"]``.
    configs : sequence of Config, optional
        Explicit points instead of (or in addition to) the grid.
    n_saves : int
        Log-spaced save times per run.
    probes : None or "noise"
        Passed to ``simulate``.
    keep_params : bool
        Keep the final ``W`` in each file (off by default): a dual point's O(N^2) final state, from
        which ``Result.W`` is rebuilt on request (``Result.compact``); a primal point's d x d array.
    engine : {"auto", "primal", "dual"}
    dynamics : {"gd", "flow"}
        ``flow``: the GD-matched gradient flow (``simulate``), for horizons up to 10^15 steps.
        Part of each point's key, with the flow options: GD and flow results of one config
        are different points of the same folder.
    flow : None, FlowOptions or dict
        Settings of the flow (default ``FlowOptions()``).
    flow_retries : int
        Reruns of a flow point that stopped stiff (``max_steps_reached``) or with a collapsed
        step, each with ``RETRY_FACTOR`` times the budget (``run_point``); the summary's ``path``
        says which run produced the file.
    executor : concurrent.futures.Executor, optional
        Where to run the points. Default: a process pool over ``workers`` local cores
        (all of them), or the Dask cluster at ``scheduler``.
    workers : int, optional
        Local processes (default ``os.cpu_count()``); 1 runs in this process.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``); needs ``attnsim[dask]``.
    progress : bool
        A bar over grid points with the estimated time left.

    Returns
    -------
    Sweep

    Raises
    ------
    ConfigError
        For invalid grids or options, before any point runs.

    Examples
    --------
    >>> import tempfile
    >>> from attnsim import Config
    >>> tmp = tempfile.TemporaryDirectory()
    >>> base = Config(d=20, n_test=0, steps=5)
    >>> len(sweep(tmp.name, base, grid={"eta": [0.0, 0.2]}, workers=1, progress=False))
    2
    >>> sw = sweep(tmp.name, base, grid={"eta": [0.0, 0.1, 0.2]}, workers=1, progress=False)  # runs eta=0.1 only
    >>> sorted(p.config.eta for p in sw.points.values())
    [0.0, 0.1, 0.2]
    >>> tmp.cleanup()
    """
    base = Config() if base is None else base
    if probes not in (None, "noise"):
        raise ConfigError(f"probes must be None or 'noise' in a sweep; got {probes!r}")
    if not isinstance(n_saves, (int, np.integer)) or n_saves < 2:
        raise ConfigError(f"n_saves must be an integer >= 2; got {n_saves!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ConfigError(f"workers must be an integer >= 1; got {workers!r}")
    if sum(x is not None for x in (executor, scheduler)) > 1:
        raise ConfigError("give at most one of executor= and scheduler=")
    check_scheduler(scheduler)
    todo_configs = list(configs or [])
    if grid is not None or seeds is not None or not todo_configs:
        todo_configs += grid_configs(base, grid, seeds)
    flow = check_dynamics(dynamics, flow)
    if isinstance(flow_retries, bool) or not isinstance(flow_retries, (int, np.integer)) or flow_retries < 0:
        raise ConfigError(f"flow_retries must be an integer >= 0; got {flow_retries!r}")
    save = recording(n_saves, probes, keep_params, dynamics, flow, flow_retries)

    folder = os.fspath(folder)
    finished = Sweep.open(folder).points if os.path.exists(os.path.join(folder, HEADER)) else {}
    todo = {}
    for cfg in todo_configs:
        key = point_key(cfg, save)
        if key not in finished and key not in todo:
            todo[key] = cfg
    if executor is None and scheduler is None:      # local workers: this machine's memory is theirs
        _check_points_fit(todo.values(), save, engine, dynamics)
    os.makedirs(os.path.join(folder, POINTS), exist_ok=True)
    sw = Sweep(folder)
    sw._log_request({"base": base.to_dict(), "grid": {k: [plain(v) for v in vals] for k, vals in (grid or {}).items()},
                     "seeds": None if seeds is None else [int(s) for s in seeds], "n_points": len(todo_configs),
                     **save, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    sw = Sweep.open(folder)
    if not todo:
        return sw

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), unit="point", dynamic_ncols=True, mininterval=0.5,
                   desc=f"sweep {os.path.basename(os.path.abspath(folder))}")
    args = (save["n_saves"], save["probes"], save["keep_params"], engine, dynamics, flow, save.get("flow_retries", 0))
    keys = list(todo)
    failures = []
    try:
        if executor is None and scheduler is None and (workers == 1 or len(todo) == 1):
            for key in keys:
                sw._store(key, run_point(todo[key], *args), save)
                if bar is not None:
                    bar.update(1)
        else:
            with executor_for(workers or os.cpu_count() or 1, executor, scheduler) as pool, \
                    contextlib.closing(completed(pool, run_point, [(todo[key], *args) for key in keys])) as done:
                for k, fut in done:
                    try:
                        result = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a failed point must not lose the others
                        failures.append((keys[k], f"{type(exc).__name__}: {exc}"))
                    else:
                        sw._store(keys[k], result, save)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if failures:
        first_key, first_err = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} sweep points failed (finished points are saved; "
                           f"rerun to retry); first: {todo[first_key].to_dict()}: {first_err}")
    return sw
