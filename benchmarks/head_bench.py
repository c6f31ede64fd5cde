"""Trainable-head benchmark (issue 11): "p+nu" and "Wp+nu" against "p" and "Wp", dual coordinates.

    python benchmarks/head_bench.py                 # official setting + flatness in d, 5 repeats
    python benchmarks/head_bench.py --repeats 3 --budget 0.5

1. Agreement first: for every trainable set, 20 GD steps of the dual engine against the primal
   one at the official setting (``attnsim.preset("balanced", trainable=..., n_test=0)``,
   n = 20, T = 8, d = 2000): the loss at every step and the final p, W, nu must agree to
   1e-9 relative, or nothing is timed.
2. Speed: steady-state GD steps per CPU-second (``time.process_time``) of the dual engine,
   stepping only (``attnsim.prepare_run(...)`` then ``run.warm_up()``, then
   ``run.coords.advance(k, np.zeros(n))`` with k sized to take ``--budget`` CPU-seconds), at
   d = 2000 and, for flatness in d, d = 500 and d = 8000. One fresh process per measurement,
   with one BLAS/numba thread; the repeats are interleaved over the cases (so that a change
   in the shared machine's load hits every case alike) and the median is reported. The ratio
   of a head set to its head-less twin is measured inside each process (both prepared, timed
   in alternating blocks) and its median over the processes decides the 70 % target; at
   d = 2000 for W0 random (official) and W0 = I (``w0="identity"``, the head-training papers'
   setting).

Prints a Markdown table; append it by hand to ``benchmarks/ANALYSIS.md`` (``bench.py`` regenerates
``RESULTS.md`` from ``results.json`` and includes ``ANALYSIS.md`` at its end).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

import attnsim

SETS = ("p", "p+nu", "Wp", "Wp+nu")
TWIN = {"p+nu": "p", "Wp+nu": "Wp"}
OFFICIAL_D = 2000
FLAT_DS = (500, 8000)
#: W0 random is the official setting; W0 = I is the one of the models that train the head
#: (Magen et al., Tarzanagh et al.), where keys are tokens and one Gram serves both vectors.
W0S = ("random", "identity")
AGREE_STEPS = 20
PAIRED_BLOCKS = 4
AGREE_RTOL = 1e-9
ONE_THREAD = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def config(trainable, d, w0="random", steps=10**9):
    return attnsim.preset("balanced", trainable=trainable, d=d, w0=w0, n_test=0, steps=steps)


def relative(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def agreement(trainable, w0, d=OFFICIAL_D):
    """Worst relative difference between the dual and primal engines over AGREE_STEPS steps."""
    cfg = config(trainable, d, w0, steps=AGREE_STEPS)
    save = attnsim.SaveAt.linear(AGREE_STEPS, AGREE_STEPS + 1)
    dual = attnsim.simulate(cfg, save, engine="dual")
    primal = attnsim.simulate(cfg, save, engine="primal")
    worst = {"loss": relative(dual.train_loss, primal.train_loss), "p": relative(dual.p, primal.p)}
    if dual.W is not None:
        worst["W"] = relative(dual.W, primal.W)
    if dual.nu is not None:
        worst["nu"] = relative(dual.nu, primal.nu)
    return dual.engine, primal.engine, worst


def _stepper(trainable, d, w0):
    """A prepared, warmed dual run and a function that times ``k`` of its steps in CPU-seconds."""
    cfg = config(trainable, d, w0)
    t0 = time.perf_counter()
    run = attnsim.prepare_run(cfg, save_at=attnsim.SaveAt.explicit([0, cfg.steps], cfg.steps), engine="dual")
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    run.warm_up()
    warm = time.perf_counter() - t0
    frak = np.zeros(cfg.n_train)

    def timed(k):
        c0 = time.process_time()
        done = run.coords.advance(k, frak)
        assert done == k, f"stopped after {done} of {k} steps"
        return time.process_time() - c0

    return timed, setup, warm


def _block_size(timed, budget):
    k = 64
    while True:        # size the block: double until one block takes a tenth of the budget
        spent = timed(k)
        if spent >= budget / 10:
            return max(1, int(k * budget / spent))
        k *= 2


def measure(trainable, d, w0, budget):
    """Run in a child process: steady-state dual steps per CPU-second, and the warm-up time.

    For a head set, its head-less twin is prepared in the same process and the two are timed in
    alternating blocks (twin, set, twin, set, ...), so that the ratio of the two sees the same
    memory layout and the same moment of the shared machine; ``ratio`` is the ratio of the
    two medians."""
    timed, setup, warm = _stepper(trainable, d, w0)
    k = _block_size(timed, budget)
    out = {"setup": setup, "warm_up": warm}
    if trainable not in TWIN:
        out["rate"] = k / timed(k)
        return out
    twin_timed, _, _ = _stepper(TWIN[trainable], d, w0)
    k_twin = _block_size(twin_timed, budget)
    rates, twin_rates = [], []
    for _ in range(PAIRED_BLOCKS):
        twin_rates.append(k_twin / twin_timed(k_twin))
        rates.append(k / timed(k))
    out.update(rate=statistics.median(rates), twin_rate=statistics.median(twin_rates))
    out["ratio"] = out["rate"] / out["twin_rate"]
    return out


def child(trainable, d, w0, budget):
    out = subprocess.run([sys.executable, __file__, "--child", trainable, str(d), w0, str(budget)],
                         env={**os.environ, **ONE_THREAD}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=float, default=1.0, help="CPU-seconds per timed block")
    parser.add_argument("--child", nargs=4, metavar=("TRAINABLE", "D", "W0", "BUDGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tr, d, w0, budget = args.child
        print(json.dumps(measure(tr, int(d), w0, float(budget))))
        return

    print(f"# head_bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, attnsim {attnsim.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"agreement, dual vs primal, {AGREE_STEPS} steps at the official setting (d = {OFFICIAL_D}):")
    for w0 in W0S:
        for tr in SETS:
            de, pe, worst = agreement(tr, w0)
            ok = max(worst.values()) <= AGREE_RTOL
            print(f"  {tr:6s} W0 {w0:8s} ({de} vs {pe}): " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items())
                  + ("  ok" if ok else "  DISAGREE"))
            if not ok:
                sys.exit(f"{tr}, W0 {w0}: dual and primal disagree beyond {AGREE_RTOL}; nothing timed")

    cases = ([(tr, OFFICIAL_D, w0) for w0 in W0S for tr in SETS]
             + [(tr, d, "random") for d in FLAT_DS for tr in SETS])
    rates = {c: [] for c in cases}
    ratios = {c: [] for c in cases if c[0] in TWIN}
    warm = {}
    for rep in range(args.repeats):
        for c in cases:
            m = child(*c, args.budget)
            rates[c].append(m["rate"])
            warm[c] = m["warm_up"]
            if c in ratios:
                ratios[c].append(m["ratio"])
        print(f"  repeat {rep + 1}/{args.repeats} done, load average {os.getloadavg()[0]:.1f}", flush=True)
    med = {c: statistics.median(v) for c, v in rates.items()}

    print()
    print("| d | W0 | trainable | steps / CPU-s (median) | min–max | vs twin, same process (median, min–max) | "
          "vs twin, medians of separate processes | warm-up s |")
    print("|---|---|---|---|---|---|---|---|")
    for c in cases:
        tr, d, w0 = c
        paired = (f"**{statistics.median(ratios[c]):.0%}** ({min(ratios[c]):.0%}–{max(ratios[c]):.0%})"
                  if tr in TWIN else "")
        separate = f"{med[c] / med[(TWIN[tr], d, w0)]:.0%}" if tr in TWIN else ""
        print(f"| {d} | {w0} | {tr} | {med[c]:,.0f} | {min(rates[c]):,.0f}–{max(rates[c]):,.0f} | {paired} | "
              f"{separate} | {warm[c]:.2f} |")
    print()
    print("flatness in d (median rate at d = 8000 / d = 500, W0 random): " + ", ".join(
        f"{tr} {med[(tr, 8000, 'random')] / med[(tr, 500, 'random')]:.2f}" for tr in SETS))
    for tr in TWIN:
        for w0 in W0S:
            ds = (OFFICIAL_D,) + (FLAT_DS if w0 == "random" else ())
            ok = all(statistics.median(ratios[(tr, d, w0)]) >= 0.7 for d in ds)
            print(f"{tr}, W0 {w0}: >= 70 % of {TWIN[tr]} at d = {ds}: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
