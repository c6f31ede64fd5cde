"""Boundary tracing: the bisection's bookkeeping against planted steps, and traced boundaries against
coarse grids of direct runs (the oracle), resume without new runs, and the outcomes that are not errors."""

import csv
import math
from concurrent.futures import Executor, Future

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import attnsim
from attnsim import Config, SaveAt, classify_regime, simulate, trace_boundary
from attnsim import _boundary as boundary
from attnsim._boundary import _Bisection
from attnsim._sweep import sweep

HARMFUL, BENIGN, NOT = "harmful overfitting", "benign overfitting", "not overfitting"

#: Cheap setting with a harmful -> benign change in ||mu|| (GD, 500 steps of 0.4 at d = 200, population
#: test metrics so that no test set is drawn): about 0.5 s a run.
CHEAP = Config(d=200, n_test=0, test_metrics="population", steps=500, lr=0.4)


class CountingExecutor(Executor):
    """Runs submissions inline and counts them: one submission is one simulated run."""

    def __init__(self):
        self.configs = []

    def submit(self, fn, *args, **kwargs):
        self.configs.append(args[0])
        fut = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def direct_regime(config: Config, **kw) -> str:
    """The oracle: ``simulate`` and ``classify_regime``, without the sweep folder or the bisection."""
    return classify_regime(simulate(config, SaveAt.log(config.steps, 5), **kw)).name


# ------------------------------------------------------------------ the bisection alone, on planted steps


def drive(bisection: _Bisection, regime_of, status_of=lambda v: "finished") -> _Bisection:
    """Answer every value the bisection asks for with ``regime_of(value)``, until it settles."""
    while bisection.todo():
        bisection.tell({v: (regime_of(v), status_of(v), "planted") for v in bisection.todo()})
    return bisection


def log_runs(lo, hi, rtol) -> int:
    """Runs a log-scale bisection needs: the two ends, then k halvings of log(hi/lo) until
    exp(log(hi/lo) / 2^k) - 1 <= rtol."""
    return 2 + max(0, math.ceil(math.log2(math.log(hi / lo) / math.log1p(rtol))))


@given(lo=st.floats(1e-3, 1e3), ratio=st.floats(1.5, 1e4), where=st.floats(0.01, 0.99),
       rtol=st.sampled_from([0.3, 0.02, 1e-4]), flipped=st.booleans())
def test_log_bisection_keeps_a_planted_step_inside_and_stops_at_rtol(lo, ratio, where, rtol, flipped):
    hi = lo * ratio
    step = lo * ratio ** where   # the regime changes at `step`: below -> first, at or above -> second
    first, second = (BENIGN, HARMFUL) if flipped else (HARMFUL, BENIGN)
    b = drive(_Bisection("signal_norm", lo, hi, (HARMFUL, BENIGN), "log", rtol, 100, False),
              lambda v: first if v < step else second)
    assert b.status == "converged"
    assert b.lo < step <= b.hi
    assert (b.regime_lo, b.regime_hi) == (first, second)
    assert b.hi / b.lo - 1 <= rtol
    assert b.runs == log_runs(lo, hi, rtol)
    row = b.row()
    assert row["boundary"] == pytest.approx(math.sqrt(b.lo * b.hi), rel=1e-15)
    assert row["width"] == pytest.approx(b.hi / b.lo - 1, rel=1e-12)


@given(lo=st.floats(-50, 50), span=st.floats(0.5, 100), where=st.floats(0.01, 0.99),
       rtol=st.sampled_from([0.1, 1e-3]))
def test_linear_bisection_keeps_a_planted_step_inside_and_stops_at_rtol(lo, span, where, rtol):
    hi = lo + span
    step = lo + where * span
    b = drive(_Bisection("rho", lo, hi, (NOT, BENIGN), "linear", rtol, 200, False),
              lambda v: NOT if v < step else BENIGN)
    assert b.status == "converged"
    assert b.lo < step <= b.hi
    assert (b.hi - b.lo) / max(abs(b.lo), abs(b.hi)) <= rtol
    assert b.row()["boundary"] == pytest.approx((b.lo + b.hi) / 2, rel=1e-15, abs=1e-300)


