"""TSFA's online stage (spec 04 §5): per-round sparsity and bandwidth by drift-plus-penalty.

Round t, channel constants c_k = p_k g_k / N0, virtual queue Q(t) (Q(0) = 0,
Q(t+1) = max(Q(t) + T(t) − T̄, 0)). Each device keeps m_k ∈ {1, …, r} components (sparsity
ρ_k = (r − m_k)/r ∈ {0, 1/r, …, (r−1)/r}; never all dropped) and gets b_k Hz:

    minimize   J(m, b) = V Σ_k p_k E_drop,k(m_k) + Q(t) · T(m, b),   Σ_k b_k ≤ B_tot,

with T = max_k (T_cmp,k + S(m_k) / R_k(b_k)) and E_drop,k(m) the energy of the r − m smallest
SOFT scores (:func:`fedopt.gap_models.tsfa.dropped_energy`). For fixed m the best bands give the
min-max latency τ*(m) (:func:`fedopt.solvers.bandwidth.allocate_min_latency`), so the round
problem is min over m of J(m) = V W(m) + Q τ*(m), with W(m) = Σ_k p_k E_drop,k(m_k), which
:class:`~fedopt.solvers.tsfa.round_solver.RoundSolver` solves (deadline form, Lagrangian / LP
relaxation, search over τ, branch and bound: see its module).

Guarantees of :meth:`TSFAController.decide`:

* Q = 0: keep everything (m = r for all, objective 0) with the min-latency bands; more precisely
  each device's smallest m with the least drop error, which is r unless trailing scores are 0.
  V = 0 (also with Q = 0): maximum sparsity m = 1 for all with the min-latency bands (τ*(m)
  increases with each m_k). Both exact, and the same as the oracle's lexicographic tie-break.
* Otherwise the returned (m, b) is always feasible (Σ b_k = B_tot) and its ``objective`` is the
  exact J(m) at τ*(m). ``lower_bound`` is a certified lower bound on the optimum (up to
  floating-point round-off; the bounds relax B_tot by a relative 1e-9).
* With ``exact`` on (default for K ≤ :data:`EXACT_MAX_DEVICES`) and the branch and bound
  finished within ``max_nodes`` boxes, the status is ``OPTIMAL`` and objective − optimum ≤ rtol ·
  objective (rtol = 1e-10 by default): the same objective as the brute-force enumeration
  :meth:`TSFAController.brute_force_decide`, and the same decision wherever the optimum is unique
  by more than rtol.
* Otherwise (large K, exact off or node budget spent) the answer is the Lagrangian / repair
  solution; its status is ``OPTIMAL`` if the root bound certifies it anyway, else ``CONVERGED``
  (exact off) or ``MAX_ITERATIONS`` (node budget spent), and objective − lower_bound bounds its
  excess over the optimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.digital import payload_bits
from fedopt.errors import InfeasibleError, InvalidArgumentError
from fedopt.gap_models.airfl import RankTruncation
from fedopt.gap_models.tsfa import dropped_energy
from fedopt.instance import Instance
from fedopt.link import LN2
from fedopt.solvers.bandwidth import BandwidthAllocation, allocate_min_latency
from fedopt.solvers.result import SolverRun, Status
from fedopt.solvers.tsfa.inputs import (
    check_bandwidth,
    check_budget,
    check_count,
    check_queue,
    check_snr,
    check_v,
    mean_snr_hz,
)
from fedopt.solvers.tsfa.round_solver import RoundSolver

__all__ = ["EXACT_MAX_DEVICES", "RoundDecision", "TSFAController"]

#: ``decide(exact=None)`` runs the branch and bound for K up to this many devices (beyond, the
#: Lagrangian / repair answer with its certified bound; pass ``exact=True`` to force it).
EXACT_MAX_DEVICES = 16

#: The stage's name (its clock's).
METHOD = "tsfa-online"


@dataclass(frozen=True, eq=False)
class RoundDecision:
    """The online stage's decision for one round.

    Attributes
    ----------
    kept : ndarray of int (K,)
        Components kept m_k ∈ 1..r.
    sparsity : ndarray (K,)
        ρ_k = (r − m_k) / r.
    bandwidth_hz : ndarray (K,)
        Bands b_k (Σ_k b_k = B_tot), Hz.
    latency_s : float
        Round latency τ*(m) = max_k (T_cmp,k + S(m_k) / R_k(b_k)).
    drop_error : float
        W(m) = Σ_k p_k E_drop,k(m_k).
    objective : float
        V · drop_error + queue_before · latency_s.
    queue_before, queue_after : float
        Q(t) and max(Q(t) + latency_s − T̄, 0).
    lower_bound : float
        Certified lower bound on the round's optimal objective.
    status : Status
        ``OPTIMAL`` when certified: objective − lower_bound ≤ rtol · objective (the closed-form
        extremes Q = 0 or V = 0, a finished branch and bound, a Lagrangian / repair answer that
        its bound certifies anyway, the enumeration). Otherwise ``CONVERGED`` (the Lagrangian /
        repair answer with its gap, without the branch and bound) or ``MAX_ITERATIONS`` (the
        branch and bound spent its ``max_nodes`` boxes); objective − lower_bound then bounds the
        excess over the optimum.
    nodes : int
        Branch-and-bound boxes explored (0 without it).
    evaluations : int
        Exact evaluations of τ*(m) (bandwidth allocations).
    wall_time_s : float
        Time spent deciding.
    """

    kept: np.ndarray
    sparsity: np.ndarray
    bandwidth_hz: np.ndarray
    latency_s: float
    drop_error: float
    objective: float
    queue_before: float
    queue_after: float
    lower_bound: float
    status: Status
    nodes: int = 0
    evaluations: int = 0
    wall_time_s: float = 0.0

    @property
    def optimal(self) -> bool:
        """True when the decision is certified optimal (``status`` is ``OPTIMAL``)."""
        return self.status is Status.OPTIMAL

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping."""
        return {"kept": [int(x) for x in self.kept],
                "sparsity": [float(x) for x in self.sparsity],
                "bandwidth_hz": [float(x) for x in self.bandwidth_hz],
                "latency_s": float(self.latency_s), "drop_error": float(self.drop_error),
                "objective": float(self.objective), "queue_before": float(self.queue_before),
                "queue_after": float(self.queue_after), "lower_bound": float(self.lower_bound),
                "optimal": bool(self.optimal), "status": self.status.value,
                "nodes": int(self.nodes),
                "evaluations": int(self.evaluations), "wall_time_s": float(self.wall_time_s)}


