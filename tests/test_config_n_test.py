"""``Config.n_test`` follows ``test_metrics`` when it is not given (issue 17.6)."""

import json

import pytest

from attnsim import Config, ConfigError, preset
from attnsim._sweep import grid_configs, point_key, recording


def test_n_test_defaults_to_the_papers_test_set_and_to_none_for_population_metrics():
    assert Config().n_test == 1000 and isinstance(Config().n_test, int)
    assert Config(test_metrics="population").n_test == 0
    assert Config(test_metrics="population") == Config(test_metrics="population", n_test=0)
    assert preset("large-noise", test_metrics="population").n_test == 0
    assert Config(n_test=None).n_test == 1000


def test_an_explicit_nonzero_n_test_with_population_metrics_is_an_error():
    with pytest.raises(ConfigError, match=r"n_test must be 0 with test_metrics='population' .*got n_test=5; leave "
                                          r"n_test out \(or pass n_test=0\), or use test_metrics='sample'"):
        Config(test_metrics="population", n_test=5)
    with pytest.raises(ConfigError, match=r"got n_test=20"):
        Config(n_test=20).replace(test_metrics="population")


def test_replace_moves_a_default_n_test_with_test_metrics():
    assert Config().replace(test_metrics="population").n_test == 0
    assert Config(test_metrics="population").replace(test_metrics="sample").n_test == 1000
    assert Config(test_metrics="population").replace(d=30).n_test == 0
    assert Config().replace(test_metrics="population", n_test=0).n_test == 0
    assert [c.n_test for c in grid_configs(Config(), {"test_metrics": ["sample", "population"]})] == [1000, 0]


def test_saved_configs_store_the_resolved_n_test_and_load_back():
    for cfg in (Config(), Config(test_metrics="population"), Config(n_test=7)):
        data = json.loads(cfg.to_json())
        assert data["n_test"] == cfg.n_test and data["n_test"] is not None
        assert Config.from_json(cfg.to_json()) == cfg
    # a config written before the default moved (every field explicit)
    old = {**Config().to_dict(), "test_metrics": "population", "n_test": 0}
    assert Config.from_dict(old).n_test == 0


def test_sweep_point_keys_of_existing_folders_are_unchanged():
    """Keys hash the resolved Config: the values were computed with the code before n_test could be None."""
    save = recording(200, None, False)
    assert point_key(Config(), save) == "079dcf7b0051ba46"
    assert point_key(Config(n_test=20, d=40), save) == "3382d3ea7166288c"
    # population points were written with n_test=0 given explicitly; leaving it out is the same point
    assert point_key(Config(test_metrics="population", d=16, steps=10 ** 8), save) == "97005ff25ae2c4a8"


def test_a_test_set_in_the_implicit_space_is_refused_naming_why_population_metrics_apply():
    with pytest.raises(ConfigError, match=r"n_test must be 0 with test_metrics='population' \(the default with "
                                          r"space='implicit', which has no d-dimensional test set to draw; .*got "
                                          r"n_test=10; leave n_test out \(or pass n_test=0\)$"):
        Config(space="implicit", init="official-gaussian", d=10 ** 6, n_test=10)
