"""The figures: headless, time ticks that never collide, titles that say what was run, and the
long-horizon panels (log mass, logit gaps) showing what the Result recorded."""

import itertools
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mpmath  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from attnsim import Config, SaveAt, plot_max_margin, plot_result, simulate  # noqa: E402
from attnsim._plot import _time_axis, log10_mass, time_ticks  # noqa: E402

FLOW = {"max_steps": 20_000, "gd_start": 200}


@pytest.fixture(scope="module")
def gd_run():
    cfg = Config(d=16, n_train=8, T=4, n_test=10, steps=300, seed=5)
    return simulate(cfg, SaveAt.log(cfg.steps, 30))


@pytest.fixture(scope="module")
def flow_run():
    cfg = Config(d=16, n_train=8, T=4, test_metrics="population", steps=10 ** 12, seed=3)
    return simulate(cfg, SaveAt.log(cfg.steps, 60), dynamics="flow", flow=FLOW)


def _visible_xticks(ax):
    """(text, position, bounding box) of the x tick labels drawn inside the axis limits."""
    lo, hi = ax.get_xlim()
    renderer = ax.figure.canvas.get_renderer()
    out = []
    for tick in ax.xaxis.get_major_ticks():
        x = tick.get_loc()
        if lo - 1e-9 <= x <= hi * (1 + 1e-9) and tick.label1.get_visible() and tick.label1.get_text():
            out.append((tick.label1.get_text(), x, tick.label1.get_window_extent(renderer)))
    return out


def _assert_ticks_readable(ax):
    ticks = _visible_xticks(ax)
    texts = [t for t, _, _ in ticks]
    assert len(texts) >= 2 and len(set(texts)) == len(texts), texts
    for text, x, _ in ticks:   # each label says its own position: "0" or "$10^{k}$" at 10^k
        if x == 0:
            assert text == "0"
        else:
            k = int(re.fullmatch(r"\$10\^\{(-?\d+)\}\$", text).group(1))
            assert x == 10.0 ** k, (text, x)
    for (t1, _, b1), (t2, _, b2) in itertools.combinations(ticks, 2):
        gap = max(b2.x0 - b1.x1, b1.x0 - b2.x1)        # horizontal space between the two labels
        assert gap >= 2.0, f"tick labels {t1!r} and {t2!r} overlap or touch ({gap:.1f} px apart)"


