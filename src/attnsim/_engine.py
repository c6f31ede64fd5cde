"""The engine: ``train(arrays...) -> Result``.

It validates and converts the arrays once, precomputes what the chosen
coordinates need, runs the numba kernel chunk by chunk between save times
(progress, hooks and the divergence check live between chunks), records at each
save time and assembles the ``Result``.

Coordinates (DESIGN.md §3-4) are small classes with one job each: hold the
iterate in their own variables, advance it with their kernel, and report the
quantities the recorder needs. ``primal`` keeps ``W`` and ``p``; ``dual`` keeps
coordinates whose size depends on ``N = n T`` only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np

from . import _kernels, _reference
from ._result import DIVERGED, FINISHED, INTERRUPTED, Result
from ._saveat import as_saveat
from ._validation import ConfigError, check_array, check_choice, check_float, check_int, check_labels, check_mask

ENGINES = ("auto", "primal", "dual")
#: Largest number of steps: counters are int64 and save times pass through float64 (exact below 2**53).
MAX_STEPS = 2 ** 53
BACKENDS = ("numba", "numpy")

# Seconds one kernel call may take before control returns to Python (progress,
# hooks, Ctrl-C). Short enough to feel responsive, long enough that call overhead
# (a few microseconds) is invisible.
_CHUNK_SECONDS = 0.25


class Problem:
    """Validated, flattened arrays of one training problem (read-only inside the engine).

    Attributes
    ----------
    X : ndarray, shape (N, d)      training tokens, sample-major
    v : ndarray, shape (N,)        token values ``X nu``
    y : ndarray, shape (n,)
    Xt : ndarray, shape (Nt, d)    test tokens (Nt = 0 without a test set)
    vt : ndarray, shape (Nt,)
    yt : ndarray, shape (n_test,)
    W0 : ndarray, shape (d, d)
    p0, nu : ndarray, shape (d,)
    probes : ndarray, shape (k, d)
    relevant : ndarray of bool, shape (T,)
    """

    def __init__(self, X, y, W0, p0, nu, lr, X_test, y_test, relevant, probes):
        self.n, self.T, self.d = X.shape
        self.N = self.n * self.T
        self.X = X.reshape(self.N, self.d)
        self.y = y
        self.W0, self.p0, self.nu = W0, p0, nu
        self.lr = lr
        self.v = self.X @ nu
        self.n_test = 0 if X_test is None else X_test.shape[0]
        self.Xt = np.zeros((0, self.d)) if X_test is None else X_test.reshape(-1, self.d)
        self.yt = np.zeros(0) if y_test is None else y_test
        self.vt = self.Xt @ nu
        self.relevant = relevant
        self.probes = probes


# ------------------------------------------------------------------ coordinates


def _norm(x) -> float:
    """Euclidean/Frobenius norm that stays finite for huge finite entries (|x| up to 1e308)."""
    m = float(np.max(np.abs(x), initial=0.0))
    if m == 0.0 or not np.isfinite(m):
        return m
    # NumPy's pairwise sum rather than np.linalg.norm: the latter calls BLAS ddot, whose
    # threaded summation order (hence last bits) depends on the BLAS thread count.
    return m * float(np.sqrt(np.sum(np.square(x / m))))


class _Coordinates:
    """Base of the four coordinate systems. ``state`` maps names to the arrays
    that fully define the iterate (what a checkpoint must store)."""

    name = ""
    trainable = ""

    def __init__(self, pb: Problem, kern):
        self.pb = pb
        self.kern = kern
        N = pb.N
        self.s = np.empty(N)
        self.c = np.empty(N)

    def advance(self, n_steps: int, frak_sum: np.ndarray) -> int:
        raise NotImplementedError

    def observe(self):
        """Return ``(z, z_test, p_norm, w_dist, p_probe, query_probe)`` at the current iterate."""
        raise NotImplementedError

    def final_params(self):
        """Return ``(W, p)`` at the current iterate, materialised."""
        raise NotImplementedError


class _PrimalP(_Coordinates):
    name, trainable = "primal", "p"

    def __init__(self, pb, kern):
        super().__init__(pb, kern)
        self.K = pb.X @ pb.W0.T
        self.KT = np.ascontiguousarray(self.K.T)
        self.state = {"p": pb.p0.copy(), "z": self.K @ pb.p0}

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_p_run(st["p"], st["z"], self.K, self.KT, pb.v, pb.y, pb.T, pb.relevant,
                                      pb.lr, n_steps, frak_sum, self.s, self.c)

    def observe(self):
        pb, p = self.pb, self.state["p"]
        u = pb.W0.T @ p
        return self.state["z"], pb.Xt @ u, _norm(p), 0.0, pb.probes @ p, pb.probes @ u

    def final_params(self):
        return self.pb.W0.copy(), self.state["p"].copy()


class _PrimalWp(_Coordinates):
    name, trainable = "primal", "Wp"

    def __init__(self, pb, kern):
        super().__init__(pb, kern)
        self.XT = np.ascontiguousarray(pb.X.T)
        u = pb.W0.T @ pb.p0
        self.state = {"W": pb.W0.copy(), "p": pb.p0.copy(), "u": u, "z": pb.X @ u}
        self.g = np.empty(pb.d)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.primal_wp_run(st["W"], st["p"], st["u"], st["z"], pb.X, self.XT, pb.v, pb.y, pb.T,
                                       pb.relevant, pb.lr, n_steps, frak_sum, self.s, self.c, self.g)

    def observe(self):
        pb, st = self.pb, self.state
        u, p = st["u"], st["p"]
        return (st["z"], pb.Xt @ u, _norm(p), _norm(st["W"] - pb.W0),
                pb.probes @ p, pb.probes @ u)

    def final_params(self):
        return self.state["W"].copy(), self.state["p"].copy()


class _DualP(_Coordinates):
    """``p = p0 + K^T a`` with fixed keys ``K = X W0^T``."""

    name, trainable = "dual", "p"

    def __init__(self, pb, kern):
        super().__init__(pb, kern)
        self.K = pb.X @ pb.W0.T                     # (N, d), rows W0 x_j
        self.Gkk = self.K @ self.K.T                 # (N, N)
        z0 = self.K @ pb.p0
        self.z0, self.P0 = z0, float(pb.p0 @ pb.p0)
        W0T_K = pb.W0.T @ self.K.T                   # (d, N)
        # Test scores' dependence on a, stored transposed (N, Nt) for the serial
        # save-time kernel (a threaded BLAS matvec here stalls when the cores are busy).
        self.AtT = np.ascontiguousarray((pb.Xt @ W0T_K).T)
        self.zt0 = pb.Xt @ (pb.W0.T @ pb.p0)
        self.R_p = (pb.probes @ pb.p0, pb.probes @ self.K.T)           # <p0, r>, <k_j, r>
        self.R_q = (pb.probes @ (pb.W0.T @ pb.p0), pb.probes @ W0T_K)  # <W0^T p0, r>, <W0^T k_j, r>
        self.state = {"a": np.zeros(pb.N), "z": z0.copy()}

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_p_run(st["a"], st["z"], self.Gkk, pb.v, pb.y, pb.T, pb.relevant, pb.lr,
                                    n_steps, frak_sum, self.s, self.c)

    def observe(self):
        a = self.state["a"]
        # ||p||^2 = P0 + 2 a.z0 + a^T Gkk a, evaluated with a scaled to |a| <= 1 so that a huge
        # but finite p does not overflow its own squared norm.
        scale = max(float(np.max(np.abs(a), initial=0.0)), 1.0)
        a_s = a / scale
        with np.errstate(over="ignore"):
            p_norm2 = self.P0 / scale / scale + 2.0 * (a_s @ self.z0) / scale + a_s @ (self.Gkk @ a_s)
        zt = self.zt0.copy()
        self.kern.add_matvec_t(self.AtT, a, zt)
        return (self.state["z"], zt, scale * np.sqrt(max(p_norm2, 0.0)), 0.0,
                self.R_p[0] + self.R_p[1] @ a, self.R_q[0] + self.R_q[1] @ a)

    def final_params(self):
        return self.pb.W0.copy(), self.pb.p0 + self.K.T @ self.state["a"]


#: Steps per block of the dual (b, M) update (``_kernels.dual_wp_run``).
_DUAL_BLOCK = 16


class _DualWp(_Coordinates):
    """``p = Q b``, ``W = W0 + Q M X`` with ``Q = [p0, W0 X^T]``; see ``_kernels.dual_wp_run``."""

    name, trainable = "dual", "Wp"

    def __init__(self, pb, kern):
        super().__init__(pb, kern)
        N = pb.N
        self.Q = np.concatenate([pb.p0[:, None], pb.W0 @ pb.X.T], axis=1)  # (d, N+1)
        self.Gqq = self.Q.T @ self.Q
        self.Gxx = pb.X @ pb.X.T
        W0T_Q = pb.W0.T @ self.Q                     # (d, N+1)
        # Test scores z_t = A1 b + A2 (M^T Gqq b) with A1 = Xt W0^T Q (Nt, N+1) and
        # A2 = Xt X^T (Nt, N), stored stacked and transposed, (2N+1, Nt), for the
        # serial save-time kernel.
        self.AT = np.ascontiguousarray(np.concatenate([pb.Xt @ W0T_Q, pb.Xt @ pb.X.T], axis=1).T)
        self.R_p = pb.probes @ self.Q                # (k, N+1): <p, r> = R_p b
        self.R_q1 = pb.probes @ W0T_Q                # <W0 r, Q b>
        self.R_q2 = pb.probes @ pb.X.T               # (k, N): <x_j, r>
        b = np.zeros(N + 1)
        b[0] = 1.0
        self.state = {
            "z": self.Gqq[1:, 0].copy(),
            "S": np.ascontiguousarray(self.Gqq[1:, 1:]),
            "P": np.array([self.Gqq[0, 0]]),
            "b": b,
            "MT": np.zeros((N, N + 1)),
            # steps not yet applied to (b, MT): the kernel updates them a block at a time
            "CbT": np.zeros((N, _DUAL_BLOCK)),
            "Eb": np.zeros((_DUAL_BLOCK, N)),
            "nb": np.zeros(1, dtype=np.int64),
        }
        self.e = np.empty(N)
        self.Sc = np.empty(N)
        self.Hc = np.empty(N + 1)

    def advance(self, n_steps, frak_sum):
        st, pb = self.state, self.pb
        return self.kern.dual_wp_run(st["z"], st["S"], st["P"], st["b"], st["MT"], st["CbT"], st["Eb"], st["nb"],
                                     self.Gxx, pb.v, pb.y, pb.T, pb.relevant, pb.lr, n_steps, frak_sum, self.s,
                                     self.c, self.e, self.Sc, self.Hc)

    def _current_b_MT(self):
        """``(b, MT)`` at the current step: the pending block applied to copies."""
        st = self.state
        b, MT = st["b"].copy(), st["MT"].copy()
        self.kern.dual_wp_flush(b, MT, st["CbT"], st["Eb"], st["nb"].copy(), self.pb.lr, np.empty(b.shape[0]))
        return b, MT

    def observe(self):
        st = self.state
        b, MT = self._current_b_MT()
        Gb = self.Gqq @ b
        MtGb = MT @ Gb                                # (N,) = M^T Gqq b
        w_dist2 = float(self.kern.dual_w_dist2(MT, self.Gqq, self.Gxx))
        zt = np.zeros(self.AT.shape[1])
        self.kern.add_matvec_t(self.AT, np.concatenate([b, MtGb]), zt)
        return (st["z"], zt, np.sqrt(max(st["P"][0], 0.0)),
                np.sqrt(max(w_dist2, 0.0)), self.R_p @ b, self.R_q1 @ b + self.R_q2 @ MtGb)

    def final_params(self):
        b, MT = self._current_b_MT()
        W = self.pb.W0 + (self.Q @ MT.T) @ self.pb.X
        return W, self.Q @ b


_COORDINATES = {
    ("primal", "p"): _PrimalP,
    ("primal", "Wp"): _PrimalWp,
    ("dual", "p"): _DualP,
    ("dual", "Wp"): _DualWp,
}


def step_costs(N: int, d: int, n_test_tokens: int, steps: int, n_saves: int, trainable: str) -> dict:
    """Estimated cost of a whole run in each coordinate system, in "vectorised flops".

    Per-step work dominates: primal ``p`` sweeps the N x d keys twice (``4 N d``),
    dual ``W, p`` makes about three passes over N x N matrices (``7 N^2``), dual ``p``
    one (``2 N^2``); all three are vectorised axpy sweeps and run at about the same
    time per flop. Primal ``W, p`` sweeps the d x d matrix once per step, but with a
    dot product per row (``(W g)_r``, a serial reduction that cannot be vectorised
    without reassociating it), so each of its ``d^2`` elements costs as much as about
    15 vectorised flops: ``15 d^2 + 4 N d`` (fitted to measured rates at d = 128 and 400,
    N = 160; ``benchmarks/RESULTS.md``, "auto choice"). Set-up is BLAS work, counted
    at a tenth of its flops since it runs that much faster per flop. Recording adds
    the test scores at every save.

    Returns
    -------
    dict
        ``{"primal": flops, "dual": flops}``.
    """
    Nt = n_test_tokens
    if trainable == "Wp":
        primal = steps * (15.0 * d * d + 4.0 * N * d) + n_saves * (Nt * d + 2.0 * d * d)
        dual = (steps * 7.0 * N * N + 0.1 * (2.0 * N * d * d + 2.0 * Nt * d * N + 2.0 * N * N * d)
                + n_saves * (2.0 * Nt * N + 2.0 * N ** 3))
    else:
        primal = steps * 4.0 * N * d + 0.1 * 2.0 * N * d * d + n_saves * (Nt * d + d * d)
        dual = steps * 2.0 * N * N + 0.1 * (4.0 * N * d * d + 2.0 * Nt * d * N) + n_saves * 2.0 * Nt * N
    return {"primal": primal, "dual": dual}


def choose_engine(N, d, n_test_tokens, steps, n_saves, trainable) -> str:
    """The coordinate system with the smaller estimated cost (``step_costs``)."""
    costs = step_costs(N, d, n_test_tokens, steps, n_saves, trainable)
    return "dual" if costs["dual"] <= costs["primal"] else "primal"


# ------------------------------------------------------------------ recording


def _outputs(z, v, y, T):
    """Attention ``s`` (n, T) and outputs ``f`` (n,) from flat scores and values."""
    n = y.shape[0]
    s = _reference.softmax_rows(z.reshape(n, T))
    return s, np.sum(s * v.reshape(n, T), axis=1)


class _Recorder:
    """Preallocated ``(n_saves, ...)`` buffers, filled one save time at a time."""

    SCALARS = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy", "test_loss", "test_acc",
               "p_norm", "w_dist")

    def __init__(self, n_saves, pb: Problem, noisy):
        n, T, k = pb.n, pb.T, pb.probes.shape[0]
        self.buffers = {name: np.full(n_saves, np.nan) for name in self.SCALARS}
        self.buffers.update(
            margins=np.full((n_saves, n), np.nan),
            scores=np.full((n_saves, n, T), np.nan),
            attention=np.full((n_saves, n, T), np.nan),
            relevant_mass=np.full((n_saves, n), np.nan),
            frak_s=np.full((n_saves, n), np.nan),
            frak_cum=np.full((n_saves, n), np.nan),
            p_probe=np.full((n_saves, k), np.nan),
            query_probe=np.full((n_saves, k), np.nan),
        )
        self.noisy = noisy
        self.count = 0

    def record(self, idx, coords: _Coordinates, frak_sum) -> str | None:
        """Fill row ``idx``; return the name of a non-finite quantity, or None."""
        # Overflow here is reported as divergence below, not as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._record(idx, coords, frak_sum)

    def _record(self, idx, coords, frak_sum):
        pb, buf = coords.pb, self.buffers
        z, zt, p_norm, w_dist, p_probe, q_probe = coords.observe()
        s, f = _outputs(z, pb.v, pb.y, pb.T)
        margins = pb.y * f
        buf["margins"][idx] = margins
        buf["scores"][idx] = z.reshape(pb.n, pb.T)
        buf["attention"][idx] = s
        m_in = s[:, pb.relevant].sum(axis=1)
        m_out = s[:, ~pb.relevant].sum(axis=1)
        buf["relevant_mass"][idx] = m_in
        buf["frak_s"][idx] = m_in * m_out
        buf["frak_cum"][idx] = frak_sum
        buf["train_loss"][idx] = np.mean(_reference.logistic_loss(margins))
        correct = margins > 0
        buf["train_acc"][idx] = np.mean(correct)
        if np.any(~self.noisy):
            buf["train_acc_clean"][idx] = np.mean(correct[~self.noisy])
        if np.any(self.noisy):
            buf["train_acc_noisy"][idx] = np.mean(correct[self.noisy])
        if pb.n_test:
            _, ft = _outputs(zt, pb.vt, pb.yt, pb.T)
            mt = pb.yt * ft
            buf["test_loss"][idx] = np.mean(_reference.logistic_loss(mt))
            buf["test_acc"][idx] = np.mean(mt > 0)
        buf["p_norm"][idx] = p_norm
        buf["w_dist"][idx] = w_dist
        buf["p_probe"][idx] = p_probe
        buf["query_probe"][idx] = q_probe
        self.count = idx + 1
        checks = (("attention scores", z), ("test scores", zt), ("||p||", p_norm), ("||W - W0||", w_dist),
                  ("train loss", buf["train_loss"][idx]))
        for label, value in checks:
            if not np.all(np.isfinite(value)):
                return label
        return None


# ------------------------------------------------------------------ the run

#: Readable names of the coordinate-state arrays, for divergence messages.
_STATE_NAMES = {
    "p": "p", "W": "W", "u": "query W^T p", "z": "attention scores z", "a": "dual coefficients a",
    "S": "key Gram matrix S", "P": "||p||^2", "b": "dual coefficients b", "MT": "dual coefficients M",
}


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C until the current chunk has finished and been accounted for.

    A KeyboardInterrupt raised between the kernel call and the step-counter update
    would leave a state that no checkpoint can describe exactly; deferring it to the
    end of the chunk (at most ~``_CHUNK_SECONDS``) keeps iterate, counters and
    recorder consistent. Yields a list that is non-empty once Ctrl-C was pressed.
    Does nothing outside the main thread or when someone else handles SIGINT.
    """
    pending = []
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield pending
        return

    def handler(signum, frame):
        pending.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield pending
    finally:
        signal.signal(signal.SIGINT, previous)



