"""Bad input is refused at the boundary with a message naming the field, the rule and the value,
and suggesting a fix (issue #5, "Bad input"; STYLE.md "Errors").

Tables pin every message with ``pytest.raises(..., match=...)``; hypothesis then throws random
invalid values at ``Config`` and at the command line and checks the error type every time.
"""

import math
import re
import string
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import attnsim
from attnsim import Config, ConfigError, SaveAt
from attnsim._validation import _nonfinite, check_array
from attnsim.cli import main

# ---------------------------------------------------------------- Config, field by field

CONFIG_CASES = [
    (dict(n_train=1), r"^n_train must be >= 2; got 1; both classes need a sample"),
    (dict(n_train=0), r"^n_train must be >= 2; got 0;"),
    (dict(n_train=2.5), r"^n_train must be an integer; got 2\.5 \(float\);"),
    (dict(n_train="20"), r"^n_train must be an integer; got '20' \(str\);"),
    (dict(n_train=True), r"^n_train must be an integer, not a boolean; got True;"),
    (dict(n_train=None), r"^n_train must be an integer; got None"),
    (dict(n_train=3, eta=0.6), r"^eta=0\.6 flips 2 of n_train=3 labels, leaving a class with no clean sample; "
                               r"lower eta or raise n_train"),
    (dict(n_test=-1), r"^n_test must be >= 0; got -1; use n_test=0 for no test set"),
    (dict(T=0), r"^T must be >= 1; got 0;"),
    (dict(T=2), r"^T must be >= n_relevant \+ n_weak \+ n_weak_opposite = 3; got T=2; raise T or use fewer"),
    (dict(n_weak=7), r"^T must be >= n_relevant \+ n_weak \+ n_weak_opposite = 9; got T=8"),
    (dict(d=1), r"^d must be >= 2; got 1; the class signals use e_1 and e_2; e\.g\. d=2000"),
    (dict(d=0), r"^d must be >= 2; got 0"),
    (dict(d=20.5), r"^d must be an integer; got 20\.5"),
    (dict(eta=1.0), r"^eta must be < 1\.0; got 1\.0; the label-noise rate lies in \[0, 1\)"),
    (dict(eta=-0.1), r"^eta must be >= 0\.0; got -0\.1;"),
    (dict(eta=math.nan), r"^eta must be finite; got nan"),
    (dict(lr=0.0), r"^lr must be > 0; got 0\.0; e\.g\. lr=5e-3"),
    (dict(lr=-1e-3), r"^lr must be > 0; got -0\.001"),
    (dict(lr=math.inf), r"^lr must be finite; got inf"),
    (dict(lr=math.nan), r"^lr must be finite; got nan"),
    (dict(lr="0.1"), r"^lr must be a real number; got '0\.1' \(str\)"),
    (dict(lr=1j), r"^lr must be a real number; got 1j \(complex\)"),
    (dict(steps=0), r"^steps must be >= 1; got 0; e\.g\. steps=1000"),
    (dict(steps=-5), r"^steps must be >= 1; got -5"),
    (dict(steps=1.5), r"^steps must be an integer; got 1\.5"),
    (dict(steps=math.inf), r"^steps must be an integer; got inf"),
    (dict(steps=2 ** 70), r"^steps must be <= 9007199254740992; got 1180591620717411303424"),
    (dict(signal_norm=0), r"^signal_norm must be > 0; got 0\.0"),
    (dict(signal_norm=-math.inf), r"^signal_norm must be finite; got -inf"),
    (dict(rho=-0.1), r"^rho must be >= 0; got -0\.1"),
    (dict(sigma_eps=-1), r"^sigma_eps must be >= 0; got -1\.0"),
    (dict(sigma_p=-1), r"^sigma_p must be >= 0; got -1\.0"),
    (dict(sigma_w=math.nan), r"^sigma_w must be finite; got nan"),
    (dict(head_scale=0), r"^head_scale must be > 0; got 0\.0; or None for the official"),
    (dict(n_relevant=0), r"^n_relevant must be >= 1; got 0; the relevant set R needs"),
    (dict(n_weak=-1), r"^n_weak must be >= 0; got -1"),
    (dict(n_weak_opposite=-2), r"^n_weak_opposite must be >= 0; got -2"),
    (dict(seed=-1), r"^seed must be >= 0; got -1; seeds are integers >= 0"),
    (dict(init_seed=-1), r"^init_seed must be >= 0; got -1"),
    (dict(init_seed="a"), r"^init_seed must be an integer; got 'a'"),
    (dict(label_noise="flip"), r"^label_noise must be one of 'official', 'random'; got 'flip'"),
    (dict(noise="gauss"), r"^noise must be one of 'isotropic', 'orthogonal'; got 'gauss'"),
    (dict(trainable="W"), r"^trainable must be one of 'Wp', 'p', 'Wp\+nu', 'p\+nu'; got 'W'"),
    (dict(trainable=["p"]), r"^trainable must be one of 'Wp', 'p', 'Wp\+nu', 'p\+nu'; got \['p'\]"),
    (dict(init="xavier"), r"^init must be one of 'official', 'gaussian', 'official-gaussian'; got 'xavier'"),
    (dict(optimizer="adam"), r"^optimizer must be one of 'gd', 'ngd', 'momentum'; got 'adam'"),
    (dict(w0="eye"), r"^w0 must be one of 'random', 'identity'; got 'eye'"),
    (dict(head_init="ones"), r"^head_init must be one of 'official', 'zero', 'gaussian'; got 'ones'"),
    (dict(sigma_nu=-1.0), r"^sigma_nu must be >= 0; got -1\.0"),
    (dict(signal_noise="clean"), r"^signal_noise must be one of 'noisy', 'noiseless'; got 'clean'"),
    (dict(labels="random"), r"^labels must be one of 'balanced', 'rademacher'; got 'random'"),
    (dict(labels="rademacher"), r"^labels='rademacher' needs label_noise='random' when eta > 0; got "
                                r"label_noise='official', eta=0\.2"),
    (dict(optimizer="ngd", ngd_norm="max"), r"^ngd_norm must be one of 'joint', 'block'; got 'max'"),
    (dict(ngd_norm="block"), r"^ngd_norm applies only with optimizer='ngd'; got ngd_norm='block' with "
                             r"optimizer='gd'; drop ngd_norm or set optimizer='ngd'"),
    (dict(momentum=0.9), r"^momentum applies only with optimizer='momentum'; got momentum=0\.9 with optimizer='gd'; "
                         r"drop momentum or set optimizer='momentum'"),
    (dict(optimizer="momentum"), r"^optimizer='momentum' needs momentum=beta in \[0, 1\) .*; got momentum=None; "
                                 r"pass e\.g\. momentum=0\.9"),
    (dict(optimizer="momentum", momentum=1.0), r"^momentum must be < 1\.0; got 1\.0; beta lies in \[0, 1\)"),
    (dict(optimizer="momentum", momentum=-0.1), r"^momentum must be >= 0; got -0\.1; beta lies in \[0, 1\)"),
    (dict(optimizer="momentum", momentum=float("nan")), r"^momentum must be finite; got nan"),
    (dict(optimizer="momentum", momentum="0.9"), r"^momentum must be a real number; got '0\.9' \(str\)"),
]


