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
from _common import parse_args, preset_run, save

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
        attnsim.plot_attention(axes[row, 0], res, clean, f"clean sample {clean}", log=log, legend=False)
        attnsim.plot_attention(axes[row, 1], res, noisy,
                               f"noisy sample {noisy} (label flipped; {fit} at τ={res.final_step:,})",
                               log=log, legend=False)
    axes[0, 0].legend(fontsize=8, loc="center right")
    cfg = short.config
    fig.suptitle(f"Attention dynamics, balanced preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, SNR={cfg.snr:.3g}, "
                 f"n={cfg.n_train}, η={cfg.eta:g}, lr={cfg.lr:g}); top: paper horizon, bottom: 100× longer",
                 fontsize=10)
    save(fig, args, "attention_dynamics.png")
    for res in (short, res_long):
        print(f"tau={res.final_step}: relevant mass clean sample {clean} {res.relevant_mass[-1, clean]:.4f}, "
              f"noisy sample {noisy} {res.relevant_mass[-1, noisy]:.4f}")


if __name__ == "__main__":
    main()
