"""The certificate of the ``"multicast"`` method: the SDR dual of single-group multicast
beamforming, solved by a barrier method (docs/model.md §14).

For any y ≥ 0 with G(y) = Σ_k y_k G̃_k, weak duality of the SDR gives

    min {‖a‖² : aᴴG̃_k a ≥ 1 ∀k}  ≥  v_SDR  ≥  Σ_k y_k / λ_max(G(y)),

whatever produced y, so every bound returned here is Σ y / λ_max(G(y)) evaluated at the y it
names (one Hermitian eigenvalue problem), never an estimate.

The y come from the log-barrier path of the SDR dual max {Σ y : G(y) ⪯ I, y ≥ 0}: for t > 0
the minimizer of the self-concordant

    F_t(y) = −Σ y / t − log det(I − G(y)) − Σ log y_k

has X = t (I − G(y))⁻¹ primal feasible (tr(G̃_k X) = 1 + t / y_k) with duality gap t (N_r + K),
so the path reaches v_SDR as t → 0. Newton steps on F_t cost one eigendecomposition of
I − G(y) (N_r × N_r), one product B = Wᴴ S W (S = (I − G)⁻¹) for the gradient tr(S G̃_k) and
Hessian tr(S G̃_k S G̃_l) = ‖W_kᴴ S W_l‖²_F, and one K × K solve, all batched over the columns
(subcarriers); about 20–30 of them replace the hundreds of first-order steps on the nonsmooth
λ_max. Steps are damped (1 / (1 + λ), λ the Newton decrement: inside the Dikin ellipsoid, so
y stays strictly feasible), and t shrinks by ``_SHRINK`` once λ is small.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dual_bound"]

_SHRINK = 0.1  # t ← t·_SHRINK once the Newton decrement is below _CENTERED
_CENTERED = 1.0
_GAP = 1e-4  # relative barrier gap t (N_r + K) / Σ y at which a column stops
_LINE = 12  # safeguarded Newton steps of the line search
_FRACTION = 0.8  # a step shrinks no slack eigenvalue (or y_k) below 1 - _FRACTION of itself


def _gram(w: np.ndarray, y: np.ndarray, n_tx: int) -> np.ndarray:
    """G(y) = Σ_k y_k W_k W_kᴴ per column: (C, N_r, K N_t), (C, K) → (C, N_r, N_r)."""
    return (w * np.repeat(y, n_tx, axis=1)[:, None, :]) @ np.conj(np.swapaxes(w, 1, 2))


def _top(w: np.ndarray, y: np.ndarray, n_tx: int) -> np.ndarray:
    """λ_max(G(y)) per column."""
    return np.linalg.eigvalsh(_gram(w, y, n_tx))[:, -1]


def _normalized(y: np.ndarray) -> np.ndarray:
    y = np.maximum(np.asarray(y, dtype=float), 0.0)
    y = np.where(y.sum(axis=1, keepdims=True) > 0, y, 1.0)
    return y / y.sum(axis=1, keepdims=True)


def _slack(w: np.ndarray, y: np.ndarray, n_tx: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of I − G(y)."""
    n = w.shape[1]
    return np.linalg.eigh(np.eye(n)[None] - _gram(w, y, n_tx))


def _blocks(x: np.ndarray, k: int, n_tx: int, axis: int) -> np.ndarray:
    """Sums of x over the N_t consecutive entries of each device along ``axis`` (−1 or −2)."""
    if n_tx == 1:
        return x
    if axis == -1:
        return x.reshape(*x.shape[:-1], k, n_tx).sum(axis=-1)
    return x.reshape(*x.shape[:-2], k, n_tx, x.shape[-1]).sum(axis=-2)


