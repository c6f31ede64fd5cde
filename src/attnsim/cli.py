"""Command line: ``attnsim run``, ``plot``, ``sweep`` and ``presets``.

User errors become one line on stderr and exit status 2; no output file is
created by a command that failed. No command replaces work: ``run`` refuses to start over
the checkpoint of an unfinished run (``--resume`` continues it) and replaces a result or
checkpoint of a finished run only with ``--overwrite``; ``sweep`` only adds points to its
folder. ``plot`` redraws its figure (derived from the result) but never writes over the result.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import signal
import sys
import time

from ._config import CHOICES, PRESETS, Config, field_names, field_type, parse_field, preset
from ._coords import DYNAMICS
from ._engine import ENGINES
from ._io import ResultFileError, _atomic
from ._pool import check_scheduler
from ._result import FINISHED, INTERRUPTED, load
from ._saveat import SaveAt
from ._validation import ConfigError

EXIT_USAGE = 2
#: Exit status after Ctrl-C, as a shell reports a process killed by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
#: Extensions that name a figure: ``attnsim run`` refuses them for its data files (``attnsim plot`` draws).
_FIGURE_EXTENSIONS = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp",
                      ".gif", ".avif", ".pgf")
#: Exact GD steps from which ``attnsim run`` points at the flow (about a day at 1e5 steps a second).
LONG_GD_STEPS = 10 ** 10
#: Upper bound on ``--saves``: every save stores the n x T scores and attention.
MAX_SAVES = 1_000_000
#: Seconds between checkpoints when ``--checkpoint`` is given without ``--checkpoint-every``.
DEFAULT_CHECKPOINT_EVERY = 300.0


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit status 2."""


#: Command-line words that are negative numbers, not flags: ``-1e3``, ``-0.5``, ``-1_000``, ``-inf``.
#: argparse's own pattern knows only ``-12`` and ``-1.5``, so ``--steps -1e3`` failed with
#: "expected one argument" instead of reaching the field's validator.
_NEGATIVE_NUMBER = re.compile(r"^-(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        # No prefix matching: "--t 2" must not silently mean "--trainable 2".
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message):
        raise UsageError(f"{message}; see '{self.prog} --help'")


def _int_arg(text):
    """Integers, also written as 1e6 or 1_000_000."""
    return _field_arg("steps")(text)


def _float_arg(text):
    return _field_arg("lr")(text)


