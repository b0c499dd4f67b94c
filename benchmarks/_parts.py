"""The command line shared by benchmarks that run in parts: ``--variants`` picks a subset (run
several parts side by side, one process each), each part writes ``<name>_<variants>.json``, and
``--merge F1 F2 ...`` combines part files into ``<name>.json`` without running anything."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def parts_main(doc: str, name: str, variants: Sequence[str],
               run: Callable[[list[str], list[int], int, argparse.Namespace], dict[str, Any]],
               configure: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> dict[str, Any]:
    """Parse the arguments, run (or merge) and return the result."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default=",".join(variants))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--merge", nargs="*", help="part files to combine (no new runs)")
    if configure is not None:
        configure(ap)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        res = {**parts[0], "rows": [r for p in parts for r in p["rows"]]}
        (out / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
        return res
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in chosen if v not in variants]
    if bad:
        raise SystemExit(f"--variants: unknown {bad}, choose from {', '.join(variants)}")
    t0 = time.perf_counter()
    res = run(chosen, [int(s) for s in args.seeds.split(",")], args.rounds, args)
    res["wall_s"] = time.perf_counter() - t0
    (out / f"{name}_{'_'.join(chosen)}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def run_rows(variants: Sequence[str], uplinks: Sequence[str], seeds: Sequence[int],
             one: Callable[[str, str, int], dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """``one(variant, uplink, seed)`` for every cell, in order, each printed as it ends (its
    ``key`` value); a cell that raises becomes a row with its ``error`` (a plan that cannot run
    is a result, not a crash)."""
    rows = []
    for variant in variants:
        for uplink in uplinks:
            for seed in seeds:
                try:
                    row = one(variant, uplink, seed)
                except Exception as exc:
                    row = {"variant": variant, "uplink": uplink, "seed": seed,
                           "error": f"{type(exc).__name__}: {exc}"[:300]}
                rows.append(row)
                print(f"{variant:13s} {uplink:8s} seed {seed}: {row.get(key, row.get('error'))}",
                      flush=True)
    return rows
