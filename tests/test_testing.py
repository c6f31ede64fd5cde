"""attnsim.testing: its strategy respects its bounds, and its assertions catch planted bugs."""

import random
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

import attnsim.testing as testing
from attnsim.testing import (DEFAULT_MAX_GAP, Problem, assert_gradients_match, assert_trajectory_matches,
                             problems)


def numpy_model(X, y, W, p, nu, *, transpose_W=False, per_sample_sum=False, softmax_axis=1):
    """Loss and gradients by hand-written backpropagation; the keywords plant the bugs."""
    Wq = W if transpose_W else W.T           # official code's layout x @ W @ p is the bug
    z = X @ (Wq @ p)
    e = np.exp(z - z.max(axis=softmax_axis, keepdims=True))
    s = e / e.sum(axis=softmax_axis, keepdims=True)
    v = X @ nu
    f = (s * v).sum(axis=1)
    loss = np.mean(np.logaddexp(0.0, -y * f))
    df = -y / (1.0 + np.exp(y * f)) / (1 if per_sample_sum else len(y))
    ds = df[:, None] * v
    if softmax_axis == 1:
        dz = s * (ds - (s * ds).sum(axis=1, keepdims=True))
    else:
        dz = s * (ds - (s * ds).sum(axis=0, keepdims=True))
    dq = np.einsum("it,itk->k", dz, X)
    if transpose_W:
        return loss, np.outer(dq, p), W.T @ dq
    return loss, np.outer(p, dq), W @ dq


def numpy_step(X, y, W, p, nu, lr, sequential=False):
    _, dW, dp = numpy_model(X, y, W, p, nu)
    if sequential:     # bug: the p step sees the new W
        W = W - lr * dW
        _, _, dp = numpy_model(X, y, W, p, nu)
        return W, p - lr * dp
    return W - lr * dW, p - lr * dp


@pytest.fixture
def problem(rng):
    """n = 3, T = 4, d = 5, moderate saturation (largest gap 4)."""
    X = rng.standard_normal((3, 4, 5))
    W = rng.standard_normal((5, 5)) / np.sqrt(5)
    p = rng.standard_normal(5)
    z = np.einsum("itk,k->it", X, W.T @ p)
    top2 = np.sort(z, axis=1)[:, -2:]
    p *= 4.0 / (top2[:, 1] - top2[:, 0]).max()
    return Problem(X, np.array([1.0, -1.0, 1.0]), W, p, rng.standard_normal(5) / np.sqrt(5))


BOUNDS = dict(n=(2, 5), T=(3, 6), d=(1, 4), scale=(0.5, 2.0), max_gap=25.0)


@given(problems(**BOUNDS))
def test_problems_respect_their_bounds(prob):
    n, T, d = prob.X.shape
    assert 2 <= n <= 5 and 3 <= T <= 6 and 1 <= d <= 4
    assert prob.y.shape == (n,) and prob.W.shape == (d, d) and prob.p.shape == (d,) and prob.nu.shape == (d,)
    assert set(prob.y.tolist()) <= {-1.0, 1.0}
    assert 0.0 <= prob.min_gap <= prob.gap <= 25.0
    z = np.einsum("itk,k->it", prob.X, prob.W.T @ prob.p)
    top2 = np.sort(z, axis=1)[:, -2:]
    assert prob.gap == (top2[:, 1] - top2[:, 0]).max()
    assert 0.5 <= prob.scale <= 2.0


@pytest.mark.parametrize("what, condition", [
    ("gap 0", lambda p: p.gap == 0.0),
    ("gap near max_gap", lambda p: p.gap >= 0.99 * 25.0),
    ("a middle gap", lambda p: 5.0 <= p.gap <= 20.0),
    ("both labels", lambda p: set(p.y.tolist()) == {-1.0, 1.0}),
])
def test_problems_explore_the_range(what, condition):
    find(problems(**BOUNDS), condition, settings=settings(max_examples=500, database=None))


def test_problems_reach_fully_saturated_single_samples():
    # only the largest gap is controlled; with n = 1 that is every sample's gap
    find(problems(**{**BOUNDS, "n": (1, 5)}), lambda p: p.n == 1 and p.min_gap >= 20.0, settings=settings(max_examples=500, database=None))


def test_problems_default_max_gap_is_the_documented_one():
    find(problems(), lambda p: p.gap > 0.99 * DEFAULT_MAX_GAP, settings=settings(max_examples=500, database=None))
    assert DEFAULT_MAX_GAP == 15.0


MAX_PASSES = 120     # score passes one draw may make: <= 64 direction draws, then ~53 shrinks at the very worst


