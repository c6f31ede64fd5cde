"""Developer tool: how far honest float64 autodiff lands from ``attnsim.loss_and_grads``, by top-score gap.

    python tests/autodiff_errors.py [--per-gap 200] [--seed 0]

For each target gap G in 0, 1, ..., 40, draws problems as ``attnsim.testing.problems()`` does (its default
size and scale ranges, the gap set to G) and differentiates the paper's loss with the ``autograd`` package
(the ``test`` extra) in float64, three honest ways: the softmax's max held constant (as ``torch.softmax`` and
``jax.nn.softmax`` do), the max differentiated through, and hand-written backpropagation. Prints, per gap,
the largest norm-wise relative error of the loss and both gradients over the draws and the three models,
also in units of ``eps cond`` (the error scale ``attnsim.testing.float64_rtol`` is built on), how many
honest evaluations exceed ``float64_rtol``, and how many draws a float32-contaminated model (the
max-held softmax with ``log(1 + exp(u))`` evaluated in float32) passes. This is the calibration of
``float64_rtol``. Not collected by pytest (no ``test_`` prefix).
"""

import argparse
import sys

import autograd.numpy as anp
import numpy as np
from autograd import grad

import attnsim
from attnsim._numerics import norm as _norm
from attnsim.testing import _build, _float64_error_scales, float64_rtol

EPS = np.finfo(np.float64).eps


def autograd_model(max_held=True, float32=False):
    """``fn(X, y, W, p, nu) -> (loss, grad_W, grad_p)`` by reverse-mode autodiff."""
    def loss(W, p, X, y, nu):
        z = anp.einsum("itk,k->it", X, anp.dot(W.T, p))
        m = anp.max(z, axis=1, keepdims=True)
        if max_held:
            m = np.max(getattr(z, "_value", z), axis=1, keepdims=True)
        e = anp.exp(z - m)
        f = anp.sum(e / anp.sum(e, axis=1, keepdims=True) * anp.einsum("itk,k->it", X, nu), axis=1)
        if float32:
            return anp.mean(anp.log(1 + anp.exp((-y * f).astype(np.float32))).astype(np.float64))
        return anp.mean(anp.logaddexp(0.0, -y * f))

    def fn(X, y, W, p, nu):
        return loss(W, p, X, y, nu), grad(loss, 0)(W, p, X, y, nu), grad(loss, 1)(W, p, X, y, nu)
    return fn


def backprop_model(X, y, W, p, nu):
    """Hand-written backpropagation of the same loss (max subtracted, logaddexp)."""
    z = X @ (W.T @ p)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    s = e / e.sum(axis=1, keepdims=True)
    v = X @ nu
    f = (s * v).sum(axis=1)
    dz = s * (v - f[:, None]) * (-y / (1.0 + np.exp(y * f)) / len(y))[:, None]
    g = np.einsum("it,itk->k", dz, X)
    return np.mean(np.logaddexp(0.0, -y * f)), np.outer(p, g), W @ g


HONEST = {"autograd, max held": autograd_model(), "autograd, max differentiated": autograd_model(max_held=False),
          "backprop by hand": backprop_model}
FLOAT32 = autograd_model(float32=True)


def rel_errors(fn, prob):
    """Norm-wise relative error of (loss, grad_W, grad_p), by name."""
    got = fn(*prob.arrays())
    ref = attnsim.loss_and_grads(*prob.arrays())
    return {name: _norm(np.asarray(g) - r) / _norm(r) if _norm(r) > 0 else float(_norm(np.asarray(g)) > 0)
            for name, g, r in zip(("loss", "grad_W", "grad_p"), got, ref)}


def draws(rng, gap, count):
    for _ in range(count):
        n = int(rng.integers(1, 9))
        yield _build(n, int(rng.integers(2, 13)), int(rng.integers(1, 17)), int(rng.integers(0, 2**32)),
                     float(rng.uniform(0.1, 3.0)), float(gap), rng.choice([-1.0, 1.0], size=n))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-gap", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gaps", type=int, nargs="*", default=list(range(41)))
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print("| gap | honest: max error / (eps cond) | honest: max error | honest over float64_rtol | "
          "float32 under float64_rtol | float32: median error |")
    print("|---:|---:|---:|---:|---:|---:|")
    for gap in args.gaps:
        ratio, worst, honest_fail, f32_pass, f32 = 0.0, 0.0, 0, 0, []
        for prob in draws(rng, gap, args.per_gap):
            scales, rtols = _float64_error_scales(*prob.arrays()), float64_rtol(prob)
            for fn in HONEST.values():
                err = rel_errors(fn, prob)
                ratio = max(ratio, *(err[k] / scales[k] for k in err))
                worst = max(worst, *err.values())
                honest_fail += any(err[k] > rtols[k] for k in err)
            err = rel_errors(FLOAT32, prob)
            f32_pass += all(err[k] <= rtols[k] for k in err)
            f32.append(max(err.values()))
        print(f"| {gap} | {ratio:.3g} | {worst:.1e} | {honest_fail} of {len(HONEST) * args.per_gap} | "
              f"{f32_pass} of {args.per_gap} | {np.median(f32):.1e} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
