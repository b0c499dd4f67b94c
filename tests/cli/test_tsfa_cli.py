"""``fedopt solve --method tsfa`` and ``fedopt tsfa-simulate`` through typer's CliRunner.

Oracles: the digital-uplink physics of spec 01 §4–§5 recomputed from the printed plan (the bands
sum to B_tot and, the allocation being min-max (spec 04 §3), every device finishes exactly at the
reported latency), the average budget of the offline stage (spec 04 §5), the plan file against the
summary, the telescoping bound of the virtual queue, the comparative statics in V claimed by
spec 04 §5, and misuse ending in exit code 2 with a message and no traceback.
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from fedopt.channel import draw_channel
from fedopt.cli.main import app
from fedopt.digital import kept_components, payload_bits, snr_hz
from fedopt.instance import Instance
from fedopt.link import rate_bps
from fedopt.plan import Plan
from fedopt.solvers.bandwidth import allocate_min_latency

#: Monte-Carlo rounds of the offline stage: enough to exercise it, cheap enough for the CLI tests
SAMPLES = 10

#: ``tsfa-simulate --format json`` keys the README documents
SIMULATE_KEYS = {"rounds", "avg_latency_s", "latency_budget_s", "mean_queue", "final_queue",
                 "mean_sparsity", "mean_sparsification_error"}



def _small_file(tmp_path, small_dict, name: str, **constraints) -> tuple[Instance, str]:
    """``small`` (3 devices) with the given constraints only, saved as ``tmp_path/name.yaml``."""
    data = copy.deepcopy(small_dict)
    data["name"] = name
    data["constraints"] = dict(constraints)
    inst = Instance.from_dict(data)
    return inst, str(inst.save(tmp_path / f"{name}.yaml"))


@pytest.fixture
def binding(tmp_path, small_dict) -> tuple[Instance, str]:
    """``small`` with a 45 ms average budget on its 120 kHz: rank 8 sent whole takes ~65 ms per
    round, so at r = 8 the budget binds and the online stage has to sparsify."""
    return _small_file(tmp_path, small_dict, "binding", avg_latency_budget_s=0.045,
                       bandwidth_hz=1.2e5)


# ---------------------------------------------------------------------------------------------
# fedopt solve --method tsfa
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_plan(tmp_path_factory):
    """``solve default --method tsfa --format json -o plan.json`` (seed 0, round 0)."""
    path = tmp_path_factory.mktemp("tsfa") / "plan.json"
    res = CliRunner().invoke(app, ["solve", "default", "--method", "tsfa", "--samples",
                                   str(SAMPLES), "--format", "json", "-q", "-o", str(path)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), path  # stdout only: nothing else may be printed there


def test_solve_tsfa_json_summary(default_plan, default_instance):
    data, path = default_plan
    assert {"method", "status", "rank", "bandwidth_hz", "sparsity", "latency_s", "objective",
            "wall_time_s"} <= set(data)
    k = default_instance.n_devices
    # the rank rests on a Monte-Carlo estimate of the expected latency: "estimated"
    assert data["method"] == "tsfa" and data["status"] == "estimated"
    assert data["rank"] in default_instance.lora.ranks
    assert len(data["bandwidth_hz"]) == k and len(data["sparsity"]) == k
    assert np.all(np.asarray(data["bandwidth_hz"]) > 0)
    assert data["wall_time_s"] >= 0 and data["objective"] > 0
    assert data["plan"] == str(path)


def test_solve_tsfa_bands_fill_the_band_and_equalize_latencies(default_plan, default_instance):
    data, _ = default_plan
    inst = default_instance
    b = np.asarray(data["bandwidth_hz"])
    # the default preset's digital band: constraints.bandwidth_hz = 20 MHz
    assert inst.bandwidth_hz == 2.0e7
    assert_allclose(b.sum(), inst.bandwidth_hz, rtol=1e-9)  # rebalanced to B_tot exactly
    # min-max allocation: every device finishes at τ (spec 04 §3); recompute T_cmp,k + S_k/R_k
    r = data["rank"]
    kept = kept_components(r, np.asarray(data["sparsity"]))
    assert np.all(kept == data["kept_components"])
    c = snr_hz(inst, draw_channel(inst, data["seed"], round=data["round"]))
    latency = inst.compute_time_s + payload_bits(inst, r, kept) / rate_bps(b, c)
    # the allocation solves Σ b_k(τ) = B_tot to 1e-12; one ulp of b moves a latency by less
    assert_allclose(latency, data["latency_s"], rtol=1e-6)
    assert_allclose(latency.max(), data["latency_s"], rtol=1e-12)


def test_solve_tsfa_rank_meets_the_average_budget(default_plan, default_instance):
    data, _ = default_plan
    # the default preset's average budget: constraints.avg_latency_budget_s = 1 s
    assert data["latency_budget_s"] == default_instance.constraints.avg_latency_budget_s == 1.0
    assert data["expected_latency_s"] <= data["latency_budget_s"]
    per_rank = data["expected_latency_per_rank_s"]
    assert per_rank[str(data["rank"])] == data["expected_latency_s"]
    # at ρ_nom = 0 the bound falls with the rank (only ε(r) depends on it), so the offline
    # stage picks the largest rank whose expected latency meets the budget
    ranks = default_instance.lora.ranks
    feasible = [r for r in ranks if per_rank[str(r)] <= data["latency_budget_s"]]
    assert data["rank"] == max(feasible)
    assert data["rank"] < max(ranks)  # on `default` the 1 s budget does bind


def test_solve_tsfa_plan_file(default_plan, default_instance):
    data, path = default_plan
    p = Plan.load(path)
    p.check(default_instance)  # PlanError if it does not fit the instance
    assert p.method == "tsfa" and p.rank == data["rank"] and p.streams == 1
    assert p.receive_beamformers is None
    assert_allclose(p.bandwidth_hz, data["bandwidth_hz"], rtol=0, atol=0)
    assert_allclose(p.sparsity, data["sparsity"], rtol=0, atol=0)
    assert p.instance_digest == default_instance.digest()
    assert (p.channel_seed, p.channel_round) == (0, 0)


def test_solve_tsfa_text_output(invoke):
    res = invoke("solve", "small", "--method", "tsfa", "--samples", SAMPLES, "-q")
    assert res.exit_code == 0, res.output
    assert "tsfa on small: rank r = " in res.stdout and "bandwidth split" in res.stdout


def test_solve_tsfa_nominal_sparsity_drops_components(invoke, default_instance):
    res = invoke("solve", "default", "--method", "tsfa", "--samples", SAMPLES, "--sparsity",
                 0.5, "--format", "json", "-q")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    r = data["rank"]
    assert data["kept_components"] == kept_components(r, 0.5)
    assert_allclose(data["sparsity"], 1 - data["kept_components"] / r, rtol=1e-15)
    assert_allclose(sum(data["bandwidth_hz"]), default_instance.bandwidth_hz, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# fedopt tsfa-simulate
# ---------------------------------------------------------------------------------------------
def _simulate(invoke, source, *args) -> dict:
    res = invoke("tsfa-simulate", source, "--format", "json", "-q", *args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.mark.parametrize("rank, v", [(8, 0.001), (8, 0.01), (4, 1.0)])
def test_simulate_json_and_telescoping_bound(invoke, binding, rank, v):
    inst, path = binding
    rounds = 20
    data = _simulate(invoke, path, "--rank", rank, "--rounds", rounds, "--V", v)
    assert SIMULATE_KEYS <= set(data)
    assert data["rounds"] == rounds and data["rank"] == rank and data["V"] == v
    assert data["latency_budget_s"] == inst.constraints.avg_latency_budget_s
    assert 0 <= data["mean_sparsity"] < 1 and data["mean_sparsification_error"] >= 0
    assert data["mean_queue"] >= 0 and data["final_queue"] >= 0
    # (1/T) Σ_t T(t) ≤ T̄ + Q(T)/T, exactly up to the summation's round-off
    bound = data["latency_budget_s"] + data["final_queue"] / rounds
    assert data["avg_latency_s"] <= bound * (1 + 1e-12)
    assert data["queue_bound_s"] == pytest.approx(bound, rel=1e-15)


def test_simulate_default_preset(invoke):
    data = _simulate(invoke, "default", "--rank", 32, "--rounds", 6, "--V", 0.01)
    assert SIMULATE_KEYS <= set(data)
    assert data["latency_budget_s"] == 1.0
    assert data["avg_latency_s"] <= (data["latency_budget_s"]
                                     + data["final_queue"] / data["rounds"]) * (1 + 1e-12)


def test_larger_v_trades_sparsification_error_for_queue(invoke, binding):
    _, path = binding
    args = ("--rank", 8, "--rounds", 30, "--seed", 0)
    small_v = _simulate(invoke, path, *args, "--V", 0.001)
    large_v = _simulate(invoke, path, *args, "--V", 0.01)
    # spec 04 §5: as V grows the average sparsification error falls and the queue grows
    assert large_v["mean_sparsification_error"] <= small_v["mean_sparsification_error"]
    assert large_v["mean_queue"] >= small_v["mean_queue"]
    assert large_v["mean_sparsity"] <= small_v["mean_sparsity"]
    # the budget binds: with V small the controller holds the average near T̄ by sparsifying
    assert small_v["mean_sparsity"] > 0


def test_simulate_v_zero_minimizes_latency(invoke, binding):
    _, path = binding
    data = _simulate(invoke, path, "--rank", 8, "--rounds", 5, "--V", 0)
    # V = 0: the penalty vanishes, so every device keeps one component (ρ = (r − 1)/r)
    assert data["mean_sparsity"] == pytest.approx(7 / 8, rel=1e-15)
    assert data["final_queue"] == 0.0


# ---------------------------------------------------------------------------------------------
# Misuse
# ---------------------------------------------------------------------------------------------
def test_sparsity_out_of_range(invoke):
    res = invoke("solve", "small", "--method", "tsfa", "--sparsity", 1.5, "--samples", SAMPLES)
    assert res.exit_code == 2
    assert "error:" in res.output
    assert "nominal_sparsity" in res.output and "ρ" in res.output and "1.5" in res.output


def test_infeasible_average_budget_states_the_smallest_latency(invoke, tmp_path, small_dict):
    inst, path = _small_file(tmp_path, small_dict, "tiny", avg_latency_budget_s=0.001)
    res = invoke("solve", path, "--method", "tsfa", "--samples", SAMPLES)
    assert res.exit_code == 2
    match = re.search(r"smallest expected round latency ([0-9.eE+-]+) s", res.output)
    assert match, res.output
    # recompute it: rank 1 (the cheapest payload), the min-max latency of the same 10 rounds
    k = inst.n_devices
    s = payload_bits(inst, 1, 1)
    lat = [allocate_min_latency(np.full(k, s), inst.compute_time_s,
                                snr_hz(inst, draw_channel(inst, 0, round=t)),
                                inst.bandwidth_hz).objective for t in range(SAMPLES)]
    assert float(match.group(1)) == pytest.approx(np.mean(lat), rel=1e-5)  # printed with 6 digits
    assert float(match.group(1)) > 0.001


def test_simulate_negative_v(invoke):
    res = invoke("tsfa-simulate", "small", "--V", -1, "--rounds", 2, "--rank", 2)
    assert res.exit_code != 0
    assert "--V" in res.output


def test_simulate_infeasible_budget(invoke, tmp_path, small_dict):
    _, path = _small_file(tmp_path, small_dict, "tiny", avg_latency_budget_s=0.001)
    res = invoke("tsfa-simulate", path, "--rank", 2, "--rounds", 2)
    assert res.exit_code == 2
    assert "latency floor" in res.output
