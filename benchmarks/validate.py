"""Benchmark: the FL validation loop (issues 6, 11) — `fedopt validate --baselines`.

Part 1. The default comparison run (AirFL-LoRA plan + ideal, fixed-rank, random-plan,
single-stream, digital; 30 rounds; seeds 0, 1, 2; exact AirComp path), timed end to end, with
per seed: eval loss of each method relative to ideal, measured/predicted aggregation error.
Part 2 (``--paths``). Exact symbol-level vs equivalent-noise AirComp path on the same plan:
final losses, error ratios and the time of each.

Each method also gets its retained fine-tuning gain (base − method) / (base − ideal), with the
base model's loss on the same held-out set.

Run:  python -m benchmarks.validate [--instance char-tasks] [--quick] [--paths]
      [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.instance import load_instance
from fedopt.solvers.validation import DEFAULT_BASELINES, ValidateSettings, validate


def comparison(instance: Any, settings: ValidateSettings) -> dict[str, Any]:
    t0 = time.perf_counter()
    rep = validate(instance, baselines=DEFAULT_BASELINES, settings=settings)
    wall = time.perf_counter() - t0
    methods = rep.methods
    ideal = {s["seed"]: s["final_eval_loss"] for s in methods["ideal"]["seeds"]}
    rows = {}
    for name, m in methods.items():
        if m.get("final_eval_loss") is None:
            rows[name] = {"error": m.get("error")}
            continue
        per_seed = []
        for s in m["seeds"]:
            pred = s.get("predicted_aggregation_error")
            per_seed.append({
                "seed": s["seed"], "final_eval_loss": s["final_eval_loss"],
                "eval_vs_ideal": s["final_eval_loss"] / ideal[s["seed"]] - 1.0,
                "meas_over_pred": (s["measured_aggregation_error"] / pred) if pred else None,
                "relative_aggregation_error": s.get("relative_aggregation_error"),
                "retained_gain": s.get("retained_gain"),
            })
        rows[name] = {
            "rank": m["rank"], "streams": m["streams"], "predicted_gap": m.get("predicted_gap"),
            "final_eval_loss": m["final_eval_loss"],
            "final_eval_loss_std": m["final_eval_loss_std"],
            "retained_gain": m.get("retained_gain"),
            "perplexity": m["perplexity"], "latency_s": m["latency_s"],
            "energy_j_max": m["energy_j_max"],
            "measured_aggregation_error": m["measured_aggregation_error"],
            "predicted_aggregation_error": m["predicted_aggregation_error"],
            "per_seed": per_seed,
        }
    return {"wall_s": wall, "settings": rep.settings, "ordering": rep.ordering,
            "base_eval_loss": rep.base_eval_loss, "methods": rows}


def paths(instance: Any, settings: ValidateSettings) -> dict[str, Any]:
    out = {}
    for mode in ("exact", "equivalent"):
        s = ValidateSettings(**{**settings.to_dict(), "seeds": tuple(settings.seeds),
                                "mode": mode})
        t0 = time.perf_counter()
        rep = validate(instance, settings=s)
        m = rep.methods["airfl-lora"]
        out[mode] = {"wall_s": time.perf_counter() - t0,
                     "final_eval_loss": m["final_eval_loss"],
                     "measured_aggregation_error": m["measured_aggregation_error"],
                     "predicted_aggregation_error": m["predicted_aggregation_error"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8 rounds, seed 0")
    ap.add_argument("--paths", action="store_true", help="also compare exact vs equivalent")
    ap.add_argument("--instance", default="char-tasks", help="preset or instance file")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    inst = load_instance(args.instance)
    testbed = inst.learning.testbed
    settings = (ValidateSettings.quick(testbed) if args.quick
                else ValidateSettings.for_testbed(testbed))
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "numpy": np.__version__},
              "instance": inst.name, "comparison": comparison(inst, settings)}
    if args.paths:
        result["paths"] = paths(inst, settings)
    c = result["comparison"]
    print(f"{inst.name}: validate --baselines (6 methods x {len(settings.seeds)} seeds x "
          f"{settings.rounds} rounds): {c['wall_s']:.1f} s; base model eval loss "
          f"{c['base_eval_loss']:.4f}")
    for name, r in c["methods"].items():
        if "error" in r:
            print(f"  {name:14s} not run: {r['error']}")
            continue
        vs = ", ".join(f"{p['eval_vs_ideal'] * 100:+.2f}%" for p in r["per_seed"])
        ratio = ", ".join("—" if p["meas_over_pred"] is None else f"{p['meas_over_pred']:.3f}"
                          for p in r["per_seed"])
        kept = r["retained_gain"]
        kept = "—" if kept is None else f"{kept:.3f}"
        print(f"  {name:14s} r={r['rank']!s:3s} L={r['streams']!s:4s} eval "
              f"{r['final_eval_loss']:.4f} ± {r['final_eval_loss_std']:.4f}  retained {kept}"
              f"  vs ideal [{vs}]  "
              f"meas/pred [{ratio}]  latency {r['latency_s'] * 1e3:.1f} ms")
    if args.paths:
        for mode, r in result["paths"].items():
            ratio = r["measured_aggregation_error"] / r["predicted_aggregation_error"]
            print(f"  path {mode:10s}: {r['wall_s']:.1f} s, eval {r['final_eval_loss']:.5f}, "
                  f"meas/pred {ratio:.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"validate_{inst.name}{'_quick' if args.quick else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
