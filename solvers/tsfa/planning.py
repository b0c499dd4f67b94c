"""The digital-uplink plan of ``fedopt solve --method tsfa`` (spec 04 §3, §5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.digital import kept_components, payload_bits, snr_hz
from fedopt.errors import InvalidArgumentError
from fedopt.instance import Instance
from fedopt.solvers.bandwidth import allocate_min_latency
from fedopt.solvers.result import Callback, SolveResult, SolverRun
from fedopt.solvers.tsfa.offline import RankSelection, select_rank

__all__ = ["plan_tsfa"]

#: The method's name in the registry and in its results.
METHOD = "tsfa"


def plan_tsfa(instance: Instance, *, seed: int = 0, round: int = 0,
              nominal_sparsity: float = 0.0, samples: int = 100,
              avg_latency_budget_s: float | None = None, ranks: Sequence[int] | None = None,
              channel: Any = None, callback: Callback | None = None) -> SolveResult:
    """A digital-uplink plan: the offline rank (:func:`~fedopt.solvers.tsfa.select_rank`) and,
    for the channel of (seed, round), the nominal sparsity and the min-max-latency bandwidth
    split (spec 04 §3, §5).

    Returns a :class:`~fedopt.solvers.result.SolveResult` whose ``solution`` is a
    :class:`~fedopt.plan.DigitalPlan` (rank, ``bandwidth_hz``, ``sparsity``; streams = 1, no
    beamformers) with the expected latency per rank and this round's latency in its metadata;
    ``objective`` and ``terms`` are the SOFT/TSFA bound at the chosen rank; the status is the
    offline stage's (``ESTIMATED``: the rank rests on a Monte-Carlo estimate of the latency).
    ``ranks`` restricts the candidates (one rank fixes it); ``channel`` replaces the drawn
    round; ``callback`` is passed to :func:`~fedopt.solvers.tsfa.select_rank` (one record per
    candidate rank).
    """
    from fedopt.plan import DigitalPlan

    if instance.devices.energy_budget_j is not None:
        raise InvalidArgumentError(
            "devices.energy_budget_j: the tsfa method plans latency and bandwidth only and "
            "does not model the devices' energy, so it cannot honour a per-round energy "
            "budget; remove devices.energy_budget_j for tsfa, or plan the AirComp uplink "
            "(airfl-lora), whose planner enforces it")
    run = SolverRun(METHOD, options={"nominal_sparsity": nominal_sparsity, "samples": samples,
                                     "seed": seed, "round": round})
    sel = select_rank(instance, avg_latency_budget_s=avg_latency_budget_s,
                      nominal_sparsity=nominal_sparsity, samples=samples, seed=seed, ranks=ranks,
                      callback=callback)
    choice: RankSelection = sel.solution
    r = choice.rank
    m = int(kept_components(r, choice.nominal_sparsity))
    k = instance.n_devices
    c = snr_hz(instance, channel if channel is not None else draw_channel(instance, seed,
                                                                          round=round))
    alloc = allocate_min_latency(np.full(k, float(payload_bits(instance, r, m))),
                                 instance.compute_time_s, c, instance.bandwidth_hz).solution
    i = int(np.flatnonzero(choice.ranks == r)[0])
    metadata = {"bound": sel.objective, "bound_terms": dict(sel.terms),
                "latency_s": alloc.latency_s, "expected_latency_s": float(
                    choice.expected_latency_s[i]), "latency_budget_s": choice.budget_s,
                "kept_components": m, "selection": choice.to_dict()}
    plan = DigitalPlan(method="tsfa", rank=r, streams=1, bandwidth_hz=alloc.bandwidth_hz,
                       sparsity=np.full(k, 1.0 - m / r),
                       instance_name=instance.name, instance_digest=instance.digest(),
                       channel_seed=None if channel is not None else seed,
                       channel_round=None if channel is not None else round,
                       metadata=metadata)
    run.options["nominal_sparsity"] = choice.nominal_sparsity
    return run.result(
        plan, sel.objective, status=sel.status, message=sel.message + f"; round {round}: "
        f"min-max latency {alloc.latency_s:.4g} s", terms=dict(sel.terms),
        iterations=sel.iterations, evaluations=sel.evaluations + 1, history=sel.history)
