"""The paper's analysis quantities along a run: g(Lambda), g(Gamma) and cumulative frak-S.

Checks the two-stage analysis of Sakamoto & Sato (ICML 2025) on the balanced preset over
10^6 GD steps:

- attention gaps: for clean samples Lambda_i = min_t (z_{i,R} - z_{i,t}), for noisy samples
  Gamma_i = min_u (z_{i,a} - z_{i,u}) with a the token most aligned with the flipped label;
  the growth function g(x) = 2x + 2 sinh(x - log T) of each should grow linearly in tau
  once one token dominates (REFERENCE.md: 1/(s(1-s)) = g'(gap)), i.e. the gap itself only
  logarithmically -- the source of the exponentially long delay;
- the cumulative sums of frak-S_i = m_i (1 - m_i) (exact over every step) for the clean
  samples of each class and for the noisy samples, and their clean/noisy and class-balance
  ratios, whose balance the paper's benign/harmful boundary is read from.

Writes ``out/examples/growth_and_frak.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import parse_args, preset_run, save, time_axis


def main():
    args = parse_args(__doc__)
    steps = 1_000_000
    res = preset_run(args, "balanced", steps)
    T = res.scores.shape[2]
    values = attnsim.token_values(attnsim.make_data(res.config))
    gap = attnsim.min_gap(res, attnsim.anchor_tokens(res, values))     # (S, n)
    g = attnsim.growth(gap, T)
    s = res.steps.astype(float)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), constrained_layout=True)

    for ax, mask, name, colour in [(axes[0, 0], ~res.noisy, "g(Λ), clean samples: R over the rest", "tab:red"),
                                   (axes[0, 1], res.noisy, "g(Γ), noisy samples: aligned token over the rest",
                                    "tab:blue")]:
        late = s >= steps / 10
        for i in np.flatnonzero(mask):
            ax.plot(s, g[:, i], color=colour, lw=0.9, alpha=0.7)
            # straight-line fit over the last decade
            slope, icpt = np.polyfit(s[late], g[late, i], 1)
            r2 = 1 - np.var(g[late, i] - (slope * s[late] + icpt)) / np.var(g[late, i])
            if i == np.flatnonzero(mask)[0]:
                ax.plot(s[late], slope * s[late] + icpt, "k--", lw=1, label=f"linear fit, last decade (R²={r2:.5f})")
        ax.set_xlim(0, steps)
        ax.set_xlabel("GD step τ (linear)")
        ax.set_ylabel(f"g(min gap), g(x) = 2x + 2 sinh(x − log {T})")
        ax.set_title(f"{name} (one line each)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
        inset = ax.inset_axes([0.6, 0.1, 0.36, 0.36])
        inset.plot(s, gap[:, mask], color=colour, lw=0.8)
        inset.set_xscale("log")
        inset.set_title("gap itself (log τ)", fontsize=7)
        inset.tick_params(labelsize=6)

    fs = attnsim.frak_sums(res)
    ax = axes[1, 0]
    ax.plot(s, fs.clean_pos, color="tab:red", label=f"clean, y*=+1 ({fs.n_clean_pos} samples)")
    ax.plot(s, fs.clean_neg, color="tab:orange", label=f"clean, y*=−1 ({fs.n_clean_neg} samples)")
    ax.plot(s, fs.noisy, color="tab:blue", label=f"noisy ({fs.n_noisy} samples)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1, steps)
    ax.set_xlabel("GD step τ (log)")
    ax.set_ylabel(r"$\sum_i \sum_{\tau' < \tau} \mathfrak{S}_i(\tau')$")
    ax.set_title("cumulative $\\mathfrak{S}$ = m(1 − m) by group", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    ax.plot(s, fs.clean_noisy_ratio, color="k", label="clean / noisy (sums)")
    ax.plot(s, fs.clean_noisy_ratio_per_sample, color="k", ls="--", label="clean / noisy (per-sample means)")
    ax.plot(s, fs.class_balance, color="tab:purple", label="class balance C₊ / C₋ (per-sample means)")
    time_axis(ax, res.steps)
    ax.set_ylabel("ratio of cumulative $\\mathfrak{S}$")
    ax.set_title("balance of the cumulative sums", fontsize=10)
    ax.legend(fontsize=8)
    cfg = res.config
    fig.suptitle(f"Balanced preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, SNR={cfg.snr:.3g}, η={cfg.eta:g}), "
                 f"{steps:,} GD steps", fontsize=11)
    save(fig, args, "growth_and_frak.png")
    print(f"final ratios: clean/noisy {fs.clean_noisy_ratio[-1]:.4g}, per sample "
          f"{fs.clean_noisy_ratio_per_sample[-1]:.4g}, class balance {fs.class_balance[-1]:.4g}")


if __name__ == "__main__":
    main()
