"""Figures drawn from a ``Result``: training curves and per-token attention (paper Fig. 3 style)."""

from __future__ import annotations

import numpy as np


#: One colour per role, so a token's line colour says what it is.
ROLE_COLOURS = {0: "tab:red", 1: "tab:orange", 2: "tab:blue", 3: "tab:gray"}
ROLE_LABELS = {0: "R", 1: "$W_{Y^*}$", 2: "$W_{-Y^*}$", 3: "I"}


def _time_axis(ax, steps):
    """Log time axis that still shows step 0 (linear below step 1)."""
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.3)
    ax.set_xlim(0, max(int(steps[-1]), 1))
    ax.set_xlabel("GD step τ")
    ax.grid(True, which="major", alpha=0.3)


def pick_samples(result):
    """Indices of one clean and one noisy sample (-1 where there is none)."""
    clean = np.flatnonzero(~result.noisy)
    noisy = np.flatnonzero(result.noisy)
    return (int(clean[0]) if clean.size else -1), (int(noisy[0]) if noisy.size else -1)


def plot_attention(ax, result, i, title, *, log=True, legend=True):
    """Every token's softmax probability for sample ``i`` over time, coloured by role (paper Fig. 3).

    Parameters
    ----------
    ax : matplotlib Axes
    result : Result
    i : int
        Sample index.
    title : str
    log : bool
        Log time axis (linear below step 1) rather than linear.
    legend : bool
        Draw the legend (one entry per role; the irrelevant tokens share one).
    """
    steps = result.steps
    seen = set()
    irrelevant = [t + 1 for t in range(result.attention.shape[2]) if int(result.roles[t]) == 3]
    for t in range(result.attention.shape[2]):
        role = int(result.roles[t])
        if role != 3:
            label = f"$x_{{{t + 1}}}$ ({ROLE_LABELS[role]})"
        else:
            label = None if role in seen else (f"$x_{{{irrelevant[0]}}} \\ldots x_{{{irrelevant[-1]}}}$ (I)"
                                               if len(irrelevant) > 1 else f"$x_{{{t + 1}}}$ (I)")
        seen.add(role)
        ax.plot(steps, result.attention[:, i, t], color=ROLE_COLOURS[role], label=label,
                lw=1.8 if role in (0, 2) else 1.0, alpha=1.0 if role != 3 else 0.6)
    if log:
        _time_axis(ax, steps)
    else:
        ax.set_xlim(0, max(int(steps[-1]), 1))
        ax.set_xlabel("GD step τ")
        ax.grid(True, which="major", alpha=0.3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("softmax probability")
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=7, loc="best")


def plot_result(result, path=None, title=None):
    """Training curves and the attention of a clean and a noisy sample.

    Parameters
    ----------
    result : Result
    path : str or path-like, optional
        Where to save the figure (PNG, PDF, ... by extension).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    steps = result.steps
    ax = axes[0, 0]
    ax.plot(steps, result.train_loss, label="train loss", color="k")
    if np.any(np.isfinite(result.test_loss)):
        ax.plot(steps, result.test_loss, label="test loss", color="tab:green")
    _time_axis(ax, steps)
    ax.set_ylabel("logistic loss")
    ax.legend(fontsize=8)
    ax.set_title("loss", fontsize=10)

    ax = axes[0, 1]
    ax.plot(steps, result.train_acc, label="train acc (observed labels)", color="k")
    if np.any(np.isfinite(result.test_acc)):
        ax.plot(steps, result.test_acc, label="test acc", color="tab:green")
    if np.any(result.noisy):
        ax.plot(steps, result.train_acc_noisy, label="noisy samples fitted", color="tab:purple", ls="--")
    _time_axis(ax, steps)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title("accuracy", fontsize=10)

    clean, noisy = pick_samples(result)
    if clean >= 0:
        plot_attention(axes[1, 0], result, clean, f"clean sample {clean}")
    else:
        axes[1, 0].set_axis_off()
    if noisy >= 0:
        plot_attention(axes[1, 1], result, noisy, f"noisy sample {noisy} (label flipped)")
    else:
        axes[1, 1].set_axis_off()
    if title is None and result.config is not None:
        c = result.config
        title = (f"d={c.d}, ‖μ‖={c.signal_norm:g}, SNR={c.snr:.3g}, n={c.n_train}, η={c.eta:g}, "
                 f"trainable={c.trainable}, lr={c.lr:g}")
    if title:
        fig.suptitle(title, fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_max_margin(results, labels=None, ax=None):
    """``1 - cos angle(p(tau), p^mm)`` on a log axis against log tau, one line per run.

    The directional convergence of Tarzanagh et al. (2023) as a straight-ish line: plain GD
    approaches the att-SVM direction only like a power of ``1 / log tau``.

    Parameters
    ----------
    results : Result or sequence of Result
        Runs made with ``max_margin`` set (``Result.mm_cos`` not None).
    labels : sequence of str, optional
        Legend entries, one per result (default: the engine and dynamics of each).
    ax : matplotlib Axes, optional
        Drawn into; a new figure otherwise.

    Returns
    -------
    matplotlib Axes

    Raises
    ------
    ConfigError
        If a result has no ``mm_cos`` (run without ``max_margin``) or ``labels`` has the wrong length.
    """
    from ._validation import ConfigError

    if not isinstance(results, (list, tuple)):
        results = [results]
    if labels is None:
        labels = [f"{r.extra.get('dynamics', 'gd')} ({r.engine})" for r in results]
    labels = list(labels)
    if len(labels) != len(results):
        raise ConfigError(f"labels must have one entry per result ({len(results)}); got {len(labels)}")
    for k, r in enumerate(results):
        if r.mm_cos is None:
            raise ConfigError(f"results[{k}] has no mm_cos; run it with max_margin=True (train, simulate) or "
                              f"--max-margin (CLI)")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for r, label in zip(results, labels):
        keep = (r.steps > 0) & np.isfinite(r.mm_cos)
        ax.loglog(r.steps[keep], np.maximum(1.0 - r.mm_cos[keep], np.finfo(float).tiny), label=label)
    ax.set_xlabel("GD step τ")
    ax.set_ylabel("1 − cos∠(p(τ), p^mm)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax
