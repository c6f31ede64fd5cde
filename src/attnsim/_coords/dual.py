"""Dual (Gram) coordinates: iterates of size ``N = n T``, a step's cost independent of d (DESIGN.md §4, §8).

The set-up of each parametrisation (keys, Gram matrices, the test set's and the probes' cross
terms, the head's) and its read-out (``observe``, ``final_params``, ``observe_head``) are written
once here, in ``DualSetup``, ``DualPSetup`` and ``DualWpSetup``; the GD members below and the flow
members of ``_coords.flow`` differ only in how they advance and where they keep the iterate.
"""

from __future__ import annotations

import abc

import numpy as np

from .._numerics import norm
from .base import TRAINABLE_SETS, Coordinates, HeadObservation, Observation, quadratic_norm, register
from .cost import query_by_matvec
from .optimizer import Optimizer

#: Steps per block of the dual (b, M) update (``_kernels.gd.dual_wp_run``).
DUAL_BLOCK = 16


class DualSetup(Coordinates):
    """Shared by the dual set-ups: how the query ``W^T p`` is read, and the head
    ``nu = nu0 + X_all^T beta`` when it is trained.

    The query's norm and probes come from Grams of ``W0^T`` times the iterate's basis, formed
    once; or, when that product would serve nothing else and the saves are few
    (``query_matvec``), from ``q`` itself, one matvec with ``W0`` a save, as in primal
    coordinates. Members that train the head provide ``_beta_v()`` (the current ``beta`` and token values
    ``v = X_all nu0 + Gxx beta``) and set ``self.Gxx`` (N, N) before ``_init_head_readout``.
    """

    engine = "dual"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        #: Read the query ``W^T p`` with a matvec a save (``_query``) instead of the Grams of a
        #: ``W0^T`` product formed here (``_coords.cost.query_by_matvec``).
        self.query_matvec = query_by_matvec(pb.N, pb.Xt.shape[0], pb.n_saves, pb.w0_kind)

    def _query(self, w0_part, x_part=None):
        """``(<q, r_j> (k,), ||q||)`` for the query ``q = W0^T w0_part + X^T x_part`` (d,), formed.

        A zero ``w0_part`` (``p0 = 0``, the official init, at step 0: the warm-up's and the first
        save's read-outs) skips ``W0`` itself, d^2 numbers read for a product that is exactly 0."""
        pb = self.pb
        q = pb.w0t_mul(w0_part) if w0_part.any() else np.zeros(pb.d)
        if x_part is not None:
            q += pb.X.T @ x_part
        return pb.probes_all @ q, norm(q)

    def _init_head_readout(self):
        """The test values' and the probes' cross terms of the head, once."""
        pb = self.pb
        self.XtXT = np.ascontiguousarray((pb.Xt @ pb.X.T).T)     # (N, Nt): v_test = vt0 + (Xt X^T) beta
        self.nu0_norm2 = float(pb.nu @ pb.nu)
        self.R_nu = (pb.probes @ pb.nu, pb.probes @ pb.X.T)    # <nu0, r>, <x_j, r>

    def _beta_v(self) -> tuple[np.ndarray, np.ndarray]:
        """The current ``beta`` and ``v`` of a trained head."""
        raise NotImplementedError

    def observe_head(self):
        if not self.trained.trains_head:
            return super().observe_head()
        pb = self.pb
        beta, v = self._beta_v()
        Gb = self.Gxx @ beta
        dist2 = float(beta @ Gb)
        norm2 = self.nu0_norm2 + 2.0 * float(beta @ pb.v) + dist2
        vt = self.kern.add_matvec_t(self.XtXT, beta, pb.vt.copy())
        return HeadObservation(v, vt, np.sqrt(max(norm2, 0.0)), np.sqrt(max(dist2, 0.0)),
                               self.R_nu[0] + self.R_nu[1] @ beta)

    def final_nu(self):
        if not self.trained.trains_head:
            return super().final_nu()
        return self.pb.nu + self.pb.X.T @ self._beta_v()[0]


