"""Attention dynamics in the large-signal preset: clean, fitted noisy and not-fitted noisy samples.

Reproduces the three-panel large-signal version of Fig. 3 of Sakamoto & Sato (ICML 2025):
at SNR = 2.53 training stops short of overfitting at the paper's horizon (1000 steps); some
noisy samples are memorised through their W_{-Y*} token while the others keep attending to
their relevant token R, so they stay misclassified on their flipped label. Top row: the
paper's linear axis to 1000 steps. Bottom row: the same samples to 10^5 steps on a log axis,
where attnsim finds that the remaining noisy samples are eventually memorised too (the
"not overfitting" regime is a finite-time statement; see ``regimes_table.py``).

Writes ``out/examples/attention_large_signal.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import parse_args, preset_run, save


def main():
    args = parse_args(__doc__)
    name, long = "large-signal", 100_000
    short = attnsim.simulate(attnsim.preset(name), attnsim.SaveAt.linear(1000, 201))
    res_long = preset_run(args, name, long)
    noisy = np.flatnonzero(short.noisy)
    fitted = noisy[short.margins[-1, noisy] > 0]
    unfitted = noisy[short.margins[-1, noisy] <= 0]
    clean = int(np.flatnonzero(~short.noisy)[0])
    print(f"tau=1000: noisy samples fitted {fitted.size} of {noisy.size}")
    panels = [(clean, "clean sample")]
    if fitted.size:
        panels.append((int(fitted[0]), "noisy sample, fitted at τ=1000"))
    if unfitted.size:
        panels.append((int(unfitted[0]), "noisy sample, not fitted at τ=1000"))
    times = attnsim.noisy_fit_times(res_long)
    fig, axes = plt.subplots(2, len(panels), figsize=(4.6 * len(panels), 7.5), constrained_layout=True, squeeze=False)
    for col, (i, label) in enumerate(panels):
        attnsim.plot_attention(axes[0, col], short, i, f"{label} ({i})", log=False, legend=False)
        extra = ""
        if short.noisy[i]:
            t = int(times[np.searchsorted(noisy, i)])
            extra = f"; first fitted at τ≈{t:,}" if t >= 0 else "; never fitted"
        attnsim.plot_attention(axes[1, col], res_long, i, f"sample {i} to τ=10⁵{extra}", log=True, legend=False)
    axes[0, 0].legend(fontsize=8, loc="center right")
    cfg = short.config
    fig.suptitle(f"Large-signal preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, SNR={cfg.snr:.3g}): "
                 f"{int(fitted.size)} of {noisy.size} noisy samples fitted at τ=1000 "
                 f"(train acc {short.train_acc[-1]:.2f}); all {int(np.sum(times >= 0))} by τ=10⁵", fontsize=10)
    save(fig, args, "attention_large_signal.png")


if __name__ == "__main__":
    main()
