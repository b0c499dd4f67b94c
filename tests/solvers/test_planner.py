"""The rank / streams / beamforming planner (spec 04 §2 on the gap of spec 03 §1).

Oracles: the exhaustive search over every (r, L) (bnb must equal it exactly, alternating come
within 1 %), brute-force loops over ranks for the rank block and the energy budget, the
per-configuration ``evaluate``, the latency formula of spec 01 §5, and the comparative statics
of spec 03 §1 (r* grows with P and with N_r).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import make_instance
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from fedopt.channel import Channel, draw_channel
from fedopt.cli.main import app
from fedopt.errors import InfeasibleError
from fedopt.gap_models import TERM_NAMES, AirFLGap
from fedopt.instance import Instance
from fedopt.solvers.beamforming import BEAMFORMING_METHODS
from fedopt.solvers.planner import (
    PLAN_METHODS,
    SEARCHES,
    beamformers_for,
    energy_per_device,
    evaluate,
    plan,
    rank_block,
)
from fedopt.solvers.problem import BeamformingProblem

# a cheap SDR: the latency test only needs a feasible plan from it
OPTIONS = {"sdr": {"randomizations": 20}}


_variant = make_instance


@pytest.fixture
def wide(small_dict) -> Instance:
    """``small`` with one 64 × 64 layer group and ranks 1..64, no latency budget: r* can move
    across the whole range as P or N_r change."""
    return _variant(small_dict, lora={"layers": [{"name": "q", "d_out": 64, "d_in": 64,
                                                  "count": 2}],
                                      "ranks": [1, 2, 4, 8, 16, 32, 64]}, constraints=None)


@pytest.fixture
def search_cases(small_dict) -> dict[str, Instance]:
    """Instances for the search comparison: 2 to 4 stream counts, a binding latency budget (the
    best plan needs L = 2), a wall-clock budget (rounds couple to L), and low power."""
    streams4 = {"streams": [1, 2, 3, 4]}
    return {
        "small": Instance.from_dict(small_dict),
        "nt4": _variant(small_dict, devices={"n_tx": 4}, aircomp=streams4),
        "nt4-total-time": _variant(small_dict, devices={"n_tx": 4, "p_max_dbm": [30, 33, 27]},
                                   aircomp=streams4, constraints={"total_time_s": 2.0}),
        "nt3-nr6-latency": _variant(small_dict, server={"n_rx": 6},
                                    devices={"n_tx": 3, "p_max_dbm": [30, 33, 27]},
                                    aircomp={"streams": [1, 2, 3]},
                                    constraints={"latency_budget_s": 0.021}),
        "nt4-low-power": _variant(small_dict, devices={"n_tx": 4, "p_max_dbm": [0, 3, -3]},
                                  aircomp=streams4, constraints=None),
    }


def _streams_of(instance: Instance, method: str) -> tuple[int, ...]:
    """The stream counts a method considers (spec of plan())."""
    if method in ("single-stream", "sdr", "multicast"):
        return (1,)
    if method in BEAMFORMING_METHODS:
        return (max(instance.aircomp.streams),)
    return instance.aircomp.streams


# ------------------------------------------------------------------------------------------
# comparative statics (spec 03 §1, §5)
# ------------------------------------------------------------------------------------------
def test_best_rank_grows_with_transmit_power(wide):
    p_dbm = np.asarray(wide.devices.p_max_dbm)
    ch = draw_channel(wide, seed=1)  # power does not enter the channel draw
    ranks = []
    for offset in (-20, -10, -5, 0, 5, 10, 20, 30):
        res = plan(wide.with_devices(p_max_dbm=list(p_dbm + offset)), "exhaustive", channel=ch,
                   seed=1)
        ranks.append(res.solution.rank)
    assert ranks == sorted(ranks), ranks
    assert ranks[0] <= 2 and ranks[-1] == 64  # the whole candidate range is crossed


def test_best_rank_grows_with_receive_antennas(wide, small_dict):
    n_rx = (2, 3, 4, 6, 8)
    for offset, seed in ((-20.0, 3), (-10.0, 3), (0.0, 4)):
        p_dbm = list(np.asarray(wide.devices.p_max_dbm) + offset)
        big = _variant(wide.to_dict(), server={"n_rx": max(n_rx)}, devices={"p_max_dbm": p_dbm})
        h = draw_channel(big, seed=seed).H  # nested channels: N_r antennas are the first N_r
        ranks, gaps = [], []
        for nr in n_rx:
            inst = _variant(big.to_dict(), server={"n_rx": nr})
            res = plan(inst, "exhaustive", channel=Channel(H=h[:, :, :nr, :]), seed=seed)
            ranks.append(res.solution.rank)
            gaps.append(res.objective)
        assert ranks == sorted(ranks), (offset, ranks)
        # more antennas on the same channel never hurt: the gap falls (strictly, measured)
        assert np.all(np.diff(gaps) < 0), (offset, gaps)
        assert ranks[-1] > ranks[0], (offset, ranks)  # and r* really moves


# ------------------------------------------------------------------------------------------
# searches: bnb = exhaustive, alternating ≈ exhaustive
# ------------------------------------------------------------------------------------------
def test_searches_against_the_exhaustive_oracle(search_cases):
    solves = {s: 0 for s in SEARCHES}
    for name, inst in search_cases.items():
        for seed in (0, 1):
            res = {s: plan(inst, "exhaustive", search=s, seed=seed) for s in SEARCHES}
            exh, bnb, alt = res["exhaustive"], res["bnb"], res["alternating"]
            case = (name, seed)
            # bnb: exactly the oracle (same per-(seed, L) beamforming generator, same arithmetic)
            assert (bnb.solution.rank, bnb.solution.streams) == (exh.solution.rank,
                                                                 exh.solution.streams), case
            assert bnb.objective == exh.objective, case
            assert bnb.terms == exh.terms, case
            assert_array_equal(bnb.solution.receive_beamformers,
                               exh.solution.receive_beamformers)
            # alternating: within 1 % (spec 04 §2 asks to report the excess; measured 0), and
            # never better than the oracle beyond solver noise (warm starts, rel 1e-9)
            excess = alt.objective / exh.objective - 1
            assert -1e-9 <= excess <= 0.01, (case, excess)
            # solve counts: exhaustive one per L, bnb at most that
            assert exh.iterations == len(inst.aircomp.streams), case
            assert 1 <= bnb.iterations <= exh.iterations, case
            assert 1 <= alt.iterations <= exh.iterations, case
            for r in res.values():
                assert r.iterations == r.solution.metadata["beamforming_solves"] == len(
                    r.history)
                solves[r.options["search"]] += r.iterations
    assert solves["bnb"] < solves["exhaustive"], solves  # pruning pays off on these cases
    # the best L is not always 1 on these cases (the search over L matters)
    assert any(plan(inst, seed=0).solution.streams > 1 for inst in search_cases.values())


def test_plan_gap_equals_evaluate(search_cases):
    for name in ("small", "nt4-total-time", "nt3-nr6-latency"):
        inst = search_cases[name]
        for seed in (0, 3):
            res = plan(inst, seed=seed)
            p = res.solution
            a = evaluate(inst, p.rank, p.streams, seed=seed)
            b = evaluate(inst, p.rank, p.streams, seed=seed, beamformers=p.receive_beamformers)
            for ev in (a, b):
                # rel 1e-12: the plan sums MSE_m inside the solver, evaluate recomputes them
                assert ev.gap == pytest.approx(res.objective, rel=1e-12), (name, seed)
                for t in TERM_NAMES:
                    assert ev.gap_terms[t] == pytest.approx(res.terms[t], rel=1e-12)
                assert ev.latency_s == p.metadata["latency_s"] and ev.feasible
            assert_array_equal(a.mse, b.mse)  # same beamformers: the plan's


# ------------------------------------------------------------------------------------------
# constraints
# ------------------------------------------------------------------------------------------
ALL_METHODS = [*PLAN_METHODS, *BEAMFORMING_METHODS]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_plan_meets_the_latency_budget(small_dict, method):
    # 18.5 ms: rank ≤ 2 at L = 1 and rank ≤ 4 at L = 2 (the unconstrained best is rank 8)
    inst = _variant(small_dict, constraints={"latency_budget_s": 0.0185})
    res = plan(inst, method, seed=2, **OPTIONS.get(method, {}))
    p = res.solution
    lat = p.metadata["latency_s"]
    assert lat == inst.aircomp_latency_s(p.rank, p.streams)
    assert lat <= 0.0185, (method, p.rank, p.streams, lat)
    assert p.streams in _streams_of(inst, method)
    assert res.status.solution_present
    free = plan(_variant(small_dict, constraints=None), "exhaustive", seed=2)
    assert free.solution.metadata["latency_s"] > 0.0185  # the budget binds


def _message_latency(message: str) -> float:
    m = re.search(r"smallest achievable round latency is ([0-9.eE+-]+) s", message)
    assert m, message
    return float(m.group(1))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_unmeetable_budget_raises_with_the_smallest_latency(small_dict, method):
    inst = _variant(small_dict, constraints={"latency_budget_s": 0.001})  # < compute time
    with pytest.raises(InfeasibleError) as info:
        plan(inst, method, seed=0, **OPTIONS.get(method, {}))
    streams = _streams_of(inst, method)
    want = min(float(inst.aircomp_latency_s(r, s)) for r in inst.lora.ranks for s in streams)
    # rel 5e-4: the message prints 4 significant digits
    assert _message_latency(str(info.value)) == pytest.approx(want, rel=5e-4)
    assert "constraints.latency_budget_s" in str(info.value)
    if method in PLAN_METHODS and method != "single-stream":  # every (r, L) is a candidate
        assert want == min(float(inst.aircomp_latency_s(r, s)) for r in inst.lora.ranks
                           for s in inst.aircomp.streams)


def test_unmeetable_energy_budget_raises(small_dict):
    inst = _variant(small_dict, devices={"energy_budget_j": 1e-12})
    with pytest.raises(InfeasibleError, match="energy_budget_j") as info:
        plan(inst, seed=0)
    want = min(float(inst.aircomp_latency_s(r, s)) for r in inst.lora.ranks
               for s in inst.aircomp.streams)
    assert _message_latency(str(info.value)) == pytest.approx(want, rel=5e-4)  # 4 digits


def test_unmeetable_budget_via_the_cli(tmp_path, small_dict):
    path = _variant(small_dict, constraints={"latency_budget_s": 0.001}).save(
        tmp_path / "tight.yaml")
    inst = Instance.load(path)
    want = min(float(inst.aircomp_latency_s(r, s)) for r in inst.lora.ranks
               for s in inst.aircomp.streams)
    for extra in ([], ["--format", "json"], ["--method", "exhaustive"]):
        res = CliRunner().invoke(app, ["solve", str(path), "-q", *extra])
        assert res.exit_code == 2, res.output
        assert isinstance(res.exception, SystemExit)  # no uncaught exception
        assert "Traceback" not in res.output
        assert res.output.startswith("error: constraints.latency_budget_s")
        assert _message_latency(res.output) == pytest.approx(want, rel=5e-4)  # 4 digits


def _brute_force_rank(gap, inst, ranks, streams, mse_sum, power_w=None):
    best = (np.inf, None)
    budget = inst.constraints.latency_budget_s
    for r in ranks:
        if budget is not None and inst.aircomp_latency_s(r, streams) > budget:
            continue
        if power_w is not None and np.any(
                inst.airtime_s(r, streams) * power_w > np.asarray(inst.devices.energy_budget_j)):
            continue
        g = float(gap.total(r, streams, mse_sum))
        if g < best[0]:
            best = (g, r)
    return best


@pytest.mark.parametrize("budget", [None, 0.0185, 0.021])
def test_rank_block_is_the_feasible_argmin(small_dict, budget):
    inst = _variant(small_dict, constraints=None if budget is None else
                    {"latency_budget_s": budget})
    gap = AirFLGap(inst)
    ranks = inst.lora.ranks
    chosen = set()
    for streams in (1, 2):
        for mse_sum in (1e-5, 3e-4, 1e-3, 1e-2, 0.1, 1.0):
            block = rank_block(gap, inst, ranks, streams, mse_sum)
            g, r = _brute_force_rank(gap, inst, ranks, streams, mse_sum)
            assert block.rank == r and block.gap == g, (streams, mse_sum)
            assert sum(block.terms.values()) == pytest.approx(g, rel=1e-15)  # re-summed
            chosen.add(r)
    assert len(chosen) >= 3  # the MSEs above move the argmin across the ranks


def test_energy_budget_limits_the_rank(small_dict):
    free = Instance.from_dict(small_dict)
    seed = 0
    ch = draw_channel(free, seed=seed)
    unconstrained = plan(free, "exhaustive", channel=ch, seed=seed)
    assert unconstrained.solution.rank == 8
    # per-device budgets 1 % above what rank 2 at L = 2 needs: rank 4 (twice the airtime)
    # is out at L = 2, and at L = 1 the airtime is even longer
    problems = {s: BeamformingProblem.from_instance(free, ch, s) for s in (1, 2)}
    beams = {s: beamformers_for(free, s, channel=ch, seed=seed) for s in (1, 2)}
    budget = 1.01 * energy_per_device(free, problems[2], beams[2], 2, 2)
    inst = _variant(small_dict, devices={"energy_budget_j": budget.tolist()})
    res = plan(inst, "exhaustive", channel=ch, seed=seed)
    p = res.solution
    assert p.rank <= 2
    used = energy_per_device(inst, problems[p.streams], p.receive_beamformers, p.rank, p.streams)
    assert np.all(used <= np.asarray(inst.devices.energy_budget_j))
    # brute force over (r, L) with the same beamformers: the plan is the feasible argmin
    gap = AirFLGap(inst)
    best = min((*_brute_force_rank(
        gap, inst, inst.lora.ranks, s, float(problems[s].objective(beams[s]).sum()),
        power_w=energy_per_device(inst, problems[s], beams[s], 1, s) / inst.airtime_s(1, s)),
        s) for s in (1, 2))
    assert (p.rank, p.streams) == (best[1], best[2])
    assert res.objective == pytest.approx(best[0], rel=1e-12)  # rel 1e-12: MSE re-summed
    assert res.objective > unconstrained.objective


# ------------------------------------------------------------------------------------------
# restricted planners and baselines
# ------------------------------------------------------------------------------------------
def test_fixed_rank_and_single_stream(small_dict):
    inst = Instance.from_dict(small_dict)
    for rank in (1, 2, 4, 8):
        res = plan(inst, "fixed-rank", rank=rank, seed=0)
        assert res.solution.rank == rank and res.options["ranks"] == [rank]
        ref = min(evaluate(inst, rank, s, seed=0).gap for s in inst.aircomp.streams)
        assert res.objective == pytest.approx(ref, rel=1e-12)  # rel 1e-12: MSE re-summed
    # default: the largest candidate that some L delivers within the budget
    tight = _variant(small_dict, constraints={"latency_budget_s": 0.0185})
    assert plan(tight, "fixed-rank", seed=0).solution.rank == 4
    single = plan(inst, "single-stream", seed=0)
    assert single.solution.streams == 1 and single.options["streams"] == [1]
    assert single.solution.receive_beamformers.shape[2] == 1


def test_baseline_plans_are_no_better_than_the_manifold_plan(small_dict):
    inst = Instance.from_dict(small_dict)
    for seed in (0, 1, 2):
        ch = draw_channel(inst, seed=seed)
        best = plan(inst, "exhaustive", channel=ch, seed=seed).objective
        for method in ("centroid-plan", "random-plan"):
            res = plan(inst, method, channel=ch, seed=seed)
            # rel 1e-9: the manifold solver starts from the centroid and keeps its best point,
            # so only rounding could put the baseline ahead (measured: centroid ≥ +4e-5)
            assert res.objective >= best * (1 - 1e-9), (seed, method)
        assert plan(inst, "random-plan", channel=ch, seed=seed).objective > 1.05 * best


# ------------------------------------------------------------------------------------------
# determinism and the CLI summary
# ------------------------------------------------------------------------------------------
def test_same_seed_same_plan(search_cases):
    inst = search_cases["nt4-total-time"]
    for method in ("airfl-lora", "alternating", "random-plan"):
        a, b = plan(inst, method, seed=7), plan(inst, method, seed=7)
        assert a.solution.to_dict() == b.solution.to_dict()
        for name in ("receive_beamformers", "power_scale"):
            assert_array_equal(getattr(a.solution, name), getattr(b.solution, name))
        assert a.objective == b.objective and a.terms == b.terms and a.history == b.history
    other = plan(inst, seed=8)
    assert not np.array_equal(other.solution.receive_beamformers,
                              plan(inst, seed=7).solution.receive_beamformers)


def test_solve_json_summary(tmp_path, small_instance):
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["solve", "small", "--seed", "3", "--format", "json", "-o",
                                   str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    for key in ("rank", "streams", "gap_terms", "gap", "latency_s", "method", "status",
                "objective", "wall_time_s", "mse", "lower_bound"):
        assert key in s, key
    assert tuple(s["gap_terms"]) == TERM_NAMES
    assert s["method"] == "airfl-lora" and s["search"] == "bnb"
    # rel 1e-12: terms summed in another order than the total
    assert s["gap"] == pytest.approx(sum(s["gap_terms"].values()), rel=1e-12)
    assert s["objective"] == pytest.approx(sum(s["mse"]), rel=1e-12)  # same, for Σ_m MSE_m
    assert len(s["mse"]) == len(s["lower_bound"]) == 4
    assert np.all(np.asarray(s["mse"]) >= np.asarray(s["lower_bound"]) * (1 - 1e-9))  # bound
    ref = plan(small_instance, seed=3)
    assert (s["rank"], s["streams"], s["gap"]) == (ref.solution.rank, ref.solution.streams,
                                                   ref.objective)
    assert s["latency_s"] == ref.solution.metadata["latency_s"] <= 0.1


def test_a_plan_divides_nothing_by_an_unrelated_bound(small_instance):
    # the plan's objective is the gap, its bounds are on the MSEs: before issue 17 `ratio` was
    # the gap over the MSE bound's total (45,696 on `small`); now there is no total bound and
    # the per-subcarrier ratio is MSE_m over its certified bound (≥ 1 up to rounding)
    res = plan(small_instance, seed=3)
    assert res.bound is None and res.ratio is None
    ratio = res.ratio_per_subcarrier
    np.testing.assert_allclose(ratio, res.objective_per_subcarrier / res.bound_per_subcarrier,
                               rtol=1e-15)
    assert np.all(ratio >= 1 - 1e-9) and res.bound_kind == "sdr-dual"


def test_the_infeasible_message_names_energy_only_when_a_budget_is_set(small_instance):
    from fedopt.solvers.planner.blocks import infeasible_message

    plain = infeasible_message(small_instance, [1, 2], [1])
    assert "energy" not in plain and "constraints.latency_budget_s" in plain
    budgeted = infeasible_message(small_instance.with_devices(energy_budget_j=1e-3), [1, 2], [1])
    assert "devices.energy_budget_j" in budgeted