@given(lo=st.integers(1, 1000), span=st.integers(1, 10_000), data=st.data())
def test_integer_bisection_ends_on_the_two_integers_around_a_planted_step(lo, span, data):
    hi = lo + span
    step = data.draw(st.integers(lo + 1, hi))   # first integer of the second regime
    b = drive(_Bisection("d", lo, hi, (BENIGN, HARMFUL), "log", 1e-9, 100, True),
              lambda v: BENIGN if v < step else HARMFUL)
    assert b.status == "converged"
    assert (b.lo, b.hi) == (step - 1, step)
    assert all(isinstance(v, int) for v, _ in b.evaluations)


def test_bisection_reports_max_runs_with_the_bracket_it_reached():
    b = drive(_Bisection("signal_norm", 1.0, 100.0, (HARMFUL, BENIGN), "log", 1e-6, 5, False),
              lambda v: HARMFUL if v < 7.0 else BENIGN)
    assert b.status == "max_runs" and b.runs == 5
    # three halvings of log(100): the bracket is 100^(1/8) = 1.778 wide around 7
    assert b.hi / b.lo == pytest.approx(100 ** (1 / 8), rel=1e-12) and b.lo < 7.0 <= b.hi
    assert math.isfinite(b.row()["boundary"])


def test_bisection_reports_ends_outside_the_pair_and_a_third_regime_inside():
    b = drive(_Bisection("signal_norm", 1.0, 100.0, (HARMFUL, BENIGN), "log", 0.02, 12, False), lambda v: BENIGN)
    assert (b.status, b.runs, b.regime_lo, b.regime_hi) == ("not bracketed", 2, BENIGN, BENIGN)
    assert math.isnan(b.row()["boundary"])
    # harmful below 5, not overfitting on [5, 20), benign above: the first midpoint (10) meets the third
    b = drive(_Bisection("signal_norm", 1.0, 100.0, (HARMFUL, BENIGN), "log", 0.02, 12, False),
              lambda v: HARMFUL if v < 5 else NOT if v < 20 else BENIGN)
    assert (b.status, b.runs, b.lo, b.hi) == ("third regime", 3, 1.0, 100.0)
    assert "signal_norm=10.0 gives 'not overfitting'" in b.message


def test_bisection_stops_at_a_run_that_did_not_finish():
    b = drive(_Bisection("signal_norm", 1.0, 100.0, (HARMFUL, BENIGN), "log", 0.02, 12, False),
              lambda v: HARMFUL if v < 50 else BENIGN, status_of=lambda v: "diverged" if v == 10.0 else "finished")
    assert (b.status, b.runs, b.lo, b.hi) == ("run stopped", 3, 1.0, 100.0)
    assert "signal_norm=10.0 stopped (diverged)" in b.message


# ------------------------------------------------------------------ traces of real runs


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """Two seeds, harmful -> benign in ||mu|| on [3.78, 12] at 2 %, every run counted."""
    folder = tmp_path_factory.mktemp("trace")
    counter = CountingExecutor()
    table = trace_boundary(folder, CHEAP, "signal_norm", 3.78, 12.0, at={"d": [200]}, seeds=(0, 4), rtol=0.02,
                           n_saves=5, dynamics="gd", executor=counter)
    return folder, table, counter


def test_traced_boundary_lies_inside_the_bracket_of_a_grid_of_direct_runs(traced):
    _, table, _ = traced
    grid = np.geomspace(3.78, 12.0, 6)   # a 26 % grid: the oracle's bracket
    for row in table.rows:
        assert (row["d"], row["status"], row["regime_lo"], row["regime_hi"]) == (200, "converged", HARMFUL, BENIGN)
        regimes = [direct_regime(CHEAP.replace(signal_norm=float(mu), seed=row["seed"])) for mu in grid]
        switch = [k for k in range(len(grid) - 1) if regimes[k] != regimes[k + 1]]
        assert regimes[0] == HARMFUL and regimes[-1] == BENIGN and len(switch) == 1, regimes
        below, above = grid[switch[0]], grid[switch[0] + 1]
        assert below <= row["lo"] < row["boundary"] < row["hi"] <= above, (row, below, above)
        # the final ends, rerun directly, are in the regimes the table says
        assert direct_regime(CHEAP.replace(signal_norm=row["lo"], seed=row["seed"])) == HARMFUL
        assert direct_regime(CHEAP.replace(signal_norm=row["hi"], seed=row["seed"])) == BENIGN