@pytest.mark.parametrize("kwargs, message", CONFIG_CASES, ids=[repr(c[0]) for c in CONFIG_CASES])
def test_config_rejects_bad_field(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Config(**kwargs)


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^preset must be one of 'balanced', 'large-noise', 'large-signal', "
                                          r"'magen'; "
                                          r"got 'nope'"):
        attnsim.preset("nope")


def test_replace_and_from_dict_refuse_unknown_fields():
    with pytest.raises(ConfigError, match=r"unknown Config field\(s\) \['foo'\]; allowed: \['n_train'"):
        Config().replace(foo=1)
    with pytest.raises(ConfigError, match=r"unknown Config field\(s\) \['bar'\]"):
        Config.from_dict({"bar": 2})


def test_whole_floats_are_accepted_as_integers():
    assert Config(steps=1e3, d=50.0).steps == 1000


# ---------------------------------------------------------------- train arguments


@pytest.fixture
def problem(rng):
    n, T, d = 4, 3, 5
    return dict(X=rng.standard_normal((n, T, d)), y=np.array([1.0, 1.0, -1.0, -1.0]), W0=np.eye(d),
                p0=np.zeros(d), nu=rng.standard_normal(d), lr=0.1, steps=10)


def _nan_at(shape, index):
    a = np.ones(shape)
    a[index] = np.nan
    return a


