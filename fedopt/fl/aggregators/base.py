"""The aggregator protocol, its result, and the checks every aggregator shares (spec 05 §3).

Public through :mod:`fedopt.fl.aggregators`. This module needs numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["AggregationResult", "Aggregator", "check_inputs", "callable_name", "weighted_average"]


@dataclass(frozen=True)
class AggregationResult:
    """Outcome of one aggregation round.

    Attributes
    ----------
    estimate : ndarray, shape (q,)
        ĝ, the server's estimate of the weighted average.
    exact : ndarray, shape (q,)
        ḡ = Σ_k φ_k g_k / Σ_k φ_k.
    error : float
        ‖ĝ − ḡ‖².
    predicted_error : float or None
        E‖ĝ − ḡ‖² predicted by spec 02 §3 (D), or None where the aggregator has no model.
    airtime_s : float or None
        Air time of the round in seconds, or None where unknown.
    info : dict
        Aggregator-specific details (normalization, symbol count, per-subcarrier MSE, ...).
    latency_s : float or None
        Round latency (compute + upload) in seconds, or None where the aggregator does not know
        the compute time (the loop then adds its own).
    energy_j : ndarray or None
        Transmit energy per device in the round (joules), shape (K,), or None.
    """

    estimate: np.ndarray
    exact: np.ndarray
    error: float
    predicted_error: float | None = None
    airtime_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    latency_s: float | None = None
    energy_j: np.ndarray | None = None


@runtime_checkable
class Aggregator(Protocol):
    """Anything that combines client updates into an estimate of their weighted average.

    ``rng`` is the round's generator (:func:`fedopt.fl.config.round_rng`): an aggregator draws
    its noise from it and from nothing else, so a round is a function of (seed, t); an
    aggregator that draws nothing still accepts it.
    """

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult: ...


def check_inputs(updates: Any, weights: Any, round_index: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate (updates, weights, round_index); return them as float arrays."""
    try:
        g = np.asarray(updates, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"updates: expected a real (K, q) array ({exc})") from exc
    if g.ndim != 2 or g.shape[0] < 1 or g.shape[1] < 1:
        raise InvalidArgumentError(
            f"updates: expected a non-empty real array of shape (K, q), got shape {g.shape}"
        )
    if not np.all(np.isfinite(g)):
        raise InvalidArgumentError("updates: contains NaN or infinite entries")
    try:
        phi = np.asarray(weights, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"weights: expected a real (K,) array ({exc})") from exc
    if phi.shape != (g.shape[0],):
        raise InvalidArgumentError(
            f"weights: expected shape ({g.shape[0]},) (one φ_k per row of updates), "
            f"got shape {phi.shape}"
        )
    if not np.all(np.isfinite(phi)) or np.any(phi < 0) or phi.sum() <= 0:
        raise InvalidArgumentError(
            f"weights: expected finite φ_k >= 0 with a positive sum, got {phi.tolist()}"
        )
    if isinstance(round_index, bool) or not isinstance(round_index, (int, np.integer)) \
            or round_index < 0:
        raise InvalidArgumentError(
            f"round_index: expected a non-negative integer, got {round_index!r}"
        )
    return g, phi


def callable_name(fn: Any) -> str:
    """A stable name for a callable (``repr`` would carry a memory address into run digests)."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def weighted_average(g: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """ḡ = Σ_k φ_k g_k / Σ_k φ_k."""
    return phi @ g / phi.sum()
