"""End-to-end validation (``fedopt validate``): contracts, plans, bad input.

Runs are short (1–2 rounds, one seed, the equivalent-noise path where the path does not matter)
so the file stays within a few tens of seconds on a 2-core CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedopt.errors import CheckpointError, InvalidArgumentError, PlanError
from fedopt.instance import load_instance
from fedopt.solvers.validation import ValidateSettings, check_model_layers, loop_layers, validate

JSON_KEYS = ("final_train_loss", "final_eval_loss", "perplexity", "measured_aggregation_error",
             "predicted_aggregation_error", "latency_s")


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """`fedopt validate` without --out writes ./validate-out: here, not in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


def _settings(**kw):
    base = dict(rounds=2, seeds=(0,), eval_every=1, eval_batches=1, mode="equivalent")
    base.update(kw)
    return ValidateSettings(**base)


def test_tiny_char_layers_are_the_loop_models():
    # the preset's payload q(r) must be the one the loop sends: same shapes and counts
    spec = loop_layers()
    inst = load_instance("tiny-char")
    assert [(d["d_out"], d["d_in"], d["count"]) for d in spec] == [
        (layer.d_out, layer.d_in, layer.count) for layer in inst.lora.layers]
    assert inst.lora.params_per_rank == sum(d["count"] * (d["d_out"] + d["d_in"]) for d in spec)
    # and the preset's data shares are the loop's split (K = 10, Dirichlet 1, seed 0)
    from fedopt.fl.data import make_federated_data

    assert tuple(make_federated_data(10, seed=0).data_sizes) == inst.devices.dataset_size
    check_model_layers(inst)


def test_other_layers_are_refused():
    with pytest.raises(PlanError, match=r"lora\.layers.*tiny-char"):
        check_model_layers(load_instance("default"))


def test_report_contract_and_predictions(tiny, tmp_path):
    rep = validate(tiny, baselines=("ideal", "digital"), settings=_settings(),
                   out_dir=tmp_path / "v")
    assert list(rep.methods) == ["airfl-lora", "ideal", "digital"]
    for name, m in rep.methods.items():
        for key in JSON_KEYS:
            assert m[key] is not None and np.isfinite(m[key]), (name, key)
        assert m["perplexity"] == pytest.approx(np.exp(m["final_eval_loss"]), rel=1e-12)
    air, ideal = rep.methods["airfl-lora"], rep.methods["ideal"]
    assert ideal["measured_aggregation_error"] == 0.0
    assert ideal["rank"] == air["rank"]  # ideal = the plan's rank, error-free
    # q = 1024 r reals per round, each error entry a scaled chi-square: the relative std of one
    # round's ‖ĝ − ḡ‖² is about sqrt(2 / q) ≈ 3 % at r = 2, so 15 % is > 5 sigma over 2 rounds
    ratio = air["measured_aggregation_error"] / air["predicted_aggregation_error"]
    assert 0.85 < ratio < 1.15
    # the digital baseline's prediction (dropped energy) bounds its measured error (Jensen)
    dig = rep.methods["digital"]
    assert dig["measured_aggregation_error"] <= dig["predicted_aggregation_error"] * (1 + 1e-12)
    # latency: the plan's compute + airtime, what the planner predicted
    assert air["latency_s"] == pytest.approx(air["seeds"][0]["predicted"]["latency_s"],
                                             rel=1e-12)
    # files: per-run logs and the report
    saved = json.loads((tmp_path / "v" / "validate.json").read_text())
    assert saved["methods"]["airfl-lora"]["final_eval_loss"] == air["final_eval_loss"]
    lines = (tmp_path / "v" / "airfl-lora" / "seed-0" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 1]


def test_resume_reuses_finished_runs(tiny, tmp_path):
    first = validate(tiny, settings=_settings(), out_dir=tmp_path)
    again = validate(tiny, settings=_settings(), out_dir=tmp_path, resume=True)
    a, b = first.methods["airfl-lora"], again.methods["airfl-lora"]
    for key in JSON_KEYS:
        assert a[key] == b[key]


