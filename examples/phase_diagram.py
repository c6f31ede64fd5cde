"""Phase diagrams over (d, ||mu||) at the paper's horizon and at tau = 10^12, with the SNR boundaries (Fig. 5).

Reproduces Fig. 5 of Sakamoto & Sato (ICML 2025) and carries it to the asymptotic horizon:
final training loss, test loss, test accuracy and the regime (``attnsim.classify_regime``:
not overfitting / benign / harmful) over a grid of token dimension d and signal strength
||mu|| (rho = 0.1, other settings official), averaged over seeds (regime: majority of seeds).
Top row: 1000 exact GD steps, the paper's horizon. Bottom row: tau = 10^12 GD steps of time
with the GD-matched flow (``dynamics="flow"``), where the paper's regimes are asymptotic
statements. Both rows use population test metrics (``test_metrics="population"``: exact
expectations over the test distribution, no test set drawn), so the horizons are compared
with the same, noise-free estimator. Overlaid: SNR = ||mu|| / sqrt(d) = n^{-1/2} (above it:
not overfitting) and SNR = d^{-1/4} (below it: harmful overfitting); benign lies between.

The default is a coarse subset of the paper's grid (7 x 9 points x 2 seeds per horizon, a few
minutes on two cores); ``--grid20`` the 20 x 20 grid of the paper's earlier version; ``--full``
the full 39 x 39 grid of REFERENCE.md (d = 250..5000 step 125, ||mu|| = 5..100 step 2.5) with 3
seeds, 4563 runs (``make examples-full``). Both rows come from the same runs: a flow run starts
with exact GD (the GD kernels themselves) and records at step 1000 what a 1000-step GD run
records, bit for bit (``_common.both_horizons``; a run whose exact-GD start ended before step
1000 would be rerun with ``dynamics="gd"``). Every grid shares one resumable sweep folder, so an
interrupted run resumes and a finer grid reuses the coarse points.

Writes ``out/examples/phase_diagram.png`` (``_20``, ``_full`` variants) and the regime counts
and boundaries to ``phase_diagram*.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from scipy.optimize import nnls

import attnsim
from _common import FLOW_SAVES, GD_HORIZON, both_horizons, parse_args, save

D_FULL = list(range(250, 5001, 125))                       # 39 values
MU_FULL = [5.0 + 2.5 * k for k in range(39)]               # 5 .. 100
#: (label, key of ``both_horizons``'s rows); both with population test metrics.
HORIZONS = (("τ = 10³ (GD, the paper's horizon)", "gd"), ("τ = 10¹² (flow)", "flow"))
#: The sweep folder of the flow runs, and of the GD runs needed only if a flow run's exact-GD start ends early.
FOLDER, GD_FOLDER = "phase_1e3_1e12", "phase_gd_1e3"
REGIME_COLOURS = ListedColormap(["#4477aa", "#66bb66", "#cc4444"])   # not overfitting, benign, harmful


def edges(values):
    v = np.asarray(values, dtype=float)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def maps_of(rows, points, ds, mus, n_seeds):
    """Seed means of the figures and the majority regime (index into attnsim.REGIMES) per cell, from one
    horizon's ``rows`` (``both_horizons``); and how many runs came from which source."""
    out = {m: np.full((len(mus), len(ds)), np.nan) for m in ("train_loss", "test_loss", "test_acc", "regime")}
    sources = Counter()
    for i, mu in enumerate(mus):
        for j, d in enumerate(ds):
            cell = [rows[pt.key] for s in range(n_seeds) for pt in points[(d, mu, s)][:1]]
            sources.update(r["source"] for r in cell)
            for m in ("train_loss", "test_loss", "test_acc"):
                vals = [r[m] for r in cell if r[m] is not None and np.isfinite(r[m])]
                out[m][i, j] = np.mean(vals) if vals else np.nan
            votes = Counter(r["regime"] for r in cell if r["regime"] is not None)   # None: a run that stopped early
            if votes:
                out["regime"][i, j] = attnsim.REGIMES.index(votes.most_common(1)[0][0])
    return out, sources


