"""SOFT-sparsified updates delivered error-free over an FDMA uplink (spec 05 §3 ``digital``).

Device k sends the top m_k rank-1 components of its LoRA update (spec 04 §4), m_k decided per
round by a callable (TSFA's online stage, supplied from ``solvers``).

Public through :mod:`fedopt.fl.aggregators`. This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators.base import AggregationResult, callable_name, check_inputs

__all__ = ["DigitalAggregator", "soft_component_mask"]


def _check_layout(layers: Any, rank: Any) -> tuple[list[tuple[int, int]], int]:
    try:
        out = [(int(d_out), int(d_in)) for d_out, d_in in layers]
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"layers: expected a sequence of (d_out, d_in) pairs, got {layers!r} ({exc})"
        ) from exc
    if not out or any(d < 1 for pair in out for d in pair):
        raise InvalidArgumentError(f"layers: expected positive (d_out, d_in) pairs, got {out}")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise InvalidArgumentError(f"rank: expected an integer >= 1, got {rank!r}")
    return out, int(rank)


def _factor_sizes(d_out: int, d_in: int, rank: int, factors: str) -> tuple[int, int]:
    """(reals of A, reals of B) of one layer in a payload of ``factors``."""
    return (rank * d_in if "A" in factors else 0), (rank * d_out if "B" in factors else 0)


def soft_component_mask(updates: np.ndarray, layers: list[tuple[int, int]], rank: int,
                        kept: np.ndarray, factors: str = "AB") -> np.ndarray:
    """Per device and layer, keep the m_k rank-1 components of largest score (spec 04 §4).

    ``updates`` (K, q) hold, layer after layer, A (r × d_in) then B (d_out × r), row-major (the
    order of :func:`fedopt.fl.lora.flatten_lora`), or only one of them (``factors`` ``"A"`` /
    ``"B"``: the single-factor payloads). Component i of a layer is the pair (b_i, a_i) with
    score s_i = ‖b_i‖ ‖a_i‖ (‖a_i‖ or ‖b_i‖ alone when one factor travels); ties keep the lower
    index. Returns a 0/1 mask of shape (K, q) that keeps exactly those components.
    """
    g = np.asarray(updates, dtype=float)
    k = g.shape[0]
    mask = np.zeros_like(g)
    off = 0
    rows = np.arange(k)[:, None]
    for d_out, d_in in layers:
        na, nb = _factor_sizes(d_out, d_in, rank, factors)
        a = g[:, off:off + na].reshape(k, rank, d_in) if na else None
        b = g[:, off + na:off + na + nb].reshape(k, d_out, rank) if nb else None
        scores = np.ones((k, rank))
        if a is not None:
            scores = scores * np.linalg.norm(a, axis=2)
        if b is not None:
            scores = scores * np.linalg.norm(b, axis=1)  # (K, r)
        order = np.argsort(-scores, axis=1, kind="stable")
        keep = np.zeros((k, rank), dtype=bool)
        keep[rows, order] = np.arange(rank)[None, :] < kept[:, None]
        if na:
            mask[:, off:off + na] = np.repeat(keep, d_in, axis=1)
        if nb:
            mask[:, off + na:off + na + nb] = np.tile(keep, (1, d_out))
        off += na + nb
    return mask


class DigitalAggregator:
    """SOFT-sparsified updates delivered error-free over an FDMA uplink (spec 05 §3 ``digital``).

    Parameters
    ----------
    layers
        (d_out, d_in) of every adapted weight in payload order (A then B per layer).
    rank
        The LoRA rank r.
    decide
        ``decide(round_index)`` → mapping with ``kept`` (K,) components per device in 1..r, and
        optionally ``latency_s``, ``airtime_s``, ``energy_j`` (K,), ``bandwidth_hz`` (K,),
        ``sparsity`` (K,). Its ``state_dict``/``load_state_dict`` (e.g. a virtual queue) are
        exposed for checkpoints.
    factors
        The factors in the payload: ``"AB"`` (the default), or ``"B"`` / ``"A"`` alone
        (FFA-LoRA / FedSA-LoRA).
    blocks
        Copies of that layout sent back to back (over-the-air Sophia's m and h): the components
        kept are chosen on the first block (m) and the same components are sent of every block,
        so an entry of h arrives exactly where its m does.

    The estimate is ĝ = Σ_k φ_k (M_k ⊙ g_k) / Σ_k φ_k with M_k the mask of
    :func:`soft_component_mask`; the error is the dropped part, ‖Σ_k φ_k (1 − M_k) ⊙ g_k‖² / (Σφ)².
    ``predicted_error`` is Σ_k φ̃_k ‖(1 − M_k) ⊙ g_k‖² (φ̃ = φ/Σφ), the per-device dropped energy that
    the TSFA bound charges; by Jensen it is an upper bound of the measured error.
    """

    def __init__(self, layers: Any, rank: int, decide: Callable[[int], Any], *,
                 factors: str = "AB", blocks: int = 1):
        self.layers, self.rank = _check_layout(layers, rank)
        if not callable(decide):
            raise InvalidArgumentError("decide: expected a callable round -> decision mapping")
        if factors not in ("AB", "A", "B"):
            raise InvalidArgumentError(f"factors: got {factors!r}, must be 'AB', 'A' or 'B'")
        if isinstance(blocks, bool) or not isinstance(blocks, (int, np.integer)) or blocks < 1:
            raise InvalidArgumentError(f"blocks: got {blocks!r}, must be an integer >= 1")
        self.decide = decide
        self.factors, self.blocks = factors, int(blocks)
        self.q_block = sum(sum(_factor_sizes(a, b, self.rank, factors)) for a, b in self.layers)
        self.q = self.blocks * self.q_block

    def describe(self) -> dict[str, Any]:
        inner = getattr(self.decide, "describe", None)
        return {"type": "digital", "layers": self.layers, "rank": self.rank,
                **({"factors": self.factors} if self.factors != "AB" else {}),
                **({"blocks": self.blocks} if self.blocks > 1 else {}),
                "decide": inner() if callable(inner) else callable_name(self.decide)}

    def state_dict(self) -> dict[str, np.ndarray]:
        fn = getattr(self.decide, "state_dict", None)
        return dict(fn()) if callable(fn) else {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fn = getattr(self.decide, "load_state_dict", None)
        if callable(fn):
            fn(state)

    def _decision(self, round_index: int, k: int) -> tuple[dict[str, Any], np.ndarray]:
        """``decide(round_index)`` checked: (the decision, ``kept`` as K int64 in 1..r)."""
        raw = self.decide(int(round_index))
        if not isinstance(raw, Mapping) or "kept" not in raw:
            raise InvalidArgumentError(
                f"decide({round_index}): expected a mapping with 'kept' ({k} integers in "
                f"1..{self.rank}), got {type(raw).__name__}"
                + (f" with keys {sorted(raw)}" if isinstance(raw, Mapping) else ""))
        dec = dict(raw)
        try:
            kept_f = np.asarray(dec["kept"], dtype=float)
        except (TypeError, ValueError):
            kept_f = np.full(1, np.nan)
        if (kept_f.shape != (k,) or not np.all(np.isfinite(kept_f))
                or np.any(kept_f != np.round(kept_f)) or np.any(kept_f < 1)
                or np.any(kept_f > self.rank)):
            raise InvalidArgumentError(
                f"decide({round_index}): 'kept' must hold {k} integers in 1..{self.rank}, got "
                f"{dec['kept']!r}")
        return dec, kept_f.astype(np.int64)

    def deliver(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                rng: np.random.Generator) -> tuple[np.ndarray, AggregationResult]:
        """Every device's own sparsified update M_k ⊙ g_k as the server receives it over FDMA
        (for algorithms that need each one, e.g. MIRA), and the round's aggregation result
        (one decision per round)."""
        del rng  # error-free delivery
        res, delivered = self._round(updates, weights, round_index)
        return delivered, res

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult:
        """ĝ from the masked updates of this round's decision. Delivery is error-free, so
        ``rng`` is accepted for the :class:`~fedopt.fl.aggregators.base.Aggregator` protocol
        and never drawn from."""
        return self._round(updates, weights, round_index)[0]

    def _round(self, updates: np.ndarray, weights: np.ndarray, round_index: int
               ) -> tuple[AggregationResult, np.ndarray]:
        """The round's result and every device's delivered (masked) update."""
        g, phi = check_inputs(updates, weights, round_index)
        k, q = g.shape
        if q != self.q:
            raise InvalidArgumentError(
                f"updates: {q} reals per device, but rank {self.rank} on layers {self.layers} "
                f"(factors {self.factors}, blocks {self.blocks}) gives q = {self.q}")
        dec, kept = self._decision(round_index, k)
        mask = np.tile(soft_component_mask(g[:, :self.q_block], self.layers, self.rank, kept,
                                           self.factors), (1, self.blocks))
        phi_n = phi / phi.sum()
        exact = phi_n @ g
        estimate = phi_n @ (mask * g)
        dropped = np.sum(((1.0 - mask) * g) ** 2, axis=1)
        energy = dec.get("energy_j")
        info = {"mode": "digital", "kept": kept.tolist(),
                **{key: np.asarray(dec[key]).tolist() for key in ("bandwidth_hz", "sparsity")
                   if dec.get(key) is not None}}
        return AggregationResult(
            estimate=estimate, exact=exact, error=float(np.sum((estimate - exact) ** 2)),
            predicted_error=float(phi_n @ dropped),
            airtime_s=None if dec.get("airtime_s") is None else float(dec["airtime_s"]),
            info=info,
            latency_s=None if dec.get("latency_s") is None else float(dec["latency_s"]),
            energy_j=None if energy is None else np.asarray(energy, dtype=float),
        ), mask * g
