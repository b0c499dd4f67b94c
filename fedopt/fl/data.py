"""The non-IID federated split of the text corpus, and mini-batches (spec 05 §1).

The corpus and its vocabulary (:func:`load_corpus`, :class:`CharVocab`) live in
:mod:`fedopt.fl.corpus` and are re-exported here.

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
from fedopt.fl.corpus import VOCAB_SCHEMA_VERSION, CharVocab, load_corpus

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


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


def _check_split_args(topics: Sequence[str], n_clients: Any, concentration: Any) -> list[str]:
    """The topics as a list, after checking them, ``n_clients`` and ``concentration``."""
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
    return topics


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
    topics = _check_split_args(topics, n_clients, concentration)
    seed = _check_seed(seed)
    k = int(n_clients)
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, float(concentration)))
    if not np.all(np.isfinite(p)) or p.sum() <= 0:  # pragma: no cover - numpy >= 1.25 is safe
        p = np.full(k, 1.0 / k)
    p = p / p.sum()
    owner = rng.choice(k, size=len(topics), p=p)
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
    tasks, client_tasks, task_mixing, task_heldout
        Only for the downstream-task split (:func:`fedopt.fl.tasks.make_task_data`): the tasks,
        each client's home task, the non-IID knob and every task's held-out ids; empty / None
        for the topic split.
    """

    vocab: CharVocab
    clients: tuple[ClientData, ...]
    global_heldout: np.ndarray
    concentration: float
    heldout_fraction: float
    seed: int
    max_chars_per_topic: int | None
    tasks: tuple[str, ...] = ()
    client_tasks: tuple[str, ...] = ()
    task_mixing: float | None = None
    task_heldout: dict[str, np.ndarray] = field(default_factory=dict)

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
            **({"tasks": list(self.tasks), "client_tasks": list(self.client_tasks),
                "task_mixing": self.task_mixing} if self.tasks else {}),
        }


def _check_data_args(heldout_fraction: Any, max_chars_per_topic: Any) -> None:
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


def _checked_corpus(corpus: Mapping[str, str] | None) -> dict[str, str]:
    """``corpus`` (default :func:`load_corpus`) in sorted-name order; every topic >= 2 chars."""
    corpus = load_corpus() if corpus is None else {k: corpus[k] for k in sorted(corpus)}
    empty = [name for name, text in corpus.items() if len(text) < 2]
    if empty:
        raise InvalidArgumentError(
            f"corpus: every topic needs at least 2 characters; too short: {empty[:5]}"
        )
    return corpus


def _only_topics(corpus: dict[str, str], topics: Sequence[str] | None) -> dict[str, str]:
    """The part of ``corpus`` named by ``topics`` (all of it when None), sorted by name."""
    if topics is None:
        return corpus
    unknown = [t for t in topics if t not in corpus]
    if unknown or not topics:
        raise InvalidArgumentError(
            f"topics: expected a non-empty list of corpus topic names; unknown: {unknown[:5]}"
        )
    return {name: corpus[name] for name in sorted(set(topics))}


def _client_data(cid: int, names: Sequence[str], corpus: Mapping[str, str], vocab: CharVocab,
                 heldout_fraction: float, max_chars_per_topic: int | None) -> ClientData:
    """Client ``cid``: each topic cut into a training prefix and a held-out suffix."""
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
    return ClientData(
        client_id=cid, topics=tuple(names), splits=tuple(splits),
        train=np.concatenate(train_parts), heldout=np.concatenate(held_parts),
    )


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
    _check_data_args(heldout_fraction, max_chars_per_topic)
    seed = _check_seed(seed)
    corpus = _checked_corpus(corpus)
    vocab = CharVocab.from_corpus(corpus)
    corpus = _only_topics(corpus, topics)
    assignment = split_clients(list(corpus), n_clients, concentration=concentration, seed=seed)
    clients = [_client_data(cid, names, corpus, vocab, heldout_fraction, max_chars_per_topic)
               for cid, names in enumerate(assignment)]
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
