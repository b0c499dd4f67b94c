"""Bandwidth allocation on the digital (FDMA) uplink: minimize the round's latency (spec 04 §3).

Device k has payload S_k bits, compute time T_cmp,k and SNR constant c_k = p_k g_k / N0 (Hz,
:func:`fedopt.digital.snr_hz`); with b_k Hz it sends at R_k(b_k) = b_k log2(1 + c_k / b_k) (the
link physics: :mod:`fedopt.link`). The problem

    minimize  τ = max_k (T_cmp,k + S_k / R_k(b_k))   s.t.  Σ_k b_k ≤ B_tot,  b ≥ 0

is solved through its deadline form. For a deadline τ > T_cmp,k device k needs the rate
S_k / (τ − T_cmp,k), and the smallest band that gives it has a closed form with the Lambert W
function (:func:`fedopt.link.min_bandwidth_hz`). The total need Σ_k b_k(τ) is decreasing and
convex in τ (each b_k(τ) is the lower boundary of a convex set), so the optimal τ is the root of
Σ_k b_k(τ) = B_tot: :func:`allocate_min_latency` (:mod:`.minmax`) brackets it between the
latency floor max_k (T_cmp,k + S_k ln 2 / c_k) (infinite bandwidth) and the latency of the equal
split (feasible), starts from the root of a cheap model of Σ_k b_k(τ) built at the equal split,
and closes in with Newton steps on 1/Σ_k b_k(τ) = 1/B_tot (nearly linear: each b_k(τ) behaves
like 1/(τ − τ_k) near its floor and far from it) safeguarded by bisection. Its inner loop
(:class:`.needs.BandNeeds`) checks nothing and, instead of the Lambert W closed form, solves for
x = c/b by Newton warm-started from the previous τ (the same bands to ~1e-14). At the optimum
every device with a payload finishes exactly at τ.

Oracle: :func:`allocate_min_latency_cvxpy` (:mod:`.oracle`), the same problem as an
exponential-cone program. Both return a :class:`~fedopt.solvers.result.SolveResult` whose
``solution`` is a :class:`BandwidthAllocation` and whose ``objective`` is the latency τ.

The link functions (:func:`rate_bps`, :func:`min_bandwidth_hz`, :func:`bandwidth_for_deadline`,
...) live in :mod:`fedopt.link` and are re-exported here.
"""

from fedopt.link import (
    bandwidth_for_deadline,
    dbandwidth_dtau,
    device_latency_s,
    latency_floor_s,
    min_bandwidth_hz,
    rate_bps,
    saturation_rate_bps,
)
from fedopt.solvers.bandwidth.allocation import BandwidthAllocation
from fedopt.solvers.bandwidth.minmax import allocate_min_latency
from fedopt.solvers.bandwidth.oracle import allocate_min_latency_cvxpy

__all__ = [
    "rate_bps",
    "saturation_rate_bps",
    "min_bandwidth_hz",
    "bandwidth_for_deadline",
    "dbandwidth_dtau",
    "latency_floor_s",
    "device_latency_s",
    "BandwidthAllocation",
    "allocate_min_latency",
    "allocate_min_latency_cvxpy",
]
