"""TSFA: two-stage rank / sparsity / bandwidth control on the digital uplink (spec 04 §5).

**Offline stage** (:func:`select_rank`, :mod:`.offline`): the rank whose Monte-Carlo estimate of
the expected min-max round latency meets the average budget T̄ and whose SOFT/TSFA bound is
smallest (status ``ESTIMATED``).

**Online stage** (:class:`TSFAController`, :mod:`.controller`): per round, each device's kept
components and the bands, by drift-plus-penalty on a virtual queue of the latency spent above T̄;
the round problem is solved by :class:`~.round_solver.RoundSolver` (deadline form, LP
relaxation of a knapsack, search over the deadline, branch and bound; the deadline grid and the
LP: :mod:`.grid`). Each :class:`RoundDecision` carries its status (``OPTIMAL`` when certified).

**Simulation** (:func:`simulate`, :mod:`.simulation`) runs the controller over i.i.d.
block-fading rounds and returns a :class:`SimulationReport`; :func:`plan_tsfa`
(:mod:`.planning`) is the plan of ``fedopt solve --method tsfa``.
"""

from fedopt.solvers.tsfa.controller import EXACT_MAX_DEVICES, RoundDecision, TSFAController
from fedopt.solvers.tsfa.offline import RankSelection, select_rank
from fedopt.solvers.tsfa.planning import plan_tsfa
from fedopt.solvers.tsfa.round_solver import HEURISTIC_RTOL
from fedopt.solvers.tsfa.simulation import SimulationReport, simulate

__all__ = ["EXACT_MAX_DEVICES", "HEURISTIC_RTOL", "RankSelection", "RoundDecision",
           "SimulationReport", "TSFAController", "select_rank", "simulate", "plan_tsfa"]
