"""The arguments of :func:`fedopt.solvers.validation.calibrate.calibrate`: their defaults and
:func:`check_arguments`, which checks and resolves them into a :class:`CalibrationPlan` (the
pilots to run). :mod:`fedopt.solvers.validation.calibrate` re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.instance import Instance

__all__ = ["DEFAULT_NOISE_LEVELS", "DEFAULT_SEEDS", "CalibrationPlan", "check_arguments"]

#: seeds of the pilots (``fedopt calibrate --seeds``)
DEFAULT_SEEDS = (100, 101)
#: injected per-entry error variances, in units of v_t² (``--noise-levels``). Level 1 is a
#: relative error ‖e‖²/‖ḡ‖² of about 4–12 per round on ``char-tasks`` (it grows as the clients'
#: updates disagree). The loop hardly notices relative errors below ~10 (levels 0.25–2: rises of
#: ±0.005 nats, the sign set by the seed) and its response is convex above, so the gain must be
#: fitted where the plans operate: AirComp plans of ``char-tasks`` run at relative errors of
#: 10–90 (−35 to −45 dBm), i.e. levels ~2–16 (measured rises 0.012, 0.042, 0.22 nats at r = 32
#: for 4, 8, 16; with 2, 4, 8 the fitted gain was half as large and the planner kept two streams
#: at −40 dBm, where one stream measures 1.7 % better)
DEFAULT_NOISE_LEVELS = (4.0, 8.0, 16.0)


@dataclass(frozen=True)
class CalibrationPlan:
    """The checked arguments of :func:`~fedopt.solvers.validation.calibrate.calibrate`:
    ``ranks`` ascending (``noise_rank`` among them), distinct ``seeds`` and ``noise_levels``."""

    rounds: int
    ranks: tuple[int, ...]
    seeds: tuple[int, ...]
    noise_levels: tuple[float, ...]
    noise_rank: int

    @property
    def n_pilots(self) -> int:
        return len(self.seeds) * (len(self.ranks) + len(self.noise_levels))


def _is_int(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, np.integer))


def _as_tuple(x: Any) -> tuple[Any, ...] | None:
    if isinstance(x, (str, bytes)) or not isinstance(x, Sequence | np.ndarray):
        return None
    return tuple(x)


def check_arguments(instance: Instance, *, rounds: Any = None, ranks: Any = None,
                    seeds: Any = DEFAULT_SEEDS, noise_levels: Any = DEFAULT_NOISE_LEVELS,
                    noise_rank: Any = None, names: Mapping[str, str] | None = None
                    ) -> CalibrationPlan:
    """Check and resolve the arguments of
    :func:`~fedopt.solvers.validation.calibrate.calibrate` (defaults as there).

    ``names`` maps an argument to the name errors should use (the CLI passes its options,
    ``{"ranks": "--ranks", ...}``).

    Raises
    ------
    InvalidArgumentError
        Naming the argument, the value and what is valid.
    """
    names = dict(names or {})

    def name(key: str) -> str:
        return names.get(key, key)

    if rounds is None:
        rounds = instance.learning.rounds
    if not _is_int(rounds) or rounds < 1:
        raise InvalidArgumentError(f"{name('rounds')}: got {rounds!r}, must be an integer >= 1")
    ranks_t, noise_rank = _check_ranks(instance, ranks, noise_rank, name)
    seeds_t = _check_seeds(seeds, name)
    levels = _check_levels(noise_levels, name)
    return CalibrationPlan(rounds=int(rounds), ranks=ranks_t,
                           seeds=tuple(int(s) for s in seeds_t),
                           noise_levels=tuple(float(x) for x in levels),
                           noise_rank=int(noise_rank))


def _check_ranks(instance: Instance, ranks: Any, noise_rank: Any, name: Callable[[str], str]
                 ) -> tuple[tuple[int, ...], Any]:
    """The pilot ranks, ascending, ``noise_rank`` among them, and ``noise_rank`` (default: the
    largest rank); ``ranks`` defaults to every candidate rank of the instance."""
    max_rank = instance.lora.max_rank
    cand = sorted(instance.lora.ranks)

    def rank_ok(r: Any) -> bool:
        return _is_int(r) and 1 <= r <= max_rank

    valid_ranks = (f"integers in 1..{max_rank} (the instance's candidate ranks are "
                   f"{', '.join(map(str, cand))})")
    if ranks is None:
        ranks = tuple(cand)
    got = _as_tuple(ranks)
    if got is None or not all(rank_ok(r) for r in got):
        raise InvalidArgumentError(f"{name('ranks')}: got {ranks!r}, must be {valid_ranks}")
    if len(set(got)) != len(got) or len(got) < 2:
        raise InvalidArgumentError(
            f"{name('ranks')}: got {list(got)!r}, need at least two distinct ranks to fit "
            f"v(r) = v r^(-β) and L_s")
    if noise_rank is None:
        noise_rank = max(got)
    if not rank_ok(noise_rank):
        raise InvalidArgumentError(
            f"{name('noise_rank')}: got {noise_rank!r}, must be one of {valid_ranks}")
    ranks_t = tuple(sorted({int(r) for r in got} | {int(noise_rank)}))
    return ranks_t, noise_rank


def _check_seeds(seeds: Any, name: Callable[[str], str]) -> tuple[Any, ...]:
    seeds_t = _as_tuple(seeds)
    if not seeds_t or not all(_is_int(s) and s >= 0 for s in seeds_t):
        raise InvalidArgumentError(
            f"{name('seeds')}: got {seeds!r}, must be a non-empty list of integers >= 0")
    if len(set(seeds_t)) != len(seeds_t):
        raise InvalidArgumentError(f"{name('seeds')}: got {list(seeds_t)!r}, must be distinct")
    return seeds_t


def _check_levels(noise_levels: Any, name: Callable[[str], str]) -> tuple[Any, ...]:
    levels = _as_tuple(noise_levels)
    if not levels or not all(isinstance(x, (int, float, np.number)) and not isinstance(x, bool)
                             and math.isfinite(x) and x > 0 for x in levels):
        raise InvalidArgumentError(
            f"{name('noise_levels')}: got {noise_levels!r}, must be a non-empty list of positive "
            f"numbers (per-entry error variance in units of v_t², e.g. 0.25,0.5,1,2)")
    if len(set(levels)) != len(levels):
        raise InvalidArgumentError(
            f"{name('noise_levels')}: got {list(levels)!r}, must be distinct")
    return levels