def _field_arg(name):
    """argparse ``type=`` for Config field ``name`` (``_config.parse_field``)."""
    def parse(text):
        try:
            return parse_field(name, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    base, _ = field_type(name)
    parse.__name__ = base.__name__
    return parse


def _seconds_arg(text):
    value = _float_arg(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}; e.g. 600")
    return value


def _flow_arg(text):
    """``--flow FIELD=VALUE``: one FlowOptions field (``max_steps=1e6``, ``gd_start=0``, ``correction=false``)."""
    from ._coords.flow import FlowOptions

    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    fields_ = {f.name: f for f in dataclasses.fields(FlowOptions)}
    if not sep or name not in fields_:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE with FIELD one of {', '.join(fields_)}; got {text!r}")
    value = value.strip()
    default = fields_[name].default
    if isinstance(default, bool):
        if value.lower() not in ("true", "false", "1", "0"):
            raise argparse.ArgumentTypeError(f"{name} must be true or false; got {value!r}")
        return name, value.lower() in ("true", "1")
    if name == "gd_start" and value == "auto":
        return name, value
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a number; got {value!r}") from None
    if isinstance(default, int) or name == "gd_start":
        if not (math.isfinite(number) and number == int(number)):
            raise argparse.ArgumentTypeError(f"{name} must be an integer such as 1e6; got {value!r}")
        return name, int(number)
    return name, number


def _add_dynamics_flags(parser):
    parser.add_argument("--dynamics", default=None,
                        help="gd: exact gradient descent (default); flow: the GD-matched gradient flow, "
                             "for horizons up to 1e15 steps (always dual coordinates)")
    parser.add_argument("--flow", action="append", default=[], type=_flow_arg, metavar="FIELD=VALUE",
                        help="a FlowOptions setting for --dynamics flow, e.g. --flow max_steps=1e6; repeatable")


def _dynamics_from_args(args):
    """``(dynamics, flow options dict or None)`` from ``--dynamics`` and ``--flow``."""
    dynamics = args.dynamics or "gd"
    if dynamics not in DYNAMICS:
        raise UsageError(f"--dynamics must be one of {', '.join(DYNAMICS)}; got {args.dynamics!r}")
    if args.flow and dynamics != "flow":
        raise UsageError("--flow settings need --dynamics flow")
    return dynamics, (dict(args.flow) if args.flow else None)


def _add_config_flags(parser):
    """One ``--kebab-case`` flag per Config field, typed from its annotation."""
    group = parser.add_argument_group("Config fields (override the preset)")
    for field in dataclasses.fields(Config):
        base, _ = field_type(field.name)
        default = (f"default {Config().n_test} (0 with --test-metrics population)" if field.name == "n_test"
                   else f"default {field.default!r}")
        if field.name in CHOICES:
            default = f"one of {', '.join(map(repr, CHOICES[field.name]))}; {default}"
        group.add_argument("--" + field.name.replace("_", "-"), dest=field.name, default=None,
                           type=_field_arg(field.name), metavar=base.__name__.upper(), help=default)


def _build_parser():
    parser = _Parser(prog="attnsim", description="Simulate GD training of single-layer attention "
                     "(Sakamoto & Sato, ICML 2025).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train one configuration and print a summary")
    run.add_argument("--preset", default=None, help=f"one of {', '.join(PRESETS)} (default balanced)")
    run.add_argument("--out", help="write the Result to this .npz file (missing folders are created)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the result (--out) and checkpoint of an earlier finished run; never needed "
                          "to --resume, and never replaces the checkpoint of an unfinished run")
    run.add_argument("--saves", type=_int_arg, default=None, help="number of log-spaced save times (default 200)")
    run.add_argument("--engine", default=None, help=f"one of {', '.join(ENGINES)} (default auto)")
    _add_dynamics_flags(run)
    run.add_argument("--max-margin", dest="max_margin", action="store_true",
                     help="track cos angle to the att-SVM direction of the tokens selected at the end "
                          "(Result.mm_cos; with W trained, of the effective query W^T p); prints 1 - cos")
    ck = run.add_argument_group("checkpoints (Ctrl-C always writes one and the partial result)")
    ck.add_argument("--checkpoint", metavar="FILE", help="write the complete run state to FILE periodically")
    ck.add_argument("--checkpoint-every", metavar="SECONDS", type=_seconds_arg, default=None,
                    help=f"seconds between checkpoints (default {DEFAULT_CHECKPOINT_EVERY:g})")
    ck.add_argument("--resume", metavar="FILE",
                    help="continue the run saved in checkpoint FILE (configuration flags are not allowed)")
    bar = run.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    _add_config_flags(run)

    plot = sub.add_parser("plot", help="draw training curves and attention of a saved run")
    plot.add_argument("path", help="a .npz file written by `attnsim run --out`")
    plot.add_argument("--out", help="figure file, any format matplotlib writes, e.g. .png, .pdf, .svg "
                      "(default: next to the input, .png); missing folders are created, an existing figure "
                      "is redrawn")

    sub.add_parser("presets", help="list the paper presets")

    _add_sweep_arguments(sub.add_parser("sweep", help="run a resumable grid of configurations and seeds into a "
                                        "results folder, in parallel"))
    return parser


def _config_overrides(args) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}


def _config_from_args(args) -> Config:
    return preset(args.preset or "balanced", **_config_overrides(args))


