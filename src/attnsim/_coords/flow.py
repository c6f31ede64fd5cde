"""Gradient-flow mode: the flow of the training loss, integrated in GD-step time.

``train(..., dynamics="flow")`` replaces the GD iteration by the gradient flow of
the same loss, with time measured in GD steps (``tau = t / alpha``), so every
``Result`` field means what it means for GD and ``steps`` may reach 10^15. The
flow is integrated by an embedded Runge-Kutta method of order 8 with error
control (Dormand-Prince 8(5,3), ``_kernels.flow``) in the dual
coordinates of DESIGN.md §4, landing exactly on every save time (no
interpolation).

Matching GD, not just the flow. GD is forward Euler on the flow, so
``GD(alpha) - flow = O(alpha)``. By default (``FlowOptions()``):

1. the integrated field is the first backward-error correction
   ``alpha F - (alpha^2 / 2) F' F`` (``F = -grad L``; the directional derivative is
   analytic, see ``_kernels.flow._stage_wp``), whose solution follows GD to
   ``O(alpha^2)``;
2. the run starts with exact GD and switches to the flow once the flow is smooth
   on the scale of one GD step: ``alpha rho(F') <= rho_tol``, with ``rho`` the
   spectral radius of the flow's Jacobian from a few power iterations of
   analytic JVPs (warm-started), checked at step 0 and then each time the step
   count has grown by half, or sooner: where ``alpha rho`` is within a factor 1.5
   of ``rho_tol``, at the step where a fall like ``1 / tau`` would bring it there
   (``_next_check``). Fallback: the switch happens at ``gd_start_max``
   steps whatever the estimate says, and ``gd_start=<int>`` fixes the number of
   GD steps outright (``0``: pure flow from the start).

Bookkeeping: ``frak_cum`` holds the GD sum ``sum_k m(1-m)`` over the exact-GD
start plus ``int m(1-m) d tau`` afterwards. ``Result.extra`` records the
dynamics, tolerances, the GD steps taken, right-hand-side evaluations and
accepted and rejected steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .._kernels import dop853
from .._kernels import flow as fk
from .._kernels import gd as gdk
from .._result import MAX_STEPS_REACHED, STEP_SIZE_COLLAPSED
from .._validation import ConfigError, check_float, check_int
from .base import TRAINABLE_SETS, Coordinates, register
from .dual import DUAL_BLOCK, DualPSetup, DualWpSetup

# Indices into the int64 control array held in ``state["ctl"]``.
_PHASE, _TAU, _NEXT_CHECK, _RHS, _ACCEPTED, _REJECTED, _GD_STEPS, _CHECKS = range(8)
_GD, _FLOW = 0, 1


@dataclass(frozen=True, kw_only=True)
class FlowOptions:
    """Settings of ``dynamics="flow"``.

    Parameters
    ----------
    rtol, atol : float
        Error tolerances of the integrator, on the scores (and on ``||p||^2``, the
        coordinates ``b`` norm-wise, and the 𝔖 integral): a step is accepted when the
        DOP853 error estimate is below ``atol + rtol |z|`` in the RMS norm.
    correction : bool
        Integrate the backward-error-corrected field ``alpha F - (alpha^2/2) F'F`` (follows
        GD to O(alpha^2)) rather than the plain flow ``alpha F`` (O(alpha)).
    gd_start : "auto" or int
        ``"auto"``: exact GD until ``alpha rho(F') <= rho_tol`` or ``gd_start_max`` steps;
        an int: exactly that many GD steps first (0: flow from step 0).
    rho_tol : float
        Threshold on ``alpha rho(F')`` for the automatic switch.
    gd_start_max : int
        Fallback: most GD steps of the automatic start.
    power_iters : int
        Power iterations per Jacobian estimate (warm-started from the previous one).
    h_min : float
        A step below this many GD steps stops the run.
    max_steps : int
        Integrator steps (accepted and rejected) after which the run stops with status
        ``"max_steps_reached"`` and a message saying the flow is stiff there. Saturating dynamics (the paper's presets) need about
        ten steps per decade of tau; a sample whose attention settles at an interior
        equilibrium while another keeps saturating makes the flow stiff, and an explicit
        method then needs about ``tau * alpha * rho`` steps: use ``dynamics="gd"`` or a
        shorter horizon for those.

    Examples
    --------
    >>> FlowOptions(rtol=1e-10).atol
    1e-11
    """

    rtol: float = 1e-8
    atol: float = 1e-11
    correction: bool = True
    gd_start: str | int = "auto"
    rho_tol: float = 5e-4
    gd_start_max: int = 200_000
    power_iters: int = 8
    h_min: float = 1e-6
    max_steps: int = 100_000

    def __post_init__(self):
        put = lambda k, val: object.__setattr__(self, k, val)  # noqa: E731
        put("rtol", check_float("flow.rtol", self.rtol, positive=True))
        put("atol", check_float("flow.atol", self.atol, positive=True))
        if not isinstance(self.correction, (bool, np.bool_)):
            raise ConfigError(f"flow.correction must be True or False; got {self.correction!r}")
        if self.gd_start != "auto":
            if isinstance(self.gd_start, str):
                raise ConfigError(f"flow.gd_start must be 'auto' or an integer >= 0; got {self.gd_start!r}")
            put("gd_start", check_int("flow.gd_start", self.gd_start, minimum=0))
        put("rho_tol", check_float("flow.rho_tol", self.rho_tol, positive=True))
        put("gd_start_max", check_int("flow.gd_start_max", self.gd_start_max, minimum=0))
        put("power_iters", check_int("flow.power_iters", self.power_iters, minimum=2))
        put("h_min", check_float("flow.h_min", self.h_min, positive=True))
        put("max_steps", check_int("flow.max_steps", self.max_steps, minimum=1))


def as_flow_options(flow) -> FlowOptions:
    """``None`` (defaults), a ``FlowOptions`` or a dict of its fields."""
    if flow is None:
        return FlowOptions()
    if isinstance(flow, FlowOptions):
        return flow
    if isinstance(flow, dict):
        unknown = sorted(set(flow) - set(FlowOptions.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"flow options {unknown} are not known; allowed: "
                              f"{', '.join(FlowOptions.__dataclass_fields__)}")
        return FlowOptions(**flow)
    raise ConfigError(f"flow must be None, a FlowOptions or a dict; got {type(flow).__name__}")


def _next_check(tau: int, alpha_rho: float, rho_tol: float) -> int:
    """The step of the next switch test after a failed one at ``tau`` (``alpha_rho > rho_tol``).

    Where ``alpha rho`` is already small it falls like ``1 / tau`` or faster (local slopes
    -1.03 to -1.4 in log-log at the paper's settings), so ``tau * alpha_rho / rho_tol`` is where it
    should reach ``rho_tol``: the next test is there, at most half the step count on (and at least
    16 steps and 1/32 of it on). A test that still fails schedules the next one the same way.
    """
    lo = tau + max(16, tau // 32)
    hi = max(lo, (3 * tau) // 2)
    if not np.isfinite(alpha_rho):
        return hi
    return int(min(hi, max(lo, np.ceil(tau * (alpha_rho / rho_tol)))))


class _Flow(Coordinates):
    """Shared driver: exact-GD start, switch test, then the integrator (see module docstring).

    Members combine it with a dual set-up (``DualPSetup``, ``DualWpSetup``) and provide
    ``_gd`` (exact GD: the GD kernels themselves, ``_kernels.gd``), ``_rho``, ``_flow``,
    ``_frak_block`` and ``_warm``, and may override ``_enter_flow``.
    """

    dynamics = "flow"
    diagnostics = frozenset({"alpha_rho"})        # NaN until the first Jacobian estimate

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, as_flow_options(options))
        self.tab = dop853.tableau()
        self.ctl = dop853.controller()
        self.ek, self.eh = np.empty(pb.N), np.empty(pb.N)      # scratch of the GD kernels
        ctl = np.zeros(8, dtype=np.int64)
        ctl[_PHASE] = _GD
        self.state = {"ctl": ctl, "h": np.array([1.0]), "alpha_rho": np.array([np.nan])}
        self._stop = None          # (status, message) of a stop that is not a non-finite value

    # -- member hooks
    def _gd(self, n_steps, frak_sum) -> int:
        raise NotImplementedError

    def _rho(self) -> float:
        raise NotImplementedError

    def _flow(self, t_len) -> float:
        raise NotImplementedError

    def _frak_block(self) -> np.ndarray:
        raise NotImplementedError

    def _warm(self) -> None:
        raise NotImplementedError

    def _enter_flow(self) -> None:
        """Called once, when the exact-GD start ends (the state then becomes the integrator's)."""

    def _switch(self, ctl):
        ctl[_PHASE] = _FLOW
        self._enter_flow()

    def _tol(self):
        o = self.options
        return (o.rtol, o.atol, o.h_min)

    # -- driver
    def _gd_limit(self, ctl) -> int:
        """GD steps allowed before the next decision point."""
        if self.options.gd_start == "auto":
            return int(min(ctl[_NEXT_CHECK], self.options.gd_start_max)) - int(ctl[_TAU])
        return self.options.gd_start - int(ctl[_TAU])

    def _decide(self, ctl):
        """At a decision point of the GD start: switch to the flow, or schedule the next check."""
        tau = int(ctl[_TAU])
        if self.options.gd_start != "auto" or tau >= self.options.gd_start_max:
            self._switch(ctl)
            return
        ar = self.pb.lr * self._rho()
        ctl[_CHECKS] += 1
        self.state["alpha_rho"][0] = ar
        if np.isfinite(ar) and ar <= self.options.rho_tol:
            self._switch(ctl)
        else:
            ctl[_NEXT_CHECK] = _next_check(tau, ar, self.options.rho_tol)

    def plan(self, to_save: int, suggested: int) -> int:
        """The flow integrates whole save intervals: its step sequence (hence its rounding)
        then depends on the save times only, never on how fast the machine is. GD-start
        chunks end at the deterministic decision points, taken here.
        """
        ctl = self.state["ctl"]
        if ctl[_PHASE] == _GD and self._gd_limit(ctl) <= 0:
            self._decide(ctl)
        if ctl[_PHASE] == _FLOW:
            return to_save
        return max(1, min(to_save, suggested, self._gd_limit(ctl)))

    def warm_up(self):
        self._warm()
        self.observe()

    def advance(self, n_steps, frak_sum) -> int:
        ctl = self.state["ctl"]
        if n_steps == 0:
            self._warm()
            return 0
        done = 0
        while done < n_steps:
            if ctl[_PHASE] == _GD:
                k = min(n_steps - done, self._gd_limit(ctl))
                if k > 0:
                    got = int(self._gd(k, frak_sum))
                    ctl[_TAU] += got
                    ctl[_GD_STEPS] += got
                    done += got
                    if got < k:
                        return done
                if self._gd_limit(ctl) <= 0:
                    self._decide(ctl)
                continue
            todo = n_steps - done
            t = self._flow(float(todo))
            frak_sum += self._frak_block()
            if t < todo:
                whole = int(np.floor(t))
                ctl[_TAU] += whole
                self._stop = self._why_short(int(ctl[_TAU]))
                return done + whole
            ctl[_TAU] += todo
            done = n_steps
        return done

    def _why_short(self, at_step):
        """The outcome of an integration that ended before its target time, if not an overflow."""
        h, o = float(self.state["h"][0]), self.options
        ctl = self.state["ctl"]
        if ctl[_ACCEPTED] + ctl[_REJECTED] >= o.max_steps:
            return MAX_STEPS_REACHED, (
                f"flow stopped at step {at_step}: max_steps={o.max_steps} integrator steps used, last step "
                f"{h:.3g} GD steps; the flow is stiff here (an attention pattern at an interior equilibrium): "
                "raise FlowOptions.max_steps, or use dynamics='gd' for this stretch or a shorter horizon")
        if h < o.h_min:
            return STEP_SIZE_COLLAPSED, (
                f"flow stopped at step {at_step}: step size {h:.3g} GD steps fell below h_min={o.h_min:g}; "
                "lower FlowOptions.h_min or rtol/atol less strict, or use dynamics='gd'")
        return None

    def stop(self):
        return self._stop

    def nonfinite_state(self) -> str:
        # alpha_rho is a diagnostic, NaN until a Jacobian estimate exists (never, with an integer
        # gd_start): not part of the iterate, so never evidence of an overflow.
        bad = [k for k, v in self.state.items() if k != "alpha_rho" and v.dtype.kind == "f"
               and not np.all(np.isfinite(v))]
        return super().nonfinite_state() if bad else ""

    def options_dict(self) -> dict:
        return {k: (int(v) if isinstance(v, np.integer) else v) for k, v in asdict(self.options).items()}

    def extra(self) -> dict:
        ctl = self.state["ctl"]
        out = {"dynamics": "flow", "integrator": "DOP853", **self.options_dict()}
        out.update(gd_start_steps=int(ctl[_GD_STEPS]), rhs_evals=int(ctl[_RHS]), accepted_steps=int(ctl[_ACCEPTED]),
                   rejected_steps=int(ctl[_REJECTED]), jacobian_checks=int(ctl[_CHECKS]),
                   alpha_rho_at_switch=float(self.state["alpha_rho"][0]))
        return out


@register
class FlowP(_Flow, DualPSetup):
    """p (and the head), ``p = p0 + K^T a``; small state ``[z | a | F]``, with the head
    ``[z | v | a | beta | F]`` (``v = X_all nu0 + Gxx beta``, DESIGN.md §8)."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        N, n = pb.N, pb.n
        k = 2 if self.trained.trains_head else 1             # N-blocks before a
        ys = np.zeros(2 * k * N + n)
        ys[:N] = self.z0
        if self.trained.trains_head:
            ys[N:2 * N] = pb.v
        self.state.update(ys=ys, eig=np.zeros(k * N))

    def _a_z(self):
        N, ys = self.pb.N, self.state["ys"]
        k = 2 if self.trained.trains_head else 1
        return ys[k * N:(k + 1) * N], ys[:N]

    def _beta_v(self):
        N, ys = self.pb.N, self.state["ys"]
        return ys[3 * N:4 * N], ys[N:2 * N]

    def _head(self):
        """``(beta, v, Gxx)`` for the kernels: the head's, or an unused ``beta``, the fixed values and Gram."""
        if self.trained.trains_head:
            return (*self._beta_v(), self.Gxx)
        return self.none, self.pb.v, self.Gkk

    def _warm(self):
        pb = self.pb
        _, z = self._a_z()
        _, v, Gxx = self._head()
        self._gd(0, np.zeros(pb.n))
        fk.spectral_p(z, v, self.Gkk, Gxx, pb.y, pb.T, pb.relevant, self.state["eig"].copy(), 0)
        self._flow(0.0)

    def _gd(self, n_steps, frak_sum):
        pb = self.pb
        a, z = self._a_z()
        beta, v, Gxx = self._head()
        return gdk.dual_p_run(a, z, beta, v, self.Gkk, Gxx, pb.y, pb.T, pb.relevant, gdk.GD, pb.lr, 0.0, n_steps,
                              frak_sum, self.s, self.c, self.h, self.none, self.none, self.ek, self.eh, self.fw)

    def _rho(self):
        pb = self.pb
        _, z = self._a_z()
        _, v, Gxx = self._head()
        return fk.spectral_p(z, v, self.Gkk, Gxx, pb.y, pb.T, pb.relevant, self.state["eig"],
                             self.options.power_iters)

    def _flow(self, t_len):
        pb, st = self.pb, self.state
        return fk.flow_p_run(st["ys"], self.Gkk, self._head()[2], pb.v, pb.y, pb.T, pb.relevant, pb.lr,
                             self.options.correction, t_len, st["h"], self._tol(), self.options.max_steps, self.tab,
                             self.ctl, st["ctl"][_RHS:_REJECTED + 1])

    def _frak_block(self):
        return self.state["ys"][(4 if self.trained.trains_head else 2) * self.pb.N:]


@register
class FlowPNu(FlowP):
    """p and the head."""

    trained = TRAINABLE_SETS["p+nu"]


@register
class FlowWp(_Flow, DualWpSetup):
    """W and p (and the head), ``p = Q b``, ``W = W0 + Q M X``; small state ``[z | P | b | F]``, with the
    head ``[z | P | b | v | beta | F]``, plus ``S``, ``MT``. The exact-GD start is ``dual_wp_run``'s,
    its pending ``(b, M)`` block part of the state until the switch to the integrator applies it."""

    def __init__(self, pb, kern, options=None):
        super().__init__(pb, kern, options)
        N, n = pb.N, pb.n
        head = self.trained.trains_head
        init = self._initial()
        ys = np.zeros((4 if head else 2) * N + 2 + n)
        ys[:N] = init["z"]
        ys[N] = init["P"][0]
        ys[N + 1:2 * N + 2] = init["b"]
        if head:
            ys[2 * N + 2:3 * N + 2] = pb.v
        self.state.update(ys=ys, S=init["S"], MT=np.zeros((N, N + 1)), CbT=np.zeros((N, DUAL_BLOCK)),
                          Eb=np.zeros((DUAL_BLOCK, N)), nb=np.zeros(1, dtype=np.int64),
                          eig_b=np.zeros(N + 1), eig_MT=np.zeros((N, N + 1)), eig_beta=np.zeros(N if head else 0))
        self.lrb = np.full((DUAL_BLOCK, 2), pb.lr)
        self.e = np.empty(N); self.Sc = np.empty(N); self.Hc = np.empty(N + 1)

    def _views(self):
        """``(z, P, b)``: views into ``ys``."""
        N, ys = self.pb.N, self.state["ys"]
        return ys[:N], ys[N:N + 1], ys[N + 1:2 * N + 2]

    def _current(self):
        st = self.state
        z, P, b = self._views()
        if st["nb"][0] == 0:
            return z, P, b, st["MT"]
        b, MT = b.copy(), st["MT"].copy()
        gdk.dual_wp_flush(b, MT, st["CbT"], st["Eb"], self.lrb, st["nb"].copy(), np.empty(b.shape[0]))
        return z, P, b, MT

    def _enter_flow(self):
        st = self.state
        gdk.dual_wp_flush(self._views()[2], st["MT"], st["CbT"], st["Eb"], self.lrb, st["nb"], self.Hc)

    def _beta_v(self):
        N, ys = self.pb.N, self.state["ys"]
        return ys[3 * N + 2:4 * N + 2], ys[2 * N + 2:3 * N + 2]

    def _head(self):
        """``(beta, v)`` for the kernels: the head's, or an unused ``beta`` and the fixed values."""
        return self._beta_v() if self.trained.trains_head else (self.none, self.pb.v)

    def _warm(self):
        pb, st = self.pb, self.state
        z, _, b, MT = self._current()
        self._gd(0, np.zeros(pb.n))
        fk.spectral_wp(z, b, MT, self.Gqq, self.Gxx, self._head()[1], pb.y, pb.T, pb.relevant, st["eig_b"].copy(),
                       st["eig_MT"].copy(), st["eig_beta"].copy(), 0)
        self._flow(0.0)

    def _gd(self, n_steps, frak_sum):
        pb, st = self.pb, self.state
        z, P, b = self._views()
        beta, v = self._head()
        return gdk.dual_wp_run(z, st["S"], P, b, st["MT"], st["CbT"], st["Eb"], self.lrb, st["nb"], beta, v,
                               self.Gxx, pb.y, pb.T, pb.relevant, gdk.GD, pb.lr, 0.0, n_steps, frak_sum, self.s,
                               self.c, self.h, self.none, self.e, self.eh, self.Sc, self.Hc, self.fw)

    def _rho(self):
        pb, st = self.pb, self.state
        z, _, b, MT = self._current()
        return fk.spectral_wp(z, b, MT, self.Gqq, self.Gxx, self._head()[1], pb.y, pb.T, pb.relevant, st["eig_b"],
                              st["eig_MT"], st["eig_beta"], self.options.power_iters)

    def _flow(self, t_len):
        pb, st = self.pb, self.state
        return fk.flow_wp_run(st["ys"], st["S"], st["MT"], self.Gxx, pb.v, pb.y, pb.T, pb.relevant, pb.lr,
                              self.options.correction, t_len, st["h"], self._tol(), self.options.max_steps,
                              self.tab, self.ctl, st["ctl"][_RHS:_REJECTED + 1])

    def _frak_block(self):
        return self.state["ys"][(4 if self.trained.trains_head else 2) * self.pb.N + 2:]


@register
class FlowWpNu(FlowWp):
    """W, p and the head."""

    trained = TRAINABLE_SETS["Wp+nu"]
