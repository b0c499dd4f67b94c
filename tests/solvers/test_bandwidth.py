"""Bandwidth allocation on the digital uplink (spec 04 §3): the rate function and its Lambert-W
inverse against their definitions, the allocation against its optimality conditions (equal
latencies, the whole band used) and against the exponential-cone oracle in cvxpy, the latency
floor as the unlimited-bandwidth limit, and the errors a user can trigger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.errors import FedOptError, InfeasibleError, InvalidArgumentError
from fedopt.solvers.bandwidth import (
    BandwidthAllocation,
    _dbandwidth_dtau,
    _Needs,
    allocate_min_latency,
    allocate_min_latency_cvxpy,
    bandwidth_for_deadline,
    device_latency_s,
    latency_floor_s,
    min_bandwidth_hz,
    rate_bps,
    saturation_rate_bps,
)
from fedopt.solvers.result import Status

LN2 = math.log(2.0)
N0_W_HZ = 10 ** (-20.4) * 10 ** 0.9  # −174 dBm/Hz with a 9 dB noise figure


def _network(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Realistic magnitudes: payloads 1e5–1e7 bits (log-uniform), compute 0–0.2 s, c_k from
    23 dBm over path losses of 80–120 dB with a 16-antenna receive gain, B_tot 1–20 MHz."""
    payload = 10 ** rng.uniform(5, 7, k)
    compute = rng.uniform(0.0, 0.2, k)
    snr = 0.2 * 16 * 10 ** (-rng.uniform(80, 120, k) / 10) / N0_W_HZ
    total = float(rng.uniform(1e6, 2e7))
    return payload, compute, snr, total


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
    payload, compute, snr, _ = _network(rng, 6)
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
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 7, 30])
def test_at_the_optimum_every_device_finishes_at_tau_and_the_band_is_used(rng, k):
    for _ in range(4):
        payload, compute, snr, total = _network(rng, k)
        res = allocate_min_latency(payload, compute, snr, total)
        assert isinstance(res, BandwidthAllocation) and res.status is Status.OPTIMAL
        # rel 1e-9 (the contract): the root is solved to rtol 1e-12, latencies follow within ~10×
        assert_allclose(res.device_latency_s, res.latency_s, rtol=1e-9)
        # rel 1e-13: the bands are scaled to the budget at the end, leaving rounding only
        assert res.bandwidth_hz.sum() == pytest.approx(total, rel=1e-13)
        assert np.all(res.bandwidth_hz > 0)
        assert res.latency_s > np.max(latency_floor_s(payload, compute, snr))
        # pinned: Newton on 1/Σ b_k(τ) from the model root needs a handful of evaluations of
        # Σ b_k(τ) (median 3, 1–13 over 3500 random instances of these magnitudes with K up to
        # 1000; the long tail is τ within ~1% of the floor, where the pole of b_k(τ) shifts)
        assert res.iterations <= 12


def test_the_allocations_inner_loop_matches_the_public_functions(rng):
    """``_Needs`` (the allocation's inner loop: no checks, warm-started Newton instead of Lambert
    W) returns the bands of bandwidth_for_deadline and the slopes of _dbandwidth_dtau along a
    path of deadlines that jumps by factors of 4 and creeps by 1e-15, with devices from a → 0
    (x = c/b up to ~1e13) to the branch point (x ~ 1e-8 at the floor's device)."""
    payload, compute, snr, total = _network(rng, 40)
    payload[:4] = [1.0, 10.0, 1e3, 1e9]  # a far below 1 ... a payload that sets the floor
    floor = float(np.max(latency_floor_s(payload, compute, snr)))
    steps = np.array([3.0, 0.7, 2.8, 0.2, 0.21, 0.2100001, 0.2100001 * (1 + 1e-15), 1e-3,
                      1e-6, 1e-8, 1e-6, 5.0])
    taus = floor * (1 + steps)
    share = total / payload.size
    lg = np.log1p(snr / share)
    for seeded in (False, True):
        need = _Needs(payload, compute, snr)
        if seeded:
            need.seed(snr / share, lg)
        for tau in taus:
            with np.errstate(all="ignore"):
                b, b_sum, w = need(float(tau))
            ref = bandwidth_for_deadline(payload, compute, snr, tau)
            # rel 1e-12: both solve the same equation in a (computed bit for bit alike) to a few
            # ulps; the conditioning near a → 1 costs up to ~100 ulps
            assert_allclose(b, ref, rtol=1e-12)
            assert b_sum == pytest.approx(ref.sum(), rel=1e-12)
            # rel 1e-6: the slopes come from the last Newton step's start, within 1e-7 of the root
            assert_allclose(w, -_dbandwidth_dtau(payload, tau - compute, ref, snr), rtol=1e-6)
        assert need.evals == taus.size


