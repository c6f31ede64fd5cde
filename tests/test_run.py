"""A run's outcome (``Run``): numerical robustness in saturation, huge margins, tiny and huge step
sizes, and each stop reported with its own status.

The implementation itself must never produce NaN (or even a RuntimeWarning); when the
iterates genuinely overflow, the run stops with status "diverged", a message
"diverged at step k: non-finite <quantity>", and every row recorded before is kept.
Every case runs for both engines and both trainable sets.
"""

import re
import warnings

import numpy as np
import pytest

import attnsim
from attnsim import Config, SaveAt, simulate

from tools.cases import FLOW, FLOW_CFG
from tools.coords_grid import GD, TRAINABLE

CASES = GD
RECORDED = ("train_loss", "train_acc", "test_loss", "test_acc", "margins", "scores", "attention", "relevant_mass",
            "frak_s", "frak_cum", "p_norm", "w_dist", "p_probe", "query_probe")


@pytest.fixture(autouse=True)
def warnings_are_errors():
    """An overflow warning from NumPy would mean an unguarded operation in the implementation."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def small(trainable, **kw):
    return Config(d=20, n_train=6, T=4, n_test=10, trainable=trainable, **{"steps": 300, **kw})


def assert_all_finite(res):
    """Every recorded array finite (test figures only when there is a test set)."""
    for name in RECORDED:
        if name.startswith("test_") and res.config is None:
            continue
        assert np.all(np.isfinite(getattr(res, name))), name
    if res.status != "diverged":  # a diverged Result's p, W are the overflowed iterate itself
        assert np.all(np.isfinite(res.p)) and (res.W is None or np.all(np.isfinite(res.W)))


def toy(rng, n=6, T=4, d=10):
    X = rng.standard_normal((n, T, d))
    y = np.repeat([1.0, -1.0], n // 2)
    return X, y, rng.standard_normal(d)


@pytest.mark.parametrize("engine,trainable", CASES)
@pytest.mark.parametrize("sigma_p", [1e2, 1e3])
def test_saturated_softmax_gives_no_nan(engine, trainable, sigma_p):
    """Score gaps of 10^4-10^5 at initialisation: attention is one-hot, nothing is NaN."""
    cfg = small(trainable, init="gaussian", sigma_p=sigma_p, sigma_w=1.0)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 20), engine=engine)
    gaps = np.ptp(res.scores[0], axis=1)
    assert gaps.min() > 1e3
    assert res.status == "finished"
    assert_all_finite(res)
    np.testing.assert_allclose(res.attention.sum(axis=2), 1.0, rtol=0, atol=1e-15)
    assert np.all((res.frak_s >= 0) & (res.frak_s <= 0.25))


@pytest.mark.parametrize("sigma_p", [1e2, 1e3])
@pytest.mark.parametrize("trainable", TRAINABLE)
def test_saturated_softmax_primal_and_dual_agree(sigma_p, trainable):
    cfg = small(trainable, init="gaussian", sigma_p=sigma_p, sigma_w=1.0)
    a, b = (attnsim.simulate(cfg, SaveAt.log(cfg.steps, 20), engine=e) for e in ("primal", "dual"))
    np.testing.assert_allclose(a.train_loss, b.train_loss, rtol=1e-12)
    np.testing.assert_array_equal(a.attention.argmax(axis=2), b.attention.argmax(axis=2))


@pytest.mark.parametrize("engine,trainable", CASES)
def test_score_gap_of_ten_thousand_from_explicit_p0(engine, trainable, rng):
    """A query aligned with one token's key by 10^4: the selected token's softmax is exactly 1."""
    X, y, nu = toy(rng)
    d = X.shape[2]
    p0 = 1e4 * X[0, 0] / np.linalg.norm(X[0, 0]) ** 2 * 1.0
    res = attnsim.train(X, y, np.eye(d), p0, nu, lr=0.1, steps=200, trainable=trainable, engine=engine,
                        save_at=SaveAt.log(200, 20))
    assert res.status == "finished"
    assert_all_finite(res)
    assert res.attention[0, 0, 0] == 1.0


@pytest.mark.parametrize("engine,trainable", CASES)
@pytest.mark.parametrize("head_scale", [1e6, 1e100])
def test_huge_margins_give_finite_losses(engine, trainable, head_scale):
    """||nu|| up to 1e100: margins of 1e100, the logistic loss stays finite, nothing NaN."""
    cfg = small(trainable, head_scale=head_scale)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 20), engine=engine)
    assert res.status == "finished"
    assert_all_finite(res)
    assert np.abs(res.margins).max() > 0.1 * head_scale


@pytest.mark.parametrize("engine,trainable", CASES)
def test_tiny_lr_runs_and_barely_moves(engine, trainable, rng):
    X, y, nu = toy(rng)
    d = X.shape[2]
    res = attnsim.train(X, y, np.eye(d), np.zeros(d), nu, lr=1e-300, steps=500, trainable=trainable,
                        engine=engine, save_at=SaveAt.log(500, 10))
    assert res.status == "finished"
    assert_all_finite(res)
    assert res.p_norm[-1] < 1e-290 and res.w_dist[-1] < 1e-290
    np.testing.assert_array_equal(res.train_loss, res.train_loss[0])


@pytest.mark.parametrize("engine,trainable", CASES)
@pytest.mark.parametrize("lr", [1e3, 1e20, 1e50])
def test_large_lr_saturates_without_nan(engine, trainable, lr):
    """A huge step saturates the softmax after one step (gradient exactly 0 afterwards): finite, finished."""
    cfg = small(trainable, lr=lr)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 20), engine=engine)
    assert res.status == "finished", res.message
    assert_all_finite(res)


DIVERGED = re.compile(r"^diverged at step (\d+): non-finite (.+)$")


@pytest.mark.parametrize("engine,trainable", CASES)
def test_genuine_overflow_is_reported_as_divergence(engine, trainable, rng):
    """Keys of norm ~1e100 and lr = 1e200: the first step overflows the scores for real.

    Status "diverged", the message names the step and the non-finite quantities, the rows
    recorded before are kept (and finite), and nothing warns.
    """
    X, y, nu = toy(rng)
    d = X.shape[2]
    res = attnsim.train(X, y, 1e100 * np.eye(d), np.zeros(d), nu, lr=1e200, steps=100, trainable=trainable,
                        engine=engine, save_at=SaveAt.log(100, 10))
    assert res.status == "diverged" and not res.success
    m = DIVERGED.match(res.message)
    assert m, res.message
    assert int(m.group(1)) == 1
    assert "attention scores z" in m.group(2)
    assert res.steps.tolist() == [0]
    assert_all_finite(res)


@pytest.mark.parametrize("engine", ["primal", "dual"])
def test_joint_training_with_enormous_lr_diverges_and_keeps_history(engine):
    """W' = W - lr p g^T with ||p|| ~ lr: W overflows within two steps at lr = 1e200."""
    cfg = small("Wp", lr=1e200, steps=1000)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 30), engine=engine)
    m = DIVERGED.match(res.message)
    assert res.status == "diverged" and m, res.message
    k = int(m.group(1))
    assert 1 <= k <= 2 and res.final_step < k
    expected = {"primal": "W", "dual": "||p||^2"}[engine]
    assert expected in m.group(2).split(", "), m.group(2)
    assert_all_finite(res)


