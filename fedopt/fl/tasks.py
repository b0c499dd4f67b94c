"""Downstream tasks with a domain shift: clients grouped by task, with a non-IID knob (spec 05 §1).

The base model is pre-trained on the snapshot's ``prose`` domain (:mod:`fedopt.fl.corpus`); the
clients fine-tune on the downstream tasks (``code``, ``markup``, ``decimal``, ``mail``), text
the base model never saw.

Split. Every document of a task is cut into chunks of ``chunk_chars`` characters (the last,
shorter one is kept when it holds at least ``2 · min_chunk`` characters... see
:func:`_chunks`), and each chunk is cut into a training prefix and a held-out suffix (the last
``heldout_fraction``), so a client's held-out text follows exactly its own training mix.
Client k's *home task* is ``tasks[k mod n_tasks]`` (clients are grouped by task, round robin).
Within a group the clients' sizes follow Dirichlet(α · 1) shares (``concentration``). A chunk of
task t goes, with probability 1 − m, to a client of t's group (drawn by those shares) and, with
probability m, to any client uniformly (``task_mixing`` m ∈ [0, 1]): m = 0 keeps every client
on its home task (the most non-IID), m = 1 spreads every task over all clients (IID across
tasks). A client left empty takes the last chunk of the largest client of its group.

Held-out sets: per client (its chunks' suffixes), global (their union in client order), and per
task (``FederatedData.task_heldout``: every chunk suffix of that task), so that multi-task and
personalized methods can be scored on each task.

This module needs numpy only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.fl.corpus import BASE_DOMAIN, TASKS, CharVocab, load_snapshot
from fedopt.fl.data import ClientData, FederatedData, TopicSplit

__all__ = ["TASKS", "MIN_CHAR_COUNT", "task_vocab", "base_domain_data", "make_task_data"]

#: a character enters the vocabulary of the task testbed when it occurs at least this often in
#: the snapshot (rarer ones, e.g. the CJK text of one e-mail message, map to the unknown id)
MIN_CHAR_COUNT = 16


def task_vocab(domains: dict[str, dict[str, str]] | None = None) -> CharVocab:
    """The vocabulary of the whole snapshot (base domain and tasks), frequent characters only."""
    domains = load_snapshot() if domains is None else domains
    counts = Counter()
    for docs in domains.values():
        for text in docs.values():
            counts.update(text)
    return CharVocab("".join(sorted(c for c, n in counts.items() if n >= MIN_CHAR_COUNT)))


def _cut(text: str, heldout_fraction: float) -> int:
    n = len(text)
    n_held = 0 if heldout_fraction == 0 else max(1, math.ceil(heldout_fraction * n))
    return max(1, n - n_held)


def base_domain_data(heldout_fraction: float = 0.1) -> tuple[CharVocab, np.ndarray, np.ndarray]:
    """(vocab, train ids, held-out ids) of the base (``prose``) domain: every document cut into
    a training prefix and a held-out suffix (the base model trains on the prefixes only)."""
    domains = load_snapshot()
    vocab = task_vocab(domains)
    train, held = [], []
    for name in sorted(domains[BASE_DOMAIN]):
        text = domains[BASE_DOMAIN][name]
        cut = _cut(text, heldout_fraction)
        train.append(vocab.encode(text[:cut]))
        held.append(vocab.encode(text[cut:]))
    return vocab, np.concatenate(train), np.concatenate(held)


def _chunks(docs: dict[str, str], chunk_chars: int, limit: int | None) -> list[tuple[str, str]]:
    """(name, text) chunks of ``chunk_chars`` of every document (sorted names); a tail shorter
    than half a chunk joins the previous chunk. ``limit``: keep only this many characters."""
    out: list[tuple[str, str]] = []
    total = 0
    for name in sorted(docs):
        text = docs[name]
        starts = list(range(0, len(text), chunk_chars))
        if len(starts) > 1 and len(text) - starts[-1] < chunk_chars // 2:
            starts.pop()
        for i, s in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(text)
            out.append((f"{name}#{i}", text[s:end]))
            total += end - s
            if limit is not None and total >= limit:
                return out
    return out


def _check_args(n_clients: Any, tasks: Sequence[str], task_mixing: Any, concentration: Any,
                chunk_chars: Any, heldout_fraction: Any) -> list[str]:
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if not tasks or unknown or len(set(tasks)) != len(tasks):
        raise InvalidArgumentError(
            f"tasks: expected distinct names from {list(TASKS)}, got {tasks}")
    if isinstance(n_clients, bool) or not isinstance(n_clients, (int, np.integer)) or (
            n_clients < len(tasks)):
        raise InvalidArgumentError(
            f"n_clients: expected an integer >= {len(tasks)} (one client group per task of "
            f"{tasks}), got {n_clients!r}; use more clients or fewer tasks")
    if isinstance(task_mixing, bool) or not isinstance(task_mixing, (int, float)) or not (
            0.0 <= task_mixing <= 1.0):
        raise InvalidArgumentError(
            f"task_mixing: expected a number in [0, 1] (0: each client on its own task, 1: IID "
            f"across tasks), got {task_mixing!r}")
    if isinstance(concentration, bool) or not isinstance(concentration, (int, float)) or not (
            math.isfinite(concentration) and concentration > 0):
        raise InvalidArgumentError(
            f"concentration: expected a finite number > 0, got {concentration!r}")
    if isinstance(chunk_chars, bool) or not isinstance(chunk_chars, (int, np.integer)) or (
            chunk_chars < 256):
        raise InvalidArgumentError(f"chunk_chars: expected an integer >= 256, got {chunk_chars!r}")
    if isinstance(heldout_fraction, bool) or not isinstance(heldout_fraction, (int, float)) or (
            not 0.0 < heldout_fraction < 1.0):
        raise InvalidArgumentError(
            f"heldout_fraction: expected a number in (0, 1), got {heldout_fraction!r}")
    return tasks


def _assign(chunk_tasks: list[int], n_clients: int, n_tasks: int, task_mixing: float,
            concentration: float, rng: np.random.Generator) -> list[list[int]]:
    """Chunk indices per client (module docstring); deterministic given ``rng``."""
    groups = [[k for k in range(n_clients) if k % n_tasks == t] for t in range(n_tasks)]
    shares = [rng.dirichlet(np.full(len(g), float(concentration))) for g in groups]
    members: list[list[int]] = [[] for _ in range(n_clients)]
    mix = rng.random(len(chunk_tasks)) < task_mixing
    anyone = rng.integers(0, n_clients, size=len(chunk_tasks))
    pick = rng.random(len(chunk_tasks))
    for i, t in enumerate(chunk_tasks):
        if mix[i]:
            members[int(anyone[i])].append(i)
        else:
            cdf = np.cumsum(shares[t])
            j = min(int(np.searchsorted(cdf, pick[i] * cdf[-1], side="right")), len(cdf) - 1)
            members[groups[t][j]].append(i)
    for k in range(n_clients):  # repair empty clients from the largest client of the group
        if not members[k]:
            group = groups[k % n_tasks]
            donor = max(group, key=lambda j: (len(members[j]), -j))
            if len(members[donor]) < 2:
                donor = max(range(n_clients), key=lambda j: (len(members[j]), -j))
            members[k].append(members[donor].pop())
    return [sorted(m) for m in members]


def make_task_data(n_clients: int, *, tasks: Sequence[str] = TASKS, task_mixing: float = 0.0,
                   concentration: float = 1.0, chunk_chars: int = 2048,
                   heldout_fraction: float = 0.1, seed: int = 0,
                   max_chars_per_task: int | None = None) -> FederatedData:
    """The clients' training and held-out text on the downstream ``tasks`` (module docstring).

    Parameters
    ----------
    n_clients : int
        K ≥ len(tasks); client k's home task is ``tasks[k % len(tasks)]``.
    task_mixing : float
        m ∈ [0, 1], the non-IID knob: the probability that a chunk leaves its task's group.
    concentration : float
        Dirichlet α of the clients' shares within a group.
    chunk_chars : int
        Chunk length (the unit that goes to one client); ≥ 256.
    heldout_fraction : float
        In (0, 1): the held-out suffix of every chunk.
    seed : int
        Seed of the assignment.
    max_chars_per_task : int, optional
        Keep only about this many characters of every task (quick runs, tests).

    Returns
    -------
    FederatedData
        ``clients[k].topics`` are chunk names ``"<task>/<document>#<i>"``; ``tasks`` and
        ``client_tasks`` (home task per client) and ``task_heldout`` are set.
    """
    tasks = _check_args(n_clients, tasks, task_mixing, concentration, chunk_chars,
                        heldout_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: expected a non-negative integer, got {seed!r}")
    domains = load_snapshot()
    vocab = task_vocab(domains)
    chunks: list[tuple[str, str]] = []
    chunk_task: list[int] = []
    for ti, task in enumerate(tasks):
        for name, text in _chunks(domains[task], int(chunk_chars), max_chars_per_task):
            chunks.append((f"{task}/{name}", text))
            chunk_task.append(ti)
    rng = np.random.default_rng(int(seed))
    members = _assign(chunk_task, int(n_clients), len(tasks), float(task_mixing),
                      float(concentration), rng)
    encoded = []
    for name, text in chunks:
        cut = _cut(text, heldout_fraction)
        ids = vocab.encode(text)
        encoded.append((TopicSplit(name, len(text), cut), ids[:cut], ids[cut:]))
    clients = []
    for k, idx in enumerate(members):
        clients.append(ClientData(
            client_id=k, topics=tuple(chunks[i][0] for i in idx),
            splits=tuple(encoded[i][0] for i in idx),
            train=np.concatenate([encoded[i][1] for i in idx]),
            heldout=np.concatenate([encoded[i][2] for i in idx])))
    task_heldout = {task: np.concatenate([encoded[i][2] for i in range(len(chunks))
                                          if chunk_task[i] == ti])
                    for ti, task in enumerate(tasks)}
    return FederatedData(
        vocab=vocab, clients=tuple(clients),
        global_heldout=np.concatenate([c.heldout for c in clients]),
        concentration=float(concentration), heldout_fraction=float(heldout_fraction),
        seed=int(seed), max_chars_per_topic=None, tasks=tuple(tasks),
        client_tasks=tuple(tasks[k % len(tasks)] for k in range(int(n_clients))),
        task_mixing=float(task_mixing), task_heldout=task_heldout)