@pytest.fixture
def passes(monkeypatch):
    """Score passes (calls of ``_top_gaps``) made by each ``_build``; a draw past MAX_PASSES fails at once.

    A work limit instead of a wall-time limit: the old ``p *= 1 - 2**-50`` loop made millions of passes
    on the draws below, so it fails here in milliseconds, and the count does not depend on the machine.
    """
    counts = []
    top_gaps, build = testing._top_gaps, testing._build

    def counting(X, W, p):
        counts[-1] += 1
        if counts[-1] > MAX_PASSES:
            raise AssertionError(f"problems: one draw made more than {MAX_PASSES} passes over the scores")
        return top_gaps(X, W, p)

    def building(*args):
        counts.append(0)
        return build(*args)

    monkeypatch.setattr(testing, "_top_gaps", counting)
    monkeypatch.setattr(testing, "_build", building)
    return counts


# (n, T, d, seed, scale, target gap) draws on which the old loop ran for millions of passes (issue 17)
HUNG = [(2, 6, 2, 2298414371, 0.18470998465715488, 1.0000001e-08), (1, 12, 7, 1444875767, 0.1, 1e-07),
        (1, 8, 8, 382480957, 3.0, 15.0), (1, 5, 8, 157181683, 0.1, 1.0000001e-08)]


