"""Resumable sweeps: grids, point keys, the results folder, executors (threads, processes, Dask), the
flow in sweeps, no run left behind, sweep results as tables, and the CLI."""

import csv
import json
import os
import sys
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest

import attnsim
from attnsim import cli
from attnsim import Config, ConfigError, FlowOptions, SaveAt, Sweep, SweepPoint, grid_configs, simulate, sweep
from attnsim._sweep import parse_grid_arg, point_key, recording
from tools.cases import FLOW, FLOW_CFG

TINY = attnsim.Config(d=24, n_test=10, steps=20)


class CountingExecutor(Executor):
    """Runs submissions inline and remembers them; optionally fails the k-th one."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def submit(self, fn, *args, **kwargs):
        self.calls.append(args[0])
        fut = Future()
        if self.fail_at is not None and len(self.calls) - 1 == self.fail_at:
            fut.set_exception(FloatingPointError("boom"))
        else:
            fut.set_result(fn(*args, **kwargs))
        return fut


# ------------------------------------------------------------------ grids


def test_grid_configs_is_a_cartesian_product_with_seeds_fastest():
    cfgs = grid_configs(TINY, {"d": [10, 20], "eta": [0.0, 0.1, 0.2]}, seeds=[3, 4])
    assert len(cfgs) == 12
    assert [(c.d, c.eta, c.seed) for c in cfgs[:3]] == [(10, 0.0, 3), (10, 0.0, 4), (10, 0.1, 3)]
    assert all(c.steps == 20 for c in cfgs)


def test_grid_configs_names_the_bad_field_and_the_bad_point():
    with pytest.raises(attnsim.ConfigError, match=r"grid field 'dd' is not a Config field"):
        grid_configs(TINY, {"dd": [1]})
    with pytest.raises(attnsim.ConfigError, match=r"grid point \{'d': 1\}: d must be"):
        grid_configs(TINY, {"d": [1]})
    with pytest.raises(attnsim.ConfigError, match="non-empty list"):
        grid_configs(TINY, {"d": []})
    with pytest.raises(attnsim.ConfigError, match="not both"):
        grid_configs(TINY, {"seed": [1]}, seeds=[2])


def test_parse_grid_arg_ranges_match_the_paper_phase_diagram_grid():
    name, ds = parse_grid_arg("d=250:5000:125")
    assert name == "d" and len(ds) == 39 and ds[0] == 250 and ds[-1] == 5000 and all(isinstance(v, int) for v in ds)
    name, mus = parse_grid_arg("signal-norm=5:100:2.5")
    assert name == "signal_norm" and len(mus) == 39 and mus[1] == 7.5 and mus[-1] == 100.0
    assert parse_grid_arg("seed=0:3") == ("seed", [0, 1, 2, 3])
    assert parse_grid_arg("head_scale=none,0.5") == ("head_scale", [None, 0.5])
    assert parse_grid_arg("noise=isotropic,orthogonal") == ("noise", ["isotropic", "orthogonal"])


@pytest.mark.parametrize("text, message", [
    ("d", "must look like FIELD="), ("d=", "must look like FIELD="), ("zz=1", "not a Config field"),
    ("d=1.5", "cannot read '1.5' as int"), ("d=5:1", "HI >= LO"), ("eta=0:1:0", "STEP > 0"),
    ("d=1:x", "cannot read the range"),
])
def test_parse_grid_arg_errors(text, message):
    with pytest.raises(attnsim.ConfigError, match=message):
        parse_grid_arg(text)


def test_point_key_depends_on_config_and_recording_only():
    save = {"n_saves": 200, "probes": None, "keep_params": False}
    assert point_key(TINY, save) == point_key(attnsim.Config(d=24, n_test=10, steps=20), save)
    assert point_key(TINY, save) != point_key(TINY.replace(seed=1), save)
    assert point_key(TINY, save) != point_key(TINY, {**save, "n_saves": 50})


#: Keys written by the single-module ``_sweep.py`` (before the sweep became a package): a folder
#: holds its points under these names, so they must never change.
KNOWN_KEYS = [
    (attnsim.Config(), recording(200, None, False), "079dcf7b0051ba46"),
    (attnsim.Config(d=24, n_test=10, steps=20), recording(5, None, False), "5c2763af12924b6b"),
    (attnsim.Config(d=500, signal_norm=7.5, seed=2), recording(200, "noise", True), "6cb407111cb84720"),
    (attnsim.Config(d=250, steps=10**12, test_metrics="population", n_test=0),
     recording(100, None, False, "flow", None, 1), "203dd7a1ade8f442"),
    (attnsim.Config(optimizer="ngd", eta=0.1), recording(50, None, False), "e594f6afa2e0ac95"),
]


@pytest.mark.parametrize("config, save, key", KNOWN_KEYS, ids=[k for _, _, k in KNOWN_KEYS])
def test_point_keys_of_existing_folders_are_unchanged(config, save, key):
    assert point_key(config, save) == key


def test_sweep_files_its_points_under_their_known_keys(tmp_path):
    config, save, key = KNOWN_KEYS[1]
    sw = sweep(tmp_path, config, n_saves=save["n_saves"], workers=1, progress=False)
    assert list(sw.points) == [key] and os.listdir(tmp_path / "points") == [f"{key}.npz"]


# ------------------------------------------------------------------ the folder


def test_sweep_writes_one_result_per_point_equal_to_simulate(tmp_path):
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=10, workers=1, progress=False)
    assert len(sw) == 2 and len(os.listdir(tmp_path / "points")) == 2
    (pt,) = sw.select(eta=0.2)
    res = sw.load(pt.key)
    direct = attnsim.simulate(TINY.replace(eta=0.2), attnsim.SaveAt.log(20, 10))
    np.testing.assert_array_equal(res.train_loss, direct.train_loss)
    np.testing.assert_array_equal(res.steps, direct.steps)
    assert res.W is None and res.p.shape == (24,)        # W dropped by default
    assert pt.summary["test_acc"] == pytest.approx(direct.test_acc[-1])
    assert pt.summary["train_acc"] == pytest.approx(direct.train_acc[-1])


def test_rerun_skips_finished_points_and_extends_the_grid(tmp_path):
    ex = CountingExecutor()
    sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, seeds=[0, 1], n_saves=5, executor=ex, progress=False)
    assert len(ex.calls) == 4
    ex2 = CountingExecutor()
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.1, 0.2]}, seeds=[0, 1], n_saves=5, executor=ex2, progress=False)
    assert sorted((c.eta, c.seed) for c in ex2.calls) == [(0.1, 0), (0.1, 1)]
    assert len(sw) == 6
    reopened = Sweep.open(tmp_path)
    assert set(reopened.points) == set(sw.points)
    header = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["n_points"] for r in header["requests"]] == [4, 6]


def test_failed_points_are_reported_and_the_others_kept(tmp_path):
    with pytest.raises(RuntimeError, match=r"1 of 3 sweep points failed .*FloatingPointError: boom"):
        sweep(tmp_path, TINY, grid={"eta": [0.0, 0.1, 0.2]}, n_saves=5, executor=CountingExecutor(fail_at=1),
              progress=False)
    assert len(Sweep.open(tmp_path)) == 2
    ex = CountingExecutor()
    sweep(tmp_path, TINY, grid={"eta": [0.0, 0.1, 0.2]}, n_saves=5, executor=ex, progress=False)
    assert len(ex.calls) == 1                              # only the failed point is retried


def test_open_repairs_a_lost_or_torn_index(tmp_path):
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=1, progress=False)
    keys = set(sw.points)
    index = tmp_path / "index.jsonl"
    lines = index.read_text().splitlines()
    index.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])   # torn second line
    assert set(Sweep.open(tmp_path).points) == keys
    index.unlink()
    assert set(Sweep.open(tmp_path).points) == keys
    assert set(Sweep.open(tmp_path, repair=False).points) == keys    # the repair rewrote the index


def test_a_torn_last_index_line_does_not_swallow_the_next_entry(tmp_path):
    sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=1, progress=False)
    index = tmp_path / "index.jsonl"
    first, second = index.read_text().splitlines()
    index.write_text(first + "\n" + second[: len(second) // 2])          # killed mid-line, no newline
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.1, 0.2]}, n_saves=5, workers=1, progress=False)
    lines = index.read_text().splitlines()
    assert lines[:2] == [first, second[: len(second) // 2]]
    entries = [json.loads(line) for line in lines[2:]]                   # every appended line parses
    assert {e["key"] for e in entries} | {json.loads(first)["key"]} == set(sw.points)
    assert set(Sweep.open(tmp_path, repair=False).points) == set(sw.points)


def test_open_refuses_a_folder_without_a_sweep(tmp_path):
    with pytest.raises(attnsim.ResultFileError, match="not an attnsim sweep folder"):
        Sweep.open(tmp_path)


def test_grid_mean_averages_over_seeds_and_marks_missing_cells():
    sw = Sweep("unused")
    for d, mu, seed, acc in [(10, 1.0, 0, 0.5), (10, 1.0, 1, 1.0), (20, 1.0, 0, 0.75), (10, 2.0, 0, None)]:
        cfg = attnsim.Config(d=d, signal_norm=mu, seed=seed)
        sw.points[f"{d}{mu}{seed}"] = SweepPoint(f"{d}{mu}{seed}", cfg, "", {"test_acc": acc})
    xs, ys, mean, count = sw.grid_mean("test_acc", "d", "signal_norm")
    assert xs.tolist() == [10, 20] and ys.tolist() == [1.0, 2.0]
    np.testing.assert_array_equal(count, [[2, 1], [0, 0]])
    np.testing.assert_allclose(mean, [[0.75, 0.75], [np.nan, np.nan]])


def test_thread_pool_executor_gives_the_same_files(tmp_path):
    with ThreadPoolExecutor(2) as ex:
        sw = sweep(tmp_path / "a", TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, executor=ex, progress=False)
    ref = sweep(tmp_path / "b", TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=1, progress=False)
    assert set(sw.points) == set(ref.points)
    for key in ref.points:
        np.testing.assert_array_equal(sw.load(key).margins, ref.load(key).margins)


def test_sweep_option_errors(tmp_path):
    with pytest.raises(attnsim.ConfigError, match="n_saves must be an integer >= 2"):
        sweep(tmp_path, TINY, n_saves=1)
    with pytest.raises(attnsim.ConfigError, match="workers must be an integer >= 1"):
        sweep(tmp_path, TINY, workers=0)
    with pytest.raises(attnsim.ConfigError, match="probes must be None or 'noise'"):
        sweep(tmp_path, TINY, probes="mu")
    with pytest.raises(attnsim.ConfigError, match="at most one of executor= and scheduler="):
        sweep(tmp_path, TINY, executor=CountingExecutor(), scheduler="tcp://127.0.0.1:1")


@pytest.mark.slow
def test_local_process_pool_default(tmp_path):
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=2, progress=False)
    ref = sweep(tmp_path / "ref", TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=1, progress=False)
    for key in ref.points:
        np.testing.assert_array_equal(sw.load(key).margins, ref.load(key).margins)


def test_dask_local_cluster_on_loopback(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, seeds=[0, 1], n_saves=5,
                   scheduler=cluster.scheduler_address, progress=False)
    assert len(sw) == 4
    ref = attnsim.simulate(TINY.replace(eta=0.2, seed=1), attnsim.SaveAt.log(20, 5))
    (pt,) = sw.select(eta=0.2, seed=1)
    np.testing.assert_array_equal(sw.load(pt.key).train_loss, ref.train_loss)


# ------------------------------------------------------------------ CLI


def test_cli_sweep_runs_resumes_and_shows(tmp_path, capsys):
    folder = str(tmp_path / "sw")
    argv = ["sweep", folder, "--d", "24", "--n-test", "10", "--steps", "20", "--saves", "5",
            "--grid", "eta=0,0.2", "--seeds", "0:1", "--workers", "1", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 points (eta[2] x seed[2])" in out and "4 finished points" in out
    assert cli.main(argv) == 0
    assert len(os.listdir(os.path.join(folder, "points"))) == 4
    capsys.readouterr()
    assert cli.main(["sweep", folder, "--show"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["eta", "seed"] and len(lines) == 5
    # --show runs nothing: run flags beside it were silently ignored; now they are refused
    assert cli.main(["sweep", folder, "--show", "--grid", "eta=0.1", "--d", "30"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        "attnsim: error: --show prints every finished point of the folder and runs nothing; drop --grid, --d (to "
        "look at some points, use Sweep.open(folder).select(...) in Python)\n")
    assert len(os.listdir(os.path.join(folder, "points"))) == 4


@pytest.mark.parametrize("extra, message", [
    (["--grid", "zz=1"], "grid field 'zz' is not a Config field"),
    (["--grid", "d=1"], "grid point {'d': 1}"),
    (["--workers", "0"], "--workers must be an integer >= 1"),
    (["--saves", "1"], "--saves must be >= 2"),
    (["--engine", "gpu"], "--engine must be one of"),
    (["--seeds", "0", "--grid", "seed=1"], "not both"),
])
def test_cli_sweep_errors_are_one_line_exit_2(tmp_path, capsys, extra, message):
    assert cli.main(["sweep", str(tmp_path / "x"), "--steps", "5", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnsim: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_sweep_show_of_a_non_sweep_folder(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path), "--show"]) == 2
    assert "not an attnsim sweep folder" in capsys.readouterr().err


# ------------------------------------------------------------------ point keys of flow and GD points


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


# ------------------------------------------------------------------ the flow in sweeps


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
    (["--grid", "eta=0", "--grid", "eta=0.1,0.2"],       # the second used to replace the first, silently
     "--grid eta=... is given twice; give all its values in one --grid, e.g. --grid eta=0.0,0.1,0.2"),
])
def test_cli_sweep_rejects_bad_dynamics_flags(tmp_path, capsys, extra, match):
    assert cli.main(["sweep", str(tmp_path / "sw"), "--d", "16", "--steps", "10", "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not (tmp_path / "sw").exists()


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


@pytest.mark.parametrize("address, rule, reason", [
    ("garbage", "not an address", "missing port number"),
    ("http://x:1", "not an address", "unknown address scheme"),
    ("tcp://h:port", "not an address", "invalid literal"),
    ("tcp://127.0.0.1:1", "cannot connect", "Timed out"),           # after the connect timeout
])
def test_unreachable_scheduler_is_a_config_error_naming_it(address, rule, reason, tmp_path):
    """Bad addresses never reach a Client (one built on them breaks the next Client of the
    process: the last case runs after the others)."""
    pytest.importorskip("distributed")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(attnsim.ConfigError) as info:
        sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, scheduler=address, progress=False)
    message = str(info.value)
    assert message.startswith(f"scheduler={address!r}: {rule}") and reason in message, message
    # an address is refused before the folder is made; an unreachable one, before any point runs
    assert (list(tmp_path.iterdir()) == []) if rule == "not an address" else \
        (list((tmp_path / "points").iterdir()) == [])


def test_a_scheduler_without_dask_installed_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("distributed", "distributed.comm.addressing", "distributed.comm.registry"):
        monkeypatch.setitem(sys.modules, name, None)          # import of it raises ImportError
    with pytest.raises(attnsim.ConfigError, match=r"scheduler= needs Dask distributed: pip install 'attnsim\[dask\]'"):
        sweep(tmp_path, TINY, n_saves=5, scheduler="tcp://127.0.0.1:8786", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_select_and_load_name_what_is_not_there(tmp_path):
    sw = sweep(tmp_path, TINY, grid={"eta": [0.0, 0.2]}, n_saves=5, workers=1, progress=False)
    assert {p.config.eta for p in sw.select(eta=0.2)} == {0.2} and len(sw.select(eta=0.2)) == 1
    with pytest.raises(attnsim.ConfigError, match=r"select\(\) takes Config fields; 'bogus' is not one; the fields "
                                                  r"are \['n_train', "):
        sw.select(bogus=1, eta=0.2)
    with pytest.raises(KeyError, match=r"no finished point 'nokey' in the sweep at .*; its 2 keys are those of "
                                       r"sweep.points"):
        sw.load("nokey")


def test_a_run_that_did_not_reach_its_horizon_has_no_regime_in_the_index(tmp_path):
    """A diverged point's last save is step 0; classified there it read "not overfitting", and a
    regime map counted it so. Its index entry and table rows carry no regime; a finished one does."""
    sw = sweep(tmp_path, TINY, grid={"lr": [TINY.lr, 1e300]}, n_saves=5, workers=1, progress=False)
    (ok,), (bad,) = sw.select(lr=TINY.lr), sw.select(lr=1e300)
    assert bad.summary["status"] == "diverged" and sw.load(bad.key).final_step < TINY.steps
    assert attnsim.classify_regime(sw.load(bad.key)).name == "not overfitting"     # of its first steps
    assert bad.summary["regime"] is None
    assert ok.summary["status"] == "finished" and ok.summary["regime"] in attnsim.REGIMES
    csv_path = tmp_path / "table.csv"
    sw.to_csv(csv_path)
    with open(csv_path, newline="") as fh:
        regimes = {(row["key"], row["regime"]) for row in csv.DictReader(fh)}
    assert regimes == {(bad.key, ""), (ok.key, ok.summary["regime"])}, regimes
    reopened = attnsim.Sweep.open(tmp_path)
    assert reopened.points[bad.key].summary["regime"] is None


def test_a_point_that_cannot_fit_in_memory_stops_the_sweep_before_any_point_runs(tmp_path):
    """Every run checks its memory before drawing anything; a sweep checks all its points first, so a
    grid whose largest d cannot run fails at once instead of after the points before it."""
    from attnsim import MemoryBudgetError

    huge = TINY.replace(d=400_000, n_test=0)                # a 1.2 TB W0
    with pytest.raises(MemoryBudgetError, match=r"^a point of this sweep cannot run, so none was started: the run "
                                                 r"\(d=400000, .*\) needs about .* of memory"):
        sweep(tmp_path / "new", configs=[TINY, huge], n_saves=5, workers=1, progress=False)
    assert not (tmp_path / "new").exists()
    done = sweep(tmp_path / "old", configs=[TINY], n_saves=5, workers=1, progress=False)
    before = sorted(p.name for p in (tmp_path / "old").rglob("*"))
    with pytest.raises(MemoryBudgetError, match=r"^a point of this sweep cannot run"):
        sweep(tmp_path / "old", configs=[TINY, huge], n_saves=5, workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "old").rglob("*")) == before and len(done) == 1