TRAIN_CASES = [
    (dict(X=np.ones((3, 5))), r"^X must be 3-dimensional; got shape \(3, 5\); X holds n samples"),
    (dict(X=np.ones((0, 3, 5))), r"^X must have n, T, d >= 1; got shape \(0, 3, 5\)"),
    (dict(X=_nan_at((4, 3, 5), (1, 2, 3))), r"^X must be finite; got nan at index \(1, 2, 3\) \(1 non-finite "
                                            r"entries\); remove or replace NaN/inf"),
    (dict(X=np.ones((4, 3, 5)) + 1j), r"^X must be real; got a complex array"),
    (dict(X="abc"), r"^X must be a real array; got str"),
    (dict(y=np.ones(3)), r"^y must have shape \(4,\); got \(3,\) \(axis 0 is 3, expected 4\); X has shape "
                         r"\(n, T, d\) = \(4, 3, 5\)"),
    (dict(y=np.array([1.0, 0.0, -1.0, 1.0])), r"^y must hold only -1 and \+1; got 0\.0 at index 1; map the "
                                              r"classes to \+-1"),
    (dict(y=np.array([1.0, np.inf, -1.0, 1.0])), r"^y must be finite; got inf at index \(1,\)"),
    (dict(W0=np.eye(4)), r"^W0 must have shape \(5, 5\); got \(4, 4\) \(axis 0 is 4, expected 5\)"),
    (dict(W0=np.ones((5, 4))), r"^W0 must have shape \(5, 5\); got \(5, 4\) \(axis 1 is 4, expected 5\)"),
    (dict(W0=_nan_at((5, 5), (2, 2))), r"^W0 must be finite; got nan at index \(2, 2\)"),
    (dict(p0=np.zeros(4)), r"^p0 must have shape \(5,\); got \(4,\)"),
    (dict(p0=np.full(5, -np.inf)), r"^p0 must be finite; got -inf at index \(0,\) \(5 non-finite entries\)"),
    (dict(nu=np.zeros((5, 1))), r"^nu must be 1-dimensional; got shape \(5, 1\)"),
    (dict(lr=0), r"^lr must be > 0; got 0\.0; the step size is a finite number > 0"),
    (dict(lr=np.nan), r"^lr must be finite; got nan"),
    (dict(lr=-np.inf), r"^lr must be finite; got -inf"),
    (dict(steps=0), r"^steps must be >= 1; got 0"),
    (dict(steps=2.5), r"^steps must be an integer; got 2\.5"),
    (dict(steps=True), r"^steps must be an integer, not a boolean"),
    (dict(save_at=[5, 3]), r"^save_at must be strictly increasing; got 5 then 3 at positions 0, 1; sort it"),
    (dict(save_at=[2, 2]), r"^save_at must be strictly increasing; got 2 then 2"),
    (dict(save_at=[-1, 5]), r"^save_at steps must be >= 0; got -1; drop the negative steps"),
    (dict(save_at=[0, 20]), r"^save_at steps must lie in \[0, steps=10\]; got range \[0, 20\]; drop the "
                            r"out-of-range steps or raise steps"),
    (dict(save_at=["a"]), r"^save_at must hold whole step numbers; got \['a'\] \(dtype <U1\); pass integers"),
    (dict(save_at=[0.5]), r"^save_at must hold whole step numbers; got \[0\.5\]"),
    (dict(save_at=[np.nan]), r"^save_at must hold whole step numbers; got \[nan\]"),
    (dict(save_at=[1e30]), r"^save_at steps must be below 2\*\*62; got 1e\+30"),
    (dict(save_at=[[1, 2]]), r"^save_at must be a non-empty 1-D sequence of steps; got shape \(1, 2\)"),
    (dict(save_at=SaveAt.log(20)), r"^save_at must run from step 0 to steps=10; got \[0, 20\]; build it with"),
    (dict(trainable="W"), r"^trainable must be one of 'Wp', 'p', 'Wp\+nu', 'p\+nu'; got 'W'"),
    (dict(optimizer="ngd", dynamics="flow"), r"^optimizer='ngd' is not available with dynamics='flow' \(the flow "
                                             r"follows plain GD\); use dynamics='gd' for optimizer='ngd'"),
    (dict(optimizer="momentum", momentum=0.9, dynamics="flow"),
     r"^optimizer='momentum' is not available with dynamics='flow' \(the flow follows plain GD\); use "
     r"dynamics='gd' for optimizer='momentum', or optimizer='gd' for the flow"),
    (dict(optimizer="sgd"), r"^optimizer must be one of 'gd', 'ngd', 'momentum'; got 'sgd'"),
    (dict(ngd_norm="block"), r"^ngd_norm applies only with optimizer='ngd'"),
    (dict(momentum=0.5), r"^momentum applies only with optimizer='momentum'; got momentum=0\.5 with optimizer='gd'"),
    (dict(optimizer="momentum", momentum=1.5), r"^momentum must be < 1\.0; got 1\.5"),
    (dict(engine="gpu"), r"^engine must be one of 'auto', 'primal', 'dual'; got 'gpu'"),
    (dict(backend="jax"), r"^backend must be one of 'numba', 'numpy'; got 'jax'"),
    (dict(X_test=np.ones((2, 3, 5))), r"^X_test and y_test must be given together"),
    (dict(X_test=np.ones((2, 3, 4)), y_test=np.ones(2)), r"^X_test must have shape \(\*, 3, 5\); got \(2, 3, 4\)"),
    (dict(X_test=np.ones((2, 3, 5)), y_test=np.ones(3)), r"^y_test must have shape \(2,\); got \(3,\)"),
    (dict(X_test=np.ones((2, 3, 5)), y_test=np.array([1.0, 3.0])), r"^y_test must hold only -1 and \+1; got 3\.0"),
    (dict(relevant=[True, False]), r"^relevant must be a boolean mask of shape \(3,\); got shape \(2,\)"),
    (dict(relevant=[0.5, 0, 0]), r"^relevant must hold booleans \(or 0/1\); got \[0\.5, 0\.0, 0\.0\]"),
    (dict(noisy=[True]), r"^noisy must be a boolean mask of shape \(4,\); got shape \(1,\)"),
    (dict(noisy=["x", "y", "z", "w"]), r"^noisy must hold booleans \(or 0/1\)"),
    (dict(y_true=[1, 1, 1, 5]), r"^y_true must hold only -1 and \+1; got 5\.0 at index 3"),
    (dict(roles=[0, 1]), r"^roles must be 3 integer codes in 0\.\.3"),
    (dict(roles=[0, 1, 7]), r"^roles must be 3 integer codes in 0\.\.3 .*got \[0, 1, 7\]"),
    (dict(probes=np.zeros((2, 4))), r"^probes must have shape \(\*, 5\); got \(2, 4\)"),
]


