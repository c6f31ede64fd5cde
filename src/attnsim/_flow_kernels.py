"""numba kernels of the gradient-flow mode (``dynamics="flow"``).

Everything the flow integrator, its exact-GD start and its Jacobian estimate run
lives here, helpers included, because numba's on-disk cache does not notice
edits to helpers imported from another module.

Conventions (DESIGN.md §4, ``_kernels.py``): ``N = n T`` training tokens stacked
sample-major, ``v = X_all nu`` the token values, ``z`` the scores, ``c = dL/dz``.
Time is measured in GD steps: the flow of the loss with step ``alpha`` is
``d theta / d tau = alpha F(theta)``, ``F = -grad L``; GD is forward Euler on it
with step 1. With ``correct`` the integrated field is the first backward-error
correction ``alpha F - (alpha^2 / 2) F' F`` (the modified equation of Euler,
whose solution follows GD to O(alpha^2) instead of O(alpha)).

Precision at saturation: ``forward`` works relative to each sample's top token.
The softmax is ``s_r = 1 / (1 + sum_{t != r} e^{z_t - z_r})`` for the top token
``r``, ``v_t - f`` is formed as ``(v_t - v_r) - sum_{u != r} s_u (v_u - v_r)``,
so ``1 - s_r``, ``c`` and the relevant-set mass keep their digits when
``1 - s_r`` is far below machine epsilon relative to 1.

State vectors (``ys``, the "small" state integrated componentwise):

- ``mode 0`` (p only, ``p = p0 + K^T a``): ``[z (N) | a (N) | F (n)]``;
- ``mode 1`` (W and p): ``[z (N) | P (1) | b (N+1) | F (n)]`` plus the matrices
  ``S`` (N, N) and ``MT`` (N, N+1) of ``_kernels.dual_wp_run``, whose
  derivatives are of rank at most 4 and 2: each Runge-Kutta stage stores the
  factors and applies them to vectors instead of forming stage matrices, so a
  step costs O(N^2) per stage plus one rank-32 update of ``S`` and ``MT``.

``F`` (n,) accumulates ``int m_i (1 - m_i) d tau`` over the current call.
"""

import numpy as np
from numba import njit

# The scalar loss helpers and the two W,p sweeps are shared with the GD kernels. numba's on-disk cache keys
# a function on its own file only, so after editing them in _kernels.py, clear the
# caches (`make clean-cache`) before timing or testing the flow kernels.
from ._kernels import _dual_coef_sweep, _key_gram_sweep, _logistic_loss
from ._kernels import _neg_dloss as _sigmoid_neg

#: Rows of the per-stage factor array ``FAC`` (8, 12, N+1), mode 1.
#: dS_j = e q^T + q e^T + r z^T + z r^T ;  dM_j = beta c^T + gamma dc^T.
_F_E, _F_Q, _F_R, _F_Z, _F_BETA, _F_C, _F_GAMMA, _F_DC = range(8)


