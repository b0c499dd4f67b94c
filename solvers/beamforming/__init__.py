"""Receive beamforming: one method table and one entry point for the manifold solver and the
baselines (spec 02 §2–§5, spec 04 §1).

``solve_beamforming(problem, method)`` returns a :class:`~fedopt.solvers.result.SolveResult`
whose ``solution`` holds unit-norm receive beamformers (M, N_r, L), ``objective_per_subcarrier``
the MSE_m = f(A_m) at full power (spec 02 §2) and ``bound_per_subcarrier`` the best lower bound
(spec 02 §5). :data:`METHODS` is the table of methods (name → :class:`BeamformingMethod`); every
other list of beamforming methods derives from it.

Modules: :mod:`.problem` (the problem of one channel draw), :mod:`.bounds` (its lower bounds),
:mod:`.manifold` (the ``"beamforming"`` method; its cost in :mod:`.cost`, its descent engines in
:mod:`.descent`), :mod:`.baselines` (closed forms and random), :mod:`.sdr` (SDR + randomization,
L = 1) and :mod:`.report` (the result packaging they share). ``fedopt.solvers.problem`` and
``fedopt.solvers.bounds`` re-export the first two.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.channel import Channel, draw_channel
from fedopt.errors import InvalidArgumentError
from fedopt.instance import Instance
from fedopt.solvers.beamforming.baselines import (
    centroid,
    mrc_weakest,
    principal_eigenvector,
    random_beamformer,
)
from fedopt.solvers.beamforming.manifold import ManifoldOptions, solve_manifold
from fedopt.solvers.beamforming.multicast import MulticastOptions, multicast
from fedopt.solvers.beamforming.multicast_bnb import certify_multicast
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.sdr import sdr
from fedopt.solvers.result import Callback, SolveResult

__all__ = ["BASELINES", "BEAMFORMING_METHODS", "METHODS", "BeamformingMethod",
           "BeamformingProblem", "beamforming_problem", "certify_multicast", "solve_beamforming"]

_PASSED = ("rng", "init", "callback")  # passed by solve_beamforming, not options


@dataclass(frozen=True)
class BeamformingMethod:
    """One beamforming method of :data:`METHODS`.

    Attributes
    ----------
    name : str
        The name ``solve_beamforming`` (and ``fedopt solve --method``) accepts.
    summary : str
        One line for help texts.
    function : callable
        ``function(problem, *, [rng], [init], [callback], **options) -> SolveResult``; it takes
        ``rng`` / ``init`` / ``callback`` only where the flags below say so.
    uses_rng : bool
        The method draws random numbers (the others are deterministic and take no ``rng``).
    uses_init : bool
        The method takes warm starts ``init``.
    uses_callback : bool
        The method reports steps to ``callback(record)`` (the others finish in one step).
    streams : tuple of int or None
        The stream counts L the method solves; ``None``: any.
    options : tuple of str
        Names of the keyword options it accepts.
    """

    name: str
    summary: str
    function: Callable[..., SolveResult]
    uses_rng: bool
    uses_init: bool = False
    uses_callback: bool = False
    streams: tuple[int, ...] | None = None
    options: tuple[str, ...] = ()


def _keywords(function: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only options of a method function (rng, init and callback excepted)."""
    params = inspect.signature(function).parameters.values()
    return tuple(p.name for p in params
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _PASSED)


def _method(name: str, summary: str, function: Callable[..., SolveResult], *,
            options: tuple[str, ...] | None = None, **flags: Any) -> BeamformingMethod:
    params = inspect.signature(function).parameters
    return BeamformingMethod(
        name, summary, function, uses_rng="rng" in params, uses_init="init" in params,
        uses_callback="callback" in params,
        options=_keywords(function) if options is None else options, **flags)


def auto(problem: BeamformingProblem, *, init: np.ndarray | list[np.ndarray] | None = None,
         rng: np.random.Generator | None = None,
         callback: Callback | None = None) -> SolveResult:
    """The planners' default: ``"multicast"`` for L = 1, the manifold solver for L > 1 (the
    result's ``method`` names the one that ran)."""
    if problem.streams == 1:
        return multicast(problem, init=init, rng=rng)
    return solve_manifold(problem, init=init, rng=rng, callback=callback)


