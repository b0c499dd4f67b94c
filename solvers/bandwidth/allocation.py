"""What a bandwidth allocation is, the checks of its inputs and the :class:`SolveResult` that
both allocators return (spec 04 §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.link import device_latency_s
from fedopt.solvers.result import SolveResult, SolverRun, Status

__all__ = ["BandwidthAllocation", "check_inputs", "allocation_result"]


@dataclass(frozen=True, eq=False)
class BandwidthAllocation:
    """A bandwidth allocation of the digital uplink and the round latency it gives: the
    ``solution`` of the :class:`~fedopt.solvers.result.SolveResult` of
    :func:`~fedopt.solvers.bandwidth.allocate_min_latency` and
    :func:`~fedopt.solvers.bandwidth.allocate_min_latency_cvxpy` (whose ``objective`` is
    ``latency_s`` and whose status, message, evaluations and wall time describe the solve).

    Attributes
    ----------
    bandwidth_hz : ndarray (K,)
        Band b_k of each device, Hz (Σ_k b_k = B_tot at the optimum).
    latency_s : float
        Round latency τ = max_k device latency, seconds.
    device_latency_s : ndarray (K,)
        T_cmp,k + S_k / R_k(b_k) of each device (T_cmp,k for a device with no payload).
    """

    bandwidth_hz: np.ndarray
    latency_s: float
    device_latency_s: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        return {"bandwidth_hz": [float(x) for x in self.bandwidth_hz],
                "latency_s": float(self.latency_s),
                "device_latency_s": [float(x) for x in self.device_latency_s]}


def _per_device(name: str, value: Any) -> np.ndarray:
    """One argument as a float array of at most one axis, every entry finite and ≥ 0."""
    try:
        x = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: expected numbers, got {value!r}") from None
    if x.ndim > 1:
        raise InvalidArgumentError(f"{name}: expected one value per device (shape (K,)), "
                                   f"got shape {x.shape}")
    # quick test first (NaN fails both comparisons); the mask only to name the device
    if x.size and not (x.min() >= 0.0 and x.max() < math.inf):
        bad = ~np.isfinite(x) | (x < 0)
        i = int(np.flatnonzero(bad.ravel())[0])
        raise InvalidArgumentError(
            f"{name}: device {i} has {x.ravel()[i]!r}; every entry must be finite and >= 0"
        )
    return x


def _total(total_hz: Any) -> float:
    try:
        total = float(total_hz)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"bandwidth_hz: expected a number, got {total_hz!r}") from None
    if math.isnan(total) or math.isinf(total):
        raise InvalidArgumentError(
            f"bandwidth_hz: got {total_hz!r}, must be a finite number of Hz (for unlimited "
            "bandwidth the latency is latency_floor_s)"
        )
    if total <= 0:
        raise InfeasibleError(
            f"bandwidth_hz: got B_tot = {total:g} Hz; the digital uplink needs a positive total "
            "bandwidth (set constraints.bandwidth_hz or the OFDM band M·Δf)"
        )
    return total


def check_inputs(payload_bits: Any, compute_s: Any, snr_hz: Any,
                 total_hz: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(S, T_cmp, c) as float arrays of shape (K,) (copies; scalars broadcast) and B_tot.

    Raises
    ------
    InvalidArgumentError
        Non-numbers, NaN, infinite or negative entries (naming the argument and the device),
        shapes that do not agree.
    InfeasibleError
        B_tot ≤ 0, or a device with c_k = 0 and a payload.
    """
    arrays = [_per_device(name, value) for name, value in
              (("payload_bits", payload_bits), ("compute_s", compute_s), ("snr_hz", snr_hz))]
    if arrays[0].ndim == 1 and arrays[0].shape == arrays[1].shape == arrays[2].shape:
        s, t, c = (a.astype(float) for a in arrays)  # already (K,): copies, no broadcast
    else:
        try:
            s, t, c = np.broadcast_arrays(*arrays)
        except ValueError:
            raise InvalidArgumentError(
                "payload_bits, compute_s, snr_hz: shapes "
                f"{[a.shape for a in arrays]} do not agree; pass one value per device (K,)"
            ) from None
        s, t, c = (np.atleast_1d(a).astype(float) for a in (s, t, c))
    total = _total(total_hz)
    dead = np.flatnonzero((c == 0) & (s > 0)) if c.size and not c.min() > 0.0 else ()
    if len(dead):
        k = int(dead[0])
        raise InfeasibleError(
            f"device {k}: snr_hz c_k = 0 with a payload of {s[k]:g} bits, so its latency floor is "
            "infinite (no bandwidth carries any rate); drop the device, give it a zero payload "
            "or check its channel and power"
        )
    return s, t, c, total


def allocation_result(run: SolverRun, b: np.ndarray, s: np.ndarray, t: np.ndarray,
                      c: np.ndarray, *, status: Status, message: str, evaluations: int,
                      iterations: int | None = None,
                      lat: np.ndarray | None = None) -> SolveResult:
    """The run's :class:`SolveResult`: solution a :class:`BandwidthAllocation` of bands ``b``,
    objective its latency; ``lat``: the device latencies if already computed (else
    :func:`~fedopt.link.device_latency_s`)."""
    if lat is None:
        lat = np.asarray(device_latency_s(s, t, c, b), dtype=float)
    lat = lat.reshape(s.shape)
    latency = float(np.max(lat))
    alloc = BandwidthAllocation(bandwidth_hz=np.asarray(b, dtype=float).reshape(s.shape),
                                latency_s=latency, device_latency_s=lat)
    return run.result(alloc, latency, status=status, message=message,
                      iterations=int(evaluations if iterations is None else iterations),
                      evaluations=int(evaluations))