def dop853_tableau():
    """The Dormand-Prince 8(5,3) tableau (Hairer, Norsett & Wanner; as in SciPy's ``dop853_coefficients``).

    Returns
    -------
    C : ndarray, shape (12,)
    A : ndarray, shape (12, 12)
    B : ndarray, shape (12,)
        Weights of the 8th-order solution (the 13th stage is FSAL and unweighted).
    E3, E5 : ndarray, shape (12,)
        Weights of the 3rd- and 5th-order error estimators.
    """
    C = np.array([0.0, 0.526001519587677318785587544488e-01, 0.789002279381515978178381316732e-01, 0.118350341907227396726757197510, 0.281649658092772603273242802490, 0.333333333333333333333333333333, 0.25, 0.307692307692307692307692307692, 0.651282051282051282051282051282, 0.6, 0.857142857142857142857142857142, 1.0])
    A = np.zeros((12, 12))
    A[1, 0] = 5.26001519587677318785587544488e-2
    A[2, 0] = 1.97250569845378994544595329183e-2
    A[2, 1] = 5.91751709536136983633785987549e-2
    A[3, 0] = 2.95875854768068491816892993775e-2
    A[3, 2] = 8.87627564304205475450678981324e-2
    A[4, 0] = 2.41365134159266685502369798665e-1
    A[4, 2] = -8.84549479328286085344864962717e-1
    A[4, 3] = 9.24834003261792003115737966543e-1
    A[5, 0] = 3.7037037037037037037037037037e-2
    A[5, 3] = 1.70828608729473871279604482173e-1
    A[5, 4] = 1.25467687566822425016691814123e-1
    A[6, 0] = 3.7109375e-2
    A[6, 3] = 1.70252211019544039314978060272e-1
    A[6, 4] = 6.02165389804559606850219397283e-2
    A[6, 5] = -1.7578125e-2
    A[7, 0] = 3.70920001185047927108779319836e-2
    A[7, 3] = 1.70383925712239993810214054705e-1
    A[7, 4] = 1.07262030446373284651809199168e-1
    A[7, 5] = -1.53194377486244017527936158236e-2
    A[7, 6] = 8.27378916381402288758473766002e-3
    A[8, 0] = 6.24110958716075717114429577812e-1
    A[8, 3] = -3.36089262944694129406857109825
    A[8, 4] = -8.68219346841726006818189891453e-1
    A[8, 5] = 2.75920996994467083049415600797e1
    A[8, 6] = 2.01540675504778934086186788979e1
    A[8, 7] = -4.34898841810699588477366255144e1
    A[9, 0] = 4.77662536438264365890433908527e-1
    A[9, 3] = -2.48811461997166764192642586468
    A[9, 4] = -5.90290826836842996371446475743e-1
    A[9, 5] = 2.12300514481811942347288949897e1
    A[9, 6] = 1.52792336328824235832596922938e1
    A[9, 7] = -3.32882109689848629194453265587e1
    A[9, 8] = -2.03312017085086261358222928593e-2
    A[10, 0] = -9.3714243008598732571704021658e-1
    A[10, 3] = 5.18637242884406370830023853209
    A[10, 4] = 1.09143734899672957818500254654
    A[10, 5] = -8.14978701074692612513997267357
    A[10, 6] = -1.85200656599969598641566180701e1
    A[10, 7] = 2.27394870993505042818970056734e1
    A[10, 8] = 2.49360555267965238987089396762
    A[10, 9] = -3.0467644718982195003823669022
    A[11, 0] = 2.27331014751653820792359768449
    A[11, 3] = -1.05344954667372501984066689879e1
    A[11, 4] = -2.00087205822486249909675718444
    A[11, 5] = -1.79589318631187989172765950534e1
    A[11, 6] = 2.79488845294199600508499808837e1
    A[11, 7] = -2.85899827713502369474065508674
    A[11, 8] = -8.87285693353062954433549289258
    A[11, 9] = 1.23605671757943030647266201528e1
    A[11, 10] = 6.43392746015763530355970484046e-1
    B = np.zeros(12)
    B[0] = 5.42937341165687622380535766363e-2
    B[5] = 4.45031289275240888144113950566
    B[6] = 1.89151789931450038304281599044
    B[7] = -5.8012039600105847814672114227
    B[8] = 3.1116436695781989440891606237e-1
    B[9] = -1.52160949662516078556178806805e-1
    B[10] = 2.01365400804030348374776537501e-1
    B[11] = 4.47106157277725905176885569043e-2
    E3 = B.copy()
    E3[0] -= 0.244094488188976377952755905512
    E3[8] -= 0.733846688281611857341361741547
    E3[11] -= 0.220588235294117647058823529412e-1
    E5 = np.zeros(12)
    E5[0] = 0.1312004499419488073250102996e-1
    E5[5] = -0.1225156446376204440720569753e+1
    E5[6] = -0.4957589496572501915214079952
    E5[7] = 0.1664377182454986536961530415e+1
    E5[8] = -0.3503288487499736816886487290
    E5[9] = 0.3341791187130174790297318841
    E5[10] = 0.8192320648511571246570742613e-1
    E5[11] = -0.2235530786388629525884427845e-1
    return C, A, B, E3, E5


# ------------------------------------------------------------------ scalar helpers


@njit(cache=True)
def _dot(x, y):
    acc = 0.0
    for j in range(x.shape[0]):
        acc += x[j] * y[j]
    return acc


@njit(cache=True)
def _symv(G, x, out):
    """``out = G x`` for symmetric ``G`` (N, N), as contiguous row axpys."""
    N = out.shape[0]
    for j in range(N):
        out[j] = 0.0
    for l in range(N):
        xl = x[l]
        for j in range(N):
            out[j] += xl * G[l, j]


# ------------------------------------------------------------------ forward and its JVP


