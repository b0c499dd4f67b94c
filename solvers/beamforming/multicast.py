"""The ``"multicast"`` method: L = 1 receive beamforming as single-group multicast beamforming,
with a certified dual bound (spec 02 §4–§5; docs/model.md §14).

With L = 1 and ZF precoders, f(a) = σ² ‖a‖² max_k c_k / (a^H G_k a), so per subcarrier

    f* = σ² min { ‖a‖² : a^H G̃_k a ≥ 1 ∀k },   G̃_k = G_k / c_k,

the max-min-fair single-group multicast QCQP (Sidiropoulos, Davidson & Luo 2006). The primal is
solved by path following on the smoothed max (:mod:`.newton`: first-order stages at large τ,
Newton stages at small τ) from random starts (with many devices, some of them from a hotter τ
first) and, from τ = 0.1 on, the informed ones (top
eigenvector of Σ_k G̃_k, MRC toward the weakest device, centroid, warm starts); columns that
reach the same point are merged after each stage, and only the best few per subcarrier go on
to the Newton stages.

**Certificate.** For any y ≥ 0, ‖a‖² ≥ aᴴ(Σ_k y_k G̃_k)a / λ_max(Σ_k y_k G̃_k) ≥ Σ_k y_k /
λ_max(Σ_k y_k G̃_k) on the feasible set (weak duality of the SDR dual), so

    f* ≥ σ² Σ_k y_k / λ_max(Σ_k y_k G̃_k)   for every y ≥ 0,

whatever produced y. The smoothed stationarity condition of the primal gives y_k = p_k / g_k
(p the softmax weights, g_k the gains): a is then an eigenvector of Σ_k y_k G̃_k with eigenvalue
Σ_k y_k, and the bound is tight iff that eigenvalue is the largest (the SDR is tight there).
Newton steps of a barrier method on the SDR dual max {Σ y : Σ_k y_k G̃_k ⪯ I, y ≥ 0}
(:mod:`.sdr_dual`) then raise the bound toward the SDR value v_SDR; every iterate's bound is
exact (one eigenvalue), and the best is kept. The result's bound is the maximum of that and the
single-device bound, with ``bound_kind = "sdr-dual"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.baselines import centroid, mrc_weakest
from fedopt.solvers.beamforming.bounds import single_device_bound
from fedopt.solvers.beamforming.first_order import first_order_stage, realify
from fedopt.solvers.beamforming.newton import MulticastData, newton_stage
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.report import beamforming_result
from fedopt.solvers.beamforming.sdr_dual import dual_bound
from fedopt.solvers.result import SolveResult, SolverRun

__all__ = ["MulticastOptions", "dual_bound", "multicast", "scaled_channels"]


@dataclass(frozen=True)
class MulticastOptions:
    """Options of :func:`multicast`.

    Attributes
    ----------
    n_random : int or None
        Random starts added to the informed ones (top eigenvector, MRC, centroid, warm
        starts). ``None``: max(8 ⌈K / N_r⌉, 1.28 (K − 50)) clipped to [16, 64] — the local
        minima multiply with the constraints per dimension and, past K = 50, with K itself
        (equal-gain N_r = 8, K = 100: 16 random starts put 20 % of the draws within 1 % of the
        best known value, 64 starts 80 %; N_r = 64, K = 100: 16 starts 5 of 10 held-out
        draws, 64 starts 7).
    temperatures : sequence of float
        Continuation schedule of the smoothing temperature τ (log units), decreasing; the last
        one bounds the smoothing error of the max by τ log K.
    merge_tol : float
        Two columns of a subcarrier with |⟨a_i, a_j⟩|² > 1 − merge_tol are the same point; one
        is dropped after each stage.
    informed_tau : float
        The informed starts (eigenvector, MRC, centroid, warm starts) join the random ones at
        the first stage with τ at most this.
    newton_below : float
        Stages with τ below this take Newton steps, the others first-order steps.
    first_order_iterations : int or None
        Barzilai–Borwein steps per first-order stage (at most). ``None``: 60 · K / 50 clipped to
        [60, 150] — with many constraints the columns need more steps to settle into a basin
        (equal-gain K ≥ 100: 150 steps instead of 60 put 49 instead of 32 of 80 table
        instances within 1 % of the best known value, at 1.3–1.4× the time).
    first_order_tol : float
        A column's first-order stage ends when its Riemannian gradient norm is below this
        times τ (log units).
    newton_iterations : int
        Newton steps per Newton stage (at most).
    newton_keep : int
        Columns per subcarrier that go on to the Newton stages: the ones with the lowest
        smoothed value at the first Newton temperature (there the ranking is nearly final).
    tol : float
        Newton decrement (log units) that ends a stage early.
    dual_iterations : int
        Newton steps of the barrier method on the SDR dual for the certificate
        (:mod:`.sdr_dual`; 0: the bound from the primal's multipliers only).
    dual_rtol : float
        A subcarrier's dual steps stop once its bound is within this relative distance of its
        primal value (certified to that accuracy).
    first_order_dtype : {"float32", "float64"}
        Precision of the first-order stages (:mod:`.first_order`; the Newton stages and the
        certificate are always in double precision).
    n_hot : int or None
        Random starts, besides the ``n_random`` ones, that begin at the hotter
        ``hot_temperatures`` and then follow ``temperatures``. ``None``: max(K − 34,
        1.28 (K − 50)) clipped to [0, 64] (none for K ≤ 34, 16 at K = 50, 64 from K = 100
        on). With many devices the smoothed max at τ = 1 is still
        sharp (it weighs the few weakest of K gains), and starts smoothed harder first reach
        other basins (equal-gain held-out draws, K ∈ {100, 200}: 45 → 71 of 80 within 1 % of
        the best known value, at 1.3–1.4× the time; benchmarks/RESULTS.md, issue 17).
    hot_temperatures : sequence of float
        The stages the hot starts take first, decreasing; values not above the first of
        ``temperatures`` are skipped.
    """

    n_random: int | None = None
    temperatures: Sequence[float] = (1.0, 0.3, 0.1, 0.03, 0.01, 1e-3, 1e-4)
    merge_tol: float = 1e-6
    informed_tau: float = 0.1
    newton_below: float = 0.05
    first_order_iterations: int | None = None
    first_order_tol: float = 1e-3
    newton_iterations: int = 12
    newton_keep: int = 4
    tol: float = 1e-10
    dual_iterations: int = 40
    dual_rtol: float = 1e-3
    first_order_dtype: str = "float32"
    n_hot: int | None = None
    hot_temperatures: Sequence[float] = (3.0,)

    def __post_init__(self) -> None:
        taus = list(self.temperatures)
        if not taus or any(not t > 0 for t in taus) or taus != sorted(taus, reverse=True):
            raise InvalidArgumentError(
                f"temperatures: got {taus!r}, must be a non-empty decreasing list of values > 0")
        if self.first_order_dtype not in ("float32", "float64"):
            raise InvalidArgumentError(f"first_order_dtype: got {self.first_order_dtype!r}, "
                                       "must be 'float32' or 'float64'")
        hot = list(self.hot_temperatures)
        if any(not t > 0 for t in hot) or hot != sorted(hot, reverse=True):
            raise InvalidArgumentError(f"hot_temperatures: got {hot!r}, must be a decreasing "
                                       "list of values > 0")
        for name in ("n_random", "n_hot"):
            if getattr(self, name) is not None:
                _check_count(name, getattr(self, name), 0)
        if self.first_order_iterations is not None:
            _check_count("first_order_iterations", self.first_order_iterations, 0)
        for name, low in (("newton_iterations", 0), ("dual_iterations", 0), ("newton_keep", 1)):
            _check_count(name, getattr(self, name), low)

    def first_order_budget(self, k: int) -> int:
        """Steps per first-order stage for K devices."""
        if self.first_order_iterations is not None:
            return int(self.first_order_iterations)
        return int(round(60 * min(max(k / 50, 1.0), 2.5)))

    def hot_starts(self, k: int, n_rx: int) -> int:
        """The number of random starts that begin at ``hot_temperatures``."""
        if self.n_hot is not None:
            return int(self.n_hot)
        return int(np.clip(max(k - 34, round(1.28 * (k - 50))), 0, 64))

    def random_starts(self, k: int, n_rx: int) -> int:
        """The number of random starts for K devices and N_r antennas."""
        if self.n_random is not None:
            return int(self.n_random)
        return int(np.clip(max(8 * -(-k // n_rx), round(1.28 * (k - 50))), 16, 64))


def _check_count(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InvalidArgumentError(f"{name}: got {value!r}, must be an integer >= {low}")


def scaled_channels(problem: BeamformingProblem) -> tuple[np.ndarray, np.ndarray]:
    """W (M, N_r, K N_t) with W_k = H_k / sqrt(c_k) / s_m, and the data scale s (M,).

    g_k(a) = ‖W_kᴴ a‖² is the scaled gain, and f(a) = σ² ‖a‖² / (s_m² min_k g_k(a)); s_m is the
    rms column norm of W, which makes the scaled gains O(1)."""
    k, m, nr, nt = problem.shape
    ht = problem.H / np.sqrt(problem.weights())[..., None, None]  # (K, M, N_r, N_t)
    w = np.moveaxis(ht, 0, 2).reshape(m, nr, k * nt)
    s = np.sqrt(np.mean(np.sum(np.abs(w) ** 2, axis=1), axis=1))
    return w / s[:, None, None], s


def _starts(problem: BeamformingProblem, w: np.ndarray, init, n_random: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm starts: the informed ones (S₁, M, N_r) (top eigenvector of Σ_k G̃_k, MRC toward
    the weakest device, the centroid, the warm starts) and the random ones (S₂, M, N_r)."""
    _, m, nr, _ = problem.shape
    top = np.linalg.eigh(w @ np.conj(np.swapaxes(w, 1, 2)))[1][:, :, -1]
    starts = [top, mrc_weakest(problem, single_device_optimal=True).solution[..., 0],
              centroid(problem).solution[..., 0]]
    inits = [] if init is None else ([init] if np.ndim(init) == 3 else list(init))
    for a in inits:
        a = np.asarray(a, dtype=complex)
        if a.shape != (m, nr, 1):
            raise InvalidArgumentError(f"init: expected shape {(m, nr, 1)}, got {a.shape}")
        starts.append(a[..., 0])
    informed = np.stack(starts)
    return (informed / np.linalg.norm(informed, axis=2, keepdims=True),
            _random_columns(rng, n_random, m, nr))


def _random_columns(rng: np.random.Generator, n: int, m: int, nr: int) -> np.ndarray:
    """n uniformly random unit-norm starts (n, M, N_r)."""
    rand = rng.standard_normal((n, m, nr)) + 1j * rng.standard_normal((n, m, nr))
    return rand / np.linalg.norm(rand, axis=2, keepdims=True)


def _distinct(a: np.ndarray, valid: np.ndarray, tol: float) -> np.ndarray:
    """The validity mask (M, S) after dropping, per subcarrier, every column that spans the same
    line as an earlier valid one (|⟨a_i, a_j⟩|² > 1 − tol: the same point up to phase, which is
    where starts that reached the same local minimum end up). a: (M, N_r, S) unit norm."""
    overlap = np.abs(np.conj(np.swapaxes(a, 1, 2)) @ a) ** 2  # (M, S, S)
    same = (overlap > 1.0 - tol) & valid[:, None, :] & valid[:, :, None]
    keep = valid.copy()
    for i in range(1, a.shape[2]):
        keep[:, i] &= ~np.any(same[:, i, :i] & keep[:, :i], axis=1)
    return keep


def _compact(a: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each subcarrier's valid columns first and cut to the largest count; the padding
    slots repeat a valid column (their results are masked out)."""
    order = np.argsort(~valid, axis=1, kind="stable")
    a = np.take_along_axis(a, order[:, None, :], axis=2)
    valid = np.take_along_axis(valid, order, axis=1)
    s = max(int(valid.sum(axis=1).max()), 1)
    a, valid = a[:, :, :s], valid[:, :s]
    return np.where(valid[:, None, :], a, a[:, :, :1]), valid


def _best_columns(w: np.ndarray, n_tx: int, a: np.ndarray, valid: np.ndarray, tau: float,
                  keep: int) -> np.ndarray:
    """The validity mask that keeps, per subcarrier, the ``keep`` valid columns with the lowest
    F_τ."""
    m, nr, s = a.shape
    value = MulticastData(np.repeat(w, s, axis=0), n_tx).smoothed(
        np.swapaxes(a, 1, 2).reshape(-1, nr), tau).reshape(m, s)
    value = np.where(valid, value, np.inf)
    rank = np.argsort(np.argsort(value, axis=1, kind="stable"), axis=1)
    return valid & (rank < keep)


def _first_order(channels: tuple[np.ndarray, np.ndarray], k: int, a: np.ndarray,
                 valid: np.ndarray, tau: float,
                 options: MulticastOptions) -> tuple[np.ndarray, int]:
    """A first-order stage (:mod:`.first_order`) on the valid columns of a (M, N_r, S);
    ``channels`` is :func:`~.first_order.realify` of the scaled channels."""
    nr = a.shape[1]
    mm, jj = np.nonzero(valid)
    cols = a[mm, :, jj]  # (N, N_r)
    x = np.concatenate([cols.real, cols.imag], axis=1).astype(channels[0].dtype)
    x, its = first_order_stage(channels, k, x, mm, tau, options.first_order_budget(k),
                               options.first_order_tol * tau)
    cols = x[:, :nr].astype(complex) + 1j * x[:, nr:]
    a = a.copy()
    a[mm, :, jj] = cols / np.linalg.norm(cols, axis=1, keepdims=True)
    return a, its


def _newton(w: np.ndarray, n_tx: int, a: np.ndarray, valid: np.ndarray, tau: float,
            options: MulticastOptions) -> tuple[np.ndarray, int]:
    """A Newton stage on the valid columns of a (M, N_r, S)."""
    mm, ss = np.nonzero(valid)
    flat, its = newton_stage(MulticastData(w[mm], n_tx), a[mm, :, ss], tau,
                             options.newton_iterations, options.tol)
    a = a.copy()
    a[mm, :, ss] = flat
    return a, its


def _path_following(problem: BeamformingProblem, w: np.ndarray, informed: np.ndarray,
                    rand: np.ndarray, hot: np.ndarray, options: MulticastOptions):
    """Continuation over τ; returns the final columns (M, N_r, S), their validity (M, S) and
    the iterations.

    Columns are (subcarrier, start) pairs. Random starts carry no information, so they go
    through every stage, heavy smoothing first: the ``hot`` ones from the first of
    ``hot_temperatures``, the others from the first of ``temperatures``; the informed starts
    join at the first τ ≤ ``informed_tau``, where smoothing no longer erases what makes them
    good. After each stage, columns that reached the same point as another column of their
    subcarrier are dropped (lossless: the rest of their path would be the same). First-order
    stages (O(N_r K) per step, cheap on many starts) come first, Newton stages (they converge
    where the smoothed max is ill-conditioned) on the survivors last."""
    k, _, _, n_tx = problem.shape
    channels = realify(w, np.float32 if options.first_order_dtype == "float32" else np.float64)
    taus = [float(t) for t in options.temperatures]
    waiting = [(options.informed_tau, informed), (taus[0], rand)]
    if hot.shape[0]:
        taus = [float(t) for t in options.hot_temperatures if t > taus[0]] + taus
        waiting.append((np.inf, hot))
    a = np.zeros(rand.shape[1:] + (0,), dtype=complex)  # (M, N_r, S)
    valid = np.ones(a.shape[::2], dtype=bool)
    iterations, pruned = 0, False
    for stage, tau in enumerate(taus):
        joining = [g for g in waiting if tau <= g[0] or stage == len(taus) - 1]
        waiting = [g for g in waiting if all(g is not j for j in joining)]
        for _, group in joining:
            a = np.concatenate([np.moveaxis(group, 0, 2), a], axis=2)
            valid = np.concatenate([np.ones((a.shape[0], group.shape[0]), bool), valid], axis=1)
        if a.shape[2] == 0:
            continue
        if tau >= options.newton_below:
            a, its = _first_order(channels, k, a, valid, tau, options)
        else:
            if not pruned:  # Newton steps cost O(N_r²) per column: on the best few only
                a, valid = _compact(a, _best_columns(w, n_tx, a, valid, tau,
                                                     options.newton_keep))
                pruned = True
            a, its = _newton(w, n_tx, a, valid, tau, options)
        iterations += its
        a, valid = _compact(a, _distinct(a, valid, options.merge_tol))
    return a, valid, iterations


def multicast(
    problem: BeamformingProblem,
    *,
    init: Sequence[np.ndarray] | np.ndarray | None = None,
    rng: np.random.Generator | int | None = None,
    **options,
) -> SolveResult:
    """L = 1 beamforming by smoothed Newton path following with a certified SDR-dual bound (see
    the module notes).

    Parameters
    ----------
    problem
        Beamforming problem with ``streams == 1``.
    init
        Warm starts, each (M, N_r, 1).
    rng
        Generator or seed for the random starts (``None``: OS entropy).
    **options
        Fields of :class:`MulticastOptions`.

    Returns
    -------
    SolveResult
        ``bound_per_subcarrier``: max(SDR-dual bound, single-device bound); ``bound_kind``:
        ``"sdr-dual"``; ``terms``: ``dual_bound`` (total of the dual bounds) and
        ``single_device_bound``.
    """
    if problem.streams != 1:
        raise InvalidArgumentError(
            f"multicast: streams = {problem.streams} is not supported; the method solves L = 1 "
            "(single-group multicast). Use 'beamforming' (manifold) for L > 1.")
    opts = MulticastOptions(**options)
    run = SolverRun("multicast")
    gen = np.random.default_rng(rng)
    k, m, nr, nt = problem.shape
    w, scale = scaled_channels(problem)
    n_random, n_hot = opts.random_starts(k, nr), opts.hot_starts(k, nr)
    informed, rand = _starts(problem, w, init, n_random, gen)
    hot = _random_columns(gen, n_hot, m, nr)  # after the others: they do not depend on n_hot
    n_starts = informed.shape[0] + rand.shape[0] + n_hot
    a, valid, iterations = _path_following(problem, w, informed, rand, hot, opts)
    gains = np.sum((np.abs(np.conj(np.swapaxes(w, 1, 2)) @ a) ** 2).reshape(m, k, nt, -1),
                   axis=2)  # (M, K, S)
    worst = np.where(valid, gains.min(axis=1), -np.inf)
    won = np.argmax(worst, axis=1)
    best, g = a[np.arange(m), :, won], gains[np.arange(m), :, won]
    # multipliers of the smoothed stationarity condition at the last τ (module notes)
    tau = float(opts.temperatures[-1])
    yv = -np.log(g)
    p = np.exp((yv - yv.max(axis=1, keepdims=True)) / tau)
    dual = dual_bound(w, nt, p / p.sum(axis=1, keepdims=True) / g, opts.dual_iterations,
                      target=1.0 / g.min(axis=1), rtol=opts.dual_rtol)
    sd = single_device_bound(problem)
    dual_f = problem.sigma2 * dual / scale**2
    return beamforming_result(
        run, problem, best[..., None],
        description=f"smoothed path following ({n_starts} starts, {n_hot} of them hot, "
                    f"{len(opts.temperatures)} stages)",
        bound=np.maximum(dual_f, sd), bound_kind="sdr-dual",
        options={"n_random": n_random, "n_hot": n_hot,
                 "temperatures": list(opts.temperatures),
                 "hot_temperatures": list(opts.hot_temperatures),
                 "first_order_iterations": opts.first_order_budget(k),
                 "merge_tol": opts.merge_tol,
                 "newton_iterations": opts.newton_iterations,
                 "dual_iterations": opts.dual_iterations},
        terms={"dual_bound": float(np.sum(dual_f)), "single_device_bound": float(np.sum(sd))},
        iterations=iterations, evaluations=iterations,
    )
