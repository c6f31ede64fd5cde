"""The example scripts: structure checked by default, one end-to-end run marked slow."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
PYTEST_FILES = [p for p in SCRIPTS if p.name.startswith("test_")]      # pytest files shown in docs/testing.md
MINE = [p for p in SCRIPTS if p.name != "delayed_generalisation.py"    # that one has its own owner and tests
        and p not in PYTEST_FILES]


@pytest.mark.parametrize("path", MINE, ids=lambda p: p.name)
def test_example_says_what_it_reproduces_and_is_spawn_safe(path):
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and ("Sakamoto & Sato" in doc or "paper" in doc), "docstring must say which paper result"
    assert f"out/examples/{path.stem}" in doc, "docstring must name the file it writes"
    # sweeps run in spawned processes, which re-import the main module: work only under the guard
    guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert guards, "needs if __name__ == '__main__'"
    top_calls = [node for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
    assert not top_calls, "no work at import time"


@pytest.mark.parametrize("path", PYTEST_FILES, ids=lambda p: p.name)
def test_pytest_example_passes_or_skips_cleanly(path, tmp_path):
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and "Sakamoto & Sato" in doc and "importorskip" in path.read_text()
    run = subprocess.run([sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
                          "--hypothesis-seed=0", "-o", "addopts="], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout or " skipped" in run.stdout


def test_there_are_examples_for_every_figure_of_the_issue():
    names = {p.stem for p in SCRIPTS}
    assert {"regimes_table", "attention_dynamics", "attention_large_signal", "learning_curves", "growth_and_frak",
            "phase_diagram", "label_noise_sweep"} <= names


@pytest.mark.slow
def test_attention_dynamics_runs_headless(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "ATTNSIM_OUT": str(tmp_path)}
    subprocess.run([sys.executable, str(EXAMPLES / "attention_dynamics.py"), "--no-progress"], env=env, check=True,
                   cwd=tmp_path, timeout=600)
    png = tmp_path / "attention_dynamics.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
