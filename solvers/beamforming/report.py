"""Shared packaging of beamforming results, built on :class:`~fedopt.solvers.result.SolverRun`.

Every beamforming method ends with :func:`beamforming_result`: the beamformers are scaled to unit
Frobenius norm (f is scale invariant, spec 02 §2), scored with the exact f per subcarrier, and
compared with the best lower bound of :mod:`~fedopt.solvers.beamforming.bounds`. The status is
``OPTIMAL`` only when that comparison certifies optimality on every subcarrier (relative
:data:`CERTIFY_RTOL`), otherwise ``CONVERGED``; the run turns it into ``STOPPED`` when its
callback asked to stop. Wall time, history and options come from the run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedopt.solvers.beamforming.bounds import best_bound
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult, SolverRun, Status

__all__ = ["CERTIFY_RTOL", "unit_norm", "certify", "beamforming_result"]

#: objective ≤ (1 + CERTIFY_RTOL) · bound on every subcarrier certifies optimality.
CERTIFY_RTOL = 1e-6


def unit_norm(A: np.ndarray) -> np.ndarray:
    """Scale each A_m (M, N_r, L) to unit Frobenius norm."""
    return A / np.sqrt(np.sum(np.abs(A) ** 2, axis=(1, 2), keepdims=True))


def certify(objective: np.ndarray, bound: np.ndarray, description: str) -> tuple[Status, str]:
    """Status and message of per-subcarrier objective values against lower bounds:
    ``OPTIMAL`` when every ratio is within :data:`CERTIFY_RTOL` of 1, else ``CONVERGED``."""
    ratio = objective / bound
    worst = float(np.max(ratio))
    if worst <= 1.0 + CERTIFY_RTOL:
        return Status.OPTIMAL, f"{description}; certified optimal (objective meets the lower bound)"
    return Status.CONVERGED, (
        f"{description}; not certified: objective/bound up to {worst:.4g} "
        f"(mean {float(np.mean(ratio)):.4g}) over {len(objective)} subcarriers"
    )


def beamforming_result(
    run: SolverRun,
    problem: BeamformingProblem,
    A: np.ndarray,
    *,
    description: str,
    bound: np.ndarray | None = None,
    bound_kind: str = "single-device",
    options: dict[str, Any] | None = None,
    terms: dict[str, float] | None = None,
    iterations: int = 0,
    evaluations: int = 1,
) -> SolveResult:
    """The :class:`SolveResult` of a beamforming run: unit-norm ``A`` (M, N_r, L), f per
    subcarrier, the bound (``bound`` or the best closed-form one), a certified status.

    ``bound_kind`` names the bound (see :class:`~fedopt.solvers.result.SolveResult`); the
    default is that of the closed-form bound used when ``bound`` is not given. ``options``
    replaces the run's options when given (for options known only at the end).
    """
    A = unit_norm(A)
    obj = problem.objective(A)
    bnd = best_bound(problem) if bound is None else bound
    status, message = certify(obj, bnd, description)
    extra = {} if options is None else {"options": dict(options)}
    return run.result(
        A, np.sum(obj), status=status, message=message,
        objective_per_subcarrier=obj, terms=dict(terms or {}),
        bound=float(np.sum(bnd)), bound_per_subcarrier=bnd, bound_kind=bound_kind,
        iterations=iterations, evaluations=evaluations, **extra,
    )
