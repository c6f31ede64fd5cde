"""Signal learning versus noise memorisation in the effective query W^T p (balanced preset).

Illustrates the mechanism behind Theorem 4.1 of Sakamoto & Sato (ICML 2025): the trained
query holds the class signal and, at the same time, memorises the noise of the noisy
samples' tokens. ``attnsim.simulate(config, probes="noise")`` records <W^T p, r> for r = mu_+,
mu_- and every training token's noise vector, and ``attnsim.decompose_query`` solves for the
coordinates of W^T p in that basis at every save time (10^5 GD steps):

    W^T p = gamma_+ mu_+/||mu||^2 + gamma_- mu_-/||mu||^2 + sum_it zeta_it eps_it/||eps_it||^2 + rest.

Writes ``out/examples/query_decomposition.png``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

import attnsim
from _common import log_saves_through, parse_args, save, time_axis


def main():
    args = parse_args(__doc__)
    steps = 100_000
    cfg = attnsim.preset("balanced", steps=steps)
    res = attnsim.simulate(cfg, attnsim.SaveAt.log(steps, log_saves_through(steps)), probes="noise")
    data = attnsim.make_data(cfg)
    dec = attnsim.decompose_query(res, data)
    anchor = attnsim.anchor_tokens(res, attnsim.token_values(data))
    s = res.steps
    n = res.noisy.size
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)

    ax = axes[0]
    ax.plot(s, dec.signal[:, 0], color="tab:red", label=r"$\gamma_+$ (along $\mu_+$)")
    ax.plot(s, dec.signal[:, 1], color="tab:orange", label=r"$\gamma_-$ (along $\mu_-$)")
    ax.set_ylabel(r"signal coordinate $\gamma_\pm$")
    ax.set_title("signal learning", fontsize=10)

    ax = axes[1]
    zeta = dec.noise[:, np.arange(n), anchor]                       # (S, n): each sample's anchor token
    for i in range(n):
        ax.plot(s, zeta[:, i], color="tab:blue" if res.noisy[i] else "tab:red",
                lw=1.4 if res.noisy[i] else 0.6, alpha=1.0 if res.noisy[i] else 0.5)
    ax.plot([], [], color="tab:blue", label="noisy samples: noise of the aligned token")
    ax.plot([], [], color="tab:red", label="clean samples: noise of the R token")
    ax.set_ylabel(r"memorisation coefficient $\zeta_{i,a_i}$")
    ax.set_title("noise memorisation, per sample", fontsize=10)

    ax = axes[2]
    ax.plot(s, dec.signal_norm, color="tab:red", label="‖signal part‖")
    ax.plot(s, dec.noise_norm, color="tab:blue", label="‖noise part‖")
    ax.set_yscale("log")
    ax.set_ylabel("norm")
    ax.set_title("the two parts of the projection of $W^\\top p$", fontsize=10)
    for ax in axes:
        time_axis(ax, s)
        ax.legend(fontsize=8)
    fig.suptitle(f"Effective query of the balanced preset (d={cfg.d}, ‖μ‖={cfg.signal_norm:g}, η={cfg.eta:g}), "
                 f"{steps:,} GD steps", fontsize=11)
    save(fig, args, "query_decomposition.png")


if __name__ == "__main__":
    main()
