"""The validation room: plans run through the federated LoRA loop (spec 05), and the pilot runs
that calibrate the gap model (spec 03 §4).

- :mod:`~fedopt.solvers.validation.builder`: one builder from (Plan, Instance) to the LoRA
  model, the aggregator and the per-round adapter of a run;
- :mod:`~fedopt.solvers.validation.adapters`: the per-round callables the aggregators call
  (beamformers re-optimized on each round's channel, TSFA's online decisions);
- :mod:`~fedopt.solvers.validation.settings`: :class:`ValidateSettings` (the training recipe
  plus what a validation runs);
- :mod:`~fedopt.solvers.validation.driver`: :func:`validate`, every algorithm × method × seed,
  and :func:`run_plan`, one run;
- :mod:`~fedopt.solvers.validation.report`: the typed :class:`ValidationReport`;
- :mod:`~fedopt.solvers.validation.calibrate`: :func:`calibrate`, the pilot runs (the fit itself
  is :mod:`fedopt.gap_models.calibration`).

This room imports torch (through :mod:`fedopt.fl`) lazily; the rest of :mod:`fedopt.solvers`
never does.
"""

from fedopt.fl.recipe import TrainingRecipe, check_model_layers, loop_layers
from fedopt.solvers.validation.adapters import RoundBeamformers, TSFADecisions
from fedopt.solvers.validation.builder import FederatedRun, build_run
from fedopt.solvers.validation.calibrate import Calibration, calibrate
from fedopt.solvers.validation.driver import (
    DEFAULT_BASELINES,
    EXTRA_METHODS,
    ValidateSettings,
    run_plan,
    valid_methods,
    validate,
)
from fedopt.solvers.validation.report import ValidationReport

__all__ = ["DEFAULT_BASELINES", "EXTRA_METHODS", "Calibration", "FederatedRun",
           "RoundBeamformers", "TSFADecisions", "TrainingRecipe", "ValidateSettings",
           "ValidationReport", "build_run", "calibrate", "check_model_layers", "loop_layers",
           "run_plan", "valid_methods", "validate"]
