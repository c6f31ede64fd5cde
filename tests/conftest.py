"""Shared fixtures and the hypothesis profiles.

``HYPOTHESIS_PROFILE=thorough`` runs many more examples than the default
deterministic profile used by ``make test``.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=25, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(20250713)


@pytest.fixture(autouse=True)
def _python_sigint_handler():
    """Each test runs with Python's own SIGINT handler, as in a terminal. A shell starts background
    jobs (``make test &``) with SIGINT ignored, and Python keeps that: the in-process Ctrl-C tests
    (``os.kill(os.getpid(), SIGINT)``) then saw their runs finish with exit 0 instead of 130."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before is not None:                    # None: a handler not installed from Python, left alone
        signal.signal(signal.SIGINT, before)
