"""Joint rank / streams / beamforming planner for AirFL-LoRA (spec 04 §2 on spec 03 §1).

Decision variables: LoRA rank r ∈ R, streams L ∈ {candidate L}, receive beamformers {A_m}.
In this model the beamformers depend on L only: the power constraint is per symbol (spec 02 §1),
so neither the rank nor the round's airtime enters the beamforming problem, and the optional
per-round energy budget E_k ≥ S(r, L) T_sym Σ_m ‖B_{k,m}‖² only restricts r for given
beamformers. Hence one beamforming solve per stream count suffices, and for fixed L the gap is a
cheap closed form in r (the rank block).

Searches:

- ``alternating`` (spec 04 §2): start at the largest L, solve its beamformers and its best
  feasible rank; then try L − 1 (warm start: drop the weakest column of each A_m), accept while the
  gap decreases and stop at the first increase.
- ``bnb``: branch and bound over L. The single-device bound of every MSE_m (spec 02 §5) gives
  a lower bound on the gap at each L; L values are visited by increasing bound and skipped once
  their bound cannot beat the best gap found. Exact (always equals ``exhaustive``), and usually
  one or two beamforming solves. This is what ``airfl-lora`` uses.
- ``exhaustive``: every L, every r — the oracle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt import aircomp
from fedopt.channel import Channel, draw_channel
from fedopt.errors import InfeasibleError
from fedopt.gap_models import TERM_NAMES, AirFLGap
from fedopt.instance import Instance
from fedopt.plan import Plan
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.bounds import single_device_bound
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult, Status

__all__ = ["PLAN_METHODS", "SEARCHES", "StreamSolution", "beamformers_for", "energy_per_device",
           "evaluate", "plan", "rank_block", "stream_rng", "transmit_power_w"]

#: planner methods: name → (search, beamforming method, restrictions)
PLAN_METHODS: dict[str, dict[str, Any]] = {
    "airfl-lora": {"search": "bnb", "beamforming": "beamforming"},
    "alternating": {"search": "alternating", "beamforming": "beamforming"},
    "exhaustive": {"search": "exhaustive", "beamforming": "beamforming"},
    "fixed-rank": {"search": "exhaustive", "beamforming": "beamforming", "fixed_rank": True},
    "single-stream": {"search": "exhaustive", "beamforming": "beamforming", "streams": (1,)},
    "centroid-plan": {"search": "exhaustive", "beamforming": "centroid"},
    "random-plan": {"search": "exhaustive", "beamforming": "random"},
}


#: searches over (r, L): the spec's alternating one, an exact bound-pruned one, the oracle
SEARCHES = ("alternating", "bnb", "exhaustive")


@dataclass(frozen=True)
class StreamSolution:
    """The beamforming block's output for one stream count."""

    streams: int
    result: SolveResult

    @property
    def mse_sum(self) -> float:
        """Σ_m MSE_m at full power."""
        return float(self.result.objective)


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
               mse_sum: float, power_w: np.ndarray | None = None) -> dict[str, Any]:
    """Best feasible rank for fixed L and MSEs, by vectorized enumeration (spec 04 §2 step 3).

    Feasible: round latency ≤ ``constraints.latency_budget_s`` and, when devices have
    ``energy_budget_j`` and ``power_w`` (Σ_m ‖B_{k,m}‖² per device, :func:`transmit_power_w`)
    is given, S(r, L) T_sym Σ_m ‖B_{k,m}‖² ≤ E_k. Returns a dict with ``rank``,
    ``gap``, ``terms``, the per-rank arrays and the feasibility mask (rank None if none is
    feasible).
    """
    r = np.asarray(sorted(ranks))
    totals = gap.total(r, streams, mse_sum)
    latency = np.asarray(instance.aircomp_latency_s(r, streams), dtype=float)
    feasible = np.ones(r.shape, dtype=bool)
    budget = instance.constraints.latency_budget_s
    if budget is not None:
        feasible &= latency <= budget * (1 + 1e-12)
    e_budget = instance.devices.energy_budget_j
    if e_budget is not None and power_w is not None:
        energy = instance.airtime_s(r, streams)[:, None] * power_w[None, :]
        feasible &= np.all(energy <= np.asarray(e_budget)[None, :], axis=1)
    out: dict[str, Any] = {"ranks": r, "gaps": totals, "latency_s": latency,
                           "feasible": feasible, "rank": None, "gap": np.inf, "terms": {}}
    if feasible.any():
        i = int(np.flatnonzero(feasible)[np.argmin(totals[feasible])])
        out.update(rank=int(r[i]), gap=float(totals[i]),
                   terms={k: float(v) for k, v in gap.terms(r[i], streams, mse_sum).items()})
    return out


