"""Text corpus, character vocabulary and the non-IID federated split (spec 05 §1).

The corpus ships with Python itself: ``pydoc_data.topics.topics``, about 80 named help topics
(≈ 465k characters), so nothing is downloaded at run time. Text is modelled character by
character with a :class:`CharVocab` (the sorted distinct characters of the corpus plus one
unknown id).

Federated split. Topic t (of T) goes whole to one client, so the clients' topic sets are disjoint
and cover the corpus. The client sizes follow a Dirichlet knob α (``concentration``):

    p ~ Dirichlet(α · 1_K),        c(t) ~ Categorical(p)   independently for t = 1..T,

so every topic is drawn from the same client probabilities p. Large α gives p ≈ 1/K (near-uniform
topic counts, ≈ T/K each); small α gives a p close to a vertex of the simplex (one client holds
most topics). A single p is drawn for all topics on purpose: drawing a fresh p per topic would
make every c(t) uniform on 1..K whatever α is, and the knob would do nothing. When K ≤ T an empty
client is then repaired deterministically (it takes the last topic of the currently largest
client, lowest index first), so every client holds at least one topic.

Held-out data. The last ``heldout_fraction`` of every topic's text (a suffix, at least one
character) is held out; client k trains on the concatenation of its topics' prefixes and is
evaluated on the concatenation of their suffixes. The global held-out set is the union (in client
order) of the clients' held-out parts. The data sizes D_k (training characters of client k) give
the aggregation weights φ_k = D_k / Σ_j D_j.

This module needs numpy only; the model lives in :mod:`fedopt.fl.charmodel`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = [
    "VOCAB_SCHEMA_VERSION",
    "load_corpus",
    "CharVocab",
    "split_clients",
    "TopicSplit",
    "ClientData",
    "FederatedData",
    "make_federated_data",
    "sample_batch",
]

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


# --------------------------------------------------------------------------------------------
# federated split


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def split_clients(topics: Sequence[str], n_clients: int, *, concentration: float,
                  seed: int) -> list[list[str]]:
    """Assign every topic to exactly one of ``n_clients`` clients with a Dirichlet size knob.

    p ~ Dirichlet(α · 1_K), then topic t goes to client c(t) ~ Categorical(p), independently
    (module docstring); empty clients are repaired deterministically so that each client holds
    at least one topic.

    Parameters
    ----------
    topics : sequence of str
        Distinct topic names (T of them).
    n_clients : int
        K, in 1..T.
    concentration : float
        α > 0. α → ∞: topic counts ≈ Multinomial(T, 1/K); α → 0: one client takes nearly all.
    seed : int
        Seed of the numpy generator used for the draw.

    Returns
    -------
    list of list of str
        ``result[k]``: the topics of client k, in the order of ``topics``. Disjoint, covering.
    """
    topics = list(topics)
    if not topics or not all(isinstance(t, str) for t in topics):
        raise InvalidArgumentError("topics: expected a non-empty sequence of topic names (str)")
    if len(set(topics)) != len(topics):
        raise InvalidArgumentError("topics: topic names must be distinct")
    n_topics = len(topics)
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or (
            n_clients < 1):
        raise InvalidArgumentError(f"n_clients: expected a positive integer, got {n_clients!r}")
    if n_clients > n_topics:
        raise InvalidArgumentError(
            f"n_clients = {n_clients} exceeds the number of topics ({n_topics}): each topic goes "
            f"whole to one client, so at most {n_topics} clients can hold data; use "
            f"n_clients <= {n_topics}"
        )
    if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not (
            math.isfinite(concentration) and concentration > 0):
        raise InvalidArgumentError(
            f"concentration: expected a finite number > 0 (e.g. 1e3 near-uniform, 1.0 moderate, "
            f"1e-2 very skewed), got {concentration!r}"
        )
    seed = _check_seed(seed)
    k = int(n_clients)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, float(concentration)))
    if not np.all(np.isfinite(p)) or p.sum() <= 0:  # pragma: no cover - numpy >= 1.25 is safe
        p = np.full(k, 1.0 / k)
    p = p / p.sum()
    owner = rng.choice(k, size=n_topics, p=p)
    members: list[list[int]] = [[] for _ in range(k)]
    for t, c in enumerate(owner.tolist()):
        members[c].append(t)
    # repair: an empty client (lowest index first) takes the last topic of the largest client
    # (ties: lowest index); K <= T guarantees the largest has >= 2 topics while one is empty
    for c in range(k):
        if not members[c]:
            donor = max(range(k), key=lambda j: (len(members[j]), -j))
            members[c].append(members[donor].pop())
    return [[topics[t] for t in sorted(m)] for m in members]


@dataclass(frozen=True)
class TopicSplit:
    """Where topic ``name`` was cut: characters [0, cut) train, [cut, n_chars) held out."""

    name: str
    n_chars: int
    cut: int

    @property
    def train_range(self) -> tuple[int, int]:
        return (0, self.cut)

    @property
    def heldout_range(self) -> tuple[int, int]:
        return (self.cut, self.n_chars)


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's data: its topics and the character ids it trains and is evaluated on.

    Attributes
    ----------
    client_id : int
    topics : tuple of str
        The client's topics, in corpus (sorted-name) order.
    splits : tuple of TopicSplit
        Per topic, the character ranges of its train prefix and held-out suffix.
    train, heldout : np.ndarray
        int64 ids: the concatenated prefixes / suffixes of the topics, in ``topics`` order.
    """

    client_id: int
    topics: tuple[str, ...]
    splits: tuple[TopicSplit, ...]
    train: np.ndarray
    heldout: np.ndarray

    @property
    def n_train(self) -> int:
        """D_k: the number of training characters."""
        return int(self.train.shape[0])

    @property
    def n_heldout(self) -> int:
        return int(self.heldout.shape[0])


