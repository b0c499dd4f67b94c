"""Benchmark: does the calibrated gap predict what the loop measures? (issue 11)

A grid of configurations — ranks × streams × device powers — is planned and run through the
federated loop for several seeds (:func:`fedopt.solvers.validation.predictive.predictive_grid`).
It prints, over the grid and per power:

- Spearman's ρ between the predicted gap and the measured final held-out loss, with the
  instance's calibrated constants and with the nominal defaults (what calibration buys);
- the planner's pick (``airfl-lora``) against the best measured configuration: the loss above
  the best, in percent and in the seed sd of the two compared (target: within one sd or 0.5 %);
  a pick outside the grid is run too, to grade it (it does not count for ρ).

Run:  python -m benchmarks.predictive [--instance char-tasks] [--powers=-25,-35,-40,-45]
      [--ranks 4,16,32] [--streams 1,2] [--seeds 0,1,2] [--rounds 30] [--quick]
      [--out benchmarks/results/predictive.json]
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
from fedopt.io import atomic_write_text
from fedopt.solvers.validation import ValidateSettings
from fedopt.solvers.validation.predictive import predictive_grid


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _or_nan(x: float | None) -> float:
    """None (an undefined value in the JSON) printed as nan."""
    return float("nan") if x is None else x


def report(grid: dict[str, Any]) -> str:
    """The grid as a table and the summary lines."""
    s = grid["summary"]
    lines = [f"{'P dBm':>6s} {'r':>3s} {'L':>2s} {'gap (cal.)':>11s} {'gap (nom.)':>11s} "
             f"{'loss mean':>9s} {'sd':>7s} {'retained':>8s} {'rel. agg. err':>13s}"]
    for c in grid["configs"]:
        if c.get("error") or not c.get("losses"):
            lines.append(f"{c['p_max_dbm']:6g} {c['rank']:3d} {c['streams']:2d}  not run: "
                         f"{c.get('error', '')[:70]}")
            continue
        rel = [x for x in c["relative_aggregation_error"] if x is not None]
        lines.append(f"{c['p_max_dbm']:6g} {c['rank']:3d} {c['streams']:2d}"
                     f"{'*' if c.get('extra') else ' '}"
                     f"{np.mean(c['gap']):11.5g} {np.mean(c['gap_nominal']):11.5g} "
                     f"{c['loss_mean']:9.4f} {c['loss_std']:7.4f} "
                     f"{_or_nan(c['retained_gain']):8.3f} "
                     f"{np.mean(rel) if rel else float('nan'):13.4g}")
    ideal = ", ".join(f"r={r}: {np.mean(v):.4f}" for r, v in grid["ideal"].items())
    lines += ["", f"base model {grid['base_eval_loss']:.4f}; ideal aggregation {ideal}; retained ="
              " (base − loss) / (base − ideal at the same rank)",
              f"median seed sd {s['median_seed_sd']:.4g} over {s['n_configs']} configurations",
              f"Spearman rho (all): calibrated {_or_nan(s['rho_calibrated']):.3f}, nominal "
              f"{_or_nan(s['rho_nominal']):.3f}"]
    for p, row in s["per_power"].items():
        lines.append(f"P = {p} dBm: rho calibrated {_or_nan(row['rho_calibrated']):.3f}, nominal "
                     f"{_or_nan(row['rho_nominal']):.3f}; best measured (r={row['best']['rank']}, "
                     f"L={row['best']['streams']}) {row['best']['loss_mean']:.4f}")
        for nm in ("calibrated", "nominal"):
            e = row[f"planner_{nm}"]
            if "above_best" in e:
                lines.append(
                    f"    planner ({nm}): r={e['rank']}, L={e['streams']} -> "
                    f"{e['loss_mean']:.4f}, {e['above_best_percent']:+.2f} % "
                    f"({e['above_best_in_sd'] or 0.0:.1f} sd) above best"
                    f"{'' if e['in_grid'] else ' (off the grid: *)'}; within target: "
                    f"{e['within_target']}")
            else:
                lines.append(f"    planner ({nm}): r={e['rank']}, L={e['streams']}: "
                             f"{e['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="char-tasks", help="calibrated instance or preset")
    ap.add_argument("--powers", type=_floats, default=[-25.0, -35.0, -40.0, -45.0])
    ap.add_argument("--ranks", type=_ints, default=[4, 16, 32])
    ap.add_argument("--streams", type=_ints, default=[1, 2])
    ap.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=None, help="default: the testbed's")
    ap.add_argument("--quick", action="store_true", help="2 powers, 2 ranks, 1 seed, 4 rounds")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/predictive.json"))
    args = ap.parse_args(argv)
    inst = load_instance(args.instance)
    if args.quick:
        args.powers, args.ranks, args.streams, args.seeds = args.powers[:2], args.ranks[:2], \
            args.streams[:1], args.seeds[:1]
    changes: dict[str, Any] = {"seeds": tuple(args.seeds), "eval_every": 10 ** 6}
    if args.rounds or args.quick:
        changes["rounds"] = args.rounds or 4
    settings = ValidateSettings.for_testbed(inst.learning.testbed, **changes)
    t0 = time.perf_counter()

    def progress(rec: dict[str, Any]) -> None:
        print(f"  [{rec['done']}/{rec['total']}] {rec['label']} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    grid = predictive_grid(inst, powers=args.powers, ranks=args.ranks, streams=args.streams,
                           settings=settings, callback=progress)
    grid["wall_s"] = time.perf_counter() - t0
    grid["machine"] = {"platform": platform.platform(), "python": platform.python_version()}
    print(report(grid))
    print(f"{grid['wall_s']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(grid, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
