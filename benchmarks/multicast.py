"""Benchmark (issue 17): L = 1 beamforming in the equal-gain regime, side by side.

The hard population of single-group multicast beamforming: single-antenna devices, i.i.d.
CN(0, 1) channels, equal weights and powers (every device can bind; no path-loss spread that
leaves a few weak devices to decide the optimum). One instance is one subcarrier. Per instance,
in one run, single-threaded, CPU time of each method:

- ``multicast``: ``solve_beamforming(method="multicast")``, defaults (the planners' L = 1 method),
  with its certified SDR-dual bound;
- ``manifold``: ``method="beamforming"`` with defaults (the L = 1 default before issue 17);
- ``sdr``: SDR + 200 Gaussian randomizations (cvxpy, SCS first), with the certified SDR bound;
- ``sdr_sca``: SCA from the SDR point (our cvxpy implementation, benchmarks/_multicast_peers.py);
  its time counts the SDR solve and the SCA;
- ``reference``: the manifold solver with many random restarts (``--restarts``) and a long
  continuation from τ = 1: the "best known" yardstick (the best value of any method is used).

Run:  python -m benchmarks.multicast [--quick] [--draws 10] [--cells 8x10,16x50]
      python -m benchmarks.multicast --summary          (table from the cached rows)
Rows are cached per cell in ``--out``/multicast_raw/ (a rerun skips finished instances), the
summary goes to ``--out``/multicast.json and is printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from benchmarks._multicast_peers import SCA
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.beamforming.problem import BeamformingProblem

CELLS = [(n, k) for n in (8, 16, 32, 64) for k in (10, 20, 50, 100, 200)]
STREAM_CELLS = [(n, k) for n in (8, 16, 32) for k in (10, 20, 50)]
#: relative slack of "ours <= SCA": both stop short of the exact local optimum (SCA at a 1e-6
#: relative decrease, ours at a smoothing temperature whose max error is tau_min log K)
SLACK = 1e-3


def make_problem(n_rx: int, k: int, draw: int, seed: int = 0,
                 streams: int = 1) -> BeamformingProblem:
    """One equal-gain instance: H_k with i.i.d. CN(0, 1) entries (N_t = L antennas per
    device), φ_k = 1, P_k = 1, σ² = 1."""
    rng = np.random.default_rng([seed, n_rx, k, draw, streams])
    if streams == 1:  # the L = 1 rows keep the seeding they were first run with
        rng = np.random.default_rng([seed, n_rx, k, draw])
    shape = (k, 1, n_rx, streams)
    h = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return BeamformingProblem(H=h / np.sqrt(2), phi=np.ones(k), p_sub=np.ones(k), sigma2=1.0,
                              streams=streams)


def _cpu(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def run_multicast(n_rx: int, k: int, draw: int, seed: int = 0) -> dict:
    """The ``multicast`` columns of one instance (``--refresh`` recomputes only these)."""
    p = make_problem(n_rx, k, draw, seed)
    mc, t_mc = _cpu(lambda: solve_beamforming(p, "multicast", rng=draw))
    return {"multicast": mc.objective, "multicast_bound": mc.bound, "t_multicast": t_mc}


def run_instance(n_rx: int, k: int, draw: int, restarts: int, seed: int = 0) -> dict:
    """Every method on one instance: values, bounds and CPU seconds."""
    p = make_problem(n_rx, k, draw, seed)
    mc = run_multicast(n_rx, k, draw, seed)
    man, t_man = _cpu(lambda: solve_beamforming(p, "beamforming", rng=draw))
    sdr, t_sdr = _cpu(lambda: solve_beamforming(p, "sdr", rng=draw, solvers=("SCS", "CLARABEL")))
    (_, v_sca, its), t_sca = _cpu(lambda: SCA(p).run(sdr.solution[0, :, 0]))
    ref, t_ref = _cpu(lambda: solve_beamforming(
        p, "beamforming", rng=draw + 10_000, n_random=restarts,
        temperatures=(1.0, 0.3, 0.1, 0.03, 0.01), max_iterations=300))
    return {"n_rx": n_rx, "k": k, "draw": draw, **mc,
            "manifold": man.objective, "t_manifold": t_man,
            "sdr": sdr.objective, "sdr_bound": sdr.bound, "t_sdr": t_sdr,
            "sdr_sca": v_sca, "sca_iterations": its, "t_sdr_sca": t_sdr + t_sca,
            "reference": ref.objective, "t_reference": t_ref}


#: the manifold solver's continuation before issue 17 (the L > 1 default was changed to start
#: at τ = 1; the "before" column re-runs the old one)
BEFORE = {"temperatures": (0.1, 0.01)}


def run_instance_streams(n_rx: int, k: int, streams: int, draw: int, restarts: int,
                         row: dict | None = None) -> dict:
    """L > 1: the default (``auto``: the manifold solver), the pre-issue-17 default, the
    many-restart reference and the centroid on one equal-gain instance with N_t = L. A cached
    ``row`` is completed (only the missing columns are computed)."""
    p = make_problem(n_rx, k, draw, streams=streams)
    row = dict(row or {"n_rx": n_rx, "k": k, "streams": streams, "draw": draw})
    if "before" not in row:
        res, row["t_before"] = _cpu(lambda: solve_beamforming(p, "beamforming", rng=draw,
                                                              **BEFORE))
        row["before"] = res.objective
    if "auto" not in row:
        res, row["t_auto"] = _cpu(lambda: solve_beamforming(p, "auto", rng=draw))
        row["auto"], row["single_device_bound"] = res.objective, res.bound
    if "reference" not in row:
        res, row["t_reference"] = _cpu(lambda: solve_beamforming(
            p, "beamforming", rng=draw + 10_000, n_random=restarts,
            temperatures=(1.0, 0.3, 0.1, 0.03, 0.01), max_iterations=300))
        row["reference"] = res.objective
    if "centroid" not in row:
        res, row["t_centroid"] = _cpu(lambda: solve_beamforming(p, "centroid"))
        row["centroid"] = res.objective
    return row


def summarize_streams(rows: list[dict]) -> dict:
    get = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    best = np.minimum.reduce([get["auto"], get["before"], get["reference"], get["centroid"]])
    return {"n_rx": int(get["n_rx"][0]), "k": int(get["k"][0]),
            "streams": int(get["streams"][0]), "draws": len(rows),
            "auto_x_best": float(np.median(get["auto"] / best)),
            "before_x_best": float(np.median(get["before"] / best)),
            "before_within_1pct": float(np.mean(get["before"] <= 1.01 * best)),
            "before_worst_x_best": float(np.max(get["before"] / best)),
            "centroid_x_best": float(np.median(get["centroid"] / best)),
            "auto_within_1pct": float(np.mean(get["auto"] <= 1.01 * best)),
            "worst_x_best": float(np.max(get["auto"] / best)),
            "t_auto": float(np.median(get["t_auto"])),
            "t_reference": float(np.median(get["t_reference"]))}


def run_cell(n_rx: int, k: int, draws: int, restarts: int, out: Path,
             streams: int = 1) -> list[dict]:
    """The cell's rows, computing only the instances not cached yet (atomic rewrite)."""
    name = f"{n_rx}x{k}" if streams == 1 else f"L{streams}_{n_rx}x{k}"
    path = out / "multicast_raw" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(path.read_text()) if path.exists() else []
    done = {r["draw"] for r in rows}
    if streams > 1:  # complete cached rows that lack a column (e.g. added later)
        cols = {"before", "auto", "reference", "centroid"}
        stale = [r for r in rows if not cols <= set(r)]
        rows = [r for r in rows if cols <= set(r)]
        done = {r["draw"] for r in rows}
        pending = {r["draw"]: r for r in stale}
    else:
        pending = {}
    for draw in range(draws):
        if draw in done:
            continue
        rows.append(run_instance(n_rx, k, draw, restarts) if streams == 1
                    else run_instance_streams(n_rx, k, streams, draw, restarts,
                                              pending.get(draw)))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, path)
        r = rows[-1]
        if streams > 1:
            print(f"L={streams} N_r={n_rx} K={k} draw {draw}: auto/reference "
                  f"{r['auto'] / r['reference']:.4f}, centroid/reference "
                  f"{r['centroid'] / r['reference']:.4f}", flush=True)
            continue
        print(f"N_r={n_rx} K={k} draw {draw}: multicast/SDR-bound "
              f"{r['multicast'] / r['sdr_bound']:.4f} ({r['t_multicast']:.3f} s), sca "
              f"{r['sdr_sca'] / r['sdr_bound']:.4f} ({r['t_sdr_sca']:.2f} s), reference "
              f"{r['reference'] / r['sdr_bound']:.4f}", flush=True)
    return sorted(rows, key=lambda r: r["draw"])[:draws]


