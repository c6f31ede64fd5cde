"""The command line: what a user types, end to end (in-process and as a subprocess)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil   # installed with the test extra (dask distributed needs it)
import pytest

from attnsim import load
from attnsim.cli import main

SMALL = ["--d", "40", "--n-test", "20", "--steps", "300", "--no-progress"]


def test_run_writes_a_result_that_matches_its_flags(tmp_path, capsys):
    out = tmp_path / "run.npz"
    assert main(["run", "--preset", "large-signal", *SMALL, "--eta", "0.1", "--lr", "0.01", "--seed", "3",
                 "--saves", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train_acc" in text and "saved" in text
    res = load(out)
    c = res.config
    assert (c.d, c.n_test, c.steps, c.eta, c.lr, c.seed, c.signal_norm) == (40, 20, 300, 0.1, 0.01, 3, 80.0)
    assert res.steps[-1] == 300 and len(res.steps) <= 20


def test_integers_accept_scientific_notation(tmp_path):
    out = tmp_path / "r.npz"
    assert main(["run", *SMALL, "--steps", "1e3", "--saves", "5", "--out", str(out)]) == 0
    assert load(out).config.steps == 1000


def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "run.npz"
    assert main(["run", *SMALL, "--out", str(out)]) == 0
    assert main(["plot", str(out)]) == 0
    png = (tmp_path / "run.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("argv, message", [
    (["run", "--preset", "nope"], "--preset must be one of balanced, large-noise, large-signal, magen; got 'nope'"),
    (["run", "--d", "1"], "d must be >= 2; got 1"),
    (["run", "--steps", "ten"], "expected an integer such as 1000 or 1e6, got 'ten'"),
    (["plot", "missing.npz"], "missing.npz: no such file"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_console_script_runs_as_a_subprocess(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attnsim", "run", "--d", "0"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("attnsim: error: d must be >= 2; got 0; ")
    assert "Traceback" not in proc.stderr


def test_run_the_neighbouring_models_from_the_command_line(tmp_path, capsys):
    """The new Config fields are flags like the others: the magen preset scaled down, and
    normalised GD on the trainable head."""
    out = tmp_path / "magen.npz"
    assert main(["run", "--preset", "magen", "--d", "300", "--n-train", "20", "--n-test", "20", "--steps", "40",
                 "--no-progress", "--out", str(out)]) == 0
    res = load(out)
    assert (res.config.trainable, res.config.w0, res.config.head_init) == ("p+nu", "identity", "zero")
    assert res.W is None and res.nu.shape == (300,) and res.nu_dist[-1] > 0
    out2 = tmp_path / "ngd.npz"
    assert main(["run", *SMALL, "--trainable", "Wp+nu", "--optimizer", "ngd", "--ngd-norm", "block",
                 "--lr", "0.01", "--out", str(out2)]) == 0
    res2 = load(out2)
    assert res2.extra == {"optimizer": "ngd", "ngd_norm": "block"} and res2.config.optimizer == "ngd"
    assert main(["run", *SMALL, "--ngd-norm", "block", "--out", str(tmp_path / "bad.npz")]) == 2
    assert "ngd_norm applies only with optimizer='ngd'" in capsys.readouterr().err


# ------------------------------------------------------------- reruns never destroy work (issue 17.3)

#: A run long enough to be interrupted after a few of the engine's chunks.
RERUN = ["run", "--d", "20", "--n-train", "6", "--T", "4", "--n-test", "10", "--steps", "20000", "--engine", "dual",
         "--saves", "40", "--no-progress"]


def _files(folder):
    """Every file in ``folder`` with its bytes (to show that a refused command touched nothing)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt_after_chunks(monkeypatch, chunks=3):
    """Make the next runs receive SIGINT (Ctrl-C) after ``chunks`` of the engine's chunks; returns
    the original ``Run.run`` to put back."""
    from attnsim._run import Run

    original = Run.run

    def run(self, progress=False, hooks=()):
        seen = []

        def ctrl_c(r):
            seen.append(r.step)
            if len(seen) == chunks:
                os.kill(os.getpid(), signal.SIGINT)   # delivered at the end of this chunk

        return original(self, progress=progress, hooks=[*hooks, ctrl_c])

    monkeypatch.setattr(Run, "run", run)
    return original


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("attnsim: error: "), captured.err
    for needle in needles:
        assert needle in captured.err, captured.err
    return captured


