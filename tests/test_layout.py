"""The architecture rule of the design card: imports go one way.

cli / figures / benchmarks → solvers → gap_models → fedopt (an arrow means "may import").
The command line is the outermost layer: ``fedopt figures`` is the one command that imports
``figures`` (cli → figures is allowed; figures never imports cli).
Checked statically on every module's import statements, so a violation fails even in code
paths the other tests never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: top-level packages each package must never import
FORBIDDEN = {
    "fedopt": {"gap_models", "solvers", "cli", "figures", "benchmarks"},
    "gap_models": {"solvers", "cli", "figures", "benchmarks"},
    "solvers": {"cli", "figures", "benchmarks", "matplotlib"},
    "cli": {"benchmarks"},
    "figures": {"cli", "benchmarks"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"package {package} has no modules"
    bad = {f"{p.relative_to(ROOT)} imports {name}" for p in files
           for name in _imports(p) & FORBIDDEN[package]}
    assert not bad, "imports against the layout rule:\n" + "\n".join(sorted(bad))


def test_design_card_layout_exists():
    for name in ("pyproject.toml", "README.md", "fedopt", "solvers", "gap_models", "cli", "tests",
                 "figures", "benchmarks", "docs", ".ci/run"):
        assert (ROOT / name).exists(), f"missing {name}"
