"""How far float64 autodiff can be trusted as the softmax saturates (DESIGN.md §7).

Not a figure of the paper (Sakamoto & Sato, ICML 2025): a numerical check behind its long
horizons, where each sample's top score leads by gaps of 20 to 700. For each gap, ~20 random
problems (n = 1, T = 8, d = 6, so the gap is every sample's) are differentiated by float64
autodiff written naively (softmax, then the weighted sum, then the logistic loss) and compared
with a 50-digit mpmath oracle (tests/tools/mp_oracle.py). Uses torch if importable, else the
``autograd`` package with the max of the softmax held constant, as torch and jax do.
Prints the median and largest relative error of grad_p and writes the table to
out/examples/autograd_trust.md (``--quick`` for 5 problems a gap).
"""

import sys
from pathlib import Path

import numpy as np

from _common import parse_args

GAPS = [0, 10, 20, 30, 40, 50, 100, 300, 700]


def torch_grad_p(X, y, W, p, nu):
    import torch
    X, y, nu = (torch.tensor(a) for a in (X, y, nu))
    W = torch.tensor(W, requires_grad=True)
    p = torch.tensor(p, requires_grad=True)
    s = torch.softmax(X @ (W.T @ p), dim=1)
    f = (s * (X @ nu)).sum(dim=1)
    torch.nn.functional.softplus(-y * f).mean().backward()
    return p.grad.numpy()


def autograd_grad_p(X, y, W, p, nu):
    import autograd.numpy as anp
    from autograd import grad

    def loss(p):
        z = anp.einsum("itk,k->it", X, anp.dot(W.T, p))
        m = np.max(getattr(z, "_value", z), axis=1, keepdims=True)     # held constant, like torch.softmax
        e = anp.exp(z - m)
        s = e / anp.sum(e, axis=1, keepdims=True)
        f = anp.sum(s * anp.einsum("itk,k->it", X, nu), axis=1)
        return anp.mean(anp.logaddexp(0.0, -y * f))
    return grad(loss)(p)


def problem(rng, gap):
    X = rng.standard_normal((1, 8, 6))
    W = rng.standard_normal((6, 6)) / np.sqrt(6)
    nu = rng.standard_normal(6) / np.sqrt(6)
    p = rng.standard_normal(6)
    z = np.sort(X[0] @ (W.T @ p))
    return X, rng.choice([-1.0, 1.0], size=1), W, p * gap / (z[-1] - z[-2]), nu


def relerr(a, b):
    scale = np.abs(b).max()
    if scale == 0.0:
        return 0.0 if not np.abs(a).max() else np.inf
    return np.linalg.norm((a - b) / scale) / np.linalg.norm(b / scale)


def main():
    args = parse_args(__doc__, lambda ap: ap.add_argument("--quick", action="store_true",
                                                          help="5 problems a gap instead of 20"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tools import mp_oracle
    try:
        import torch  # noqa: F401
        name, grad_p = "torch.softmax (float64)", torch_grad_p
    except ImportError:
        name, grad_p = "autograd (float64, max held constant)", autograd_grad_p
    rng = np.random.default_rng(2025)
    per_gap = 5 if args.quick else 20
    rows = [f"| gap | median rel. error of grad_p | max rel. error | ({name}, {per_gap} problems a gap) |",
            "|---:|---:|---:|---|"]
    for gap in GAPS:
        errs = []
        for _ in range(per_gap):
            prob = problem(rng, gap)
            errs.append(relerr(grad_p(*prob), mp_oracle.gradients(*prob)[2]))
        rows.append(f"| {gap} | {np.median(errs):.1e} | {np.max(errs):.1e} | |")
        print(rows[-1], flush=True)
    path = args.out / "autograd_trust.md"
    path.write_text("\n".join(rows) + "\n")
    print("\n".join(rows[:2]))
    print(f"table: {path}")


if __name__ == "__main__":
    main()
