"""The digital link (spec 01 §4–§5, spec 04 §3): the rate function and its Lambert-W inverse
against their definitions, the band needed for a deadline against the latency it gives, and its
slope against finite differences."""

from __future__ import annotations

import math

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.link import (
    bandwidth_for_deadline,
    dbandwidth_dtau,
    device_latency_s,
    latency_floor_s,
    min_bandwidth_hz,
    rate_bps,
    saturation_rate_bps,
)

LN2 = math.log(2.0)
N0_W_HZ = 10 ** (-20.4) * 10 ** 0.9  # −174 dBm/Hz with a 9 dB noise figure


def _network(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Realistic magnitudes: payloads 1e5–1e7 bits (log-uniform), compute 0–0.2 s, c_k from
    23 dBm over path losses of 80–120 dB with a 16-antenna receive gain."""
    payload = 10 ** rng.uniform(5, 7, k)
    compute = rng.uniform(0.0, 0.2, k)
    snr = 0.2 * 16 * 10 ** (-rng.uniform(80, 120, k) / 10) / N0_W_HZ
    return payload, compute, snr


# ------------------------------------------------------------------------------------------
# The rate and its inverse
# ------------------------------------------------------------------------------------------
def test_rate_is_increasing_concave_and_saturates():
    c = 3.7e9
    b = np.geomspace(1e2, 1e14, 400)
    r = rate_bps(b, c)
    assert np.all(np.diff(r) > 0)
    # concave: on a uniform grid the second differences are negative (rel 1e-12 of the values
    # guards the last few points, where R is flat to within rounding)
    lin = np.linspace(1e5, 1e10, 300)
    assert np.all(np.diff(rate_bps(lin, c), 2) < 1e-12 * c)
    assert np.all(r < saturation_rate_bps(c))
    # R(b) = (c/ln2)(1 − x/2 + O(x²)) with x = c/b: relative gap to saturation ≈ c / (2b)
    big = c * np.array([1e3, 1e6, 1e9])
    gap = 1 - rate_bps(big, c) / saturation_rate_bps(c)
    assert_allclose(gap, c / (2 * big), rtol=1e-3)  # rel 1e-3: the O(x²) term and rounding
    assert rate_bps(np.inf, c) == saturation_rate_bps(c) == c / LN2
    assert rate_bps(0.0, c) == 0.0 and rate_bps(1e6, 0.0) == 0.0


def test_min_bandwidth_inverts_the_rate_across_the_whole_range(rng):
    c = 10 ** rng.uniform(7, 13, 64)
    # a = R ln2 / c from deep below (a → 0, x = c/b huge) to the branch point (a → 1)
    a = np.concatenate([10.0 ** -np.arange(1, 15), 1 - 10.0 ** -np.arange(1, 15),
                        rng.uniform(0, 1, 36)])
    a = a[:64]
    rate = a * c / LN2
    b = min_bandwidth_hz(rate, c)
    assert np.all(np.isfinite(b)) and np.all(b > 0)
    # rel 1e-10 is the contract; the Newton-polished closed form reaches a few ulps
    assert_allclose(rate_bps(b, c), rate, rtol=1e-10)
    # and it is the smallest such band: a hair less falls short (R is increasing; checked
    # where R is not flat to rounding, i.e. away from saturation)
    away = a < 1 - 1e-3
    assert np.all(rate_bps(b[away] * (1 - 1e-7), c[away]) < rate[away])


def test_min_bandwidth_edges():
    c = 2e9
    assert min_bandwidth_hz(0.0, c) == 0.0 and min_bandwidth_hz(-5.0, c) == 0.0
    sat = saturation_rate_bps(c)
    assert min_bandwidth_hz(sat, c) == np.inf            # reached only as b → ∞
    assert min_bandwidth_hz(1.5 * sat, c) == np.inf      # beyond saturation
    assert min_bandwidth_hz(1e3, 0.0) == np.inf          # no SNR, no rate
    out = min_bandwidth_hz(np.array([[0.0, 0.5 * sat, 2 * sat]]), np.array([c, c, c]))
    assert out.shape == (1, 3) and out[0, 0] == 0 and np.isfinite(out[0, 1]) and out[0, 2] == np.inf


def test_bandwidth_for_deadline_meets_the_deadline_and_broadcasts(rng):
    payload, compute, snr = _network(rng, 6)
    tau = float(np.max(latency_floor_s(payload, compute, snr))) + 0.3
    b = bandwidth_for_deadline(payload, compute, snr, tau)
    # the device finishes exactly at τ (rel 1e-12: the inverse is accurate to a few ulps)
    assert_allclose(device_latency_s(payload, compute, snr, b), tau, rtol=1e-12)
    # candidate payloads on a leading axis: (3, K)
    cand = payload[None, :] * np.array([[0.0], [0.5], [1.0]])
    bb = bandwidth_for_deadline(cand, compute, snr, tau)
    assert bb.shape == (3, 6)
    assert_array_equal(bb[0], 0.0)
    assert_array_equal(bb[2], b)
    assert np.all(bb[1] < bb[2])
    # a deadline before the compute ends cannot be met with any bandwidth; nor one beyond the
    # saturation rate
    assert np.all(bandwidth_for_deadline(payload, compute, snr, compute - 1e-3) == np.inf)
    assert np.all(bandwidth_for_deadline(payload, compute, snr, compute) == np.inf)
    floor = latency_floor_s(payload, compute, snr)
    assert np.all(bandwidth_for_deadline(payload, compute, snr, floor * (1 - 1e-9)) == np.inf)
    assert bandwidth_for_deadline(0.0, 0.1, 1e9, 0.1) == 0.0


# ------------------------------------------------------------------------------------------
# The allocation


def test_bandwidth_slope_matches_finite_differences(rng):
    """d b_k/dτ of dbandwidth_dtau against central differences of bandwidth_for_deadline, from
    near the floor (steep) to far above it; 0 for a device without payload."""
    payload, compute, snr = _network(rng, 8)
    payload[3] = 0.0
    floor = latency_floor_s(payload, compute, snr)
    for excess in (1e-2, 1.0, 30.0):
        tau = float(np.max(floor)) * (1 + excess)
        h = 1e-6 * (tau - np.max(compute))
        b = bandwidth_for_deadline(payload, compute, snr, tau)
        fd = (bandwidth_for_deadline(payload, compute, snr, tau + h)
              - bandwidth_for_deadline(payload, compute, snr, tau - h)) / (2 * h)
        slope = dbandwidth_dtau(payload, tau - compute, b, snr)
        assert np.all(slope[payload > 0] < 0) and slope[3] == 0.0
        # rel 1e-5: the O(h²) truncation and the rounding of b over 2h
        assert_allclose(slope, fd, rtol=1e-5, atol=0.0)