class DualPSetup(DualSetup):
    """``p = p0 + K^T a`` with fixed keys ``K = X W0^T`` (rows ``k_j = W0 x_j``), and the head.

    Members provide ``_a_z()``: the current ``a`` (N,) and scores ``z = K p0 + Gkk a`` (N,).
    With the head, ``Gxx`` is ``Gkk`` itself when the keys are the tokens (W0 = I: one Gram, swept
    once for both blocks), a second Gram otherwise.
    """

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.K = pb.keys_of(pb.X)                    # (N, d)
        self.Gkk = np.ascontiguousarray(self.K @ self.K.T)   # (N, N)
        self.z0, self.P0 = self.K @ pb.p0, float(pb.p0 @ pb.p0)
        self.R_p = (pb.probes_all @ pb.p0, pb.probes_all @ self.K.T)           # <p0, r>, <k_j, r>
        if self.query_matvec:                        # no test set: W0^T p itself at each save
            self.AtT, self.zt0 = np.zeros((pb.N, 0)), np.zeros(0)
        else:
            W0T_K = pb.w0t_mul(self.K.T)             # (d, N)
            q0 = pb.w0t_mul(pb.p0)                   # W0^T p0, once for its three uses
            # Test scores' dependence on a, stored transposed (N, Nt) for the serial
            # save-time kernel (a threaded BLAS matvec here stalls when the cores are busy).
            self.AtT = np.ascontiguousarray((pb.Xt @ W0T_K).T)
            self.zt0 = pb.Xt @ q0
            self.R_q = (pb.probes_all @ q0, pb.probes_all @ W0T_K)             # <W0^T p0, r>, <W0^T k_j, r>
            # ||W0^T p||^2 = |q0|^2 + 2 a.(B^T q0) + a^T (B^T B) a with B = W0^T K^T
            # Keys of norm ~1e100 (tests of genuine overflow) overflow this Gram: then query_norm is
            # inf and the run reports the scores' overflow; no RuntimeWarning from the set-up.
            with np.errstate(over="ignore", invalid="ignore"):
                self.Q_norm = (float(q0 @ q0), W0T_K.T @ q0, W0T_K.T @ W0T_K)
        if self.trained.trains_head:
            self.Gxx = self.Gkk if self.K is pb.X else np.ascontiguousarray(pb.X @ pb.X.T)
            self._init_head_readout()

    @abc.abstractmethod
    def _a_z(self) -> tuple[np.ndarray, np.ndarray]:
        """The current dual coefficients ``a`` and scores ``z``."""

    def observe(self):
        a, z = self._a_z()
        zt = self.kern.add_matvec_t(self.AtT, a, self.zt0.copy())
        if self.query_matvec:
            q_probe, q_norm = self._query(self.pb.p0 + self.K.T @ a)
        else:
            q_probe, q_norm = self.R_q[0] + self.R_q[1] @ a, quadratic_norm(*self.Q_norm, a)
        # ||p||^2 = P0 + 2 a.z0 + a^T Gkk a
        return Observation(z, zt, quadratic_norm(self.P0, self.z0, self.Gkk, a), 0.0,
                           self.R_p[0] + self.R_p[1] @ a, q_probe, q_norm)

    def final_params(self, with_W=True):
        a, _ = self._a_z()
        return None, self.pb.p0 + self.K.T @ a

    def key_gram(self):
        return self.Gkk


