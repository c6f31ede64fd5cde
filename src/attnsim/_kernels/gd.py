"""numba step kernels: gradient descent and its linear-in-the-gradient relatives, one per parametrisation.

Every kernel takes plain arrays and scalars, allocates nothing inside its loop, prints nothing
and draws no random numbers. A run advances a state held in caller-owned arrays *in place* by
``n_steps`` updates and returns how many it completed: fewer only when a non-finite value
appeared, the state then being the last finite iterate. Each step is the coefficient core
(``core.coefficients``: ``c = dL/dz`` and, with the head, ``h = dL/dv``), then the optimiser's
rule, then the update of the parametrisation. Every kernel has a slow NumPy twin with the same
signature in ``gd_twins.py`` (``tests/test_kernels.py`` holds the registry that compares them).

Parametrisations (DESIGN.md §3, §4, §8), each with the head ``nu`` trained or not (``h`` empty):

- ``primal_p_run``: ``p`` (d,) with fixed keys ``K = X_all W0^T``, ``grad_p = K^T c``;
- ``primal_wp_run``: ``W`` (d, d) and ``p``, one sweep over W a step;
- ``dual_p_run``: ``p = p0 + K^T a``, ``z = K p0 + Gkk a``;
- ``dual_wp_run``: the closed ``(z, S, P)`` every step and ``(b, M)`` in blocks;
- ``dual_wp_heavy_run``: ``(b, M)`` and their velocity, for momentum (below);

and the head, ``nu`` (d,) in primal, ``nu = nu0 + X_all^T beta`` in dual coordinates.

Optimisers. A step moves each trained block B (p, W, nu) by ``-a_B d_B``: a direction ``d_B``
and a step size ``a_B``. An optimiser is a rule in ``RULES``: its code selects its branch of
``_direction`` (what the step moves along) and of ``_step_sizes`` (the sizes, from the squared
block gradient norms when the rule reads them). Every rule here is linear in the gradient, so
the dual coordinates stay exact (DESIGN.md §8): a new one is a branch and a line in ``RULES``.

- ``"gd"``: ``d_B = grad_B``, ``a_B = lr``.
- ``"ngd"``: ``a_B = lr / ||grad||`` over all trained blocks (``param = 0``) or per block
  (``param = 1``). The norms are dot products with vectors the step forms anyway:
  ``||grad_p||^2 = c^T Gkk c`` (p only), ``c^T S c`` (W trained), ``||grad_W||_F^2 = ||p||^2 c^T Gxx c``,
  ``||grad_nu||^2 = h^T Gxx h``; in primal coordinates the gradients as vectors. The coefficients
  are first scaled by a power of two (the direction is all that matters; the squared norms then
  neither underflow nor lose digits when the softmax saturates, ``c ~ exp(-gap)``). A block whose
  gradient is exactly zero does not move (``p0 = 0`` gives ``grad_W = p g^T = 0`` at step 0).
- ``"momentum"`` (heavy ball, PyTorch's convention, ``param = beta``): ``vel <- beta vel + grad``,
  ``theta <- theta - lr vel``. The velocity is a combination of gradients, so it lives in the
  coordinates the gradients live in:

  * a block whose gradient is linear in fixed coefficients (p with W fixed: ``grad_p = K^T c``;
    the head: ``grad_nu = X_all^T h``) keeps its velocity as coefficients, ``vel = K^T vc`` with
    ``vc <- beta vc + c`` (``vh`` likewise): the step is GD's with ``c`` replaced by ``vc``,
    ``a -= lr vc``, ``z -= lr Gkk vc`` in dual and ``p -= lr K^T vc`` in primal coordinates;
  * W and p together: with ``p = Q b``, ``W = W0 + Q M X_all``, ``grad_p = W g = Q H c``
    (``H = E + M Gxx``) and ``grad_W = p g^T = Q (b c^T) X_all``, so the velocities are
    ``v_p = Q bv``, ``V_W = Q Mv X_all`` with ``bv <- beta bv + H c``, ``Mv <- beta Mv + b c^T``,
    and ``b -= lr bv``, ``M -= lr Mv``. ``V_W`` is a sum of rank-one terms, not rank one, so the
    closed ``(z, S, P)`` of ``dual_wp_run`` does not survive it: ``dual_wp_heavy_run`` carries
    ``(b, M, bv, Mv)`` and recomputes ``z = H^T Gqq b`` each step (about six N x N passes).
    In primal coordinates ``V_W`` (d, d) and ``v_p`` (d,) are dense arrays.
"""

import math
from typing import NamedTuple

import numpy as np

