"""The downstream-task split: deterministic, grouped by task, a non-IID knob, held-out sets."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.fl.tasks import TASKS, base_domain_data, make_task_data, task_vocab

SMALL = 20_000  # characters per task: enough chunks for every client, fast


@pytest.fixture(scope="module")
def grouped():
    return make_task_data(8, task_mixing=0.0, seed=0, max_chars_per_task=SMALL)


def _task_of(chunk_name: str) -> str:
    return chunk_name.split("/", 1)[0]


def test_same_seed_same_split_and_another_seed_another(grouped):
    again = make_task_data(8, task_mixing=0.0, seed=0, max_chars_per_task=SMALL)
    assert again.topics_per_client == grouped.topics_per_client
    for a, b in zip(again.clients, grouped.clients, strict=True):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.heldout, b.heldout)
    other = make_task_data(8, task_mixing=0.0, seed=1, max_chars_per_task=SMALL)
    assert other.topics_per_client != grouped.topics_per_client


def test_clients_are_grouped_by_task_without_mixing(grouped):
    assert grouped.client_tasks == tuple(TASKS[k % len(TASKS)] for k in range(8))
    for client, home in zip(grouped.clients, grouped.client_tasks, strict=True):
        assert client.topics and {_task_of(n) for n in client.topics} == {home}


def test_chunks_are_disjoint_and_cover_every_task(grouped):
    names = [n for c in grouped.clients for n in c.topics]
    assert len(names) == len(set(names))
    assert {_task_of(n) for n in names} == set(TASKS)
    total = sum(c.n_train + c.n_heldout for c in grouped.clients)
    assert total == sum(len(v) for v in grouped.task_heldout.values()) + grouped.n_train


def test_full_mixing_spreads_tasks_over_clients():
    mixed = make_task_data(8, task_mixing=1.0, seed=0, max_chars_per_task=SMALL)
    per_client = [{_task_of(n) for n in c.topics} for c in mixed.clients]
    assert np.mean([len(t) for t in per_client]) >= 3  # IID across tasks: most see several
    half = make_task_data(8, task_mixing=0.5, seed=0, max_chars_per_task=SMALL)
    foreign = [sum(_task_of(n) != home for n in c.topics) / len(c.topics)
               for c, home in zip(half.clients, half.client_tasks, strict=True)]
    # a chunk leaves its group with probability m (then lands on a foreign client w.p. 3/4)
    assert 0.15 < float(np.mean(foreign)) < 0.6


def test_heldout_is_the_suffix_of_every_chunk(grouped):
    for client in grouped.clients:
        n_held = sum(s.n_chars - s.cut for s in client.splits)
        assert n_held == client.n_heldout
        for s in client.splits:
            assert s.n_chars - s.cut == int(np.ceil(0.1 * s.n_chars))
    glob = np.concatenate([c.heldout for c in grouped.clients])
    assert np.array_equal(glob, grouped.global_heldout)


def test_vocab_covers_the_frequent_characters_and_maps_rare_ones_to_unknown():
    vocab = task_vocab()
    assert vocab.size < 130
    ids = vocab.encode("def f(x):\n    return x\u4e09")
    assert ids[-1] == vocab.unk_id and (ids[:-1] != vocab.unk_id).all()


def test_base_domain_is_prose_only():
    vocab, train, held = base_domain_data()
    assert train.size > 400_000 and held.size > 40_000
    assert abs(held.size / (train.size + held.size) - 0.1) < 0.01


@pytest.mark.parametrize("kwargs, field", [
    ({"n_clients": 3}, "n_clients"), ({"n_clients": 8, "task_mixing": 1.5}, "task_mixing"),
    ({"n_clients": 8, "tasks": ("code", "poetry")}, "tasks"),
    ({"n_clients": 8, "chunk_chars": 10}, "chunk_chars"),
    ({"n_clients": 8, "concentration": 0.0}, "concentration"),
    ({"n_clients": 8, "seed": -1}, "seed")])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InvalidArgumentError, match=field):
        make_task_data(**kwargs)
