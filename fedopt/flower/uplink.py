"""The uplink a Flower strategy aggregates through: one of fedopt's aggregators, the devices it
serves and the seed of its noise.

:class:`Uplink` holds any aggregator of :mod:`fedopt.fl.aggregators` (the protocol
``aggregate(updates (K, q), weights (K,), round_index, rng)``). Two constructors build the two
uplinks of a plan from per-round callables, so that fedopt never imports a solver here (the
callables come from :mod:`fedopt.solvers.flower`, which wires them from an instance and a plan):

- :meth:`Uplink.aircomp`: over-the-air aggregation, ``beamformers_for_round(t, H)`` giving the
  receive beamformers of round t's channel (re-optimized per round), the symbol-level path
  (``mode="exact"``) or the validated equivalent noise (``mode="equivalent"``); its airtime is
  S = ⌈q / (2 L M)⌉ OFDM symbols for the q reals actually sent;
- :meth:`Uplink.digital`: SOFT-sparsified LoRA factors over FDMA, ``decide(t)`` giving round t's
  kept components, latency, airtime and energy (TSFA's online stage).

Round t of the uplink is Flower's server round t + 1; its noise is drawn from
``fedopt.fl.config.round_rng(seed, t)``, so a round is a function of (seed, t).

This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import AggregationResult, AirCompAggregator, DigitalAggregator
from fedopt.fl.config import round_rng
from fedopt.flower.payload import Layout, lora_shapes

__all__ = ["METRIC_PREFIX", "Uplink"]

#: every metric the strategy adds to Flower's round metrics starts with this
METRIC_PREFIX = "uplink-"


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


class Uplink:
    """An aggregator of fedopt's physical layer, ready for a Flower strategy.

    Parameters
    ----------
    aggregator
        Anything with ``aggregate(updates, weights, round_index, rng) ->``
        :class:`~fedopt.fl.aggregators.AggregationResult`.
    devices
        K, the devices the uplink serves: every round must bring exactly K client updates.
    seed
        Seed of the noise draws (round t draws from ``round_rng(seed, t)``).
    kind
        ``"aircomp"``, ``"digital"`` or a name of your own (shown in logs).
    payload_shapes
        The array shapes the payload must have, in order (the digital uplink's LoRA factors), or
        None for any payload.
    info
        JSON-safe facts about the uplink (instance, plan, rank, streams, ...), for logs.
    """

    def __init__(self, aggregator: Any, *, devices: int, seed: int = 0, kind: str = "custom",
                 payload_shapes: Sequence[tuple[int, ...]] | None = None,
                 info: dict[str, Any] | None = None):
        if not callable(getattr(aggregator, "aggregate", None)):
            raise InvalidArgumentError(
                "aggregator: expected an object with aggregate(updates, weights, round, rng), "
                f"got {type(aggregator).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidArgumentError(f"seed: expected an integer >= 0, got {seed!r}")
        self.aggregator = aggregator
        self.devices = _check_count("devices", devices)
        self.seed = int(seed)
        self.kind = str(kind)
        self.payload_shapes = None if payload_shapes is None else \
            [tuple(int(n) for n in s) for s in payload_shapes]
        self.info = dict(info or {})

    @classmethod
    def aircomp(cls, H_for_round: Callable[[int], np.ndarray],
                beamformers_for_round: Callable[[int, np.ndarray], np.ndarray],
                p_sub: np.ndarray, sigma2: float, *, symbol_time_s: float,
                compute_time_s: float = 0.0, mode: str = "exact", seed: int = 0,
                info: dict[str, Any] | None = None) -> Uplink:
        """Over-the-air aggregation (:class:`~fedopt.fl.aggregators.AirCompAggregator`; its
        parameters): K is the number of rows of ``p_sub``."""
        agg = AirCompAggregator(H_for_round, beamformers_for_round, p_sub, sigma2,
                                symbol_time_s=symbol_time_s, mode=mode,
                                compute_time_s=compute_time_s)
        return cls(agg, devices=agg.p_sub.shape[0], seed=seed, kind="aircomp",
                   info={"mode": mode, "sigma2": agg.sigma2, **(info or {})})

    @classmethod
    def digital(cls, layers: Sequence[tuple[int, int]], rank: int,
                decide: Callable[[int], Any], *, devices: int, factors: str = "AB",
                seed: int = 0, info: dict[str, Any] | None = None) -> Uplink:
        """SOFT-sparsified LoRA factors over FDMA
        (:class:`~fedopt.fl.aggregators.DigitalAggregator`; its parameters). The payload must
        be the LoRA factors in fedopt's order: per layer A (r × d_in) then B (d_out × r)."""
        agg = DigitalAggregator(layers, rank, decide, factors=factors)
        return cls(agg, devices=devices, seed=seed, kind="digital",
                   payload_shapes=lora_shapes(agg.layers, agg.rank, factors),
                   info={"rank": agg.rank, "layers": [list(x) for x in agg.layers],
                         "factors": factors, **(info or {})})

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary: kind, K, seed and :attr:`info`."""
        return {"kind": self.kind, "devices": self.devices, "seed": self.seed, **self.info}

    def check_layout(self, layout: Layout) -> None:
        """Raise :class:`~fedopt.errors.InvalidArgumentError` if the payload's arrays are not
        the shapes this uplink sends (a digital uplink: the plan's LoRA factors)."""
        if self.payload_shapes is None or list(layout.shapes) == self.payload_shapes:
            return
        raise InvalidArgumentError(
            f"arrays: the {self.kind} uplink sends LoRA factors of rank "
            f"{self.info.get('rank')} on layers {self.info.get('layers')} (factors "
            f"{self.info.get('factors')}): expected floating-point arrays of shapes "
            f"{self.payload_shapes} in this order, got {list(layout.shapes)} "
            f"(keys {list(layout.keys)}); build the model's adapters at the uplink's rank")

    def aggregate(self, updates: np.ndarray, weights: np.ndarray,
                  round_index: int) -> AggregationResult:
        """Round ``round_index`` of the uplink: ``updates`` (K, q), one row per device in device
        order, ``weights`` φ (K,); the noise of the round is ``round_rng(seed, round_index)``."""
        g = np.asarray(updates)
        if g.ndim != 2 or g.shape[0] != self.devices:
            raise InvalidArgumentError(
                f"updates: expected {self.devices} rows (one per device of the uplink), got "
                f"shape {g.shape}")
        return self.aggregator.aggregate(g, weights, round_index,
                                         round_rng(self.seed, round_index))

    def metrics(self, result: AggregationResult, q: int) -> dict[str, int | float]:
        """The scalar metrics of one round (keys start with :data:`METRIC_PREFIX`):
        ``error`` ‖ĝ − ḡ‖², ``relative-error`` ‖ĝ − ḡ‖²/‖ḡ‖² (ḡ the average of what
        travelled: the average update for ``payload="delta"``), ``predicted-error``,
        ``airtime-s``, ``latency-s``, ``energy-j`` (Σ over devices), ``energy-max-j``,
        ``reals`` (q) and, AirComp, ``symbols`` (S) or, digital, ``kept-fraction`` (mean
        m_k / r). Unknown quantities are left out."""
        norm = float(np.sum(np.asarray(result.exact) ** 2))
        out: dict[str, Any] = {
            "error": float(result.error),
            "relative-error": float(result.error) / norm if norm > 0 else 0.0,
            "predicted-error": result.predicted_error,
            "airtime-s": result.airtime_s, "latency-s": result.latency_s,
            "reals": int(q)}
        if result.energy_j is not None:
            e = np.asarray(result.energy_j, dtype=float)
            out["energy-j"], out["energy-max-j"] = float(e.sum()), float(e.max())
        info = result.info or {}
        if "n_symbols" in info:
            out["symbols"] = int(info["n_symbols"])
        if "kept" in info and self.info.get("rank"):
            out["kept-fraction"] = float(np.mean(info["kept"])) / float(self.info["rank"])
        return {METRIC_PREFIX + k: (float(v) if isinstance(v, (float, np.floating)) else v)
                for k, v in out.items() if v is not None}
