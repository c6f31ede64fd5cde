"""The implicit space's cost against d: set-up + 10^5 GD steps, and the flow to 10^12, at d = 10^3 and 10^9.

Issue 18's targets: implicit set-up + 10^5 GD steps (official n = 20, T = 8, W and p trained) at
d = 10^9 within 1.1x of the same at d = 10^3, peak RSS under 200 MB at d = 10^9; the flow to
tau = 10^12 at d = 10^9 under 2 s. Each measurement is a fresh process (``attnsim run`` through
``python -m attnsim``, numba cache warm: one untimed run first), the two d alternating, so a
drifting machine moves both alike; CPU time and peak RSS from ``getrusage(RUSAGE_CHILDREN)``,
wall time from the clock. The step is ``lr = 10 / d`` at every d (the paper's lr d at d = 2000),
and the recording is the default 200 log-spaced saves with population test metrics.

    python benchmarks/implicit_bench.py [--repeats 5]

Prints a Markdown table (medians, min-max) and the ratios of the pairs. "The run's own wall" is
``Result.wall_time + compile_time`` (draw, set-up, stepping, recording; no interpreter start or
imports, which cost about 1.5 s and 200 MB of the process's RSS: numba's LLVM alone is ~190 MB).
"""

from __future__ import annotations

import argparse
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    opts = parser.parse_args()
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