@njit(cache=True)
def forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak):
    """Softmax, ``c = dL/dz`` and the quantities its JVP needs, relative to each sample's top token.

    Parameters
    ----------
    z, v : ndarray, shape (N,)
    y : ndarray, shape (n,)
    T : int
    relevant : ndarray of bool, shape (T,)
    s, vf, c : ndarray, shape (N,)
        Output: attention, ``v_t - f_i`` and ``dL/dz``.
    coef, kap : ndarray, shape (n,)
        Output: ``c_it = coef_i s_it vf_it``; ``kap_i = d coef_i / d f_i``.
    top : ndarray of int64, shape (n,)
        Output: index of each sample's largest score.
    frak : ndarray, shape (n,)
        Output (overwritten): ``m_i (1 - m_i)``.

    Returns
    -------
    loss : float
        ``mean_i ell(y_i f_i)``.
    finite : bool
        False when a score or output is not finite.
    """
    n = y.shape[0]
    inv_n = 1.0 / n
    finite = True
    loss = 0.0
    for i in range(n):
        base = i * T
        r = 0
        zr = z[base]
        for t in range(1, T):
            if z[base + t] > zr:
                zr = z[base + t]
                r = t
        rest = 0.0
        for t in range(T):
            if t != r:
                ex = np.exp(z[base + t] - zr)
                s[base + t] = ex
                rest += ex
        total = 1.0 + rest
        vr = v[base + r]
        df = 0.0                                   # f - v_r, small when s_r -> 1
        m_in = 0.0
        m_out = 0.0
        for t in range(T):
            if t == r:
                st = 1.0 / total
            else:
                st = s[base + t] / total
                df += st * (v[base + t] - vr)
            s[base + t] = st
            if relevant[t]:
                m_in += st
            else:
                m_out += st
        f = vr + df
        yi = y[i]
        u = yi * f
        q = _sigmoid_neg(u)                        # -ell'(u)
        co = -inv_n * q * yi
        coef[i] = co
        kap[i] = inv_n * q * _sigmoid_neg(-u)     # sigma(-u) sigma(u), both factors with their digits
        top[i] = r
        for t in range(T):
            if t == r:
                vft = -df
            else:
                vft = (v[base + t] - vr) - df
            vf[base + t] = vft
            c[base + t] = co * s[base + t] * vft
        frak[i] = m_in * m_out
        loss += _logistic_loss(u)
        if not (np.isfinite(f) and np.isfinite(zr)):
            finite = False
    return loss * inv_n, finite


@njit(cache=True)
def jvp_c(dz, s, vf, coef, kap, top, T, dc):
    """Directional derivative ``dc = (dc/dz) dz`` at the point last given to ``forward``.

    Parameters
    ----------
    dz : ndarray, shape (N,)
    s, vf : ndarray, shape (N,)
    coef, kap : ndarray, shape (n,)
    top : ndarray of int64, shape (n,)
    T : int
    dc : ndarray, shape (N,)
        Output.

    Notes
    -----
    With ``dzr_t = dz_t - dz_r`` (r the top token), ``ds_t = s_t (dzr_t - sum_u s_u dzr_u)``,
    ``df = sum_t s_t dzr_t (v_t - f)`` and ``d coef = kap df``:
    ``dc_t = d coef s_t (v_t - f) + coef (ds_t (v_t - f) - s_t df)``.
    """
    n = top.shape[0]
    for i in range(n):
        base = i * T
        r = top[i]
        dz_r = dz[base + r]
        dbar = 0.0
        df = 0.0
        for t in range(T):
            if t != r:
                w = s[base + t] * (dz[base + t] - dz_r)
                dbar += w
                df += w * vf[base + t]
        dco = kap[i] * df
        co = coef[i]
        for t in range(T):
            dzr = 0.0 if t == r else dz[base + t] - dz_r
            st = s[base + t]
            dc[base + t] = dco * st * vf[base + t] + co * st * ((dzr - dbar) * vf[base + t] - df)


# ------------------------------------------------------------------ exact GD (the start)


@njit(cache=True)
def gd_p_run(a, z, Gkk, v, y, T, relevant, lr, n_steps, frak_sum, s, vf, coef, kap, top, c, frak, w):
    """Exact GD on p alone in dual coordinates (``_kernels.dual_p_run`` with the top-relative ``c``).

    State ``a``, ``z`` (N,) updated in place; ``frak_sum`` (n,) gains ``m_i (1 - m_i)``
    at every iterate before its update. Returns the steps completed.
    """
    N = z.shape[0]
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        for i in range(frak.shape[0]):
            frak_sum[i] += frak[i]
        _symv(Gkk, c, w)
        for j in range(N):
            a[j] -= lr * c[j]
            z[j] -= lr * w[j]
    return n_steps


