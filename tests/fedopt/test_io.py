"""Atomic writes: a file gets the mode the umask gives (not mkstemp's 0600), a directory is not
a file path, and a failed write leaves nothing behind."""

from __future__ import annotations

import os
import stat

import pytest

from fedopt.errors import FedOptError
from fedopt.io import atomic_write_text


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_mode_follows_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode  # 0o666 & ~umask, as open() would


def test_a_directory_is_not_a_file_path(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FedOptError, match="is a directory; give the path of a file"):
        atomic_write_text(tmp_path / "d", "x")
    assert list((tmp_path / "d").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary file left


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(FedOptError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")
