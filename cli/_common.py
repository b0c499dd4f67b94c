"""Shared helpers of the CLI: error reporting without tracebacks, output formats."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ChannelOpt", "ForceOpt", "FormatOpt", "InstanceArg", "OutputFormat", "QuietOpt",
           "RoundOpt", "SeedOpt", "check_output", "err", "interrupted", "load_channel",
           "print_json", "progress", "user_errors"]


class OutputFormat(str, Enum):
    """How a command prints its result."""

    text = "text"
    json = "json"


def err(message: str) -> None:
    """Print a message on stderr."""
    typer.echo(message, err=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn fedopt's own errors (bad input, infeasibility) into a message and exit code 2."""
    from fedopt.errors import FedOptError

    try:
        yield
    except FedOptError as exc:
        err(f"error: {exc}")
        raise typer.Exit(code=2) from None


def interrupted(saved: str, *, add: tuple[str, ...] = (), drop: tuple[str, ...] = (),
                verb: str = "resume") -> None:
    """Ctrl-C: one line saying what was ``saved`` and the exact command that continues (this
    command's own arguments, less ``drop``, plus ``add`` where missing), then exit 130."""
    import shlex

    args = [a for a in sys.argv[1:] if a not in drop]
    args += [a for a in add if a not in args]
    err(f"interrupted: {saved}; {verb} with: fedopt {shlex.join(args)}")
    raise typer.Exit(code=130)


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±Infinity, not JSON) as None (null)."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (numpy scalars and arrays allowed). The output
    is strict JSON: a non-finite number is written as null, never as NaN or Infinity."""
    plain = json.loads(json.dumps(data, default=_default))  # numpy → Python (NaN kept)
    sys.stdout.write(json.dumps(_finite(plain), indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------------------------
# options that several commands share (one definition each)

#: an instance argument: a file or a preset name
InstanceArg = Annotated[str, typer.Argument(help="Instance file (.yaml/.json) or preset name.")]
#: the channel draw
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Channel seed (and solver seed).")]
RoundOpt = Annotated[int, typer.Option("--round", min=0, help="Block-fading round drawn.")]
ChannelOpt = Annotated[Path | None, typer.Option(
    "--channel", help="Use this channel .npz instead of drawing one.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="Output format.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
#: overwrite an existing output file
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]


def check_output(path: Path | None, force: bool, option: str = "-o/--output") -> None:
    """Before any work: an output file that exists is kept unless ``--force``; a directory or a
    missing or unwritable folder is named (no silent overwrite, no traceback after the work)."""
    import os

    from fedopt.errors import InvalidArgumentError

    if path is None:
        return
    if path.is_dir():
        raise InvalidArgumentError(f"{option}: {str(path)!r} is a directory; give a file path")
    if path.exists() and not force:
        raise InvalidArgumentError(f"{option}: {str(path)!r} exists; pass --force to "
                                   "overwrite it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(f"{option}: the folder {str(parent)!r} does not exist; "
                                   "create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"{option}: the folder {str(parent)!r} is not writable")


def load_channel(path: Path | None, instance: Any) -> Any:
    """The channel of ``--channel`` (checked against the instance), or None to draw one."""
    if path is None:
        return None
    from fedopt.channel import Channel

    return Channel.load(path, instance=instance)


def _describe(record: Mapping[str, Any]) -> str:
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
             for k, v in record.items() if k in ("streams", "rank", "gap", "round")]
    return ", ".join(shown)


@contextlib.contextmanager
def progress(label: str, enabled: bool = True) -> Iterator[Callable[[Mapping[str, Any]], None]]:
    """A transient progress display on stderr (only on a terminal); yields the one callback
    shape of fedopt, ``callback(record)``: a record with ``done`` and ``total`` moves a bar, any
    other record updates a spinner's text (streams, rank, gap, ...); ``label`` in a record
    replaces the description."""
    if not enabled:
        yield lambda record: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(record: Mapping[str, Any]) -> None:
            text = record.get("label") or _describe(record)
            description = f"{label}: {text}" if text else label
            if "done" in record and "total" in record:
                bar.update(task, completed=record["done"], total=record["total"],
                           description=description)
            else:
                bar.update(task, description=description)

        yield update