@njit(cache=True)
def gd_wp_run(z, S, P, b, MT, Gxx, v, y, T, relevant, lr, n_steps, frak_sum,
              s, vf, coef, kap, top, c, frak, e, Sc, Hc):
    """Exact simultaneous GD on W and p (the recurrences of ``_kernels.dual_wp_run``).

    State ``z`` (N,), ``S`` (N, N), ``P`` (1,), ``b`` (N+1,), ``MT`` (N, N+1) updated in
    place. Returns the steps completed.
    """
    N = z.shape[0]
    for step in range(n_steps):
        _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
        if not ok:
            return step
        for i in range(frak.shape[0]):
            frak_sum[i] += frak[i]
        _symv(Gxx, c, e)
        zc = _dot(z, c)
        Pk = P[0]
        _key_gram_sweep(S, c, z, e, lr, lr * lr * Pk, Sc)
        cSc = _dot(c, Sc)
        _dual_coef_sweep(MT, e, c, b, lr, Hc)
        for r in range(N + 1):
            b[r] -= lr * Hc[r]
        corr = lr * lr * zc
        for j in range(N):
            z[j] = z[j] - lr * Sc[j] - lr * Pk * e[j] + corr * e[j]
        P[0] = Pk - 2.0 * lr * zc + lr * lr * cSc
    return n_steps


# ------------------------------------------------------------------ Jacobian spectral radius


