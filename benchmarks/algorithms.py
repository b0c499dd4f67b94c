"""Benchmark: the federated algorithms of the loop (issue 12) on the ``char-tasks`` testbed.

Each algorithm — FedSGD (FedAvg, SGD local step), FedAvg with AdamW local steps, Fed-Sophia
(SophiaG local steps), over-the-air Sophia, FFA-LoRA, FedSA-LoRA — over three uplinks:

- ``ideal``: error-free aggregation at the AirComp plan's rank (the reference);
- ``aircomp``: the AirFL-LoRA plan solved for that algorithm's payload (``Instance.
  with_algorithm``), beamformers re-optimized on every round's channel, equivalent-noise path;
- ``digital``: TSFA (offline rank, online sparsity and bandwidth) over FDMA. ``char-tasks``'
  0.1 s average budget cannot carry any of these payloads over 1 MHz of FDMA, so the digital
  rows relax ``constraints.avg_latency_budget_s`` to ``--digital-budget`` (default 6 s) and say so.

Per (algorithm, uplink), over seeds: the global held-out loss, the mean per-client held-out
loss (each client's own model under FedSA), the fine-tuning gain retained against FedSGD's
ideal run of the same seed, (base − loss) / (base − ideal FedSGD), the payload per round (reals),
airtime and energy per round, and the rounds (and airtime) to reach 90 % of ideal FedSGD's final
gain.

Run:  python -m benchmarks.algorithms [--rounds 30] [--seeds 0,1,2] [--variants a,b]
      [--out benchmarks/results]      (writes algorithms_<variants>.json; --merge F1 F2 ...
      combines part files and prints the table)
"""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from benchmarks._parts import parts_main, run_rows
from fedopt.instance import load_instance
from fedopt.solvers import solve
from fedopt.solvers.validation import ValidateSettings
from fedopt.solvers.validation.driver import run_plan

#: variant → (algorithm, local optimizer)
VARIANTS = {
    "fedsgd": ("fedavg", "sgd"),
    "fedavg-adamw": ("fedavg", "adamw"),
    "fed-sophia": ("fedavg", "sophia"),
    "ota-sophia": ("ota-sophia", "sgd"),
    "ffa": ("ffa", "sgd"),
    "fedsa": ("fedsa", "sgd"),
}
UPLINKS = ("ideal", "aircomp", "digital")


def _one(variant: str, uplink: str, seed: int, inst: Any, dig_inst: Any, rounds: int,
         shared: dict) -> dict[str, Any]:
    alg, opt = VARIANTS[variant]
    settings = ValidateSettings.for_testbed("domain-shift", rounds=rounds, seeds=(seed,),
                                            mode="equivalent", optimizer=opt)
    inst_a = inst.with_algorithm(alg)
    t0 = time.perf_counter()
    if uplink == "digital":
        inst_a = dig_inst.with_algorithm(alg)
        plan = solve(inst_a, "tsfa", seed=seed).solution
    else:
        plan = solve(inst_a, "airfl-lora", seed=seed).solution
    summ, history = run_plan(plan, inst_a, settings, seed, ideal=uplink == "ideal",
                             data=shared["data"], base=shared["base"])
    clients = [x for x in summ["client_eval_loss"] if x is not None]
    return {"variant": variant, "uplink": uplink, "seed": seed, "rank": summ["rank"],
            "streams": summ["streams"], "final_eval_loss": summ["final_eval_loss"],
            "client_eval_loss": float(np.mean(clients)), "payload_reals": summ["payload_reals"],
            "airtime_s": summ["airtime_s"], "energy_j_max": summ["energy_j_max"],
            "relative_aggregation_error": summ["relative_aggregation_error"],
            "measured_aggregation_error": summ["measured_aggregation_error"],
            "predicted_aggregation_error": summ["predicted_aggregation_error"],
            "eval_curve": [r["eval_loss"] for r in history], "wall_s": time.perf_counter() - t0}


def run(variants: list[str], seeds: list[int], rounds: int, digital_budget: float
        ) -> dict[str, Any]:
    inst = load_instance("char-tasks")
    d = inst.to_dict()
    d["constraints"]["avg_latency_budget_s"] = digital_budget
    dig_inst = type(inst).from_dict(d)
    settings = ValidateSettings.for_testbed("domain-shift")
    shared = {"data": settings.client_data(inst), "base": settings.base_model(inst)}
    base_loss = settings.base_eval_loss(shared["base"], shared["data"])
    rows = run_rows(variants, UPLINKS, seeds, lambda v, u, s: _one(
        v, u, s, inst, dig_inst, rounds, shared), "final_eval_loss")
    return {"base_eval_loss": base_loss, "rounds": rounds, "seeds": seeds,
            "digital_avg_latency_budget_s": digital_budget, "rows": rows,
            "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}"}