def test_rerun_of_an_interrupted_run_refuses_until_resumed_and_never_overwrites(tmp_path, capsys, monkeypatch):
    """Regression: the same command after Ctrl-C restarted from step 0 and overwrote the checkpoint
    and the partial result. Now it refuses (also with --overwrite) until --resume, which finishes the
    run exactly; after that a rerun replaces the files only with --overwrite."""
    from attnsim import load_checkpoint
    from attnsim._run import Run

    monkeypatch.chdir(tmp_path)
    ref = tmp_path / "ref" / "ref.npz"
    assert main([*RERUN, "--out", str(ref)]) == 0
    argv = [*RERUN, "--out", "long.npz"]
    original = _interrupt_after_chunks(monkeypatch)
    assert main(argv) == 130
    monkeypatch.setattr(Run, "run", original)
    assert "resume with: attnsim run --resume long.checkpoint.npz" in capsys.readouterr().err
    step = load_checkpoint("long.checkpoint.npz").step
    assert 0 < step < 20000 and load("long.npz").status == "interrupted"
    before = _files(tmp_path)
    assert set(before) == {"ref/ref.npz", "long.npz", "long.checkpoint.npz"}

    for extra in ([], ["--overwrite"]):
        assert main(argv + extra) == 2
        out = _one_line_error(capsys, f"'long.checkpoint.npz' holds the checkpoint of an unfinished run (step {step} "
                                      "of 20000); continue it with: attnsim run --resume long.checkpoint.npz")
        assert "attnsim run:" not in out.out        # refused before the header, before any work
        assert _files(tmp_path) == before
    assert main([*RERUN, "--out", "other.npz", "--checkpoint", "long.checkpoint.npz"]) == 2
    _one_line_error(capsys, "holds the checkpoint of an unfinished run")
    assert main([*RERUN, "--out", "long.npz", "--checkpoint", "new.ckpt.npz"]) == 2
    _one_line_error(capsys, "--out 'long.npz' exists (the partial result of an interrupted run); pass --overwrite")
    assert _files(tmp_path) == before

    assert main(["run", "--resume", "long.checkpoint.npz", "--no-progress"]) == 0
    res, expected = load("long.npz"), load(ref)
    assert res.status == "finished" and res.final_step == 20000
    np.testing.assert_array_equal(res.scores, expected.scores)
    np.testing.assert_array_equal(res.train_loss, expected.train_loss)
    assert load_checkpoint("long.checkpoint.npz").step == 20000      # the checkpoint now says: finished
    capsys.readouterr()

    done = _files(tmp_path)
    assert main(argv) == 2
    _one_line_error(capsys, "'long.checkpoint.npz' holds the checkpoint of a finished run; pass --overwrite")
    assert main(["run", "--resume", "long.checkpoint.npz", "--no-progress"]) == 2
    _one_line_error(capsys, "the result file", "long.npz' of the resumed run exists (a finished result); pass "
                            "--overwrite to replace it")
    assert _files(tmp_path) == done
    assert main(argv + ["--overwrite"]) == 0                      # explicitly asked: from step 0 again
    np.testing.assert_array_equal(load("long.npz").scores, expected.scores)