#: The beamforming methods, by name, in the order help texts list them.
METHODS: dict[str, BeamformingMethod] = {m.name: m for m in (
    _method("auto", "multicast for L = 1, manifold for L > 1 (the planners' default)", auto),
    _method("beamforming", "manifold optimization on the sphere from the centroid, MRC, warm and "
            "random starts (spec 04 §1)", solve_manifold,
            options=tuple(f.name for f in dataclasses.fields(ManifoldOptions))),
    _method("multicast", "L = 1 as single-group multicast: smoothed Newton path following "
            "from several starts, with a certified SDR-dual bound", multicast, streams=(1,),
            options=tuple(f.name for f in dataclasses.fields(MulticastOptions))),
    _method("centroid", "weighted Grassmann centroid of the devices' dominant subspaces "
            "(closed form)", centroid),
    _method("sdr", "semidefinite relaxation + Gaussian randomization, with its lower bound "
            "(L = 1)", sdr, streams=(1,)),
    _method("random", "i.i.d. CN(0, 1) random receive beamformer", random_beamformer),
    _method("mrc", "MRC toward the weakest device (closed form)", mrc_weakest),
    _method("eigen", "principal eigenvectors of sum_k G_k / tr(G_k) (closed form)",
            principal_eigenvector),
)}

#: Method names accepted by :func:`solve_beamforming` (and ``fedopt solve --method``).
BEAMFORMING_METHODS: tuple[str, ...] = tuple(METHODS)

#: The baselines (every method but the manifold solver): name → function.
BASELINES: dict[str, Callable[..., SolveResult]] = {
    name: m.function for name, m in METHODS.items()
    if name not in ("auto", "beamforming", "multicast")}


def beamforming_problem(instance: Instance, streams: int, *, channel: Channel | None = None,
                        seed: int = 0, round: int = 0) -> BeamformingProblem:
    """The beamforming problem of an instance for a given (or freshly drawn) channel."""
    channel = channel if channel is not None else draw_channel(instance, seed=seed, round=round)
    return BeamformingProblem.from_instance(instance, channel, streams)


def _lookup(method: str, options: dict[str, Any]) -> BeamformingMethod:
    """The table entry of ``method``; InvalidArgumentError for an unknown method or option."""
    entry = METHODS.get(method) if isinstance(method, str) else None
    if entry is None:
        raise InvalidArgumentError(
            f"method: got {method!r}, must be one of {', '.join(BEAMFORMING_METHODS)}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise InvalidArgumentError(
            f"{', '.join(unknown)}: not an option of beamforming method {method!r} "
            f"(its options: {valid})")
    return entry


def solve_beamforming(
    problem: BeamformingProblem,
    method: str = "beamforming",
    *,
    init: np.ndarray | list[np.ndarray] | None = None,
    rng: np.random.Generator | int | None = None,
    callback: Callback | None = None,
    **options: Any,
) -> SolveResult:
    """Solve the receive-beamforming problem of every subcarrier with ``method``.

    Parameters
    ----------
    problem
        See :class:`~fedopt.solvers.beamforming.problem.BeamformingProblem`.
    method
        A name of :data:`METHODS`: ``"auto"`` (``"multicast"`` for L = 1, else
        ``"beamforming"``), ``"multicast"`` (L = 1: smoothed Newton path following with an
        SDR-dual certificate), ``"beamforming"`` (manifold optimization, spec 04 §1, started
        from the centroid, the MRC toward the weakest device, any ``init`` and random points) or
        a baseline: ``"centroid"``, ``"sdr"`` (L = 1), ``"random"``, ``"mrc"``, ``"eigen"``
        (spec 02 §4).
    init
        Warm start(s), each (M, N_r, L), for the methods that take them (``uses_init``: auto,
        multicast, beamforming); the others start from nothing and are not given it.
    rng
        Generator or seed, passed to the methods that draw (``uses_rng``: random starts,
        randomization); same seed, same result. The others are deterministic.
    callback
        ``callback(record) -> bool | None``, passed to the methods with steps (``uses_callback``:
        the manifold solver, after each continuation stage); True stops (status STOPPED).
    **options
        The method's options (``METHODS[method].options``). Manifold: fields of
        :class:`~fedopt.solvers.beamforming.manifold.ManifoldOptions`; SDR: ``randomizations``,
        ``solvers``, ``solver_options``, ``purify``; MRC: ``single_device_optimal``.

    Raises
    ------
    InvalidArgumentError
        For an unknown method or an option the method does not take.
    """
    entry = _lookup(method, options)
    kwargs = dict(options)
    if entry.uses_rng:
        kwargs["rng"] = np.random.default_rng(rng)
    if entry.uses_init:
        kwargs["init"] = init
    if entry.uses_callback:
        kwargs["callback"] = callback
    return entry.function(problem, **kwargs)
