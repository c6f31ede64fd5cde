"""Result and checkpoint files (``_io``, the one writer and reader) are never lost or silently wrong;
the runs they hold are deterministic.

- files are read with ``allow_pickle=False``; a truncated, corrupted, wrong-kind or
  wrong-version file raises ``ResultFileError`` (CLI: one line, exit 2), never a crash and
  never arrays that differ from what was written;
- writes are atomic: an interrupted write leaves the previous file intact;
- the same config and seeds give identical arrays in-process and in another process.
"""

import dataclasses
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

import attnsim
from attnsim import Config, ResultFileError, SaveAt
from attnsim import CheckpointWarning, load_checkpoint, prepare_run, restore, save_checkpoint
from attnsim._checkpoint import CHECKPOINT_VERSION
from attnsim._io import read_npz, write_npz_atomic
from attnsim._result import FORMAT_VERSION
from attnsim.cli import main

CFG = Config(d=20, n_train=6, T=4, n_test=10, steps=500)


@pytest.fixture(scope="module")
def result():
    return attnsim.simulate(CFG, SaveAt.log(CFG.steps, 20), engine="dual")


@pytest.fixture(scope="module")
def files(result, tmp_path_factory):
    """A Result file and a checkpoint file, written once."""
    folder = tmp_path_factory.mktemp("files")
    result.save(folder / "r.npz")
    run = prepare_run(CFG, SaveAt.log(CFG.steps, 20), engine="dual")
    while run.step < 200:
        run.advance()
    save_checkpoint(folder / "ck.npz", run, CFG)
    return {"result": folder / "r.npz", "checkpoint": folder / "ck.npz"}


def arrays_of(obj):
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if isinstance(getattr(obj, f.name), np.ndarray)}


def same_bytes(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                        and a[k].tobytes() == b[k].tobytes() for k in a)


def _checkpoint_arrays(path):
    ck = load_checkpoint(path)
    return {**ck.state, "probes": ck.probes}


LOADERS = {"result": lambda p: arrays_of(attnsim.load(p)), "checkpoint": _checkpoint_arrays}


# ---------------------------------------------------------------- damaged files


@pytest.mark.parametrize("kind", ["result", "checkpoint"])
def test_truncated_file_is_refused_at_every_length(files, kind, tmp_path):
    data = files[kind].read_bytes()
    cuts = sorted(set(np.linspace(0, len(data) - 1, 60).astype(int)) | {0, 1, 22, len(data) - 22, len(data) - 1})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(ResultFileError, match=r"not a readable attnsim file, truncated or corrupted"):
            LOADERS[kind](path)


@pytest.mark.parametrize("kind", ["result", "checkpoint"])
def test_flipped_bytes_raise_or_leave_the_arrays_intact(files, kind, tmp_path, rng):
    """A flipped byte anywhere either raises ResultFileError or (in bytes zip ignores, like
    timestamps) changes nothing: never silently wrong arrays, never another exception."""
    data = files[kind].read_bytes()
    reference = LOADERS[kind](files[kind])
    positions = np.unique(np.concatenate([np.arange(0, 80), np.arange(len(data) - 200, len(data)),
                                          rng.integers(0, len(data), 100)]))
    refused = 0
    for pos in positions:
        damaged = bytearray(data)
        damaged[pos] ^= 1 << int(rng.integers(8))
        path = tmp_path / "flip.npz"
        path.write_bytes(bytes(damaged))
        try:
            got = LOADERS[kind](path)
        except ResultFileError:
            refused += 1
            continue
        assert same_bytes(got, reference), f"byte {pos} flipped, load succeeded with different arrays"
    assert refused > 0.5 * positions.size  # the rest: timestamps, version-made-by and other unchecked fields


