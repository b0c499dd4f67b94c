"""Solvers (spec 04): one registry, one entry point, one result type.

``solve(instance, method, *, rng=None, callback=None, **options)`` takes every method of
``fedopt solve --method`` (:mod:`fedopt.solvers.registry`) and returns a
:class:`~fedopt.solvers.result.SolveResult` whose ``solution`` is a typed plan::

    from fedopt import load_instance
    from fedopt.solvers import solve

    result = solve(load_instance("default"), "airfl-lora", seed=0)
    result.solution.save("plan.json")        # the AirCompPlan: rank, streams, beamformers

Rooms: :mod:`~fedopt.solvers.beamforming` (receive beamforming, spec 04 §1, baselines and bounds
of spec 02 §4–§5), :mod:`~fedopt.solvers.planner` (rank, streams, beamformers, spec 04 §2),
:mod:`~fedopt.solvers.bandwidth` and :mod:`~fedopt.solvers.tsfa` (digital uplinks, spec 04
§3–§5), :mod:`~fedopt.solvers.validation` (plans through the FL loop, calibration),
:mod:`~fedopt.solvers.sweeps` (grids of instances, methods and seeds on Dask: ``sweep``).
"""

from fedopt._lazy import lazy_attributes

__all__ = ["METHODS", "PLAN_METHODS", "SEARCHES", "SolveResult", "SolverRun", "Status",
           "evaluate", "load_sweep", "solve", "sweep"]

#: served lazily (PEP 562), so that importing a submodule such as ``fedopt.solvers.registry``
#: (the CLI's ``--method`` choices) does not import every solver
_LAZY = {"METHODS": "fedopt.solvers.registry", "solve": "fedopt.solvers.registry",
         "PLAN_METHODS": "fedopt.solvers.planner", "SEARCHES": "fedopt.solvers.planner",
         "evaluate": "fedopt.solvers.planner", "SolveResult": "fedopt.solvers.result",
         "SolverRun": "fedopt.solvers.result", "Status": "fedopt.solvers.result",
         "sweep": "fedopt.solvers.sweeps", "load_sweep": "fedopt.solvers.sweeps"}


__getattr__ = lazy_attributes(__name__, _LAZY)