from .core import (_F, _block, _dot, _four, _four_rows, _fw_size, _logistic_loss, _rows_axpy, _rows_axpy_two,
                   _rows_gemv, _rows_gemv_two, coefficients)
from .jit import njit

#: Rule codes, the kernels' ``rule`` argument.
GD, NGD, MOMENTUM = 0, 1, 2


class Rule(NamedTuple):
    """An optimiser as the kernels see it."""

    code: int
    #: The rule reads the block gradient norms: the step forms them first.
    norms: bool
    #: The step carries a velocity (state of the run).
    velocity: bool


#: ``optimizer -> Rule``; ``_direction`` and ``_step_sizes`` hold each rule's branch.
RULES = {"gd": Rule(GD, False, False), "ngd": Rule(NGD, True, False), "momentum": Rule(MOMENTUM, False, True)}


@njit(cache=True)
def _pow2_normalise(x):
    """Scale ``x`` in place by the power of two that brings its largest entry into [0.5, 1)
    (exact: ``ldexp``; nothing to do for an all-zero or non-finite ``x``)."""
    m = 0.0
    for j in range(x.shape[0]):
        m = max(m, abs(x[j]))
    if m == 0.0 or not np.isfinite(m):
        return
    k = -math.frexp(m)[1]                 # up to 1074 for a subnormal m: 2**k itself may overflow
    for j in range(x.shape[0]):
        x[j] = math.ldexp(x[j], k)


@njit(cache=True)
def _ngd_rescale(c, h, block):
    """NGD's coefficients scaled by a power of two: jointly normalised blocks share one, with
    ``block`` each of ``c`` (W and p) and ``h`` (nu, if not empty) gets its own."""
    if block or h.shape[0] == 0:
        _pow2_normalise(c)
        _pow2_normalise(h)
        return
    m = 0.0
    for j in range(c.shape[0]):
        m = max(m, abs(c[j]), abs(h[j]))
    if m == 0.0 or not np.isfinite(m):
        return
    k = -math.frexp(m)[1]
    for j in range(c.shape[0]):
        c[j] = math.ldexp(c[j], k)
        h[j] = math.ldexp(h[j], k)


@njit(cache=True)
def _reads_norms(rule):
    """True for the rules whose step sizes read the block gradient norms (``Rule.norms``)."""
    return rule == NGD


@njit(cache=True)
def _direction(rule, param, c, h, vc, vh):
    """The coefficients a step moves along, from ``c`` and ``h`` (h empty: no head): NGD's rescaled
    in place; momentum's velocities ``vc``, ``vh`` (where not empty) after ``vel <- param vel + grad``."""
    if rule == NGD:
        _ngd_rescale(c, h, param != 0.0)
    elif rule == MOMENTUM:
        for j in range(vc.shape[0]):
            vc[j] = param * vc[j] + c[j]
        for j in range(vh.shape[0]):
            vh[j] = param * vh[j] + h[j]
        return (vc if vc.shape[0] > 0 else c), (vh if vh.shape[0] > 0 else h)
    return c, h


@njit(cache=True)
def _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, vc, vh):
    """The core at ``(z, v)``, then the rule's direction: ``(finite, d_c, d_h)`` (``_direction``; not taken
    at a non-finite point, so that a velocity stays the last finite one)."""
    if not coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, False):
        return False, c, h
    dc, dh = _direction(rule, param, c, h, vc, vh)
    return True, dc, dh


@njit(cache=True)
def _step_sizes(rule, lr, param, n2p, n2w, n2nu):
    """Step sizes ``(a_p, a_W, a_nu)`` from the squared gradient norms of the blocks (0 if untrained)."""
    if rule == NGD:
        if param != 0.0:
            ap = lr / np.sqrt(n2p) if n2p > 0.0 else 0.0
            aw = lr / np.sqrt(n2w) if n2w > 0.0 else 0.0
            anu = lr / np.sqrt(n2nu) if n2nu > 0.0 else 0.0
            return ap, aw, anu
        tot = n2p + n2w + n2nu
        a = lr / np.sqrt(tot) if tot > 0.0 else 0.0
        return a, a, a
    return lr, lr, lr


# ---------------------------------------------------------------- primal coordinates


@njit(cache=True)
def _primal_block(x, val, B, BT, d, a, g, formed):
    """A block with a fixed basis, primal: ``x -= a B^T d`` (x (d,), B (N, d)), then ``val = B x``.
    ``formed``: ``g = B^T d`` is already formed (the norms needed it) and is subtracted as a vector."""
    if formed:
        for k in range(x.shape[0]):
            x[k] -= a * g[k]
    else:
        _rows_axpy(x, B, d, a)
    _rows_gemv(val, BT, x)