class Run:
    """A training run in progress: coordinates, recorder, step counter.

    ``train`` is the usual way in; ``Run`` is public to the package so that
    checkpointing can save and restore ``state_dict()``.
    """

    def __init__(self, pb: Problem, coords: _Coordinates, save_steps: np.ndarray, noisy, extra_meta):
        self.pb = pb
        self.coords = coords
        self.save_steps = save_steps
        self.recorder = _Recorder(save_steps.size, pb, noisy)
        self.frak_sum = np.zeros(pb.n)
        self.step = 0
        self.next_save = 0
        self.status = FINISHED
        self.message = FINISHED
        self.wall_time = 0.0
        self.compile_time = 0.0
        self.meta = extra_meta

    @property
    def total_steps(self) -> int:
        return int(self.save_steps[-1])

    @property
    def done(self) -> bool:
        return self.next_save >= self.save_steps.size or self.status != FINISHED

    def warm_up(self):
        """Compile (or load from cache) the stepping and recording kernels; time it separately.

        ``observe`` has no side effects, so calling it here only moves the compilation of
        the save-time kernels out of the first recorded step's wall time.
        """
        t0 = time.perf_counter()
        self.coords.advance(0, np.zeros(self.pb.n))
        self.coords.observe()
        self.compile_time += time.perf_counter() - t0

    def _diverged(self, at_step, what):
        self.status = DIVERGED
        self.message = f"diverged at step {at_step}: non-finite {what}"

    def _nonfinite_state(self) -> str:
        """Name the parts of the iterate that are no longer finite (for the divergence message)."""
        bad = [_STATE_NAMES.get(k, k) for k, v in self.coords.state.items() if not np.all(np.isfinite(v))]
        return ", ".join(bad)

    def advance(self, max_seconds=_CHUNK_SECONDS, rate=None):
        """Run until the next save time or for about ``max_seconds``, record if a save time
        is reached. Returns the measured steps per second of this chunk (or None)."""
        t0 = time.perf_counter()
        target = int(self.save_steps[self.next_save])
        if target == self.step:
            bad = self.recorder.record(self.next_save, self.coords, self.frak_sum)
            if bad is not None:
                # Keep only finite rows: the message says where and what overflowed.
                self.recorder.count = self.next_save
                self._diverged(self.step, self._nonfinite_state() or bad)
            self.next_save += 1
            self.wall_time += time.perf_counter() - t0
            return None
        todo = target - self.step
        if rate is not None:
            todo = min(todo, max(1, int(rate * max_seconds)))
        else:
            todo = min(todo, 64)
        plan = getattr(self.coords, "plan", None)     # flow coordinates: whole save intervals
        if plan is not None:
            todo = plan(target - self.step, todo)
        done = int(self.coords.advance(todo, self.frak_sum))
        self.step += done
        elapsed = time.perf_counter() - t0
        self.wall_time += elapsed
        if done < todo:
            why = getattr(self.coords, "failure", "")  # flow: a stop that is not an overflow
            if why and not self._nonfinite_state():
                self.status, self.message = DIVERGED, f"stopped at step {self.step}: {why}"
                return None
            # All state finite means the overflow happened in the outputs f = sum_t s_t v_t.
            self._diverged(self.step, self._nonfinite_state() or "outputs f")
            return None
        return done / elapsed if elapsed > 0 else None

    def run(self, progress=False, hooks=()):
        """Advance to the end (or divergence, or KeyboardInterrupt marks it interrupted).

        Ctrl-C is held until the current chunk (about ``_CHUNK_SECONDS``) has finished and the
        hooks have run, so an interrupted run is always in a state a checkpoint can save exactly.
        """
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, unit="step", unit_scale=True,
                       dynamic_ncols=True, mininterval=0.5, leave=True)
        rate = None
        try:
            with _sigint_deferred() as pending:
                while not self.done:
                    before = self.step
                    measured = self.advance(rate=rate)
                    if measured is not None:
                        rate = measured if rate is None else 0.5 * (rate + measured)
                    if bar is not None and self.step > before:
                        bar.update(self.step - before)
                    for hook in hooks:
                        hook(self)
                    if pending:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.status = INTERRUPTED
            self.message = f"interrupted at step {self.step}"
            raise
        finally:
            if bar is not None:
                bar.close()
        if pending:  # Ctrl-C during the last chunk: the run is complete, pass the interrupt on
            raise KeyboardInterrupt

    def result(self, config=None) -> Result:
        count = self.recorder.count
        arrays = {name: buf[:count].copy() for name, buf in self.recorder.buffers.items()}
        W, p = self.coords.final_params()
        return Result(
            steps=self.save_steps[:count].copy(),
            **arrays,
            p=p,
            W=W,
            y=self.pb.y.copy(),
            y_true=self.meta["y_true"],
            noisy=self.recorder.noisy.copy(),
            relevant=self.pb.relevant.copy(),
            roles=self.meta["roles"],
            config=config,
            engine=self.coords.name,
            status=self.status,
            message=self.message,
            wall_time=self.wall_time,
            compile_time=self.compile_time,
            extra=dict(getattr(self.coords, "extra", dict)()),
        )

    # ---------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Every array that, with the problem, defines this run exactly (for checkpoints)."""
        out = {f"state/{k}": v.copy() for k, v in self.coords.state.items()}
        out.update({f"rec/{k}": v.copy() for k, v in self.recorder.buffers.items()})
        out["frak_sum"] = self.frak_sum.copy()
        out["counters"] = np.array([self.step, self.next_save, self.recorder.count], dtype=np.int64)
        out["save_steps"] = self.save_steps.copy()
        return out

    def load_state_dict(self, sd: dict) -> None:
        for k in self.coords.state:
            self.coords.state[k][...] = sd[f"state/{k}"]
        for k in self.recorder.buffers:
            self.recorder.buffers[k][...] = sd[f"rec/{k}"]
        self.frak_sum[...] = sd["frak_sum"]
        self.step, self.next_save, self.recorder.count = (int(x) for x in sd["counters"])


