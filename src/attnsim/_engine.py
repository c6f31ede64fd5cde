"""The engine's entry points: ``train(arrays...) -> Result`` and ``prepare`` (its validated ``Run``).

It validates and converts the arrays once, builds the ``Problem``, picks the
coordinates from the registry of ``_coords`` (``engine="auto"`` compares the
estimated costs) and hands them to a ``Run`` (``_run.py``), which steps,
records and assembles the ``Result``.
"""

from __future__ import annotations

import numpy as np

from ._coords import DYNAMICS, choose_engine, make_coordinates
from ._kernels import BACKENDS
from ._problem import Problem
from ._result import Result
from ._run import Run
from ._saveat import as_saveat
from ._validation import (ConfigError, check_array, check_choice, check_float, check_labels, check_mask,
                          check_steps)

ENGINES = ("auto", "primal", "dual")
TRAINABLE = ("Wp", "p")


def _check_roles(roles, T):
    """Role codes (``attnsim.ROLE_NAMES`` indexes), one per token position."""
    arr = np.asarray(roles)
    if arr.shape != (T,) or arr.dtype.kind not in "iu" or np.any((arr < 0) | (arr > 3)):
        raise ConfigError(f"roles must be {T} integer codes in 0..3 (R, W_Y*, W_-Y*, I), one per token; "
                          f"got {arr.tolist()[:8]} of shape {arr.shape}")
    return arr.astype(np.int8)


def prepare(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
            relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto",
            backend="numba", dynamics="gd", flow=None, population=None, _owned=False) -> Run:
    """Validate the inputs and build a ``Run`` ready to advance (see ``train``).

    ``population`` (a ``_population.PopulationSpec``, set by ``prepare_run`` for
    ``Config.test_metrics="population"``) records the population test metrics at every save
    instead of a test set's; it excludes ``X_test``. ``_owned=True`` (``prepare_run``) says the
    arrays were made for this run alone: they are checked but not copied.
    """
    X = check_array("X", X, ndim=3, hint="X holds n samples of T tokens in R^d, shape (n, T, d)")
    n, T, d = X.shape
    if n < 1 or T < 1 or d < 1:
        raise ConfigError(f"X must have n, T, d >= 1; got shape {X.shape}; pass at least one sample and token")
    like_x = f"X has shape (n, T, d) = {X.shape}"
    y = check_labels("y", y, n, hint=like_x)
    W0 = check_array("W0", W0, ndim=2, shape=(d, d), hint=like_x, copy=not _owned)
    p0 = check_array("p0", p0, ndim=1, shape=(d,), hint=like_x)
    nu = check_array("nu", nu, ndim=1, shape=(d,), hint=like_x)
    lr = check_float("lr", lr, positive=True, hint="the step size is a finite number > 0, e.g. lr=5e-3")
    steps = check_steps(steps)
    check_choice("trainable", trainable, TRAINABLE)
    check_choice("engine", engine, ENGINES)
    check_choice("backend", backend, tuple(BACKENDS))
    check_choice("dynamics", dynamics, DYNAMICS)
    if dynamics == "flow" and (engine == "primal" or backend != "numba"):
        raise ConfigError(f"dynamics='flow' runs in dual coordinates with numba; got engine={engine!r}, "
                          f"backend={backend!r}; use engine='auto' or 'dual' and backend='numba'")
    if dynamics == "gd" and flow is not None:
        raise ConfigError("flow options apply only with dynamics='flow'; got dynamics='gd' and flow set")
    if (X_test is None) != (y_test is None):
        raise ConfigError("X_test and y_test must be given together; got only one of them")
    if X_test is not None:
        X_test = check_array("X_test", X_test, ndim=3, shape=(None, T, d), hint=like_x)
        y_test = check_labels("y_test", y_test, X_test.shape[0], hint=f"X_test has shape {X_test.shape}")
    if relevant is None:
        relevant = np.zeros(T, dtype=bool)
        relevant[0] = True
    relevant = check_mask("relevant", relevant, T, hint=f"one flag per token position; {like_x}")
    noisy = np.zeros(n, dtype=bool) if noisy is None else check_mask("noisy", noisy, n,
                                                                      hint=f"one flag per sample; {like_x}")
    y_true = y.copy() if y_true is None else check_labels("y_true", y_true, n, hint=like_x)
    roles = np.where(relevant, 0, 3).astype(np.int8) if roles is None else _check_roles(roles, T)
    probes = (np.zeros((0, d)) if probes is None
              else check_array("probes", probes, ndim=2, shape=(None, d), hint=f"probes are rows in R^d; {like_x}"))
    if population is not None and X_test is not None:
        raise ConfigError("population test metrics replace the test set; got X_test as well; pass one of them")
    spec = as_saveat(save_at, steps)

    pb = Problem(X, y, W0, p0, nu, lr, X_test, y_test, relevant, probes, population)
    if dynamics == "flow":
        engine = "dual"
    elif engine == "auto":
        engine = choose_engine(pb.N, d, pb.Xt.shape[0], steps, len(spec), trainable)
    coords = make_coordinates(pb, dynamics=dynamics, engine=engine, trainable=trainable, kern=BACKENDS[backend],
                              options=flow)
    return Run(pb, coords, spec.steps, noisy, {"y_true": y_true, "roles": roles})