@njit(cache=True)
def primal_p_run(p, z, nu, v, K, KT, X, XT, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vc, vh,
                 gp, gnu, fw):
    """p (and nu unless ``h`` is empty) with fixed keys ``K = X_all W0^T``, primal.

    State ``p`` (d,) and the scores ``z = K p`` (N,), ``nu`` and ``v = X_all nu``, in place; ``vc``,
    ``vh`` (N,) the momentum's coefficient velocities (else empty). ``K``, ``X`` (N, d) and their
    transposes ``KT``, ``XT`` (d, N), C-contiguous, make every sweep contiguous. ``gp``, ``gnu`` (d,):
    the gradients, when the rule reads their norms. ``fw``: the core's scratch (``core.fw_size``).
    """
    formed = _reads_norms(rule)
    head = h.shape[0] > 0
    for step in range(n_steps):
        ok, dc, dh = _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, vc, vh)
        if not ok:
            return step
        n2p = n2nu = 0.0
        if formed:
            _rows_gemv(gp, K, dc)
            n2p = _dot(gp, gp)
            if head:
                _rows_gemv(gnu, X, dh)
                n2nu = _dot(gnu, gnu)
        ap, _, anu = _step_sizes(rule, lr, param, n2p, 0.0, n2nu)
        _primal_block(p, z, K, KT, dc, ap, gp, formed)
        if head:
            _primal_block(nu, v, X, XT, dh, anu, gnu, formed)
    return n_steps


@njit(cache=True)
def _primal_wp_sweep(W, p, u, g, gp, ap, aw, formed, VW, vp, beta):
    """One sweep over W (d, d): for each row r, ``(W g)_r`` from the old row (or ``gp``, if
    ``formed``), the update ``-aw p_r g^T`` of the row, ``p_r -= ap (W g)_r``, and ``u = W'^T p'``
    accumulated from the new row. With a velocity (``VW`` (d, d) and ``vp`` (d,) not empty) the row
    moves along ``VW_r <- beta VW_r + p_r g^T`` and ``p_r`` along ``vp_r <- beta vp_r + (W g)_r``."""
    d = p.shape[0]
    heavy = VW.shape[0] > 0
    for k in range(d):
        u[k] = 0.0
    for r in range(d):
        if formed:
            wg = gp[r]
        else:
            wg = 0.0
            for k in range(d):
                wg += W[r, k] * g[k]
        pr = p[r]
        if heavy:
            vr = beta * vp[r] + wg
            vp[r] = vr
            p_new = pr - ap * vr
            vrow = VW[r]
            for k in range(d):
                vk = beta * vrow[k] + pr * g[k]
                vrow[k] = vk
                w = W[r, k] - aw * vk
                W[r, k] = w
                u[k] += p_new * w
        else:
            p_new = pr - ap * wg
            a = aw * pr
            for k in range(d):
                w = W[r, k] - a * g[k]
                W[r, k] = w
                u[k] += p_new * w
        p[r] = p_new


@njit(cache=True)
def primal_wp_run(W, p, u, z, nu, v, X, XT, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vh, VW, vp,
                  g, gp, gnu, fw):
    """W, p (and nu unless ``h`` is empty), primal: ``grad_W = p g^T``, ``grad_p = W g``, ``g = X_all^T c``.

    State ``W`` (d, d), ``p``, the effective query ``u = W^T p`` (d,), the scores ``z = X_all u``,
    ``nu``, ``v``, in place; the momentum's velocities ``VW`` (d, d), ``vp`` (d,) and ``vh`` (N,)
    (else empty). One sweep over W a step (``_primal_wp_sweep``), two when the rule reads the norms
    (``||grad_p|| = ||W g||``, ``||grad_W||_F = ||p|| ||g||``). ``g``, ``gp``, ``gnu`` (d,) scratch.
    """
    formed = _reads_norms(rule)
    head = h.shape[0] > 0
    none = np.empty(0)               # W and p keep their velocity apart (VW, vp or bv, MvT)
    d = p.shape[0]
    for step in range(n_steps):
        ok, dc, dh = _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, none, vh)
        if not ok:
            return step
        _rows_gemv(g, X, dc)
        n2p = n2w = n2nu = 0.0
        if formed:
            for r in range(d):
                acc = 0.0
                for k in range(d):
                    acc += W[r, k] * g[k]
                gp[r] = acc
            n2p = _dot(gp, gp)
            n2w = _dot(p, p) * _dot(g, g)
            if head:
                _rows_gemv(gnu, X, dh)
                n2nu = _dot(gnu, gnu)
        ap, aw, anu = _step_sizes(rule, lr, param, n2p, n2w, n2nu)
        _primal_wp_sweep(W, p, u, g, gp, ap, aw, formed, VW, vp, param)
        _rows_gemv(z, XT, u)
        if head:
            _primal_block(nu, v, X, XT, dh, anu, gnu, formed)
    return n_steps