def _check_writable(path, flag, example="run.npz"):
    """Check, before any work is done, that the file ``path`` can be written.

    Missing folders are created only when the file is written; here the nearest existing
    ancestor must be a folder that takes a new file.
    """
    target = os.path.abspath(path)
    if os.path.isdir(target):
        raise UsageError(f"{flag}: {path!r} is a folder; give a file name such as {os.path.join(path, example)!r}")
    _check_folder_writable(os.path.dirname(target), flag, path)


def _check_folder_writable(folder, flag, path):
    """Check that files can be created in ``folder`` (or, if it is missing, in its nearest
    existing ancestor, where its subfolders will be made), by creating and removing one.

    A real write, not ``os.access``: root passes every permission check and still cannot
    write on a read-only file system or in ``/sys``.
    """
    import tempfile

    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise UsageError(f"{flag}: cannot create {path!r}: {folder!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".attnsim-probe-")
    except OSError as exc:
        raise UsageError(f"{flag}: cannot write in folder {folder!r} ({exc.strerror}); choose another path "
                         f"than {path!r}") from None
    os.close(fd)
    os.unlink(probe)


def _peek_meta(path):
    """The JSON record of a file attnsim wrote, read without its arrays; None for any other file."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
    except Exception:  # noqa: BLE001 - any unreadable file is "not ours"
        return None
    return meta if isinstance(meta, dict) else None


def _check_no_lost_work(out, ck_path, config, *, resumed=None, overwrite=False, out_named=True):
    """Refuse a run whose files would replace earlier work (a UsageError, before any work).

    - The checkpoint of an unfinished run (interrupted, or written periodically before the end)
      is never replaced by another run: resume it or remove it.
    - A result or the checkpoint of a finished run is replaced only with ``overwrite``.
    - A resumed run replaces its own checkpoint (``resumed``) and its own partial result.
    """
    from ._checkpoint import CHECKPOINT_KIND

    if ck_path and os.path.exists(ck_path) and not (resumed and _same_file(ck_path, resumed)):
        meta = _peek_meta(ck_path) or {}
        if meta.get("kind") != CHECKPOINT_KIND:
            if not overwrite:
                raise UsageError(f"checkpoint file {ck_path!r} exists and is not an attnsim checkpoint; choose "
                                 f"another --out or --checkpoint, or pass --overwrite to replace it")
        elif meta.get("status") == INTERRUPTED or (meta.get("status") == FINISHED
                                                   and meta.get("step", 0) < meta.get("total_steps", 0)):
            raise UsageError(f"{ck_path!r} holds the checkpoint of an unfinished run (step {meta.get('step')} of "
                             f"{meta.get('total_steps')}); continue it with: attnsim run --resume "
                             f"{shlex.quote(str(ck_path))}, or choose another --out or --checkpoint, or remove "
                             "it yourself to start again")
        elif not overwrite:
            raise UsageError(f"{ck_path!r} holds the checkpoint of a finished run; pass --overwrite to replace it, "
                             "or choose another --out or --checkpoint")
    if out and os.path.exists(out) and not overwrite:
        meta = _peek_meta(out) or {}
        if meta.get("kind") != "attnsim.Result":
            what = "a file that is not an attnsim result"
        elif meta.get("status") == INTERRUPTED:
            if resumed and meta.get("config") == config.to_dict():
                return  # the partial result of the run being resumed
            what = "the partial result of an interrupted run"
        elif meta.get("status") == FINISHED:
            what = "a finished result"
        else:
            what = f"a result with status {meta.get('status')!r}"
        named = f"--out {out!r}" if out_named else f"the result file {out!r} of the resumed run"
        raise UsageError(f"{named} exists ({what}); pass --overwrite to replace it, or choose another --out")


def _same_file(a, b) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _format_summary(result) -> str:
    rows = result.summary()
    width = max(map(len, rows))
    lines = []
    for key, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        lines.append(f"  {key:<{width}}  {value}")
    return "\n".join(lines)


def _cmd_run(args):
    from ._checkpoint import CheckpointHook, load_checkpoint
    from ._experiment import prepare_run

    if args.resume:
        given = [flag for flag, value in (("--preset", args.preset), ("--saves", args.saves),
                                          ("--engine", args.engine), ("--dynamics", args.dynamics),
                                          ("--flow", args.flow or None))
                 if value is not None]
        given += ["--" + name.replace("_", "-") for name in _config_overrides(args)]
        if given:
            raise UsageError(f"--resume takes the configuration, save times and engine from the checkpoint; "
                             f"drop {', '.join(given)}")
        ck = load_checkpoint(args.resume)
        config, saves, engine = ck.config, None, ck.engine
        out = args.out or ck.extra.get("out")
        ck_path = args.checkpoint or args.resume
        every = args.checkpoint_every or ck.extra.get("checkpoint_every") or DEFAULT_CHECKPOINT_EVERY
        label = f"resuming {args.resume} at step {ck.step}:"
    else:
        config = _config_from_args(args)
        engine = args.engine or "auto"
        if engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        dynamics, flow = _dynamics_from_args(args)
        saves = 200 if args.saves is None else args.saves
        if not 2 <= saves <= MAX_SAVES:
            raise UsageError(f"--saves must be between 2 and {MAX_SAVES}; got {saves}; e.g. --saves 200")
        if args.checkpoint_every is not None and not args.checkpoint:
            raise UsageError(f"--checkpoint-every needs --checkpoint FILE; got --checkpoint-every "
                             f"{args.checkpoint_every:g} alone")
        out, ck_path = args.out, args.checkpoint
        every = args.checkpoint_every or DEFAULT_CHECKPOINT_EVERY
        label = f"{args.preset or 'balanced'}"
    for flag, path in (("--out", out), ("--checkpoint", ck_path)):
        if path and os.path.splitext(path)[1].lower() in _FIGURE_EXTENSIONS:
            data = os.path.splitext(path)[0] + ".npz"
            raise UsageError(f"{flag} {path!r} looks like a figure, but attnsim run writes data (.npz) there; use "
                             f"{flag} {data} and draw the result with: attnsim plot {data} --out {path}")
    if out:
        _check_writable(out, "--out")
    if ck_path:
        _check_writable(ck_path, "--checkpoint")
        if out and _same_file(out, ck_path):
            raise UsageError(f"--out and the checkpoint must be different files; got {out!r} for both")
    # Also the checkpoint Ctrl-C would write when no --checkpoint is given.
    _check_no_lost_work(out, ck_path or _interrupt_checkpoint_path(out), config,
                        resumed=args.resume, overwrite=args.overwrite, out_named=bool(args.out))
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    print(f"attnsim run: {label} d={config.d} ‖μ‖={config.signal_norm:g} SNR={config.snr:.4g} "
          f"n={config.n_train} T={config.T} η={config.eta:g} trainable={config.trainable} "
          f"lr={config.lr:g} steps={config.steps}", flush=True)
    if not args.resume and dynamics == "gd" and config.steps >= LONG_GD_STEPS:
        print(f"attnsim: note: {config.steps:,} exact GD steps take a day or more (of the order of 1e5 steps a "
              "second); --dynamics flow reaches horizons up to 1e15 in seconds", file=sys.stderr, flush=True)

    extra = {"out": os.path.abspath(out) if out else None, "checkpoint_every": every}
    hook = CheckpointHook(ck_path or _interrupt_checkpoint_path(out), config, every, extra=extra)
    run = None
    previous_term = _sigterm_as_ctrl_c()
    try:
        run = _restore_noting_warnings(ck) if args.resume else prepare_run(config, SaveAt.log(config.steps, saves),
                                                                          engine=engine, dynamics=dynamics,
                                                                          flow=flow)
        if args.max_margin:   # computed from the recorded scores at the end, so a resumed run can ask too
            run.max_margin = "final"
        run.warm_up()
        hook.last = hook.clock()  # the first interval starts with the stepping, not before set-up
        run.run(progress=progress, hooks=[hook] if ck_path else [])
    except KeyboardInterrupt:
        if run is None or not (run.done and run.status != INTERRUPTED):
            return _interrupted(run, hook, config, out)
        # Ctrl-C landed after the last step: the run is complete, finish normally.
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    if ck_path and (hook.written or os.path.exists(ck_path)):
        # The checkpoint on disk is this run's (or replaced with --overwrite): let it say the
        # run is finished, so that a rerun sees no unfinished work there. Before the result:
        # a crash in between leaves a checkpoint that --resume turns into the result.
        hook.write(run)
    result = run.result(config, params=bool(out))  # the final W (d x d) only when it is saved
    print(_format_summary(result))
    if out:
        try:
            result.save(out)
        except OSError as exc:
            return _unsaved(run, hook, out, exc)
        print(f"saved {out}")
    return 0 if result.success else 1


def _unsaved(run, hook, out, exc) -> int:
    """The run ended but ``--out`` could not be written (a full disk, a quota): keep its final state
    in a checkpoint if none holds it yet, and say in one line how to write the result elsewhere."""
    reason = f"{exc.filename or out}: {' '.join(str(exc.strerror or exc).split())}"
    if not (hook.written and os.path.exists(hook.path)):
        try:
            hook.write(run)
        except OSError as again:
            print(f"attnsim: error: {reason}; the run's final state could not be kept either "
                  f"({again.filename or hook.path}: {again.strerror or again}); free some space and run again",
                  file=sys.stderr)
            return 1
    print(f"attnsim: error: {reason}; the run finished and its final state is in the checkpoint {hook.path}: "
          f"attnsim run --resume {shlex.quote(str(hook.path))} --out OTHER.npz writes the result",
          file=sys.stderr)
    return 1


def _restore_noting_warnings(ck):
    """``restore`` with its environment warning printed as one ``attnsim: warning:`` line."""
    import warnings

    from ._checkpoint import CheckpointWarning, restore

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointWarning)
        run = restore(ck)
    for w in caught:
        print(f"attnsim: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    return run


def _interrupt_checkpoint_path(out) -> str:
    """Where Ctrl-C writes its checkpoint when no ``--checkpoint`` was given."""
    if out:
        root, ext = os.path.splitext(out)
        return root + ".checkpoint" + (ext or ".npz")
    return "attnsim-checkpoint.npz"


def _sigterm_as_ctrl_c():
    """Treat SIGTERM (batch schedulers, ``kill``) like Ctrl-C: it raises KeyboardInterrupt, held
    to the end of a chunk as Ctrl-C is (``Run.run``). Raised directly, not passed on as SIGINT:
    a shell starts a background job with SIGINT ignored. Returns the previous handler."""
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


def _interrupted(run, hook, config, out) -> int:
    """After Ctrl-C: write a checkpoint and the partial Result, say how to resume (one line)."""
    # A second Ctrl-C or SIGTERM must not tear the files being written (they are atomic anyway).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if run is None or run.next_save == 0:   # e.g. while compiling: no state worth a file
            print("attnsim: interrupted before training started; nothing was written", file=sys.stderr)
            return EXIT_INTERRUPTED
        run.status, run.message = INTERRUPTED, f"interrupted at step {run.step}"
        written = []
        try:
            hook.write(run)
            written.append(f"checkpoint {hook.path}")
            result = run.result(config)
            print(_format_summary(result))
            if out:
                result.save(out)
                written.append(f"partial result {out}")
        except OSError as exc:
            print(f"attnsim: interrupted at step {run.step} of {run.total_steps}; could not write "
                  f"{exc.filename or 'the checkpoint'} ({exc.strerror})", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"attnsim: interrupted at step {run.step} of {run.total_steps}; wrote {' and '.join(written)}; "
              f"resume with: attnsim run --resume {shlex.quote(str(hook.path))}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def _cmd_plot(args):
    import matplotlib

    matplotlib.use("Agg")   # files only: no display needed, none opened
    from matplotlib.backend_bases import FigureCanvasBase

    from ._plot import plot_result

    result = load(args.path)
    out = args.out or os.path.splitext(args.path)[0] + ".png"
    formats = FigureCanvasBase.get_supported_filetypes()
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in formats:
        raise UsageError(f"--out {out!r}: the figure format comes from the extension, one of "
                         f"{', '.join('.' + f for f in sorted(formats))}; got {('.' + ext) if ext else 'none'}")
    if _same_file(out, args.path):
        raise UsageError(f"--out {out!r} is the input result; choose another file for the figure")
    _check_writable(out, "--out", example="run.png")
    import matplotlib.pyplot as plt

    fig = plot_result(result)
    try:
        with _atomic(out, "wb") as fh:   # creates missing folders like `run --out`; never a torn figure
            fig.savefig(fh, format=ext, dpi=120)
    finally:
        plt.close(fig)
    print(f"saved {out}")
    return 0


def _cmd_presets(args):
    for name in PRESETS:
        c = preset(name)
        print(f"{name:<13} d={c.d:<5} ‖μ‖={c.signal_norm:<5g} SNR={c.snr:.4g}")
    return 0


def _add_sweep_arguments(parser) -> None:
    """Arguments of ``attnsim sweep`` (``add_config_flags`` adds one flag per Config field)."""
    parser.add_argument("folder", help="results folder (created, or extended if it exists)")
    parser.add_argument("--preset", default="balanced", help="base preset for the fields not swept (default balanced)")
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=VALUES",
                        help="a swept Config field: FIELD=V1,V2,... or FIELD=LO:HI:STEP (inclusive); repeatable")
    parser.add_argument("--seeds", default=None, metavar="VALUES",
                        help="seeds to run at every grid point: 0,1,2 or 0:9 (default: the base seed)")
    parser.add_argument("--saves", default="200", metavar="N", help="log-spaced save times per run (default 200)")
    parser.add_argument("--workers", default=None, metavar="N",
                        help="local worker processes (default: all cores; 1 runs in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on the Dask distributed scheduler at ADDRESS (needs attnsim[dask])")
    parser.add_argument("--engine", default="auto", help="auto, primal or dual (default auto)")
    parser.add_argument("--probes", default=None, choices=["noise"],
                        help="also record W^T p along every training token's noise vector")
    parser.add_argument("--keep-params", action="store_true", help="keep the final W in every file (dual runs: its O(N^2) dual "
                        "state, Result.W rebuilt on request; primal: d x d)")
    _add_dynamics_flags(parser)
    parser.add_argument("--flow-retries", default=None, metavar="N",
                        help="reruns of a flow point that stopped stiff, each with 10x max_steps (default 1)")
    parser.add_argument("--show", action="store_true", help="print the finished points of FOLDER and exit")
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar over grid points (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    _add_config_flags(parser)


def _nonnegative_int(flag, text):
    return 0 if str(text).strip() == "0" else _positive_int(flag, text, ">= 0")


def _positive_int(flag, text, rule=">= 1"):
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value == int(value) and value >= 1):
        raise ConfigError(f"{flag} must be an integer {rule}; got {text!r}")
    return int(value)


def _format_table(sw, columns=None) -> str:
    """The finished points as an aligned text table (swept fields first)."""
    rows = sw.table()
    if not rows:
        return "(no finished points)"
    config_cols = field_names()
    varying = [c for c in config_cols if len({json.dumps(r[c]) for r in rows}) > 1]
    columns = columns or varying + ["train_acc", "test_acc", "train_loss", "test_loss", "regime", "status"]

    def fmt(value):
        if value is None:
            return "nan"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    def sort_key(r):
        return [json.dumps(r[c]) if not isinstance(r[c], (int, float)) else r[c] for c in varying]

    cells = [[fmt(r.get(c)) for c in columns] for r in sorted(rows, key=sort_key)]
    widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cmd_sweep(args) -> int:
    """``attnsim sweep``; ConfigError / ResultFileError become one line and exit 2 in ``main``."""
    from ._sweep import POINTS, Sweep, grid_configs, parse_grid_arg, sweep

    if args.show:
        given = [flag for flag, value in (("--grid", args.grid), ("--seeds", args.seeds)) if value]
        given += ["--" + name.replace("_", "-") for name in _config_overrides(args)]
        if given:
            raise UsageError(f"--show prints every finished point of the folder and runs nothing; drop "
                             f"{', '.join(given)} (to look at some points, use Sweep.open(folder).select(...) in "
                             "Python)")
        print(_format_table(Sweep.open(args.folder)))
        return 0
    base = _config_from_args(args)
    grid = {}
    for text in args.grid:
        name, values = parse_grid_arg(text)
        if name in grid:
            raise UsageError(f"--grid {name}=... is given twice; give all its values in one --grid, e.g. "
                             f"--grid {name}={','.join(str(v) for v in [*grid[name], *values])}")
        grid[name] = values
    seeds = None
    if args.seeds is not None:
        if "seed" in grid:
            raise ConfigError("give the seeds either as --seeds or as --grid seed=..., not both")
        seeds = parse_grid_arg(f"seed={args.seeds}")[1]
    n_saves = _positive_int("--saves", args.saves)
    if n_saves < 2:
        raise ConfigError(f"--saves must be >= 2; got {n_saves}")
    workers = None if args.workers is None else _positive_int("--workers", args.workers)
    if args.engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}; got {args.engine!r}")
    if os.path.exists(args.folder) and not os.path.isdir(args.folder):
        raise ConfigError(f"folder {args.folder!r} is a file; give a folder for the sweep results")
    _check_folder_writable(args.folder, "sweep", args.folder)
    points = os.path.join(args.folder, POINTS)
    if os.path.isdir(points):
        _check_folder_writable(points, "sweep", args.folder)
    dynamics, flow = _dynamics_from_args(args)
    retries = {}
    if args.flow_retries is not None:
        if dynamics != "flow":
            raise UsageError("--flow-retries needs --dynamics flow")
        retries["flow_retries"] = _nonnegative_int("--flow-retries", args.flow_retries)
    configs = grid_configs(base, grid, seeds)   # validates every point before any work
    check_scheduler(args.scheduler)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    print(f"attnsim sweep: {len(configs)} points ({' x '.join(f'{k}[{len(v)}]' for k, v in grid.items()) or 'base'}"
          f"{f' x seed[{len(seeds)}]' if seeds else ''}) -> {args.folder}", flush=True)
    t0 = time.perf_counter()
    previous_term = _sigterm_as_ctrl_c()      # finished points are kept; the running ones are stopped
    try:
        sw = sweep(args.folder, base, grid=grid, seeds=seeds, n_saves=n_saves, probes=args.probes,
                   keep_params=args.keep_params, engine=args.engine, dynamics=dynamics, flow=flow, **retries,
                   workers=workers, scheduler=args.scheduler, progress=progress)
    except RuntimeError as exc:
        print(f"attnsim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    print(_format_table(sw))
    print(f"{len(sw)} finished points in {args.folder} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``attnsim`` command; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run" and args.preset is not None and args.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}; got {args.preset!r}")
        handler = {"run": _cmd_run, "plot": _cmd_plot, "presets": _cmd_presets, "sweep": _cmd_sweep}[args.command]
        return handler(args)
    except (UsageError, ConfigError, ResultFileError) as exc:
        # Exactly one line, whatever the message holds.
        print(f"attnsim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("attnsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:  # past the estimate (attnsim._memory): still one line, and what to change
        print("attnsim: error: out of memory; use --w0 identity (no d x d W0), --test-metrics population "
              "--n-test 0 (no test set), or a smaller --d", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # e.g. disk full while writing a result: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"attnsim: error: {where}{' '.join(str(exc.strerror or exc).split())}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
