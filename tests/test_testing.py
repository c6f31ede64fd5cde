"""attnsim.testing: its strategy respects its bounds, and its assertions catch planted bugs."""

import random
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, find, given, settings

import attnsim
import attnsim.testing as testing
from attnsim import ConfigError
from attnsim.testing import (DEFAULT_MAX_GAP, Problem, assert_gradients_match, assert_trajectory_matches, float64_rtol,
                             assert_training_matches,
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
    assert re.search(r"grad_W: norm-wise relative error \d\.\d{3}e[+-]\d\d > rtol = \d\.\de-\d\d \(\|\|got - expected\|\| / \|\|expected\|\|\); "
                     r"worst entry \[\d, \d\]: "
                     r"expected \S+, got \S+ \(relative error \d\.\d{3}e[+-]\d\d\)", msg)
    assert re.search(r"\n  why: errors of \de[+-]\d\d are not rounding \(\w+; float64 autodiff is accurate to ~\de-\d\d at "
                     r"top-score gap 4\): look for a bug in the formula", msg)


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


def test_sequential_update_is_caught_at_its_first_step(problem):
    with pytest.raises(AssertionError, match=r"(?s)after 200 steps \(lr=0\.5, trainable='Wp'\).*: step 1 of 200 is not a GD "
                                             r"step from step_fn's iterate 0 .*\n  p_1: error .* > allowed \d\.\de-1\d\n  "
                                             r"why: p was updated from the already-updated W"):
        assert_trajectory_matches(lambda *a: numpy_step(*a, sequential=True), problem, 200, lr=0.5)


def test_sequential_update_is_caught_at_the_end_with_a_flat_rtol(problem):
    with pytest.raises(AssertionError, match=r"(?s)after 200 steps \(lr=0\.5, trainable='Wp'\).*\n  p: norm-wise "
                                             r"relative error .*worst entry \[\d\].*\n  scores: "):
        assert_trajectory_matches(lambda *a: numpy_step(*a, sequential=True), problem, 200, lr=0.5, rtol=1e-6)


def test_p_only_trajectory_with_a_moving_W_is_caught(problem):
    with pytest.raises(AssertionError, match=r"(?s)trainable='p'.*\n  W_1: error .*\n  why: W moved although "
                                             r"trainable='p'"):
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


# ---- float32 arithmetic is caught, honest float64 autodiff passes (issue 17, item 2) ----

def autograd_model(float32=False):
    """The paper's loss differentiated by the autograd package, the softmax's max held constant as torch and jax
    do; ``float32=True`` evaluates ``log(1 + exp(u))`` in float32, as a model with one stray cast does."""
    import autograd.numpy as anp
    from autograd import grad

    def loss(W, p, X, y, nu):
        z = anp.einsum("itk,k->it", X, anp.dot(W.T, p))
        e = anp.exp(z - np.max(getattr(z, "_value", z), axis=1, keepdims=True))
        f = anp.sum(e / anp.sum(e, axis=1, keepdims=True) * anp.einsum("itk,k->it", X, nu), axis=1)
        if float32:
            return anp.mean(anp.log(1 + anp.exp((-y * f).astype(np.float32))).astype(np.float64))
        return anp.mean(anp.logaddexp(0.0, -y * f))

    return lambda X, y, W, p, nu: (loss(W, p, X, y, nu), grad(loss, 0)(W, p, X, y, nu), grad(loss, 1)(W, p, X, y, nu))


def user_suite(model, run_seed):
    """One run of a user's test suite: ``@given(problems())`` with hypothesis' default 100 examples, seeded."""
    from hypothesis import Phase, seed

    @settings(max_examples=100, database=None, derandomize=False, phases=[Phase.generate], report_multiple_bugs=False)
    @seed(run_seed)
    @given(problems())
    def check(prob):
        assert_gradients_match(model, prob)
    check()


def float32_runs_caught(seeds):
    model, caught = autograd_model(float32=True), 0
    for s in seeds:
        with pytest.raises(AssertionError, match=r"why: errors of ~\de-\d\d at top-score gap \S+ look like float32 "
                                                 r"arithmetic \(float32's eps is 1\.2e-07"):
            user_suite(model, s)
        caught += 1
    return caught


def test_float32_model_is_caught_in_every_seeded_run():
    assert float32_runs_caught(range(5)) == 5


def test_honest_float64_autodiff_passes_every_seeded_run():
    for s in range(2):          # 100 runs: the slow test below
        user_suite(autograd_model(), s)


@pytest.mark.slow
def test_float32_model_is_caught_in_100_of_100_runs():
    assert float32_runs_caught(range(100, 200)) == 100


@pytest.mark.slow
def test_honest_float64_autodiff_passes_100_of_100_runs():
    for s in range(100, 200):
        user_suite(autograd_model(), s)


@pytest.mark.parametrize("rtol", ["float32", -1.0, np.inf, True])
def test_bad_rtol_is_refused(problem, rtol):
    with pytest.raises(ConfigError, match=r"^rtol must be 'float64' \(the tolerance honest float64 autodiff meets on "
                                          r"each problem\) or a finite number >= 0; got "):
        assert_gradients_match(numpy_model, problem, rtol=rtol)


def test_float64_rtol_grows_like_exp_gap_and_stays_within_its_floor_and_ceiling(problem):
    # the error model: eps e^G in saturation, so 10 more units of gap multiply it by ~e^10 (times the data's factor)
    X, y, W, p, nu = problem.arrays()
    i = int(np.argmax(problem.gaps))             # one sample: its gap is the problem's (4 at c = 1)
    rtols = [float64_rtol(Problem(X[i:i + 1], y[i:i + 1], W, c * p, nu))["grad_p"] for c in (0.0, 1.0, 2.0, 3.5, 10.0)]
    assert rtols[0] <= 1e-10 and rtols[-1] == 1e-4
    assert all(1e-12 <= r <= 1e-4 for r in rtols) and rtols == sorted(rtols)
    assert 1e3 < rtols[3] / rtols[1] < 1e6          # gaps 4 -> 14


def test_saturated_problem_says_autodiff_is_no_reference_there(problem):
    X, y, W, p, nu = problem.arrays()
    i = int(np.argmax(problem.gaps))             # alone, so that no sample at a smaller gap carries the gradient
    deep = Problem(X[i:i + 1], y[i:i + 1], W, 10 * p, nu)          # gap 40
    with pytest.raises(AssertionError, match=r"why: at top-score gap 40, float64 autodiff through a softmax is itself "
                                             r"only accurate to ~\S+ on this problem .*check at a smaller max_gap"):
        assert_gradients_match(autograd_model(), deep)


def test_an_error_between_float64_and_float32_sizes_is_told_apart_from_float32(problem):
    def off_by_3e_11(X, y, W, p, nu):      # what log(1 + exp(u)) instead of logaddexp costs at u ~ 10 in float64
        loss, grad_W, grad_p = numpy_model(X, y, W, p, nu)
        return loss * (1 + 3e-11), grad_W, grad_p
    with pytest.raises(AssertionError, match=r"why: errors of ~3e-11 at top-score gap 4 exceed float64 rounding"):
        assert_gradients_match(off_by_3e_11, problem)


# ---- a user's whole training loop against attnsim.train (issue 17, item 7) ----

def numpy_train(X, y, W0, p0, nu, lr, steps, *, trajectory=False, trainable="Wp", bug=None):
    """A user's GD loop on hand-written gradients; ``bug`` plants one of the loop bugs the helper must catch."""
    W, p = W0.copy(), p0.copy()
    Ws, ps = [W], [p]
    grads_before = None
    for _ in range(steps - 1 if bug == "off by one" else steps):
        _, dW, dp = numpy_model(X, y, W, p, nu)
        if trainable == "p":
            dW = np.zeros_like(W)
        if bug == "lr multiplied twice":
            dW, dp = lr * dW, lr * dp
        if bug == "update applied twice":
            dW, dp = 2 * dW, 2 * dp
        if bug == "p from the new W":
            W = W - lr * dW
            p = p - lr * numpy_model(X, y, W, p, nu)[2]
        elif bug == "stale p gradient":
            dp_used = dp if grads_before is None else grads_before
            grads_before = dp
            W, p = W - lr * dW, p - lr * dp_used
        else:
            W, p = W - lr * dW, p - lr * dp
        Ws.append(W)
        ps.append(p)
    return (Ws, ps) if trajectory else (W, p)


@pytest.mark.parametrize("trajectory", [False, True])
@pytest.mark.parametrize("trainable", ["Wp", "p"])
def test_honest_numpy_training_loop_passes(trajectory, trainable):
    config = attnsim.Config(n_train=8, n_test=1, d=16, eta=0.25, lr=0.1, steps=50, seed=3, trainable=trainable,
                            init="gaussian", sigma_p=0.3, sigma_w=0.3)
    assert_training_matches(lambda *a: numpy_train(*a, trajectory=trajectory, trainable=trainable), config)


def test_honest_numpy_training_loop_passes_on_the_default_data():
    assert_training_matches(numpy_train)
    assert_training_matches(lambda *a: numpy_train(*a, trajectory=True))


@pytest.mark.parametrize("bug, why", [
    ("off by one", r"it matches exact GD after 49 updates: the loop runs one update too few"),
    ("update applied twice", r"it matches exact GD with step 2 lr = 0\.2: the update applied twice"),
    ("lr multiplied twice", r"it matches exact GD with step lr\^2 = 0\.01: lr multiplied in twice"),
    ("p from the new W", r"it matches GD with p updated from the already-updated W"),
])
def test_planted_loop_bugs_are_named_from_the_final_iterate(bug, why):
    with pytest.raises(AssertionError, match=r"(?s)^final \(W, p\) of train_fn does not match attnsim\.train after 50 "
                                             r"steps \(lr=0\.1, trainable='Wp'\) on make_data\(config\) with n=8, T=8, "
                                             r"d=16, seed=0:\n  (W|p): error .*\n  why: " + why):
        assert_training_matches(lambda *a: numpy_train(*a, bug=bug))


@pytest.mark.parametrize("bug, step, why", [
    # p0 = 0 makes grad_W = 0 at the first step, so W and p from different iterates first differ at step 2
    ("update applied twice", 1, r"the update is 2 x the GD step, a step size of 0\.2 instead of lr = 0\.1 \(the update "
                                r"applied twice\?\)"),
    ("lr multiplied twice", 1, r"the update is 0\.1 x the GD step, a step size of 0\.01 instead of lr = 0\.1 \(lr "
                               r"multiplied in twice\?\)"),
    ("p from the new W", 2, r"p was updated from the already-updated W; both updates must use the old iterate"),
    ("stale p gradient", 2, r"p was updated with the gradient of the iterate before \(a stale gradient\)"),
])
def test_planted_loop_bugs_are_located_in_a_trajectory(bug, step, why):
    with pytest.raises(AssertionError, match=rf"(?s)^training loop does not match attnsim's GD after 50 steps .*: step "
                                             rf"{step} of 50 is not a GD step from train_fn's iterate {step - 1} .*"
                                             rf"\n  p_{step}: error .*\n  why: {why}"):
        assert_training_matches(lambda *a: numpy_train(*a, trajectory=True, bug=bug))


def test_off_by_one_trajectory_is_told_by_its_length():
    with pytest.raises(AssertionError, match=r"returned a trajectory of 50 iterates for steps=50; expected steps \+ 1 "
                                             r"= 51, the initial \(W0, p0\) first \(it starts at \(W0, p0\), so the "
                                             r"loop ran 49 updates\)"):
        assert_training_matches(lambda *a: numpy_train(*a, trajectory=True, bug="off by one"))


def test_training_helper_refuses_bad_configs_and_outputs():
    with pytest.raises(ConfigError, match=r"^config must be an attnsim\.Config .*; got dict"):
        assert_training_matches(numpy_train, {"d": 16})
    with pytest.raises(ConfigError, match=r"^trainable must be 'Wp' or 'p' here \(train_fn returns W and p\); "
                                          r"got 'p\+nu'"):
        assert_training_matches(numpy_train, attnsim.Config(n_train=4, n_test=1, d=8, steps=5, trainable="p+nu"))
    with pytest.raises(AssertionError, match=r"train_fn must return \(W, p\) of shapes \(16, 16\) and \(16,\), or a "
                                             r"trajectory .*; got \(16, 16\) and \(3, 16\)"):
        assert_training_matches(lambda *a: (a[2], np.zeros((3, 16))))


def test_a_float32_training_loop_is_told_so_from_its_final_iterate():
    """The same honest loop run in float32: the final (W, p) differ by float32 rounding, and the
    helper says why instead of suggesting a trajectory."""
    def float32_train(X, y, W0, p0, nu, lr, steps):
        W, p = numpy_train(X.astype(np.float32), y.astype(np.float32), W0.astype(np.float32),
                           p0.astype(np.float32), nu.astype(np.float32), np.float32(lr), steps)
        return W.astype(np.float32), p.astype(np.float32)

    with pytest.raises(AssertionError, match=r"(?s)^final \(W, p\) of train_fn does not match .*\n  why: train_fn "
                                             r"returned float32 arrays, whose rounding alone exceeds these float64 "
                                             r"tolerances: compute in float64"):
        assert_training_matches(float32_train)
