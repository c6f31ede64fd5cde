"""Command line: ``attnsim run`` and ``attnsim plot``.

User errors become one line on stderr and exit status 2; no output file is
created by a command that failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import typing

from ._config import PRESETS, Config, preset
from ._engine import ENGINES
from ._result import ResultFileError, load
from ._saveat import SaveAt
from ._validation import ConfigError

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _int_arg(text):
    """Integers, also written as 1e6 or 1_000_000."""
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def _float_arg(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _optional(convert):
    def parse(text):
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = convert.__name__
    return parse


_CONVERTERS = {int: _int_arg, float: _float_arg, str: str}


def _add_config_flags(parser):
    """One ``--kebab-case`` flag per Config field, typed from its annotation."""
    hints = typing.get_type_hints(Config)
    group = parser.add_argument_group("Config fields (override the preset)")
    for field in dataclasses.fields(Config):
        hint = hints[field.name]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next(a for a in args if a is not type(None)) if optional else hint
        convert = _CONVERTERS[base]
        group.add_argument(
            "--" + field.name.replace("_", "-"), dest=field.name, default=None,
            type=_optional(convert) if optional else convert, metavar=base.__name__.upper(),
            help=f"default {field.default!r}",
        )


def _build_parser():
    parser = _Parser(prog="attnsim", description="Simulate GD training of single-layer attention "
                     "(Sakamoto & Sato, ICML 2025).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="train one configuration and print a summary")
    run.add_argument("--preset", default="balanced", help=f"one of {', '.join(PRESETS)} (default balanced)")
    run.add_argument("--out", help="write the Result to this .npz file")
    run.add_argument("--saves", type=_int_arg, default=200, help="number of log-spaced save times (default 200)")
    run.add_argument("--engine", default="auto", help=f"one of {', '.join(ENGINES)} (default auto)")
    bar = run.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    _add_config_flags(run)

    plot = sub.add_parser("plot", help="draw training curves and attention of a saved run")
    plot.add_argument("path", help="a .npz file written by `attnsim run --out`")
    plot.add_argument("--out", help="figure file (default: next to the input, .png)")

    sub.add_parser("presets", help="list the paper presets")

    from ._sweep import add_sweep_arguments

    add_sweep_arguments(sub.add_parser("sweep", help="run a resumable grid of configurations and seeds into a "
                                       "results folder, in parallel"), _add_config_flags)
    return parser


def _config_from_args(args) -> Config:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if getattr(args, f.name) is not None}
    return preset(args.preset, **overrides)


def _check_writable(path, flag):
    """Create the folder of ``path`` if needed and check it is writable, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag}: cannot create folder {folder!r} ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag}: folder {folder!r} is not writable")


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
    from ._experiment import simulate

    config = _config_from_args(args)
    if args.engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}; got {args.engine!r}")
    if args.saves < 2:
        raise UsageError(f"--saves must be >= 2; got {args.saves}")
    if args.out:
        _check_writable(args.out, "--out")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    print(f"attnsim run: {args.preset} d={config.d} ‖μ‖={config.signal_norm:g} SNR={config.snr:.4g} "
          f"n={config.n_train} T={config.T} η={config.eta:g} trainable={config.trainable} "
          f"lr={config.lr:g} steps={config.steps}", flush=True)
    result = simulate(config, SaveAt.log(config.steps, args.saves), engine=args.engine, progress=progress)
    print(_format_summary(result))
    if args.out:
        result.save(args.out)
        print(f"saved {args.out}")
    return 0 if result.success else 1


def _cmd_plot(args):
    from ._plot import plot_result

    result = load(args.path)
    out = args.out or os.path.splitext(args.path)[0] + ".png"
    _check_writable(out, "--out")
    plot_result(result, out)
    print(f"saved {out}")
    return 0


def _cmd_presets(args):
    for name in PRESETS:
        c = preset(name)
        print(f"{name:<13} d={c.d:<5} ‖μ‖={c.signal_norm:<5g} SNR={c.snr:.4g}")
    return 0


def _cmd_sweep(args):
    from ._sweep import run_sweep_command

    return run_sweep_command(args, _config_from_args, sys.stderr.isatty())


def main(argv=None) -> int:
    """Entry point of the ``attnsim`` command; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "run" and args.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}; got {args.preset!r}")
        handler = {"run": _cmd_run, "plot": _cmd_plot, "presets": _cmd_presets, "sweep": _cmd_sweep}[args.command]
        return handler(args)
    except (UsageError, ConfigError, ResultFileError) as exc:
        print(f"attnsim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
