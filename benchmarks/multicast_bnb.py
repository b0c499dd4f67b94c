"""Benchmark: the branch-and-bound certificate of L = 1 beamforming in the equal-gain regime.

The instances of :mod:`benchmarks.multicast` (its ``make_problem``: single-antenna devices,
i.i.d. CN(0, 1), equal weights and powers, the same seeds per cell and draw), N_r ∈ {8, 16, 32}
× K ∈ {10, 20}. Per instance: fedopt's ``multicast`` (rng = draw, as there) with its SDR-dual
bound, then ``certify_multicast`` from that point (tol 2 %, at most ``--nodes`` nodes and
``--seconds`` wall seconds). Per cell: the fraction certified within 2 %, median nodes and wall
time, the median of multicast / B&B lower bound against multicast / SDR-dual bound, and how
often B&B found a point better than multicast (by more than 0.1 % relative).

Run:  python -m benchmarks.multicast_bnb [--draws 10] [--cells 8x10,16x20] [--nodes 20000]
Writes ``--out``/multicast_bnb.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from benchmarks.multicast import make_problem
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.beamforming.multicast_bnb import certify_multicast

CELLS = [(n, k) for n in (8, 16, 32) for k in (10, 20)]
BETTER = 1e-3  # relative improvement over multicast that counts as "B&B found a better point"
#: (smaller ones are the polish of multicast's smoothed point: its τ = 1e-4 leaves ~1e-4)


def run_instance(n_rx: int, k: int, draw: int, nodes: int, seconds: float) -> dict:
    p = make_problem(n_rx, k, draw)
    mc = solve_beamforming(p, "multicast", rng=draw)
    r = certify_multicast(p, tol=0.02, max_nodes=nodes, time_limit_s=seconds,
                          incumbent=mc.solution[0, :, 0])
    return {"n_rx": n_rx, "k": k, "draw": draw, "multicast": mc.objective,
            "sdr_dual_bound": mc.bound, "bnb_lower": r["lower_bound"],
            "bnb_upper": r["upper_bound"], "gap": r["gap"], "status": r["status"],
            "nodes": r["nodes"], "wall_s": r["wall_s"]}


def summarize(rows: list[dict]) -> dict:
    get = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    mc = get["multicast"]
    return {"n_rx": int(get["n_rx"][0]), "k": int(get["k"][0]), "draws": len(rows),
            "certified": float(np.mean(get["status"] == "certified")),
            "median_nodes": float(np.median(get["nodes"])),
            "median_wall_s": float(np.median(get["wall_s"])),
            "multicast_x_bnb_lower": float(np.median(mc / get["bnb_lower"])),
            "multicast_x_sdr_dual": float(np.median(mc / get["sdr_dual_bound"])),
            "worst_multicast_x_bnb_lower": float(np.max(mc / get["bnb_lower"])),
            "bnb_better": float(np.mean(get["bnb_upper"] < mc * (1 - BETTER))),
            "median_improvement": float(np.median(1 - get["bnb_upper"] / mc)),
            "lower_le_multicast": bool(np.all(get["bnb_lower"] <= mc)),
            "lower_ge_sdr_dual": bool(np.all(get["bnb_lower"]
                                             >= get["sdr_dual_bound"] * (1 - 1e-3)))}


def to_markdown(table: list[dict]) -> str:
    lines = ["| N_r | K | draws | certified ≤ 2 % | median nodes | median wall | multicast / "
             "B&B bound (worst) | multicast / SDR-dual | B&B better point |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in table:
        lines.append(
            f"| {s['n_rx']} | {s['k']} | {s['draws']} | {s['certified']:.0%} | "
            f"{s['median_nodes']:.0f} | {s['median_wall_s']:.2f} s | "
            f"{s['multicast_x_bnb_lower']:.4f} ({s['worst_multicast_x_bnb_lower']:.4f}) | "
            f"{s['multicast_x_sdr_dual']:.4f} | {s['bnb_better']:.0%} "
            f"(median {s['median_improvement']:.1e}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--cells", default=None, help="e.g. 8x10,16x20 (default: the full grid)")
    ap.add_argument("--nodes", type=int, default=20_000, help="node limit per instance")
    ap.add_argument("--seconds", type=float, default=30.0, help="wall limit per instance")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    cells = ([tuple(int(x) for x in c.split("x")) for c in args.cells.split(",")]
             if args.cells else CELLS)
    table, rows_all = [], []
    for n_rx, k in cells:
        rows = []
        for draw in range(args.draws):
            rows.append(run_instance(n_rx, k, draw, args.nodes, args.seconds))
            r = rows[-1]
            print(f"N_r={n_rx} K={k} draw {draw}: {r['status']} gap {r['gap']:.4f}, "
                  f"{r['nodes']} nodes, {r['wall_s']:.1f} s, multicast/B&B "
                  f"{r['multicast'] / r['bnb_lower']:.4f}, multicast/SDR "
                  f"{r['multicast'] / r['sdr_dual_bound']:.4f}", flush=True)
        rows_all += rows
        table.append(summarize(rows))
    res = {"machine": f"{platform.processor() or platform.machine()}, {platform.platform()}, "
                      f"numpy {np.__version__}, OMP_NUM_THREADS="
                      f"{os.environ.get('OMP_NUM_THREADS', 'unset')}",
           "limits": {"tol": 0.02, "nodes": args.nodes, "seconds": args.seconds},
           "cells": table, "rows": rows_all}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multicast_bnb.json").write_text(json.dumps(res, indent=1) + "\n")
    print(to_markdown(table))


if __name__ == "__main__":
    main()
