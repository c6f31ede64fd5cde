"""Phase diagrams over (d, ||mu||) at the paper's horizon, with the SNR boundaries (paper Fig. 5).

Reproduces Fig. 5 of Sakamoto & Sato (ICML 2025): final training loss, test loss, training
and test accuracy after 1000 GD steps over a grid of token dimension d and signal strength
||mu|| (rho = 0.1, other settings official), averaged over seeds. Overlaid: the curves
SNR = ||mu|| / sqrt(d) = n^{-1/2} (above it: not overfitting) and SNR = d^{-1/4} (below it:
harmful overfitting); benign overfitting lies between.

The default is a coarse subset of the paper's grid (7 x 9 points x 2 seeds, a few minutes on
two cores); ``--grid20`` the 20 x 20 grid of the paper's earlier version (d step 250, ||mu||
step 5); ``--full`` runs the full 39 x 39 grid of REFERENCE.md (d = 250..5000 step 125,
||mu|| = 5..100 step 2.5) with 3 seeds, about 4600 runs (hours on two cores; ``make
examples-full``). Both share one resumable sweep folder, so an interrupted full run resumes.

Writes ``out/examples/phase_diagram.png`` (``phase_diagram_full.png`` with ``--full``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import parse_args, save

D_FULL = list(range(250, 5001, 125))                       # 39 values
MU_FULL = [5.0 + 2.5 * k for k in range(39)]               # 5 .. 100
N_SAVES = 12


def edges(values):
    v = np.asarray(values, dtype=float)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def main():
    def extra(p):
        p.add_argument("--full", action="store_true", help="the paper's full 39 x 39 grid with 3 seeds")
        p.add_argument("--grid20", action="store_true", help="the 20 x 20 grid of the paper's earlier version")
        p.add_argument("--seeds", type=int, default=None, help="seeds per point (default 2, or 3 with --full)")

    args = parse_args(__doc__, extra)
    if args.full:
        ds, mus, n_seeds = D_FULL, MU_FULL, args.seeds or 3
    elif args.grid20:
        ds, mus, n_seeds = D_FULL[::2], MU_FULL[::2], args.seeds or 2      # d = 250..5000 step 250, ||mu|| step 5
    else:
        ds = D_FULL[::6]                                                  # 250, 1000, ..., 4750
        mus = [MU_FULL[k] for k in (0, 1, 2, 4, 6, 10, 18, 26, 38)]      # 5, 7.5, 10, 15, 20, 30, 50, 70, 100
        n_seeds = args.seeds or 2
    base = attnsim.Config(steps=1000)
    grid = {"d": ds, "signal_norm": mus}
    sw = attnsim.sweep(args.out / "sweeps" / "phase", base, grid=grid, seeds=range(n_seeds), n_saves=N_SAVES,
                       workers=args.workers, progress=args.progress)
    metrics = [("train_loss", "final train loss", "viridis"), ("test_loss", "final test loss", "viridis"),
               ("train_acc", "final train accuracy", "magma"), ("test_acc", "final test accuracy", "magma")]
    maps = {m: np.full((len(mus), len(ds)), np.nan) for m, _, _ in metrics}
    for i, mu in enumerate(mus):
        for j, d in enumerate(ds):
            for m, _, _ in metrics:
                vals = [pt.summary[m] for s in range(n_seeds)
                        for pt in sw.select(d=d, signal_norm=mu, seed=s)[:1]]
                vals = [v for v in vals if v is not None]
                maps[m][i, j] = np.mean(vals) if vals else np.nan
    n = base.n_train
    dd = np.linspace(ds[0], ds[-1], 200)
    fig, axes = plt.subplots(2, 2, figsize=(11, 9), constrained_layout=True)
    for ax, (m, title, cmap) in zip(axes.ravel(), metrics):
        im = ax.pcolormesh(edges(ds), edges(mus), maps[m], cmap=cmap, shading="flat")
        fig.colorbar(im, ax=ax)
        ax.plot(dd, np.sqrt(dd / n), color="w", lw=2, label=r"SNR $= n^{-1/2}$")
        ax.plot(dd, dd ** 0.25, color="w", lw=2, ls="--", label=r"SNR $= d^{-1/4}$")
        ax.set_xlim(max(edges(ds)[0], 0), edges(ds)[-1])
        ax.set_ylim(edges(mus)[0], edges(mus)[-1])
        ax.set_xlabel("token dimension d")
        ax.set_ylabel("signal strength ‖μ‖")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper right", facecolor="0.4", labelcolor="w")
    seeds = f"{n_seeds} seed" + ("s" if n_seeds > 1 else "")
    fig.suptitle(f"Phase diagrams at τ = 1000 ({len(ds)} × {len(mus)} grid, mean of {seeds}; "
                 f"n={n}, η={base.eta:g}, ρ={base.rho:g}, lr={base.lr:g})", fontsize=11)
    save(fig, args, "phase_diagram_full.png" if args.full else "phase_diagram_20.png" if args.grid20
         else "phase_diagram.png")


if __name__ == "__main__":
    main()
