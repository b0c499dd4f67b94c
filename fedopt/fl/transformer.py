"""The small causal character transformer, the base model of the federated loop (spec 05 §1).

Architecture (pre-norm GPT): token + learned position embeddings, ``n_layers`` blocks of

    x ← x + proj(Attn(q(LN x), k(LN x), v(LN x))),        x ← x + fc2(GELU(fc1(LN x))),

a final LayerNorm and a linear head (tied to the token embedding by default). Attention is
causal: position i attends to positions ≤ i only (an explicit −∞ mask before the softmax, so a
future token changes earlier logits by exactly nothing). ``q``, ``k``, ``v``, ``proj``, ``fc1`` and
``fc2`` are separate ``nn.Linear`` layers so that :mod:`fedopt.fl.lora` can adapt them by name.

Initialization is drawn from an explicit ``torch.Generator`` (:meth:`CharTransformer.init_weights`):
weights N(0, 0.02²), the residual outputs ``proj`` and ``fc2`` N(0, (0.02/√(2 n_layers))²) (GPT-2),
biases 0, LayerNorm (1, 0). With the tied head the initial logits have std ≈ 0.02·√d_model, so the
initial cross-entropy is ln(vocab_size) + O(0.02² d_model / 2).

Public through :mod:`fedopt.fl.charmodel`. This module imports torch; ``fedopt`` itself does not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import InvalidArgumentError

__all__ = ["CharTransformerConfig", "CausalSelfAttention", "MLP", "Block", "CharTransformer",
           "positive_int"]


def positive_int(name: str, val: Any) -> int:
    """``val`` as an int >= 1 (bools refused), or an error naming ``name``."""
    if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
        raise InvalidArgumentError(f"{name}: expected a positive integer, got {val!r}")
    return int(val)


@dataclass(frozen=True)
class CharTransformerConfig:
    """Hyper-parameters of :class:`CharTransformer` (JSON round trip via ``to_dict``)."""

    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    seq_len: int = 64
    dropout: float = 0.0
    d_ff: int | None = None
    tie_weights: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "seq_len"):
            object.__setattr__(self, name, positive_int(name, getattr(self, name)))
        if self.d_model % self.n_heads:
            raise InvalidArgumentError(
                f"n_heads = {self.n_heads} must divide d_model = {self.d_model}; pick n_heads "
                f"among the divisors of d_model"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not (
                0.0 <= self.dropout < 1.0):
            raise InvalidArgumentError(
                f"dropout: expected a number in [0, 1), got {self.dropout!r}"
            )
        object.__setattr__(self, "dropout", float(self.dropout))
        d_ff = 4 * self.d_model if self.d_ff is None else positive_int("d_ff", self.d_ff)
        object.__setattr__(self, "d_ff", d_ff)
        object.__setattr__(self, "tie_weights", bool(self.tie_weights))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CharTransformerConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise InvalidArgumentError(
                f"model config: unknown fields {sorted(unknown)}; allowed: {sorted(known)}"
            )
        return cls(**dict(data))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate ``q``, ``k``, ``v``, ``proj`` layers."""

    def __init__(self, cfg: CharTransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        mask = torch.ones(cfg.seq_len, cfg.seq_len, dtype=torch.bool).triu(1)
        self.register_buffer("future", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, h, d // h).transpose(1, 2)  # (b, h, t, d_h)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))
        att = att.masked_fill(self.future[:t, :t], float("-inf"))
        att = self.attn_drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: CharTransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, cfg: CharTransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """Small causal character-level transformer (module docstring for the architecture).

    Parameters
    ----------
    vocab_size : int
        Number of token ids (``CharVocab.size``).
    d_model, n_heads, n_layers, seq_len : int
        Width, attention heads (must divide d_model), blocks, longest context.
    dropout : float
        Dropout on attention weights and residual branches (0 by default: deterministic forward).
    d_ff : int, optional
        MLP width, default 4·d_model.
    tie_weights : bool
        Share the output head with the token embedding.
    generator : torch.Generator, optional
        Source of the initial weights; default ``torch.Generator().manual_seed(0)``. Building the
        model never touches torch's global RNG state.

    ``forward(idx)`` maps int64 ids (batch, T ≤ seq_len) to logits (batch, T, vocab_size).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 seq_len: int = 64, dropout: float = 0.0, *, d_ff: int | None = None,
                 tie_weights: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        cfg = CharTransformerConfig(vocab_size, d_model, n_heads, n_layers, seq_len, dropout,
                                    d_ff, tie_weights)
        self.config = cfg
        # nn.Linear's own reset draws from the global RNG; fork it so construction leaves the
        # caller's RNG state alone (the real init comes from `generator` below)
        with torch.random.fork_rng(devices=[]):
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model)
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        self.init_weights(torch.Generator().manual_seed(0) if generator is None else generator)

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Re-draw every parameter from ``generator`` (CPU draw, then copied: same values on any
        device). Order: modules in ``named_modules`` order, so a seed fixes the model."""
        if not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(
                f"generator: expected a torch.Generator, got {type(generator).__name__}"
            )
        std = 0.02
        resid_std = std / math.sqrt(2 * self.config.n_layers)

        def normal_(p: torch.Tensor, s: float) -> None:
            draw = torch.randn(p.shape, generator=generator, device=generator.device,
                               dtype=torch.float32) * s
            p.copy_(draw.to(device=p.device, dtype=p.dtype))

        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                if mod is self.head and self.config.tie_weights:
                    continue
                leaf = name.rsplit(".", 1)[-1]
                normal_(mod.weight, resid_std if leaf in ("proj", "fc2") else std)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, nn.Embedding):
                normal_(mod.weight, std)
            elif isinstance(mod, nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.ndim != 2:
            raise InvalidArgumentError(f"idx: expected shape (batch, T), got {tuple(idx.shape)}")
        t = idx.shape[1]
        if not 1 <= t <= self.config.seq_len:
            raise InvalidArgumentError(
                f"idx: sequence length T = {t} must lie in 1..seq_len = {self.config.seq_len}"
            )
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
