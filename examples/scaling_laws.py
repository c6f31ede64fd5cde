"""The regime boundaries along d and n, in the implicit space: do they follow the theorem's d^{1/4} and sqrt(d/n)?

Sakamoto & Sato's regimes are asymptotic in d: harmful overfitting when SNR << d^{-1/4}
(||mu|| << sigma d^{1/4}), not overfitting when SNR^2 >> 1/n (||mu|| >> sigma sqrt(d/n)), benign
in between. An explicit simulation spans d = 250 ... 5000, where neither boundary can be told
from a constant. Here d runs from 10^2 to 10^8 (``space="implicit"``: the exact joint law of
every inner product the dual engine reads, drawn without a d-vector; DESIGN.md §11; d = 10^2 is
below the virtual basis's size and runs explicitly), and each boundary is found by bisection in
log ||mu|| (``attnsim.trace_boundary``, O(log) flow runs per point instead of a grid column).

Scaling of the step and the horizon with d: the memorisation speed of a token grows like
``||W0 x||^2 ~ d/3``, so the step is ``lr = 10 / d`` (``lr d = 10``: the paper's 5e-3 at
d = 2000) and every d sees the same memorisation clock per step; every run is read at the
same horizon ``tau = 10^12`` GD steps (the GD-matched flow), and the converged check re-reads
both ends of every final bracket at ``tau = 10^14``: a cell where a regime changes between the
two horizons is reported. W0 is the official initialisation's Gaussian twin
(``init="official-gaussian"``, entries N(0, 1/(3d))); test metrics are population ones.

Default: a quick subset (d = 10^2, 10^4, 10^6, 10^8; one seed; a few minutes). ``--full`` (in
``make examples-full``): every decade 10^2 ... 10^8 and the half decades, seeds 0-2, the
not-overfitting boundary for n in {10, 20, 40, 80} at d = 10^4 and 10^6, and the horizon check.
Writes ``out/examples/scaling_laws[_full].png``, ``scaling_laws[_full].json`` (slopes with 95 % confidence
intervals, next to the theorem's exponents) and the boundary tables as CSV. Every run is a
point of a resumable sweep folder under ``sweeps/``.
"""

from __future__ import annotations

import json
import math
import time

import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

import attnsim
from _common import parse_args, save

LR_TIMES_D = 10.0                       # lr = 10 / d: the official 5e-3 at d = 2000
HORIZON, CHECK_HORIZON = 10 ** 12, 10 ** 14
HARMFUL = ("harmful overfitting", "benign overfitting")
NOT_OVERFITTING = ("benign overfitting", "not overfitting")


def extra_args(parser):
    parser.add_argument("--full", action="store_true", help="every half decade, 3 seeds, the n study, the horizon check")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the horizon check (re-reading every bracket's ends at tau = 1e14)")


def base_config(d: int, n: int = 20, steps: int = HORIZON) -> attnsim.Config:
    cfg = attnsim.Config(init="official-gaussian", test_metrics="population", n_test=0, n_train=n, d=d,
                         lr=LR_TIMES_D / d, steps=steps, space="explicit")
    return cfg.replace(space="implicit") if d >= cfg.implicit_dimension else cfg


def brackets(d: int):
    """Starting brackets in ||mu|| for the two boundaries at ``d``: harmful <-> benign in
    [1, sqrt(30 sqrt d)], benign <-> not overfitting in [max(sqrt(d) / 2, 20), 30 sqrt(d)] (the lower
    end above the harmful boundary, ~10 at every d measured)."""
    root = math.sqrt(d)
    return {"harmful": (1.0, math.sqrt(30.0 * root)), "not_overfitting": (max(root / 2.0, 20.0), 30.0 * root)}


def trace(args, name, ds, n, ends, between, seeds, rtol):
    """One boundary at every d of ``ds`` (n samples), each from its bracket ``ends[d]``: one call, so
    that every d's brackets share each bisection level's workers. Rows tagged with ``n_train``."""
    table = attnsim.trace_boundary(args.out / "sweeps" / f"scaling_{name}", [base_config(d, n) for d in ds],
                                   "signal_norm", [ends[d][0] for d in ds], [ends[d][1] for d in ds], seeds=seeds,
                                   between=between, rtol=rtol, max_runs=14, workers=args.workers, progress=False)
    rows = [{**r, "d": d, "n_train": n} for d, r in zip([d for d in ds for _ in seeds], table.rows)]  # bases slowest
    for d in ds:
        print(f"d = {d:.0e}  n = {n:3d} {name:16s} " + "  ".join(
            f"[{r['lo']:.4g}, {r['hi']:.4g}] {r['status']}" for r in rows if r["d"] == d), flush=True)
    return rows


def loglog_fit(x, y):
    """Least-squares slope of log10 y on log10 x with its 95 % confidence interval (t distribution)."""
    x, y = np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float))
    if x.size < 3 or np.ptp(x) == 0:
        return {"slope": math.nan, "ci95": [math.nan, math.nan], "points": int(x.size)}
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
    return {"slope": fit.slope, "ci95": [fit.slope - half, fit.slope + half], "intercept": fit.intercept,
            "points": int(x.size)}


