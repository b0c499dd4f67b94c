"""Calibrate the gap model's constants from pilot runs of the FL loop (spec 03 §4).

Pilot runs, all on the instance's testbed with its training recipe
(:meth:`ValidateSettings.for_testbed <fedopt.solvers.validation.driver.ValidateSettings>`):

- error-free (``ideal``) pilots at every rank of ``ranks`` (default: every candidate rank) ×
  every seed;
- noisy pilots at ``noise_rank`` (default: the largest rank) × every noise level × every seed:
  zero-mean Gaussian error of per-entry variance level · v_t² (v_t the round's update scale
  std(updates), the normalization AirComp divides by) added to the exact average.

Every pilot of a seed shares mini-batches and LoRA initialization (common random numbers), so
the loss differences are the ranks' and the noise's doing. They measure
(:mod:`fedopt.gap_models.calibration` fits; every fit reports residuals, standard error, R²):

- the update scale v(r): the round mean of std(updates) of each ideal pilot; log v = log v −
  β log r over all of them (β clipped to [0, 1]). Under the rank-stabilized scale α/r ∝ 1/√r
  (``pydoc-topics``) β ≈ 1/2 is expected: D then does not grow with the rank; under the
  constant scale of ``domain-shift`` β ≈ 0;
- the singular-value profile of the learned update: ΔW_l = (α/r) B_l A_l of every adapted weight
  after the largest-rank ideal pilots, sorted per weight and averaged over weights and seeds
  (``spectrum_kind: measured``) — the stand-in for ΔW* of ε(r) (spec 03 §1);
- L_s from F̄(r) − F̄(r_max) = (L_s/2)(ε-tail(r) − ε-tail(r_max)) over the ranks (F̄: mean over
  seeds), through the origin;
- the noise gain L_s λ / (2μ) from rise = F_noisy − F_ideal(noise_rank, same seed) = gain · D
  (D the pilot's mean ‖ĝ − ḡ‖²) over every (level, seed), through the origin, with a curvature
  test: on ``domain-shift`` the loop is noise-sensitive and nonlinear (level 1 raised the loss
  by ≈ 0.5 %, level 10 by 40 %), so the levels must stay moderate and the report says when a
  line does not fit. λ is kept (capped so that λ ≤ 1/L_s and λμ ≤ 1/2), μ = L_s λ / (2 gain);
- σ_g² = b · mean over rounds of Σ_k φ_k ‖g_k − ḡ‖² / (1 − Σ_k φ_k²) (largest-rank ideal
  pilots; the divisor makes it unbiased for independent clients), in update units (those of v²
  and D; with SGD and E = 1 an update is lr · gradient, so σ_g² / lr² is the gradient
  variance): an upper bound on non-IID clients, whose spread holds their heterogeneity too;
  only with SGD and one local step;
- Δ0 ≥ base-model loss − best ideal pilot loss (a lower bound on F(w0) − F*).

A noisy pilot that diverges is left out of the noise fit (with a warning). The calibrated
instance is :attr:`Calibration.instance`; :meth:`Calibration.save` writes it as YAML with a
header that records what was measured and how well each fit fits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.recipe import TrainingRecipe, check_model_layers
from fedopt.gap_models.calibration import (
    Fit,
    UpdateScaleFit,
    calibrated_learning,
    fit_noise_gain_many,
    fit_smoothness_many,
    fit_update_scale_many,
    loss_profile_spectrum,
    mean_spectrum,
    measure_grad_variance,
    measure_initial_gap,
)
from fedopt.instance import Instance
from fedopt.solvers.validation.calibration_pilots import _Pilot, _pilot
from fedopt.solvers.validation.calibration_plan import (
    DEFAULT_NOISE_LEVELS,
    DEFAULT_SEEDS,
    CalibrationPlan,
    check_arguments,
)
from fedopt.solvers.validation.calibration_report import Calibration

__all__ = ["DEFAULT_NOISE_LEVELS", "DEFAULT_SEEDS", "TRUNCATIONS", "Calibration",
           "CalibrationPlan", "calibrate", "check_arguments"]

#: how the calibrated instance describes ε(r) (:func:`calibrate`'s ``truncation``)
TRUNCATIONS = ("loss-profile", "spectrum")


def calibrate(instance: Instance, *, rounds: int | None = None,
              ranks: Sequence[int] | None = None, seeds: Sequence[int] = DEFAULT_SEEDS,
              noise_levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
              noise_rank: int | None = None, settings: TrainingRecipe | None = None,
              seed: int | None = None,
              callback: Callable[[dict[str, Any]], Any] | None = None,
              noise: float | None = None,
              truncation: str = "loss-profile", out_dir: str | os.PathLike | None = None,
              rerun: bool = False) -> Calibration:
    """Pilot runs of the FL loop and the gap-model constants fitted to them (module notes).

    Parameters
    ----------
    instance
        Its LoRA layers must be those of the loop's model on its ``learning.testbed``.
    rounds
        Rounds per pilot (default: ``instance.learning.rounds``).
    ranks
        Ranks of the error-free pilots, each in 1..max rank, at least two (default: every
        candidate rank of the instance). ``noise_rank`` is added when missing.
    seeds
        One pilot per seed at every rank and noise level (common random numbers).
    noise_levels
        Injected per-entry error variances in units of v_t² (positive, distinct).
    noise_rank
        Rank of the noisy pilots (default: the largest rank).
    settings
        The training recipe (default: ``ValidateSettings.for_testbed(instance.learning.
        testbed)``).
    seed
        Backward-compatible synonym of ``seeds=(seed,)`` (it wins over ``seeds``).
    callback
        ``callback({"done", "total", "label"})``: once before the first pilot and after each
        (``done`` pilots of ``total``; ``label`` the pilot that runs next, or ``"fitting"``).
        Its return value is ignored.
    noise
        Backward-compatible synonym of ``noise_levels=(noise,)`` (it wins).
    truncation
        How the calibrated instance describes ε(r): ``"loss-profile"`` (default) writes the
        effective spectrum whose ε-tails reproduce the measured F̄(r) − F̄(r_max) at every pilot
        rank (:func:`~fedopt.gap_models.calibration.loss_profile_spectrum`: the loop's own
        rank-truncation term at this number of rounds); ``"spectrum"`` writes the singular
        values of the learned update B·A (the stand-in for ΔW* that spec 03 §1 names). L_s is
        the least-squares fit on the latter either way. Measured on ``char-tasks``: the
        learned-update tails put the loss of r = 16 against r = 32 at 0.004 nats where the loop
        measures 0.04, so with ``"spectrum"`` the planner gives up rank too early.
    out_dir
        Where finished pilots are saved as they finish (``out_dir/pilots/<key>.json``,
        :mod:`~fedopt.solvers.validation.calibration_store`) and found again: a pilot saved
        there by an interrupted or earlier calibration with the same instance, recipe, rounds,
        rank, seed and noise level is read instead of rerun (it is the pilot a rerun would
        compute). None: nothing is saved.
    rerun
        Rerun every pilot even when ``out_dir`` holds it (the saved record is replaced).

    Raises
    ------
    InvalidArgumentError
        Bad ``rounds``, ``ranks``, ``seeds``, ``noise_levels`` or ``noise_rank``, or every noisy
        pilot diverged; :class:`~fedopt.errors.PlanError` if the instance's LoRA layers are not
        the loop model's.
    """
    if callback is not None:
        callback({"label": "loading the testbed and its base model"})
    run = _prepare(instance, rounds=rounds, ranks=ranks, seeds=seeds, noise_levels=noise_levels,
                   noise_rank=noise_rank, settings=settings, seed=seed, noise=noise,
                   truncation=truncation)
    pilots = _run_pilots(instance, run, callback, out_dir, rerun)
    ideal, noisy, warnings = _split_pilots(pilots, run.plan)
    fits = _fit(instance, run, ideal, noisy)
    return _assemble(instance, run, pilots, fits, [*warnings, *_fit_warnings(fits)])


@dataclass(frozen=True)
class _Run:
    """What every pilot of a calibration shares: the checked arguments, the recipe, the clients'
    data, the base model (and its loss), the loop configuration; ``t_start`` for ``wall_s``."""

    plan: CalibrationPlan
    recipe: TrainingRecipe
    data: Any
    base: Any
    base_loss: float
    cfg: Any
    truncation: str
    t_start: float


def _prepare(instance: Instance, *, rounds: Any, ranks: Any, seeds: Any, noise_levels: Any,
             noise_rank: Any, settings: TrainingRecipe | None, seed: int | None,
             noise: float | None, truncation: str) -> _Run:
    """Check :func:`calibrate`'s arguments and load what the pilots share."""
    from fedopt.solvers.validation.driver import ValidateSettings

    if truncation not in TRUNCATIONS:
        raise InvalidArgumentError(
            f"truncation: got {truncation!r}, must be one of {', '.join(TRUNCATIONS)}")
    t_start = time.perf_counter()
    names = {"noise_levels": "noise"} if noise is not None else {}
    plan = check_arguments(instance, rounds=rounds, ranks=ranks,
                           seeds=(seed,) if seed is not None else seeds,
                           noise_levels=(noise,) if noise is not None else noise_levels,
                           noise_rank=noise_rank, names=names)
    check_model_layers(instance)
    recipe = settings or ValidateSettings.for_testbed(instance.learning.testbed)
    data = recipe.client_data(instance)
    base = recipe.base_model(instance)
    base_loss = recipe.base_eval_loss(base, data)
    cfg = recipe.loop_config(instance, rounds=plan.rounds, seed=plan.seeds[0])
    return _Run(plan=plan, recipe=recipe, data=data, base=base, base_loss=base_loss, cfg=cfg,
                truncation=truncation, t_start=t_start)


