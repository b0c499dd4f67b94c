"""Input checks of TSFA's stages (spec 04 §5)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedopt.digital import noise_psd_w_hz
from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.instance import Instance

__all__ = ["check_bandwidth", "check_budget", "check_count", "check_queue", "check_snr",
           "check_sparsity", "check_v", "mean_snr_hz"]


def check_budget(instance: Instance, value: float | None) -> float:
    """T̄: the argument, else constraints.avg_latency_budget_s, else latency_budget_s."""
    if value is None:
        value = instance.constraints.avg_latency_budget_s
        if value is None:
            value = instance.constraints.latency_budget_s
        if value is None:
            raise InvalidArgumentError(
                "avg_latency_budget_s: no latency budget; pass avg_latency_budget_s or set "
                "constraints.avg_latency_budget_s (or constraints.latency_budget_s) in the "
                f"instance {instance.name!r}"
            )
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"avg_latency_budget_s: got {value!r}, must be a number of "
                                   "seconds > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgumentError(
            f"avg_latency_budget_s: got {value!r}, must be a finite number of seconds > 0")
    return value


def check_sparsity(value: Any, name: str = "nominal_sparsity") -> float:
    """ρ ∈ [0, 1)."""
    try:
        rho = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: got {value!r}, must be a number in [0, 1)") from None
    if not (0.0 <= rho < 1.0):
        raise InvalidArgumentError(
            f"{name}: got ρ = {value!r}, must lie in [0, 1) (ρ = 0 keeps every component, "
            "ρ → 1 keeps one; dropping all is not allowed)"
        )
    return rho


def check_v(value: Any) -> float:
    """The drift-plus-penalty weight V ≥ 0, finite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"V: got {value!r}, must be a number >= 0") from None
    if not (math.isfinite(v) and v >= 0):
        raise InvalidArgumentError(
            f"V: got {value!r}, must be a finite number >= 0 (the weight of the sparsification "
            "error against latency; V = 0 minimizes latency only)"
        )
    return v


def check_count(value: Any, name: str, least: int = 1) -> int:
    """An integer ≥ ``least`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise InvalidArgumentError(f"{name}: got {value!r}, must be an integer >= {least}")
    return int(value)


def mean_snr_hz(instance: Instance) -> np.ndarray:
    """E[c_k] = p_k E[g_k] / N0 with E[g_k] = N_r β_k (every entry of H has E|h|² = β_k, for
    Rayleigh and Rician fading alike; see :mod:`fedopt.digital`)."""
    return (np.asarray(instance.power_w, dtype=float) * instance.n_rx * instance.path_loss
            / noise_psd_w_hz(instance))


def check_bandwidth(instance: Instance, bandwidth_hz: float | None) -> float:
    """B_tot: the argument, else ``instance.bandwidth_hz``; finite and > 0."""
    total = instance.bandwidth_hz if bandwidth_hz is None else bandwidth_hz
    try:
        total = float(total)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"bandwidth_hz: got {bandwidth_hz!r}, must be a number "
                                   "of Hz") from None
    if not math.isfinite(total):
        raise InvalidArgumentError(f"bandwidth_hz: got {bandwidth_hz!r}, must be finite")
    if total <= 0:
        raise InfeasibleError(
            f"bandwidth_hz: got B_tot = {total:g} Hz; the digital uplink needs a positive "
            "total bandwidth (set constraints.bandwidth_hz or the OFDM band M·Δf)"
        )
    return total


def check_snr(value: Any, k: int) -> np.ndarray:
    """A round's c_k, shape (K,), finite, > 0 (a zero gain is infeasible)."""
    try:
        c = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"snr_hz: expected K = {k} numbers, got {value!r}"
                                   ) from None
    if c.shape != (k,):
        raise InvalidArgumentError(f"snr_hz: expected shape ({k},) (one c_k per device), "
                                   f"got {c.shape}")
    bad = ~np.isfinite(c) | (c < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidArgumentError(f"snr_hz: device {i} has {c[i]!r}; every c_k must be "
                                   "finite and >= 0")
    dead = np.flatnonzero(c == 0)
    if dead.size:
        i = int(dead[0])
        raise InfeasibleError(
            f"device {i}: zero channel gain (snr_hz c_k = 0), so it cannot send even one "
            "component in any time (infinite latency floor); drop the device for this round "
            "or check its channel and power"
        )
    return c


def check_queue(value: Any) -> float:
    """A queue Q ≥ 0, finite."""
    try:
        q = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"queue: got {value!r}, must be a number >= 0") from None
    if not (math.isfinite(q) and q >= 0):
        raise InvalidArgumentError(f"queue: got {value!r}, must be a finite number >= 0")
    return q
