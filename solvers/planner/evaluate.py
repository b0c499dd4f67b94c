"""The gap of one configuration (r, L) (``fedopt gap``), with the beamformers the planner uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.channel import Channel, draw_channel
from fedopt.gap_models import AirFLGap
from fedopt.instance import Instance
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.bounds import single_device_bound
from fedopt.solvers.planner.search import stream_rng
from fedopt.solvers.problem import BeamformingProblem

__all__ = ["Evaluation", "beamformers_for", "evaluate"]

#: relative slack on the latency budget (as the planner's rank block)
_BUDGET_RTOL = 1e-12


@dataclass(frozen=True)
class Evaluation:
    """The predicted gap of one configuration (spec 03 §1) and what it costs.

    Attributes
    ----------
    rank, streams : int
        The configuration (r, L).
    gap : float
        G(r, L) = the sum of ``gap_terms``.
    gap_terms : dict
        The named terms (contraction, sampling_noise, aggregation_distortion, rank_truncation).
    latency_s, airtime_s : float
        Round latency and AirComp airtime (spec 01 §5).
    feasible : bool
        Whether the latency meets ``constraints.latency_budget_s``.
    mse, lower_bound : ndarray
        MSE_m of the beamformers and the single-device lower bound, per subcarrier.
    """

    rank: int
    streams: int
    gap: float
    gap_terms: dict[str, float]
    latency_s: float
    airtime_s: float
    feasible: bool
    mse: np.ndarray = field(repr=False)
    lower_bound: np.ndarray = field(repr=False)

    @property
    def mse_sum(self) -> float:
        """Σ_m MSE_m."""
        return float(np.sum(self.mse))

    def to_dict(self) -> dict[str, Any]:
        """The ``fedopt gap --format json`` record: everything but the per-subcarrier arrays,
        plus ``mse_sum``."""
        return {"rank": self.rank, "streams": self.streams, "gap": self.gap,
                "gap_terms": dict(self.gap_terms), "latency_s": self.latency_s,
                "airtime_s": self.airtime_s, "feasible": self.feasible,
                "mse_sum": self.mse_sum}


def beamformers_for(instance: Instance, streams: int, *, channel: Channel, seed: int = 0,
                    beamforming: str = "auto", **beamforming_options: Any) -> np.ndarray:
    """The beamformers :func:`~fedopt.solvers.planner.plan` uses for L streams on ``channel``
    with seed ``seed``."""
    problem = BeamformingProblem.from_instance(instance, channel, streams)
    return solve_beamforming(problem, beamforming, rng=stream_rng(seed, streams),
                             **beamforming_options).solution


def evaluate(instance: Instance, rank: int, streams: int, *, channel: Channel | None = None,
             seed: int = 0, round: int = 0, beamformers: np.ndarray | None = None,
             beamforming: str = "auto", gap: AirFLGap | None = None,
             **beamforming_options: Any) -> Evaluation:
    """The gap of one configuration (r, L): with given beamformers, or the ones
    ``beamforming`` finds for L on the channel (same seed → the same as in the planner)."""
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
    return Evaluation(rank=rank, streams=streams, gap=float(sum(terms.values())),
                      gap_terms=terms, latency_s=latency,
                      airtime_s=float(instance.airtime_s(rank, streams)),
                      feasible=budget is None or latency <= budget * (1 + _BUDGET_RTOL),
                      mse=mse, lower_bound=single_device_bound(problem))
