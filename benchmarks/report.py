"""Turn ``benchmarks/results.json`` into ``RESULTS.md`` and ``scaling.png``.

    python benchmarks/report.py            # re-render from the last results.json
"""

from __future__ import annotations

import json
import os
import sys

from attnsim import choose_engine

HERE = os.path.dirname(os.path.abspath(__file__))


def _get(rows, **kw):
    for r in rows:
        if all(r.get(k) == v for k, v in kw.items()):
            return r
    return None


def fmt(x, nd=0):
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if abs(x) >= 100 or nd == 0 and abs(x) >= 10:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _rate(r):
    """Steps per CPU-second when measured (the idle-core rate), else wall-clock steps/s."""
    if not r:
        return None
    return r.get("steps_per_cpu_s") or r.get("steps_per_s")


def head_table(rows):
    out = []
    cases = []
    for r in rows:
        key = (r["n"], r["d"], r["trainable"])
        if key not in cases:
            cases.append(key)
    out.append("| n | d | trained | implementation | steps per CPU-s | steps/s wall (min–max) | CPU/wall | "
               "× torch-f64 | × torch-f64-reordered | warm-up s | set-up s | peak RSS MB | "
               "max rel err vs NumPy | status |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n, d, tr in cases:
        sub = [r for r in rows if (r["n"], r["d"], r["trainable"]) == (n, d, tr)]
        t64 = _rate(_get(sub, impl="torch-f64"))
        t64r = _rate(_get(sub, impl="torch-f64-reordered"))
        for r in sub:
            rate = _rate(r) if r.get("status") == "ok" else None
            wall = (f"{fmt(r.get('steps_per_s'))} ({fmt(min(r['rates']))}–{fmt(max(r['rates']))})"
                    if r.get("rates") else "—")
            ratio = f"{rate / t64:,.0f}×" if rate and t64 else "—"
            ratio_r = f"{rate / t64r:,.1f}×" if rate and t64r else "—"
            err = f"{r['max_rel_err']:.1e}" if r.get("max_rel_err") is not None else "—"
            status = r.get("status", "")
            cpw = f"{r['cpu_per_wall']:.2f}" if r.get("cpu_per_wall") else "—"
            out.append(f"| {n} | {d} | {tr} | {r['impl']} | **{fmt(rate)}** | {wall} | {cpw} | {ratio} | {ratio_r} | "
                       f"{fmt(r.get('warmup_s'), 2)} | {fmt(r.get('setup_s'), 2)} | {fmt(r.get('peak_rss_mb'))} | "
                       f"{err} | {status} |")
    return "\n".join(out)


def sweep_table(rows):
    out = ["| trained | n | N = nT | d | dual steps per CPU-s | primal | torch-f64-reordered | "
           "dual set-up s | dual peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    keys = []
    for r in rows:
        k = (r["trainable"], r["n"], r["d"])
        if k not in keys:
            keys.append(k)
    for tr, n, d in keys:
        dual = _get(rows, impl="attnsim-dual", trainable=tr, n=n, d=d) or {}
        primal = _get(rows, impl="attnsim-primal", trainable=tr, n=n, d=d) or {}
        torch = _get(rows, impl="torch-f64-reordered", trainable=tr, n=n, d=d) or {}
        out.append(f"| {tr} | {n} | {8 * n} | {d} | {fmt(_rate(dual))} | {fmt(_rate(primal))} "
                   f"| {fmt(_rate(torch))} | {fmt(dual.get('setup_s'), 2)} | {fmt(dual.get('peak_rss_mb'))} |")
    # d = 8000 vs d = 500 for the dual engine
    lines = []
    for tr in ("Wp", "p"):
        for n in sorted({r["n"] for r in rows}):
            a = _rate(_get(rows, impl="attnsim-dual", trainable=tr, n=n, d=500))
            b = _rate(_get(rows, impl="attnsim-dual", trainable=tr, n=n, d=8000))
            if a and b:
                lines.append(f"- dual {tr}, n = {n}: steps/s at d = 500 / at d = 8000 = {a / b:.2f}")
    return "\n".join(out) + ("\n\n" + "\n".join(lines) if lines else "")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = {20: "tab:blue", 100: "tab:orange", 400: "tab:green", 50: "tab:orange"}
    for ax, tr in zip(axes, ("Wp", "p")):
        for n in sorted({r["n"] for r in rows}):
            for impl, style in (("attnsim-dual", "-o"), ("attnsim-primal", "--s"), ("torch-f64-reordered", ":^")):
                pts = sorted((r["d"], _rate(r)) for r in rows
                             if r["impl"] == impl and r["trainable"] == tr and r["n"] == n and _rate(r))
                if pts:
                    ax.plot(*zip(*pts), style, color=colours.get(n, "k"), label=f"{impl.replace('attnsim-', '')}, n={n}",
                            ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_title(f"trainable = {tr} (one core, T = 8, N = 8n)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("GD steps per CPU-second")
    axes[1].legend(fontsize=7, ncol=3, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write(results, md_path, png_path):
    m = results.get("machine", {})
    parts = ["# attnsim benchmarks\n",
             "Generated by `benchmarks/report.py` from `benchmarks/results.json` (written by "
             "`benchmarks/bench.py`). Hand-written analysis: `benchmarks/ANALYSIS.md`, included at the end.\n",
             "## Machine\n", "```", *m.get("lscpu", []), m.get("mem", ""), f"kernel {m.get('kernel', '')}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()), "```\n",
             "Everything runs on one thread per process (single-threaded BLAS, `torch.set_num_threads(1)`, "
             "XLA single-threaded) except the `batch` section. The machine has 2 cores shared with other "
             "users while these numbers were taken: the load averages are printed per section; compare "
             "ratios measured in the same section.\n"]
    if "head" in results:
        h = results["head"]
        parts += ["## Head to head: same data, same initialisation\n",
                  f"Measured {h['date']} (load average at end {h['started_load']}). Command: "
                  "`python benchmarks/bench.py --only head`. Each row is a fresh process; the loss trajectory of "
                  f"the first 20 steps is checked against the NumPy closed-form loop first (float64: rtol 1e-9, "
                  "float32: 1e-4) and an implementation that disagrees is not timed. `torch-f64`/`torch-f32` "
                  "compute the scores as `X @ W @ p` left to right, like the authors' code; "
                  "`torch-f64-reordered` as `X @ (Wᵀ p)`. No test set here (loop cost only). "
                  "Warm-up = JIT compilation or cache load and first call, excluded from steps/s.\n",
                  head_table(h["rows"]), ""]
    if "official" in results:
        h = results["official"]
        parts += ["## Official setting again, on a quieter machine\n",
                  f"Measured {h['date']} (load average at end {h['started_load']}). Command: "
                  "`python benchmarks/bench.py --only official`: the first two blocks of the table above, "
                  "re-measured when the machine's load had dropped (the 10⁸-step CLI run was going on the "
                  "other core). Same protocol.\n", head_table(h["rows"]), ""]
    if "e2e" in results:
        parts += ["## attnsim end to end (official setting, 1000-sample test set evaluated at every save)\n",
                  f"Measured {results['e2e']['date']}. Command: `python benchmarks/bench.py --only e2e` "
                  "(`attnsim.simulate(preset('balanced', trainable=..., steps=...), SaveAt.log(steps, saves))`).\n",
                  "| trained | steps | saves | engine | total s (wall) | CPU s | **steps per CPU-s, everything included** | "
                  "set-up s | compile/load s | stepping+recording s | steps/s wall (stepping+recording) | "
                  "peak RSS MB | final test acc | load |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["e2e"]["rows"]:
            if "total_s" not in r:
                parts.append(f"| {r.get('trainable')} | {r.get('steps')} | | | {r.get('status')} |")
                continue
            parts.append(f"| {r['trainable']} | {r['steps']:.0e} | {r['saves']} | {r['engine']} | {fmt(r['total_s'], 2)} | "
                         f"{fmt(r.get('cpu_s'), 2)} | **{fmt(r.get('steps_per_cpu_s_total'))}** | "
                         f"{fmt(r['setup_s'], 2)} | {fmt(r['compile_s'], 2)} | {fmt(r['stepping_s'], 2)} | "
                         f"{fmt(r['steps_per_s_stepping'])} | {fmt(r['peak_rss_mb'])} | "
                         f"{r['test_acc']:.3f} | {r['load']} |")
        parts.append("")
    if "long" in results:
        rows = results["long"]["rows"]
        parts += ["## 10⁸ p-only steps at the official setting, through the CLI\n",
                  f"Command: `{rows[0]['command']}` (with `OPENBLAS_NUM_THREADS=1` for the second run). "
                  "500 log-spaced saves, 1000 test samples evaluated at each. Logs: `benchmarks/logs/`.\n",
                  "| started (UTC) | wall time | user CPU time | CPU share | steps per CPU-s | peak RSS MB | "
                  "load at start | load at end |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            parts.append(f"| {r.get('started', '')} | **{r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min)** | "
                         f"{r.get('user_s')} s ({r.get('user_s', 0) / 60:.1f} min) | {r.get('cpu_percent')} | "
                         f"{r['steps'] / max(r.get('user_s', 1), 1):,.0f} | {fmt(r.get('peak_rss_mb'))} | "
                         f"{r['load_start']} | {r['load_end']} |")
        parts += ["", "On an idle core a run takes about its CPU time. Summary printed by the last run:", "",
                  "```", rows[-1].get("stdout", "").strip(), "```", ""]
    if "sweep" in results:
        parts += ["## Scaling in d and n\n",
                  f"Measured {results['sweep']['date']}. Command: `python benchmarks/bench.py --only sweep`. "
                  "Steady-state steps/s, median of 3 blocks of ~0.5 s, no test set. Figure: `benchmarks/scaling.png`.\n",
                  sweep_table(results["sweep"]["rows"]), "", "![steps/s against d and n](scaling.png)", ""]
        plot(results["sweep"]["rows"], png_path)
    if "dscale" in results:
        rows = results["dscale"]["rows"]
        parts += ["## Dual engine: d = 500 against d = 8000\n",
                  f"Measured {results['dscale']['date']}. Command: `python benchmarks/bench.py --only dscale`: "
                  "n = 20 (N = 160), the two sizes measured alternately, 3 rounds, each the median of 5 blocks.\n",
                  "| trained | d | steps per CPU-s, rounds 1-3 | median | set-up s (median) |", "|---|---|---|---|---|"]
        import statistics

        med = {}
        for tr in ("Wp", "p"):
            for d in sorted({r["d"] for r in rows}):
                sub = [r for r in rows if r["trainable"] == tr and r["d"] == d and _rate(r)]
                if not sub:
                    continue
                rates = [_rate(r) for r in sub]
                med[tr, d] = statistics.median(rates)
                parts.append(f"| {tr} | {d} | {', '.join(fmt(x) for x in rates)} | **{fmt(med[tr, d])}** | "
                             f"{statistics.median(r.get('setup_s', 0) for r in sub):.2f} |")
        ds = sorted({r["d"] for r in rows})
        for tr in ("Wp", "p"):
            if (tr, ds[0]) in med and (tr, ds[-1]) in med:
                parts.append(f"\n{tr}: rate at d = {ds[0]} / rate at d = {ds[-1]} = "
                             f"**{med[tr, ds[0]] / med[tr, ds[-1]]:.2f}**")
        parts.append("")
    if "auto" in results:
        parts += ["## auto choice\n",
                  f"Measured {results['auto']['date']}. Command: `python benchmarks/bench.py --only auto`. "
                  "`choose_engine(N, d, 0, 10**6, 200, trainable)` against the measured steady-state rates (steps per CPU-second).\n",
                  "The \"picked when measured\" column is what `choose_engine` said during the run; \"picks now\" is "
                  "the current cost model evaluated when this page was rendered (the one disagreement, W,p at "
                  "d = 128, led to counting the primal d x d sweep at 15 flops per element).\n",
                  "| n | N | d | trained | picked when measured | picks now | dual steps/CPU-s | primal steps/CPU-s | "
                  "faster | now agrees |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["auto"]["rows"]:
            now = choose_engine(r["N"], r["d"], 0, 10**6, 200, r["trainable"])
            parts.append(f"| {r['n']} | {r['N']} | {r['d']} | {r['trainable']} | {r['auto']} | {now} | {fmt(r['dual'])} | "
                         f"{fmt(r['primal'])} | {r['faster']} | {'yes' if now == r['faster'] else '**no**'} |")
        parts.append("")
    if "batch" in results:
        rows = results["batch"]["rows"]
        parts += ["## Batched runs (`simulate_many`)\n",
                  f"Measured {results['batch']['date']}. Command: `python benchmarks/bench.py --only batch`: "
                  f"{rows[0]['runs']} official-setting W,p runs of {rows[0]['steps']:,} steps each (1000 test "
                  "samples, 200 saves), with `workers=1` and `workers=2`.\n",
                  "| workers | wall s | load at start | load at end |", "|---|---|---|---|"]
        for r in rows:
            parts.append(f"| {r['workers']} | {r['wall_s']:.1f} | {r['load_start']} | {r['load_end']} |")
        if len(rows) == 2:
            parts.append(f"\nSpeed-up with 2 workers: **{rows[0]['wall_s'] / rows[1]['wall_s']:.2f}×**.\n")
    analysis = os.path.join(HERE, "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis) as fh:
            parts += ["---\n", fh.read()]
    with open(md_path, "w") as fh:
        fh.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    with open(os.path.join(HERE, "results.json")) as fh:
        res = json.load(fh)
    write(res, os.path.join(HERE, "RESULTS.md"), os.path.join(HERE, "scaling.png"))
    print("wrote benchmarks/RESULTS.md", file=sys.stderr)
