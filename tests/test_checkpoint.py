"""Checkpoints: a resumed run is bit-for-bit the uninterrupted run (issue #5, "Long runs").

Every array of the Result is compared by its bytes; only ``wall_time`` and
``compile_time`` may differ. Covered: both engines x the four trainable sets, resume
in-process, via ``attnsim run --resume``, after Ctrl-C, and after SIGKILL.
"""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import attnsim
from attnsim import Config, ResultFileError, SaveAt
from attnsim import cli
from attnsim import CheckpointHook, load_checkpoint, prepare_run, restore, resume, save_checkpoint
from attnsim._checkpoint import fingerprint
from attnsim._io import read_npz, write_npz_atomic

from tools.coords_grid import ENGINES, TRAINABLE
CASES = [(e, t) for e in ENGINES for t in TRAINABLE]
ATTNSIM = [sys.executable, "-m", "attnsim"]


def small_config(trainable, steps=3000, **kw):
    return Config(d=20, n_train=6, T=4, n_test=10, steps=steps, trainable=trainable, **kw)


def assert_identical(a, b, context=""):
    """Every array of two Results equal bit for bit; status, message, engine and config equal."""
    for f in dataclasses.fields(attnsim.Result):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f"{context}{f.name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
            assert x.tobytes() == y.tobytes(), f"{context}{f.name} differs"
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{context}{f.name} differs"
    assert (a.status, a.message, a.engine, a.config) == (b.status, b.message, b.engine, b.config), context


def advance_to(run, step):
    while run.step < step and not run.done:
        run.advance(rate=97.0, max_seconds=1.0)  # chunks of 97 steps: not aligned with save times


@pytest.fixture(scope="module")
def references():
    """Uninterrupted runs, one per (engine, trainable)."""
    out = {}
    for engine, trainable in CASES:
        cfg = small_config(trainable)
        out[engine, trainable] = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    return out


@pytest.mark.parametrize("engine,trainable", CASES)
def test_resume_in_process_is_bit_identical(references, tmp_path, engine, trainable):
    cfg = small_config(trainable)
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    advance_to(run, 1234)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, run, cfg)
    resumed = resume(path)
    assert_identical(resumed, references[engine, trainable], f"{engine}/{trainable}: ")


@pytest.mark.parametrize("engine,trainable", CASES)
def test_chunk_boundaries_do_not_change_the_bits(references, engine, trainable, rng):
    """The engine's chunk sizes follow measured speed; any split of the steps must give the same GD."""
    cfg = small_config(trainable)
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    while not run.done:
        run.advance(rate=float(rng.integers(1, 400)), max_seconds=1.0)
    assert_identical(run.result(cfg), references[engine, trainable], f"{engine}/{trainable}: ")


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_a_run_that_reads_the_query_by_matvec_resumes_bit_identically(tmp_path, trainable):
    """No test set and 3 saves for N = 48 tokens: the dual set-up reads ``W^T p`` by a matvec a save
    (``query_by_matvec``); the restored run must choose the same way, from its saved save steps."""
    cfg = Config(d=20, n_train=12, T=4, n_test=0, steps=3000, trainable=trainable)
    saves = SaveAt([0, 1500, 3000])
    ref = attnsim.simulate(cfg, saves, engine="dual")
    run = prepare_run(cfg, saves, engine="dual")
    assert run.coords.query_matvec
    advance_to(run, 1234)
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    assert restore(load_checkpoint(tmp_path / "ck.npz")).coords.query_matvec
    assert_identical(resume(tmp_path / "ck.npz"), ref, f"{trainable}: ")


NGD_CASES = [("dual", "Wp+nu", "block"), ("dual", "Wp", "joint"), ("dual", "p", "block"), ("primal", "p+nu", "joint"),
             ("primal", "Wp", "block")]


