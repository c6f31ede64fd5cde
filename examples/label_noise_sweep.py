"""Label-noise sweep: test accuracy, test loss and the clean/noisy cumulative-frak-S ratio against eta.

Extends the synthetic experiments of Sakamoto & Sato (ICML 2025) along the label-noise rate
eta (official flips, n = 20: 0, 2, 4, 6, 8 noisy samples), for the balanced preset (benign
overfitting) and the large-noise preset (harmful overfitting), read at the paper's horizon
(10^3 steps) and 10x longer, mean and range over 3 seeds. The theory reads the
benign/harmful boundary off the balance between the clean and the noisy samples' cumulative
frak-S = sum_tau m(1 - m); the right panel shows that balance per sample (the ratio of the
group means, so that it does not simply scale with the group sizes).

Writes ``out/examples/label_noise_sweep.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import at_step, log_saves_through, parse_args, save

ETAS = [0.0, 0.1, 0.2, 0.3, 0.4]
SEEDS = [0, 1, 2]
PRESETS = ["balanced", "large-noise"]
HORIZONS = [1_000, 10_000]


def main():
    args = parse_args(__doc__)
    steps = HORIZONS[-1]
    configs = [attnsim.preset(p, steps=steps, eta=eta, seed=s) for p in PRESETS for eta in ETAS for s in SEEDS]
    sw = attnsim.sweep(args.out / "sweeps" / "label_noise", configs=configs, n_saves=log_saves_through(steps),
                       workers=args.workers, progress=args.progress)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    colours = {"balanced": "tab:green", "large-noise": "tab:red"}
    styles = {HORIZONS[0]: "--", HORIZONS[1]: "-"}
    for preset in PRESETS:
        for h in HORIZONS:
            acc, loss, ratio = (np.full((len(ETAS), len(SEEDS)), np.nan) for _ in range(3))
            for a, eta in enumerate(ETAS):
                for b, s in enumerate(SEEDS):
                    (pt,) = sw.select(**attnsim.PRESETS[preset], eta=eta, seed=s, steps=steps)
                    res = sw.load(pt.key)
                    k = at_step(res, h)
                    acc[a, b], loss[a, b] = res.test_acc[k], res.test_loss[k]
                    ratio[a, b] = attnsim.frak_sums(res).clean_noisy_ratio_per_sample[k]
            label = f"{preset}, τ={h:,}"
            for ax, vals in zip(axes, (acc, loss, ratio)):
                ok = np.all(np.isfinite(vals), axis=1)      # eta = 0: no noisy sample, no ratio
                x, v = np.array(ETAS)[ok], vals[ok]
                ax.plot(x, v.mean(axis=1), styles[h], color=colours[preset], marker="o", ms=4, label=label)
                ax.fill_between(x, v.min(axis=1), v.max(axis=1), color=colours[preset],
                                alpha=0.12 if h == HORIZONS[-1] else 0.06)
    titles = ["test accuracy (clean test set)", "test loss", "clean / noisy cumulative 𝔖, per-sample means"]
    ylabels = ["accuracy", "logistic loss", "ratio"]
    for ax, title, yl in zip(axes, titles, ylabels):
        ax.set_xlabel("label-noise rate η")
        ax.set_ylabel(yl)
        ax.set_title(title.replace("𝔖", r"$\mathfrak{S}$"), fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[2].axhline(1.0, color="k", lw=0.8, ls=":")
    fig.suptitle(f"Label-noise sweep (n=20, official flips; mean and range over seeds {SEEDS}); "
                 "η = 0 has no noisy sample, so no ratio", fontsize=10)
    save(fig, args, "label_noise_sweep.png")


if __name__ == "__main__":
    main()
