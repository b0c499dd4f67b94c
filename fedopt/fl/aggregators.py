"""Pluggable aggregators of client updates (spec 05 §3, spec 02 §1–§3).

An aggregator is any object with

    aggregate(updates (K, q), weights φ (K,), round_index, rng) -> AggregationResult

that estimates the φ-weighted average ḡ = Σ_k φ_k g_k / Σ_k φ_k. Two are provided here:

- :class:`IdealAggregator`: error-free, ĝ = ḡ.
- :class:`DigitalAggregator`: error-free digital delivery over FDMA of SOFT-sparsified updates
  (spec 04 §4): device k sends the top m_k rank-1 components of its LoRA update, m_k decided per
  round by a callable (TSFA's online stage, supplied from ``solvers``).
- :class:`AirCompAggregator`: the over-the-air path of spec 02 — per round a channel H, receive
  beamformers A (supplied by a callable, so that the caller may re-optimize them with a warm
  start; fedopt never imports solvers here), ZF precoders at the power limit, and either the
  symbol-level simulation (``mode="exact"``) or only its receiver-noise error A_m^H n, unpacked
  as :func:`fedopt.aircomp.pack` lays the reals (``mode="equivalent"``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedopt import aircomp as ac
from fedopt.errors import InvalidArgumentError

__all__ = [
    "AggregationResult",
    "Aggregator",
    "IdealAggregator",
    "AirCompAggregator",
    "DigitalAggregator",
    "soft_component_mask",
]

MODES = ("exact", "equivalent")


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
    """Anything that combines client updates into an estimate of their weighted average."""

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult: ...


def _check_inputs(updates: Any, weights: Any, round_index: Any) -> tuple[np.ndarray, np.ndarray]:
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


def _callable_name(fn: Any) -> str:
    """A stable name for a callable (``repr`` would carry a memory address into run digests)."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _weighted_average(g: np.ndarray, phi: np.ndarray) -> np.ndarray:
    return phi @ g / phi.sum()


class IdealAggregator:
    """Error-free aggregation: ĝ = Σ_k φ_k g_k / Σ_k φ_k (spec 05 §3 ``ideal``)."""

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult:
        g, phi = _check_inputs(updates, weights, round_index)
        exact = _weighted_average(g, phi)
        return AggregationResult(estimate=exact.copy(), exact=exact, error=0.0,
                                 predicted_error=0.0, airtime_s=None, info={"mode": "ideal"})