@pytest.mark.parametrize("engine,trainable,ngd_norm", NGD_CASES)
def test_normalised_gd_resumes_and_splits_bit_identically(tmp_path, rng, engine, trainable, ngd_norm):
    """optimizer="ngd": the pending block's step sizes (``lrb``) are part of the checkpointed state."""
    cfg = small_config(trainable, optimizer="ngd", ngd_norm=ngd_norm, lr=2e-3)
    ref = attnsim.simulate(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    assert ref.success and ref.extra == {"optimizer": "ngd", "ngd_norm": ngd_norm}
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    advance_to(run, 1237)
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    assert_identical(resume(tmp_path / "ck.npz"), ref, f"{engine}/{trainable}/{ngd_norm} resumed: ")
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine=engine)
    while not run.done:
        run.advance(rate=float(rng.integers(1, 400)), max_seconds=1.0)
    assert_identical(run.result(cfg), ref, f"{engine}/{trainable}/{ngd_norm} chunks: ")


def test_resume_at_every_kind_of_position(references, tmp_path):
    """Checkpoints at step 0, just before/after a save time and at the very end all resume exactly."""
    cfg = small_config("Wp")
    for stop in (0, 1, 2, 999, 1000, 3000):
        run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine="dual")
        advance_to(run, stop)
        if stop == 3000:
            run.run()
        path = tmp_path / f"ck{stop}.npz"
        save_checkpoint(path, run, cfg)
        assert_identical(resume(path), references["dual", "Wp"], f"stop {stop}: ")


def test_a_checkpoint_of_a_checkpoint_resumes_exactly(references, tmp_path):
    cfg = small_config("p")
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 40), engine="primal")
    advance_to(run, 500)
    save_checkpoint(tmp_path / "a.npz", run, cfg)
    run2 = restore(tmp_path / "a.npz")
    advance_to(run2, 2100)
    save_checkpoint(tmp_path / "b.npz", run2, cfg)
    assert_identical(resume(tmp_path / "b.npz"), references["primal", "p"])


def test_hook_writes_when_the_interval_has_elapsed(tmp_path):
    cfg = small_config("p", steps=2000)
    now = [0.0]
    hook = CheckpointHook(tmp_path / "ck.npz", cfg, 10.0, clock=lambda: now[0])
    run = prepare_run(cfg, SaveAt.log(cfg.steps, 20), engine="dual")
    run.advance()
    hook(run)
    assert hook.written == 0 and not (tmp_path / "ck.npz").exists()
    now[0] = 10.0
    hook(run)
    assert hook.written == 1 and load_checkpoint(tmp_path / "ck.npz").step == run.step
    hook(run)  # the interval restarts after each write
    assert hook.written == 1


def test_checkpoint_records_config_engine_and_fingerprint(tmp_path):
    cfg = small_config("Wp", steps=100)
    run = prepare_run(cfg, SaveAt.log(100, 10), engine="auto")
    save_checkpoint(tmp_path / "ck.npz", run, cfg, extra={"note": "x"})
    ck = load_checkpoint(tmp_path / "ck.npz")
    assert ck.config == cfg and ck.engine == run.coords.engine and ck.backend == "numba"
    assert ck.fingerprint == fingerprint(run) and len(ck.fingerprint) == 64
    assert ck.extra == {"note": "x"} and ck.step == 0 and ck.total_steps == 100
    arrays, meta = read_npz(tmp_path / "ck.npz", "attnsim.Checkpoint", 1)
    assert meta["versions"]["numpy"] == np.__version__


def test_resume_against_different_data_is_refused(tmp_path):
    """A checkpoint whose data cannot be regenerated bit for bit must not be continued."""
    cfg = small_config("p", steps=200)
    run = prepare_run(cfg, SaveAt.log(200, 10), engine="dual")
    advance_to(run, 50)
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    arrays, meta = read_npz(tmp_path / "ck.npz", "attnsim.Checkpoint", 1)
    meta["config"]["seed"] = 1  # same shapes, other data
    write_npz_atomic(tmp_path / "other.npz", arrays, meta)
    with pytest.raises(ResultFileError, match=r"data regenerated from the checkpoint's config differ"):
        restore(tmp_path / "other.npz")


