"""One builder from (Plan, Instance) to a federated run (spec 05): the LoRA model, the
aggregator and the per-round adapter. The rank and the streams are read from the plan here and
nowhere else; the model, the aggregator and the controller are told them by this builder only.

- an :class:`~fedopt.plan.AirCompPlan` gives AirComp aggregation through every round's channel
  with the plan's beamforming method re-optimizing the receive beamformers per round;
- a :class:`~fedopt.plan.DigitalPlan` gives TSFA's online sparsity and bandwidth decisions with
  SOFT-sparsified updates over FDMA;
- ``ideal=True`` gives error-free aggregation at the plan's rank (the reference).

The instance's algorithm sets what the aggregators receive: the factors that travel
(``lora.factors``) and the blocks per round (over-the-air Sophia's m and h, each normalized on
its own over the air; over FDMA both sent with the same components).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.errors import PlanError
from fedopt.instance import Instance
from fedopt.plan import AirCompPlan, DigitalPlan, Plan
from fedopt.solvers.validation.adapters import RoundBeamformers, TSFADecisions

__all__ = ["FederatedRun", "build_run"]


@dataclass
class FederatedRun:
    """What one (method, seed) run needs, and the predictions to hold against it.

    Attributes
    ----------
    plan : Plan
        The typed plan the run executes (the main plan for the ideal reference).
    aggregator
        An aggregator of :mod:`fedopt.fl.aggregators`.
    adapter : RoundBeamformers, TSFADecisions or None
        The per-round callable the aggregator calls.
    ideal : bool
        Error-free aggregation (no streams).
    predicted : dict
        The plan's predictions (gap, latency, airtime, energy, Σ_m MSE_m; TSFA's bound).
    """

    plan: Plan
    aggregator: Any
    adapter: RoundBeamformers | TSFADecisions | None = None
    ideal: bool = False
    predicted: dict[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """The LoRA rank r: the plan's."""
        return self.plan.rank

    @property
    def streams(self) -> int | None:
        """The streams L of an AirComp run (None for ideal and digital runs)."""
        return self.plan.streams if isinstance(self.plan, AirCompPlan) and not self.ideal \
            else None

    def lora_model(self, base: Any, recipe: Any, seed: int,
                   algorithm: str = "fedavg") -> tuple[Any, dict[str, Any]]:
        """The base model with LoRA adapters at the plan's rank (``recipe.lora_model``)."""
        return recipe.lora_model(base, self.rank, seed, algorithm)


def build_run(plan: Plan, instance: Instance, *, seed: int, mode: str = "exact",
              tsfa_v: float = 0.01, ideal: bool = False,
              cache: dict[tuple, np.ndarray] | None = None) -> FederatedRun:
    """The run of ``plan`` on ``instance`` for one seed.

    Parameters
    ----------
    plan
        A typed plan (a generic :class:`~fedopt.plan.Plan` is typed by its content).
    seed
        Channel draws of every round (``draw_channel(instance, seed, t)``).
    mode
        AirComp path: ``"exact"`` (symbol level) or ``"equivalent"``.
    tsfa_v
        Lyapunov weight V of TSFA's online stage (digital plans).
    ideal
        Error-free aggregation at the plan's rank instead of the plan's uplink.
    cache
        Beamformer memo shared by the runs of one validation (same chain, same answer).
    """
    plan = plan.typed()
    if ideal:
        from fedopt.fl.aggregators import IdealAggregator

        return FederatedRun(plan, IdealAggregator(), ideal=True,
                            predicted={"latency_s": None, "aggregation_error": 0.0})
    if isinstance(plan, AirCompPlan):
        return _aircomp_run(plan, instance, seed, mode, cache)
    if isinstance(plan, DigitalPlan):
        return _digital_run(plan, instance, seed, tsfa_v)
    raise PlanError(f"plan of method {plan.method!r} has neither receive beamformers nor a "
                    "bandwidth split: it cannot be run over an uplink")


def _blocks(instance: Instance) -> int:
    """Equal parts of one device's payload, each normalized on its own (over-the-air Sophia's m
    and h): the vectors it sends per transmission (MIRA's cluster slots are separate
    transmissions; local training sends nothing)."""
    return max(1, instance.digital_payloads)


def _aircomp_run(plan: AirCompPlan, instance: Instance, seed: int, mode: str,
                 cache: dict | None) -> FederatedRun:
    from fedopt.fl.aggregators import AirCompAggregator

    # the plan's beamformers serve round 0 when they were solved on that very channel
    solved_here = plan.channel_seed == seed and plan.channel_round in (0, None)
    beams = RoundBeamformers(instance, plan.streams, plan.beamforming_method, seed,
                             initial=plan.receive_beamformers if solved_here else None,
                             cache=cache)
    agg = AirCompAggregator(
        lambda t: draw_channel(instance, seed, round=t).H, beams,
        instance.power_per_subcarrier_w, instance.noise_power_w,
        symbol_time_s=instance.symbol_time_s, mode=mode,
        compute_time_s=float(np.max(instance.compute_time_s)),
        blocks=_blocks(instance))
    md = plan.metadata
    predicted = {k: md.get(k) for k in ("gap", "latency_s", "airtime_s", "energy_j_max")}
    predicted["mse_sum"] = (float(plan.mse_per_subcarrier(instance.noise_power_w).sum())
                            if plan.power_scale is not None else md.get("mse_sum"))
    return FederatedRun(plan, agg, adapter=beams, predicted=predicted)


def _digital_run(plan: DigitalPlan, instance: Instance, seed: int, tsfa_v: float
                 ) -> FederatedRun:
    from fedopt.fl.aggregators import DigitalAggregator

    decide = TSFADecisions(instance, plan.rank, seed, V=tsfa_v)
    layers = [(layer.d_out, layer.d_in) for layer in instance.lora.layers
              for _ in range(layer.count)]
    md = plan.metadata
    agg = DigitalAggregator(layers, plan.rank, decide, factors=instance.lora.factors,
                            blocks=_blocks(instance))
    return FederatedRun(plan, agg, adapter=decide,
                        predicted={"latency_s": md.get("expected_latency_s"),
                                   "tsfa_bound": md.get("bound")})
