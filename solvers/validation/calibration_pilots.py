"""One pilot run of :func:`fedopt.solvers.validation.calibrate.calibrate`: the FL loop on the
instance's testbed with an aggregator that records the update scale, the clients' spread and
(for a noisy pilot) the injected error, and the singular values of the learned update; and the
base model's loss every pilot starts from.

:mod:`fedopt.solvers.validation.calibrate` imports :func:`_pilot` and calls it through its own
module attribute (so that a test may replace it there).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.recipe import TrainingRecipe
from fedopt.instance import Instance


class _Recorder:
    """Ideal aggregation that records, every round, the normalization scale std(updates) and
    the clients' spread Σ_k φ_k ‖g_k − ḡ‖² (Σ φ_k = 1); with ``noise > 0`` it adds zero-mean
    Gaussian error of variance noise · std(updates)² per entry (what AirComp does, at a chosen
    level) and records ‖ĝ − ḡ‖²."""

    def __init__(self, noise: float = 0.0) -> None:
        from fedopt.fl.aggregators import IdealAggregator

        self.inner = IdealAggregator()
        self.noise = float(noise)
        self.scales: list[float] = []
        self.spreads: list[float] = []
        self.errors: list[float] = []

    def aggregate(self, updates, weights, round_index, rng):
        from dataclasses import replace

        v = float(np.std(updates))
        self.scales.append(v)
        res = self.inner.aggregate(updates, weights, round_index, rng)
        phi = np.asarray(weights, dtype=float)
        dev = np.asarray(updates, dtype=float) - res.exact
        self.spreads.append(float(phi @ np.einsum("kq,kq->k", dev, dev) / phi.sum()))
        if self.noise <= 0:
            return res
        err = math.sqrt(self.noise) * v * rng.standard_normal(res.exact.shape)
        self.errors.append(float(np.sum(err**2)))
        return replace(res, estimate=res.exact + err, error=self.errors[-1])


@dataclass
class _Pilot:
    """One pilot's measurement, its learned-update singular values and per-round spreads."""

    record: dict[str, Any]
    sv: np.ndarray | None
    spreads: list[float]


def _device(recipe: TrainingRecipe) -> str:
    return getattr(recipe, "device", "cpu")


def _pilot(instance: Instance, data: Any, base: Any, recipe: TrainingRecipe, *, rank: int,
           rounds: int, seed: int, noise: float = 0.0) -> _Pilot:
    import torch

    from fedopt.fl.loop import run_federated

    t0 = time.perf_counter()
    model, mods = recipe.lora_model(base, rank, seed)
    model.to(_device(recipe))
    rec = _Recorder(noise)
    record: dict[str, Any] = {"kind": "noisy" if noise > 0 else "ideal", "rank": rank,
                              "seed": seed, "noise": noise}
    try:
        res = run_federated(model, data, rec, recipe.loop_config(
            instance, rounds=rounds, seed=seed, eval_every=rounds))
    except InvalidArgumentError as exc:
        if noise <= 0 or "diverged" not in str(exc):
            raise
        record.update(diverged=str(exc), final_eval_loss=None, final_train_loss=None,
                      update_scale=None, aggregation_error=None, grad_spread=None,
                      wall_s=time.perf_counter() - t0)
        return _Pilot(record, None, [])
    with torch.no_grad():
        sv = np.array([torch.linalg.svdvals(m.delta_weight().double()).cpu().numpy()
                       for m in mods.values()])
    record.update(update_scale=float(np.mean(rec.scales)),
                  aggregation_error=float(np.mean(rec.errors)) if rec.errors else 0.0,
                  grad_spread=float(np.mean(rec.spreads)),
                  final_eval_loss=res.summary["final_eval_loss"],
                  final_train_loss=res.summary["final_train_loss"],
                  wall_s=time.perf_counter() - t0)
    return _Pilot(record, sv, rec.spreads)
