"""The command line: what a user types, end to end (in-process and as a subprocess)."""

import subprocess
import sys

import numpy as np
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
