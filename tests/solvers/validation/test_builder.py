"""The one builder from (Plan, Instance) to a run: the rank and the streams come from the plan
alone, the plan's type says which uplink runs, and a plan that says neither is refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import PlanError
from fedopt.fl.aggregators import AirCompAggregator, DigitalAggregator, IdealAggregator
from fedopt.fl.lora import lora_modules
from fedopt.fl.pretrained import base_model
from fedopt.instance import load_instance
from fedopt.plan import AirCompPlan, DigitalPlan, Plan
from fedopt.solvers import solve
from fedopt.solvers.validation import (
    RoundBeamformers,
    TSFADecisions,
    ValidateSettings,
    build_run,
    validate,
)


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


def _ranks_of(model) -> set[int]:
    return {m.rank for m in lora_modules(model).values()}


def test_aircomp_plan_builds_its_rank_and_streams_everywhere(tiny):
    plan = solve(tiny, "fixed-rank", seed=0, rank=4).solution
    assert isinstance(plan, AirCompPlan) and plan.rank == 4
    run = build_run(plan, tiny, seed=0)
    assert isinstance(run.aggregator, AirCompAggregator)
    assert isinstance(run.adapter, RoundBeamformers)
    assert (run.rank, run.streams, run.adapter.streams) == (4, plan.streams, plan.streams)
    assert run.adapter.method == plan.beamforming_method
    # round 0 reuses the plan's beamformers: they were solved on seed 0, round 0
    np.testing.assert_array_equal(run.adapter(0, None), plan.receive_beamformers)
    assert _ranks_of(run.lora_model(base_model(), ValidateSettings(), seed=0)[0]) == {4}
    # the predicted Σ_m MSE_m comes from the plan's power scales and equals the solver's
    assert run.predicted["mse_sum"] == pytest.approx(plan.metadata["mse_sum"], rel=1e-12)
    # on another seed's channels the plan's beamformers do not serve round 0
    assert build_run(plan, tiny, seed=1).adapter.initial is None


def test_digital_plan_builds_tsfa_at_the_plans_rank(tiny):
    plan = solve(tiny, "tsfa", seed=0, samples=3, rank=1).solution
    assert isinstance(plan, DigitalPlan)
    run = build_run(plan, tiny, seed=0)
    assert isinstance(run.aggregator, DigitalAggregator) and isinstance(run.adapter,
                                                                         TSFADecisions)
    assert run.aggregator.rank == run.adapter.controller.rank == plan.rank == 1
    assert run.streams is None


def test_ideal_reference_and_untyped_plans(tiny):
    plan = solve(tiny, "fixed-rank", seed=0, rank=2).solution
    ideal = build_run(plan, tiny, seed=0, ideal=True)
    assert isinstance(ideal.aggregator, IdealAggregator) and ideal.streams is None
    assert ideal.rank == 2 and ideal.adapter is None
    generic = Plan(**{k: getattr(plan, k) for k in (
        "method", "rank", "streams", "receive_beamformers", "power_scale", "channel_seed",
        "channel_round", "metadata")})
    # typed by content: the method the planner ran (multicast at L = 1)
    assert build_run(generic, tiny, seed=0).adapter.method == plan.beamforming_method
    with pytest.raises(PlanError, match=r"neither receive beamformers nor a bandwidth split"):
        build_run(Plan(method="x", rank=1, streams=1), tiny, seed=0)


def test_callback_sees_every_round_and_can_stop_the_validation(tiny):
    seen = []

    def stop_after_three(record):
        seen.append(record)
        return len(seen) == 3

    settings = ValidateSettings(rounds=2, seeds=(0,), eval_every=1, eval_batches=1,
                                mode="equivalent")
    rep = validate(tiny, baselines=("ideal",), settings=settings, callback=stop_after_three)
    assert [r["done"] for r in seen] == [1, 2, 3] and {r["total"] for r in seen} == {4}
    assert rep.stopped and rep.to_dict()["stopped"] is True
    ideal = rep.methods["ideal"]["seeds"][0]
    assert ideal["rounds"] == 1 and ideal["completed"] is False  # stopped after its round 1
