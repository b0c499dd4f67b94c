"""Helpers shared by the figure modules: provenance, the JSON data file, PNG output, seeds.

The data file of a figure is one JSON object::

    {"figure": NAME, "provenance": {...}, "data": {...}}

written atomically (:func:`fedopt.io.atomic_write_text`); ``data`` is what the figure's
``compute`` returned and all its ``plot`` needs, so a figure can be redrawn from the file alone
(``plot(load_data(path), png)``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["REPO_DIR", "Progress", "provenance", "dump_data", "save_data", "load_data", "unwrap",
           "figure_canvas", "plain_log_ticks", "save_png", "spawn_rng", "subcarrier_subset",
           "tick"]

#: the repository root (the parent of this package); ``git rev-parse`` runs here
REPO_DIR = Path(__file__).resolve().parents[1]

#: the progress hook of ``compute``: fedopt's one callback shape, called with
#: ``{"done": steps_done, "total": steps}`` (:data:`fedopt.solvers.result.Callback`)
Progress = Callable[[Mapping[str, Any]], "bool | None"]


def _version(dist: str) -> str | None:
    """Installed version of a distribution without importing it (torch takes seconds);
    None if it is not installed or its metadata cannot be read."""
    from importlib import metadata

    module = sys.modules.get(dist)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        return metadata.version(dist)
    except Exception:  # provenance must never fail a figure
        return None


def _git_hash() -> str | None:
    """``git rev-parse HEAD`` of fedopt's own source checkout, or None: no git, a timeout, or
    an installed fedopt (its folder is not the top of a fedopt checkout, even when the
    virtualenv it sits in lies inside some other repository)."""
    pyproject = REPO_DIR / "pyproject.toml"
    try:
        if 'name = "fedopt"' not in pyproject.read_text(encoding="utf-8"):
            return None
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=REPO_DIR,
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, UnicodeDecodeError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != REPO_DIR.resolve():
        return None
    return lines[1]


def provenance() -> dict[str, Any]:
    """Where and with what a figure's data were computed.

    Returns
    -------
    dict
        ``fedopt_version``, ``numpy``, ``scipy``, ``torch``, ``cvxpy``, ``matplotlib``
        (installed versions; None when not installed — read from package metadata, or from the
        module when it is already imported, so that recording torch's version does not cost a
        torch import), ``python``, ``git_hash`` (None outside a git checkout) and
        ``created_utc`` (ISO 8601, seconds).
    """
    return {
        "fedopt_version": _version("fedopt"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "torch": _version("torch"),
        "cvxpy": _version("cvxpy"),
        "matplotlib": _version("matplotlib"),
        "python": platform.python_version(),
        "git_hash": _git_hash(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def dump_data(data: dict[str, Any], *, figure: str,
              settings: dict[str, Any] | None = None) -> str:
    """The text of a figure's data file (raises ValueError if ``data`` is not JSON-safe:
    NaN and infinities are refused, as strict JSON readers would); ``settings`` (quick, seed)
    are recorded so that ``fedopt figures all --resume`` can tell a finished figure."""
    doc = {"figure": figure, "provenance": provenance(),
           **({} if settings is None else {"settings": settings}), "data": data}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def save_data(data: dict[str, Any], path: str | os.PathLike, *, figure: str | None = None
              ) -> Path:
    """Write ``{"figure", "provenance", "data"}`` to ``path`` atomically.

    Parameters
    ----------
    data
        What the figure's ``compute`` returned (JSON-safe).
    path
        Target ``.json`` file; its directory must exist.
    figure
        Figure name; default ``data["name"]``.
    """
    from fedopt.io import atomic_write_text

    name = figure if figure is not None else str(data.get("name", "unnamed"))
    return atomic_write_text(path, dump_data(data, figure=name))


def load_data(path: str | os.PathLike) -> dict[str, Any]:
    """Read a figure data file written by :func:`save_data`.

    Returns
    -------
    dict
        The whole document, ``{"figure", "provenance", "data"}``.

    Raises
    ------
    InvalidArgumentError
        Naming the path, if it cannot be read or is not a figure data file.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgumentError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})"
                                   ) from None
    if not isinstance(doc, dict) or not {"figure", "provenance", "data"} <= set(doc):
        raise InvalidArgumentError(
            f"{path}: not a figure data file (expected the keys figure, provenance, data)")
    return doc


def unwrap(data: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` part of either a loaded data file or a ``compute`` result."""
    if {"figure", "provenance", "data"} <= set(data):
        return data["data"]
    return data


#: house style of the figures: readable at the size they are shown (≈ 12 cm wide)
RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.titlesize": 13,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.8,
    "lines.markersize": 6,
}


@contextmanager
def figure_canvas(ncols: int = 1, *, width: float = 6.4, height: float = 4.6
                  ) -> Iterator[tuple[Any, list[Any]]]:
    """A matplotlib Figure on the Agg canvas with ``ncols`` axes (no pyplot, no window, no
    global backend switch), in the house style. Yields ``(fig, axes)``."""
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with mpl.rc_context(RC):
        fig = Figure(figsize=(width * ncols if ncols > 1 else width, height),
                     layout="constrained")
        FigureCanvasAgg(fig)
        axes = list(np.atleast_1d(fig.subplots(1, ncols)))
        yield fig, axes


def plain_log_ticks(axis: Any) -> None:
    """Label a log-scaled axis with plain numbers at 1, 2, 5 × 10^k (``axis``: ax.xaxis or
    ax.yaxis), for ratios and counts where 10^k notation would be harder to read."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def save_png(fig: Any, path: str | os.PathLike, *, dpi: int = 130) -> Path:
    """Render ``fig`` to PNG in memory and write it atomically to ``path``."""
    import io

    from fedopt.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def spawn_rng(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for (seed, *key): same inputs, same stream, whatever the
    order in which a figure visits its points."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(key)))


def subcarrier_subset(n_subcarriers: int, count: int) -> np.ndarray:
    """``count`` subcarrier indices spread evenly over 0..M−1 (deterministic).

    The figures keep the instance's M (so the per-subcarrier power P_k / M and the noise are
    those of the instance) and solve only these subcarriers; their mean MSE estimates the mean
    over all M.
    """
    count = min(int(count), int(n_subcarriers))
    return np.unique(np.linspace(0, n_subcarriers - 1, count).round().astype(int))


def tick(progress: Progress | None, done: int, total: int) -> None:
    """Call the progress hook, if there is one, with ``{"done", "total"}``."""
    if progress is not None:
        progress({"done": done, "total": total})


def quick_note(data: dict[str, Any], what: str) -> str:
    """The title line a quick-mode figure carries (empty in full mode): what was cut, and that
    differences within the sampling error of so few runs are not findings."""
    if not data.get("quick"):
        return ""
    return (f"QUICK MODE ({what}): a smoke run, not a result; differences this small are "
            "within its sampling error\n")
