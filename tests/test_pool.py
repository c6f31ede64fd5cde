"""The worker pool (``attnsim._pool``): single-threaded BLAS in every worker, and no worker
outliving its driver (a driver killed with SIGKILL leaves no process behind)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil   # installed with the test extra (dask distributed needs it)
import pytest

from attnsim._pool import completed, exit_with_parent, local_executor, shutdown

#: How long orphaned workers may take to notice that their driver is gone (the guards take 0 and
#: PARENT_POLL = 0.5 s; the rest is a margin for a loaded machine).
EXIT_WITHIN = 10.0


def _wait_gone(pids, timeout=EXIT_WITHIN):
    """The pids among ``pids`` still running after ``timeout`` seconds (a zombie has exited)."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    alive.discard(pid)
            except psutil.NoSuchProcess:
                alive.discard(pid)
        time.sleep(0.05)
    return alive


def _reap(pids):
    """Kill what a failed test left running (never a process the test did not start)."""
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _start(code, **kwargs):
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kwargs)


def test_pool_workers_get_one_blas_thread(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    pool = local_executor(1)
    try:
        ((_, fut),) = list(completed(pool, os.getenv, [("OPENBLAS_NUM_THREADS",)]))
        assert fut.result() == "1"
    finally:
        shutdown(pool)
    assert "OPENBLAS_NUM_THREADS" not in os.environ        # the caller's environment is restored


def test_exit_with_parent_refuses_nothing_while_the_parent_lives():
    exit_with_parent(os.getppid(), pdeathsig=False, poll=None)   # our parent is alive: no exit


@pytest.mark.slow
def test_each_guard_alone_ends_an_orphan():
    """Children guarded by one mechanism each (the portable poll; Linux's parent-death signal)
    exit once their parent is killed with SIGKILL, and not before."""
    guards = [dict(pdeathsig=False, poll=0.1)]
    if sys.platform.startswith("linux"):
        guards.append(dict(pdeathsig=True, poll=None))
    child = """
        import os, sys, time
        from attnsim._pool import exit_with_parent
        exit_with_parent(os.getppid(), **eval(sys.argv[1]))
        print("ready", flush=True)
        time.sleep(120)
    """
    parent = _start(f"""
        import subprocess, sys, time
        kids = [subprocess.Popen([sys.executable, "-c", {textwrap.dedent(child)!r}, repr(g)], stdout=subprocess.PIPE,
                                 text=True) for g in {guards!r}]
        assert all(kid.stdout.readline().strip() == "ready" for kid in kids)
        print(*(kid.pid for kid in kids), flush=True)
        time.sleep(120)
    """)
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == len(guards)
        assert _wait_gone(pids, timeout=0.5) == set(pids)   # alive while their parent is
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        left = _wait_gone(pids)
        _reap(left)
        assert not left, (f"orphans still running {EXIT_WITHIN} s after their parent died: "
                          f"{[g for g, pid in zip(guards, pids, strict=True) if pid in left]}")
    finally:
        parent.kill()
        parent.stdout.close()


SWEEP_DRIVER = """
    import attnsim
    attnsim.sweep({folder!r}, attnsim.Config(d=200, n_test=10, steps=5000), seeds=range(40), n_saves=20,
                  workers=2, progress=False)
"""


@pytest.mark.slow
def test_killing_a_sweep_driver_ends_its_workers_and_keeps_its_folder(tmp_path):
    """Issue 17.9: kill -9 of a sweep's driver mid-run leaves no worker behind, and the folder
    holds whole files only (every index line parses, every point file loads)."""
    import attnsim

    folder = tmp_path / "sw"
    driver = _start(SWEEP_DRIVER.format(folder=str(folder)))
    try:
        index = folder / "index.jsonl"
        deadline = time.monotonic() + 300
        while not (index.exists() and index.read_text().count("\n") >= 1):   # mid-run: some points finished
            assert driver.poll() is None and time.monotonic() < deadline, "the sweep driver did not get going"
            time.sleep(0.2)
        children = psutil.Process(driver.pid).children(recursive=True)
        workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
        assert len(workers) == 2
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        driver.kill()
        driver.stdout.close()
    left = _wait_gone([c.pid for c in children])
    _reap(left)
    assert not left, f"processes of the killed driver still running after {EXIT_WITHIN} s: {sorted(left)}"

    lines = index.read_text().splitlines()
    entries = [json.loads(line) for line in lines]                         # no torn line
    files = {name[:-4] for name in os.listdir(folder / "points") if name.endswith(".npz")}
    assert 1 <= len(files) < 40                                            # killed mid-run
    assert {e["key"] for e in entries} <= files
    sw = attnsim.Sweep.open(folder)                                        # indexes a file the kill left unindexed
    assert set(sw.points) == files
    for key in files:
        assert sw.load(key).final_step == 5000


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_leaving_a_local_pool_by_an_exception_kills_its_workers_instead_of_awaiting_their_tasks(interrupt):
    """A worker survives a KeyboardInterrupt inside its task and would run on; the driver that
    leaves (Ctrl-C, SIGTERM, its own error) must not wait for tasks whose results it drops."""
    from attnsim._pool import local_pool

    t0 = time.monotonic()
    with pytest.raises(interrupt):
        with local_pool(2) as pool:
            futures = [pool.submit(time.sleep, 120) for _ in range(3)]     # two running, one queued
            t_up = time.monotonic()
            while not all(f.running() for f in futures[:2]) and time.monotonic() - t_up < 60:
                time.sleep(0.05)
            pids = [p.pid for p in pool._processes.values()]
            assert len(pids) == 2
            raise interrupt("stop")
    assert time.monotonic() - t0 < 60                        # not the 120 s (or 240 s) of the tasks
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

