"""``validate(..., model=DIR)``: a Hugging Face model with PEFT LoRA validated end to end
(fedopt.solvers.validation.driver, fedopt.fl.recipe).

Oracles: the payload q(r) written out by hand from the tiny GPT-2's shapes; the AirComp error
prediction of spec 02 §3 (chi-square spread); the same instance with the model's layers given
explicitly; a rerun with the same seed; plans and settings that cannot describe the model.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.instance import load_instance
from fedopt.solvers import solve
from fedopt.solvers.validation import ValidateSettings, validate

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="the fedopt[hf] extra is not installed")

#: reals per unit of rank: GPT-2's c_attn (96 x 32) in both blocks, 2 · (96 + 32)
Q1 = 256


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from fedopt.fl.hf_tiny import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "gpt2")


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


def _settings(**kw):
    return ValidateSettings(**{"rounds": 2, "seeds": (0,), "eval_every": 1, "eval_batches": 1,
                               "mode": "equivalent", **kw})


def test_validate_with_a_model_plans_for_its_payload(tiny, gpt2_dir, tmp_path):
    rep = validate(tiny, baselines=("ideal", "digital"), settings=_settings(), model=gpt2_dir,
                   out_dir=tmp_path)
    info = rep.data["model"]
    assert info["layers_replaced"] is True and info["model_type"] == "gpt2"
    assert info["lora_layers"] == [{"name": "transformer.h.*.attn.c_attn", "d_out": 96,
                                    "d_in": 32, "count": 2}]
    for name, m in rep.methods.items():
        assert m.get("error") is None, (name, m.get("error"))
        assert np.isfinite(m["final_eval_loss"]), name
        payload = m["seeds"][0]["payload_reals"]
        assert payload == Q1 * m["rank"], name  # what the loop sent = the plan's q(r)
    air = rep.methods["airfl-lora"]
    # q = 256 r reals per round, each error entry a scaled chi-square: the relative std of one
    # round's ‖ĝ − ḡ‖² is about sqrt(2 / q) (≈ 9 % at r = 1, 1.6 % at r = 32), so 30 % is > 4
    # sigma at any rank over 2 rounds
    ratio = air["measured_aggregation_error"] / air["predicted_aggregation_error"]
    assert 0.7 < ratio < 1.3, ratio
    dig = rep.methods["digital"]  # SOFT over FDMA on PEFT's payload: dropped energy bounds it
    assert dig["measured_aggregation_error"] <= dig["predicted_aggregation_error"] * (1 + 1e-12)
    saved = json.loads((tmp_path / "validate.json").read_text())
    assert saved["settings"]["model"] == str(gpt2_dir)
    # D_k are the token counts of the character split's text, re-tokenized here by hand
    from fedopt.fl.hf import load_tokenizer

    chars, tok = ValidateSettings().client_data(tiny), load_tokenizer(gpt2_dir)
    assert saved["data"]["data_sizes"] == [
        len(tok(chars.vocab.decode(c.train), add_special_tokens=False)["input_ids"])
        for c in chars.clients]


def test_an_instance_with_the_models_layers_is_used_as_is(tiny, gpt2_dir):
    from fedopt.fl.hf import model_layers
    from fedopt.fl.recipe import with_layers

    inst = with_layers(tiny, model_layers(gpt2_dir))
    assert inst.lora.params_per_rank == Q1
    a = validate(inst, settings=_settings(model=str(gpt2_dir)))
    b = validate(inst, settings=_settings(model=str(gpt2_dir)))
    assert a.data["model"]["layers_replaced"] is False
    assert a.instance_digest == b.instance_digest
    for key in ("final_eval_loss", "measured_aggregation_error", "latency_s"):
        assert a.methods["airfl-lora"][key] == b.methods["airfl-lora"][key]  # same seed


def test_plans_and_settings_that_cannot_describe_the_model_are_refused(tiny, gpt2_dir):
    plan = solve(tiny, "airfl-lora", seed=0).solution  # planned for the character model
    with pytest.raises(PlanError, match=r"lora\.layers.*fedopt instance layers --model"):
        validate(tiny, plan=plan, settings=_settings(), model=gpt2_dir)
    with pytest.raises(InvalidArgumentError, match="algorithm: 'pwff'.*fedavg"):
        validate(tiny, algorithms=["pwff"], settings=_settings(), model=gpt2_dir)
    with pytest.raises(InvalidArgumentError,
                       match=r"target_modules \(--target\): got .* without model"):
        _settings(target_modules="c_attn")
    with pytest.raises(InvalidArgumentError, match="model: got .* and settings.model"):
        validate(tiny, settings=_settings(model="elsewhere"), model=gpt2_dir)
    s = _settings(model=gpt2_dir, target_modules="c_attn, c_proj")
    assert s.model == str(gpt2_dir) and s.target_modules == ("c_attn", "c_proj")
    assert json.loads(json.dumps(s.to_dict()))["target_modules"] == ["c_attn", "c_proj"]