def _check_roles(roles, T):
    """Role codes (``attnsim.ROLE_NAMES`` indexes), one per token position."""
    arr = np.asarray(roles)
    if arr.shape != (T,) or arr.dtype.kind not in "iu" or np.any((arr < 0) | (arr > 3)):
        raise ConfigError(f"roles must be {T} integer codes in 0..3 (R, W_Y*, W_-Y*, I), one per token; "
                          f"got {arr.tolist()[:8]} of shape {arr.shape}")
    return arr.astype(np.int8)


def prepare(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
            relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto",
            backend="numba", dynamics="gd", flow=None) -> Run:
    """Validate the inputs and build a ``Run`` ready to advance (see ``train``)."""
    X = check_array("X", X, ndim=3, hint="X holds n samples of T tokens in R^d, shape (n, T, d)")
    n, T, d = X.shape
    if n < 1 or T < 1 or d < 1:
        raise ConfigError(f"X must have n, T, d >= 1; got shape {X.shape}; pass at least one sample and token")
    like_x = f"X has shape (n, T, d) = {X.shape}"
    y = check_labels("y", y, n, hint=like_x)
    W0 = check_array("W0", W0, ndim=2, shape=(d, d), hint=like_x)
    p0 = check_array("p0", p0, ndim=1, shape=(d,), hint=like_x)
    nu = check_array("nu", nu, ndim=1, shape=(d,), hint=like_x)
    lr = check_float("lr", lr, positive=True, hint="the step size is a finite number > 0, e.g. lr=5e-3")
    steps = check_int("steps", steps, minimum=1, maximum=MAX_STEPS, hint="e.g. steps=1000")
    check_choice("trainable", trainable, ("Wp", "p"))
    check_choice("engine", engine, ENGINES)
    check_choice("backend", backend, BACKENDS)
    check_choice("dynamics", dynamics, ("gd", "flow"))
    if dynamics == "flow" and (engine == "primal" or backend != "numba"):
        raise ConfigError(f"dynamics='flow' runs in dual coordinates with numba; got engine={engine!r}, "
                          f"backend={backend!r}; use engine='auto' or 'dual' and backend='numba'")
    if dynamics == "gd" and flow is not None:
        raise ConfigError("flow options apply only with dynamics='flow'; got dynamics='gd' and flow set")
    if (X_test is None) != (y_test is None):
        raise ConfigError("X_test and y_test must be given together; got only one of them")
    if X_test is not None:
        X_test = check_array("X_test", X_test, ndim=3, shape=(None, T, d), hint=like_x)
        y_test = check_labels("y_test", y_test, X_test.shape[0], hint=f"X_test has shape {X_test.shape}")
    if relevant is None:
        relevant = np.zeros(T, dtype=bool)
        relevant[0] = True
    relevant = check_mask("relevant", relevant, T, hint=f"one flag per token position; {like_x}")
    noisy = np.zeros(n, dtype=bool) if noisy is None else check_mask("noisy", noisy, n,
                                                                      hint=f"one flag per sample; {like_x}")
    y_true = y.copy() if y_true is None else check_labels("y_true", y_true, n, hint=like_x)
    roles = np.where(relevant, 0, 3).astype(np.int8) if roles is None else _check_roles(roles, T)
    probes = (np.zeros((0, d)) if probes is None
              else check_array("probes", probes, ndim=2, shape=(None, d), hint=f"probes are rows in R^d; {like_x}"))
    spec = as_saveat(save_at, steps)

    pb = Problem(X, y, W0, p0, nu, lr, X_test, y_test, relevant, probes)
    if engine == "auto":
        engine = choose_engine(pb.N, d, pb.Xt.shape[0], steps, len(spec), trainable)
    if dynamics == "flow":
        from . import _flow

        coords = _flow.make_coordinates(pb, trainable, flow)
    else:
        kern = _kernels if backend == "numba" else _reference
        coords = _COORDINATES[(engine, trainable)](pb, kern)
    return Run(pb, coords, spec.steps, noisy, {"y_true": y_true, "roles": roles})