def extreme_draws(count, seed):
    """Sizes and scales at and inside the default bounds, targets at the snap threshold, tiny, mid, max and far."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scale = float(rng.choice([0.1, 3.0, rng.uniform(0.1, 3.0)]))
        gap = float(rng.choice([1e-8 * (1 + 1e-7), 1e-7, 2.0 ** -20, rng.uniform(0.0, 15.0), 15.0, 700.0]))
        yield (int(rng.integers(1, 9)), int(rng.integers(2, 13)), int(rng.integers(1, 17)),
               int(rng.integers(0, 2**32)), scale, gap)


@pytest.mark.parametrize("draw", HUNG)
def test_build_finishes_on_the_draws_that_hung(passes, draw):
    n, T, d, seed, scale, gap = draw
    prob = testing._build(n, T, d, seed, scale, gap, np.ones(n))
    assert gap * (1 - 1e-9) <= prob.gap <= gap
    assert passes[-1] <= 8


def test_build_hits_its_target_gap_from_below_in_few_passes(passes):
    for n, T, d, seed, scale, gap in extreme_draws(2000, 17):
        prob = testing._build(n, T, d, seed, scale, gap, np.ones(n))
        assert gap * (1 - 1e-9) <= prob.gap <= gap, (n, T, d, seed, scale, gap, prob.gap)
    # a direction draw or two, one rescale, rarely a few shrinks (measured: at most 7 over 20 000 such draws)
    assert max(passes) <= 8, np.bincount(passes)


@pytest.mark.parametrize("what, seeds, condition", [
    ("large n T shrunk to a gap above 1", [4], lambda p: p.n * p.T > 60 and p.gap > 1.0),   # hung before
    ("smallest positive gap", [0], lambda p: p.gap > 0.0),
])
def test_problems_every_draw_of_a_shrinking_search_finishes(passes, what, seeds, condition):
    # hypothesis' shrinking drives the draws to the extremes (sizes, scales, the gap's bounds) that hung
    for s in seeds:
        prob = find(problems(), condition, settings=settings(max_examples=300, database=None, derandomize=False,
                                                            suppress_health_check=list(HealthCheck)),
                    random=random.Random(s))
        assert condition(prob) and 0.0 <= prob.gap <= DEFAULT_MAX_GAP
    assert max(passes) <= 8


@pytest.mark.slow
@pytest.mark.parametrize("what, condition", [
    ("smallest positive gap", lambda p: p.gap > 0.0),
    ("gap near the maximum", lambda p: p.gap > 14.0),
    ("d = 1", lambda p: p.d == 1 and p.gap > 0.0),
    ("large n T", lambda p: p.n * p.T > 60 and p.gap > 1.0),
])
def test_problems_every_draw_finishes_over_many_seeds(passes, what, condition):
    for s in range(30):
        prob = find(problems(), condition, settings=settings(max_examples=300, database=None, derandomize=False,
                                                            suppress_health_check=list(HealthCheck)),
                    random=random.Random(s))
        assert condition(prob) and 0.0 <= prob.gap <= DEFAULT_MAX_GAP
    assert max(passes) <= 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(T=1), "T must be an int >= 2"),
    (dict(n=(3, 2)), "n must be"),
    (dict(scale=0.0), "scale must be > 0"),
    (dict(max_gap=-1.0), "max_gap must be finite and >= 0"),
])
def test_problems_rejects_bad_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        problems(**kwargs)


@settings(max_examples=25)
@given(problems())
def test_correct_numpy_model_passes(prob):
    assert_gradients_match(numpy_model, prob)


def test_transposed_W_is_caught(problem):
    with pytest.raises(AssertionError) as info:
        assert_gradients_match(lambda *a: numpy_model(*a, transpose_W=True), problem)
    msg = str(info.value)
    for name in ("loss:", "grad_W:", "grad_p:"):
        assert name in msg
    assert "top-score gap 4" in msg
    assert re.search(r"grad_W: norm-wise relative error \d\.\d{3}e[+-]\d\d > rtol = 1e-06 \(\|\|got - expected\|\| / \|\|expected\|\|\); "
                     r"worst entry \[\d, \d\]: "
                     r"expected \S+, got \S+ \(relative error \d\.\d{3}e[+-]\d\d\)", msg)


def test_missing_one_over_n_is_caught_in_the_gradients_only(problem):
    with pytest.raises(AssertionError, match=r"grad_W: norm-wise relative error 2\.000e\+00") as info:
        assert_gradients_match(lambda *a: numpy_model(*a, per_sample_sum=True), problem)
    assert "loss:" not in str(info.value)       # the loss itself is right
    assert re.search(r"grad_p: norm-wise relative error 2\.000e\+00 .* worst entry \[\d\]", str(info.value))


def test_softmax_over_the_wrong_axis_is_caught(problem):
    with pytest.raises(AssertionError, match=r"(?s)loss: norm-wise relative error .* grad_p: "):
        assert_gradients_match(lambda *a: numpy_model(*a, softmax_axis=0), problem)


def test_wrong_shapes_and_outputs_are_reported(problem):
    with pytest.raises(AssertionError, match=r"grad_W from fn has shape \(25,\), expected \(5, 5\)"):
        assert_gradients_match(lambda *a: (lambda o: (o[0], o[1].ravel(), o[2]))(numpy_model(*a)), problem)
    with pytest.raises(AssertionError, match=r"fn must return \(loss, grad_W, grad_p\); got tuple of length 2"):
        assert_gradients_match(lambda *a: numpy_model(*a)[:2], problem)
    with pytest.raises(AssertionError, match=r"loss from fn has shape \(3,\), expected a scalar"):
        assert_gradients_match(lambda *a: (np.ones(3),) + numpy_model(*a)[1:], problem)


def test_nan_output_fails(problem):
    with pytest.raises(AssertionError, match=r"grad_p: norm-wise relative error nan"):
        assert_gradients_match(lambda *a: numpy_model(*a)[:2] + (np.full(5, np.nan),), problem)


class FakeTensor:
    """Duck-typed like a torch tensor that needs .detach().cpu().numpy()."""

    def __init__(self, a):
        self._a = np.asarray(a)

    def __array__(self, *args, **kwargs):
        raise TypeError("call .detach() first")

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self._a


def test_tensors_with_detach_are_converted(problem):
    assert_gradients_match(lambda *a: tuple(FakeTensor(o) for o in numpy_model(*a)), problem)


def test_problem_arrays_are_read_only_and_copies_are_handed_out(problem):
    with pytest.raises(ValueError):
        problem.p[0] = 1.0

    def mutating(X, y, W, p, nu):
        out = numpy_model(X, y, W, p, nu)
        p[:] = 0.0
        return out

    before = problem.p.copy()
    assert_gradients_match(mutating, problem)
    assert np.array_equal(problem.p, before)


@pytest.mark.parametrize("trainable", ["Wp", "p"])
def test_correct_step_follows_attnsim_train(problem, trainable):
    def step(X, y, W, p, nu, lr):
        W_new, p_new = numpy_step(X, y, W, p, nu, lr)
        return (W if trainable == "p" else W_new), p_new
    assert_trajectory_matches(step, problem, 200, lr=0.5, trainable=trainable)


def test_sequential_update_is_caught_in_the_trajectory(problem):
    with pytest.raises(AssertionError, match=r"(?s)after 200 steps \(lr=0\.5, trainable='Wp'\).*\n  p: norm-wise "
                                             r"relative error .*worst entry \[\d\].*\n  scores: "):
        assert_trajectory_matches(lambda *a: numpy_step(*a, sequential=True), problem, 200, lr=0.5)


def test_p_only_trajectory_with_a_moving_W_is_caught(problem):
    with pytest.raises(AssertionError, match=r"(?s)trainable='p'.*\n  W: norm-wise relative error"):
        assert_trajectory_matches(numpy_step, problem, 20, lr=0.5, trainable="p")


def test_importing_attnsim_does_not_import_the_testing_module_or_hypothesis():
    code = "import sys, attnsim; print('attnsim.testing' in sys.modules, 'hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_testing_module_never_imports_torch_or_jax():
    code = "import sys, attnsim.testing; print(any(m in sys.modules for m in ('torch', 'jax')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_trajectory_helper_refuses_a_trained_head():
    import numpy as np
    import pytest

    from attnsim import ConfigError
    from attnsim.testing import Problem, assert_trajectory_matches

    rng = np.random.default_rng(0)
    prob = Problem(rng.standard_normal((2, 3, 2)), np.array([1.0, -1.0]), np.eye(2), np.zeros(2), np.ones(2))
    with pytest.raises(ConfigError, match=r"^trainable must be 'Wp' or 'p' here \(step_fn returns \(W, p\)\); "
                                          r"got 'p\+nu'; .*loss_and_grads_head"):
        assert_trajectory_matches(lambda *a: None, prob, 1, trainable="p+nu")
