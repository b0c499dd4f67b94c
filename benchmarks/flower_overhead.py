"""Benchmark: what AirCompStrategy adds to a Flower round, against plain FedAvg.

Both aggregate the same K client replies of q reals (Flower's Message API,
``flwr.serverapp.strategy.FedAvg``; the arrays float32, as a torch model sends them). The
strategy is ``AirCompStrategy(FedAvg(), uplink=aircomp_uplink(instance, mode=...))`` on the
``tiny-char`` instance (K = 10 devices, M = 16 subcarriers, N_r = 8; its AirFL-LoRA plan has
L = 2 streams; another ``--clients`` resamples its devices as a sweep does), in each AirComp
mode:

- ``round``: one ``aggregate_train`` of a new round: the round's channel drawn, the receive
  beamformers re-optimized on it (the plan's method, warm-started), the uplink's aggregation,
  and the Flower bookkeeping (arrays in and out of their records, K rebuilt replies, FedAvg over
  them);
- ``cached``: the same round again, the beamformers memoized: the aggregation and bookkeeping
  alone;
- ``solve``: the beamformer re-optimization of the round alone (``RoundBeamformers``' clock).

Each row is the median over ``--repeats`` rounds (wall time, with ``OMP_NUM_THREADS=1`` set by
the caller), next to the median of plain FedAvg's ``aggregate_train`` on the same replies.

Run:  OMP_NUM_THREADS=1 python -m benchmarks.flower_overhead [--clients 10] [--reals 100000]
      [--repeats 7] [--instance tiny-char] [--out benchmarks/results]
      (writes flower_overhead.json; flower_overhead_<instance>.json for another instance)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedopt.flower import AirCompStrategy
from fedopt.instance import load_instance
from fedopt.solvers.flower import aircomp_uplink
from fedopt.solvers.sweeps.cells import resize_devices

MODES = ("equivalent", "exact")


class _Grid:
    """What FedAvg's ``configure_train`` asks of a Grid: the node ids."""

    def __init__(self, nodes: list[int]):
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def _replies(strategy: Any, server_round: int, theta: np.ndarray, grid: _Grid,
             rng: np.random.Generator) -> list[Message]:
    """configure_train (not timed), then one reply per node: θ + 0.01·noise."""
    record = ArrayRecord({"w": Array(theta)})
    out = []
    for msg in strategy.configure_train(server_round, record, ConfigRecord(), grid):
        w = (theta + 0.01 * rng.standard_normal(theta.shape)).astype(np.float32)
        out.append(Message(RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                                       "metrics": MetricRecord({"num-examples": 100})}),
                           reply_to=msg))
    return out


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(clients: int, reals: int, repeats: int, instance: str, seed: int) -> dict[str, Any]:
    """The medians of every row (module notes)."""
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    inst = load_instance(instance)
    if inst.n_devices != clients:  # the sweeps' quantile resampling of per-device lists
        devices = resize_devices(inst.to_dict()["devices"], clients)
        inst = inst.replace(devices={**devices, "count": clients})
    rng = np.random.default_rng(seed)
    grid = _Grid(list(range(1, clients + 1)))
    theta = rng.standard_normal((reals // 400, 400)).astype(np.float32)
    plain = FedAvg(min_available_nodes=clients, min_train_nodes=clients)
    rows: dict[str, list[float]] = {"fedavg": []}
    uplinks = {m: aircomp_uplink(inst, seed=seed, mode=m) for m in MODES}
    strategies = {m: AirCompStrategy(FedAvg(min_available_nodes=clients,
                                            min_train_nodes=clients), uplink=u)
                  for m, u in uplinks.items()}
    for rep in range(repeats + 1):  # round 1 warms up (imports, caches) and is dropped
        server_round = rep + 1
        replies = _replies(plain, server_round, theta, grid, rng)
        t_plain = _timed(lambda r=replies, t=server_round: plain.aggregate_train(t, r))
        if rep:
            rows["fedavg"].append(t_plain)
        for mode, strategy in strategies.items():
            beams = uplinks[mode].aggregator.beamformers_for_round
            replies = _replies(strategy, server_round, theta, grid, rng)
            s0 = beams.solve_time_s
            t_round = _timed(lambda s=strategy, r=replies, t=server_round:
                             s.aggregate_train(t, r))
            solve_s = beams.solve_time_s - s0
            t_cached = _timed(lambda s=strategy, r=replies, t=server_round:
                              s.aggregate_train(t, r))
            if rep:
                for name, value in (("round", t_round), ("cached", t_cached),
                                    ("solve", solve_s)):
                    rows.setdefault(f"{mode}-{name}", []).append(value)
    plan = uplinks["equivalent"].info
    return {"clients": clients, "reals": reals, "repeats": repeats, "instance": inst.name,
            "plan": {"rank": plan["rank"], "streams": plan["streams"],
                     "beamforming": plan["beamforming"]},
            "median_ms": {k: 1e3 * statistics.median(v) for k, v in rows.items()},
            "raw_s": rows, "platform": platform.platform(), "cpus": os.cpu_count(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def _table(res: dict[str, Any]) -> str:
    med = res["median_ms"]
    lines = ["| aggregation | round (ms) | cached beamformers (ms) | beamformer solve (ms) |",
             "|---|---|---|---|", f"| FedAvg | {med['fedavg']:.1f} | — | — |"]
    for mode in MODES:
        lines.append(f"| AirComp {mode} | {med[f'{mode}-round']:.1f} | "
                     f"{med[f'{mode}-cached']:.1f} | {med[f'{mode}-solve']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--reals", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--instance", default="tiny-char")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)  # FedAvg logs every round
    res = run(args.clients, args.reals, args.repeats, args.instance, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "flower_overhead" + ("" if args.instance == "tiny-char" else f"_{args.instance}")
    (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"K = {res['clients']}, q = {res['reals']} reals, instance {res['instance']} "
          f"(plan r = {res['plan']['rank']}, L = {res['plan']['streams']}), median of "
          f"{res['repeats']} rounds")
    print(_table(res))


if __name__ == "__main__":
    main()
