"""The per-step cost model behind ``engine="auto"``, on sizes whose answer is clear by hand.

(Whether the cheaper estimate is also the faster run is measured, not asserted: see
``benchmarks/RESULTS.md``, section "auto choice".)
"""

import numpy as np
import pytest

from attnsim import choose_engine, step_costs, train


@pytest.mark.parametrize("N, d, Nt, trainable, expected", [
    # The paper's setting: 160 tokens in d = 2000, 1000 test samples -> dual for both sets.
    (160, 2000, 8000, "Wp", "dual"),
    (160, 2000, 8000, "p", "dual"),
    (160, 8000, 8000, "Wp", "dual"),
    # Tiny d with many tokens: a primal p step is 4 N d = 6.4k flops, a dual one 2 N^2 = 320k.
    (400, 4, 0, "p", "primal"),
    (400, 4, 8000, "p", "primal"),
    # W, p with d = 8: primal 15 d^2 + 4 N d ~ 14k per step against 7 N^2 ~ 1.1M.
    (400, 8, 0, "Wp", "primal"),
    # W, p at N = 160: the primal d x d sweep is latency-bound (a dot product per row), so
    # dual wins already at d = 128 (measured 47.5k against 31.7k steps per CPU-second) ...
    (160, 128, 0, "Wp", "dual"),
    # ... and primal at d = 64 (15 d^2 + 4 N d ~ 100k against 7 N^2 ~ 180k).
    (160, 64, 0, "Wp", "primal"),
    # p alone crosses over near d = N / 2.
    (3200, 800, 0, "p", "primal"),
    (3200, 2400, 0, "p", "dual"),
])
def test_choose_engine_on_hand_checked_sizes(N, d, Nt, trainable, expected):
    assert choose_engine(N, d, Nt, 10**5, 200, trainable) == expected


def test_costs_grow_with_steps_and_dual_step_cost_is_independent_of_d():
    a = step_costs(160, 500, 0, 10**6, 2, "Wp")
    b = step_costs(160, 8000, 0, 10**6, 2, "Wp")
    c = step_costs(160, 8000, 0, 2 * 10**6, 2, "Wp")
    assert c["dual"] - b["dual"] == pytest.approx(b["dual"] - step_costs(160, 8000, 0, 0, 2, "Wp")["dual"])
    # per-step part equal at d = 500 and d = 8000; only the set-up differs
    assert (c["dual"] - b["dual"]) == pytest.approx(step_costs(160, 500, 0, 2 * 10**6, 2, "Wp")["dual"] - a["dual"])
    assert b["primal"] > a["primal"]


def test_very_short_runs_prefer_primal_because_the_dual_set_up_costs_d_squared_n():
    # One step at d = 4000 with N = 160: building Gram matrices costs more than stepping.
    assert choose_engine(160, 4000, 0, 1, 2, "p") == "primal"


def test_auto_records_the_choice():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 8, 3))
    res = train(X, np.where(np.arange(30) % 2 == 0, 1.0, -1.0), np.eye(3), np.zeros(3), np.ones(3),
                lr=0.1, steps=10, trainable="p")
    assert res.engine == "primal"
