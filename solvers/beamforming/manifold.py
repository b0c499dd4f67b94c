"""Manifold receive beamforming (spec 04 §1) on the exact objective of spec 02 §2.

For each subcarrier m we minimize log f(A) over A ∈ C^{N_r × L} with ‖A‖_F = 1 (the unit sphere
of the realification R^{2 N_r L}; A is *not* restricted to orthonormal columns), the max over
devices smoothed by log-sum-exp at temperature τ (:mod:`~fedopt.solvers.beamforming.cost`), with
a continuation τ → τ_min, then a prox-linear polish on the true max
(:mod:`~fedopt.solvers.beamforming.descent`).

All subcarriers and all initial points are optimized together, one column per (start,
subcarrier) (the product of spheres ``Oblique(2 N_r L, M · n_starts)``): the cost is a sum of
independent terms, so its minimizer is the per-column minimizer, and the numpy work is batched
instead of looping over subcarriers in Python. The best final point per subcarrier is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.baselines import centroid, mrc_weakest
from fedopt.solvers.beamforming.cost import LogMaxCost
from fedopt.solvers.beamforming.descent import polish_prox_linear, stage_batched, stage_pymanopt
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.report import beamforming_result
from fedopt.solvers.result import Callback, SolveResult, SolverRun

__all__ = ["ManifoldOptions", "manifold_beamforming", "solve_manifold"]

#: engine name → one continuation stage (cost, A, τ, max_iterations, tol) → (A, iterations)
_ENGINES = {"batched": stage_batched, "pymanopt": stage_pymanopt}


@dataclass(frozen=True)
class ManifoldOptions:
    """Options of :func:`manifold_beamforming`.

    Attributes
    ----------
    temperatures : sequence of float
        Continuation schedule of the log-sum-exp temperature τ (log units), then the polish on
        the true max. Starting at τ = 1 (heavy smoothing removes most local minima) instead of
        0.1 took the worst of 4 equal-gain L = 2, N_r = 8, K = 50 draws from 1.25 to 1.06 × the
        many-restart reference (benchmarks/RESULTS.md, issue 17).
    max_iterations : int
        Conjugate-gradient iterations per continuation stage.
    min_gradient_norm : float
        Riemannian gradient norm (per column, log-cost units) that ends the last stage;
        earlier stages stop at max(min_gradient_norm, 1e-3 τ).
    n_random : int or None
        Random initial points added to the structured ones; default
        :func:`default_random_starts`: 8 for L = 1 (the L = 1 landscape has many local minima
        when devices are single-antenna and K is large, and a start costs little there); for
        L > 1, 6 up to K = 20 (2 before issue 17: on equal-gain L = 2, N_r = 8, K = 50, 6
        starts took the median of 6 draws from 1.083 to 1.000 × the best known value, at 1.6×
        the time), then one more per 3 devices up to 16 at K ≥ 50 (equal-gain L = 2, K = 50,
        N_r ∈ {8, 16, 32}: 16 starts put 18 of 30 draws within 1 % of the best known value, 6
        starts 10, at 1.6–2.1× the time).
    ridge : float
        Relative ridge on A^H G_k A.
    polish_margin : float
        Only starts whose objective is within this relative margin of the best start on their
        subcarrier are polished.
    polish_iterations, polish_tol : int, float
        Budget and stopping threshold (predicted decrease, log units) of the prox-linear polish.
    informed_tau : float
        The structured starts (centroid, MRC) and warm starts join the random ones at the first
        stage with τ at most this; random starts run every stage. Default 1: all from the first
        stage (on equal-gain L = 2, N_r = 8, K = 50 with 6 random starts, joining at 0.1 put 3
        of 6 draws within 1 % of the best known value, joining at 1 put 4 of 6).
    engine : {"batched", "pymanopt"}
        ``"batched"``: Riemannian Barzilai–Borwein with a step size per column (default, see
        benchmarks/RESULTS.md); ``"pymanopt"``: pymanopt's ConjugateGradient on the product
        manifold ``Oblique(2 N_r L, M · n_starts)``.
    """

    temperatures: Sequence[float] = (1.0, 0.3, 0.1, 0.03, 0.01)
    max_iterations: int = 150
    min_gradient_norm: float = 1e-7
    n_random: int | None = None
    ridge: float = 1e-12
    engine: str = "batched"
    polish_iterations: int = 200
    polish_tol: float = 1e-9
    polish_margin: float = 0.01
    informed_tau: float = 1.0

    def __post_init__(self) -> None:
        if self.engine not in _ENGINES:
            raise InvalidArgumentError(
                f"engine: got {self.engine!r}, must be 'batched' or 'pymanopt'")


def _as_list(init: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """One (M, N_r, L) array, or a sequence of them, as a list."""
    return [init] if isinstance(init, np.ndarray) and init.ndim == 3 else list(init)


def default_random_starts(k: int, streams: int) -> int:
    """Random starts of the manifold solver by default: 8 for L = 1; for L > 1, 6 up to K = 20,
    then one more per 3 devices up to 16 (K ≥ 50)."""
    if streams == 1:
        return 8
    return int(np.clip(6 + round((k - 20) / 3), 6, 16))


def _stacked_starts(problem: BeamformingProblem, init, n_random: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The initial points, unit norm, start-major (S·M, N_r, L), and their number S."""
    _, m, nr, _ = problem.shape
    lsz = problem.streams
    starts: list[np.ndarray] = []
    for a in [] if init is None else _as_list(init):
        a = np.asarray(a, dtype=complex)
        if a.shape != (m, nr, lsz):
            raise InvalidArgumentError(f"init: expected shape {(m, nr, lsz)}, got {a.shape}")
        starts.append(a)
    for _ in range(n_random):
        starts.append(rng.standard_normal((m, nr, lsz)) + 1j * rng.standard_normal((m, nr, lsz)))
    A = np.concatenate(starts, axis=0)
    return A / np.linalg.norm(A.reshape(A.shape[0], -1), axis=1)[:, None, None], len(starts)


