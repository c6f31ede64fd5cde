"""The engine's entry points: ``train(arrays...) -> Result`` and ``prepare`` (its validated ``Run``).

It validates and converts the arrays once, builds the ``Problem``, picks the
coordinates from the registry of ``_coords`` (``engine="auto"`` compares the
estimated costs) and hands them to a ``Run`` (``_run.py``), which steps,
records and assembles the ``Result``.
"""

from __future__ import annotations

import numpy as np

from ._config import NGD_NORMS, OPTIMIZERS, TRAINABLE
from ._coords import DYNAMICS, Optimizer, choose_engine, make_coordinates
from ._kernels import BACKENDS
from ._max_margin import check_max_margin
from ._memory import check_memory, engine_memory, run_fixes
from ._problem import Problem
from ._result import Result
from ._run import Run
from ._saveat import as_saveat
from ._validation import (ConfigError, check_array, check_choice, check_float, check_labels, check_mask,
                          check_steps)

ENGINES = ("auto", "primal", "dual")


def _check_roles(roles, T):
    """Role codes (``attnsim.ROLE_NAMES`` indexes), one per token position."""
    arr = np.asarray(roles)
    if arr.shape != (T,) or arr.dtype.kind not in "iu" or np.any((arr < 0) | (arr > 3)):
        raise ConfigError(f"roles must be {T} integer codes in 0..3 (R, W_Y*, W_-Y*, I), one per token; "
                          f"got {arr.tolist()[:8]} of shape {arr.shape}")
    return arr.astype(np.int8)


def resolve_engine(engine, dynamics, N, d, n_test_tokens, steps, n_saves, trainable, w0="dense") -> str:
    """The coordinates a run uses: dual for the flow, the cheaper by ``step_costs`` for ``"auto"``."""
    check_choice("engine", engine, ENGINES)
    check_choice("dynamics", dynamics, DYNAMICS)
    if dynamics == "flow":
        return "dual"
    if engine == "auto":
        return choose_engine(N, d, n_test_tokens, steps, n_saves, trainable, w0)
    return engine


