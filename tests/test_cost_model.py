"""The per-step cost model behind ``engine="auto"``, on sizes whose answer is clear by hand.

(Whether the cheaper estimate is also the faster run is measured, not asserted: see
``benchmarks/RESULTS.md``, section "auto choice".)
"""

import numpy as np
import pytest

from attnsim import choose_engine, step_costs, train


#: The faster engine as *measured* (benchmarks/RESULTS.md, "auto choice": steady-state steps per
#: CPU-second of both engines on the same problem, 10^6 steps, 200 saves, no test set), not as
#: derived from the cost model's coefficients: (N, d, trainable) -> faster, (dual, primal) rates.
MEASURED_FASTER = [
    ((160, 2000, "p"), "dual", (181_560, 7_607)),
    ((160, 2000, "Wp"), "dual", (42_469, 142)),
    ((400, 8, "p"), "primal", (24_074, 151_859)),
    ((160, 64, "p"), "primal", (161_717, 220_721)),
    ((160, 256, "p"), "dual", (208_309, 56_142)),
    ((160, 128, "Wp"), "dual", (47_501, 31_666)),
    ((160, 400, "Wp"), "dual", (42_714, 3_439)),
    ((800, 200, "p"), "primal", (8_513, 13_792)),
]


@pytest.mark.parametrize("size, faster, rates", MEASURED_FASTER, ids=lambda v: str(v))
def test_choose_engine_picks_the_measured_faster_engine(size, faster, rates):
    N, d, trainable = size
    assert faster == ("dual" if rates[0] > rates[1] else "primal")     # the table is self-consistent
    assert choose_engine(N, d, 0, 10**6, 200, trainable) == faster


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
