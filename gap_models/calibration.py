"""Fitting the gap model's constants to measurements of the FL loop (spec 03 §4).

Pure arithmetic on what pilot runs measured (the runs themselves are orchestrated by
:mod:`fedopt.solvers.validation.calibrate`):

- the update scale v(r) = v · r^(−β) from the mean update scale at two ranks
  (:func:`fit_update_scale`);
- the singular-value profile of the learned update (:func:`mean_spectrum`);
- L_s from the loss gap between the two ranks and the rank-truncation tails of that spectrum:
  F(r_a) − F(r_b) = (L_s/2)(ε-tail(r_a) − ε-tail(r_b)) (:func:`fit_smoothness`);
- the noise gain L_s λ / (2μ) from the loss rise under injected zero-mean error of mean
  ‖e‖² = D: F_noisy − F(r_b) = gain · D (:func:`fit_noise_gain`);
- the instance's ``learning`` section with these constants, λ capped so that λ ≤ 1/L_s and
  λμ ≤ 1/2 (:func:`calibrated_learning`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedopt.gap_models.airfl import RankTruncation

__all__ = ["LOSS_FLOOR", "calibrated_learning", "fit_noise_gain", "fit_smoothness",
           "fit_update_scale", "mean_spectrum"]

#: a loss difference below this is "no measurable effect" (seed noise of one pilot)
LOSS_FLOOR = 1e-9


def fit_update_scale(v_a: float, v_b: float, r_a: int, r_b: int) -> tuple[float, float]:
    """(v, β) of v(r) = v · r^(−β) through (r_a, v_a) and (r_b, v_b); β clipped to [0, 1]."""
    beta = math.log(v_a / v_b) / math.log(r_b / r_a)
    beta = float(min(max(beta, 0.0), 1.0))
    return float(v_b * r_b ** beta), beta


def mean_spectrum(singular_values: np.ndarray, rank: int) -> tuple[float, ...]:
    """The mean sorted singular values of the learned updates (one row per adapted weight), its
    first ``rank`` values (a rank-r update has r; the rest is rounding noise), at 4 digits."""
    mean_sv = np.sort(np.asarray(singular_values), axis=1)[:, ::-1].mean(axis=0)[:rank]
    return tuple(float(f"{x:.4g}") for x in mean_sv)


def fit_smoothness(loss_drop: float, spectrum: Sequence[float], ranks: tuple[int, int],
                   layers: Any) -> float:
    """L_s = 2 (F(r_a) − F(r_b)) / (ε-tail(r_a) − ε-tail(r_b)) (spec 03 §1's truncation term)."""
    tails = RankTruncation(np.asarray(spectrum)).energy_beyond(np.asarray(ranks), layers)
    return float(2.0 * max(loss_drop, LOSS_FLOOR) / max(tails[0] - tails[1], 1e-300))


def fit_noise_gain(loss_rise: float, aggregation_error: float) -> float:
    """L_s λ / (2μ) = (F_noisy − F) / mean ‖ĝ − ḡ‖² (spec 03 §1's distortion term)."""
    return float(max(loss_rise, LOSS_FLOOR) / max(aggregation_error, 1e-300))


def calibrated_learning(learning: Mapping[str, Any], *, update_scale: float, beta: float,
                        spectrum: Sequence[float], smoothness: float,
                        noise_gain: float) -> dict[str, Any]:
    """The ``learning`` section with the fitted constants: λ = min(λ, 1/L_s, √(gain/L_s))
    (λ ≤ 1/L_s is the model's step condition, λμ = L_s λ²/(2 gain) ≤ 1/2 a contraction) and
    μ = L_s λ / (2 gain)."""
    step = float(min(learning["step_size"], 1.0 / smoothness, math.sqrt(noise_gain / smoothness)))
    pl = float(smoothness * step / (2.0 * noise_gain))
    out = {**learning, "update_scale": update_scale, "update_scale_exponent": beta,
           "spectrum_kind": "measured", "spectrum_values": list(spectrum),
           "smoothness": float(f"{smoothness:.4g}"), "step_size": float(f"{step:.4g}"),
           "pl_constant": float(f"{pl:.4g}")}
    out["step_size"] = min(out["step_size"], 1.0 / out["smoothness"])
    return out
