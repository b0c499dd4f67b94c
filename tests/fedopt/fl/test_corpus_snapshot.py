"""The shipped corpus snapshot: checksum, version, corrupt files, and a deterministic build."""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from importlib import resources
from pathlib import Path

import pytest

from fedopt.errors import CorpusError
from fedopt.fl import corpus
from fedopt.fl.corpus import (
    BASE_DOMAIN,
    SNAPSHOT_ASSET,
    SNAPSHOT_SHA256,
    TASKS,
    load_corpus,
    load_snapshot,
)


def _shipped_bytes() -> bytes:
    return (resources.files("fedopt") / "assets" / SNAPSHOT_ASSET).read_bytes()


def test_shipped_file_has_the_recorded_checksum_and_every_domain():
    assert hashlib.sha256(_shipped_bytes()).hexdigest() == SNAPSHOT_SHA256
    domains = load_snapshot()
    assert set(domains) == {BASE_DOMAIN, *TASKS}
    for name, docs in domains.items():
        # task documents under 256 characters are left out by the build; help topics are whole
        least = 1 if name == BASE_DOMAIN else 256
        assert docs and all(isinstance(t, str) and len(t) >= least for t in docs.values()), name
    assert len(_shipped_bytes()) < 3 * 2**20  # "a few MB at most, compressed"


def test_every_call_returns_a_fresh_copy():
    a = load_snapshot()
    a["prose"].clear()
    assert load_snapshot()["prose"]


def test_corrupt_snapshot_is_a_named_error(tmp_path):
    data = bytearray(_shipped_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "corpus.json.xz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorpusError, match="SHA-256"):
        load_snapshot(bad)
    with pytest.raises(CorpusError, match="cannot read"):
        load_snapshot(tmp_path / "missing.json.xz")


def test_a_snapshot_of_another_version_is_refused(tmp_path, monkeypatch):
    # a well-formed file whose checksum is not the one this fedopt expects
    from fedopt.fl.corpus_build import snapshot_bytes

    other = tmp_path / "other.json.xz"
    other.write_bytes(snapshot_bytes({"version": 2, "domains": {"prose": {"a": "x" * 300}}}))
    with pytest.raises(CorpusError, match="another fedopt version"):
        load_snapshot(other)


def test_tiny_char_corpus_is_the_pydoc_topics_of_the_snapshot():
    topics = load_corpus()
    prose = load_snapshot()[BASE_DOMAIN]
    assert list(topics) == sorted(topics)
    assert {f"topics/{k}": v for k, v in topics.items()}.items() <= prose.items()
    assert 70 <= len(topics) <= 100


_STDLIB = Path(sysconfig.get_paths()["stdlib"])
_SOURCE_PYTHON = "3.11.7"


@pytest.mark.skipif(
    sys.version.split()[0] != _SOURCE_PYTHON or not (_STDLIB / "test" / "decimaltestdata").is_dir(),
    reason=f"the snapshot was built from CPython {_SOURCE_PYTHON} with its test data")
def test_build_reproduces_the_shipped_bytes():
    from fedopt.fl.corpus_build import build_snapshot, snapshot_bytes

    snap = build_snapshot()
    assert snap["source"] == f"CPython {_SOURCE_PYTHON}"
    assert snapshot_bytes(snap) == _shipped_bytes()


def test_checksum_is_checked_on_every_cold_read(monkeypatch):
    # the cached decompression is keyed by path; a different expected digest must fail
    corpus._snapshot_text.cache_clear()
    monkeypatch.setattr(corpus, "SNAPSHOT_SHA256", "0" * 64)
    try:
        with pytest.raises(CorpusError, match="does not match"):
            load_snapshot()
    finally:
        corpus._snapshot_text.cache_clear()
