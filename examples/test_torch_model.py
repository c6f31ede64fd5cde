"""A PyTorch implementation of the paper's model (Sakamoto & Sato, ICML 2025) checked with attnsim.testing.

Run with ``pytest examples/test_torch_model.py`` (skips without torch; run as a script,
it says so and exits 0); writes nothing (no out/examples/test_torch_model output). See docs/testing.md.
"""

import importlib.util
import sys

import pytest
from hypothesis import given, settings

from attnsim.testing import assert_gradients_match, problems

if __name__ == "__main__" and importlib.util.find_spec("torch") is None:   # run as a script (make examples)
    print(f"{__file__}: skipped, torch is not installed (pip install torch); nothing to check", file=sys.stderr)
    raise SystemExit(0)

torch = pytest.importorskip("torch")


def loss_and_grads(X, y, W, p, nu):
    X, y, nu = (torch.tensor(a) for a in (X, y, nu))
    W, p = torch.tensor(W, requires_grad=True), torch.tensor(p, requires_grad=True)
    f = (torch.softmax(X @ (W.T @ p), dim=1) * (X @ nu)).sum(dim=1)
    loss = torch.logaddexp(torch.zeros_like(f), -y * f).mean()   # softplus drops e^-u beyond u = 20
    loss.backward()
    return loss, W.grad, p.grad


@settings(deadline=None)     # the first call compiles
@given(problems())
def test_torch_gradients(problem):
    assert_gradients_match(loss_and_grads, problem)


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
