"""Federated split and batches (fedopt.fl.data, spec 05 §1); the corpus and vocabulary:
test_corpus.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedopt.errors import FedOptError, InvalidArgumentError
from fedopt.fl.data import (
    CharVocab,
    load_corpus,
    make_federated_data,
    sample_batch,
    split_clients,
)


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    return load_corpus()


@pytest.fixture(scope="module")
def fed():
    return make_federated_data(6, concentration=1.0, heldout_fraction=0.1, seed=3)


@pytest.mark.parametrize("n_clients", [1, 2, 5, 17, 79])
def test_split_is_disjoint_covering_and_nonempty(corpus, n_clients):
    topics = list(corpus)
    n_clients = min(n_clients, len(topics))
    for concentration in (1e-2, 1.0, 1e3):
        split = split_clients(topics, n_clients, concentration=concentration, seed=11)
        assert len(split) == n_clients
        flat = [t for client in split for t in client]
        assert sorted(flat) == sorted(topics)  # covering, and no topic twice (disjoint)
        assert all(len(client) >= 1 for client in split)  # repair gives everyone a topic
        order = {t: i for i, t in enumerate(topics)}
        assert all([order[t] for t in c] == sorted(order[t] for t in c) for c in split)


def test_split_is_deterministic(corpus):
    topics = list(corpus)
    a = split_clients(topics, 7, concentration=0.5, seed=5)
    assert split_clients(topics, 7, concentration=0.5, seed=5) == a
    assert split_clients(topics, 7, concentration=0.5, seed=6) != a  # 7^79 assignments


def test_dirichlet_knob_controls_skew(corpus, rng):
    # K = 4 clients, T = 79 topics, 20 seeds from the suite's generator.
    # α = 1e3: p ≈ (1/4, ...), counts ≈ Multinomial(79, 1/4): E[max share] ≈ 0.31 with sd ≈ 0.03
    #   per draw (2000-draw simulation), so the 20-draw mean has sd ≈ 0.007 and < 0.40 is a
    #   ~13 sd margin.
    # α = 1e-2: p lies near a vertex, so the largest client keeps ≈ 76/79 ≈ 0.96 after the
    #   repair (simulated mean 0.94, sd 0.07 per draw, 0.016 for the mean): > 0.75 is ~12 sd.
    topics = list(corpus)
    k = 4
    seeds = rng.integers(0, 2**31, size=20).tolist()

    def max_share(concentration: float, seed: int) -> float:
        split = split_clients(topics, k, concentration=concentration, seed=seed)
        return max(map(len, split)) / len(topics)

    uniform = np.mean([max_share(1e3, s) for s in seeds])
    skewed = np.mean([max_share(1e-2, s) for s in seeds])
    assert uniform < 0.40
    assert skewed > 0.75


def test_split_errors_name_the_field(corpus):
    topics = list(corpus)
    with pytest.raises(InvalidArgumentError, match="n_clients") as exc:
        split_clients(topics, len(topics) + 1, concentration=1.0, seed=0)
    assert isinstance(exc.value, FedOptError)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InvalidArgumentError, match="concentration"):
            split_clients(topics, 3, concentration=bad, seed=0)
    with pytest.raises(InvalidArgumentError, match="n_clients"):
        split_clients(topics, 0, concentration=1.0, seed=0)
    with pytest.raises(InvalidArgumentError, match="distinct"):
        split_clients(["a", "a"], 1, concentration=1.0, seed=0)
    with pytest.raises(InvalidArgumentError, match="n_clients"):
        make_federated_data(10_000)


def test_federated_data_sizes_and_ranges(fed, corpus):
    assert fed.n_clients == 6
    assert sorted(t for c in fed.clients for t in c.topics) == sorted(corpus)
    total_chars = sum(map(len, corpus.values()))
    n_heldout = sum(c.n_heldout for c in fed.clients)
    # D_k sums to the total number of training characters; train + held-out = whole corpus
    assert fed.data_sizes.sum() == fed.n_train == total_chars - n_heldout
    assert fed.data_sizes.tolist() == [sum(s.cut for s in c.splits) for c in fed.clients]
    assert fed.weights.sum() == pytest.approx(1.0, abs=1e-12)  # float64 rounding of 6 terms
    for client in fed.clients:
        train_text, held_text = [], []
        for s in client.splits:
            text = corpus[s.name]
            a0, a1 = s.train_range
            b0, b1 = s.heldout_range
            assert (a0, a1, b1) == (0, b0, len(text))  # disjoint, adjacent, covering
            assert 1 <= a1 < b1
            assert b1 - b0 == math.ceil(0.1 * len(text))  # the last 10 % of each topic
            train_text.append(text[a0:a1])
            held_text.append(text[b0:b1])
        # the id arrays are exactly those character ranges
        assert fed.vocab.decode(client.train) == "".join(train_text)
        assert fed.vocab.decode(client.heldout) == "".join(held_text)
    assert np.array_equal(fed.global_heldout, np.concatenate([c.heldout for c in fed.clients]))
    assert json.loads(json.dumps(fed.summary()))["data_sizes"] == fed.data_sizes.tolist()


def test_federated_data_is_deterministic(fed):
    again = make_federated_data(6, concentration=1.0, heldout_fraction=0.1, seed=3)
    assert again.topics_per_client == fed.topics_per_client
    for a, b in zip(again.clients, fed.clients, strict=True):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.heldout, b.heldout)
    assert again.vocab == fed.vocab


def test_truncation_and_no_heldout(corpus):
    small = make_federated_data(3, heldout_fraction=0.25, seed=1, max_chars_per_topic=200)
    assert all(s.n_chars == min(200, len(corpus[s.name])) for c in small.clients
               for s in c.splits)
    assert small.vocab == CharVocab.from_corpus(corpus)  # vocab ignores truncation
    none = make_federated_data(3, heldout_fraction=0.0, seed=1, max_chars_per_topic=50)
    assert none.global_heldout.size == 0
    assert none.n_train == sum(min(50, len(t)) for t in corpus.values())
    with pytest.raises(InvalidArgumentError, match="heldout_fraction"):
        make_federated_data(3, heldout_fraction=1.0)
    with pytest.raises(InvalidArgumentError, match="max_chars_per_topic"):
        make_federated_data(3, max_chars_per_topic=1)


def test_sample_batch_targets_are_shifted_inputs(rng):
    ids = np.arange(1000, dtype=np.int64)  # value = position: windows are readable
    x, y = sample_batch(ids, 16, 32, rng)
    assert x.shape == y.shape == (16, 32) and x.dtype == y.dtype == np.int64
    assert np.array_equal(y, x + 1)  # y[i, t] = ids[s_i + t + 1]
    assert np.array_equal(x, x[:, :1] + np.arange(32))  # contiguous windows
    assert x.min() >= 0 and y.max() <= 999  # windows stay inside the data
    # same generator state, same batch
    r1, r2 = np.random.default_rng(7), np.random.default_rng(7)
    assert all(np.array_equal(a, b) for a, b in zip(sample_batch(ids, 4, 8, r1),
                                                    sample_batch(ids, 4, 8, r2), strict=True))
    # the last possible window is reachable: with len = L + 1 there is exactly one
    x1, y1 = sample_batch(ids[:9], 3, 8, rng)
    assert np.array_equal(x1, np.tile(np.arange(8), (3, 1))) and np.array_equal(y1, x1 + 1)
    with pytest.raises(InvalidArgumentError, match="seq_len"):
        sample_batch(ids[:8], 1, 8, rng)
    with pytest.raises(InvalidArgumentError, match="rng"):
        sample_batch(ids, 1, 8, 0)