def horizon_check(args, rows, n_of):
    """Both ends of every final bracket re-run at ``CHECK_HORIZON``: rows whose regimes change."""
    configs, keys = [], []
    for r in rows:
        if r["status"] not in ("converged", "max_runs"):
            continue
        for end in ("lo", "hi"):
            configs.append(base_config(r["d"], n_of(r), CHECK_HORIZON).replace(signal_norm=r[end], seed=r["seed"]))
            keys.append((r["d"], n_of(r), r["seed"], r["boundary_name"], end, r[f"regime_{end}"]))
    sw = attnsim.sweep(args.out / "sweeps" / "scaling_check", configs=configs, n_saves=20, dynamics="flow",
                       workers=args.workers, progress=False)
    changed = []
    for cfg, key in zip(configs, keys):
        point = sw.select(d=cfg.d, n_train=cfg.n_train, seed=cfg.seed, signal_norm=cfg.signal_norm,
                          steps=CHECK_HORIZON)
        regime = point[0].summary["regime"] if point else "missing"
        if regime != key[5]:
            changed.append({"d": key[0], "n_train": key[1], "seed": key[2], "boundary": key[3], "end": key[4],
                            "regime_1e12": key[5], "regime_1e14": regime})
    return len(configs), changed


def main():
    args = parse_args(__doc__, extra_args)
    start = time.time()
    if args.full:
        ds = [int(round(10 ** (k / 2))) for k in range(4, 17)]          # 10^2, 10^2.5, ..., 10^8
        seeds, rtol, n_study = (0, 1, 2), 0.03, ((10, 20, 40, 80), (10 ** 4, 10 ** 6))
    else:
        ds, seeds, rtol, n_study = [10 ** 2, 10 ** 4, 10 ** 6, 10 ** 8], (0,), 0.1, None
    suffix = "_full" if args.full else ""

    rows = []
    for name, between in (("harmful", HARMFUL), ("not_overfitting", NOT_OVERFITTING)):
        rows += [{**r, "boundary_name": name} for r in
                 trace(args, name, ds, 20, {d: brackets(d)[name] for d in ds}, between, seeds, rtol)]
    n_rows = []
    if n_study:
        ns, n_ds = n_study
        for n in ns:
            ends = {}
            for d in n_ds:
                lo, hi = brackets(d)["not_overfitting"]
                ends[d] = (max(lo * math.sqrt(20 / n) / 2, 20.0), hi * math.sqrt(20 / n))
            n_rows += [{**r, "boundary_name": "not_overfitting"} for r in
                       trace(args, f"n{n}", n_ds, n, ends, NOT_OVERFITTING, seeds, rtol)]

    found = [r for r in rows if math.isfinite(r["boundary"])]
    summary = {"lr_times_d": LR_TIMES_D, "horizon": HORIZON, "seeds": list(seeds), "rtol": rtol, "d": ds}
    theory = {"harmful": 0.25, "not_overfitting": 0.5}
    for name in theory:
        pts = [r for r in found if r["boundary_name"] == name]
        # the asymptotic exponent: the fit over d >= 10^3 (d = 10^2 has no benign band to speak of)
        big = [r for r in pts if r["d"] >= 1000]
        summary[name] = {"theorem_exponent_in_d": theory[name], "fit_all": loglog_fit([r["d"] for r in pts],
                                                                                       [r["boundary"] for r in pts]),
                         "fit_d_ge_1e3": loglog_fit([r["d"] for r in big], [r["boundary"] for r in big]),
                         "not_found": [{k: r[k] for k in ("d", "seed", "status", "regime_lo", "regime_hi")}
                                       for r in rows if r["boundary_name"] == name and not math.isfinite(r["boundary"])]}
    if n_rows:
        summary["not_overfitting_in_n"] = {}
        for d in n_study[1]:
            pts = [r for r in n_rows if r["d"] == d and math.isfinite(r["boundary"])]
            summary["not_overfitting_in_n"][str(d)] = {"theorem_exponent_in_n": -0.5,
                                                      "fit": loglog_fit([r["n_train"] for r in pts],
                                                                        [r["boundary"] for r in pts])}
        if args.check:
            checked, changed = horizon_check(args, rows + n_rows, lambda r: r["n_train"])
            summary["horizon_check"] = {"horizon": CHECK_HORIZON, "runs": checked, "changed": changed}
    summary["wall_seconds"] = round(time.time() - start, 1)

    csv = args.out / f"scaling_laws{suffix}.csv"
    keys = ["boundary_name", "d", "n_train", "seed", "lo", "hi", "regime_lo", "regime_hi", "width", "boundary",
            "runs", "status"]
    csv.write_text("\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows + n_rows]) + "\n")
    (args.out / f"scaling_laws{suffix}.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print(f"wrote {csv}")

    fig, axes = plt.subplots(1, 2 if n_rows else 1, figsize=(12 if n_rows else 6.5, 4.8), squeeze=False)
    ax = axes[0, 0]
    colours = {"harmful": "#cc4444", "not_overfitting": "#4477aa"}
    labels = {"harmful": "harmful | benign", "not_overfitting": "benign | not overfitting"}
    for name, colour in colours.items():
        pts = [r for r in found if r["boundary_name"] == name]
        if not pts:
            continue
        x = np.array([r["d"] for r in pts], float)
        lo = np.array([r["lo"] for r in pts])
        hi = np.array([r["hi"] for r in pts])
        ax.vlines(x, lo, hi, color=colour, lw=3, alpha=0.6)
        ax.plot(x, [r["boundary"] for r in pts], "o", ms=3.5, color=colour, alpha=0.8)
        fit = summary[name]["fit_d_ge_1e3"]
        if math.isfinite(fit["slope"]):
            grid = np.geomspace(1e3, max(ds), 50)
            ax.plot(grid, 10 ** (fit["intercept"] + fit["slope"] * np.log10(grid)), color=colour,
                    label=f"{labels[name]}: slope {fit['slope']:.3f} [{fit['ci95'][0]:.3f}, {fit['ci95'][1]:.3f}]")
        # the theorem's line, anchored at the smallest d >= 10^3 measured
        anchor = min((r for r in pts if r["d"] >= 1000), key=lambda r: r["d"], default=None)
        if anchor is not None:
            grid = np.geomspace(anchor["d"], max(ds), 50)
            ax.plot(grid, anchor["boundary"] * (grid / anchor["d"]) ** theory[name], color=colour, ls="--",
                    label=f"theorem: d^{theory[name]} (anchored)")
    ax.set(xscale="log", yscale="log", xlabel="d (token dimension)", ylabel="||mu|| at the boundary",
           title=f"Regime boundaries (seeds as dots), n = 20, τ = 10¹² (flow), lr = {LR_TIMES_D:g}/d")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    if n_rows:
        ax = axes[0, 1]
        for d, colour in zip(n_study[1], ("#4477aa", "#228833")):
            pts = [r for r in n_rows if r["d"] == d and math.isfinite(r["boundary"])]
            if not pts:
                continue
            x = np.array([r["n_train"] for r in pts], float)
            ax.vlines(x, [r["lo"] for r in pts], [r["hi"] for r in pts], color=colour, lw=3, alpha=0.6)
            ax.plot(x, [r["boundary"] for r in pts], "o", ms=3.5, color=colour, alpha=0.8)
            fit = summary["not_overfitting_in_n"][str(d)]["fit"]
            grid = np.geomspace(min(x), max(x), 20)
            if math.isfinite(fit["slope"]):
                ax.plot(grid, 10 ** (fit["intercept"] + fit["slope"] * np.log10(grid)), color=colour,
                        label=f"d = {d:.0e}: slope {fit['slope']:.3f} [{fit['ci95'][0]:.3f}, {fit['ci95'][1]:.3f}]")
                ax.plot(grid, 10 ** (fit["intercept"] + fit["slope"] * np.log10(grid[0])) * (grid / grid[0]) ** -0.5,
                        color=colour, ls="--", label="theorem: n^-1/2 (anchored)")
        ax.set(xscale="log", yscale="log", xlabel="n (training samples)", ylabel="||mu|| at benign | not overfitting",
               title="Not-overfitting boundary against n")
        ax.legend(fontsize=7)
        ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    save(fig, args, f"scaling_laws{suffix}.png")
    for name in theory:
        fit = summary[name]["fit_d_ge_1e3"]
        print(f"{name}: measured exponent in d {fit['slope']:.3f} (95 % CI {fit['ci95'][0]:.3f} .. "
              f"{fit['ci95'][1]:.3f}, {fit['points']} points), theorem {theory[name]}")
    if "horizon_check" in summary:
        hc = summary["horizon_check"]
        print(f"horizon check at tau = 1e14: {len(hc['changed'])} of {hc['runs']} bracket ends changed regime")
    print(f"wall time {summary['wall_seconds']} s")


if __name__ == "__main__":
    main()
