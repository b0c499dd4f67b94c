"""LoRA adapters (spec 05 §1, spec 01 §2): at init the adapted model is the base model bit for bit;
a LoRALinear is x (W0 + (α/r) B diag(m) A)ᵀ + b; a zero in the rank mask removes exactly that
rank-1 component (output and gradient); only A and B train; the payload vector round-trips exactly
and has length r · Σ (d_out + d_in) = LoRASpec.params_per_rank · r; the same seed gives the same
adapters; bad ranks name the layer and the range; gradcheck passes in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.lora import (
    LoRALinear,
    apply_lora,
    flatten_lora,
    load_lora_state,
    lora_layer_spec,
    lora_parameters,
    lora_state,
    set_rank_mask,
    unflatten_lora,
)
from fedopt.instance import LoRALayer, LoRASpec


@pytest.fixture
def gen(rng: np.random.Generator) -> torch.Generator:
    """A torch generator seeded from the suite's one ``rng`` fixture."""
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


class Block(nn.Module):
    """Attention-like block: q, k, v, proj (adapted by default) and an MLP ``fc`` (not)."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d, bias=False)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, hidden)
        self.out = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.proj(att @ v)
        return x + self.out(torch.relu(self.fc(x)))


class TinyTransformer(nn.Module):
    def __init__(self, d: int = 8, hidden: int = 12, n_blocks: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, hidden) for _ in range(n_blocks))
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _model(gen: torch.Generator, dtype=torch.float32, **kw) -> TinyTransformer:
    """A TinyTransformer with weights drawn from ``gen`` (not from torch's global generator)."""
    model = TinyTransformer(**kw).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.3)
    return model


