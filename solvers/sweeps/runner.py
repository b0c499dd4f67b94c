"""Run one cell of a sweep (in a Dask worker or in the calling process) and return its record.

A record is a JSON-safe mapping: the cell's ``key``, ``index``, grid ``values``, ``method`` and
``seed``; ``result``, the scalar keys of the ``fedopt solve --format json`` summary
(:func:`fedopt.solvers.summary.summarize`) or of the method's entry in the ``fedopt validate``
report, with non-finite numbers as null; ``wall_time_s``, the cell's time from its instance to
its summary; and ``error``, empty unless the cell failed. :func:`run_cell` never raises on a
failing cell: a bad cell must not stop the others.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

from fedopt.errors import FedOptError
from fedopt.solvers.sweeps.cells import Cell

__all__ = ["run_cell", "scalar_items", "error_record"]

#: summary keys that are not results of the cell (its provenance is in the other columns; its
#: ``error`` and ``wall_time_s`` are the cell's own)
_SKIP = frozenset({"plan", "method", "seed", "instance", "round", "error"})
#: summary keys renamed in the record: the solver's own time, next to the cell's wall_time_s
_RENAME = {"wall_time_s": "solve_time_s"}


def scalar_items(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a summary (numbers, strings, booleans, null), non-finite floats
    as None, plus the median and maximum of ``bound_ratio`` where the summary has one."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in _SKIP:
            continue
        key = _RENAME.get(key, key)
        if value is None or isinstance(value, (bool, int, str)):
            out[key] = value
        elif isinstance(value, float):
            out[key] = value if math.isfinite(value) else None
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # a numpy scalar
            out.update(scalar_items({key: value.item()}))
    ratio = summary.get("bound_ratio")
    if isinstance(ratio, list) and ratio:
        import numpy as np

        finite = [float(x) for x in ratio if x is not None and math.isfinite(float(x))]
        out["bound_ratio_median"] = float(np.median(finite)) if finite else None
        out["bound_ratio_max"] = max(finite) if finite else None
    return out


def _solve(cell: Cell, inst: Any) -> dict[str, Any]:
    from fedopt.solvers.registry import solve
    from fedopt.solvers.summary import summarize

    result = solve(inst, cell.method, seed=cell.seed, round=cell.round)
    return scalar_items(summarize(result, inst, seed=cell.seed, round_=cell.round))


def _validate(cell: Cell, inst: Any) -> dict[str, Any]:
    from fedopt.solvers.validation import ValidateSettings, validate

    testbed = inst.learning.testbed
    opts = cell.validate
    base = (ValidateSettings.quick(testbed) if opts.quick
            else ValidateSettings.for_testbed(testbed))
    settings = replace(base, seeds=(cell.seed,), rounds=opts.rounds or base.rounds,
                       mode=opts.mode)
    report = validate(inst, method=cell.method, settings=settings).to_dict(per_seed=False)
    entry = report["methods"][cell.method]
    # one seed per cell: the spreads over seeds (*_std) are zero and say nothing
    out = scalar_items({k: v for k, v in entry.items() if not k.endswith("_std")})
    out["base_eval_loss"] = report.get("base_eval_loss")
    if entry.get("error") and entry.get("final_eval_loss") is None:
        raise _CellFailed(str(entry["error"]))
    return out


class _CellFailed(Exception):
    """A validation method that reported an error instead of a result."""


def error_record(cell: Cell, error: str, wall_time_s: float | None = None) -> dict[str, Any]:
    """The record of a cell that produced no result (``error`` says why)."""
    return {"key": cell.key, "index": cell.index, "values": [list(v) for v in cell.values],
            "method": cell.method, "seed": cell.seed, "result": {},
            "wall_time_s": wall_time_s, "error": error}


def run_cell(cell: Cell) -> dict[str, Any]:
    """Run ``cell`` and return its record (module notes); errors become the record's
    ``error``: a fedopt error as its message, anything else with its exception type."""
    from fedopt.instance import Instance

    start = time.perf_counter()
    try:
        inst = Instance.from_dict(cell.instance)
        result = (_solve if cell.kind == "solve" else _validate)(cell, inst)
    except (FedOptError, _CellFailed) as exc:
        return error_record(cell, str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - a crash of one cell must not stop the sweep
        return error_record(cell, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)
    record = error_record(cell, "", time.perf_counter() - start)
    record["result"] = result
    return record
