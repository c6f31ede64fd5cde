"""Shared plumbing of the example scripts: output folder, headless matplotlib, cached sweeps.

Every script writes into ``out/examples/`` (override with ``--out`` or ``ATTNSIM_OUT``).
Long simulations go through ``attnsim.sweep`` into ``out/examples/sweeps/<name>/``, so a
second run reuses finished points; delete that folder to recompute from scratch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(doc: str, extra=None) -> argparse.Namespace:
    """``--out`` and ``--workers`` (plus whatever ``extra(parser)`` adds)."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("ATTNSIM_OUT", str(ROOT / "out" / "examples")),
                        help="output folder (default out/examples)")
    parser.add_argument("--workers", type=int, default=None, help="local processes for sweeps (default all cores)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def save(fig, args, name: str) -> Path:
    path = args.out / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def at_step(result, step: int) -> int:
    """Save index of ``step`` in ``result.steps`` (which must contain it)."""
    idx = int(np.searchsorted(result.steps, step))
    if idx >= result.steps.size or result.steps[idx] != step:
        raise ValueError(f"step {step} is not a save time of this run")
    return idx


def log_saves_through(steps: int, per_decade: int = 40):
    """Log-spaced save times that include every power of ten up to ``steps`` (a power of ten)."""
    decades = int(round(np.log10(steps)))
    assert 10 ** decades == steps, "steps must be a power of ten"
    return decades * per_decade + 2   # SaveAt.log(steps, n) puts 10^k on its grid for this n


def time_axis(ax, steps, log=True):
    if log:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.3)
        ax.set_xlim(0, int(steps[-1]))
    else:
        ax.set_xlim(0, int(steps[-1]))
    ax.set_xlabel("GD step τ" + (" (log)" if log else ""))
    ax.grid(True, which="major", alpha=0.3)


def random_instance(seed, d, n=6, T=8):
    """Tarzanagh et al.'s random instance: unit-norm tokens, random labels and fixed head, W = I."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, d))
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    return X, rng.choice([-1.0, 1.0], n), rng.standard_normal(d)


def preset_run(args, name: str, steps: int):
    """The preset ``name`` (seed 0) trained for ``steps`` (a power of ten), through the cached
    ``presets`` sweep so that scripts sharing a run compute it once."""
    import attnsim

    sw = attnsim.sweep(args.out / "sweeps" / "presets", configs=[attnsim.preset(name, steps=steps)],
                       n_saves=log_saves_through(steps), workers=1, progress=args.progress)
    (pt,) = sw.select(**attnsim.PRESETS[name], seed=0, steps=steps)
    return sw.load(pt.key)