def test_divergence_mid_run_keeps_every_earlier_row():
    """Divergence after many finite saves: the Result holds exactly the saves before step k."""
    cfg = small("Wp", lr=1e80, steps=400)  # the dual coordinates overflow ||p||^2 at step 3
    res = attnsim.simulate(cfg, SaveAt.linear(cfg.steps, 401), engine="dual")
    assert res.status == "diverged", res.message        # IEEE float64: 1e80^2 overflows everywhere
    k = int(DIVERGED.match(res.message).group(1))
    assert 0 < k < cfg.steps
    assert res.steps.tolist() == list(range(k))
    ref = attnsim.simulate(cfg, SaveAt.linear(cfg.steps, 401), engine="primal")
    assert ref.status == "finished"  # the primal iterate itself is finite
    np.testing.assert_allclose(res.train_loss, ref.train_loss[:k], rtol=1e-12)


def test_diverged_result_survives_a_save_load_round_trip(tmp_path):
    cfg = small("Wp", lr=1e200)
    res = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 10), engine="primal")
    res.save(tmp_path / "r.npz")
    back = attnsim.load(tmp_path / "r.npz")
    assert back.status == "diverged" and back.message == res.message
    np.testing.assert_array_equal(back.train_loss, res.train_loss)


def test_max_steps_reached_with_an_integer_gd_start_is_not_reported_as_divergence():
    """Regression: alpha_rho (NaN when no Jacobian estimate was made) made every stop look like an overflow."""
    res = simulate(FLOW_CFG, SaveAt.log(FLOW_CFG.steps, 10), dynamics="flow", flow={**FLOW, "max_steps": 30})
    assert res.status == "max_steps_reached", res.message
    assert "max_steps=30 integrator steps used" in res.message
