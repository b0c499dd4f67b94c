"""Checkpoints of the character model: weights-only files (spec 05 §1).

A checkpoint is a plain ``torch.save`` of tensors, strings and numbers (the format tag and
version, the model config, vocabulary and metadata as JSON strings, the state dict), read back
with ``torch.load(weights_only=True)`` — never an arbitrary unpickle.

Public through :mod:`fedopt.fl.charmodel`. This module imports torch; ``fedopt`` itself does not.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl.corpus import CharVocab
from fedopt.fl.transformer import CharTransformer, CharTransformerConfig
from fedopt.io import atomic_write_bytes

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "Checkpoint",
           "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "fedopt-charmodel"
CHECKPOINT_VERSION = 1


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
