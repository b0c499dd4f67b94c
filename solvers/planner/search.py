"""Searches over the stream count L (spec 04 §2); each L costs one beamforming solve and its
rank block.

- ``alternating`` (spec 04 §2): start at the largest L, solve its beamformers and its best
  feasible rank; then try L − 1 (warm start: drop the weakest column of each A_m), accept while the
  gap decreases and stop at the first increase. A heuristic: it may stop at a local minimum.
- ``bnb``: branch and bound over L. The single-device bound of every MSE_m (spec 02 §5) gives
  a lower bound on the gap at each L; L values are visited by increasing bound and skipped once
  their bound cannot beat the best gap found. Exact (always equals ``exhaustive``), and usually
  one or two beamforming solves. This is what ``airfl-lora`` uses.
- ``exhaustive``: every L, every r — the oracle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fedopt.channel import Channel
from fedopt.gap_models import AirFLGap
from fedopt.instance import Instance
from fedopt.solvers.beamforming import METHODS as BEAMFORMING_TABLE
from fedopt.solvers.beamforming import solve_beamforming
from fedopt.solvers.bounds import single_device_bound
from fedopt.solvers.planner.blocks import (
    RankBlock,
    StreamSolution,
    rank_block,
    transmit_power_w,
)
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolverRun

__all__ = ["EXACT_SEARCHES", "SEARCHES", "StreamSearch", "stream_rng"]

#: searches over (r, L): the spec's alternating one, an exact bound-pruned one, the oracle
SEARCHES = ("alternating", "bnb", "exhaustive")
#: the searches that find the best (r, L) for the beamformers they are given
EXACT_SEARCHES = ("bnb", "exhaustive")


def stream_rng(seed: int, streams: int) -> np.random.Generator:
    """The beamforming solver's generator for L streams: depends on (seed, L) only, so a plan's
    beamformers do not depend on the order in which a search visits the stream counts."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(streams),)))


def _drop_weakest_column(A: np.ndarray) -> np.ndarray:
    """Warm start for L − 1: drop, per subcarrier, the column with the largest norm (the
    costliest stream, since optimal column norms grow as the stream's eigenvalue falls)."""
    norms = np.sum(np.abs(A) ** 2, axis=1)  # (M, L)
    weakest = np.argmax(norms, axis=1)
    keep = np.ones(norms.shape, dtype=bool)
    keep[np.arange(A.shape[0]), weakest] = False
    return A[np.broadcast_to(keep[:, None, :], A.shape)].reshape(A.shape[0], A.shape[1], -1)