def test_flip_inside_array_data_is_caught_by_the_crc(files, tmp_path):
    """The payload of an array (far from any header) is covered by zip's CRC-32."""
    data = bytearray(files["result"].read_bytes())
    with zipfile.ZipFile(files["result"]) as zf:
        info = zf.getinfo("attention.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[start] ^= 0x10
    path = tmp_path / "payload.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ResultFileError, match=r"truncated or corrupted \(BadZipFile: Bad CRC-32"):
        attnsim.load(path)


VERSIONS = {"attnsim.Result": FORMAT_VERSION, "attnsim.Checkpoint": CHECKPOINT_VERSION}


def _rewrite(src, dst, kind, change):
    arrays, meta = read_npz(src, kind, version=VERSIONS[kind])
    change(arrays, meta)
    write_npz_atomic(dst, arrays, meta)


@pytest.mark.parametrize("kind, tag", [("result", "attnsim.Result"), ("checkpoint", "attnsim.Checkpoint")])
def test_other_format_version_is_refused(files, kind, tag, tmp_path):
    _rewrite(files[kind], tmp_path / "v.npz", tag, lambda a, m: m.update(format_version=VERSIONS[tag] + 1))
    readable = "1 and 2" if kind == "result" else "1"
    with pytest.raises(ResultFileError, match=rf"format_version {VERSIONS[tag] + 1} is not supported \(this "
                                              rf"attnsim reads version {readable}\); use the attnsim version that wrote it"):
        LOADERS[kind](tmp_path / "v.npz")


def test_wrong_kind_missing_meta_and_bad_meta_are_refused(files, tmp_path):
    with pytest.raises(ResultFileError, match=r"holds 'attnsim.Checkpoint', expected 'attnsim.Result'"):
        attnsim.load(files["checkpoint"])
    np.savez(tmp_path / "plain.npz", x=np.arange(3))
    with pytest.raises(ResultFileError, match=r"not an attnsim file \(no __meta__ record\)"):
        attnsim.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "badjson.npz", __meta__=np.array("{not json"))
    with pytest.raises(ResultFileError, match=r"corrupted __meta__ record"):
        attnsim.load(tmp_path / "badjson.npz")
    np.savez(tmp_path / "list.npz", __meta__=np.array("[1, 2]"))
    with pytest.raises(ResultFileError, match=r"corrupted __meta__ record \(not a JSON object\)"):
        attnsim.load(tmp_path / "list.npz")
    _rewrite(files["result"], tmp_path / "nocfg.npz", "attnsim.Result", lambda a, m: m.pop("status"))
    with pytest.raises(ResultFileError, match=r"metadata is incomplete or invalid \(KeyError: 'status'\)"):
        attnsim.load(tmp_path / "nocfg.npz")
    _rewrite(files["result"], tmp_path / "badcfg.npz", "attnsim.Result",
             lambda a, m: m["config"].update(lr=-1.0))
    with pytest.raises(ResultFileError, match=r"metadata is incomplete or invalid \(ConfigError: lr must be > 0"):
        attnsim.load(tmp_path / "badcfg.npz")
    _rewrite(files["result"], tmp_path / "short.npz", "attnsim.Result",
             lambda a, m: a.update(margins=a["margins"][:-1]))
    with pytest.raises(ResultFileError, match=r"array 'margins' has shape \(\d+, 6\), expected leading \d+"):
        attnsim.load(tmp_path / "short.npz")
    _rewrite(files["result"], tmp_path / "miss.npz", "attnsim.Result", lambda a, m: a.pop("y"))
    with pytest.raises(ResultFileError, match=r"missing arrays \['y'\]"):
        attnsim.load(tmp_path / "miss.npz")


def test_pickled_arrays_are_never_loaded(files, tmp_path):
    arrays, meta = read_npz(files["result"], "attnsim.Result", FORMAT_VERSION)
    with open(tmp_path / "obj.npz", "wb") as fh:
        np.savez(fh, __meta__=np.array(json.dumps(meta)), **{**arrays, "W": np.array([object()], dtype=object)})
    with pytest.raises(ResultFileError, match=r"Object arrays cannot be loaded when allow_pickle=False"):
        attnsim.load(tmp_path / "obj.npz")


def test_empty_file_folder_and_missing_file(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ResultFileError, match=r"not a readable attnsim file"):
        attnsim.load(tmp_path / "empty.npz")
    with pytest.raises(ResultFileError, match=r"is a folder, expected an .npz file"):
        attnsim.load(tmp_path)
    with pytest.raises(ResultFileError, match=r"no such file"):
        load_checkpoint(tmp_path / "nope.npz")


@pytest.mark.parametrize("argv", [["plot", "{bad}"], ["run", "--resume", "{bad}"]])
def test_cli_damaged_file_is_one_line_exit_2(files, tmp_path, capsys, argv, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = files["checkpoint" if "--resume" in argv else "result"].read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: len(data) // 3])
    assert main([a.format(bad=bad) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"attnsim: error: {bad}: not a readable attnsim file")
    assert sorted(os.listdir(tmp_path)) == ["bad.npz"]


# ---------------------------------------------------------------- atomic writes


def test_interrupted_write_leaves_the_previous_file(files, tmp_path, monkeypatch):
    """A failure (or Ctrl-C) mid-write keeps the old file and leaves no temporary behind."""
    path = tmp_path / "r.npz"
    path.write_bytes(files["result"].read_bytes())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        write_npz_atomic(path, {"x": np.zeros(3)}, {"kind": "attnsim.Result"})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.npz"]


def test_written_files_have_ordinary_permissions(files, tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(files["result"]).st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- determinism


def test_same_config_same_arrays_in_process(result):
    again = attnsim.simulate(CFG, SaveAt.log(CFG.steps, 20), engine="dual")
    assert same_bytes(arrays_of(again), arrays_of(result))


@pytest.mark.parametrize("engine,trainable", [pytest.param("primal", "Wp", marks=pytest.mark.slow), ("dual", "p")])
def test_same_config_same_arrays_across_processes(tmp_path, engine, trainable):
    """`attnsim run --out` in a fresh process gives the bytes simulate() gives here."""
    cfg = CFG.replace(trainable=trainable)
    mine = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 30), engine=engine)
    proc = subprocess.run([sys.executable, "-m", "attnsim", "run", "--d", "20", "--n-train", "6", "--T", "4",
                           "--n-test", "10", "--steps", "500", "--trainable", trainable, "--engine", engine,
                           "--saves", "30", "--no-progress", "--out", str(tmp_path / "o.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    theirs = attnsim.load(tmp_path / "o.npz")
    assert same_bytes(arrays_of(theirs), arrays_of(mine))
    assert theirs.config == cfg


def test_seed_changes_the_data_and_init_seed_only_the_initialisation():
    a = attnsim.make_data(CFG)
    b = attnsim.make_data(CFG.replace(seed=1))
    assert not np.array_equal(a.X, b.X)
    c = attnsim.make_data(CFG.replace(init_seed=5))
    assert np.array_equal(a.X, c.X)
    assert not np.array_equal(attnsim.init_params(CFG)[0], attnsim.init_params(CFG.replace(init_seed=5))[0])


def test_resume_in_another_thread_environment_warns(files, monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    with pytest.warns(CheckpointWarning, match=r"written in another environment \(OPENBLAS_NUM_THREADS=None then, "
                                               r"'7' now\)"):
        restore(files["checkpoint"])


def test_resume_in_the_same_environment_is_silent(files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        restore(files["checkpoint"])


def test_a_full_disk_names_the_file_keeps_the_old_one_and_leaves_no_temporary(tmp_path, monkeypatch, capsys):
    """A write into the temporary file fails without a file name (ENOSPC from inside ``np.savez``):
    the error names the file it was for, the old file stays, no ``.attnsim-*.tmp`` is left, and
    the CLI says it in one line (the state's checkpoint fails on the same disk)."""
    import errno

    target = tmp_path / "run.npz"
    write_npz_atomic(target, {"a": np.arange(3.0)}, {"v": 1})
    before = target.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError) as info:
        write_npz_atomic(target, {"a": np.arange(4.0)}, {"v": 2})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
    assert main(["run", "--d", "20", "--n-train", "6", "--T", "4", "--n-test", "0", "--steps", "10", "--no-progress",
                 "--out", str(tmp_path / "new.npz")]) == 1
    err = capsys.readouterr().err      # the checkpoint that would keep the final state fails too
    assert err == (f"attnsim: error: {tmp_path / 'new.npz'}: No space left on device; the run's final state could "
                   f"not be kept either ({tmp_path / 'new.checkpoint.npz'}: No space left on device); free some "
                   "space and run again\n"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]