class AirCompAggregator:
    """Over-the-air aggregation with ZF precoders over MIMO-OFDM (spec 05 §3 ``aircomp``).

    Parameters
    ----------
    H_for_round
        ``H_for_round(t)`` → this round's channel, complex (K, M, N_r, N_t).
    beamformers_for_round
        ``beamformers_for_round(t, H)`` → receive beamformers A, complex (M, N_r, L), any scale
        (ZF design rescales each A_m to the power limit).
    p_sub
        Per-subcarrier power budgets P_{k,m}, shape (K,) or (K, M).
    sigma2
        Noise power per subcarrier σ² (watts), >= 0.
    symbol_time_s
        OFDM symbol duration; if given, ``airtime_s = S · symbol_time_s``.
    mode
        ``"exact"``: symbol-level simulation (pack, precode, channel, noise, receive, unpack).
        ``"equivalent"``: the same normalization, the exact weighted sum, plus the receiver-noise
        error A_m^H n (n ~ CN(0, σ² I)) unpacked as ``pack`` lays the reals — what the exact
        path's error is under ZF (per-slot variance MSE_{m,l} = σ²‖a_{m,l}‖², with the
        correlation between the streams of a subcarrier), without simulating the K devices.
    compute_time_s
        Local compute time of the slowest device; with ``symbol_time_s`` it makes
        ``latency_s = compute_time_s + airtime_s``.

    The result's ``energy_j`` is S · T_sym · Σ_m ‖B_{k,m}‖_F² per device (unit-power symbols).
    If ``beamformers_for_round`` has ``state_dict``/``load_state_dict`` (a warm start), the
    aggregator exposes them too, so the loop checkpoints that state.
    """

    def __init__(self, H_for_round: Callable[[int], np.ndarray],
                 beamformers_for_round: Callable[[int, np.ndarray], np.ndarray],
                 p_sub: np.ndarray, sigma2: float, *, symbol_time_s: float | None = None,
                 mode: str = "exact", compute_time_s: float = 0.0):
        if not callable(H_for_round):
            raise InvalidArgumentError("H_for_round: expected a callable round -> H")
        if not callable(beamformers_for_round):
            raise InvalidArgumentError(
                "beamformers_for_round: expected a callable (round, H) -> A"
            )
        if mode not in MODES:
            raise InvalidArgumentError(f"mode: expected one of {MODES}, got {mode!r}")
        p = np.asarray(p_sub, dtype=float)
        if p.ndim not in (1, 2) or p.size == 0 or not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise InvalidArgumentError(
                f"p_sub: expected positive finite budgets of shape (K,) or (K, M), got shape "
                f"{p.shape}"
            )
        s2 = float(sigma2)
        if not np.isfinite(s2) or s2 < 0:
            raise InvalidArgumentError(f"sigma2: expected a finite noise power >= 0, got {sigma2}")
        if symbol_time_s is not None:
            ts = float(symbol_time_s)
            if not np.isfinite(ts) or ts <= 0:
                raise InvalidArgumentError(
                    f"symbol_time_s: expected a positive duration or None, got {symbol_time_s}"
                )
            symbol_time_s = ts
        ct = float(compute_time_s)
        if not np.isfinite(ct) or ct < 0:
            raise InvalidArgumentError(
                f"compute_time_s: expected a finite time >= 0, got {compute_time_s}"
            )
        self.H_for_round = H_for_round
        self.beamformers_for_round = beamformers_for_round
        self.p_sub = p
        self.sigma2 = s2
        self.symbol_time_s = symbol_time_s
        self.mode = mode
        self.compute_time_s = ct

    def describe(self) -> dict[str, Any]:
        """JSON-safe description (part of a run's configuration digest)."""
        inner = getattr(self.beamformers_for_round, "describe", None)
        return {"type": "aircomp", "mode": self.mode, "sigma2": self.sigma2,
                "symbol_time_s": self.symbol_time_s, "compute_time_s": self.compute_time_s,
                "p_sub": self.p_sub.tolist(),
                "beamformers": inner() if callable(inner) else _callable_name(
                    self.beamformers_for_round)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The beamformer callable's state (empty when it has none)."""
        fn = getattr(self.beamformers_for_round, "state_dict", None)
        return dict(fn()) if callable(fn) else {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fn = getattr(self.beamformers_for_round, "load_state_dict", None)
        if callable(fn):
            fn(state)

    def _round_design(self, t: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        H = np.asarray(self.H_for_round(t))
        if H.ndim != 4 or H.shape[0] != k:
            raise InvalidArgumentError(
                f"H_for_round({t}): expected shape ({k}, M, N_r, N_t) for K = {k} updates, "
                f"got {H.shape}"
            )
        A = np.asarray(self.beamformers_for_round(t, H))
        m, nr = H.shape[1], H.shape[2]
        if A.ndim != 3 or A.shape[:2] != (m, nr):
            raise InvalidArgumentError(
                f"beamformers_for_round({t}): expected shape ({m}, {nr}, L), got {A.shape}"
            )
        p = self.p_sub
        if p.shape[0] != k or (p.ndim == 2 and p.shape[1] != m):
            raise InvalidArgumentError(
                f"p_sub: expected shape ({k},) or ({k}, {m}), got {p.shape}"
            )
        return H, A

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult:
        g, phi = _check_inputs(updates, weights, round_index)
        k, q = g.shape
        H, A = self._round_design(int(round_index), k)
        a_s, B = ac.zf_design(A, H, phi, self.p_sub)
        m, lsz = a_s.shape[0], a_s.shape[2]
        mse_ml = ac.mse_per_stream(a_s, B, H, phi, self.sigma2)  # (M, L)
        mse_m = mse_ml.sum(axis=1)
        phi_sum = float(phi.sum())
        exact = _weighted_average(g, phi)

        if self.mode == "exact":
            out = ac.aggregate(g, a_s, B, H, phi, self.sigma2, rng)
            estimate, mu, v, s_count = out.estimate, out.mean, out.scale, out.n_symbols
        else:
            mu = float(np.mean(g))
            v = float(np.std(g))
            v = v if v > 0 else 1.0
            x_sum = phi @ ((g - mu) / v)
            s_count = max(1, ac.symbol_count(q, m, lsz))
            # under ZF the received error is exactly A_m^H n: draw n and form it, which keeps the
            # correlation between streams of one subcarrier (Re a_l^H a_l' / (‖a_l‖‖a_l'‖))
            # that independent per-slot draws of variance σ²‖a_l‖² would lose
            n = rng.standard_normal((s_count, m, H.shape[2], 2)) @ np.array([1.0, 1j])
            eps = np.einsum("mrl,smr->sml", np.conj(a_s), np.sqrt(self.sigma2 / 2.0) * n)
            x_hat = x_sum + ac.unpack(eps, q)
            estimate = v * x_hat / phi_sum + mu

        predicted = float(ac.distortion(mse_m, q, lsz, scale=v, phi_sum=phi_sum))
        airtime = energy = latency = None
        if self.symbol_time_s is not None:
            airtime = s_count * self.symbol_time_s
            latency = self.compute_time_s + airtime
            energy = airtime * np.sum(np.abs(B) ** 2, axis=(1, 2, 3))
        info = {"mode": self.mode, "mean": mu, "scale": v, "n_symbols": int(s_count),
                "mse_per_subcarrier": mse_m, "n_streams": int(lsz)}
        return AggregationResult(
            estimate=estimate,
            exact=exact,
            error=float(np.sum((estimate - exact) ** 2)),
            predicted_error=predicted,
            airtime_s=airtime,
            info=info,
            latency_s=latency,
            energy_j=energy,
        )


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


def soft_component_mask(updates: np.ndarray, layers: list[tuple[int, int]], rank: int,
                        kept: np.ndarray) -> np.ndarray:
    """Per device and layer, keep the m_k rank-1 components of largest score (spec 04 §4).

    ``updates`` (K, q) hold, layer after layer, A (r × d_in) then B (d_out × r), row-major (the
    order of :func:`fedopt.fl.lora.flatten_lora`). Component i of a layer is the pair (b_i, a_i)
    with score s_i = ‖b_i‖ ‖a_i‖; ties keep the lower index. Returns a 0/1 mask of shape (K, q)
    that keeps exactly those pairs.
    """
    g = np.asarray(updates, dtype=float)
    k = g.shape[0]
    mask = np.zeros_like(g)
    off = 0
    rows = np.arange(k)[:, None]
    for d_out, d_in in layers:
        a = g[:, off:off + rank * d_in].reshape(k, rank, d_in)
        b = g[:, off + rank * d_in:off + rank * (d_in + d_out)].reshape(k, d_out, rank)
        scores = np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=1)  # (K, r)
        order = np.argsort(-scores, axis=1, kind="stable")
        keep = np.zeros((k, rank), dtype=bool)
        keep[rows, order] = np.arange(rank)[None, :] < kept[:, None]
        mask[:, off:off + rank * d_in] = np.repeat(keep, d_in, axis=1)
        mask[:, off + rank * d_in:off + rank * (d_in + d_out)] = np.tile(keep, (1, d_out))
        off += rank * (d_in + d_out)
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

    The estimate is ĝ = Σ_k φ_k (M_k ⊙ g_k) / Σ_k φ_k with M_k the mask of
    :func:`soft_component_mask`; the error is the dropped part, ‖Σ_k φ_k (1 − M_k) ⊙ g_k‖² / (Σφ)².
    ``predicted_error`` is Σ_k φ̃_k ‖(1 − M_k) ⊙ g_k‖² (φ̃ = φ/Σφ), the per-device dropped energy that
    the TSFA bound charges; by Jensen it is an upper bound of the measured error.
    """

    def __init__(self, layers: Any, rank: int, decide: Callable[[int], Any]):
        self.layers, self.rank = _check_layout(layers, rank)
        if not callable(decide):
            raise InvalidArgumentError("decide: expected a callable round -> decision mapping")
        self.decide = decide
        self.q = self.rank * sum(a + b for a, b in self.layers)

    def describe(self) -> dict[str, Any]:
        inner = getattr(self.decide, "describe", None)
        return {"type": "digital", "layers": self.layers, "rank": self.rank,
                "decide": inner() if callable(inner) else _callable_name(self.decide)}

    def state_dict(self) -> dict[str, np.ndarray]:
        fn = getattr(self.decide, "state_dict", None)
        return dict(fn()) if callable(fn) else {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        fn = getattr(self.decide, "load_state_dict", None)
        if callable(fn):
            fn(state)

    def aggregate(self, updates: np.ndarray, weights: np.ndarray, round_index: int,
                  rng: np.random.Generator) -> AggregationResult:
        g, phi = _check_inputs(updates, weights, round_index)
        k, q = g.shape
        if q != self.q:
            raise InvalidArgumentError(
                f"updates: {q} reals per device, but rank {self.rank} on layers {self.layers} "
                f"gives q = {self.q}")
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
        kept = kept_f.astype(np.int64)
        mask = soft_component_mask(g, self.layers, self.rank, kept)
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
        )
