"""One result type for every solver (STYLE.md; like scipy's OptimizeResult, pymanopt's
OptimizerResult), with a status enum grouped like cvxpy's statuses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["Status", "SolveResult"]


class Status(str, Enum):
    """Outcome of a solver run.

    ``OPTIMAL``: certified optimal (objective meets a tight bound or an exact method finished).
    ``CONVERGED``: a local method met its stopping rule (solution present, not certified).
    ``MAX_ITERATIONS``: stopped on the iteration or time budget (solution present).
    ``STOPPED``: a callback asked to stop (solution present).
    ``INACCURATE``: the numerical solver reported reduced accuracy (solution present).
    ``INFEASIBLE``: no feasible solution exists (no solution).
    """

    OPTIMAL = "optimal"
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    STOPPED = "stopped"
    INACCURATE = "inaccurate"
    INFEASIBLE = "infeasible"

    @property
    def solution_present(self) -> bool:
        """True when the result carries a usable solution."""
        return self is not Status.INFEASIBLE


@dataclass(frozen=True, eq=False)
class SolveResult:
    """What every fedopt solver returns.

    Attributes
    ----------
    method : str
        Solver name (``"manifold"``, ``"centroid"``, ``"sdr"``, ``"airfl-lora"``, ...).
    status : Status
        Outcome (see :class:`Status`).
    message : str
        Readable explanation of the status.
    solution : Any
        The decision variables (for beamforming: unit-norm receive beamformers (M, N_r, L)).
    objective : float
        Total objective (for beamforming: Σ_m MSE_m at full power).
    objective_per_subcarrier : ndarray or None
        Per-subcarrier objective (beamforming: MSE_m = f(A_m)).
    terms : dict
        Named terms of the objective (e.g. the gap terms).
    bound, bound_per_subcarrier : float / ndarray or None
        Best available lower bound (total and per subcarrier); ``None`` if none is known.
    iterations, evaluations : int
        Work done (outer iterations, cost evaluations).
    wall_time_s : float
        Wall-clock time of the solve.
    options : dict
        Options used (JSON-safe).
    history : list or None
        Per-iteration records, when asked for.
    """

    method: str
    status: Status
    message: str
    solution: Any
    objective: float
    objective_per_subcarrier: np.ndarray | None = None
    terms: dict[str, float] = field(default_factory=dict)
    bound: float | None = None
    bound_per_subcarrier: np.ndarray | None = None
    iterations: int = 0
    evaluations: int = 0
    wall_time_s: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] | None = None

    @property
    def success(self) -> bool:
        """True when a solution is present."""
        return self.status.solution_present

    @property
    def ratio(self) -> float | None:
        """objective / bound (≥ 1 when the bound is valid); None without a bound."""
        if self.bound is None or not self.bound > 0:
            return None
        return self.objective / self.bound

    @property
    def ratio_per_subcarrier(self) -> np.ndarray | None:
        """Per-subcarrier objective / bound."""
        if self.objective_per_subcarrier is None or self.bound_per_subcarrier is None:
            return None
        return self.objective_per_subcarrier / self.bound_per_subcarrier

    def summary_dict(self) -> dict[str, Any]:
        """JSON-safe summary (without the solution arrays)."""

        def _list(x):
            return None if x is None else [float(v) for v in np.asarray(x).ravel()]

        ratio = self.ratio
        return {
            "method": self.method,
            "status": self.status.value,
            "message": self.message,
            "objective": float(self.objective),
            "objective_per_subcarrier": _list(self.objective_per_subcarrier),
            "terms": {k: float(v) for k, v in self.terms.items()},
            "bound": None if self.bound is None else float(self.bound),
            "bound_per_subcarrier": _list(self.bound_per_subcarrier),
            "ratio": None if ratio is None or not math.isfinite(ratio) else float(ratio),
            "iterations": int(self.iterations),
            "evaluations": int(self.evaluations),
            "wall_time_s": float(self.wall_time_s),
            "options": self.options,
        }
