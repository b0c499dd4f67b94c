"""The base model of the federated loop: a small causal character transformer (spec 05 §1).

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

Pre-training (:func:`pretrain`) is deterministic on CPU: batches come from a numpy generator
seeded with ``seed``, dropout (if any) from torch's generator forked and seeded inside the call
(the caller's global RNG state is restored afterwards), and deterministic algorithms are switched
on for the duration of the call. Checkpoints are a plain ``torch.save`` of tensors, strings and
numbers, read back with ``torch.load(weights_only=True)`` — never an arbitrary unpickle.

This module imports torch; ``fedopt`` itself does not import it.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl.data import CharVocab, sample_batch
from fedopt.io import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "CharTransformerConfig",
    "CharTransformer",
    "pretrain",
    "EvalResult",
    "evaluate_loss",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "fedopt-charmodel"
CHECKPOINT_VERSION = 1


def _pos_int(name: str, val: Any) -> int:
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
            object.__setattr__(self, name, _pos_int(name, getattr(self, name)))
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
        d_ff = 4 * self.d_model if self.d_ff is None else _pos_int("d_ff", self.d_ff)
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


# --------------------------------------------------------------------------------------------
# training and evaluation


def _as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"{name}: expected a 1-D integer array of token ids, got shape {arr.shape} and dtype "
            f"{arr.dtype}"
        )
    return arr.astype(np.int64, copy=False)


def _check_id_range(arr: np.ndarray, model: CharTransformer | nn.Module, name: str) -> None:
    v = getattr(model, "vocab_size", None)
    if v is not None and arr.size and (arr.min() < 0 or arr.max() >= v):
        raise InvalidArgumentError(
            f"{name}: ids must lie in 0..{v - 1} (the model's vocab_size), got range "
            f"{int(arr.min())}..{int(arr.max())}; encode with the vocabulary the model was built "
            f"for"
        )


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def pretrain(model: CharTransformer, data: np.ndarray, *, steps: int, batch_size: int = 32,
             lr: float = 3e-3, seed: int = 0, weight_decay: float = 0.0,
             grad_clip: float | None = 1.0, seq_len: int | None = None) -> list[float]:
    """Pre-train ``model`` in place with AdamW on random windows of ``data``; deterministic.

    Each step draws ``batch_size`` windows with :func:`fedopt.fl.data.sample_batch` from
    ``np.random.default_rng(seed)``, minimizes the mean next-character cross-entropy, clips the
    gradient norm to ``grad_clip`` and takes one AdamW step (β = (0.9, 0.99)).

    Parameters
    ----------
    model : CharTransformer
        Trained in place (on the device it lives on; CPU for bit-exact reproducibility).
    data : np.ndarray
        1-D int ids (e.g. ``np.concatenate([c.train for c in fed.clients])``).
    steps, batch_size : int
    lr, weight_decay : float
    seed : int
        Seeds the batch draws and (with dropout > 0) the dropout masks.
    grad_clip : float or None
        Max gradient 2-norm; None disables clipping.
    seq_len : int, optional
        Window length, default ``model.seq_len``.

    Returns
    -------
    list of float
        The training loss (nats per character) at every step, before that step's update.
    """
    steps = _pos_int("steps", steps)
    batch_size = _pos_int("batch_size", batch_size)
    seq_len = model.config.seq_len if seq_len is None else _pos_int("seq_len", seq_len)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"lr: expected a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
    ids = _as_ids(data, "data")
    _check_id_range(ids, model, "data")
    rng = np.random.default_rng(int(seed))
    device = _device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(lr), betas=(0.9, 0.99),
                            weight_decay=float(weight_decay), foreach=False)
    was_training = model.training
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    losses: list[float] = []
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))  # dropout masks only; global state restored on exit
            model.train()
            for _ in range(steps):
                x, y = sample_batch(ids, batch_size, seq_len, rng)
                xt = torch.from_numpy(x).to(device)
                yt = torch.from_numpy(y).to(device)
                logits = model(xt)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, float(grad_clip), foreach=False)
                opt.step()
                losses.append(float(loss.detach()))
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        model.train(was_training)
    return losses


@dataclass(frozen=True)
class EvalResult:
    """Mean next-character cross-entropy ``loss`` (nats) over ``n_tokens`` predicted characters
    and ``perplexity`` = exp(loss)."""

    loss: float
    perplexity: float
    n_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate_loss(model: nn.Module, ids: np.ndarray, seq_len: int | None = None,
                  batch_size: int = 64, max_batches: int | None = None) -> EvalResult:
    """Cross-entropy of ``model`` on ``ids`` over non-overlapping windows (deterministic).

    Windows start at 0, L, 2L, … (L = ``seq_len``, default the model's) while a full window and
    its next-character targets fit; when ``max_batches`` caps them, the kept windows are spread
    evenly over the whole array (not just its beginning). Data shorter than L + 1 form a single
    window of length len(ids) − 1. The loss is the token-weighted mean over all kept windows; the
    model is put in eval mode for the call and restored after.
    """
    arr = _as_ids(ids)
    if arr.shape[0] < 2:
        raise InvalidArgumentError(
            f"ids: need at least 2 tokens to score next-character predictions, got {arr.shape[0]}"
        )
    _check_id_range(arr, model, "ids")
    if seq_len is None:
        seq_len = getattr(model, "seq_len", None)
        if seq_len is None:
            raise InvalidArgumentError("seq_len: required for a model without a seq_len attribute")
    seq_len = _pos_int("seq_len", seq_len)
    batch_size = _pos_int("batch_size", batch_size)
    if max_batches is not None:
        max_batches = _pos_int("max_batches", max_batches)
    n = arr.shape[0]
    length = min(seq_len, n - 1)
    starts = np.arange(0, n - length, length)
    if max_batches is not None and starts.size > max_batches * batch_size:
        keep = np.linspace(0, starts.size - 1, max_batches * batch_size).round().astype(np.int64)
        starts = starts[np.unique(keep)]
    device = _device_of(model)
    offs = np.arange(length + 1)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, starts.size, batch_size):
            win = torch.from_numpy(arr[starts[i:i + batch_size, None] + offs[None, :]]).to(device)
            logits = model(win[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(),
                                   win[:, 1:].reshape(-1), reduction="sum")
            total += float(loss)
            count += int(win.shape[0] * length)
    finally:
        model.train(was_training)
    mean = total / count
    return EvalResult(loss=mean, perplexity=math.exp(mean) if mean < 700 else math.inf,
                      n_tokens=count)


# --------------------------------------------------------------------------------------------
# checkpoints


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """What :func:`load_checkpoint` returns: the model (eval mode), its vocabulary, metadata."""

    model: CharTransformer
    vocab: CharVocab
    metadata: dict[str, Any]


def save_checkpoint(model: CharTransformer, vocab: CharVocab, path: str | os.PathLike, *,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (config + weights) and ``vocab`` to ``path`` in a weights-only format.

    The file is ``torch.save`` of a dict holding only strings, ints and CPU tensors: the format
    tag and version, the model config, vocabulary and ``metadata`` as JSON strings, and the plain
    state dict. It is written to a temporary file and renamed, so a crash never leaves half a
    checkpoint under ``path``.
    """
    if not isinstance(model, CharTransformer):
        raise InvalidArgumentError(
            f"model: expected a CharTransformer, got {type(model).__name__}"
        )
    if model.config.vocab_size != vocab.size:
        raise InvalidArgumentError(
            f"vocab: size {vocab.size} differs from the model's vocab_size "
            f"{model.config.vocab_size}"
        )
    try:
        meta_json = json.dumps(dict(metadata or {}))
    except TypeError as exc:
        raise InvalidArgumentError(f"metadata: must be JSON-serializable ({exc})") from exc
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    blob = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config_json": json.dumps(model.config.to_dict()),
        "vocab_json": json.dumps(vocab.to_dict()),
        "metadata_json": meta_json,
        "state_dict": state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                    ) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, corrupt, of another format/version, or its weights do not
        fit its config; the message names the path.
    """
    path = Path(path)
    hint = "re-create it with fedopt.fl.charmodel.save_checkpoint (pre-train the model again)"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file; {hint}")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, truncated pickle, disallowed global, ...
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a weights-only torch file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); {hint}"
        ) from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a fedopt character-model checkpoint (format tag "
            f"{blob.get('format') if isinstance(blob, dict) else None!r}); {hint}"
        )
    if blob.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has version {blob.get('version')!r}; this fedopt reads "
            f"version {CHECKPOINT_VERSION}; {hint}"
        )
    try:
        config = CharTransformerConfig.from_dict(json.loads(blob["config_json"]))
        vocab = CharVocab.from_dict(json.loads(blob["vocab_json"]))
        metadata = json.loads(blob.get("metadata_json", "{}"))
        model = CharTransformer(**config.to_dict())
        model.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is inconsistent ({exc}); {hint}") from exc
    if vocab.size != config.vocab_size:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: vocabulary size {vocab.size} differs from the model's "
            f"vocab_size {config.vocab_size}; {hint}"
        )
    model.to(map_location)
    model.eval()
    return Checkpoint(model=model, vocab=vocab, metadata=metadata)
