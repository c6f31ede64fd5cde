"""The cost model behind ``engine="auto"``: estimated flops of a whole run in each coordinate system."""

from __future__ import annotations

from .base import TRAINABLE_SETS


def step_costs(N: int, d: int, n_test_tokens: int, steps: int, n_saves: int, trainable: str) -> dict:
    """Estimated cost of a whole run in each coordinate system, in "vectorised flops".

    Per-step work dominates: primal ``p`` sweeps the N x d keys twice (``4 N d``),
    dual ``W, p`` makes about three passes over N x N matrices (``7 N^2``), dual ``p``
    one (``2 N^2``); all three are vectorised axpy sweeps and run at about the same
    time per flop. Primal ``W, p`` sweeps the d x d matrix once per step, but with a
    dot product per row (``(W g)_r``, a serial reduction that cannot be vectorised
    without reassociating it), so each of its ``d^2`` elements costs as much as about
    15 vectorised flops: ``15 d^2 + 4 N d`` (fitted to measured rates at d = 128 and 400,
    N = 160; ``benchmarks/RESULTS.md``, "auto choice"). Set-up is BLAS work, counted
    at a tenth of its flops since it runs that much faster per flop. Recording adds
    the test scores at every save.

    Returns
    -------
    dict
        ``{"primal": flops, "dual": flops}``.
    """
    Nt = n_test_tokens
    trained = TRAINABLE_SETS[trainable]
    costs = _costs(N, d, Nt, steps, n_saves, trained.trains_W)
    if trained.trains_head:
        # the head adds an N x d sweep and a gemv to the primal step, one N x N pass to the dual
        # (shared with Gxx c when W is trained), and its cross terms to the set-up
        costs["primal"] += steps * 4.0 * N * d + n_saves * Nt * d
        costs["dual"] += (steps * 2.0 * N * N + 0.1 * 2.0 * (N + Nt) * N * d) + n_saves * 2.0 * Nt * N
    return costs


def _costs(N, d, Nt, steps, n_saves, trains_W):
    if trains_W:
        primal = steps * (15.0 * d * d + 4.0 * N * d) + n_saves * (Nt * d + 2.0 * d * d)
        dual = (steps * 7.0 * N * N + 0.1 * (2.0 * N * d * d + 2.0 * Nt * d * N + 2.0 * N * N * d)
                + n_saves * (2.0 * Nt * N + 2.0 * N ** 3))
    else:
        primal = steps * 4.0 * N * d + 0.1 * 2.0 * N * d * d + n_saves * (Nt * d + d * d)
        dual = steps * 2.0 * N * N + 0.1 * (4.0 * N * d * d + 2.0 * Nt * d * N) + n_saves * 2.0 * Nt * N
    return {"primal": primal, "dual": dual}


def choose_engine(N, d, n_test_tokens, steps, n_saves, trainable) -> str:
    """The coordinate system with the smaller estimated cost (``step_costs``)."""
    costs = step_costs(N, d, n_test_tokens, steps, n_saves, trainable)
    return "dual" if costs["dual"] <= costs["primal"] else "primal"
