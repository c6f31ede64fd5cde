"""``train_many`` / ``simulate_many``: same results as one run at a time, in input order; the flow
passed through, and dynamics validated before any run."""

import numpy as np
import pytest

import attnsim
from attnsim import Config, ConfigError, SaveAt, simulate, simulate_many, sweep, train, train_many

from tools.cases import FLOW, FLOW_CFG


def _problem(seed, n=4, T=3, d=6):
    rng = np.random.default_rng(seed)
    return dict(X=rng.standard_normal((n, T, d)), y=np.where(np.arange(n) % 2 == 0, 1.0, -1.0),
                W0=rng.uniform(-1, 1, (d, d)) / np.sqrt(d), p0=np.zeros(d), nu=rng.standard_normal(d))


def _same(a, b):
    for name in ("steps", "train_loss", "margins", "attention", "p", "W"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.engine == b.engine and a.message == b.message


def test_train_many_in_process_equals_train_one_by_one():
    problems = [_problem(s) for s in range(3)]
    problems[1]["trainable"] = "p"                     # per-problem override of a common argument
    many = train_many(problems, lr=0.3, steps=500, trainable="Wp", workers=1)
    assert [r.final_step for r in many] == [500, 500, 500]
    for prob, res in zip(problems, many):
        kw = {"lr": 0.3, "steps": 500, "trainable": "Wp", **prob}
        _same(res, train(**kw))


def test_simulate_many_on_two_worker_processes_is_bitwise_serial_and_ordered():
    configs = [Config(d=40, n_test=10, steps=300, seed=s, trainable=t) for s, t in ((3, "Wp"), (1, "p"), (2, "Wp"))]
    pooled = simulate_many(configs, workers=2)
    assert [r.config for r in pooled] == configs
    for config, res in zip(configs, pooled):
        _same(res, simulate(config))


def test_train_many_uses_a_given_executor():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        many = train_many([_problem(s) for s in range(2)], lr=0.1, steps=50, executor=ex)
    _same(many[1], train(**_problem(1), lr=0.1, steps=50))


def test_empty_batches_return_empty_lists():
    assert train_many([], lr=0.1, steps=5) == [] and simulate_many([]) == []


@pytest.mark.parametrize("call, match", [
    (lambda: train_many([_problem(0)], lr=0.1, steps=5, hooks=[print]), "unbatchable argument 'hooks'"),
    (lambda: train_many([dict(_problem(0), colour=1)], lr=0.1, steps=5), r"problems\[0\].*'colour'"),
    (lambda: train_many([(1, 2)], lr=0.1, steps=5), r"problems\[0\] must be a mapping.*tuple"),
    (lambda: simulate_many([Config(), "balanced"]), r"configs\[1\] must be an attnsim.Config; got str"),
    (lambda: train_many([_problem(0)], lr=0.1, steps=5, workers=0), "workers must be a positive int"),
])
def test_bad_batches_are_rejected_with_a_message(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_a_failing_run_raises_its_own_error():
    bad = dict(_problem(0), lr=-1.0)
    with pytest.raises(ConfigError, match="lr"):
        train_many([_problem(1), bad], steps=5, lr=0.1, workers=1)


# ------------------------------------------------------------------ the flow in batches


def test_simulate_many_flow_is_simulate_flow_bit_for_bit():
    cfgs = [FLOW_CFG.replace(seed=s) for s in (0, 1)]
    save = SaveAt.log(FLOW_CFG.steps, 12)
    many = simulate_many(cfgs, save, dynamics="flow", flow=FLOW, workers=1)
    for cfg, res in zip(cfgs, many):
        one = simulate(cfg, save, dynamics="flow", flow=FLOW)
        assert res.extra["dynamics"] == "flow" and res.extra["max_steps"] == FLOW["max_steps"]
        assert res.final_step == 10 ** 8 and res.status == "finished"
        for name in ("train_loss", "test_loss", "test_acc_se", "scores"):
            assert getattr(res, name).tobytes() == getattr(one, name).tobytes(), name


def test_simulate_many_flow_in_worker_processes():
    cfgs = [FLOW_CFG.replace(seed=s, steps=10 ** 6) for s in (0, 1)]
    many = simulate_many(cfgs, dynamics="flow", flow=FLOW, workers=2)
    assert [r.extra["dynamics"] for r in many] == ["flow", "flow"]
    assert [r.extra["gd_start_steps"] for r in many] == [200, 200]


def test_train_many_passes_the_flow_through():
    data = attnsim.make_data(FLOW_CFG)
    W0, p0 = attnsim.init_params(FLOW_CFG)
    prob = dict(X=data.X, y=data.y, W0=W0, p0=p0, nu=data.nu)
    out = train_many([prob, {**prob, "dynamics": "gd", "flow": None, "steps": 30}], lr=FLOW_CFG.lr, steps=10 ** 7,
                     dynamics="flow", flow=FLOW, workers=1)
    assert out[0].extra["dynamics"] == "flow" and out[0].final_step == 10 ** 7
    assert out[1].extra.get("dynamics", "gd") == "gd" and out[1].final_step == 30


@pytest.mark.parametrize("kwargs,match", [
    (dict(dynamics="ode"), r"dynamics must be one of"),
    (dict(dynamics="gd", flow=FLOW), r"flow options apply only with dynamics='flow'"),
    (dict(dynamics="flow", flow={"max_step": 3}), r"flow options \['max_step'\] are not known"),
    (dict(dynamics="flow", flow={"rtol": -1.0}), r"flow.rtol"),
])
def test_batches_and_sweeps_validate_dynamics_before_running(kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        simulate_many([FLOW_CFG], **kwargs)
    with pytest.raises(ConfigError, match=match):
        sweep(tmp_path, FLOW_CFG, **kwargs, progress=False)
    with pytest.raises(ConfigError, match=r"problems\[0\]: " + match):
        train_many([dict(X=np.zeros((2, 2, 2)), y=[1, -1], W0=np.eye(2), p0=np.zeros(2), nu=np.ones(2), **kwargs)],
                   lr=0.1, steps=2)
