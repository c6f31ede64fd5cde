"""Experiments: a Config in, a Result out."""

from __future__ import annotations

import numpy as np

from ._config import Config
from ._data import draw_implicit, init_params, make_data
from ._engine import prepare, resolve_engine
from ._memory import check_memory, config_memory, run_fixes
from ._population import PopulationSpec
from ._result import Result
from ._run import Run
from ._saveat import as_saveat
from ._validation import ConfigError


def _probe_matrix(config: Config, data, probes):
    """``None``: ``[mu_+, mu_-]``; ``"noise"``: those and the training tokens' noise vectors; else as given."""
    if probes is None:
        return np.stack([data.mu_pos, data.mu_neg])
    if isinstance(probes, str):
        if probes != "noise":
            raise ConfigError(f"probes must be None, 'noise' or an array of shape (k, d); got {probes!r}")
        from ._analysis import noise_probes

        return noise_probes(config, data)
    return probes


def prepare_run(config: Config, save_at=None, engine="auto", backend="numba", probes=None, dynamics="gd",
                flow=None, max_margin=False) -> Run:
    """Draw the data and initialisation of ``config`` and build a ``Run`` ready to advance.

    ``simulate`` is ``prepare_run`` then ``run.warm_up()``, ``run.run()``, ``run.result(config)``;
    use it directly to step by hand (``run.advance()``) or to checkpoint
    (``attnsim.save_checkpoint(path, run, config)``).

    ``probes``: ``None`` records ``<p, r>`` and ``<W^T p, r>`` for ``r = mu_+, mu_-``;
    ``"noise"`` adds the noise vector of every training token (``attnsim.noise_probes``,
    what ``attnsim.decompose_query`` needs); an array of shape (k, d) is used as given.

    Examples
    --------
    >>> run = prepare_run(Config(d=30, n_test=0, steps=40))
    >>> run.warm_up(); run.run(); run.result().final_step
    40
    """
    if config.space == "implicit":      # O(N k^2) whatever d: no memory to check
        k = config.implicit_dimension
        if probes is not None and not isinstance(probes, str) and np.shape(probes)[1:] != (k,):
            # arrays of the virtual basis's coordinates come back from checkpoints (restore
            # checks the fingerprint); a d-dimensional array has no place in that basis
            raise ConfigError(f"probes must be None, 'noise' or coordinates of shape (m, {k}) with "
                              f"space='implicit'; got shape {np.shape(probes)}; use space='explicit' to record "
                              "d-dimensional probe directions")
        draw = draw_implicit(config)
        data, W0, p0 = draw.data, draw.W0, draw.p0
        signals = (data.mu_pos, data.mu_neg)
    else:
        check_run_fits(config, len(as_saveat(save_at, config.steps)), engine=engine, dynamics=dynamics,
                       probes=probes)
        data = make_data(config)
        W0, p0 = init_params(config)
        signals = None
    has_test = config.n_test > 0
    population = (PopulationSpec.from_config(config, signals=signals) if config.test_metrics == "population"
                  else None)
    run = prepare(
        data.X, data.y, W0, p0, data.nu, lr=config.lr, steps=config.steps, trainable=config.trainable,
        save_at=save_at, X_test=data.X_test if has_test else None, y_test=data.y_test if has_test else None,
        relevant=data.relevant, noisy=data.noisy, y_true=data.y_true, roles=data.roles,
        probes=_probe_matrix(config, data, probes), engine=engine, backend=backend, dynamics=dynamics, flow=flow,
        optimizer=config.optimizer, ngd_norm=config.ngd_norm, momentum=config.momentum,
        max_margin=max_margin,
        population=population, _owned=True, _implicit=config.space == "implicit",
    )
    run.config = config          # its Result keeps the final state, and rebuilds W, p, nu from it
    return run