def boundaries(regime, ds, mus):
    """Per d: the smallest ||mu|| classified not overfitting and the largest classified harmful."""
    rows = []
    for j, d in enumerate(ds):
        col = regime[:, j]
        not_of = [mus[i] for i in range(len(mus)) if col[i] == 0]
        harmful = [mus[i] for i in range(len(mus)) if col[i] == 2]
        rows.append({"d": d, "min_mu_not_overfitting": min(not_of) if not_of else None,
                     "max_mu_harmful": max(harmful) if harmful else None})
    return rows


def flow_costs(runs):
    """Where the flow points' time goes: a non-negative least-squares fit of each point's wall
    time to ``c0 + c_gd * (exact GD steps of the start) + c_rhs * (right-hand-side evaluations)``;
    ``runs`` as returned by ``both_horizons``."""
    wall, gd, rhs = (np.array(c, dtype=float) for c in zip(*runs.values()))
    A = np.column_stack([np.ones_like(wall), gd, rhs])
    coef = nnls(A, wall)[0]
    share = A * coef / wall.sum()
    return {"points": len(wall), "cpu_seconds_in_runs": float(wall.sum()),
            "fit_seconds": {"per_point": coef[0], "per_gd_step": coef[1], "per_rhs_eval": coef[2]},
            "share": {"fixed per point": float(share[:, 0].sum()), "exact GD start": float(share[:, 1].sum()),
                      "flow integration": float(share[:, 2].sum())},
            "gd_start_steps_percentiles_0_10_50_90": np.percentile(gd, [0, 10, 50, 90]).tolist(),
            "rhs_evals_percentiles_10_50_90": np.percentile(rhs, [10, 50, 90]).tolist(),
            "wall_seconds_percentiles_10_50_90": np.percentile(wall, [10, 50, 90]).tolist()}


