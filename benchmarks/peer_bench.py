"""The fair peer (issue 20): attnsim's dual GD against the same closed recursion in JAX (and torch.compile).

    PYTHONPATH=src python benchmarks/peer_bench.py             # d = 500, 2000, 8000; all four sets; 5 repeats
    PYTHONPATH=src python benchmarks/peer_bench.py --quick     # small sizes, 2 repeats: checks the harness
    PYTHONPATH=src python benchmarks/peer_bench.py --breakdown # where attnsim's W,p step spends its time
    PYTHONPATH=src python benchmarks/peer_bench.py --profile-setup   # cProfile of prepare_run at d = 8000
    PYTHONPATH=src python benchmarks/peer_bench.py --final-w --repeats 7   # the final W: its products against its fresh pages

Needs ``jax`` (float64 is switched on here) and, for the torch row, ``torch`` >= 2 with a C++
compiler; ``--no-torch`` skips it. Results and the analysis: ``benchmarks/PEER_RESULTS.md``.

The peers are what a performance-minded reader writes in an afternoon from DESIGN.md §4, not
autograd loops (those are ``impls.py``):

- ``jax-closed``: ``jax.lax.scan`` of the closed train-side recursion. W,p: scores ``z``, key Gram
  ``S = X W^T W X^T`` and ``P = ||p||^2``; from ``W' = W - lr p g^T``, ``p' = p - lr W g``,
  ``g = X_all^T c``, ``e = Gxx c``::

      z' = z - lr S c - lr P e + lr^2 (z.c) e
      S' = S - lr (e z^T + z e^T) + lr^2 P e e^T
      P' = P - 2 lr z.c + lr^2 c^T S c

  p alone: ``z' = z - lr Gkk c``. A trained head adds ``v' = v - lr Gxx h``.
- ``jax-dual``: ``lax.scan`` of the dual ``(b, H)`` recursion of DESIGN.md §4 (``z = H^T Gqq b``,
  ``b' = b - lr H c``, ``H' = H - lr b (Gxx c)^T``); p alone: ``a' = a - lr c``, ``z = K p0 + Gkk a``;
  a trained head: ``beta' = beta - lr h``, ``v = X nu0 + Gxx beta``.
- ``torch-closed``: ``torch.compile`` of ``jax-closed``'s step, 16 steps per compiled call.

Each peer's set-up forms what it needs from the same ``(X, W0, p0, nu)`` arrays: one ``X W0^T``
(O(d^2 N)) and the Grams (O(N^2 d)), compiled (``jax.jit``) and timed as part of end to end. The
peers' softmax and loss are the plain max-subtracted form (not attnsim's top-relative one,
DESIGN.md §7); before anything is timed, every peer's training loss and scores over the first
``--check-steps`` steps must agree with attnsim's (``attnsim.train`` saving every step) to
``1e-9`` relative, or its row says REFUSED.

attnsim is timed as its users call it, from the same arrays:

- per step: ``attnsim.prepare(..., engine="dual")`` then ``run.coords.advance(k, frak)`` (stepping
  only; the kernel also sums each sample's 𝔖, which the peers do not);
- end to end, ``attnsim (2 saves)``: what ``attnsim.train`` does (``prepare``, ``warm_up``, ``run``,
  ``result``) with ``save_at=[0, K]``; ``attnsim (defaults)``: the same with what ``simulate`` adds
  for ``n_test = 0``: the default ~200 log-spaced saves and the probes ``mu_+, mu_-``, engine "auto";
  ``attnsim (no final W)`` (W, p): 2 saves and ``run.result(keep_W=False)`` (``train(..., keep_W=False)``), the final ``p`` but not
  the d x d ``W`` (a d^2 N product, and 8 d^2 bytes of fresh pages), which the peers do not form either.

Protocol: one process, one thread (XLA, BLAS, numba, torch); per d and trainable set every
implementation is warmed up (compilation, first call: reported), checked, then timed in
alternating order (A B C A B C ...) ``--repeats`` times: a block of ``--steps`` steady-state steps
(per step) and an end-to-end run of ``--e2e-steps`` steps including set-up. Rates are steps per
CPU-second (``time.process_time``: what an idle core gives, up to cache contention) with the
wall-clock rate beside them; medians and min-max. Prints Markdown tables.
"""

from __future__ import annotations

import os

# One thread everywhere, before numpy, numba, jax or torch are imported.
for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import attnsim  # noqa: E402

SETS = ("Wp", "p", "Wp+nu", "p+nu")
DS = (500, 2000, 8000)
BLOCK = 1000           # steps per compiled scan call of the JAX peers
TORCH_UNROLL = 16      # steps per compiled torch call
AGREE_RTOL = 1e-9


