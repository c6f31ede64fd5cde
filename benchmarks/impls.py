"""The implementations the harness times, each as ``make(problem) -> (trajectory, stepper)``.

Every implementation starts from the same data and initialisation (``problem``, drawn
from an ``attnsim.Config``) and offers two things:

- ``trajectory(k)``: the training loss at the iterates after 0, 1, ..., k updates
  (length k + 1), from a fresh start; the harness compares it with the NumPy
  reference before timing anything;
- ``stepper``: an object with ``warm_up()`` (compilation, first-call costs) and
  ``advance(k)`` (k more GD updates, blocking until done).

Nothing here records test-set figures: this is the cost of the optimisation loop
itself. (``attnsim`` end to end, with saves and a test set, is timed separately.)
"""

from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- the problem


def problem(n, d, trainable, T=8, seed=0):
    """Data and initialisation of the paper's setting at size (n, d); no test set."""
    import attnsim

    cfg = attnsim.preset("balanced", n_train=n, d=d, T=T, trainable=trainable, n_test=0, seed=seed)
    data = attnsim.make_data(cfg)
    W0, p0 = attnsim.init_params(cfg)
    return dict(cfg=cfg, X=data.X, y=data.y, nu=data.nu, W0=W0, p0=p0, lr=cfg.lr, trainable=trainable)


# ---------------------------------------------------------------- attnsim


class _AttnsimStepper:
    def __init__(self, pb, engine):
        from attnsim import prepare

        self.run = prepare(pb["X"], pb["y"], pb["W0"], pb["p0"], pb["nu"], lr=pb["lr"], steps=10**12,
                           trainable=pb["trainable"], engine=engine, save_at=[0, 10**12])
        self.frak = np.zeros(pb["X"].shape[0])

    def warm_up(self):
        self.run.coords.advance(0, self.frak)

    def advance(self, k):
        done = self.run.coords.advance(k, self.frak)
        assert done == k, "diverged"


