"""Coordinates that train the head ``nu`` too: ``trainable="p+nu"`` and ``"Wp+nu"`` (DESIGN.md §8).

``∂L/∂nu = X_all^T h`` with ``h_it = (1/n) ell'(y_i f_i) y_i s_it``. Primal members carry ``nu``
(d,) and the token values ``v = X_all nu``; dual members carry ``nu = nu0 + X_all^T beta`` as
``beta`` (N,) and ``v = X_all nu0 + Gxx beta``. Each member is its head-fixed counterpart
(``PrimalP``, ``PrimalWp``, ``DualP``, ``DualWp``: same set-up, same read-out of W and p)
with the head's state added, the head kernel in ``advance``, and the head's read-out from
one of the two mixins below. All updates are simultaneous, from the same old iterate.
"""

from __future__ import annotations

import numpy as np

from .._numerics import norm
from .base import HeadObservation, register
from .dual import DualP, DualWp
from .primal import PrimalP, PrimalWp


class _PrimalHead:
    """Read-out of a head carried as ``state["nu"]`` (d,) with ``state["v"] = X_all nu``."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self._init_head()

    def _init_head(self):
        pb = self.pb
        self.state.update(nu=pb.nu.copy(), v=pb.v.copy())
        self.h = np.empty(pb.N)

    def observe_head(self):
        pb, nu = self.pb, self.state["nu"]
        return HeadObservation(self.state["v"], pb.Xt @ nu, norm(nu), norm(nu - pb.nu), pb.probes @ nu)

    def final_nu(self):
        return self.state["nu"].copy()


class _DualHead:
    """Read-out of a head carried as ``nu = nu0 + X_all^T beta``: ``state["beta"]`` (N,) and
    ``state["v"] = X_all nu0 + Gxx beta``. Needs ``self.Gxx``; sets up the test values' and the
    probes' cross terms once."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self._init_head()

    def _init_head(self):
        pb = self.pb
        self.state.update(beta=np.zeros(pb.N), v=pb.v.copy())
        self.h = np.empty(pb.N)
        self.eh = np.empty(pb.N)
        self._init_head_readout()

    def _init_head_readout(self):
        pb = self.pb
        self.XtXT = np.ascontiguousarray((pb.Xt @ pb.X.T).T)     # (N, Nt): v_test = vt0 + (Xt X^T) beta
        self.nu0_norm2 = float(pb.nu @ pb.nu)
        self.R_nu = (pb.probes @ pb.nu, pb.probes @ pb.X.T)    # <nu0, r>, <x_j, r>

    def _beta_v(self):
        """The current ``beta`` and token values ``v`` (the flow keeps them inside its state vector)."""
        return self.state["beta"], self.state["v"]

    def observe_head(self):
        pb = self.pb
        beta, v = self._beta_v()
        Gb = self.Gxx @ beta
        dist2 = float(beta @ Gb)
        norm2 = self.nu0_norm2 + 2.0 * float(beta @ pb.v) + dist2
        vt = self.kern.add_matvec_t(self.XtXT, beta, pb.vt.copy())
        return HeadObservation(v, vt, np.sqrt(max(norm2, 0.0)), np.sqrt(max(dist2, 0.0)),
                               self.R_nu[0] + self.R_nu[1] @ beta)

    def final_nu(self):
        return self.pb.nu + self.pb.X.T @ self._beta_v()[0]


@register
class PrimalPNu(_PrimalHead, PrimalP):
    """``p`` and ``nu`` (d,) with fixed keys ``K = X W0^T`` (``_kernels.gd.primal_p_nu_run``)."""

    trainable = "p+nu"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        self.XT = np.ascontiguousarray(pb.X.T)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_p_nu_run(st["p"], st["z"], st["nu"], st["v"], self.K, self.KT, pb.X, self.XT, pb.y,
                                         pb.T, pb.relevant, pb.lr, n_steps, frak_sum, self.s, self.c, self.h)


@register
class PrimalWpNu(_PrimalHead, PrimalWp):
    """``W``, ``p`` and ``nu`` (``_kernels.gd.primal_wp_nu_run``)."""

    trainable = "Wp+nu"

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_wp_nu_run(st["W"], st["p"], st["u"], st["z"], st["nu"], st["v"], pb.X, self.XT,
                                          pb.y, pb.T, pb.relevant, pb.lr, n_steps, frak_sum, self.s, self.c, self.h,
                                          self.g)


@register
class DualPNu(_DualHead, DualP):
    """``p = p0 + K^T a`` and ``nu = nu0 + X^T beta`` (``_kernels.gd.dual_p_nu_run``)."""

    trainable = "p+nu"

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        # DualPSetup needs only Gkk; with W0 = I the keys are the tokens and one Gram serves both
        self.Gxx = self.Gkk if pb.W0 is None else np.ascontiguousarray(pb.X @ pb.X.T)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_p_nu_run(st["a"], st["z"], st["beta"], st["v"], self.Gkk, self.Gxx, pb.y, pb.T,
                                       pb.relevant, pb.lr, n_steps, frak_sum, self.s, self.c, self.h, self.eh)


@register
class DualWpNu(_DualHead, DualWp):
    """``DualWp`` plus ``nu = nu0 + X^T beta``; ``Gxx c`` and ``Gxx h`` share one pass
    (``_kernels.gd.dual_wp_nu_run``)."""

    trainable = "Wp+nu"

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_wp_nu_run(st["z"], st["S"], st["P"], st["b"], st["MT"], st["CbT"], st["Eb"], st["nb"],
                                        st["beta"], st["v"], self.Gxx, pb.y, pb.T, pb.relevant, pb.lr, n_steps,
                                        frak_sum, self.s, self.c, self.h, self.e, self.eh, self.Sc, self.Hc)