def test_a_finished_result_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "r.npz"
    assert main(["run", *SMALL, "--saves", "5", "--out", str(out)]) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main(["run", *SMALL, "--saves", "5", "--seed", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, f"--out '{out}' exists (a finished result); pass --overwrite to replace it, or choose "
                            "another --out")
    assert out.read_bytes() == first and sorted(p.name for p in tmp_path.iterdir()) == ["r.npz"]
    (tmp_path / "notes.npz").write_text("my notes\n")
    assert main(["run", *SMALL, "--out", str(tmp_path / "notes.npz")]) == 2
    _one_line_error(capsys, "exists (a file that is not an attnsim result)")
    assert main(["run", *SMALL, "--saves", "5", "--seed", "1", "--out", str(out), "--overwrite"]) == 0
    assert load(out).config.seed == 1


def _subprocess_env():
    """The environment of an ``attnsim`` subprocess run in another folder: it must import the
    attnsim under test, wherever it lives."""
    import attnsim

    src = str(Path(attnsim.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def _start_until_checkpointed(argv, cwd, checkpoint, preexec_fn=None):
    """Start ``argv`` in ``cwd`` and return the process once its ``checkpoint`` holds a step > 0."""
    from attnsim import load_checkpoint

    proc = subprocess.Popen(argv, cwd=cwd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec_fn)
    t0 = time.monotonic()
    while not ((cwd / checkpoint).exists() and load_checkpoint(cwd / checkpoint).step > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "no checkpoint after 120 s"
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_rerun_after_ctrl_c_as_a_subprocess(tmp_path):
    """The issue's scenario with real processes: run, Ctrl-C, the same command again (refused, one
    line, exit 2, files untouched), then --resume to the end."""
    argv = [sys.executable, "-m", "attnsim", *RERUN[:-1], "--steps", "2e6", "--no-progress", "--out", "long.npz",
            "--checkpoint", "long.ckpt.npz", "--checkpoint-every", "0.1"]
    env = _subprocess_env()
    proc = _start_until_checkpointed(argv, tmp_path, "long.ckpt.npz")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    before = _files(tmp_path)
    assert set(before) == {"long.npz", "long.ckpt.npz"}
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "attnsim run --resume long.ckpt.npz" in again.stderr
    assert _files(tmp_path) == before
    resumed = subprocess.run([sys.executable, "-m", "attnsim", "run", "--resume", "long.ckpt.npz", "--no-progress"],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert load(tmp_path / "long.npz").final_step == 2_000_000


# ------------------------------------------------------------- every user error: exit 2, one line (17.5)

@pytest.mark.parametrize("argv, message", [
    (["run", "--steps", "-1e3"], "steps must be >= 1; got -1000"),
    (["run", "--lr", "-5e-3"], "lr must be > 0; got -0.005"),
    (["run", "--eta", "-.5"], "eta must be >= 0"),
    (["run", "--seed", "-1_000"], "seed must be >= 0; got -1000"),
])
def test_negative_numbers_reach_the_validator(argv, message, capsys, tmp_path, monkeypatch):
    """Regression: argparse took "-1e3" for a flag ("expected one argument")."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    _one_line_error(capsys, message)
    assert list(tmp_path.iterdir()) == []


def test_plot_creates_missing_folders_like_run_and_refuses_bad_outputs(tmp_path, capsys):
    run = tmp_path / "run.npz"
    assert main(["run", *SMALL, "--saves", "5", "--out", str(run)]) == 0
    result = run.read_bytes()
    assert main(["plot", str(run), "--out", str(tmp_path / "nodir" / "sub" / "x.pdf")]) == 0
    assert (tmp_path / "nodir" / "sub" / "x.pdf").read_bytes()[:5] == b"%PDF-"
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(run)]) == 2
    _one_line_error(capsys, "the figure format comes from the extension")
    assert main(["plot", str(run), "--out", str(tmp_path / "x.txt")]) == 2
    _one_line_error(capsys, ".pdf, .pgf, .png", "; got .txt")
    assert main(["plot", str(run), "--out", str(tmp_path / "run.NPZ")]) == 2   # case-insensitive file systems
    _one_line_error(capsys, "got .npz")
    assert run.read_bytes() == result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nodir", "run.npz"]


def test_plot_of_a_text_file_says_it_is_not_an_attnsim_file(tmp_path, capsys):
    """Regression: numpy's advice about allow_pickle=True was printed."""
    bad = tmp_path / "notes.npz"
    bad.write_text("step,loss\n0,0.69\n")
    assert main(["plot", str(bad)]) == 2
    captured = _one_line_error(capsys, f"{bad}: not an attnsim file (expected an 'attnsim.Result' .npz")
    assert "pickle" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.npz"]


def test_sweep_into_an_unwritable_folder_is_one_line_before_the_header(capsys):
    """Regression: the header was printed and the sweep failed with exit 1. /sys takes no new
    files, even from root (whom os.access lets through everywhere)."""
    assert main(["sweep", "/sys/attnsim-test/sw", "--d", "16", "--steps", "10", "--no-progress"]) == 2
    captured = _one_line_error(capsys, "sweep: cannot write in folder '/sys'")
    assert captured.out == ""
    assert not os.path.exists("/sys/attnsim-test")


def test_run_into_an_unwritable_folder_is_refused_before_any_work(capsys):
    assert main(["run", *SMALL, "--out", "/sys/attnsim-test/r.npz"]) == 2
    assert _one_line_error(capsys, "--out: cannot write in folder '/sys'").out == ""


def test_sweep_into_a_path_below_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["sweep", str(tmp_path / "f" / "sw"), "--d", "16", "--steps", "10", "--no-progress"]) == 2
    assert _one_line_error(capsys, "is a file, not a folder").out == ""


def test_cli_run_with_population_metrics_needs_no_n_test_and_prints_standard_errors(capsys, tmp_path):
    out = tmp_path / "r.npz"
    argv = ["run", "--d", "16", "--n-train", "8", "--T", "4", "--steps", "50", "--test-metrics", "population",
            "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "test_acc_se" in text and "test_loss_se" in text
    res = load(out)
    assert res.config.n_test == 0 and np.all(np.isfinite(res.test_loss)) and np.all(res.test_loss_se >= 0)
    assert res.W is not None                                   # saved runs keep their final W


def test_every_string_field_lists_in_the_help_the_values_that_config_accepts(capsys, tmp_path, monkeypatch):
    """The help of each string flag names a list; a value outside it is refused with that same list."""
    import dataclasses
    import re

    from attnsim import Config
    from attnsim._config import field_type
    from attnsim.cli import _build_parser

    monkeypatch.chdir(tmp_path)
    run = _build_parser()._subparsers._group_actions[0].choices["run"]
    helps = {action.dest: action.help for action in run._actions}
    string_fields = [f.name for f in dataclasses.fields(Config) if field_type(f.name)[0] is str]
    assert len(string_fields) >= 10
    for name in string_fields:
        listed = re.fullmatch(r"one of (.+); default .*", helps[name])
        assert listed, (name, helps[name])
        assert main(["run", "--" + name.replace("_", "-"), "bogus", "--steps", "1"]) == 2
        _one_line_error(capsys, f"{name} must be one of {listed.group(1)}; got 'bogus'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc, line", [
    (OSError(28, "No space left on device", "/full/run.npz"), "attnsim: error: /full/run.npz: No space left on device"),
    (OSError("Timed out trying to connect\nafter 30 s"), "attnsim: error: Timed out trying to connect after 30 s"),
])
def test_an_os_error_is_one_line_with_its_file_when_it_has_one(exc, line, capsys, monkeypatch):
    import attnsim.cli

    def fail(args):
        raise exc

    monkeypatch.setattr(attnsim.cli, "_cmd_presets", fail)
    assert main(["presets"]) == 1
    assert capsys.readouterr().err == line + "\n"


def test_sweep_with_a_scheduler_address_that_is_none_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("distributed")
    assert main(["sweep", str(tmp_path / "sw"), "--steps", "10", "--scheduler", "garbage", "--no-progress"]) == 2
    captured = _one_line_error(capsys, "scheduler='garbage': not an address of a Dask scheduler (missing port number")
    assert captured.out == "" and list(tmp_path.iterdir()) == []      # refused before the header and the folder


@pytest.mark.parametrize("sigint", ["ignored", "default"])
def test_sigterm_stops_a_run_like_ctrl_c_even_when_started_in_the_background(sigint, tmp_path):
    """A shell starts ``attnsim run ... &`` with SIGINT ignored; a batch scheduler (or ``kill``) then
    stops it with SIGTERM. That must write the checkpoint and the partial result and exit 130, and
    --resume must end on the bits of an uninterrupted run (the same command without a signal)."""
    from attnsim import load_checkpoint

    argv = [sys.executable, "-m", "attnsim", *RERUN[:-1], "--steps", "3e6", "--no-progress", "--out", "bg.npz",
            "--checkpoint", "bg.ckpt.npz", "--checkpoint-every", "0.1"]
    env = _subprocess_env()
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint == "ignored" else None
    proc = _start_until_checkpointed(argv, tmp_path, "bg.ckpt.npz", preexec_fn=ignore)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "attnsim run --resume bg.ckpt.npz" in err
    stopped = load_checkpoint(tmp_path / "bg.ckpt.npz").step
    assert 0 < stopped < 3_000_000 and load(tmp_path / "bg.npz").status == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "attnsim", "run", "--resume", "bg.ckpt.npz", "--no-progress"],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([*argv[:-6], "--out", "whole.npz"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    a, b = load(tmp_path / "bg.npz"), load(tmp_path / "whole.npz")
    assert a.final_step == b.final_step == 3_000_000
    for name in ("train_loss", "margins", "frak_cum", "attention"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.p, b.p)


def test_sigterm_stops_a_background_sweep_at_once_keeping_its_finished_points(tmp_path):
    """SIGTERM to a sweep started with ``&`` (SIGINT ignored): exit 130 without waiting for the
    running points (each takes minutes here), every finished point kept, and the same command
    again runs only what is missing."""
    import attnsim

    fast = ["--grid", "signal_norm=5,10", "--seeds", "0,1"]
    argv = [sys.executable, "-m", "attnsim", "sweep", "sw", "--d", "20", "--n-train", "6", "--T", "4", "--n-test", "0",
            "--steps", "1000", "--saves", "5", "--workers", "2", "--no-progress"]
    env = _subprocess_env()
    first = subprocess.run([*argv, *fast], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    slow = [*argv[:-7], "--steps", "1e9", "--saves", "5", "--workers", "2", "--no-progress",
            "--grid", "signal_norm=5,10,20", "--seeds", "0,1"]
    proc = subprocess.Popen(slow, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 120
    while not any("spawn_main" in " ".join(c.cmdline()) for c in psutil.Process(proc.pid).children(recursive=True)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)                                    # the workers are inside their first points
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().endswith("attnsim: interrupted"), err
    assert time.monotonic() - t0 < 30                  # a point of 1e9 steps would take about three hours
    kept = attnsim.Sweep.open(tmp_path / "sw")
    assert len(kept) == 4                              # the first command's points, whole
    again = subprocess.run([*argv, *fast], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "4 finished points" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_result_that_cannot_be_written_leaves_the_finished_state_in_a_checkpoint(checkpoint, tmp_path, capsys,
                                                                                  monkeypatch):
    """--out on a full disk after the run ended: one line naming the file, exit 1, and the final
    state kept in a checkpoint (its own --checkpoint, else OUT.checkpoint.npz) from which --resume
    writes the result elsewhere, equal to the run's."""
    import errno

    from attnsim import Result

    monkeypatch.chdir(tmp_path)
    args = [*RERUN[:-1], "--steps", "3000", "--no-progress"]
    assert main([*args, "--out", "direct.npz"]) == 0
    capsys.readouterr()
    save = Result.save

    def full(self, path, *a, **k):
        if str(path).endswith("full.npz"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, path, *a, **k)

    monkeypatch.setattr(Result, "save", full)
    kept = "own.ckpt.npz" if checkpoint else "full.checkpoint.npz"
    assert main([*args, "--out", "full.npz", *(["--checkpoint", kept] if checkpoint else [])]) == 1
    err = capsys.readouterr().err
    assert err == (f"attnsim: error: full.npz: No space left on device; the run finished and its final state is in "
                   f"the checkpoint {kept}: attnsim run --resume {kept} --out OTHER.npz writes the result\n"), err
    assert main(["run", "--resume", kept, "--out", "rescued.npz", "--no-progress"]) == 0
    a, b = load("rescued.npz"), load("direct.npz")
    assert a.final_step == b.final_step == 3000
    for name in ("train_loss", "test_loss", "margins", "frak_cum", "attention"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.p, b.p)
    np.testing.assert_array_equal(a.W, b.W)


@pytest.mark.parametrize("flags, noted", [
    (["--steps", "1e10"], True),
    (["--steps", "9999999999"], False),
    (["--steps", "1e12", "--dynamics", "flow"], False),
])
def test_a_gd_run_of_days_points_at_the_flow(flags, noted, capsys, tmp_path, monkeypatch):
    import attnsim._experiment

    def stop(*args, **kwargs):
        raise KeyboardInterrupt          # after the header and the note, before any work

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(attnsim._experiment, "prepare_run", stop)
    assert main(["run", "--d", "20", "--n-test", "0", "--no-progress", *flags]) == 130
    err = capsys.readouterr().err
    note = "exact GD steps take a day or more (of the order of 1e5 steps a second); --dynamics flow reaches"
    assert (note in err) == noted, err
    assert not noted or "attnsim: note: 10,000,000,000 exact GD steps" in err


@pytest.mark.parametrize("flag", ["--out", "--checkpoint"])
def test_run_refuses_a_figure_name_for_its_data_files(flag, tmp_path, capsys, monkeypatch):
    """``attnsim run --out fig.png`` wrote the Result's .npz bytes into fig.png."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--d", "20", "--steps", "10", "--n-test", "0", "--no-progress", flag, "fig.PNG"]) == 2
    _one_line_error(capsys, f"{flag} 'fig.PNG' looks like a figure, but attnsim run writes data (.npz) there; use "
                            f"{flag} fig.npz and draw the result with: attnsim plot fig.npz --out fig.PNG")
    assert list(tmp_path.iterdir()) == []
