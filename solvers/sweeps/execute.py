"""Run a sweep's cells on Dask and collect the table.

``scheduler``:

- ``None`` (default): an embedded ``distributed.LocalCluster`` of ``workers`` single-threaded
  worker processes (default: the cores this process may use, at most one per cell to run);
- ``"tcp://host:8786"`` (any address ``distributed.Client`` takes): an existing cluster, the same
  command from a laptop to a cluster; its workers need fedopt installed;
- ``"synchronous"``: every cell in this process, one after the other (no Dask needed).

Each cell is a pure function of its inputs (:func:`~fedopt.solvers.sweeps.runner.run_cell`), so
the numbers do not depend on the scheduler or the worker count; only ``wall_time_s`` does.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fedopt.errors import InvalidArgumentError, MissingDependencyError
from fedopt.solvers.sweeps.cells import Cell, expand
from fedopt.solvers.sweeps.runner import error_record, run_cell
from fedopt.solvers.sweeps.spec import SweepSpec, load_sweep
from fedopt.solvers.sweeps.store import SweepStore, build_table, roundtrip

__all__ = ["sweep", "SYNCHRONOUS", "default_workers"]

SYNCHRONOUS = "synchronous"
#: how long to wait for an external scheduler
CONNECT_TIMEOUT_S = 20


def default_workers() -> int:
    """The cores this process may use (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"fedopt sweep needs {module.split('.')[0]}, which is not "
                                     'installed: pip install "fedopt[dask]"') from None


def _client(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """A ``distributed.Client`` and the cluster it owns (None for an external scheduler)."""
    import logging

    distributed = _need("distributed")
    if scheduler is not None:
        try:
            return distributed.Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except (OSError, ValueError, TimeoutError) as exc:
            raise InvalidArgumentError(
                f"--scheduler: cannot reach {scheduler!r} ({exc}); give the address of a "
                f"running Dask scheduler (tcp://host:8786), or {SYNCHRONOUS!r}") from None
    with _workers_ignore_sigint():
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR)
    return distributed.Client(cluster), cluster


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start the worker processes with SIGINT ignored (inherited across their exec): Ctrl-C
    reaches the whole foreground process group, and only this process should handle it (it
    closes the cluster, which stops the workers) instead of every worker printing a
    traceback."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_dask(cells: list[Cell], scheduler: str | None, workers: int) -> Iterator[dict]:
    """Records as the cells finish, on Dask (module notes)."""
    distributed = _need("distributed")
    client, cluster = _client(scheduler, workers)
    futures = {}
    try:
        for cell in cells:
            future = client.submit(run_cell, cell, key=f"fedopt-cell-{cell.key}", pure=False)
            futures[future] = cell
        for future in distributed.as_completed(futures):
            cell = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - a lost worker fails this cell only
                yield error_record(cell, f"the Dask worker failed: {type(exc).__name__}: {exc}")
    except (KeyboardInterrupt, GeneratorExit):
        silence_teardown_logs()  # the caller reports what was saved
        raise
    finally:
        for future in futures:
            future.cancel()
        client.close()
        if cluster is not None:
            cluster.close()


#: loggers whose errors during an interrupted run's teardown are noise (the event loop's
#: callbacks failing as the connections close: "Exception in callback ..." with a traceback)
TEARDOWN_LOGGERS = ("tornado", "asyncio", "distributed")


def silence_teardown_logs() -> None:
    """Mute :data:`TEARDOWN_LOGGERS` for the rest of the process: after Ctrl-C the cluster is
    closed while tasks and connections are still live, and the messages this makes on stderr
    say nothing the interruption notice does not (the process exits right after)."""
    import logging

    known = list(logging.Logger.manager.loggerDict)  # children may carry their own level
    for name in [*TEARDOWN_LOGGERS, *(n for n in known
                                      if n.split(".", 1)[0] in TEARDOWN_LOGGERS)]:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _records(cells: list[Cell], scheduler: str | None, workers: int) -> Iterator[dict]:
    if not cells:
        return iter(())
    if scheduler == SYNCHRONOUS:
        return (run_cell(cell) for cell in cells)
    return _run_dask(cells, scheduler, workers)


def _check(workers: Any, scheduler: Any) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InvalidArgumentError(f"--workers: got {workers!r}, expected an integer >= 1")
    if workers is not None and scheduler is not None:
        raise InvalidArgumentError("--workers and --scheduler: the worker count is that of the "
                                   "embedded cluster; an external scheduler has its own")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler):
        raise InvalidArgumentError(f"--scheduler: got {scheduler!r}, expected an address such "
                                   f"as tcp://host:8786 or {SYNCHRONOUS!r}")


def sweep(spec: SweepSpec | str | os.PathLike, out: str | os.PathLike | None = None, *,
          workers: int | None = None, scheduler: str | None = None, force: bool = False,
          retry_failed: bool = False,
          callback: Callable[[Mapping[str, Any]], Any] | None = None):
    """Run a sweep and return its table (a pandas DataFrame, one row per cell).

    Parameters
    ----------
    spec
        A :class:`~fedopt.solvers.sweeps.spec.SweepSpec` or the path of a sweep file.
    out
        Output folder (:mod:`fedopt.solvers.sweeps.store`): records per cell, so that a rerun
        resumes; ``results.parquet`` and ``results.csv``. None keeps everything in memory.
    workers, scheduler
        Where the cells run (module notes).
    force
        Reuse an ``out`` that holds another sweep.
    retry_failed
        Rerun the cells whose record holds an error (by default a rerun keeps them).
    callback
        ``callback({"done", "total", "label"})`` before the first cell and after each one.

    Returns
    -------
    pandas.DataFrame
        Columns: the grid's field paths, ``method``, ``seed``, the scalar keys of the cell's
        summary, ``wall_time_s``, ``error`` (empty unless the cell failed) and ``cell`` (its
        key). ``table.attrs["sweep"]`` says how the run went (cells, ran, resumed, failed,
        workers, scheduler, wall time, files).
    """
    start = time.perf_counter()
    _check(workers, scheduler)
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    _need("pandas")
    cells = expand(spec)  # every instance validated before anything runs
    store = SweepStore(out, spec, cells, force=force) if out is not None else None
    records = store.finished(cells, retry_failed=retry_failed) if store else {}
    resumed = len(records)
    todo = [c for c in cells if c.key not in records]
    n_workers = 0 if not todo else 1 if scheduler == SYNCHRONOUS else (
        workers or max(1, min(default_workers(), len(todo))))
    notify = callback or (lambda record: None)
    where = scheduler or f"{n_workers} local worker(s)"
    notify({"done": resumed, "total": len(cells),
            "label": f"{len(todo)} cell(s) to run on {where}"
                     + (f", {resumed} done before" if resumed else "")})
    failed = sum(1 for r in records.values() if r.get("error"))
    for record in _records(todo, scheduler, n_workers):
        record = roundtrip(record)
        if store is not None:
            store.save(record)
        records[record["key"]] = record
        failed += bool(record.get("error"))
        notify({"done": len(records), "total": len(cells),
                "label": f"cells ({failed} failed)" if failed else "cells"})
    table = build_table(spec, cells, records)
    files = store.write_table(table) if store is not None else {}
    table.attrs["sweep"] = {
        "cells": len(cells), "ran": len(todo), "resumed": resumed, "failed": failed,
        "workers": None if scheduler not in (None, SYNCHRONOUS) else n_workers,
        "scheduler": scheduler or "local", "wall_time_s": time.perf_counter() - start,
        "out": str(Path(out)) if out is not None else None, "files": files}
    return table
