"""The exponential-cone oracle of the min-max bandwidth allocation (spec 04 §3, cvxpy)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from fedopt.errors import SolverError
from fedopt.link import LN2
from fedopt.solvers.bandwidth.allocation import allocation_result, check_inputs
from fedopt.solvers.result import SolveResult, SolverRun, Status

__all__ = ["allocate_min_latency_cvxpy"]

#: The solver's name in its results.
METHOD = "bandwidth-cvxpy"

_CVX_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {},
    "SCS": {"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000},
}


def allocate_min_latency_cvxpy(payload_bits: Any, compute_s: Any, snr_hz: Any, total_hz: float,
                               *, solvers: tuple[str, ...] = ("CLARABEL", "SCS")
                               ) -> SolveResult:
    """The exponential-cone oracle of spec 04 §3 (cvxpy; Clarabel, then SCS).

    In MHz and Mbit (in Hz and bits the conic solvers return ``optimal_inaccurate`` and a wrong
    τ):

        minimize τ  s.t.  S_k · inv_pos(τ − T_cmp,k) ≤ −rel_entr(b_k, b_k + c_k) / ln 2,
                          Σ_k b_k ≤ B_tot,  b ≥ 0,  τ ≥ T_cmp,k,

    since −rel_entr(b, b + c) = b ln(1 + c/b). Devices without payload get b_k = 0.
    ``device_latency_s`` is recomputed from the returned bands.

    Returns
    -------
    SolveResult
        ``solution``: a :class:`~fedopt.solvers.bandwidth.BandwidthAllocation`; ``objective``:
        its latency; ``status`` ``OPTIMAL`` (the conic solver's own verdict); ``iterations``:
        the conic solver's iterations; ``evaluations``: conic solves attempted.

    Raises
    ------
    SolverError
        If no solver returns ``optimal``; the message names each solver tried and its status.
    """
    import cvxpy as cp  # heavy import kept local (STYLE.md)

    run = SolverRun(METHOD, options={"solvers": list(solvers)}, keep_history=False)
    s, t, c, total = check_inputs(payload_bits, compute_s, snr_hz, total_hz)
    problem, b, tau = _problem(cp, s, t, c, total)
    tried = []
    for name in solvers:
        try:
            with warnings.catch_warnings():
                # cvxpy warns on inaccurate solutions; the status is checked just below
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                problem.solve(solver=name, **_CVX_OPTIONS.get(name, {}))
        except cp.error.SolverError as exc:
            tried.append(f"{name}: {exc}")
            continue
        if problem.status == cp.OPTIMAL and b.value is not None:
            band = np.maximum(np.asarray(b.value, dtype=float), 0.0) * 1e6
            return allocation_result(
                run, band, s, t, c, status=Status.OPTIMAL,
                message=f"cvxpy/{name}: optimal, τ = {float(tau.value):.12g} s",
                evaluations=len(tried) + 1,
                iterations=int(problem.solver_stats.num_iters or 0))
        tried.append(f"{name}: status {problem.status!r}")
    raise SolverError(
        "bandwidth allocation (cvxpy oracle): no solver returned an optimal solution ("
        + "; ".join(tried) + "). Use allocate_min_latency (closed form), or rescale the data "
        "(payloads in the 1e5–1e8 bit range, bandwidth in the 1e5–1e8 Hz range)."
    )


def _problem(cp: Any, s: np.ndarray, t: np.ndarray, c: np.ndarray, total: float
             ) -> tuple[Any, Any, Any]:
    """The cvxpy problem in MHz and Mbit, its band variable b (MHz) and its τ."""
    active = np.flatnonzero(s > 0)
    b = cp.Variable(s.size, nonneg=True)
    tau = cp.Variable()
    cons = [cp.sum(b) <= total / 1e6, tau >= float(np.max(t))]
    idle = np.flatnonzero(s == 0)
    if idle.size:
        cons.append(b[idle] == 0)
    if active.size:
        ba = b[active]
        cons.append(
            cp.multiply(s[active] / 1e6, cp.inv_pos(tau - t[active]))
            <= -cp.rel_entr(ba, ba + c[active] / 1e6) / LN2
        )
    return cp.Problem(cp.Minimize(tau), cons), b, tau
