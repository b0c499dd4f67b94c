"""The one registry of solver methods; every front door reads it.

``solve(instance, method, *, rng=None, callback=None, **options)`` takes every method that
``fedopt solve --method`` takes (the CLI's choices are generated from :data:`METHODS`), the
validation driver and the sweeps look names up here, and ``fedopt solve --help`` lists them.

Families:

- ``planner`` (spec 04 §2): rank, streams and receive beamformers, by a search over L with the
  rank block (:mod:`fedopt.solvers.planner`);
- ``beamforming`` (spec 04 §1, spec 02 §4): one beamforming method on one L (the given
  ``streams`` or the largest; ``sdr`` solves L = 1), the rank block picks r;
- ``digital`` (spec 04 §5): TSFA's offline rank and this round's sparsity and bandwidth split
  (:mod:`fedopt.solvers.tsfa`).

Every method returns a :class:`~fedopt.solvers.result.SolveResult` whose ``solution`` is a typed
plan (:class:`~fedopt.plan.AirCompPlan` or :class:`~fedopt.plan.DigitalPlan`).

Adding a method: write the solver (returning a SolveResult through
:class:`~fedopt.solvers.result.SolverRun`), add one :class:`Method` here; the CLI, the API and
``fedopt validate`` pick it up (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.result import Callback, SolveResult

__all__ = ["FAMILIES", "METHODS", "Method", "get", "names", "solve"]

FAMILIES = ("planner", "beamforming", "digital")


@dataclass(frozen=True)
class Method:
    """One solver method.

    Attributes
    ----------
    name : str
        The ``--method`` name.
    family : {"planner", "beamforming", "digital"}
        What it decides (module notes).
    summary : str
        One line for help texts.
    search : str or None
        Planners: the search over L (``bnb``, ``alternating``, ``exhaustive``).
    beamforming : str or None
        Planners and beamforming methods: the beamforming method each L is solved with.
    streams : tuple of int or None
        A restriction of the candidate stream counts (``single-stream``, ``sdr``: L = 1).
    fixed_rank : bool
        The rank is fixed (``--rank``, or the largest candidate that meets the budget).
    single_l : bool
        Solve one L only (the beamforming methods): ``streams`` or the largest candidate.
    uses_rng : bool
        Whether the method draws random numbers of its own (random starts, randomizations);
        methods that do not give the same result for every ``rng``.
    """

    name: str
    family: str
    summary: str
    search: str | None = None
    beamforming: str | None = None
    streams: tuple[int, ...] | None = None
    fixed_rank: bool = False
    single_l: bool = False
    uses_rng: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def solve(self, instance: Any, *, rng: Any = None, callback: Callback | None = None,
              **options: Any) -> SolveResult:
        """Run the method on ``instance`` (see :func:`solve`)."""
        if self.family == "digital":
            from fedopt.solvers.tsfa import plan_tsfa

            return plan_tsfa(instance, callback=callback, **_tsfa_options(options))
        from fedopt.solvers.planner import plan

        return plan(instance, self.name, rng=rng, callback=callback, **options)


def _tsfa_options(options: dict[str, Any]) -> dict[str, Any]:
    """``rank`` (one rank, as ``fedopt solve --rank``) means the candidate set ``[rank]``."""
    options = dict(options)
    rank = options.pop("rank", None)
    if rank is not None:
        if options.get("ranks") is not None:
            raise InvalidArgumentError("rank, ranks: give one of them, not both")
        options["ranks"] = [rank]
    return options


_PLANNERS = (
    Method("airfl-lora", "planner", "AirFL-LoRA: exact bound-pruned search over L, multicast "
           "(L = 1) or manifold (L > 1) beamformers, best feasible rank", search="bnb",
           beamforming="auto"),
    Method("alternating", "planner", "the backtracking alternating search of spec 04 §2 "
           "(from the largest L down)", search="alternating", beamforming="auto"),
    Method("exhaustive", "planner", "every (r, L): the oracle", search="exhaustive",
           beamforming="auto"),
    Method("fixed-rank", "planner", "baseline: the rank fixed (--rank, default the largest "
           "feasible), best L and beamformers", search="exhaustive", beamforming="auto",
           fixed_rank=True),
    Method("single-stream", "planner", "baseline: L = 1, best rank", search="exhaustive",
           beamforming="auto", streams=(1,)),
    Method("centroid-plan", "planner", "baseline: centroid beamformers, best r and L",
           search="exhaustive", beamforming="centroid", uses_rng=False),
    Method("random-plan", "planner", "baseline: random receive beamformers, best r and L",
           search="exhaustive", beamforming="random"),
)


def _beamforming_methods() -> tuple[Method, ...]:
    """One beamforming-only method per row of the beamforming method table."""
    from fedopt.solvers.beamforming import METHODS as TABLE

    return tuple(Method(row.name, "beamforming", f"beamforming only: {row.summary}",
                        search="exhaustive", beamforming=row.name, single_l=True,
                        streams=row.streams, uses_rng=row.uses_rng)
                 for row in TABLE.values())


_DIGITAL = (
    Method("tsfa", "digital", "digital FDMA uplink: TSFA's offline rank, this round's sparsity "
           "and min-max bandwidth split", uses_rng=False),
)

#: every method, by name, in the order help texts list them
METHODS: dict[str, Method] = {m.name: m for m in (*_PLANNERS, *_beamforming_methods(),
                                                  *_DIGITAL)}


def names(family: str | None = None) -> list[str]:
    """Method names, optionally of one family."""
    if family is not None and family not in FAMILIES:
        raise InvalidArgumentError(f"family: got {family!r}, must be one of "
                                   f"{', '.join(FAMILIES)}")
    return [n for n, m in METHODS.items() if family is None or m.family == family]


def get(method: str) -> Method:
    """The registry entry of ``method``; :class:`InvalidArgumentError` naming the valid ones."""
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise InvalidArgumentError(
            f"method: got {method!r}, must be one of {', '.join(METHODS)}") from None


def solve(instance: Any, method: str = "airfl-lora", *, rng: Any = None,
          callback: Callback | None = None, **options: Any) -> SolveResult:
    """Solve ``instance`` with any registered ``method`` (every ``fedopt solve --method``).

    Parameters
    ----------
    instance
        The network-design instance (:class:`~fedopt.instance.Instance`).
    method
        A name of :data:`METHODS` (default ``airfl-lora``).
    rng
        Seed or generator for the method's own random draws (random starts, randomizations);
        default: the channel ``seed``. Methods with ``uses_rng=False`` draw nothing of their own.
    callback
        ``callback(record) -> bool | None`` after each step (a beamforming solve of a planner);
        True stops the run (status ``STOPPED``).
    **options
        The method's options: planners and beamforming methods take those of
        :func:`fedopt.solvers.planner.plan` (``seed``, ``round``, ``channel``, ``ranks``,
        ``streams``, ``rank``, ...); ``tsfa`` those of :func:`fedopt.solvers.tsfa.plan_tsfa`
        (``seed``, ``round``, ``channel``, ``nominal_sparsity``, ``samples``, ``ranks`` or
        ``rank``).

    Returns
    -------
    SolveResult
        ``solution`` is the typed plan.
    """
    return get(method).solve(instance, rng=rng, callback=callback, **options)
