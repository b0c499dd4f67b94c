"""The ideal aggregator: error-free aggregation (spec 05 §3 ``ideal``).

Public through :mod:`fedopt.fl.aggregators`. This module needs numpy only.
"""

from __future__ import annotations

import numpy as np

from fedopt.fl.aggregators.base import AggregationResult, check_inputs, weighted_average

__all__ = ["IdealAggregator"]


class IdealAggregator:
    """Error-free aggregation: ĝ = Σ_k φ_k g_k / Σ_k φ_k (spec 05 §3 ``ideal``)."""

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult:
        """ĝ = ḡ exactly: zero error, zero predicted error, no airtime. ``rng`` is accepted
        for the :class:`~fedopt.fl.aggregators.base.Aggregator` protocol and never drawn from."""
        g, phi = check_inputs(updates, weights, round_index)
        exact = weighted_average(g, phi)
        return AggregationResult(estimate=exact.copy(), exact=exact, error=0.0,
                                 predicted_error=0.0, airtime_s=None, info={"mode": "ideal"})

    def deliver(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                rng: np.random.Generator) -> tuple[np.ndarray, AggregationResult]:
        """Every device's own update, error-free (for algorithms that need each one at the
        server, e.g. MIRA), and the round's aggregation result."""
        res = self.aggregate(updates, weights, round_index, rng)
        return np.array(updates, dtype=float), res
