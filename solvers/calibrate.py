"""Calibrate the gap model's constants from pilot runs of the FL loop (spec 03 §4).

Two short pilot runs with error-free aggregation (``ideal``), at a small rank r_a and at the
largest candidate rank r_b, measure:

- the update scale v(r): the round mean of std(updates), the common normalization scale that the
  AirComp path divides by (spec 01 §3); from v(r_a), v(r_b) the power law v(r) = v · r^(−β) is
  fitted (β clipped to [0, 1]). Under the rank-stabilized scale α/r ∝ 1/√r of
  :class:`~solvers.validate.ValidateSettings`, β ≈ 1/2 is expected: then v(r)² q(r) does not
  depend on r, i.e. the aggregation distortion D does not grow with the rank — which a
  rank-independent v (β = 0, the default) would wrongly predict;
- the singular-value profile of the learned update: ΔW_l = (α/r) B_l A_l of every adapted weight
  after the r_b pilot, sorted per weight and averaged over weights (``spectrum_kind:
  measured``) — the stand-in for the optimal update ΔW* of ε(r) that spec 03 §1 names.

The smoothness, PL constant, step size, gradient variance and Δ0 are left as they are. σ_g² and
Δ0 enter terms that do not depend on (r, L) at a fixed number of rounds and L_s scales the
distortion and truncation terms alike, so they do not move the plan; λ/μ, however, weighs the
distortion against the truncation, and it is not calibrated here (a documented limitation).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
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
    measurements : dict
        Per pilot: rank, v, final losses, wall time.
    """

    update_scale: float
    update_scale_exponent: float
    spectrum_values: tuple[float, ...]
    instance: Instance
    measurements: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"update_scale": self.update_scale,
                "update_scale_exponent": self.update_scale_exponent,
                "spectrum_values": list(self.spectrum_values),
                "measurements": self.measurements}


class _Recorder:
    """Ideal aggregation that records the normalization scale std(updates) of every round."""

    def __init__(self) -> None:
        from fedopt.aggregators import IdealAggregator

        self.inner = IdealAggregator()
        self.scales: list[float] = []

    def aggregate(self, updates, weights, round_index, rng):
        self.scales.append(float(np.std(updates)))
        return self.inner.aggregate(updates, weights, round_index, rng)


def _pilot(instance: Instance, rank: int, rounds: int, seed: int, settings: Any
           ) -> tuple[dict[str, Any], np.ndarray]:
    import torch

    from fedopt.data import make_federated_data
    from fedopt.loop import run_federated
    from fedopt.lora import apply_lora
    from fedopt.pretrained import base_model

    t0 = time.perf_counter()
    data = make_federated_data(instance.n_devices, concentration=settings.concentration,
                               seed=settings.data_seed)
    model = copy.deepcopy(base_model().model)
    mods = apply_lora(model, rank, alpha=settings.alpha_scale * math.sqrt(rank),
                      generator=torch.Generator().manual_seed(int(seed)))
    rec = _Recorder()
    cfg = settings.loop_config(instance, seed)
    cfg = type(cfg)(**{**cfg.to_dict(), "rounds": rounds, "eval_every": rounds})
    res = run_federated(model, data, rec, cfg)
    with torch.no_grad():
        sv = np.array([torch.linalg.svdvals(m.delta_weight().double()).numpy()
                       for m in mods.values()])
    return ({"rank": rank, "update_scale": float(np.mean(rec.scales)),
             "final_eval_loss": res.summary["final_eval_loss"],
             "final_train_loss": res.summary["final_train_loss"],
             "wall_s": time.perf_counter() - t0}, sv)


def calibrate(instance: Instance, *, rounds: int = 20, ranks: tuple[int, int] | None = None,
              seed: int = 0, settings: Any = None) -> Calibration:
    """Pilot runs at ranks (r_a, r_b) (default: 2 — or the smallest candidate — and the
    largest candidate rank) and the calibrated instance (module notes for what is measured).

    Raises
    ------
    InvalidArgumentError
        Bad ``rounds`` or ``ranks``; :class:`~fedopt.errors.PlanError` if the instance's LoRA
        layers are not the loop model's.
    """
    from solvers.validate import ValidateSettings, check_model_layers

    if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise InvalidArgumentError(f"rounds: got {rounds!r}, must be an integer >= 1")
    check_model_layers(instance)
    settings = settings or ValidateSettings()
    cand = sorted(instance.lora.ranks)
    if ranks is None:
        ranks = (2 if 2 in cand and cand[-1] > 2 else cand[0], cand[-1])
    r_a, r_b = (instance.validate_rank(int(r)) for r in ranks)
    if r_a >= r_b:
        raise InvalidArgumentError(
            f"ranks: got {ranks!r}, need two ranks r_a < r_b to fit v(r) = v r^(-β)")
    m_a, _ = _pilot(instance, r_a, rounds, seed, settings)
    m_b, sv = _pilot(instance, r_b, rounds, seed, settings)
    beta = math.log(m_a["update_scale"] / m_b["update_scale"]) / math.log(r_b / r_a)
    beta = float(min(max(beta, 0.0), 1.0))
    v1 = float(m_b["update_scale"] * r_b ** beta)
    # a rank-r_b update has r_b singular values; the rest is rounding noise (~1e-9)
    mean_sv = np.sort(sv, axis=1)[:, ::-1].mean(axis=0)[:r_b]
    spectrum = tuple(float(f"{x:.4g}") for x in mean_sv)
    learning = {**instance.to_dict()["learning"], "update_scale": v1,
                "update_scale_exponent": beta, "spectrum_kind": "measured",
                "spectrum_values": list(spectrum)}
    calibrated = instance.replace(learning=learning)
    return Calibration(update_scale=v1, update_scale_exponent=beta, spectrum_values=spectrum,
                       instance=calibrated,
                       measurements={"pilots": [m_a, m_b], "rounds": rounds, "seed": seed,
                                     "settings": settings.to_dict()})