@dataclass(frozen=True, eq=False)
class FederatedData:
    """The federated data set of :func:`make_federated_data`.

    Attributes
    ----------
    vocab : CharVocab
        Built from the whole corpus (independent of the split and of truncation).
    clients : tuple of ClientData
    global_heldout : np.ndarray
        Union of the clients' held-out ids, concatenated in client order.
    concentration, heldout_fraction, seed, max_chars_per_topic
        The arguments used, for provenance.
    """

    vocab: CharVocab
    clients: tuple[ClientData, ...]
    global_heldout: np.ndarray
    concentration: float
    heldout_fraction: float
    seed: int
    max_chars_per_topic: int | None

    @property
    def n_clients(self) -> int:
        return len(self.clients)

    @property
    def topics_per_client(self) -> list[list[str]]:
        return [list(c.topics) for c in self.clients]

    @property
    def data_sizes(self) -> np.ndarray:
        """D_k, training characters per client (int64, length K)."""
        return np.array([c.n_train for c in self.clients], dtype=np.int64)

    @property
    def weights(self) -> np.ndarray:
        """φ_k = D_k / Σ_j D_j, the aggregation weights (float64, sum 1)."""
        d = self.data_sizes.astype(np.float64)
        return d / d.sum()

    @property
    def n_train(self) -> int:
        """Σ_k D_k."""
        return int(self.data_sizes.sum())

    def summary(self) -> dict[str, Any]:
        """JSON-safe description: arguments, topics, D_k and held-out sizes per client."""
        return {
            "n_clients": self.n_clients, "concentration": self.concentration,
            "heldout_fraction": self.heldout_fraction, "seed": self.seed,
            "max_chars_per_topic": self.max_chars_per_topic, "vocab_size": self.vocab.size,
            "topics_per_client": self.topics_per_client,
            "data_sizes": self.data_sizes.tolist(),
            "heldout_sizes": [c.n_heldout for c in self.clients],
        }


