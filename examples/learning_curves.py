"""Learning curves of the balanced preset over 10^6 steps: delayed generalisation.

Reproduces the training curves of Sakamoto & Sato (ICML 2025) for the official setting and
the paper's delayed-generalisation claim: the training accuracy reaches 1 (every flipped
label memorised) early, while the test loss keeps falling towards the clean optimum
log(1 + e^{-1/sqrt 2}) ~ 0.4008 (REFERENCE.md) long afterwards, as the clean samples'
attention saturates on the relevant token. Log time axis; first-passage times from
``attnsim.time_to_fit_all`` and ``attnsim.time_to_test_loss`` are marked.

Writes ``out/examples/learning_curves.png``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import parse_args, preset_run, save, time_axis

CLEAN_OPTIMUM = math.log1p(math.exp(-1 / math.sqrt(2)))   # clean sample attending only to R


def main():
    args = parse_args(__doc__)
    steps = 1_000_000
    res = preset_run(args, "balanced", steps)
    s = res.steps
    t_fit = attnsim.time_to_fit_all(res)
    level = CLEAN_OPTIMUM + 0.01
    t_gen = attnsim.time_to_test_loss(res, level)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)

    ax = axes[0]
    ax.plot(s, res.train_loss, color="k", label="train loss")
    ax.plot(s, res.test_loss, color="tab:green", label="test loss (clean labels)")
    # training loss if every sample attended only to its anchor token (R if clean, the token most
    # aligned with the flipped label if noisy): the floor the memorising dynamics approach
    data = attnsim.make_data(res.config)
    values = attnsim.token_values(data)
    anchor = attnsim.anchor_tokens(res, values)
    best = res.y * values[np.arange(values.shape[0]), anchor]
    floor = float(np.mean(np.log1p(np.exp(-best))))
    ax.axhline(CLEAN_OPTIMUM, color="tab:green", ls=":", lw=1, label=f"clean optimum {CLEAN_OPTIMUM:.4f}")
    ax.axhline(floor, color="k", ls=":", lw=1, label=f"train floor, each sample on its anchor token {floor:.4f}")
    ax.set_ylabel("logistic loss")
    ax.set_title("loss", fontsize=10)

    ax = axes[1]
    ax.plot(s, res.train_acc, color="k", label="train acc (observed labels)")
    ax.plot(s, res.train_acc_noisy, color="tab:purple", ls="--", label="noisy samples fitted")
    ax.plot(s, res.test_acc, color="tab:green", label="test acc")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy", fontsize=10)

    ax = axes[2]
    rm = attnsim.role_mass(res)
    ax.plot(s, rm[:, ~res.noisy, 0].mean(axis=1), color="tab:red", lw=2, label="clean: mean mass on R")
    names = {0: "R", 1: "W+", 2: "W−", 3: "I"}
    which = ", ".join(f"$x_{anchor[i] + 1}$ ({names[int(res.roles[anchor[i]])]})" for i in np.flatnonzero(res.noisy))
    for j, i in enumerate(np.flatnonzero(res.noisy)):
        ax.plot(s, res.attention[:, i, anchor[i]], color="tab:blue", lw=1,
                label=f"noisy: mass on the token most aligned with\nthe flipped label, one line each: {which}"
                if j == 0 else None)
    ax.plot(s, rm[:, res.noisy, 0].mean(axis=1), color="tab:red", ls="--", label="noisy: mean mass on R")
    ax.set_yscale("logit")
    ax.set_ylim(1e-4, 1 - 1e-6)
    ax.set_ylabel("attention mass (logit scale)")
    ax.set_title("token selection", fontsize=10)

    for ax in axes:
        time_axis(ax, s)
        if t_fit > 0:
            ax.axvline(t_fit, color="tab:purple", lw=0.8, alpha=0.6)
        if t_gen > 0:
            ax.axvline(t_gen, color="tab:green", lw=0.8, alpha=0.6)
        ax.legend(fontsize=7.5, loc="best")
    cfg = res.config
    fig.suptitle(f"Balanced preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, SNR={cfg.snr:.3g}, η={cfg.eta:g}): "
                 f"train acc 1 from τ={t_fit:,} (purple line); test loss within 0.01 of the clean optimum "
                 f"from τ={t_gen:,} (green line)", fontsize=10)
    save(fig, args, "learning_curves.png")
    print(f"time_to_fit_all={t_fit} time_to_test_loss({level:.4f})={t_gen} final test loss={res.test_loss[-1]:.5f}")


if __name__ == "__main__":
    main()
