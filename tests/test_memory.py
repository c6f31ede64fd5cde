"""Memory (issue 17, item 4): a run that cannot fit is refused before anything is allocated, in one
line that says what to change; the estimate bounds what a run really allocates; the available
memory is read from the limits that bind (rlimits, cgroups v1 and v2, MemAvailable)."""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import attnsim
from attnsim import Config, ConfigError, MemoryBudgetError, SaveAt, prepare_run, simulate
from attnsim import _memory
from attnsim._memory import RUNTIME_ALLOWANCE, config_memory

GiB = 2 ** 30


def _limit_address_space(nbytes):
    def set_limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))
    return set_limit


def test_cli_refuses_d_40000_in_one_line_under_an_address_space_limit(tmp_path):
    """``ulimit -v`` of 3 GiB: d = 40000 needs a 12 GiB W0. Exit 2, one line, no traceback, no file."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "attnsim", "run", "--preset", "balanced", "--d", "40000",
                           "--out", str(tmp_path / "big.npz"), "--no-progress"],
                          capture_output=True, text=True, cwd=tmp_path, env=env,
                          preexec_fn=_limit_address_space(3 * GiB), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("attnsim: error: the run (d=40000, ")
    for part in ("W0 (d x d) 11.9 GiB", "RLIMIT_AS (ulimit -v)", "w0='identity'", "space='implicit'"):
        assert part in lines[0], lines[0]
    assert os.listdir(tmp_path) == []


@pytest.fixture
def short_of_memory(monkeypatch):
    """Pretend 64 MiB are available."""
    monkeypatch.setattr(_memory, "available_memory", lambda: (64 * 2 ** 20, "MemAvailable"))


def test_prepare_run_refuses_before_drawing_anything(short_of_memory, monkeypatch):
    def no_draw(config):
        raise AssertionError("make_data was called")

    monkeypatch.setattr(attnsim._experiment, "make_data", no_draw)
    # 1000 x 8 x 5000 test tokens are 0.298 GiB, drawn through a temporary of their size; then a
    # 0.25 GiB allowance for compiling and small arrays
    with pytest.raises(MemoryBudgetError, match=r"^the run \(d=5000, n_train=20, n_test=1000, T=8, trainable='Wp', "
                       r"w0='random', engine='dual'\) needs about 0\.853 GiB of memory \(test tokens \(n_test T d\) "
                       r"0\.298 GiB, token draw temporary 0\.298 GiB, training tokens \(n T d\) 0\.00596 GiB\) but only "
                       r"0\.0625 GiB is available \(MemAvailable\); use w0='identity' \(W0 = I: no d x d W0\), or "
                       r"space='implicit' \(no d-dimensional arrays\), or test_metrics='population' with n_test=0 "
                       r"\(no test set\), or a smaller d$") as info:
        prepare_run(Config(d=5000))
    assert isinstance(info.value, ConfigError) and info.value.available == 64 * 2 ** 20


@pytest.mark.parametrize("how", ["train", "prepare"])
def test_refused_before_anything_is_copied_or_allocated(short_of_memory, how):
    """``train`` reads the caller's arrays (no input copies in the estimate); ``prepare`` copies them
    (0.0671 GiB, the d x d W0) and says so."""
    d = 3000
    X = np.zeros((2, 2, d))
    # the three largest items: the copy of W0 displaces the final W from the list
    copies, final = ((r"input copies 0\.0671 GiB, ", "") if how == "prepare"
                     else ("", r", final W \(d x d\) 0\.0671 GiB"))
    total = r"0\.653" if how == "prepare" else r"0\.586"
    with pytest.raises(MemoryBudgetError, match=r"^training on X of shape \(2, 2, 3000\) with trainable='Wp', "
                       rf"engine='primal' needs about {total} GiB of memory \(\|\|W - W0\|\| at each save \(3 d x d "
                       rf"temporaries\) 0\.201 GiB, {copies}W iterate \(d x d\) 0\.0671 GiB{final}\) but only "
                       r"0\.0625 GiB is available \(MemAvailable\); use W0=None \(W0 = I: no d x d W0\), or engine='dual' \(W is never formed while it trains\), or a smaller d$"):
        getattr(attnsim, how)(X, [1, -1], np.eye(d), np.zeros(d), np.ones(d), lr=0.1, steps=1, engine="primal")


def test_rebuilding_W_is_refused_and_can_be_retried(monkeypatch):
    res = simulate(Config(d=60, n_train=4, T=3, n_test=0, steps=20), engine="dual")
    monkeypatch.setattr(_memory, "available_memory", lambda: (1024, "cgroup memory limit"))
    with pytest.raises(MemoryBudgetError, match=r"^rebuilding Result\.W \(d=60\) needs about .* but only "
                       r"9\.54e-07 GiB is available \(cgroup memory limit\)"):
        res.W
    monkeypatch.undo()
    assert res.W.shape == (60, 60)


@pytest.mark.parametrize("engine, trainable, w0", [("dual", "Wp", "random"), ("primal", "Wp", "random"),
                                                   ("dual", "p", "random"), ("dual", "Wp", "identity")])
def test_estimate_bounds_what_the_run_allocates(engine, trainable, w0):
    """tracemalloc sees every numpy buffer: the estimate (without its allowance for compilation)
    is above the traced peak of prepare_run, the run and its Result, and not far above."""
    cfg = Config(d=1200, n_train=8, T=4, n_test=60, steps=30, trainable=trainable, w0=w0)
    save_at = SaveAt.log(cfg.steps, 10)
    warm = prepare_run(cfg.replace(d=20), save_at, engine=engine)    # compile outside the trace
    warm.warm_up()
    tracemalloc.start()
    try:
        run = prepare_run(cfg, save_at, engine=engine)
        run.warm_up()
        run.run()
        run.result(cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = config_memory(cfg, engine=engine, n_saves=len(save_at), n_probes=2).peak - RUNTIME_ALLOWANCE
    assert peak <= estimate <= 1.5 * peak + 2 ** 20, (peak, estimate)


@pytest.mark.parametrize("engine", ["dual", "primal"])
def test_train_reads_the_callers_arrays_where_prepare_copies_them(engine):
    """``train`` returns a Result before the caller can write to its arrays again, so it does not
    copy ``W0`` (512 MB at d = 8000); ``prepare``, whose Run outlives the call, does. The traced
    peaks of the two paths, same run, differ by at least the copy of ``W0``."""
    d = 1500
    rng = np.random.default_rng(0)
    arrays = dict(X=rng.standard_normal((4, 3, d)), y=np.array([1.0, -1.0, 1.0, -1.0]),
                  W0=rng.standard_normal((d, d)) / np.sqrt(d), p0=rng.standard_normal(d) / np.sqrt(d),
                  nu=rng.standard_normal(d) / np.sqrt(d))
    kw = dict(lr=0.1, steps=5, save_at=[0, 5], engine=engine)
    attnsim.train(**{k: v[..., :20, :20] if k == "W0" else v[..., :20] for k, v in arrays.items()
                     if k != "y"}, y=arrays["y"], **kw)                   # compile outside the trace
    peaks = {}
    for how in ("train", "prepare"):
        tracemalloc.start()
        try:
            if how == "train":
                res = attnsim.train(**arrays, **kw)
            else:
                run = attnsim.prepare(**arrays, **kw)
                run.warm_up()
                run.run()
                res = run.result()
                del run
            peaks[how] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.final_step == 5
        del res
    assert peaks["prepare"] - peaks["train"] >= 0.95 * arrays["W0"].nbytes, (peaks, arrays["W0"].nbytes)


def _fake_tree(root, cgroup_line, files):
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    (proc / "meminfo").write_text("MemTotal:       33554432 kB\nMemAvailable:   10485760 kB\n")  # 10 GiB
    for rel, text in files.items():
        path = root / "cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("cgroup_line, files, expected", [
    # v2: 4 GiB limit, 3 GiB charged of which 1 GiB inactive page cache -> 2 GiB; the parent has no limit
    ("0::/user.slice/job", {"cgroup.controllers": "memory\n", "user.slice/memory.max": "max\n",
                            "user.slice/job/memory.max": f"{4 * GiB}\n", "user.slice/job/memory.current": f"{3 * GiB}\n",
                            "user.slice/job/memory.stat": f"anon 1\ninactive_file {GiB}\nactive_file 5\n"},
     (2 * GiB, "cgroup memory limit")),
    # v2, the parent binds: 5 GiB limit, 4.5 GiB charged -> 0.5 GiB
    ("0::/a/b", {"cgroup.controllers": "memory\n", "a/memory.max": f"{5 * GiB}\n", "a/memory.current": f"{9 * GiB // 2}\n",
                 "a/b/memory.max": f"{8 * GiB}\n", "a/b/memory.current": f"{GiB}\n"},
     (GiB // 2, "cgroup memory limit")),
    # v1: 8 GiB limit, 7 GiB used -> 1 GiB; the root reports no limit (2^63 rounded to a page)
    ("4:memory:/process_api/abc", {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                   "memory/process_api/abc/memory.limit_in_bytes": f"{8 * GiB}\n",
                                   "memory/process_api/abc/memory.usage_in_bytes": f"{7 * GiB}\n",
                                   "memory/process_api/abc/memory.stat": "total_inactive_file 0\n"},
     (GiB, "cgroup memory limit")),
    # v1 in a container: the mount shows this cgroup as its root
    ("9:cpuset,memory:/docker/xyz", {"memory/memory.limit_in_bytes": f"{3 * GiB}\n",
                                     "memory/memory.usage_in_bytes": f"{GiB}\n"},
     (2 * GiB, "cgroup memory limit")),
    # no cgroup limit: MemAvailable
    ("0::/", {"cgroup.controllers": "memory\n", "memory.max": "max\n"}, (10 * GiB, "MemAvailable")),
])
def test_available_memory_takes_the_tightest_limit(cgroup_line, files, expected, tmp_path, monkeypatch):
    _fake_tree(tmp_path, cgroup_line, files)
    monkeypatch.setattr(_memory, "_PROC", str(tmp_path / "proc"))
    monkeypatch.setattr(_memory, "_CGROUP", str(tmp_path / "cgroup"))
    monkeypatch.setattr(_memory, "_rlimit_headroom", lambda: [])
    assert _memory.available_memory() == expected


@pytest.mark.slow
def test_available_memory_subtracts_mapped_address_space_from_rlimit_as():
    """In a child under ``ulimit -v`` 6 GiB: the headroom is the limit less VmSize (or MemAvailable if
    that is tighter), within the few MiB the interpreter maps between the readings."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30)); "
            "from attnsim import _memory; avail, limit = _memory.available_memory(); "
            "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize')][0]; "
            "free = [int(l.split()[1]) * 1024 for l in open('/proc/meminfo') if l.startswith('MemAvailable')][0]; "
            "print(avail, limit, 6 * 2**30 - vm, free, sep='|')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    avail, limit, headroom, free = out.strip().split("|")
    assert abs(int(avail) - min(int(headroom), int(free))) < 16 * 2 ** 20, out
    assert limit == ("RLIMIT_AS (ulimit -v)" if int(headroom) < int(free) else "MemAvailable"), out


def test_no_readable_limits_means_no_refusal(tmp_path, monkeypatch):
    monkeypatch.setattr(_memory, "_PROC", str(tmp_path / "none"))
    monkeypatch.setattr(_memory, "_CGROUP", str(tmp_path / "none"))
    monkeypatch.setattr(_memory, "_rlimit_headroom", lambda: [])
    assert _memory.available_memory() == (None, "")
