"""Primal coordinates: the iterate is ``W`` and ``p`` themselves (DESIGN.md §3)."""

from __future__ import annotations

import numpy as np

from .._numerics import norm
from .base import Coordinates, Observation, register


@register
class PrimalP(Coordinates):
    """``p`` (d,) with fixed keys ``K = X W0^T``; the scores ``z = K p`` ride along."""

    engine, trainable = "primal", "p"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.K = pb.keys_of(pb.X)
        self.KT = np.ascontiguousarray(self.K.T)
        self.s = np.empty(pb.N)
        self.c = np.empty(pb.N)
        self.state = {"p": pb.p0.copy(), "z": self.K @ pb.p0}

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_p_run(st["p"], st["z"], self.K, self.KT, pb.v, pb.y, pb.T, pb.relevant,
                                      pb.lr, n_steps, frak_sum, self.s, self.c)

    def observe(self):
        pb, p = self.pb, self.state["p"]
        u = pb.w0t_mul(p)
        return Observation(self.state["z"], pb.Xt @ u, norm(p), 0.0, pb.probes_all @ p, pb.probes_all @ u,
                           norm(u))

    def final_params(self, with_W=True):
        return None, self.state["p"].copy()

    def key_gram(self):
        return self.K @ self.K.T


@register
class PrimalWp(Coordinates):
    """``W`` (d, d) and ``p`` (d,), with the query ``u = W^T p`` and the scores ``z = X u``."""

    engine, trainable = "primal", "Wp"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.XT = np.ascontiguousarray(pb.X.T)
        self.W0 = pb.W0_dense()
        u = self.W0.T @ pb.p0
        self.state = {"W": self.W0.copy(), "p": pb.p0.copy(), "u": u, "z": pb.X @ u}
        self.s = np.empty(pb.N)
        self.c = np.empty(pb.N)
        self.g = np.empty(pb.d)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_wp_run(st["W"], st["p"], st["u"], st["z"], pb.X, self.XT, pb.v, pb.y, pb.T,
                                       pb.relevant, pb.lr, n_steps, frak_sum, self.s, self.c, self.g)

    def observe(self):
        pb, st = self.pb, self.state
        u, p = st["u"], st["p"]
        return Observation(st["z"], pb.Xt @ u, norm(p), norm(st["W"] - self.W0), pb.probes_all @ p, pb.probes_all @ u,
                           norm(u))

    def final_params(self, with_W=True):
        return (self.state["W"].copy() if with_W else None), self.state["p"].copy()
