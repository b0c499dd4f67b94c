"""Build the text-corpus snapshot that ships in the package (``fedopt/assets/corpus-v1.json.xz``).

Run once, by a developer: ``python -m fedopt.fl.corpus_build [--write]``. It gathers text that
ships with CPython itself, so nothing is ever downloaded, and groups it into *domains*:

- ``prose`` (the base model's pre-training domain): the ``pydoc_data`` help topics (one document
  per topic, verbatim) and the IDLE text files (NEWS, README, HISTORY, ...) and ``LICENSE.txt``;
- ``code``: Python source of the standard library (its public top-level modules);
- ``markup``: XML and HTML (IDLE's ``help.html`` and ``test/xmltestdata``);
- ``decimal``: the General Decimal Arithmetic test cases (``test/decimaltestdata/*.decTest``);
- ``mail``: e-mail messages and MIME tables (``test/test_email/data``, ``test/mime.types``,
  ``test/mailcap.txt``).

A code or decimal document keeps its first :data:`DOC_CHARS` characters (so that the task spans
many modules and operations), markup and mail documents whole; documents are taken in
sorted-name order until the task holds :data:`TASK_CHARS`; documents under 256 characters are
left out.

The result is canonical JSON (sorted keys, ASCII escapes) compressed with xz; its SHA-256 is
:data:`fedopt.fl.corpus.SNAPSHOT_SHA256`, which the loader checks on every read. The snapshot,
not the running Python, is what results depend on: a different CPython build would gather
different text, so rebuilding is a deliberate act that bumps :data:`SNAPSHOT_VERSION` and the
checksum (and the base models trained on it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
import sysconfig
from pathlib import Path

from fedopt.fl.corpus import SNAPSHOT_ASSET, SNAPSHOT_VERSION

__all__ = ["build_snapshot", "snapshot_bytes", "main"]

#: characters kept per downstream task (the base domain keeps all of its text)
TASK_CHARS = 320_000
#: characters kept from the start of each document of a downstream task (so that a task spans
#: many files: the standard library's modules, the decimal operations)
DOC_CHARS = 4_000

_PROSE_FILES = ("idlelib/CREDITS.txt", "idlelib/HISTORY.txt", "idlelib/NEWS.txt",
                "idlelib/NEWS2x.txt", "idlelib/README.txt", "idlelib/TODO.txt",
                "idlelib/extend.txt", "LICENSE.txt")


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")


def _take(docs: dict[str, str], limit: int, per_doc: int | None) -> dict[str, str]:
    """The first ``per_doc`` characters of each document in sorted-name order until ``limit``."""
    out: dict[str, str] = {}
    total = 0
    for name in sorted(docs):
        if total >= limit:
            break
        text = docs[name][: min(per_doc or limit, limit - total)]
        if len(text) >= 256:
            out[name] = text
            total += len(text)
    return out


def _files(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): _read(p) for p in sorted(root.glob(pattern)) if p.is_file()}


def build_snapshot(stdlib: Path | None = None) -> dict:
    """The snapshot as a dict ``{"version", "source", "domains": {domain: {doc: text}}}``."""
    from pydoc_data.topics import topics

    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    prose = {f"topics/{name}": str(topics[name]) for name in sorted(topics)}
    prose.update({name: _read(root / name) for name in _PROSE_FILES if (root / name).is_file()})
    code = {name: text for name, text in _files(root, "*.py").items()
            if not name.startswith("_")}
    markup = {**_files(root, "idlelib/help.html"), **_files(root, "test/xmltestdata/**/*.xml")}
    decimal = _files(root, "test/decimaltestdata/*.decTest")
    mail = {**_files(root, "test/test_email/data/msg_*.txt"), **_files(root, "test/mime.types"),
            **_files(root, "test/mailcap.txt")}
    domains = {"prose": prose}
    for name, docs, per_doc in (("code", code, DOC_CHARS), ("markup", markup, None),
                                ("decimal", decimal, DOC_CHARS), ("mail", mail, None)):
        domains[name] = _take(docs, TASK_CHARS, per_doc)
    empty = [d for d, docs in domains.items() if not docs]
    if empty:
        raise SystemExit(f"no text found for domains {empty} under {root}: this Python build "
                         "lacks its test data; build the snapshot on a full CPython install")
    return {"version": SNAPSHOT_VERSION, "source": f"CPython {sys.version.split()[0]}",
            "domains": domains}


def snapshot_bytes(snapshot: dict) -> bytes:
    """Canonical bytes: JSON with sorted keys and ASCII escapes, xz-compressed (preset 9)."""
    text = json.dumps(snapshot, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return lzma.compress(text.encode("ascii"), format=lzma.FORMAT_XZ, preset=9)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help=f"write fedopt/assets/{SNAPSHOT_ASSET}")
    args = parser.parse_args(argv)
    snap = build_snapshot()
    data = snapshot_bytes(snap)
    for name, docs in snap["domains"].items():
        print(f"{name:8s} {len(docs):4d} documents {sum(map(len, docs.values())):9,d} chars")
    print(f"{len(data):,d} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    if args.write:
        out = Path(__file__).resolve().parents[1] / "assets" / SNAPSHOT_ASSET
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
