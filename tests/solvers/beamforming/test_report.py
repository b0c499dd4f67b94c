"""The shared packaging of beamforming results: OPTIMAL only when the bound certifies it, the
run's callback turning any status into STOPPED, unit-norm solutions."""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose

from fedopt.solvers.beamforming import beamforming_problem
from fedopt.solvers.beamforming.bounds import best_bound
from fedopt.solvers.beamforming.report import CERTIFY_RTOL, beamforming_result, certify
from fedopt.solvers.result import SolverRun, Status


def test_optimal_only_within_the_certification_tolerance():
    bound = np.array([2.0, 3.0])
    status, message = certify(bound * (1 + 0.5 * CERTIFY_RTOL), bound, "x")
    assert status is Status.OPTIMAL and message.startswith("x; certified optimal")
    status, message = certify(bound * np.array([1.0, 1 + 2 * CERTIFY_RTOL]), bound, "x")
    assert status is Status.CONVERGED and "not certified" in message and "2 subcarriers" in message


def test_result_is_unit_norm_scored_and_stopped_by_the_run(small_instance):
    problem = beamforming_problem(small_instance, 1, seed=3)
    m, nr = problem.shape[1], problem.shape[2]
    A = 5.0 * np.ones((m, nr, 1), dtype=complex)
    run = SolverRun("test", callback=lambda record: True, options={"a": 1})
    assert run.record({"step": 0})
    res = beamforming_result(run, problem, A, description="constant")
    assert_allclose(np.linalg.norm(res.solution, axis=(1, 2)), 1.0, rtol=1e-12)
    assert_allclose(res.objective_per_subcarrier, problem.objective(A), rtol=1e-12)
    assert_allclose(res.bound_per_subcarrier, best_bound(problem))
    assert res.status is Status.STOPPED and res.message.startswith("constant; ")
    assert res.options == {"a": 1} and res.history == [{"step": 0}]
