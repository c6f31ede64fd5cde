"""Memory a run will need and memory there is: refuse before allocating, with a line that says what to do.

A run's large arrays are few, and their sizes follow from the shapes alone: the tokens
(``(n + n_test) T d`` floats), the d x d ``W0``, the set-up products of the chosen coordinates
and, in primal coordinates with ``W`` trained, the iterate ``W`` itself. ``prepare_run`` adds
them up before it draws anything (``config_memory``), ``prepare`` before it copies or multiplies
anything (``engine_memory``), and both compare the peak with what the process may still use
(``available_memory``), so a run that cannot fit stops with one line naming the large items and
the settings that avoid them, instead of a ``MemoryError`` traceback half-way through.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ._coords.base import TRAINABLE_SETS
from ._validation import ConfigError

_F = 8  # bytes per float64

#: Room for what the estimate does not itemise: compiling the kernels, small arrays, the
#: allocator's slack. Importing attnsim maps ~360 MiB, already counted as used when the check runs;
#: a first run's compilation and bookkeeping add ~30 MiB of address space on top.
RUNTIME_ALLOWANCE = 256 * 2 ** 20

#: cgroup v1 reports "no limit" as a huge number (2^63 rounded down to a page); anything above is none.
_NO_LIMIT = 2 ** 60

# Where the kernel's accounting is read (module constants so that tests can point them at a fake tree).
_PROC = "/proc"
_CGROUP = "/sys/fs/cgroup"


class MemoryBudgetError(ConfigError):
    """A run, or the rebuild of a ``Result``'s final parameters, needs more memory than the process may use.

    Attributes
    ----------
    needed, available : int
        Estimated peak and available memory, in bytes.
    limit : str
        Which limit binds (``"RLIMIT_AS (ulimit -v)"``, ``"cgroup memory limit"``, ``"MemAvailable"``, ...).
    """

    def __init__(self, message, needed=0, available=0, limit=""):
        super().__init__(message)
        self.needed, self.available, self.limit = needed, available, limit


@dataclass(frozen=True)
class MemoryEstimate:
    """The large allocations of a run, phase by phase (what is alive at once), in bytes.

    Attributes
    ----------
    phases : dict of str to dict of str to int
        For each phase (``"draw"``, ``"set-up"``, ``"run"``), the arrays alive at its peak.
    """

    phases: dict

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda name: sum(self.phases[name].values()))

    @property
    def peak(self) -> int:
        """Bytes at the largest phase, plus ``RUNTIME_ALLOWANCE``."""
        return sum(self.phases[self.peak_phase].values()) + RUNTIME_ALLOWANCE

    def __add__(self, other: MemoryEstimate) -> MemoryEstimate:
        """Phases of ``other`` on top of everything ``self`` keeps alive (its last phase)."""
        kept = list(self.phases.values())[-1]
        return MemoryEstimate({**self.phases, **{name: {**kept, **items} for name, items in other.phases.items()}})


#: d-vectors (``p``, ``nu``, ``mu_+-``, the query, gradients, ...) and N-vectors that no item names,
#: counted generously: each phase's small arrays.
_VECTORS = 16


def _sized(items: dict) -> dict:
    """Drop the empty items, convert floats to bytes."""
    return {name: int(count * _F) for name, count in items.items() if count > 0}


def engine_memory(n: int, T: int, d: int, n_test_tokens: int, *, engine: str, trainable: str, w0: str,
                  n_probes: int, n_saves: int, copies: bool, final_W: bool) -> MemoryEstimate:
    """What ``prepare`` and the run allocate beyond the caller's arrays.

    Parameters
    ----------
    n, T, d, n_test_tokens : int
        Shapes: ``N = n T`` training tokens, ``Nt`` test tokens.
    engine : {"primal", "dual"}
    trainable : str
        ``"Wp"``, ``"p"``, with or without ``"+nu"``.
    w0 : {"dense", "identity"}
        ``W0`` given as a d x d array, or None (the identity).
    n_probes : int
        Rows of the probe matrix the coordinates project on.
    n_saves : int
    copies : bool
        ``prepare`` copies the inputs (``train``); ``prepare_run``'s own arrays are not copied.
    final_W : bool
        The ``Result`` holds the final ``W`` as a d x d array (not rebuilt on request).

    Returns
    -------
    MemoryEstimate
        Phases ``"set-up"`` (the coordinates' products) and ``"run"`` (to the ``Result``).
    """
    N, Nt = n * T, n_test_tokens
    has_W = TRAINABLE_SETS[trainable].trains_W
    dense_w0 = w0 == "dense"
    kept = {"input copies": ((N + Nt) * d + (d * d if dense_w0 else 0)) if copies else 0,
            "probe directions": n_probes * d, "vectors": _VECTORS * d + 8 * (N + Nt)}
    setup_temp, run_temp = {}, {}
    if engine == "dual":
        kept["dual Grams and state"] = 24 * (N + 1) ** 2
        if has_W:
            # Q = [p0, W0 X^T] stays; W0^T Q and the test cross terms' stacking are set-up temporaries
            kept.update({"Q = [p0, W0 X^T] (d x N)": d * (N + 1), "test cross terms": Nt * (2 * N + 1)})
            setup_temp = {"set-up product W0^T Q (d x N)": d * (N + 1),
                          "test cross-term temporaries": 2 * Nt * (2 * N + 1)}
            if final_W:
                run_temp = {"Q M^T (d x N)": d * N, "W0 = I for the final W (d x d)": 0 if dense_w0 else d * d}
        else:
            kept.update({"keys X W0^T (N x d)": N * d, "test cross terms": Nt * N})
            setup_temp = {"set-up product W0^T K^T (d x N)": d * N}
    elif has_W:
        kept.update({"tokens X^T (copy)": N * d, "W iterate (d x d)": d * d,
                     "W0 = I (d x d)": 0 if dense_w0 else d * d})
        # observe(): W - W0, then inside its norm x / m and its square
        run_temp = {"||W - W0|| at each save (3 d x d temporaries)": 3 * d * d}
    else:
        kept["keys X W0^T and their transpose"] = 2 * N * d
    if TRAINABLE_SETS[trainable].trains_head:
        kept["head cross terms"] = Nt * N + N * d
    run = {**kept, "recorded values": n_saves * (2 * N + 4 * n + 3 * n_probes + 16), "final p and nu": 2 * d,
           "final W (d x d)": d * d if (final_W and has_W) else 0, **run_temp}
    set_up = {**kept, **setup_temp}      # the input checks need no temporary (_validation._nonfinite)
    return MemoryEstimate({"set-up": _sized(set_up), "run": _sized(run)})


def config_memory(config, *, engine: str, n_saves: int, n_probes: int, final_W: bool = False) -> MemoryEstimate:
    """Everything ``prepare_run(config)`` allocates: its data (``make_data``, ``init_params``), then
    ``engine_memory`` for coordinates ``engine`` (resolved, not ``"auto"``).

    Returns
    -------
    MemoryEstimate
        Phases ``"draw"`` (the tokens), ``"data"`` (with ``W0``), then the engine's on top of the data.
    """
    n, T, d = config.n_train, config.T, config.d
    N, Nt = n * T, config.n_test * T
    dense_w0 = config.w0 != "identity"
    tokens = {"training tokens (n T d)": N * d, "test tokens (n_test T d)": Nt * d}
    # drawing a set makes one temporary of its size (the noise before it is scaled, or the
    # orthogonal mode's projection), and a gaussian W0 likewise
    phases = {"draw": {**tokens, "token draw temporary": max(N, Nt) * d, "vectors": _VECTORS * d + 8 * (N + Nt)}}
    if dense_w0 and config.init == "gaussian":
        phases["draw W0"] = {**tokens, "W0 (d x d)": d * d, "W0 draw temporary (d x d)": d * d}
    phases["data"] = {**tokens, "W0 (d x d)": d * d if dense_w0 else 0}
    engine_part = engine_memory(n, T, d, Nt, engine=engine, trainable=config.trainable,
                                w0="dense" if dense_w0 else "identity", n_probes=n_probes, n_saves=n_saves,
                                copies=False, final_W=final_W)
    return MemoryEstimate({name: _sized(items) for name, items in phases.items()}) + engine_part


# --------------------------------------------------------------------------- what there is

def _read(path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _int_file(path) -> int | None:
    text = _read(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:          # "max" (cgroup v2: no limit) or garbage
        return None


def _keyed(text, key) -> int | None:
    """The number after ``key`` in a ``key value`` or ``key: value kB`` listing."""
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[0] == key:
            try:
                return int(parts[1]) * (1024 if parts[2:3] == ["kB"] else 1)
            except ValueError:
                return None
    return None


def _rlimit_headroom() -> list[tuple[int, str]]:
    """The soft address-space and data limits, less what this process has mapped already."""
    try:
        import resource
    except ImportError:         # not on POSIX
        return []
    status = _read(os.path.join(_PROC, "self", "status"))
    out = []
    for name, label, used_key in (("RLIMIT_AS", "RLIMIT_AS (ulimit -v)", "VmSize"),
                                  ("RLIMIT_DATA", "RLIMIT_DATA (ulimit -d)", "VmData")):
        if not hasattr(resource, name):
            continue
        soft, _ = resource.getrlimit(getattr(resource, name))
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _keyed(status, used_key) or 0
        out.append((max(soft - used, 0), label))
    return out


def _cgroup_dirs() -> list[tuple[str, int]]:
    """The memory cgroup folders of this process, innermost first, with their version (1 or 2)."""
    text = _read(os.path.join(_PROC, "self", "cgroup")) or ""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            root, version = _CGROUP, 2
            if not os.path.exists(os.path.join(root, "cgroup.controllers")):
                root = os.path.join(_CGROUP, "unified")
        elif "memory" in parts[1].split(","):
            root, version = os.path.join(_CGROUP, "memory"), 1
        else:
            continue
        path = os.path.normpath(os.path.join(root, parts[2].lstrip("/")))
        if not os.path.isdir(path):     # a namespaced mount shows this cgroup as the root itself
            path = root
        while True:                     # every ancestor's limit binds too
            found.append((path, version))
            if os.path.normpath(path) == os.path.normpath(root):
                break
            path = os.path.dirname(path)
    return found


def _cgroup_headroom() -> list[tuple[int, str]]:
    """Each memory cgroup's limit less its working set (usage less inactive page cache, which the
    kernel reclaims before it fails an allocation; the kubelet's definition)."""
    out = []
    for path, version in _cgroup_dirs():
        names = (("memory.max", "memory.current", "inactive_file") if version == 2 else
                 ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
        limit = _int_file(os.path.join(path, names[0]))
        if limit is None or limit >= _NO_LIMIT:
            continue
        usage = _int_file(os.path.join(path, names[1])) or 0
        inactive = _keyed(_read(os.path.join(path, "memory.stat")), names[2]) or 0
        out.append((max(limit - max(usage - inactive, 0), 0), "cgroup memory limit"))
    return out


def available_memory() -> tuple[int | None, str]:
    """Bytes this process may still allocate, and which limit says so.

    The smallest of: the soft ``RLIMIT_AS`` and ``RLIMIT_DATA`` less this process's mapped
    address space and data; every enclosing memory cgroup's limit less its working set
    (v1 and v2); the machine's ``MemAvailable`` (``/proc/meminfo``). ``(None, "")`` where none
    of these can be read (then nothing is refused).
    """
    candidates = _rlimit_headroom() + _cgroup_headroom()
    avail = _keyed(_read(os.path.join(_PROC, "meminfo")), "MemAvailable")
    if avail is not None:
        candidates.append((avail, "MemAvailable"))
    if not candidates:
        return None, ""
    return min(candidates)


def _gib(nbytes) -> str:
    return f"{nbytes / 2 ** 30:.3g} GiB"


def check_memory(estimate: MemoryEstimate, what: str, fixes: list[str]) -> None:
    """Raise ``MemoryBudgetError`` when ``estimate.peak`` exceeds ``available_memory()``.

    ``what`` names the run (``"d=40000, trainable='Wp', engine='dual'"``); ``fixes`` are the
    settings that avoid the largest items, said in the message.
    """
    available, limit = available_memory()
    need = estimate.peak
    if available is None or need <= available:
        return
    items = sorted(estimate.phases[estimate.peak_phase].items(), key=lambda kv: -kv[1])
    largest = ", ".join(f"{name} {_gib(size)}" for name, size in items[:3])
    raise MemoryBudgetError(
        f"{what} needs about {_gib(need)} of memory ({largest}) but only {_gib(available)} is available "
        f"({limit}); use {', or '.join(fixes)}",
        needed=need, available=available, limit=limit)


def run_fixes(estimate: MemoryEstimate, *, identity: bool, trainable: str, engine: str,
              arrays: bool = False) -> list[str]:
    """The settings that shrink the largest items of ``estimate``, most effective first; ``arrays``:
    said for ``train`` (``W0=None``) rather than for a ``Config`` (``w0='identity'``)."""
    items = {name: size for phase in estimate.phases.values() for name, size in phase.items()}
    fixes = []
    if not identity:             # W0, or the engine's copy of it, is d x d
        fixes.append(("W0=None" if arrays else "w0='identity'") + " (W0 = I: no d x d W0)")
    if engine == "primal" and TRAINABLE_SETS[trainable].trains_W:
        fixes.append("engine='dual' (W is never formed while it trains)")
    if not arrays:
        fixes.append("space='implicit' (no d-dimensional arrays)")
        if items.get("test tokens (n_test T d)", 0) > 0.2 * estimate.peak:
            fixes.append("test_metrics='population' with n_test=0 (no test set)")
    fixes.append("a smaller d")
    return fixes
