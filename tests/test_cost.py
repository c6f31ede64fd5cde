"""The per-step cost model behind ``engine="auto"`` against what it models.

Two oracles, neither read off the model's coefficients: the engine that was *measured* faster
(``benchmarks/results.json``, section ``auto``, written by ``python benchmarks/bench.py --only
auto``: steady-state steps per CPU-second of both engines on the same problem), and the
operation counts of DESIGN.md §3-4 (a dual step works on N x N matrices whatever d is, a primal
p step on the N x d keys, a primal W,p step on the d x d matrix), checked as scaling laws.
"""

import json
import os

import numpy as np
import pytest

from attnsim import choose_engine, step_costs, train

RESULTS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "results.json")


def _measured():
    with open(RESULTS, encoding="utf-8") as fh:
        rows = json.load(fh)["auto"]["rows"]
    return [pytest.param(r, id=f"N={r['N']},d={r['d']},{r['trainable']}") for r in rows]


@pytest.mark.parametrize("row", _measured())
def test_choose_engine_picks_the_engine_measured_faster(row):
    """Every measured size, each engine's rate as bench.py recorded it (steps per CPU-second)."""
    faster = "dual" if row["dual"] > row["primal"] else "primal"
    assert choose_engine(row["N"], row["d"], 0, 10**6, 200, row["trainable"]) == faster, (
        f"measured {row['dual']:.0f} dual vs {row['primal']:.0f} primal steps per CPU-second")


def _per_step(N, d, trainable, Nt=0):
    """The cost of one more step (set-up and saves cancel)."""
    a, b = step_costs(N, d, Nt, 10**6, 2, trainable), step_costs(N, d, Nt, 2 * 10**6, 2, trainable)
    return {k: (b[k] - a[k]) / 10**6 for k in a}


@pytest.mark.parametrize("trainable", ["p", "Wp", "p+nu", "Wp+nu"])
@pytest.mark.parametrize("N, d", [(40, 50), (160, 2000), (800, 300)])
def test_a_dual_step_costs_order_n_squared_whatever_d_and_the_test_set(trainable, N, d):
    step = _per_step(N, d, trainable)["dual"]
    assert step > 0
    assert _per_step(N, 7 * d, trainable)["dual"] == pytest.approx(step, rel=1e-12)
    assert _per_step(N, d, trainable, Nt=8000)["dual"] == pytest.approx(step, rel=1e-12)
    assert _per_step(2 * N, d, trainable)["dual"] == pytest.approx(4 * step, rel=1e-12)


@pytest.mark.parametrize("trainable", ["p", "p+nu"])
def test_a_primal_p_step_costs_order_n_d(trainable):
    step = _per_step(160, 300, trainable)["primal"]
    assert _per_step(320, 300, trainable)["primal"] == pytest.approx(2 * step, rel=1e-12)
    assert _per_step(160, 600, trainable)["primal"] == pytest.approx(2 * step, rel=1e-12)


def test_a_primal_wp_step_is_dominated_by_the_d_squared_matrix():
    """At fixed N the step grows like d^2 once d >> N, and like N d below (the key sweeps)."""
    for d in (10**4, 10**5):
        assert _per_step(20, 2 * d, "Wp")["primal"] / _per_step(20, d, "Wp")["primal"] == pytest.approx(4, rel=2e-3)
    assert _per_step(2 * 10**5, 4, "Wp")["primal"] / _per_step(10**5, 4, "Wp")["primal"] == pytest.approx(2, rel=1e-3)


def test_long_p_runs_switch_to_dual_where_the_step_counts_cross():
    """p only: a dual step is 2 N^2 flops (z -= lr Gkk c), a primal one 4 N d (scores and gradient
    over the N x d keys); for long runs dual wins exactly when N < 2 d."""
    for d in (50, 300, 2000):
        assert choose_engine(int(1.8 * d), d, 0, 10**9, 2, "p") == "dual"
        assert choose_engine(int(2.2 * d), d, 0, 10**9, 2, "p") == "primal"


def test_very_short_runs_prefer_primal_because_the_dual_set_up_adds_the_gram():
    # One step at d = 4000 with N = 160: both engines form the keys (O(d^2 N)) and read the query
    # with a matvec at each of the 2 saves; the dual's key Gram (O(N^2 d)) costs more than a step.
    assert choose_engine(160, 4000, 0, 1, 2, "p") == "primal"
    setup = [step_costs(160, d, 0, 0, 2, "p")["dual"] for d in (2000, 4000)]
    assert setup[1] / setup[0] == pytest.approx(4, rel=0.05)


def test_auto_records_the_choice():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 8, 3))
    res = train(X, np.where(np.arange(30) % 2 == 0, 1.0, -1.0), np.eye(3), np.zeros(3), np.ones(3),
                lr=0.1, steps=10, trainable="p")
    assert res.engine == "primal"


def test_step_costs_names_an_unknown_w0():
    from attnsim import ConfigError

    with pytest.raises(ConfigError, match=r"w0 must be one of 'dense', 'identity', 'implicit'; got 'sparse'"):
        step_costs(160, 400, 0, 10, 2, "p", w0="sparse")


def test_the_dual_set_up_forms_one_product_fewer_when_the_query_is_read_by_matvec():
    """2 saves, no test set, N = 160: W0^T times the basis (2 N d^2 flops, at a tenth) is replaced
    by a matvec a save; with a test set the product is formed (its scores read it)."""
    d = 4000
    for trainable in ("p", "Wp"):
        few, tested = step_costs(160, d, 0, 0, 2, trainable), step_costs(160, d, 1, 0, 2, trainable)
        gap = tested["dual"] - few["dual"]
        assert gap == pytest.approx(0.1 * 2 * 160 * d * d - 2 * d * d, rel=1e-3)
