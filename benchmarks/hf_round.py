"""Benchmark: one federated round of a Hugging Face model with PEFT LoRA, ideal vs AirComp.

The tiny random GPT-2 of :mod:`fedopt.fl.hf_tiny` (2 blocks of width 32, byte-level BPE of 320
tokens; LoRA on ``c_attn``, q(r) = 256 r) fine-tuned on the ``char-tasks`` instance (12 clients,
``domain-shift`` text re-tokenized with its tokenizer, batch 16 windows of 64 tokens, one SGD
step per round), the instance's ``lora.layers`` replaced by the model's. The AirFL-LoRA plan
(rank r, streams L) is solved once per seed; every row trains at that rank:

- ``ideal``: error-free aggregation;
- ``aircomp-equivalent``: AirComp with the validated equivalent noise, the receive beamformers
  re-optimized on every round's channel (the plan's beamforming method, warm-started);
- ``aircomp-exact``: the same, simulated symbol by symbol;
- ``char-ideal`` (reference): the testbed's own character model (``prose-base``, width 64,
  LoRA on q, k, v, proj) with ideal aggregation at the same rank.

Per row: the median wall time of a round (``wall_s`` of the loop's records: 12 local updates,
aggregation, server step, held-out evaluation every round) over rounds and repeats, and the
median time inside the aggregator (``aggregate``: beamformer re-solve and AirComp simulation
included), each as wall time and as the process's CPU time (with ``OMP_NUM_THREADS=1`` the CPU
time is what an idle core would take; the wall time also counts other processes on a shared
machine). The first round of every repeat is dropped (warm-up).

Run:  python -m benchmarks.hf_round [--rounds 6] [--repeats 3] [--seed 0]
      [--out benchmarks/results]      (writes hf_round.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedopt.fl.loop import run_federated
from fedopt.instance import load_instance
from fedopt.solvers import solve
from fedopt.solvers.validation import ValidateSettings
from fedopt.solvers.validation.builder import build_run

ROWS = ("ideal", "aircomp-equivalent", "aircomp-exact", "char-ideal")


class _Timed:
    """An aggregator that times its ``aggregate`` calls (everything else forwarded)."""

    def __init__(self, inner: Any):
        self.inner, self.seconds, self.cpu = inner, [], []

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.inner.aggregate(*args, **kwargs)
        self.seconds.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _row(row: str, plan: Any, inst: Any, settings: ValidateSettings, shared: dict,
         rounds: int, seed: int) -> dict[str, Any]:
    hf = row != "char-ideal"
    s = settings if hf else ValidateSettings.for_testbed("domain-shift", mode="equivalent")
    mode = "exact" if row == "aircomp-exact" else "equivalent"
    run = build_run(plan, inst, seed=seed, mode=mode, ideal=row.endswith("ideal"))
    data, base = shared["hf" if hf else "char"]
    model, _ = run.lora_model(base, s, seed, inst.algorithm)
    agg = _Timed(run.aggregator)
    cpu = [time.process_time()]
    res = run_federated(model, data, agg, s.loop_config(inst, seed, rounds=rounds),
                        compute_time_s=float(np.max(inst.compute_time_s)),
                        callback=lambda rec: cpu.append(time.process_time()) and None)
    return {"round_s": [r["wall_s"] for r in res.history][1:], "aggregate_s": agg.seconds[1:],
            "round_cpu_s": list(np.diff(cpu))[1:], "aggregate_cpu_s": agg.cpu[1:],
            "final_eval_loss": res.summary["final_eval_loss"],
            "payload_reals": res.summary["payload_reals"]}


def measure(rounds: int, repeats: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        from fedopt.fl.hf_tiny import save_tiny_gpt2

        path = str(save_tiny_gpt2(Path(tmp) / "gpt2"))
        settings = ValidateSettings.for_testbed("domain-shift", mode="equivalent", model=path)
        inst, _ = settings.loop_instance(load_instance("char-tasks"), adopt=True)
        data = settings.client_data(inst)
        inst = inst.with_devices(dataset_size=[int(x) for x in data.data_sizes])
        char = ValidateSettings.for_testbed("domain-shift")
        char_data = char.client_data(inst)
        shared = {"hf": (data, settings.base_model(inst)),
                  "char": (char_data, char.base_model(inst))}
        plan = solve(inst, "airfl-lora", seed=seed).solution
        out: dict[str, Any] = {}
        for row in ROWS:
            runs = [_row(row, plan, inst, settings, shared, rounds, seed)
                    for _ in range(repeats)]
            def med(key: str, runs: list = runs) -> float:
                return float(np.median([x for r in runs for x in r[key]]))

            out[row] = {"median_round_s": med("round_s"), "median_aggregate_s": med("aggregate_s"),
                        "median_round_cpu_s": med("round_cpu_s"),
                        "median_aggregate_cpu_s": med("aggregate_cpu_s"),
                        "rounds_timed": sum(len(r["round_s"]) for r in runs),
                        "final_eval_loss": runs[0]["final_eval_loss"],
                        "payload_reals": runs[0]["payload_reals"]}
        return {"rank": plan.rank, "streams": plan.streams, "clients": inst.n_devices,
                "tokens": int(data.n_train), "rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = measure(args.rounds, args.repeats, args.seed)
    result.update(machine={"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count(), "torch": torch.__version__,
                           "torch_threads": torch.get_num_threads()},
                  wall_s=time.perf_counter() - t0, rounds=args.rounds, repeats=args.repeats)
    print(f"tiny GPT-2 on char-tasks (K = {result['clients']}, {result['tokens']} training "
          f"tokens): plan r = {result['rank']}, L = {result['streams']}; median over "
          f"{args.repeats} x {args.rounds - 1} rounds")
    print("| row | payload (reals) | round wall (ms) | round CPU (ms) | aggregation wall (ms) "
          "| aggregation CPU (ms) | final eval loss |")
    print("|---|---|---|---|---|---|---|")
    for row, r in result["rows"].items():
        print(f"| {row} | {r['payload_reals']} | {r['median_round_s'] * 1e3:.1f} | "
              f"{r['median_round_cpu_s'] * 1e3:.1f} | {r['median_aggregate_s'] * 1e3:.2f} | "
              f"{r['median_aggregate_cpu_s'] * 1e3:.2f} | {r['final_eval_loss']:.4f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hf_round.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out / 'hf_round.json'} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
