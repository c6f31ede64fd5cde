"""The Examples sections of the docstrings run and print what they claim."""

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import attnsim

MODULES = sorted(m.name for m in pkgutil.iter_modules(attnsim.__path__, "attnsim.") if m.name != "attnsim.__main__")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with np.printoptions(legacy=False):
        failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert failures == 0


def test_public_names_are_exported():
    for name in attnsim.__all__:
        assert hasattr(attnsim, name), name