def test_traced_bracket_meets_rtol_in_the_predicted_number_of_runs(traced):
    _, table, counter = traced
    for row in table.rows:
        assert row["hi"] / row["lo"] - 1 <= 0.02
        assert row["width"] == pytest.approx(row["hi"] / row["lo"] - 1, rel=1e-12)
        assert row["runs"] == log_runs(3.78, 12.0, 0.02) == 8
        assert [v for v, _ in row["evaluations"]][:3] == [3.78, 12.0, math.sqrt(3.78) * math.sqrt(12.0)]
    assert len(counter.configs) == sum(row["runs"] for row in table.rows) == 16
    assert len(attnsim.Sweep.open(traced[0])) == 16


def test_rerunning_a_trace_simulates_nothing_and_a_finer_one_only_the_new_levels(traced):
    folder, table, _ = traced
    again = CountingExecutor()
    same = trace_boundary(folder, CHEAP, "signal_norm", 3.78, 12.0, at={"d": [200]}, seeds=(0, 4), rtol=0.02,
                          n_saves=5, dynamics="gd", executor=again)
    assert again.configs == []
    assert same.rows == table.rows
    finer = CountingExecutor()
    deeper = trace_boundary(folder, CHEAP, "signal_norm", 3.78, 12.0, at={"d": [200]}, seeds=(0, 4), rtol=0.005,
                            n_saves=5, dynamics="gd", executor=finer)
    assert len(finer.configs) == 2 * (log_runs(3.78, 12.0, 0.005) - 8) == 4
    for old, new in zip(table.rows, deeper.rows):
        assert new["evaluations"][:8] == old["evaluations"]
        assert old["lo"] <= new["lo"] < new["hi"] <= old["hi"] and new["hi"] / new["lo"] - 1 <= 0.005


def test_trace_classifies_with_the_given_thresholds_from_the_cached_runs(traced):
    folder, _, _ = traced
    counter = CountingExecutor()
    strict = trace_boundary(folder, CHEAP, "signal_norm", 3.78, 12.0, at={"d": [200]}, seeds=(0, 4), n_saves=5,
                            dynamics="gd", classify={"benign_test_acc": 0.9995}, executor=counter)
    assert counter.configs == []   # the ends are in the folder already
    for row in strict.rows:
        test_acc = simulate(CHEAP.replace(signal_norm=12.0, seed=row["seed"]), SaveAt.log(CHEAP.steps, 5)).test_acc[-1]
        assert 0.95 <= test_acc < 0.9995   # benign at the default threshold, harmful at the strict one
        assert (row["status"], row["regime_lo"], row["regime_hi"]) == ("not bracketed", HARMFUL, HARMFUL)


def test_boundary_table_writes_csv_and_frame_with_the_rows(traced, tmp_path):
    _, table, _ = traced
    path = tmp_path / "boundary.csv"
    assert table.to_csv(path) == 2
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["d", "seed", "field", "lo", "hi", "regime_lo", "regime_hi", "width", "boundary", "runs",
                             "status", "message"]
    for got, row in zip(rows, table.rows):
        assert float(got["lo"]) == row["lo"] and float(got["boundary"]) == row["boundary"]
        assert (int(got["seed"]), got["regime_hi"], got["status"]) == (row["seed"], BENIGN, "converged")
    frame = table.to_frame()
    assert frame.shape == (2, 12) and frame["hi"].tolist() == [r["hi"] for r in table.rows]
    (summary,) = table.across_seeds()
    bounds = sorted(r["boundary"] for r in table.rows)
    assert summary["d"] == 200 and summary["seeds"] == summary["found"] == 2
    assert summary["median"] == pytest.approx(math.sqrt(bounds[0] * bounds[1]), rel=1e-14)
    assert (summary["min"], summary["max"]) == (bounds[0], bounds[1])