def _drop_weakest_column(A: np.ndarray) -> np.ndarray:
    """Warm start for L − 1: drop, per subcarrier, the column with the largest norm (the
    costliest stream, since optimal column norms grow as the stream's eigenvalue falls)."""
    norms = np.sum(np.abs(A) ** 2, axis=1)  # (M, L)
    weakest = np.argmax(norms, axis=1)
    keep = np.ones(norms.shape, dtype=bool)
    keep[np.arange(A.shape[0]), weakest] = False
    return A[np.broadcast_to(keep[:, None, :], A.shape)].reshape(A.shape[0], A.shape[1], -1)


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
    callback: Callable[[dict], bool | None] | None = None,
    **beamforming_options: Any,
) -> SolveResult:
    """Choose rank, streams and beamformers minimizing the AirFL-LoRA gap (spec 04 §2).

    Parameters
    ----------
    instance
        The network-design instance.
    method
        ``"airfl-lora"`` (bound-pruned search, manifold beamformers), ``"alternating"`` (the
        backtracking alternating search of spec 04 §2), ``"exhaustive"`` (every (r, L)),
        ``"fixed-rank"`` (``rank`` given, or the largest candidate; best L and
        beamformers), ``"single-stream"`` (L = 1), ``"centroid-plan"`` / ``"random-plan"``
        (centroid / random beamformers, best r and L), or a beamforming method of
        :data:`solvers.beamforming.BEAMFORMING_METHODS` (one L: ``streams`` or the largest;
        the rank block picks r).
    channel, seed, round
        The channel (default: draw (seed, round) of the instance).
    ranks, streams
        Candidate sets (default: the instance's).
    rank
        Fixed rank (``fixed-rank`` and the beamforming methods); validated against the layers.
    beamforming
        Override of the beamforming method used by the search.
    gap
        Gap model (default ``AirFLGap(instance)``).
    search
        Override of the method's search: ``"alternating"``, ``"bnb"`` or ``"exhaustive"``.
    rng
        Seed or generator for the beamforming solver (default: ``seed``); same seed, same plan.
    callback
        Called with a record after each beamforming solve; True stops the search.

    Returns
    -------
    SolveResult
        ``solution``: the :class:`~fedopt.plan.Plan`; ``objective``: the gap G(r, L);
        ``terms``: its named terms; ``objective_per_subcarrier``/``bound_per_subcarrier``:
        MSE_m and its lower bound at the chosen L; ``iterations``: beamforming solves;
        ``history``: one record per beamforming solve.

    Raises
    ------
    InfeasibleError
        If no candidate (r, L) meets the latency (or energy) budget; the message states the
        smallest achievable latency.
    """
    from fedopt.solvers.beamforming import BEAMFORMING_METHODS

    t0 = time.perf_counter()
    if method in PLAN_METHODS:
        spec = dict(PLAN_METHODS[method])
    elif method in BEAMFORMING_METHODS:
        spec = {"search": "exhaustive", "beamforming": method, "single_l": True}
        if method == "sdr":
            spec["streams"] = (1,)  # the SDR baseline solves L = 1 only (spec 02 §4)
    else:
        valid = ", ".join([*PLAN_METHODS, *BEAMFORMING_METHODS])
        raise ValueError(f"method: got {method!r}, must be one of {valid}")
    base_seed = seed if rng is None else _base_seed(rng)
    bf_method = beamforming or spec["beamforming"]
    if search is not None:
        if search not in SEARCHES:
            raise ValueError(f"search: got {search!r}, must be one of {', '.join(SEARCHES)}")
        spec["search"] = search
    gap = gap or AirFLGap(instance)
    channel = channel if channel is not None else draw_channel(instance, seed=seed, round=round)
    channel.check(instance)

    cand_r = sorted(ranks if ranks is not None else instance.lora.ranks)
    for r in cand_r:
        instance.validate_rank(r)
    cand_l = sorted(streams if streams is not None else spec.get("streams",
                                                                  instance.aircomp.streams))
    for s in cand_l:
        instance.validate_streams(s)
    if spec.get("single_l"):
        cand_l = [cand_l[-1]]  # beamforming methods solve one L: the largest candidate
    if rank is not None:
        cand_r = [instance.validate_rank(rank)]
    elif spec.get("fixed_rank"):
        # the largest candidate rank that some stream count can deliver within the budget
        ok = [r for r in cand_r if _feasible_latency(instance, r, cand_l)]
        cand_r = [ok[-1] if ok else cand_r[0]]
    _check_latency_feasible(instance, cand_r, cand_l)

    solved: dict[int, StreamSolution] = {}
    blocks: dict[int, dict[str, Any]] = {}
    history: list[dict[str, Any]] = []
    stopped = False

    def solve_streams(n_streams: int, init: np.ndarray | None) -> dict[str, Any]:
        nonlocal stopped
        if n_streams not in solved:
            problem = BeamformingProblem.from_instance(instance, channel, n_streams)
            kwargs = dict(beamforming_options)
            if bf_method == "beamforming" and init is not None:
                kwargs["init"] = init
            res = solve_beamforming(problem, bf_method, rng=stream_rng(base_seed, n_streams),
                                    **kwargs)
            solved[n_streams] = StreamSolution(n_streams, res)
            power_w = (transmit_power_w(problem, res.solution)
                       if instance.devices.energy_budget_j is not None else None)
            blocks[n_streams] = rank_block(gap, instance, cand_r, n_streams,
                                           solved[n_streams].mse_sum, power_w)
            rec = {"streams": n_streams, "rank": blocks[n_streams]["rank"],
                   "gap": blocks[n_streams]["gap"], "mse_sum": solved[n_streams].mse_sum,
                   "beamforming_status": res.status.value}
            history.append(rec)
            if callback is not None and callback(rec):
                stopped = True
        return blocks[n_streams]

    pruned: dict[int, float] = {}
    if spec["search"] == "exhaustive":
        for n_streams in reversed(cand_l):
            solve_streams(n_streams, None)
            if stopped:
                break
    elif spec["search"] == "bnb":
        # G is increasing in Σ_m MSE_m, so the single-device bound on each MSE_m gives a lower
        # bound G_lb(L) on the best gap at L (constraints that depend on the beamformers are
        # relaxed, which only lowers it). Visit L by increasing G_lb and skip every L whose
        # G_lb cannot beat the best gap found: same answer as exhaustive, fewer solves.
        lower = {}
        for n_streams in cand_l:
            bound = single_device_bound(BeamformingProblem.from_instance(instance, channel,
                                                                         n_streams))
            lower[n_streams] = rank_block(gap, instance, cand_r, n_streams,
                                          float(bound.sum()))["gap"]
        for n_streams in sorted(cand_l, key=lambda s: (lower[s], -s)):
            best_gap = min((b["gap"] for b in blocks.values()), default=np.inf)
            if lower[n_streams] >= best_gap or np.isinf(lower[n_streams]):
                pruned[n_streams] = lower[n_streams]
                continue
            solve_streams(n_streams, None)
            if stopped:
                break
    else:  # alternating with backtracking over L (spec 04 §2)
        current = cand_l[-1]
        solve_streams(current, None)
        while not stopped:
            lower = [s for s in cand_l if s < current]
            if not lower:
                break
            nxt = lower[-1]
            init = solved[current].result.solution
            init = _drop_weakest_column(init) if init.shape[2] == current and (
                current - nxt == 1) else None
            solve_streams(nxt, init)
            if blocks[nxt]["gap"] < blocks[current]["gap"]:
                current = nxt
            elif np.isinf(blocks[current]["gap"]) and np.isinf(blocks[nxt]["gap"]):
                current = nxt  # neither feasible yet: keep descending
            else:
                break

    if not blocks or all(b["rank"] is None for b in blocks.values()):
        raise InfeasibleError(_infeasible_message(instance, cand_r, cand_l))
    best_l = min(blocks, key=lambda s: (blocks[s]["gap"], -s))
    block = blocks[best_l]
    chosen = solved[best_l].result
    r_star = block["rank"]
    problem = BeamformingProblem.from_instance(instance, channel, best_l)
    energy = energy_per_device(instance, problem, chosen.solution, r_star, best_l)
    mse = chosen.objective_per_subcarrier
    latency = float(instance.aircomp_latency_s(r_star, best_l))
    metadata = {
        "gap": block["gap"], "gap_terms": block["terms"],
        "latency_s": latency, "airtime_s": float(instance.airtime_s(r_star, best_l)),
        "latency_budget_s": instance.constraints.latency_budget_s,
        "energy_j_max": float(energy.max()), "energy_j_mean": float(energy.mean()),
        "mse_sum": float(mse.sum()), "beamforming_method": bf_method,
        "search": spec["search"], "beamforming_solves": len(solved),
        "pruned_streams": {str(k): v for k, v in pruned.items()},
    }
    plan_obj = Plan(method=method, rank=r_star, streams=best_l,
                    receive_beamformers=chosen.solution,
                    power_scale=np.sqrt(mse / instance.noise_power_w),
                    instance_name=instance.name, instance_digest=instance.digest(),
                    channel_seed=channel.seed, channel_round=channel.round, metadata=metadata)
    status = Status.STOPPED if stopped else Status.CONVERGED
    msg = (f"{spec['search']} search over L ∈ {cand_l} and r ∈ {cand_r} with {bf_method} "
           f"beamformers: r = {r_star}, L = {best_l}, {len(solved)} beamforming solve(s)")
    return SolveResult(
        method=method, status=status, message=msg, solution=plan_obj, objective=block["gap"],
        objective_per_subcarrier=mse, terms={k: block["terms"][k] for k in TERM_NAMES},
        bound=chosen.bound, bound_per_subcarrier=chosen.bound_per_subcarrier,
        iterations=len(solved), evaluations=sum(s.result.evaluations for s in solved.values()),
        wall_time_s=time.perf_counter() - t0,
        options={"ranks": cand_r, "streams": cand_l, "beamforming": bf_method,
                 "search": spec["search"], **{k: v for k, v in beamforming_options.items()
                                              if isinstance(v, (int, float, str))}},
        history=history,
    )


