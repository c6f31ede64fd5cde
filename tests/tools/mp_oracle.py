"""Arbitrary-precision oracle for the attention model (not a test module).

Evaluates the model of DESIGN.md §1 directly in mpmath, from the *same* float64 inputs
(``mpmath.mpf(float)`` is exact): scores ``z = X (W^T p)``, ``s = softmax(z)``,
``f = sum_t s_t v_t``, ``L = mean log(1 + exp(-y f))``, and its gradient by the chain rule
through those operations (the softmax through its full Jacobian ``s_t (delta_tu - s_u)``).
Nothing here is attnsim's formula: no top-relative rewriting, no closed-form shortcut.

Precision. The direct chain rule cancels: ``sum_t v_t s_t (delta_tu - s_u)`` for the top
token is ``s_u (v_u - f)`` with ``v_u - f ~ e^{-gap}``, so it loses about ``gap / ln 10``
digits. The oracle therefore works at ``DIGITS + gap / ln 10 + GUARD`` decimal digits, so
that ``DIGITS = 50`` digits survive; ``gradients(..., check=True)`` re-evaluates with 20 more
digits and asserts the two agree to 45 digits (a self-check of that budget).
"""

import math

import mpmath
import numpy as np

DIGITS = 50
GUARD = 15


def _mp_array(a):
    return [mpmath.mpf(float(x)) for x in np.asarray(a, dtype=np.float64).ravel()]


def _query(W, p, d):
    # q_k = (W^T p)_k = sum_r W_rk p_r
    return [mpmath.fsum(W[r * d + k] * p[r] for r in range(d)) for k in range(d)]


def _gap_bound(z, n, T):
    """Largest top-score gap (as a float) of the mp scores."""
    worst = 0.0
    for i in range(n):
        row = sorted(z[i * T:(i + 1) * T], reverse=True)
        if T > 1:
            worst = max(worst, float(row[0] - row[1]))
    return worst


def _scores(X, q, n, T, d):
    return [mpmath.fsum(X[j * d + k] * q[k] for k in range(d)) for j in range(n * T)]


def _forward_backward(X, y, W, p, nu, n, T, d):
    q = _query(W, p, d)
    z = _scores(X, q, n, T, d)
    v = [mpmath.fsum(X[j * d + k] * nu[k] for k in range(d)) for j in range(n * T)]
    loss = mpmath.mpf(0)
    dz = [mpmath.mpf(0)] * (n * T)
    for i in range(n):
        zi = z[i * T:(i + 1) * T]
        vi = v[i * T:(i + 1) * T]
        e = [mpmath.exp(zt) for zt in zi]          # no max subtraction needed: mpmath has no overflow
        total = mpmath.fsum(e)
        s = [et / total for et in e]
        f = mpmath.fsum(st * vt for st, vt in zip(s, vi))
        u = y[i] * f
        loss += mpmath.log1p(mpmath.exp(-u))
        # dL/df_i = (1/n) * l'(u) * y_i with l'(u) = -1 / (1 + e^u)
        df = -y[i] / (1 + mpmath.exp(u)) / n
        ds = [df * vt for vt in vi]                 # dL/ds_t
        for uu in range(T):                         # dL/dz_u = sum_t dL/ds_t * ds_t/dz_u
            dz[i * T + uu] = mpmath.fsum(ds[t] * s[t] * ((1 if t == uu else 0) - s[uu]) for t in range(T))
    loss /= n
    # z_j = sum_k X_jk q_k ;  dL/dq_k = sum_j dz_j X_jk
    dq = [mpmath.fsum(dz[j] * X[j * d + k] for j in range(n * T)) for k in range(d)]
    # q_k = sum_r W_rk p_r ;  dL/dp_r = sum_k dq_k W_rk ;  dL/dW_rk = dq_k p_r
    dp = [mpmath.fsum(dq[k] * W[r * d + k] for k in range(d)) for r in range(d)]
    dW = [dq[k] * p[r] for r in range(d) for k in range(d)]
    return loss, dW, dp, z


def _unpack(X, y, W, p, nu):
    X = np.asarray(X, dtype=np.float64)
    n, T, d = X.shape
    return _mp_array(X), _mp_array(y), _mp_array(W), _mp_array(p), _mp_array(nu), n, T, d


def _digits_for(gap):
    return DIGITS + int(math.ceil(gap / math.log(10))) + GUARD


def gradients_mp(X, y, W, p, nu, *, extra_digits=0):
    """Loss and gradients as mpmath numbers: ``(loss, dW (list, d*d row-major), dp (list))``."""
    with mpmath.workdps(DIGITS + GUARD):
        Xm, ym, Wm, pm, num, n, T, d = _unpack(X, y, W, p, nu)
        gap = _gap_bound(_scores(Xm, _query(Wm, pm, d), n, T, d), n, T)
    with mpmath.workdps(_digits_for(gap) + extra_digits):
        loss, dW, dp, _ = _forward_backward(Xm, ym, Wm, pm, num, n, T, d)
        return loss, dW, dp


