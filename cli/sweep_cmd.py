"""``fedopt sweep``: run a grid of instances × methods × seeds on Dask and write one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedopt.cli._common import (
    FormatOpt,
    OutputFormat,
    QuietOpt,
    err,
    print_json,
    progress,
    user_errors,
)

#: columns of the text preview, besides the grid's field paths (when the table has them)
_PREVIEW = ("method", "seed", "rank", "streams", "gap", "airtime_s", "latency_s",
            "final_eval_loss", "retained_gain", "error")
#: the text preview is cut to this width (a terminal's 100 columns)
_WIDTH = 100


def _cell(value: Any) -> str:
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def preview(table: Any, limit: int = 20) -> str:
    """The first ``limit`` rows of the table's main columns, at most 100 characters wide."""
    cols = [c for c in table.columns if "." in c] + [c for c in _PREVIEW if c in table.columns]
    rows = [[_cell(v) for v in row] for row in table[cols].head(limit).itertuples(index=False)]
    widths = [min(24, max(len(c), *(len(r[i]) for r in rows))) if rows else len(c)
              for i, c in enumerate(cols)]
    lines = ["  ".join(c[:w].ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v[:w].ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    out = [line[:_WIDTH].rstrip() for line in lines]
    if len(table) > limit:
        out.append(f"... {len(table) - limit} more row(s) in the table files")
    return "\n".join(out)


def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep file (.yaml or .json): instance, grid, "
                                        "methods, seeds, kind.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: results.parquet, "
                                      "results.csv, one record per finished cell (a rerun "
                                      "resumes).")] = Path("sweep-out"),
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", min=1, help="Worker processes of the embedded Dask cluster "
        "(default: one per core).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Address of a running Dask scheduler (tcp://host:8786) instead of "
        "the embedded cluster, or 'synchronous' to run the cells in this process.")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Rerun the cells that failed before (by default a rerun keeps "
        "their errors).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Reuse an --out that holds another sweep.")] = False,
    fmt: FormatOpt = OutputFormat.text,
    quiet: QuietOpt = False,
) -> None:
    """Run every cell of a sweep (grid point × method × seed) on Dask and write the table.

    Each cell is one `fedopt solve` (kind: solve) or one validation run (kind: validate); its
    row holds the grid values, method, seed, the scalar results, wall_time_s and error. Every
    cell's instance is validated before anything runs; a failing cell records its error and the
    others go on; a rerun skips the finished cells.
    """
    with user_errors():
        from fedopt.solvers.sweeps import sweep as run

        show = not quiet and fmt is OutputFormat.text
        try:
            with progress(f"sweep {spec.name}", show) as tick:
                tick({"label": "checking the sweep and its instances"})
                table = run(spec, out, workers=workers, scheduler=scheduler, force=force,
                            retry_failed=retry_failed, callback=tick)
        except KeyboardInterrupt:
            saved = len(list((out / "cells").glob("*.json"))) if (out / "cells").is_dir() else 0
            err(f"interrupted: {saved} finished cell(s) are saved in {out / 'cells'}; resume "
                f"with: fedopt sweep {spec} --out {out}")
            raise typer.Exit(code=130) from None
        info = table.attrs["sweep"]
        if fmt is OutputFormat.json:
            print_json(info)
        else:
            typer.echo(preview(table))
            where = {"local": f"{info['workers']} local worker(s)",
                     "synchronous": "this process"}.get(info["scheduler"], info["scheduler"])
            typer.echo(
                f"\n{info['cells']} cells: {info['ran']} ran, {info['resumed']} resumed, "
                f"{info['failed']} failed; {info['wall_time_s']:.1f} s on {where}\n"
                f"table: {info['files']['parquet']}\n       {info['files']['csv']}")
        if info["failed"]:
            err(f"warning: {info['failed']} cell(s) failed; their error is in the table's "
                "error column")
