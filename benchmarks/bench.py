"""attnsim benchmark harness: agreement first, then steady-state steps per second.

    python benchmarks/bench.py                 # everything (about 30-40 minutes on 2 cores)
    python benchmarks/bench.py --quick         # small version, to check the harness
    python benchmarks/bench.py --only head     # one section: head, sweep, e2e, auto, batch, long

Every (case, implementation) pair is measured in its own fresh process, so that its
peak memory (``ru_maxrss``) is its own and one library's thread pools cannot slow down
another's. In that process the harness

1. builds the problem from an ``attnsim.Config`` (same data and initialisation for
   every implementation),
2. runs ``CHECK_STEPS`` updates and compares the loss trajectory with the NumPy
   closed-form reference computed by the parent (float64: rtol 1e-9; float32: 1e-4).
   An implementation that disagrees is reported as REFUSED and never timed,
3. times the warm-up (JIT compilation or cache load, first call) on its own,
4. times blocks of steps sized to take about ``--budget`` seconds, ``--repeats``
   times, and reports the median steps/s (and the spread).

All libraries run on one thread (torch.set_num_threads(1), single-threaded BLAS,
XLA on one CPU) so that the comparison is one core against one core; batched runs
(section ``batch``) use both cores. The machine is shared: compare ratios measured in
the same run, and read the load averages printed with each section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHECK_STEPS = 20
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


# ------------------------------------------------------------------ worker side


def peak_rss_mb():
    """Peak resident memory of this process since its exec (VmHWM; unlike ru_maxrss it does
    not inherit the parent's peak across fork + exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else 0.5 * (xs[m - 1] + xs[m])


def worker(spec: dict) -> dict:
    """Measure one implementation on one problem; ``spec`` as built by ``measure``."""
    import numpy as np

    sys.path.insert(0, HERE)
    import impls

    out = {"impl": spec["impl"], "n": spec["n"], "d": spec["d"], "trainable": spec["trainable"]}
    t0 = time.perf_counter()
    try:
        make = impls.IMPLS[spec["impl"]]
    except KeyError:
        return {**out, "status": "unknown implementation"}
    try:
        pb = impls.problem(spec["n"], spec["d"], spec["trainable"])
        trajectory, stepper = make(pb)
    except ImportError as exc:
        return {**out, "status": f"skipped ({exc.name} not installed)"}
    out["setup_s"] = time.perf_counter() - t0
    # warm-up first (JIT compilation or cache load, first-call costs), timed on its own
    t = time.perf_counter()
    stepper.warm_up()
    out["warmup_s"] = time.perf_counter() - t

    if spec.get("reference") is not None:
        ref = np.array(spec["reference"])
        t = time.perf_counter()
        traj = np.asarray(trajectory(len(ref) - 1), dtype=np.float64)
        out["check_s"] = time.perf_counter() - t
        rtol = 1e-4 if spec["impl"].endswith("f32") else 1e-9
        err = float(np.max(np.abs(traj - ref) / np.abs(ref)))
        out["max_rel_err"] = err
        if traj.shape != ref.shape or not err <= rtol:
            out["status"] = f"REFUSED: loss trajectory differs from the reference (max rel err {err:.2e} > {rtol:g})"
            out["peak_rss_mb"] = peak_rss_mb()
            return out
    else:
        out["trajectory"] = np.asarray(trajectory(spec.get("check_steps", CHECK_STEPS)), dtype=np.float64).tolist()

    per_call = getattr(stepper, "steps_per_call", lambda k: k)
    budget = spec["budget"]
    k = 1
    while True:                                     # size the block to ~budget seconds
        t = time.perf_counter()
        stepper.advance(k)
        dt = time.perf_counter() - t
        if dt >= budget / 4 or per_call(k) >= spec.get("max_block", 10**9):
            break
        k *= 4 if dt < budget / 64 else 2
    block = max(1, int(per_call(k) * budget / max(dt, 1e-9)))
    block = min(block, spec.get("max_block", 10**9))
    rates, cpu_rates, cpu = [], [], []
    for _ in range(spec["repeats"]):
        t, c = time.perf_counter(), time.process_time()
        stepper.advance(block)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        rates.append(per_call(block) / dt)
        cpu_rates.append(per_call(block) / max(dc, 1e-9))
        cpu.append(dc / dt)
    # steps per CPU-second: what the process gets done per second it is actually on a core,
    # i.e. the rate on an idle core; wall-clock rates on the shared machine are also kept.
    out.update(status="ok", block=per_call(block), steps_per_s=_median(rates), rates=rates,
               steps_per_cpu_s=_median(cpu_rates), cpu_per_wall=_median(cpu),
               peak_rss_mb=peak_rss_mb())
    return out


# ------------------------------------------------------------------ parent side


def measure(impl, n, d, trainable, *, reference=None, budget=1.0, repeats=5, max_block=None, timeout=1800,
            env=None, check_steps=CHECK_STEPS):
    """Run ``worker`` in a fresh single-threaded process; returns its result dict."""
    spec = dict(impl=impl, n=n, d=d, trainable=trainable, reference=reference, budget=budget, repeats=repeats,
                check_steps=check_steps)
    if max_block:
        spec["max_block"] = max_block
    env = {**os.environ, **ONE_THREAD, **(env or {})}
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**spec, "status": f"timed out after {timeout} s", "reference": None}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {**spec, "reference": None, "status": f"worker failed: {proc.stderr.strip().splitlines()[-1:]}"}