@pytest.mark.parametrize("last", [1, 7, 300, 1000, 10 ** 5, 10 ** 9, 10 ** 12, 10 ** 15, 3 * 10 ** 15])
def test_time_axis_ticks_do_not_collide_at_any_horizon(last):
    """Regression: "0" and "10⁰" were drawn on top of each other (worst at 10¹²)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5), constrained_layout=True)   # plot_result's panel width
    _time_axis(axes[0], np.array([0, last]))
    fig.canvas.draw()
    _assert_ticks_readable(axes[0])
    assert axes[0].get_xlim() == (0.0, float(last))
    plt.close(fig)


def test_time_ticks_stride_and_zero():
    assert time_ticks(1000) == [0.0, 1.0, 10.0, 100.0, 1000.0]
    assert time_ticks(10 ** 12) == [0.0] + [10.0 ** k for k in range(2, 13, 2)]   # no 10^0 beside 0
    assert time_ticks(1) == [0.0, 1.0]


def test_flow_figure_says_flow_time_steps_and_seed(flow_run):
    fig = plot_result(flow_run)
    fig.canvas.draw()
    title = fig._suptitle.get_text()
    assert title.startswith("gradient flow (GD-matched), $10^{12}$ steps, seed 3\n"), title
    assert "d=16" in title and "trainable=Wp" in title
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(axes) == 8
    for ax in axes:
        assert ax.get_xlabel() == "time τ (GD steps, flow)"
        _assert_ticks_readable(ax)
    texts = [t.get_text() for ax in axes for t in ax.texts + [ax.xaxis.label, ax.title]]
    assert not any("GD step τ" in t for t in texts)
    plt.close(fig)


def test_gd_figure_says_gd_steps_and_seed(gd_run):
    fig = plot_result(gd_run)
    fig.canvas.draw()
    assert fig._suptitle.get_text().startswith("GD, 300 steps, seed 5\nd=16, ‖μ‖=20, SNR=5, n=8, T=4")
    for ax in fig.axes:
        if ax.axison:
            assert ax.get_xlabel() == "GD step τ"
            _assert_ticks_readable(ax)
    plt.close(fig)


def test_ngd_and_interrupted_runs_say_so(gd_run):
    import dataclasses

    res = dataclasses.replace(gd_run, config=gd_run.config.replace(optimizer="ngd"), status="interrupted",
                              message="interrupted at step 120")
    fig = plot_result(res)
    assert fig._suptitle.get_text().startswith("normalised GD, 300 steps, seed 5; interrupted at step 120\n")
    assert fig.axes[0].get_xlabel() == "NGD step τ"
    plt.close(fig)


def test_mass_panels_show_the_recorded_attention_off_and_on_R(flow_run):
    """The log-scale panels plot log10 of 1 - m_i (clean) and m_i (noisy), checked against the
    attention the run recorded (summed over the tokens, no subtraction), down to 1e-12."""
    fig = plot_result(flow_run)
    relevant = flow_run.relevant
    for ax, rows, mask in [(fig.axes[6], ~flow_run.noisy, ~relevant), (fig.axes[7], flow_run.noisy, relevant)]:
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(flow_run.steps)]
        highlight = int(lines[-1].get_label().removeprefix("sample "))     # drawn last, over the others
        samples = [i for i in np.flatnonzero(rows) if i != highlight] + [highlight]
        assert len(lines) == len(samples) and rows[highlight]
        expected = flow_run.attention[:, samples][:, :, mask].sum(axis=-1)      # (S, len(samples))
        drawn = np.stack([10.0 ** np.asarray(ln.get_ydata()) for ln in lines], axis=1)
        assert expected[-1].max() < 1e-10          # the horizon reaches far into saturation
        np.testing.assert_allclose(drawn, expected, rtol=1e-9)
    plt.close(fig)


def test_log10_mass_matches_50_digit_arithmetic(rng):
    """Gaps up to 900 (1 - m ~ 1e-390, below float64): kept as a logarithm, relative error 1e-13."""
    z = rng.normal(size=(40, 6)) * np.array([[900.0], [300.0], [40.0], [1.0]]).repeat(10, axis=0)
    mask = np.array([False, True, True, False, False, True])
    got = log10_mass(z, mask)
    mpmath.mp.dps = 50
    for row, value in zip(z, got):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in row]
        exact = mpmath.log10(sum(e[t] for t in np.flatnonzero(mask)) / sum(e))
        assert abs(value - float(exact)) <= 1e-13 * max(1.0, abs(float(exact))), (row, value, exact)
    assert np.min(got) < -300                               # below what a float64 mass can hold


def test_log10_mass_closed_form_far_in_saturation():
    """One token leads three by 1000: log10(1 - m) = (log 3 - 1000) / log 10 (to first order in e^-1000)."""
    z = np.array([[1000.0, 0.0, 0.0, 0.0]])
    off_r = np.array([False, True, True, True])
    assert log10_mass(z, off_r)[0] == pytest.approx((np.log(3.0) - 1000.0) / np.log(10.0), rel=1e-15, abs=0)


def test_max_margin_plot_labels_flow_time(flow_run):
    import dataclasses

    res = dataclasses.replace(flow_run, mm_cos=np.linspace(0.5, 0.99, flow_run.steps.size))
    ax = plot_max_margin(res)
    assert ax.get_xlabel() == "time τ (GD steps, flow)"
    plt.close(ax.figure)


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_figure_says_which_test_metrics_and_which_space(gd_run, flow_run):
    """A test curve is a 10-sample estimate in one run and an exact expectation in the other: the
    legend says which; a run of the implicit space says so in its title."""
    fig = plot_result(gd_run)
    assert "test loss (10 samples)" in _legend_texts(fig.axes[0])
    assert "test acc (10 samples)" in _legend_texts(fig.axes[1])
    assert "implicit" not in fig._suptitle.get_text()
    plt.close(fig)
    fig = plot_result(flow_run)
    assert "test loss (population)" in _legend_texts(fig.axes[0])
    assert "test acc (population)" in _legend_texts(fig.axes[1])
    plt.close(fig)
    cfg = Config(space="implicit", init="official-gaussian", d=10 ** 7, n_train=6, T=4, steps=50, seed=1)
    fig = plot_result(simulate(cfg, SaveAt.log(cfg.steps, 10)))
    title = fig._suptitle.get_text()
    assert title.splitlines()[1].startswith("d=10000000 (implicit space), ‖μ‖=20"), title
    assert "test loss (population)" in _legend_texts(fig.axes[0])
    plt.close(fig)
