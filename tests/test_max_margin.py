"""``train(..., max_margin=True)``: the att-SVM direction tracked from recorded scores (DESIGN.md §9).

Oracles: the cosine of the *materialised* iterate (``Result.p``, ``W^T p``) with ``p^mm`` from
``att_svm`` on the *materialised* keys; the plain NumPy GD loop of ``plain_gd`` for intermediate
saves; the max-margin property (no direction has a larger worst margin than ``p^mm``); and the
convergence in direction that Tarzanagh et al. (2023) prove, checked at tau = 10^12 with the flow.
"""

import numpy as np
import pytest

import attnsim
from attnsim import ConfigError, SaveAt

from tools.plain_gd import gd_trajectory

TOL = 1e-12


def _cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _problem(rng, n=5, T=4, d=7):
    X = rng.standard_normal((n, T, d))
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    W0 = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    p0 = 0.2 * rng.standard_normal(d)
    nu = rng.standard_normal(d)
    return X, y, W0, p0, nu


def _tarzanagh(seed, n=6, T=8, d=30):
    """Tarzanagh et al.'s random instances: unit-norm tokens, W = I, random labels and fixed head."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    y = rng.choice([-1.0, 1.0], n)
    nu = rng.standard_normal(d)
    return X, y, np.eye(d), np.zeros(d), nu


def _materialised(X, W0, res, trainable):
    """``(iterate, keys)``: p and K = X W0^T, or q = W^T p and the tokens."""
    if not trainable.startswith("Wp"):
        return res.p, X @ W0.T
    return res.W.T @ res.p, X


RUNS = [("gd", "primal", "p", 3000), ("gd", "dual", "p", 3000), ("flow", "dual", "p", 10**6),
        ("gd", "primal", "Wp", 3000), ("gd", "dual", "Wp", 3000), ("flow", "dual", "Wp", 3000),
        ("flow", "dual", "Wp", 10**6),
        # the neighbouring models: a trained head, and normalised GD (lr is then a step length)
        ("gd", "dual", "p+nu", 3000), ("gd", "primal", "Wp+nu", 3000), ("ngd", "dual", "p", 3000),
        ("ngd", "primal", "Wp+nu", 3000)]


@pytest.mark.parametrize("dynamics,engine,trainable,steps", RUNS)
def test_mm_cos_equals_cosine_of_materialised_iterate_and_att_svm(rng, dynamics, engine, trainable, steps):
    X, y, W0, p0, nu = _problem(rng)
    optimizer = "ngd" if dynamics == "ngd" else "gd"
    dynamics = "gd" if dynamics == "ngd" else dynamics
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5 if optimizer == "gd" else 0.05, steps=steps, trainable=trainable,
                        engine=engine, dynamics=dynamics, optimizer=optimizer, max_margin=True,
                        save_at=SaveAt.log(steps, 12))
    it, keys = _materialised(X, W0, res, trainable)
    sel = attnsim.selected_tokens(res)
    svm = attnsim.att_svm(keys, sel)
    assert svm.status == "optimal"
    summary = res.extra["max_margin"]
    assert summary["selected"] == sel.tolist() and summary["feasible"] and summary["status"] == "optimal"
    assert abs(summary["norm"] - np.linalg.norm(svm.p)) <= 1e-10 * svm.norm
    if dynamics == "flow" and trainable == "Wp" and res.final_step > res.extra["gd_start_steps"]:
        # The flow with W trained integrates the scores z alongside (b, M), from which W and p are
        # materialised; z = X W^T p holds between them only to the integrator's accuracy (measured
        # 1e-11 relative at 10^6 steps), and mm_cos is read off z. So the identity is checked to
        # the bound that gap implies, |dz . w| <= ||dz|| ||w||, not to 1e-12.
        z_mat = np.einsum("itd,d->it", X, it)
        bound = np.linalg.norm(res.scores[-1] - z_mat) * np.linalg.norm(svm.token_coef) / (
            np.linalg.norm(it) * svm.norm) + abs(res.query_norm[-1] / np.linalg.norm(it) - 1) + TOL
        assert abs(res.mm_cos[-1] - _cos(it, svm.p)) <= bound
        return
    assert abs(res.mm_cos[-1] - _cos(it, svm.p)) <= TOL
    # each sample's margin, from the materialised keys and iterate
    n = X.shape[0]
    diffs = np.einsum("itd,d->it", keys[np.arange(n), sel][:, None, :] - keys, it) / np.linalg.norm(it)
    diffs[np.arange(n), sel] = np.inf
    np.testing.assert_allclose(res.mm_margin[-1], diffs.min(axis=1) * np.linalg.norm(svm.p), rtol=0, atol=1e-11)
    assert res.mm_cos.shape == res.p_norm.shape and res.mm_margin.shape == res.margins.shape


@pytest.mark.parametrize("trainable", ["p", "Wp"])
def test_mm_cos_at_intermediate_saves_matches_plain_gd(rng, trainable):
    X, y, W0, p0, nu = _problem(rng)
    save = [0, 7, 40, 150, 400]
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=400, trainable=trainable, max_margin=True, save_at=save)
    sel = np.array(res.extra["max_margin"]["selected"])
    svm = attnsim.att_svm(X @ W0.T if trainable == "p" else X, sel)
    for k, step in enumerate(save[1:], start=1):
        _, W, p = gd_trajectory(X, y, W0, p0, nu, 0.5, step, trainable=trainable)
        it = p if trainable == "p" else W.T @ p
        assert abs(res.mm_cos[k] - _cos(it, svm.p)) <= TOL, (step, res.mm_cos[k], _cos(it, svm.p))


def test_flow_intermediate_save_matches_a_separate_run_to_that_step():
    X, y, W0, p0, nu = _tarzanagh(1, d=10)
    save = SaveAt.log(10**9, 20)
    res = attnsim.train(X, y, W0, p0, nu, lr=0.1, steps=10**9, trainable="p", dynamics="flow", max_margin=True,
                        save_at=save)
    sel = np.array(res.extra["max_margin"]["selected"])
    svm = attnsim.att_svm(X, sel)
    k = int(np.searchsorted(res.steps, 10**7))
    short = attnsim.train(X, y, W0, p0, nu, lr=0.1, steps=int(res.steps[k]), trainable="p", dynamics="flow",
                          max_margin=sel, save_at=res.steps[:k + 1])
    assert short.extra["max_margin"]["selected"] == sel.tolist()
    assert abs(short.mm_cos[-1] - _cos(short.p, svm.p)) <= TOL
    # the two runs integrate the same flow; they agree to the integrator's tolerance
    assert abs(res.mm_cos[k] - short.mm_cos[-1]) <= 1e-6


def test_no_direction_beats_the_svm_margin_and_the_selection_options(rng):
    X, y, W0, p0, nu = _problem(rng)
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=2000, trainable="p", max_margin="optimal")
    assert res.extra["max_margin"]["selected"] == attnsim.optimal_tokens(X, y, nu).tolist()
    assert res.extra["max_margin"]["selection"].startswith("optimal")
    assert res.extra["max_margin"]["feasible"] and res.extra["max_margin"]["status"] == "optimal"
    worst = np.nanmin(res.mm_margin, axis=1)
    assert np.all(np.isfinite(worst[1:])) and np.all(worst[1:] <= 1 + 1e-12)
    # "final" is the last save's selection, which here differs from the first save's
    two = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=3000, trainable="p", max_margin=True, save_at=[0, 3000])
    first, last = np.argmax(two.scores[0], axis=1), np.argmax(two.scores[-1], axis=1)
    assert np.any(first != last)
    assert two.extra["max_margin"]["selected"] == last.tolist() == attnsim.selected_tokens(two).tolist()
    given = np.zeros(X.shape[0], dtype=int)
    res2 = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=10, trainable="p", max_margin=given)
    assert res2.extra["max_margin"]["selected"] == [0] * X.shape[0]
    assert res2.extra["max_margin"]["selection"] == "given"


def test_infeasible_selection_gives_nan_with_reason_and_finished_run(rng):
    X, y, W0, p0, nu = _problem(rng)
    X[1] = X[0]                                     # same tokens, opposite selections: no p separates both
    sel = np.zeros(X.shape[0], dtype=int)
    sel[1] = 1
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=50, trainable="p", max_margin=sel)
    mm = res.extra["max_margin"]
    assert res.status == "finished"
    assert not mm["feasible"] and mm["status"] == "infeasible" and "samples [0, 1]" in mm["reason"]
    assert mm["norm"] is None and np.all(np.isnan(res.mm_cos)) and np.all(np.isnan(res.mm_margin))


def test_flow_to_1e12_approaches_the_att_svm_of_the_selected_tokens():
    """Tarzanagh et al.'s random instances (n = 6, T = 8, d = 30, W = I, p only): p(tau)/||p|| -> p^mm/||p^mm||.

    Measured (seeds 0-2, lr = 0.1): 1 - cos = 0.25-0.36 at 10^3, 0.006-0.014 at 10^9, 0.0033-0.0071 at 10^12.
    """
    decades = np.array([10**k for k in range(0, 13)])
    for seed in range(3):
        X, y, W0, p0, nu = _tarzanagh(seed)
        res = attnsim.train(X, y, W0, p0, nu, lr=0.1, steps=10**12, trainable="p", dynamics="flow",
                            max_margin=True, save_at=np.concatenate([[0], decades]))
        assert res.status == "finished" and res.extra["max_margin"]["status"] == "optimal"
        gap = 1.0 - res.mm_cos
        assert np.all(np.diff(gap[-5:]) < 0), (seed, gap)      # decreasing over the last four decades
        assert gap[-1] < 0.02, (seed, gap[-1])
        # the worst sample's normalised margin approaches the SVM's (1) from below
        worst = res.mm_margin[-1].min()
        assert 1 - 0.1 < worst <= 1 + 1e-12, (seed, worst)


@pytest.mark.parametrize("bad,match", [
    ("best", r"max_margin must be True, False, one of 'final', 'optimal' or an array of 5 token indices; "
             r"got 'best'"),
    (3, r"max_margin must be True, False, one of 'final', 'optimal' .* got 3"),
    (np.zeros(4, dtype=int), r"max_margin must have shape \(5,\), one token index per sample; got shape \(4,\)"),
    (np.full(5, 4), r"max_margin must hold token indices in \[0, T\) = \[0, 4\); got 4 at index 0"),
    (np.full(5, 0.5), r"max_margin must hold integer token indices; got 0.5"),
])
def test_max_margin_validation_messages(rng, bad, match):
    X, y, W0, p0, nu = _problem(rng)
    with pytest.raises(ConfigError, match=match):
        attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=5, trainable="p", max_margin=bad)


def test_max_margin_round_trips_through_save_and_load(rng, tmp_path):
    X, y, W0, p0, nu = _problem(rng)
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=200, trainable="Wp", max_margin=True)
    res.save(tmp_path / "r.npz")
    back = attnsim.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.mm_cos, res.mm_cos)
    np.testing.assert_array_equal(back.mm_margin, res.mm_margin)
    assert back.extra["max_margin"] == res.extra["max_margin"]
    plain = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=20, trainable="p")
    assert plain.mm_cos is None and "max_margin" not in plain.extra
    plain.save(tmp_path / "plain.npz")                  # a file without the arrays, as older files are
    assert attnsim.load(tmp_path / "plain.npz").mm_cos is None


def test_simulate_passes_max_margin():
    cfg = attnsim.Config(d=40, n_test=0, steps=200, trainable="p")
    res = attnsim.simulate(cfg, max_margin=True)
    assert res.mm_cos.shape == res.steps.shape and res.extra["max_margin"]["selection"].startswith("final")
    assert "one_minus_mm_cos" in res.summary()


def test_cli_max_margin_prints_one_minus_cos_and_records_it(tmp_path, capsys):
    from attnsim.cli import main

    out = tmp_path / "r.npz"
    assert main(["run", "--d", "40", "--n-test", "0", "--steps", "300", "--trainable", "p", "--no-progress",
                 "--saves", "10", "--max-margin", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    res = attnsim.load(out)
    line = next(ln for ln in text.splitlines() if "one_minus_mm_cos" in ln)
    assert float(line.split()[-1]) == pytest.approx(1 - res.mm_cos[-1], rel=1e-5)
    assert "att_svm" in text and res.extra["max_margin"]["selection"].startswith("final")
    assert main(["run", "--d", "40", "--n-test", "0", "--steps", "30", "--no-progress", "--saves", "3",
                 "--out", str(tmp_path / "plain.npz")]) == 0
    assert "one_minus_mm_cos" not in capsys.readouterr().out


def test_plot_max_margin_draws_one_minus_cos_on_log_axes(rng):
    import matplotlib

    matplotlib.use("Agg")
    X, y, W0, p0, nu = _problem(rng)
    res = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=500, trainable="p", max_margin=True)
    ax = attnsim.plot_max_margin([res], ["gd"])
    (line,) = ax.get_lines()
    keep = res.steps > 0
    np.testing.assert_array_equal(line.get_xdata(), res.steps[keep])
    np.testing.assert_allclose(line.get_ydata(), 1 - res.mm_cos[keep])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    plain = attnsim.train(X, y, W0, p0, nu, lr=0.5, steps=5, trainable="p")
    with pytest.raises(ConfigError, match=r"results\[0\] has no mm_cos; run it with max_margin=True"):
        attnsim.plot_max_margin(plain)
    with pytest.raises(ConfigError, match=r"labels must have one entry per result \(1\); got 2"):
        attnsim.plot_max_margin([res], ["a", "b"])


@pytest.mark.parametrize("spec", [True, "optimal", "array"])
def test_checkpoint_keeps_the_max_margin_selection(tmp_path, spec):
    cfg = attnsim.Config(d=30, n_test=0, steps=400, trainable="p")
    if spec == "array":
        spec = np.arange(cfg.n_train) % cfg.T
    ref = attnsim.simulate(cfg, SaveAt.log(400, 20), max_margin=spec)
    run = attnsim.prepare_run(cfg, SaveAt.log(400, 20), max_margin=spec)
    while run.step < 150:
        run.advance()
    attnsim.save_checkpoint(tmp_path / "ck.npz", run, cfg)
    back = attnsim.resume(tmp_path / "ck.npz")
    np.testing.assert_array_equal(back.mm_cos, ref.mm_cos)
    assert back.extra["max_margin"] == ref.extra["max_margin"]
