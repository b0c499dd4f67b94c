"""The digital (FDMA) uplink used by SOFT/TSFA (spec 01 §4, §5) [model].

Device k is given a band of b_k Hz (Σ_k b_k ≤ B_tot) and sends its payload at the Shannon rate

    R_k(b_k) = b_k log2(1 + c_k / b_k),      c_k = p_k g_k / N0   (Hz),

which is increasing and concave in b_k and saturates at c_k / ln 2 as b_k → ∞. This module holds
the physics of that link: how c_k and the payload S_k follow from an instance and a channel, and
(re-exported from :mod:`fedopt.link`) the rate, its Lambert-W inverse and the latencies; the
bandwidth allocation itself lives in :mod:`fedopt.solvers.bandwidth`.

Modelling choices (documented here once, used everywhere):

* **Power.** p_k is the device's full power budget ``instance.power_w`` (in FDMA the device
  concentrates its whole power in its own band, unlike AirComp's split over M subcarriers).
* **Gain.** g_k = (1 / (M N_t)) Σ_m ‖H_{k,m}‖_F², path loss included. The device has no channel
  state, spreads p_k evenly over its N_t antennas (p_k / N_t each) and the server combines the
  N_r receive antennas coherently (maximum-ratio), so the receive SNR on subcarrier m is
  (p_k / N_t) ‖H_{k,m}‖_F² / (N0 b_k); the FDMA band of a device is a slice of the OFDM band
  whose exact position is not modelled, so the gain is averaged over the M subcarriers. For
  i.i.d. Rayleigh fading E[g_k] = N_r β_k (receive array gain N_r, no transmit gain).
* **Noise.** N0 = noise PSD × noise figure, in W/Hz (``server.noise_psd_dbm_hz``,
  ``server.noise_figure_db``), read off the instance's own σ² = N0 · Δf · NF
  (``Instance.noise_power_w``), so that the formula lives in one place.
* **Payload.** Rank-granular sparsification keeps m of the r rank-1 components of every adapted
  layer and sends them with a mask of r bits: S = m · q(1) · bits + r, with q(1) =
  ``instance.lora.params_per_rank`` (spec 01 §2, which factors travel included).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.channel import Channel, validate_channel_array
from fedopt.errors import InvalidArgumentError
from fedopt.instance import Instance
from fedopt.link import (
    bandwidth_for_deadline,
    device_latency_s,
    latency_floor_s,
    min_bandwidth_hz,
    rate_bps,
    saturation_rate_bps,
)

__all__ = ["noise_psd_w_hz", "channel_gain", "snr_hz", "payload_bits", "kept_components",
           # the link's rate and latency functions (fedopt.link)
           "rate_bps", "saturation_rate_bps", "min_bandwidth_hz", "bandwidth_for_deadline",
           "latency_floor_s", "device_latency_s"]

#: Relative slack when rounding (1 − ρ) r up to an integer: ρ = 1/3 with r = 3 gives
#: (1 − ρ) r = 2.0000000000000004 in floating point, which must count as 2, not 3.
_CEIL_SLACK = 1e-9


def noise_psd_w_hz(instance: Instance) -> float:
    """N0 · NF in W/Hz: the server's noise PSD (dBm/Hz) times its noise figure (linear).

    The instance's per-subcarrier noise power σ² = N0 · Δf · NF (``Instance.noise_power_w``)
    divided by the subcarrier spacing Δf: one derivation of N0 · NF for AirComp and the digital
    uplink alike (equal to the direct product up to two roundings).
    """
    return float(instance.noise_power_w) / float(instance.ofdm.subcarrier_spacing_hz)


def channel_gain(instance: Instance, channel: Channel | np.ndarray) -> np.ndarray:
    """g_k = (1 / (M N_t)) Σ_m ‖H_{k,m}‖_F², shape (K,) (see the module notes).

    Parameters
    ----------
    instance
        Gives K, M, N_r, N_t (the channel's shape is checked against it).
    channel
        A :class:`~fedopt.channel.Channel` or an array H of shape (K, M, N_r, N_t).
    """
    h = channel.H if isinstance(channel, Channel) else channel
    h = validate_channel_array(h, instance, name="channel")
    k, m, _, nt = h.shape
    return np.sum(h.real**2 + h.imag**2, axis=(1, 2, 3)) / (m * nt)


def snr_hz(instance: Instance, channel: Channel | np.ndarray) -> np.ndarray:
    """c_k = p_k g_k / N0 in Hz, shape (K,) (spec 01 §4).

    The received SNR in a band of b Hz is c_k / b, so the rate is b log2(1 + c_k / b) and its
    limit as b → ∞ is c_k / ln 2. p_k is the full device power, g_k the per-transmit-antenna
    receive-combining gain averaged over subcarriers and N0 includes the noise figure (see the
    module notes for why).
    """
    return np.asarray(instance.power_w, dtype=float) * channel_gain(instance, channel) / (
        noise_psd_w_hz(instance))


def kept_components(rank: Any, sparsity: Any) -> Any:
    """m = ⌈(1 − ρ) r⌉, the rank-1 components kept at sparsity ρ (spec 04 §4); vectorized.

    Floating-point round-off is forgiven: (1 − ρ) r within a relative 1e-9 of an integer counts
    as that integer (ρ = 1/3, r = 3 gives 2). For ρ < 1 at least one component is kept.

    Parameters
    ----------
    rank
        r ≥ 1, integer (array-like).
    sparsity
        ρ ∈ [0, 1), the fraction of components dropped (array-like, broadcast with ``rank``).

    Returns
    -------
    int or ndarray of int
        m ∈ 1..r, an ``int`` when both inputs are scalars.

    Raises
    ------
    InvalidArgumentError
        If a rank is not an integer ≥ 1 or a sparsity is outside [0, 1) or NaN.
    """
    r = _ranks(rank, "rank")
    rho = np.asarray(sparsity, dtype=float)
    bad = ~((rho >= 0.0) & (rho < 1.0))
    if np.any(bad):
        raise InvalidArgumentError(
            f"sparsity: got ρ = {rho[bad].flat[0]!r}, must lie in [0, 1) (ρ = 0 keeps every "
            "component; ρ → 1 keeps one)"
        )
    x = (1.0 - rho) * r
    nearest = np.rint(x)
    m = np.where(np.abs(x - nearest) <= _CEIL_SLACK * np.maximum(r, 1), nearest, np.ceil(x))
    m = np.clip(m, 1, r).astype(np.int64)
    return int(m) if m.ndim == 0 else m


def payload_bits(instance: Instance, rank: Any, kept: Any) -> Any:
    """S = m · q(1) · bits + r, the bits of one device's upload (spec 01 §4); vectorized.

    Parameters
    ----------
    instance
        Gives q(1) = ``lora.params_per_rank`` (times ``digital_payloads``: over-the-air
        Sophia sends m and h) and ``lora.bits_per_param``.
    rank
        LoRA rank r ≥ 1 (sets the r-bit component mask).
    kept
        Components kept, m ∈ 0..r (array-like, broadcast with ``rank``).

    Returns
    -------
    float or ndarray of float
        Bits per round (a float when both inputs are scalars).
    """
    r = _ranks(rank, "rank")
    m = np.asarray(kept)
    if m.dtype.kind not in "iu" and not (
        m.dtype.kind == "f" and np.all(np.isfinite(m)) and np.all(m == np.round(m))
    ):
        raise InvalidArgumentError(f"kept: got {kept!r}, must be integers in 0..rank")
    if np.any(m < 0) or np.any(m > r):
        raise InvalidArgumentError(
            f"kept: got {kept!r} for rank {rank!r}, must be integers in 0..rank"
        )
    q1 = float(instance.lora.params_per_rank * instance.digital_payloads)
    bits = float(instance.lora.bits_per_param)
    out = m.astype(float) * (q1 * bits) + r.astype(float)
    return float(out) if out.ndim == 0 else out


def _ranks(rank: Any, name: str) -> np.ndarray:
    r = np.asarray(rank)
    if r.dtype.kind == "f" and np.all(np.isfinite(r)) and np.all(r == np.round(r)):
        r = r.astype(np.int64)
    if r.dtype.kind not in "iu" or r.dtype == bool or np.any(r < 1):
        raise InvalidArgumentError(f"{name}: got {rank!r}, must be integers >= 1")
    return r.astype(np.int64)