class TSFAController:
    """Online stage of TSFA (spec 04 §5): per-round sparsity and bandwidth by drift-plus-penalty.

    Parameters
    ----------
    instance
        Devices (weights p_k = φ_k, compute times), LoRA layers (payload), bandwidth B_tot.
    rank
        The LoRA rank r (e.g. from :func:`select_rank`).
    V
        Weight of the sparsification error against the queue-weighted latency, ≥ 0.
    avg_latency_budget_s
        T̄ (default ``constraints.avg_latency_budget_s``, else ``constraints.latency_budget_s``).
    scores
        SOFT scores s_i of one adapted weight, shape (r,) (every device) or (K, r) (per device);
        default: the first r values of the instance's spectrum (as in
        :meth:`fedopt.gap_models.tsfa.TSFABound.nominal_drop_error`). Every adapted weight (Σ_l
        count_l of them) shares the profile, so E_drop,k(m) = Σ_l count_l · (Σ of the r − m
        smallest s_{k,i}²) and Σ_k p_k E_drop,k at a common m equals the bound's nominal drop
        error.
    bandwidth_hz
        Override of B_tot (default ``instance.bandwidth_hz``).
    exact
        Run the branch and bound (default: when K ≤ :data:`EXACT_MAX_DEVICES`). Forcing it for
        large K can be slow (seconds per round at K = 100, r = 8).
    rtol
        Relative optimality tolerance of the branch and bound.
    max_nodes
        Box budget of the branch and bound per round; when spent, the best decision found is
        returned with its certified ``lower_bound`` and status ``MAX_ITERATIONS`` (unless that
        bound certifies it anyway).
    grid_points, refine_rounds
        Initial deadlines of the τ-search, and how many rounds of splitting (up to 8 intervals
        each, where the bound is smallest) refine it (default 4 with the branch and bound, 8
        without).

    Raises
    ------
    InfeasibleError
        B_tot ≤ 0, or T̄ below some device's mean latency floor T_cmp,k + S(m = 1) ln 2 /
        E[c_k] (everything sparsified to one component, unlimited bandwidth): by Jensen no policy
        meets T̄ on average then; the message names the device and that floor.
    InvalidArgumentError
        V < 0, a bad budget, bad scores.
    """

    def __init__(self, instance: Instance, rank: int, *, V: float,
                 avg_latency_budget_s: float | None = None, scores: Any = None,
                 bandwidth_hz: float | None = None, exact: bool | None = None,
                 rtol: float = 1e-10, max_nodes: int = 20_000, grid_points: int = 17,
                 refine_rounds: int | None = None):
        self.instance = instance
        self.rank = instance.validate_rank(rank)
        self.V = check_v(V)
        self.budget_s = check_budget(instance, avg_latency_budget_s)
        self.bandwidth_hz = check_bandwidth(instance, bandwidth_hz)
        if not (rtol >= 0 and math.isfinite(rtol)):
            raise InvalidArgumentError(f"rtol: got {rtol!r}, must be a finite number >= 0")
        self.exact = exact
        self.rtol = float(rtol)
        self.max_nodes = check_count(max_nodes, "max_nodes", 0)
        self.grid_points = check_count(grid_points, "grid_points", 2)
        self.refine_rounds = (None if refine_rounds is None
                              else check_count(refine_rounds, "refine_rounds", 0))
        k, r = instance.n_devices, self.rank
        self.weights = np.asarray(instance.weights, dtype=float)
        self.compute_s = np.asarray(instance.compute_time_s, dtype=float)
        self.kept_levels = np.arange(1, r + 1)
        self.payload_bits = np.asarray(payload_bits(instance, r, self.kept_levels), dtype=float)
        self.scores = self._scores(scores, k, r)
        copies = sum(layer.count for layer in instance.lora.layers)
        #: E_drop,k(m), shape (K, r), column m − 1
        self.drop_table = copies * dropped_energy(self.scores[:, None, :],
                                                  self.kept_levels[None, :])
        self._weighted_drop = self.weights[:, None] * self.drop_table
        self._check_budget()
        self.queue = 0.0
        self.round = 0

    @property
    def V(self) -> float:
        """The drift-plus-penalty weight V ≥ 0 (validated when set)."""
        return self._v

    @V.setter
    def V(self, value: float) -> None:
        self._v = check_v(value)

    def _scores(self, scores: Any, k: int, r: int) -> np.ndarray:
        if scores is None:
            values = RankTruncation.from_instance(self.instance).values[:r]
            values = np.concatenate([values, np.zeros(r - values.size)])  # missing tail: 0
            return np.broadcast_to(values, (k, r)).copy()
        try:
            s = np.asarray(scores, dtype=float)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"scores: expected numbers of shape ({r},) or ({k}, {r}), "
                                       f"got {scores!r}") from None
        if s.shape == (r,):
            s = np.broadcast_to(s, (k, r)).copy()
        if s.shape != (k, r):
            raise InvalidArgumentError(
                f"scores: expected shape ({r},) (every device) or ({k}, {r}) (per device) for "
                f"rank {r} and K = {k}, got {s.shape}")
        bad = ~np.isfinite(s) | (s < 0)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidArgumentError(f"scores: device {i}, component {j} has {s[i, j]!r}; "
                                       "SOFT scores s_i = ‖b_i‖‖a_i‖ are finite and >= 0")
        return s

    def _check_budget(self) -> None:
        floor = self.compute_s + self.payload_bits[0] * LN2 / mean_snr_hz(self.instance)
        k = int(np.argmax(floor))
        if self.budget_s < floor[k]:
            raise InfeasibleError(
                f"avg_latency_budget_s: T̄ = {self.budget_s:.6g} s is below the latency floor "
                f"of device {k}, {floor[k]:.6g} s = T_cmp {self.compute_s[k]:.6g} s + S(m = 1) "
                f"ln 2 / E[c_k] with everything sparsified to m = 1 and unlimited bandwidth; no "
                f"policy meets T̄ on average (Jensen). The smallest budget that can be feasible "
                f"is at least {floor[k]:.6g} s (select_rank estimates the expected minimum "
                "latency); raise T̄, lower the rank or move/drop the device"
            )

    # -- decisions --------------------------------------------------------------------------
    def decide(self, snr_hz: Any, queue: float | None = None) -> RoundDecision:
        """Sparsity and bands of one round (the method: :mod:`fedopt.solvers.tsfa.round_solver`;
        its guarantees: the notes of :mod:`fedopt.solvers.tsfa.controller`); does not change the
        controller's queue.

        Parameters
        ----------
        snr_hz
            c_k = p_k g_k / N0 (Hz) of this round, shape (K,) (:func:`fedopt.digital.snr_hz`).
        queue
            Q(t) (default: the controller's current queue).
        """
        clock = SolverRun(METHOD, keep_history=False)
        c = check_snr(snr_hz, self.instance.n_devices)
        q = self.queue if queue is None else check_queue(queue)
        k, r = self.instance.n_devices, self.rank
        w = self.V * self._weighted_drop
        if q == 0 or r == 1 or self.V == 0:
            # Q = 0: J = V W(m), minimized by each device's smallest m with the least drop error
            # (keep everything when the scores are positive); V = 0: J = Q τ*(m), increasing in
            # every m_k, so m = 1 (the same rule, as w ≡ 0)
            levels = np.argmax(w == w.min(axis=1, keepdims=True), axis=1).astype(np.int64)
            alloc = self._allocate(levels, c)
            value = float(w[np.arange(k), levels].sum() + q * alloc.latency_s)
            return self._decision(levels, alloc, q, value, Status.OPTIMAL, 0, 1, clock)
        solver = RoundSolver(c, self.compute_s, self.payload_bits, w, self.bandwidth_hz, q,
                             rtol=self.rtol, grid_points=self.grid_points,
                             refine_rounds=self.refine_rounds)
        exact = self.exact if self.exact is not None else k <= EXACT_MAX_DEVICES
        levels, lower, finished = solver.solve(exact, self.max_nodes)
        value, alloc = solver.evaluate(levels)
        if value - lower <= self.rtol * max(abs(value), 1e-300):
            status = Status.OPTIMAL  # certified
        elif exact and not finished:
            status = Status.MAX_ITERATIONS  # the branch and bound spent its node budget
        else:
            status = Status.CONVERGED  # the Lagrangian / repair answer with its gap
        return self._decision(levels, alloc, q, lower, status, solver.nodes,
                              len(solver.cache), clock)

    def brute_force_decide(self, snr_hz: Any, queue: float | None = None) -> RoundDecision:
        """The oracle: every m ∈ {1..r}^K, each at its optimal deadline τ*(m)
        (:func:`~fedopt.solvers.bandwidth.allocate_min_latency`); objective V W(m) + Q τ*(m).
        Ties go to the first in lexicographic order of m. Meant for K ≤ 3 (refuses
        r^K > 100 000)."""
        clock = SolverRun(METHOD, keep_history=False)
        c = check_snr(snr_hz, self.instance.n_devices)
        q = self.queue if queue is None else check_queue(queue)
        k, r = self.instance.n_devices, self.rank
        if r**k > 100_000:
            raise InvalidArgumentError(
                f"brute_force_decide: r^K = {r}^{k} = {r**k} combinations; the oracle is meant "
                "for K <= 3 (at most 100 000 combinations)")
        w = self.V * self._weighted_drop
        best = None
        for combo in np.ndindex(*(r,) * k):
            levels = np.asarray(combo, dtype=np.int64)
            alloc = self._allocate(levels, c)
            value = float(w[np.arange(k), levels].sum() + q * alloc.latency_s)
            if best is None or value < best[0]:
                best = (value, levels, alloc)
        value, levels, alloc = best
        return self._decision(levels, alloc, q, value, Status.OPTIMAL, 0, r**k, clock)

    def step(self, snr_hz: Any) -> RoundDecision:
        """Decide this round, then update Q(t + 1) = max(Q(t) + T(t) − T̄, 0)."""
        decision = self.decide(snr_hz)
        self.queue = decision.queue_after
        self.round += 1
        return decision

    def reset(self) -> None:
        """Queue back to 0 (a new run)."""
        self.queue = 0.0
        self.round = 0

    def _allocate(self, levels: np.ndarray, c: np.ndarray) -> BandwidthAllocation:
        """The min-latency bands of the kept components ``levels + 1``."""
        return allocate_min_latency(self.payload_bits[levels], self.compute_s, c,
                                    self.bandwidth_hz).solution

    def _decision(self, levels: np.ndarray, alloc: BandwidthAllocation, q: float,
                  lower: float, status: Status, nodes: int, evaluations: int,
                  clock: SolverRun) -> RoundDecision:
        k, r = self.instance.n_devices, self.rank
        kept = levels + 1
        drop = float(self._weighted_drop[np.arange(k), levels].sum())
        latency = float(alloc.latency_s)
        objective = self.V * drop + q * latency
        return RoundDecision(
            kept=kept.astype(np.int64), sparsity=(r - kept) / r,
            bandwidth_hz=np.asarray(alloc.bandwidth_hz, dtype=float), latency_s=latency,
            drop_error=drop, objective=objective, queue_before=q,
            queue_after=max(q + latency - self.budget_s, 0.0),
            lower_bound=float(min(lower, objective)), status=status, nodes=int(nodes),
            evaluations=int(evaluations), wall_time_s=clock.elapsed_s)

