"""The base character transformer: causality, init loss, deterministic pre-training, checkpoints
(fedopt.fl.charmodel, spec 05 §1)."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedopt.errors import FedOptError, InvalidArgumentError  # noqa: E402
from fedopt.fl.charmodel import (  # noqa: E402
    CharTransformer,
    CheckpointError,
    evaluate_loss,
    load_checkpoint,
    pretrain,
    save_checkpoint,
)
from fedopt.fl.data import CharVocab, make_federated_data  # noqa: E402

TINY = dict(d_model=32, n_heads=2, n_layers=1, seq_len=32)


@pytest.fixture(scope="module")
def fed():
    return make_federated_data(4, seed=0, max_chars_per_topic=3000)


@pytest.fixture(scope="module")
def train_ids(fed) -> np.ndarray:
    return np.concatenate([c.train for c in fed.clients])


@pytest.fixture
def torch_gen(rng) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**31)))


def test_layers_are_named_for_lora(fed):
    model = CharTransformer(fed.vocab.size)
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear)}
    assert {"q", "k", "v", "proj", "fc1", "fc2"} <= linear
    assert model.head.weight is model.tok_emb.weight  # tied by default
    untied = CharTransformer(fed.vocab.size, tie_weights=False, **TINY)
    assert untied.head.weight is not untied.tok_emb.weight
    with pytest.raises(InvalidArgumentError, match="n_heads"):
        CharTransformer(fed.vocab.size, d_model=30, n_heads=4)


def test_model_is_causal_exactly(fed, torch_gen, rng):
    model = CharTransformer(fed.vocab.size, **TINY, generator=torch_gen).eval()
    x = torch.from_numpy(rng.integers(0, fed.vocab.size, size=(3, 32)))
    base = model(x)
    for j in (0, 7, 31):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % fed.vocab.size
        out = model(x2)
        # earlier positions never see token j: bit-identical (masked scores are -inf → weight 0)
        assert torch.equal(out[:, :j], base[:, :j])
        assert not torch.equal(out[:, j], base[:, j])
    # a prefix alone gives the same logits as inside the longer sequence (no look-ahead at all)
    assert torch.allclose(model(x[:, :10]), base[:, :10], rtol=0, atol=1e-6)  # BLAS blocking


def test_init_is_deterministic_and_leaves_global_rng_alone(fed):
    state = torch.get_rng_state()
    a = CharTransformer(fed.vocab.size, **TINY, generator=torch.Generator().manual_seed(4))
    b = CharTransformer(fed.vocab.size, **TINY, generator=torch.Generator().manual_seed(4))
    c = CharTransformer(fed.vocab.size, **TINY, generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn.q.weight"], sc["blocks.0.attn.q.weight"])
    b.init_weights(torch.Generator().manual_seed(5))
    assert all(torch.equal(b.state_dict()[k], sc[k]) for k in sc)


def test_initial_loss_is_log_vocab(fed):
    # Default size. With std-0.02 weights the logits have std ≈ 0.02·√64 = 0.16, which moves the
    # expected cross-entropy off ln V by ~σ²/2 ≈ 0.01; the tied head also favours repeating the
    # current character (measured −0.04 on this corpus). 0.1 nats covers both with margin.
    model = CharTransformer(fed.vocab.size)
    res = evaluate_loss(model, fed.global_heldout, max_batches=4)
    assert abs(res.loss - math.log(fed.vocab.size)) < 0.1
    assert res.perplexity == pytest.approx(math.exp(res.loss), rel=1e-12)
    n = fed.global_heldout.size  # non-overlapping windows of 64, capped at 4 batches of 64
    assert res.n_tokens == 64 * min(4 * 64, len(range(0, n - 64, 64)))
    capped = evaluate_loss(model, fed.global_heldout, max_batches=1, batch_size=8)
    assert capped.n_tokens == 8 * 64


def test_evaluate_loss_matches_direct_cross_entropy(fed, torch_gen):
    model = CharTransformer(fed.vocab.size, **TINY, generator=torch_gen)
    ids = fed.clients[0].heldout[:100]
    res = evaluate_loss(model, ids, batch_size=2)
    # oracle: windows [0, 32), [32, 64), [64, 96) with their next characters (3 · 32 tokens)
    x = torch.from_numpy(ids[:96].reshape(3, 32))
    y = torch.from_numpy(ids[1:97].reshape(3, 32))
    with torch.no_grad():
        direct = torch.nn.functional.cross_entropy(model(x).reshape(-1, fed.vocab.size),
                                                   y.reshape(-1))
    assert res.n_tokens == 96
    assert res.loss == pytest.approx(float(direct), rel=1e-5)  # float32 logits, float64 sum
    short = evaluate_loss(model, ids[:5])  # shorter than seq_len + 1: one window of 4
    assert short.n_tokens == 4
    assert model.training  # mode restored


def test_pretraining_lowers_loss_and_is_reproducible(fed, train_ids, rng):
    seed = int(rng.integers(0, 2**31))
    state = torch.get_rng_state()

    def run() -> tuple[list[float], dict]:
        model = CharTransformer(fed.vocab.size, **TINY,
                                generator=torch.Generator().manual_seed(seed))
        losses = pretrain(model, train_ids, steps=30, batch_size=16, lr=1e-2, seed=seed)
        return losses, model.state_dict()

    l1, s1 = run()
    l2, s2 = run()
    assert len(l1) == 30
    # 30 AdamW steps on a 1-layer model take the loss from ≈ ln 104 = 4.64 to ≈ 3.2 (measured
    # drop ≈ 0.8 nats between the first and last 5-step means); 0.3 leaves a wide margin
    assert np.mean(l1[-5:]) < np.mean(l1[:5]) - 0.3
    assert l1 == l2  # bit for bit
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.are_deterministic_algorithms_enabled()  # global flag restored


def test_pretraining_with_dropout_is_reproducible(fed, train_ids):
    def run() -> list[float]:
        model = CharTransformer(fed.vocab.size, **TINY, dropout=0.1)
        return pretrain(model, train_ids, steps=3, batch_size=4, seed=1)

    assert run() == run()


def test_checkpoint_round_trip_gives_identical_logits(fed, train_ids, tmp_path, rng):
    model = CharTransformer(fed.vocab.size, **TINY, tie_weights=False)
    pretrain(model, train_ids, steps=2, batch_size=4, seed=0)
    path = save_checkpoint(model, fed.vocab, tmp_path / "sub" / "base.pt",
                           metadata={"steps": 2})
    ckpt = load_checkpoint(path)
    assert ckpt.vocab == fed.vocab
    assert ckpt.model.config == model.config
    assert ckpt.metadata == {"steps": 2}
    x = torch.from_numpy(rng.integers(0, fed.vocab.size, size=(2, 32)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    # the tied default model too (shared embedding/head survive the round trip)
    tied = CharTransformer(fed.vocab.size, **TINY)
    loaded = load_checkpoint(save_checkpoint(tied, fed.vocab, tmp_path / "tied.pt")).model
    assert loaded.head.weight is loaded.tok_emb.weight
    with torch.no_grad():
        assert torch.equal(loaded(x), tied.eval()(x))


def test_bad_checkpoints_raise_fedopt_errors(fed, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt") as exc:
        load_checkpoint(missing)
    assert isinstance(exc.value, FedOptError)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)

    good = save_checkpoint(CharTransformer(fed.vocab.size, **TINY), fed.vocab,
                           tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)

    # a pickle that needs arbitrary globals is refused, not executed (weights_only=True)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "fedopt-charmodel", "obj": fractions.Fraction(1, 3)}, unsafe)
    with pytest.raises(CheckpointError, match="unsafe.pt"):
        load_checkpoint(unsafe)

    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a fedopt"):
        load_checkpoint(other)

    with pytest.raises(InvalidArgumentError, match="vocab"):
        save_checkpoint(CharTransformer(7, **TINY), CharVocab.from_text("abc"),
                        tmp_path / "x.pt")
