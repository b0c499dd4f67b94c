"""PEFT LoRA on a Hugging Face model as fedopt's adapters (fedopt.fl.hf, fedopt.fl.peft_adapter).

Oracles: a tiny random GPT-2 written to a temporary directory and loaded back (its weights
against the saved safetensors file); fedopt's own LoRALinear on the same weights (GPT-2's Conv1D
layers turned into nn.Linear) for the forward output, the initial A and the payload order;
payload lengths q(r) written out by hand from the GPT-2 shapes; the missing extra simulated with
``sys.modules['peft'] = None``.
"""

from __future__ import annotations

import copy
import importlib.util
import sys

import pytest
import torch

from fedopt.errors import CheckpointError, InvalidArgumentError, MissingDependencyError
from fedopt.fl.lora import apply_lora, flatten_lora, lora_layer_spec, set_rank_mask, unflatten_lora

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="the fedopt[hf] extra is not installed")

#: the tiny GPT-2: 2 blocks of width 32 (c_attn: 32 → 96, attn.c_proj: 32 → 32, mlp.c_fc:
#: 32 → 128, mlp.c_proj: 128 → 32)
N_LAYER, N_EMBD = 2, 32


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from fedopt.fl.hf_tiny import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "gpt2", n_layer=N_LAYER, n_embd=N_EMBD)


@pytest.fixture(scope="module")
def base(gpt2_dir):
    from fedopt.fl.hf import load_hf_base

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only cost time on a shared 2-core machine
    yield load_hf_base(gpt2_dir)
    torch.set_num_threads(before)


def _peft(base, rank, seed, target=None, alpha=None):
    from fedopt.fl.hf import apply_peft_lora

    model = copy.deepcopy(base.model)
    mods = apply_peft_lora(model, rank, alpha=alpha, target=target,
                           generator=torch.Generator().manual_seed(seed))
    return model, mods


def _ours(base, rank, seed, target, alpha=None):
    """fedopt's LoRALinear on the same weights: Conv1D → nn.Linear, then apply_lora."""
    from fedopt.fl.hf import conv1d_to_linear

    model = copy.deepcopy(base.model)
    assert conv1d_to_linear(model.lm) == 4 * N_LAYER  # c_attn, c_proj, c_fc, mlp.c_proj
    mods = apply_lora(model.lm, rank, alpha=alpha, target=target,  # names as in the HF model
                      generator=torch.Generator().manual_seed(seed))
    return model, mods


def test_the_model_is_loaded_back_from_its_directory(gpt2_dir, base):
    from safetensors.torch import load_file

    saved = load_file(str(gpt2_dir / "model.safetensors"))
    state = base.model.lm.state_dict()
    assert saved and all(torch.equal(state[k], v) for k, v in saved.items()), "weights differ"
    text = "def f(x):\n    return x  # ünïcode"
    ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert base.tokenizer.decode(ids) == text  # byte-level BPE: nothing is unknown
    assert base.model.seq_len == 64 and base.model.vocab_size == len(base.tokenizer)
    logits = base.model(torch.tensor([ids[:10]]))
    assert logits.shape == (1, 10, base.model.vocab_size)


def test_peft_and_fedopt_lora_are_the_same_adapters(base, rng):
    rank, seed, alpha = 2, 7, 3.0
    peft_model, pmods = _peft(base, rank, seed, target="c_attn", alpha=alpha)
    ours, omods = _ours(base, rank, seed, target=("c_attn",), alpha=alpha)
    assert list(pmods) == list(omods) == [f"transformer.h.{i}.attn.c_attn" for i in range(2)]
    # q(r) = r · Σ (d_out + d_in) = 2 · 2 · (96 + 32), written out by hand
    q = rank * N_LAYER * (96 + 32)
    assert flatten_lora(peft_model).numel() == flatten_lora(ours).numel() == q == 512
    # same seed, same initial A (bit for bit: both drawn by initial_A), B = 0
    assert torch.equal(flatten_lora(peft_model), flatten_lora(ours))
    # the payload order is A then B per layer, row-major, on PEFT's own lora_A / lora_B weights
    by_hand = torch.cat([w.detach().reshape(-1) for n, w in peft_model.named_parameters()
                         if "lora_" in n])
    assert [n.split(".")[-3] for n, _ in peft_model.named_parameters() if "lora_" in n] == [
        "lora_A", "lora_B"] * N_LAYER
    assert torch.equal(flatten_lora(peft_model), by_hand)
    # the same nonzero A and B in both: the same forward output and the same merged weights
    theta = torch.from_numpy(0.3 * rng.standard_normal(q)).float()
    unflatten_lora(pmods, theta)
    unflatten_lora(omods, theta)
    ids = torch.from_numpy(rng.integers(0, base.model.vocab_size, size=(3, 20)))
    with torch.no_grad():
        plain, a, b = base.model(ids), peft_model(ids), ours(ids)
    # float32 logits of size ≲ 1: equal bit for bit on this CPU build, but Conv1D (addmm of
    # x W) and nn.Linear (x Wᵀ) may sum in different orders elsewhere, so allow float32
    # rounding (~1e-7 relative, a few ulps per layer): 1e-5
    assert torch.allclose(a, b, rtol=0, atol=1e-5)
    assert (a - plain).abs().max() > 1e-2  # discriminating: the adapters move the output
    for name in pmods:
        assert torch.allclose(pmods[name].merged_weight(), omods[name].merged_weight(),
                              rtol=0, atol=1e-6)  # float32 rounding of B A (entries ≲ 1)


