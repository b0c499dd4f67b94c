"""Benchmark (issue 18): the times the README quotes, each with its command and this machine.

Every time in README.md names the command that measured it and points here. This script runs
each of those commands as a user would (``fedopt ...`` in a fresh process of this checkout,
``benchmarks.cli_timing.run_once``), ``--repeats`` times for the short ones and once for the
long ones (``--long-repeats``), and writes the medians with the machine to
``benchmarks/results/readme_times.json``; the README's numbers are copied from its table.
The TSFA decision time is the command's own ``decide_time_s_median`` (``--format json``).

Run:  OMP_NUM_THREADS=1 python -m benchmarks.readme_times [--repeats 3] [--long-repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.cli_timing import run_once

ROOT = Path(__file__).resolve().parent.parent

#: README's label → (the command's arguments after ``fedopt``, long: run --long-repeats times)
COMMANDS = {
    "fedopt solve": (["solve", "-q"], False),
    "fedopt solve --method tsfa": (["solve", "--method", "tsfa", "-q"], False),
    "fedopt validate --quick": (["validate", "--quick", "-q", "--out", "{tmp}"], False),
    "fedopt calibrate char-tasks": (["calibrate", "char-tasks", "-q", "--out", "{tmp}"], True),
    "fedopt figures all --quick": (["figures", "all", "--quick", "-q", "--out", "{tmp}"], True),
}


#: README's label → the ``fedopt tsfa-simulate`` arguments whose per-round decision time it quotes
DECISIONS = {
    "fedopt tsfa-simulate --rank 32 --rounds 200": ["--rank", "32", "--rounds", "200"],
    "fedopt tsfa-simulate --rank 32 --rounds 200 --V 1": ["--rank", "32", "--rounds", "200",
                                                          "--V", "1"],
}


def _decision_times(args: list[str], repeats: int) -> list[float]:
    """``decide_time_s_median`` of ``fedopt tsfa-simulate ARGS`` (``default``), per run."""
    out = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, "-m", "fedopt.cli.main", "tsfa-simulate",
                               *args, "--format", "json"], capture_output=True, text=True,
                              check=True, cwd=ROOT)
        out.append(json.loads(proc.stdout)["decide_time_s_median"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--long-repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--only", default=None, help="comma-separated labels to rerun (the others "
                    "are kept from the existing results file)")
    args = ap.parse_args()
    only = None if args.only is None else {x.strip() for x in args.only.split(",")}
    path = args.out / "readme_times.json"
    rows = json.loads(path.read_text())["rows"] if only is not None and path.is_file() else {}
    for label, (cmd, long) in COMMANDS.items():
        if only is not None and label not in only:
            continue
        runs = [run_once(ROOT, cmd) for _ in range(args.long_repeats if long else args.repeats)]
        walls = [w for w, _ in runs]
        rows[label] = {"args": cmd, "wall_s": walls, "median_wall_s": statistics.median(walls),
                       "median_cpu_s": statistics.median(c for _, c in runs)}
        print(f"| `{label}` | {rows[label]['median_wall_s']:.1f} s | "
              f"{rows[label]['median_cpu_s']:.1f} s | {len(runs)} |", flush=True)
    for label, cmd in DECISIONS.items():
        if only is not None and label not in only:
            continue
        decide = _decision_times(cmd, args.repeats)
        rows[label] = {"args": cmd, "decide_time_s_median": decide,
                       "median_s": statistics.median(decide)}
        print(f"| `{label}`: decision per round | {1e3 * statistics.median(decide):.3g} ms "
              f"(median over runs of the command's median) | | {args.repeats} |", flush=True)
    rows.pop("fedopt tsfa-simulate (decision per round)", None)
    result = {"machine": platform.platform(), "processor": platform.processor(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "threads": os.environ.get("OMP_NUM_THREADS"), "load_average": os.getloadavg(),
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
