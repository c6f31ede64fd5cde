"""Developer tool: capture every Result array of the presets, and compare two captures bit for bit.

    python tests/tools/bit_identity.py capture DIR     # the presets x {primal, dual} x {p, Wp} x GD, and the flow
    python tests/tools/bit_identity.py compare DIR_A DIR_B

Used before and after a refactor that must not change a bit (capture on the old commit, then on
the new one, then compare). Not collected by pytest (no ``test_`` prefix).
"""

import dataclasses
import os
import sys

import numpy as np

import attnsim


def capture(out):
    os.makedirs(out, exist_ok=True)

    def dump(res, name):
        assert res.status == "finished", res.message
        arrays = {f.name: getattr(res, f.name) for f in dataclasses.fields(res)
                  if isinstance(getattr(res, f.name), np.ndarray)}
        np.savez(os.path.join(out, name + ".npz"), **arrays)

    for name in ("balanced", "large-noise", "large-signal"):
        for trainable in ("p", "Wp"):
            for engine in ("primal", "dual"):
                steps = 120 if (engine, trainable) == ("primal", "Wp") else 600
                cfg = attnsim.preset(name, steps=steps, n_test=50, trainable=trainable)
                dump(attnsim.simulate(cfg, engine=engine), f"{name}_{trainable}_{engine}_gd")
            cfg = attnsim.preset(name, steps=10**9, n_test=50, trainable=trainable)
            dump(attnsim.simulate(cfg, dynamics="flow", flow={"gd_start_max": 3000}), f"{name}_{trainable}_flow")
    for trainable in ("p+nu", "Wp+nu"):                      # the head sets, W0 random and W0 = I
        for w0 in ("random", "identity"):
            cfg = attnsim.preset("balanced", steps=600, n_test=50, trainable=trainable, w0=w0)
            dump(attnsim.simulate(cfg, engine="dual"), f"head_{trainable}_{w0}_dual_gd")
            dump(attnsim.simulate(dataclasses.replace(cfg, optimizer="ngd"), engine="dual"),
                 f"head_{trainable}_{w0}_dual_ngd")
            cfg = dataclasses.replace(cfg, steps=10**9)
            dump(attnsim.simulate(cfg, dynamics="flow", flow={"gd_start_max": 3000}), f"head_{trainable}_{w0}_flow")
    cfg = attnsim.preset("magen", n_test=50)
    dump(attnsim.simulate(dataclasses.replace(cfg, steps=2000), engine="dual"), "magen_dual_gd")
    dump(attnsim.simulate(dataclasses.replace(cfg, steps=10**9), dynamics="flow", flow={"gd_start_max": 3000}),
         "magen_flow")


def compare(a, b):
    bad = 0
    for fname in sorted(os.listdir(a)):
        A, B = np.load(os.path.join(a, fname)), np.load(os.path.join(b, fname))
        for key in A.files:
            if key not in B.files or not np.array_equal(A[key], B[key], equal_nan=True):
                print(fname, key, "differs" if key in B.files else "missing")
                bad += 1
    print("differences:", bad)
    return bad


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(sys.argv[2])
    else:
        sys.exit(1 if compare(sys.argv[2], sys.argv[3]) else 0)
