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