def _label(job: tuple[int, int, float]) -> str:
    r, s, x = job
    return f"ideal r={r} seed {s}" if x == 0 else f"noise {x:g} r={r} seed {s}"


def _run_pilots(instance: Instance, run: _Run,
                callback: Callable[[dict[str, Any]], Any] | None,
                out_dir: str | os.PathLike | None = None, rerun: bool = False) -> list[_Pilot]:
    """Every ideal pilot (seed by seed, rank by rank), then every noisy one (seed by seed, level
    by level), reporting progress to ``callback`` before the first and after each; with
    ``out_dir``, each is read from there when saved (unless ``rerun``) or saved when done."""
    from fedopt.solvers.validation import calibration_store as store

    plan = run.plan
    jobs = [(r, s, 0.0) for s in plan.seeds for r in plan.ranks]
    jobs += [(plan.noise_rank, s, x) for s in plan.seeds for x in plan.noise_levels]

    def report(done: int) -> None:
        if callback is not None:
            callback({"done": done, "total": len(jobs),
                      "label": _label(jobs[done]) if done < len(jobs) else "fitting"})

    report(0)
    pilots: list[_Pilot] = []
    for i, (r, s, x) in enumerate(jobs):
        key = store.pilot_key(instance, run.recipe, rounds=plan.rounds, rank=r, seed=s, noise=x)
        saved = None if out_dir is None or rerun else store.load_pilot(Path(out_dir), key)
        if saved is None:
            # looked up here, at call time: tests replace the module's _pilot
            saved = _pilot(instance, run.data, run.base, run.recipe, rank=r,
                           rounds=plan.rounds, seed=s, noise=x)
            if out_dir is not None:
                store.save_pilot(Path(out_dir), key, saved)
        else:
            saved.record["reused"] = True
        pilots.append(saved)
        report(i + 1)
    return pilots


