"""A figure from a sweep's table (``fedopt figures sweep --table results.parquet --x COL --y
COL``): one line per ``hue`` value (default ``method``) and per combination of the grid's other
field paths, the median over seeds (and over any column not named) with its min–max band.

Failed cells (a non-empty ``error``) and rows where ``y`` is missing are left out and counted in
the data. The data written next to the PNG (``sweep_<y>_vs_<x>.json``) hold every plotted
point, so the figure can be checked against the table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from fedopt.errors import InvalidArgumentError

__all__ = ["NAME", "TITLE", "read_table", "compute", "plot", "make"]

NAME = "sweep"
TITLE = "a sweep's table"


def read_table(path: str | os.PathLike):
    """The table of ``fedopt sweep`` (``.parquet`` or ``.csv``)."""
    try:
        import pandas as pd
    except ImportError:
        from fedopt.errors import MissingDependencyError

        raise MissingDependencyError('the sweep figure needs pandas: pip install '
                                     '"fedopt[dask]"') from None
    path = Path(path)
    if not path.is_file():
        raise InvalidArgumentError(f"--table: no such file {str(path)!r}; pass the "
                                   "results.parquet or results.csv of a sweep")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InvalidArgumentError(f"--table: cannot read {str(path)!r} as a sweep table "
                                   f"({type(exc).__name__}: {exc})") from None


def _column(table: Any, name: str, option: str) -> None:
    if name not in table.columns:
        raise InvalidArgumentError(f"{option}: {name!r} is not a column of the table; columns: "
                                   f"{', '.join(map(str, table.columns))}")


def compute(table: Any, x: str, y: str, hue: str = "method") -> dict[str, Any]:
    """The plotted data: ``series`` (label, x, median, min, max, n per point) and counts."""
    import pandas as pd

    for name, option in ((x, "--x"), (y, "--y"), (hue, "--hue")):
        _column(table, name, option)
    if not pd.api.types.is_numeric_dtype(table[y]):
        raise InvalidArgumentError(f"--y: column {y!r} is not numeric; pick a number column "
                                   "such as gap, airtime_s, latency_s, rank")
    ok = table["error"].fillna("") == "" if "error" in table.columns else True
    rows = table[ok & table[y].notna()]
    others = [c for c in table.columns if "." in c and c not in (x, hue)]
    keys = [hue, *others]
    series = []
    for label, group in rows.groupby(keys, sort=True, dropna=False):
        label = label if isinstance(label, tuple) else (label,)
        stats = group.groupby(x, sort=True)[y].agg(["median", "min", "max", "count"])
        name = ", ".join([str(label[0])] + [f"{k}={v}" for k, v in zip(others, label[1:],
                                                                        strict=True)])
        series.append({"label": name, "x": [_plain(v) for v in stats.index],
                       "median": stats["median"].astype(float).tolist(),
                       "min": stats["min"].astype(float).tolist(),
                       "max": stats["max"].astype(float).tolist(),
                       "n": stats["count"].astype(int).tolist()})
    return {"x": x, "y": y, "hue": hue, "series": series, "rows": int(len(table)),
            "left_out": int(len(table) - len(rows))}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def plot(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Lines of the medians with their min–max bands (a categorical x when not numeric)."""
    from fedopt.figures._common import figure_canvas, save_png

    with figure_canvas() as (fig, (ax,)):
        categories: list[Any] = []
        for s in data["series"]:
            xs = s["x"]
            if not all(isinstance(v, (int, float)) for v in xs):
                categories += [v for v in xs if v not in categories]
                xs = [categories.index(v) for v in xs]
            ax.plot(xs, s["median"], marker="o", label=s["label"])
            ax.fill_between(xs, s["min"], s["max"], alpha=0.15)
        if categories:
            ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlabel(data["x"])
        ax.set_ylabel(f"{data['y']} (median, min–max)")
        if data["series"]:
            ax.legend(fontsize="small")
        ax.set_title(f"{data['y']} vs {data['x']} ({data['rows'] - data['left_out']} of "
                     f"{data['rows']} cells)")
        return save_png(fig, path)


def make(table_path: str | os.PathLike, out_dir: str | os.PathLike, *, x: str, y: str,
         hue: str = "method") -> dict[str, Any]:
    """Read the table, compute, and write ``<out>/sweep_<y>_vs_<x>.png`` and its ``.json``."""
    from fedopt.figures import check_out_dir
    from fedopt.figures._common import dump_data
    from fedopt.io import atomic_write_text

    start = time.perf_counter()
    table = read_table(table_path)
    data = compute(table, x, y, hue)
    out = check_out_dir(out_dir)
    stem = f"sweep_{_safe(y)}_vs_{_safe(x)}"
    data["table"] = str(table_path)
    text = dump_data(data, figure=NAME)
    png = plot(data, out / f"{stem}.png")
    atomic_write_text(out / f"{stem}.json", text)
    return {"name": NAME, "json": str(out / f"{stem}.json"), "png": str(png),
            "wall_s": time.perf_counter() - start}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
