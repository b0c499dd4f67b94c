"""Bandwidth allocation on the digital uplink (spec 04 §3): the allocation against its
optimality conditions (equal latencies, the whole band used) and against the exponential-cone
oracle in cvxpy, its inner loop against the public link functions, the latency floor as the
unlimited-bandwidth limit, the result it returns, and the errors a user can trigger. (The rate
function and its inverse: tests/fedopt/test_link.py.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedopt.errors import FedOptError, InfeasibleError, InvalidArgumentError
from fedopt.solvers.bandwidth import (
    BandwidthAllocation,
    allocate_min_latency,
    allocate_min_latency_cvxpy,
    bandwidth_for_deadline,
    dbandwidth_dtau,
    device_latency_s,
    latency_floor_s,
)
from fedopt.solvers.bandwidth.needs import BandNeeds
from fedopt.solvers.result import SolveResult, Status

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
@pytest.mark.parametrize("k", [1, 2, 7, 30])
def test_at_the_optimum_every_device_finishes_at_tau_and_the_band_is_used(rng, k):
    for _ in range(4):
        payload, compute, snr, total = _network(rng, k)
        out = allocate_min_latency(payload, compute, snr, total)
        assert out.status is Status.OPTIMAL
        res = out.solution
        # rel 1e-9 (the contract): the root is solved to rtol 1e-12, latencies follow within ~10×
        assert_allclose(res.device_latency_s, res.latency_s, rtol=1e-9)
        # rel 1e-13: the bands are scaled to the budget at the end, leaving rounding only
        assert res.bandwidth_hz.sum() == pytest.approx(total, rel=1e-13)
        assert np.all(res.bandwidth_hz > 0)
        assert res.latency_s > np.max(latency_floor_s(payload, compute, snr))
        # pinned: Newton on 1/Σ b_k(τ) from the model root needs a handful of evaluations of
        # Σ b_k(τ) (median 3, 1–13 over 3500 random instances of these magnitudes with K up to
        # 1000; the long tail is τ within ~1% of the floor, where the pole of b_k(τ) shifts)
        assert out.evaluations <= 12


def test_the_allocations_inner_loop_matches_the_public_functions(rng):
    """``BandNeeds`` (the allocation's inner loop: no checks, warm-started Newton instead of Lambert
    W) returns the bands of bandwidth_for_deadline and the slopes of dbandwidth_dtau along a
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
        need = BandNeeds(payload, compute, snr)
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
            assert_allclose(w, -dbandwidth_dtau(payload, tau - compute, ref, snr), rtol=1e-6)
        assert need.evals == taus.size


def test_the_optimal_deadline_is_the_root_of_the_public_band_sum(rng):
    # the fast path's τ makes Σ_k bandwidth_for_deadline(τ) = B_tot, from tight to ample bands
    for scale in (1e-2, 1.0, 1e2):
        for _ in range(3):
            payload, compute, snr, total = _network(rng, 25)
            payload[rng.random(25) < 0.2] = 0.0
            out = allocate_min_latency(payload, compute, snr, scale * total)
            res = out.solution
            band = bandwidth_for_deadline(payload, compute, snr, res.latency_s)
            if "unused" in out.message:  # a silent device's compute time sets τ
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
            fast = allocate_min_latency(payload, compute, snr, total).solution
            out = allocate_min_latency_cvxpy(payload, compute, snr, total)
            assert out.status is Status.OPTIMAL
            conic = out.solution
            # rel 1e-4 in τ: the conic solver's own tolerance (Clarabel reaches ~1e-8 here in
            # MHz/Mbit units); the bands are sharper near the floor, so compare them looser
            assert conic.latency_s == pytest.approx(fast.latency_s, rel=1e-4)
            assert_allclose(conic.bandwidth_hz, fast.bandwidth_hz, rtol=1e-2)