def test_trace_reports_not_bracketed_and_a_third_regime_as_outcomes(tmp_path):
    # On [1.5, 7.56]: seed 1 ends harmful -> not overfitting; seed 2 ends harmful -> benign with a
    # pocket of not overfitting around 3.4 where the first midpoint falls.
    table = trace_boundary(tmp_path, CHEAP, "signal_norm", 1.5, 7.56, seeds=(1, 2), n_saves=5, dynamics="gd",
                           workers=1)
    one, two = table.rows
    assert one["regime_lo"] == direct_regime(CHEAP.replace(signal_norm=1.5, seed=1)) == HARMFUL
    assert one["regime_hi"] == direct_regime(CHEAP.replace(signal_norm=7.56, seed=1)) == NOT
    assert (one["status"], one["runs"]) == ("not bracketed", 2) and math.isnan(one["boundary"])
    mid = math.sqrt(1.5) * math.sqrt(7.56)
    assert direct_regime(CHEAP.replace(signal_norm=mid, seed=2)) == NOT
    assert (two["status"], two["runs"], two["lo"], two["hi"]) == ("third regime", 3, 1.5, 7.56)
    assert f"signal_norm={mid!r} gives 'not overfitting'" in two["message"]
    assert table.across_seeds()[0]["found"] == 0


def test_trace_walks_the_at_grid_with_seeds_fastest(tmp_path):
    tiny = Config(d=20, n_test=20, steps=5)   # nothing is fitted after 5 steps: not overfitting everywhere
    table = trace_boundary(tmp_path, tiny, "signal_norm", 1.0, 30.0, at={"d": [20, 30], "eta": [0.2]},
                           seeds=(0, 1), n_saves=5, dynamics="gd", workers=1)
    assert [(r["d"], r["eta"], r["seed"]) for r in table.rows] == [(20, 0.2, 0), (20, 0.2, 1), (30, 0.2, 0),
                                                                   (30, 0.2, 1)]
    for r in table.rows:
        cfg = tiny.replace(d=r["d"], seed=r["seed"])
        assert r["regime_lo"] == direct_regime(cfg.replace(signal_norm=1.0)) == NOT
        assert r["regime_hi"] == direct_regime(cfg.replace(signal_norm=30.0)) == NOT
        assert r["status"] == "not bracketed"
    assert table.columns()[:3] == ["d", "eta", "seed"]


def test_trace_reads_only_runs_of_its_own_dynamics_and_flow_options_and_reports_stopped_runs(tmp_path):
    tiny = Config(d=20, n_test=20, steps=300)
    at = {"d": [20, 21, 22]}   # six configs: a point taken from the wrong recording would show in some
    stiff = attnsim.FlowOptions(gd_start=0, max_steps=3)   # too few integrator steps: every run stops
    attnsim.sweep(tmp_path, tiny, grid={"signal_norm": [1.0, 30.0], **at}, n_saves=5, dynamics="flow", flow=stiff,
                  flow_retries=0, workers=1, progress=False)
    counter = CountingExecutor()
    stopped = trace_boundary(tmp_path, tiny, "signal_norm", 1.0, 30.0, at=at, n_saves=5, flow=stiff, flow_retries=0,
                             executor=counter)
    assert counter.configs == []   # the sweep's own runs are the trace's
    for row in stopped.rows:
        assert (row["status"], row["runs"]) == ("run stopped", 2) and "(max_steps_reached)" in row["message"]
    # the same configs with the default flow budget, or with GD, are other points: run anew, and they finish
    for options in (dict(flow=attnsim.FlowOptions(gd_start=0)), dict(dynamics="gd")):
        counter = CountingExecutor()
        table = trace_boundary(tmp_path, tiny, "signal_norm", 1.0, 30.0, at=at, n_saves=5, flow_retries=0,
                               executor=counter, **options)
        assert len(counter.configs) == 6
        assert [(r["status"], r["regime_lo"], r["regime_hi"]) for r in table.rows] == [("not bracketed", NOT, NOT)] * 3
    assert len(attnsim.Sweep.open(tmp_path)) == 18