def problem(d, trainable, seed=0):
    """The balanced preset's data and initialisation at dimension d, no test set."""
    cfg = attnsim.preset("balanced", d=d, trainable=trainable, n_test=0, seed=seed)
    data = attnsim.make_data(cfg)
    W0, p0 = attnsim.init_params(cfg)
    return dict(X=data.X, y=data.y, nu=data.nu, W0=W0, p0=p0, lr=cfg.lr, trainable=trainable,
                probes=np.stack([data.mu_pos, data.mu_neg]), relevant=data.relevant)


def clock():
    return time.process_time(), time.perf_counter()


def since(t):
    c, w = clock()
    return c - t[0], w - t[1]


# ---------------------------------------------------------------- attnsim


class Attnsim:
    """attnsim's dual engine, stepped (``advance``) and end to end (``end_to_end``)."""

    name = "attnsim"

    def __init__(self, pb):
        self.pb = pb
        self.run = None

    def _prepare(self, steps, save_at, defaults=False):
        pb = self.pb
        extra = dict(probes=pb["probes"], engine="auto") if defaults else dict(engine="dual")
        # _borrowed: what attnsim.train passes (its Run ends within the call, so X and W0 are not copied)
        return attnsim.prepare(pb["X"], pb["y"], pb["W0"], pb["p0"], pb["nu"], lr=pb["lr"], steps=steps,
                               trainable=pb["trainable"], save_at=save_at, relevant=pb["relevant"], _borrowed=True,
                               **extra)

    def warm_up(self):
        self.run = self._prepare(10**12, [0, 10**12])
        self.run.warm_up()
        self.frak = np.zeros(self.pb["X"].shape[0])

    def advance(self, k):
        assert self.run.coords.advance(k, self.frak) == k, "diverged"

    def end_to_end(self, k, defaults=False, keep_W=True):
        """``attnsim.train``'s body, timed in two parts: (set-up s, whole run s) in CPU and wall;
        ``keep_W=False``: ``run.result(keep_W=False)``, without the final d x d ``W``."""
        t = clock()
        run = self._prepare(k, None if defaults else [0, k], defaults)
        setup = since(t)
        run.warm_up()
        run.run()
        res = run.result(keep_W=keep_W)
        assert res.final_step == k
        return setup, since(t), float(res.train_loss[-1])

    def trajectory(self, k):
        """Training loss (k+1,) and scores (k+1, N) at steps 0..k, attnsim saving every step."""
        pb = self.pb
        res = attnsim.train(pb["X"], pb["y"], pb["W0"], pb["p0"], pb["nu"], lr=pb["lr"], steps=k,
                            trainable=pb["trainable"], save_at=np.arange(k + 1), relevant=pb["relevant"],
                            engine="dual")
        return res.train_loss, res.scores.reshape(k + 1, -1)


# ---------------------------------------------------------------- JAX peers


def _jax():
    import jax

    jax.config.update("jax_enable_x64", True)
    return jax


def jax_coefficients(jnp, z, v, y, T):
    """Plain max-subtracted softmax: ``c = dL/dz``, ``h = dL/dv`` (N,) and the loss."""
    n = y.shape[0]
    zz, vv = z.reshape(n, T), v.reshape(n, T)
    ez = jnp.exp(zz - zz.max(axis=1, keepdims=True))
    s = ez / ez.sum(axis=1, keepdims=True)
    f = (s * vv).sum(axis=1)
    u = y * f
    h = (-(1.0 / n) * y / (1.0 + jnp.exp(u)))[:, None] * s
    c = h * (vv - f[:, None])
    loss = jnp.mean(jnp.logaddexp(0.0, -u))
    return c.reshape(-1), h.reshape(-1), loss


