"""``__version__`` from the installed package's metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("attnsim")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