def test_checkpoint_with_inconsistent_counters_is_refused(tmp_path):
    cfg = small_config("p", steps=200)
    run = prepare_run(cfg, SaveAt.log(200, 10), engine="dual")
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    arrays, meta = read_npz(tmp_path / "ck.npz", "attnsim.Checkpoint", 1)
    meta["step"] = 7
    write_npz_atomic(tmp_path / "bad.npz", arrays, meta)
    with pytest.raises(ResultFileError, match=r"counters .* contradict its metadata"):
        load_checkpoint(tmp_path / "bad.npz")
    arrays2, meta2 = read_npz(tmp_path / "ck.npz", "attnsim.Checkpoint", 1)
    del arrays2["frak_sum"]
    write_npz_atomic(tmp_path / "bad2.npz", arrays2, meta2)
    with pytest.raises(ResultFileError, match=r"lacks the array 'frak_sum'"):
        load_checkpoint(tmp_path / "bad2.npz")
    arrays3, meta3 = read_npz(tmp_path / "ck.npz", "attnsim.Checkpoint", 1)
    arrays3["state/a"] = np.zeros(3)
    write_npz_atomic(tmp_path / "bad3.npz", arrays3, meta3)
    with pytest.raises(ResultFileError, match=r"state array 'state/a' is float64\(3,\), expected float64"):
        restore(tmp_path / "bad3.npz")


def test_result_file_is_not_a_checkpoint(tmp_path, references):
    references["dual", "p"].save(tmp_path / "r.npz")
    with pytest.raises(ResultFileError, match=r"holds 'attnsim.Result', expected 'attnsim.Checkpoint'"):
        load_checkpoint(tmp_path / "r.npz")


def test_diverged_checkpoint_resumes_to_the_same_diverged_result(tmp_path):
    cfg = small_config("Wp", steps=100, lr=1e200)
    ref = attnsim.simulate(cfg, SaveAt.log(100, 10), engine="primal")
    assert ref.status == "diverged"
    run = prepare_run(cfg, SaveAt.log(100, 10), engine="primal")
    run.run()
    save_checkpoint(tmp_path / "ck.npz", run, cfg)
    assert_identical(resume(tmp_path / "ck.npz"), ref)


# ---------------------------------------------------------------------- CLI

def cli_args(engine, trainable, steps):
    return ["run", "--d", "20", "--n-train", "6", "--T", "4", "--n-test", "10", "--steps", str(steps),
            "--engine", engine, "--trainable", trainable, "--saves", "40", "--no-progress"]


@pytest.mark.parametrize("engine,trainable", CASES)
def test_cli_resume_is_bit_identical(tmp_path, capsys, engine, trainable):
    """`attnsim run --checkpoint` then `--resume`: the Result equals the uninterrupted one."""
    steps = 4000
    assert cli.main(cli_args(engine, trainable, steps) + ["--out", str(tmp_path / "ref.npz")]) == 0
    cfg = small_config(trainable, steps=steps)
    run = prepare_run(cfg, SaveAt.log(steps, 40), engine=engine)
    advance_to(run, 1777)
    save_checkpoint(tmp_path / "ck.npz", run, cfg, extra={"out": str(tmp_path / "res.npz")})
    assert cli.main(["run", "--resume", str(tmp_path / "ck.npz"), "--no-progress"]) == 0
    assert_identical(attnsim.load(tmp_path / "res.npz"), attnsim.load(tmp_path / "ref.npz"))
    capsys.readouterr()