def _best(problem: BeamformingProblem, A_all: np.ndarray, n_starts: int):
    """Pick, per subcarrier, the start with the lowest true objective f (and which won)."""
    m = problem.shape[1]
    A_all = A_all.reshape(n_starts, m, *A_all.shape[1:])
    vals = np.stack([problem.objective(a) for a in A_all])  # (S, M)
    won = np.argmin(vals, axis=0)
    best = A_all[won, np.arange(m)]
    best = best / np.linalg.norm(best.reshape(m, -1), axis=1)[:, None, None]
    return best, won


def _continuation(run: SolverRun, problem: BeamformingProblem, cost: LogMaxCost, A: np.ndarray,
                  options: ManifoldOptions, n_starts: int,
                  n_informed: int = 0) -> tuple[np.ndarray, int]:
    """The smoothing stages, τ from ``options.temperatures``; each stage is a record of the run
    (its callback may stop after any stage). The first ``n_informed`` starts (the structured
    ones and the warm starts) join at the first τ ≤ ``options.informed_tau`` (or the last
    stage): heavy smoothing would erase what makes them good, while it helps the random ones."""
    stage_fn = _ENGINES[options.engine]
    m = problem.shape[1]
    head = n_informed * m
    rand_cost = None
    if 0 < n_informed < n_starts:
        n_rand = n_starts - n_informed
        rand_cost = LogMaxCost(np.tile(problem.H, (1, n_rand, 1, 1)),
                               np.tile(np.log(problem.weights()), (1, n_rand)), ridge=cost.ridge)
    iterations = 0
    last = len(options.temperatures) - 1
    for stage, tau in enumerate(options.temperatures):
        tol = max(options.min_gradient_norm, 1e-3 * tau)
        if n_informed and tau > options.informed_tau and stage < last:
            its = 0  # only informed starts: nothing runs at this τ
            if rand_cost is not None:
                A = A.copy()
                A[head:], its = stage_fn(rand_cost, A[head:], tau, options.max_iterations, tol)
        else:
            A, its = stage_fn(cost, A, tau, options.max_iterations, tol)
        iterations += its
        vals = problem.objective(_best(problem, A, n_starts)[0])
        if run.record({"stage": stage, "stages": last + 1, "tau": tau, "iterations": its,
                       "objective": float(vals.sum())}):
            break
    return A, iterations


