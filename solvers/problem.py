"""Import path kept for existing callers: the beamforming problem lives in
:mod:`fedopt.solvers.beamforming.problem`."""

from fedopt.solvers.beamforming.problem import BeamformingProblem

__all__ = ["BeamformingProblem"]
