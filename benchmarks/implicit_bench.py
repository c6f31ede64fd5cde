"""The implicit space's cost against d: set-up + 10^5 GD steps, and the flow to 10^12, at d = 10^3 and 10^9.

Issue 18's targets: implicit set-up + 10^5 GD steps (official n = 20, T = 8, W and p trained) at
d = 10^9 within 1.1x of the same at d = 10^3, peak RSS under 200 MB at d = 10^9; the flow to
tau = 10^12 at d = 10^9 under 2 s. Each measurement is a fresh process (``attnsim run`` through
``python -m attnsim``, numba cache warm: one untimed run first), the two d alternating, so a
drifting machine moves both alike; CPU time and peak RSS from ``getrusage(RUSAGE_CHILDREN)``,
wall time from the clock. The step is ``lr = 10 / d`` at every d (the paper's lr d at d = 2000),
and the recording is the default 200 log-spaced saves with population test metrics.

    python benchmarks/implicit_bench.py [--repeats 5]
    python benchmarks/implicit_bench.py --setup [--before /path/to/other/src] [--repeats 5]

Prints a Markdown table (medians, min-max) and the ratios of the pairs. "The run's own wall" is
``Result.wall_time + compile_time`` (draw, set-up, stepping, recording; no interpreter start or
imports, which cost about 1.5 s and 200 MB of the process's RSS: numba's LLVM alone is ~190 MB).

``--setup``: the implicit set-up alone against n (``prepare_run`` of a flow run to 10^12, d = 10^4,
T = 8, W and p trained, the Gaussian twin: the draw of the joint law and the dual set-up's
products with the lazy W0, O(k^3) with k ~ 3 n T), n = 10 ... 160, process CPU of each call in a
fresh single-threaded process per round; with ``--before SRC``, another source tree's (its
``src`` folder) in a process of its own, the two alternating round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CASES = {
    "GD 1e5 steps, d = 1e3": ["--d", "1000", "--lr", "1e-2", "--steps", "1e5"],
    "GD 1e5 steps, d = 1e9": ["--d", "1e9", "--lr", "1e-8", "--steps", "1e5"],
    "flow to 1e12, d = 1e3": ["--d", "1000", "--lr", "1e-2", "--steps", "1e12", "--dynamics", "flow"],
    "flow to 1e12, d = 1e9": ["--d", "1e9", "--lr", "1e-8", "--steps", "1e12", "--dynamics", "flow"],
}
COMMON = ["run", "--space", "implicit", "--init", "official-gaussian", "--no-progress", "--overwrite"]


def measure(args: list[str], out: str) -> dict:
    """One fresh process: wall, CPU (user + sys) and peak RSS of ``python -m attnsim run ...``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attnsim", *COMMON, *args, "--out", out], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"attnsim run {' '.join(args)} failed:\n{proc.stderr}")
    import attnsim

    res = attnsim.load(out)                       # the run's own time: set-up and stepping, no imports
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "run": res.wall_time + res.compile_time}


SETUP_NS = (10, 20, 40, 80, 160)
#: One round of ``--setup`` in a fresh process: prints ``{n: CPU seconds}`` as JSON.
SETUP_ROUND = """
import json, sys, time
import attnsim
from attnsim._experiment import prepare_run
def config(n):
    return attnsim.Config(init="official-gaussian", test_metrics="population", n_test=0, n_train=n, d=10**4,
                          lr=1e-3, steps=10**12, space="implicit", signal_norm=8.0)
save = attnsim.SaveAt.log(10**12, 14)
prepare_run(config(10), save_at=save, dynamics="flow")        # imports and kernels loaded, not timed
out = {}
for n in json.loads(sys.argv[1]):
    start = time.process_time()
    prepare_run(config(n), save_at=save, dynamics="flow")
    out[n] = time.process_time() - start
print(json.dumps(out))
"""


def setup_rounds(src: str, repeats: int, before: str | None) -> None:
    """``--setup``: the implicit set-up's CPU against n, this tree (and ``before``) alternating."""
    trees = {"this tree": src} | ({"before": before} if before else {})
    rows = {name: {n: [] for n in SETUP_NS} for name in trees}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    for _ in range(repeats):
        for name, path in trees.items():
            proc = subprocess.run([sys.executable, "-c", SETUP_ROUND, json.dumps(SETUP_NS)], capture_output=True,
                                  text=True, env={**env, "PYTHONPATH": path}, check=True)
            for n, cpu in json.loads(proc.stdout).items():
                rows[name][int(n)].append(cpu)
    print(f"machine load at the end: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} cores\n")
    names = list(trees)
    print("| n (N = 8 n) | " + " | ".join(f"{name}: set-up CPU s" for name in names)
          + (" | this tree / before |" if before else " |"))
    print("|---" * (len(names) + 1 + bool(before)) + "|")
    for n in SETUP_NS:
        cells = [f"{statistics.median(rows[name][n]):.3f} ({min(rows[name][n]):.3f}-{max(rows[name][n]):.3f})"
                 for name in names]
        if before:
            cells.append(f"{statistics.median(rows['this tree'][n]) / statistics.median(rows['before'][n]):.2f}")
        print(f"| {n} ({8 * n}) | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--setup", action="store_true", help="the implicit set-up alone against n")
    parser.add_argument("--before", metavar="SRC", help="with --setup: another tree's src folder, alternating")
    opts = parser.parse_args()
    if opts.setup:
        setup_rounds(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"),
                     opts.repeats, opts.before)
        return
    rows = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in CASES.items():          # warm the numba cache; not counted
            measure(args, os.path.join(tmp, "warm.npz"))
        rss = {}
        for name, args in CASES.items():          # peak RSS alone: ru_maxrss of children is a running max
            rss[name] = subprocess.run(
                [sys.executable, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                 "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)",
                 sys.executable, "-m", "attnsim", *COMMON, *args, "--out", os.path.join(tmp, "rss.npz")],
                capture_output=True, text=True, check=True).stdout.strip()
        for _ in range(opts.repeats):
            for name, args in CASES.items():      # alternate: every case once per round
                rows[name].append(measure(args, os.path.join(tmp, "o.npz")))
    print(f"machine load at the end: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} cores\n")
    print("| case | process wall s | process CPU s | the run's own wall s (set-up + steps) | peak RSS MB |")
    print("|---|---|---|---|---|")
    for name, runs in rows.items():
        cells = []
        for key in ("wall", "cpu", "run"):
            v = [r[key] for r in runs]
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"| {name} | {' | '.join(cells)} | {float(rss[name]):.0f} |")
    for kind in ("GD 1e5 steps", "flow to 1e12"):
        big, small = rows[f"{kind}, d = 1e9"], rows[f"{kind}, d = 1e3"]
        ratios = sorted(b["cpu"] / s["cpu"] for b, s in zip(big, small))
        print(f"\n{kind}: CPU(d = 1e9) / CPU(d = 1e3) per round: median {statistics.median(ratios):.3f}, "
              f"min-max {ratios[0]:.3f}-{ratios[-1]:.3f}")


if __name__ == "__main__":
    main()