def _split_pilots(pilots: list[_Pilot], plan: CalibrationPlan
                  ) -> tuple[list[_Pilot], list[_Pilot], list[str]]:
    """(ideal pilots, noisy pilots that did not diverge, warnings); each noisy pilot's record
    gets its ``loss_rise`` over the ideal pilot at ``noise_rank`` with its seed."""
    ideal = [p for p in pilots if p.record["kind"] == "ideal"]
    reference = {p.record["seed"]: p.record["final_eval_loss"]
                 for p in ideal if p.record["rank"] == plan.noise_rank}
    warnings: list[str] = []
    noisy = []
    for p in pilots:
        if p.record["kind"] != "noisy":
            continue
        if "diverged" in p.record:
            warnings.append(f"the pilot at noise level {p.record['noise']:g}, seed "
                            f"{p.record['seed']} diverged and is left out of the noise fit")
            continue
        p.record["loss_rise"] = p.record["final_eval_loss"] - reference[p.record["seed"]]
        noisy.append(p)
    if not noisy:
        raise InvalidArgumentError(
            f"noise_levels: every noisy pilot diverged at levels "
            f"{', '.join(f'{x:g}' for x in plan.noise_levels)}; use smaller levels")
    return ideal, noisy, warnings


@dataclass(frozen=True)
class _Fits:
    """The fits of one calibration; ``spectrum`` is the learned update's, ``initial_gap`` the
    measured Δ0 (≤ 0: no pilot improved on the base model)."""

    ranks: list[int]
    losses: list[float]
    update_scale: UpdateScaleFit
    spectrum: tuple[float, ...]
    smoothness: Fit
    noise_gain: Fit
    grad_variance: Fit | None
    best_loss: float
    initial_gap: float