def _to_target(curve: list, base: float, target_gain: float) -> int | None:
    """First round (1-based) whose eval loss reaches the target gain."""
    for i, v in enumerate(curve):
        if v is not None and base - v >= target_gain:
            return i + 1
    return None


def _ratio(rows: list[dict[str, Any]]) -> float | None:
    """Median over seeds of measured / predicted aggregation error (AirComp, digital)."""
    vals = [r["measured_aggregation_error"] / r["predicted_aggregation_error"] for r in rows
            if r.get("predicted_aggregation_error")]
    return float(np.median(vals)) if vals else None


def summarize(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (variant, uplink): means ± sd over seeds, against ideal FedSGD of the same seed."""
    base = res["base_eval_loss"]
    ok = [r for r in res["rows"] if "error" not in r]
    ref = {r["seed"]: r["final_eval_loss"] for r in ok
           if r["variant"] == "fedsgd" and r["uplink"] == "ideal"}
    out = []
    for variant in VARIANTS:
        for uplink in UPLINKS:
            rs = [r for r in ok if r["variant"] == variant and r["uplink"] == uplink]
            errs = [r for r in res["rows"] if "error" in r and r["variant"] == variant
                    and r["uplink"] == uplink]
            if not rs and not errs:
                continue
            if not rs:
                out.append({"variant": variant, "uplink": uplink, "error": errs[0]["error"]})
                continue
            kept = [(base - r["final_eval_loss"]) / (base - ref[r["seed"]]) for r in rs
                    if r["seed"] in ref]
            hits = [_to_target(r["eval_curve"], base, 0.9 * (base - ref[r["seed"]]))
                    for r in rs if r["seed"] in ref]
            reached = [h for h in hits if h is not None]

            def ms(key: str, rows: list = rs) -> tuple[float | None, float | None]:
                vals = [r[key] for r in rows if r.get(key) is not None]
                return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)
            airtime = ms("airtime_s")[0]
            out.append({
                "variant": variant, "uplink": uplink, "seeds": len(rs),
                "rank": sorted({r["rank"] for r in rs}), "eval_loss": ms("final_eval_loss"),
                "client_loss": ms("client_eval_loss"),
                "retained_vs_fedsgd": (float(np.mean(kept)), float(np.std(kept)))
                if kept else (None, None),
                "payload_reals": rs[0]["payload_reals"], "airtime_s": airtime,
                "energy_j_max": ms("energy_j_max")[0],
                "relative_aggregation_error": ms("relative_aggregation_error")[0],
                "meas_over_pred": _ratio(rs),
                "rounds_to_90pct": float(np.median(reached)) if reached else None,
                "reached_90pct": f"{len(reached)}/{len(hits)}",
                "airtime_to_90pct_s": (float(np.median(reached)) * airtime
                                       if reached and airtime else None),
                "wall_s": ms("wall_s")[0]})
    return out


def _f(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| algorithm | uplink | r | global loss | per-client loss | retained vs ideal "
            "FedSGD | payload (reals) | airtime ms | energy mJ | rounds to 90 % | airtime to "
            "90 % (s) | rel. agg. err | meas/pred |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['uplink']} | not run: {r['error'][:80]} |"
                         + " |" * 10)
            continue
        ev, cl, kp = r["eval_loss"], r["client_loss"], r["retained_vs_fedsgd"]
        lines.append(
            f"| {r['variant']} | {r['uplink']} | {'/'.join(map(str, r['rank']))} | "
            f"{_f(ev[0], '.4f')} ± {_f(ev[1], '.4f')} | {_f(cl[0], '.4f')} | "
            f"{_f(kp[0], '.3f')} ± {_f(kp[1], '.3f')} | {r['payload_reals']} | "
            f"{_f(r['airtime_s'] and r['airtime_s'] * 1e3, '.2f')} | "
            f"{_f(r['energy_j_max'] and r['energy_j_max'] * 1e3, '.3g')} | "
            f"{_f(r['rounds_to_90pct'], '.0f')} ({r['reached_90pct']}) | "
            f"{_f(r['airtime_to_90pct_s'], '.3f')} | "
            f"{_f(r.get('relative_aggregation_error'), '.3g')} | "
            f"{_f(r.get('meas_over_pred'), '.3f')} |")
    return "\n".join(lines)


def main() -> None:
    def configure(ap: Any) -> None:
        ap.add_argument("--digital-budget", type=float, default=6.0)

    res = parts_main(__doc__, "algorithms", list(VARIANTS),
                     lambda v, s, r, a: run(v, s, r, a.digital_budget), configure)
    print(f"base eval loss {res['base_eval_loss']:.4f}")
    print(markdown(summarize(res)))


if __name__ == "__main__":
    main()
