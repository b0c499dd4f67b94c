"""The joint rank / streams / beamforming planner for AirFL-LoRA (spec 04 §2 on spec 03 §1).

- :mod:`~fedopt.solvers.planner.blocks`: one stream count's beamforming solution and its rank
  block (the best feasible rank for fixed L), energy and latency feasibility;
- :mod:`~fedopt.solvers.planner.search`: the searches over L (alternating, bnb, exhaustive);
- :mod:`~fedopt.solvers.planner.plan`: :func:`plan`, the driver;
- :mod:`~fedopt.solvers.planner.evaluate`: :func:`evaluate`, the gap of one configuration.

The methods (``airfl-lora`` and the baselines) are entries of :mod:`fedopt.solvers.registry`.
"""

from fedopt.solvers.planner.blocks import (
    RankBlock,
    StreamSolution,
    energy_per_device,
    rank_block,
    transmit_power_w,
)
from fedopt.solvers.planner.evaluate import Evaluation, beamformers_for, evaluate
from fedopt.solvers.planner.plan import plan
from fedopt.solvers.planner.search import SEARCHES, stream_rng
from fedopt.solvers.registry import names as _names

#: the planner methods (a view of the registry's ``planner`` family)
PLAN_METHODS: tuple[str, ...] = tuple(_names("planner"))

__all__ = ["PLAN_METHODS", "SEARCHES", "Evaluation", "RankBlock", "StreamSolution",
           "beamformers_for", "energy_per_device", "evaluate", "plan", "rank_block",
           "stream_rng", "transmit_power_w"]
