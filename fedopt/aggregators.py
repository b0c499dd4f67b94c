"""Pluggable aggregators of client updates (spec 05 §3, spec 02 §1–§3).

An aggregator is any object with

    aggregate(updates (K, q), weights φ (K,), round_index, rng) -> AggregationResult

that estimates the φ-weighted average ḡ = Σ_k φ_k g_k / Σ_k φ_k. Two are provided here:

- :class:`IdealAggregator`: error-free, ĝ = ḡ.
- :class:`AirCompAggregator`: the over-the-air path of spec 02 — per round a channel H, receive
  beamformers A (supplied by a callable, so that the caller may re-optimize them with a warm
  start; fedopt never imports solvers here), ZF precoders at the power limit, and either the
  symbol-level simulation (``mode="exact"``) or the equivalent Gaussian error with the per-slot
  variance σ²‖a_{m,l}‖² laid out as :func:`fedopt.aircomp.pack` lays the reals
  (``mode="equivalent"``).
"""

from __future__ import annotations

from collections.abc import Callable
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
    "slot_variances",
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
    """

    estimate: np.ndarray
    exact: np.ndarray
    error: float
    predicted_error: float | None = None
    airtime_s: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


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


def _weighted_average(g: np.ndarray, phi: np.ndarray) -> np.ndarray:
    return phi @ g / phi.sum()


def slot_variances(var_ml: np.ndarray, q: int) -> np.ndarray:
    """Per-real error variance (q,) from per-slot complex-symbol variances (M, L).

    Reals are laid out as :func:`fedopt.aircomp.pack` lays them: pairs of reals share one
    symbol, symbols run over (OFDM symbol, subcarrier, stream). Each real inherits the full
    variance of its complex symbol (spec 02 §3): x̂ = √2·Re/Im(ŝ), Var(Re ε) = Var(ε)/2.
    """
    var_ml = np.asarray(var_ml, dtype=float)
    m, lsz = var_ml.shape
    s_count = max(1, -(-q // (2 * m * lsz)))
    per_real = np.broadcast_to(var_ml[None, :, :, None], (s_count, m, lsz, 2))
    return per_real.reshape(-1)[:q]


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
        ``"equivalent"``: the same normalization, plus Gaussian error of per-slot variance
        MSE_{m,l} (σ²‖a_{m,l}‖² under ZF) on each real, laid out as ``pack`` lays reals.
    """

    def __init__(self, H_for_round: Callable[[int], np.ndarray],
                 beamformers_for_round: Callable[[int, np.ndarray], np.ndarray],
                 p_sub: np.ndarray, sigma2: float, *, symbol_time_s: float | None = None,
                 mode: str = "exact"):
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
        self.H_for_round = H_for_round
        self.beamformers_for_round = beamformers_for_round
        self.p_sub = p
        self.sigma2 = s2
        self.symbol_time_s = symbol_time_s
        self.mode = mode

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
            sd = np.sqrt(slot_variances(mse_ml, q))
            x_hat = x_sum + sd * rng.standard_normal(q)
            estimate = v * x_hat / phi_sum + mu
            s_count = max(1, -(-q // (2 * m * lsz)))

        predicted = float(ac.distortion(mse_m, q, lsz, scale=v, phi_sum=phi_sum))
        airtime = None if self.symbol_time_s is None else s_count * self.symbol_time_s
        info = {"mode": self.mode, "mean": mu, "scale": v, "n_symbols": int(s_count),
                "mse_per_subcarrier": mse_m, "n_streams": int(lsz)}
        return AggregationResult(
            estimate=estimate,
            exact=exact,
            error=float(np.sum((estimate - exact) ** 2)),
            predicted_error=predicted,
            airtime_s=airtime,
            info=info,
        )
