"""TSFA's offline stage (spec 04 §5): the rank.

For every candidate rank r, the expected min-max round latency E[τ*(r)] is estimated by
Monte-Carlo over ``samples`` block-fading rounds, every device sending m = ⌈(1 − ρ_nom) r⌉
components with the min-latency bandwidth split (spec 04 §3). Among the ranks with
E[τ*(r)] ≤ T̄ the one minimizing the SOFT/TSFA bound (spec 03 §3) at the nominal drop error is
chosen: r_max when the budget is loose, smaller ranks as it tightens. The latencies being
sampled, the answer is optimal for the estimate only (status ``ESTIMATED``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.digital import kept_components, payload_bits, snr_hz
from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.gap_models.tsfa import TSFABound
from fedopt.instance import Instance
from fedopt.solvers.bandwidth import allocate_min_latency
from fedopt.solvers.result import Callback, SolveResult, SolverRun, Status
from fedopt.solvers.tsfa.inputs import check_budget, check_count, check_sparsity

__all__ = ["RankSelection", "select_rank"]

#: The stage's name in its results.
METHOD = "tsfa-offline"


@dataclass(frozen=True, eq=False)
class RankSelection:
    """The offline stage's answer and what it saw.

    Attributes
    ----------
    rank : int
        The chosen rank r.
    ranks : ndarray (R,)
        Candidate ranks, ascending.
    kept : ndarray (R,)
        m = ⌈(1 − ρ_nom) r⌉ of each candidate.
    expected_latency_s : ndarray (R,)
        Monte-Carlo mean of the min-max round latency τ*(r).
    latency_stderr_s : ndarray (R,)
        Standard error of that mean (0 with one sample).
    bound : ndarray (R,)
        SOFT/TSFA bound at the nominal drop error.
    feasible : ndarray of bool (R,)
        E[τ*(r)] ≤ T̄.
    budget_s : float
        T̄.
    nominal_sparsity : float
        ρ_nom.
    samples : int
        Channel rounds averaged.
    """

    rank: int
    ranks: np.ndarray
    kept: np.ndarray
    expected_latency_s: np.ndarray
    latency_stderr_s: np.ndarray
    bound: np.ndarray
    feasible: np.ndarray
    budget_s: float
    nominal_sparsity: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        return {"rank": int(self.rank), "ranks": [int(x) for x in self.ranks],
                "kept": [int(x) for x in self.kept],
                "expected_latency_s": [float(x) for x in self.expected_latency_s],
                "latency_stderr_s": [float(x) for x in self.latency_stderr_s],
                "bound": [float(x) for x in self.bound],
                "feasible": [bool(x) for x in self.feasible],
                "budget_s": float(self.budget_s),
                "nominal_sparsity": float(self.nominal_sparsity), "samples": int(self.samples)}


def select_rank(instance: Instance, *, avg_latency_budget_s: float | None = None,
                nominal_sparsity: float = 0.0, samples: int = 100, seed: int = 0,
                ranks: Sequence[int] | None = None, bound: TSFABound | None = None,
                callback: Callback | None = None) -> SolveResult:
    """Offline stage of TSFA (spec 04 §5): the rank minimizing the SOFT/TSFA bound whose expected
    round latency meets the average budget.

    For each candidate r: E[τ*(r)] = (1/N) Σ_t τ*_t(r), the min-max latency of round t
    (:func:`~fedopt.solvers.bandwidth.allocate_min_latency`) with every device sending
    m = ⌈(1 − ρ_nom) r⌉ components over the channel ``draw_channel(instance, seed, round=t)``,
    t = 0..N−1; and G(r) = ``bound.total(r, mean_drop_error=bound.nominal_drop_error(r,
    ρ_nom))``. The answer is argmin {G(r) : E[τ*(r)] ≤ T̄} (ties to the larger rank).

    Parameters
    ----------
    instance
        Devices, channel statistics, LoRA layers, bandwidth ``instance.bandwidth_hz``.
    avg_latency_budget_s
        T̄ (default ``constraints.avg_latency_budget_s``, else ``constraints.latency_budget_s``).
    nominal_sparsity
        ρ_nom ∈ [0, 1).
    samples
        Channel rounds N of the Monte-Carlo estimate.
    seed
        Channel seed.
    ranks
        Candidate ranks (default ``instance.lora.ranks``).
    bound
        The bound (default ``TSFABound(instance)``).
    callback
        ``callback(record) -> bool | None`` after each candidate rank (ascending), with
        ``rank``, ``kept``, ``expected_latency_s``, ``latency_stderr_s``, ``bound`` and
        ``feasible``; True stops: the answer is chosen among the ranks estimated so far (status
        ``STOPPED``).

    Returns
    -------
    SolveResult
        ``solution``: a :class:`RankSelection`; ``objective``: G(r*); ``terms``: its named terms;
        ``status``: ``ESTIMATED`` (optimal for the Monte-Carlo estimate of the latencies, which
        carries sampling error: see ``latency_stderr_s``); ``evaluations``: bandwidth allocations
        solved; ``history``: the callback's records.

    Raises
    ------
    InfeasibleError
        If no candidate meets T̄; the message gives the smallest expected latency and its rank.
    InvalidArgumentError
        No budget, ρ_nom outside [0, 1), samples < 1.
    """
    budget = check_budget(instance, avg_latency_budget_s)
    rho = check_sparsity(nominal_sparsity)
    samples = check_count(samples, "samples")
    cand = _candidates(instance, ranks)
    bound = bound if bound is not None else TSFABound(instance)
    run = SolverRun(METHOD, callback=callback,
                    options={"avg_latency_budget_s": budget, "nominal_sparsity": rho,
                             "samples": samples, "seed": seed, "ranks": list(cand)})
    sel, drop = _estimate(instance, cand, rho, samples, seed, bound, budget, run)
    i = _choose(sel, instance.bandwidth_hz, stopped=run.stopped)
    sel = replace(sel, rank=int(sel.ranks[i]))
    terms = {name: float(v) for name, v in bound.terms(sel.rank, drop[i]).items()}
    msg = (f"rank {sel.rank} (of {cand}): smallest bound {sel.bound[i]:.6g} among the "
           f"{int(sel.feasible.sum())} rank(s) with E[τ*] ≤ T̄ = {budget:.6g} s "
           f"(E[τ*(r*)] = {sel.expected_latency_s[i]:.6g} s, Monte-Carlo over {samples} "
           "rounds)")
    return run.result(sel, float(sel.bound[i]), status=Status.ESTIMATED, message=msg,
                      terms=terms, iterations=samples, evaluations=samples * len(sel.ranks))


def _candidates(instance: Instance, ranks: Sequence[int] | None) -> list[int]:
    """The candidate ranks, validated, unique and ascending."""
    cand = sorted({instance.validate_rank(r) for r in (ranks if ranks is not None
                                                       else instance.lora.ranks)})
    if not cand:
        raise InvalidArgumentError("ranks: got an empty list; give at least one candidate rank")
    return cand


def _latency_samples(instance: Instance, payload: float, snrs: np.ndarray) -> np.ndarray:
    """τ*_t of every round t when every device sends ``payload`` bits (shape (N,))."""
    k = instance.n_devices
    tc, total = instance.compute_time_s, instance.bandwidth_hz
    return np.array([allocate_min_latency(np.full(k, payload), tc, c, total).objective
                     for c in snrs])


def _estimate(instance: Instance, cand: list[int], rho: float, samples: int, seed: int,
              bound: TSFABound, budget: float, run: SolverRun
              ) -> tuple[RankSelection, np.ndarray]:
    """The Monte-Carlo estimate of E[τ*(r)] and the bound of every candidate (those the callback
    let through), as a :class:`RankSelection` whose ``rank`` is not chosen yet (-1), and the
    nominal drop errors."""
    r_arr = np.asarray(cand, dtype=np.int64)
    kept = np.asarray(kept_components(r_arr, rho), dtype=np.int64)
    payload = np.asarray(payload_bits(instance, r_arr, kept), dtype=float)
    drop = bound.nominal_drop_error(r_arr, rho)
    totals = np.asarray(bound.total(r_arr, mean_drop_error=drop), dtype=float)
    snrs = [snr_hz(instance, draw_channel(instance, seed, round=t)) for t in range(samples)]
    mean, stderr = np.zeros(len(cand)), np.zeros(len(cand))
    done = 0
    for i, s in enumerate(payload):
        lat = _latency_samples(instance, float(s), snrs)
        mean[i] = lat.mean()
        stderr[i] = lat.std(ddof=1) / math.sqrt(samples) if samples > 1 else 0.0
        done = i + 1
        if run.record({"rank": int(r_arr[i]), "kept": int(kept[i]),
                       "expected_latency_s": float(mean[i]),
                       "latency_stderr_s": float(stderr[i]), "bound": float(totals[i]),
                       "feasible": bool(mean[i] <= budget)}):
            break
    part = slice(0, done)
    sel = RankSelection(rank=-1, ranks=r_arr[part], kept=kept[part],
                        expected_latency_s=mean[part], latency_stderr_s=stderr[part],
                        bound=totals[part], feasible=mean[part] <= budget, budget_s=budget,
                        nominal_sparsity=rho, samples=samples)
    return sel, drop[part]


def _choose(sel: RankSelection, total_hz: float, *, stopped: bool) -> int:
    """Index of argmin {G(r) : E[τ*(r)] ≤ T̄} in ``sel`` (ties to the larger rank).

    Raises InfeasibleError when no candidate meets T̄, naming the smallest expected latency."""
    mean, cand = sel.expected_latency_s, sel.ranks
    if not sel.feasible.any():
        i = int(np.argmin(mean))
        note = (f" (the callback stopped the search after rank {int(cand[-1])})" if stopped
                else "")
        raise InfeasibleError(
            f"average latency budget T̄ = {sel.budget_s:.6g} s is below the smallest expected "
            f"round latency {mean[i]:.6g} s (rank {cand[i]}, m = {sel.kept[i]} of {cand[i]} "
            f"components kept at ρ_nom = {sel.nominal_sparsity:g}; {sel.samples} channel rounds, "
            f"B_tot = {total_hz:g} Hz){note}; raise the budget to at least {mean[i]:.6g} s, "
            "raise nominal_sparsity, add bandwidth or allow a smaller rank"
        )
    masked = np.where(sel.feasible, sel.bound, np.inf)
    return int(np.lexsort((-cand, masked))[0])
