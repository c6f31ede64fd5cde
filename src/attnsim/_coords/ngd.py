"""Normalised GD (``optimizer="ngd"``): every step has Euclidean length ``lr`` (DESIGN.md §8).

The norm is over all trained blocks jointly (``ngd_norm="joint"``) or per block, each of
W, p, nu taking a step of length ``lr`` (``"block"``, as Tarzanagh et al.'s joint code).
Each member is its GD counterpart (same set-up, state and read-out) advanced by the
normalised kernel of its coordinate system, ``_kernels.gd.*_ngd_run``; in dual coordinates
the norms come from the Grams (``c^T Gkk c``, ``c^T S c``, ``||p||^2 c^T Gxx c``, ``h^T Gxx h``),
exact and independent of d. Not available for the flow (a normalised flow is another ODE).
"""

from __future__ import annotations

import numpy as np

from .base import register
from .dual import DUAL_BLOCK, DualP, DualWp
from .head import DualPNu, DualWpNu, PrimalPNu, PrimalWpNu
from .primal import PrimalP, PrimalWp


class _Ngd:
    """Shared by the members: the flags of the normalised kernels, and scratch."""

    optimizer = "ngd"
    head = False
    _head_key = "nu"                  # the head's state: "nu" (primal) or "beta" (dual)

    def _init_ngd(self):
        pb = self.pb
        self.block = bool(pb.ngd_block)
        if not self.head:                 # the kernels only read v and leave nu untouched without a head
            self.h = np.empty(pb.N)
            self._nu, self._v = np.zeros(pb.N), pb.v
        else:
            self._nu, self._v = self.state[self._head_key], self.state["v"]

    def extra(self):
        return {"optimizer": "ngd", "ngd_norm": "block" if self.block else "joint"}


class _NgdPrimal(_Ngd):
    def _init_ngd(self):
        super()._init_ngd()
        d = self.pb.d
        self.gp, self.gnu = np.empty(d), np.empty(d)


class _NgdDualWp(_Ngd):
    """The (b, M) recurrence with each pending step's ``(a_p, a_W)`` in ``state["lrb"]``."""

    _head_key = "beta"

    def _init_ngd(self):
        super()._init_ngd()
        self.state["lrb"] = np.zeros((DUAL_BLOCK, 2))
        if not self.head:
            self.eh = np.empty(self.pb.N)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_wp_ngd_run(st["z"], st["S"], st["P"], st["b"], st["MT"], st["CbT"], st["Eb"],
                                         st["lrb"], st["nb"], self._nu, self._v, self.Gxx, pb.y, pb.T, pb.relevant,
                                         pb.lr, self.head, self.block, n_steps, frak_sum, self.s, self.c, self.h,
                                         self.e, self.eh, self.Sc, self.Hc)

    def _current(self):
        st = self.state
        b, MT = st["b"].copy(), st["MT"].copy()
        self.kern.dual_wp_ngd_flush(b, MT, st["CbT"], st["Eb"], st["lrb"], st["nb"].copy(), np.empty(b.shape[0]))
        return st["z"], st["P"], b, MT


class _NgdPrimalP(_NgdPrimal):
    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        XT = self.XT if self.head else self.KT      # unused without a head (PrimalP has no X^T)
        return self.kern.primal_p_ngd_run(st["p"], st["z"], self._nu, self._v, self.K, self.KT, pb.X, XT, pb.y,
                                          pb.T, pb.relevant, pb.lr, self.head, self.block, n_steps, frak_sum, self.s,
                                          self.c, self.h, self.gp, self.gnu)


class _NgdPrimalWp(_NgdPrimal):
    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_wp_ngd_run(st["W"], st["p"], st["u"], st["z"], self._nu, self._v, pb.X, self.XT,
                                           pb.y, pb.T, pb.relevant, pb.lr, self.head, self.block, n_steps, frak_sum,
                                           self.s, self.c, self.h, self.g, self.gp, self.gnu)


class _NgdDualP(_Ngd):
    _head_key = "beta"

    def _init_ngd(self):
        super()._init_ngd()
        N = self.pb.N
        self.ek = np.empty(N)
        if not self.head:
            self.eh = np.empty(N)
            self.Gxx = np.zeros((0, 0))

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_p_ngd_run(st["a"], st["z"], self._nu, self._v, self.Gkk, self.Gxx, pb.y, pb.T,
                                        pb.relevant, pb.lr, self.head, self.block, n_steps, frak_sum, self.s, self.c,
                                        self.h, self.ek, self.eh)


def _member(name, ngd_cls, gd_cls, head):
    """``class name(ngd_cls, gd_cls)``, registered: the GD member's set-up, then the NGD flags."""

    def __init__(self, pb, kern, options=None):
        gd_cls.__init__(self, pb, kern, options)
        self._init_ngd()

    cls = type(name, (ngd_cls, gd_cls), {"__init__": __init__, "head": head, "__module__": __name__,
                                         "__doc__": f"Normalised GD in the coordinates of ``{gd_cls.__name__}``."})
    return register(cls)


NgdPrimalP = _member("NgdPrimalP", _NgdPrimalP, PrimalP, False)
NgdPrimalPNu = _member("NgdPrimalPNu", _NgdPrimalP, PrimalPNu, True)
NgdPrimalWp = _member("NgdPrimalWp", _NgdPrimalWp, PrimalWp, False)
NgdPrimalWpNu = _member("NgdPrimalWpNu", _NgdPrimalWp, PrimalWpNu, True)
NgdDualP = _member("NgdDualP", _NgdDualP, DualP, False)
NgdDualPNu = _member("NgdDualPNu", _NgdDualP, DualPNu, True)
NgdDualWp = _member("NgdDualWp", _NgdDualWp, DualWp, False)
NgdDualWpNu = _member("NgdDualWpNu", _NgdDualWp, DualWpNu, True)