def summarize(rows: list[dict]) -> dict:
    """Per-cell medians (as × the SDR bound) and the target fractions."""
    get = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    bound = get["sdr_bound"]
    best = np.minimum.reduce([get[m] for m in ("multicast", "manifold", "sdr", "sdr_sca",
                                                "reference")])
    mc = get["multicast"]
    return {
        "n_rx": int(get["n_rx"][0]), "k": int(get["k"][0]), "draws": len(rows),
        **{f"{m}_x_sdr": float(np.median(get[m] / bound))
           for m in ("multicast", "manifold", "sdr", "sdr_sca", "reference")},
        "dual_bound_x_sdr": float(np.median(get["multicast_bound"] / bound)),
        "le_sca": float(np.mean(mc <= get["sdr_sca"] * (1 + SLACK))),
        "le_sca_strict": float(np.mean(mc <= get["sdr_sca"])),
        "within_1pct_best": float(np.mean(mc <= 1.01 * best)),
        "manifold_within_1pct_best": float(np.mean(get["manifold"] <= 1.01 * best)),
        "worst_x_best": float(np.max(mc / best)),
        **{f"t_{m}": float(np.median(get[f"t_{m}"]))
           for m in ("multicast", "manifold", "sdr", "sdr_sca", "reference")},
        "speedup_vs_sdr_sca": float(np.median(get["t_sdr_sca"] / get["t_multicast"])),
        "speedup_vs_sdr": float(np.median(get["t_sdr"] / get["t_multicast"])),
    }