def gradients(X, y, W, p, nu, *, check=False):
    """The oracle rounded to float64: ``(loss, grad_W (d, d), grad_p (d,))``.

    With ``check=True`` the evaluation is repeated with 20 more digits and the two are
    required to agree to 45 significant digits (norm-wise).
    """
    d = np.asarray(W).shape[0]
    loss, dW, dp = gradients_mp(X, y, W, p, nu)
    if check:
        loss2, dW2, dp2 = gradients_mp(X, y, W, p, nu, extra_digits=20)
        for a, b in ((([loss]), [loss2]), (dW, dW2), (dp, dp2)):
            num = mpmath.sqrt(mpmath.fsum((x - y) ** 2 for x, y in zip(a, b)))
            den = mpmath.sqrt(mpmath.fsum(y ** 2 for y in b))
            assert num <= mpmath.mpf(10) ** -45 * den, "oracle precision budget too small"
    return (float(loss), np.array([float(x) for x in dW]).reshape(d, d), np.array([float(x) for x in dp]))


def loss_mp(X, y, W, p, nu):
    """The loss alone as a function of mp parameters (for mpmath numerical differentiation)."""
    X = np.asarray(X, dtype=np.float64)
    n, T, d = X.shape
    Xm, ym, num = _mp_array(X), _mp_array(y), _mp_array(nu)

    def loss(Wm, pm):
        q = _query(Wm, pm, d)
        z = _scores(Xm, q, n, T, d)
        total = mpmath.mpf(0)
        for i in range(n):
            e = [mpmath.exp(zt) for zt in z[i * T:(i + 1) * T]]
            f = mpmath.fsum(et * mpmath.fsum(Xm[(i * T + t) * d + k] * num[k] for k in range(d))
                            for t, et in enumerate(e)) / mpmath.fsum(e)
            total += mpmath.log1p(mpmath.exp(-ym[i] * f))
        return total / n

    return loss


class _OverBudget(Exception):
    """The iterates' top-score gap grew past what the working precision was sized for."""


def train(X, y, W, p, nu, *, lr, steps, trainable="Wp", budget_gap):
    """Exact full-batch GD from the float64 initial point, in mpmath.

    ``budget_gap`` is the top-score gap the precision is first sized for; when the iterates
    outgrow it (W and p trained together can widen the gap by far more), the whole run is
    repeated with the budget doubled, so the result always carries the full 50 digits.
    Returns ``(W, p, z)`` as mpmath lists (W row-major, z of length n*T) at the last step.
    """
    while True:
        try:
            return _train_at(X, y, W, p, nu, lr, steps, trainable, budget_gap)
        except _OverBudget:
            budget_gap *= 2.0
            assert budget_gap <= 1e4, "the gap outgrew every precision budget: the run diverges"


def _train_at(X, y, W, p, nu, lr, steps, trainable, budget_gap):
    with mpmath.workdps(_digits_for(budget_gap)):
        Xm, ym, Wm, pm, num, n, T, d = _unpack(X, y, W, p, nu)
        lr = mpmath.mpf(float(lr))
        for _ in range(steps):
            _, dW, dp, z = _forward_backward(Xm, ym, Wm, pm, num, n, T, d)
            if _gap_bound(z, n, T) > budget_gap:
                raise _OverBudget
            pm = [a - lr * b for a, b in zip(pm, dp)]
            if trainable == "Wp":
                Wm = [a - lr * b for a, b in zip(Wm, dW)]
        z = _scores(Xm, _query(Wm, pm, d), n, T, d)
        if _gap_bound(z, n, T) > budget_gap:
            raise _OverBudget
        return Wm, pm, z


def log_softmax(z, n, T):
    """Log attention ``log s_it`` of mp scores, as a float64 array of shape (n, T)."""
    out = np.empty((n, T))
    with mpmath.workdps(DIGITS + GUARD):
        gap = _gap_bound(z, n, T)
    with mpmath.workdps(_digits_for(gap)):   # z_top - lse = -log1p(sum e^{-gap}) cancels too
        for i in range(n):
            zi = z[i * T:(i + 1) * T]
            lse = mpmath.log(mpmath.fsum(mpmath.exp(zt) for zt in zi))
            out[i] = [float(zt - lse) for zt in zi]
    return out


def to_float(a, shape=None):
    arr = np.array([float(x) for x in a])
    return arr.reshape(shape) if shape is not None else arr


def head_gradient(X, y, W, p, nu):
    """``dL/dnu`` (d,) rounded to float64, by the chain rule through ``f_i = sum_t s_it (x_it . nu)``:
    ``dL/dnu_k = sum_i dL/df_i sum_t s_it X_itk``, evaluated at the same precision as ``gradients``."""
    with mpmath.workdps(DIGITS + GUARD):
        Xm, ym, Wm, pm, num, n, T, d = _unpack(X, y, W, p, nu)
        gap = _gap_bound(_scores(Xm, _query(Wm, pm, d), n, T, d), n, T)
    with mpmath.workdps(_digits_for(gap)):
        z = _scores(Xm, _query(Wm, pm, d), n, T, d)
        dnu = [mpmath.mpf(0)] * d
        for i in range(n):
            e = [mpmath.exp(zt) for zt in z[i * T:(i + 1) * T]]
            total = mpmath.fsum(e)
            s = [et / total for et in e]
            v = [mpmath.fsum(Xm[(i * T + t) * d + k] * num[k] for k in range(d)) for t in range(T)]
            f = mpmath.fsum(st * vt for st, vt in zip(s, v))
            df = -ym[i] / (1 + mpmath.exp(ym[i] * f)) / n
            for k in range(d):
                dnu[k] += df * mpmath.fsum(s[t] * Xm[(i * T + t) * d + k] for t in range(T))
        return np.array([float(x) for x in dnu])
