"""Population test metrics: the cost of one save (issue 20), and against sample metrics (issue 13).

Per save (the default): the quadrature at typical save states of the balanced preset (GD at
tau = 1e3; the flow at tau = 1e8, saturated) and of large-noise (tau = 1e8: accuracy below 1,
the hardest integrand), each state's moments from its materialised parameters. Methods:

- ``recorder``: ``population_metrics(..., se_target=1e-4)``, what a run records at each save
  (the numba kernel, draws doubled from 512 until both standard errors are <= 1e-4);
- ``save``: ``PopulationSpec.metrics`` from the inner products of ``q`` and ``nu``, the call a
  run's recorder makes (same numbers as ``recorder``);
- ``kernel-all``: the same kernel on all 2^14 draws (``population_metrics`` default);
- ``numpy-all``: its NumPy twin on all 2^14 draws, the algorithm of the NumPy loop before the
  kernel;
- ``before`` (with ``--before SRC``): ``population_metrics`` of another attnsim source tree's
  ``attnsim/_population.py`` (e.g. the commit before the kernel), loaded beside this one;
  ``recorder-before`` and ``save-before``: its ``recorder`` and ``save`` (a tree that has them).

Agreement is checked first (every method within 3 combined standard errors of ``numpy-all``;
``kernel-all`` equal to it to 1e-12), then the methods are timed in alternating rounds inside
this process; the table gives medians of wall and thread-CPU time per call, and the draws and
standard errors each method reached.

    .venv/bin/python benchmarks/population_bench.py [--rounds 30] [--before /path/to/old/src] [--cold]

``--cold``: every timed call follows a pass over 16 MB, as a save follows a training chunk
(draws, kernel state and the interpreter's objects out of cache); without it, each call
follows the other methods' calls.

``--kernel-before FILE``: the quadrature kernel alone, this tree's ``_kernels/population.py``
against another version of that file (e.g. ``git show OLD:src/attnsim/_kernels/population.py``),
compiled beside it against this tree's other kernel modules: every state at
2^9, 2^12 and 2^14 draws, all draws spent, outputs required equal bit for bit, then thread-CPU
time per call in alternating rounds (median; ns per draw).

    .venv/bin/python benchmarks/population_bench.py --kernel-before /tmp/population_old.py [--rounds 21]

``--e2e``: ``attnsim run --d 5000 --signal-norm 20 --steps 1000`` with the default 1000-sample
test set and with ``--test-metrics population``, each in a fresh process: wall time, CPU time
and peak RSS of the whole command, and the set-up alone (``prepare_run``) measured in-process.

    .venv/bin/python benchmarks/population_bench.py --e2e [--d 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

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


def states():
    """``{name: (mean_z, mean_v, cov, config, inner)}`` at typical save states, from materialised
    parameters; ``inner`` = ``(q^T q, q^T mu (2,), q^T nu, nu^T nu, nu^T mu (2,))``."""
    import attnsim
    from attnsim import SaveAt

    out = {}
    for name, preset, steps, dynamics in (("balanced tau=1e3", "balanced", 10 ** 3, "gd"),
                                          ("balanced tau=1e8", "balanced", 10 ** 8, "flow"),
                                          ("large-noise tau=1e8", "large-noise", 10 ** 8, "flow")):
        cfg = attnsim.preset(preset, n_test=0, test_metrics="population", steps=steps)
        res = attnsim.simulate(cfg, SaveAt([0, steps]), dynamics=dynamics)
        q = res.W.T @ res.p
        nu = res.nu
        mu = np.zeros((2, cfg.d))
        mu[0, 0] = mu[1, 1] = cfg.signal_norm                     # make_data's signals
        out[name] = (*attnsim.population_moments(
            q @ q, q @ nu, nu @ nu, mu @ q, mu @ nu, mu_norm=cfg.signal_norm, rho=cfg.rho,
            roles=attnsim.make_data(cfg.replace(n_train=2, d=2)).roles, sigma=cfg.sigma_eps, noise=cfg.noise),
            cfg, (q @ q, mu @ q, q @ nu, nu @ nu, mu @ nu))
    return out


def load_before(src):
    """``population_metrics`` of another source tree, as a module beside this attnsim."""
    path = pathlib.Path(src) / "attnsim" / "_population.py"
    spec = importlib.util.spec_from_file_location("attnsim._population_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def per_save(rounds, before_src, cold=False):
    import attnsim
    from attnsim._kernels import population_twins
    from attnsim._population import DEFAULT_SE_TARGET, standard_normal_draws

    def numpy_all(mz, mv, cov):
        draws = standard_normal_draws(mz.shape[1], 2 ** 14, 8, 0)
        out = np.empty((2, 3, 2))
        population_twins.population_quadrature(mz, mv, np.broadcast_to(cov, (mz.shape[1], 2, 2)), np.array([1.0, -1.0]),
                                               draws, 2 ** 14 // 8, -1.0, out)
        return {"loss": out[0, 2, 0], "loss_se": out[0, 2, 1], "acc": out[1, 2, 0], "acc_se": out[1, 2, 1],
                "n_draws": 2 ** 14}

    def public(fn, **kw):
        def call(mz, mv, cov):
            m = fn(mz, mv, cov, **kw)
            return {"loss": m.loss, "loss_se": m.loss_se, "acc": m.acc, "acc_se": m.acc_se, "n_draws": m.n_draws}
        return call

    methods = {"recorder": public(attnsim.population_metrics, se_target=DEFAULT_SE_TARGET),
               "kernel-all": public(attnsim.population_metrics), "numpy-all": numpy_all}
    def save(module, cfg, inner):
        spec = module.PopulationSpec.from_config(cfg.replace(d=2))      # signals e_1, e_2 scaled: inner holds the rest
        spec.warm_up()

        def call(mz, mv, cov):
            m = spec.metrics(*inner)
            return {"loss": m.loss, "loss_se": m.loss_se, "acc": m.acc, "acc_se": m.acc_se, "n_draws": m.n_draws}
        return call

    before = load_before(before_src) if before_src else None
    if before is not None:
        methods["before"] = public(before.population_metrics)
        methods["recorder-before"] = public(before.population_metrics, se_target=DEFAULT_SE_TARGET)
    for name, (mz, mv, cov, cfg, inner) in states().items():
        methods["save"] = save(attnsim._population, cfg, inner)
        if before is not None:
            methods["save-before"] = save(before, cfg, inner)
        ref = numpy_all(mz, mv, cov)
        vals = {m: fn(mz, mv, cov) for m, fn in methods.items()}      # also compiles and caches the draws
        for m, v in vals.items():
            for what in ("loss", "acc"):
                se = np.hypot(v[what + "_se"], ref[what + "_se"])
                assert abs(v[what] - ref[what]) <= 3 * se + 1e-12, f"{name}: {m} {what} {v[what]} vs {ref[what]} (se {se})"
        assert abs(vals["kernel-all"]["loss"] - ref["loss"]) <= 1e-12 and abs(vals["kernel-all"]["acc"] - ref["acc"]) <= 1e-12
        assert vals["save"] == vals["recorder"], (vals["save"], vals["recorder"])
        flush = np.ones(2 * 2 ** 20) if cold else None         # 16 MB
        wall = {m: [] for m in methods}
        cpu = {m: [] for m in methods}
        for _ in range(rounds):
            for m, fn in methods.items():     # alternating: the shared machine's drift hits every method alike
                if cold:
                    flush.sum()
                w0, c0 = time.perf_counter(), time.thread_time()
                fn(mz, mv, cov)
                cpu[m].append(time.thread_time() - c0)
                wall[m].append(time.perf_counter() - w0)
        for m in methods:
            v = vals[m]
            print(json.dumps({"state": name, "method": m, "wall_ms": round(1e3 * np.median(wall[m]), 4),
                              "cpu_ms": round(1e3 * np.median(cpu[m]), 4), "n_draws": v["n_draws"],
                              "loss": round(v["loss"], 6), "loss_se": float(f"{v['loss_se']:.2e}"),
                              "acc": round(v["acc"], 6), "acc_se": float(f"{v['acc_se']:.2e}")}), flush=True)


def kernel_versions(before, rounds):
    """This tree's quadrature kernel against another version of its file, same draws, same bits."""
    import types

    from attnsim._population import standard_normal_draws

    here = pathlib.Path(__file__).resolve().parents[1] / "src" / "attnsim" / "_kernels" / "population.py"

    def load(path, name):
        text = re.sub(r"^from \.(\w+) import", r"from attnsim._kernels.\1 import",
                      pathlib.Path(path).read_text(), flags=re.M)
        module = types.ModuleType(name)
        exec(compile(text.replace("cache=True", "cache=False"), name, "exec"), module.__dict__)
        return module

    versions = {"before": load(before, "population_before"), "this": load(here, "population_this")}
    ys = np.array([1.0, -1.0])
    for name, (mz, mv, cov, cfg, inner) in states().items():
        T = mz.shape[1]
        cov = np.ascontiguousarray(np.broadcast_to(cov, (T, 2, 2)))
        for M in (2 ** 9, 2 ** 12, 2 ** 14):
            draws = standard_normal_draws(T, M, 8, 0)
            out = {k: np.empty((2, 3, 2)) for k in versions}
            for k, module in versions.items():
                module.population_quadrature(mz, mv, cov, ys, draws, M // 8, -1.0, out[k])
            assert np.array_equal(out["before"].view(np.uint64), out["this"].view(np.uint64)), (name, M)
            cpu = {k: [] for k in versions}
            for _ in range(rounds):
                for k, module in versions.items():
                    c0 = time.thread_time()
                    for _ in range(5):
                        module.population_quadrature(mz, mv, cov, ys, draws, M // 8, -1.0, out[k])
                    cpu[k].append((time.thread_time() - c0) / 5)
            b, t = np.median(cpu["before"]), np.median(cpu["this"])
            print(json.dumps({"state": name, "draws": M, "before_ms": round(1e3 * b, 4), "this_ms": round(1e3 * t, 4),
                              "before_ns_per_draw": round(1e9 * b / M, 1), "this_ns_per_draw": round(1e9 * t / M, 1),
                              "speed-up": round(b / t, 3)}), flush=True)


def e2e(args):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="per save: alternating timing rounds")
    parser.add_argument("--cold", action="store_true", help="per save: a 16 MB pass before every timed call")
    parser.add_argument("--before", default=None, help="per save: an attnsim source tree (its src/) to time too")
    parser.add_argument("--kernel-before", default=None, metavar="FILE",
                        help="the quadrature kernel against another version of _kernels/population.py")
    parser.add_argument("--e2e", action="store_true", help="whole-command sample versus population runs instead")
    parser.add_argument("--d", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["sample", "population"], default=None,
                        help="--e2e: one kind only (e.g. sample against an attnsim without population metrics)")
    args = parser.parse_args()
    if args.kernel_before:
        kernel_versions(args.kernel_before, args.rounds)
    elif args.e2e:
        e2e(args)
    else:
        per_save(args.rounds, args.before, args.cold)


if __name__ == "__main__":
    main()
