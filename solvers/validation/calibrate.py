"""Calibrate the gap model's constants from pilot runs of the FL loop (spec 03 §4).

Three short pilot runs: two with error-free aggregation (``ideal``), at a small rank r_a and at
the largest candidate rank r_b, and a third at r_b with injected aggregation error. They measure:

- the update scale v(r): the round mean of std(updates), the common normalization scale that the
  AirComp path divides by (spec 01 §3); from v(r_a), v(r_b) the power law v(r) = v · r^(−β) is
  fitted (β clipped to [0, 1]). Under the rank-stabilized scale α/r ∝ 1/√r of
  :class:`~fedopt.fl.recipe.TrainingRecipe`, β ≈ 1/2 is expected: then v(r)² q(r) does not
  depend on r, i.e. the aggregation distortion D does not grow with the rank — which a
  rank-independent v (β = 0, the default) would wrongly predict;
- the singular-value profile of the learned update: ΔW_l = (α/r) B_l A_l of every adapted weight
  after the r_b pilot, sorted per weight and averaged over weights (``spectrum_kind:
  measured``) — the stand-in for the optimal update ΔW* of ε(r) that spec 03 §1 names.

- L_s from the loss gap between the two rank pilots: F(r_a) − F(r_b) = (L_s/2)(ε-tail(r_a) −
  ε-tail(r_b)) with the tails of the measured spectrum (the rank-truncation term of spec 03 §1);
- the noise gain L_s λ / (2μ) from the third pilot, at r_b with injected zero-mean error of
  per-entry variance ``noise`` · v_t² (v_t the round's update scale): F_noisy − F(r_b) =
  gain · mean ‖ĝ − ḡ‖² (the distortion term). λ is kept (capped so that λ ≤ 1/L_s and
  λμ ≤ 1/2) and μ = L_s λ / (2 · gain).

All pilots share seed, batches and initialization (common random numbers), so the loss
differences are the ranks' and the noise's doing; each is one run, so small differences carry
seed noise (a difference below 1e-9 counts as none). σ_g² and Δ0 stay nominal: at a fixed number
of rounds they enter terms that do not depend on (r, L).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.recipe import TrainingRecipe, check_model_layers
from fedopt.gap_models.calibration import (
    LOSS_FLOOR,
    calibrated_learning,
    fit_noise_gain,
    fit_smoothness,
    fit_update_scale,
    mean_spectrum,
)
from fedopt.instance import Instance

__all__ = ["Calibration", "calibrate"]


@dataclass(frozen=True)
class Calibration:
    """Measured constants and the calibrated instance.

    Attributes
    ----------
    update_scale : float
        v at rank 1 (fitted), in update units.
    update_scale_exponent : float
        β of v(r) = v r^(−β).
    spectrum_values : tuple of float
        Mean sorted singular values of the learned ΔW (r_b pilot).
    instance : Instance
        The input instance with these constants in its ``learning`` section.
    smoothness : float
        L_s fitted from the loss gap between the two ranks and the ε-tails of the spectrum.
    noise_gain : float
        L_s λ / (2μ) fitted from the loss rise under injected aggregation error.
    measurements : dict
        Per pilot: rank, v, injected error, final losses, wall time.
    """

    update_scale: float
    update_scale_exponent: float
    spectrum_values: tuple[float, ...]
    instance: Instance
    smoothness: float = float("nan")
    noise_gain: float = float("nan")
    measurements: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"update_scale": self.update_scale,
                "update_scale_exponent": self.update_scale_exponent,
                "smoothness": self.smoothness, "noise_gain": self.noise_gain,
                "spectrum_values": list(self.spectrum_values),
                "measurements": self.measurements}


class _Recorder:
    """Ideal aggregation that records the normalization scale std(updates) of every round; with
    ``noise > 0`` it adds zero-mean Gaussian error of variance noise · std(updates)² per entry
    (what AirComp does, at a chosen level) and records ‖ĝ − ḡ‖²."""

    def __init__(self, noise: float = 0.0) -> None:
        from fedopt.fl.aggregators import IdealAggregator

        self.inner = IdealAggregator()
        self.noise = float(noise)
        self.scales: list[float] = []
        self.errors: list[float] = []

    def aggregate(self, updates, weights, round_index, rng):
        from dataclasses import replace

        v = float(np.std(updates))
        self.scales.append(v)
        res = self.inner.aggregate(updates, weights, round_index, rng)
        if self.noise <= 0:
            return res
        err = math.sqrt(self.noise) * v * rng.standard_normal(res.exact.shape)
        self.errors.append(float(np.sum(err**2)))
        return replace(res, estimate=res.exact + err, error=self.errors[-1])


def _pilot(instance: Instance, data: Any, base: Any, rank: int, rounds: int, seed: int,
           recipe: TrainingRecipe, noise: float = 0.0) -> tuple[dict[str, Any], np.ndarray]:
    import torch

    from fedopt.fl.loop import run_federated

    t0 = time.perf_counter()
    model, mods = recipe.lora_model(base, rank, seed)
    rec = _Recorder(noise)
    res = run_federated(model, data, rec, recipe.loop_config(instance, rounds=rounds, seed=seed,
                                                             eval_every=rounds))
    with torch.no_grad():
        sv = np.array([torch.linalg.svdvals(m.delta_weight().double()).numpy()
                       for m in mods.values()])
    return ({"rank": rank, "update_scale": float(np.mean(rec.scales)), "noise": noise,
             "aggregation_error": float(np.mean(rec.errors)) if rec.errors else 0.0,
             "final_eval_loss": res.summary["final_eval_loss"],
             "final_train_loss": res.summary["final_train_loss"],
             "wall_s": time.perf_counter() - t0}, sv)


def _check_arguments(instance: Instance, rounds: Any, ranks: Any, noise: Any
                     ) -> tuple[int, int]:
    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise InvalidArgumentError(f"rounds: got {rounds!r}, must be an integer >= 1")
    check_model_layers(instance)
    cand = sorted(instance.lora.ranks)
    if ranks is None:
        ranks = (2 if 2 in cand and cand[-1] > 2 else cand[0], cand[-1])
    r_a, r_b = (instance.validate_rank(int(r)) for r in ranks)
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
        raise InvalidArgumentError(f"noise: got {noise!r}, must be a positive number")
    if r_a >= r_b:
        raise InvalidArgumentError(
            f"ranks: got {ranks!r}, need two ranks r_a < r_b to fit v(r) = v r^(-β)")
    return r_a, r_b


def calibrate(instance: Instance, *, rounds: int = 20, ranks: tuple[int, int] | None = None,
              seed: int = 0, settings: TrainingRecipe | None = None,
              noise: float = 1.0) -> Calibration:
    """Pilot runs at ranks (r_a, r_b) (default: 2 — or the smallest candidate — and the
    largest candidate rank), a third at r_b with injected error of per-entry variance
    ``noise`` · v_t², and the calibrated instance (module notes for what is measured; the fit
    is :mod:`fedopt.gap_models.calibration`).

    Raises
    ------
    InvalidArgumentError
        Bad ``rounds`` or ``ranks``; :class:`~fedopt.errors.PlanError` if the instance's LoRA
        layers are not the loop model's.
    """
    from fedopt.fl.pretrained import base_model
    from fedopt.solvers.validation.driver import ValidateSettings

    r_a, r_b = _check_arguments(instance, rounds, ranks, noise)
    recipe = settings or ValidateSettings()
    data = recipe.client_data(instance.n_devices)
    base = base_model()
    m_a, _ = _pilot(instance, data, base, r_a, rounds, seed, recipe)
    m_b, sv = _pilot(instance, data, base, r_b, rounds, seed, recipe)
    # all pilots share seed, batches and initialization (common random numbers)
    m_n, _ = _pilot(instance, data, base, r_b, rounds, seed, recipe, noise=noise)
    v1, beta = fit_update_scale(m_a["update_scale"], m_b["update_scale"], r_a, r_b)
    spectrum = mean_spectrum(sv, r_b)
    d_rank = max(m_a["final_eval_loss"] - m_b["final_eval_loss"], LOSS_FLOOR)
    d_noise = max(m_n["final_eval_loss"] - m_b["final_eval_loss"], LOSS_FLOOR)
    smoothness = fit_smoothness(d_rank, spectrum, (r_a, r_b), instance.lora.layers)
    noise_gain = fit_noise_gain(d_noise, m_n["aggregation_error"])
    learning = calibrated_learning(instance.to_dict()["learning"], update_scale=v1, beta=beta,
                                   spectrum=spectrum, smoothness=smoothness,
                                   noise_gain=noise_gain)
    return Calibration(update_scale=v1, update_scale_exponent=beta, spectrum_values=spectrum,
                       instance=instance.replace(learning=learning), smoothness=smoothness,
                       noise_gain=noise_gain,
                       measurements={"pilots": [m_a, m_b, m_n], "rounds": rounds, "seed": seed,
                                     "settings": recipe.to_dict(),
                                     "loss_drop_from_rank": d_rank,
                                     "loss_rise_from_noise": d_noise})