# ---------------------------------------------------------------- dual coordinates


@njit(cache=True)
def dual_p_run(a, z, beta, v, Gkk, Gxx, y, T, relevant, rule, lr, param, n_steps, frak_sum, s, c, h, vc, vh, ek, eh,
               fw):
    """p (and nu unless ``h`` is empty) in dual coordinates ``p = p0 + K^T a``, ``nu = nu0 + X_all^T beta``.

    State ``a``, ``z = K p0 + Gkk a``, ``beta``, ``v = X_all nu0 + Gxx beta`` (N,), in place:
    ``a -= a_p d_c``, ``z -= a_p Gkk d_c`` and the head likewise with ``Gxx``; ``vc``, ``vh`` (N,)
    the momentum's velocities (else empty). One sweep over the rows of each N x N matrix a step,
    independent of d; with W0 = I they are one matrix (``Gkk`` is ``Gxx``), read once for both
    vectors, with the bits of two passes. ``ek``, ``eh`` (N,): ``Gkk d_c`` and ``Gxx d_h`` when the
    rule reads the norms (``c^T Gkk c``, ``h^T Gxx h``).
    """
    N = z.shape[0]
    formed = _reads_norms(rule)
    head = h.shape[0] > 0
    for step in range(n_steps):
        ok, dc, dh = _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, vc, vh)
        if not ok:
            return step
        if not formed:
            ap, _, anu = _step_sizes(rule, lr, param, 0.0, 0.0, 0.0)
            for j in range(N):
                a[j] -= ap * dc[j]
            if head:
                for j in range(N):
                    beta[j] -= anu * dh[j]
                _rows_axpy_two(z, v, Gkk, Gxx, dc, dh, ap, anu)
            else:
                _rows_axpy(z, Gkk, dc, ap)
            continue
        n2nu = 0.0
        if head:
            _rows_gemv_two(ek, eh, Gkk, Gxx, dc, dh)
            n2nu = _dot(dh, eh)
        else:
            _rows_gemv(ek, Gkk, dc)
        ap, _, anu = _step_sizes(rule, lr, param, _dot(dc, ek), 0.0, n2nu)
        for j in range(N):
            a[j] -= ap * dc[j]
            z[j] -= ap * ek[j]
        if head:
            for j in range(N):
                beta[j] -= anu * dh[j]
                v[j] -= anu * eh[j]
    return n_steps


@njit(cache=True)
def _key_gram_sweep(S, c, z, e, lr, lr2P, Sc):
    """One pass over the symmetric ``S`` (N, N): ``Sc = S c`` from the old rows, and
    ``S[l, :] -= lr e_l z + lr z_l e - lr^2 P e_l e`` (the rank-two joint update).

    Two rows at a time, read and written through one (2, N) view of ``S``: ``Sc`` then takes
    half the loads and stores, with the bits of one row at a time (``(Sc + c_l S_l) + c_l+1 S_l+1``
    left to right). The view matters: with the two rows as two arrays LLVM's runtime alias checks
    (nine pointer pairs, above its limit of eight) gave up vectorising and the loop ran 2-3x
    slower; through one view it runs about 1.2x faster than a row at a time.
    """
    N = S.shape[0]
    for j in range(N):
        Sc[j] = 0.0
    N2 = N - N % 2
    for l in range(0, N2, 2):
        c0 = c[l]
        c1 = c[l + 1]
        f10, f20, f30 = lr * e[l], lr * z[l], lr2P * e[l]
        f11, f21, f31 = lr * e[l + 1], lr * z[l + 1], lr2P * e[l + 1]
        R = S[l:l + 2]
        for j in range(N):
            s0 = R[0, j]
            s1 = R[1, j]
            Sc[j] = (Sc[j] + c0 * s0) + c1 * s1
            zj = z[j]
            ej = e[j]
            R[0, j] = s0 - f10 * zj - f20 * ej + f30 * ej
            R[1, j] = s1 - f11 * zj - f21 * ej + f31 * ej
    for l in range(N2, N):
        cl = c[l]
        f1, f2, f3 = lr * e[l], lr * z[l], lr2P * e[l]
        r = S[l]
        for j in range(N):
            sj = r[j]
            Sc[j] += cl * sj
            r[j] = sj - f1 * z[j] - f2 * e[j] + f3 * e[j]


