"""``fedopt figures``: compute and plot the reproducible figures (data JSON + PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedopt.cli._common import OutputFormat, err, interrupted, print_json, progress, user_errors


def _registry():
    """The :mod:`figures` package, imported when the command runs (so that ``fedopt --help``
    does not load the figure registry); cli → figures is the one allowed arrow into it."""
    from fedopt.errors import FedOptError

    try:
        from fedopt import figures
    except ModuleNotFoundError as exc:
        if exc.name != "fedopt.figures":
            raise
        raise FedOptError("the figures package is not installed with this fedopt; reinstall "
                          "it from the repository (pip install -e .)") from None
    return figures


def figures(
    name: Annotated[str, typer.Argument(
        help="Figure to make: mse_vs_nr, mse_vs_power, gap_vs_rank, training_loss, "
        "perplexity_vs_snr, predicted_vs_measured, 'all', or 'sweep' (from a sweep's table: "
        "--table, --x, --y).", metavar="NAME",
        show_default=False)],
    quick: Annotated[bool, typer.Option(
        "--quick", help="Small, fast variant (seconds per figure) instead of the full one.")]
    = False,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output directory (created if missing) for NAME.json and NAME.png.")]
    = Path("figures-out"),
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of every random draw.")] = 0,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
    = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Keep the figures --out already holds with these settings (--quick, "
        "--seed) from this fedopt, and make only the others.")] = False,
    table: Annotated[Path | None, typer.Option(
        "--table", help="sweep: the results.parquet (or .csv) of `fedopt sweep`.")] = None,
    x: Annotated[str | None, typer.Option(
        "--x", help="sweep: the column on the x axis (a grid field path such as "
        "devices.count).")] = None,
    y: Annotated[str | None, typer.Option(
        "--y", help="sweep: the column plotted (airtime_s, gap, rank, ...).")] = None,
    hue: Annotated[str, typer.Option(
        "--hue", help="sweep: one line per value of this column.")] = "method",
) -> None:
    """Compute figures and write their data (JSON with provenance) and plots (PNG).

    With 'all', figures whose module is not written yet are skipped with a message.
    """
    if name == "sweep":
        _sweep_figure(table, x, y, hue, out, fmt)
        return
    with user_errors():
        registry = _registry()
        names = list(registry.FIGURES) if name == "all" else [name]
        if name != "all":
            registry.get_figure(name)  # unknown or unavailable: fail before touching --out
        registry.check_out_dir(out)
        done: dict[str, dict] = {}
        skipped: dict[str, str] = {}
        show = not quiet and fmt is OutputFormat.text
        try:
            for fig_name in names:
                if resume and registry.finished(fig_name, out, quick=quick, seed=seed):
                    done[fig_name] = {"json": str(out / f"{fig_name}.json"),
                                      "png": str(out / f"{fig_name}.png"), "kept": True}
                    if fmt is OutputFormat.text:
                        typer.echo(f"{fig_name:<18} kept (--resume)  png {done[fig_name]['png']}")
                    continue
                result = _one_figure(registry, fig_name, out, quick, seed, show, fmt, skipped)
                if result is not None:
                    done[fig_name] = result
        except KeyboardInterrupt:
            mine = [n for n in done if n in names]
            interrupted(f"{len(mine)} of {len(names)} figures are written in {out}/"
                        + (f" ({', '.join(mine)})" if mine else ""), add=("--resume",))
        if fmt is OutputFormat.json:
            print_json({"figures": done, "skipped": skipped})


def _one_figure(registry: Any, fig_name: str, out: Path, quick: bool, seed: int, show: bool,
                fmt: OutputFormat, skipped: dict[str, str]) -> dict | None:
    """Make one figure with its progress display (None: its module is unavailable)."""
    mode = "quick" if quick else "full"
    with progress(f"{fig_name} ({mode})", show) as update:
        update({"label": "loading"})  # from second 0: importing a figure takes seconds
        try:
            registry.get_figure(fig_name)
        except registry.FigureUnavailableError as exc:
            skipped[fig_name] = str(exc)
            if fmt is OutputFormat.text:
                err(f"skipped {fig_name}: {exc}")
            return None
        result = registry.run_figure(fig_name, out, quick=quick, seed=seed, progress=update)
    if fmt is OutputFormat.text:
        typer.echo(f"{fig_name:<18} {result['wall_s']:7.1f} s  png {result['png']}  "
                   f"json {result['json']}")
    return {"json": result["json"], "png": result["png"], "wall_s": result["wall_s"]}


def _sweep_figure(table: Path | None, x: str | None, y: str | None, hue: str, out: Path,
                  fmt: OutputFormat) -> None:
    """``fedopt figures sweep``: a figure from a sweep's table."""
    missing = [opt for opt, v in (("--table", table), ("--x", x), ("--y", y)) if v is None]
    if missing:
        err(f"error: figures sweep needs {', '.join(missing)} (e.g. --table "
            "sweep-out/results.parquet --x devices.count --y airtime_s)")
        raise typer.Exit(code=2)
    with user_errors():
        _registry()
        from fedopt.figures.sweep import make

        result = make(table, out, x=x, y=y, hue=hue)
    if fmt is OutputFormat.json:
        print_json({"figures": {"sweep": result}, "skipped": {}})
    else:
        typer.echo(f"sweep {result['wall_s']:7.1f} s  png {result['png']}  json {result['json']}")
