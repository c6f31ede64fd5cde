"""What a worker does for one sweep point: run it (rerunning a stiff flow run with a larger
budget), and the summary figures its index entry carries."""

from __future__ import annotations

import dataclasses
import math

from .._coords.flow import as_flow_options
from .._result import FINISHED
from .._saveat import SaveAt
from .._config import Config

#: Flow outcomes that a rerun with a larger budget can turn into a finished run.
_RETRYABLE = ("max_steps_reached", "step_size_collapsed")
#: Each rerun multiplies ``max_steps`` by this (after ``max_steps_reached``) or divides ``h_min``
#: by it (after ``step_size_collapsed``).
RETRY_FACTOR = 10


def run_point(config: Config, n_saves: int = 200, probes=None, keep_params: bool = False, engine: str = "auto",
              dynamics: str = "gd", flow=None, flow_retries: int = 0):
    """Simulate one grid point (what each worker runs). Returns the ``Result``.

    The final ``W`` is dropped (``Result.W = None``) unless ``keep_params``; kept, it costs a dual
    point's file its O(N^2) final state (``Result.compact``), a primal point's 8 d^2 bytes.

    No run left behind: a flow run that stops with ``max_steps_reached`` (a stiff stretch) or
    ``step_size_collapsed`` is run again from the start, up to ``flow_retries`` times, with
    ``max_steps`` multiplied (``h_min`` divided) by ``RETRY_FACTOR``. ``Result.extra["path"]``
    says which path produced the result (``"flow"``, or ``"flow rerun: max_steps=1000000"``) and
    ``extra["attempts"]`` lists the earlier outcomes; a point that still stops keeps its status.
    """
    from .._experiment import prepare_run

    def simulate(config, save_at, *, engine, probes, dynamics, flow):   # without the final W unless kept
        run = prepare_run(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=flow)
        run.warm_up()
        run.run()
        return run.result(config, keep_W=keep_params)

    save_at = SaveAt.log(config.steps, n_saves)
    opts = as_flow_options(flow) if dynamics == "flow" else flow
    result = simulate(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=opts)
    if dynamics == "flow":
        attempts = []
        while result.status in _RETRYABLE and len(attempts) < flow_retries:
            attempts.append({"status": result.status, "message": result.message, "final_step": result.final_step,
                             "max_steps": opts.max_steps, "h_min": opts.h_min, "wall_time": result.wall_time})
            if result.status == "max_steps_reached":
                opts = dataclasses.replace(opts, max_steps=opts.max_steps * RETRY_FACTOR)
                change = f"max_steps={opts.max_steps}"
            else:
                opts = dataclasses.replace(opts, h_min=opts.h_min / RETRY_FACTOR)
                change = f"h_min={opts.h_min:g}"
            result = simulate(config, save_at, engine=engine, probes=probes, dynamics=dynamics, flow=opts)
            result.extra["path"] = f"flow rerun: {change}"
        result.extra.setdefault("path", "flow")
        result.extra["attempts"] = attempts
    if not keep_params:
        result.W = None
    return result


def summary(result) -> dict:
    """The final figures of a point's index entry (losses, accuracies, regime, ...), NaN as None.

    ``regime`` is None for a run that did not reach its horizon (``status`` other than "finished":
    diverged, or a flow stopped early): its last save classifies an earlier state, often step 0,
    and a regime map would count it as the run's."""
    from .._analysis import classify_regime, frak_sums, time_to_fit_all

    fs = frak_sums(result)
    final = result.summary()
    out = {key: final[key] for key in ("steps", "train_loss", "test_loss", "train_acc", "test_acc",
                                       "train_acc_noisy", "engine")}
    out.update(status=result.status, regime=classify_regime(result).name if result.status == FINISHED else None,
               frak_clean_noisy_ratio=float(fs.clean_noisy_ratio[-1]), time_to_fit_all=time_to_fit_all(result),
               test_loss_se=float(result.test_loss_se[-1]), test_acc_se=float(result.test_acc_se[-1]),
               dynamics=result.extra.get("dynamics", "gd"),
               path=result.extra.get("path", result.extra.get("dynamics", "gd")), wall_time=result.wall_time)
    # NaN is not JSON: store None
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}
