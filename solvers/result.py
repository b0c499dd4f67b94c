"""One result type for every solver (STYLE.md; like scipy's OptimizeResult, pymanopt's
OptimizerResult), a status enum grouped like cvxpy's statuses, one callback shape, and
:class:`SolverRun`, which owns a run's timing, callback, status and message (the role of pymanopt's
``Optimizer._return_result``), so that no solver starts its own timer or writes its own
"stopped" text.

The callback shape, everywhere (solvers, the validation driver, calibration): ``callback(record)``
with one JSON-safe mapping per step (a beamforming solve of the planner, a rank of the offline
TSFA stage, a round of a validation run...); returning ``True`` stops the run, which then returns
what it has with status ``STOPPED``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

__all__ = ["Callback", "SolveResult", "SolverRun", "Status"]

#: ``callback(record) -> bool | None``; ``True`` asks the run to stop
Callback = Callable[[Mapping[str, Any]], "bool | None"]


class Status(str, Enum):
    """Outcome of a solver run.

    ``OPTIMAL``: certified optimal (objective meets a tight bound or an exact method finished).
    ``CONVERGED``: a local method met its stopping rule (solution present, not certified).
    ``MAX_ITERATIONS``: stopped on the iteration or time budget (solution present).
    ``STOPPED``: a callback asked to stop (solution present).
    ``ESTIMATED``: optimal for a sampled (Monte-Carlo) estimate of the objective; the estimate
    carries sampling error, so nothing is certified about the true expectation (solution present).
    ``INACCURATE``: the numerical solver reported reduced accuracy (solution present).
    ``INFEASIBLE``: no feasible solution exists (no solution).
    """

    OPTIMAL = "optimal"
    CONVERGED = "converged"
    MAX_ITERATIONS = "max_iterations"
    STOPPED = "stopped"
    ESTIMATED = "estimated"
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
    bound_kind : str or None
        What the bound is (beamforming): ``"single-device"`` (each device served alone; loose
        by design when many devices bind), ``"sdr"`` (the semidefinite relaxation solved by a
        conic solver, dual-certified) or ``"sdr-dual"`` (a dual-feasible point of that
        relaxation found by a first-order method: certified, at most the SDR value). Every
        bound is the per-subcarrier maximum of its kind and the single-device bound.
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
    bound_kind: str | None = None
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


class SolverRun:
    """One run of a solver: owns its clock, its history, the user's callback, and the status and
    message of the result it returns (the role of pymanopt's ``Optimizer._return_result``).

    Usage::

        run = SolverRun("airfl-lora", callback=callback, options={"search": "bnb"})
        for ...:
            if run.record({"streams": L, "gap": g}):   # True: the callback asked to stop
                break
        return run.result(solution, objective, status=Status.OPTIMAL, message="...")

    Parameters
    ----------
    method
        The solver's name, as in the registry.
    callback
        ``callback(record) -> bool | None``, called by :meth:`record`; ``True`` stops.
    options
        The options the run uses (JSON-safe), copied into the result.
    keep_history
        Keep every record in ``result.history``.
    """

    def __init__(self, method: str, *, callback: Callback | None = None,
                 options: Mapping[str, Any] | None = None, keep_history: bool = True) -> None:
        self.method = method
        self.callback = callback
        self.options = dict(options or {})
        self.history: list[dict[str, Any]] | None = [] if keep_history else None
        self.stopped = False
        self.t0 = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t0

    def record(self, record: Mapping[str, Any]) -> bool:
        """Log one step and pass it to the callback; True when the run should stop."""
        rec = dict(record)
        if self.history is not None:
            self.history.append(rec)
        if self.callback is not None and self.callback(rec):
            self.stopped = True
        return self.stopped

    def notify(self, record: Mapping[str, Any]) -> bool:
        """Pass a progress record (what starts now; ``done``/``total``) to the callback without
        logging it in the history; True when the run should stop."""
        if self.callback is not None and self.callback(dict(record)):
            self.stopped = True
        return self.stopped

    def result(self, solution: Any, objective: float, *, status: Status, message: str,
               **fields: Any) -> SolveResult:
        """The :class:`SolveResult` of the run: wall time measured here; a run that the callback
        stopped reports ``STOPPED`` (when a solution is present) with the reason appended."""
        if self.stopped and status.solution_present:
            status, message = Status.STOPPED, f"{message}; stopped by the callback"
        fields.setdefault("options", self.options)
        fields.setdefault("history", self.history or None)
        return SolveResult(method=self.method, status=status, message=message,
                           solution=solution, objective=float(objective),
                           wall_time_s=self.elapsed_s, **fields)
