"""The descent engines of the manifold beamforming solver (spec 04 §1), batched over columns.

A column is one (start, subcarrier) pair: a point on the unit sphere of C^{N_r × L} seen as
R^{2 N_r L}. :func:`stage_batched` (default) and :func:`stage_pymanopt` run one continuation
stage on the smoothed cost at temperature τ; :func:`polish_prox_linear` polishes on the true max.
"""

from __future__ import annotations

import numpy as np

from fedopt.solvers.beamforming.cost import LogMaxCost, from_real, to_real

__all__ = ["stage_batched", "stage_pymanopt", "polish_prox_linear"]

_QP_ITERATIONS = 100
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


def stage_pymanopt(cost: LogMaxCost, A0: np.ndarray, tau: float, max_iterations: int,
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
    opt = ConjugateGradient(max_iterations=max_iterations,
                            min_gradient_norm=tol * np.sqrt(X0.shape[1]),
                            verbosity=0)
    res = opt.run(problem, initial_point=X0)
    return from_real(res.point, nr, lsz), res.iterations


def stage_batched(cost: LogMaxCost, A0: np.ndarray, tau: float, max_iterations: int,
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
    while it < max_iterations:
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


def polish_prox_linear(cost: LogMaxCost, A0: np.ndarray, max_iterations: int, tol: float,
                       idx: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Polish on the true max: prox-linear steps for max_k y_k(A) on the sphere.

    Each step minimizes the linearized max plus a proximal term,
    d = argmin_d max_k (y_k + ⟨g_k, d⟩) + ‖d‖² / (2η), whose dual is the simplex QP
    max_{λ ∈ Δ} λᵀy − (η/2) λᵀQλ with Q_{kj} = Re⟨g_k, g_j⟩ (g_k the Riemannian gradients);
    then d = −η Σ_k λ_k g_k. A step is accepted when the true max falls by at least a tenth of
    the predicted decrease; η grows after a success and shrinks after a failure (trust-region
    logic). This handles the many devices that tie at a minimax optimum, where gradient steps on
    a smoothed max stall. Columns ``idx`` (default all) are polished; a column stops when the
    model predicts a decrease below ``tol`` (log units).
    """
    A = A0.copy()
    idx = np.arange(A.shape[0]) if idx is None else np.asarray(idx)
    eta = np.full(idx.size, 0.1)
    lam = None
    it = 0
    while it < max_iterations:
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
        live = ~((pred >= 0) & (pred < tol)) & (eta > 1e-12)
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