def _loss_from_scores(z, pb):
    n, T, _ = pb["X"].shape
    zz = z.reshape(n, T)
    s = np.exp(zz - zz.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    f = (s * (pb["X"] @ pb["nu"])).sum(axis=1)
    return float(np.mean(np.logaddexp(0.0, -pb["y"] * f)))


def make_attnsim(engine):
    def make(pb):
        def trajectory(k):
            # the engine's own scores after each step (not Result recording: at N = 3200 its
            # ||W - W0|| alone costs 4 N^3 flops per save)
            st = _AttnsimStepper(pb, engine)
            out = [_loss_from_scores(st.run.coords.state["z"], pb)]
            for _ in range(k):
                st.advance(1)
                out.append(_loss_from_scores(st.run.coords.state["z"], pb))
            return np.array(out)

        return trajectory, _AttnsimStepper(pb, engine)

    return make


# ---------------------------------------------------------------- NumPy closed form


def _numpy_loss_grads(X, y, W, p, nu, need_W):
    """DESIGN.md §2 in whole-array NumPy, the way one writes it from the paper."""
    n = X.shape[0]
    z = X @ (W.T @ p)                                  # (n, T)
    z = z - z.max(axis=1, keepdims=True)
    s = np.exp(z)
    s /= s.sum(axis=1, keepdims=True)
    v = X @ nu
    f = (s * v).sum(axis=1)
    u = y * f
    loss = np.mean(np.logaddexp(0.0, -u))
    c = (-(1.0 / (1.0 + np.exp(u))) * y / n)[:, None] * s * (v - f[:, None])
    g = np.einsum("it,itk->k", c, X)
    grad_p = W @ g
    grad_W = np.outer(p, g) if need_W else None
    return loss, grad_W, grad_p


class _NumpyStepper:
    def __init__(self, pb):
        self.pb = pb
        self.W = pb["W0"].copy()
        self.p = pb["p0"].copy()

    def warm_up(self):
        pass

    def advance(self, k):
        pb = self.pb
        joint = pb["trainable"] == "Wp"
        for _ in range(k):
            _, gW, gp = _numpy_loss_grads(pb["X"], pb["y"], self.W, self.p, pb["nu"], joint)
            if joint:
                self.W -= pb["lr"] * gW
            self.p -= pb["lr"] * gp


def make_numpy(pb):
    def trajectory(k):
        st = _NumpyStepper(pb)
        out = []
        for _ in range(k + 1):
            loss, _, _ = _numpy_loss_grads(pb["X"], pb["y"], st.W, st.p, pb["nu"], False)
            out.append(loss)
            st.advance(1)
        return np.array(out)

    return trajectory, _NumpyStepper(pb)


# ---------------------------------------------------------------- PyTorch autograd


class _TorchStepper:
    """Plain autograd + SGD, as a researcher writes it.

    ``order="official"`` computes the scores as ``X @ W @ p`` left to right, like the
    authors' code (an O(n T d^2) product per step); ``order="reordered"`` as
    ``X @ (W^T p)`` (paper notation), which is O(d^2 + n T d).
    """

    def __init__(self, pb, dtype, order):
        import torch

        self.torch = torch
        self.dt = {"float64": torch.float64, "float32": torch.float32}[dtype]
        self.order = order
        self.pb = pb
        self.X = torch.tensor(pb["X"], dtype=self.dt)
        self.y = torch.tensor(pb["y"], dtype=self.dt)
        self.nu = torch.tensor(pb["nu"], dtype=self.dt)
        self.reset()

    def reset(self):
        t, pb = self.torch, self.pb
        self.W = t.tensor(pb["W0"], dtype=self.dt, requires_grad=pb["trainable"] == "Wp")
        self.p = t.tensor(pb["p0"], dtype=self.dt, requires_grad=True)
        params = [self.W, self.p] if pb["trainable"] == "Wp" else [self.p]
        self.opt = t.optim.SGD(params, lr=pb["lr"])

    def loss(self):
        t = self.torch
        if self.order == "official":
            # official code: x @ W @ p with its W the transpose of the paper's
            scores = self.X @ self.W.T @ self.p
        else:
            scores = self.X @ (self.W.T @ self.p)
        s = t.softmax(scores, dim=-1)
        f = (s * (self.X @ self.nu)).sum(-1)
        return t.nn.functional.softplus(-self.y * f).mean()

    def step(self):
        self.opt.zero_grad()
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return loss

    def warm_up(self):
        self.step()
        self.reset()

    def advance(self, k):
        for _ in range(k):
            self.step()


def make_torch(dtype, order):
    def make(pb):
        import torch

        torch.set_num_threads(1)

        def trajectory(k):
            st = _TorchStepper(pb, dtype, order)
            out = [float(st.step()) for _ in range(k)]
            with torch.no_grad():
                out.append(float(st.loss()))
            return np.array(out)

        return trajectory, _TorchStepper(pb, dtype, order)

    return make


# ---------------------------------------------------------------- JAX jit + lax.scan


class _JaxStepper:
    BLOCK = 64   # scan length compiled once; advance(k) runs ceil(k / BLOCK) blocks

    def __init__(self, pb):
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        X, y, nu = jnp.asarray(pb["X"]), jnp.asarray(pb["y"]), jnp.asarray(pb["nu"])
        lr = pb["lr"]
        joint = pb["trainable"] == "Wp"

        def loss(W, p):
            s = jax.nn.softmax(X @ (W.T @ p), axis=-1)
            f = (s * (X @ nu)).sum(-1)
            return jnp.mean(jax.nn.softplus(-y * f))

        grad = jax.value_and_grad(loss, argnums=(0, 1))

        def body(carry, _):
            W, p = carry
            val, (gW, gp) = grad(W, p)
            W = W - lr * gW if joint else W
            return (W, p - lr * gp), val

        self.run = jax.jit(lambda W, p: jax.lax.scan(body, (W, p), None, length=self.BLOCK))
        self.loss = jax.jit(loss)
        self.state = (jnp.asarray(pb["W0"]), jnp.asarray(pb["p0"]))
        self.init = self.state

    def warm_up(self):
        out = self.run(*self.state)
        self.jax.block_until_ready(out)

    def advance(self, k):
        for _ in range(-(-k // self.BLOCK)):
            self.state, _ = self.run(*self.state)
        self.jax.block_until_ready(self.state)

    def steps_per_call(self, k):
        return -(-k // self.BLOCK) * self.BLOCK


def make_jax(pb):
    def trajectory(k):
        st = _JaxStepper(pb)
        losses = []
        state = st.init
        while len(losses) < k:
            state, vals = st.run(*state)
            losses.extend(np.asarray(vals).tolist())
        # losses[i] is the loss at the iterate after i updates, for i < len(losses)
        return np.array(losses[:k + 1]) if len(losses) > k else np.append(losses[:k], float(st.loss(*state)))

    return trajectory, _JaxStepper(pb)


IMPLS = {
    "attnsim-dual": make_attnsim("dual"),
    "attnsim-primal": make_attnsim("primal"),
    "numpy": make_numpy,
    "torch-f64": make_torch("float64", "official"),
    "torch-f32": make_torch("float32", "official"),
    "torch-f64-reordered": make_torch("float64", "reordered"),
    "jax-f64": make_jax,
}
