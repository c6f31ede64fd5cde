"""Primal coordinates: the iterate is ``W``, ``p`` (and the head ``nu``) themselves (DESIGN.md §3, §8)."""

from __future__ import annotations

import numpy as np

from .._numerics import norm
from .base import TRAINABLE_SETS, Coordinates, HeadObservation, Observation, register
from .optimizer import Optimizer


class _Primal(Coordinates):
    """Shared by the primal members: the optimiser, and the head carried as ``state["nu"]`` (d,)
    with ``state["v"] = X_all nu`` when it is trained."""

    engine = "primal"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.opt = options or Optimizer()
        t = self.trained
        self.XT = np.ascontiguousarray(pb.X.T) if t.trains_W or t.trains_head else np.empty((0, 0))
        self.gp, self.gnu = np.empty(pb.d), np.empty(pb.d)     # the gradients, when the rule reads their norms

    def _init_head(self):
        """The head's state (after the member's own), its velocity with momentum."""
        if self.trained.trains_head:
            self.state.update(nu=self.pb.nu.copy(), v=self.pb.v.copy(), **self.opt.velocity(vh=self.pb.N))
        self._nu_v = (self.state["nu"], self.state["v"]) if self.trained.trains_head else (self.none, self.pb.v)

    def _rule(self):
        """``(rule, lr, param)`` for the kernels."""
        return self.opt.rule.code, self.pb.lr, self.opt.param

    def observe_head(self):
        if not self.trained.trains_head:
            return super().observe_head()
        pb, nu = self.pb, self.state["nu"]
        return HeadObservation(self.state["v"], pb.Xt @ nu, norm(nu), norm(nu - pb.nu), pb.probes @ nu)

    def final_nu(self):
        return self.state["nu"].copy() if self.trained.trains_head else super().final_nu()

    def extra(self):
        return self.opt.extra()


@register
class PrimalP(_Primal):
    """``p`` (d,) with fixed keys ``K = X W0^T``; the scores ``z = K p`` ride along
    (``_kernels.gd.primal_p_run``)."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.K = pb.keys_of(pb.X)
        self.KT = np.ascontiguousarray(self.K.T)
        self.state = {"p": pb.p0.copy(), "z": self.K @ pb.p0, **self.opt.velocity(vc=pb.N)}
        self._init_head()

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        nu, v = self._nu_v
        return self.kern.primal_p_run(st["p"], st["z"], nu, v, self.K, self.KT, pb.X, self.XT, pb.y, pb.T,
                                      pb.relevant, *self._rule(), n_steps, frak_sum, self.s, self.c, self.h,
                                      st.get("vc", self.none), st.get("vh", self.none), self.gp, self.gnu, self.fw)

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
class PrimalPNu(PrimalP):
    """``p`` and the head ``nu`` (d,)."""

    trained = TRAINABLE_SETS["p+nu"]


@register
class PrimalWp(_Primal):
    """``W`` (d, d) and ``p`` (d,), with the query ``u = W^T p`` and the scores ``z = X u``
    (``_kernels.gd.primal_wp_run``)."""

    trained = TRAINABLE_SETS["Wp"]

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.W0 = pb.W0_dense()
        u = self.W0.T @ pb.p0
        self.state = {"W": self.W0.copy(), "p": pb.p0.copy(), "u": u, "z": pb.X @ u,
                      **self.opt.velocity(VW=(pb.d, pb.d), vp=pb.d)}
        self.g = np.empty(pb.d)
        self._init_head()

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        nu, v = self._nu_v
        return self.kern.primal_wp_run(st["W"], st["p"], st["u"], st["z"], nu, v, pb.X, self.XT, pb.y, pb.T,
                                       pb.relevant, *self._rule(), n_steps, frak_sum, self.s, self.c, self.h,
                                       st.get("vh", self.none), st.get("VW", self.none.reshape(0, 0)),
                                       st.get("vp", self.none), self.g, self.gp, self.gnu, self.fw)

    def observe(self):
        pb, st = self.pb, self.state
        u, p = st["u"], st["p"]
        return Observation(st["z"], pb.Xt @ u, norm(p), norm(st["W"] - self.W0), pb.probes_all @ p, pb.probes_all @ u,
                           norm(u))

    def final_params(self, with_W=True):
        return (self.state["W"].copy() if with_W else None), self.state["p"].copy()


@register
class PrimalWpNu(PrimalWp):
    """``W``, ``p`` and the head ``nu``."""

    trained = TRAINABLE_SETS["Wp+nu"]
