"""Benchmark: ``fedopt sweep`` on Dask, 1 vs 2 workers, and the scheduler's cost per cell
(issue 14).

Workloads (``solve`` cells, every cell a fresh channel seed):

- ``plan``: 40 cells of the ``default`` preset, the hard population of the planner: many
  binding devices (K ∈ {10, 20}) and M ∈ {8, 16} subcarriers, seeds 0–9; cells take 0.3–2 s;
- ``tiny``: 200 cells of the ``small`` preset with the ``centroid-plan`` baseline (a few ms of
  solving each), where the per-cell cost of the machinery dominates.

Each workload runs through :func:`fedopt.solvers.sweep` with an embedded LocalCluster of 1 and
2 workers and in this process (``synchronous``), alternating (1, 2, sync, 1, 2, sync, ...)
``--repeats`` times; every run starts from an empty output folder, so it writes every record
and both table files as a user's sweep does. Reported: median end-to-end wall time (cluster
start included), the speed-up T(1) / T(2), the LocalCluster start-up time, and the overhead per
cell, (workers × (T − start-up) − Σ cell wall time) / cells: what the scheduler, the transfers,
the records and the table cost beyond the cells' own work. Every run's table (times aside) is
checked equal to the first synchronous one: same numbers whatever the worker count.

Run:  OMP_NUM_THREADS=1 python -m benchmarks.sweep [--repeats 3] [--workloads plan,tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

WORKLOADS: dict[str, dict[str, Any]] = {
    "plan": {"schema_version": 1, "instance": "default",
             "grid": {"devices.count": [10, 20], "ofdm.n_subcarriers": [8, 16]},
             "methods": ["airfl-lora"], "seeds": list(range(10))},
    "tiny": {"schema_version": 1, "instance": "small",
             "grid": {"server.n_rx": [4, 8], "devices.count": [2, 3, 4, 5, 6]},
             "methods": ["centroid-plan"], "seeds": list(range(20))},
}
RUNS = ("workers=1", "workers=2", "synchronous")


def _startup_s(workers: int) -> float:
    """Time to start and stop an embedded LocalCluster with a client (as a sweep does)."""
    from fedopt.solvers.sweeps.execute import _client

    t0 = time.perf_counter()
    client, cluster = _client(None, workers)
    client.close()
    cluster.close()
    return time.perf_counter() - t0


def _one(spec: Any, run: str) -> dict[str, float]:
    from fedopt.solvers import sweep

    kwargs = ({"scheduler": "synchronous"} if run == "synchronous"
              else {"workers": int(run.split("=")[1])})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = sweep(spec, Path(tmp) / "out", **kwargs)
        wall = time.perf_counter() - t0
    assert table.attrs["sweep"]["failed"] == 0, table.error.tolist()
    return {"wall_s": wall, "cells_s": float(table.wall_time_s.sum()), "cells": len(table),
            "table": table.drop(columns=["wall_time_s", "solve_time_s"])}


def measure(name: str, repeats: int) -> dict[str, Any]:
    """Median wall times, speed-up and overhead per cell of one workload (module notes)."""
    import pandas as pd

    from fedopt.solvers.sweeps import SweepSpec

    spec = SweepSpec.from_dict(WORKLOADS[name])
    runs: dict[str, list[dict[str, float]]] = {r: [] for r in RUNS}
    startup = {1: [], 2: []}
    for _ in range(repeats):
        for run in RUNS:
            runs[run].append(_one(spec, run))
        for w in startup:
            startup[w].append(_startup_s(w))
    first = runs["synchronous"][0]["table"]
    for rows in runs.values():  # same numbers whatever the scheduler and the worker count
        for r in rows:
            pd.testing.assert_frame_equal(r.pop("table"), first)
    out: dict[str, Any] = {"cells": spec.n_cells, "tables_equal": True}
    for run, rows in runs.items():
        wall = statistics.median(r["wall_s"] for r in rows)
        cells = statistics.median(r["cells_s"] for r in rows)
        workers = 1 if run == "synchronous" else int(run.split("=")[1])
        start = 0.0 if run == "synchronous" else statistics.median(startup[workers])
        out[run] = {"wall_s": wall, "cells_s": cells, "startup_s": start,
                    "overhead_per_cell_ms": 1e3 * (workers * (wall - start) - cells)
                    / spec.n_cells, "walls_s": [r["wall_s"] for r in rows]}
    out["speedup_2_vs_1"] = out["workers=1"]["wall_s"] / out["workers=2"]["wall_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--out", default="benchmarks/results/sweep.json")
    args = ap.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} cores", "repeats": args.repeats,
              "command": "OMP_NUM_THREADS=1 python -m benchmarks.sweep "
                         f"--repeats {args.repeats} --workloads {args.workloads}",
              "workloads": {}}
    for name in args.workloads.split(","):
        result["workloads"][name] = measure(name, args.repeats)
        r = result["workloads"][name]
        print(f"{name}: {r['cells']} cells; " + "; ".join(
            f"{run}: {r[run]['wall_s']:.2f} s (cells {r[run]['cells_s']:.2f} s, start-up "
            f"{r[run]['startup_s']:.2f} s, overhead {r[run]['overhead_per_cell_ms']:.1f} "
            "ms/cell)" for run in RUNS) + f"; speed-up 2 vs 1: {r['speedup_2_vs_1']:.2f}x",
            flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