def test_payload_length_on_more_targets(base, gpt2_dir):
    from fedopt.fl.hf import model_layers

    rank = 3
    model, mods = _peft(base, rank, 0, target=("c_attn", "c_proj"))
    # c_attn 96 x 32, attn.c_proj 32 x 32, mlp.c_proj 32 x 128 (its Conv1D weight is 128 x 32)
    q = rank * N_LAYER * ((96 + 32) + (32 + 32) + (32 + 128))
    assert flatten_lora(model).numel() == q == 2112
    spec = lora_layer_spec(mods)
    assert spec == model_layers(gpt2_dir, "c_attn,c_proj")  # from the config, no weights read
    assert sum(d["count"] * (d["d_out"] + d["d_in"]) for d in spec) * rank == q
    assert [(d["d_out"], d["d_in"], d["count"]) for d in spec] == [(96, 32, 2), (32, 32, 2),
                                                                  (32, 128, 2)]
    # only the LoRA factors train
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_A" in n or "lora_B" in n for n in trained)


def test_default_target_is_peft_default_for_gpt2(base, gpt2_dir):
    from fedopt.fl.hf import model_layers

    _, mods = _peft(base, 1, 0)
    assert list(mods) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    assert model_layers(gpt2_dir) == [{"name": "transformer.h.*.attn.c_attn", "d_out": 96,
                                       "d_in": 32, "count": 2}]


def test_bad_targets_ranks_and_masks_are_named(base):
    with pytest.raises(InvalidArgumentError, match=r"target: 'q_proj' matches no layer.*c_attn"):
        _peft(base, 2, 0, target="q_proj")
    with pytest.raises(InvalidArgumentError, match=r"'attn' matches 'transformer.h.0.attn', a "
                                                   r"GPT2Attention"):
        _peft(base, 2, 0, target="attn")
    with pytest.raises(InvalidArgumentError, match=r"rank 33 is out of range.*1\.\.32"):
        _peft(base, 33, 0, target="c_attn")
    model, mods = _peft(base, 2, 0, target="c_attn")
    with pytest.raises(InvalidArgumentError, match="PEFT LoRA layers have no rank mask"):
        set_rank_mask(mods, [1.0, 0.0])
    from fedopt.fl.hf import apply_peft_lora

    with pytest.raises(InvalidArgumentError, match="already has PEFT LoRA layers"):
        apply_peft_lora(model, 2)


def test_bad_directories_are_named(tmp_path, gpt2_dir):
    from fedopt.fl.hf import load_hf_base

    with pytest.raises(InvalidArgumentError, match="is not a directory.*nothing is downloaded"):
        load_hf_base(tmp_path / "missing")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((gpt2_dir / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")  # never unpickled
    with pytest.raises(CheckpointError, match="pytorch_model.bin.*never loads"):
        load_hf_base(pickled)


def test_without_the_extra_the_error_names_it(monkeypatch, tmp_path):
    from fedopt.fl import hf

    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    for call in (lambda: hf.load_hf_base(tmp_path), lambda: hf.model_layers(tmp_path),
                 lambda: hf.model_layers(tmp_path, "c_attn")):
        with pytest.raises(MissingDependencyError, match=r'pip install "fedopt\[hf\]"'):
            call()


def test_a_llama_with_linear_layers_takes_peft_default_targets(gpt2_dir, tmp_path, rng):
    """nn.Linear projections (Llama: q_proj, v_proj by PEFT's default) through the same path."""
    import shutil

    import transformers

    from fedopt.fl.hf import load_hf_base, model_layers

    out = tmp_path / "llama"
    config = transformers.LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(gpt2_dir / f, out / f)
    # q_proj 32 → 32; v_proj 32 → 2 kv heads x head dim 8 = 16
    assert model_layers(out) == [
        {"name": "model.layers.*.self_attn.q_proj", "d_out": 32, "d_in": 32, "count": 2},
        {"name": "model.layers.*.self_attn.v_proj", "d_out": 16, "d_in": 32, "count": 2}]
    base = load_hf_base(out)
    model, mods = _peft(base, 4, 0)
    assert flatten_lora(model).numel() == 4 * 2 * ((32 + 32) + (16 + 32)) == 896
    for name, m in mods.items():  # an nn.Linear base: W0 as stored, d_out x d_in
        assert m.merged_weight().shape == (m.d_out, m.d_in) == tuple(m.base.weight.shape), name
    theta = torch.from_numpy(0.3 * rng.standard_normal(896)).float()
    unflatten_lora(mods, theta)
    ids = torch.from_numpy(rng.integers(0, 320, size=(2, 12)))
    with torch.no_grad():
        moved = (model(ids) - base.model(ids)).abs().max()
    assert moved > 1e-3  # the adapters loaded from the flat vector act on the output
