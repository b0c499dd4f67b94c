"""A sweep's output folder, and its table.

``DIR/sweep.json``
    The sweep (its checked spec) and its cells' keys. A folder that holds another sweep is not
    reused unless ``force`` is given.
``DIR/cells/<key>.json``
    One record per finished cell (:mod:`fedopt.solvers.sweeps.runner`), written atomically the
    moment the cell finishes: a rerun skips every cell whose record is there (resume), and a
    sweep killed midway loses only the cells that were running.
``DIR/results.parquet``, ``DIR/results.csv``
    The table, one row per cell in cell order, written atomically at the end.

The table is always built from records that went through JSON (:func:`roundtrip`), so a
resumed sweep's table equals an uninterrupted one's.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedopt.errors import InvalidArgumentError
from fedopt.io import atomic_write_bytes, atomic_write_text, ensure_dir
from fedopt.solvers.sweeps.cells import Cell
from fedopt.solvers.sweeps.spec import SweepSpec

__all__ = ["SweepStore", "roundtrip", "build_table", "SPEC_FILE", "TABLE_FILES"]

SPEC_FILE = "sweep.json"
TABLE_FILES = ("results.parquet", "results.csv")
#: the last columns of every table
TAIL_COLUMNS = ("wall_time_s", "error", "cell")


def roundtrip(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as it reads back from its file (JSON: no NaN, tuples become lists)."""
    return json.loads(json.dumps(record, allow_nan=False))


class SweepStore:
    """The output folder of one sweep (module notes).

    Raises
    ------
    InvalidArgumentError
        ``out`` is not a writable folder, or holds another sweep and ``force`` is False.
    """

    def __init__(self, out: str | Path, spec: SweepSpec, cells: list[Cell], *,
                 force: bool = False):
        self.out = ensure_dir(out, "--out")
        self.cells_dir = self.out / "cells"
        header = {"fedopt_sweep": 1, "spec": spec.to_dict(), "cells": [c.key for c in cells]}
        path = self.out / SPEC_FILE
        if path.exists() and not force:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old != header:
                raise InvalidArgumentError(
                    f"--out: {str(self.out)!r} holds another sweep ({SPEC_FILE} differs from "
                    "this sweep file or this fedopt version); pass a new --out, or --force to "
                    "replace that sweep (finished cells with the same inputs are reused)")
        elif not path.exists() and not force:
            stale = [name for name in TABLE_FILES if (self.out / name).exists()]
            if stale:
                raise InvalidArgumentError(
                    f"--out: {str(self.out)!r} holds {', '.join(stale)} of no known sweep; "
                    "pass a new --out, or --force to overwrite")
        self.cells_dir.mkdir(exist_ok=True)
        atomic_write_text(path, json.dumps(header, indent=1) + "\n")

    def finished(self, cells: Iterable[Cell], *, retry_failed: bool = False
                 ) -> dict[str, dict[str, Any]]:
        """Records already on disk, by key (failed cells too, unless ``retry_failed``).

        A record that cannot be read, or that belongs to another cell, counts as not run.
        """
        done: dict[str, dict[str, Any]] = {}
        for cell in cells:
            path = self.cells_dir / f"{cell.key}.json"
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or record.get("key") != cell.key:
                continue
            if retry_failed and record.get("error"):
                continue
            record["index"] = cell.index  # the position in *this* sweep
            done[cell.key] = record
        return done

    def save(self, record: Mapping[str, Any]) -> None:
        """Write one finished cell's record atomically."""
        atomic_write_text(self.cells_dir / f"{record['key']}.json",
                          json.dumps(record, allow_nan=False) + "\n")

    def write_table(self, table: Any) -> dict[str, str]:
        """``results.parquet`` and ``results.csv``, each written atomically."""
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        parquet = atomic_write_bytes(self.out / TABLE_FILES[0], buf.getvalue())
        csv = atomic_write_text(self.out / TABLE_FILES[1], table.to_csv(index=False))
        return {"parquet": str(parquet), "csv": str(csv)}


def _grid_value(value: Any) -> Any:
    """A grid value as a table cell: scalars as they are, lists and mappings as JSON text."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def build_table(spec: SweepSpec, cells: list[Cell], records: Mapping[str, Mapping[str, Any]]):
    """The pandas table of ``cells`` (one row each, cell order) from their ``records`` (by key);
    a cell without a record is left out."""
    import pandas as pd

    paths = [p for p, _ in spec.grid]
    result_cols: dict[str, None] = {}
    rows = []
    for cell in cells:
        record = records.get(cell.key)
        if record is None:
            continue
        result = {k: v for k, v in (record.get("result") or {}).items()
                  if k not in (*TAIL_COLUMNS, "method", "seed", *paths)}
        result_cols.update(dict.fromkeys(result))
        row = {p: _grid_value(v) for p, v in cell.values}
        row.update(method=cell.method, seed=cell.seed, **result,
                   wall_time_s=record.get("wall_time_s"), error=record.get("error") or "",
                   cell=cell.key)
        rows.append(row)
    columns = [*paths, "method", "seed", *result_cols, *TAIL_COLUMNS]
    table = pd.DataFrame.from_records(rows, columns=columns)
    return table.convert_dtypes(dtype_backend="numpy_nullable")
