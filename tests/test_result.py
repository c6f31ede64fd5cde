"""Result files: exact round trip, format checks."""

import dataclasses

import numpy as np
import pytest

import attnsim
from attnsim import Config, ResultFileError, load, simulate


@pytest.fixture(scope="module")
def result():
    return simulate(Config(d=30, n_test=10, steps=50))


def test_save_load_round_trip_is_exact(result, tmp_path):
    path = tmp_path / "r.npz"
    result.save(path)
    back = load(path)
    for f in dataclasses.fields(result):
        a, b = getattr(result, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, f.name
            np.testing.assert_array_equal(a, b, err_msg=f.name)
        else:
            assert a == b, f.name
    assert back.config == result.config


def test_result_file_holds_no_pickled_objects(result, tmp_path):
    path = tmp_path / "r.npz"
    result.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)


def test_wrong_version_is_refused(result, tmp_path, monkeypatch):
    path = tmp_path / "r.npz"
    monkeypatch.setattr(attnsim._result, "FORMAT_VERSION", 99)
    result.save(path)
    monkeypatch.undo()
    with pytest.raises(ResultFileError, match="format_version 99 is not supported"):
        load(path)


def test_truncated_file_is_refused(result, tmp_path):
    path = tmp_path / "r.npz"
    result.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultFileError, match="not a readable attnsim file"):
        load(path)


@pytest.mark.parametrize("trainable", ["p+nu", "Wp+nu"])
def test_save_load_round_trip_keeps_the_trained_head(trainable, tmp_path):
    res = simulate(Config(d=30, n_train=6, T=4, n_test=10, steps=50, trainable=trainable))
    assert res.nu.shape == (30,) and res.nu_dist[-1] > 0
    path = tmp_path / "r.npz"
    res.save(path)
    back = load(path)
    for name in ("nu", "nu_norm", "nu_dist", "nu_align", "nu_probe"):
        a, b = getattr(res, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name
    assert back.config.trainable == trainable


def test_file_written_before_the_head_was_stored_still_loads(result, tmp_path):
    """A version-1 file without the ``nu*`` arrays (as attnsim wrote them before the trainable
    head): it loads, with the head's figures unknown (NaN), ``nu_dist`` 0 and ``nu`` None; and
    it survives another save/load."""
    from attnsim._io import read_npz, write_npz_atomic

    path, old = tmp_path / "new.npz", tmp_path / "old.npz"
    result.save(path)
    arrays, meta = read_npz(path, "attnsim.Result", attnsim._result.FORMAT_VERSION)
    for name in ("nu", "nu_norm", "nu_dist", "nu_align", "nu_probe"):
        del arrays[name]
    meta.update(format_version=1, params=None)
    write_npz_atomic(old, arrays, meta)
    back = load(old)
    assert back.nu is None
    S, k = result.p_probe.shape
    np.testing.assert_array_equal(back.nu_dist, np.zeros(S))
    assert back.nu_probe.shape == (S, k) and np.all(np.isnan(back.nu_probe)) and np.all(np.isnan(back.nu_norm))
    np.testing.assert_array_equal(back.margins, result.margins)
    back.save(tmp_path / "again.npz")
    assert load(tmp_path / "again.npz").nu is None
