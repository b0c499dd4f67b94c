"""TSFA's online stage over many rounds (spec 04 §5).

:func:`simulate` runs the controller over i.i.d. block-fading rounds. The queue telescopes:
(1/T) Σ_t T(t) ≤ T̄ + Q(T)/T for every T, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.channel import draw_channel
from fedopt.digital import snr_hz
from fedopt.instance import Instance
from fedopt.solvers.result import Callback, SolverRun
from fedopt.solvers.tsfa.controller import RoundDecision, TSFAController
from fedopt.solvers.tsfa.inputs import check_count

__all__ = ["SimulationReport", "simulate"]

#: The run's name.
METHOD = "tsfa-simulate"


@dataclass(frozen=True, eq=False)
class SimulationReport:
    """What :func:`simulate` saw (``to_dict`` gives ``fedopt tsfa-simulate --format json``'s
    figures).

    Attributes
    ----------
    rounds, rank, V, seed
        Rounds run, the LoRA rank, the weight V and the channel seed.
    latency_budget_s
        T̄.
    avg_latency_s
        (1/T) Σ_t T(t).
    queue_bound_s
        T̄ + Q(T)/T, which ``avg_latency_s`` never exceeds.
    mean_queue, final_queue
        (1/T) Σ_{t<T} Q(t) and Q(T).
    mean_sparsity, mean_kept
        ρ and m averaged over rounds and devices.
    mean_sparsification_error
        (1/T) Σ_t Σ_k p_k E_drop,k.
    decide_time_s_median, decide_time_s_max
        Decision time per round.
    certified_rounds
        Rounds whose decision is certified optimal (status ``OPTIMAL``).
    max_relative_gap
        Largest (objective − lower_bound) / objective over the rounds.
    wall_time_s
        Time of the whole run.
    latency_s, queue_s, drop_error : ndarray (T,)
        Per round: T(t), Q(t + 1) and Σ_k p_k E_drop,k.
    """

    rounds: int
    rank: int
    V: float
    seed: int
    latency_budget_s: float
    avg_latency_s: float
    queue_bound_s: float
    mean_queue: float
    final_queue: float
    mean_sparsity: float
    mean_kept: float
    mean_sparsification_error: float
    decide_time_s_median: float
    decide_time_s_max: float
    certified_rounds: int
    max_relative_gap: float
    wall_time_s: float
    latency_s: np.ndarray
    queue_s: np.ndarray
    drop_error: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping (the keys of the attributes, in their order)."""
        return {
            "rounds": int(self.rounds), "rank": int(self.rank), "V": float(self.V),
            "seed": int(self.seed), "latency_budget_s": float(self.latency_budget_s),
            "avg_latency_s": float(self.avg_latency_s),
            "queue_bound_s": float(self.queue_bound_s), "mean_queue": float(self.mean_queue),
            "final_queue": float(self.final_queue), "mean_sparsity": float(self.mean_sparsity),
            "mean_kept": float(self.mean_kept),
            "mean_sparsification_error": float(self.mean_sparsification_error),
            "decide_time_s_median": float(self.decide_time_s_median),
            "decide_time_s_max": float(self.decide_time_s_max),
            "certified_rounds": int(self.certified_rounds),
            "max_relative_gap": float(self.max_relative_gap),
            "wall_time_s": float(self.wall_time_s),
            "latency_s": self.latency_s.tolist(), "queue_s": self.queue_s.tolist(),
            "drop_error": self.drop_error.tolist(),
        }


def simulate(instance: Instance, rank: int, *, rounds: int, V: float, seed: int = 0,
             avg_latency_budget_s: float | None = None, callback: Callback | None = None,
             **controller_options: Any) -> SimulationReport:
    """Run the online stage over ``rounds`` i.i.d. block-fading rounds.

    Round t uses ``draw_channel(instance, seed, round=t)`` and
    :func:`fedopt.digital.snr_hz`; the controller starts with Q(0) = 0.

    Parameters
    ----------
    callback
        ``callback(record) -> bool | None`` after each round, with ``round`` (t, 0-based),
        ``latency_s``, ``queue_s`` (Q(t + 1)), ``drop_error``, ``mean_kept`` and ``status``
        (e.g. to advance a progress bar); True stops: the report covers the rounds run.
    controller_options
        Passed to :class:`~fedopt.solvers.tsfa.TSFAController` (``scores``, ``exact``, ...).

    Returns
    -------
    SimulationReport
        The time averages, the telescoping bound and the per-round series.

    Raises
    ------
    InvalidArgumentError
        rounds < 1, or a bad controller option.
    """
    rounds = check_count(rounds, "rounds")
    run = SolverRun(METHOD, callback=callback, keep_history=False)
    ctl = TSFAController(instance, rank, V=V, avg_latency_budget_s=avg_latency_budget_s,
                         **controller_options)
    rows = []  # one row of _COLUMNS per round
    for t in range(rounds):
        d = ctl.step(snr_hz(instance, draw_channel(instance, seed, round=t)))
        rows.append(_row(d))
        if run.record({"round": t, "latency_s": d.latency_s, "queue_s": d.queue_after,
                       "drop_error": d.drop_error, "mean_kept": float(d.kept.mean()),
                       "status": d.status.value}):
            break
    return _report(ctl, np.array(rows), seed, run)


#: The per-round figures the report is made of.
_COLUMNS = ("latency", "queue_before", "queue_after", "drop", "sparsity", "kept", "time", "gap",
            "certified")


def _row(d: RoundDecision) -> tuple[float, ...]:
    """A round's figures, in the order of :data:`_COLUMNS`."""
    gap = (d.objective - d.lower_bound) / d.objective if d.objective > 0 else 0.0
    return (d.latency_s, d.queue_before, d.queue_after, d.drop_error, float(d.sparsity.mean()),
            float(d.kept.mean()), d.wall_time_s, gap, float(d.optimal))


def _report(ctl: TSFAController, rows: np.ndarray, seed: int,
            run: SolverRun) -> SimulationReport:
    """The time averages of the rounds' figures (``rows``: one row of :data:`_COLUMNS` per
    round)."""
    col = dict(zip(_COLUMNS, rows.T, strict=True))
    n = rows.shape[0]
    latency, queue_after, times = col["latency"], col["queue_after"], col["time"]
    return SimulationReport(
        rounds=n, rank=int(ctl.rank), V=float(ctl.V), seed=int(seed),
        latency_budget_s=float(ctl.budget_s), avg_latency_s=float(latency.mean()),
        queue_bound_s=float(ctl.budget_s + queue_after[-1] / n),
        mean_queue=float(col["queue_before"].mean()), final_queue=float(queue_after[-1]),
        mean_sparsity=float(col["sparsity"].mean()), mean_kept=float(col["kept"].mean()),
        mean_sparsification_error=float(col["drop"].mean()),
        decide_time_s_median=float(np.median(times)), decide_time_s_max=float(times.max()),
        certified_rounds=int(col["certified"].sum()), max_relative_gap=float(col["gap"].max()),
        wall_time_s=run.elapsed_s, latency_s=latency.copy(), queue_s=queue_after.copy(),
        drop_error=col["drop"].copy())
