"""The flow in batches, sweeps and the CLI, and sweep results as tables (issue 13)."""

import csv
import json
import os

import numpy as np
import pytest

import attnsim
from attnsim import Config, ConfigError, FlowOptions, SaveAt, Sweep, cli, simulate, simulate_many, sweep, train_many
from attnsim._sweep import point_key, recording

FLOW_CFG = Config(d=16, n_train=8, T=4, n_test=0, steps=10 ** 8, test_metrics="population")
FLOW = {"max_steps": 20_000, "gd_start": 200}


def test_gd_point_keys_are_those_of_folders_written_before_the_flow():
    """Old sweep folders keep their keys: the GD recording and the default test_metrics stay out of the hash."""
    save = recording(200, None, False)
    assert save == {"n_saves": 200, "probes": None, "keep_params": False}
    assert point_key(Config(d=24, n_test=10, steps=20), save) == "9500a0b06d1de7a6"   # computed on main


def test_flow_point_key_records_dynamics_and_every_option():
    gd, flow = recording(50, None, False), recording(50, None, False, "flow", FLOW)
    assert flow["dynamics"] == "flow" and flow["flow"] == {**vars(FlowOptions()), **FLOW}
    assert point_key(FLOW_CFG, gd) != point_key(FLOW_CFG, flow)
    assert point_key(FLOW_CFG, flow) != point_key(FLOW_CFG, recording(50, None, False, "flow", {"max_steps": 7}))
    assert point_key(FLOW_CFG, recording(50, None, False, "flow", None)) == \
        point_key(FLOW_CFG, recording(50, None, False, "flow", FlowOptions()))


def test_simulate_many_flow_is_simulate_flow_bit_for_bit():
    cfgs = [FLOW_CFG.replace(seed=s) for s in (0, 1)]
    save = SaveAt.log(FLOW_CFG.steps, 12)
    many = simulate_many(cfgs, save, dynamics="flow", flow=FLOW, workers=1)
    for cfg, res in zip(cfgs, many):
        one = simulate(cfg, save, dynamics="flow", flow=FLOW)
        assert res.extra["dynamics"] == "flow" and res.extra["max_steps"] == FLOW["max_steps"]
        assert res.final_step == 10 ** 8 and res.status == "finished"
        for name in ("train_loss", "test_loss", "test_acc_se", "scores"):
            assert getattr(res, name).tobytes() == getattr(one, name).tobytes(), name


def test_simulate_many_flow_in_worker_processes():
    cfgs = [FLOW_CFG.replace(seed=s, steps=10 ** 6) for s in (0, 1)]
    many = simulate_many(cfgs, dynamics="flow", flow=FLOW, workers=2)
    assert [r.extra["dynamics"] for r in many] == ["flow", "flow"]
    assert [r.extra["gd_start_steps"] for r in many] == [200, 200]


def test_train_many_passes_the_flow_through():
    data = attnsim.make_data(FLOW_CFG)
    W0, p0 = attnsim.init_params(FLOW_CFG)
    prob = dict(X=data.X, y=data.y, W0=W0, p0=p0, nu=data.nu)
    out = train_many([prob, {**prob, "dynamics": "gd", "flow": None, "steps": 30}], lr=FLOW_CFG.lr, steps=10 ** 7,
                     dynamics="flow", flow=FLOW, workers=1)
    assert out[0].extra["dynamics"] == "flow" and out[0].final_step == 10 ** 7
    assert out[1].extra.get("dynamics", "gd") == "gd" and out[1].final_step == 30


