"""The one solver contract: one registry that every front door reads, ``solve`` for every
``fedopt solve --method``, typed plans, honest statuses, SolverRun's timing and stopping."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.plan import AirCompPlan, DigitalPlan
from fedopt.solvers import METHODS, SolveResult, SolverRun, Status, solve
from fedopt.solvers.beamforming import METHODS as BEAMFORMERS
from fedopt.solvers.registry import names
from fedopt.solvers.validation import valid_methods

#: cheap options per method where the default would be slow (the contract is what is tested)
CHEAP = {"sdr": {"randomizations": 10}, "tsfa": {"samples": 5}}


def test_every_front_door_reads_the_registry():
    from fedopt.cli.solve_cmd import Method

    assert [m.value for m in Method] == list(METHODS)  # the CLI's --method choices
    assert names("beamforming") == list(BEAMFORMERS)  # one row per beamforming method
    assert set(valid_methods()) == {*names("planner"), *names("beamforming"), "ideal",
                                    "digital"}
    assert set(names()) == set(METHODS) and "tsfa" in names("digital")


@pytest.mark.parametrize("method", list(METHODS))
def test_solve_takes_every_method(small_instance, method):
    res = solve(small_instance, method, seed=1, **CHEAP.get(method, {}))
    assert isinstance(res, SolveResult) and res.method == method and res.success
    plan = res.solution
    assert isinstance(plan, DigitalPlan if METHODS[method].family == "digital" else AirCompPlan)
    plan.check(small_instance)
    assert res.wall_time_s > 0 and np.isfinite(res.objective)
    if isinstance(plan, AirCompPlan):
        # the plan's own power scales reproduce the MSEs the solver reported: MSE_m = σ² c_m²
        np.testing.assert_allclose(plan.mse_per_subcarrier(small_instance.noise_power_w),
                                   res.objective_per_subcarrier, rtol=1e-12)
        # the plan names the method that ran: "auto" is multicast at L = 1, manifold above
        want = METHODS[method].beamforming
        if want == "auto":
            want = "multicast" if plan.streams == 1 else "beamforming"
        assert plan.beamforming_method == want
        assert plan.metadata["lower_bound_kind"] == (
            "sdr-dual" if want == "multicast" else "sdr" if want == "sdr" else "single-device")


def test_unknown_and_misplaced_methods_are_named_errors(small_instance):
    with pytest.raises(InvalidArgumentError, match=r"method: got 'nope', must be one of "
                                                   r"airfl-lora, alternating"):
        solve(small_instance, "nope")
    from fedopt.solvers.planner import plan

    with pytest.raises(InvalidArgumentError, match=r"'tsfa' is a digital method"):
        plan(small_instance, "tsfa")
    with pytest.raises(InvalidArgumentError, match=r"search: got 'greedy'"):
        plan(small_instance, search="greedy")
    with pytest.raises(InvalidArgumentError, match=r"rng: got -1"):
        plan(small_instance, rng=-1)


@pytest.mark.parametrize("method", ["airfl-lora", "exhaustive", "alternating", "random-plan"])
def test_optimal_only_when_search_and_beamformers_are_certified(small_instance, method):
    res = solve(small_instance, method, seed=0)
    certified = all(h["beamforming_status"] == "optimal" for h in res.history)
    exact = METHODS[method].search in ("bnb", "exhaustive")
    assert (res.status is Status.OPTIMAL) == (exact and certified), res.message
    if not exact:
        assert res.status is Status.CONVERGED and "heuristic" in res.message


def test_tsfa_offline_stage_is_an_estimate(small_instance):
    res = solve(small_instance, "tsfa", samples=5, rank=2)
    assert res.status is Status.ESTIMATED  # a Monte-Carlo expected latency certifies nothing
    assert res.solution.rank == 2


def test_a_callback_stops_the_planner(small_instance):
    seen = []

    def stop_at_first(record):
        seen.append(record)
        return True

    res = solve(small_instance, "exhaustive", seed=0, callback=stop_at_first)
    assert res.status is Status.STOPPED and res.message.endswith("stopped by the callback")
    # progress records (what starts, n/N, the smoothing stages) come before and during the
    # solve; a stop asked for there takes effect after it, like one asked for after it
    steps = [r for r in seen if "label" not in r]
    assert len(steps) == 1 == res.iterations  # one beamforming solve, then it stopped
    assert steps[0]["streams"] == max(small_instance.aircomp.streams)
    assert seen[-1] is steps[0] and all("label" in r for r in seen[:-1])


def test_solver_run_owns_clock_history_and_stop():
    calls = []
    run = SolverRun("x", callback=lambda r: calls.append(r) or r.get("k") == 2, options={"a": 1})
    assert not run.record({"k": 1}) and run.record({"k": 2}) and run.stopped
    res = run.result(np.zeros(2), 3.0, status=Status.CONVERGED, message="done", iterations=2)
    assert res.status is Status.STOPPED and res.message == "done; stopped by the callback"
    assert res.history == [{"k": 1}, {"k": 2}] == calls and res.options == {"a": 1}
    assert res.objective == 3.0 and res.wall_time_s >= 0
    # a run nobody stopped keeps its status; an infeasible one is never relabelled
    assert SolverRun("y").result(None, 0.0, status=Status.OPTIMAL, message="m").status \
        is Status.OPTIMAL
    quiet = SolverRun("z", callback=lambda r: True)
    quiet.record({})
    assert quiet.result(None, np.inf, status=Status.INFEASIBLE, message="m").status \
        is Status.INFEASIBLE
