"""Normalised GD against plain GD on Tarzanagh et al.'s random instances (their paper's Fig. of ||p|| and sparsity).

Tarzanagh, Li, Zhang & Oymak ("Max-Margin Token Selection in Attention Mechanism", NeurIPS
2023) train p with W = I fixed by *normalised* GD (every step grad/||grad|| times 0.1, 1000
iterations, as in their code), with plain GD as the slow baseline, on random instances:
n = 6, T = 8, d = 10, unit-norm tokens, random labels, a fixed random head and no label noise
(``random_instance`` in ``examples/_common.py``, the instances of ``max_margin.py``). Their
paper shows ||p|| growing linearly under NGD and attention becoming sparse (the softmax of the
selected token -> 1). This script runs ``attnsim.train(..., trainable="p",
optimizer="ngd", ngd_norm="joint")`` (only p is trained, so the joint and per-block norms are
the same step) and plain GD with the same lr = 0.1 on 10 seeds, NGD to 10^3 and GD to 10^5
iterations, and prints and plots ||p(tau)|| and the attention sparsity
1 - mean_i max_t s_it(tau) against the iteration.

Writes ``out/examples/ngd_vs_gd.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import at_step, parse_args, random_instance, save

LR = 0.1
D = 10
NGD_STEPS = 10**3     # their code's 1000 iterations
GD_STEPS = 10**5
SEEDS = range(10)


def sparsity(res):
    """1 - mean_i max_t s_it at every save time, shape (S,)."""
    return 1.0 - res.attention.max(axis=2).mean(axis=1)


def first_step_below(res, values, level):
    below = np.flatnonzero(values <= level)
    return int(res.steps[below[0]]) if below.size else None


def main():
    args = parse_args(__doc__)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    print(f"Tarzanagh et al.'s random instances: n = 6, T = 8, d = {D}, unit-norm tokens, W = I, p only, "
          f"lr = {LR}; NGD (joint norm) to {NGD_STEPS}, GD to {GD_STEPS:.0e} iterations")
    print(" seed | ||p||: NGD 1e2  NGD 1e3 | GD 1e3  GD 1e5 | 1 - max s: NGD 1e2  NGD 1e3 | GD 1e3  GD 1e5 |"
          " GD step to NGD@1e3 sparsity | same final tokens?")
    rows = []
    for seed in SEEDS:
        X, y, nu = random_instance(seed, D)
        p0 = np.zeros(D)
        ngd = attnsim.train(X, y, None, p0, nu, lr=LR, steps=NGD_STEPS, trainable="p", optimizer="ngd",
                            ngd_norm="joint", save_at=attnsim.SaveAt.log(NGD_STEPS, 3 * 40 + 2))
        gd = attnsim.train(X, y, None, p0, nu, lr=LR, steps=GD_STEPS, trainable="p",
                           save_at=attnsim.SaveAt.log(GD_STEPS, 5 * 40 + 2))
        s_ngd, s_gd = sparsity(ngd), sparsity(gd)
        catch = first_step_below(gd, s_gd, s_ngd[-1])
        same = bool(np.array_equal(ngd.attention[-1].argmax(axis=1), gd.attention[-1].argmax(axis=1)))
        row = [ngd.p_norm[at_step(ngd, 100)], ngd.p_norm[-1], gd.p_norm[at_step(gd, 1000)], gd.p_norm[-1],
               s_ngd[at_step(ngd, 100)], s_ngd[-1], s_gd[at_step(gd, 1000)], s_gd[-1]]
        rows.append(row)
        print(f" {seed:4d} |        {row[0]:6.2f}   {row[1]:6.2f} | {row[2]:6.2f}  {row[3]:6.2f} |"
              f"           {row[4]:.1e}  {row[5]:.1e} | {row[6]:.1e} {row[7]:.1e} |"
              f" {'not by 1e5' if catch is None else f'{catch:.1e}':>27s} | {'yes' if same else 'no'}")
        first = seed == 0
        axes[0].loglog(ngd.steps[1:], ngd.p_norm[1:], color="tab:red", lw=1, alpha=0.7,
                       label="normalised GD" if first else None)
        axes[0].loglog(gd.steps[1:], gd.p_norm[1:], color="k", lw=1, alpha=0.7, label="plain GD" if first else None)
        axes[1].loglog(ngd.steps[1:], s_ngd[1:], color="tab:red", lw=1, alpha=0.7,
                       label="normalised GD" if first else None)
        axes[1].loglog(gd.steps[1:], s_gd[1:], color="k", lw=1, alpha=0.7, label="plain GD" if first else None)
    r = np.array(rows)
    print(f" range over seeds: ||p|| NGD 1e3 {r[:, 1].min():.1f}-{r[:, 1].max():.1f} (at most lr * tau = "
          f"{LR * NGD_STEPS:.0f}), GD 1e3 {r[:, 2].min():.2f}-{r[:, 2].max():.2f}, GD 1e5 {r[:, 3].min():.2f}-"
          f"{r[:, 3].max():.2f}; 1 - max s NGD 1e3 {r[:, 5].min():.1e}-{r[:, 5].max():.1e}, GD 1e3 "
          f"{r[:, 6].min():.2f}-{r[:, 6].max():.2f}, GD 1e5 {r[:, 7].min():.1e}-{r[:, 7].max():.1e}")
    tau = np.geomspace(1, NGD_STEPS, 20)
    axes[0].loglog(tau, LR * tau, color="0.5", ls="--", lw=0.8, label="lr · τ (NGD's bound)")
    axes[0].set_ylabel("‖p(τ)‖")
    axes[0].set_title(f"‖p‖: linear under NGD, logarithmic under GD (10 instances, d = {D})", fontsize=9)
    axes[1].set_ylabel("1 − mean_i max_t s_it")
    axes[1].set_title("attention sparsity: NGD selects one token per sample within 10³ steps", fontsize=9)
    for ax in axes:
        ax.set_xlabel("iteration τ")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, args, "ngd_vs_gd.png")


if __name__ == "__main__":
    main()
