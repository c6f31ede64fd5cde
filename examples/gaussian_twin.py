"""Does the official uniform W0 behave like its Gaussian twin? Regime maps of both, against the spread of W0 draws.

The implicit space (``space="implicit"``) draws W0 exactly only when it is Gaussian (or the
identity); the official code draws its entries uniform on [-1/sqrt(d), 1/sqrt(d)].
``init="official-gaussian"`` is the twin with the same variance, 1/(3d). Before the implicit
space carries the paper's setting to d = 10^8, this measures at d = 250, 1000, 5000 (explicit)
whether the swap changes the regime (``attnsim.classify_regime``) of a run more than drawing
another uniform W0 does: on the same data (seed), it compares

* uniform W0 (``init_seed`` a) against its Gaussian twin (``init_seed`` a): the swap;
* uniform W0 (``init_seed`` a) against uniform W0 (``init_seed`` b): the spread between draws,

cell by cell over ||mu|| and seeds, at the paper's horizon (1000 GD steps) and at tau = 10^12
(the flow), with population test metrics; both horizons from the same runs (a flow run records
at step 1000, inside its exact-GD start, what a 1000-step GD run records: ``_common.both_horizons``). Default: a quick look (d = 250 and 1000, 5 values of
||mu||, 2 seeds; 120 runs). ``--full`` (in ``make examples-full``; 360 flow runs, 1.5 min on the quiet
2-core machine): d = 250, 1000, 5000, 10 values of ||mu|| from 3 to 100, seeds 0-3. Writes
``out/examples/gaussian_twin.png`` (the three regime maps per horizon) and ``gaussian_twin.json``
(cells that differ, by d and horizon); ``--full`` adds ``_full`` to both names.
"""

from __future__ import annotations

import json
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

import attnsim
from _common import FLOW_SAVES, both_horizons, parse_args, save

FULL = dict(ds=(250, 1000, 5000), mus=tuple(float(m) for m in np.round(np.geomspace(3, 100, 10), 2)),
            seeds=(0, 1, 2, 3))
QUICK = dict(ds=(250, 1000), mus=tuple(float(m) for m in np.round(np.geomspace(3, 100, 5), 2)), seeds=(0, 1))
INIT_A, INIT_B = 1000, 2000
#: (label, key of ``both_horizons``'s rows): both from the same flow runs, the first read at step 1000
HORIZONS = (("1000 GD steps", "gd"), ("τ = 10¹² (flow)", "flow"))
#: The flow runs' sweep folder, and that of the GD runs needed only if a flow run's exact-GD start ends early
FOLDER, GD_FOLDER = "twin_1e3_1e12", "twin_gd_1e3"
#: (label, init, init_seed)
VARIANTS = (("uniform W0 (a)", "official", INIT_A), ("Gaussian twin (a)", "official-gaussian", INIT_A),
            ("uniform W0 (b)", "official", INIT_B))
REGIME_COLOURS = ListedColormap(["#4477aa", "#66bb66", "#cc4444"])   # not overfitting, benign, harmful


def main():
    args = parse_args(__doc__, lambda p: p.add_argument("--full", action="store_true",
                                                          help="d = 250, 1000, 5000, 10 values of ||mu||, 4 seeds"))
    grid = FULL if args.full else QUICK
    DS, MUS, SEEDS = grid["ds"], grid["mus"], grid["seeds"]
    suffix = "_full" if args.full else ""
    start = time.time()
    base = attnsim.Config(test_metrics="population", n_test=0)
    out, maps = {}, {}
    configs = [base.replace(d=d, signal_norm=mu, seed=s, init=init, init_seed=init_seed, steps=10 ** 12)
               for d in DS for mu in MUS for s in SEEDS for _, init, init_seed in VARIANTS]
    sw = attnsim.sweep(args.out / "sweeps" / FOLDER, configs=configs, n_saves=FLOW_SAVES, dynamics="flow",
                       workers=args.workers, progress=args.progress)
    points = {}
    for cfg in configs:
        (points[cfg],) = [pt for pt in sw.select(**cfg.to_dict()) if pt.recording.get("n_saves") == FLOW_SAVES]
    rows, _ = both_horizons(sw, list(points.values()), args.out / "sweeps" / GD_FOLDER, args)
    for label, horizon in HORIZONS:
        regime = {(cfg.d, cfg.signal_norm, cfg.seed, cfg.init, cfg.init_seed):
                  attnsim.REGIMES.index(rows[horizon][pt.key]["regime"]) for cfg, pt in points.items()}
        per_d = {}
        for d in DS:
            swap = spread = 0
            for mu in MUS:
                for s in SEEDS:
                    ua = regime[(d, mu, s, "official", INIT_A)]
                    swap += ua != regime[(d, mu, s, "official-gaussian", INIT_A)]
                    spread += ua != regime[(d, mu, s, "official", INIT_B)]
            per_d[str(d)] = {"cells": len(MUS) * len(SEEDS), "differ_uniform_vs_gaussian": swap,
                             "differ_uniform_vs_uniform": spread}
        out[label] = per_d
        maps[label] = {v: np.array([[np.bincount([regime[(d, mu, s, init, iseed)] for s in SEEDS],
                                                 minlength=3).argmax() for d in DS] for mu in MUS])
                       for v, init, iseed in VARIANTS}
        print(label, json.dumps(per_d), flush=True)
    out["wall_seconds"] = round(time.time() - start, 1)
    (args.out / f"gaussian_twin{suffix}.json").write_text(json.dumps(out, indent=1) + "\n")

    fig, axes = plt.subplots(len(HORIZONS), len(VARIANTS), figsize=(10, 6.5), sharex=True, sharey=True)
    for row, (label, _) in enumerate(HORIZONS):
        for col, (variant, _, _) in enumerate(VARIANTS):
            ax = axes[row, col]
            ax.imshow(maps[label][variant], origin="lower", aspect="auto", cmap=REGIME_COLOURS, vmin=0, vmax=2)
            ax.set_xticks(range(len(DS)), [str(d) for d in DS])
            ax.set_yticks(range(len(MUS)), [f"{m:g}" for m in MUS])
            ax.set_title(f"{variant}, {label}", fontsize=9)
            if col == 0:
                ax.set_ylabel("||mu||")
            if row == len(HORIZONS) - 1:
                ax.set_xlabel("d")
    fig.suptitle(f"Majority regime over seeds {SEEDS[0]}-{SEEDS[-1]} (blue: not overfitting, green: benign, red: harmful); "
                 f"cells that differ in gaussian_twin{suffix}.json", fontsize=9)
    fig.tight_layout()
    save(fig, args, f"gaussian_twin{suffix}.png")
    print(f"wall time {out['wall_seconds']} s")


if __name__ == "__main__":
    main()
