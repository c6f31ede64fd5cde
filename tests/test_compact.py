"""Compact Results (issue 17, item 4): a config-driven dual run keeps its final dual state, not the
d x d ``W``; ``Result.W``, ``p`` and ``nu`` are rebuilt on request, to the bit; files stay small
whatever d is; old files, ``train`` results and primal runs keep their arrays."""

import os
import pickle

import numpy as np
import pytest

import attnsim
from attnsim import Config, ResultFileError, SaveAt, load, prepare_run, simulate
from attnsim._io import read_npz, write_npz_atomic

HERE = os.path.dirname(__file__)
SMALL = dict(n_train=6, T=4, n_test=10, steps=60, signal_norm=5.0)


def _bits_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("trainable, dynamics, optimizer", [
    ("Wp", "gd", "gd"), ("p", "gd", "gd"), ("Wp+nu", "gd", "gd"), ("Wp", "gd", "ngd"),
    ("Wp", "flow", "gd"), ("p+nu", "flow", "gd"),
])
def test_rebuilt_params_are_the_bits_the_run_reads_out(trainable, dynamics, optimizer, tmp_path):
    """In memory and after a save/load round trip, W, p and nu are the bits the coordinates'
    own read-out gives at the end of the run (what Result held before it was compact)."""
    cfg = Config(d=40, trainable=trainable, optimizer=optimizer, **SMALL)
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 8), engine="dual", dynamics=dynamics)
    run.warm_up()
    run.run()
    W_ref, p_ref = run.coords.final_params()
    nu_ref = run.coords.final_nu()
    res = run.result(cfg)
    assert res.compact
    path = tmp_path / "r.npz"
    res.save(path)
    with np.load(path) as data:
        assert not {"W", "p", "nu"} & set(data.files)           # the dual state stands in for them
    back = load(path)
    assert back.compact
    for got in (res, back):
        assert _bits_equal(got.p, p_ref) and _bits_equal(got.nu, nu_ref)
        if W_ref is None:
            assert got.W is None
        else:
            assert _bits_equal(got.W, W_ref)