def _randomize_B(modules: dict[str, LoRALinear], gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in modules.values():
            m.B.copy_(torch.randn(m.B.shape, generator=gen, dtype=m.B.dtype))


def test_init_reproduces_a_sequential_model_exactly(gen):
    base = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    adapted = copy.deepcopy(base)
    mods = apply_lora(adapted, 2, alpha=16.0, target=lambda name, m: True, generator=gen)
    assert list(mods) == ["0", "2"] and isinstance(adapted[0], LoRALinear)
    x = torch.randn(7, 6, generator=gen)
    # B = 0 makes the update an exact +0.0: bit-for-bit equality, no tolerance
    assert torch.equal(adapted(x), base(x))


def test_init_reproduces_an_attention_model_exactly_and_adapts_only_targets(gen):
    base = _model(gen)
    adapted = copy.deepcopy(base)
    mods = apply_lora(adapted, 3, generator=gen)
    assert list(mods) == [f"blocks.{i}.{n}" for i in range(2) for n in ("q", "k", "v", "proj")]
    assert isinstance(adapted.blocks[1].fc, nn.Linear) and not isinstance(
        adapted.blocks[1].fc, LoRALinear)
    x = torch.randn(2, 5, 8, generator=gen)
    assert torch.equal(adapted(x), base(x))
    _randomize_B(mods, gen)
    # not a vacuous check: once B moves the output does
    assert not torch.allclose(adapted(x), base(x))


def test_forward_equals_the_merged_weight_formula(gen):
    lin = nn.Linear(7, 5, dtype=torch.float64)
    m = LoRALinear(lin, 3, alpha=6.0, generator=gen)
    with torch.no_grad():
        m.B.copy_(torch.randn(5, 3, generator=gen, dtype=torch.float64))
    x = torch.randn(4, 2, 7, generator=gen, dtype=torch.float64)
    expected = x @ (lin.weight + 2.0 * m.B @ m.A).T + lin.bias
    # float64, entries O(10), a handful of products: reassociation error ~1e-14 ≪ 1e-12
    torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(m.merged_weight(), lin.weight + 2.0 * m.B @ m.A, rtol=0, atol=1e-12)
    assert m.scaling == 2.0 and m.rank == 3


def test_mask_removes_exactly_the_masked_components(gen):
    r = 5
    m = LoRALinear(nn.Linear(9, 6, dtype=torch.float64), r, alpha=10.0, generator=gen)
    with torch.no_grad():
        m.B.copy_(torch.randn(6, r, generator=gen, dtype=torch.float64))
    keep = [0, 2, 3]
    m.set_mask(torch.tensor([i in keep for i in range(r)]))
    kept_sum = sum(torch.outer(m.B[:, i], m.A[i]) for i in keep).detach()
    # float64, three rank-1 terms of O(1): summation-order error ~1e-15
    torch.testing.assert_close(m.delta_weight().detach(), 2.0 * kept_sum, rtol=0, atol=1e-12)
    x = torch.randn(8, 9, generator=gen, dtype=torch.float64)
    m(x).square().sum().backward()
    dropped = [i for i in range(r) if i not in keep]
    # a masked component is multiplied by an exact 0: its gradient is exactly zero
    assert torch.equal(m.A.grad[dropped], torch.zeros(len(dropped), 9, dtype=torch.float64))
    assert torch.equal(m.B.grad[:, dropped], torch.zeros(6, len(dropped), dtype=torch.float64))
    assert (m.A.grad[keep].abs().sum(1) > 0).all() and (m.B.grad[:, keep].abs().sum(0) > 0).all()
    m.set_mask(torch.zeros(r))
    assert torch.equal(m(x), m.base(x))


def test_set_rank_mask_for_all_or_some_layers(gen):
    model = _model(gen)
    mods = apply_lora(model, 4, generator=gen)
    set_rank_mask(mods, [1, 0, 1, 0])
    assert all(torch.equal(m.rank_mask, torch.tensor([1.0, 0, 1, 0])) for m in mods.values())
    set_rank_mask(model, {"blocks.0.q": torch.ones(4, dtype=torch.bool)})
    assert torch.equal(mods["blocks.0.q"].rank_mask, torch.ones(4))
    assert torch.equal(mods["blocks.0.k"].rank_mask, torch.tensor([1.0, 0, 1, 0]))
    with pytest.raises(InvalidArgumentError, match="length r = 4"):
        set_rank_mask(mods, [1, 0, 1])
    with pytest.raises(InvalidArgumentError, match="no adapted layer named 'blocks.0.fc'"):
        set_rank_mask(mods, {"blocks.0.fc": [1, 1, 1, 1]})


def test_gradients_reach_only_A_and_B(gen):
    model = _model(gen)
    mods = apply_lora(model, 2, generator=gen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(mods)}
    assert len(trainable) == 2 * len(mods)
    x = torch.randn(3, 4, 8, generator=gen)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        if name.endswith((".A", ".B")):
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # at init B = 0, so ∂L/∂A = (α/r) Bᵀ (…) is exactly zero while ∂L/∂B is not
    assert all(torch.equal(m.A.grad, torch.zeros_like(m.A)) for m in mods.values())
    assert all(m.B.grad.abs().sum() > 0 for m in mods.values())


def test_flatten_round_trip_and_payload_length_matches_lora_spec(gen):
    r = 3
    model = _model(gen, d=8, hidden=12, n_blocks=2)
    mods = apply_lora(model, r, target=("q", "k", "v", "proj", "fc"), generator=gen)
    spec = lora_layer_spec(mods)
    assert spec == [
        {"name": "blocks.*.q,blocks.*.k,blocks.*.v,blocks.*.proj", "d_out": 8, "d_in": 8,
         "count": 8},
        {"name": "blocks.*.fc", "d_out": 12, "d_in": 8, "count": 2},
    ]
    by_hand = r * (8 * (8 + 8) + 2 * (12 + 8))
    lora = LoRASpec(layers=tuple(LoRALayer(**d) for d in spec), ranks=(r,))
    v = flatten_lora(mods)
    assert v.ndim == 1 and v.numel() == by_hand == lora.params_per_rank * r
    for factors in ("A", "B"):
        spec_f = LoRASpec(layers=lora.layers, ranks=(r,), factors=factors)
        assert flatten_lora(mods, factors).numel() == spec_f.params_per_rank * r
    # layer after layer, A then B, row-major
    first = mods["blocks.0.q"]
    assert torch.equal(v[: r * 8], first.A.detach().reshape(-1))
    assert torch.equal(v[r * 8: r * 16], first.B.detach().reshape(-1))
    w = torch.randn(v.numel(), generator=gen)
    unflatten_lora(mods, w)
    assert torch.equal(flatten_lora(mods), w)  # copies only: exact
    assert all(p.requires_grad for p in lora_parameters(mods))
    w_b = torch.randn(flatten_lora(mods, "B").numel(), generator=gen)
    unflatten_lora(mods, w_b, "B")
    assert torch.equal(flatten_lora(mods, "B"), w_b)
    assert torch.equal(flatten_lora(mods, "A"),
                       torch.cat([m.A.detach().reshape(-1) for m in mods.values()]))
    with pytest.raises(InvalidArgumentError, match=f"length {by_hand}"):
        unflatten_lora(mods, w[:-1])


def test_state_round_trip_and_key_checks(gen):
    model = _model(gen)
    mods = apply_lora(model, 2, generator=gen)
    _randomize_B(mods, gen)
    state = lora_state(mods)
    assert list(state)[:2] == ["blocks.0.q.A", "blocks.0.q.B"] and len(state) == 2 * len(mods)
    saved = flatten_lora(mods)
    unflatten_lora(mods, torch.zeros_like(saved))
    # the state is a copy: zeroing the adapters leaves it as it was
    assert not torch.equal(state["blocks.0.q.B"], mods["blocks.0.q"].B.detach())
    load_lora_state(model, state)
    assert torch.equal(flatten_lora(mods), saved)
    with pytest.raises(InvalidArgumentError, match="missing"):
        load_lora_state(mods, {k: v for k, v in state.items() if k != "blocks.1.v.A"})
    bad = dict(state, **{"blocks.0.q.A": torch.zeros(3, 8)})
    with pytest.raises(InvalidArgumentError, match=r"'blocks.0.q.A' has shape \(3, 8\)"):
        load_lora_state(mods, bad)


def test_same_seed_same_adapters_whatever_the_dtype(gen):
    seed, mseed = (int(s) for s in torch.randint(2**31, (2,), generator=gen))
    flat = []
    for dtype in (torch.float32, torch.float32, torch.float64):
        model = _model(torch.Generator().manual_seed(mseed), dtype=dtype)
        for init in ("kaiming", "gaussian"):
            mods = apply_lora(copy.deepcopy(model), 3, init=init,
                              generator=torch.Generator().manual_seed(seed))
            flat.append(flatten_lora(mods))
    k32, g32, k32b, g32b, k64, g64 = flat
    assert torch.equal(k32, k32b) and torch.equal(g32, g32b)
    # drawn in float64 then cast: the float32 adapters are the rounded float64 ones
    assert torch.equal(k64.float(), k32) and torch.equal(g64.float(), g32)
    other = flatten_lora(apply_lora(_model(torch.Generator().manual_seed(mseed)), 3,
                                    generator=torch.Generator().manual_seed(seed + 1)))
    assert not torch.equal(other, k32)
    # Kaiming-uniform bound 1/√d_in; Gaussian std 1/r (loose: 8·16·3 = 384 draws)
    assert k64.abs().max() <= 8 ** -0.5 and 0.2 < g64.std() * 3 < 1.8


def test_bad_rank_names_the_layer_and_the_range(gen):
    model = _model(gen, d=8, hidden=12)
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(InvalidArgumentError, match=r"rank 9 .*'blocks.0.q' \(8 × 8\).*1\.\.8"):
        apply_lora(model, 9)
    with pytest.raises(InvalidArgumentError, match=r"rank 0 .*1\.\.8"):
        apply_lora(model, 0)
    with pytest.raises(InvalidArgumentError, match="expected an integer"):
        apply_lora(model, 2.0)
    with pytest.raises(InvalidArgumentError, match=r"rank 6 .*'head' \(5 × 8\).*1\.\.5"):
        apply_lora(model, 6, target="head")
    with pytest.raises(InvalidArgumentError, match=r"no nn.Linear layer .*'blocks.0.q'"):
        apply_lora(model, 2, target=("query", "key"))
    with pytest.raises(InvalidArgumentError, match="alpha"):
        apply_lora(model, 2, alpha=-1.0)
    # a failed call changes nothing
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == before
    with pytest.raises(InvalidArgumentError, match="1..3"):
        LoRALinear(nn.Linear(3, 10), 4, name="tiny")


def test_multihead_attention_out_proj_is_refused():
    model = nn.Sequential(nn.MultiheadAttention(8, 2))
    with pytest.raises(InvalidArgumentError, match="never calls it"):
        apply_lora(model, 2, target="out_proj")


def test_gradcheck_in_float64(gen):
    m = LoRALinear(nn.Linear(5, 4, dtype=torch.float64), 3, alpha=4.5, generator=gen)
    with torch.no_grad():
        m.B.copy_(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    m.set_mask([1.0, 0.0, 1.0])
    x = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    A = m.A.detach().clone().requires_grad_(True)
    B = m.B.detach().clone().requires_grad_(True)

    def f(x, A, B):
        return torch.func.functional_call(m, {"A": A, "B": B}, (x,))

    # gradcheck's own float64 finite-difference tolerances (eps 1e-6, atol 1e-5)
    assert torch.autograd.gradcheck(f, (x, A, B))
