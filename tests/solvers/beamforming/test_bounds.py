"""Lower bounds on the beamforming optimum (spec 02 §5) against closed forms, and the problem's
precondition for them (every device's channel carries L streams).

Oracles: the single-device closed form (§2, §6.7) and the Frobenius bound's relation to it.
Problems use realistic magnitudes (|h|² ~ 1e-8 .. 1e-11, P ~ 10 mW, σ² = 1e-15 W); every
comparison is relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from bf_testing import SIGMA2, random_problem
from numpy.testing import assert_allclose

from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.solvers.beamforming.baselines import mrc_weakest
from fedopt.solvers.beamforming.bounds import best_bound, single_device_bound, trivial_bound_l1
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.result import Status

# Bounds are closed forms and baselines evaluate the exact f: both carry only float64 rounding
# through an SVD/eigendecomposition of matrices with entries ~1e-5, so 1e-9 relative is ample.
RTOL_CLOSED = 1e-9


_problem = random_problem


def _single_device_optimum(problem):
    """Columns u_l λ_l^{-1/4} of the one device (spec 02 §2), shape (M, N_r, L)."""
    u, s, _ = np.linalg.svd(problem.H[0], full_matrices=False)
    lsz = problem.streams
    return u[..., :lsz] * s[:, None, :lsz] ** -0.5


@pytest.mark.parametrize("streams,nt", [(1, 1), (1, 3), (2, 2), (3, 4)])
def test_single_device_bound_is_attained_for_one_device(rng, streams, nt):
    # spec 02 §6.7: K = 1, the optimum is σ² c (Σ_l λ_l^{-1/2})², reached by u_l λ_l^{-1/4}
    p = _problem(rng, 1, 4, 6, nt, streams)
    lam = np.linalg.eigvalsh(p.gram()[0])[:, ::-1][:, :streams]  # via G, independent of the SVD
    expected = SIGMA2 * p.weights()[0] * np.sum(lam**-0.5, axis=-1) ** 2
    assert_allclose(single_device_bound(p), expected, rtol=RTOL_CLOSED)
    assert_allclose(p.objective(_single_device_optimum(p)), expected, rtol=RTOL_CLOSED)
    res = mrc_weakest(p, single_device_optimal=True)
    assert res.status is Status.OPTIMAL
    assert_allclose(res.objective_per_subcarrier, expected, rtol=RTOL_CLOSED)


@pytest.mark.parametrize("streams,nt", [(1, 1), (1, 2), (2, 2), (2, 3)])
def test_trivial_bound_never_exceeds_the_single_device_bound(rng, streams, nt):
    p = _problem(rng, 5, 4, 6, nt, streams, spread_db=20)
    triv, sd = trivial_bound_l1(p), single_device_bound(p)
    assert np.all(triv <= sd * (1 + RTOL_CLOSED))
    assert_allclose(best_bound(p), sd, rtol=RTOL_CLOSED)
    if streams == 1 and nt == 1:  # spec 02 §5: G_k = h h^H has one eigenvalue ‖h‖²: equal
        assert_allclose(triv, sd, rtol=RTOL_CLOSED)


def test_best_bound_rejects_sdr_values_for_several_streams_or_wrong_shape(rng):
    p2 = _problem(rng, 3, 4, 6, 2, 2)
    with pytest.raises(InvalidArgumentError, match="L = 1"):
        best_bound(p2, sdr_values=np.ones(4))
    p1 = _problem(rng, 3, 4, 6, 1, 1)
    with pytest.raises(InvalidArgumentError, match="sdr_values"):
        best_bound(p1, sdr_values=np.ones(3))
    big = 10.0 * single_device_bound(p1)
    assert_allclose(best_bound(p1, sdr_values=big), big)


def test_all_zero_device_is_reported_as_infeasible(rng, crandn):
    h = crandn(3, 2, 4, 1) * 1e-5
    h[1, 1] = 0.0
    with pytest.raises(InfeasibleError, match="device 1, subcarrier 1"):
        BeamformingProblem(
            H=h, phi=np.ones(3), p_sub=np.full((3, 2), 0.01), sigma2=SIGMA2, streams=1
        )


def test_the_old_import_paths_are_the_same_objects():
    from fedopt.solvers import bounds, problem
    from fedopt.solvers.beamforming import bounds as room_bounds

    assert problem.BeamformingProblem is BeamformingProblem
    assert all(getattr(bounds, name) is getattr(room_bounds, name) for name in room_bounds.__all__)


def test_the_problem_keeps_the_singular_values_the_bounds_use(rng):
    # computed once when the problem is built, read-only so that no caller can corrupt the
    # bounds of later calls; the same values as a fresh SVD of H (float64 rounding: 1e-12)
    p = _problem(rng, 4, 3, 5, 3, 2)
    sv = p.singular_values()
    assert_allclose(sv, np.linalg.svd(p.H, compute_uv=False), rtol=1e-12)
    assert not sv.flags.writeable
    with pytest.raises(ValueError):
        sv[0, 0, 0] = 0.0
    assert p.singular_values() is sv


def test_with_streams_equals_a_fresh_problem_and_checks_the_stream_count(rng):
    # the planner builds every L from one problem: same data, same singular values, the same
    # errors as the constructor for an L the channels cannot carry
    p = _problem(rng, 3, 2, 5, 3, 1)
    for streams in (1, 2, 3):
        q = p.with_streams(streams)
        fresh = BeamformingProblem(H=p.H, phi=p.phi, p_sub=p.p_sub, sigma2=p.sigma2,
                                   streams=streams)
        assert q.streams == streams and p.streams == 1
        assert q.singular_values() is p.singular_values()
        assert_allclose(single_device_bound(q), single_device_bound(fresh), rtol=1e-12)
    with pytest.raises(InfeasibleError, match="streams: L = 4 needs"):
        p.with_streams(4)
    h = p.H.copy()
    h[1, 0] = np.outer(h[1, 0, :, 0], np.ones(3))  # device 1 rank 1 on subcarrier 0
    low = BeamformingProblem(H=h, phi=p.phi, p_sub=p.p_sub, sigma2=p.sigma2, streams=1)
    with pytest.raises(InfeasibleError, match="device 1, subcarrier 0: the channel has rank"):
        low.with_streams(2)
