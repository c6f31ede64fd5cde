"""Flow-mode benchmark (issue 6): cost to tau = 10^6 ... 10^15 and agreement with exact GD.

    python benchmarks/flow_bench.py              # full: three presets, both trainable sets
    python benchmarks/flow_bench.py --quick      # balanced only, GD agreement to 10^5

For each preset of the paper (``attnsim.preset``) and each trainable set it

1. runs the default flow (``dynamics="flow"``: backward-error correction, exact-GD start,
   rtol 1e-8, atol 1e-11) to tau = 10^6, 10^9, 10^12 and 10^15 with the preset's test set
   and the default 200 log-spaced saves, ``--repeats`` times, and reports the median wall
   time (``Result.wall_time``: exact-GD start, integration and recording; compilation and the
   one-off set-up of the Gram matrices are reported separately), right-hand-side
   evaluations, accepted and rejected steps and the GD steps of the start;
2. runs exact GD (dual engine) to ``--gd-horizon`` on the same save grid and reports
   max over saves, samples and tokens of |log s_flow - log s_GD|, per horizon decade.

Writes ``benchmarks/FLOW_RESULTS.md`` (and prints it), keeping its hand-written ``## Reading`` section
at the end (whose numbers are then to be updated by hand). The machine is shared: medians,
with the load average printed in the header.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import attnsim
from attnsim import prepare_run
from attnsim import SaveAt

PRESETS = ("balanced", "large-noise", "large-signal")
HORIZONS = (10**6, 10**9, 10**12, 10**15)


def timed_flow(name, trainable, steps, repeats, lean=False):
    """Median wall time and the counters of the default flow to ``steps``.

    ``lean``: no test set and one save per decade, so that the time is the exact-GD start
    and the integration (the recorder's per-save cost is the engine's, shared with GD).
    """
    cfg = attnsim.preset(name, trainable=trainable, steps=steps, **({"n_test": 0} if lean else {}))
    save_at = SaveAt.log(steps, int(np.log10(steps)) + 2) if lean else None
    walls, res = [], None
    setup = compile_ = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        run = prepare_run(cfg, save_at=save_at, dynamics="flow")
        setup = time.perf_counter() - t0
        run.warm_up()
        compile_ = run.compile_time
        run.run()
        res = run.result(cfg)
        assert res.success, res.message
        walls.append(res.wall_time)
    return statistics.median(walls), min(walls), max(walls), setup, compile_, res


def agreement(name, trainable, horizon, n_saves=121):
    """max |Delta log s| between the default flow and exact GD, per decade of tau."""
    cfg = attnsim.preset(name, trainable=trainable, steps=horizon, n_test=0)
    sa = SaveAt.log(horizon, n_saves)
    t0 = time.perf_counter()
    gd = attnsim.simulate(cfg, save_at=sa, engine="dual")
    gd_wall = time.perf_counter() - t0
    fl = attnsim.simulate(cfg, save_at=sa, dynamics="flow")
    d = np.abs(np.log(fl.attention) - np.log(gd.attention)).max(axis=(1, 2))
    per_decade = {}
    for k in range(int(np.log10(horizon))):
        sel = (gd.steps > 10**k) & (gd.steps <= 10 ** (k + 1))
        per_decade[k + 1] = float(d[sel].max()) if np.any(sel) else float("nan")
    return float(d.max()), per_decade, gd_wall, fl.extra["gd_start_steps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gd-horizon", type=float, default=1e6, help="exact-GD horizon for the agreement (default 1e6)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("FLOW_RESULTS.md")))
    args = ap.parse_args()
    presets = ("balanced",) if args.quick else PRESETS
    gd_h = int(1e5 if args.quick else args.gd_horizon)
    lines = [
        "# Flow mode: cost to long horizons and agreement with exact GD",
        "",
        f"`python benchmarks/flow_bench.py{' --quick' if args.quick else ''}` — "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs (load average at start: "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}); attnsim {attnsim.__version__}.",
        "",
        "Default flow options (`attnsim.FlowOptions()`): rtol 1e-8, atol 1e-11, backward-error",
        "correction on, exact-GD start until alpha*rho(J) <= 5e-4 (fallback 2e5 steps). Wall time is",
        "`Result.wall_time` (GD start + integration + recording 200 saves with the preset's 1000 test",
        f"samples), median of {args.repeats}; set-up (Gram matrices, once per problem) and compilation",
        "(cached) are listed apart.",
        "",
        "## Cost",
        "",
        "Columns: *full* = 200 saves with 1000 test samples (what `simulate` records by default);",
        "*lean* = no test set, one save per decade (the GD start and the integrator alone).",
        "",
        "| preset | trainable | tau | full: wall s, median [min, max] | lean: wall s, median [min, max] | RHS evals (full / lean) | accepted | rejected | GD-start steps | set-up s (full) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in presets:
        for trainable in ("p", "Wp"):
            for h in HORIZONS:
                med, lo, hi, setup, _, r = timed_flow(name, trainable, h, args.repeats)
                lmed, llo, lhi, _, _, lr_ = timed_flow(name, trainable, h, args.repeats, lean=True)
                x = r.extra
                row = (f"| {name} | {trainable} | 1e{int(np.log10(h))} | {med:.3f} [{lo:.3f}, {hi:.3f}] | "
                       f"{lmed:.3f} [{llo:.3f}, {lhi:.3f}] | {x['rhs_evals']} / {lr_.extra['rhs_evals']} | "
                       f"{x['accepted_steps']} | {x['rejected_steps']} | {x['gd_start_steps']} | {setup:.2f} |")
                print(row, flush=True)
                lines.append(row)
    lines += [
        "",
        f"## Agreement with exact GD (dual engine) to tau = 1e{int(np.log10(gd_h))}",
        "",
        "max over saves (121 log-spaced), samples and tokens of |log s_flow − log s_GD|, per decade of tau.",
        "",
        "| preset | trainable | max | " + " | ".join(f"(1e{k-1}, 1e{k}]" for k in range(1, int(np.log10(gd_h)) + 1))
        + " | GD wall s | GD-start steps |",
        "|---|---|---|" + "---|" * int(np.log10(gd_h)) + "---|---|",
    ]
    for name in presets:
        for trainable in ("p", "Wp"):
            mx, per, gd_wall, gs = agreement(name, trainable, gd_h)
            row = (f"| {name} | {trainable} | {mx:.1e} | " + " | ".join(f"{per[k]:.1e}" for k in sorted(per))
                   + f" | {gd_wall:.0f} | {gs} |")
            print(row, flush=True)
            lines.append(row)
    out = Path(args.out)
    reading = _reading(out)
    out.write_text("\n".join(lines) + "\n" + (f"\n{reading}" if reading else ""))
    print(f"wrote {args.out}" + (f" (kept its {READING.strip('# ')!r} section; update its numbers)" if reading else ""))


#: The hand-written section of the results file, kept when the tables are written again.
READING = "## Reading"


def _reading(path: Path) -> str:
    """The hand-written section of an existing results file, from its ``READING`` heading to the end."""
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n" + READING)
    return text[at + 1:] if at >= 0 else ""


if __name__ == "__main__":
    main()
