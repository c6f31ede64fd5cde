"""Attention dynamics of a clean and a noisy training sample (paper Fig. 3), balanced preset.

Reproduces Fig. 3 of Sakamoto & Sato (ICML 2025): the softmax probability of every token of
one clean and one noisy (label-flipped) sample during training in the official setting.
Top row: the paper's view, 1000 steps on a linear time axis. Bottom row: the same samples
over 10^5 steps on a log axis, where the clean sample's relevant token x1 (R) saturates
and the noisy sample is memorised through the token aligned with its flipped label
(x3, W_{-Y*}).

Writes ``out/examples/attention_dynamics.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import parse_args, preset_run, save, time_axis

ROLE_COLOURS = {0: "tab:red", 1: "tab:orange", 2: "tab:blue", 3: "tab:gray"}
ROLE_LABELS = {0: "R", 1: "$W_{Y^*}$", 2: "$W_{-Y^*}$", 3: "I"}


def plot_tokens(ax, res, i, title, log):
    seen = set()
    for t in range(res.attention.shape[2]):
        role = int(res.roles[t])
        label = f"$x_{{{t + 1}}}$ ({ROLE_LABELS[role]})" if role != 3 else (
            "$x_4 \\ldots x_8$ (I)" if role not in seen else None)
        seen.add(role)
        ax.plot(res.steps, res.attention[:, i, t], color=ROLE_COLOURS[role], label=label,
                lw=1.8 if role in (0, 2) else 1.0, alpha=1.0 if role != 3 else 0.6)
    time_axis(ax, res.steps, log=log)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("softmax probability")
    ax.set_title(title, fontsize=10)


def main():
    args = parse_args(__doc__)
    name, long = "balanced", 100_000
    short = attnsim.simulate(attnsim.preset(name), attnsim.SaveAt.linear(1000, 201))
    res_long = preset_run(args, name, long)
    clean = int(np.flatnonzero(~short.noisy)[0])
    noisy = int(np.flatnonzero(short.noisy)[0])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    for row, (res, log) in enumerate([(short, False), (res_long, True)]):
        fit = "fitted" if res.margins[-1, noisy] > 0 else "not fitted"
        plot_tokens(axes[row, 0], res, clean, f"clean sample {clean}", log)
        plot_tokens(axes[row, 1], res, noisy, f"noisy sample {noisy} (label flipped; {fit} at τ={res.final_step:,})",
                    log)
    axes[0, 0].legend(fontsize=8, loc="center right")
    cfg = short.config
    fig.suptitle(f"Attention dynamics, balanced preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, SNR={cfg.snr:.3g}, "
                 f"n={cfg.n_train}, η={cfg.eta:g}, lr={cfg.lr:g}); top: paper horizon, bottom: 100× longer",
                 fontsize=10)
    save(fig, args, "attention_dynamics.png")


if __name__ == "__main__":
    main()