@njit(cache=True)
def dual_wp_run(z, S, P, b, MT, CbT, Eb, lrb, nb, beta, v, Gxx, y, T, relevant, rule, lr, param, n_steps,
                frak_sum, s, c, h, vh, e, eh, Sc, Hc, fw):
    """W, p (and nu unless ``h`` is empty) in dual coordinates, O(N^2) a step, independent of d.

    State, in place (``k_j = W x_j`` the current keys):

    - ``z`` (N,): scores ``z_j = k_j^T p``; ``S`` (N, N): the key Gram ``S_jl = k_j^T k_l``;
      ``P`` (1,): ``||p||^2``;
    - ``b`` (N+1,) and ``MT`` (N, N+1): ``p = Q b`` and ``W = W0 + Q M X_all`` with
      ``Q = [p0, W0 X_all^T]`` and ``MT = M^T``, *as of the last block boundary*; ``CbT`` (N, B),
      ``Eb`` (B, N), ``lrb`` (B, 2) and ``nb`` (1,) int64 hold the ``nb[0] < B`` steps since then
      (``c``, ``e = Gxx c`` and the step sizes ``(a_p, a_W)`` of each); ``dual_wp_flush`` applies
      them (to copies, at save times);
    - the head ``beta``, ``v`` as in ``dual_p_run``, its velocity ``vh`` (N,) (momentum's; else empty).

    With ``g = X_all^T c`` and ``e = Gxx c`` (``e_j = x_j^T g``), the step ``W' = W - a_W p g^T``,
    ``p' = p - a_p W g`` gives

        z' = z - a_p S c - a_W P e + a_W a_p (z.c) e
        S' = S - a_W (e z^T + z e^T) + a_W^2 P e e^T
        P' = P - 2 a_p z.c + a_p^2 c^T S c
        b' = b - a_p (E c + M e),     M' = M - a_W b c^T

    (``E = [0; I]``). ``(z, S, P)`` is closed: the training dynamics never need ``(b, M)``. So a
    step makes two passes over N x N matrices (``Gxx`` read, ``S`` read and written: about
    ``8 N^2`` flops, L2-resident for N = 160; one more, ``S c`` before S moves, when the rule reads
    the norms ``c^T S c`` and ``P c.e``), and every B steps the ``(b, M)`` recurrence of the block
    is applied in one blocked pass (``_flush_dual_coefs``). Blocks are counted in absolute steps
    (the counter is state), so the iterates do not depend on how a run is split into calls.
    """
    N = z.shape[0]
    B = CbT.shape[1]
    formed = _reads_norms(rule)
    head = h.shape[0] > 0
    none = np.empty(0)               # W and p keep their velocity apart (VW, vp or bv, MvT)
    Y, Bb, Ce, wb = _flush_scratch(N, B)
    k = nb[0]
    for step in range(n_steps):
        ok, dc, dh = _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, none, vh)
        if not ok:
            nb[0] = k
            return step
        if head:
            _rows_gemv_two(e, eh, Gxx, Gxx, dc, dh)
        else:
            _rows_gemv(e, Gxx, dc)
        Pk = P[0]
        n2p = n2w = n2nu = 0.0
        if formed:
            _rows_gemv(Sc, S, dc)
            n2p = _dot(dc, Sc)
            n2w = Pk * _dot(dc, e)
            if head:
                n2nu = _dot(dh, eh)
        ap, aw, anu = _step_sizes(rule, lr, param, n2p, n2w, n2nu)
        zc = _dot(z, dc)
        # Sc accumulates from each old row before that row is overwritten; S is
        # symmetric, so row l also serves as column l.
        _key_gram_sweep(S, dc, z, e, aw, aw * aw * Pk, Sc)
        cSc = _dot(dc, Sc)
        corr = aw * ap * zc
        for j in range(N):
            z[j] = z[j] - ap * Sc[j] - aw * Pk * e[j] + corr * e[j]
        P[0] = Pk - 2.0 * ap * zc + ap * ap * cSc
        if head:
            for j in range(N):
                beta[j] -= anu * dh[j]
                v[j] -= anu * eh[j]
        eb = Eb[k]
        for j in range(N):
            CbT[j, k] = dc[j]
            eb[j] = e[j]
        lrb[k, 0] = ap
        lrb[k, 1] = aw
        k += 1
        if k == B:
            _flush_dual_coefs(b, MT, CbT, Eb, k, lrb, Y, Bb, Ce, Hc, wb)
            k = 0
    nb[0] = k
    return n_steps


