"""The rate of one digital (FDMA) link and its inverse (spec 01 §4–§5, spec 04 §3) [model].

Device k with SNR constant c_k = p_k g_k / N0 (Hz, :func:`fedopt.digital.snr_hz`) sends over
b_k Hz at R_k(b_k) = b_k log2(1 + c_k / b_k): increasing and concave in b_k, saturating at
c_k / ln 2. A payload of S_k bits after T_cmp,k seconds of compute then arrives at
T_cmp,k + S_k / R_k(b_k).

The smallest band that gives a rate R (:func:`min_bandwidth_hz`) has a closed form with the
Lambert W function: with a = R ln 2 / c ∈ (0, 1) and x = c / b, R(b) = R reads ln(1 + x) / x = a,
whose positive root is u = 1 + x = −W₋₁(−a e^{−a}) / a. Near the branch point (a → 1) the series
x = 2δ + 8δ²/3 + 28δ³/9 in δ = 1 − a starts the Newton polish instead. For a deadline τ device k
needs b_k(τ) = min_bandwidth_hz(S_k / (τ − T_cmp,k), c_k) (:func:`bandwidth_for_deadline`),
decreasing and convex in τ, with slope :func:`dbandwidth_dtau`.

The min-max bandwidth allocation built on these lives in :mod:`fedopt.solvers.bandwidth`. The
kernels :func:`lambert_start`, :func:`psi_series`, :func:`phi_series`, :func:`phi` and
:data:`SERIES_X` are shared with its inner loop (not part of ``__all__``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = [
    "LN2",
    "rate_bps",
    "saturation_rate_bps",
    "min_bandwidth_hz",
    "bandwidth_for_deadline",
    "dbandwidth_dtau",
    "latency_floor_s",
    "device_latency_s",
]

LN2 = math.log(2.0)

#: Below this x = c / b (a = R ln2 / c within ~x/2 of 1) the Lambert W branch point makes W₋₁
#: inaccurate; the series x = 2δ + 8δ²/3 + … in δ = 1 − a is used as the start instead.
SERIES_DELTA = 1e-3
#: Below this x, ψ(x) = 1 − ln(1 + x)/x and φ(x) = ln(1 + x) − x/(1 + x) are summed as series
#: (their closed forms cancel catastrophically).
SERIES_X = 1e-2


# ---------------------------------------------------------------------------------------------
# The rate function
# ---------------------------------------------------------------------------------------------
def rate_bps(bandwidth_hz: Any, snr_hz: Any) -> Any:
    """R(b) = b log2(1 + c / b) in bit/s; 0 at b = 0, c / ln 2 at b = ∞; vectorized.

    Increasing and concave in b, saturating at :func:`saturation_rate_bps` (spec 01 §4).
    """
    b = np.asarray(bandwidth_hz, dtype=float)
    c = np.asarray(snr_hz, dtype=float)
    b, c = np.broadcast_arrays(b, c)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = b * np.log1p(c / b) / LN2
    out = np.where((b == 0) | (c == 0), 0.0, out)
    out = np.where(np.isinf(b) & (c > 0), c / LN2, out)
    return float(out) if out.ndim == 0 else out


def saturation_rate_bps(snr_hz: Any) -> Any:
    """lim_{b→∞} R(b) = c / ln 2, the rate no bandwidth exceeds."""
    out = np.asarray(snr_hz, dtype=float) / LN2
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# Numerical kernels (shared with the allocation's inner loop)
# ---------------------------------------------------------------------------------------------
def psi_series(x: np.ndarray) -> np.ndarray:
    """ψ(x) = 1 − ln(1 + x)/x = Σ_{n≥1} (−1)^{n+1} x^n / (n + 1), for x < 1e-2 (rel. 1e-17)."""
    out = np.zeros_like(x)
    for n in range(10, 0, -1):  # Horner
        out = x * ((1.0 if n % 2 else -1.0) / (n + 1) + out)
    return out


def phi_series(x: np.ndarray) -> np.ndarray:
    """φ(x) = Σ_{n≥2} (−1)^n (n − 1)/n x^n, for x < 1e-2 (rel. 1e-17)."""
    out = np.zeros_like(x)
    for n in range(11, 1, -1):
        out = x * ((1.0 if n % 2 == 0 else -1.0) * (n - 1) / n + out)
    return x * out


def phi(x: np.ndarray) -> np.ndarray:
    """φ(x) = ln(1 + x) − x/(1 + x) > 0 (so that d/db R(b) = φ(c/b) / ln 2), accurate for all x
    (the closed form cancels for small x, where the series is used); x an array."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = np.log1p(x) - x / (1.0 + x)
    small = x < SERIES_X
    if small.any():
        out[small] = phi_series(x[small])
    return out


