"""Population versus sample test metrics on a short run at large d (issue 13's target).

Runs ``attnsim run --d 5000 --signal-norm 20 --steps 1000`` with the default 1000-sample test
set and with ``--test-metrics population``, each in a fresh process, and reports wall time,
CPU time and peak RSS of the whole command, and the set-up alone (``prepare_run``: data,
initialisation, Grams) measured in-process. The target: population metrics take at most half
the memory and set-up time of the sample metrics.

    .venv/bin/python benchmarks/population_bench.py [--d 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SETUP = """
import json, sys, time
import attnsim
from attnsim import Config, SaveAt
kw = dict(n_test=0, test_metrics="population") if sys.argv[1] == "population" else {}
attnsim.simulate(Config(d=20, steps=2, **kw))  # kernels loaded before timing
cfg = Config(d=int(sys.argv[2]), signal_norm=20, steps=1000, **kw)
c0, w0 = time.process_time(), time.perf_counter()
run = attnsim.prepare_run(cfg, SaveAt.log(1000, 200))
print(json.dumps({"setup_cpu": time.process_time() - c0, "setup_wall": time.perf_counter() - w0}))
"""


RUN = """
import json, resource, sys, time
t0 = time.perf_counter()
from attnsim import cli
extra = ["--test-metrics", "population"] if sys.argv[2] == "population" else []   # sample: the default
rc = cli.main(["run", "--d", sys.argv[1], "--signal-norm", "20", "--steps", "1000", "--no-progress", *extra])
assert rc == 0, f"attnsim run exited with {rc}"
self = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": self.ru_utime + self.ru_stime,
                  "peak_rss_mb": self.ru_maxrss / 1024}))
"""


def command(metrics, d):
    """Wall, CPU (user + sys) and peak RSS of ``attnsim run`` (the CLI's code path) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", RUN, str(d), metrics], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["sample", "population"], default=None,
                        help="one kind only (e.g. sample against an attnsim without population metrics)")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["sample", "population"]
    for metrics in kinds:
        for _ in range(args.repeats):
            setup = json.loads(subprocess.run([sys.executable, "-c", SETUP, metrics, str(args.d)], check=True,
                                              capture_output=True, text=True).stdout.strip().splitlines()[-1])
            row = {"metrics": metrics, **setup}
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    for metrics in kinds:
        for _ in range(args.repeats):
            row = {"metrics": metrics, **command(metrics, args.d)}
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
