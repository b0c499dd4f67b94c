"""Benchmark: plans on TR 38.901 channels from Sionna vs the built-in channel model.

For the ``default`` preset (20 four-antenna devices 50–250 m from a 16-antenna server, 64
subcarriers at 30 kHz, 3.5 GHz) and the same instance with ``channel.model: sionna`` and
``channel.scenario: umi`` (or ``--scenario``), we plan with ``solve(instance, "airfl-lora",
seed=s)`` for each seed and report the chosen rank r and streams L, the per-round MSE Σ_m MSE_m,
the AirComp airtime and latency, the gap and the solve time, plus the mean channel gain per
device (dB: the median and the worst device) of the draw the plan was made on. Part 2 times one
round's channel draw for each model (median of ``--repeats`` draws of distinct rounds; the first
Sionna draw, which imports Sionna and builds its model, is reported apart).

Run:  OMP_NUM_THREADS=1 python -m benchmarks.sionna_channels [--seeds 0,1,2,3,4]
      [--scenario umi] [--repeats 20] [--out benchmarks/results]
Prints a Markdown table and writes the rows as JSON to --out/sionna_channels.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fedopt.channel import draw_channel
from fedopt.instance import Instance, load_instance
from fedopt.solvers import solve


def instances(scenario: str) -> dict[str, Instance]:
    """The ``default`` preset with the built-in model and with ``model: sionna``."""
    base = load_instance("default")
    data = base.to_dict()
    data["channel"].update(model="sionna", scenario=scenario)
    return {"builtin": base, f"sionna-{scenario}": Instance.from_dict(data)}


def plan_row(name: str, inst: Instance, seed: int) -> dict:
    t0 = time.perf_counter()
    res = solve(inst, "airfl-lora", seed=seed)
    wall = time.perf_counter() - t0
    meta = res.solution.metadata
    gain_db = 10 * np.log10(draw_channel(inst, seed).mean_gain())
    row = {"model": name, "seed": seed, "status": res.status.value, "rank": res.solution.rank,
           "streams": res.solution.streams, "mse_sum": meta["mse_sum"], "gap": meta["gap"],
           "airtime_s": meta["airtime_s"], "latency_s": meta["latency_s"],
           "gain_db_median": float(np.median(gain_db)), "gain_db_min": float(gain_db.min()),
           "solve_s": wall}
    print(json.dumps(row), flush=True)
    return row


def draw_times(inst: Instance, repeats: int) -> dict:
    t0 = time.perf_counter()
    draw_channel(inst, 0, 0)
    first = time.perf_counter() - t0
    times = []
    for t in range(1, repeats + 1):
        t0 = time.perf_counter()
        draw_channel(inst, 0, t)
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": float(np.median(times)), "repeats": repeats}


def markdown(rows: list[dict], timing: dict[str, dict]) -> str:
    head = ("| model | seed | r | L | Σ_m MSE_m | airtime ms | latency ms | gap | gain dB median "
            "/ worst | solve s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [head] + [
        f"| {r['model']} | {r['seed']} | {r['rank']} | {r['streams']} | {r['mse_sum']:.3e} | "
        f"{1e3 * r['airtime_s']:.1f} | {1e3 * r['latency_s']:.1f} | {r['gap']:.3f} | "
        f"{r['gain_db_median']:.1f} / {r['gain_db_min']:.1f} | {r['solve_s']:.2f} |"
        for r in rows]
    lines += ["", "| model | one round's draw, median | first draw |", "|---|---:|---:|"]
    lines += [f"| {m} | {1e3 * t['median_s']:.1f} ms | {t['first_s']:.2f} s |"
              for m, t in timing.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--scenario", default="umi", choices=["umi", "uma", "rma", "tdl", "cdl"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    insts = instances(args.scenario)
    timing = {name: draw_times(inst, args.repeats) for name, inst in insts.items()}
    rows = [plan_row(name, inst, s) for name, inst in insts.items() for s in seeds]
    print(markdown(rows, timing))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.machine()} {platform.platform()}", "numpy": np.__version__,
            "instance_digests": {n: i.digest() for n, i in insts.items()}}
    (args.out / "sionna_channels.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "draw_timing": timing}, indent=1) + "\n")


if __name__ == "__main__":
    main()
