"""The planner's blocks (spec 04 §2): what one stream count costs, and its best feasible rank.

In this model the beamformers depend on L only: the power constraint is per symbol (spec 02 §1),
so neither the rank nor the round's airtime enters the beamforming problem, and the optional
per-round energy budget E_k ≥ S(r, L) T_sym Σ_m ‖B_{k,m}‖² only restricts r for given
beamformers. Hence one beamforming solve per stream count suffices, and for fixed L the gap is a
cheap closed form in r: the rank block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt import aircomp
from fedopt.errors import InfeasibleError
from fedopt.gap_models import AirFLGap
from fedopt.instance import Instance
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult

__all__ = ["RankBlock", "StreamSolution", "check_latency_feasible", "energy_per_device",
           "feasible_latency", "infeasible_message", "rank_block", "transmit_power_w"]

#: relative slack on a latency budget (a plan exactly at the budget meets it)
_BUDGET_RTOL = 1e-12


@dataclass(frozen=True)
class StreamSolution:
    """The beamforming block's output for one stream count."""

    streams: int
    result: SolveResult

    @property
    def mse_sum(self) -> float:
        """Σ_m MSE_m at full power."""
        return float(self.result.objective)


@dataclass(frozen=True)
class RankBlock:
    """The best feasible rank for one L and its MSEs (spec 04 §2 step 3).

    Attributes
    ----------
    ranks, gaps, latency_s, feasible : ndarray
        Per candidate rank (sorted): the gap G(r, L), the round latency and feasibility.
    rank : int or None
        The feasible argmin of the gap (None when no rank is feasible).
    gap : float
        Its gap (inf when none is feasible).
    terms : dict
        The gap's named terms at ``rank``.
    """

    ranks: np.ndarray
    gaps: np.ndarray
    latency_s: np.ndarray
    feasible: np.ndarray
    rank: int | None = None
    gap: float = np.inf
    terms: dict[str, float] = field(default_factory=dict)


def transmit_power_w(problem: BeamformingProblem, A: np.ndarray) -> np.ndarray:
    """Σ_m ‖B_{k,m}‖_F² per device (watts), ZF precoders scaled to the power limit, shape (K,)."""
    _, B = aircomp.zf_design(A, problem.H, problem.phi, problem.p_sub)
    return np.sum(np.abs(B) ** 2, axis=(1, 2, 3))


def energy_per_device(instance: Instance, problem: BeamformingProblem, A: np.ndarray,
                      rank: Any, streams: int) -> np.ndarray:
    """Transmit energy per round E_k = S(r, L) T_sym Σ_m ‖B_{k,m}‖_F² (spec 01 §5), shape
    (K,) for a scalar rank or (len(ranks), K)."""
    airtime = np.asarray(instance.airtime_s(np.asarray(rank), streams), dtype=float)
    return airtime[..., None] * transmit_power_w(problem, A)


def rank_block(gap: AirFLGap, instance: Instance, ranks: Sequence[int], streams: int,
               mse_sum: float, power_w: np.ndarray | None = None) -> RankBlock:
    """Best feasible rank for fixed L and MSEs, by vectorized enumeration (spec 04 §2 step 3).

    Feasible: round latency ≤ ``constraints.latency_budget_s`` and, when devices have
    ``energy_budget_j`` and ``power_w`` (Σ_m ‖B_{k,m}‖² per device, :func:`transmit_power_w`)
    is given, S(r, L) T_sym Σ_m ‖B_{k,m}‖² ≤ E_k.
    """
    r = np.asarray(sorted(ranks))
    totals = gap.total(r, streams, mse_sum)
    latency = np.asarray(instance.aircomp_latency_s(r, streams), dtype=float)
    feasible = np.ones(r.shape, dtype=bool)
    budget = instance.constraints.latency_budget_s
    if budget is not None:
        feasible &= latency <= budget * (1 + _BUDGET_RTOL)
    e_budget = instance.devices.energy_budget_j
    if e_budget is not None and power_w is not None:
        energy = instance.airtime_s(r, streams)[:, None] * power_w[None, :]
        feasible &= np.all(energy <= np.asarray(e_budget)[None, :], axis=1)
    block = RankBlock(ranks=r, gaps=totals, latency_s=latency, feasible=feasible)
    if not feasible.any():
        return block
    i = int(np.flatnonzero(feasible)[np.argmin(totals[feasible])])
    terms = {k: float(v) for k, v in gap.terms(r[i], streams, mse_sum).items()}
    return RankBlock(ranks=r, gaps=totals, latency_s=latency, feasible=feasible, rank=int(r[i]),
                     gap=float(totals[i]), terms=terms)


def feasible_latency(instance: Instance, rank: int, streams: Sequence[int]) -> bool:
    """True when some stream count delivers ``rank`` within the latency budget."""
    budget = instance.constraints.latency_budget_s
    return budget is None or any(
        float(instance.aircomp_latency_s(rank, s)) <= budget * (1 + _BUDGET_RTOL)
        for s in streams)


def _smallest_latency(instance: Instance, ranks: Sequence[int], streams: Sequence[int]
                      ) -> tuple[float, int, int]:
    return min((float(instance.aircomp_latency_s(r, s)), r, s) for r in ranks for s in streams)


def check_latency_feasible(instance: Instance, ranks: Sequence[int],
                           streams: Sequence[int]) -> None:
    """Raise :class:`InfeasibleError` (with the smallest achievable latency) when no candidate
    (r, L) meets ``constraints.latency_budget_s``."""
    budget = instance.constraints.latency_budget_s
    if budget is None:
        return
    lat, r, s = _smallest_latency(instance, ranks, streams)
    if lat > budget * (1 + _BUDGET_RTOL):
        raise InfeasibleError(
            f"constraints.latency_budget_s: {budget:g} s cannot be met by any candidate; the "
            f"smallest achievable round latency is {lat:.4g} s (rank {r}, {s} streams: compute "
            f"{float(np.max(instance.compute_time_s)):.4g} s + airtime "
            f"{float(instance.airtime_s(r, s)):.4g} s). Raise the budget to at least {lat:.4g} s, "
            "or allow smaller ranks / more streams."
        )


def infeasible_message(instance: Instance, ranks: Sequence[int], streams: Sequence[int]) -> str:
    """The message of a search that found no feasible (r, L) (energy budgets included)."""
    lat, r, s = _smallest_latency(instance, ranks, streams)
    if instance.devices.energy_budget_j is None:
        return (f"no (rank, streams) candidate meets the latency budget; the smallest "
                f"achievable round latency is {lat:.4g} s (rank {r}, {s} streams); check "
                "constraints.latency_budget_s")
    return (f"no (rank, streams) candidate meets the latency and energy budgets; the smallest "
            f"achievable round latency is {lat:.4g} s (rank {r}, {s} streams); check "
            "devices.energy_budget_j and constraints.latency_budget_s")
