"""Figures drawn from a ``Result``: training curves, per-token attention (paper Fig. 3 style),
and the long-horizon views: attention logit gaps and the attention mass on a log scale."""

from __future__ import annotations

import math

import numpy as np

from ._analysis import anchor_tokens, gaps

#: One colour per role, so a token's line colour says what it is.
ROLE_COLOURS = {0: "tab:red", 1: "tab:orange", 2: "tab:blue", 3: "tab:gray"}
ROLE_LABELS = {0: "R", 1: "$W_{Y^*}$", 2: "$W_{-Y^*}$", 3: "I"}
#: At most this many labelled decades on a time axis; more and "10^k" labels run into each other.
MAX_TIME_LABELS = 7


def time_label(result) -> str:
    """The x label of a time axis: what one unit of ``Result.steps`` is for this run."""
    if result.extra.get("dynamics", "gd") == "flow":
        return "time τ (GD steps, flow)"
    optimizer = result.config.optimizer if result.config is not None else result.extra.get("optimizer", "gd")
    return "NGD step τ" if optimizer == "ngd" else "GD step τ"


def time_ticks(last_step):
    """Labelled tick positions of a symlog time axis from 0 to ``last_step``.

    ``0`` and powers of ten ``10^(k s)``, the stride ``s`` chosen so that at most
    ``MAX_TIME_LABELS`` decades are labelled. With ``s > 1`` the tick at ``10^0`` is left
    out: it sits one decade from ``0`` (``linscale=1``) while the others are ``s`` apart,
    which is where "0" and "10⁰" ran into each other on 10¹² flow runs.

    Returns
    -------
    list of float
    """
    decades = max(int(math.floor(math.log10(max(float(last_step), 1.0)) + 1e-9)), 0)
    stride = max(1, math.ceil(decades / (MAX_TIME_LABELS - 1)))
    return [0.0] + [10.0 ** k for k in range(0 if stride == 1 else stride, decades + 1, stride)]


def _format_time_tick(x, _pos=None) -> str:
    return "0" if x == 0 else f"$10^{{{int(round(math.log10(x)))}}}$"


