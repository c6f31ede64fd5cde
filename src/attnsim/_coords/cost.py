"""The cost model behind ``engine="auto"``: estimated flops of a whole run in each coordinate system."""

from __future__ import annotations

from .._validation import check_choice
from .base import TRAINABLE_SETS

#: A save's matvec with a dense W0 costs at most about this many columns of the product
#: ``W0^T B`` (B of shape (d, m)): measured 2.2-2.6 columns at d = 250-1000, where W0 stays in
#: cache, and 5.1-7.3 at d = 2000-8000, where the matvec streams W0 from memory.
QUERY_MATVEC_COLUMNS = 8

#: How a run's ``W0`` is given: a dense (d, d) array, None (the identity), or an operator of
#: the implicit space (``attnsim._implicit.LazyGaussianMatrix``).
W0_KINDS = ("dense", "identity", "implicit")


def query_by_matvec(N: int, n_test_tokens: int, n_saves: int, w0: str) -> bool:
    """Whether the dual set-ups read the query ``W^T p`` with one matvec ``W0^T (.)`` a save,
    rather than forming ``W0^T B`` (d x N, an O(d^2 N) product) once.

    The product is needed by nothing else when there is no test set (its scores read it); then
    ``n_saves`` matvecs cost less than it while ``QUERY_MATVEC_COLUMNS * n_saves <= N``
    (``n_saves = 0``: not known, the product). With
    the identity the product is free (``W0^T B = B``), and the implicit space's operator is
    applied in blocks that a matvec would redo: both keep the product.
    """
    return w0 == "dense" and n_test_tokens == 0 and 0 < QUERY_MATVEC_COLUMNS * n_saves <= N


def step_costs(N: int, d: int, n_test_tokens: int, steps: int, n_saves: int, trainable: str,
               w0: str = "dense") -> dict:
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
    check_choice("w0", w0, W0_KINDS)
    Nt = n_test_tokens
    trained = TRAINABLE_SETS[trainable]
    query = n_saves * d * d if query_by_matvec(N, Nt, n_saves, w0) else 0.1 * 2.0 * N * d * d
    costs = _costs(N, d, Nt, steps, n_saves, trained.trains_W)
    costs["dual"] += query
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
        dual = (steps * 2.0 * N * N + 0.1 * (2.0 * N * d * d + 2.0 * Nt * d * N + 2.0 * N * N * d)
                + n_saves * 2.0 * Nt * N)
    return {"primal": primal, "dual": dual}


def choose_engine(N, d, n_test_tokens, steps, n_saves, trainable, w0="dense") -> str:
    """The coordinate system with the smaller estimated cost (``step_costs``)."""
    costs = step_costs(N, d, n_test_tokens, steps, n_saves, trainable, w0)
    return "dual" if costs["dual"] <= costs["primal"] else "primal"