def prepare(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
            relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto",
            backend="numba", dynamics="gd", flow=None, optimizer="gd", ngd_norm="joint", momentum=None,
            max_margin=False, population=None, _owned=False, _borrowed=False, _implicit=False,
            _keep_W=True) -> Run:
    """Validate the inputs and build a ``Run`` ready to advance (see ``train``).

    ``population`` (a ``_population.PopulationSpec``, set by ``prepare_run`` for
    ``Config.test_metrics="population"``) records the population test metrics at every save
    instead of a test set's; it excludes ``X_test``. ``_owned=True`` (``prepare_run``) says the
    arrays were made for this run alone: they are checked but not copied. ``_borrowed=True`` (``train``)
    says the arrays are only read until the ``Result`` is made, within one call that the caller does
    not interleave with writes to them: they are not copied either (at d = 8000, ``W0`` is 512 MB),
    and the final ``W`` and ``p`` are materialised as usual. ``_implicit=True``
    (``prepare_run`` for ``Config(space="implicit")``) says the arrays are coordinates of an
    implicit space and ``W0`` an operator (``_data.draw_implicit``): dual coordinates only.

    Raises
    ------
    ConfigError
        For any invalid argument; ``MemoryBudgetError`` (a ConfigError) when the copies, the set-up
        and the result would not fit in the memory available (``attnsim._memory``).
    """
    given = {"X": X, "X_test": X_test, "W0": W0}      # copied once the memory check has passed
    X = check_array("X", X, ndim=3, hint="X holds n samples of T tokens in R^d, shape (n, T, d)", copy=False)
    n, T, d = X.shape
    if n < 1 or T < 1 or d < 1:
        raise ConfigError(f"X must have n, T, d >= 1; got shape {X.shape}; pass at least one sample and token")
    like_x = f"X has shape (n, T, d) = {X.shape}"
    y = check_labels("y", y, n, hint=like_x)
    if W0 is not None and not _implicit:   # None: the identity, never materialised while W is fixed
        W0 = check_array("W0", W0, ndim=2, shape=(d, d), hint=like_x, copy=False)
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
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("ngd_norm", ngd_norm, NGD_NORMS)
    if dynamics == "flow" and optimizer != "gd":
        raise ConfigError(f"optimizer={optimizer!r} is not available with dynamics='flow' (the flow follows plain GD); "
                          f"use dynamics='gd' for optimizer={optimizer!r}, or optimizer='gd' for the flow")
    opt = Optimizer(optimizer, ngd_norm, momentum)
    if dynamics == "gd" and flow is not None:
        raise ConfigError("flow options apply only with dynamics='flow'; got dynamics='gd' and flow set")
    if (X_test is None) != (y_test is None):
        raise ConfigError("X_test and y_test must be given together; got only one of them")
    if X_test is not None:
        X_test = check_array("X_test", X_test, ndim=3, shape=(None, T, d), hint=like_x, copy=False)
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
    max_margin = check_max_margin(max_margin, n, T)

    n_test_tokens = 0 if X_test is None else X_test.shape[0] * T
    if _implicit:
        if engine == "primal":
            raise ConfigError("engine='primal' needs p and W as d-vectors, which space='implicit' never forms; "
                              "use engine='auto' or 'dual', or space='explicit' for the primal engine")
        engine = "dual"
    w0_kind = "identity" if W0 is None else "implicit" if _implicit else "dense"
    engine = resolve_engine(engine, dynamics, n * T, d, n_test_tokens, steps, len(spec), trainable, w0_kind)
    # Before the copies and the set-up products: a run that cannot fit stops here, in one line.
    # (prepare_run's own arrays are not copied, and its Result rebuilds W in dual coordinates.)
    need = engine_memory(n, T, d, n_test_tokens, engine=engine, trainable=trainable,
                         w0="identity" if W0 is None or _implicit else "dense",
                         n_probes=probes.shape[0] + (0 if population is None else 3), n_saves=len(spec),
                         copies=not (_owned or _borrowed), final_W=_keep_W and not (_owned and engine == "dual"))
    check_memory(need, f"training on X of shape {X.shape} with trainable={trainable!r}, engine={engine!r}",
                 run_fixes(need, identity=W0 is None, trainable=trainable, engine=engine, arrays=True))
    if not (_owned or _borrowed):   # the engine's own copies of the caller's arrays (check_array may return them)
        X, X_test, W0 = (arr.copy() if isinstance(given[name], np.ndarray) and np.may_share_memory(arr, given[name])
                         else arr for name, arr in (("X", X), ("X_test", X_test), ("W0", W0)))
    pb = Problem(X, y, W0, p0, nu, lr, X_test, y_test, relevant, probes, population=population,
                 implicit=_implicit, n_saves=len(spec))
    coords = make_coordinates(pb, dynamics=dynamics, engine=engine, trainable=trainable, kern=BACKENDS[backend],
                              options=flow, optimizer=opt)
    return Run(pb, coords, spec.steps, noisy, {"y_true": y_true, "roles": roles}, max_margin=max_margin)


