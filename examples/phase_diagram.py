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
seeds, 4563 runs per horizon (``make examples-full``). Every grid shares one resumable sweep
folder per horizon, so an interrupted run resumes and a finer grid reuses the coarse points.

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
from _common import parse_args, save

D_FULL = list(range(250, 5001, 125))                       # 39 values
MU_FULL = [5.0 + 2.5 * k for k in range(39)]               # 5 .. 100
N_SAVES = 12
#: (label, sweep folder, steps, dynamics); both with population test metrics.
HORIZONS = (("τ = 10³ (GD, the paper's horizon)", "phase_gd_1e3", 1000, "gd"),
            ("τ = 10¹² (flow)", "phase_flow_1e12", 10 ** 12, "flow"))
REGIME_COLOURS = ListedColormap(["#4477aa", "#66bb66", "#cc4444"])   # not overfitting, benign, harmful


def edges(values):
    v = np.asarray(values, dtype=float)
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def maps_of(sw, ds, mus, n_seeds):
    """Seed means of the final figures and the majority regime (index into attnsim.REGIMES) per cell."""
    out = {m: np.full((len(mus), len(ds)), np.nan) for m in ("train_loss", "test_loss", "test_acc", "regime")}
    statuses = Counter()
    for i, mu in enumerate(mus):
        for j, d in enumerate(ds):
            pts = [pt for s in range(n_seeds) for pt in sw.select(d=d, signal_norm=mu, seed=s)[:1]]
            statuses.update(pt.summary.get("path", "gd") + ": " + pt.summary["status"] for pt in pts)
            for m in ("train_loss", "test_loss", "test_acc"):
                vals = [pt.summary[m] for pt in pts if pt.summary[m] is not None]
                out[m][i, j] = np.mean(vals) if vals else np.nan
            votes = Counter(pt.summary["regime"] for pt in pts)
            if votes:
                out["regime"][i, j] = attnsim.REGIMES.index(votes.most_common(1)[0][0])
    return out, statuses


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


def flow_costs(sw):
    """Where the flow points' time goes: a non-negative least-squares fit of each point's wall
    time to ``c0 + c_gd * (exact GD steps of the start) + c_rhs * (right-hand-side evaluations)``."""
    rows = []
    for key, pt in sw.points.items():
        extra = sw.load(key).extra
        rows.append((pt.summary["wall_time"], extra.get("gd_start_steps", 0), extra.get("rhs_evals", 0)))
    wall, gd, rhs = (np.array(c, dtype=float) for c in zip(*rows))
    A = np.column_stack([np.ones_like(wall), gd, rhs])
    coef = nnls(A, wall)[0]
    share = A * coef / wall.sum()
    return {"points": len(wall), "cpu_seconds_in_runs": float(wall.sum()),
            "fit_seconds": {"per_point": coef[0], "per_gd_step": coef[1], "per_rhs_eval": coef[2]},
            "share": {"fixed per point": float(share[:, 0].sum()), "exact GD start": float(share[:, 1].sum()),
                      "flow integration": float(share[:, 2].sum())},
            "gd_start_steps_percentiles_10_50_90": np.percentile(gd, [10, 50, 90]).tolist(),
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
    for row, (label, folder, steps, dynamics) in enumerate(HORIZONS):
        base = attnsim.Config(steps=steps, n_test=0, test_metrics="population")
        t0 = time.perf_counter()
        sw = attnsim.sweep(args.out / "sweeps" / folder, base, grid=grid, seeds=range(n_seeds), n_saves=N_SAVES,
                           dynamics=dynamics, workers=args.workers, progress=args.progress)
        elapsed = time.perf_counter() - t0
        maps, statuses = maps_of(sw, ds, mus, n_seeds)
        counts = Counter(attnsim.REGIMES[int(v)] for v in maps["regime"].ravel() if np.isfinite(v))
        run_seconds = sum(pt.summary["wall_time"] for pt in sw.points.values())
        report["horizons"].append({"horizon": label, "steps": steps, "dynamics": dynamics,
                                   "sweep_seconds_this_call": elapsed, "run_seconds_summed": run_seconds,
                                   "regime_cells": dict(counts), "runs_by_path_and_status": dict(statuses),
                                   "boundaries": boundaries(maps["regime"], ds, mus)})
        print(f"{label}: {sum(counts.values())} cells {dict(counts)}; runs {dict(statuses)}; sweep {elapsed:.0f} s")
        if dynamics == "flow":
            costs = report["horizons"][-1]["costs"] = flow_costs(sw)
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
    print(f"wrote {args.out / (name + '.json')}")


if __name__ == "__main__":
    main()
