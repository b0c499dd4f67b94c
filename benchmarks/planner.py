"""Benchmark: the rank/stream planner's searches vs the exhaustive oracle (issue 4).

Part 1 — match rate. On ``--instances`` seeded small instances (K ∈ 3..10 devices, N_t = 4,
N_r ∈ {4, 8}, M = 4, random distances, powers, data shares, spectra and latency budgets; a grid of
4 stream values × 6 ranks) we run the exhaustive (r, L) oracle, the spec's backtracking alternating
search and the bound-pruned search (``bnb``, what ``airfl-lora`` uses), all with the same manifold
beamformers, and report the match rate, the worst relative excess of the gap, and the number of
beamforming solves each needs.

Part 2 — scaling. Wall time of ``airfl-lora`` and ``exhaustive`` on the default instance's
numerology while varying K, N_r and M one at a time (median of ``--repeats`` runs), with the
log–log growth exponent.

Run:  python -m benchmarks.planner [--instances 50] [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fedopt.instance import Instance, load_instance
from fedopt.solvers.planner import plan


def small_instance(seed: int) -> Instance:
    """A random small instance with 4 stream values and 6 ranks."""
    rng = np.random.default_rng([seed, 7])
    k = int(rng.integers(3, 11))
    n_rx = int(rng.choice([4, 8]))
    d = {
        "schema_version": 1, "name": f"bench-{seed}",
        "server": {"n_rx": n_rx},
        "devices": {"count": k, "n_tx": 4,
                    "p_max_dbm": rng.uniform(10, 23, k).round(1).tolist(),
                    "distance_m": rng.uniform(50, 250, k).round(0).tolist(),
                    "dataset_size": rng.integers(100, 1000, k).tolist()},
        "ofdm": {"n_subcarriers": 4, "subcarrier_spacing_hz": 30e3},
        "channel": {"n_taps": 2},
        "lora": {"layers": [{"name": "q", "d_out": 64, "d_in": 64, "count": 2}],
                 "ranks": [1, 2, 4, 8, 16, 32]},
        "aircomp": {"streams": [1, 2, 3, 4]},
        "learning": {"spectrum_alpha": float(rng.uniform(0.5, 1.5)),
                     "spectrum_s1": float(rng.uniform(0.5, 3.0)),
                     "update_scale": float(rng.uniform(0.5, 20.0))},
        "constraints": {"latency_budget_s": float(rng.uniform(0.03, 0.06))},
    }
    return Instance.from_dict(d)


def match_rate(n: int) -> dict:
    rows = []
    for seed in range(n):
        inst = small_instance(seed)
        res = {}
        for method in ("exhaustive", "alternating", "airfl-lora"):
            t0 = time.perf_counter()
            r = plan(inst, method, seed=seed)
            res[method] = {"gap": r.objective, "rank": r.solution.rank,
                           "streams": r.solution.streams, "solves": r.iterations,
                           "time_s": time.perf_counter() - t0}
        rows.append({"seed": seed, "k": inst.n_devices, "n_rx": inst.n_rx, **res})
    out = {"instances": n}
    ex = np.array([r["exhaustive"]["gap"] for r in rows])
    for method in ("alternating", "airfl-lora"):
        g = np.array([r[method]["gap"] for r in rows])
        same = np.array([(r[method]["rank"], r[method]["streams"])
                         == (r["exhaustive"]["rank"], r["exhaustive"]["streams"]) for r in rows])
        excess = g / ex - 1
        out[method] = {
            "same_(r,L)_rate": float(same.mean()),
            "within_1e-9_rate": float(np.mean(excess <= 1e-9)),
            "within_1%_rate": float(np.mean(excess <= 0.01)),
            "worst_relative_excess": float(excess.max()),
            "solves_mean": float(np.mean([r[method]["solves"] for r in rows])),
            "solves_max": int(max(r[method]["solves"] for r in rows)),
            "time_ratio_vs_exhaustive_median": float(np.median(
                [r[method]["time_s"] / r["exhaustive"]["time_s"] for r in rows])),
        }
    out["exhaustive"] = {"solves_mean": float(np.mean([r["exhaustive"]["solves"]
                                                       for r in rows]))}
    out["optimal_L_histogram"] = {str(s): int(np.sum([r["exhaustive"]["streams"] == s
                                                      for r in rows])) for s in (1, 2, 3, 4)}
    out["optimal_r_histogram"] = {str(s): int(np.sum([r["exhaustive"]["rank"] == s
                                                      for r in rows]))
                                  for s in (1, 2, 4, 8, 16, 32)}
    return {"summary": out, "rows": rows}


def scaling(repeats: int, quick: bool) -> list[dict]:
    base = load_instance("default")
    grid = {"K": [5, 10, 20, 40], "N_r": [8, 16, 32], "M": [16, 32, 64]}
    if quick:
        grid = {"K": [5, 10], "N_r": [8, 16], "M": [16, 32]}
    rows = []
    for name, values in grid.items():
        for v in values:
            k, nr, m = 10, 16, 32
            if name == "K":
                k = v
            elif name == "N_r":
                nr = v
            else:
                m = v
            d = base.to_dict()
            d["devices"].update(count=k, distance_m=np.linspace(50, 250, k).round().tolist(),
                                dataset_size=1.0)
            d["server"]["n_rx"] = nr
            d["ofdm"]["n_subcarriers"] = m
            inst = Instance.from_dict(d)
            times = {"airfl-lora": [], "exhaustive": []}
            for rep in range(repeats):
                for method in times:
                    t0 = time.perf_counter()
                    plan(inst, method, seed=rep)
                    times[method].append(time.perf_counter() - t0)
            rows.append({"vary": name, "value": v, "K": k, "N_r": nr, "M": m,
                         **{f"{key}_s": float(np.median(t)) for key, t in times.items()}})
            print(json.dumps(rows[-1]), flush=True)
    for name in grid:
        sel = [r for r in rows if r["vary"] == name]
        x = np.log([r["value"] for r in sel])
        for method in ("airfl-lora", "exhaustive"):
            slope = np.polyfit(x, np.log([r[f"{method}_s"] for r in sel]), 1)[0]
            for r in sel:
                r[f"{method}_growth_exponent_in_{name}"] = float(slope)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    n = 4 if args.quick else args.instances
    args.out.mkdir(parents=True, exist_ok=True)
    mr = match_rate(n)
    print(json.dumps(mr["summary"], indent=1), flush=True)
    sc = scaling(1 if args.quick else args.repeats, args.quick)
    meta = {"machine": f"{platform.machine()} {platform.platform()}", "numpy": np.__version__}
    (args.out / "planner.json").write_text(json.dumps({"meta": meta, "match": mr,
                                                       "scaling": sc}, indent=1))


if __name__ == "__main__":
    main()
