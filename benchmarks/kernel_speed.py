"""Steps per CPU-second of every stepping kernel, against another copy of attnsim, in one process.

    python benchmarks/kernel_speed.py                        # this attnsim alone
    python benchmarks/kernel_speed.py --against DIR          # DIR: another attnsim package (its src/attnsim),
                                                             # e.g. from `git worktree add /tmp/old <commit>`
    python benchmarks/kernel_speed.py --against DIR --only dual --repeats 9

Cases: the balanced preset (n = 20, T = 8, N = 160, d = 2000; d = 400 for primal W, p) in every engine
x trainable set x optimiser, and the flow's integrator (``gd_start=0``). Each case is built in both
versions from the same ``Config`` through ``prepare_run`` (no test set), warmed up (compilation or
cache load, not timed), checked to agree (the scores after one block, 1e-9 relative), and then timed
in short alternating blocks, other / this / other / this ..., with ``time.process_time``, over
several instances of each run in turn (``make``): the machine's drift and load hit both alike, each
ratio this/other is taken between adjacent blocks, and the instances average out where a run's
arrays land in memory. Prints the median steps per CPU-second of each version, the median of the block ratios and
its quartiles; cases the other version lacks (a new optimiser) are timed alone.
"""

import argparse
import dataclasses
import importlib.util
import os
import sys
import time

import numpy as np

import attnsim

#: (name, engine, trainable, optimizer, overrides, steps per block)
CASES = [
    *[(f"dual {t} {o}{' W0=I' if w else ''}", "dual", t, o, {"w0": "identity"} if w else {}, 2000)
      for t in ("p", "Wp", "p+nu", "Wp+nu") for o in ("gd", "ngd", "momentum") for w in (False, True)
      if not (w and t.startswith("Wp"))],
    *[(f"primal {t} {o}", "primal", t, o, {}, 100) for t in ("p", "p+nu") for o in ("gd", "ngd", "momentum")],
    *[(f"primal {t} {o}", "primal", t, o, {"d": 400}, 20) for t in ("Wp", "Wp+nu") for o in ("gd", "ngd", "momentum")],
    *[(f"flow {t}", "flow", t, "gd", {}, 30_000) for t in ("p", "Wp", "p+nu", "Wp+nu")],
]


def load_other(path):
    """The attnsim package at ``path`` imported as ``attnsim_other`` (its own numba cache)."""
    spec = importlib.util.spec_from_file_location("attnsim_other", os.path.join(path, "__init__.py"),
                                                  submodule_search_locations=[path])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["attnsim_other"] = mod
    spec.loader.exec_module(mod)
    return mod


def make(lib, engine, trainable, optimizer, overrides, steps, instances):
    """Timed blocks of ``lib``'s case (None if that attnsim lacks the optimiser): ``block(k)`` advances
    instance ``k % instances`` by ``steps`` and returns ``(steps per CPU-second, run)``. Several
    instances, each with its own arrays: where a process happens to place a run's arrays moves its
    speed by up to 15 % on one machine, the same in every block of that run; the instances average
    it out. A flow block integrates a fresh run from step 0."""
    fields = {f.name for f in dataclasses.fields(lib.Config)}
    kw = dict(trainable=trainable, n_test=0, steps=10**9, lr=5e-3, **overrides)
    if optimizer != "gd":
        kw["optimizer"] = optimizer
        if optimizer == "momentum":
            if "momentum" not in fields:
                return None
            kw["momentum"] = 0.9
    cfg = lib.preset("balanced", **kw)
    save = lib.SaveAt.explicit([0, 10**9], 10**9)
    flow = dict(dynamics="flow", flow={"gd_start": 0}) if engine == "flow" else dict(engine=engine)

    def fresh():
        run = lib.prepare_run(cfg, save, **flow)
        run.coords.plan(steps, steps)            # the flow: the switch to the integrator
        return run

    runs = [fresh() for _ in range(instances)]
    runs[0].warm_up()

    def block(k):
        run = fresh() if engine == "flow" else runs[k % instances]
        t0 = time.process_time()
        done = run.coords.advance(steps, np.zeros(run.pb.n))
        return done / (time.process_time() - t0), run
    return block


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--against", help="directory of another attnsim package (src/attnsim of an older commit)")
    ap.add_argument("--only", action="append", default=[], help="run only cases whose name contains this")
    ap.add_argument("--repeats", type=int, default=24, help="timed blocks of each version per case")
    ap.add_argument("--instances", type=int, default=6, help="runs of each version per case, used in turn")
    args = ap.parse_args(argv)
    other = load_other(args.against) if args.against else None
    print(f"{'case':28s} {'other /s':>12s} {'this /s':>12s} {'this/other':>10s} {'quartiles':>13s}")
    for name, engine, trainable, optimizer, overrides, steps in CASES:
        if args.only and not any(o in name for o in args.only):
            continue
        this = make(attnsim, engine, trainable, optimizer, overrides, steps, args.instances)
        theirs = make(other, engine, trainable, optimizer, overrides, steps, args.instances) if other else None
        rates = {"this": [], "other": []}
        for k in range(args.repeats):
            if theirs is not None:
                r, run_o = theirs(k)
                rates["other"].append(r)
            r, run_t = this(k)
            rates["this"].append(r)
            if k == 0 and theirs is not None:            # the same iterate, before anything is trusted
                zo, zt = run_o.coords.observe().z, run_t.coords.observe().z
                if not np.allclose(zo, zt, rtol=1e-9, atol=1e-12):
                    raise SystemExit(f"{name}: the two versions disagree (max |dz| {np.max(np.abs(zo - zt)):.3g})")
        t = float(np.median(rates["this"]))
        if rates["other"]:
            o = float(np.median(rates["other"]))
            q1, q2, q3 = np.percentile(np.array(rates["this"]) / np.array(rates["other"]), [25, 50, 75])
            print(f"{name:28s} {o:12,.0f} {t:12,.0f} {q2:10.3f} {q1:6.3f}-{q3:.3f}", flush=True)
        else:
            print(f"{name:28s} {'-':>12s} {t:12,.0f} {'-':>10s}", flush=True)


if __name__ == "__main__":
    main()
