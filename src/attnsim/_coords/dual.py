"""Dual (Gram) coordinates: iterates of size ``N = n T``, a step's cost independent of d (DESIGN.md §4).

The set-up of each trainable set (keys, Gram matrices, the test set's and the
probes' cross terms) and its read-out (``observe``, ``final_params``) are written
once here, in ``DualPSetup`` and ``DualWpSetup``; the GD members below and the
flow members of ``_coords.flow`` differ only in how they advance.
"""

from __future__ import annotations

import abc

import numpy as np

from .base import Coordinates, Observation, quadratic_norm, register

#: Steps per block of the dual (b, M) update (``_kernels.gd.dual_wp_run``).
DUAL_BLOCK = 16


class DualPSetup(Coordinates):
    """``p = p0 + K^T a`` with fixed keys ``K = X W0^T`` (rows ``k_j = W0 x_j``).

    Members provide ``_a_z()``: the current ``a`` (N,) and scores ``z = K p0 + Gkk a`` (N,).
    """

    engine, trainable = "dual", "p"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.K = pb.keys_of(pb.X)                    # (N, d)
        self.Gkk = np.ascontiguousarray(self.K @ self.K.T)   # (N, N)
        self.z0, self.P0 = self.K @ pb.p0, float(pb.p0 @ pb.p0)
        W0T_K = pb.w0t_mul(self.K.T)                 # (d, N)
        # Test scores' dependence on a, stored transposed (N, Nt) for the serial
        # save-time kernel (a threaded BLAS matvec here stalls when the cores are busy).
        self.AtT = np.ascontiguousarray((pb.Xt @ W0T_K).T)
        self.zt0 = pb.Xt @ pb.w0t_mul(pb.p0)
        self.R_p = (pb.probes_all @ pb.p0, pb.probes_all @ self.K.T)           # <p0, r>, <k_j, r>
        self.R_q = (pb.probes_all @ pb.w0t_mul(pb.p0), pb.probes_all @ W0T_K)  # <W0^T p0, r>, <W0^T k_j, r>
        # ||W0^T p||^2 = |q0|^2 + 2 a.(B^T q0) + a^T (B^T B) a with q0 = W0^T p0, B = W0^T K^T
        q0 = pb.w0t_mul(pb.p0)
        # Keys of norm ~1e100 (tests of genuine overflow) overflow this Gram: then query_norm is
        # inf and the run reports the scores' overflow; no RuntimeWarning from the set-up.
        with np.errstate(over="ignore", invalid="ignore"):
            self.Q_norm = (float(q0 @ q0), W0T_K.T @ q0, W0T_K.T @ W0T_K)

    @abc.abstractmethod
    def _a_z(self) -> tuple[np.ndarray, np.ndarray]:
        """The current dual coefficients ``a`` and scores ``z``."""

    def observe(self):
        a, z = self._a_z()
        zt = self.kern.add_matvec_t(self.AtT, a, self.zt0.copy())
        # ||p||^2 = P0 + 2 a.z0 + a^T Gkk a
        return Observation(z, zt, quadratic_norm(self.P0, self.z0, self.Gkk, a), 0.0,
                           self.R_p[0] + self.R_p[1] @ a, self.R_q[0] + self.R_q[1] @ a,
                           quadratic_norm(*self.Q_norm, a))

    def final_params(self, with_W=True):
        a, _ = self._a_z()
        return None, self.pb.p0 + self.K.T @ a

    def key_gram(self):
        return self.Gkk