def _time_axis(ax, steps, label="GD step τ"):
    """Log time axis that still shows step 0 (linear between 0 and 1, as wide as one decade)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter

    last = max(int(steps[-1]), 1)
    ax.set_xscale("symlog", linthresh=1.0, linscale=1.0)
    ax.set_xlim(0, last)
    ax.xaxis.set_major_locator(FixedLocator(time_ticks(last)))
    ax.xaxis.set_major_formatter(FuncFormatter(_format_time_tick))
    decades = int(math.floor(math.log10(last) + 1e-9))
    ax.xaxis.set_minor_locator(FixedLocator([10.0 ** k for k in range(decades + 1)]))
    ax.set_xlabel(label)
    ax.grid(True, which="major", alpha=0.3)


def format_steps(n) -> str:
    """A step count for a title: ``1,000``, ``$10^{12}$``, ``$3\\times10^{7}$``."""
    n = int(n)
    if n < 100_000:
        return f"{n:,}"
    exp = int(math.floor(math.log10(n)))
    mant = n / 10 ** exp
    return f"$10^{{{exp}}}$" if mant == 1 else f"${mant:.3g}\\times10^{{{exp}}}$"


def run_title(result) -> str:
    """Two title lines: how the run moved (dynamics, steps, seed, outcome), then its setting."""
    c = result.config
    dynamics = result.extra.get("dynamics", "gd")
    if dynamics == "flow":
        how = "gradient flow (GD-matched)"
    else:
        how = "normalised GD" if (c is not None and c.optimizer == "ngd") else "GD"
    steps = c.steps if c is not None else result.final_step
    first = f"{how}, {format_steps(steps)} steps"
    if c is not None:
        first += f", seed {c.seed}" + (f" (init seed {c.init_seed})" if c.init_seed is not None else "")
    if result.status != "finished":
        first += f"; {result.message}"
    if c is None:
        return first
    space = " (implicit space)" if c.space == "implicit" else ""
    return (f"{first}\nd={c.d}{space}, ‖μ‖={c.signal_norm:g}, SNR={c.snr:.3g}, n={c.n_train}, T={c.T}, "
            f"η={c.eta:g}, trainable={c.trainable}, lr={c.lr:g}")


def _test_metric_label(result, what: str) -> str:
    """Legend entry of a test curve: ``"test loss (population)"`` for exact expectations over the
    data model, ``"test loss (1000 samples)"`` for a test set (``what`` = "loss" or "acc")."""
    c = result.config
    if c is None:
        return f"test {what}"
    return f"test {what} ({'population' if c.test_metrics == 'population' else f'{c.n_test} samples'})"


def pick_samples(result):
    """Indices of one clean and one noisy sample (-1 where there is none)."""
    clean = np.flatnonzero(~result.noisy)
    noisy = np.flatnonzero(result.noisy)
    return (int(clean[0]) if clean.size else -1), (int(noisy[0]) if noisy.size else -1)


def _token_label(result, t, seen):
    """Legend entry of token ``t`` (one entry for all irrelevant tokens), or None."""
    role = int(result.roles[t])
    if role != 3:
        return f"$x_{{{t + 1}}}$ ({ROLE_LABELS[role]})"
    if role in seen:
        return None
    irrelevant = [u + 1 for u in range(len(result.roles)) if int(result.roles[u]) == 3]
    return (f"$x_{{{irrelevant[0]}}} \\ldots x_{{{irrelevant[-1]}}}$ (I)" if len(irrelevant) > 1
            else f"$x_{{{t + 1}}}$ (I)")


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
    for t in range(result.attention.shape[2]):
        role = int(result.roles[t])
        label = _token_label(result, t, seen)
        seen.add(role)
        ax.plot(steps, result.attention[:, i, t], color=ROLE_COLOURS[role], label=label,
                lw=1.8 if role in (0, 2) else 1.0, alpha=1.0 if role != 3 else 0.6)
    if log:
        _time_axis(ax, steps, time_label(result))
    else:
        ax.set_xlim(0, max(int(steps[-1]), 1))
        ax.set_xlabel(time_label(result))
        ax.grid(True, which="major", alpha=0.3)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("softmax probability")
    ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=7, loc="best")


def _plot_gaps(ax, result, i, title):
    """Logit gaps ``z_{i,a} - z_{i,t}`` of sample ``i``'s anchor token ``a`` over every other token.

    The anchor is the relevant token for a clean sample and the token aligned with the flipped
    label for a noisy one (``anchor_tokens``): ``Lambda_{i,t}`` and ``Gamma_{i,t}`` of the paper.
    Where the probabilities have saturated these keep growing (about like ``log tau``).
    """
    gap = gaps(result)[:, i, :]
    a = int(anchor_tokens(result)[i])
    seen = set()
    for t in range(gap.shape[1]):
        if t == a:
            continue
        role = int(result.roles[t])
        label = _token_label(result, t, seen)
        seen.add(role)
        ax.plot(result.steps, gap[:, t], color=ROLE_COLOURS[role], label=label,
                lw=1.8 if role in (0, 2) else 1.0, alpha=1.0 if role != 3 else 0.6)
    ax.axhline(0.0, color="k", lw=0.6)
    _time_axis(ax, result.steps, time_label(result))
    ax.set_ylabel(f"$z_{{x_{{{a + 1}}}}} - z_t$ (logit gap)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best", title=f"gap of $x_{{{a + 1}}}$ over", title_fontsize=7)


def log10_mass(scores, mask) -> np.ndarray:
    """``log10 sum_{t in mask} s_t`` from attention logits, without cancellation or underflow.

    ``1 - m_i`` is the mass off the relevant set: ``log10_mass(scores, ~relevant)``; it is
    summed over the tokens outside R, never computed as ``1 - m`` (which is 0 in float64 once
    ``1 - m < 1e-16``), and kept as a logarithm (a gap of 800 gives ``10^-347``, below float64).

    Parameters
    ----------
    scores : ndarray, shape (..., T)
    mask : ndarray of bool, shape (T,)

    Returns
    -------
    ndarray, shape (...)
        ``-inf`` where ``mask`` is empty.
    """
    z = np.asarray(scores, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.full(z.shape[:-1], -np.inf)
    return (_logsumexp(z[..., mask]) - _logsumexp(z)) / math.log(10.0)


def _logsumexp(z):
    """``log sum_t exp(z_t)`` over the last axis, relative to its own top term (no overflow or underflow)."""
    top = z.max(axis=-1)
    return top + np.log(np.exp(z - top[..., None]).sum(axis=-1))


def _plot_mass(ax, result, noisy, highlight):
    """All clean samples' ``1 - m_i`` (or all noisy samples' ``m_i``) on a log scale."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    relevant = np.asarray(result.relevant, dtype=bool)
    rows = np.flatnonzero(result.noisy if noisy else ~result.noisy)
    y = log10_mass(result.scores[:, rows, :], relevant if noisy else ~relevant)
    colour = "tab:blue" if noisy else "tab:red"
    for k, i in enumerate(rows):
        if i != highlight:
            ax.plot(result.steps, y[:, k], color=colour, lw=0.8, alpha=0.45,
                    label=f"other {'noisy' if noisy else 'clean'} samples" if k == int(rows[0] == highlight) else None)
    if highlight in rows:
        ax.plot(result.steps, y[:, list(rows).index(highlight)], color="k", lw=1.8, label=f"sample {highlight}")
    _time_axis(ax, result.steps, time_label(result))
    # log10 values on a linear axis: a log scale that does not end where float64 underflows.
    ax.yaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"$10^{{{int(round(v))}}}$"))
    ax.set_ylabel("$m_i$, mass on R" if noisy else "$1 - m_i$, mass off R")
    ax.set_title(("noisy samples: attention left on R (memorisation drives it to 0)" if noisy else
                  "clean samples: attention off R (benign overfitting drives it to 0)"), fontsize=10)
    ax.legend(fontsize=7, loc="best")


