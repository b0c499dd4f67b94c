"""Manifold receive beamforming (spec 04 §1) on the exact objective of spec 02 §2.

For each subcarrier m we minimize, over A ∈ C^{N_r × L} with ‖A‖_F = 1 (the unit sphere of the
realification R^{2 N_r L}; A is *not* restricted to orthonormal columns),

    log f(A) = log σ² + log ‖A‖² + max_k y_k(A),   y_k = log c_k + log tr((A^H G_k A)^{-1}),

with c_k = φ_k² / P_{k,m}. Working with logarithms makes the cost of every subcarrier
dimensionless, so subcarriers with very different channel gains share one step-size scale. The
max is smoothed by log-sum-exp at temperature τ,

    LSE_τ(y) = τ log Σ_k exp(y_k / τ),     max y ≤ LSE_τ(y) ≤ max y + τ log K,

with a continuation τ → τ_min; the last stage at τ_min ≈ 1e-4 is the polish on the true max
(it certifies max y within τ_min log K of the smoothed optimum).

Euclidean gradient (as 2 ∂/∂A*) of t_k = tr(C_k^{-1}), C_k = A^H G_k A: −2 G_k A C_k^{-2}
(spec 02 §2), so ∇ y_k = −2 G_k A C_k^{-2} / t_k and ∇ log ‖A‖² = 2A / ‖A‖²; the total is
orthogonal to A (scale invariance), so the Riemannian gradient on the sphere equals it.

All subcarriers and all initial points are optimized in one pymanopt run on
``Oblique(2 N_r L, M · n_starts)`` (a product of spheres, one column per (start, subcarrier)):
the cost is a sum of independent terms, so its minimizer is the per-column minimizer, and the
numpy work is batched instead of looping pymanopt over subcarriers in Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedopt.solvers._report import beamforming_result
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult, Status

__all__ = ["ManifoldOptions", "LogMaxCost", "manifold_beamforming", "to_real", "from_real"]


def to_real(A: np.ndarray) -> np.ndarray:
    """Realify beamformers (M, N_r, L) complex → (2 N_r L, M) real (columns = subcarriers)."""
    m = A.shape[0]
    flat = A.reshape(m, -1)
    return np.concatenate([flat.real, flat.imag], axis=1).T.copy()


def from_real(X: np.ndarray, n_rx: int, n_streams: int) -> np.ndarray:
    """Inverse of :func:`to_real`: (2 N_r L, M) real → (M, N_r, L) complex."""
    half = n_rx * n_streams
    cplx = X[:half].T + 1j * X[half:].T
    return cplx.reshape(X.shape[1], n_rx, n_streams)


class LogMaxCost:
    """Smoothed log-objective and its gradient, batched over columns (subcarriers × starts).

    Parameters
    ----------
    H : ndarray (K, M', N_r, N_t)
        Channels, one per column (M' = M · n_starts when starts are stacked).
    log_c : ndarray (K, M')
        log c_{k,m} = log(φ_k² / P_{k,m}).
    ridge : float
        Relative Tikhonov term added to A^H G_k A (devices in deep fade make it ill-conditioned).
    """

    def __init__(self, H: np.ndarray, log_c: np.ndarray, ridge: float = 1e-12):
        # normalize the channel scale per column: log f only shifts by a constant per column
        scale = np.sqrt(np.mean(np.abs(H) ** 2, axis=(0, 2, 3)))  # (M',)
        scale = np.where(scale > 0, scale, 1.0)
        self.H = H / scale[None, :, None, None]
        k, cols, nr, nt = self.H.shape
        # per column, all devices side by side: H_cat = [H_1, …, H_K] (N_r × K N_t), so that
        # the products with A and the sum over devices of the gradient are one GEMM per column
        self.Hcat = np.ascontiguousarray(np.moveaxis(self.H, 0, 2).reshape(cols, nr, k * nt))
        self.Hhcat = np.ascontiguousarray(np.conj(np.swapaxes(self.Hcat, -1, -2)))
        self.log_c = log_c
        self.ridge = ridge
        self.evaluations = 0

    def device_terms(self, A: np.ndarray, cols: np.ndarray | None = None):
        """t_k = tr((A^H G_k A)^{-1}) and the pieces needed for the gradient."""
        hh = self.Hhcat if cols is None else self.Hhcat[cols]
        k, nt = self.H.shape[0], self.H.shape[3]
        hha = (hh @ A).reshape(A.shape[0], k, nt, A.shape[2]).swapaxes(0, 1)  # (K, M', N_t, L)
        c = np.conj(np.swapaxes(hha, -1, -2)) @ hha  # (K, M', L, L)
        lsz = c.shape[-1]
        tr = np.real(np.diagonal(c, axis1=-2, axis2=-1).sum(-1))
        # the floor keeps c invertible when A is exactly orthogonal to a device (tr = 0, e.g.
        # a centroid/MRC start on orthogonal channels); it is far below any generic ridge
        c = c + np.maximum(self.ridge * tr / lsz, _RIDGE_FLOOR)[..., None, None] * np.eye(lsz)
        cinv = 1.0 / c if lsz == 1 else np.linalg.inv(c)  # L = 1: a scalar reciprocal
        t = np.real(np.diagonal(cinv, axis1=-2, axis2=-1).sum(-1))  # (K, M')
        return hha, cinv, t

    def values(self, A: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """y_k + log ‖A‖² per device and column, shape (K, columns)."""
        _, _, t = self.device_terms(A, cols)
        log_c = self.log_c if cols is None else self.log_c[:, cols]
        return log_c + np.log(t) + np.log(np.sum(np.abs(A) ** 2, axis=(1, 2)))[None]

    def device_gradients(self, A: np.ndarray,
                         cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-device values (K, C) and Euclidean gradients (K, C, N_r, L) of y_k + log ‖A‖²."""
        hha, cinv, t = self.device_terms(A, cols)
        norm2 = np.sum(np.abs(A) ** 2, axis=(1, 2))
        log_c = self.log_c if cols is None else self.log_c[:, cols]
        y = log_c + np.log(t) + np.log(norm2)[None]
        h = self.H if cols is None else self.H[:, cols]
        z = (hha @ (cinv @ cinv)) / t[..., None, None]
        grad = -2.0 * (h @ z) + (2.0 * A / norm2[:, None, None])[None]
        return y, grad

    def __call__(self, A: np.ndarray, tau: float,
                 cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (LSE_τ per column, Euclidean gradient (columns, N_r, L) as 2∂/∂A*).

        ``cols`` selects a subset of the columns (A then holds only those columns).
        """
        self.evaluations += 1
        hha, cinv, t = self.device_terms(A, cols)
        norm2 = np.sum(np.abs(A) ** 2, axis=(1, 2))
        log_c = self.log_c if cols is None else self.log_c[:, cols]
        y = log_c + np.log(t) + np.log(norm2)[None]
        ymax = y.max(axis=0)
        w = np.exp((y - ymax) / tau)
        sw = w.sum(axis=0)
        lse = ymax + tau * np.log(sw)
        p = w / sw  # softmax weights (K, M')
        z = hha @ (cinv @ cinv)  # (K, M', N_t, L)
        z = z * (p / t)[..., None, None]
        hc = self.Hcat if cols is None else self.Hcat[cols]
        zc = z.swapaxes(0, 1).reshape(A.shape[0], -1, A.shape[2])  # (M', K N_t, L)
        grad = -2.0 * (hc @ zc) + 2.0 * A / norm2[:, None, None]
        return lse, grad


@dataclass(frozen=True)
class ManifoldOptions:
    """Options of :func:`manifold_beamforming`.

    Attributes
    ----------
    temperatures : sequence of float
        Continuation schedule of the log-sum-exp temperature τ (log units); the last one is the
        polish on the true max.
    max_iterations : int
        Conjugate-gradient iterations per continuation stage.
    min_gradient_norm : float
        Riemannian gradient norm (per column, log-cost units) that ends the last stage;
        earlier stages stop at max(min_gradient_norm, 1e-3 τ).
    n_random : int or None
        Random initial points added to the structured ones; default 8 for L = 1 (the L = 1
        landscape has many local minima when devices are single-antenna and K is large, and
        a start costs little there) and 2 for L > 1.
    ridge : float
        Relative ridge on A^H G_k A.
    polish_margin : float
        Only starts whose objective is within this relative margin of the best start on their
        subcarrier are polished.
    polish_iterations, polish_tol : int, float
        Budget and stopping threshold (predicted decrease, log units) of the prox-linear polish.
    engine : {"batched", "pymanopt"}
        ``"batched"``: Riemannian Barzilai–Borwein with a step size per column (default, see
        benchmarks/RESULTS.md); ``"pymanopt"``: pymanopt's ConjugateGradient on the product
        manifold ``Oblique(2 N_r L, M · n_starts)``.
    """

    temperatures: Sequence[float] = (0.1, 0.01)
    max_iterations: int = 150
    min_gradient_norm: float = 1e-7
    n_random: int | None = None
    ridge: float = 1e-12
    engine: str = "batched"
    polish_iterations: int = 200
    polish_tol: float = 1e-9
    polish_margin: float = 0.01


def _run_stage_pymanopt(cost: LogMaxCost, A0: np.ndarray, tau: float, options: ManifoldOptions,
                        tol: float) -> tuple[np.ndarray, int]:
    """One continuation stage with pymanopt's Riemannian CG on Oblique(2 N_r L, columns)."""
    import pymanopt
    from pymanopt.manifolds import Oblique
    from pymanopt.optimizers import ConjugateGradient

    _, nr, lsz = A0.shape
    X0 = to_real(A0)
    manifold = Oblique(*X0.shape)

    @pymanopt.function.numpy(manifold)
    def f(X):
        lse, _ = cost(from_real(X, nr, lsz), tau)
        return float(lse.sum())

    @pymanopt.function.numpy(manifold)
    def egrad(X):
        _, g = cost(from_real(X, nr, lsz), tau)
        return to_real(g)

    problem = pymanopt.Problem(manifold, f, euclidean_gradient=egrad)
    opt = ConjugateGradient(max_iterations=options.max_iterations,
                            min_gradient_norm=tol * np.sqrt(X0.shape[1]),
                            verbosity=0)
    res = opt.run(problem, initial_point=X0)
    return from_real(res.point, nr, lsz), res.iterations


def _run_stage_batched(cost: LogMaxCost, A0: np.ndarray, tau: float, options: ManifoldOptions,
                       tol: float) -> tuple[np.ndarray, int]:
    """One continuation stage of Riemannian Barzilai–Borwein descent with a per-column
    non-monotone Armijo backtracking line search.

    Every column (a (start, subcarrier) pair) has its own step size and its own stopping test,
    and only the columns still running are evaluated, so columns with different curvature do
    not slow each other down (a single line search on the product manifold, as in pymanopt's
    optimizers, couples them). The geometry is that of pymanopt's ``Oblique`` manifold: tangent
    projection ξ − Re⟨x, ξ⟩ x and the normalization retraction.
    """
    A = A0.copy()
    idx = np.arange(A.shape[0])
    f, g = cost(A, tau)
    g = _project(A, g)
    gn2 = _sq(g)
    alpha = 1.0 / np.maximum(np.sqrt(gn2), 1e-300)  # first step of length ~1 rad
    memory = np.tile(f, (_NONMONOTONE, 1))
    it = 0
    while it < options.max_iterations:
        it += 1
        keep = gn2 > tol**2
        if not keep.all():
            idx, f, g, gn2, alpha, memory = (idx[keep], f[keep], g[keep], gn2[keep], alpha[keep],
                                             memory[:, keep])
        if idx.size == 0:
            break
        a_cur = A[idx]
        ref = memory.max(axis=0)
        step = alpha.copy()
        done = np.zeros(idx.size, dtype=bool)
        a_new, f_new, g_new = a_cur.copy(), f.copy(), g.copy()
        for _ in range(_MAX_BACKTRACKS):
            todo = np.flatnonzero(~done)
            a_try = _retract(a_cur[todo] - step[todo, None, None] * g[todo])
            f_try, g_try = cost(a_try, tau, idx[todo])
            ok = f_try <= ref[todo] - _ARMIJO * step[todo] * gn2[todo]
            sel = todo[ok]
            a_new[sel], f_new[sel], g_new[sel] = a_try[ok], f_try[ok], g_try[ok]
            done[sel] = True
            if done.all():
                break
            step[~done] *= 0.25
        g_new = _project(a_new, g_new)
        s = a_new - a_cur
        y = g_new - _project(a_new, g)
        sy = np.abs(np.real(np.sum(np.conj(s) * y, axis=(1, 2))))
        bb = np.where(sy > 0, _sq(s) / np.maximum(sy, 1e-300), 10 * step)
        alpha = np.where(done, np.clip(bb, 1e-12, 1e12), 0.0)
        A[idx] = a_new
        f, g, gn2 = f_new, g_new, np.where(done, _sq(g_new), 0.0)  # stalled columns stop
        memory = np.roll(memory, 1, axis=0)
        memory[0] = f
    return A, it


def _simplex_projection(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row of ``v`` (C, K) onto the probability simplex."""
    u = -np.sort(-v, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    ks = np.arange(1, v.shape[1] + 1)
    cond = u - css / ks > 0
    rho = v.shape[1] - 1 - np.argmax(cond[:, ::-1], axis=1)
    theta = css[np.arange(v.shape[0]), rho] / (rho + 1)
    return np.maximum(v - theta[:, None], 0.0)


def _polish_prox_linear(cost: LogMaxCost, A0: np.ndarray, options: ManifoldOptions,
                        idx: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Polish on the true max: prox-linear steps for max_k y_k(A) on the sphere.

    Each step minimizes the linearized max plus a proximal term,
    d = argmin_d max_k (y_k + ⟨g_k, d⟩) + ‖d‖² / (2η), whose dual is the simplex QP
    max_{λ ∈ Δ} λᵀy − (η/2) λᵀQλ with Q_{kj} = Re⟨g_k, g_j⟩ (g_k the Riemannian gradients);
    then d = −η Σ_k λ_k g_k. A step is accepted when the true max falls by at least a tenth of
    the predicted decrease; η grows after a success and shrinks after a failure (trust-region
    logic). This handles the many devices that tie at a minimax optimum, where gradient steps on
    a smoothed max stall.
    """
    A = A0.copy()
    idx = np.arange(A.shape[0]) if idx is None else np.asarray(idx)
    eta = np.full(idx.size, 0.1)
    lam = None
    it = 0
    while it < options.polish_iterations:
        it += 1
        a_cur = A[idx]
        y, g = cost.device_gradients(a_cur, idx)  # (K, C), (K, C, N_r, L)
        g = g - np.real(np.sum(np.conj(a_cur)[None] * g, axis=(2, 3)))[..., None, None] * a_cur
        gf = g.reshape(g.shape[0], g.shape[1], -1)
        q = np.real(np.einsum("kcn,jcn->ckj", np.conj(gf), gf))  # (C, K, K)
        yc = y.T  # (C, K)
        fmax = yc.max(axis=1)
        lam = _solve_simplex_qp(yc - fmax[:, None], q, eta, lam)  # warm start
        d = -eta[:, None, None] * np.einsum("ck,kcrl->crl", lam, g)
        lin = yc + np.real(np.einsum("kcn,cn->ck", np.conj(gf), d.reshape(d.shape[0], -1)))
        pred = fmax - (lin.max(axis=1) + _sq(d) / (2 * eta))
        a_try = _retract(a_cur + d)
        y_try = cost.values(a_try, idx)
        actual = fmax - y_try.max(axis=0)
        rho = np.where(pred > 0, actual / np.where(pred > 0, pred, 1.0), -1.0)
        ok = rho >= 0.1
        A[idx[ok]] = a_try[ok]
        # trust-region update of η: grow on a good model fit, shrink on a poor one
        eta = np.where(rho >= 0.75, np.minimum(eta * 2.0, 1e3),
                       np.where(rho >= 0.25, eta, eta * 0.3))
        # stop a column when the model predicts (almost) no decrease; an inexact QP solution
        # (pred <= 0) only shrinks η
        live = ~((pred >= 0) & (pred < options.polish_tol)) & (eta > 1e-12)
        idx, eta, lam = idx[live], eta[live], lam[live]
        if idx.size == 0:
            break
    return A, it


def _solve_simplex_qp(y: np.ndarray, q: np.ndarray, eta: np.ndarray, lam0) -> np.ndarray:
    """max_{λ ∈ Δ} λᵀy − (η/2) λᵀQλ for a batch, by accelerated projected gradient."""
    c, k = y.shape
    lip = eta * np.linalg.norm(q, ord=2, axis=(1, 2)) + 1e-12
    lam = np.full((c, k), 1.0 / k) if lam0 is None else lam0
    z, t = lam.copy(), 1.0
    for i in range(_QP_ITERATIONS):
        grad = y - eta[:, None] * np.einsum("ckj,cj->ck", q, z)
        new = _simplex_projection(z + grad / lip[:, None])
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        z = new + ((t - 1) / t_new) * (new - lam)
        if i % 10 == 9 and np.max(np.abs(new - lam)) < 1e-12:
            lam = new
            break
        lam, t = new, t_new
    return lam


_QP_ITERATIONS = 100
_RIDGE_FLOOR = 1e-100  # absolute (H is normalized per column): cinv² stays far from overflow
_NONMONOTONE = 5
_MAX_BACKTRACKS = 20
_ARMIJO = 1e-4


def _sq(x: np.ndarray) -> np.ndarray:
    return np.sum(np.abs(x) ** 2, axis=(1, 2))


def _project(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Tangent projection on the unit sphere of C^{N_r × L} seen as R^{2 N_r L}."""
    return v - np.real(np.sum(np.conj(A) * v, axis=(1, 2)))[:, None, None] * A


def _retract(A: np.ndarray) -> np.ndarray:
    return A / np.sqrt(_sq(A))[:, None, None]


def manifold_beamforming(
    problem: BeamformingProblem,
    *,
    init: Sequence[np.ndarray] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    callback: Callable[[dict], bool | None] | None = None,
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
        Generator for the random initial points.
    callback
        Called after each continuation stage with a dict (stage, tau, objective); returning
        True stops the run (status STOPPED).
    options
        :class:`ManifoldOptions`.

    Returns
    -------
    SolveResult
        ``solution``: unit-norm beamformers (M, N_r, L); ``objective_per_subcarrier``: f(A_m).
    """
    options = options or ManifoldOptions()
    rng = rng if rng is not None else np.random.default_rng(0)
    t0 = time.perf_counter()
    k, m, nr, _ = problem.shape
    lsz = problem.streams
    starts: list[np.ndarray] = []
    if init is not None:
        items = [init] if isinstance(init, np.ndarray) and init.ndim == 3 else list(init)
        for a in items:
            a = np.asarray(a, dtype=complex)
            if a.shape != (m, nr, lsz):
                raise ValueError(f"init: expected shape {(m, nr, lsz)}, got {a.shape}")
            starts.append(a)
    n_random = options.n_random if options.n_random is not None else (8 if lsz == 1 else 2)
    for _ in range(n_random):
        starts.append(rng.standard_normal((m, nr, lsz)) + 1j * rng.standard_normal((m, nr, lsz)))
    n_starts = len(starts)
    A = np.concatenate(starts, axis=0)  # (S·M, N_r, L): start-major
    A = A / np.linalg.norm(A.reshape(A.shape[0], -1), axis=1)[:, None, None]
    log_c = np.log(problem.weights())  # (K, M)
    cost = LogMaxCost(np.tile(problem.H, (1, n_starts, 1, 1)), np.tile(log_c, (1, n_starts)),
                      ridge=options.ridge)
    run_stage = {"batched": _run_stage_batched, "pymanopt": _run_stage_pymanopt}.get(
        options.engine)
    if run_stage is None:
        raise ValueError(f"engine: got {options.engine!r}, must be 'batched' or 'pymanopt'")
    history: list[dict] = []
    iterations = 0
    status = Status.CONVERGED
    for stage, tau in enumerate(options.temperatures):
        A, its = run_stage(cost, A, tau, options, max(options.min_gradient_norm, 1e-3 * tau))
        iterations += its
        vals = problem.objective(_best(problem, A, n_starts)[0])
        record = {"stage": stage, "tau": tau, "iterations": its, "objective": float(vals.sum())}
        history.append(record)
        if callback is not None and callback(record):
            status = Status.STOPPED
            break
    if status is not Status.STOPPED and options.polish_iterations > 0:
        # polish only the starts within polish_margin of the best start of their subcarrier
        ymax = cost.values(A).max(axis=0).reshape(n_starts, m)
        alive = np.flatnonzero(ymax <= ymax.min(axis=0) + np.log1p(options.polish_margin))
        A, its = _polish_prox_linear(cost, A, options, alive)
        iterations += its
        vals = problem.objective(_best(problem, A, n_starts)[0])
        history.append({"stage": "polish", "iterations": its, "objective": float(vals.sum())})
    best, starts_won = _best(problem, A, n_starts)
    return beamforming_result(
        "beamforming", problem, best, t0,
        description=f"manifold optimization ({options.engine}, {n_starts} starts, "
                    f"{len(options.temperatures)} smoothing stages + polish)",
        iterations=iterations, evaluations=cost.evaluations,
        override=Status.STOPPED if status is Status.STOPPED else None, history=history,
        options={"temperatures": list(options.temperatures),
                 "max_iterations": options.max_iterations,
                 "polish_iterations": options.polish_iterations, "n_starts": n_starts,
                 "n_random": n_random, "engine": options.engine,
                 "winning_start": np.bincount(starts_won, minlength=n_starts).tolist()},
    )


def _best(problem: BeamformingProblem, A_all: np.ndarray, n_starts: int):
    """Pick, per subcarrier, the start with the lowest true objective f."""
    m = problem.shape[1]
    A_all = A_all.reshape(n_starts, m, *A_all.shape[1:])
    vals = np.stack([problem.objective(a) for a in A_all])  # (S, M)
    won = np.argmin(vals, axis=0)
    best = A_all[won, np.arange(m)]
    best = best / np.linalg.norm(best.reshape(m, -1), axis=1)[:, None, None]
    return best, won
