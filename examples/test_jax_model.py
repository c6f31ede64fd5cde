"""A JAX implementation of the paper's model (Sakamoto & Sato, ICML 2025) checked with attnsim.testing.

Run with ``pytest examples/test_jax_model.py`` (skips without jax; run as a script,
it says so and exits 0); writes nothing (no out/examples/test_jax_model output). See docs/testing.md.
"""

import importlib.util
import sys

import pytest
from hypothesis import given, settings

from attnsim.testing import assert_gradients_match, problems

if __name__ == "__main__" and importlib.util.find_spec("jax") is None:   # run as a script (make examples)
    print(f"{__file__}: skipped, jax is not installed (pip install jax); nothing to check", file=sys.stderr)
    raise SystemExit(0)

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
jnp = jax.numpy


def loss(W, p, X, y, nu):
    f = (jax.nn.softmax(X @ (W.T @ p), axis=1) * (X @ nu)).sum(axis=1)
    return jnp.mean(jnp.logaddexp(0.0, -y * f))


def loss_and_grads(X, y, W, p, nu):
    value, (grad_W, grad_p) = jax.value_and_grad(loss, argnums=(0, 1))(W, p, X, y, nu)
    return value, grad_W, grad_p


@settings(max_examples=20, deadline=None)     # each new shape compiles
@given(problems())
def test_jax_gradients(problem):
    assert_gradients_match(loss_and_grads, problem)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
