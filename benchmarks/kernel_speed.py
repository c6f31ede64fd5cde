"""Steady-state steps per CPU-second of one trainable set in dual coordinates, balanced preset.

    python benchmarks/kernel_speed.py TRAINABLE [W0]      # e.g. p+nu identity

``prepare_run`` with no test set, ``warm_up``, then three timed blocks of 50,000 steps of the
run's coordinates (``process_time``); prints the median. One process per measurement: run the
sets you compare one after the other, in the same session.
"""

import sys
import time

import numpy as np

import attnsim


def main(trainable="p", w0="random", steps=200_000):
    cfg = attnsim.preset("balanced", trainable=trainable, n_test=0, w0=w0, steps=steps)
    run = attnsim.prepare_run(cfg, attnsim.SaveAt.explicit([0], steps), engine="dual")
    run.warm_up()
    rates = []
    for _ in range(3):
        t0 = time.process_time()
        run.coords.advance(steps // 4, np.zeros(run.pb.n))
        rates.append(steps // 4 / (time.process_time() - t0))
    print(f"{trainable} w0={w0}: {np.median(rates):,.0f} steps per CPU-second")


if __name__ == "__main__":
    main(*sys.argv[1:3])