def plot_result(result, path=None, title=None):
    """Training curves, the attention and logit gaps of a clean and a noisy sample, and every
    sample's attention mass (off R for clean samples, on R for noisy ones) on a log scale.

    Rows: loss and accuracy; the per-token softmax of one clean and one noisy sample (paper
    Fig. 3); the logit gaps of those samples (they keep moving where the probabilities look
    flat, after ~10^4 steps); the mass of all samples on a log scale. The time axis is
    logarithmic with 0 shown; the title says the dynamics, steps, seed and setting.

    Parameters
    ----------
    result : Result
    path : str or path-like, optional
        Where to save the figure (PNG, PDF, ... by extension).
    title : str, optional
        Replaces the default title (``run_title``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(11, 14), constrained_layout=True)
    steps = result.steps
    xlabel = time_label(result)
    ax = axes[0, 0]
    ax.plot(steps, result.train_loss, label="train loss", color="k")
    if np.any(np.isfinite(result.test_loss)):
        ax.plot(steps, result.test_loss, label=_test_metric_label(result, "loss"), color="tab:green")
    _time_axis(ax, steps, xlabel)
    ax.set_ylabel("logistic loss")
    ax.legend(fontsize=8)
    ax.set_title("loss", fontsize=10)

    ax = axes[0, 1]
    ax.plot(steps, result.train_acc, label="train acc (observed labels)", color="k")
    if np.any(np.isfinite(result.test_acc)):
        ax.plot(steps, result.test_acc, label=_test_metric_label(result, "acc"), color="tab:green")
    if np.any(result.noisy):
        ax.plot(steps, result.train_acc_noisy, label="noisy samples fitted", color="tab:purple", ls="--")
    _time_axis(ax, steps, xlabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    ax.set_title("accuracy", fontsize=10)

    clean, noisy = pick_samples(result)
    for col, (i, name) in enumerate([(clean, f"clean sample {clean}"),
                                     (noisy, f"noisy sample {noisy} (label flipped)")]):
        if i < 0:
            for row in (1, 2, 3):
                axes[row, col].set_axis_off()
            continue
        plot_attention(axes[1, col], result, i, name)
        _plot_gaps(axes[2, col], result, i, f"{name}: logit gaps")
        _plot_mass(axes[3, col], result, noisy=col == 1, highlight=i)
    fig.suptitle(run_title(result) if title is None else title, fontsize=11)
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
    ax.set_xlabel(time_label(results[0]) if len({time_label(r) for r in results}) == 1 else "step τ")
    ax.set_ylabel("1 − cos∠(p(τ), p^mm)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return ax