@njit(cache=True)
def dual_wp_heavy_run(z, P, b, MT, bv, MvT, beta, v, Gqq, Gxx, y, T, relevant, rule, lr, param, n_steps, frak_sum,
                      s, c, h, vh, e, eh, Hc, w, t, fw):
    """W, p (and nu unless ``h`` is empty) in dual coordinates with a velocity: the heavy ball.

    State ``b`` (N+1,), ``MT`` (N, N+1) as in ``dual_wp_run`` but always current, their velocities
    ``bv`` (N+1,), ``MvT = Mv^T`` (N, N+1), the head ``beta``, ``v`` and its velocity ``vh`` (N,),
    and the scores ``z`` (N,) and ``P = ||p||^2`` (1,) they imply, in place (module docstring):

        bv <- beta bv + (E c + M e),   Mv <- beta Mv + b c^T,   b -= a_p bv,   M -= a_W Mv,
        z = H^T Gqq b = (Gqq b)[1:] + Gxx M^T (Gqq b),   P = b^T Gqq b.

    One pass over ``Gxx`` (``e``, and ``eh = Gxx vh`` with the head), one over ``(MT, MvT)`` (``M e``
    from the old rows, then both updated), then ``Gqq``, ``MT`` and ``Gxx`` once each for the new
    scores. ``Hc``, ``w`` (N+1,) and ``t`` (N,) are scratch.
    """
    N = z.shape[0]
    N1 = N + 1
    head = h.shape[0] > 0
    none = np.empty(0)               # W and p keep their velocity apart (VW, vp or bv, MvT)
    for step in range(n_steps):
        ok, dc, dh = _step_coefficients(z, v, y, T, relevant, s, c, h, frak_sum, fw, rule, param, none, vh)
        if not ok:
            return step
        if head:
            _rows_gemv_two(e, eh, Gxx, Gxx, dc, dh)
        else:
            _rows_gemv(e, Gxx, dc)
        ap, aw, anu = _step_sizes(rule, lr, param, 0.0, 0.0, 0.0)
        Hc[0] = 0.0
        for j in range(N):
            Hc[j + 1] = dc[j]
        for j in range(N):
            ej = e[j]
            cj = dc[j]
            row = MT[j]
            vrow = MvT[j]
            for r in range(N1):
                m = row[r]
                Hc[r] += ej * m
                vr = param * vrow[r] + cj * b[r]
                vrow[r] = vr
                row[r] = m - aw * vr
        for r in range(N1):
            bv[r] = param * bv[r] + Hc[r]
            b[r] -= ap * bv[r]
        if head:
            for j in range(N):
                beta[j] -= anu * dh[j]
                v[j] -= anu * eh[j]
        _rows_gemv(w, Gqq, b)
        P[0] = _dot(b, w)
        for j in range(N):
            t[j] = _dot(MT[j], w)
        _rows_gemv(z, Gxx, t)
        for j in range(N):
            z[j] += w[j + 1]
    return n_steps


@njit(cache=True)
def _flush_scratch(N, B):
    """Scratch of a block flush of the (b, M) recurrence: ``Y``, ``Bb`` (B, N+1), ``Ce`` (B, B), ``wb`` (N, B)."""
    return np.empty((B, N + 1)), np.empty((B, N + 1)), np.empty((B, B)), np.empty((N, B))


@njit(cache=True)
def _block_ce(Ce, Eb, CbT, nb):
    """``Ce[t, sigma] = c_sigma . e_t`` over a pending block, accumulated over j across sigma
    (vectorises, no reassociation)."""
    N = CbT.shape[0]
    for t in range(nb):
        ce = Ce[t]
        for q in range(nb):
            ce[q] = 0.0
        for j in range(N):
            a = Eb[t, j]
            cj = CbT[j]
            for q in range(nb):
                ce[q] += a * cj[q]