def train(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
          relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto", backend="numba",
          progress=False, hooks=(), dynamics="gd", flow=None) -> Result:
    """Full-batch gradient descent on the paper's attention model.

    ``W`` and ``p`` (or ``p`` alone) are updated simultaneously from the same
    iterate with step ``lr`` on ``L = mean_i log(1 + exp(-y_i f(X_i)))``,
    ``f(X) = nu^T X^T softmax(X W^T p)``. Inputs are never mutated.

    Parameters
    ----------
    X : array_like, shape (n, T, d)
        Training tokens.
    y : array_like, shape (n,)
        Labels in {-1, +1}.
    W0 : array_like, shape (d, d)
    p0, nu : array_like, shape (d,)
        Initial parameters and the fixed head (paper notation: scores ``X W^T p``).
    lr : float
        Step size, > 0.
    steps : int
        Number of GD updates, >= 1.
    trainable : {"Wp", "p"}
    save_at : None, SaveAt or sequence of int
        Save times; default ``SaveAt.log(steps)``. Steps 0 and ``steps`` are always included.
    X_test : array_like, shape (n_test, T, d), optional
    y_test : array_like, shape (n_test,), optional
    relevant : array_like of bool, shape (T,), optional
        The relevant set R (default: position 0).
    noisy : array_like of bool, shape (n,), optional
        Which samples carry flipped labels (for the clean/noisy split).
    y_true, roles : optional bookkeeping copied into the Result.
    probes : array_like, shape (k, d), optional
        Directions ``r`` whose ``<p, r>`` and ``<W^T p, r>`` are recorded.
    engine : {"auto", "primal", "dual"}
        ``auto`` compares the estimated costs (``step_costs``).
    backend : {"numba", "numpy"}
        ``numpy`` runs the slow NumPy twins of the kernels (for testing).
    progress : bool
        Show a progress bar.
    hooks : sequence of callables
        Called with the ``Run`` after every chunk (checkpointing uses this).
    dynamics : {"gd", "flow"}
        ``flow`` integrates the gradient flow of the same loss in GD-step time (``tau = t / lr``),
        backward-error corrected and started with exact GD so that it follows GD
        (``attnsim.FlowOptions``); ``steps`` may then reach 10^15. Always dual coordinates.
    flow : None, FlowOptions or dict
        Settings of the flow (tolerances, correction, exact-GD start); default ``FlowOptions()``.

    Returns
    -------
    Result
        With ``dynamics="flow"``, ``Result.extra`` records the integrator's counters.

    Raises
    ------
    ConfigError
        For any invalid argument, with a message naming it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 3, 5)); y = np.array([1., 1., -1., -1.])
    >>> res = train(X, y, np.eye(5), np.zeros(5), rng.standard_normal(5), lr=0.1, steps=10)
    >>> res.steps[[0, -1]], res.attention[0, 0]
    (array([ 0, 10]), array([0.33333333, 0.33333333, 0.33333333]))
    """
    run = prepare(X, y, W0, p0, nu, lr=lr, steps=steps, trainable=trainable, save_at=save_at, X_test=X_test,
                  y_test=y_test, relevant=relevant, noisy=noisy, y_true=y_true, roles=roles, probes=probes,
                  engine=engine, backend=backend, dynamics=dynamics, flow=flow)
    run.warm_up()
    run.run(progress=progress, hooks=hooks)
    return run.result()