class JaxPeer:
    """A JAX peer: ``kind`` "closed" or "dual" for one trainable set.

    ``setup(X, W0, p0, nu, y) -> (state, consts)`` is jitted (the O(d^2 N) product ``X W0^T`` and the
    Grams); ``block(state, consts)`` advances ``BLOCK`` steps in one ``lax.scan``; ``scores(state,
    consts)`` gives ``(z, v)`` of a state.
    """

    def __init__(self, pb, kind):
        jax = _jax()
        import jax.numpy as jnp

        self.jax, self.jnp, self.pb, self.kind = jax, jnp, pb, kind
        self.name = f"jax-{kind}"
        n, T, d = pb["X"].shape
        lr = pb["lr"]
        joint, head = pb["trainable"].startswith("Wp"), pb["trainable"].endswith("+nu")

        def setup(X, W0, p0, nu, y):
            Xa = X.reshape(n * T, d)
            K = Xa @ W0.T                                   # keys W0 x_j: the one O(d^2 N) product
            v0 = Xa @ nu
            Gxx = Xa @ Xa.T
            z0 = K @ p0
            if kind == "closed" and joint:
                state, consts = dict(z=z0, S=K @ K.T, P=p0 @ p0), dict(Gxx=Gxx)
            elif kind == "closed":
                state, consts = dict(z=z0), dict(Gkk=K @ K.T, Gxx=Gxx)
            elif joint:
                Q = jnp.concatenate([p0[:, None], K.T], axis=1)          # (d, N+1)
                H0 = jnp.concatenate([jnp.zeros((1, n * T)), jnp.eye(n * T)], axis=0)
                state = dict(b=jnp.zeros(n * T + 1).at[0].set(1.0), H=H0)
                consts = dict(Gqq=Q.T @ Q, Gxx=Gxx)
            else:
                state = dict(a=jnp.zeros(n * T))
                consts = dict(Gkk=K @ K.T, z0=z0, Gxx=Gxx)
            if head:
                if kind == "closed":
                    state["v"] = v0
                else:
                    state["beta"] = jnp.zeros(n * T)
                    consts["v0"] = v0
            else:
                consts["v"] = v0
            consts["y"] = y
            return state, consts

        def scores(state, consts):
            if kind == "closed":
                z = state["z"]
            elif joint:
                z = state["H"].T @ (consts["Gqq"] @ state["b"])
            else:
                z = consts["z0"] + consts["Gkk"] @ state["a"]
            if not head:
                v = consts["v"]
            elif kind == "closed":
                v = state["v"]
            else:
                v = consts["v0"] + consts["Gxx"] @ state["beta"]
            return z, v

        def step(state, consts):
            z, v = scores(state, consts)
            c, h, loss = jax_coefficients(jnp, z, v, consts["y"], T)
            new = dict(state)
            if kind == "closed" and joint:
                S, P = state["S"], state["P"]
                e = consts["Gxx"] @ c
                Sc = S @ c
                zc = z @ c
                new["z"] = z - lr * Sc - lr * P * e + lr * lr * zc * e
                new["S"] = S - lr * (jnp.outer(e, z) + jnp.outer(z, e)) + lr * lr * P * jnp.outer(e, e)
                new["P"] = P - 2.0 * lr * zc + lr * lr * (c @ Sc)
            elif kind == "closed":
                new["z"] = z - lr * (consts["Gkk"] @ c)
            elif joint:
                b, H = state["b"], state["H"]
                new["b"] = b - lr * (H @ c)
                new["H"] = H - lr * jnp.outer(b, consts["Gxx"] @ c)
            else:
                new["a"] = state["a"] - lr * c
            if head:
                if kind == "closed":
                    new["v"] = v - lr * (consts["Gxx"] @ h)
                else:
                    new["beta"] = state["beta"] - lr * h
            return new, (loss, z)

        def block(state, consts):
            return jax.lax.scan(lambda s, _: (step(s, consts)[0], None), state, None, length=BLOCK)[0]

        def trajectory(state, consts, k):
            state, (loss, z) = jax.lax.scan(lambda s, _: step(s, consts), state, None, length=k)
            zk, vk = scores(state, consts)
            _, _, lk = jax_coefficients(jnp, zk, vk, consts["y"], T)
            return jnp.append(loss, lk), jnp.concatenate([z, zk[None]], axis=0)

        def final_loss(state, consts):
            z, v = scores(state, consts)
            return jax_coefficients(jnp, z, v, consts["y"], T)[2]

        self._setup = jax.jit(setup)
        self._block = jax.jit(block, donate_argnums=0)
        self._trajectory = jax.jit(trajectory, static_argnums=2)
        self._final_loss = jax.jit(final_loss)

    def _set_up(self):
        pb = self.pb
        out = self._setup(pb["X"], pb["W0"], pb["p0"], pb["nu"], pb["y"])
        return self.jax.block_until_ready(out)

    def warm_up(self):
        self.state, self.consts = self._set_up()
        self.state = self._block(self.state, self.consts)
        self.jax.block_until_ready(self.state)
        self._final_loss(self.state, self.consts).block_until_ready()

    def advance(self, k):
        assert k % BLOCK == 0, f"steps must be a multiple of {BLOCK}"
        for _ in range(k // BLOCK):
            self.state = self._block(self.state, self.consts)
        self.jax.block_until_ready(self.state)

    def end_to_end(self, k):
        assert k % BLOCK == 0, f"steps must be a multiple of {BLOCK}"
        t = clock()
        state, consts = self._set_up()
        setup = since(t)
        for _ in range(k // BLOCK):
            state = self._block(state, consts)
        loss = float(self._final_loss(state, consts))
        return setup, since(t), loss

    def trajectory(self, k):
        state, consts = self._set_up()
        loss, z = self._trajectory(state, consts, k)
        return np.asarray(loss), np.asarray(z)


# ---------------------------------------------------------------- torch.compile peer


class TorchClosed:
    """``torch.compile`` of the closed recursion (``jax-closed``), ``TORCH_UNROLL`` steps per call."""

    name = "torch-closed"

    def __init__(self, pb):
        import torch

        torch.set_num_threads(1)
        self.torch, self.pb = torch, pb
        n, T, d = pb["X"].shape
        lr = pb["lr"]
        joint, head = pb["trainable"].startswith("Wp"), pb["trainable"].endswith("+nu")
        self.joint, self.head = joint, head

        def coefficients(z, v, y):
            zz, vv = z.reshape(n, T), v.reshape(n, T)
            ez = torch.exp(zz - zz.amax(dim=1, keepdim=True))
            s = ez / ez.sum(dim=1, keepdim=True)
            f = (s * vv).sum(dim=1)
            u = y * f
            hh = (-(1.0 / n) * y / (1.0 + torch.exp(u)))[:, None] * s
            c = hh * (vv - f[:, None])
            return c.reshape(-1), hh.reshape(-1), torch.nn.functional.softplus(-u).mean()

        def one(z, S, P, v, G, Gxx, y):
            c, h, loss = coefficients(z, v, y)
            if joint:
                e = Gxx @ c
                Sc = S @ c
                zc = z @ c
                z2 = z - lr * Sc - lr * P * e + lr * lr * zc * e
                S = S - lr * (torch.outer(e, z) + torch.outer(z, e)) + lr * lr * P * torch.outer(e, e)
                P = P - 2.0 * lr * zc + lr * lr * (c @ Sc)
            else:
                z2 = z - lr * (G @ c)
            if head:
                v = v - lr * (Gxx @ h)
            return z2, S, P, v, loss

        def steps(z, S, P, v, G, Gxx, y):
            for _ in range(TORCH_UNROLL):
                z, S, P, v, _ = one(z, S, P, v, G, Gxx, y)
            return z, S, P, v

        self._one = one
        self._steps = torch.compile(steps, dynamic=False, fullgraph=True)
        self._coefficients = coefficients

    def _set_up(self):
        torch, pb = self.torch, self.pb
        n, T, d = pb["X"].shape
        with torch.no_grad():
            Xa = torch.from_numpy(pb["X"]).reshape(n * T, d)
            K = Xa @ torch.from_numpy(pb["W0"]).T
            p0 = torch.from_numpy(pb["p0"])
            Gxx = Xa @ Xa.T
            G = K @ K.T
            state = [K @ p0, G if self.joint else torch.zeros(()), p0 @ p0, Xa @ torch.from_numpy(pb["nu"])]
            consts = (torch.zeros(()) if self.joint else G, Gxx, torch.from_numpy(pb["y"]))
        return state, consts

    def warm_up(self):
        with self.torch.no_grad():
            self.state, self.consts = self._set_up()
            self.state = list(self._steps(*self.state, *self.consts))

    def advance(self, k):
        assert k % TORCH_UNROLL == 0
        with self.torch.no_grad():
            for _ in range(k // TORCH_UNROLL):
                self.state = list(self._steps(*self.state, *self.consts))

    def end_to_end(self, k):
        t = clock()
        with self.torch.no_grad():
            state, consts = self._set_up()
            setup = since(t)
            for _ in range(k // TORCH_UNROLL):
                state = self._steps(*state, *consts)
            loss = float(self._coefficients(state[0], state[3], consts[2])[2])
        return setup, since(t), loss

    def trajectory(self, k):
        # the uncompiled step, for agreement: the compiled one computes the same expressions
        # (checked again below through its end state)
        with self.torch.no_grad():
            state, consts = self._set_up()
            losses, zs = [], []
            for _ in range(k):
                zs.append(state[0].numpy().copy())
                z, S, P, v, loss = self._one(*state, *consts)
                losses.append(float(loss))
                state = [z, S, P, v]
            zs.append(state[0].numpy().copy())
            losses.append(float(self._coefficients(state[0], state[3], consts[2])[2]))
            # the compiled steps from the start must land on the same iterate
            s2, _ = self._set_up()
            for _ in range(k // TORCH_UNROLL):
                s2 = list(self._steps(*s2, *consts))
            self.compiled_gap = relative(s2[0].numpy(), zs[(k // TORCH_UNROLL) * TORCH_UNROLL])
        return np.array(losses), np.array(zs)


# ---------------------------------------------------------------- agreement and timing


def relative(a, b):
    """max |a - b| / max |b| (0 when both are exactly zero)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = np.max(np.abs(b), initial=0.0)
    diff = np.max(np.abs(a - b), initial=0.0)
    return diff if scale == 0.0 else diff / scale


def agreement(ref, got):
    """Largest relative difference of the loss (per step) and of the scores (each step's vector)."""
    (l0, z0), (l1, z1) = ref, got
    err_loss = float(np.max(np.abs(l1 - l0) / np.abs(l0)))
    err_z = max(relative(z1[t], z0[t]) for t in range(z0.shape[0]))
    return err_loss, err_z


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_rate(xs):
    if not xs:
        return "—"
    return f"**{med(xs):,.0f}** ({min(xs):,.0f}–{max(xs):,.0f})"


def bench_case(d, trainable, args, out):
    pb = problem(d, trainable)
    impls = [Attnsim(pb), JaxPeer(pb, "closed"), JaxPeer(pb, "dual")]
    if args.torch and trainable == "Wp":   # p: ~16k steps/s, call-bound (see PEER_RESULTS.md)
        impls.append(TorchClosed(pb))
    rows = {im.name: dict(cpu=[], wall=[], e2e_cpu=[], e2e_wall=[], setup=[], warm=None, err=None, status="ok")
            for im in impls}
    variants = {"attnsim (defaults)": dict(defaults=True)}
    if trainable.startswith("Wp"):
        variants["attnsim (no final W)"] = dict(keep_W=False)
    for name in variants:
        rows[name] = dict(cpu=[], wall=[], e2e_cpu=[], e2e_wall=[], setup=[], warm=None, err=None, status="ok")
    ref = None
    for im in impls:
        t = clock()
        im.warm_up()
        rows[im.name]["warm"] = since(t)[0]
        traj = im.trajectory(args.check_steps)
        if ref is None:
            ref = traj
            rows[im.name]["err"] = (0.0, 0.0)
            continue
        err = agreement(ref, traj)
        gap = getattr(im, "compiled_gap", 0.0)
        rows[im.name]["err"] = (err[0], max(err[1], gap))
        if max(*err, gap) > AGREE_RTOL:
            rows[im.name]["status"] = "REFUSED"
    timed = [im for im in impls if rows[im.name]["status"] == "ok"]
    steps = args.steps_wp if trainable.startswith("Wp") else args.steps_p
    for r in range(args.repeats):
        for im in timed:
            t = clock()
            im.advance(steps)
            c, w = since(t)
            rows[im.name]["cpu"].append(steps / c)
            rows[im.name]["wall"].append(steps / w)
        for im in timed:
            (sc, _), (c, w), _ = im.end_to_end(args.e2e_steps)
            rows[im.name]["setup"].append(sc)
            rows[im.name]["e2e_cpu"].append(args.e2e_steps / c)
            rows[im.name]["e2e_wall"].append(args.e2e_steps / w)
            for name, kw in variants.items() if isinstance(im, Attnsim) else ():
                (sc, _), (c, w), _ = im.end_to_end(args.e2e_steps, **kw)
                row = rows[name]
                row["setup"].append(sc)
                row["e2e_cpu"].append(args.e2e_steps / c)
                row["e2e_wall"].append(args.e2e_steps / w)
        print(f"  d={d} {trainable} repeat {r + 1}/{args.repeats} done (load {os.getloadavg()[0]:.1f})",
              file=sys.stderr, flush=True)
    out[(d, trainable)] = rows
    del impls


def table(trainable, out, args):
    lines = [f"### {trainable}", "",
             f"| d | implementation | per step: steps / CPU-s, median (min–max) | per step: steps / s wall | "
             f"end to end ({args.e2e_steps:,} steps): steps / CPU-s | end to end: steps / s wall | "
             f"set-up CPU-s | warm-up CPU-s | max rel. err loss / scores | status |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for d in args.d:
        rows = out.get((d, trainable))
        if rows is None:
            continue
        for name, r in rows.items():
            err = "—" if r["err"] is None else f"{r['err'][0]:.1e} / {r['err'][1]:.1e}"
            warm = "—" if r["warm"] is None else f"{r['warm']:.2f}"
            wall = f"{med(r['wall']):,.0f}" if r["wall"] else "—"
            lines.append(f"| {d} | {name} | {fmt_rate(r['cpu'])} | {wall} | "
                         f"{fmt_rate(r['e2e_cpu'])} | {med(r['e2e_wall']):,.0f} | {med(r['setup']):.3f} | {warm} | "
                         f"{err} | {r['status']} |")
        peers = {k: v for k, v in rows.items() if not k.startswith("attnsim") and v["cpu"]}
        if peers:
            best_step = max(peers, key=lambda k: med(peers[k]["cpu"]))
            best_e2e = max(peers, key=lambda k: med(peers[k]["e2e_cpu"]))
            a, peer_e2e = rows["attnsim"], med(peers[best_e2e]["e2e_cpu"])
            variants = "".join(f"; {name[9:-1]}: {med(r['e2e_cpu']) / peer_e2e:.2f}×" for name, r in rows.items()
                               if name.startswith("attnsim (") and r["e2e_cpu"])
            lines.append(f"| {d} | **attnsim / best peer** | **{med(a['cpu']) / med(peers[best_step]['cpu']):.2f}×** "
                         f"({best_step}) | | **{med(a['e2e_cpu']) / peer_e2e:.2f}×** ({best_e2e}{variants}) "
                         f"| | | | | |")
    return "\n".join(lines)


def machine():
    cpu = platform.processor() or "?"
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("Model name")), cpu)
    except OSError:
        pass
    import jax

    vers = f"jax {jax.__version__}, numpy {np.__version__}, attnsim {attnsim.__version__}"
    try:
        import torch

        vers += f", torch {torch.__version__}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs; {vers}; Python {platform.python_version()}"


# ---------------------------------------------------------------- attnsim W,p step breakdown


def breakdown(args):
    """Per-step cost of the parts of attnsim's dual W,p step and of the JAX peers' steps at N = 160.

    Reads attnsim's private kernels (``attnsim._kernels.gd``) as they are at this commit: the
    parts are timed by njit loops here that call them exactly as ``dual_wp_run`` does.
    """
    from numba import njit

    from attnsim._coords.base import aligned_copy
    from attnsim._kernels import core, gd

    pb = problem(2000, "Wp")
    run = attnsim.prepare(pb["X"], pb["y"], pb["W0"], pb["p0"], pb["nu"], lr=pb["lr"], steps=10**12,
                          trainable="Wp", engine="dual", save_at=[0, 10**12])
    run.warm_up()
    co = run.coords
    frak = np.zeros(20)
    co.advance(2000, frak)                      # a state away from p0 = 0
    st, p = co.state, co.pb
    N = p.N
    B = st["CbT"].shape[1]

    @njit
    def t_coef(k, z, v, y, T, relevant, s, c, frak, work):
        for _ in range(k):
            core.coefficients(z, v, y, T, relevant, s, c, np.empty(0), frak, work, False)

    @njit
    def t_gemv(k, e, Gxx, c):
        for _ in range(k):
            core._rows_gemv(e, Gxx, c)

    @njit
    def t_sweep(k, S, c, z, e, lr, Sc):
        # lr = 0: S keeps its values (the same arithmetic and stores as a real step)
        for _ in range(k):
            gd._key_gram_sweep(S, c, z, e, 0.0 * lr, 0.0, Sc)

    @njit
    def t_flush(k, b, MT, CbT, Eb, lr, Y, Bb, Ce, Hc, w):
        lrb = np.full((CbT.shape[1], 2), lr)
        for _ in range(k):
            gd._flush_dual_coefs(b, MT, CbT, Eb, CbT.shape[1], lrb, Y, Bb, Ce, Hc, w)

    def per_step(fn, k, *a):
        fn(1, *a)
        ts = []
        for _ in range(args.repeats):
            t = time.process_time()
            fn(k, *a)
            ts.append((time.process_time() - t) / k * 1e6)
        return med(ts), min(ts), max(ts)

    # the parts' arrays on cache-line boundaries, as the run's own (Coordinates.align_arrays)
    z, S = aligned_copy(st["z"]), aligned_copy(st["S"])
    s, c, e, Sc = (aligned_copy(np.empty(N)) for _ in range(4))
    work = np.empty(core.fw_size(p.n, p.T))
    core.coefficients(z, p.v, p.y, p.T, p.relevant, s, c, np.empty(0), frak, work, False)
    core._rows_gemv(e, co.Gxx, c)
    scale = 1e-3 / max(np.max(np.abs(c)), 1e-300)   # keep the flush's state finite over many repeats
    CbT = aligned_copy(np.tile((c * scale)[:, None], (1, B)))
    Eb = aligned_copy(np.tile((e * scale)[None, :], (B, 1)))
    Y, Bb, Ce, wb = (aligned_copy(x) for x in gd._flush_scratch(N, B))
    k = args.steps_wp
    parts = {
        "coefficients (softmax, c, 𝔖)": per_step(t_coef, k, z, p.v, p.y, p.T, p.relevant, s, c, frak.copy(), work),
        "e = Gxx c (one N×N read)": per_step(t_gemv, k, e, co.Gxx, c),
        "S sweep: Sc = S c and the rank-2 update (N×N read + write)": per_step(t_sweep, k, S, c, z, e, p.lr, Sc),
        f"(b, M) block flush, per step (1/{B} of a flush)": tuple(
            x / B for x in per_step(t_flush, max(k // B, 1), st["b"].copy(), aligned_copy(st["MT"]), CbT, Eb, p.lr,
                                    Y, Bb, Ce, np.empty(N + 1), wb)),
    }
    rates = []
    for _ in range(args.repeats):
        t = time.process_time()
        co.advance(k, frak)
        rates.append((time.process_time() - t) / k * 1e6)
    parts["whole step (dual_wp_run)"] = (med(rates), min(rates), max(rates))
    jx = {}
    for kind in ("closed", "dual"):
        peer = JaxPeer(pb, kind)
        peer.warm_up()
        ts = []
        for _ in range(args.repeats):
            t = time.process_time()
            peer.advance(k)
            ts.append((time.process_time() - t) / k * 1e6)
        jx[f"jax-{kind}: whole step"] = (med(ts), min(ts), max(ts))
    print(f"W,p step at N = {N} (d = 2000), µs per step, median (min–max) of {args.repeats} blocks of {k} steps; "
          f"load {os.getloadavg()[0]:.1f}\n")
    print("| part | µs / step |\n|---|---|")
    for name, (m, lo, hi) in {**parts, **jx}.items():
        print(f"| {name} | {m:.2f} ({lo:.2f}–{hi:.2f}) |")

    # the p step: the coefficients and one axpy sweep over Gkk
    @njit
    def t_axpy(k, z, Gkk, c):
        for _ in range(k):
            core._rows_axpy(z, Gkk, c, 0.0)

    pbp = problem(2000, "p")
    peers = [Attnsim(pbp), JaxPeer(pbp, "closed"), JaxPeer(pbp, "dual")]
    for im in peers:
        im.warm_up()
    cp = peers[0].run.coords
    zp = aligned_copy(cp.state["z"])
    core.coefficients(zp, cp.pb.v, cp.pb.y, cp.pb.T, cp.pb.relevant, s, c, np.empty(0), frak, work, False)
    kp = args.steps_p
    rows = {"coefficients (softmax, c, 𝔖)": per_step(t_coef, kp, zp, cp.pb.v, cp.pb.y, cp.pb.T, cp.pb.relevant, s,
                                                   c, frak.copy(), work),
            "z -= lr Gkk c (one N×N read, axpy form)": per_step(t_axpy, kp, zp, cp.Gkk, c)}
    for im in peers:
        ts = []
        for _ in range(args.repeats):
            t = time.process_time()
            im.advance(kp)
            ts.append((time.process_time() - t) / kp * 1e6)
        rows[f"{im.name}: whole step"] = (med(ts), min(ts), max(ts))
    print(f"\np step at N = {N} (d = 2000), µs per step, {args.repeats} blocks of {kp} steps\n")
    print("| part | µs / step |\n|---|---|")
    for name, (m, lo, hi) in rows.items():
        print(f"| {name} | {m:.2f} ({lo:.2f}–{hi:.2f}) |")


def final_w(args):
    """Where the final d x d ``W`` of a W,p run goes, at each ``--d``: ``final_params`` as
    ``Result`` calls it (a fresh (d, d) array each call), the same products into a (d, d) buffer
    touched before (the BLAS work alone), and the first touch of d x d fresh pages alone (an
    allocation filled with zeros). The two products are checked equal bit for bit first; then
    alternating repeats in one process, CPU-s medians (min-max). ``--pause`` seconds of sleep
    come before each call that allocates: freed pages the process reuses at once cost little,
    while an end-to-end run meets its final W's pages a second or more after anything it freed,
    and on this sandboxed machine their first touch then costs far more (and varies)."""
    print(f"machine: {machine()}\ncommand: {' '.join(sys.argv)}\n")
    print("| d | final_params (fresh W) | same products, touched buffer | first touch of d x d pages |")
    print("|---|---|---|---|")
    for d in args.d:
        pb = problem(d, "Wp")
        run = Attnsim(pb)._prepare(1000, [0, 1000])
        run.warm_up()
        run.run()
        co = run.coords
        X, W0 = co.pb.X, co.pb.W0_dense()
        out = np.zeros((d, d))

        def fresh():
            return co.final_params()[0]

        def touched():
            np.matmul(co.Q @ co._current()[3].T, X, out=out)
            np.add(out, W0, out=out)
            return out

        def pages():
            np.empty((d, d)).fill(0.0)

        assert np.array_equal(fresh(), touched()), "final_params and the touched-buffer products differ"
        times = {fn: [] for fn in (fresh, touched, pages)}
        for _ in range(args.repeats):
            for fn, ts in times.items():
                if fn is not touched:
                    time.sleep(args.pause)
                t = time.process_time()
                fn()
                ts.append(time.process_time() - t)
        cells = [f"{np.median(ts):.3f} ({min(ts):.3f}-{max(ts):.3f})" for ts in times.values()]
        print(f"| {d} | " + " | ".join(cells) + " |", flush=True)
        del run, co, out


def profile_setup(args):
    """cProfile (CPU time) of attnsim's set-up at the largest d: ``prepare_run`` (balanced, n_test = 0,
    default probes: it draws the data too), then ``attnsim.prepare`` from those arrays as the
    tables time it (engine "dual" with 2 saves; the defaults: probes mu_+-, ~200 saves), and the
    O(d^2 N) products on their own."""
    import cProfile
    import pstats

    d = max(args.d)

    def profiled(label, fn):
        prof = cProfile.Profile(time.process_time)
        t = clock()
        prof.enable()
        out = fn()
        prof.disable()
        c, w = since(t)
        print(f"\n## {label}: {c:.2f} CPU-s, {w:.2f} s wall (load {os.getloadavg()[0]:.1f})\n")
        pstats.Stats(prof).sort_stats("tottime").print_stats(8)
        return out

    for trainable in ("Wp", "p"):
        cfg = attnsim.preset("balanced", d=d, trainable=trainable, n_test=0, steps=100_000)
        run = profiled(f"prepare_run, d = {d}, {trainable}", lambda: attnsim.prepare_run(cfg))
        del run
        pb = problem(d, trainable)
        att = Attnsim(pb)
        for defaults in (False, True):
            label = "defaults (probes mu_+-, ~200 saves)" if defaults else "engine dual, 2 saves"
            run = profiled(f"attnsim.prepare from arrays, d = {d}, {trainable}, {label}",
                           lambda: att._prepare(100_000, None if defaults else [0, 100_000], defaults))
            del run
    X = pb["X"].reshape(-1, d)
    W0 = pb["W0"]
    Q = np.concatenate([pb["p0"][:, None], W0 @ X.T], axis=1)
    products = {
        "X W0^T (N, d)": lambda: X @ W0.T,
        "W0 X^T (d, N)": lambda: W0 @ X.T,
        "W0^T Q (d, N+1)": lambda: W0.T @ Q,
        "W0^T p0 (d,)": lambda: W0.T @ pb["p0"],
        "copy of W0": lambda: np.array(W0, copy=True),
        "isfinite(W0).all()": lambda: np.all(np.isfinite(W0)),
        "Q^T Q (N+1, N+1)": lambda: Q.T @ Q,
    }
    print(f"\n## the products alone, d = {d}, N = {X.shape[0]}: CPU-s, median of {args.repeats}\n")
    print("| product | CPU-s |\n|---|---|")
    for name, fn in products.items():
        ts = []
        for _ in range(args.repeats):
            t = time.process_time()
            fn()
            ts.append(time.process_time() - t)
        print(f"| {name} | {med(ts):.3f} ({min(ts):.3f}–{max(ts):.3f}) |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, 2 repeats: checks the harness")
    ap.add_argument("--d", type=int, nargs="+", default=list(DS))
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps-wp", type=int, default=50_000, help="steps per timed block, W,p sets")
    ap.add_argument("--steps-p", type=int, default=200_000, help="steps per timed block, p sets")
    ap.add_argument("--e2e-steps", type=int, default=100_000, help="steps of each end-to-end run")
    ap.add_argument("--check-steps", type=int, default=200)
    ap.add_argument("--no-torch", dest="torch", action="store_false")
    ap.add_argument("--breakdown", action="store_true", help="only the W,p step breakdown")
    ap.add_argument("--profile-setup", action="store_true", help="only cProfile of prepare_run at max(--d)")
    ap.add_argument("--final-w", action="store_true", help="only the final W's cost: products and fresh pages")
    ap.add_argument("--pause", type=float, default=3.0, help="--final-w: seconds of sleep before each allocating call")
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.repeats = [300, 600], 2
        args.steps_wp, args.steps_p, args.e2e_steps, args.check_steps = 4_000, 16_000, 8_000, 48
    _jax()
    if args.breakdown:
        return breakdown(args)
    if args.profile_setup:
        return profile_setup(args)
    if args.final_w:
        return final_w(args)
    print(f"machine: {machine()}\ncommand: {' '.join(sys.argv)}\nload average at start: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}\n", flush=True)
    out = {}
    for d in args.d:
        for trainable in args.sets:
            bench_case(d, trainable, args, out)
    print(f"load average at end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    for trainable in args.sets:
        print(table(trainable, out, args) + "\n", flush=True)


if __name__ == "__main__":
    main()