def test_plan_file_is_validated_under_its_method(tiny, tmp_path, invoke):
    plan_path = tmp_path / "plan.json"
    res = invoke("solve", "tiny-char", "--method", "centroid-plan", "-o", str(plan_path),
                  "--format", "json")
    assert res.exit_code == 0, res.output
    res = invoke("validate", str(plan_path), "--rounds", "1", "--seeds", "0", "--mode",
                  "equivalent", "--out", str(tmp_path / "out"), "--format", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert list(report["methods"]) == ["centroid-plan", "ideal"]  # ideal: the reference
    m = report["methods"]["centroid-plan"]
    assert m["rank"] == json.loads(plan_path.read_text())["rank"]
    assert set(JSON_KEYS) <= set(m)


def test_plan_that_does_not_fit_is_refused(tmp_path, invoke):
    plan_path = tmp_path / "small.json"
    assert invoke("solve", "small", "-o", str(plan_path), "--format", "json").exit_code == 0
    res = invoke("validate", str(plan_path), "--instance", "tiny-char", "--rounds", "1",
                  "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "receive_beamformers" in res.output and "N_r = 8" in res.output
    assert not (tmp_path / "o" / "validate.json").exists()


def test_output_dir_that_is_a_file(tmp_path, invoke):
    f = tmp_path / "file"
    f.write_text("x")
    res = invoke("validate", "--quick", "--out", str(f))
    assert res.exit_code == 2
    assert str(f) in res.output and "not a directory" in res.output
    assert f.read_text() == "x"


def test_corrupt_checkpoint_is_named(tiny, tmp_path):
    validate(tiny, settings=_settings(rounds=1), out_dir=tmp_path)
    ckpt = tmp_path / "airfl-lora" / "seed-0" / "checkpoint.npz"
    ckpt.write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match="checkpoint.npz"):
        validate(tiny, settings=_settings(rounds=1), out_dir=tmp_path, resume=True)
    assert ckpt.read_bytes() == b"not a zip file"  # nothing overwritten by the failed resume


@pytest.mark.parametrize("kw, field", [
    ({"seeds": ()}, "seeds"), ({"seeds": (0, 0)}, "seeds"), ({"mode": "fast"}, "mode"),
    ({"lr": 0.0}, "lr"), ({"optimizer": "adam"}, "optimizer"), ({"alpha_scale": -1.0},
                                                                 "alpha_scale"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(InvalidArgumentError, match=field):
        ValidateSettings(**kw)


def test_unknown_method_lists_the_valid_ones(tiny):
    with pytest.raises(InvalidArgumentError, match="airfl-lora.*ideal.*digital"):
        validate(tiny, baselines=("nonsense",), settings=_settings(rounds=1))


def test_cli_table_and_json_contract(tmp_path, invoke):
    res = invoke("validate", "--rounds", "1", "--seeds", "0", "--mode", "equivalent",
                  "--compare", "ideal", "--out", str(tmp_path), "--quiet")
    assert res.exit_code == 0, res.output
    assert "airfl-lora" in res.stdout and "ideal" in res.stdout and "meas/pred" in res.stdout
    res = invoke("validate", "--rounds", "1", "--seeds", "0", "--mode", "equivalent",
                  "--compare", "ideal", "--out", str(tmp_path), "--format", "json",
                  "--resume")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for name in ("airfl-lora", "ideal"):
        assert set(JSON_KEYS) <= set(data["methods"][name])


def test_json_reports_the_base_model_and_every_retained_gain(tmp_path, invoke):
    # char-tasks (the default source): the domain-shift testbed
    res = invoke("validate", "--rounds", "2", "--seeds", "0", "--mode", "equivalent",
                 "--out", str(tmp_path), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["instance"] == "char-tasks"
    assert list(data["methods"]) == ["airfl-lora", "ideal"]  # ideal: always, the reference
    from fedopt.fl.pretrained import base_model
    from fedopt.fl.tasks import make_task_data
    from fedopt.fl.training import evaluate_loss

    inst = load_instance("char-tasks")
    held = make_task_data(inst.n_devices, seed=0).global_heldout
    settings = ValidateSettings.for_testbed("domain-shift")
    want = evaluate_loss(base_model("prose-base").model, held, 64,
                         max_batches=settings.eval_batches).loss
    assert data["base_eval_loss"] == pytest.approx(want, rel=1e-12)
    ideal = data["methods"]["ideal"]
    assert ideal["retained_gain"] == pytest.approx(1.0)
    air = data["methods"]["airfl-lora"]
    gain = (data["base_eval_loss"] - air["final_eval_loss"]) / (
        data["base_eval_loss"] - ideal["final_eval_loss"])
    assert air["retained_gain"] == pytest.approx(gain, rel=1e-12)
    assert ideal["final_eval_loss"] < data["base_eval_loss"]  # two rounds already help


@pytest.mark.parametrize("device, message", [("tpu", "must be 'cpu', 'cuda' or 'cuda:N'"),
                                             ("cuda:7", "CUDA device")])
def test_bad_device_is_a_named_error(invoke, device, message):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    res = invoke("validate", "--rounds", "1", "--seeds", "0", "--device", device)
    assert res.exit_code == 2
    assert "device" in res.output and message in res.output


def test_a_corrupt_corpus_or_base_model_exits_2_with_its_name(invoke, monkeypatch):
    from fedopt.fl import corpus, pretrained

    corpus._snapshot_text.cache_clear()
    monkeypatch.setattr(corpus, "SNAPSHOT_SHA256", "0" * 64)
    try:
        res = invoke("validate", "--rounds", "1", "--seeds", "0", "--quiet")
    finally:
        corpus._snapshot_text.cache_clear()
    assert res.exit_code == 2 and "corpus snapshot" in res.output and "SHA-256" in res.output
    monkeypatch.undo()
    monkeypatch.setitem(pretrained.SHIPPED_SHA256, "prose-base", "0" * 64)
    res = invoke("validate", "--rounds", "1", "--seeds", "0", "--quiet")
    assert res.exit_code == 2 and "prose-base.pt: SHA-256" in res.output


def test_a_resumed_run_counts_every_beamforming_solve(tiny, tmp_path):
    settings = _settings(rounds=3)
    straight = validate(tiny, settings=settings).to_dict(per_seed=True)
    want = straight["methods"]["airfl-lora"]["seeds"][0]["beamforming_solves"]
    assert want == 2  # round 0 uses the plan's own beamformers; rounds 1 and 2 re-solve
    validate(tiny, settings=settings, out_dir=tmp_path, callback=lambda rec: rec["done"] >= 2)
    resumed = validate(tiny, settings=settings, out_dir=tmp_path, resume=True).to_dict(
        per_seed=True)
    # it used to report only the solves of the resumed process (1)
    assert resumed["methods"]["airfl-lora"]["seeds"][0]["beamforming_solves"] == want