def _fit(instance: Instance, run: _Run, ideal: list[_Pilot], noisy: list[_Pilot]) -> _Fits:
    """v(r), the spectrum, L_s, the noise gain, σ_g² (SGD with one local step only) and Δ0."""
    plan, cfg = run.plan, run.cfg
    top = [p for p in ideal if p.record["rank"] == plan.ranks[-1]]
    ranks = [p.record["rank"] for p in ideal]
    losses = [p.record["final_eval_loss"] for p in ideal]
    upd = fit_update_scale_many(ranks, [p.record["update_scale"] for p in ideal])
    spectrum = mean_spectrum(np.concatenate([p.sv for p in top]), plan.ranks[-1])
    smooth = fit_smoothness_many(ranks, losses, spectrum, instance.lora.layers)
    gain = fit_noise_gain_many([p.record["aggregation_error"] for p in noisy],
                               [p.record["loss_rise"] for p in noisy])
    grad_var = None
    if cfg.optimizer == "sgd" and cfg.local_steps == 1:
        grad_var = measure_grad_variance([x for p in top for x in p.spreads], cfg.batch_size,
                                         weights=run.data.weights)
    best = min(losses)
    delta0 = measure_initial_gap(run.base_loss, [best])
    return _Fits(ranks=ranks, losses=losses, update_scale=upd, spectrum=spectrum,
                 smoothness=smooth, noise_gain=gain, grad_variance=grad_var, best_loss=best,
                 initial_gap=delta0)


def _fit_warnings(fits: _Fits) -> list[str]:
    """The fits' own warnings (β clipped, L_s or the gain floored, curvature) and Δ0's."""
    warnings = [fit.warning for fit in (fits.update_scale.exponent, fits.smoothness,
                                        fits.noise_gain) if fit.warning]
    if fits.initial_gap <= 0:
        warnings.append("no pilot improved on the base model: Δ0 is kept")
    return warnings


def _assemble(instance: Instance, run: _Run, pilots: list[_Pilot], fits: _Fits,
              warnings: list[str]) -> Calibration:
    """The calibrated instance (ε(r) as ``run.truncation`` says) and the :class:`Calibration`
    with every measurement."""
    plan, cfg, upd = run.plan, run.cfg, fits.update_scale
    delta0 = fits.initial_gap if fits.initial_gap > 0 else None
    written = fits.spectrum
    if run.truncation == "loss-profile":
        written = loss_profile_spectrum(fits.ranks, fits.losses, fits.smoothness.value,
                                        instance.lora.layers)
    learning = calibrated_learning(
        instance.to_dict()["learning"], update_scale=upd.scale, beta=upd.exponent.value,
        spectrum=written, smoothness=fits.smoothness.value, noise_gain=fits.noise_gain.value,
        grad_variance=None if fits.grad_variance is None else fits.grad_variance.value,
        initial_gap=delta0)
    measurements = {
        "pilots": [p.record for p in pilots], "rounds": plan.rounds, "seeds": list(plan.seeds),
        "seed": plan.seeds[0], "ranks": list(plan.ranks), "noise_rank": plan.noise_rank,
        "noise_levels": list(plan.noise_levels), "settings": run.recipe.to_dict(),
        "batch_size": cfg.batch_size, "local_steps": cfg.local_steps,
        "base_eval_loss": run.base_loss, "best_eval_loss": fits.best_loss,
        "truncation": run.truncation, "learned_update_spectrum": list(fits.spectrum),
        "wall_s": time.perf_counter() - run.t_start}
    return Calibration(
        update_scale=upd.scale, update_scale_exponent=upd.exponent.value,
        spectrum_values=tuple(written), instance=instance.replace(learning=learning),
        smoothness=fits.smoothness.value, noise_gain=fits.noise_gain.value,
        measurements=measurements, update_scale_fit=upd, smoothness_fit=fits.smoothness,
        noise_gain_fit=fits.noise_gain, grad_variance_fit=fits.grad_variance,
        initial_gap=delta0, warnings=tuple(warnings))