@pytest.mark.parametrize("override, message", TRAIN_CASES, ids=[",".join(c[0]) + str(i)
                                                                 for i, c in enumerate(TRAIN_CASES)])
def test_train_rejects_bad_argument(problem, override, message):
    with pytest.raises(ConfigError, match=message):
        attnsim.train(**{**problem, **override})


def test_train_never_mutates_its_inputs_even_when_refusing(problem):
    copies = {k: np.copy(v) for k, v in problem.items() if isinstance(v, np.ndarray)}
    with pytest.raises(ConfigError):
        attnsim.train(**{**problem, "save_at": [3, 1]})
    for k, v in copies.items():
        assert np.array_equal(problem[k], v)


# ---------------------------------------------------------------- hypothesis: random invalid Config values

INT_MINIMA = dict(n_train=2, n_test=0, T=1, d=2, n_relevant=1, n_weak=0, n_weak_opposite=0, steps=1, seed=0,
                  init_seed=0)
FLOATS = dict(signal_norm="positive", rho="nonnegative", sigma_eps="nonnegative", sigma_p="nonnegative",
              sigma_w="nonnegative", sigma_nu="nonnegative", lr="positive", head_scale="positive", eta="unit")
CHOICES = dict(label_noise=("official", "random"), noise=("isotropic", "orthogonal"),
               trainable=("Wp", "p", "Wp+nu", "p+nu"), optimizer=("gd", "ngd", "momentum"), ngd_norm=("joint", "block"),
               w0=("random", "identity"), head_init=("official", "zero", "gaussian"),
               signal_noise=("noisy", "noiseless"), labels=("balanced", "rademacher"),
               init=("official", "gaussian", "official-gaussian"), test_metrics=("sample", "population"),
               space=("explicit", "implicit"))

