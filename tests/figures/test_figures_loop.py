"""The figures that run the FL loop (d: training_loss, e: perplexity_vs_snr,
f: predicted_vs_measured), quick mode."""

from __future__ import annotations

import json

import pytest

from fedopt.figures import run_figure


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("figs")


def _png_ok(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_training_loss_quick(out):
    res = run_figure("training_loss", out, quick=True)
    assert _png_ok(res["png"])
    doc = json.loads(open(res["json"]).read())
    assert {"figure", "provenance", "data"} <= set(doc)
    methods = doc["data"]["methods"]
    assert set(methods) == {"airfl-lora", "ideal", "fixed-rank", "random-plan",
                            "single-stream", "digital"}
    for name, m in methods.items():
        assert len(m["curves"]["train_loss"]) == 3, name  # quick mode: 3 rounds
    assert doc["data"]["quick"] is True  # the title then says QUICK MODE (figures._common)
    assert methods["ideal"]["measured_aggregation_error"] == 0.0
    # common random numbers: ideal and the AirComp plan share rank, batches and init, so their
    # first-round training loss (measured at θ_0, before any aggregation) is identical
    assert methods["ideal"]["rank"] == methods["airfl-lora"]["rank"]
    assert (methods["ideal"]["curves"]["train_loss"][0]
            == methods["airfl-lora"]["curves"]["train_loss"][0])


def test_perplexity_vs_snr_quick(out):
    res = run_figure("perplexity_vs_snr", out, quick=True)
    assert _png_ok(res["png"])
    data = json.loads(open(res["json"]).read())["data"]
    snr = [p["median_snr_db"] for p in data["points"]]
    assert snr == sorted(snr) and snr[1] - snr[0] == pytest.approx(20.0)  # P ∝ SNR: +20 dB
    for p in data["points"]:
        for name in data["methods"]:
            assert p["methods"][name]["perplexity"] > 1.0
        # a random receive beamformer never beats the optimized one on the same channels
        rel = {k: v["relative_aggregation_error"] for k, v in p["methods"].items()}
        same = all(p["methods"]["random-plan"][k] == p["methods"]["airfl-lora"][k]
                   for k in ("rank", "streams"))
        if same:  # same payload layout: the ~10x MSE gap (RESULTS.md) dominates the noise
            assert rel["random-plan"] >= rel["airfl-lora"]
    assert data["ideal"]["perplexity"] > 1.0


def test_predicted_vs_measured_quick(out):
    from fedopt.solvers.validation.predictive import spearman

    res = run_figure("predicted_vs_measured", out, quick=True)
    assert _png_ok(res["png"])
    data = json.loads(open(res["json"]).read())["data"]
    configs = [c for c in data["configs"] if c.get("losses") and not c.get("extra")]
    # 2 powers x (r, L) in {2, 32} x {1, 2}, one seed; r = 32 with one stream misses the budget
    assert len(configs) == 6
    assert all(c.get("error") for c in data["configs"] if (c["rank"], c["streams"]) == (32, 1))
    for c in configs:
        assert len(c["losses"]) == 1 and c["gap"][0] > 0 and c["gap_nominal"][0] > 0
    # the summary's ρ is Spearman's of the plotted points
    want = spearman([c["gap"][0] for c in configs], [c["losses"][0] for c in configs])
    assert data["summary"]["rho_calibrated"] == pytest.approx(want)
    assert set(data["summary"]["per_power"]) == {"-10", "-40"}
    assert min(c["losses"][0] for c in configs) < data["base_eval_loss"]  # 3 rounds help