def to_markdown(table: list[dict]) -> str:
    head = ("| N_r | K | multicast | manifold | SDR-SCA | SDR+rand | reference | dual/SDR | "
            "≤ SCA | ≤ 1.01 best | worst | t multicast | t SDR-SCA | t SDR | ×SCA | ×SDR |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for s in table:
        lines.append(
            f"| {s['n_rx']} | {s['k']} | {s['multicast_x_sdr']:.3f} | {s['manifold_x_sdr']:.3f} "
            f"| {s['sdr_sca_x_sdr']:.3f} | {s['sdr_x_sdr']:.2f} | {s['reference_x_sdr']:.3f} | "
            f"{s['dual_bound_x_sdr']:.4f} | {s['le_sca']:.0%} | {s['within_1pct_best']:.0%} | "
            f"{s['worst_x_best']:.3f} | {s['t_multicast'] * 1e3:.0f} ms | "
            f"{s['t_sdr_sca']:.2f} s | {s['t_sdr']:.2f} s | {s['speedup_vs_sdr_sca']:.1f} | "
            f"{s['speedup_vs_sdr']:.1f} |")
    return "\n".join(lines)


def to_markdown_streams(table: list[dict]) -> str:
    lines = ["| L | N_r | K | default × best (before) | within 1 % (before) | worst (before) "
             "| centroid × best | t default | t reference |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in table:
        lines.append(f"| {s['streams']} | {s['n_rx']} | {s['k']} | {s['auto_x_best']:.4f} "
                     f"({s['before_x_best']:.4f}) | {s['auto_within_1pct']:.0%} "
                     f"({s['before_within_1pct']:.0%}) | {s['worst_x_best']:.3f} "
                     f"({s['before_worst_x_best']:.3f}) | {s['centroid_x_best']:.3f} | "
                     f"{s['t_auto']:.2f} s | {s['t_reference']:.2f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small cells, 2 draws")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--restarts", type=int, default=64,
                    help="random restarts of the reference run")
    ap.add_argument("--cells", default=None, help="e.g. 8x10,16x50 (default: the full grid)")
    ap.add_argument("--summary", action="store_true", help="only summarize the cached rows")
    ap.add_argument("--refresh", action="store_true",
                    help="recompute only the columns of the method under study (L = 1: "
                         "multicast; L > 1: the default) in the cached rows, after a change to "
                         "it; the other columns are kept")
    ap.add_argument("--streams", type=int, default=1,
                    help="L > 1: the default vs reference and centroid, N_t = L devices, "
                         "N_r in {8, 16, 32}, K in {10, 20, 50}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    cells = ([(8, 10), (16, 20)] if args.quick else
             [tuple(int(x) for x in c.split("x")) for c in args.cells.split(",")]
             if args.cells else CELLS if args.streams == 1 else STREAM_CELLS)
    draws = 2 if args.quick else args.draws
    table = []
    for n_rx, k in cells:
        name = f"{n_rx}x{k}" if args.streams == 1 else f"L{args.streams}_{n_rx}x{k}"
        if args.summary or args.refresh:
            path = args.out / "multicast_raw" / f"{name}.json"
            if not path.exists():
                continue
            rows = json.loads(path.read_text())
            if args.refresh and args.streams == 1:
                rows = [{**r, **run_multicast(r["n_rx"], r["k"], r["draw"])} for r in rows]
            elif args.refresh:  # L > 1: recompute the default's column
                rows = [run_instance_streams(r["n_rx"], r["k"], r["streams"], r["draw"],
                                             args.restarts,
                                             {c: v for c, v in r.items()
                                              if c not in ("auto", "t_auto")})
                        for r in rows]
            if args.refresh:  # the refreshed rows replace the cached ones (atomic rewrite)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(rows))
                os.replace(tmp, path)
                print(f"{name}: refreshed", flush=True)
        else:
            rows = run_cell(n_rx, k, draws, args.restarts, args.out, args.streams)
        table.append(summarize(rows) if args.streams == 1 else summarize_streams(rows))
    all_rows = table
    res = {"machine": f"{platform.processor() or platform.machine()}, {platform.platform()}, "
                      f"numpy {np.__version__}, OMP_NUM_THREADS="
                      f"{os.environ.get('OMP_NUM_THREADS', 'unset')}",
           "slack": SLACK, "cells": all_rows}
    stem = "multicast" if args.streams == 1 else f"multicast_L{args.streams}"
    (args.out / (f"{stem}_quick.json" if args.quick else f"{stem}.json")).write_text(
        json.dumps(res, indent=1) + "\n")
    print(to_markdown(table) if args.streams == 1 else to_markdown_streams(table))


if __name__ == "__main__":
    main()
