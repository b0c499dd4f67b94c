"""The architecture of docs/architecture.md, checked statically.

Imports go one way: cli / figures / benchmarks → solvers → gap_models → fedopt (an arrow means
"may import"); inside ``fedopt`` the planning domain never imports the FL room ``fedopt.fl``, and
only the FL room and the validation room of the solvers import torch; the Flower room
``fedopt.flower`` may use the FL room's aggregators but imports no solver and no torch. The
command line is the outermost layer: ``fedopt figures`` is the one command that imports the
figures (cli → figures is allowed; figures never imports cli). Checked on every module's import
statements (lazy ones included), so a violation fails even in code paths the other tests never
run.

One installed import package: the repository's folders ``solvers/``, ``gap_models/``, ``cli/``
and ``figures/`` are the packages ``fedopt.solvers`` and so on; nothing imports them by their
bare folder names, and pyproject.toml lists every package the folders hold.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: repository folder → the import package it installs as
MAPPED = {"solvers": "fedopt.solvers", "gap_models": "fedopt.gap_models", "cli": "fedopt.cli",
          "figures": "fedopt.figures"}

#: room (source folder, relative to the repository) → import prefixes it must never use
FORBIDDEN = {
    "fedopt": {"fedopt.fl", "fedopt.gap_models", "fedopt.solvers", "fedopt.cli",
               "fedopt.figures", "benchmarks", "torch"},
    "fedopt/fl": {"fedopt.gap_models", "fedopt.solvers", "fedopt.cli", "fedopt.figures",
                  "benchmarks"},
    # the Flower strategy: the FL room's numpy aggregators, flwr (lazily), never a solver
    "fedopt/flower": {"fedopt.gap_models", "fedopt.solvers", "fedopt.cli", "fedopt.figures",
                      "benchmarks", "torch"},
    "gap_models": {"fedopt.fl", "fedopt.solvers", "fedopt.cli", "fedopt.figures", "benchmarks",
                   "torch"},
    "solvers": {"fedopt.fl", "torch", "fedopt.cli", "fedopt.figures", "benchmarks",
                "matplotlib"},
    "solvers/validation": {"fedopt.cli", "fedopt.figures", "benchmarks", "matplotlib"},
    "cli": {"benchmarks"},
    "figures": {"fedopt.cli", "benchmarks"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] in MAPPED:
        parts = [*MAPPED[parts[0]].split("."), *parts[1:]]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of everything ``path`` imports (``from fedopt import fl`` counts as
    ``fedopt.fl``; relative imports are resolved against the module's package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else \
        _module_name(path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def _files(room: str) -> list[Path]:
    """The modules of a room, minus those of its sub-rooms that have rules of their own."""
    inner = [ROOT / r for r in FORBIDDEN if r != room and r.startswith(f"{room}/")]
    return sorted(p for p in (ROOT / room).rglob("*.py")
                  if not any(p.is_relative_to(d) for d in inner))


def _hits(name: str, prefixes: set[str]) -> set[str]:
    return {p for p in prefixes if name == p or name.startswith(f"{p}.")}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_imports_go_one_way(room):
    files = _files(room)
    assert files, f"room {room} has no modules"
    bad = {f"{p.relative_to(ROOT)} imports {name}" for p in files for name in _imports(p)
           if _hits(name, FORBIDDEN[room])}
    assert not bad, "imports against the layout rule:\n" + "\n".join(sorted(bad))


def test_nothing_imports_the_bare_folder_names():
    """``import solvers`` would pick up any distribution or file named ``solvers``; ours is
    ``fedopt.solvers``."""
    files = [p for d in ("fedopt", *MAPPED, "benchmarks", "tests") for p in
             (ROOT / d).rglob("*.py")]
    bad = {f"{p.relative_to(ROOT)} imports {name}" for p in files for name in _imports(p)
           if name.split(".")[0] in MAPPED}
    assert not bad, "\n".join(sorted(bad))


def test_pyproject_installs_every_package_under_fedopt():
    """pyproject's explicit package list = every folder with an ``__init__.py`` under the five
    source folders, each installed under ``fedopt`` (so site-packages gains ``fedopt`` alone)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setup = config["tool"]["setuptools"]
    assert setup["package-dir"] == {"fedopt": "fedopt", **{v: k for k, v in MAPPED.items()}}
    want = {_module_name(p.parent / "__init__.py") for d in ("fedopt", *MAPPED)
            for p in (ROOT / d).rglob("__init__.py")}
    assert set(setup["packages"]) == want
    assert all(name == "fedopt" or name.startswith("fedopt.") for name in want)
    assert config["project"]["scripts"]["fedopt"] == "fedopt.cli.main:main"


def test_tests_mirror_the_source_rooms():
    """``tests/<room>/`` holds the tests of source room ``<room>`` (``tests/fedopt/fl`` ↔
    ``fedopt/fl``); a test folder without a source room is a misplaced test."""
    for d in sorted(p for p in (ROOT / "tests").rglob("*") if p.is_dir()
                    and p.name != "__pycache__"):
        room = d.relative_to(ROOT / "tests")
        assert (ROOT / room).is_dir(), f"tests/{room} mirrors no source folder {room}/"
        assert any(d.glob("test_*.py")) or any(d.iterdir()), f"tests/{room} is empty"


def test_design_card_layout_exists():
    for name in ("pyproject.toml", "README.md", "fedopt", "solvers", "gap_models", "cli", "tests",
                 "figures", "benchmarks", "docs", ".ci/run", "docs/architecture.md"):
        assert (ROOT / name).exists(), f"missing {name}"
