"""Benchmark: personalization on the multi-task clients of ``char-tasks`` (issue 13).

FedAvg-LoRA (FedSGD), local-only training, PWFF, MIRA (task graph) and FedSA-LoRA, each over
``ideal`` aggregation and over the planned AirComp uplink (the AirFL-LoRA plan solved for that
algorithm's payload: MIRA's one slot per task cluster, PWFF's global adapters), 3 seeds: the mean
per-client held-out loss (each client's own model on its own task), the global held-out loss,
PWFF's two rewards on each client's held-out text, payload and airtime
per round.

Run:  python -m benchmarks.personalization [--rounds 30] [--seeds 0,1,2] [--variants a,b]
      [--out benchmarks/results]   (writes personalization_<variants>.json; --merge F1 F2 ...)
      [--ideal-rank R]             (only the ideal rows, every algorithm at rank R: the planner
                                    gives each algorithm its own rank, which confounds)
"""

from __future__ import annotations

import platform
import time
from dataclasses import replace
from typing import Any

import numpy as np

from benchmarks._parts import parts_main, run_rows
from fedopt.instance import load_instance
from fedopt.solvers import solve
from fedopt.solvers.validation import ValidateSettings, run_plan

VARIANTS = ("fedavg", "local", "pwff", "mira", "fedsa")
UPLINKS = ("ideal", "aircomp")


def _one(alg: str, uplink: str, seed: int, inst: Any, rounds: int, shared: dict,
         ideal_rank: int | None = None) -> dict[str, Any]:
    settings = ValidateSettings.for_testbed("domain-shift", rounds=rounds, seeds=(seed,),
                                            mode="equivalent")
    inst_a = inst.with_algorithm(alg)
    t0 = time.perf_counter()
    plan = solve(inst_a, "airfl-lora", seed=seed).solution
    if ideal_rank is not None and uplink == "ideal":  # every algorithm at one rank
        plan = replace(plan, rank=ideal_rank)
    summ, _ = run_plan(plan, inst_a, settings, seed, ideal=uplink == "ideal",
                       data=shared["data"], base=shared["base"])
    row = {"variant": alg, "uplink": uplink, "seed": seed, "rank": summ["rank"],
           "streams": summ["streams"], "global_loss": summ["final_eval_loss"],
           "client_losses": summ["client_eval_loss"], "payload_reals": summ["payload_reals"],
           "airtime_s": summ["airtime_s"], "wall_s": time.perf_counter() - t0}
    if summ.get("client_metrics"):
        row["rewards"] = summ["client_metrics"]
    return row


def run(variants: list[str], seeds: list[int], rounds: int, ideal_rank: int | None = None,
        uplinks: tuple[str, ...] = UPLINKS) -> dict[str, Any]:
    inst = load_instance("char-tasks")
    settings = ValidateSettings.for_testbed("domain-shift")
    shared = {"data": settings.client_data(inst), "base": settings.base_model(inst)}
    rows = run_rows(variants, uplinks, seeds, lambda v, u, s: _one(
        v, u, s, inst, rounds, shared, ideal_rank), "global_loss")
    return {"base_eval_loss": settings.base_eval_loss(shared["base"], shared["data"]),
            "client_tasks": list(shared["data"].client_tasks), "rounds": rounds,
            "seeds": seeds, "rows": rows,
            "machine": f"{platform.machine()} {platform.system()}, {platform.python_version()}"}


def _ms(vals: list[float]) -> str:
    return f"{np.mean(vals):.4f} ± {np.std(vals):.4f}" if vals else "—"


def markdown(res: dict[str, Any]) -> str:
    lines = ["| algorithm | uplink | r | per-client loss | global loss | reward prose / "
             "structure (PWFF) | payload (reals) | airtime ms |", "|" + "---|" * 8]
    for alg in VARIANTS:
        for uplink in UPLINKS:
            rs = [r for r in res["rows"] if r["variant"] == alg and r["uplink"] == uplink]
            if not rs:
                continue
            ok = [r for r in rs if "error" not in r]
            if not ok:
                lines.append(f"| {alg} | {uplink} | not run: {rs[0]['error'][:80]} |" + " |" * 5)
                continue
            per = [float(np.mean([x for x in r["client_losses"] if x is not None])) for r in ok]
            rew = "—"
            if ok[0].get("rewards"):
                p = np.mean([np.mean([x["reward_prose"] for x in r["rewards"]]) for r in ok])
                s = np.mean([np.mean([x["reward_structure"] for x in r["rewards"]]) for r in ok])
                rew = f"{p:.3f} / {s:.3f}"
            air = ok[0]["airtime_s"]
            lines.append(
                f"| {alg} | {uplink} | {ok[0]['rank']} | {_ms(per)} | "
                f"{_ms([r['global_loss'] for r in ok])} | {rew} | {ok[0]['payload_reals']} | "
                f"{'—' if not air else format(air * 1e3, '.2f')} |")
    return "\n".join(lines)


def main() -> None:
    def configure(ap: Any) -> None:
        ap.add_argument("--ideal-rank", type=int, default=None,
                        help="run only the ideal rows, every algorithm at this rank")

    res = parts_main(__doc__, "personalization", VARIANTS,
                     lambda v, s, r, a: run(v, s, r, a.ideal_rank,
                                            ("ideal",) if a.ideal_rank else UPLINKS),
                     configure)
    print(f"base eval loss {res['base_eval_loss']:.4f}")
    print(markdown(res))


if __name__ == "__main__":
    main()