not_a_number = st.one_of(st.text(max_size=5), st.booleans(), st.complex_numbers(allow_nan=False).filter(
    lambda z: z.imag != 0), st.lists(st.integers(), max_size=2), st.just(object()))


def invalid_int(minimum):
    return st.one_of(st.integers(max_value=minimum - 1),
                     st.floats(allow_nan=True, allow_infinity=True).filter(
                         lambda x: not math.isfinite(x) or x != int(x)),
                     not_a_number)


def invalid_float(rule):
    bad_range = {"positive": st.floats(max_value=0.0), "nonnegative": st.floats(max_value=-1e-300),
                 "unit": st.one_of(st.floats(max_value=-1e-300), st.floats(min_value=1.0))}[rule]
    return st.one_of(bad_range.filter(math.isfinite), st.sampled_from([math.nan, math.inf, -math.inf]),
                     not_a_number)


#: Choice fields for which None is valid (it resolves to a default that depends on other fields).
OPTIONAL_CHOICES = ("test_metrics",)


def invalid_choice(allowed, optional=False):
    return st.one_of(st.text(max_size=10).filter(lambda s: s not in allowed), st.integers(),
                     *(() if optional else (st.none(),)),
                     st.lists(st.sampled_from(allowed), min_size=1, max_size=2))


INVALID = {**{k: invalid_int(m) for k, m in INT_MINIMA.items()},
           **{k: invalid_float(r) for k, r in FLOATS.items()},
           "momentum": invalid_float("unit"),     # and any beta without optimizer="momentum"
           **{k: invalid_choice(a, optional=k in OPTIONAL_CHOICES) for k, a in CHOICES.items()}}


@st.composite
def bad_field(draw):
    name = draw(st.sampled_from(sorted(INVALID)))
    return name, draw(INVALID[name])


@given(bad_field())
def test_config_refuses_random_invalid_values_naming_the_field(case):
    name, value = case
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    message = str(info.value)
    assert re.search(rf"\b{name}\b", message), message
    assert "\n" not in message and "got" in message


# ---------------------------------------------------------------- the command line

BASE = ["run", "--d", "20", "--n-train", "6", "--T", "4", "--n-test", "5", "--steps", "10", "--no-progress"]

