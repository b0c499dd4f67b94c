"""A Hugging Face model with PEFT LoRA through the federated loop (fedopt.fl.hf, fedopt.fl.hf_data,
fedopt.fl.loop).

Oracles: the testbed's client text, decoded from its character ids and re-tokenized with the
model's tokenizer by hand; one FedSGD round against θ0 − lr Σ φ̃_k ∇F_k(θ0) computed here on the
PEFT model; σ² = 0 over the air against the ideal run; the instance's real noise against both;
a rerun with the same seed (bit-identical).
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fl_testing import aircomp_for, core, random_beams

from fedopt.fl.aggregators import IdealAggregator
from fedopt.fl.data import make_federated_data, sample_batch
from fedopt.fl.loop import LoopConfig, client_rng, run_federated
from fedopt.fl.lora import flatten_lora, lora_parameters

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None or importlib.util.find_spec("transformers") is None,
    reason="the fedopt[hf] extra is not installed")

RANK, SEQ = 2, 32


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from fedopt.fl.hf import load_hf_base
    from fedopt.fl.hf_tiny import save_tiny_gpt2

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only cost time on a shared 2-core machine
    yield load_hf_base(save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "gpt2"))
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def chars():
    """K = 3 clients (the ``small`` instance's K), 400 characters per topic."""
    return make_federated_data(3, max_chars_per_topic=400, seed=0)


@pytest.fixture(scope="module")
def tokens(base, chars):
    from fedopt.fl.hf_data import tokenize_data

    return tokenize_data(chars, base.tokenizer)


def _model(base, seed):
    from fedopt.fl.hf import apply_peft_lora

    model = copy.deepcopy(base.model)
    apply_peft_lora(model, RANK, alpha=2.0, generator=torch.Generator().manual_seed(seed))
    return model


def _cfg(seed, **kw):
    return LoopConfig(**{"rounds": 3, "batch_size": 4, "lr": 0.5, "seed": seed,
                         "eval_batches": 1, "seq_len": SEQ, **kw})


def test_client_text_is_retokenized_with_the_models_tokenizer(base, chars, tokens):
    tok = base.tokenizer
    assert tokens.vocab.size == len(tok) and tokens.summary()["vocab_size"] == len(tok)
    for c, t in zip(chars.clients, tokens.clients, strict=True):
        text = chars.vocab.decode(c.train)
        want = tok(text, add_special_tokens=False)["input_ids"]
        assert t.train.dtype == np.int64 and t.train.tolist() == want
        assert tok.decode(t.train.tolist()) == text  # nothing lost
        assert t.heldout.tolist() == tok(chars.vocab.decode(c.heldout),
                                         add_special_tokens=False)["input_ids"]
        assert t.topics == c.topics
        assert t.n_train < c.n_train  # BPE merges: fewer tokens than characters
    assert np.array_equal(tokens.global_heldout, np.concatenate([t.heldout
                                                                 for t in tokens.clients]))
    assert np.allclose(tokens.weights, tokens.data_sizes / tokens.data_sizes.sum())


def test_one_fedsgd_round_is_a_weighted_gradient_step(base, tokens, rng):
    seed, lr = 3, 0.7
    model = _model(base, seed)
    q = flatten_lora(model).numel()
    assert q == RANK * 2 * (96 + 32)  # c_attn (96 x 32) in both blocks
    res = run_federated(model, tokens, IdealAggregator(), _cfg(seed, rounds=1, lr=lr),
                        weights=[1.0, 2.0, 3.0])
    # the gradients at θ0 on the loop's mini-batches, computed here on a fresh PEFT model
    ref = _model(base, seed)
    theta0 = flatten_lora(ref).double().numpy()
    params = lora_parameters(ref)
    phi = np.array([1.0, 2.0, 3.0]) / 6.0
    step = np.zeros(q)
    for k, c in enumerate(tokens.clients):
        x, y = sample_batch(c.train, 4, SEQ, client_rng(seed, 0, k))
        logits = ref(torch.from_numpy(x))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               torch.from_numpy(y).reshape(-1))
        grads = torch.autograd.grad(loss, params)
        step += phi[k] * lr * torch.cat([g.reshape(-1) for g in grads]).double().numpy()
    assert np.abs(step).max() > 1e-4  # B = 0 at θ0, so only B moves; it must move
    # float32 gradients in float64 sums: agreement to ~1e-6 of the step
    assert np.allclose(res.theta, theta0 - step, rtol=0, atol=1e-6 * np.abs(step).max() + 1e-9)
    assert res.summary["payload_reals"] == q


def test_noise_free_aircomp_is_the_ideal_round_and_runs_repeat(base, tokens, small_instance,
                                                               rng):
    inst, seed = small_instance, 11
    beams = random_beams(rng, inst)
    ideal = run_federated(_model(base, seed), tokens, IdealAggregator(), _cfg(seed))
    again = run_federated(_model(base, seed), tokens, IdealAggregator(), _cfg(seed))
    assert core(ideal.history) == core(again.history)  # same seed, same floats
    assert np.array_equal(ideal.theta, again.theta)
    air = run_federated(_model(base, seed), tokens, aircomp_for(inst, seed, beams, 0.0),
                        _cfg(seed))
    # ZF makes the over-the-air sum the average up to float64 rounding; θ is loaded into float32
    # adapters, where that can flip a last bit: allow 1e-6 of |θ|
    tol = 1e-6 * np.abs(ideal.theta).max()
    assert np.abs(air.theta - ideal.theta).max() <= tol
    for a, i in zip(air.history, ideal.history, strict=True):
        assert a["relative_aggregation_error"] < 1e-20  # rounding only: (1e-10 relative)²
        for key in ("train_loss", "eval_loss", "update_norm"):
            assert a[key] == pytest.approx(i[key], rel=1e-6), key  # float32 level, as above
    # discriminating: the instance's receiver noise moves θ far beyond that tolerance
    noisy = run_federated(_model(base, seed), tokens,
                          aircomp_for(inst, seed, beams, inst.noise_power_w), _cfg(seed))
    assert np.abs(noisy.theta - ideal.theta).max() > 100 * tol
    assert all(r["aggregation_error"] > 0 for r in noisy.history)
