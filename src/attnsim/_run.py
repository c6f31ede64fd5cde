"""A run in progress: the coordinates, the recorder and the step counter, advanced chunk by chunk.

``Run`` owns the loop between save times: it asks the coordinates for a chunk of
steps (about ``_CHUNK_SECONDS`` of work, or what ``Coordinates.plan`` allows),
records at every save time into buffers allocated up front, detects divergence
and the coordinates' own stops, defers Ctrl-C to the end of a chunk, and
assembles the ``Result``. ``state_dict`` / ``load_state_dict`` are what a
checkpoint stores and restores.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np

from ._compact import REBUILD, CompactParams
from ._coords import Coordinates
from ._max_margin import max_margin_record
from ._numerics import logistic_loss, outputs
from ._population import HeadInnerProducts
from ._problem import Problem
from ._result import DIVERGED, FINISHED, INTERRUPTED, Result

# Seconds one kernel call may take before control returns to Python (progress,
# hooks, Ctrl-C). Short enough to feel responsive, long enough that call overhead
# (a few microseconds) is invisible.
_CHUNK_SECONDS = 0.25


def _outputs(z, v, y, T):
    """Attention ``s`` (n, T) and outputs ``f`` (n,) from flat scores and values."""
    n = y.shape[0]
    return outputs(z.reshape(n, T), v.reshape(n, T))


class _Recorder:
    """Preallocated ``(n_saves, ...)`` buffers, filled one save time at a time."""

    SCALARS = ("train_loss", "train_acc", "train_acc_clean", "train_acc_noisy", "test_loss", "test_acc",
               "p_norm", "w_dist", "query_norm", "nu_norm", "nu_dist", "nu_align", "test_loss_se", "test_acc_se")

    def __init__(self, n_saves, pb: Problem, noisy, coords: Coordinates):
        n, T, k = pb.n, pb.T, pb.probes.shape[0]
        self.k = k
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
            nu_probe=np.full((n_saves, k), np.nan),
        )
        self.noisy = noisy
        # nu_align = cos(nu, r_0 - r_1): mu_+ - mu_- for simulate's probes
        self.align_norm = float(np.linalg.norm(pb.probes[0] - pb.probes[1])) if k >= 2 else 0.0
        self.count = 0
        if pb.population is not None:
            # The head's inner products: fixed head once; a trained one from v = X nu and z = X q
            # through X X^T (HeadInnerProducts), the key Gram itself where the keys are the tokens.
            gram = None
            if coords.trained.trains_head:
                gram = coords.key_gram() if coords.trained.trains_W or pb.W0 is None else pb.X @ pb.X.T
            self._head = HeadInnerProducts(pb.X, pb.nu, pb.population.directions(pb.nu)[:2], gram)

    def warm_up(self, pb: Problem):
        """Load the population quadrature's kernel and draws before the first save is timed."""
        if pb.population is not None:
            pb.population.warm_up()

    def record(self, idx, coords: Coordinates, frak_sum) -> str | None:
        """Fill row ``idx``; return the name of a non-finite quantity, or None."""
        # Overflow here is reported as divergence below, not as a RuntimeWarning.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._record(idx, coords, frak_sum)

    def _record(self, idx, coords, frak_sum):
        pb, buf = coords.pb, self.buffers
        obs = coords.observe()
        z, zt, p_norm, w_dist, p_probe, q_probe, q_norm = obs
        head = coords.observe_head()
        s, f = _outputs(z, head.v, pb.y, pb.T)
        margins = pb.y * f
        buf["margins"][idx] = margins
        buf["scores"][idx] = z.reshape(pb.n, pb.T)
        buf["attention"][idx] = s
        m_in = s[:, pb.relevant].sum(axis=1)
        m_out = s[:, ~pb.relevant].sum(axis=1)
        buf["relevant_mass"][idx] = m_in
        buf["frak_s"][idx] = m_in * m_out
        buf["frak_cum"][idx] = frak_sum
        buf["train_loss"][idx] = np.mean(logistic_loss(margins))
        correct = margins > 0
        buf["train_acc"][idx] = np.mean(correct)
        if np.any(~self.noisy):
            buf["train_acc_clean"][idx] = np.mean(correct[~self.noisy])
        if np.any(self.noisy):
            buf["train_acc_noisy"][idx] = np.mean(correct[self.noisy])
        if pb.n_test:
            _, ft = _outputs(zt, head.v_test, pb.yt, pb.T)
            mt = pb.yt * ft
            buf["test_loss"][idx] = np.mean(logistic_loss(mt))
            buf["test_acc"][idx] = np.mean(mt > 0)
        elif pb.population is not None and np.isfinite(q_norm) and np.all(np.isfinite(q_probe)):
            k = self.k     # PopulationSpec.directions appended mu_+, mu_-, nu0 after the caller's probes
            nunu, nu_mu, q_nu = self._head(z, head.v, head.nu_norm, float(q_probe[k + 2]))
            pm = pb.population.metrics(q_norm ** 2, q_probe[k:k + 2], q_nu, nunu, nu_mu)
            buf["test_loss"][idx], buf["test_acc"][idx] = pm.loss, pm.acc
            buf["test_loss_se"][idx], buf["test_acc_se"][idx] = pm.loss_se, pm.acc_se
        buf["p_norm"][idx] = p_norm
        buf["w_dist"][idx] = w_dist
        buf["query_norm"][idx] = q_norm
        buf["p_probe"][idx] = p_probe[:self.k]
        buf["query_probe"][idx] = q_probe[:self.k]
        buf["nu_norm"][idx] = head.nu_norm
        buf["nu_dist"][idx] = head.nu_dist
        buf["nu_probe"][idx] = head.nu_probe
        if self.align_norm > 0 and head.nu_norm > 0:
            buf["nu_align"][idx] = (head.nu_probe[0] - head.nu_probe[1]) / (head.nu_norm * self.align_norm)
        self.count = idx + 1
        checks = (("attention scores", z), ("test scores", zt), ("||p||", p_norm), ("||W - W0||", w_dist),
                  ("token values", head.v), ("||nu||", head.nu_norm),
                  ("train loss", buf["train_loss"][idx]))
        for label, value in checks:
            if not np.all(np.isfinite(value)):
                return label
        return None


