"""The att-SVM of Tarzanagh et al. (DESIGN.md §9), solved exactly in Gram form.

For keys ``k_it`` (``k_it = W x_it``; the tokens when ``W = I``) and one selected token
``alpha_i`` per sample,

    p^mm = argmin ||p||  subject to  (k_{i alpha_i} - k_it)^T p >= 1  for every i and t != alpha_i.

Write the ``M = n (T - 1)`` constraints as ``A p >= 1`` with ``A = D K``: ``K`` (N, d) the
keys flattened row-major (row ``i*T + t``), ``D`` (M, N) the difference matrix whose row
``m = (i, t)`` is ``+1`` at ``(i, alpha_i)`` and ``-1`` at ``(i, t)``. This is a
least-distance program (LDP). Lawson & Hanson (*Solving Least Squares Problems*, ch. 23)
solve it by one non-negative least-squares problem:

    u = argmin_{u >= 0} ||E u - f||,   E = [A^T; 1^T]  (d+1, M),   f = (0, ..., 0, 1),

and, with ``s = sum(u)``, ``p^mm = A^T u / (1 - s)``. The NNLS optimum depends on ``E``
only through ``E^T E = A A^T + 1 1^T``, so ``A^T`` may be replaced by any factor ``F`` with
``F^T F = A A^T = D Gkk D^T`` (here a rank-revealing eigen factor, shape (rank, M)): ``d``
never appears. The LDP multipliers are ``lambda = u / (1 - s)``:

* stationarity: ``p^mm = A^T lambda = K^T w`` with token coefficients ``w = D^T lambda``;
* complementary slackness (NNLS optimality gives ``A A^T u >= 1 - s`` with equality where
  ``u > 0``): margins ``A p^mm = A A^T lambda >= 1``, ``= 1`` on the support, so
  ``||p^mm||^2 = lambda^T A A^T lambda = sum(lambda)``;
* the NNLS residual is ``||E u - f||^2 = 1 - s = 1 / (1 + ||p^mm||^2)``: it is zero exactly
  when the problem is infeasible, and then ``y = u / s`` is a Farkas certificate (a convex
  combination of the constraint rows equal to zero). In general ``min ||A^T y||`` over
  convex combinations ``y`` is ``1 / ||p^mm||``.

Infeasibility is an outcome (``AttSVM.feasible = False``), not an error; only bad input raises
``ConfigError``. Every solution is checked against the KKT conditions before it is called
optimal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from ._validation import ConfigError, check_array, check_float, check_int

# -------------------------------------------------------------------- outcomes

OPTIMAL = "optimal"
INFEASIBLE = "infeasible"
INACCURATE = "inaccurate"
MAX_ITERATIONS = "max_iterations"

#: Status -> message. Each outcome says what it means and what to do.
MESSAGES = {
    OPTIMAL: "optimal: the KKT residuals are within kkt_tol",
    INFEASIBLE: "infeasible: no p satisfies every margin constraint for this selection; "
                "see `reason`, and choose another selection (e.g. selected_tokens of a longer run)",
    INACCURATE: "inaccurate: the NNLS solution fails the KKT check (see `kkt`); the problem is "
                "numerically ill-conditioned (nearly inseparable selection or nearly dependent keys); "
                "the returned p is the solver's best estimate, do not trust it beyond the residuals shown",
    MAX_ITERATIONS: "max_iterations: Lawson-Hanson NNLS reached its iteration limit; the result is NaN",
}

# -------------------------------------------------------------------- constants

#: Bound on the scale-free KKT residuals for a solution to be called optimal.
KKT_TOL = 1e-8
#: Eigenvalues of the constraint Gram below this times (M * the largest) are dropped from the factor.
RANK_RTOL = 1e-15
#: A Farkas certificate ``||A^T y|| <= CERT_TOL * max_m ||a_m||`` (``y`` convex weights) proves
#: infeasibility at Gram precision (the Gram squares the keys, so sqrt(eps) is the resolution).
CERT_TOL = 1e-7
#: A constraint row with ``||a_m||^2 <= DUP_RTOL * (||k_alpha||^2 + ||k_t||^2)`` is zero at Gram precision.
DUP_RTOL = 8 * np.finfo(float).eps
#: An eigenvalue of the constraint Gram below -PSD_RTOL times its largest (or max |diag Gkk|): Gkk is not PSD.
PSD_RTOL = 1e-8
#: Lawson-Hanson iteration limit, in units of the number of constraints M.
NNLS_MAXITER_PER_CONSTRAINT = 10


@dataclass(frozen=True, eq=False)
class AttSVM:
    """The att-SVM solution for one selection (see ``att_svm`` and ``att_svm_gram``).

    Arrays indexed by ``(i, t)`` have shape (n, T); the selected token of sample ``i`` is
    ``selected[i]`` and carries no constraint of its own.

    Attributes
    ----------
    p : ndarray, shape (d,), or None
        ``p^mm``. ``None`` from ``att_svm_gram`` (no d-dimensional object is formed there;
        use ``p = K^T token_coef.ravel()``). NaN when infeasible.
    norm : float
        ``||p^mm|| = sqrt(sum(multipliers))``; ``inf`` when infeasible.
    multipliers : ndarray, shape (n, T)
        LDP multipliers ``lambda_it >= 0`` of the constraints ``(k_{i alpha_i} - k_it)^T p >= 1``;
        0 at the selected tokens. NaN when infeasible.
    token_coef : ndarray, shape (n, T)
        ``w = D^T lambda`` with ``p^mm = K^T w.ravel()`` (row-major ``i*T + t``, the order of the
        dual engine's ``a``): ``w_{i alpha_i} = sum_t lambda_it`` and ``w_it = -lambda_it``.
        NaN when infeasible.
    support : ndarray of bool, shape (n, T)
        Active constraints: ``lambda_it > tol * max(lambda)`` or ``|margin_it - 1| <= tol``.
        False at the selected tokens and when infeasible.
    margins : ndarray, shape (n, T)
        ``(k_{i alpha_i} - k_it)^T p^mm``; ``+inf`` at the selected tokens (no constraint), so
        ``margins.min()`` is the binding margin. NaN elsewhere when infeasible.
    selected : ndarray of int64, shape (n,)
    feasible : bool
        Whether a separating ``p`` was found (False for ``"infeasible"`` and ``"max_iterations"``).
    status : str
        ``"optimal"``, ``"infeasible"``, ``"inaccurate"`` or ``"max_iterations"``.
    message : str
        The human message of ``status`` (``MESSAGES``).
    reason : str
        Why the selection is infeasible (or, for other non-optimal outcomes, what failed);
        empty when the status is ``"optimal"``.
    kkt : dict of str -> float
        Scale-free residuals, NaN where not applicable:
        ``primal`` = min margin - 1 (>= -kkt_tol required);
        ``dual`` = min lambda / max lambda (>= 0);
        ``complementarity`` = max |lambda (margin - 1)| / sum(lambda);
        ``stationarity`` = ||p - A^T lambda|| / ||p|| with ``A^T lambda`` summed row by row from
        the key differences (``att_svm`` only; it checks ``p = K^T D^T lambda``);
        ``norm_identity`` = | ||p||^2 / sum(lambda) - 1 | (``||p||^2 = w^T Gkk w``);
        ``certificate`` = ``min ||A^T y|| / max ||a_m||`` over the NNLS convex weights ``y``
        (``1 / (||p^mm|| max ||a_m||)`` when feasible; ~0 proves infeasibility).
    """

    p: np.ndarray | None
    norm: float
    multipliers: np.ndarray
    token_coef: np.ndarray
    support: np.ndarray
    margins: np.ndarray
    selected: np.ndarray
    feasible: bool
    status: str
    message: str
    reason: str
    kkt: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """``status == "optimal"``."""
        return self.status == OPTIMAL


# -------------------------------------------------------------------- validation


def _check_selected(selected, n, T, hint):
    arr = np.asarray(selected)
    if arr.shape != (n,):
        raise ConfigError(f"selected must have shape ({n},), one token index per sample; got shape {arr.shape}; "
                          f"{hint}")
    if arr.dtype == np.bool_ or arr.dtype.kind not in "iuf":
        raise ConfigError(f"selected must hold integer token indices; got dtype {arr.dtype}; {hint}")
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not np.all(whole):
            i = int(np.argmin(whole))
            raise ConfigError(f"selected must hold integer token indices; got {arr[i]} at index {i}; {hint}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= T)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ConfigError(f"selected must hold token indices in [0, T) = [0, {T}); got {arr[i]} at index {i}; "
                          f"{hint}")
    return arr


def _check_keys(keys):
    K = check_array("keys", keys, ndim=3, hint="keys holds k_it = W x_it for n samples of T tokens, shape (n, T, d)")
    n, T, d = K.shape
    if n < 1 or T < 2 or d < 1:
        raise ConfigError(f"keys must have n >= 1, T >= 2, d >= 1 (with one token there is nothing to select); "
                          f"got shape {K.shape}")
    return K


# -------------------------------------------------------------------- Gram algebra


def _others(selected, T):
    """Flat indices (M,) of the constrained tokens ``(i, t != alpha_i)`` and their selected partners."""
    n = selected.size
    tok = np.arange(T)[None, :]
    mask = tok != selected[:, None]
    idx = (np.arange(n)[:, None] * T + tok)[mask]
    sel = np.repeat(np.arange(n) * T + selected, T - 1)
    return idx, sel, mask


def _constraint_gram(G, idx, sel):
    """``D G D^T`` (M, M) from the key Gram without forming D."""
    return G[np.ix_(sel, sel)] - G[np.ix_(sel, idx)] - G[np.ix_(idx, sel)] + G[np.ix_(idx, idx)]


def _gram_factor(vals, vecs, scale):
    """Rank-revealing factor F (rank, M) with ``F^T F = V diag(vals) V^T / scale``."""
    top = max(vals[-1], 0.0)
    keep = vals > RANK_RTOL * vals.size * top
    return np.sqrt(vals[keep] / scale)[:, None] * vecs[:, keep].T


def _ij(m_flat, T):
    i, t = divmod(int(m_flat), T)
    return i, t


def _solve(Q, key_sq, T, selected, tol, kkt_tol):
    """Core LDP solve on the constraint Gram ``Q = A A^T`` (M, M), rows in ``_others`` order.

    ``key_sq`` (N,) holds ``||k_it||^2`` (the diagonal of Gkk), the scale against which a
    zero row is judged. Returns a dict of AttSVM fields except ``p``.
    """
    N = key_sq.size
    n = N // T
    idx, sel, mask = _others(selected, T)
    M = idx.size
    Q = 0.5 * (Q + Q.T)
    diagQ = np.diag(Q).copy()
    nan_nt = np.full((n, T), np.nan)

    def outcome(status, reason, *, lam=None, margins=None, kkt=None, feasible=False):
        full_lam = nan_nt.copy()
        full_m = nan_nt.copy()
        w = nan_nt.copy()
        support = np.zeros((n, T), dtype=bool)
        norm = np.inf
        if lam is not None:
            full_lam = np.zeros((n, T))
            full_lam[mask] = lam
            full_m[mask] = margins
            w = -full_lam
            w[np.arange(n), selected] = full_lam.sum(axis=1)
            top = lam.max() if M else 0.0
            act = (lam > tol * top) | (np.abs(margins - 1.0) <= tol)
            support[mask] = act
            norm = float(np.sqrt(lam.sum()))
        full_m[np.arange(n), selected] = np.inf
        base = {k: np.nan for k in ("primal", "dual", "complementarity", "stationarity", "norm_identity",
                                    "certificate")}
        base.update(kkt or {})
        return dict(norm=norm, multipliers=full_lam, token_coef=w, support=support, margins=full_m,
                    selected=selected, feasible=feasible, status=status, message=MESSAGES[status],
                    reason=reason, kkt=base)

    vals, vecs = np.linalg.eigh(Q)
    if vals[0] < -PSD_RTOL * max(vals[-1], float(np.abs(key_sq).max())):
        raise ConfigError(f"Gkk must be positive semidefinite (a Gram matrix K K^T); the constraint Gram "
                          f"D Gkk D^T has eigenvalue {vals[0]:.3e}; pass Gkk = K @ K.T")

    # A zero constraint row means 0 >= 1: name the first one.
    zero = diagQ <= DUP_RTOL * (np.abs(key_sq[sel]) + np.abs(key_sq[idx]))
    if np.any(zero):
        i, t = _ij(idx[np.argmax(zero)], T)
        count = int(zero.sum())
        more = f" ({count} such tokens in all)" if count > 1 else ""
        return outcome(INFEASIBLE, f"no p separates the selection: sample {i} token {t} has the same key as "
                                   f"its selected token {selected[i]}{more}", kkt={"certificate": 0.0})

    # Scale the rows to max norm 1 so the residual thresholds are scale-free:
    # A' = A / c gives p' = c p and lambda' = c^2 lambda.
    c2 = float(diagQ.max())
    Qs = Q / c2
    F = _gram_factor(vals, vecs, c2)
    E = np.vstack([F, np.ones((1, M))])
    f = np.zeros(E.shape[0])
    f[-1] = 1.0
    try:
        u, _ = nnls(E, f, maxiter=NNLS_MAXITER_PER_CONSTRAINT * M)
    except RuntimeError as exc:
        return outcome(MAX_ITERATIONS, f"scipy.optimize.nnls stopped: {exc} (M = {M} constraints)")
    s = float(u.sum())
    gap = 1.0 - s  # = ||E u - f||^2 = 1 / (1 + ||p'||^2) at the NNLS optimum
    certificate = float(np.sqrt(max(u @ Qs @ u, 0.0))) / s if s > 0 else np.inf

    kkt = {"certificate": certificate}
    lam = margins = None
    if gap > 0:
        # lambda = u / (1 - s) loses ~eps / (1 - s) = eps (1 + ||p'||^2) relative when the margin
        # norm is large; re-solving the KKT system Q_SS lambda_S = 1 on the NNLS support S avoids
        # that cancellation. Keep whichever of the two meets the KKT conditions better.
        lam_s, margins, res = _residuals(u / gap, Qs)
        S = u > 0
        polished = np.zeros(M)
        polished[S] = np.linalg.lstsq(Qs[np.ix_(S, S)], np.ones(int(S.sum())), rcond=None)[0]
        if np.all(polished >= 0) and polished.sum() > 0:
            cand = _residuals(polished, Qs)
            if _badness(cand[2]) < _badness(res):
                lam_s, margins, res = cand
        lam = lam_s / c2
        kkt.update(res)
        failed = _kkt_failures(kkt, kkt_tol)
        if not failed:
            return outcome(OPTIMAL, "", lam=lam, margins=margins, kkt=kkt, feasible=True)
    if certificate <= CERT_TOL:
        rows = np.flatnonzero(u > tol * u.max())
        samples = sorted({_ij(idx[m], T)[0] for m in rows})
        pairs = ", ".join(f"(sample {a}, token {b})" for a, b in (_ij(idx[m], T) for m in rows[:6]))
        pairs += ", ..." if rows.size > 6 else ""
        return outcome(INFEASIBLE, f"no p separates the selection: the constraints of samples {samples} "
                                   f"contradict (a convex combination of their rows k_alpha - k_t, over "
                                   f"{pairs}, is zero to {certificate:.1e} of the largest row; a Farkas "
                                   f"certificate, NNLS residual {np.sqrt(max(gap, 0.0)):.1e})",
                       kkt={"certificate": certificate})
    if lam is None:
        return outcome(INACCURATE, f"NNLS residual^2 1 - sum(u) = {gap:.3e} <= 0 but no Farkas certificate "
                                   f"(||A^T y|| / max||a|| = {certificate:.3e} > {CERT_TOL:g}); feasibility "
                                   "undecided", kkt=kkt)
    detail = "; ".join(f"{k} = {kkt[k]:.3e}" for k in failed)
    return outcome(INACCURATE, f"KKT check failed (kkt_tol = {kkt_tol:g}): {detail}", lam=lam, margins=margins,
                   kkt=kkt, feasible=True)


def _residuals(lam_s, Qs):
    """Margins ``Qs lambda`` and the scale-free KKT residuals of scaled multipliers ``lambda``."""
    margins = Qs @ lam_s  # = A p, invariant under the row scaling
    total = float(lam_s.sum())
    res = dict(
        primal=float(margins.min() - 1.0),
        dual=float(lam_s.min() / lam_s.max()) if total > 0 else 0.0,
        complementarity=float(np.max(np.abs(lam_s * (margins - 1.0))) / total) if total > 0 else 0.0,
        norm_identity=float(abs(lam_s @ Qs @ lam_s / total - 1.0)) if total > 0 else 0.0,
    )
    return lam_s, margins, res


def _badness(res):
    return max(-res["primal"], -res["dual"], res["complementarity"], res["norm_identity"])


def _kkt_failures(kkt, kkt_tol):
    failed = []
    if not kkt["primal"] >= -kkt_tol:
        failed.append("primal")
    if not kkt["dual"] >= -kkt_tol:
        failed.append("dual")
    for key in ("complementarity", "norm_identity", "stationarity"):
        value = kkt.get(key, np.nan)
        if not np.isnan(value) and not value <= kkt_tol:
            failed.append(key)
    return failed


# -------------------------------------------------------------------- public API


def att_svm(keys, selected, *, tol=1e-10, kkt_tol=KKT_TOL) -> AttSVM:
    """Solve the att-SVM ``min ||p|| s.t. (k_{i alpha_i} - k_it)^T p >= 1`` exactly.

    Forms the constraint Gram ``A A^T = D Gkk D^T`` once, from the key differences (more
    accurate than through ``Gkk`` when keys nearly coincide), and solves the dual in Gram form
    as ``att_svm_gram`` does; the only d-dimensional work after that is ``p = K^T w`` and the
    checks of the margins and of stationarity against the keys.

    Parameters
    ----------
    keys : array_like, shape (n, T, d)
        ``k_it = W x_it``; for ``W = I`` the tokens ``X``. ``T >= 2``.
    selected : array_like of int, shape (n,)
        The selected token ``alpha_i`` of each sample (e.g. ``selected_tokens(result)`` or
        ``optimal_tokens(X, y, nu)``).
    tol : float, optional
        Relative threshold for the support: ``lambda > tol * max(lambda)`` or ``|margin - 1| <= tol``.
    kkt_tol : float, optional
        Bound on the scale-free KKT residuals (``AttSVM.kkt``) for the status ``"optimal"``.

    Returns
    -------
    AttSVM
        ``feasible=False`` (``p`` NaN, ``norm`` inf, ``reason`` saying which constraints
        contradict) when no ``p`` separates the selection; this is an outcome, not an error.

    Raises
    ------
    ConfigError
        If ``keys`` is not a finite (n, T, d) array with T >= 2, or ``selected`` is not (n,)
        integer indices in [0, T).

    Examples
    --------
    >>> import numpy as np, attnsim
    >>> keys = np.array([[[2.0, 0.0], [0.0, 0.0]]])      # one sample, two tokens
    >>> svm = attnsim.att_svm(keys, [0])
    >>> svm.status, svm.p.round(12), round(svm.norm, 12), svm.multipliers.round(12)
    ('optimal', array([0.5, 0. ]), 0.5, array([[0.  , 0.25]]))
    """
    K3 = _check_keys(keys)
    n, T, d = K3.shape
    sel = _check_selected(selected, n, T, hint=f"keys has shape (n, T, d) = {K3.shape}")
    tol = check_float("tol", tol, nonnegative=True, hi=1.0, hint="a relative threshold, e.g. tol=1e-10")
    kkt_tol = check_float("kkt_tol", kkt_tol, positive=True, hint="e.g. kkt_tol=1e-8")
    K = K3.reshape(n * T, d)
    # The constraint Gram straight from the key differences, O(M^2 d) like forming Gkk: through
    # D Gkk D^T a row with ||k_alpha - k_t|| << ||k|| would lose eps ||k||^2 / ||k_alpha - k_t||^2
    # of its relative accuracy to cancellation (att_svm_gram has no choice).
    idx, rep, _ = _others(sel, T)
    A = K[rep] - K[idx]
    out = _solve(A @ A.T, np.einsum("nd,nd->n", K, K), T, sel, tol, kkt_tol)
    if not np.isfinite(out["token_coef"]).all():
        return AttSVM(p=np.full(d, np.nan), **out)
    w = out["token_coef"].ravel()
    p = K.T @ w
    # Stationarity checked along a different arithmetic path: A^T lambda summed over the rows.
    lam = out["multipliers"]
    diffs = K3[np.arange(n), sel][:, None, :] - K3  # (n, T, d), zero rows at the selected tokens
    at_lam = np.einsum("it,itd->d", lam, diffs)
    pn = float(np.linalg.norm(p))
    kkt = dict(out["kkt"])
    kkt["stationarity"] = float(np.linalg.norm(p - at_lam) / pn) if pn > 0 else 0.0
    # Margins straight from p and the keys (not from the Gram), with +inf at the selected tokens.
    margins = np.einsum("itd,d->it", diffs, p)
    margins[np.arange(n), sel] = np.inf
    _, _, mask = _others(sel, T)
    lam_c, m_c = lam[mask], margins[mask]
    kkt["primal"] = float(m_c.min() - 1.0)
    total = float(lam_c.sum())
    kkt["complementarity"] = float(np.max(np.abs(lam_c * (m_c - 1.0))) / total) if total > 0 else 0.0
    kkt["norm_identity"] = float(abs(pn * pn / total - 1.0)) if total > 0 else 0.0
    if out["status"] == OPTIMAL:
        failed = _kkt_failures(kkt, kkt_tol)
        if failed:
            detail = "; ".join(f"{k} = {kkt[k]:.3e}" for k in failed)
            out.update(status=INACCURATE, message=MESSAGES[INACCURATE],
                       reason=f"KKT check failed (kkt_tol = {kkt_tol:g}): {detail}")
    out.update(kkt=kkt, margins=margins)
    return AttSVM(p=p, **out)


def att_svm_gram(Gkk, T, selected, *, tol=1e-10, kkt_tol=KKT_TOL) -> AttSVM:
    """The att-SVM from the key Gram alone; no d-dimensional object is formed.

    Parameters
    ----------
    Gkk : array_like, shape (N, N)
        ``K K^T`` for the keys flattened row-major (row ``i*T + t``), ``N = n T``.
    T : int
        Tokens per sample (>= 2, dividing N).
    selected : array_like of int, shape (n,)
    tol, kkt_tol : float
        As in ``att_svm``.

    Returns
    -------
    AttSVM
        With ``p = None``; ``p^mm = K^T token_coef.ravel()``, ``||p^mm||^2 = sum(multipliers)``,
        margins ``= (D Gkk D^T) lambda`` and ``kkt["stationarity"]`` NaN.

    Raises
    ------
    ConfigError
        If ``Gkk`` is not a finite symmetric positive-semidefinite (N, N) array, ``T`` does not
        divide N, or ``selected`` is not (N/T,) integer indices in [0, T).
    """
    G = check_array("Gkk", Gkk, ndim=2, hint="Gkk is the key Gram K K^T, shape (N, N) with N = n T")
    N = G.shape[0]
    if G.shape != (N, N):
        raise ConfigError(f"Gkk must be square, shape (N, N); got {G.shape}")
    T = check_int("T", T, minimum=2, hint="tokens per sample; with one token there is nothing to select")
    if N % T or N == 0:
        raise ConfigError(f"T must divide N = Gkk.shape[0] = {N} (N = n T with n >= 1); got T = {T}")
    asym = float(np.max(np.abs(G - G.T)))
    scale = float(np.max(np.abs(G)))
    if asym > 1e-12 * max(scale, 1e-300):
        raise ConfigError(f"Gkk must be symmetric (a Gram matrix K K^T); got max |Gkk - Gkk^T| = {asym:.3e} "
                          f"with max |Gkk| = {scale:.3e}")
    sel = _check_selected(selected, N // T, T, hint=f"Gkk has N = {N} rows and T = {T}, so n = {N // T}")
    tol = check_float("tol", tol, nonnegative=True, hi=1.0, hint="a relative threshold, e.g. tol=1e-10")
    kkt_tol = check_float("kkt_tol", kkt_tol, positive=True, hint="e.g. kkt_tol=1e-8")
    idx, rep, _ = _others(sel, T)
    Q = _constraint_gram(G, idx, rep)
    return AttSVM(p=None, **_solve(Q, np.diag(G).copy(), T, sel, tol, kkt_tol))


def mm_cosine_dual(z0, a, Gkk, P0, w, norm_mm) -> float:
    """``cos angle(p, p^mm)`` for ``p = p0 + K^T a`` from dual quantities only.

    ``<p, p^mm> = z0^T w + a^T Gkk w`` and ``||p||^2 = P0 + 2 a^T z0 + a^T Gkk a``.

    Parameters
    ----------
    z0 : array_like, shape (N,)
        ``K p0``.
    a : array_like, shape (N,)
        Dual coefficients of ``p - p0``.
    Gkk : array_like, shape (N, N)
        ``K K^T``.
    P0 : float
        ``||p0||^2``.
    w : array_like, shape (N,) or (n, T)
        ``AttSVM.token_coef`` (``p^mm = K^T w``).
    norm_mm : float
        ``AttSVM.norm``.

    Returns
    -------
    float
        The cosine; NaN if ``p = 0``.

    Raises
    ------
    ConfigError
        On mismatched shapes, non-finite entries, or ``norm_mm`` not finite and > 0.
    """
    G = check_array("Gkk", Gkk, ndim=2, hint="the key Gram K K^T, shape (N, N)")
    N = G.shape[0]
    if G.shape != (N, N):
        raise ConfigError(f"Gkk must be square, shape (N, N); got {G.shape}")
    like = f"Gkk has shape {G.shape}"
    z0 = check_array("z0", z0, ndim=1, shape=(N,), hint=like)
    a = check_array("a", a, ndim=1, shape=(N,), hint=like)
    w = check_array("w", np.reshape(w, -1) if np.size(w) == N else w, ndim=1, shape=(N,), hint=like)
    P0 = check_float("P0", P0, nonnegative=True, hint="P0 = ||p0||^2")
    norm_mm = check_float("norm_mm", norm_mm, positive=True, hint="AttSVM.norm of a feasible selection")
    Gw = G @ w
    inner = float(z0 @ w + a @ Gw)
    sq = P0 + 2.0 * float(a @ z0) + float(a @ (G @ a))
    if not sq > 0:
        return float("nan")
    return inner / (np.sqrt(sq) * norm_mm)


def selected_tokens(result, at=-1) -> np.ndarray:
    """The token each sample attends to most at save index ``at``, shape (n,), int64.

    ``argmax_t result.attention[at, i, t]`` (first on ties): the selection ``alpha`` the
    att-SVM is compared against (Tarzanagh et al. read it off the final attention).

    Raises
    ------
    ConfigError
        If ``at`` is not an integer save index in ``[-S, S)``.
    """
    att = np.asarray(result.attention)
    S = att.shape[0]
    if S == 0:
        raise ConfigError("result has no save times (result.attention has shape (0, n, T)); nothing to select")
    at = check_int("at", at, minimum=-S, maximum=S - 1,
                   hint=f"a save index into result.steps (S = {S}); -1 is the last")
    return np.argmax(att[at], axis=-1).astype(np.int64)


def optimal_tokens(X, y, nu) -> np.ndarray:
    """The most label-aligned token of each sample, ``argmax_t y_i nu^T x_it``, shape (n,), int64.

    Raises
    ------
    ConfigError
        On shapes other than X (n, T, d), y (n,) of +-1, nu (d,), or non-finite entries.
    """
    from ._validation import check_labels

    X = check_array("X", X, ndim=3, hint="X holds n samples of T tokens in R^d, shape (n, T, d)")
    n, T, d = X.shape
    like = f"X has shape (n, T, d) = {X.shape}"
    y = check_labels("y", y, n, hint=like)
    nu = check_array("nu", nu, ndim=1, shape=(d,), hint=like)
    return np.argmax(y[:, None] * (X @ nu), axis=1).astype(np.int64)


__all__ = ["AttSVM", "att_svm", "att_svm_gram", "mm_cosine_dual", "optimal_tokens", "selected_tokens"]
