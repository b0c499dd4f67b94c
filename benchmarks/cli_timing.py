"""Benchmark: wall time of whole `fedopt` commands in two checkouts, side by side (issue 10).

A refactor must leave the cost of the main jobs unchanged. This script runs each command in
each checkout alternately (A, B, A, B, ...: slow drift of the machine hits both), ``--repeats``
times, and reports the median wall time of each and the ratio B / A.

Each checkout runs its own code: the command is ``python -S -m <cli> ...`` with the checkout as
the working directory and ``PYTHONPATH`` = the checkout, then this interpreter's site-packages.
``-S`` matters: with site processing, the editable install's import hook maps ``fedopt.*`` to
the tree it was installed from whatever the working directory, so before issue 17 a run "in"
another checkout silently imported parts of this one. ``<cli>`` is ``fedopt.cli.main`` where
the checkout has the one-package layout (``fedopt/__init__.py`` maps ``cli/``), else
``cli.main`` (the layout before issue 10).

Run:  git worktree add /tmp/before <old commit>
      python -m benchmarks.cli_timing --a /tmp/before --b . [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the commands timed: the README's main job and the quick validation
COMMANDS = {
    "solve": ["solve", "-q"],
    "validate --quick": ["validate", "--quick", "-q", "--out", "{tmp}"],
}


def cli_module(tree: Path) -> str:
    """The CLI module of a checkout (one-package layout or the one before it)."""
    init = (tree / "fedopt" / "__init__.py").read_text(encoding="utf-8")
    return "fedopt.cli.main" if "_map_source_tree" in init else "cli.main"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tree: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of the command in ``tree``."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-S", "-m", cli_module(tree),
                *[a.format(tmp=f"{tmp}/o") for a in args]]
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(tree), *site.getsitepackages()])}
        t0, c0 = time.perf_counter(), _children_cpu_s()
        subprocess.run(argv, cwd=tree, env=env, check=True, capture_output=True)
        return time.perf_counter() - t0, _children_cpu_s() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", type=Path, required=True, help="checkout A (before)")
    ap.add_argument("--b", type=Path, default=Path("."), help="checkout B (after)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    out: dict[str, dict] = {}
    for name, cmd in COMMANDS.items():
        wall: dict[str, list[float]] = {"A": [], "B": []}
        cpu: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(args.repeats):
            for label, tree in trees.items():
                w, c = run_once(tree, cmd)
                wall[label].append(w)
                cpu[label].append(c)
        med = {k: statistics.median(v) for k, v in wall.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        out[name] = {"median_wall_s": med, "median_cpu_s": med_cpu,
                     "wall_ratio_b_over_a": med["B"] / med["A"],
                     "cpu_ratio_b_over_a": med_cpu["B"] / med_cpu["A"], "wall_s": wall,
                     "cpu_s": cpu}
        print(f"{name:<18} wall A {med['A']:6.2f} s  B {med['B']:6.2f} s  B/A "
              f"{med['B'] / med['A']:.3f} | CPU A {med_cpu['A']:6.2f} s  B {med_cpu['B']:6.2f} s"
              f"  B/A {med_cpu['B'] / med_cpu['A']:.3f}  (medians of {args.repeats})")
    print(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                      "cpus": os.cpu_count(), "repeats": args.repeats,
                      "threads": os.environ.get("OMP_NUM_THREADS"), "a": str(trees["A"]),
                      "b": str(trees["B"]), "results": out}, indent=1))


if __name__ == "__main__":
    main()