# ------------------------------------------------------------------ the run

@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the current chunk has finished and been accounted for.

    A KeyboardInterrupt raised between the kernel call and the step-counter update
    would leave a state that no checkpoint can describe exactly; deferring it to the
    end of the chunk (at most ~``_CHUNK_SECONDS``) keeps iterate, counters and
    recorder consistent. Yields a list that is non-empty once Ctrl-C was pressed.
    SIGTERM is held the same way where it raises KeyboardInterrupt too (the CLI's
    ``attnsim run``). Does nothing outside the main thread, and leaves a signal alone
    when someone else handles it (or it is ignored, as SIGINT is in a shell's
    background job).
    """
    pending = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def handler(signum, frame):
        pending.append(signum)

    held = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(sig) is signal.default_int_handler}
    try:
        yield pending
    finally:
        for sig, previous in held.items():
            signal.signal(sig, previous)



class Run:
    """A training run in progress: coordinates, recorder, step counter.

    ``attnsim.train`` and ``attnsim.simulate`` build one and run it to the end;
    ``attnsim.prepare_run(config)`` returns one for stepping by hand (``advance``),
    checkpointing (``attnsim.save_checkpoint``) and hooks.

    Attributes
    ----------
    step : int
        GD steps taken so far.
    save_steps : ndarray of int64, shape (S,)
    status, message : str
        The outcome so far (``attnsim.STATUSES``).
    coords : attnsim._coords.Coordinates
        The coordinate system carrying the iterate.
    max_margin : None, "final", "optimal" or ndarray of int64, shape (n,)
        The att-SVM selection ``result()`` compares against (``train(..., max_margin=...)``);
        it reads only recorded scores, so it may be set on a restored run before ``result()``.
    config : Config or None
        The config whose seeds drew this run's arrays (set by ``prepare_run``); None for arrays
        given to ``prepare``. ``result(config)`` for that config holds the final parameters of a
        dual run as its state (``Result.compact``).
    """

    def __init__(self, pb: Problem, coords: Coordinates, save_steps: np.ndarray, noisy, extra_meta,
                 max_margin=None):
        self.pb = pb
        self.max_margin = max_margin     # None, "final", "optimal" or an (n,) selection (validated)
        self.coords = coords
        self.save_steps = save_steps
        self.recorder = _Recorder(save_steps.size, pb, noisy, coords)
        self.frak_sum = np.zeros(pb.n)
        self.step = 0
        self.next_save = 0
        self.status = FINISHED
        self.message = FINISHED
        self.wall_time = 0.0
        self.compile_time = 0.0
        self.meta = extra_meta
        self.config = None

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
        self.coords.warm_up()
        self.recorder.warm_up(self.pb)
        self.compile_time += time.perf_counter() - t0

    def _diverged(self, at_step, what):
        self.status = DIVERGED
        self.message = f"diverged at step {at_step}: non-finite {what}"

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
                self._diverged(self.step, self.coords.nonfinite_state() or bad)
            self.next_save += 1
            self.wall_time += time.perf_counter() - t0
            return None
        todo = target - self.step
        if rate is not None:
            todo = min(todo, max(1, int(rate * max_seconds)))
        else:
            todo = min(todo, 64)
        todo = self.coords.plan(target - self.step, todo)
        done = int(self.coords.advance(todo, self.frak_sum))
        self.step += done
        elapsed = time.perf_counter() - t0
        self.wall_time += elapsed
        if done < todo:
            stop = self.coords.stop()                 # e.g. the flow's step limit: not an overflow
            if stop is not None and not self.coords.nonfinite_state():
                self.status, self.message = stop
                return None
            # All state finite means the overflow happened in the outputs f = sum_t s_t v_t.
            self._diverged(self.step, self.coords.nonfinite_state() or "outputs f")
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
            with _interrupts_deferred() as pending:
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

    def result(self, config=None, params=True, keep_W=True) -> Result:
        """The ``Result`` so far. ``params=False`` skips materialising the final ``W`` and ``p``
        (``W`` None, ``p`` NaN), ``keep_W=False`` the final ``W`` only: a d x d ``W`` is 200 MB
        and a d^2 N product at d = 5000, wasted when nobody reads it.

        For the config this run was prepared from (``prepare_run``) in dual coordinates, the
        ``Result`` is compact: it keeps the final state (O(N^2)) and rebuilds ``W``, ``p`` and
        ``nu`` exactly when they are first read (``attnsim._compact``)."""
        count = self.recorder.count
        arrays = {name: buf[:count].copy() for name, buf in self.recorder.buffers.items()}
        compact = None
        if self.pb.implicit:       # coordinates of a virtual basis, not vectors of R^d: nothing to give
            W, p, nu = None, None, None
        elif params and config is not None and config == self.config and self.coords.engine == "dual":
            compact = CompactParams.of_run(self, config)
            W = REBUILD if keep_W and self.coords.trained.trains_W else None
            p = nu = REBUILD
        else:
            W, p = self.coords.final_params(with_W=keep_W) if params else (None, np.full(self.pb.d, np.nan))
            nu = self.coords.final_nu()
        extra = self.coords.extra()
        mm_cos = mm_margin = None
        if self.max_margin is not None and count > 0:
            pb = self.pb
            trains_W = self.coords.trained.trains_W
            norms = arrays["query_norm"] if trains_W else arrays["p_norm"]
            mm_cos, mm_margin, extra["max_margin"] = max_margin_record(
                self.max_margin, arrays["scores"], norms, self.coords.key_gram(), pb.y, self.coords.observe_head().v,
                trains_W)
        result = Result(
            steps=self.save_steps[:count].copy(),
            **arrays,
            p=p,
            W=W,
            nu=nu,
            y=self.pb.y.copy(),
            y_true=self.meta["y_true"],
            noisy=self.recorder.noisy.copy(),
            relevant=self.pb.relevant.copy(),
            roles=self.meta["roles"],
            config=config,
            engine=self.coords.engine,
            status=self.status,
            message=self.message,
            wall_time=self.wall_time,
            compile_time=self.compile_time,
            extra=extra,
            mm_cos=mm_cos,
            mm_margin=mm_margin,
        )
        result._compact = compact
        return result

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
            if f"rec/{k}" in sd:  # checkpoints written before test_*_se existed lack them: NaN
                self.recorder.buffers[k][...] = sd[f"rec/{k}"]
        self.frak_sum[...] = sd["frak_sum"]
        self.step, self.next_save, self.recorder.count = (int(x) for x in sd["counters"])