def test_latency_floor_is_the_unlimited_bandwidth_limit(rng):
    payload, compute, snr, _ = _network(rng, 8)
    floor = float(np.max(latency_floor_s(payload, compute, snr)))
    totals = snr.sum() * np.array([1e-2, 1.0, 1e2, 1e4, 1e6])
    taus = np.array([allocate_min_latency(payload, compute, snr, b).objective for b in totals])
    assert np.all(np.diff(taus) < 0) and np.all(taus > floor)
    # the excess over the floor shrinks like 1/B_tot once every band is far above its c_k
    excess = (taus - floor) / floor
    assert excess[-1] < 1e-6
    assert excess[-1] / excess[-2] == pytest.approx(1e-2, rel=0.05)  # rel 5%: O(1/B²) terms


def test_devices_without_payload_get_no_bandwidth(rng):
    payload, compute, snr, total = _network(rng, 5)
    payload[[1, 3]] = 0.0
    res = allocate_min_latency(payload, compute, snr, total).solution
    assert res.bandwidth_hz[1] == 0 and res.bandwidth_hz[3] == 0
    assert_allclose(res.device_latency_s[[0, 2, 4]], res.latency_s, rtol=1e-9)  # as above
    # a silent device whose compute outlasts everything sets τ; the others need less than B_tot
    compute[3] = 100.0
    out = allocate_min_latency(payload, compute, snr, total)
    res = out.solution
    # rel 1e-14: the others finish at τ up to the rounding of the inverse
    assert res.latency_s == pytest.approx(100.0, rel=1e-14) and res.bandwidth_hz.sum() < total
    assert "unused" in out.message and out.status is Status.OPTIMAL
    # nobody sends: the round is the longest compute time
    out = allocate_min_latency(np.zeros(5), compute, snr, total)
    res = out.solution
    assert res.latency_s == 100.0 and not res.bandwidth_hz.any()
    assert out.status is Status.OPTIMAL and out.evaluations == 0


def test_scalar_inputs_broadcast_to_devices():
    res = allocate_min_latency(1e6, [0.0, 0.1], 1e10, 2e6).solution
    assert res.bandwidth_hz.shape == (2,)
    assert res.bandwidth_hz[1] > res.bandwidth_hz[0]  # less time left, more band needed


def test_both_allocators_return_a_solve_result_with_the_min_max_latency(rng):
    """The SolveResult contract: ``objective`` is τ, the slowest device's latency recomputed
    from the returned bands; the status is what the solver knows (the root search solved to
    rtol, or the conic solver's verdict)."""
    payload, compute, snr, total = _network(rng, 12)
    for solve in (allocate_min_latency, allocate_min_latency_cvxpy):
        out = solve(payload, compute, snr, total)
        assert isinstance(out, SolveResult) and isinstance(out.solution, BandwidthAllocation)
        lat = device_latency_s(payload, compute, snr, out.solution.bandwidth_hz)
        # rel 1e-12: the same formula on the same bands, summed in another order
        assert out.objective == out.solution.latency_s == pytest.approx(np.max(lat), rel=1e-12)
        assert out.status is Status.OPTIMAL and out.success and out.evaluations >= 1
        assert out.wall_time_s > 0
    best = allocate_min_latency(payload, compute, snr, total)
    assert best.evaluations == best.iterations and best.options["rtol"] == 1e-12


def test_a_spent_budget_reports_max_iterations_with_a_feasible_split(rng):
    """One evaluation of Σ_k b_k(τ) cannot close the bracket: status MAX_ITERATIONS, and the
    bands are still a feasible split (Σ b_k = B_tot), so τ is no better than the optimum."""
    for k in (5, 40):
        payload, compute, snr, total = _network(rng, k)
        best = allocate_min_latency(payload, compute, snr, total)
        short = allocate_min_latency(payload, compute, snr, total, max_iterations=1)
        assert best.status is Status.OPTIMAL
        assert short.status is Status.MAX_ITERATIONS and "max_iterations" in short.message
        assert short.success  # a solution is present
        # rel 1e-13: the bands are rescaled to B_tot, rounding only
        assert short.solution.bandwidth_hz.sum() == pytest.approx(total, rel=1e-13)
        assert short.objective >= best.objective * (1 - 1e-12)  # round-off of τ only


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
    res = allocate_min_latency([1e6, 1e6, 0.0], 0.0, [1e9, 1e9, 0.0], 1e6).solution
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
