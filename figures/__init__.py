"""Reproducible figures: one module per figure, ``compute`` → JSON data → ``plot`` → PNG.

Every figure module exposes

- ``NAME`` and ``TITLE`` (str);
- ``compute(*, quick=False, seed=0, progress=None) -> dict``: JSON-safe data (lists, floats,
  str), deterministic for a seed; ``progress({"done", "total"})`` is an optional hook;
- ``plot(data, path) -> Path``: a PNG drawn with matplotlib's Agg canvas (no window, no pyplot
  global state), written atomically.

:func:`run_figure` computes, saves ``<out>/<name>.json`` (data plus provenance, see
:func:`figures._common.save_data`) and plots ``<out>/<name>.png``. Modules are imported lazily
(:data:`FIGURES` maps names to module paths), so listing the figures costs nothing and a figure
whose module is not written yet is reported as unavailable instead of breaking the others.

This package may import :mod:`solvers`, :mod:`gap_models` and :mod:`fedopt`, never the reverse
(tests/test_layout.py).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from fedopt.errors import InvalidArgumentError

__all__ = ["FIGURES", "FigureUnavailableError", "get_figure", "run_figure", "check_out_dir"]

#: figure name → module path (imported on demand by :func:`get_figure`)
FIGURES: dict[str, str] = {
    "mse_vs_nr": "fedopt.figures.mse_vs_nr",
    "mse_vs_power": "fedopt.figures.mse_vs_power",
    "gap_vs_rank": "fedopt.figures.gap_vs_rank",
    "training_loss": "fedopt.figures.training_loss",
    "perplexity_vs_snr": "fedopt.figures.perplexity_vs_snr",
    "predicted_vs_measured": "fedopt.figures.predicted_vs_measured",
}


class FigureUnavailableError(InvalidArgumentError):
    """A registered figure whose module cannot be imported because it does not exist yet."""


def get_figure(name: str) -> ModuleType:
    """The module of figure ``name``, imported on first use.

    Raises
    ------
    InvalidArgumentError
        If ``name`` is not registered (the message lists the valid names).
    FigureUnavailableError
        If ``name`` is registered but its module does not exist (yet). Any other import error
        of an existing module propagates unchanged: it is a bug, not a missing figure.
    """
    if name not in FIGURES:
        raise InvalidArgumentError(
            f"figure: got {name!r}, valid names are {', '.join(FIGURES)} (or 'all')")
    module_path = FIGURES[name]
    try:
        return importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        if exc.name != module_path:
            raise
        raise FigureUnavailableError(
            f"figure {name!r} is registered but its module {module_path} is not available yet"
        ) from None


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that it is a writable directory
    (:func:`fedopt.io.ensure_dir`; errors name ``--out`` and the path)."""
    from fedopt.io import ensure_dir

    return ensure_dir(out_dir, "--out")


def finished(name: str, out_dir: str | os.PathLike, *, quick: bool, seed: int) -> bool:
    """Whether ``out_dir`` holds figure ``name`` made with these settings by this fedopt: its
    data file (written last, atomically) names the figure, the settings and the version, and
    its PNG is there."""
    import json
    from importlib.metadata import version

    out = Path(out_dir)
    try:
        doc = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        return (isinstance(doc, dict) and doc.get("figure") == name
                and doc.get("settings") == {"quick": bool(quick), "seed": int(seed)}
                and doc.get("provenance", {}).get("fedopt_version") == version("fedopt")
                and (out / f"{name}.png").is_file())
    except (OSError, ValueError, AttributeError):
        return False


def run_figure(name: str, out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Compute figure ``name``, save ``<out>/<name>.json`` and plot ``<out>/<name>.png``.

    The output directory is checked (and created) before the computation starts; the data are
    serialized (and checked JSON-safe) before anything is written, and both files are written
    atomically, so a failure leaves no half-written file behind.

    Parameters
    ----------
    name
        A key of :data:`FIGURES`.
    out_dir
        Output directory (created if missing).
    quick
        Small, fast variant (seconds); used by the tests.
    seed
        Seed of every random draw of the figure.
    progress
        Optional ``progress({"done", "total"})`` hook.

    Returns
    -------
    dict
        ``{"name", "json", "png", "wall_s"}`` (paths as strings).
    """
    from fedopt.figures._common import dump_data
    from fedopt.io import atomic_write_text

    module = get_figure(name)
    out = check_out_dir(out_dir)
    t0 = time.perf_counter()
    data = module.compute(quick=quick, seed=seed, progress=progress)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    text = dump_data(data, figure=module.NAME,  # fails here, before any write, if not JSON-safe
                     settings={"quick": bool(quick), "seed": int(seed)})
    module.plot(data, png_path)
    atomic_write_text(json_path, text)
    return {"name": name, "json": str(json_path), "png": str(png_path),
            "wall_s": time.perf_counter() - t0}