def _base_seed(rng: np.random.Generator | int) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(2**63))
    return int(rng)


def stream_rng(seed: int, streams: int) -> np.random.Generator:
    """The beamforming solver's generator for L streams: depends on (seed, L) only, so a plan's
    beamformers do not depend on the order in which a search visits the stream counts."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(streams),)))


def beamformers_for(instance: Instance, streams: int, *, channel: Channel, seed: int = 0,
                    beamforming: str = "beamforming", **beamforming_options: Any) -> np.ndarray:
    """The beamformers :func:`plan` uses for L streams on ``channel`` with seed ``seed``."""
    problem = BeamformingProblem.from_instance(instance, channel, streams)
    return solve_beamforming(problem, beamforming, rng=stream_rng(seed, streams),
                             **beamforming_options).solution


def evaluate(instance: Instance, rank: int, streams: int, *, channel: Channel | None = None,
             seed: int = 0, round: int = 0, beamformers: np.ndarray | None = None,
             beamforming: str = "beamforming", gap: AirFLGap | None = None,
             **beamforming_options: Any) -> dict[str, Any]:
    """The gap of one configuration (r, L): with given beamformers, or the ones
    ``beamforming`` finds for L on the channel (same seed → the same as in :func:`plan`).

    Returns a dict with ``rank``, ``streams``, ``gap``, ``gap_terms``, ``latency_s``,
    ``airtime_s``, ``feasible``, ``mse`` (per subcarrier) and ``lower_bound``.
    """
    rank = instance.validate_rank(rank)
    streams = instance.validate_streams(streams)
    gap = gap or AirFLGap(instance)
    channel = channel if channel is not None else draw_channel(instance, seed=seed, round=round)
    problem = BeamformingProblem.from_instance(instance, channel, streams)
    if beamformers is None:
        beamformers = beamformers_for(instance, streams, channel=channel, seed=seed,
                                      beamforming=beamforming, **beamforming_options)
    mse = problem.objective(beamformers)
    terms = {k: float(v) for k, v in gap.terms(rank, streams, float(mse.sum())).items()}
    latency = float(instance.aircomp_latency_s(rank, streams))
    budget = instance.constraints.latency_budget_s
    return {"rank": rank, "streams": streams, "gap": float(sum(terms.values())),
            "gap_terms": terms, "latency_s": latency,
            "airtime_s": float(instance.airtime_s(rank, streams)),
            "feasible": budget is None or latency <= budget * (1 + 1e-12),
            "mse": mse, "lower_bound": single_device_bound(problem)}


def _feasible_latency(instance: Instance, rank: int, streams: Sequence[int]) -> bool:
    budget = instance.constraints.latency_budget_s
    return budget is None or any(
        float(instance.aircomp_latency_s(rank, s)) <= budget * (1 + 1e-12) for s in streams)


def _smallest_latency(instance: Instance, ranks: Sequence[int], streams: Sequence[int]
                      ) -> tuple[float, int, int]:
    grid = [(float(instance.aircomp_latency_s(r, s)), r, s) for r in ranks for s in streams]
    return min(grid)


def _check_latency_feasible(instance: Instance, ranks: Sequence[int],
                            streams: Sequence[int]) -> None:
    budget = instance.constraints.latency_budget_s
    if budget is None:
        return
    lat, r, s = _smallest_latency(instance, ranks, streams)
    if lat > budget * (1 + 1e-12):
        raise InfeasibleError(
            f"constraints.latency_budget_s: {budget:g} s cannot be met by any candidate; the "
            f"smallest achievable round latency is {lat:.4g} s (rank {r}, {s} streams: compute "
            f"{float(np.max(instance.compute_time_s)):.4g} s + airtime "
            f"{float(instance.airtime_s(r, s)):.4g} s). Raise the budget to at least {lat:.4g} s, "
            "or allow smaller ranks / more streams."
        )


def _infeasible_message(instance: Instance, ranks: Sequence[int], streams: Sequence[int]) -> str:
    lat, r, s = _smallest_latency(instance, ranks, streams)
    return (f"no (rank, streams) candidate meets the latency and energy budgets; the smallest "
            f"achievable round latency is {lat:.4g} s (rank {r}, {s} streams); check "
            "devices.energy_budget_j and constraints.latency_budget_s")
