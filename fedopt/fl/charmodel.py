"""The base model of the federated loop: a small causal character transformer (spec 05 §1).

One import path for the character model, its training and its checkpoints:

- :mod:`fedopt.fl.transformer`: :class:`CharTransformer` (pre-norm GPT with separate ``q``,
  ``k``, ``v``, ``proj``, ``fc1``, ``fc2`` layers that :mod:`fedopt.fl.lora` adapts by name,
  exactly causal attention, initialization from an explicit ``torch.Generator``) and
  :class:`CharTransformerConfig`;
- :mod:`fedopt.fl.training`: :func:`pretrain` (deterministic on CPU: numpy-seeded batches,
  forked and seeded torch RNG, deterministic algorithms for the call), :func:`evaluate_loss`
  and :class:`EvalResult`;
- :mod:`fedopt.fl.charmodel_io`: :func:`save_checkpoint` / :func:`load_checkpoint`, a plain
  ``torch.save`` of tensors, strings and numbers read back with ``torch.load(weights_only=True)``
  — never an arbitrary unpickle.

This module imports torch; ``fedopt`` itself does not import it.
"""

from __future__ import annotations

from fedopt.errors import CheckpointError
from fedopt.fl.charmodel_io import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fedopt.fl.training import EvalResult, evaluate_loss, pretrain

# CharTransformer and its building blocks (the blocks are explicit re-exports, not in __all__)
from fedopt.fl.transformer import MLP as MLP
from fedopt.fl.transformer import Block as Block
from fedopt.fl.transformer import CausalSelfAttention as CausalSelfAttention
from fedopt.fl.transformer import CharTransformer, CharTransformerConfig

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
