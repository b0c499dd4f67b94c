"""``fedopt instance layers --model`` and ``fedopt validate --model`` on a local Hugging Face
model directory (a tiny random GPT-2 written here; nothing is downloaded).

Oracles: the model's own Conv1D shapes (weight d_in × d_out) for the layers printed; the
contract keys of ``fedopt validate --format json`` (cli.validate_cmd); the payload q(r) written
out by hand; the missing extra simulated with ``sys.modules['peft'] = None``.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import yaml

from fedopt.cli.validate_cmd import JSON_KEYS, JSON_TOP_KEYS
from fedopt.instance import load_instance

needs_hf = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="the fedopt[hf] extra is not installed")


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """`fedopt validate` without --out writes ./validate-out: here, not in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from fedopt.fl.hf_tiny import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "gpt2")


def _shapes(gpt2_dir, leaf):
    """(name, d_out, d_in) of the model's layers ending in ``leaf``, from the modules (a Conv1D
    weight is d_in × d_out)."""
    from fedopt.fl.hf import load_hf_base

    lm = load_hf_base(gpt2_dir).model.lm
    return [(n, int(m.weight.shape[1]), int(m.weight.shape[0])) for n, m in lm.named_modules()
            if n.endswith("." + leaf)]


@needs_hf
def test_instance_layers_prints_the_models_shapes(invoke, gpt2_dir):
    res = invoke("instance", "layers", "--model", gpt2_dir)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("# LoRA layers of") and "q(r) = 256 r" in res.stdout
    layers = yaml.safe_load(res.stdout)["lora"]["layers"]
    shapes = _shapes(gpt2_dir, "c_attn")
    assert [n for n, _, _ in shapes] == ["transformer.h.0.attn.c_attn",
                                         "transformer.h.1.attn.c_attn"]
    assert layers == [{"name": "transformer.h.*.attn.c_attn", "d_out": shapes[0][1],
                       "d_in": shapes[0][2], "count": len(shapes)}]
    assert (shapes[0][1], shapes[0][2]) == (96, 32)  # GPT-2's fused q, k, v: 3 · 32 x 32
    # the spinner (stderr, on a terminal only) never touches stdout; --quiet turns it off
    quiet = invoke("instance", "layers", "--model", gpt2_dir, "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == res.stdout

    res = invoke("instance", "layers", "--model", gpt2_dir, "--target", "c_attn,c_fc",
                 "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    fc = _shapes(gpt2_dir, "c_fc")
    assert [(d["d_out"], d["d_in"], d["count"]) for d in out["layers"]] == [
        (96, 32, 2), (fc[0][1], fc[0][2], len(fc))]
    assert out["params_per_rank"] == 2 * (96 + 32) + 2 * (128 + 32) == 576
    assert out["target_modules"] == ["c_attn", "c_fc"] and out["max_rank"] == 32


@needs_hf
def test_instance_layers_writes_an_instance_and_never_overwrites(invoke, gpt2_dir, tmp_path):
    out = tmp_path / "inst.yaml"
    res = invoke("instance", "layers", "--model", gpt2_dir, "-o", out)
    assert res.exit_code == 0, res.output
    inst = load_instance(str(out))
    base = load_instance("char-tasks")
    assert inst.lora.params_per_rank == 256
    assert [(x.d_out, x.d_in, x.count) for x in inst.lora.layers] == [(96, 32, 2)]
    assert inst.lora.ranks == base.lora.ranks and inst.devices == base.devices
    out.write_text("keep me")
    res = invoke("instance", "layers", "--model", gpt2_dir, "-o", out)
    assert res.exit_code == 2 and "exists; pass --force" in res.output
    assert out.read_text() == "keep me"
    res = invoke("instance", "layers", "--model", gpt2_dir, "--target", "q_proj")
    assert res.exit_code == 2
    assert "target: 'q_proj' matches no layer" in res.output and "c_attn" in res.output


@needs_hf
def test_validate_quick_with_a_model_keeps_the_json_contract(invoke, gpt2_dir, tmp_path):
    # --quick, shortened further to 2 rounds on the equivalent-noise path to stay fast
    res = invoke("validate", "--quick", "--model", gpt2_dir, "--rounds", "2", "--mode",
                 "equivalent", "--format", "json", "--out", tmp_path / "v")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert set(JSON_TOP_KEYS) <= set(report)
    saved = json.loads((tmp_path / "v" / "validate.json").read_text())  # with per-seed runs
    for name in ("airfl-lora", "ideal"):
        m = report["methods"][name]
        assert all(m[k] is not None for k in JSON_KEYS), (name, m)
        # the loop sent q(r) = r · 2 · (96 + 32) reals: the payload the plan was made for
        assert saved["methods"][name]["seeds"][0]["payload_reals"] == 256 * m["rank"]
    assert report["settings"]["model"] == str(gpt2_dir)
    info = report["data"]["model"]
    assert info["model_type"] == "gpt2" and info["layers_replaced"] is True
    assert "planned with the lora.layers of the model" in res.stderr


@needs_hf
def test_validate_with_a_missing_model_dir_exits_2(invoke, tmp_path):
    res = invoke("validate", "--quick", "--model", tmp_path / "nope", "--out", tmp_path / "v")
    assert res.exit_code == 2
    assert "is not a directory" in res.output and "nothing is downloaded" in res.output


def test_without_the_extra_the_commands_name_it(invoke, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    for args in (("instance", "layers", "--model", tmp_path),
                 ("validate", "--quick", "--model", tmp_path, "--out", tmp_path / "v")):
        res = invoke(*args)
        assert res.exit_code == 2, res.output
        assert 'pip install "fedopt[hf]"' in res.output
