"""Sweeps (``fedopt sweep``): a grid of instances × methods × seeds, run on Dask, one table.

::

    from fedopt.solvers import sweep

    table = sweep("sweep.yaml", out="sweep-out")      # a pandas DataFrame, one row per cell

Rooms: :mod:`~fedopt.solvers.sweeps.spec` (the sweep file), :mod:`~fedopt.solvers.sweeps.cells`
(grid × methods × seeds, instances validated, cell keys), :mod:`~fedopt.solvers.sweeps.runner`
(one cell), :mod:`~fedopt.solvers.sweeps.execute` (Dask, resume) and
:mod:`~fedopt.solvers.sweeps.store` (the output folder and the table).
"""

from fedopt.solvers.sweeps.cells import Cell, expand
from fedopt.solvers.sweeps.execute import SYNCHRONOUS, sweep
from fedopt.solvers.sweeps.spec import SweepSpec, ValidateOptions, load_sweep

__all__ = ["Cell", "SYNCHRONOUS", "SweepSpec", "ValidateOptions", "expand", "load_sweep",
           "sweep"]