def train(X, y, W0, p0, nu, *, lr, steps, trainable="Wp", save_at=None, X_test=None, y_test=None,
          relevant=None, noisy=None, y_true=None, roles=None, probes=None, engine="auto", backend="numba",
          progress=False, hooks=(), dynamics="gd", flow=None) -> Result:
    """Full-batch gradient descent on the paper's attention model.

    ``W`` and ``p`` (or ``p`` alone) are updated simultaneously from the same
    iterate with step ``lr`` on ``L = mean_i log(1 + exp(-y_i f(X_i)))``,
    ``f(X) = nu^T X^T softmax(X W^T p)``. Inputs are never mutated.

    Parameters
    ----------
    X : array_like, shape (n, T, d)
        Training tokens.
    y : array_like, shape (n,)
        Labels in {-1, +1}.
    W0 : array_like, shape (d, d)
    p0, nu : array_like, shape (d,)
        Initial parameters and the fixed head (paper notation: scores ``X W^T p``).
    lr : float
        Step size, > 0.
    steps : int
        Number of GD updates, >= 1.
    trainable : {"Wp", "p"}
    save_at : None, SaveAt or sequence of int
        Save times; default ``SaveAt.log(steps)``. Steps 0 and ``steps`` are always included.
    X_test : array_like, shape (n_test, T, d), optional
    y_test : array_like, shape (n_test,), optional
    relevant : array_like of bool, shape (T,), optional
        The relevant set R (default: position 0).
    noisy : array_like of bool, shape (n,), optional
        Which samples carry flipped labels (for the clean/noisy split).
    y_true, roles : optional bookkeeping copied into the Result.
    probes : array_like, shape (k, d), optional
        Directions ``r`` whose ``<p, r>`` and ``<W^T p, r>`` are recorded.
    engine : {"auto", "primal", "dual"}
        ``auto`` compares the estimated costs (``step_costs``).
    backend : {"numba", "numpy"}
        ``numpy`` runs the slow NumPy twins of the kernels (for testing).
    progress : bool
        Show a progress bar.
    hooks : sequence of callables
        Called with the ``Run`` after every chunk (checkpointing uses this).
    dynamics : {"gd", "flow"}
        ``flow`` integrates the gradient flow of the same loss in GD-step time (``tau = t / lr``),
        backward-error corrected and started with exact GD so that it follows GD
        (``attnsim._flow``); ``steps`` may then reach 10^15. Always dual coordinates.
    flow : None, FlowOptions or dict
        Settings of the flow (tolerances, correction, exact-GD start); default ``FlowOptions()``.

    Returns
    -------
    Result
        With ``dynamics="flow"``, ``Result.extra`` records the integrator's counters.

    Raises
    ------
    ConfigError
        For any invalid argument, with a message naming it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 3, 5)); y = np.array([1., 1., -1., -1.])
    >>> res = train(X, y, np.eye(5), np.zeros(5), rng.standard_normal(5), lr=0.1, steps=10)
    >>> res.steps[[0, -1]], res.attention[0, 0]
    (array([ 0, 10]), array([0.33333333, 0.33333333, 0.33333333]))
    """
    run = prepare(X, y, W0, p0, nu, lr=lr, steps=steps, trainable=trainable, save_at=save_at, X_test=X_test,
                  y_test=y_test, relevant=relevant, noisy=noisy, y_true=y_true, roles=roles, probes=probes,
                  engine=engine, backend=backend, dynamics=dynamics, flow=flow)
    run.warm_up()
    run.run(progress=progress, hooks=hooks)
    return run.result()
