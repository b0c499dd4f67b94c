"""The JSON summary of a solve (the keys of ``fedopt solve --format json``, a public contract).

:func:`summarize` picks the summary of the result's family: :func:`plan_summary` for the AirComp
planners and beamforming methods, :func:`tsfa_summary` for the digital ``tsfa``. ``fedopt solve``
prints it and ``fedopt sweep`` keeps its scalar keys as the columns of its table.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["channel_keys", "plan_summary", "tsfa_summary", "summarize"]


def summarize(result, inst, *, seed: int, round_: int = 0, output: Path | None = None,
              channel=None, channel_file: Path | None = None) -> dict:
    """The summary of ``result`` (a :class:`~fedopt.solvers.result.SolveResult` of ``inst``);
    ``channel`` and ``channel_file``: the channel file the solve used instead of a draw."""
    from fedopt.plan import DigitalPlan

    make = tsfa_summary if isinstance(result.solution, DigitalPlan) else plan_summary
    return make(result, inst, seed=seed, round_=round_, output=output, channel=channel,
                channel_file=channel_file)


def channel_keys(seed: int, round_: int, channel=None, channel_file: Path | None = None
                 ) -> dict:
    """Where the channel came from: ``channel_file`` (None for a draw), ``channel_seed`` and
    ``channel_round`` (those of the draw, or those recorded in the file: None when it records
    none). ``seed`` stays the ``--seed`` given: the solver's seed, and the draw's when drawn."""
    if channel is None:
        return {"channel_file": None, "channel_seed": seed, "channel_round": round_}
    return {"channel_file": None if channel_file is None else str(channel_file),
            "channel_seed": channel.seed, "channel_round": channel.round}


def tsfa_summary(result, inst, *, seed: int, round_: int, output: Path | None, channel=None,
                 channel_file: Path | None = None) -> dict:
    """The JSON summary of a TSFA plan (keys are a public contract)."""
    p = result.solution
    meta = p.metadata
    return {
        "method": "tsfa", "status": result.status.value, "message": result.message,
        "instance": inst.name, "rank": p.rank, "seed": seed, "round": round_,
        **channel_keys(seed, round_, channel, channel_file),
        "algorithm": inst.algorithm, "payload_reals": int(inst.payload(p.rank)),
        "objective": result.objective, "bound_terms": dict(result.terms),
        "bandwidth_hz": p.bandwidth_hz.tolist(), "sparsity": p.sparsity.tolist(),
        "kept_components": meta["kept_components"], "latency_s": meta["latency_s"],
        "expected_latency_s": meta["expected_latency_s"],
        "latency_budget_s": meta["latency_budget_s"],
        "expected_latency_per_rank_s": dict(zip(
            [str(r) for r in meta["selection"]["ranks"]],
            meta["selection"]["expected_latency_s"], strict=True)),
        "wall_time_s": result.wall_time_s,
        "plan": str(output) if output is not None else None,
    }



def plan_summary(result, inst, *, seed: int, round_: int, output: Path | None, channel=None,
                 channel_file: Path | None = None) -> dict:
    """The JSON summary of a planner result (keys are a public contract)."""
    p = result.solution
    meta = p.metadata
    mse = result.objective_per_subcarrier
    bound = result.bound_per_subcarrier
    return {
        "method": result.method,
        "status": result.status.value,
        "message": result.message,
        "instance": inst.name,
        "rank": p.rank,
        "streams": p.streams,
        "algorithm": inst.algorithm,
        "payload_reals": int(inst.payload(p.rank)),
        "seed": seed,
        "round": round_,
        **channel_keys(seed, round_, channel, channel_file),
        "gap": result.objective,
        "gap_terms": dict(result.terms),
        "objective": float(mse.sum()),
        "mse": mse.tolist(),
        "lower_bound": bound.tolist(),
        "lower_bound_kind": meta.get("lower_bound_kind", "single-device"),
        "bound_ratio": (mse / bound).tolist(),
        "airtime_s": meta["airtime_s"],
        "latency_s": meta["latency_s"],
        "latency_budget_s": meta["latency_budget_s"],
        "energy_j_max": meta["energy_j_max"],
        "energy_j_mean": meta["energy_j_mean"],
        "beamforming_method": meta["beamforming_method"],
        "search": meta["search"],
        "beamforming_solves": meta["beamforming_solves"],
        "iterations": result.iterations,
        "wall_time_s": result.wall_time_s,
        "plan": str(output) if output is not None else None,
    }
