"""Save-time specs."""

import numpy as np
import pytest

from attnsim import ConfigError, SaveAt
from attnsim._saveat import as_saveat


def test_log_spacing_includes_ends_and_is_strictly_increasing():
    s = SaveAt.log(10**9, 500).steps
    assert s[0] == 0 and s[-1] == 10**9 and s.dtype == np.int64
    assert np.all(np.diff(s) > 0)
    assert 400 <= s.size <= 500


def test_huge_horizons_do_not_overflow():
    s = SaveAt.log(10**15, 50).steps
    assert s[-1] == 10**15 and np.all(np.diff(s) > 0)


def test_explicit_adds_ends_and_default_is_log():
    assert SaveAt.explicit([3, 7], 10).steps.tolist() == [0, 3, 7, 10]
    assert as_saveat([5], 10).steps.tolist() == [0, 5, 10]
    assert as_saveat(None, 100).steps[-1] == 100


@pytest.mark.parametrize("bad, match", [
    ([3, 2], "strictly increasing; got 3 then 2"),
    ([-1, 4], ">= 0; got -1"),
    ([1.5], "whole step numbers"),
    ([4, 11], r"must lie in \[0, steps=10\]"),
])
def test_bad_save_times_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        as_saveat(bad, 10)


def test_a_saveat_for_another_horizon_is_refused():
    with pytest.raises(ConfigError, match="must run from step 0 to steps=10"):
        as_saveat(SaveAt.log(20), 10)
