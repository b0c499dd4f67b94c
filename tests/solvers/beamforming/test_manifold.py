"""Manifold receive beamforming (spec 04 §1) against the oracles of spec 02 §6.

Oracles: the single-device closed form (§6.7), orthogonal and collinear single-antenna channels
(§6.5, §6.6), lower bounds and the SDR (§6.9), monotonicity (§6.8) and invariances (§6.4); the
derivative checks of §6.10 are in test_cost.py. Every solve goes through the public entry point
``solve_beamforming(problem, "beamforming", rng=...)``.

Independent draws are stacked on the subcarrier axis M of one problem: the solver is batched
over subcarriers, so one call checks several draws. Problems use realistic magnitudes
(|h|² ~ 1e-9 .. 1e-10, P ~ 10 mW, σ² = 1e-15 W) so the per-column normalization inside the
solver is exercised; every comparison is relative.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from bf_testing import SIGMA2, random_problem
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.beamforming.bounds import best_bound, single_device_bound
from fedopt.solvers.beamforming.manifold import ManifoldOptions
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.result import Status

SOLVER_SEED = 1
# Oracle values from closed forms: the solver's polish stops when the prox-linear model predicts
# a decrease below 1e-9 in log f, and values within ~3e-9 of the optimum are seen; 1e-6 is the
# spec's tolerance (§6.7) and leaves a margin of ~300x.
RTOL_OPT = 1e-6
# Lower bounds are closed forms (SVD/eigendecomposition of the channel) or dual-certified; a
# certified solver value meets them up to float64 rounding (~1e-15 seen), so 1e-9 is ample.
RTOL_BOUND = 1e-9


_problem = random_problem


def _subset(problem, devices=None, rx=None):
    """The problem restricted to some devices and/or the first ``rx`` receive antennas."""
    devices = slice(None) if devices is None else devices
    h = problem.H[devices]
    if rx is not None:
        h = h[:, :, :rx]
    return BeamformingProblem(
        H=h,
        phi=problem.phi[devices],
        p_sub=problem.p_sub[devices],
        sigma2=problem.sigma2,
        streams=problem.streams,
    )


def _solve(problem, **options):
    return solve_beamforming(problem, "beamforming", rng=SOLVER_SEED, **options)


def _cn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# closed forms (spec 02 §6.5–§6.7)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_single_device_reaches_the_closed_form(rng, streams):
    # §6.7: K = 1, f* = σ² c (Σ_{l≤L} λ_l^{-1/2})², λ_l the top-L eigenvalues of G = H H^H.
    # The orthonormal (Grassmann) value σ² c L Σ λ_l^{-1} is strictly larger for L > 1, so this
    # fails if the solver restricts A to orthonormal columns.
    p = _problem(rng, 1, 6, 5, 3, streams)  # six independent draws on the M axis
    lam = np.linalg.eigvalsh(p.gram()[0])[:, ::-1][:, :streams]  # via G, not the solver's SVD
    expected = SIGMA2 * p.weights()[0] * np.sum(lam**-0.5, axis=-1) ** 2
    res = _solve(p)
    assert_allclose(res.objective_per_subcarrier, expected, rtol=RTOL_OPT)
    assert res.status is Status.OPTIMAL  # certified by the single-device bound
    assert_allclose(np.linalg.norm(res.solution, axis=(1, 2)), 1.0, rtol=1e-12)  # rounding
    if streams > 1:  # the oracle discriminates: orthonormal columns miss it on some draw
        grassmann = SIGMA2 * p.weights()[0] * streams * np.sum(1.0 / lam, axis=-1)
        assert np.any(grassmann > expected * (1 + 1e-3))


@pytest.mark.parametrize("k", [3, 5, 6])
def test_orthogonal_single_antenna_channels(rng, k):
    # §6.5: h_k = g_k q_k with orthonormal q_k, common budget P: f* = σ² Σ_k φ_k²/(P ‖h_k‖²),
    # every device ties at the optimum. Centroid and MRC starts are exactly orthogonal to some
    # devices here (f = +inf there), which the solver must survive. K = N_r = 6: a full basis.
    nr, m, power = 6, 4, 0.01
    bases = [np.linalg.qr(_cn(rng, nr, nr))[0][:, :k].T for _ in range(m)]  # (K, N_r) each
    gains = np.sqrt(1e-9 * 10.0 ** (-rng.uniform(0, 2, (k, m))))
    h = (gains[:, :, None] * np.stack(bases, axis=1))[..., None]  # (K, M, N_r, 1)
    phi = rng.uniform(0.5, 2.0, k)
    p = BeamformingProblem(H=h, phi=phi, p_sub=np.full((k, m), power), sigma2=SIGMA2, streams=1)
    expected = SIGMA2 * np.sum(phi[:, None] ** 2 / (power * gains**2), axis=0)
    res = _solve(p)
    assert_allclose(res.objective_per_subcarrier, expected, rtol=RTOL_OPT)


def test_collinear_channels(rng):
    # §6.6: h_k = γ_k h ⇒ f* = σ² max_k φ_k² / (P_k |γ_k|² ‖h‖²) (a ∝ h serves all devices)
    k, nr, m = 6, 5, 4
    base = _cn(rng, m, nr) * np.sqrt(1e-9)
    gamma = _cn(rng, k, m) * 10.0 ** (-rng.uniform(0, 1, (k, m)))
    h = (gamma[:, :, None] * base[None])[..., None]
    phi = rng.uniform(0.5, 2.0, k)
    power = rng.uniform(0.005, 0.02, (k, m))
    p = BeamformingProblem(H=h, phi=phi, p_sub=power, sigma2=SIGMA2, streams=1)
    norm2 = np.sum(np.abs(base) ** 2, axis=-1)
    expected = SIGMA2 * np.max(phi[:, None] ** 2 / (power * np.abs(gamma) ** 2 * norm2), axis=0)
    res = _solve(p)
    assert_allclose(res.objective_per_subcarrier, expected, rtol=RTOL_OPT)


# ---------------------------------------------------------------------------------------------
# bounds and the SDR (spec 02 §6.9)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,nt,streams", [(1, 2, 2), (4, 1, 1), (5, 2, 2), (8, 3, 2), (3, 3, 3)])
def test_bound_is_below_the_value(rng, k, nt, streams):
    p = _problem(rng, k, 4, 5, nt, streams, spread_db=10.0)
    res = _solve(p)
    bound = best_bound(p)
    assert_allclose(res.bound_per_subcarrier, bound, rtol=1e-12)  # same closed form
    assert np.all(res.objective_per_subcarrier >= bound * (1 - RTOL_BOUND))
    # the report re-evaluates f at the returned A, and sums it: rounding only
    assert_allclose(res.objective_per_subcarrier, p.objective(res.solution), rtol=1e-12)
    assert_allclose(res.objective, res.objective_per_subcarrier.sum(), rtol=1e-12)
    assert res.ratio is not None and res.ratio >= 1 - RTOL_BOUND


@pytest.mark.parametrize("k,nt", [(2, 1), (3, 1), (3, 2)])
def test_matches_the_sdr_for_at_most_three_devices(rng, k, nt):
    # K ≤ 3, L = 1: the SDR is tight (rank one), so v_SDR = f*. Equal path loss and weights so
    # that v_SDR lies above the single-device bound (a non-trivial comparison).
    # Even here the landscape of f has local minima: a default run (centroid, MRC, one random
    # start) lands 0.1–6 % above v_SDR on about one subcarrier in 400 (seen over 40 seeds), so
    # the check uses 10 random restarts (spec 04 §1), as the next test does.
    p = _problem(rng, k, 6, 5, nt, 1, equal_power=True, phi=np.ones(k))
    sdr = solve_beamforming(p, "sdr", rng=SOLVER_SEED, randomizations=20)
    v_sdr = sdr.bound_per_subcarrier  # dual-certified SDR value (max with the closed forms)
    assert np.any(v_sdr > single_device_bound(p) * (1 + 1e-3))
    ours = _solve(p, n_random=10).objective_per_subcarrier
    # 1e-4: the brief's tolerance; v_SDR carries the conic solver's ~1e-8 accuracy and ours the
    # polish tolerance (≤ 6e-9 seen)
    assert_allclose(ours, v_sdr, rtol=1e-4)
    assert np.all(ours >= v_sdr * (1 - RTOL_BOUND))  # v_SDR is a certified lower bound


def test_not_worse_than_sdr_randomization_for_many_devices(rng):
    # K = 5..10 > 3: the SDR is not tight and 200 Gaussian randomizations are the baseline.
    # The minimax landscape has local minima: with the default single random start a run lands
    # ~4.5 % above SDR + randomization on about one subcarrier in 300 (K = 5, N_r = 6), which more
    # restarts remove (spec 04 §1: random restarts, keep the best); 10 are used here.
    for k in (5, 7, 10):
        p = _problem(rng, k, 6, 5, 1, 1, spread_db=5.0)
        sdr = solve_beamforming(p, "sdr", rng=SOLVER_SEED)
        ours = _solve(p, n_random=10)
        # 1e-6: ties where the randomization also finds the optimum (gaps ≤ 2e-7 seen, the polish
        # tolerance)
        assert np.all(ours.objective_per_subcarrier <= sdr.objective_per_subcarrier * (1 + 1e-6)), k
        assert np.all(ours.objective_per_subcarrier >= sdr.bound_per_subcarrier * (1 - RTOL_BOUND))


@pytest.mark.parametrize("k,nt,streams", [(4, 2, 2), (5, 3, 3), (8, 3, 2)])
def test_beats_the_centroid_for_several_streams(rng, k, nt, streams):
    # L > 1: the centroid has orthonormal columns, which is suboptimal (spec 02 §2); ours starts
    # from it and may only improve, strictly on random draws (≥ 6 % seen)
    p = _problem(rng, k, 6, 6, nt, streams, spread_db=10.0)
    ours = _solve(p).objective_per_subcarrier
    cen = solve_beamforming(p, "centroid").objective_per_subcarrier
    assert np.all(ours < cen)


# ---------------------------------------------------------------------------------------------
# monotonicity (spec 02 §6.8)
# ---------------------------------------------------------------------------------------------
# The solver is local: when the added device does not bind, the two values are the same optimum
# reached twice, each within the polish tolerance (differences ≤ 3.1e-7 relative seen).
RTOL_MONOTONE = 1e-5


@pytest.mark.parametrize("nt,streams", [(1, 1), (2, 2)])
def test_adding_a_device_never_lowers_the_value(rng, nt, streams):
    p = _problem(rng, 5, 6, 5, nt, streams, spread_db=6.0)
    values = [_solve(_subset(p, devices=slice(0, k))).objective_per_subcarrier for k in range(1, 6)]
    for k in range(4):
        assert np.all(values[k + 1] >= values[k] * (1 - RTOL_MONOTONE)), k + 1


@pytest.mark.parametrize("nt,streams", [(1, 1), (2, 2)])
def test_adding_receive_antennas_never_raises_the_value(rng, nt, streams):
    # N_r = 2..6 by appending rows to H (the first rows are shared by all problems)
    p = _problem(rng, 4, 6, 6, nt, streams, spread_db=6.0)
    values = [_solve(_subset(p, rx=nr)).objective_per_subcarrier for nr in range(2, 7)]
    for i in range(4):
        assert np.all(values[i + 1] <= values[i] * (1 + RTOL_MONOTONE)), i + 3


def test_value_is_inversely_proportional_to_power(rng):
    # f ∝ 1/P: doubling every budget shifts every log c_k by −log 2, which changes neither the
    # starts nor the gradients, so the run is the same up to rounding
    p = _problem(rng, 5, 6, 5, 2, 2, spread_db=6.0)
    base = _solve(p).objective_per_subcarrier
    doubled = _solve(dataclasses.replace(p, p_sub=2.0 * p.p_sub)).objective_per_subcarrier
    assert_allclose(doubled, base / 2.0, rtol=RTOL_OPT)


# ---------------------------------------------------------------------------------------------
# invariances (spec 02 §6.4)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nt,streams", [(1, 1), (2, 2)])
def test_permuting_devices_keeps_the_value(rng, nt, streams):
    p = _problem(rng, 5, 6, 5, nt, streams, spread_db=6.0)
    perm = rng.permutation(5)
    while np.array_equal(perm, np.arange(5)):
        perm = rng.permutation(5)
    q = BeamformingProblem(
        H=p.H[perm], phi=p.phi[perm], p_sub=p.p_sub[perm], sigma2=SIGMA2, streams=streams
    )
    # same starts and equivariant steps; only the summation order (rounding) differs
    assert_allclose(
        _solve(q).objective_per_subcarrier, _solve(p).objective_per_subcarrier, rtol=RTOL_OPT
    )


def test_scaling_the_channels_scales_the_value(rng):
    # H → cH multiplies every G_k by |c|², so f(A) → f(A)/|c|²; the solver normalizes the
    # channel scale per subcarrier and the phase of c cancels in G_k
    p = _problem(rng, 5, 6, 5, 2, 2, spread_db=6.0)
    c = 300.0 * np.exp(0.7j)
    base = _solve(p).objective_per_subcarrier
    scaled = _solve(dataclasses.replace(p, H=c * p.H)).objective_per_subcarrier
    assert_allclose(scaled, base / abs(c) ** 2, rtol=RTOL_OPT)


# ---------------------------------------------------------------------------------------------
# engines, determinism, callback
# ---------------------------------------------------------------------------------------------
def test_pymanopt_engine_agrees_with_the_default(rng):
    p = _problem(rng, 4, 2, 4, 2, 2, spread_db=6.0)
    default = _solve(p)
    other = _solve(p, engine="pymanopt")
    assert other.options["engine"] == "pymanopt"
    # 1 %: pymanopt's CG takes one line search over the product of spheres and stops at other
    # points before the polish; both polish on the true max (≤ 1e-9 apart seen)
    assert_allclose(other.objective_per_subcarrier, default.objective_per_subcarrier, rtol=1e-2)
    with pytest.raises(InvalidArgumentError, match="engine"):
        _solve(p, engine="scipy")


def test_same_seed_same_solution(rng):
    p = _problem(rng, 5, 3, 4, 2, 2, spread_db=6.0)
    a = solve_beamforming(p, "beamforming", rng=7)
    b = solve_beamforming(p, "beamforming", rng=np.random.default_rng(7))
    assert_array_equal(a.solution, b.solution)
    assert_array_equal(a.objective_per_subcarrier, b.objective_per_subcarrier)
    assert a.iterations == b.iterations and a.evaluations == b.evaluations


def test_callback_sees_every_stage_and_can_stop_the_run(rng):
    p = _problem(rng, 5, 3, 4, 2, 2, spread_db=6.0)
    seen = []
    full = _solve(p, callback=seen.append)  # returns None: never stops
    assert [r["stage"] for r in seen] == list(range(len(ManifoldOptions().temperatures)))
    assert all({"tau", "objective", "iterations"} <= set(r) for r in seen)
    assert full.status in (Status.OPTIMAL, Status.CONVERGED)
    assert full.history[-1]["stage"] == "polish"

    stopped = _solve(p, callback=lambda record: True)
    assert stopped.status is Status.STOPPED and stopped.success
    assert "stopped" in stopped.message
    assert stopped.solution.shape == (3, 4, 2)
    # unit norm and the reported f re-evaluated at the solution: rounding only
    assert_allclose(np.linalg.norm(stopped.solution, axis=(1, 2)), 1.0, rtol=1e-12)
    assert_allclose(stopped.objective_per_subcarrier, p.objective(stopped.solution), rtol=1e-12)
    assert len(stopped.history) == 1  # stopped after the first stage, no polish
    assert stopped.iterations < full.iterations


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_all_zero_device_is_infeasible(rng):
    p = _problem(rng, 3, 4, 4, 2, 1)
    h = p.H.copy()
    h[1, 2] = 0.0
    with pytest.raises(InfeasibleError, match="device 1, subcarrier 2"):
        _solve(dataclasses.replace(p, H=h))


def test_more_streams_than_tx_antennas_is_infeasible(rng):
    p = _problem(rng, 3, 2, 4, 2, 2)
    with pytest.raises(InfeasibleError, match=r"L = 3 .*min\(N_t, N_r\)"):
        dataclasses.replace(p, streams=3)


def test_init_with_the_wrong_shape_is_rejected(rng):
    p = _problem(rng, 3, 2, 4, 2, 2)
    wrong = r"init: expected shape \(2, 4, 2\), got \(2, 4, 1\)"
    with pytest.raises(InvalidArgumentError, match=wrong):
        _solve(p, init=np.ones((2, 4, 1), dtype=complex))
    # a right shape is used, even a degenerate one (rank one: f = +inf there, L = 2)
    res = _solve(p, init=[np.ones((2, 4, 2), dtype=complex)])
    assert res.options["n_starts"] == 9  # centroid, MRC, the init, six random (L > 1 default)
    assert np.all(np.isfinite(res.objective_per_subcarrier))


def test_the_default_number_of_random_starts_grows_with_the_devices_for_several_streams(rng):
    # 8 for L = 1; for L > 1, 6 up to K = 20, one more per 3 devices, 16 from K = 50 on; the
    # result records the count that ran, and an explicit n_random wins
    from fedopt.solvers.beamforming.manifold import default_random_starts

    assert [default_random_starts(k, 2) for k in (3, 20, 23, 35, 50, 400)] == \
        [6, 6, 7, 11, 16, 16]
    assert default_random_starts(400, 1) == 8
    p = random_problem(rng, 26, 1, 4, 2, 2)
    assert solve_beamforming(p, "beamforming", rng=0).options["n_random"] == 8
    assert solve_beamforming(p, "beamforming", rng=0, n_random=3).options["n_random"] == 3
