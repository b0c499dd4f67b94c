"""``fedopt validate --algorithm / --algorithms / --optimizer sophia`` (issue contract).

Oracles: the airtime the planner predicts for each algorithm's payload equals the airtime the
aggregator measures (both count 2 q(r) reals for over-the-air Sophia, q_B for FFA); every method
entry names its algorithm; bad combinations are refused with the field named, exit 2.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.instance import load_instance
from fedopt.solvers.validation import ValidateSettings, validate


def _settings(**kw):
    base = dict(rounds=1, seeds=(0,), eval_every=1, eval_batches=1, mode="equivalent")
    base.update(kw)
    return ValidateSettings(**base)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """`fedopt validate` without --out writes ./validate-out: here, not in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


def test_doubled_payload_makes_the_digital_budget_bind(tiny):
    # tiny-char's average latency budget (0.1 s) carries FedAvg's payload over FDMA but not
    # over-the-air Sophia's m and h (2 q(r)): TSFA's offline stage sees the doubled payload
    from fedopt.errors import InfeasibleError
    from fedopt.solvers import solve

    assert solve(tiny, "tsfa", seed=0).solution.rank >= 1
    with pytest.raises(InfeasibleError, match="average latency budget"):
        solve(tiny.with_algorithm("ota-sophia"), "tsfa", seed=0)


def test_each_algorithm_is_planned_for_its_own_payload(tiny):
    d = tiny.to_dict()
    d["constraints"]["avg_latency_budget_s"] = 0.3  # room for ota-sophia's 2 q(r) over FDMA
    inst0 = type(tiny).from_dict(d)
    rep = validate(inst0, baselines=("digital",), algorithms=("fedavg", "ota-sophia", "ffa"),
                   settings=_settings())
    keys = [f"{m}@{a}" for a in ("fedavg", "ota-sophia", "ffa")
            for m in ("airfl-lora", "digital", "ideal")]
    assert list(rep.methods) == keys
    for key, entry in rep.methods.items():
        assert entry["algorithm"] == key.split("@")[1]
        assert entry.get("error") is None, (key, entry.get("error"))
    for alg in ("fedavg", "ota-sophia", "ffa"):
        air = rep.methods[f"airfl-lora@{alg}"]
        inst = inst0.with_algorithm(alg)
        # the plan's S(r, L) · T_sym from the instance's payload = what the aggregator sent
        want = inst.airtime_s(air["rank"], air["streams"])
        assert air["airtime_s"] == pytest.approx(want, rel=1e-12)
        assert air["seeds"][0]["predicted"]["airtime_s"] == pytest.approx(want, rel=1e-12)
        assert rep.methods[f"ideal@{alg}"]["seeds"][0]["payload_reals"] == inst.payload(
            air["rank"])


def test_plan_file_of_another_algorithm_is_refused(tiny):
    from fedopt.solvers import solve

    plan = solve(tiny, "airfl-lora", seed=0).solution
    with pytest.raises(InvalidArgumentError, match="algorithm.*ffa.*solved for"):
        validate(tiny, plan=plan, algorithms=("ffa",), settings=_settings())


@pytest.mark.parametrize("algorithm", ["fedavg", "ota-sophia", "ffa", "fedsa", "local", "mira",
                                       "pwff"])
def test_cli_quick_json_for_each_algorithm(algorithm, tmp_path, invoke):
    res = invoke("validate", "--quick", "--algorithm", algorithm, "--rounds", "1",
                 "--mode", "equivalent", "--out", str(tmp_path), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"instance", "settings", "methods", "base_eval_loss"} <= set(data)
    assert list(data["methods"]) == ["airfl-lora", "ideal"]
    for entry in data["methods"].values():
        assert entry["algorithm"] == algorithm
        for key in ("final_train_loss", "final_eval_loss", "perplexity", "latency_s",
                    "measured_aggregation_error", "predicted_aggregation_error",
                    "retained_gain"):
            assert key in entry
        assert np.isfinite(entry["final_eval_loss"])
        # per client: its task (char-tasks: client k on task k mod 4) and its own held-out loss
        per = entry["per_client"]
        assert [p["client"] for p in per] == list(range(12))
        assert [p["task"] for p in per] == data["data"]["client_tasks"]
        assert all(np.isfinite(p["local_eval_loss"]) for p in per)
        rewards = {"reward_prose", "reward_structure"}
        assert all((rewards <= set(p)) == (algorithm == "pwff") for p in per)
    # the airtime the planner counted (MIRA: one slot per task cluster) is what was sent
    air = data["methods"]["airfl-lora"]
    want = load_instance("char-tasks").with_algorithm(algorithm).airtime_s(air["rank"],
                                                                           air["streams"])
    assert air["airtime_s"] == pytest.approx(want, rel=1e-12, abs=0.0)


def test_cli_fed_sophia_uses_the_sophia_learning_rate(tmp_path, invoke):
    res = invoke("validate", "tiny-char", "--optimizer", "sophia", "--lr", "0.02", "--rounds",
                 "1", "--seeds", "0", "--mode", "equivalent", "--out", str(tmp_path),
                 "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["settings"]["optimizer"] == "sophia" and data["settings"]["sophia_lr"] == 0.02
    seed0 = json.loads((tmp_path / "airfl-lora" / "seed-0" / "summary.json").read_text())
    assert seed0["config"]["optimizer"] == "sophia" and seed0["config"]["lr"] == 0.02


@pytest.mark.parametrize("args, field", [
    (["--algorithm", "fedprox"], "algorithm"),
    (["--algorithm", "ota-sophia", "--optimizer", "adamw"], "optimizer"),
    (["--optimizer", "lion"], "optimizer"),
    (["--algorithm", "ffa", "--algorithms", "ffa,fedsa"], "--algorithm"),
    (["--algorithms", " , "], "--algorithms"),
    (["--algorithm", "mira", "--mira-graph", "ring"], "--mira-graph"),  # a closed choice
    (["--algorithm", "mira"], "task label"),  # tiny-char's clients have no task labels
])
def test_cli_bad_algorithm_settings_exit_2(args, field, invoke, tmp_path):
    res = invoke("validate", "tiny-char", "--rounds", "1", "--seeds", "0", "--out",
                 str(tmp_path), *args)
    assert res.exit_code == 2, res.output
    assert field in res.output and "Traceback" not in res.output


def test_cli_mira_similarity_graph_runs_where_updates_are_delivered(tmp_path, invoke):
    # tiny-char has no task labels; the similarity graph needs every update: the AirComp plan
    # cannot carry it (a named error on that method), the ideal run goes
    res = invoke("validate", "tiny-char", "--algorithm", "mira", "--mira-graph", "similarity",
                 "--rounds", "1", "--seeds", "0", "--mode", "equivalent", "--out",
                 str(tmp_path), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert "union of cliques" in data["methods"]["airfl-lora"]["error"]
    assert np.isfinite(data["methods"]["ideal"]["final_eval_loss"])
