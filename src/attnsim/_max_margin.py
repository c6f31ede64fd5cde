"""The att-SVM direction tracked during a run (``train(..., max_margin=True)``; DESIGN.md §9).

Everything here is read off arrays the recorder keeps anyway, so it costs nothing per save
and nothing of order d:

* **p trained, W fixed.** Scores are ``z = K p`` with keys ``K = X W0^T``, and the att-SVM
  solution is ``p^mm = K^T w`` with token coefficients ``w = D^T lambda``
  (``AttSVM.token_coef``). Hence ``<p(tau), p^mm> = z(tau)^T w`` and
  ``cos = z^T w / (||p|| ||p^mm||)``. Because ``w`` sums to zero over each sample
  (``w_{i alpha} = sum_t lambda_it``, ``w_it = -lambda_it``), ``z^T w = sum lambda_it
  (z_{i alpha} - z_it)``: it is evaluated from score gaps, which stay exact when the
  softmax saturates.
* **W and p trained.** The attention depends on the effective query ``q = W^T p`` only,
  ``z_it = x_it^T q``: the same identity with the tokens as keys (Gram ``X X^T``) and
  ``||q||`` (``Result.query_norm``) in place of ``||p||``.

The att-SVM is solved once, at the end of the run, from the key Gram
(``att_svm_gram``), whatever the optimiser was: only scores and norms are used.
"""

from __future__ import annotations

import math

import numpy as np

from ._att_svm import att_svm_gram, _check_selected
from ._validation import ConfigError

#: Named selections ``max_margin`` accepts (besides True, False/None and an (n,) array).
SELECTIONS = ("final", "optimal")

#: What the keys of the att-SVM are, by whether W is trained (recorded in ``Result.extra``).
KEYS = {False: "k_it = W0 x_it (p trained, W fixed): cos angle(p, p^mm)",
        True: "the tokens x_it (W and p trained): cos angle(q, q^mm) for the effective query q = W^T p, "
              "a diagnostic (see train)"}


def check_max_margin(max_margin, n, T):
    """Validate ``max_margin``: None (off), ``"final"``, ``"optimal"`` or an int64 array (n,)."""
    if isinstance(max_margin, (bool, np.bool_)):
        return "final" if max_margin else None
    if max_margin is None:
        return None
    if isinstance(max_margin, str):
        if max_margin not in SELECTIONS:
            raise ConfigError(f"max_margin must be True, False, one of {', '.join(map(repr, SELECTIONS))} or an "
                              f"array of {n} token indices; got {max_margin!r}")
        return max_margin
    if np.ndim(max_margin) == 0:
        raise ConfigError(f"max_margin must be True, False, one of {', '.join(map(repr, SELECTIONS))} or an "
                          f"array of {n} token indices; got {max_margin!r}")
    try:
        return _check_selected(max_margin, n, T, hint=f"an array max_margin selects one token per sample "
                                                      f"(n = {n}, T = {T})")
    except ConfigError as exc:   # name the argument the user passed
        raise ConfigError(str(exc).replace("selected", "max_margin", 1)) from None


def _json_float(x):
    x = float(x)
    return x if math.isfinite(x) else None


def max_margin_record(spec, scores, norms, gram, y, values, trains_W):
    """``(mm_cos (S,), mm_margin (S, n), summary dict)`` for the selection ``spec``.

    Parameters
    ----------
    spec : "final", "optimal" or ndarray of int64, shape (n,)
    scores : ndarray, shape (S, n, T)
        Recorded ``z(tau)``.
    norms : ndarray, shape (S,)
        ``||p(tau)||`` (p trained) or ``||W^T p(tau)||`` (W trained).
    gram : ndarray, shape (N, N)
        Gram of the keys: ``K K^T`` (p trained) or ``X X^T`` (W trained).
    y : ndarray, shape (n,)
        Observed labels; ``values`` (N,) the token values ``X nu`` (for ``"optimal"``).
    trains_W : bool
        W is trained (the keys are the tokens) or fixed (the keys are ``W0 x_it``).
    """
    S, n, T = scores.shape
    if isinstance(spec, str) and spec == "final":
        selected = np.argmax(scores[-1], axis=1).astype(np.int64)
        how = "final: argmax_t of the scores at the last recorded save"
    elif isinstance(spec, str):
        selected = np.argmax(y[:, None] * values.reshape(n, T), axis=1).astype(np.int64)
        how = "optimal: argmax_t y_i nu^T x_it (observed labels)"
    else:
        selected = spec
        how = "given"
    svm = att_svm_gram(gram, T, selected)
    rows = np.arange(n)
    others = np.arange(T)[None, :] != selected[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = scores[:, rows, selected][:, :, None] - scores                    # (S, n, T)
        min_gap = np.where(others[None], gaps, np.inf).min(axis=2)               # (S, n)
        if np.isfinite(svm.norm):
            lam = svm.multipliers                                                # 0 at the selected tokens
            inner = np.einsum("snt,nt->s", gaps, lam)                            # = z^T w
            mm_cos = inner / (norms * svm.norm)
            mm_margin = min_gap * (svm.norm / norms[:, None])
        else:
            mm_cos = np.full(S, np.nan)
            mm_margin = np.full((S, n), np.nan)
    mm_cos = np.where(norms > 0, mm_cos, np.nan)
    mm_margin = np.where(norms[:, None] > 0, mm_margin, np.nan)
    sample_margin = np.where(others, svm.margins, np.inf).min(axis=1) if svm.feasible else np.full(n, np.nan)
    summary = {
        "selection": how,
        "keys": KEYS[bool(trains_W)],
        "selected": [int(t) for t in selected],
        "feasible": bool(svm.feasible),
        "status": svm.status,
        "message": svm.message,
        "reason": svm.reason,
        "norm": _json_float(svm.norm),
        "sample_margin": [_json_float(m) for m in sample_margin],
        "n_support": int(svm.support.sum()),
        "kkt": {k: _json_float(v) for k, v in svm.kkt.items()},
    }
    return mm_cos, mm_margin, summary