@njit(cache=True)
def spectral_p(z, Gkk, v, y, T, relevant, vec, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` (p only, dual coordinates).

    ``F(a) = -c(z0 + Gkk a)``, so ``F' w = -(dc/dz)(Gkk w)``. ``vec`` (N,) is the start
    vector and receives the last iterate (a warm start for the next call).
    Returns the larger of the last two ratios ``||F' w|| / ||w||``.
    """
    N = z.shape[0]
    n = y.shape[0]
    s = np.empty(N); vf = np.empty(N); c = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64); frak = np.empty(n); w = np.empty(N); out = np.empty(N)
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    nrm = np.sqrt(_dot(vec, vec))
    if not nrm > 0.0:
        for j in range(N):
            vec[j] = np.sin(1.0 + 0.7 * j)
        nrm = np.sqrt(_dot(vec, vec))
    for j in range(N):
        vec[j] /= nrm
    rho = 0.0
    for it in range(n_iter):
        _symv(Gkk, vec, w)
        jvp_c(w, s, vf, coef, kap, top, T, out)
        nrm = np.sqrt(_dot(out, out))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for j in range(N):
            vec[j] = out[j] / nrm
    return rho


@njit(cache=True)
def spectral_wp(z, b, MT, Gqq, Gxx, v, y, T, relevant, vb, vMT, n_iter):
    """Power-iteration estimate of the spectral radius of ``F'`` for W and p, in (b, M) coordinates.

    ``F(b, M) = (-H c, -b c^T)`` with ``H = E + M Gxx`` and ``z = H^T Gqq b``; the JVP
    along ``(db, dM)`` is ``dz = Gxx (dM^T Gqq b + M^T Gqq db) + (Gqq db)[1:]``,
    ``dF_b = -(dM e + E dc + M Gxx dc)``, ``dF_M = -(db c^T + b dc^T)``.
    ``vb`` (N+1,) and ``vMT`` (N, N+1) hold the start vector and receive the last iterate.
    """
    N = z.shape[0]
    n = y.shape[0]
    N1 = N + 1
    s = np.empty(N); vf = np.empty(N); c = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64); frak = np.empty(n)
    e = np.empty(N); Gb = np.empty(N1); u2 = np.empty(N1); u = np.empty(N); dz = np.empty(N)
    dc = np.empty(N); gdc = np.empty(N); ob = np.empty(N1); oMT = np.empty((N, N1))
    forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, frak)
    _symv(Gxx, c, e)
    _symv(Gqq, b, Gb)
    nrm = np.sqrt(_dot(vb, vb) + np.sum(vMT * vMT))
    if not nrm > 0.0:
        for r in range(N1):
            vb[r] = np.sin(1.0 + 0.7 * r)
        for j in range(N):
            for r in range(N1):
                vMT[j, r] = np.sin(2.0 + 0.37 * (j * N1 + r))
        nrm = np.sqrt(_dot(vb, vb) + np.sum(vMT * vMT))
    vb /= nrm
    vMT /= nrm
    rho = 0.0
    for it in range(n_iter):
        _symv(Gqq, vb, u2)
        for j in range(N):
            u[j] = _dot(vMT[j], Gb) + _dot(MT[j], u2)
        _symv(Gxx, u, dz)
        for j in range(N):
            dz[j] += u2[j + 1]
        jvp_c(dz, s, vf, coef, kap, top, T, dc)
        _symv(Gxx, dc, gdc)
        ob[0] = 0.0
        for j in range(N):
            ob[j + 1] = dc[j]
        for j in range(N):
            ej = e[j]
            gj = gdc[j]
            for r in range(N1):
                ob[r] += ej * vMT[j, r] + gj * MT[j, r]
        for r in range(N1):
            ob[r] = -ob[r]
        for j in range(N):
            cj = c[j]
            dcj = dc[j]
            for r in range(N1):
                oMT[j, r] = -(vb[r] * cj + b[r] * dcj)
        nrm = np.sqrt(_dot(ob, ob) + np.sum(oMT * oMT))
        if not nrm > 0.0:
            return 0.0
        if it >= n_iter - 2:                      # the ratio can alternate: keep the larger
            rho = max(rho, nrm)
        for r in range(N1):
            vb[r] = ob[r] / nrm
        for j in range(N):
            for r in range(N1):
                vMT[j, r] = oMT[j, r] / nrm
    return rho


# ------------------------------------------------------------------ the flow's right-hand side


@njit(cache=True)
def _stage_p(ys, Gkk, v, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top, c, w1, w2):
    """d ys / d tau for p alone; ``ys = [z | a | F]``. Returns False on a non-finite output.

    ``F(a) = -c``, ``F' F = (dc/dz)(Gkk c)``; ``dz/dtau = Gkk da/dtau`` keeps z exact in a.
    """
    N = v.shape[0]
    n = y.shape[0]
    _, ok = forward(ys[:N], v, y, T, relevant, s, vf, coef, kap, top, c, kout[2 * N:2 * N + n])
    da = kout[N:2 * N]
    if correct:
        _symv(Gkk, c, w1)
        jvp_c(w1, s, vf, coef, kap, top, T, w2)
        h2 = 0.5 * alpha * alpha
        for j in range(N):
            da[j] = -alpha * c[j] - h2 * w2[j]
    else:
        for j in range(N):
            da[j] = -alpha * c[j]
    _symv(Gkk, da, kout[:N])
    return ok


@njit(cache=True)
def _lr_sym(S, x, out, i, hA, FAC, correct):
    """``out = S_i x``: ``S`` plus the rank-4 stage derivatives ``j < i`` weighted by ``hA[j]``."""
    _symv(S, x, out)
    for j in range(i):
        wj = hA[j]
        if wj == 0.0:
            continue
        fe = FAC[_F_E, j]
        fq = FAC[_F_Q, j]
        a1 = wj * _dot(fq, x)
        a2 = wj * _dot(fe, x)
        for l in range(out.shape[0]):
            out[l] += a1 * fe[l] + a2 * fq[l]
        if correct:
            fr = FAC[_F_R, j]
            fz = FAC[_F_Z, j]
            a3 = wj * _dot(fz, x)
            a4 = wj * _dot(fr, x)
            for l in range(out.shape[0]):
                out[l] += a3 * fr[l] + a4 * fz[l]


@njit(cache=True)
def _lr_m(MT, x1, x2, out1, out2, both, i, hA, FAC, correct):
    """``out1 = M_i x1`` (and ``out2 = M_i x2`` if ``both``): ``M`` plus rank-2 stage derivatives."""
    N = MT.shape[0]
    N1 = MT.shape[1]
    for r in range(N1):
        out1[r] = 0.0
        out2[r] = 0.0
    for j in range(N):
        a = x1[j]
        bb = x2[j] if both else 0.0
        for r in range(N1):
            m = MT[j, r]
            out1[r] += a * m
            out2[r] += bb * m
    for k in range(i):
        wk = hA[k]
        if wk == 0.0:
            continue
        beta = FAC[_F_BETA, k]
        ck = FAC[_F_C, k][:N]
        a1 = wk * _dot(ck, x1)
        a2 = wk * _dot(ck, x2) if both else 0.0
        for r in range(N1):
            out1[r] += a1 * beta[r]
            out2[r] += a2 * beta[r]
        if correct:
            gam = FAC[_F_GAMMA, k]
            dck = FAC[_F_DC, k][:N]
            a3 = wk * _dot(dck, x1)
            a4 = wk * _dot(dck, x2) if both else 0.0
            for r in range(N1):
                out1[r] += a3 * gam[r]
                out2[r] += a4 * gam[r]


@njit(cache=True)
def _stage_wp(i, hA, ys, S, MT, Gxx, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top):
    """d ys / d tau for W and p at stage ``i``; ``ys = [z | P | b | F]``.

    ``S`` and ``M`` at this stage are the step's base matrices plus the low-rank stage
    derivatives ``j < i`` weighted by ``hA`` (``h A[i, :]``). Writes this stage's
    factors into ``FAC[:, i]``. With ``Delta z = -P e - S c`` (the field's z-part in
    GD-step units), ``dc = (dc/dz) Delta z``, ``de = Gxx dc``, the correction
    ``F' F`` pushed to (z, S, P) is

        z:  (z.c) e - P de + (c.e) z - S dc
        S:  e (S c)^T + (S c) e^T - de z^T - z de^T
        P:  2 (P (c.e) - z.dc)

    and in the linear (b, M): ``(b (c.e) - E dc - M de,  H c c^T - b dc^T)``.
    (The (z, S, P) terms are the push-forward of the (W, p) correction, not the
    correction of the pushed-forward field: the two differ because (z, S, P) are
    nonlinear in (W, p).) Returns False on a non-finite output.
    """
    N = v.shape[0]
    n = y.shape[0]
    N1 = N + 1
    z = ys[:N]
    P = ys[N]
    b = ys[N + 1:N + 1 + N1]
    c = W[0, :N]; e = W[1, :N]; Sc = W[2, :N]; dz = W[3, :N]; dc = W[4, :N]; de = W[5, :N]
    Sdc = W[6, :N]; Me = W[7]; Mde = W[8]
    _, ok = forward(z, v, y, T, relevant, s, vf, coef, kap, top, c, kout[N + 1 + N1:N + 1 + N1 + n])
    _symv(Gxx, c, e)
    _lr_sym(S, c, Sc, i, hA, FAC, correct)
    ce = _dot(c, e)
    zc = _dot(z, c)
    h2 = 0.5 * alpha * alpha
    if correct:
        for j in range(N):
            dz[j] = -P * e[j] - Sc[j]
        jvp_c(dz, s, vf, coef, kap, top, T, dc)
        _symv(Gxx, dc, de)
        _lr_sym(S, dc, Sdc, i, hA, FAC, correct)
        _lr_m(MT, e, de, Me, Mde, True, i, hA, FAC, correct)
        zdc = _dot(z, dc)
        for j in range(N):
            kout[j] = -alpha * (P * e[j] + Sc[j]) - h2 * (zc * e[j] - P * de[j] + ce * z[j] - Sdc[j])
        kout[N] = -2.0 * alpha * zc - alpha * alpha * (P * ce - zdc)
    else:
        _lr_m(MT, e, e, Me, Mde, False, i, hA, FAC, correct)
        for j in range(N):
            kout[j] = -alpha * (P * e[j] + Sc[j])
        kout[N] = -2.0 * alpha * zc
    kb = kout[N + 1:N + 1 + N1]
    fbeta = FAC[_F_BETA, i]
    # H c = E c + M e, with E = [0; I]
    hc0 = Me[0]
    kb[0] = -alpha * hc0
    fbeta[0] = -alpha * b[0]
    if correct:
        kb[0] -= h2 * (b[0] * ce - Mde[0])
        fbeta[0] -= h2 * hc0
    for r in range(1, N1):
        hc = c[r - 1] + Me[r]
        kb[r] = -alpha * hc
        fbeta[r] = -alpha * b[r]
        if correct:
            kb[r] -= h2 * (b[r] * ce - dc[r - 1] - Mde[r])
            fbeta[r] -= h2 * hc
    fe = FAC[_F_E, i]; fq = FAC[_F_Q, i]; fz = FAC[_F_Z, i]; fc = FAC[_F_C, i]
    for j in range(N):
        fe[j] = e[j]
        fq[j] = -alpha * z[j]
        fz[j] = z[j]
        fc[j] = c[j]
    if correct:
        fr = FAC[_F_R, i]; fd = FAC[_F_DC, i]; fg = FAC[_F_GAMMA, i]
        for j in range(N):
            fq[j] -= h2 * Sc[j]
            fr[j] = h2 * de[j]
            fd[j] = dc[j]
        for r in range(N1):
            fg[r] = h2 * b[r]
    return ok


# ------------------------------------------------------------------ the integrator


@njit(cache=True)
def _stage(mode, i, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top):
    if mode == 0:
        N = v.shape[0]
        return _stage_p(ys, G, v, y, T, relevant, alpha, correct, kout, s, vf, coef, kap, top,
                        W[0, :N], W[1, :N], W[2, :N])
    return _stage_wp(i, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, kout, FAC, W, s, vf, coef, kap, top)


@njit(cache=True)
def _error_scale(mode, N, n, ys, ynew, rtol, atol, sc):
    """Per-component error scale; 0 marks a component left out of the error norm.

    Scores, ``||p||^2`` and the 𝔖 integral: ``atol + rtol |y|`` componentwise.
    ``b`` (W and p): ``atol + rtol max_r |b_r|`` (norm-wise: its small entries do not
    matter on their own). ``a`` (p only) is left out: ``z = z0 + Gkk a`` is controlled.
    """
    m = ys.shape[0]
    for k in range(m):
        sc[k] = atol + rtol * max(abs(ys[k]), abs(ynew[k]))
    if mode == 0:
        for k in range(N, 2 * N):
            sc[k] = 0.0
    else:
        bmax = 0.0
        for k in range(N + 1, 2 * N + 2):
            bmax = max(bmax, abs(ys[k]), abs(ynew[k]))
        for k in range(N + 1, 2 * N + 2):
            sc[k] = atol + rtol * bmax


@njit(cache=True)
def flow_run(mode, ys, S, MT, G, v, y, T, relevant, alpha, correct, t_len, h_io, rtol, atol, h_min,
             max_steps, tabA, tabB, tabE3, tabE5, counters):
    """Integrate the (corrected) flow over ``t_len`` GD steps of time with adaptive DOP853.

    Parameters
    ----------
    mode : int
        0: p only (``G = Gkk``); 1: W and p (``G = Gxx``, ``S`` and ``MT`` integrated too).
    ys : ndarray, shape (m,)
        Small state (module docstring), updated in place. Its 𝔖 block is zeroed first
        and holds ``int m (1 - m) d tau`` over this call on return.
    S : ndarray, shape (N, N)
    MT : ndarray, shape (N, N+1)
        Mode 1 state, updated in place (shape (0, 0) in mode 0).
    G : ndarray, shape (N, N)
    v : ndarray, shape (N,)
    y : ndarray, shape (n,)
    T : int
    relevant : ndarray of bool, shape (T,)
    alpha : float
        GD step size.
    correct : bool
        Integrate ``alpha F - (alpha^2/2) F'F`` instead of ``alpha F``.
    t_len : float
        Time to integrate, in GD steps; the last step is shortened to land on it exactly.
    h_io : ndarray, shape (1,)
        Proposed step in GD steps, updated to the proposal for the next call
        (a step shortened to land on ``t_len`` does not shrink it).
    rtol, atol : float
        Tolerances of the error norm (``_error_scale``).
    h_min : float
        Steps below this fail the call (returned time < ``t_len``).
    max_steps : int
        The call stops (returned time < ``t_len``) once ``counters[1] + counters[2]``, the
        accepted and rejected steps of the whole run, reach this: a stiff flow (an attention
        pattern at an interior equilibrium next to a slow saturating one) needs steps bounded
        by the explicit method's stability, not by time.
    tabA, tabB, tabE3, tabE5 : ndarray
        ``dop853_tableau``.
    counters : ndarray of int64, shape (3,)
        Incremented: right-hand-side evaluations, accepted steps, rejected steps.

    Returns
    -------
    t : float
        Time integrated: ``t_len`` on success, less if a non-finite value appeared or
        the step size fell below ``h_min`` or ``max_steps`` was reached (the state is then the
        last accepted one).
    """
    N = v.shape[0]
    n = y.shape[0]
    N1 = N + 1
    m = ys.shape[0]
    K = np.zeros((12, m))
    yst = np.empty(m)
    ynew = np.empty(m)
    sc = np.empty(m)
    FAC = np.zeros((8, 12, N1))
    W = np.zeros((9, N1))
    s = np.empty(N); vf = np.empty(N); coef = np.empty(n); kap = np.empty(n)
    top = np.empty(n, dtype=np.int64)
    hA = np.zeros(12)
    nb = 0
    for j in range(12):
        if tabB[j] != 0.0:
            nb += 1
    rank = 4 if correct else 2
    U = np.empty((rank * nb, N))
    V = np.empty((rank * nb, N))
    Ub = np.empty((rank * nb // 2, N1))
    Vb = np.empty((rank * nb // 2, N))
    for k in range(m - n, m):
        ys[k] = 0.0
    if t_len <= 0.0:
        return 0.0
    ok = _stage(mode, 0, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, K[0], FAC, W, s, vf, coef, kap, top)
    counters[0] += 1
    if not ok:
        return 0.0
    t = 0.0
    h = h_io[0]
    while t < t_len:
        if counters[1] + counters[2] >= max_steps:
            h_io[0] = h
            return t
        remaining = t_len - t
        h_try = min(h, remaining)
        clipped = h_try < h
        rejected = False
        while True:
            good = True
            for i in range(1, 12):
                for j in range(i):
                    hA[j] = h_try * tabA[i, j]
                for k in range(m):
                    acc = ys[k]
                    for j in range(i):
                        if hA[j] != 0.0:
                            acc += hA[j] * K[j, k]
                    yst[k] = acc
                counters[0] += 1
                if not _stage(mode, i, hA, yst, S, MT, G, v, y, T, relevant, alpha, correct, K[i], FAC, W,
                              s, vf, coef, kap, top):
                    good = False
                    break
            err = np.inf
            if good:
                for k in range(m):
                    acc = 0.0
                    for j in range(12):
                        if tabB[j] != 0.0:
                            acc += tabB[j] * K[j, k]
                    ynew[k] = ys[k] + h_try * acc
                _error_scale(mode, N, n, ys, ynew, rtol, atol, sc)
                e5 = 0.0
                e3 = 0.0
                cnt = 0
                for k in range(m):
                    if sc[k] > 0.0:
                        a5 = 0.0
                        a3 = 0.0
                        for j in range(12):
                            a5 += tabE5[j] * K[j, k]
                            a3 += tabE3[j] * K[j, k]
                        e5 += (a5 / sc[k]) ** 2
                        e3 += (a3 / sc[k]) ** 2
                        cnt += 1
                if e5 == 0.0 and e3 == 0.0:
                    err = 0.0
                else:
                    err = h_try * e5 / np.sqrt((e5 + 0.01 * e3) * cnt)
                if not np.isfinite(err):
                    err = np.inf
            if err <= 1.0:
                break
            counters[2] += 1
            rejected = True
            factor = 0.2 if not np.isfinite(err) else max(0.2, 0.9 * err ** (-1.0 / 8.0))
            h_try *= factor
            if h_try < h_min:
                h_io[0] = h_try
                return t
        # accept: S and M take their rank-(rank * nb) updates h sum_j B_j dX_j
        if mode == 1:
            q = 0
            for j in range(12):
                wj = h_try * tabB[j]
                if wj == 0.0:
                    continue
                for l in range(N):
                    U[q, l] = wj * FAC[_F_E, j, l]
                    V[q, l] = FAC[_F_Q, j, l]
                    U[q + 1, l] = wj * FAC[_F_Q, j, l]
                    V[q + 1, l] = FAC[_F_E, j, l]
                q += 2
                if correct:
                    for l in range(N):
                        U[q, l] = wj * FAC[_F_R, j, l]
                        V[q, l] = FAC[_F_Z, j, l]
                        U[q + 1, l] = wj * FAC[_F_Z, j, l]
                        V[q + 1, l] = FAC[_F_R, j, l]
                    q += 2
            for l in range(N):
                Sl = S[l]
                for k in range(q):
                    ukl = U[k, l]
                    vk = V[k]
                    for jj in range(N):
                        Sl[jj] += ukl * vk[jj]
            q = 0
            for j in range(12):
                wj = h_try * tabB[j]
                if wj == 0.0:
                    continue
                for r in range(N1):
                    Ub[q, r] = FAC[_F_BETA, j, r]
                for l in range(N):
                    Vb[q, l] = wj * FAC[_F_C, j, l]
                q += 1
                if correct:
                    for r in range(N1):
                        Ub[q, r] = FAC[_F_GAMMA, j, r]
                    for l in range(N):
                        Vb[q, l] = wj * FAC[_F_DC, j, l]
                    q += 1
            for jj in range(N):
                Mj = MT[jj]
                for k in range(q):
                    a = Vb[k, jj]
                    ub = Ub[k]
                    for r in range(N1):
                        Mj[r] += a * ub[r]
        for k in range(m):
            ys[k] = ynew[k]
        t = t_len if h_try >= remaining else t + h_try
        counters[1] += 1
        for j in range(12):
            hA[j] = 0.0
        counters[0] += 1
        if not _stage(mode, 0, hA, ys, S, MT, G, v, y, T, relevant, alpha, correct, K[0], FAC, W,
                      s, vf, coef, kap, top):
            h_io[0] = h
            return t if t < t_len else np.nextafter(t_len, 0.0)
        if err == 0.0:
            factor = 10.0
        else:
            factor = min(10.0, 0.9 * err ** (-1.0 / 8.0))
        if rejected:
            factor = min(1.0, factor)
        h_new = h_try * factor
        h = max(h, h_new) if (clipped and not rejected) else h_new
    h_io[0] = h
    return t