class StreamSearch:
    """The state of one search: the beamforming solves and rank blocks done so far.

    :meth:`solve` solves L's beamformers once (memoized) and its rank block, and reports the
    step to the run's callback; the searches call it in their own order.
    """

    def __init__(self, instance: Instance, channel: Channel, gap: AirFLGap,
                 ranks: Sequence[int], beamforming: str, base_seed: int, run: SolverRun,
                 options: dict[str, Any]) -> None:
        self.instance, self.channel, self.gap = instance, channel, gap
        self.ranks = list(ranks)
        self.beamforming, self.base_seed, self.run = beamforming, base_seed, run
        self.options = options
        self.solved: dict[int, StreamSolution] = {}
        self.blocks: dict[int, RankBlock] = {}
        self.pruned: dict[int, float] = {}
        #: stream counts the search will visit at most (None: not known in advance), for the
        #: progress records that :meth:`solve` sends before each beamforming solve
        self.total: int | None = None
        self._problem: BeamformingProblem | None = None

    def problem(self, streams: int) -> BeamformingProblem:
        """L's problem; every L shares the first one's singular values of H (one SVD)."""
        if self._problem is None:
            self._problem = BeamformingProblem.from_instance(self.instance, self.channel, streams)
        self.instance.validate_streams(streams)
        return self._problem.with_streams(streams)

    def solve(self, streams: int, init: np.ndarray | None = None) -> RankBlock:
        """L's beamformers (warm-started from ``init`` for the manifold solver) and rank block."""
        if streams in self.solved:
            return self.blocks[streams]
        problem = self.problem(streams)
        done = len(self.solved) + len(self.pruned)
        label = f"L = {streams} beamformers, {problem.H.shape[1]} subcarriers"
        counts = {"done": done, "total": self.total} if self.total is not None else {}
        self.run.notify({"label": label, **counts})
        kwargs = dict(self.options)
        if BEAMFORMING_TABLE[self.beamforming].uses_callback and "callback" not in kwargs:
            kwargs["callback"] = self._stages(label, counts)
        if BEAMFORMING_TABLE[self.beamforming].uses_init and init is not None:
            kwargs["init"] = init
        res = solve_beamforming(problem, self.beamforming,
                                rng=stream_rng(self.base_seed, streams), **kwargs)
        sol = self.solved[streams] = StreamSolution(streams, res)
        power_w = (transmit_power_w(problem, res.solution)
                   if self.instance.devices.energy_budget_j is not None else None)
        block = self.blocks[streams] = rank_block(self.gap, self.instance, self.ranks, streams,
                                                  sol.mse_sum, power_w)
        self.run.record({"streams": streams, "rank": block.rank, "gap": block.gap,
                         "mse_sum": sol.mse_sum, "beamforming_status": res.status.value})
        return block

    def _stages(self, label: str, counts: dict[str, int]) -> Callable[[dict[str, Any]], None]:
        """The beamforming solver's callback: each smoothing stage as a progress record
        (its answer is never "stop": a stop asked for here ends the search after this L)."""
        def forward(record: dict[str, Any]) -> None:
            if "stage" in record and "stages" in record:
                self.run.notify({"label": f"{label}: smoothing stage {record['stage'] + 1}/"
                                          f"{record['stages']}", **counts})
        return forward

    @property
    def best_gap(self) -> float:
        return min((b.gap for b in self.blocks.values()), default=np.inf)

    # -- the searches -------------------------------------------------------------------------
    def exhaustive(self, streams: Sequence[int]) -> None:
        self.total = len(streams)
        for n_streams in reversed(streams):
            self.solve(n_streams)
            if self.run.stopped:
                return

    def bnb(self, streams: Sequence[int]) -> None:
        # G is increasing in Σ_m MSE_m, so the single-device bound on each MSE_m gives a lower
        # bound G_lb(L) on the best gap at L (constraints that depend on the beamformers are
        # relaxed, which only lowers it). Visit L by increasing G_lb and skip every L whose
        # G_lb cannot beat the best gap found: same answer as exhaustive, fewer solves.
        lower = {s: rank_block(self.gap, self.instance, self.ranks, s,
                               float(single_device_bound(self.problem(s)).sum())).gap
                 for s in streams}
        self.total = len(streams)  # at most: the pruned ones count as done
        for n_streams in sorted(streams, key=lambda s: (lower[s], -s)):
            if lower[n_streams] >= self.best_gap or np.isinf(lower[n_streams]):
                self.pruned[n_streams] = lower[n_streams]
                continue
            self.solve(n_streams)
            if self.run.stopped:
                return

    def alternating(self, streams: Sequence[int]) -> None:
        self.total = len(streams)  # at most: the descent may stop early
        current = streams[-1]
        self.solve(current)
        while not self.run.stopped:
            below = [s for s in streams if s < current]
            if not below:
                return
            nxt = below[-1]
            init = self.solved[current].result.solution
            init = _drop_weakest_column(init) if init.shape[2] == current and (
                current - nxt == 1) else None
            gap_next, gap_now = self.solve(nxt, init).gap, self.blocks[current].gap
            if gap_next < gap_now or (np.isinf(gap_now) and np.isinf(gap_next)):
                current = nxt  # better, or neither feasible yet: keep descending
            else:
                return