CLI_CASES = [
    (["--steps", "0"], r"steps must be >= 1; got 0; e\.g\. steps=1000"),
    (["--steps", "1.5"], r"argument --steps: expected an integer such as 1000 or 1e6, got '1\.5'"),
    (["--steps", "1e400"], r"argument --steps: expected an integer such as 1000 or 1e6, got '1e400'"),
    (["--lr", "nan"], r"lr must be finite; got nan"),
    (["--lr", "-1"], r"lr must be > 0; got -1\.0"),
    (["--lr", "abc"], r"argument --lr: expected a number such as 0\.005 or 5e-3, got 'abc'"),
    (["--eta", "1"], r"eta must be < 1\.0; got 1\.0"),
    (["--d", "1"], r"d must be >= 2; got 1"),
    (["--n-train", "1"], r"n_train must be >= 2; got 1"),
    (["--n-train", "3", "--eta", "0.6"], r"leaving a class with no clean sample"),
    (["--T", "2"], r"T must be >= n_relevant \+ n_weak \+ n_weak_opposite = 3; got T=2"),
    (["--t", "2"], r"unrecognized arguments: --t 2"),  # no silent prefix matching (--trainable)
    (["--preset", "foo"], r"--preset must be one of balanced, large-noise, large-signal, magen; got 'foo'"),
    (["--engine", "gpu"], r"--engine must be one of auto, primal, dual; got 'gpu'"),
    (["--saves", "1"], r"--saves must be between 2 and 1000000; got 1"),
    (["--label-noise", "x"], r"label_noise must be one of 'official', 'random'; got 'x'"),
    (["--bogus"], r"unrecognized arguments: --bogus; see 'attnsim --help'"),
    (["--steps"], r"argument --steps: expected one argument"),
    (["--checkpoint-every", "5"], r"--checkpoint-every needs --checkpoint FILE"),
    (["--checkpoint", "c.npz", "--checkpoint-every", "0"],
     r"argument --checkpoint-every: must be a finite number of seconds > 0, got '0'"),
    (["--out", "."], r"--out: '\.' is a folder; give a file name such as"),
]


