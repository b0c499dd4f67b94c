"""Receive beamforming: one entry point for the manifold solver and the baselines.

``solve_beamforming(problem, method)`` returns a :class:`~solvers.result.SolveResult` whose
``solution`` holds unit-norm receive beamformers (M, N_r, L), ``objective_per_subcarrier`` the
MSE_m = f(A_m) at full power (spec 02 §2) and ``bound_per_subcarrier`` the best lower bound
(spec 02 §5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fedopt.channel import Channel, draw_channel
from fedopt.instance import Instance
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult

__all__ = ["BEAMFORMING_METHODS", "solve_beamforming", "beamforming_problem"]

#: Method names accepted by :func:`solve_beamforming` (and ``fedopt solve --method``).
BEAMFORMING_METHODS = ("beamforming", "centroid", "sdr", "random", "mrc", "eigen")


def beamforming_problem(instance: Instance, streams: int, *, channel: Channel | None = None,
                        seed: int = 0, round: int = 0) -> BeamformingProblem:
    """The beamforming problem of an instance for a given (or freshly drawn) channel."""
    channel = channel if channel is not None else draw_channel(instance, seed=seed, round=round)
    return BeamformingProblem.from_instance(instance, channel, streams)


def solve_beamforming(
    problem: BeamformingProblem,
    method: str = "beamforming",
    *,
    init: np.ndarray | list[np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
    callback: Callable[[dict], bool | None] | None = None,
    **options: Any,
) -> SolveResult:
    """Solve the receive-beamforming problem of every subcarrier with ``method``.

    Parameters
    ----------
    problem
        See :class:`~solvers.problem.BeamformingProblem`.
    method
        ``"beamforming"`` (manifold optimization, spec 04 §1, started from the centroid, the
        MRC toward the weakest device, any ``init`` and random points) or a baseline:
        ``"centroid"``, ``"sdr"`` (L = 1), ``"random"``, ``"mrc"``, ``"eigen"`` (spec 02 §4).
    init
        Warm start(s) for the manifold solver, each (M, N_r, L).
    rng
        Generator or seed (random starts, randomization); same seed, same result.
    callback
        Manifold solver only: called after each continuation stage; return True to stop.
    **options
        Manifold: fields of :class:`~solvers.manifold.ManifoldOptions`; SDR: ``randomizations``,
        ``solvers``; others: none.
    """
    from fedopt.solvers import baselines

    rng = np.random.default_rng(rng)
    if method == "beamforming":
        from fedopt.solvers.manifold import ManifoldOptions, manifold_beamforming

        starts = [baselines.centroid(problem).solution,
                  baselines.mrc_weakest(problem, single_device_optimal=True).solution]
        if init is not None:
            starts += [init] if isinstance(init, np.ndarray) and init.ndim == 3 else list(init)
        return manifold_beamforming(problem, init=starts, rng=rng, callback=callback,
                                    options=ManifoldOptions(**options))
    if method not in baselines.BASELINES:
        raise ValueError(f"method: got {method!r}, must be one of {', '.join(BEAMFORMING_METHODS)}")
    return baselines.BASELINES[method](problem, rng=rng, **options)