def reference_trajectory(n, d, trainable, check_steps=CHECK_STEPS):
    res = measure("numpy", n, d, trainable, budget=0.05, repeats=1, check_steps=check_steps)
    if res.get("status") != "ok":
        raise RuntimeError(f"reference failed: {res}")
    return res["trajectory"]


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def fmt_rate(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


# ------------------------------------------------------------------ sections


HEAD_IMPLS = ["attnsim-dual", "attnsim-primal", "numpy", "torch-f64", "torch-f32", "torch-f64-reordered", "jax-f64"]


def section_head(args):
    """Official setting and d in {1000, 4500}, both trainable sets, every implementation."""
    rows = []
    cases = [(20, 2000), (20, 1000), (20, 4500)] if not args.quick else [(20, 300)]
    for n, d in cases:
        for tr in ("Wp", "p"):
            ref = reference_trajectory(n, d, tr)
            log(f"[head] n={n} d={d} {tr}  load {loadavg()}")
            for impl in HEAD_IMPLS:
                r = measure(impl, n, d, tr, reference=ref, budget=args.budget, repeats=args.repeats,
                            max_block=None)
                log(f"   {impl:22s} {r.get('status'):10.60s} {fmt_rate(r.get('steps_per_cpu_s'))} steps/CPU-s")
                rows.append(r)
            if (n, d) == cases[0]:
                # once: the dual kernels compiled from scratch (empty numba cache)
                import tempfile

                with tempfile.TemporaryDirectory() as cache:
                    r = measure("attnsim-dual", n, d, tr, reference=ref, budget=args.budget / 4, repeats=1,
                                env={"NUMBA_CACHE_DIR": cache})
                r["impl"] = "attnsim-dual (cold cache)"
                log(f"   {r['impl']:22s} warm-up {r.get('warmup_s')} s")
                rows.append(r)
    return rows


def section_official(args):
    """The official setting only (n = 20, d = 2000), every implementation: a quick re-measurement
    for when the machine is quiet."""
    rows = []
    for tr in ("Wp", "p"):
        ref = reference_trajectory(20, 2000, tr)
        log(f"[official] {tr}  load {loadavg()}")
        for impl in HEAD_IMPLS:
            r = measure(impl, 20, 2000, tr, reference=ref, budget=args.budget, repeats=args.repeats)
            log(f"   {impl:22s} {r.get('status'):10.60s} {fmt_rate(r.get('steps_per_cpu_s'))} steps/CPU-s, "
                f"{fmt_rate(r.get('steps_per_s'))} steps/s wall  load {loadavg()}")
            rows.append(r)
    return rows


def section_sweep(args):
    """Steps/s against d and n for attnsim dual and primal (and torch at n = 20).

    Agreement is checked on 5 steps here (20 in ``head``); the primal engine is left out
    at n = 400 for d >= 4000, where its set-up alone takes minutes on a shared core.
    """
    rows = []
    ds = [500, 1000, 2000, 4000, 8000] if not args.quick else [200, 400]
    ns = [20, 100, 400] if not args.quick else [20, 50]
    for tr in ("Wp", "p"):
        for n in ns:
            for d in ds:
                log(f"[sweep] {tr} n={n} d={d}  load {loadavg()}")
                impls_here = ["attnsim-dual", "attnsim-primal"] + (["torch-f64-reordered"] if n == ns[0] else [])
                if n == ns[-1] and d >= 4000:
                    impls_here = ["attnsim-dual"]   # primal at N = 3200, d >= 4000: minutes per point
                ref = reference_trajectory(n, d, tr, check_steps=5)
                for impl in impls_here:
                    r = measure(impl, n, d, tr, reference=ref, budget=args.budget / 2, repeats=3, timeout=900)
                    r.pop("trajectory", None)
                    log(f"   {impl:22s} {r.get('status'):10.60s} {fmt_rate(r.get('steps_per_cpu_s'))} steps/CPU-s")
                    rows.append(r)
    return rows


def section_dscale(args):
    """Dual steps/s at d = 500 and d = 8000 (n = 20), measured alternately so that both see
    the same machine load; the per-step work does not involve d."""
    rows = []
    for rep in range(3 if not args.quick else 1):
        for tr in ("Wp", "p"):
            for d in (500, 8000) if not args.quick else (100, 400):
                r = measure("attnsim-dual", 20, d, tr, budget=args.budget, repeats=5)
                r.pop("trajectory", None)
                r["rep"] = rep
                log(f"[dscale] {tr} d={d} rep {rep}: {fmt_rate(r.get('steps_per_cpu_s'))} steps/CPU-s, "
                    f"set-up {r.get('setup_s', 0):.1f} s  load {loadavg()}")
                rows.append(r)
    return rows


def _e2e_script(trainable, steps, saves, n_test, engine):
    return (
        "import time, json, attnsim\n"
        f"cfg = attnsim.preset('balanced', trainable={trainable!r}, steps={steps}, n_test={n_test})\n"
        "t, c = time.perf_counter(), time.process_time()\n"
        f"res = attnsim.simulate(cfg, attnsim.SaveAt.log({steps}, {saves}), engine={engine!r})\n"
        "wall, cpu = time.perf_counter() - t, time.process_time() - c\n"
        "print(json.dumps(dict(trainable=cfg.trainable, steps=cfg.steps, saves=len(res.steps), n_test=cfg.n_test,\n"
        "    engine=res.engine, total_s=wall, stepping_s=res.wall_time, compile_s=res.compile_time,\n"
        "    setup_s=wall - res.wall_time - res.compile_time, steps_per_s_stepping=cfg.steps / res.wall_time,\n"
        "    steps_per_s_total=cfg.steps / wall, test_acc=float(res.test_acc[-1]), cpu_s=cpu,\n"
        "    steps_per_cpu_s_total=cfg.steps / cpu,\n"
        "    peak_rss_mb=[int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])))\n"
    )


def section_e2e(args):
    """attnsim.simulate end to end at the official setting: saves, 1000-sample test set."""
    rows = []
    plan = [("Wp", 10**6, 200), ("p", 10**7, 200), ("Wp", 10**5, 200), ("p", 10**6, 200)]
    if args.quick:
        plan = [("Wp", 10**4, 50), ("p", 10**4, 50)]
    for tr, steps, saves in plan:
        log(f"[e2e] {tr} steps={steps:.0e} saves={saves}  load {loadavg()}")
        proc = subprocess.run([sys.executable, "-c", _e2e_script(tr, steps, saves, 1000, "auto")],
                              capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
        try:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            r = dict(trainable=tr, steps=steps, status=f"failed: {proc.stderr[-300:]}")
        r["load"] = loadavg()
        log("   ", r)
        rows.append(r)
    return rows


def section_auto(args):
    """Does engine='auto' pick the faster engine? Steady-state dual vs primal at a few sizes."""
    import attnsim

    rows = []
    cases = [(20, 2000, "p"), (20, 2000, "Wp"), (50, 8, "p"), (20, 64, "p"), (20, 256, "p"), (20, 128, "Wp"),
             (20, 400, "Wp"), (100, 200, "p")]
    if args.quick:
        cases = cases[2:4]
    for n, d, tr in cases:
        N = n * 8
        pick = attnsim.choose_engine(N, d, 0, 10**6, 200, tr)
        res = {e: measure(f"attnsim-{e}", n, d, tr, budget=args.budget / 2, repeats=3) for e in ("dual", "primal")}
        rates = {e: res[e].get("steps_per_cpu_s") or res[e].get("steps_per_s") for e in res}
        faster = max(rates, key=lambda e: rates[e] or 0)
        rows.append(dict(n=n, N=N, d=d, trainable=tr, auto=pick, dual=rates["dual"], primal=rates["primal"],
                         faster=faster, load=loadavg()))
        log("[auto]", rows[-1])
    return rows


def _batch_script(workers, n_runs, steps):
    return (
        "import time, json, attnsim\n"
        "if __name__ == '__main__':\n"
        f"    cfgs = [attnsim.preset('balanced', steps={steps}, seed=s, n_test=1000) for s in range({n_runs})]\n"
        "    t = time.perf_counter()\n"
        f"    res = attnsim.simulate_many(cfgs, workers={workers})\n"
        "    print(json.dumps(dict(wall_s=time.perf_counter() - t)))\n"
    )


def section_batch(args):
    """simulate_many: 4 official-setting Wp runs on 1 worker vs 2 worker processes."""
    rows = []
    n_runs, steps = (4, 200_000) if not args.quick else (2, 5_000)
    for workers in (1, 2):
        path = os.path.join(HERE, f".batch_{workers}.py")
        with open(path, "w") as fh:
            fh.write(_batch_script(workers, n_runs, steps))
        try:
            start = loadavg()
            proc = subprocess.run([sys.executable, path], capture_output=True, text=True,
                                  env={**os.environ, **ONE_THREAD})
            r = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            os.unlink(path)
        rows.append(dict(workers=workers, runs=n_runs, steps=steps, wall_s=r["wall_s"], load_start=start,
                         load_end=loadavg()))
        log("[batch]", rows[-1])
    return rows


def section_long(args):
    """10^8 p-only steps at the official setting through the CLI, timed by /usr/bin/time -v."""
    steps = 10**8 if not args.quick else 10**6
    cmd = [os.path.join(os.path.dirname(sys.executable), "attnsim"), "run", "--preset", "balanced", "--trainable",
           "p", "--steps", str(steps), "--saves", "500", "--out", os.path.join(HERE, ".long.npz"), "--no-progress"]
    log("[long]", " ".join(cmd), " load", loadavg())
    start = loadavg()
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    wall = time.perf_counter() - t
    info = dict(command="/usr/bin/time -v " + " ".join(cmd[0:1]).replace(ROOT + "/", "") + " " + " ".join(cmd[1:]),
                steps=steps, wall_s=wall, load_start=start, load_end=loadavg(), returncode=proc.returncode,
                stdout=proc.stdout[-2000:])
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            info["peak_rss_mb"] = int(line.split()[-1]) / 1024
        if "User time" in line:
            info["user_s"] = float(line.split()[-1])
        if "Percent of CPU" in line:
            info["cpu_percent"] = line.split()[-1]
    if os.path.exists(os.path.join(HERE, ".long.npz")):
        os.unlink(os.path.join(HERE, ".long.npz"))
    log("   ", {k: v for k, v in info.items() if k != "stdout"})
    return [info]


SECTIONS = {"head": section_head, "official": section_official, "sweep": section_sweep, "e2e": section_e2e, "auto": section_auto,
            "batch": section_batch, "dscale": section_dscale, "long": section_long}


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "L1d cache", "L2 cache", "L3 cache", "Flags")
    lines = [ln for ln in lscpu.splitlines() if ln.split(":")[0].strip() in keep]
    flags = [ln for ln in lines if ln.startswith("Flags")]
    lines = [ln for ln in lines if not ln.startswith("Flags")]
    if flags:
        f = flags[0].split()
        lines.append("SIMD: " + " ".join(x for x in ("avx", "avx2", "fma", "avx512f") if x in f))
    from importlib.metadata import PackageNotFoundError, version

    # package metadata only: importing torch here would inflate every worker's ru_maxrss
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "numba", "torch", "jax", "jaxlib"):
        try:
            versions[mod] = version(mod)
        except PackageNotFoundError:
            versions[mod] = "not installed"
    with open("/proc/meminfo") as fh:
        mem = fh.readline().strip()
    return {"lscpu": lines, "versions": versions, "mem": mem, "kernel": platform.release()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the harness")
    ap.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    ap.add_argument("--skip", action="append", choices=sorted(SECTIONS), default=[], help="skip these sections")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timed block (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per measurement (median; default 5)")
    ap.add_argument("--json", default=os.path.join(HERE, "results.json"), help="raw results file")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    sections = [s for s in (args.only or SECTIONS) if s not in args.skip]
    results = {}
    if os.path.exists(args.json):
        with open(args.json) as fh:
            results = json.load(fh)
    results["machine"] = machine()
    results["argv"] = sys.argv[1:]
    for name in sections:
        t = time.perf_counter()
        results[name] = {"rows": SECTIONS[name](args), "started_load": loadavg(),
                         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                         "seconds": time.perf_counter() - t}
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    if os.path.abspath(args.json) != os.path.join(HERE, "results.json"):
        # RESULTS.md is rendered from results.json (plus ANALYSIS.md): a run saved elsewhere, often one
        # section only, must not replace it
        log(f"wrote {args.json}; benchmarks/RESULTS.md left as it is (it renders benchmarks/results.json)")
        return 0
    sys.path.insert(0, HERE)
    import report

    report.write(results, os.path.join(HERE, "RESULTS.md"), os.path.join(HERE, "scaling.png"))
    log(f"wrote {args.json}, benchmarks/RESULTS.md, benchmarks/scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