def main():
    def extra(p):
        p.add_argument("--full", action="store_true", help="the paper's full 39 x 39 grid with 3 seeds")
        p.add_argument("--grid20", action="store_true", help="the 20 x 20 grid of the paper's earlier version")
        p.add_argument("--seeds", type=int, default=None, help="seeds per point (default 2, or 3 with --full)")

    args = parse_args(__doc__, extra)
    if args.full:
        ds, mus, n_seeds = D_FULL, MU_FULL, args.seeds or 3
    elif args.grid20:
        ds, mus, n_seeds = D_FULL[::2], MU_FULL[::2], args.seeds or 2      # d = 250..5000 step 250, ||mu|| step 5
    else:
        ds = D_FULL[::6]                                                  # 250, 1000, ..., 4750
        mus = [MU_FULL[k] for k in (0, 1, 2, 4, 6, 10, 18, 26, 38)]      # 5, 7.5, 10, 15, 20, 30, 50, 70, 100
        n_seeds = args.seeds or 2
    grid = {"d": ds, "signal_norm": mus}
    n = attnsim.Config().n_train
    dd = np.linspace(ds[0], ds[-1], 200)
    fig, axes = plt.subplots(2, 4, figsize=(19, 8.5), constrained_layout=True)
    report = {"grid": {"d": ds, "signal_norm": mus, "seeds": n_seeds}, "horizons": []}
    panels = [("train_loss", "final train loss", "viridis", None), ("test_loss", "population test loss", "viridis",
                                                                      None),
              ("test_acc", "population test accuracy", "magma", (0.5, 1.0)), ("regime", "regime", REGIME_COLOURS,
                                                                               (-0.5, 2.5))]
    base = attnsim.Config(steps=10 ** 12, n_test=0, test_metrics="population")
    t0 = time.perf_counter()
    sw = attnsim.sweep(args.out / "sweeps" / FOLDER, base, grid=grid, seeds=range(n_seeds), n_saves=FLOW_SAVES,
                       dynamics="flow", workers=args.workers, progress=args.progress)
    t1 = time.perf_counter()
    points = {(d, mu, s): [] for d in ds for mu in mus for s in range(n_seeds)}
    for pt in sw.points.values():       # a finer grid's folder holds more points than this grid reads
        cell = (pt.config.d, pt.config.signal_norm, pt.config.seed)
        if cell in points and pt.config.replace(d=base.d, signal_norm=base.signal_norm, seed=base.seed) == base \
                and pt.recording.get("n_saves") == FLOW_SAVES:
            points[cell].append(pt)
    rows, runs = both_horizons(sw, [p for pts in points.values() for p in pts[:1]], args.out / "sweeps" / GD_FOLDER,
                               args)
    report["sweep_seconds_this_call"] = t1 - t0
    report["read_seconds"] = time.perf_counter() - t1
    report["run_seconds_summed"] = sum(r[0] for r in runs.values())
    for row, (label, horizon) in enumerate(HORIZONS):
        maps, sources = maps_of(rows[horizon], points, ds, mus, n_seeds)
        counts = Counter(attnsim.REGIMES[int(v)] for v in maps["regime"].ravel() if np.isfinite(v))
        steps = GD_HORIZON if horizon == "gd" else base.steps
        report["horizons"].append({"horizon": label, "steps": steps, "regime_cells": dict(counts),
                                   "runs_by_source": dict(sources), "boundaries": boundaries(maps["regime"], ds, mus)})
        print(f"{label}: {sum(counts.values())} cells {dict(counts)}; runs {dict(sources)}")
        if horizon == "flow":
            costs = report["horizons"][-1]["costs"] = flow_costs(runs)
            print("  where the flow runs' time goes: " + ", ".join(f"{k} {v:.0%}" for k, v in costs["share"].items())
                  + f" of the {costs['cpu_seconds_in_runs']:.0f} s inside {costs['points']} runs (set-up not included)")
        for col, (m, title, cmap, lims) in enumerate(panels):
            ax = axes[row, col]
            kw = {} if lims is None else dict(vmin=lims[0], vmax=lims[1])
            im = ax.pcolormesh(edges(ds), edges(mus), maps[m], cmap=cmap, shading="flat", **kw)
            if m == "regime":
                bar = fig.colorbar(im, ax=ax, ticks=[0, 1, 2])
                bar.ax.set_yticklabels(["not overfitting", "benign", "harmful"], fontsize=8)
            else:
                fig.colorbar(im, ax=ax)
            ax.plot(dd, np.sqrt(dd / n), color="w", lw=2, label=r"SNR $= n^{-1/2}$")
            ax.plot(dd, dd ** 0.25, color="w", lw=2, ls="--", label=r"SNR $= d^{-1/4}$")
            ax.set_xlim(max(edges(ds)[0], 0), edges(ds)[-1])
            ax.set_ylim(edges(mus)[0], edges(mus)[-1])
            ax.set_xlabel("token dimension d")
            ax.set_ylabel("signal strength ‖μ‖")
            ax.set_title(f"{title}, {label}", fontsize=9)
            if col == 0:
                ax.legend(fontsize=8, loc="upper right", facecolor="0.4", labelcolor="w")
    seeds = f"{n_seeds} seed" + ("s" if n_seeds > 1 else "")
    base = attnsim.Config()
    fig.suptitle(f"Phase diagrams at the paper's horizon and at τ = 10¹² ({len(ds)} × {len(mus)} grid, {seeds}; "
                 f"n={n}, η={base.eta:g}, ρ={base.rho:g}, lr={base.lr:g})", fontsize=11)
    name = "phase_diagram_full" if args.full else "phase_diagram_20" if args.grid20 else "phase_diagram"
    save(fig, args, name + ".png")
    (args.out / (name + ".json")).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print(f"wrote {args.out / (name + '.json')}; sweep {report['sweep_seconds_this_call']:.0f} s, "
          f"reading both horizons {report['read_seconds']:.0f} s")


if __name__ == "__main__":
    main()
