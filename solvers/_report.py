"""Shared packaging of beamforming results (used by the baselines and the manifold solver)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from fedopt.solvers.bounds import best_bound
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult, Status

__all__ = ["CERTIFY_RTOL", "unit_norm", "beamforming_result"]


def unit_norm(A: np.ndarray) -> np.ndarray:
    """Scale each A_m (M, N_r, L) to unit Frobenius norm."""
    return A / np.sqrt(np.sum(np.abs(A) ** 2, axis=(1, 2), keepdims=True))


#: objective ≤ (1 + CERTIFY_RTOL) · bound on every subcarrier certifies optimality.
CERTIFY_RTOL = 1e-6


def _herm(x: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(x, -1, -2))


def _unit(A: np.ndarray) -> np.ndarray:
    """Scale each A_m (M, N_r, L) to unit Frobenius norm."""
    return A / np.sqrt(np.sum(np.abs(A) ** 2, axis=(1, 2), keepdims=True))


def beamforming_result(
    method: str,
    problem: BeamformingProblem,
    A: np.ndarray,
    t0: float,
    *,
    description: str,
    bound: np.ndarray | None = None,
    options: dict[str, Any] | None = None,
    terms: dict[str, float] | None = None,
    iterations: int = 0,
    evaluations: int = 1,
    override: Status | None = None,
    history: list[dict[str, Any]] | None = None,
) -> SolveResult:
    """Package beamformers as a SolveResult: unit norm, objective f per subcarrier, best bound,
    and a status (``OPTIMAL`` when certified by the bound, else ``CONVERGED``, unless ``override``
    replaces it, e.g. ``STOPPED`` by a callback)."""
    A = unit_norm(A)
    obj = problem.objective(A)
    bnd = best_bound(problem) if bound is None else bound
    ratio = obj / bnd
    worst = float(np.max(ratio))
    if worst <= 1.0 + CERTIFY_RTOL:
        status = Status.OPTIMAL
        msg = f"{description}; certified optimal (objective meets the lower bound)"
    else:
        status = Status.CONVERGED
        msg = (
            f"{description}; not certified: objective/bound up to {worst:.4g} "
            f"(mean {float(np.mean(ratio)):.4g}) over {len(obj)} subcarriers"
        )
    if override is not None:
        status, msg = override, f"{msg}; {override.value}"
    return SolveResult(
        method=method,
        status=status,
        message=msg,
        solution=A,
        objective=float(np.sum(obj)),
        objective_per_subcarrier=obj,
        terms=dict(terms or {}),
        bound=float(np.sum(bnd)),
        bound_per_subcarrier=bnd,
        iterations=iterations,
        evaluations=evaluations,
        wall_time_s=time.perf_counter() - t0,
        options=dict(options or {}),
        history=history,
    )