@pytest.mark.slow
def test_trace_over_a_process_pool_finds_the_rows_of_the_serial_trace(traced, tmp_path):
    _, table, _ = traced
    pooled = trace_boundary(tmp_path, CHEAP, "signal_norm", 3.78, 12.0, at={"d": [200]}, seeds=(0, 4), rtol=0.02,
                            n_saves=5, dynamics="gd", workers=2)
    assert pooled.rows == table.rows
    assert len(attnsim.Sweep.open(tmp_path)) == 16


@pytest.mark.slow
def test_traced_flow_boundary_lies_inside_the_bracket_of_direct_flow_runs(tmp_path):
    base = Config(d=200, n_test=0, test_metrics="population", steps=10**8)   # the flow, at tau = 1e8
    table = trace_boundary(tmp_path, base, "signal_norm", 3.6, 12.0, rtol=0.02, n_saves=5, workers=1)
    (row,) = table.rows
    grid = np.geomspace(3.6, 12.0, 6)
    regimes = [direct_regime(base.replace(signal_norm=float(mu)), dynamics="flow") for mu in grid]
    switch = [k for k in range(len(grid) - 1) if regimes[k] != regimes[k + 1]]
    assert len(switch) == 1 and (regimes[0], regimes[-1]) == (HARMFUL, BENIGN), regimes
    assert row["status"] == "converged" and row["width"] <= 0.02 and row["runs"] == log_runs(3.6, 12.0, 0.02)
    assert grid[switch[0]] <= row["lo"] < row["hi"] <= grid[switch[0] + 1], (row, grid[switch[0]:switch[0] + 2])


# ------------------------------------------------------------------ bad input, before any run


@pytest.mark.parametrize("kwargs, match", [
    (dict(field="signal_nrm"), r"field must be a numeric Config field; got 'signal_nrm'; allowed: \[.*'signal_norm'"),
    (dict(field="noise"), r"field must be a numeric Config field; got 'noise'"),
    (dict(field="seed"), r"other than the seeds; got 'seed'; pass seeds=\[\.\.\.\]"),
    (dict(lo=5.0, hi=5.0), r"lo must be < hi; got lo=5.0, hi=5.0; give the bracket in increasing order"),
    (dict(lo=0.0), r"lo must be > 0 with scale='log'; got lo=0.0; use a positive lo or scale='linear'"),
    (dict(lo=float("nan")), r"lo must be finite; got nan"),
    (dict(field="d", lo=100.5, hi=200), r"lo must be an integer; got 100.5 .*'d' is an integer field"),
    (dict(scale="ln"), r"scale must be one of 'log', 'linear'; got 'ln'"),
    (dict(between=("harmful", "benign")), r"between must be two distinct names of attnsim.REGIMES .*got 'harmful'"),
    (dict(between=(HARMFUL, HARMFUL)), r"got the same regime twice"),
    (dict(between=HARMFUL), r"between must be two distinct names .*; got 'harmful overfitting'"),
    (dict(rtol=0.0), r"rtol must be > 0; got 0.0; the bracket's relative width"),
    (dict(max_runs=1), r"max_runs must be >= 2; got 1; the two ends take 2 runs"),
    (dict(at={"signal_norm": [1.0]}), r"at must not hold the bisected field 'signal_norm'"),
    (dict(at={"seed": [1]}), r"at must not hold 'seed'.*pass seeds=\[\.\.\.\] instead"),
    (dict(at={"dd": [1]}), r"grid field 'dd' is not a Config field"),
    (dict(seeds=()), r"seeds must be a non-empty sequence of integers; got \(\)"),
    (dict(seeds=(1, 1)), r"seeds must be distinct; got \[1, 1\]"),
    (dict(classify={"benign_acc": 0.9}), r"classify options \['benign_acc'\] are not known; allowed: benign_test_acc"),
    (dict(classify={"benign_test_acc": 2.0}), r"classify\['benign_test_acc'\] must be <= 1.0; got 2.0"),
    (dict(field="n_train", lo=1, hi=20, at={"d": [100]}),
     r"lo=1 is not a valid n_train at d=100, seed=0: n_train must be >= 2"),
    (dict(field="eta", lo=0.1, hi=1.0), r"hi=1.0 is not a valid eta at seed=0: eta must be < 1.0"),
    (dict(dynamics="sde"), r"dynamics must be one of 'gd', 'flow'; got 'sde'"),
    (dict(base="balanced"), r"base must be a Config or a non-empty sequence of Configs; got str"),
])
def test_trace_boundary_rejects_bad_input_before_any_run(tmp_path, kwargs, match):
    args = dict(base=Config(d=20, steps=5), field="signal_norm", lo=1.0, hi=30.0)
    args.update(kwargs)
    base, field, lo, hi = (args.pop(k) for k in ("base", "field", "lo", "hi"))
    counter = CountingExecutor()
    with pytest.raises(attnsim.ConfigError, match=match):
        trace_boundary(tmp_path / "f", base, field, lo, hi, executor=counter, **args)
    assert counter.configs == [] and not (tmp_path / "f").exists()


