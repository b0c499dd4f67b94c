"""``fedopt gap`` through typer's CliRunner: the gap it prints is the planner's (same seed or
same saved plan), the rank sweep covers every candidate and marks the feasible argmin, the
figure is written, and misuse ends in exit code 2 with a message and no traceback."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from fedopt.gap_models import TERM_NAMES
from fedopt.instance import Instance
from fedopt.solvers.planner import evaluate, plan


@pytest.fixture
def tight(tmp_path, small_dict) -> tuple[Instance, str]:
    """``small`` with an 18.5 ms budget (rank 8 is out at L = 2), saved as a file."""
    data = copy.deepcopy(small_dict)
    data["constraints"] = {"latency_budget_s": 0.0185}
    inst = Instance.from_dict(data)
    return inst, str(inst.save(tmp_path / "tight.yaml"))


@pytest.mark.parametrize("seed", [0, 3])
def test_gap_of_a_configuration_equals_the_plan(invoke, small_instance, seed):
    res = plan(small_instance, seed=seed)
    p = res.solution
    out = invoke("gap", "small", "--rank", p.rank, "--streams", p.streams, "--seed", seed,
                 "--format", "json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert (got["rank"], got["streams"]) == (p.rank, p.streams)
    assert tuple(got["gap_terms"]) == TERM_NAMES
    # rel 1e-12: the plan sums MSE_m inside the solver, the CLI recomputes them
    assert got["gap"] == pytest.approx(res.objective, rel=1e-12)
    for name in TERM_NAMES:
        assert got["gap_terms"][name] == pytest.approx(res.terms[name], rel=1e-12)
    assert got["latency_s"] == p.metadata["latency_s"] and got["feasible"] is True
    assert got["mse_sum"] == pytest.approx(p.metadata["mse_sum"], rel=1e-12)  # as above


def test_gap_of_a_saved_plan_equals_the_plan(invoke, tmp_path, tight):
    inst, path = tight
    out_file = tmp_path / "plan.json"
    solved = invoke("solve", path, "--seed", 5, "--format", "json", "-o", out_file)
    assert solved.exit_code == 0, solved.output
    summary = json.loads(solved.stdout)
    out = invoke("gap", path, "--plan", out_file, "--format", "json")
    assert out.exit_code == 0, out.output
    got = json.loads(out.stdout)
    assert (got["rank"], got["streams"]) == (summary["rank"], summary["streams"])
    assert got["gap"] == pytest.approx(summary["gap"], rel=1e-12)  # rel 1e-12: MSE re-summed
    # the same through the API, with the plan's beamformers, and with the seed's
    res = plan(inst, seed=5)
    assert got["gap"] == pytest.approx(res.objective, rel=1e-12)  # as above
    assert got["gap"] == pytest.approx(
        evaluate(inst, res.solution.rank, res.solution.streams, seed=5,
                 beamformers=res.solution.receive_beamformers).gap, rel=1e-12)  # as above
    # a plan evaluated at another rank: the rank changes, the beamformers stay
    other = invoke("gap", path, "--plan", out_file, "--rank", 1, "--format", "json")
    assert json.loads(other.stdout)["rank"] == 1
    assert json.loads(other.stdout)["mse_sum"] == got["mse_sum"]


def test_sweep_covers_every_rank_and_marks_the_feasible_argmin(invoke, tight):
    inst, path = tight
    for streams in (1, 2):
        out = invoke("gap", path, "--sweep", "rank", "--streams", streams, "--seed", 2,
                     "--format", "json")
        assert out.exit_code == 0, out.output
        got = json.loads(out.stdout)
        rows = got["rows"]
        assert [row["rank"] for row in rows] == list(inst.lora.ranks)
        for row in rows:
            want = evaluate(inst, row["rank"], streams, seed=2)
            assert row["gap"] == pytest.approx(want.gap, rel=1e-12)  # MSE re-summed
            assert row["feasible"] == (inst.aircomp_latency_s(row["rank"], streams) <= 0.0185)
        feasible = [row for row in rows if row["feasible"]]
        assert 0 < len(feasible) < len(rows)  # the budget cuts the sweep
        assert got["best_rank"] == min(feasible, key=lambda row: row["gap"])["rank"]
        unconstrained = min(rows, key=lambda row: row["gap"])
        assert not unconstrained["feasible"]  # so "feasible argmin" is not the plain argmin
        assert got["best_rank"] != unconstrained["rank"]


def test_sweep_default_and_plot(invoke, tmp_path, small_instance):
    fig = tmp_path / "gap.png"
    out = invoke("gap", "small", "--sweep", "rank", "--plot", fig)
    assert out.exit_code == 0, out.output
    assert f"figure written to {fig}" in out.output
    data = fig.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    got = json.loads(invoke("gap", "small", "--sweep", "rank", "--format", "json").stdout)
    assert got["streams"] == max(small_instance.aircomp.streams)
    assert [row["rank"] for row in got["rows"]] == list(small_instance.lora.ranks)
    best = min((row for row in got["rows"] if row["feasible"]), key=lambda row: row["gap"])
    assert got["best_rank"] == best["rank"]
    # the text table marks the same rank
    text = invoke("gap", "small", "--sweep", "rank").output
    assert f"r* = {best['rank']}" in text


def test_text_output_of_one_configuration(invoke, small_instance):
    out = invoke("gap", "small", "--rank", 4, "--streams", 1)
    assert out.exit_code == 0, out.output
    want = evaluate(small_instance, 4, 1, seed=0)
    assert "rank r = 4, L = 1 streams" in out.output
    assert f"gap = {want.gap:.6g}" in out.output
    assert "meets the budget" in out.output


@pytest.mark.parametrize("args, message", [
    ([], "give --rank R"),
    (["--rank", "2", "--plot", "x.png"], "--plot needs --sweep rank"),
    (["--rank", "2", "--beamforming", "magic"], "--beamforming"),
    (["--rank", "33"], "1..32"),  # above min(d_out, d_in) = 32 of the layers
])
def test_misuse_exits_2_with_a_message(invoke, tmp_path, monkeypatch, args, message):
    # the relative x.png resolves against the working directory: run in tmp_path, so that the
    # check below looks where a figure written by mistake would land
    monkeypatch.chdir(tmp_path)
    out = invoke("gap", "small", *args)
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error:") and message in out.output
    assert list(tmp_path.iterdir()) == []  # no x.png, nor anything else


def test_a_relative_plot_path_lands_in_the_working_directory(invoke, tmp_path, monkeypatch):
    # the positive control of the misuse test: the same relative name, used correctly, is
    # written exactly where that test looks
    monkeypatch.chdir(tmp_path)
    out = invoke("gap", "small", "--sweep", "rank", "--plot", "x.png")
    assert out.exit_code == 0, out.output
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plan_stream_mismatch_exits_2(invoke, tmp_path, small_instance):
    # a rank outside the candidates but within the layers is evaluated, not refused
    assert invoke("gap", "small", "--rank", 3).exit_code == 0
    p = plan(small_instance, seed=0).solution
    path = p.save(tmp_path / "plan.npz")
    other = 2 if p.streams == 1 else 1
    out = invoke("gap", "small", "--plan", path, "--streams", other)
    assert out.exit_code == 2 and f"the plan has L = {p.streams}" in out.output
    assert np.isfinite(json.loads(invoke("gap", "small", "--plan", path, "--format",
                                         "json").stdout)["gap"])


def test_a_digital_plan_is_refused_by_name(invoke, tmp_path):
    plan = tmp_path / "tsfa.json"
    assert invoke("solve", "small", "-q", "--method", "tsfa", "-o", plan).exit_code == 0
    res = invoke("gap", "small", "--plan", plan)
    # an AirComp round latency for an FDMA plan would be a wrong number printed as right
    assert res.exit_code == 2
    assert "is a digital (TSFA, FDMA) plan" in res.stderr and "tsfa-simulate" in res.stderr


def test_a_plan_for_another_instance_is_refused_unless_asked(invoke, tmp_path, small_dict):
    import yaml

    path = tmp_path / "plan.json"
    assert invoke("solve", "small", "-q", "-o", path).exit_code == 0
    small_dict["devices"]["p_max_dbm"] = 10.0  # same shapes, other physics
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(small_dict))
    res = invoke("gap", other, "--plan", path)
    assert res.exit_code == 2 and "the plan was made for instance 'small'" in res.stderr
    assert "--other-instance" in res.stderr
    assert invoke("gap", other, "--plan", path, "--other-instance").exit_code == 0
    assert invoke("gap", "small", "--plan", path).exit_code == 0  # its own instance


def test_csv_rows_are_the_json_rows(invoke):
    import csv
    import io

    data = json.loads(invoke("gap", "small", "--sweep", "rank", "--format", "json").stdout)
    rows = list(csv.DictReader(io.StringIO(invoke("gap", "small", "--sweep", "rank", "--format",
                                                  "csv").stdout)))
    assert [int(r["rank"]) for r in rows] == [r["rank"] for r in data["rows"]]
    for got, want in zip(rows, data["rows"], strict=True):
        assert float(got["gap"]) == want["gap"]  # repr round trip: exact
        for name, value in want["gap_terms"].items():
            assert float(got[f"gap_{name}"]) == value
        assert got["feasible"] == str(want["feasible"])
