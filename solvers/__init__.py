"""Solvers: receive beamforming (spec 04 §1), baselines and bounds (spec 02 §4–§5), and the
rank / streams / beamforming planner (spec 04 §2).

The planner API in one call::

    from fedopt import load_instance
    from fedopt.solvers import solve

    result = solve(load_instance("default"), "airfl-lora", seed=0)
    result.solution.save("plan.json")        # the Plan: rank, streams, beamformers
"""

from fedopt.solvers.planner import PLAN_METHODS, SEARCHES, evaluate
from fedopt.solvers.planner import plan as solve
from fedopt.solvers.result import SolveResult, Status

__all__ = ["PLAN_METHODS", "SEARCHES", "SolveResult", "Status", "evaluate", "solve"]
