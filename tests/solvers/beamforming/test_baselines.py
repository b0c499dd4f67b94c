"""Closed-form and random baselines (spec 02 §4) against closed forms, the bounds and each other.

Oracles: the Grassmann value of orthonormal columns (§2), collinear single-antenna channels
(§6.6), and "lower bound ≤ every solver's value" (§6.9) on random instances.

Problems use realistic magnitudes (|h|² ~ 1e-8 .. 1e-11, P ~ 10 mW, σ² = 1e-15 W) so that the
normalization inside the solvers is exercised; every comparison is relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from bf_testing import SIGMA2, random_problem
from numpy.testing import assert_allclose

from fedopt.channel import draw_channel
from fedopt.solvers.beamforming import BASELINES, solve_beamforming
from fedopt.solvers.beamforming.baselines import (
    centroid,
    mrc_weakest,
    principal_eigenvector,
    random_beamformer,
)
from fedopt.solvers.beamforming.bounds import (
    single_device_bound,
    single_device_values,
    top_eigenvalues,
)
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.sdr import sdr
from fedopt.solvers.result import SolveResult, Status

# Bounds are closed forms and baselines evaluate the exact f: both carry only float64 rounding
# through an SVD/eigendecomposition of matrices with entries ~1e-5, so 1e-9 relative is ample.
RTOL_CLOSED = 1e-9
# Conic solvers stop at ~1e-8 relative duality gap; the SDR value is certified through the dual,
# so it is a valid bound, but comparisons of two solver outputs allow 1e-6.
RTOL_SOLVER = 1e-6


_problem = random_problem


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_centroid_for_one_device_has_the_grassmann_value(rng, streams):
    # spec 02 §2: orthonormal F gives (σ²/P) φ² L Σ_l λ_l^{-1} ≥ (σ²/P) φ² (Σ_l λ_l^{-1/2})²
    p = _problem(rng, 1, 4, 6, 3, streams)
    lam = top_eigenvalues(p)[0]
    grassmann = SIGMA2 * p.weights()[0] * streams * np.sum(1.0 / lam, axis=-1)
    res = centroid(p)
    assert_allclose(res.objective_per_subcarrier, grassmann, rtol=RTOL_CLOSED)
    assert np.all(grassmann >= single_device_bound(p) * (1 - RTOL_CLOSED))
    if streams > 1:  # strict unless the eigenvalues are equal (probability zero)
        assert np.all(grassmann > single_device_bound(p) * (1 + 1e-6))
        assert res.status is Status.CONVERGED


# ---------------------------------------------------------------------------------------------
# bound ≤ every baseline (spec 02 §6.9)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", range(6))
def test_bound_is_below_every_baseline(rng, case):
    streams, nt, k = [(1, 1, 6), (1, 2, 4), (2, 2, 5), (2, 3, 8), (1, 1, 2), (3, 3, 3)][case]
    p = _problem(rng, k, 3, 6, nt, streams, spread_db=10.0 * (case % 3))
    sd = single_device_bound(p)
    sdr_res = sdr(p, rng=rng) if streams == 1 else None
    for name in BASELINES:
        if name == "sdr" and streams != 1:
            continue
        res = sdr_res if name == "sdr" else solve_beamforming(p, name, rng=rng)
        assert isinstance(res, SolveResult)
        assert res.method == name
        assert res.solution.shape == (3, 6, streams)
        assert_allclose(np.linalg.norm(res.solution, axis=(1, 2)), 1.0, rtol=1e-12)
        assert_allclose(res.objective_per_subcarrier, p.objective(res.solution), rtol=1e-12)
        assert_allclose(res.objective, res.objective_per_subcarrier.sum(), rtol=1e-12)
        assert np.all(res.bound_per_subcarrier >= sd * (1 - RTOL_CLOSED))
        assert np.all(res.objective_per_subcarrier >= sd * (1 - RTOL_CLOSED)), name
        if sdr_res is not None:  # the SDR value is a lower bound on every L = 1 value
            assert np.all(
                res.objective_per_subcarrier >= sdr_res.bound_per_subcarrier * (1 - RTOL_CLOSED)
            ), name
        assert res.ratio is not None and res.ratio >= 1 - RTOL_CLOSED
        assert res.wall_time_s >= 0.0 and res.status.solution_present


def test_closed_form_baselines_are_vectorized_per_subcarrier(rng):
    # the batched result on subcarrier j equals solving the one-subcarrier problem j alone
    p = _problem(rng, 4, 3, 6, 2, 2, spread_db=10.0)
    for fn in (centroid, mrc_weakest, principal_eigenvector):
        full = fn(p)
        for j in range(3):
            alone = fn(p.subproblem([j]))
            assert_allclose(
                alone.objective_per_subcarrier[0],
                full.objective_per_subcarrier[j],
                rtol=RTOL_CLOSED,
            )


def test_random_beamformer_is_reproducible_from_the_seed(rng):
    p = _problem(rng, 3, 2, 4, 1, 1)
    a = random_beamformer(p, rng=7).solution
    assert_allclose(random_beamformer(p, rng=np.random.default_rng(7)).solution, a)
    assert not np.allclose(random_beamformer(p, rng=8).solution, a)


def test_collinear_channels(rng, crandn):
    # spec 02 §6.6: h_k = γ_k h ⇒ f* = σ² max_k φ_k² / (P_k |γ_k|² ‖h‖²), reached by a ∝ h
    k, nr, m = 6, 5, 3
    base = crandn(m, nr) * np.sqrt(1e-9)
    gamma = crandn(k, m) * 10.0 ** (-rng.uniform(0, 1, (k, m)))
    h = (gamma[:, :, None] * base[None])[..., None]
    p = _problem(rng, k, m, nr, 1, 1)
    p = BeamformingProblem(H=h, phi=p.phi, p_sub=p.p_sub, sigma2=SIGMA2, streams=1)
    expected = SIGMA2 * np.max(
        p.weights() / (np.abs(gamma) ** 2 * np.sum(np.abs(base) ** 2, axis=-1)), axis=0
    )
    assert_allclose(single_device_bound(p), expected, rtol=RTOL_CLOSED)
    res = sdr(p, rng=rng)
    assert_allclose(res.bound_per_subcarrier, expected, rtol=RTOL_SOLVER)
    assert_allclose(res.objective_per_subcarrier, expected, rtol=RTOL_SOLVER)
    for fn in (mrc_weakest, principal_eigenvector, centroid):  # all point along h
        assert_allclose(fn(p).objective_per_subcarrier, expected, rtol=RTOL_CLOSED)


@pytest.mark.parametrize("streams", [1, 2])
def test_small_preset(rng, small_instance, streams):
    ch = draw_channel(small_instance, seed=int(rng.integers(2**31)))
    p = BeamformingProblem.from_instance(small_instance, ch, streams)
    sd = single_device_bound(p)
    assert_allclose(sd, np.max(single_device_values(p), axis=0))
    results = {n: solve_beamforming(p, n, rng=rng) for n in BASELINES
               if n != "sdr" or streams == 1}
    for res in results.values():
        assert np.all(res.objective_per_subcarrier >= sd * (1 - RTOL_CLOSED))
    if streams == 1:  # K = 3 devices: the SDR is tight (spec 02 §4); 1e-3 as above
        res = results["sdr"]
        assert np.all(res.objective_per_subcarrier <= res.bound_per_subcarrier * (1 + 1e-3))
        for other in results.values():
            assert np.all(
                other.objective_per_subcarrier >= res.bound_per_subcarrier * (1 - RTOL_CLOSED)
            )


def test_summary_is_json_safe(rng):
    import json

    p = _problem(rng, 3, 2, 4, 1, 1)
    for name in BASELINES:
        res = solve_beamforming(p, name, rng=rng)
        assert res.method == name
        json.loads(json.dumps(res.options))