def test_several_bases_trace_in_one_set_of_levels_as_each_traces_alone(tmp_path, monkeypatch):
    """Bases whose other fields differ (here ``lr`` with ``d``), each with its own bracket: the rows
    of the separate traces, in base order, with the differing fields as columns; and the levels
    are shared (every level's runs in one sweep call)."""
    bases = [CHEAP.replace(d=200, lr=0.4), CHEAP.replace(d=240, lr=0.35)]
    ends = [(3.78, 12.0), (3.0, 14.0)]
    levels = []
    monkeypatch.setattr(boundary, "sweep", lambda *a, **kw: levels.append(len(kw["configs"])) or sweep(*a, **kw))
    table = trace_boundary(tmp_path / "both", bases, "signal_norm", [e[0] for e in ends], [e[1] for e in ends],
                           seeds=(0, 4), rtol=0.05, n_saves=5, dynamics="gd", workers=1)
    monkeypatch.undo()
    alone = [trace_boundary(tmp_path / f"alone{i}", b, "signal_norm", lo, hi, seeds=(0, 4), rtol=0.05, n_saves=5,
                            dynamics="gd", workers=1) for i, (b, (lo, hi)) in enumerate(zip(bases, ends))]
    assert table.at == ("d", "lr") and table.columns()[:3] == ["d", "lr", "seed"]
    assert len(table.rows) == 4
    for row, ref, base in zip(table.rows, [r for t in alone for r in t.rows], [b for b in bases for _ in (0, 4)]):
        assert (row["d"], row["lr"]) == (base.d, base.lr)
        assert {k: row[k] for k in ref} == ref
    assert all(r["status"] == "converged" for r in table.rows)
    # shared levels: one sweep call a level, the ends of all four brackets in the first
    assert len(levels) == max(r["runs"] for r in table.rows) - 1 and levels[0] == 8
    assert sum(levels) == sum(r["runs"] for r in table.rows)


@pytest.mark.parametrize("kwargs, match", [
    (dict(base=[]), r"base must be a Config or a non-empty sequence of Configs; got list"),
    (dict(base=[Config(d=20, steps=5), "balanced"]), r"base\[1\] must be a Config; got str"),
    (dict(base=[Config(d=20, steps=5)] * 2), r"base must not repeat a Config; got 2 bases, 1 distinct"),
    (dict(base=[Config(d=20, steps=5), Config(d=30, steps=5)], lo=[1.0]),
     r"lo must be a number or a sequence of one per base; got 1 values for 2 bases"),
    (dict(base=[Config(d=20, steps=5), Config(d=30, steps=5)], hi=[30.0, 0.5]),
     r"lo must be < hi; got lo=1.0, hi=0.5"),
])
def test_trace_boundary_rejects_bad_bases_before_any_run(tmp_path, kwargs, match):
    args = dict(base=Config(d=20, steps=5), lo=1.0, hi=30.0)
    args.update(kwargs)
    counter = CountingExecutor()
    with pytest.raises(attnsim.ConfigError, match=match):
        trace_boundary(tmp_path / "f", args["base"], "signal_norm", args["lo"], args["hi"], executor=counter)
    assert counter.configs == [] and not (tmp_path / "f").exists()