def _newton(w: np.ndarray, n_tx: int, y: np.ndarray, t: np.ndarray | None, lam: np.ndarray,
            vec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Newton direction of F_t at y (C, K), its decrement, t and V = S½ W (S½ = vec lam^-½).
    ``t`` None: the t that makes y most central (least decrement), at most Σ y / (N_r + K)."""
    c, k = y.shape
    v = np.conj(np.swapaxes(vec, 1, 2) / np.sqrt(lam)[:, :, None]) @ w  # (C, N_r, K N_t)
    b = np.conj(np.swapaxes(v, 1, 2)) @ v  # Wᴴ S W (C, K N_t, K N_t)
    tr = _blocks(np.sum(v.real**2 + v.imag**2, axis=1), k, n_tx, -1)  # tr(S G̃_k)
    hess = _blocks(_blocks(b.real**2 + b.imag**2, k, n_tx, -1), k, n_tx, -2)
    hess[:, np.arange(k), np.arange(k)] += 1.0 / y**2
    r = tr - 1.0 / y
    try:
        sol = np.linalg.solve(hess, np.stack([r, np.ones_like(r)], axis=2))
    except np.linalg.LinAlgError:
        sol = np.full(r.shape + (2,), np.nan)
    if t is None:  # grad = r − (1/t) 1: the 1/t minimizing the decrement, kept > 0
        s_ = sol[..., 0].sum(axis=1) / sol[..., 1].sum(axis=1)
        cap = y.sum(axis=1) / (k + w.shape[1])  # the gap of a central y
        t = np.where(s_ > 0, np.minimum(1.0 / np.maximum(s_, 1e-300), cap), cap)
    d = sol[..., 1] / t[:, None] - sol[..., 0]
    dec = np.sqrt(np.maximum(-np.sum((r - 1.0 / t[:, None]) * d, axis=1), 0.0))
    bad = ~np.all(np.isfinite(d), axis=1)
    return np.where(bad[:, None], 0.0, d), np.where(bad, 0.0, dec), t, v


def _step(n_tx: int, y: np.ndarray, d: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The step along d that minimizes F_t on the line (safeguarded Newton on the derivative):
    with μ the eigenvalues of S½ G(d) S½ = V diag(d) Vᴴ and r = d / y, F_t(y + αd) − F_t(y) =
    −α Σd / t − Σ log(1 − αμ_i) − Σ log(1 + α r_k), convex in α ∈ [0, α_max); the step stays
    within _FRACTION of α_max."""
    mu = np.linalg.eigvalsh((v * np.repeat(d, n_tx, axis=1)[:, None, :])
                            @ np.conj(np.swapaxes(v, 1, 2)))
    z = np.concatenate([mu, -d / y], axis=1)  # F_t along the line: −αΣd/t − Σ log(1 − α z)
    lin = d.sum(axis=1) / t
    hi = np.minimum(_FRACTION / np.maximum(z.max(axis=1), 1e-300), 1e6)
    lo = np.zeros_like(hi)
    alpha = np.minimum(1.0, 0.5 * hi)
    for _ in range(_LINE):
        zq = z / (1.0 - alpha[:, None] * z)
        deriv = zq.sum(axis=1) - lin
        lo, hi = np.where(deriv < 0, alpha, lo), np.where(deriv < 0, hi, alpha)
        newton = alpha - deriv / np.sum(zq * zq, axis=1)
        moved = np.where((newton > lo) & (newton < hi), newton, 0.5 * (lo + hi))
        done = np.all(np.abs(moved - alpha) <= 1e-3 * alpha)
        alpha = moved
        if done:
            break
    return alpha


def _barrier_path(w: np.ndarray, n_tx: int, y_start: np.ndarray, iterations: int,
                  goal: np.ndarray) -> np.ndarray:
    """The y of the barrier path with the best bound after ``iterations`` Newton steps, per
    column (columns stop at the relative gap _GAP or once their bound reaches ``goal``)."""
    c, k = y_start.shape
    n = w.shape[1]
    # y_k ∝ 1 / tr(G̃_k): every device counts alike (the primal's multipliers start worse)
    y = 1.0 / _blocks(np.sum(w.real**2 + w.imag**2, axis=1), k, n_tx, -1)
    y *= 0.5 / _top(w, y, n_tx)[:, None]  # G(y) ⪯ I/2
    lam, vec = _slack(w, y, n_tx)
    t = np.full(c, np.nan)  # set at the first step: the most central t for the start
    best_y, best = y.copy(), np.sum(y, axis=1) / (1.0 - lam[:, 0])
    idx = np.flatnonzero(best < goal)
    for it in range(iterations):
        if idx.size == 0:
            break
        wi, yi = w[idx], y[idx]
        d, dec, ti, v = _newton(wi, n_tx, yi, None if it == 0 else t[idx], lam[idx],
                                   vec[idx])
        alpha = _step(n_tx, yi, d, ti, v)
        yi = yi + alpha[:, None] * d
        y[idx] = yi
        lam[idx], vec[idx] = _slack(wi, yi, n_tx)
        bound = np.sum(yi, axis=1) / (1.0 - lam[idx, 0])
        up = (bound > best[idx]) & (lam[idx, 0] > 0)
        best[idx[up]], best_y[idx[up]] = bound[up], yi[up]
        t[idx] = np.where(dec < _CENTERED, ti * _SHRINK, ti)
        gap = (t[idx] * (n + k) > _GAP * np.sum(yi, axis=1)) | (dec >= _CENTERED)
        live = (best[idx] < goal[idx]) & gap & (dec > 0) & (lam[idx, 0] > 0)
        idx = idx[live]
    return best_y


def dual_bound(w: np.ndarray, n_tx: int, y0: np.ndarray, iterations: int,
               target: np.ndarray | None = None, rtol: float = 1e-6) -> np.ndarray:
    """max(bound at ``y0``, bound at the best barrier iterate) per column (C,), where the bound
    at y is Σ y / λ_max(Σ_k y_k G̃_k) ≤ min {‖a‖² : g_k(a) ≥ 1} (module notes).

    ``y0`` (C, K) ≥ 0 (e.g. the primal's multipliers) is the first candidate and is mixed into
    the barrier method's start; ``iterations`` Newton steps follow (0: the bound at y0 only).
    A column stops once its bound is within ``rtol`` of ``target`` (C,) (the primal value:
    optimality is then certified); one whose bound at y0 is already there takes no step."""
    y_start = _normalized(y0)
    best = 1.0 / _top(w, y_start, n_tx)
    if iterations <= 0:
        return best
    goal = np.full(best.shape, np.inf) if target is None else np.asarray(target) / (1 + rtol)
    todo = np.flatnonzero(best < goal)  # the others are certified by y0 already
    if todo.size == 0:
        return best
    y = _barrier_path(w[todo], n_tx, y_start[todo], iterations, goal[todo])
    best = best.copy()
    best[todo] = np.maximum(best[todo], np.sum(y, axis=1) / _top(w[todo], y, n_tx))
    return best