def lambert_start(a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Start for the root x > 0 of ln(1 + x)/x = a, a ∈ (0, 1), δ = 1 − a: the Lambert W
    closed form x = −W₋₁(−a e^{−a}) / a − 1 (a few ulps), or near the branch point a → 1 the
    inverse series of δ = x/2 − x²/3 + x³/4 − … (error O(δ⁴)). Call under ``np.errstate``."""
    from scipy.special import lambertw  # lazy: scipy costs ~0.2 s of `fedopt --help`

    w = lambertw(-a * np.exp(-a), -1).real
    x = (-w - a) / a  # u − 1 with u = −W₋₁(−a e^{−a}) / a
    near = (delta < SERIES_DELTA) | ~np.isfinite(x) | (x <= 0)
    if near.any():
        d = delta[near]
        x[near] = d * (2.0 + d * (8.0 / 3.0 + d * (28.0 / 9.0)))
    return x


def _solve_x(a: np.ndarray) -> np.ndarray:
    """The root x > 0 of ln(1 + x)/x = a for a ∈ (0, 1): Lambert W start + Newton polish."""
    delta = 1.0 - a
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        x = lambert_start(a, delta)
        # two Newton steps on ψ(x) = δ: the start is good to ~1e-9 relative (series) or a few
        # ulps (W), and Newton squares the error
        for _ in range(2):
            # the residual is evaluated where it is accurate: a − ln(1 + x)/x (never
            # 1 − ln(1 + x)/x − δ, which cancels when a → 0), the series ψ(x) − δ for small x
            resid = a - np.log1p(x) / x
            small = x < SERIES_X
            if small.any():
                resid[small] = psi_series(x[small]) - delta[small]
            # ψ'(x) = φ(x)/x², so the step is resid x² / φ(x), written to avoid x² overflow
            x_new = x - x * (resid * x / phi(x))
            x = np.where(np.isfinite(x_new) & (x_new > 0), x_new, 0.5 * x)
    return x


# ---------------------------------------------------------------------------------------------
# The inverse: bands for rates and deadlines
# ---------------------------------------------------------------------------------------------
def min_bandwidth_hz(rate_bps: Any, snr_hz: Any) -> Any:
    """Smallest b with b log2(1 + c/b) ≥ R (spec 04 §3), in closed form; vectorized.

    With a = R ln 2 / c ∈ (0, 1) and u = −W₋₁(−a e^{−a}) / a, b = c / (u − 1). The Lambert W
    value is polished by Newton steps on ln(1 + x)/x = a in x = c/b (near a → 1 W₋₁ sits at its
    branch point and the series x = 2δ + 8δ²/3 + 28δ³/9, δ = 1 − a, starts the polish instead),
    so that R(b) = R to ~1e-15 relative.

    Returns
    -------
    float or ndarray
        0 where R ≤ 0; +inf where R ≥ c / ln 2 (beyond saturation) or c = 0 (and R > 0).
    """
    r = np.asarray(rate_bps, dtype=float)
    c = np.asarray(snr_hz, dtype=float)
    r, c = np.broadcast_arrays(r, c)
    out = np.zeros(r.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = r * LN2 / c
    need = r > 0
    inf = need & ~(a < 1.0)  # also catches c = 0 (a = inf) and NaN
    solve = need & ~inf
    out[inf] = np.inf
    if np.any(solve):
        x = _solve_x(a[solve])
        out[solve] = c[solve] / x
    return float(out) if out.ndim == 0 else out


def bandwidth_for_deadline(payload_bits: Any, compute_s: Any, snr_hz: Any, deadline_s: Any) -> Any:
    """b_k(τ) = min_bandwidth_hz(S_k / (τ − T_cmp,k), c_k), the band device k needs to finish
    its round by τ (spec 04 §3); vectorized, broadcasting over leading axes (shape (..., K)).

    Returns +inf where τ < T_cmp,k (no bandwidth makes up for compute), where τ = T_cmp,k and
    S_k > 0, or where the rate exceeds the saturation c_k / ln 2; 0 where S_k = 0 and τ ≥ T_cmp,k.

    Raises
    ------
    InvalidArgumentError
        NaN in any argument.
    """
    s = np.asarray(payload_bits, dtype=float)
    t = np.asarray(compute_s, dtype=float)
    c = np.asarray(snr_hz, dtype=float)
    tau = np.asarray(deadline_s, dtype=float)
    if np.isnan(s).any() or np.isnan(t).any() or np.isnan(c).any() or np.isnan(tau).any():
        raise InvalidArgumentError("bandwidth_for_deadline: NaN in payload_bits, compute_s, "
                                   "snr_hz or deadline_s")
    s, t, c, tau = np.broadcast_arrays(s, t, c, tau)
    slack = tau - t
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(s > 0, s / slack, 0.0)
    rate = np.where((s > 0) & (slack <= 0), np.inf, rate)
    out = np.asarray(min_bandwidth_hz(rate, c), dtype=float)
    out = np.where(slack < 0, np.inf, out)
    return float(out) if out.ndim == 0 else out


def dbandwidth_dtau(payload_bits: np.ndarray, slack_s: np.ndarray, bandwidth_hz: np.ndarray,
                    snr_hz: np.ndarray) -> np.ndarray:
    """d b_k / dτ = −(ρ_k / (τ − T_cmp,k)) · ln 2 / φ(c_k / b_k), with ρ_k = S_k / (τ − T_cmp,k)
    and b_k = b_k(τ) (:func:`bandwidth_for_deadline`); 0 for a device without payload.

    Arrays (broadcast together); ``slack_s`` is τ − T_cmp,k. Non-finite where b_k(τ) is.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rate = payload_bits / slack_s
        out = -(rate / slack_s) * LN2 / phi(snr_hz / bandwidth_hz)
    return np.where(payload_bits > 0, out, 0.0)


# ---------------------------------------------------------------------------------------------
# Latencies
# ---------------------------------------------------------------------------------------------
def latency_floor_s(payload_bits: Any, compute_s: Any, snr_hz: Any) -> Any:
    """T_cmp,k + S_k ln 2 / c_k: the latency with unlimited bandwidth (+inf if c_k = 0 < S_k)."""
    s = np.asarray(payload_bits, dtype=float)
    t = np.asarray(compute_s, dtype=float)
    c = np.asarray(snr_hz, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = t + np.where(s > 0, s * LN2 / c, 0.0)
    return float(out) if out.ndim == 0 else out


def device_latency_s(payload_bits: Any, compute_s: Any, snr_hz: Any, bandwidth_hz: Any) -> Any:
    """T_cmp,k + S_k / R_k(b_k) (spec 01 §5); +inf for a payload with no rate, T_cmp,k if S = 0."""
    s = np.asarray(payload_bits, dtype=float)
    t = np.asarray(compute_s, dtype=float)
    r = np.asarray(rate_bps(bandwidth_hz, snr_hz), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = t + np.where(s > 0, s / r, 0.0)
    return float(out) if out.ndim == 0 else out