@njit(cache=True)
def _block_rows(Y, A, G, sign):
    """``Y[t] = Y[t] + sign * sum_j A[t, j] G[j]`` for every row t of ``Y`` (B, m), j over the rows
    of ``G`` (k, m) in order, each element accumulated left to right: the bits of k single-row axpys.

    Register-blocked, four rows of ``Y`` against four rows of ``G``: each loaded element of ``G``
    serves four outputs, where a one-row loop loads a ``G`` element per multiply-add (the flush's
    two passes ran at about a third of a core's float64 rate that way). The rows of ``Y`` are the
    outer loop, as in a one-row axpy: with ``G``'s rows outside, LLVM gave up vectorising.
    """
    nt = Y.shape[0]
    k = G.shape[0]
    m = Y.shape[1]
    k4 = k - k % 4
    nt4 = nt - nt % 4
    for t in range(0, nt4, 4):
        y0, y1, y2, y3 = _four_rows(Y, t)
        e0, e1, e2, e3 = _four_rows(A, t)
        for j in range(0, k4, 4):
            a00, a01, a02, a03 = _four(e0, j, sign)
            a10, a11, a12, a13 = _four(e1, j, sign)
            a20, a21, a22, a23 = _four(e2, j, sign)
            a30, a31, a32, a33 = _four(e3, j, sign)
            g0, g1, g2, g3 = _four_rows(G, j)
            for r in range(m):
                q0 = g0[r]
                q1 = g1[r]
                q2 = g2[r]
                q3 = g3[r]
                y0[r] = y0[r] + a00 * q0 + a01 * q1 + a02 * q2 + a03 * q3
                y1[r] = y1[r] + a10 * q0 + a11 * q1 + a12 * q2 + a13 * q3
                y2[r] = y2[r] + a20 * q0 + a21 * q1 + a22 * q2 + a23 * q3
                y3[r] = y3[r] + a30 * q0 + a31 * q1 + a32 * q2 + a33 * q3
        for j in range(k4, k):
            g = G[j]
            for tt in range(t, t + 4):
                a = sign * A[tt, j]
                y = Y[tt]
                for r in range(m):
                    y[r] = y[r] + a * g[r]
    for t in range(nt4, nt):              # y - (-sign a) g is y + (sign a) g exactly: the same bits
        _rows_axpy(Y[t], G, A[t], -sign)


@njit(cache=True)
def _flush_dual_coefs(b, MT, CbT, Eb, nb, lrb, Y, Bb, Ce, Hc, w):
    """Apply ``nb`` deferred steps of the ``(b, M)`` recurrence in one go.

    Over a block of steps ``tau = 0 .. nb-1`` with coefficients ``c_tau`` (columns of
    ``CbT`` (N, B)) and ``e_tau = Gxx c_tau`` (rows of ``Eb`` (B, N)),

        b_{tau+1} = b_tau - a_p,tau (E c_tau + M_tau e_tau),    M_{tau+1} = M_tau - a_W,tau b_tau c_tau^T,

    with the step sizes ``lrb[tau] = (a_p, a_W)``, and ``M_tau e_tau = M_0 e_tau - sum_{sigma < tau}
    a_W,sigma b_sigma (c_sigma . e_tau)``. So one pass over ``MT`` gives every ``M_0 e_tau`` (``Y``),
    a small sequential loop gives the ``b_tau`` (``Bb``), and a second pass applies the ``nb``
    rank-one updates of ``M`` together. Each ``MT`` element is read twice and written once per
    *block* instead of read and written every step, which keeps the per-step working set (``Gxx``,
    ``S``) in L2. Both passes are ``_block_rows``. Scratch: ``Y``, ``Bb`` (B, N+1), ``Ce`` (B, B),
    ``w`` (N, B): ``w[j, t] = a_W,t c_t[j]``. ``Hc`` receives the last ``E c + M e``.
    """
    N = MT.shape[0]
    N1 = MT.shape[1]
    Yb = Y[:nb]
    Yb[:, :] = 0.0
    # Y[t] = M_0 e_t = sum_j e_t[j] MT[j, :]
    _block_rows(Yb, Eb, MT, 1.0)
    _block_ce(Ce, Eb, CbT, nb)
    # the b_tau, in order
    for t in range(nb):
        bt = Bb[t]
        for r in range(N1):
            bt[r] = b[r]
        Hc[0] = Y[t, 0]
        for j in range(N):
            Hc[j + 1] = CbT[j, t] + Y[t, j + 1]
        for q in range(t):
            a = lrb[q, 1] * Ce[t, q]
            bq = Bb[q]
            for r in range(N1):
                Hc[r] -= a * bq[r]
        ap = lrb[t, 0]
        for r in range(N1):
            b[r] -= ap * Hc[r]
    # M_nb = M_0 - sum_t a_W,t b_t c_t^T: row j of MT takes -sum_t a_W,t c_t[j] b_t
    for j in range(N):
        for t in range(nb):
            w[j, t] = lrb[t, 1] * CbT[j, t]
    _block_rows(MT, w[:, :nb], Bb[:nb], -1.0)


