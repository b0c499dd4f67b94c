"""Import path kept for existing callers: the lower bounds on the beamforming optimum live in
:mod:`fedopt.solvers.beamforming.bounds`."""

from fedopt.solvers.beamforming.bounds import (
    best_bound,
    single_device_bound,
    single_device_values,
    top_eigenvalues,
    trivial_bound_l1,
)

__all__ = ["top_eigenvalues", "single_device_values", "single_device_bound", "trivial_bound_l1",
           "best_bound"]
