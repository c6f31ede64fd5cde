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
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1; got {args.workers}")
    args.out = Path(args.out)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:       # a file of that name, or a folder it may not write to
        parser.error(f"--out {str(args.out)!r} cannot be the output folder ({exc.strerror}); give a folder")
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


#: The paper's horizon, read off the flow runs (``both_horizons``).
GD_HORIZON = 1000
#: Save times of a flow run to 10^12 that include every power of ten, 10^3 among them.
FLOW_SAVES = log_saves_through(10 ** 12, per_decade=1)
#: Save times of a GD run to ``GD_HORIZON`` run only when a flow run's exact-GD start ended before it.
GD_SAVES = 12


def both_horizons(sw, points, fallback, args):
    """The figures of each flow point (run to 10^12 with ``FLOW_SAVES``) at the paper's horizon and at the end.

    A flow run starts with exact GD, the GD kernels themselves, and records at step 10^3 what a
    1000-step ``dynamics="gd"`` run records, bit for bit, as long as its start is still running
    then (``extra["gd_start_steps"] >= 1000``; the phase diagram's runs switch at 2,000 steps or
    later). So one run gives both horizons and both share one set-up. A point whose start ended
    earlier is run again with ``dynamics="gd"`` in the sweep folder ``fallback``.

    Returns ``(rows, runs)``: ``rows[horizon][key]`` with horizon ``"gd"`` or ``"flow"`` holds
    ``train_loss``, ``test_loss``, ``test_acc``, ``regime`` (a name of ``attnsim.REGIMES``) and
    ``source``; ``runs[key]`` is ``(wall_time, gd_start_steps, rhs_evals)`` of the flow run.
    """
    import attnsim

    figures = ("train_loss", "test_loss", "test_acc")
    rows, runs, redo = {"gd": {}, "flow": {}}, {}, {}
    for pt in points:
        res = sw.load(pt.key)
        start = res.extra.get("gd_start_steps", 0)
        runs[pt.key] = (pt.summary["wall_time"], start, res.extra.get("rhs_evals", 0))
        rows["flow"][pt.key] = {**{m: pt.summary[m] for m in figures}, "regime": pt.summary["regime"],
                                "source": f"{pt.summary.get('path', 'flow')}: {pt.summary['status']}"}
        if start < GD_HORIZON:
            redo[pt.key] = pt.config.replace(steps=GD_HORIZON)
            continue
        k = at_step(res, GD_HORIZON)
        rows["gd"][pt.key] = {**{m: float(getattr(res, m)[k]) for m in figures},
                              "regime": attnsim.classify_regime(res, at=k).name, "source": "the flow run's exact-GD start"}
    if redo:
        gd = attnsim.sweep(fallback, configs=list(redo.values()), n_saves=GD_SAVES, workers=args.workers,
                           progress=args.progress)
        for key, cfg in redo.items():
            (pt,) = [q for q in gd.select(**cfg.to_dict()) if q.recording.get("n_saves") == GD_SAVES]
            rows["gd"][key] = {**{m: pt.summary[m] for m in figures}, "regime": pt.summary["regime"],
                               "source": f"a separate GD run: {pt.summary['status']}"}
    return rows, runs


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
