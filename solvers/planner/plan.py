"""The AirFL-LoRA planner (spec 04 §2 on spec 03 §1): rank, streams and receive beamformers
minimizing the predicted gap, by one of the searches of :mod:`~fedopt.solvers.planner.search`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedopt.channel import Channel, draw_channel
from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.gap_models import TERM_NAMES, AirFLGap
from fedopt.instance import Instance
from fedopt.plan import AirCompPlan
from fedopt.solvers.planner.blocks import (
    check_latency_feasible,
    energy_per_device,
    feasible_latency,
    infeasible_message,
)
from fedopt.solvers.planner.search import EXACT_SEARCHES, SEARCHES, StreamSearch
from fedopt.solvers.registry import Method, get
from fedopt.solvers.result import Callback, SolveResult, SolverRun, Status

__all__ = ["plan"]


def plan(
    instance: Instance,
    method: str = "airfl-lora",
    *,
    channel: Channel | None = None,
    seed: int = 0,
    round: int = 0,
    ranks: Sequence[int] | None = None,
    streams: Sequence[int] | None = None,
    rank: int | None = None,
    beamforming: str | None = None,
    gap: AirFLGap | None = None,
    search: str | None = None,
    rng: np.random.Generator | int | None = None,
    callback: Callback | None = None,
    **beamforming_options: Any,
) -> SolveResult:
    """Choose rank, streams and beamformers minimizing the AirFL-LoRA gap (spec 04 §2).

    Parameters
    ----------
    instance
        The network-design instance.
    method
        A planner or beamforming method of :data:`fedopt.solvers.registry.METHODS`:
        ``"airfl-lora"`` (bound-pruned search, manifold beamformers), ``"alternating"`` (the
        backtracking alternating search of spec 04 §2), ``"exhaustive"`` (every (r, L)),
        ``"fixed-rank"`` (``rank`` given, or the largest candidate; best L and
        beamformers), ``"single-stream"`` (L = 1), ``"centroid-plan"`` / ``"random-plan"``
        (centroid / random beamformers, best r and L), or a beamforming method (one L:
        ``streams`` or the largest; the rank block picks r).
    channel, seed, round
        The channel (default: draw (seed, round) of the instance).
    ranks, streams
        Candidate sets (default: the instance's).
    rank
        Fixed rank (``fixed-rank`` and the beamforming methods); validated against the layers.
    beamforming
        Override of the beamforming method used by the search.
    gap, search
        Gap model (default ``AirFLGap(instance)``); override of the method's search
        (``"alternating"``, ``"bnb"`` or ``"exhaustive"``).
    rng
        Seed or generator for the beamforming solver (default: ``seed``); same seed, same plan.
    callback
        Called with a record after each beamforming solve (streams, rank, gap, ...), and with
        progress records (``label``, and ``done``/``total`` stream counts where the search
        knows them in advance) before each solve and after each of its smoothing stages; True
        stops the search after the current solve.

    Returns
    -------
    SolveResult
        ``solution``: the :class:`~fedopt.plan.AirCompPlan`; ``objective``: the gap G(r, L);
        ``terms``: its named terms; ``objective_per_subcarrier``/``bound_per_subcarrier``:
        MSE_m and its lower bound at the chosen L (``bound_kind`` names it; ``bound`` is None,
        so ``ratio`` is None: the gap has no bound, ``ratio_per_subcarrier`` is MSE_m over its
        bound); ``iterations``: beamforming solves;
        ``history``: one record per beamforming solve. Status ``OPTIMAL`` when an exact search
        (bnb, exhaustive) ran on certified-optimal beamformers, else ``CONVERGED`` (or
        ``STOPPED`` by the callback).

    Raises
    ------
    InfeasibleError
        No candidate (r, L) meets the latency (or energy) budget (the message states the
        smallest achievable latency).
    InvalidArgumentError
        An unknown method or search, or a method that is not a planner or beamforming method.
    """
    spec = _planner_spec(method)
    search_name, bf_method = _search_of(spec, search), beamforming or spec.beamforming
    channel = channel if channel is not None else draw_channel(instance, seed=seed, round=round)
    channel.check(instance)
    cand_r, cand_l = _candidates(instance, spec, ranks, streams, rank)
    scalars = {k: v for k, v in beamforming_options.items() if isinstance(v, (int, float, str))}
    run = SolverRun(method, callback=callback, options={
        "ranks": cand_r, "streams": cand_l, "beamforming": bf_method, "search": search_name,
        **scalars})
    state = StreamSearch(instance, channel, gap or AirFLGap(instance), cand_r, bf_method,
                         seed if rng is None else _base_seed(rng), run, dict(beamforming_options))
    getattr(state, search_name)(cand_l)
    if not state.blocks or all(b.rank is None for b in state.blocks.values()):
        raise InfeasibleError(infeasible_message(instance, cand_r, cand_l))
    return _result(instance, method, state, run, search_name, cand_r, cand_l)


def _planner_spec(method: str) -> Method:
    spec = get(method)
    if spec.family not in ("planner", "beamforming"):
        raise InvalidArgumentError(
            f"method: {method!r} is a {spec.family} method, not an AirComp planner; use "
            "fedopt.solvers.solve(instance, method) for it")
    return spec


def _search_of(spec: Method, search: str | None) -> str:
    if search is None:
        return spec.search
    if search not in SEARCHES:
        raise InvalidArgumentError(f"search: got {search!r}, must be one of {', '.join(SEARCHES)}")
    return search


def _candidates(instance: Instance, spec: Method, ranks: Sequence[int] | None,
                streams: Sequence[int] | None, rank: int | None) -> tuple[list[int], list[int]]:
    """The candidate ranks and stream counts, validated, with the method's restrictions."""
    cand_r = sorted(ranks if ranks is not None else instance.lora.ranks)
    for r in cand_r:
        instance.validate_rank(r)
    cand_l = sorted(streams if streams is not None else spec.streams or instance.aircomp.streams)
    for s in cand_l:
        instance.validate_streams(s)
    if spec.single_l:
        cand_l = [cand_l[-1]]  # beamforming methods solve one L: the largest candidate
    if rank is not None:
        cand_r = [instance.validate_rank(rank)]
    elif spec.fixed_rank:
        # the largest candidate rank that some stream count can deliver within the budget
        ok = [r for r in cand_r if feasible_latency(instance, r, cand_l)]
        cand_r = [ok[-1] if ok else cand_r[0]]
    check_latency_feasible(instance, cand_r, cand_l)
    return cand_r, cand_l


def _status(state: StreamSearch, search: str, best_l: int) -> tuple[Status, str]:
    """OPTIMAL only when the search is exact and every solved L's beamformers are certified (an
    uncertified L might hide a better plan); CONVERGED otherwise."""
    chosen = state.solved[best_l].result.status
    certified = all(s.result.status is Status.OPTIMAL for s in state.solved.values())
    if search in EXACT_SEARCHES and certified and chosen is Status.OPTIMAL:
        return Status.OPTIMAL, "certified optimal over the candidates (exact search, " \
                               "beamformers meet their lower bounds)"
    why = ("the alternating search is a heuristic over L" if search not in EXACT_SEARCHES
           else "the beamformers are not certified optimal")
    return Status.CONVERGED, f"not certified: {why}"


def _result(instance: Instance, method: str, state: StreamSearch, run: SolverRun, search: str,
            cand_r: list[int], cand_l: list[int]) -> SolveResult:
    """Package the best (r, L) as an AirCompPlan and its SolveResult."""
    blocks = state.blocks
    best_l = min(blocks, key=lambda s: (blocks[s].gap, -s))
    block, chosen = blocks[best_l], state.solved[best_l].result
    r_star = block.rank
    energy = energy_per_device(instance, state.problem(best_l), chosen.solution, r_star, best_l)
    mse = chosen.objective_per_subcarrier
    metadata = {
        "gap": block.gap, "gap_terms": block.terms,
        "latency_s": float(instance.aircomp_latency_s(r_star, best_l)),
        "airtime_s": float(instance.airtime_s(r_star, best_l)),
        "latency_budget_s": instance.constraints.latency_budget_s,
        "energy_j_max": float(energy.max()), "energy_j_mean": float(energy.mean()),
        "mse_sum": float(mse.sum()), "beamforming_method": chosen.method,
        "lower_bound_kind": chosen.bound_kind or "single-device",
        "search": search, "beamforming_solves": len(state.solved),
        "pruned_streams": {str(k): v for k, v in state.pruned.items()},
    }
    plan_obj = AirCompPlan(
        method=method, rank=r_star, streams=best_l, receive_beamformers=chosen.solution,
        power_scale=np.sqrt(mse / instance.noise_power_w), beamforming_method=chosen.method,
        instance_name=instance.name, instance_digest=instance.digest(),
        channel_seed=state.channel.seed, channel_round=state.channel.round, metadata=metadata)
    status, why = _status(state, search, best_l)
    msg = (f"{search} search over L ∈ {cand_l} and r ∈ {cand_r} with {chosen.method} "
           f"beamformers: r = {r_star}, L = {best_l}, {len(state.solved)} beamforming solve(s); "
           f"{why}")
    return run.result(
        plan_obj, block.gap, status=status, message=msg, objective_per_subcarrier=mse,
        terms={k: block.terms[k] for k in TERM_NAMES},
        # the objective is the gap, the bounds are on the MSEs: no total bound, so `ratio` is
        # None; `ratio_per_subcarrier` pairs MSE_m with its bound
        bound=None, bound_per_subcarrier=chosen.bound_per_subcarrier,
        bound_kind=chosen.bound_kind,
        iterations=len(state.solved),
        evaluations=sum(s.result.evaluations for s in state.solved.values()))


def _base_seed(rng: np.random.Generator | int) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer)) or rng < 0:
        raise InvalidArgumentError(f"rng: got {rng!r}, must be a numpy Generator or an integer "
                                   ">= 0")
    return int(rng)
