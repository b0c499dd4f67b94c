"""Benchmark: the digital uplink (issue 5) — bandwidth allocation vs its cvxpy oracle, TSFA's
per-round decision time, the V trade-off, and the long-run average latency.

Part 1. Min-max bandwidth allocation (Lambert W + safeguarded bisection/Newton) vs the
exponential-cone cvxpy oracle (Clarabel, MHz/Mbit units): relative agreement of τ and the
wall-time ratio, K ∈ {10, 100, 1000}, 5 random instances each (our time: median of 5 repeats;
cvxpy: one call, building included, and we also report the ratio against cvxpy's solve call
alone, measured from a second call on a fresh problem).
Part 2. TSFA's online decision per round for K ∈ {10, 100, 1000} (median over rounds).
Part 3. The V trade-off: time-average sparsification error vs mean queue over 300 rounds.
Part 4. 2000 i.i.d. rounds: time-average latency vs the average budget.

Run:  python -m benchmarks.tsfa [--quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from pathlib import Path

import numpy as np

from fedopt.channel import draw_channel
from fedopt.digital import noise_psd_w_hz, snr_hz
from fedopt.instance import Instance, load_instance
from fedopt.solvers.bandwidth import allocate_min_latency, allocate_min_latency_cvxpy
from fedopt.solvers.tsfa import TSFAController, simulate


@functools.lru_cache(maxsize=1)
def _reference_server() -> tuple[float, int]:
    """N0 · NF (W/Hz) and N_r of the ``default`` preset (−174 dBm/Hz, 9 dB, 16 antennas)."""
    inst = load_instance("default")
    return noise_psd_w_hz(inst), inst.n_rx


def random_allocation_problem(k: int, seed: int):
    """Realistic magnitudes: path loss 80–120 dB, 200 mW, the ``default`` preset's noise
    (−174 dBm/Hz + 9 dB) and receive gain N_r = 16, payloads 0.1–10 Mbit, compute 0–0.2 s,
    50 kHz per device on average."""
    rng = np.random.default_rng([seed, k])
    n0, n_rx = _reference_server()
    gain = n_rx * 10 ** (-rng.uniform(80, 120, k) / 10)
    c = 0.2 * gain / n0
    payload = 10 ** rng.uniform(5, 7, k)
    t_cmp = rng.uniform(0, 0.2, k)
    return payload, t_cmp, c, 50e3 * k


def bandwidth_part(ks, instances: int, repeats: int) -> list[dict]:
    rows = []
    for k in ks:
        ratios, errs, t_ours_all, t_cvx_all = [], [], [], []
        for i in range(instances):
            s, tc, c, b = random_allocation_problem(k, i)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ours = allocate_min_latency(s, tc, c, b)
                times.append(time.perf_counter() - t0)
            t_ours = float(np.median(times))
            t0 = time.perf_counter()
            oracle = allocate_min_latency_cvxpy(s, tc, c, b)
            t_cvx = time.perf_counter() - t0
            errs.append(abs(oracle.objective - ours.objective) / ours.objective)
            ratios.append(t_cvx / t_ours)
            t_ours_all.append(t_ours)
            t_cvx_all.append(t_cvx)
        rows.append({"K": k, "max_rel_tau_disagreement": float(max(errs)),
                     "t_ours_ms_median": 1e3 * float(np.median(t_ours_all)),
                     "t_cvxpy_ms_median": 1e3 * float(np.median(t_cvx_all)),
                     "time_ratio_cvxpy_over_ours_median": float(np.median(ratios))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def many_device_instance(k: int, seed: int = 0, budget: float = 0.05) -> Instance:
    """The `small` preset's LoRA layers and numerology with K devices and 40 kHz each."""
    rng = np.random.default_rng([seed, k])
    d = load_instance("small").to_dict()
    d["name"] = f"tsfa-bench-{k}"
    d["devices"] = {"count": k, "n_tx": 2, "p_max_dbm": 20.0,
                    "distance_m": rng.uniform(50, 250, k).round().tolist(),
                    "dataset_size": rng.integers(100, 1000, k).tolist()}
    d["constraints"] = {"avg_latency_budget_s": budget, "bandwidth_hz": 40e3 * k}
    return Instance.from_dict(d)


def controller_part(ks, rounds: int, rank: int = 8, v: float = 0.01, q: float = 0.3):
    rows = []
    for k in ks:
        inst = many_device_instance(k)
        ctrl = TSFAController(inst, rank, V=v)
        times, optimal = [], 0
        for t in range(rounds):
            c = snr_hz(inst, draw_channel(inst, 0, round=t))
            t0 = time.perf_counter()
            dec = ctrl.decide(c, queue=q)
            times.append(time.perf_counter() - t0)
            optimal += bool(dec.optimal)
        rows.append({"K": k, "decide_ms_median": 1e3 * float(np.median(times)),
                     "decide_ms_max": 1e3 * float(np.max(times)), "rounds": rounds,
                     "certified_optimal_rounds": optimal})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def tradeoff_part(vs, rounds: int, rank: int = 8):
    inst = many_device_instance(6, budget=0.05)
    rows = []
    for v in vs:
        res = simulate(inst, rank, rounds=rounds, V=v, seed=1)
        rows.append({"V": v, "mean_sparsification_error": res.mean_sparsification_error,
                     "mean_queue": res.mean_queue, "avg_latency_s": res.avg_latency_s,
                     "latency_budget_s": res.latency_budget_s,
                     "mean_sparsity": res.mean_sparsity})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def long_run_part(rounds: int, v: float, rank: int = 8):
    inst = many_device_instance(6, budget=0.05)
    res = simulate(inst, rank, rounds=rounds, V=v, seed=2)
    out = {"rounds": rounds, "V": v, "avg_latency_s": res.avg_latency_s,
           "latency_budget_s": res.latency_budget_s,
           "relative_excess": res.avg_latency_s / res.latency_budget_s - 1,
           "queue_bound_s": res.queue_bound_s, "final_queue": res.final_queue}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    quick = args.quick
    out = {"meta": {"machine": f"{platform.machine()} {platform.platform()}",
                    "numpy": np.__version__}}
    out["bandwidth"] = bandwidth_part((10, 100) if quick else (10, 100, 1000),
                                      2 if quick else 5, 3 if quick else 5)
    out["controller"] = controller_part((10, 100) if quick else (10, 100, 1000),
                                        3 if quick else 20)
    out["tradeoff"] = tradeoff_part((1e-3, 1e-1) if quick else (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                                    50 if quick else 300)
    out["long_run"] = long_run_part(100 if quick else 2000, 1e-3)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tsfa.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