def check_run_fits(config: Config, n_saves: int, *, engine="auto", dynamics="gd", probes=None) -> None:
    """Raise ``MemoryBudgetError`` when a run of ``config`` with ``n_saves`` save times would not fit in
    the memory available: the check ``prepare_run`` makes before it draws anything (none for the
    implicit space, whose arrays are O(N k) whatever d)."""
    if config.space == "implicit":
        return
    # prepare() resolves "auto" to the same coordinates, and says what is wrong with a flow in primal ones
    coords = resolve_engine(engine, dynamics, config.N, config.d, config.n_test * config.T, config.steps,
                            n_saves, config.trainable, "identity" if config.w0 == "identity" else "dense")
    run_memory_check(config, engine=coords, n_saves=n_saves, probes=probes)


def run_memory_check(config: Config, *, engine: str, n_saves: int, probes, final_W: bool | None = None,
                     what=None) -> None:
    """Raise ``MemoryBudgetError`` (a ConfigError: one line and exit 2 from the CLI) when the data,
    the initialisation and the set-up of ``config`` in coordinates ``engine`` would not fit in the
    memory available, before anything is drawn (``attnsim._memory``). ``final_W``: the Result
    holds a d x d ``W`` (default: in primal coordinates; a dual run's Result rebuilds it on request)."""
    final_W = engine != "dual" if final_W is None else final_W
    if probes is None or isinstance(probes, str):       # [mu_+, mu_-], and "noise": every training token's too
        n_probes = 2 + (config.N if isinstance(probes, str) else 0)
    else:
        n_probes = len(probes) if hasattr(probes, "__len__") else 0
    n_probes += 3 if config.test_metrics == "population" else 0
    need = config_memory(config, engine=engine, n_saves=n_saves, n_probes=n_probes, final_W=final_W)
    what = what or (f"the run (d={config.d}, n_train={config.n_train}, n_test={config.n_test}, T={config.T}, "
                    f"trainable={config.trainable!r}, w0={config.w0!r}, engine={engine!r})")
    check_memory(need, what, run_fixes(need, identity=config.w0 == "identity", trainable=config.trainable,
                                       engine=engine))


def simulate(config: Config, save_at=None, *, engine="auto", progress=False, hooks=(), probes=None, dynamics="gd",
             flow=None, max_margin=False) -> Result:
    """Generate the data of ``config`` and train on it.

    Parameters
    ----------
    config : Config
    save_at : None, SaveAt or sequence of int
        Default: about 200 log-spaced steps from 0 to ``config.steps``.
    engine : {"auto", "primal", "dual"}
    progress : bool
        Show a progress bar.
    hooks : sequence of callables
        Called with the engine's ``Run`` between chunks.
    probes : None, "noise" or array_like, shape (k, d)
        Directions whose alignment with ``p`` and ``W^T p`` is recorded (see ``prepare_run``).
    dynamics : {"gd", "flow"}
        ``flow``: the GD-matched gradient flow, for horizons up to 10^15 steps (see ``train``).
    flow : None, FlowOptions or dict
        Settings of the flow mode.
    max_margin : bool, {"final", "optimal"} or array_like of int, shape (n,)
        Record ``Result.mm_cos`` and ``Result.mm_margin`` against the att-SVM of the tokens
        selected at the end of the run (default for True) or of another selection (see ``train``).

    Returns
    -------
    Result
        With ``config`` set; ``p_probe`` and ``query_probe`` hold the alignment of
        ``p`` and of the effective query ``W^T p`` with ``mu_+`` and ``mu_-``.

    Examples
    --------
    >>> res = simulate(Config(d=50, n_test=10, steps=20))
    >>> res.attention.shape
    (21, 20, 8)
    """
    run = prepare_run(config, save_at=save_at, engine=engine, probes=probes, dynamics=dynamics, flow=flow,
                      max_margin=max_margin)
    run.warm_up()
    run.run(progress=progress, hooks=hooks)
    return run.result(config)
