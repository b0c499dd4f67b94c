"""The text corpus and the character vocabulary (fedopt.fl.corpus, spec 05 §1).

Oracles: the corpus is sorted and fresh per call; the vocabulary round-trips the whole corpus,
ids are the ranks of the sorted distinct characters (brute force), unknown characters map to the
unknown id, and the vocabulary survives JSON. ``fedopt.fl.data`` re-exports these names.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import fedopt.fl.data as data
from fedopt.errors import InvalidArgumentError
from fedopt.fl.corpus import VOCAB_SCHEMA_VERSION, CharVocab, load_corpus


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    return load_corpus()


def test_corpus_is_sorted_and_deterministic(corpus):
    names = list(corpus)
    assert names == sorted(names)
    assert len(names) >= 50  # pydoc_data ships ~80 topics (79 in CPython 3.12)
    assert sum(map(len, corpus.values())) > 300_000  # ~465k characters
    assert load_corpus() == corpus
    corpus_copy = load_corpus()
    corpus_copy.clear()
    assert load_corpus() == corpus  # a fresh dict per call


def test_vocab_round_trip_on_the_whole_corpus(corpus):
    vocab = CharVocab.from_corpus(corpus)
    text = "".join(corpus.values())
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert vocab.decode(ids) == text
    assert vocab.size == len(set(text)) + 1
    assert ids.max() < vocab.unk_id  # every corpus character is known
    # brute-force oracle on a slice: id = rank of the character among the sorted distinct ones
    chars = sorted(set(text))
    assert ids[:2000].tolist() == [chars.index(c) for c in text[:2000]]


def test_vocab_unknown_characters_and_dict_round_trip():
    vocab = CharVocab.from_text("hello world")
    ids = vocab.encode("hé€lo")
    assert ids.tolist()[1] == vocab.unk_id and ids.tolist()[2] == vocab.unk_id
    assert vocab.decode(ids) == "h\ufffd\ufffdlo"
    assert vocab.encode("").shape == (0,)
    back = CharVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert back == vocab
    assert back.encode("hello").tolist() == vocab.encode("hello").tolist()
    with pytest.raises(InvalidArgumentError, match="schema_version"):
        CharVocab.from_dict({**vocab.to_dict(), "schema_version": 99})
    with pytest.raises(InvalidArgumentError, match="sorted"):
        CharVocab("ba")
    with pytest.raises(InvalidArgumentError, match="ids"):
        vocab.decode([0, vocab.size])


def test_vocab_of_full_corpus_survives_json(corpus):
    vocab = CharVocab.from_corpus(corpus)
    assert CharVocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab




def test_data_re_exports_the_corpus_names():
    assert data.CharVocab is CharVocab and data.load_corpus is load_corpus
    assert data.VOCAB_SCHEMA_VERSION == VOCAB_SCHEMA_VERSION == CharVocab.from_text("a").to_dict()[
        "schema_version"]