@pytest.mark.parametrize("extra, message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_bad_flag_is_one_line_exit_2_no_file(extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = ["--out", "sub/out.npz"] if "--out" not in extra else []
    assert main(BASE + out + extra) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("attnsim: error: "), captured.err
    assert re.search(message, captured.err), captured.err
    assert "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == [], "a failed command must not create files or folders"


def test_cli_resume_of_a_missing_file(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--resume", "missing.npz", "--out", "o.npz"]) == 2
    assert capsys.readouterr().err == "attnsim: error: missing.npz: no such file\n"
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_command_and_missing_command(capsys):
    assert main(["frob"]) == 2
    assert "invalid choice: 'frob'" in capsys.readouterr().err
    assert main([]) == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


letters = st.text(alphabet=string.ascii_letters + string.punctuation + " ", min_size=1, max_size=8)
INT_FLAGS = {"--n-train": 2, "--d": 2, "--steps": 1, "--T": 3, "--seed": 0, "--n-test": 0}
FLOAT_FLAGS = {"--lr": "positive", "--eta": "unit", "--signal-norm": "positive", "--rho": "nonnegative",
               "--sigma-eps": "nonnegative"}
CHOICE_FLAGS = {"--preset": ("balanced", "large-noise", "large-signal", "magen"), "--engine": ("auto", "primal", "dual"),
                "--label-noise": CHOICES["label_noise"], "--noise": CHOICES["noise"],
                "--trainable": CHOICES["trainable"], "--init": CHOICES["init"],
                "--test-metrics": CHOICES["test_metrics"]}


def _fmt(x):
    return repr(x) if isinstance(x, float) else str(x)


@st.composite
def bad_flag(draw):
    kind = draw(st.sampled_from(["int", "float", "choice", "saves"]))
    if kind == "int":
        flag = draw(st.sampled_from(sorted(INT_FLAGS)))
        value = draw(st.one_of(st.integers(max_value=INT_FLAGS[flag] - 1).map(str),
                               st.floats(allow_nan=False).filter(lambda x: x != int(x) if math.isfinite(x)
                                                                  else True).map(_fmt),
                               letters))
    elif kind == "float":
        flag = draw(st.sampled_from(sorted(FLOAT_FLAGS)))
        value = draw(st.one_of(invalid_float(FLOAT_FLAGS[flag]).filter(lambda v: isinstance(v, float)).map(_fmt),
                               letters.filter(lambda s: s.strip().lower() not in ("none",))))
    elif kind == "choice":
        flag = draw(st.sampled_from(sorted(CHOICE_FLAGS)))
        value = draw(letters.filter(lambda s: s not in CHOICE_FLAGS[flag]))
    else:
        flag = "--saves"
        value = draw(st.one_of(st.integers(max_value=1), st.integers(min_value=10 ** 6 + 1)).map(str))
    return flag, value


@given(bad_flag())
@settings(max_examples=40)
def test_cli_refuses_random_invalid_flags(tmp_path_factory, case):
    import contextlib
    import io
    import os

    flag, value = case
    folder = tmp_path_factory.mktemp("cli")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(BASE + ["--out", str(folder / "o.npz"), f"{flag}={value}"])
    text = err.getvalue()
    assert code == 2, (flag, value, text)
    assert text.count("\n") == 1 and text.startswith("attnsim: error: "), text
    assert os.listdir(folder) == []


SUBPROCESS_CASES = [
    (["--lr", "inf"], "lr must be finite; got inf"),
    pytest.param(["--eta", "-0.5"], "eta must be >= 0.0; got -0.5", marks=pytest.mark.slow),
    (["--preset", "nope"], "--preset must be one of balanced, large-noise, large-signal, magen"),
    pytest.param(["--engine", "tpu"], "--engine must be one of auto, primal, dual", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("extra, message", SUBPROCESS_CASES, ids=["lr", "eta", "preset", "engine"])
def test_cli_subprocess_bad_flag_is_one_line_exit_2(extra, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attnsim"] + BASE + ["--out", str(tmp_path / "o.npz")] + extra,
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


#: Config fields the random table above leaves out, each with the reason (none today).
NOT_IN_INVALID: dict[str, str] = {}


def test_invalid_table_covers_every_config_field():
    """A new Config field must get a generator of invalid values here (or a reason why not)."""
    fields = set(attnsim.field_names())
    assert set(INVALID) | set(NOT_IN_INVALID) == fields, (
        f"fields without invalid-value generators: {sorted(fields - set(INVALID) - set(NOT_IN_INVALID))}; "
        f"unknown names: {sorted((set(INVALID) | set(NOT_IN_INVALID)) - fields)}")
    assert not set(INVALID) & set(NOT_IN_INVALID)


@settings(max_examples=300, deadline=None)
@given(arr=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
                      elements=st.one_of(st.floats(), st.sampled_from([1.7e308, -1.7e308, 5e-324]))))
def test_the_finite_check_agrees_with_the_elementwise_test(arr):
    """``_nonfinite`` answers from the sum when it can: its count and first index must agree with
    ``isfinite`` everywhere, including finite entries whose sum overflows (none) and +inf beside -inf."""
    bad = np.flatnonzero(~np.isfinite(arr))
    assert _nonfinite(arr) == (bad.size, int(bad[0]) if bad.size else None)


@pytest.mark.parametrize("finite", [True, False])
def test_the_finite_check_makes_no_temporary_of_the_arrays_size(finite):
    """A (2048, 2048) W0 (32 MB): the check passes, or names the first of two non-finite entries
    (both past the first piece of the elementwise test), with at most 2 MB traced."""
    import tracemalloc

    W0 = np.random.default_rng(0).uniform(-1, 1, (2048, 2048))
    if not finite:
        W0[1500, 7], W0[2047, 2047] = np.inf, np.nan
    tracemalloc.start()
    try:
        if finite:
            check_array("W0", W0, ndim=2, copy=False)
        else:
            with pytest.raises(ConfigError, match=r"^W0 must be finite; got inf at index \(1500, 7\) "
                                                  r"\(2 non-finite entries\)"):
                check_array("W0", W0, ndim=2, copy=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 21, peak


@pytest.mark.parametrize("values, expected", [([1.7e308, 1.7e308], True), ([np.inf, -np.inf], False),
                                               ([1.0, np.nan], False), ([-np.inf, 2.0], False), ([0.0], True)])
def test_the_finite_check_at_its_edges(values, expected):
    assert (_nonfinite(np.array(values))[0] == 0) is expected


@pytest.mark.parametrize("text, message", [
    ("not json", r"a Config is read from JSON text such as Config\(\)\.to_json\(\) gives; this is not JSON "
                 r"\(Expecting value: line 1 column 1"),
    ("[1, 2]", r"a Config is read from a mapping of field names to values; got list"),
    ('{"d": 30, "bogus": 1}', r"unknown Config field\(s\) \['bogus'\]"),
])
def test_from_json_refuses_what_is_not_a_config_as_a_config_error(text, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_json(text)
    assert Config.from_json(Config(d=30).to_json()) == Config(d=30)
