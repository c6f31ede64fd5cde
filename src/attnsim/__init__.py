"""attnsim: fast exact gradient-descent simulation of single-layer attention.

Reproduces and extends Sakamoto & Sato, "Benign Overfitting in Token Selection of
Attention Mechanism" (ICML 2025, arXiv 2409.17625): ``f(X) = nu^T X^T softmax(X W^T p)``.
"""

from ._analysis import (
    NEVER, REGIMES, FrakSums, QueryDecomposition, Regime, anchor_tokens, argmax_token, classify_regime,
    decompose_query, first_passage, fitted, frak_sums, gaps, growth, min_gap, noise_probes, noisy_fit_times,
    noisy_fitted, role_mass, time_to_fit_all, time_to_test_acc, time_to_test_loss, token_noise, token_values,
)
from ._att_svm import AttSVM, att_svm, att_svm_gram, mm_cosine_dual, optimal_tokens, selected_tokens
from ._batch import simulate_many, train_many
from ._boundary import BOUNDARY_STATUSES, BoundaryTable, trace_boundary
from ._config import PRESETS, Config, field_names, preset
from ._data import ROLE_NAMES, Data, init_params, make_data, run_data
from ._datamodel import DataModel
from ._checkpoint import (Checkpoint, CheckpointHook, CheckpointWarning, load_checkpoint, restore, resume,
                          save_checkpoint)
from ._coords import FlowOptions, choose_engine, step_costs
from ._engine import prepare, train
from ._plot import plot_attention, plot_max_margin, plot_result
from ._experiment import prepare_run, simulate
from ._io import ResultFileError
from ._kernels.gd import loss_and_grads, loss_and_grads_head
from ._memory import MemoryBudgetError
from ._result import STATUSES, Result, load
from ._run import Run
from ._population import PopulationMetrics, population_metrics, population_metrics_from_params, population_moments
from ._saveat import SaveAt
from ._sweep import Sweep, SweepPoint, grid_configs, sweep
from ._validation import ConfigError
from ._version import __version__

__all__ = [
    "FrakSums", "NEVER", "QueryDecomposition", "REGIMES", "Regime", "anchor_tokens", "argmax_token",
    "classify_regime", "decompose_query", "first_passage", "fitted", "frak_sums", "gaps", "growth", "min_gap",
    "noise_probes", "noisy_fit_times", "noisy_fitted", "role_mass", "time_to_fit_all", "time_to_test_acc",
    "time_to_test_loss", "token_noise", "token_values", "Sweep", "grid_configs", "sweep",
    "Config", "ConfigError", "MemoryBudgetError", "Data", "PRESETS", "ROLE_NAMES", "Result", "ResultFileError", "SaveAt",
    "choose_engine", "field_names", "init_params", "load", "loss_and_grads", "loss_and_grads_head", "make_data", "run_data",
    "DataModel", "preset",
    "simulate", "simulate_many", "step_costs", "train", "train_many", "__version__",
    "Checkpoint", "CheckpointHook", "CheckpointWarning", "FlowOptions", "load_checkpoint", "restore", "resume",
    "save_checkpoint", "Run", "STATUSES", "SweepPoint", "plot_attention", "plot_max_margin", "plot_result", "prepare", "prepare_run",
    "AttSVM", "att_svm", "att_svm_gram", "mm_cosine_dual", "optimal_tokens", "selected_tokens",
    "PopulationMetrics", "population_metrics", "population_metrics_from_params", "population_moments",
    "BOUNDARY_STATUSES", "BoundaryTable", "trace_boundary",
]