class DualWpSetup(Coordinates):
    """``p = Q b``, ``W = W0 + Q M X`` with ``Q = [p0, W0 X^T]`` (d, N+1) (DESIGN.md §4).

    Members provide ``_current()``: ``(z (N,), P (1,), b (N+1,), MT (N, N+1))`` at the
    current step, ``P = ||p||^2`` and ``MT = M^T``.
    """

    engine, trainable = "dual", "Wp"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.Q = np.concatenate([pb.p0[:, None], pb.w0_mul(pb.X.T)], axis=1)  # (d, N+1)
        self.Gqq = np.ascontiguousarray(self.Q.T @ self.Q)
        self.Gxx = np.ascontiguousarray(pb.X @ pb.X.T)
        W0T_Q = pb.w0t_mul(self.Q)                   # (d, N+1)
        # Test scores z_t = A1 b + A2 (M^T Gqq b) with A1 = Xt W0^T Q (Nt, N+1) and
        # A2 = Xt X^T (Nt, N), stored stacked and transposed, (2N+1, Nt), for the
        # serial save-time kernel.
        self.AT = np.ascontiguousarray(np.concatenate([pb.Xt @ W0T_Q, pb.Xt @ pb.X.T], axis=1).T)
        self.R_p = pb.probes_all @ self.Q                # (k, N+1): <p, r> = R_p b
        self.R_q1 = pb.probes_all @ W0T_Q                # <W0 r, Q b>
        self.R_q2 = pb.probes_all @ pb.X.T               # (k, N): <x_j, r>
        # W^T p = A b + X^T m with A = W0^T Q and m = M^T Gqq b: ||W^T p||^2 from the Grams of [A, X^T]
        with np.errstate(over="ignore", invalid="ignore"):   # as in DualPSetup: huge keys overflow it
            self.G_AA, self.G_AX = W0T_Q.T @ W0T_Q, W0T_Q.T @ pb.X.T

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
        with np.errstate(over="ignore", invalid="ignore"):
            q2 = b @ (self.G_AA @ b) + 2.0 * (b @ (self.G_AX @ MtGb)) + MtGb @ (self.Gxx @ MtGb)
        return Observation(z, zt, np.sqrt(max(P[0], 0.0)), np.sqrt(max(w_dist2, 0.0)),
                           self.R_p @ b, self.R_q1 @ b + self.R_q2 @ MtGb, np.sqrt(max(q2, 0.0)))

    def final_params(self, with_W=True):
        _, _, b, MT = self._current()
        if not with_W:
            return None, self.Q @ b
        W = (self.Q @ MT.T) @ self.pb.X              # one d x d temporary: the result itself
        W += self.pb.W0_dense()
        return W, self.Q @ b

    def key_gram(self):
        return self.Gxx


@register
class DualP(DualPSetup):
    """GD on p alone: ``a <- a - lr c``, ``z <- z - lr Gkk c`` (``_kernels.gd.dual_p_run``)."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.s = np.empty(pb.N)
        self.c = np.empty(pb.N)
        self.state = {"a": np.zeros(pb.N), "z": self.z0.copy()}

    def _a_z(self):
        return self.state["a"], self.state["z"]

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_p_run(st["a"], st["z"], self.Gkk, pb.v, pb.y, pb.T, pb.relevant, pb.lr,
                                    n_steps, frak_sum, self.s, self.c)


@register
class DualWp(DualWpSetup):
    """GD on W and p: ``(z, S, P)`` every step, the ``(b, M)`` recurrence in blocks of
    ``DUAL_BLOCK`` steps (``_kernels.gd.dual_wp_run``); the pending block is part of the state."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        N = pb.N
        self.state = {
            **self._initial(),
            "MT": np.zeros((N, N + 1)),
            # steps not yet applied to (b, MT): the kernel updates them a block at a time
            "CbT": np.zeros((N, DUAL_BLOCK)),
            "Eb": np.zeros((DUAL_BLOCK, N)),
            "nb": np.zeros(1, dtype=np.int64),
        }
        self.s, self.c, self.e, self.Sc = (np.empty(N) for _ in range(4))
        self.Hc = np.empty(N + 1)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_wp_run(st["z"], st["S"], st["P"], st["b"], st["MT"], st["CbT"], st["Eb"], st["nb"],
                                     self.Gxx, pb.v, pb.y, pb.T, pb.relevant, pb.lr, n_steps, frak_sum, self.s,
                                     self.c, self.e, self.Sc, self.Hc)

    def _current(self):
        """The pending block applied to copies of ``(b, MT)``."""
        st = self.state
        b, MT = st["b"].copy(), st["MT"].copy()
        self.kern.dual_wp_flush(b, MT, st["CbT"], st["Eb"], st["nb"].copy(), self.pb.lr, np.empty(b.shape[0]))
        return st["z"], st["P"], b, MT
