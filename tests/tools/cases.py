"""Small problems shared by several test files."""

from attnsim import Config

#: A flow run to 10^8 steps that finishes in well under a second, with population test metrics.
FLOW_CFG = Config(d=16, n_train=8, T=4, n_test=0, steps=10 ** 8, test_metrics="population")
#: Its flow options: a small integrator budget and a short exact-GD start.
FLOW = {"max_steps": 20_000, "gd_start": 200}