def _polish(run: SolverRun, problem: BeamformingProblem, cost: LogMaxCost, A: np.ndarray,
            options: ManifoldOptions, n_starts: int) -> tuple[np.ndarray, int]:
    """Prox-linear polish of the starts within ``polish_margin`` of the best start of their
    subcarrier; logged in the history (the callback sees the smoothing stages only)."""
    m = problem.shape[1]
    ymax = cost.values(A).max(axis=0).reshape(n_starts, m)
    alive = np.flatnonzero(ymax <= ymax.min(axis=0) + np.log1p(options.polish_margin))
    A, its = polish_prox_linear(cost, A, options.polish_iterations, options.polish_tol, alive)
    if run.history is not None:
        vals = problem.objective(_best(problem, A, n_starts)[0])
        run.history.append({"stage": "polish", "iterations": its, "objective": float(vals.sum())})
    return A, its


def manifold_beamforming(
    problem: BeamformingProblem,
    *,
    init: Sequence[np.ndarray] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    callback: Callback | None = None,
    options: ManifoldOptions | None = None,
) -> SolveResult:
    """Minimize f(A_m) on the unit sphere of C^{N_r × L} for every subcarrier (spec 04 §1).

    Parameters
    ----------
    problem
        The beamforming problem (all subcarriers of one channel draw).
    init
        Initial beamformers, each of shape (M, N_r, L) (e.g. centroid, MRC, a warm start);
        ``n_random`` random points are added. The best final point per subcarrier is kept.
    rng
        Generator for the random initial points (``None``: seed 0).
    callback
        ``callback(record) -> bool | None`` after each continuation stage with the record
        (stage, stages (their number), tau, iterations, objective); returning True stops the
        run (status STOPPED, no polish).
    options
        :class:`ManifoldOptions`.

    Returns
    -------
    SolveResult
        ``solution``: unit-norm beamformers (M, N_r, L); ``objective_per_subcarrier``: f(A_m).
    """
    options = options or ManifoldOptions()
    rng = rng if rng is not None else np.random.default_rng(0)
    run = SolverRun("beamforming", callback=callback)
    lsz = problem.streams
    n_random = options.n_random if options.n_random is not None else default_random_starts(
        problem.shape[0], lsz)
    A, n_starts = _stacked_starts(problem, init, n_random, rng)
    cost = LogMaxCost(np.tile(problem.H, (1, n_starts, 1, 1)),
                      np.tile(np.log(problem.weights()), (1, n_starts)), ridge=options.ridge)
    n_informed = 0 if init is None else len(_as_list(init))
    A, iterations = _continuation(run, problem, cost, A, options, n_starts, n_informed)
    if not run.stopped and options.polish_iterations > 0:
        A, its = _polish(run, problem, cost, A, options, n_starts)
        iterations += its
    best, starts_won = _best(problem, A, n_starts)
    return beamforming_result(
        run, problem, best,
        description=f"manifold optimization ({options.engine}, {n_starts} starts, "
                    f"{len(options.temperatures)} smoothing stages + polish)",
        iterations=iterations, evaluations=cost.evaluations,
        options={"temperatures": list(options.temperatures),
                 "max_iterations": options.max_iterations,
                 "polish_iterations": options.polish_iterations, "n_starts": n_starts,
                 "n_random": n_random, "engine": options.engine,
                 "winning_start": np.bincount(starts_won, minlength=n_starts).tolist()},
    )


def solve_manifold(
    problem: BeamformingProblem,
    *,
    init: Sequence[np.ndarray] | np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    callback: Callback | None = None,
    **options,
) -> SolveResult:
    """The ``"beamforming"`` method: :func:`manifold_beamforming` started from the centroid, the
    single-device-optimal MRC toward the weakest device, any ``init`` (warm starts, each
    (M, N_r, L)) and ``n_random`` random points drawn from ``rng`` (generator or seed; ``None``:
    OS entropy). ``options``: fields of :class:`ManifoldOptions`."""
    starts = [centroid(problem).solution,
              mrc_weakest(problem, single_device_optimal=True).solution]
    if init is not None:
        starts += _as_list(init)
    return manifold_beamforming(problem, init=starts, rng=np.random.default_rng(rng),
                                callback=callback, options=ManifoldOptions(**options))