def make_federated_data(n_clients: int, *, concentration: float = 1.0,
                        heldout_fraction: float = 0.1, seed: int = 0,
                        max_chars_per_topic: int | None = None,
                        corpus: Mapping[str, str] | None = None,
                        topics: Sequence[str] | None = None) -> FederatedData:
    """Split the corpus over ``n_clients`` clients (topics by :func:`split_clients`) and hold out
    the last ``heldout_fraction`` of every topic.

    Parameters
    ----------
    n_clients : int
        K, at most the number of topics.
    concentration : float
        Dirichlet α of the size knob (see :func:`split_clients`).
    heldout_fraction : float
        In [0, 1). Topic t of n_t characters keeps ⌊(1 − f) n_t⌋ characters for training (at least
        1) and holds out the rest (at least one character when f > 0).
    seed : int
        Seed of the split.
    max_chars_per_topic : int, optional
        Keep only the first this many characters of every topic (quick runs, tests); ≥ 2.
    corpus : mapping, optional
        ``{topic: text}``; default :func:`load_corpus`. Topics are taken in sorted-name order.
    topics : sequence of str, optional
        Split only these topics of the corpus over the clients (e.g. the topics a base model
        never saw); the vocabulary is still built from the whole corpus, so ids agree with a
        model trained on any part of it.
    """
    if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)) or (
            not 0.0 <= heldout_fraction < 1.0):
        raise InvalidArgumentError(
            f"heldout_fraction: expected a number in [0, 1), got {heldout_fraction!r}"
        )
    if max_chars_per_topic is not None and (
            isinstance(max_chars_per_topic, bool)
            or not isinstance(max_chars_per_topic, (int, np.integer)) or max_chars_per_topic < 2):
        raise InvalidArgumentError(
            f"max_chars_per_topic: expected None or an integer >= 2, got {max_chars_per_topic!r}"
        )
    seed = _check_seed(seed)
    corpus = load_corpus() if corpus is None else {k: corpus[k] for k in sorted(corpus)}
    empty = [name for name, text in corpus.items() if len(text) < 2]
    if empty:
        raise InvalidArgumentError(
            f"corpus: every topic needs at least 2 characters; too short: {empty[:5]}"
        )
    vocab = CharVocab.from_corpus(corpus)
    if topics is not None:
        unknown = [t for t in topics if t not in corpus]
        if unknown or not topics:
            raise InvalidArgumentError(
                f"topics: expected a non-empty list of corpus topic names; unknown: {unknown[:5]}"
            )
        corpus = {name: corpus[name] for name in sorted(set(topics))}
    assignment = split_clients(list(corpus), n_clients, concentration=concentration, seed=seed)
    clients = []
    for cid, names in enumerate(assignment):
        splits, train_parts, held_parts = [], [], []
        for name in names:
            text = corpus[name]
            if max_chars_per_topic is not None:
                text = text[: int(max_chars_per_topic)]
            n = len(text)
            n_held = 0 if heldout_fraction == 0 else max(1, math.ceil(heldout_fraction * n))
            cut = max(1, n - n_held)
            splits.append(TopicSplit(name, n, cut))
            ids = vocab.encode(text)
            train_parts.append(ids[:cut])
            held_parts.append(ids[cut:])
        clients.append(ClientData(
            client_id=cid, topics=tuple(names), splits=tuple(splits),
            train=np.concatenate(train_parts), heldout=np.concatenate(held_parts),
        ))
    global_heldout = np.concatenate([c.heldout for c in clients])
    return FederatedData(
        vocab=vocab, clients=tuple(clients), global_heldout=global_heldout,
        concentration=float(concentration), heldout_fraction=float(heldout_fraction), seed=seed,
        max_chars_per_topic=None if max_chars_per_topic is None else int(max_chars_per_topic),
    )


# --------------------------------------------------------------------------------------------
# batches


def sample_batch(ids: np.ndarray, batch_size: int, seq_len: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random next-character pairs: windows x = ids[s : s+L], y = ids[s+1 : s+L+1].

    Starts s are uniform on 0..len(ids) − L − 1 (drawn from ``rng``), so y is x shifted by one.

    Returns
    -------
    x, y : np.ndarray
        int64, shape (batch_size, seq_len).
    """
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidArgumentError(
            f"ids: expected a 1-D integer array, got shape {arr.shape} and dtype {arr.dtype}"
        )
    for name, val in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise InvalidArgumentError(f"{name}: expected a positive integer, got {val!r}")
    if arr.shape[0] < seq_len + 1:
        raise InvalidArgumentError(
            f"ids: {arr.shape[0]} characters cannot fill one window of seq_len + 1 = "
            f"{seq_len + 1}; use a shorter seq_len or more data (max_chars_per_topic)"
        )
    if not isinstance(rng, np.random.Generator):
        raise InvalidArgumentError(
            f"rng: expected a numpy Generator (np.random.default_rng(seed)), got "
            f"{type(rng).__name__}"
        )
    starts = rng.integers(0, arr.shape[0] - seq_len, size=int(batch_size))
    offs = starts[:, None] + np.arange(int(seq_len) + 1)[None, :]
    win = arr[offs].astype(np.int64, copy=False)
    return np.ascontiguousarray(win[:, :-1]), np.ascontiguousarray(win[:, 1:])