@njit(cache=True)
def dual_wp_flush(b, MT, CbT, Eb, lrb, nb, Hc):
    """Apply the ``nb[0]`` pending steps of ``dual_wp_run`` (step sizes in ``lrb`` (B, 2)) to ``b``
    (N+1,) and ``MT`` (N, N+1) in place and set ``nb[0] = 0``. Call it on copies to read the current
    ``p = Q b`` and ``W = W0 + Q M X_all`` without changing the run's state. Returns the steps applied."""
    Y, Bb, Ce, wb = _flush_scratch(MT.shape[0], CbT.shape[1])
    k = nb[0]
    _flush_dual_coefs(b, MT, CbT, Eb, k, lrb, Y, Bb, Ce, Hc, wb)
    nb[0] = 0
    return k


# ------------------------------------------------------------ closed-form gradients and save-time kernels


@njit(cache=True)
def loss_and_grads(X, y, W, p, nu):
    """Closed-form loss and gradients of the paper's model.

    Parameters
    ----------
    X : ndarray, shape (n, T, d)
    y : ndarray, shape (n,)
    W : ndarray, shape (d, d)
    p, nu : ndarray, shape (d,)

    Returns
    -------
    loss : float
    grad_W : ndarray, shape (d, d)
        The rank-one matrix ``p g^T``.
    grad_p : ndarray, shape (d,)
        ``W g``.
    """
    loss, grad_W, grad_p, _ = loss_and_grads_head(X, y, W, p, nu)
    return loss, grad_W, grad_p


@njit(cache=True)
def loss_and_grads_head(X, y, W, p, nu):
    """``loss_and_grads`` and the head's gradient ``grad_nu = X_all^T h`` (d,),
    ``h_it = (1/n) ell'(y_i f_i) y_i s_it`` (DESIGN.md §8), from the coefficient core.

    Returns
    -------
    loss : float
    grad_W : ndarray, shape (d, d)
    grad_p, grad_nu : ndarray, shape (d,)
    """
    n, T, d = X.shape
    N = n * T
    Xa = np.ascontiguousarray(X).reshape(N, d)
    u = np.empty(d)
    _rows_gemv(u, W, p)                               # W^T p
    z = np.empty(N)
    v = np.empty(N)
    for j in range(N):
        z[j] = _dot(Xa[j], u)
        v[j] = _dot(Xa[j], nu)
    s = np.empty(N)
    c = np.empty(N)
    h = np.empty(N)
    fw = np.empty(_fw_size(n, T))
    coefficients(z, v, y, T, np.zeros(T, dtype=np.bool_), s, c, h, np.zeros(n), fw, True)
    f = _block(fw, n, T, _F)
    loss = 0.0
    for i in range(n):
        loss += _logistic_loss(y[i] * f[i])
    g = np.empty(d)
    grad_nu = np.empty(d)
    _rows_gemv_two(g, grad_nu, Xa, Xa, c, h)
    grad_p = np.empty(d)
    grad_W = np.empty((d, d))
    for r in range(d):
        grad_p[r] = _dot(W[r], g)
        for k in range(d):
            grad_W[r, k] = p[r] * g[k]
    return loss / n, grad_W, grad_p, grad_nu


@njit(cache=True)
def add_matvec_t(AT, x, out):
    """``out += AT^T x`` with ``AT`` (k, m) stored row-major, x (k,), out (m,); returns ``out``.

    Test-set scores at save times: a contiguous axpy sweep over the stored cross
    Gram (serial, so it does not fight the other runs for cores the way a
    threaded BLAS matvec does).
    """
    k = AT.shape[0]
    m = out.shape[0]
    for l in range(k):
        a = x[l]
        row = AT[l]
        for j in range(m):
            out[j] += a * row[j]
    return out


@njit(cache=True)
def dual_w_dist2(MT, Gqq, Gxx):
    """``||W - W0||_F^2 = tr(M^T Gqq M Gxx)`` for ``W - W0 = Q M X_all``.

    MT : (N, N+1) = M^T, Gqq : (N+1, N+1), Gxx : (N, N). About ``4 N^3`` flops,
    done serially at save times only: ``Gqq M`` and ``M Gxx`` by ``_block_rows`` (the bits of
    row-by-row products, twice as fast at N = 160), then their elementwise product summed.
    """
    N = MT.shape[0]
    N1 = MT.shape[1]
    M = np.ascontiguousarray(MT.T)
    A = np.zeros((N1, N))              # Gqq M (Gqq symmetric: row r is column r)
    B = np.zeros((N1, N))              # M Gxx
    _block_rows(A, Gqq, M, 1.0)
    _block_rows(B, M, Gxx, 1.0)
    total = 0.0
    for r in range(N1):
        for j in range(N):
            total += A[r, j] * B[r, j]
    return total
