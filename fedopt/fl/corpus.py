"""The text corpus and its character vocabulary (spec 05 §1).

The corpus ships with Python itself: ``pydoc_data.topics.topics``, about 80 named help topics
(≈ 465k characters), so nothing is downloaded at run time. Text is modelled character by
character with a :class:`CharVocab` (the sorted distinct characters of the corpus plus one
unknown id).

Public through :mod:`fedopt.fl.data`. This module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["VOCAB_SCHEMA_VERSION", "load_corpus", "CharVocab"]

#: Version stamp written by :meth:`CharVocab.to_dict`.
VOCAB_SCHEMA_VERSION = 1


def load_corpus() -> dict[str, str]:
    """The text corpus: Python's ``pydoc_data.topics`` as ``{topic name: text}``, sorted by name.

    Returns a fresh dict on every call (mutating it does not touch the standard library's copy);
    the order is deterministic (sorted names), whatever the Python build's insertion order.
    """
    from pydoc_data.topics import topics

    return {name: str(topics[name]) for name in sorted(topics)}


# --------------------------------------------------------------------------------------------
# vocabulary


@dataclass(frozen=True)
class CharVocab:
    """Character vocabulary: ids 0..n-1 are the sorted distinct characters, id n is "unknown".

    Parameters
    ----------
    chars : str
        The known characters, distinct and sorted by code point (as ``sorted(set(text))``).

    Attributes
    ----------
    size : int
        n + 1 (the known characters and the unknown id): the model's vocabulary size.
    unk_id : int
        n; :meth:`encode` maps characters outside the vocabulary to it and :meth:`decode` shows it
        as ``unk_char`` (U+FFFD).
    """

    chars: str
    unk_char: str = field(default="\ufffd", repr=False)
    _codes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.chars, str) or not self.chars:
            raise InvalidArgumentError(
                f"chars: expected a non-empty string of distinct characters, got {self.chars!r}"
            )
        if "".join(sorted(set(self.chars))) != self.chars:
            raise InvalidArgumentError(
                "chars: characters must be distinct and sorted by code point; build the vocabulary "
                "with CharVocab.from_text(text)"
            )
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        object.__setattr__(self, "_codes", codes)

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The vocabulary of ``text``: its sorted distinct characters plus the unknown id."""
        return cls("".join(sorted(set(text))))

    @classmethod
    def from_corpus(cls, corpus: Mapping[str, str] | None = None) -> CharVocab:
        """The vocabulary of all topics of ``corpus`` (default: :func:`load_corpus`)."""
        corpus = load_corpus() if corpus is None else corpus
        return cls.from_text("".join(corpus.values()))

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    @property
    def unk_id(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids (int64, one per character) of ``text``; unknown characters map to ``unk_id``."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"text: expected a str, got {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        code = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        code = code.astype(np.int64)
        idx = np.searchsorted(self._codes, code)
        idx_c = np.minimum(idx, len(self._codes) - 1)
        known = self._codes[idx_c] == code
        return np.where(known, idx_c, self.unk_id).astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (``unk_id`` shows as ``unk_char``); inverse of :meth:`encode` on
        text made of known characters."""
        arr = np.asarray(ids)
        if arr.size == 0:
            return ""
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(
                f"ids: expected a 1-D integer array, got shape {arr.shape} and dtype {arr.dtype}"
            )
        if arr.min() < 0 or arr.max() >= self.size:
            raise InvalidArgumentError(
                f"ids: values must lie in 0..{self.size - 1} (vocabulary size {self.size}), got "
                f"range {int(arr.min())}..{int(arr.max())}"
            )
        table = self.chars + self.unk_char
        return "".join(table[i] for i in arr.tolist())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (schema version stamp, the characters as a list)."""
        return {"schema_version": VOCAB_SCHEMA_VERSION, "kind": "char_vocab",
                "chars": list(self.chars), "unk_char": self.unk_char}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CharVocab:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(f"vocab: expected a mapping, got {type(data).__name__}")
        version = data.get("schema_version")
        if version != VOCAB_SCHEMA_VERSION:
            raise InvalidArgumentError(
                f"vocab.schema_version: expected {VOCAB_SCHEMA_VERSION}, got {version!r}"
            )
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1
                                                  for c in chars):
            raise InvalidArgumentError("vocab.chars: expected a list of single characters")
        unk = data.get("unk_char", "\ufffd")
        if not isinstance(unk, str) or len(unk) != 1:
            raise InvalidArgumentError(f"vocab.unk_char: expected one character, got {unk!r}")
        return cls("".join(chars), unk_char=unk)

