"""The manifold beamforming solver stays on its manifold (spec 04 §1): every accepted iterate
A_m has ‖A_m‖_F = 1, in the descent stages and in the polish.

The solver's final answer is renormalized before it is scored (``beamforming_result``), and the
cost is scale invariant, so a descent that forgot to retract would still return unit-norm,
good beamformers: only the iterates show it. Two views, no hook in the solver needed:

- the engines are deterministic, so stopping a stage (or the polish) after k iterations returns
  exactly the iterate after its k-th step (a column whose line search failed keeps its last
  accepted point): every k = 1..K is checked;
- a spy on the cost, swapped into the solver's module, sees every point the whole run evaluates
  (starts, trial points, accepted points, both engines); accepted iterates are among them.

Tolerance: |‖A_m‖_F − 1| ≤ 1e-12. A normalization of 2 N_r L ≤ 24 reals leaves a few ulps
(~1e-15); a descent step of length s off the sphere (tangent direction) moves the norm to
√(1 + s²), and the first step of every stage has s ≈ 1 rad.
"""

from __future__ import annotations

import numpy as np
import pytest
from bf_testing import random_problem

from fedopt.solvers.beamforming import manifold, solve_beamforming
from fedopt.solvers.beamforming.cost import LogMaxCost
from fedopt.solvers.beamforming.descent import polish_prox_linear, stage_batched

NORM_ATOL = 1e-12  # module docstring: a few ulps of a normalization, far below any step


def _norms(A: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(np.abs(A) ** 2, axis=(1, 2)))


def _setup(rng, streams):
    problem = random_problem(rng, 5, 6, 4, 3, streams, spread_db=10.0)
    cost = LogMaxCost(problem.H, np.log(problem.weights()))
    a0 = rng.standard_normal((6, 4, streams)) + 1j * rng.standard_normal((6, 4, streams))
    return cost, a0 / _norms(a0)[:, None, None]


@pytest.mark.parametrize("streams", [1, 3])
def test_every_accepted_descent_step_is_on_the_sphere(rng, streams):
    cost, a0 = _setup(rng, streams)
    prev, moved = a0, 0
    for k in range(1, 31):
        a_k, _ = stage_batched(cost, a0, 0.1, k, 0.0)
        np.testing.assert_allclose(_norms(a_k), 1.0, rtol=0, atol=NORM_ATOL, err_msg=f"k={k}")
        moved += int(np.any(np.abs(a_k - prev) > 1e-9))
        prev = a_k
    assert moved >= 20  # steps were accepted on most iterations: the check saw real moves


@pytest.mark.parametrize("streams", [1, 3])
def test_every_accepted_polish_step_is_on_the_sphere(rng, streams):
    cost, a0 = _setup(rng, streams)
    prev, moved = a0, 0
    for k in range(1, 21):
        a_k, _ = polish_prox_linear(cost, a0, k, 0.0)
        np.testing.assert_allclose(_norms(a_k), 1.0, rtol=0, atol=NORM_ATOL, err_msg=f"k={k}")
        moved += int(np.any(np.abs(a_k - prev) > 1e-9))
        prev = a_k
    assert moved >= 5


class _SpyCost(LogMaxCost):
    """LogMaxCost recording ‖A‖_F of every column it is evaluated at."""

    seen: list[np.ndarray] = []

    def _log(self, A):
        type(self).seen.append(_norms(A))

    def values(self, A, cols=None):
        self._log(A)
        return super().values(A, cols)

    def device_gradients(self, A, cols=None):
        self._log(A)
        return super().device_gradients(A, cols)

    def __call__(self, A, tau, cols=None):
        self._log(A)
        return super().__call__(A, tau, cols)


@pytest.mark.parametrize("engine", ["batched", "pymanopt"])
@pytest.mark.parametrize("streams", [1, 2])
def test_every_point_of_a_whole_run_is_on_the_sphere(rng, monkeypatch, engine, streams):
    if engine == "pymanopt":
        pytest.importorskip("pymanopt")
    problem = random_problem(rng, 4, 3, 4, 2, streams, spread_db=10.0)
    _SpyCost.seen = []
    monkeypatch.setattr(manifold, "LogMaxCost", _SpyCost)
    res = solve_beamforming(problem, "beamforming", rng=0, engine=engine, max_iterations=40)
    seen = np.concatenate(_SpyCost.seen)
    assert seen.size > 500  # the spy really sat in the loop (starts × subcarriers × steps)
    worst = float(np.max(np.abs(seen - 1.0)))
    assert worst <= NORM_ATOL, worst
    np.testing.assert_allclose(_norms(res.solution), 1.0, rtol=0, atol=NORM_ATOL)