def test_cli_resume_refuses_configuration_flags(tmp_path, capsys):
    cfg = small_config("p", steps=100)
    save_checkpoint(tmp_path / "ck.npz", prepare_run(cfg, SaveAt.log(100, 10)), cfg)
    code = cli.main(["run", "--resume", str(tmp_path / "ck.npz"), "--steps", "5", "--engine", "dual"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--resume takes the configuration, save times and engine from the checkpoint; drop --engine, --steps" in err


def test_cli_checkpoint_every_needs_a_checkpoint_file(capsys):
    assert cli.main(cli_args("dual", "p", 100) + ["--checkpoint-every", "5"]) == 2
    assert "--checkpoint-every needs --checkpoint FILE" in capsys.readouterr().err


def test_cli_out_and_checkpoint_must_differ(tmp_path, capsys):
    f = str(tmp_path / "x.npz")
    assert cli.main(cli_args("dual", "p", 100) + ["--out", f, "--checkpoint", f]) == 2
    assert "--out and the checkpoint must be different files" in capsys.readouterr().err
    assert not os.path.exists(f)


def test_sigint_in_process_writes_checkpoint_and_partial_result(tmp_path, capsys, monkeypatch):
    """Ctrl-C arrives mid-run (sent by a hook): exit 130, one line saying how to resume, exact resume."""
    steps = 20000
    out, ck = tmp_path / "out.npz", tmp_path / "ck.npz"
    assert cli.main(cli_args("dual", "Wp", steps) + ["--out", str(tmp_path / "ref.npz")]) == 0
    capsys.readouterr()

    from attnsim import CheckpointHook as Hook
    calls = []
    original = Hook.__call__

    def call(self, run):
        calls.append(run.step)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at the end of this chunk
        original(self, run)

    monkeypatch.setattr(Hook, "__call__", call)
    code = cli.main(cli_args("dual", "Wp", steps) + ["--out", str(out), "--checkpoint", str(ck)])
    err = capsys.readouterr().err
    assert code == 130
    assert err.count("\n") == 1 and err.startswith("attnsim: interrupted at step ")
    assert f"resume with: attnsim run --resume {ck}" in err
    partial = attnsim.load(out)
    assert partial.status == "interrupted" and partial.message.startswith("interrupted at step")
    assert load_checkpoint(ck).step < steps
    monkeypatch.setattr(Hook, "__call__", original)
    assert cli.main(["run", "--resume", str(ck), "--no-progress"]) == 0
    assert_identical(attnsim.load(out), attnsim.load(tmp_path / "ref.npz"))
    capsys.readouterr()


def _wait_for(path, proc, timeout):
    """Until ``path`` holds a checkpoint past step 0 (files appear atomically, complete)."""
    t0 = time.monotonic()
    while not (os.path.exists(path) and load_checkpoint(path).step > 0):
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"no checkpoint after {timeout} s")
        time.sleep(0.05)


SUBPROCESS_CASES = [
    ("dual", "Wp", signal.SIGKILL),
    pytest.param("dual", "Wp", signal.SIGINT, marks=pytest.mark.slow),  # in-process twin above is fast
    pytest.param("primal", "p", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("dual", "Wp+nu", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("primal", "Wp", signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param("dual", "p", signal.SIGKILL, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("engine,trainable,sig", SUBPROCESS_CASES)
def test_subprocess_killed_then_resumed_is_bit_identical(tmp_path, engine, trainable, sig):
    """`attnsim run --checkpoint` in a subprocess, killed (-9, or Ctrl-C) after a checkpoint past
    step 0; `attnsim run --resume` then gives exactly the uninterrupted Result."""
    # Long enough (about 2 s of stepping on an idle core) that several chunks, and so several
    # checkpoints, pass before the run could finish: on a quiet machine 2e5 steps took 0.2 s and
    # the run ended before the first checkpoint.
    steps = 2_000_000 if (engine, trainable) == ("dual", "Wp") else 10_000_000
    base = cli_args(engine, trainable, steps)
    ck = tmp_path / "ck.npz"
    proc = subprocess.Popen(ATTNSIM + base + ["--out", str(tmp_path / "res.npz"), "--checkpoint", str(ck),
                                              "--checkpoint-every", "0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ck, proc, timeout=60)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    if sig == signal.SIGKILL:
        assert proc.returncode == -9
        assert not (tmp_path / "res.npz").exists()
    else:
        assert proc.returncode == 130, err
        assert err.strip().count("\n") == 0 and "resume with: attnsim run --resume" in err
        assert attnsim.load(tmp_path / "res.npz").status == "interrupted"
    assert 0 < load_checkpoint(ck).step < steps, "the kill must land mid-run"
    res = subprocess.run(ATTNSIM + ["run", "--resume", str(ck), "--no-progress"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    cfg = small_config(trainable, steps=steps)
    reference = attnsim.simulate(cfg, SaveAt.log(steps, 40), engine=engine)  # uninterrupted, in this process
    assert_identical(attnsim.load(tmp_path / "res.npz"), reference)