def test_rebuilt_W_is_the_W_of_primal_gd():
    """Independent oracle: the same GD in primal coordinates, where W is the iterate itself."""
    cfg = Config(d=40, **SMALL)
    dual, primal = simulate(cfg, engine="dual"), simulate(cfg, engine="primal")
    assert dual.compact and not primal.compact
    np.testing.assert_allclose(dual.W, primal.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dual.p, primal.p, rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(dual.W - attnsim.init_params(cfg)[0]) > 1e-3       # W moved: not W0 by accident


def test_file_size_does_not_depend_on_d(tmp_path):
    sizes = {}
    for d in (100, 3000):
        res = simulate(Config(d=d, **SMALL), SaveAt.log(SMALL["steps"], 8), engine="dual")
        res.save(tmp_path / f"{d}.npz")
        assert res.W.shape == (d, d)          # on request...
        res.save(tmp_path / f"{d}-read.npz")  # ...and reading it does not put it in the file
        sizes[d] = os.path.getsize(tmp_path / f"{d}.npz")
        assert os.path.getsize(tmp_path / f"{d}-read.npz") == sizes[d]
    # the config's JSON is all that differs; a stored W would add 8 d^2 bytes (72 MB at d = 3000)
    assert abs(sizes[3000] - sizes[100]) < 4096 and sizes[3000] < 100_000


def test_results_of_train_and_of_primal_runs_hold_arrays(tmp_path):
    cfg = Config(d=40, **SMALL)
    data = attnsim.make_data(cfg)
    W0, p0 = attnsim.init_params(cfg)
    res = attnsim.train(data.X, data.y, W0, p0, data.nu, lr=cfg.lr, steps=20, engine="dual")
    assert not res.compact and res.W.shape == (40, 40)
    res.save(tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as stored:
        assert {"W", "p", "nu"} <= set(stored.files)
    assert not simulate(cfg, engine="primal").compact
    run = prepare_run(cfg, engine="dual")     # a Result for another config than the run's: arrays
    run.warm_up()
    run.run()
    assert not run.result(cfg.replace(seed=1)).compact and run.result(cfg).compact


def test_version_1_file_loads_with_its_W():
    """A file written by attnsim before compact Results (format 1, a 12 x 12 W stored as an array)
    loads as it was, and today's compact Result of the same run rebuilds its W. (The same bits on
    the machine that wrote the file; another CPU's BLAS kernels may round the run's Gram products
    differently, hence the tolerance of a few ulps.)"""
    old = load(os.path.join(HERE, "data", "result_v1_dual_wp.npz"))
    assert not old.compact and old.W.shape == (12, 12)
    new = simulate(old.config, SaveAt(old.steps), engine="dual")
    assert new.compact
    for name in ("W", "p", "nu", "scores"):
        np.testing.assert_allclose(getattr(new, name), getattr(old, name), rtol=1e-13, atol=1e-15, err_msg=name)


def test_rebuild_refuses_data_that_differ_from_the_runs(tmp_path):
    res = simulate(Config(d=40, **SMALL), engine="dual")
    res.save(tmp_path / "r.npz")
    arrays, meta = read_npz(tmp_path / "r.npz", "attnsim.Result", 2)
    meta["config"]["seed"] += 1           # as if numpy drew other numbers for this seed
    write_npz_atomic(tmp_path / "other.npz", arrays, meta)
    back = load(tmp_path / "other.npz")
    np.testing.assert_array_equal(back.scores, res.scores)      # the record itself is intact
    with pytest.raises(ResultFileError, match=r"other\.npz: the data and initialisation drawn again from the config "
                                              r"differ from those the run used; W, p and nu cannot be rebuilt"):
        back.W


def test_damaged_state_record_is_refused(tmp_path):
    res = simulate(Config(d=40, **SMALL), engine="dual")
    res.save(tmp_path / "r.npz")
    arrays, meta = read_npz(tmp_path / "r.npz", "attnsim.Result", 2)
    arrays["params/MT"] = arrays["params/MT"][:, :-1]
    write_npz_atomic(tmp_path / "cut.npz", arrays, meta)
    with pytest.raises(ResultFileError, match=r"the stored dual state .* does not fit this attnsim's coordinates"):
        load(tmp_path / "cut.npz").W
    meta["params"]["rebuilt"] = ["W", "q"]
    write_npz_atomic(tmp_path / "names.npz", arrays, meta)
    with pytest.raises(ResultFileError, match=r"names \['W', 'q'\] .* the file is damaged"):
        load(tmp_path / "names.npz")


def test_pickling_and_dropping_W_keep_the_rest_compact(tmp_path):
    """Sweeps return Results from worker processes (pickle) and drop W unless asked to keep it."""
    cfg = Config(d=40, **SMALL)
    run = prepare_run(cfg, engine="dual")
    run.warm_up()
    run.run()
    W_ref, p_ref = run.coords.final_params()
    res = pickle.loads(pickle.dumps(run.result(cfg)))
    assert res.compact and _bits_equal(res.W, W_ref)
    res = pickle.loads(pickle.dumps(run.result(cfg)))
    res.W = None
    res.save(tmp_path / "r.npz")
    back = load(tmp_path / "r.npz")
    assert back.W is None and back.compact and _bits_equal(back.p, p_ref)
    back.p = np.zeros(40)                       # assigned by hand: stored as given
    back.save(tmp_path / "s.npz")
    again = load(tmp_path / "s.npz")
    assert not np.any(again.p) and _bits_equal(again.nu, run.coords.final_nu())


def test_repr_does_not_rebuild():
    res = simulate(Config(d=40, **SMALL), engine="dual")
    assert "compact" in repr(res)
    assert res._raw("W") is attnsim._compact.REBUILD


def test_rebuild_in_another_blas_environment_warns(monkeypatch):
    res = simulate(Config(d=40, **SMALL), engine="dual")
    monkeypatch.setattr(attnsim._checkpoint, "blas_threads", lambda: {"OPENBLAS_NUM_THREADS": "1", "cpu_count": 64})
    with pytest.warns(UserWarning, match=r"rebuilding the final parameters in another BLAS environment "
                      r"\(OPENBLAS_NUM_THREADS=.* then, '1' now; cpu_count=\d+ then, 64 now\): they may differ"):
        assert res.p.shape == (40,)
