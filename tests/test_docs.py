"""The Examples sections of the docstrings run and print what they claim."""

import doctest
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import attnsim

MODULES = sorted(m.name for m in pkgutil.walk_packages(attnsim.__path__, "attnsim.") if m.name != "attnsim.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert failures == 0


def test_public_names_are_exported_both_ways():
    """``__all__`` names exist, and every public name of the package namespace is in ``__all__``."""
    for name in attnsim.__all__:
        assert hasattr(attnsim, name), name
    public = {name for name, obj in vars(attnsim).items()
              if not name.startswith("_") and not inspect.ismodule(obj) and name not in ("annotations",)}
    assert public <= set(attnsim.__all__), f"public but not in __all__: {sorted(public - set(attnsim.__all__))}"
    assert len(attnsim.__all__) == len(set(attnsim.__all__)), "duplicates in __all__"


def test_public_functions_return_public_classes():
    """A public function never returns an object whose class a user cannot import from attnsim."""
    import typing

    exported = {getattr(attnsim, n) for n in attnsim.__all__ if inspect.isclass(getattr(attnsim, n))}
    for name in attnsim.__all__:
        fn = getattr(attnsim, name)
        if not inspect.isfunction(fn):
            continue
        ret = typing.get_type_hints(fn).get("return")
        if inspect.isclass(ret) and ret.__module__.startswith("attnsim"):
            assert ret in exported, f"attnsim.{name} returns {ret.__name__}, which attnsim does not export"


def test_benchmarks_readme_names_every_script_and_where_its_numbers_go():
    import os

    folder = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as fh:
        rows = {line.split("|")[1].strip(): line for line in fh if line.startswith("| `")}
    scripts = sorted(f for f in os.listdir(folder) if f.endswith(".py"))
    assert scripts and [s for s in scripts if f"`{s}`" not in rows] == []
    for s in scripts:
        assert rows[f"`{s}`"].count("|") == 4, f"benchmarks/README.md: the row of {s} needs 'measures' and 'goes to'"
