"""attnsim: fast exact gradient-descent simulation of single-layer attention.

Reproduces and extends Sakamoto & Sato, "Benign Overfitting in Token Selection of
Attention Mechanism" (ICML 2025, arXiv 2409.17625): ``f(X) = nu^T X^T softmax(X W^T p)``.
"""

from importlib.metadata import PackageNotFoundError, version

from ._analysis import (
    NEVER, REGIMES, FrakSums, QueryDecomposition, Regime, anchor_tokens, argmax_token, classify_regime,
    decompose_query, first_passage, fitted, frak_sums, gaps, growth, min_gap, noise_probes, noisy_fit_times,
    noisy_fitted, role_mass, time_to_fit_all, time_to_test_acc, time_to_test_loss, token_noise, token_values,
)
from ._batch import simulate_many, train_many
from ._config import PRESETS, Config, field_names, preset
from ._data import ROLE_NAMES, Data, init_params, make_data
from ._checkpoint import CheckpointHook, CheckpointWarning, load_checkpoint, restore, resume, save_checkpoint
from ._engine import choose_engine, step_costs, train
from ._experiment import simulate
from ._flow import FlowOptions
from ._kernels import loss_and_grads
from ._population import PopulationMetrics, population_metrics, population_metrics_from_params, population_moments
from ._result import Result, ResultFileError, load
from ._saveat import SaveAt
from ._sweep import Sweep, grid_configs, sweep
from ._validation import ConfigError

try:
    __version__ = version("attnsim")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "FrakSums", "NEVER", "QueryDecomposition", "REGIMES", "Regime", "anchor_tokens", "argmax_token",
    "classify_regime", "decompose_query", "first_passage", "fitted", "frak_sums", "gaps", "growth", "min_gap",
    "noise_probes", "noisy_fit_times", "noisy_fitted", "role_mass", "time_to_fit_all", "time_to_test_acc",
    "time_to_test_loss", "token_noise", "token_values", "Sweep", "grid_configs", "sweep",
    "Config", "ConfigError", "Data", "PRESETS", "ROLE_NAMES", "Result", "ResultFileError", "SaveAt",
    "choose_engine", "field_names", "init_params", "load", "loss_and_grads", "make_data", "preset",
    "simulate", "simulate_many", "step_costs", "train", "train_many", "__version__",
    "PopulationMetrics", "population_metrics", "population_metrics_from_params", "population_moments",
    "CheckpointHook", "CheckpointWarning", "FlowOptions", "load_checkpoint", "restore", "resume", "save_checkpoint",
]
