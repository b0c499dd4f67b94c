"""The text corpus snapshot and its character vocabulary (spec 05 §1).

All text comes from one snapshot shipped in the package (``fedopt/assets/corpus-v1.json.xz``,
built once by :mod:`fedopt.fl.corpus_build` from text that ships with CPython), so nothing is
downloaded at run time and every Python version reads the same bytes. The snapshot holds
*domains* of named documents: ``prose`` (the ``pydoc_data`` help topics and IDLE's text files:
what the base model is pre-trained on) and the downstream tasks ``code``, ``markup``,
``decimal`` and ``mail`` (:data:`TASKS`). :func:`load_snapshot` checks the file's SHA-256
against :data:`SNAPSHOT_SHA256` and its version against :data:`SNAPSHOT_VERSION` and raises
:class:`~fedopt.errors.CorpusError` otherwise.

Text is modelled character by character with a :class:`CharVocab` (the sorted distinct
characters plus one unknown id). :func:`load_corpus` is the ``pydoc_data`` topics alone (the
corpus of the ``tiny-char`` testbed).

Public through :mod:`fedopt.fl.data`. This module needs numpy only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import lzma
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import CorpusError, InvalidArgumentError

__all__ = ["VOCAB_SCHEMA_VERSION", "SNAPSHOT_VERSION", "SNAPSHOT_SHA256", "TASKS",
           "BASE_DOMAIN", "load_snapshot", "load_corpus", "CharVocab"]

#: Version stamp written by :meth:`CharVocab.to_dict`.
VOCAB_SCHEMA_VERSION = 1


#: version of the snapshot format and content this fedopt reads
SNAPSHOT_VERSION = 1
#: file name under ``fedopt/assets``
SNAPSHOT_ASSET = f"corpus-v{SNAPSHOT_VERSION}.json.xz"
#: SHA-256 of the shipped snapshot file (printed by ``python -m fedopt.fl.corpus_build``)
SNAPSHOT_SHA256 = "b763b79b2b59c83f3b69caa5d9f758d3d31d1915db0c91f9d72607990a721f00"
#: the domain the base model is pre-trained on
BASE_DOMAIN = "prose"
#: the downstream tasks (domains the base model never saw)
TASKS = ("code", "markup", "decimal", "mail")


@functools.lru_cache(maxsize=2)
def _snapshot_text(path: str | None) -> str:
    if path is None:
        res = resources.files("fedopt") / "assets" / SNAPSHOT_ASSET
        where = f"fedopt/assets/{SNAPSHOT_ASSET}"
        try:
            data = res.read_bytes()
        except OSError as exc:
            raise CorpusError(
                f"corpus snapshot {where} is missing ({exc}); reinstall fedopt") from None
    else:
        where = path
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CorpusError(f"corpus snapshot {where}: cannot read it ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SNAPSHOT_SHA256:
        raise CorpusError(
            f"corpus snapshot {where}: SHA-256 {digest[:16]}… does not match the expected "
            f"{SNAPSHOT_SHA256[:16]}… (corrupt or of another fedopt version); reinstall fedopt, "
            f"or rebuild it with `python -m fedopt.fl.corpus_build --write` and update "
            f"SNAPSHOT_SHA256")
    try:
        return lzma.decompress(data).decode("ascii")
    except (lzma.LZMAError, UnicodeDecodeError) as exc:  # pragma: no cover - checksum first
        raise CorpusError(
            f"corpus snapshot {where}: not an xz-compressed JSON file ({exc})") from None


def load_snapshot(path: str | Path | None = None) -> dict[str, dict[str, str]]:
    """The snapshot's domains ``{domain: {document name: text}}`` (a fresh dict every call).

    ``path``: another snapshot file (tests); default the shipped one. Raises
    :class:`~fedopt.errors.CorpusError` when the file is missing, its SHA-256 differs from
    :data:`SNAPSHOT_SHA256`, or its version from :data:`SNAPSHOT_VERSION`.
    """
    snap = json.loads(_snapshot_text(None if path is None else str(path)))
    if snap.get("version") != SNAPSHOT_VERSION:  # pragma: no cover - checksum covers it
        raise CorpusError(f"corpus snapshot: version {snap.get('version')!r}, expected "
                          f"{SNAPSHOT_VERSION}")
    return snap["domains"]


def load_corpus() -> dict[str, str]:
    """The ``tiny-char`` corpus: the ``pydoc_data`` help topics as ``{topic name: text}``,
    sorted by name, read from the snapshot (CPython 3.11's topics, whatever Python runs)."""
    prose = load_snapshot()[BASE_DOMAIN]
    return {name[len("topics/"):]: text for name, text in sorted(prose.items())
            if name.startswith("topics/")}


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