@pytest.mark.parametrize("kwargs,match", [
    (dict(dynamics="ode"), r"dynamics must be one of"),
    (dict(dynamics="gd", flow=FLOW), r"flow options apply only with dynamics='flow'"),
    (dict(dynamics="flow", flow={"max_step": 3}), r"flow options \['max_step'\] are not known"),
    (dict(dynamics="flow", flow={"rtol": -1.0}), r"flow.rtol"),
])
def test_batches_and_sweeps_validate_dynamics_before_running(kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        simulate_many([FLOW_CFG], **kwargs)
    with pytest.raises(ConfigError, match=match):
        sweep(tmp_path, FLOW_CFG, **kwargs, progress=False)
    with pytest.raises(ConfigError, match=r"problems\[0\]: " + match):
        train_many([dict(X=np.zeros((2, 2, 2)), y=[1, -1], W0=np.eye(2), p0=np.zeros(2), nu=np.ones(2), **kwargs)],
                   lr=0.1, steps=2)


def test_sweep_flow_records_dynamics_skips_finished_points_and_keeps_gd_apart(tmp_path):
    grid = {"signal_norm": [3.0, 6.0]}
    sw = sweep(tmp_path, FLOW_CFG, grid=grid, n_saves=10, dynamics="flow", flow=FLOW, workers=1, progress=False)
    assert len(sw) == 2
    entries = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert all(e["summary"]["dynamics"] == "flow" and e["save"]["dynamics"] == "flow"
               and e["save"]["flow"]["max_steps"] == FLOW["max_steps"] for e in entries)
    assert all(e["summary"]["test_acc_se"] is not None for e in entries)   # population metrics
    mtimes = {name: os.stat(tmp_path / "points" / name).st_mtime_ns for name in os.listdir(tmp_path / "points")}
    again = sweep(tmp_path, FLOW_CFG, grid=grid, n_saves=10, dynamics="flow", flow=FLOW, workers=1, progress=False)
    assert set(again.points) == set(sw.points)
    assert {name: os.stat(tmp_path / "points" / name).st_mtime_ns for name in mtimes} == mtimes  # nothing rerun
    both = sweep(tmp_path, FLOW_CFG.replace(steps=100), grid=grid, n_saves=10, workers=1, progress=False)
    assert len(both) == 4 and sorted(p.summary["dynamics"] for p in both.points.values()) == ["flow"] * 2 + ["gd"] * 2
    (tmp_path / "index.jsonl").unlink()                        # the files are the truth: re-indexed with dynamics
    repaired = Sweep.open(tmp_path)
    assert sorted(p.recording.get("dynamics", "gd") for p in repaired.points.values()) == ["flow"] * 2 + ["gd"] * 2


def test_cli_sweep_flow_with_population_metrics(tmp_path, capsys):
    folder = tmp_path / "sw"
    argv = ["sweep", str(folder), "--grid", "signal_norm=3,6", "--d", "16", "--n-train", "8", "--T", "4",
            "--steps", "1e8", "--test-metrics", "population", "--dynamics", "flow", "--flow", "max_steps=2e4",
            "--flow", "gd_start=200", "--flow-retries", "0", "--saves", "10", "--workers", "1", "--no-progress"]
    assert cli.main(argv) == 0
    sw = Sweep.open(folder)
    assert len(sw) == 2
    for p in sw.points.values():
        assert p.config.n_test == 0 and p.config.test_metrics == "population"
        assert p.recording["flow"]["max_steps"] == 20_000 and p.recording["flow"]["gd_start"] == 200
        assert p.recording["flow_retries"] == 0
    assert cli.main(argv) == 0 and len(Sweep.open(folder)) == 2      # rerun: nothing new


@pytest.mark.parametrize("extra,match", [
    (["--flow", "max_steps=1e5"], "--flow settings need --dynamics flow"),
    (["--dynamics", "flow", "--flow", "maxsteps=3"], "expected FIELD=VALUE with FIELD one of rtol"),
    (["--dynamics", "flow", "--flow", "max_steps=1.5"], "max_steps must be an integer"),
    (["--dynamics", "flow", "--flow", "correction=maybe"], "correction must be true or false"),
    (["--dynamics", "rk4"], "--dynamics must be one of gd, flow"),
    (["--flow-retries", "2"], "--flow-retries needs --dynamics flow"),
    (["--dynamics", "flow", "--flow-retries", "-1"], "--flow-retries must be an integer >= 0; got '-1'"),
    (["--test-metrics", "population", "--n-test", "10"], "n_test must be 0 with test_metrics='population'"),
])
def test_cli_sweep_rejects_bad_dynamics_flags(tmp_path, capsys, extra, match):
    assert cli.main(["sweep", str(tmp_path / "sw"), "--d", "16", "--steps", "10", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1


# ------------------------------------------------------------------ sweep results as tables

@pytest.fixture(scope="module")
def table_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    base = Config(d=16, n_train=8, T=4, n_test=6, steps=30, eta=0.25)
    sweep(folder, base, grid={"signal_norm": [2.0, 4.0]}, seeds=[0, 1], n_saves=7, workers=1, progress=False)
    sweep(folder, FLOW_CFG.replace(steps=10 ** 6), grid={"signal_norm": [2.0]}, n_saves=5, dynamics="flow",
          flow=FLOW, workers=1, progress=False)
    return Sweep.open(folder)


def test_to_csv_has_one_row_per_point_and_save_time_with_config_columns(table_sweep, tmp_path):
    path = tmp_path / "t.csv"
    n = table_sweep.to_csv(path)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    sizes = [table_sweep.load(k).steps.size for k in table_sweep.points]
    assert n == len(rows) == sum(sizes)
    assert list(rows[0]) == table_sweep.columns() and set(attnsim.field_names()) <= set(rows[0])
    for key in table_sweep.points:                         # every row of a point is its Result, save by save
        res = table_sweep.load(key)
        mine = [r for r in rows if r["key"] == key]
        assert [int(r["step"]) for r in mine] == res.steps.tolist()
        assert [float(r["train_loss"]) for r in mine] == res.train_loss.tolist()        # full precision
        assert [float(r["test_acc_se"]) for r in mine] == pytest.approx(res.test_acc_se.tolist(), nan_ok=True)
        assert {r["seed"] for r in mine} == {str(res.config.seed)} and {r["d"] for r in mine} == {"16"}
        assert {r["dynamics"] for r in mine} == {res.extra.get("dynamics", "gd")}
        assert {r["head_scale"] for r in mine} == {""}                                  # None
    assert sorted({r["dynamics"] for r in rows}) == ["flow", "gd"]


def test_to_frame_equals_the_csv(table_sweep, tmp_path):
    pd = pytest.importorskip("pandas")   # an optional extra (installed by the test extra)
    frame = table_sweep.to_frame()
    table_sweep.to_csv(tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=True)
    assert list(frame.columns) == table_sweep.columns() and len(frame) == len(back)
    for col in ("step", "train_loss", "test_loss", "test_acc_se", "signal_norm", "seed"):
        np.testing.assert_array_equal(frame[col].to_numpy(dtype=float), back[col].to_numpy(dtype=float))
    assert frame.groupby("key").size().to_dict() == {k: table_sweep.load(k).steps.size for k in table_sweep.points}


def test_to_frame_without_pandas_says_how_to_install_it(table_sweep, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"Sweep.to_frame needs pandas: pip install 'attnsim\[pandas\]'.*to_csv"):
        table_sweep.to_frame()


# ------------------------------------------------------------------ no run left behind

def test_a_stiff_flow_point_is_rerun_with_ten_times_the_budget_and_says_so(tmp_path):
    tight = {**FLOW, "max_steps": 40}               # this point needs ~300 integrator steps
    first = simulate(FLOW_CFG, SaveAt.log(FLOW_CFG.steps, 10), dynamics="flow", flow=tight)
    assert first.status == "max_steps_reached"
    sw = sweep(tmp_path, FLOW_CFG, n_saves=10, dynamics="flow", flow=tight, workers=1, progress=False)
    (pt,) = sw.points.values()
    res = sw.load(pt.key)
    assert res.status == "finished" and pt.summary["status"] == "finished"
    assert res.extra["path"] == pt.summary["path"] == "flow rerun: max_steps=400"
    assert res.extra["max_steps"] == 400
    (attempt,) = res.extra["attempts"]
    assert attempt["status"] == "max_steps_reached" and attempt["max_steps"] == 40
    assert attempt["final_step"] == first.final_step < FLOW_CFG.steps
    direct = simulate(FLOW_CFG, SaveAt.log(FLOW_CFG.steps, 10), dynamics="flow", flow={**tight, "max_steps": 400})
    assert res.train_loss.tobytes() == direct.train_loss.tobytes()          # the rerun is that run, exactly


def test_without_retries_a_stiff_point_keeps_its_status(tmp_path):
    sw = sweep(tmp_path, FLOW_CFG, n_saves=10, dynamics="flow", flow={**FLOW, "max_steps": 30}, flow_retries=0,
               workers=1, progress=False)
    (pt,) = sw.points.values()
    assert pt.summary["status"] == "max_steps_reached" and pt.summary["path"] == "flow"
    assert sw.load(pt.key).extra["attempts"] == []
    with pytest.raises(ConfigError, match=r"flow_retries must be an integer >= 0; got -1"):
        sweep(tmp_path, FLOW_CFG, dynamics="flow", flow_retries=-1, progress=False)


def test_max_steps_reached_with_an_integer_gd_start_is_not_reported_as_divergence():
    """Regression: alpha_rho (NaN when no Jacobian estimate was made) made every stop look like an overflow."""
    res = simulate(FLOW_CFG, SaveAt.log(FLOW_CFG.steps, 10), dynamics="flow", flow={**FLOW, "max_steps": 30})
    assert res.status == "max_steps_reached", res.message
    assert "max_steps=30 integrator steps used" in res.message


def test_cli_run_with_population_metrics_needs_no_n_test_and_prints_standard_errors(capsys, tmp_path):
    out = tmp_path / "r.npz"
    argv = ["run", "--d", "16", "--n-train", "8", "--T", "4", "--steps", "50", "--test-metrics", "population",
            "--no-progress", "--out", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "test_acc_se" in text and "test_loss_se" in text
    res = attnsim.load(out)
    assert res.config.n_test == 0 and np.all(np.isfinite(res.test_loss)) and np.all(res.test_loss_se >= 0)
    assert res.W is not None                                   # saved runs keep their final W
