"""Client data for a Hugging Face model: the testbed's split re-tokenized by its tokenizer.

The testbed's client split is made as for the character models (same topics or task chunks per
client, same held-out suffixes); :func:`tokenize_data` decodes each client's training and
held-out text, and every task's held-out text, back to text and re-tokenizes it with the
model's tokenizer (no special tokens), so D_k and φ_k become token counts. Characters outside the
testbed's character vocabulary (rare ones of the ``domain-shift`` snapshot) reach the tokenizer
as U+FFFD, as the character models see them. Topic boundaries inside a client's text are kept
as they are (concatenated, as for the character models). Part of :mod:`fedopt.fl.hf`; needs
numpy and a tokenizer object only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["TokenVocab", "tokenize_data"]


@dataclass(frozen=True, eq=False)
class TokenVocab:
    """The vocabulary of tokenized data: a Hugging Face tokenizer behind
    :class:`~fedopt.fl.corpus.CharVocab`'s ``size``, ``encode`` and ``decode``."""

    tokenizer: Any

    @property
    def size(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of ``text``, without special tokens."""
        ids = self.tokenizer(text, add_special_tokens=False, return_attention_mask=False,
                             verbose=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode([int(i) for i in np.asarray(ids)])


def tokenize_data(data: Any, tokenizer: Any) -> Any:
    """The client split ``data`` (a :class:`~fedopt.fl.data.FederatedData` of character ids) with
    every client's training and held-out text, and every task's held-out text, re-tokenized by
    ``tokenizer`` (module docstring)."""
    vocab = TokenVocab(tokenizer)

    def again(ids: np.ndarray) -> np.ndarray:
        return vocab.encode(data.vocab.decode(ids))

    clients = tuple(replace(c, train=again(c.train), heldout=again(c.heldout))
                    for c in data.clients)
    for c in clients:
        if c.n_train < 2:
            raise InvalidArgumentError(
                f"data: client {c.client_id} has {c.n_train} training tokens after tokenization; "
                f"use fewer clients")
    return replace(data, vocab=vocab, clients=clients,
                   global_heldout=np.concatenate([c.heldout for c in clients]),
                   task_heldout={k: again(v) for k, v in data.task_heldout.items()})
