"""Shared helpers of the CLI: error reporting without tracebacks, output formats."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from enum import Enum
from typing import Any

import typer

__all__ = ["OutputFormat", "user_errors", "print_json", "err"]


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


def _default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (numpy scalars and arrays allowed)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")