def train(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
          relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto", backend="numba",
          progress=False, hooks=(), dynamics="gd", flow=None, optimizer="gd", ngd_norm="joint", momentum=None,
          max_margin=False, keep_W=True) -> Result:
    """Full-batch gradient descent on the paper's attention model.

    ``W`` and ``p`` (or ``p`` alone) are updated simultaneously from the same
    iterate (with the head ``nu`` too for ``trainable="p+nu"``, ``"Wp+nu"``) with step ``lr`` on
    ``L = mean_i log(1 + exp(-y_i f(X_i)))``,
    ``f(X) = nu^T X^T softmax(X W^T p)``. Inputs are never mutated, and not copied either: they
    are read until ``train`` returns (``prepare`` copies them, since its ``Run`` outlives the call).

    Parameters
    ----------
    X : array_like, shape (n, T, d)
        Training tokens.
    y : array_like, shape (n,)
        Labels in {-1, +1}.
    W0 : array_like, shape (d, d), or None
        None is the identity (W = I; DESIGN.md §8), never built as a d x d array unless W is trained.
    p0, nu : array_like, shape (d,)
        Initial parameters and the head (paper notation: scores ``X W^T p``); the head is
        fixed unless ``trainable`` ends in ``+nu``.
    lr : float
        Step size, > 0.
    steps : int
        Number of GD updates, >= 1.
    trainable : {"Wp", "p", "Wp+nu", "p+nu"}
        The trained parameters: ``W`` and ``p``, ``p`` alone, and either with the head ``nu``
        (``dL/dnu = X_all^T h``, ``h_it = (1/n) ell'(y_i f_i) y_i s_it``; DESIGN.md §8).
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
        Directions ``r`` whose ``<p, r>``, ``<W^T p, r>`` and ``<nu, r>`` are recorded;
        ``Result.nu_align`` is the cosine of ``nu`` with ``r_0 - r_1``.
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
    optimizer : {"gd", "ngd", "momentum"}
        ``ngd``: normalised GD, every step of Euclidean length ``lr`` (a block whose gradient is
        exactly zero does not move). ``momentum``: heavy ball with PyTorch's convention
        (``torch.optim.SGD(momentum=beta)``): ``vel <- beta vel + grad``, ``theta <- theta - lr vel``,
        exact in dual coordinates too (the velocity is a combination of gradients). Not with
        ``dynamics="flow"``.
    ngd_norm : {"joint", "block"}
        ``joint``: the norm over all trained parameters together; ``block``: each trained
        block (W, p, nu) normalised separately (Tarzanagh et al.'s joint p, v code).
    momentum : float in [0, 1), optional
        beta of ``optimizer="momentum"`` (required there, refused otherwise).
    max_margin : bool, {"final", "optimal"} or array_like of int, shape (n,)
        Track the implicit-bias limit of Tarzanagh et al. (DESIGN.md §9): record
        ``Result.mm_cos`` (S,), the cosine between the iterate and the att-SVM direction, and
        ``Result.mm_margin`` (S, n), each sample's normalised margin against the SVM's. The
        selection ``alpha_i`` the att-SVM separates is, for ``True`` or ``"final"``, the token each
        sample attends to most **at the last recorded save** (``argmax_t`` of the final scores,
        the ``selected_tokens(result)`` of Tarzanagh et al.); ``"optimal"`` takes
        ``argmax_t y_i nu^T x_it`` (``optimal_tokens``, observed labels); an array gives it
        explicitly (e.g. ``selected_tokens(other_result, at)``). The att-SVM is solved once at
        the end, from the key Gram (no d-dimensional work per save), and summarised in
        ``Result.extra["max_margin"]`` (``selected``, ``feasible``, ``status``, ``reason``,
        ``norm``, ``sample_margin``, ...). An infeasible selection gives NaN ``mm_cos`` and
        ``mm_margin`` with the reason recorded; the run's status is unaffected. Works for every
        dynamics and engine: only the recorded scores and norms are used.

        With ``trainable="p"`` the keys are ``k_it = W0 x_it`` and ``mm_cos = cos angle(p, p^mm)``;
        Tarzanagh et al. (2023) prove that this tends to 1 under GD when the selection is
        locally optimal and the iterate starts in a cone around ``p^mm`` (globally, for the
        optimal tokens, under further conditions); the rate for plain GD is slow (~1/log tau).
        With ``trainable="Wp"`` the scores are ``x_it^T q`` for the effective query
        ``q = W^T p``, and ``mm_cos = cos angle(q, q^mm)`` against the att-SVM over the tokens
        themselves (keys ``x_it``, norm ``Result.query_norm``). That is a **diagnostic**: the
        joint (W, p) dynamics is not GD on q (the implied step on q is preconditioned by
        ``W^T W + ||p||^2 I``), and the results for trained W (Tarzanagh, Li, Thrampoulidis &
        Oymak 2023; Vasudeva et al. 2024) concern the direction of ``W`` against a Frobenius
        or nuclear-norm W-SVM, not of ``q`` against this att-SVM; no theorem says ``q``'s
        direction converges to ``q^mm``.

    keep_W : bool
        Materialise the final ``W`` (d, d) in ``Result.W`` when W is trained. False leaves it None
        and saves a d x d x N product and 8 d^2 bytes (at d = 8000, 1.4 CPU-s and 512 MB), for runs
        that read only the recorded arrays and ``p``.

    Returns
    -------
    Result
        With ``dynamics="flow"``, ``Result.extra`` records the integrator's counters; with
        ``max_margin`` set, ``mm_cos``, ``mm_margin`` and ``extra["max_margin"]``.

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
    if not isinstance(keep_W, (bool, np.bool_)):
        raise ConfigError(f"keep_W must be True or False; got {keep_W!r}; False leaves Result.W None")
    run = prepare(X, y, W0, p0, nu, lr=lr, steps=steps, trainable=trainable, save_at=save_at, X_test=X_test,
                  y_test=y_test, relevant=relevant, noisy=noisy, y_true=y_true, roles=roles, probes=probes,
                  engine=engine, backend=backend, dynamics=dynamics, flow=flow, optimizer=optimizer,
                  ngd_norm=ngd_norm, momentum=momentum, max_margin=max_margin, _borrowed=True,
                  _keep_W=bool(keep_W))
    run.warm_up()
    run.run(progress=progress, hooks=hooks)
    return run.result(keep_W=bool(keep_W))