def test_the_optimal_deadline_is_the_root_of_the_public_band_sum(rng):
    # the fast path's τ makes Σ_k bandwidth_for_deadline(τ) = B_tot, from tight to ample bands
    for scale in (1e-2, 1.0, 1e2):
        for _ in range(3):
            payload, compute, snr, total = _network(rng, 25)
            payload[rng.random(25) < 0.2] = 0.0
            res = allocate_min_latency(payload, compute, snr, scale * total)
            band = bandwidth_for_deadline(payload, compute, snr, res.latency_s)
            if "unused" in res.message:  # a silent device's compute time sets τ
                assert band.sum() < scale * total
                assert_allclose(res.bandwidth_hz, band, rtol=1e-12)
                continue
            # rel 1e-9: Σ b(τ) is steep in τ near the floor (d ln Σb / d ln τ up to ~1e3 here)
            assert band.sum() == pytest.approx(scale * total, rel=1e-9)
            assert_allclose(res.bandwidth_hz, band, rtol=1e-8, atol=0.0)


def test_agrees_with_the_exponential_cone_oracle(rng):
    for k in (3, 10, 30):
        for _ in range(2):
            payload, compute, snr, total = _network(rng, k)
            fast = allocate_min_latency(payload, compute, snr, total)
            conic = allocate_min_latency_cvxpy(payload, compute, snr, total)
            assert conic.status is Status.OPTIMAL
            # rel 1e-4 in τ: the conic solver's own tolerance (Clarabel reaches ~1e-8 here in
            # MHz/Mbit units); the bands are sharper near the floor, so compare them looser
            assert conic.latency_s == pytest.approx(fast.latency_s, rel=1e-4)
            assert_allclose(conic.bandwidth_hz, fast.bandwidth_hz, rtol=1e-2)


def test_latency_floor_is_the_unlimited_bandwidth_limit(rng):
    payload, compute, snr, _ = _network(rng, 8)
    floor = float(np.max(latency_floor_s(payload, compute, snr)))
    totals = snr.sum() * np.array([1e-2, 1.0, 1e2, 1e4, 1e6])
    taus = np.array([allocate_min_latency(payload, compute, snr, b).latency_s for b in totals])
    assert np.all(np.diff(taus) < 0) and np.all(taus > floor)
    # the excess over the floor shrinks like 1/B_tot once every band is far above its c_k
    excess = (taus - floor) / floor
    assert excess[-1] < 1e-6
    assert excess[-1] / excess[-2] == pytest.approx(1e-2, rel=0.05)  # rel 5%: O(1/B²) terms


def test_devices_without_payload_get_no_bandwidth(rng):
    payload, compute, snr, total = _network(rng, 5)
    payload[[1, 3]] = 0.0
    res = allocate_min_latency(payload, compute, snr, total)
    assert res.bandwidth_hz[1] == 0 and res.bandwidth_hz[3] == 0
    assert_allclose(res.device_latency_s[[0, 2, 4]], res.latency_s, rtol=1e-9)  # as above
    # a silent device whose compute outlasts everything sets τ; the others need less than B_tot
    compute[3] = 100.0
    res = allocate_min_latency(payload, compute, snr, total)
    # rel 1e-14: the others finish at τ up to the rounding of the inverse
    assert res.latency_s == pytest.approx(100.0, rel=1e-14) and res.bandwidth_hz.sum() < total
    assert "unused" in res.message
    # nobody sends: the round is the longest compute time
    res = allocate_min_latency(np.zeros(5), compute, snr, total)
    assert res.latency_s == 100.0 and not res.bandwidth_hz.any()


def test_scalar_inputs_broadcast_to_devices():
    res = allocate_min_latency(1e6, [0.0, 0.1], 1e10, 2e6)
    assert res.bandwidth_hz.shape == (2,)
    assert res.bandwidth_hz[1] > res.bandwidth_hz[0]  # less time left, more band needed


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------
def test_zero_total_bandwidth_is_infeasible():
    for total in (0.0, -1e6):
        with pytest.raises(InfeasibleError, match="bandwidth_hz") as err:
            allocate_min_latency([1e6, 1e6], [0.0, 0.0], [1e9, 1e9], total)
        assert f"{total:g}" in str(err.value)


def test_zero_gain_device_is_named():
    with pytest.raises(InfeasibleError, match=r"device 2.*infinite") as err:
        allocate_min_latency([1e6, 1e6, 1e6], 0.0, [1e9, 1e9, 0.0], 1e6)
    assert isinstance(err.value, FedOptError)
    # with nothing to send the device is harmless
    res = allocate_min_latency([1e6, 1e6, 0.0], 0.0, [1e9, 1e9, 0.0], 1e6)
    assert res.bandwidth_hz[2] == 0.0
    with pytest.raises(InfeasibleError, match="device 0"):
        allocate_min_latency_cvxpy([1e6], 0.0, [0.0], 1e6)


@pytest.mark.parametrize("field, args", [
    ("payload_bits", ([1e6, np.nan], 0.0, 1e9, 1e6)),
    ("compute_s", ([1e6, 1e6], [0.0, -0.1], 1e9, 1e6)),
    ("snr_hz", ([1e6, 1e6], 0.0, [1e9, np.inf], 1e6)),
    ("bandwidth_hz", ([1e6, 1e6], 0.0, 1e9, np.nan)),
])
def test_bad_numbers_name_the_argument(field, args):
    with pytest.raises(InvalidArgumentError, match=field):
        allocate_min_latency(*args)
    with pytest.raises(InvalidArgumentError, match=field):
        allocate_min_latency_cvxpy(*args)
