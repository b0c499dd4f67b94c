"""Pluggable aggregators of client updates (spec 05 §3, spec 02 §1–§3).

An aggregator is any object with

    aggregate(updates (K, q), weights φ (K,), round_index, rng) -> AggregationResult

that estimates the φ-weighted average ḡ = Σ_k φ_k g_k / Σ_k φ_k (the protocol and the result
type: :mod:`fedopt.fl.aggregators.base`). Three are provided:

- :class:`IdealAggregator` (:mod:`~fedopt.fl.aggregators.ideal`): error-free, ĝ = ḡ.
- :class:`DigitalAggregator` (:mod:`~fedopt.fl.aggregators.digital`): error-free digital delivery
  over FDMA of SOFT-sparsified updates (spec 04 §4): device k sends the top m_k rank-1
  components of its LoRA update, m_k decided per round by a callable (TSFA's online stage,
  supplied from ``solvers``).
- :class:`AirCompAggregator` (:mod:`~fedopt.fl.aggregators.aircomp`): the over-the-air path of
  spec 02 — per round a channel H, receive beamformers A (supplied by a callable, so that the
  caller may re-optimize them with a warm start; fedopt never imports solvers here), ZF
  precoders at the power limit, and either the symbol-level simulation (``mode="exact"``) or
  only its receiver-noise error A_m^H n, unpacked as :func:`fedopt.aircomp.pack` lays the reals
  (``mode="equivalent"``).

Only the AirComp aggregator draws from ``rng``; the ideal and digital ones accept it for the
protocol and draw nothing.
"""

from __future__ import annotations

from fedopt.fl.aggregators.aircomp import MODES, AirCompAggregator
from fedopt.fl.aggregators.base import AggregationResult, Aggregator
from fedopt.fl.aggregators.digital import DigitalAggregator, soft_component_mask
from fedopt.fl.aggregators.ideal import IdealAggregator

__all__ = [
    "AggregationResult",
    "Aggregator",
    "IdealAggregator",
    "AirCompAggregator",
    "DigitalAggregator",
    "soft_component_mask",
    "MODES",
]