class DualWpSetup(DualSetup):
    """``p = Q b``, ``W = W0 + Q M X`` with ``Q = [p0, W0 X^T]`` (d, N+1) (DESIGN.md §4), and the head.

    Members provide ``_current()``: ``(z (N,), P (1,), b (N+1,), MT (N, N+1))`` at the
    current step, ``P = ||p||^2`` and ``MT = M^T``.
    """

    trained = TRAINABLE_SETS["Wp"]

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.Q = np.concatenate([pb.p0[:, None], pb.w0_mul(pb.X.T)], axis=1)  # (d, N+1)
        self.Gqq = np.ascontiguousarray(self.Q.T @ self.Q)
        self.Gxx = np.ascontiguousarray(pb.X @ pb.X.T)
        self.R_p = pb.probes_all @ self.Q                # (k, N+1): <p, r> = R_p b
        if self.query_matvec:                            # no test set: W^T p itself at each save
            self.AT = np.zeros((2 * pb.N + 1, 0))
        else:
            W0T_Q = pb.w0t_mul(self.Q)                   # (d, N+1)
            # Test scores z_t = A1 b + A2 (M^T Gqq b) with A1 = Xt W0^T Q (Nt, N+1) and
            # A2 = Xt X^T (Nt, N), stored stacked and transposed, (2N+1, Nt), for the
            # serial save-time kernel.
            self.AT = np.ascontiguousarray(np.concatenate([pb.Xt @ W0T_Q, pb.Xt @ pb.X.T], axis=1).T)
            self.R_q1 = pb.probes_all @ W0T_Q                # <W0 r, Q b>
            self.R_q2 = pb.probes_all @ pb.X.T               # (k, N): <x_j, r>
            # W^T p = A b + X^T m with A = W0^T Q and m = M^T Gqq b: ||W^T p||^2 from the Grams of [A, X^T]
            with np.errstate(over="ignore", invalid="ignore"):   # as in DualPSetup: huge keys overflow it
                self.G_AA, self.G_AX = W0T_Q.T @ W0T_Q, W0T_Q.T @ pb.X.T
        if self.trained.trains_head:
            self._init_head_readout()

    def _initial(self) -> dict:
        """The state blocks at step 0: ``z``, ``S`` (the key Gram), ``P``, ``b = e_0``."""
        b = np.zeros(self.pb.N + 1)
        b[0] = 1.0
        return {"z": self.Gqq[1:, 0].copy(), "S": np.ascontiguousarray(self.Gqq[1:, 1:]),
                "P": np.array([self.Gqq[0, 0]]), "b": b}

    @abc.abstractmethod
    def _current(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(z, P, b, MT)`` at the current step."""

    def observe(self):
        z, P, b, MT = self._current()
        MtGb = MT @ (self.Gqq @ b)                   # (N,) = M^T Gqq b
        w_dist2 = float(self.kern.dual_w_dist2(MT, self.Gqq, self.Gxx))
        zt = self.kern.add_matvec_t(self.AT, np.concatenate([b, MtGb]), np.zeros(self.AT.shape[1]))
        if self.query_matvec:                        # W^T p = W0^T (Q b) + X^T m
            q_probe, q_norm = self._query(self.Q @ b, MtGb)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                q2 = b @ (self.G_AA @ b) + 2.0 * (b @ (self.G_AX @ MtGb)) + MtGb @ (self.Gxx @ MtGb)
            q_probe, q_norm = self.R_q1 @ b + self.R_q2 @ MtGb, np.sqrt(max(q2, 0.0))
        return Observation(z, zt, np.sqrt(max(P[0], 0.0)), np.sqrt(max(w_dist2, 0.0)),
                           self.R_p @ b, q_probe, q_norm)

    def final_params(self, with_W=True):
        _, _, b, MT = self._current()
        if not with_W:
            return None, self.Q @ b
        W = (self.Q @ MT.T) @ self.pb.X              # one d x d temporary: the result itself
        W += self.pb.W0_dense()
        return W, self.Q @ b

    def key_gram(self):
        return self.Gxx


class _DualGd:
    """Shared by the GD members: the optimiser, and the head's state and velocity."""

    def _init_gd(self, options):
        pb = self.pb
        self.opt = options or Optimizer()
        if self.trained.trains_head:
            self.state.update(beta=np.zeros(pb.N), v=pb.v.copy(), **self.opt.velocity(vh=pb.N))
        self.eh = np.empty(pb.N)

    def _beta_v(self):
        return self.state["beta"], self.state["v"]

    def _head_args(self):
        """``(beta, v)`` for the kernels: the state's, or an unused ``beta`` and the fixed values."""
        return self._beta_v() if self.trained.trains_head else (self.none, self.pb.v)

    def _rule(self):
        """``(rule, lr, param)`` for the kernels."""
        return self.opt.rule.code, self.pb.lr, self.opt.param

    def extra(self):
        return self.opt.extra()


@register
class DualP(_DualGd, DualPSetup):
    """``p = p0 + K^T a`` (and the head): ``_kernels.gd.dual_p_run``."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.state = {"a": np.zeros(pb.N), "z": self.z0.copy()}
        self._init_gd(options)
        self.state.update(self.opt.velocity(vc=pb.N))
        self.ek = np.empty(pb.N)

    def _a_z(self):
        return self.state["a"], self.state["z"]

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        beta, v = self._head_args()
        Gxx = self.Gxx if self.trained.trains_head else self.Gkk
        return self.kern.dual_p_run(st["a"], st["z"], beta, v, self.Gkk, Gxx, pb.y, pb.T, pb.relevant, *self._rule(),
                                    n_steps, frak_sum, self.s, self.c, self.h, st.get("vc", self.none),
                                    st.get("vh", self.none), self.ek, self.eh, self.fw)


@register
class DualPNu(DualP):
    """``p = p0 + K^T a`` and ``nu = nu0 + X^T beta``."""

    trained = TRAINABLE_SETS["p+nu"]


@register
class DualWp(_DualGd, DualWpSetup):
    """W and p (and the head). GD and NGD: ``(z, S, P)`` every step, the ``(b, M)`` recurrence in
    blocks of ``DUAL_BLOCK`` steps, the pending block part of the state (``_kernels.gd.dual_wp_run``);
    momentum: ``(b, M)`` and their velocity every step (``_kernels.gd.dual_wp_heavy_run``)."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        N = pb.N
        opt = options or Optimizer()
        self.heavy = opt.rule.velocity
        init = self._initial()
        if self.heavy:
            self.state = {"z": init["z"], "P": init["P"], "b": init["b"], "MT": np.zeros((N, N + 1)),
                          **opt.velocity(bv=N + 1, MvT=(N, N + 1))}
            self.w, self.t = np.empty(N + 1), np.empty(N)
        else:
            self.state = {
                **init,
                "MT": np.zeros((N, N + 1)),
                # steps not yet applied to (b, MT): the kernel updates them a block at a time
                "CbT": np.zeros((N, DUAL_BLOCK)),
                "Eb": np.zeros((DUAL_BLOCK, N)),
                "nb": np.zeros(1, dtype=np.int64),
            }
            # the pending steps' (a_p, a_W): state when the rule sets them, always lr under GD
            lrb = np.full((DUAL_BLOCK, 2), pb.lr)
            if opt.rule.norms:
                self.state["lrb"] = lrb
            self.lrb = self.state.get("lrb", lrb)
        self._init_gd(options)
        self.e, self.Sc = np.empty(N), np.empty(N)
        self.Hc = np.empty(N + 1)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        beta, v = self._head_args()
        vh = st.get("vh", self.none)
        if self.heavy:
            return self.kern.dual_wp_heavy_run(st["z"], st["P"], st["b"], st["MT"], st["bv"], st["MvT"], beta, v,
                                               self.Gqq, self.Gxx, pb.y, pb.T, pb.relevant, *self._rule(), n_steps,
                                               frak_sum, self.s, self.c, self.h, vh, self.e, self.eh, self.Hc, self.w,
                                               self.t, self.fw)
        return self.kern.dual_wp_run(st["z"], st["S"], st["P"], st["b"], st["MT"], st["CbT"], st["Eb"], self.lrb,
                                     st["nb"], beta, v, self.Gxx, pb.y, pb.T, pb.relevant, *self._rule(), n_steps,
                                     frak_sum, self.s, self.c, self.h, vh, self.e, self.eh, self.Sc, self.Hc, self.fw)

    def _current(self):
        """The pending block applied to copies of ``(b, MT)``."""
        st = self.state
        if self.heavy:
            return st["z"], st["P"], st["b"], st["MT"]
        b, MT = st["b"].copy(), st["MT"].copy()
        self.kern.dual_wp_flush(b, MT, st["CbT"], st["Eb"], self.lrb, st["nb"].copy(), np.empty(b.shape[0]))
        return st["z"], st["P"], b, MT


@register
class DualWpNu(DualWp):
    """``DualWp`` plus ``nu = nu0 + X^T beta``; ``Gxx c`` and ``Gxx h`` share one pass."""

    trained = TRAINABLE_SETS["Wp+nu"]
