"""The engines of the ``"multicast"`` method: first-order and Newton stages of path following on
the smoothed L = 1 problem.

With L = 1 and ZF precoders the beamforming problem of one subcarrier is single-group multicast
beamforming (spec 02 §4): with g_k(a) = a^H G̃_k a, G̃_k = G_k / c_k,

    minimize over ‖a‖ = 1   max_k y_k(a),   y_k = −log g_k(a)           (f = σ² exp(max_k y_k)).

The max is smoothed by F_τ = τ log Σ_k exp(y_k / τ) (max y ≤ F_τ ≤ max y + τ log K), and F_τ is
minimized for a decreasing sequence of τ (path following, as in interior-point methods: each
stage is warm started from the last, so a few Newton steps suffice). Large τ averages the
devices' terms and removes most of the local minima that single-antenna devices with equal gains
create; the last τ makes F_τ within τ log K of the true max.

Realified (x = [Re a; Im a] ∈ R^{2N_r}), with p = softmax(y / τ), u_k = G̃_k a realified and
e_k = ∇y_k = 2x − 2u_k / g_k (tangent to the sphere since xᵀu_k = g_k), the Riemannian gradient
and Hessian of F_τ on the unit sphere are

    grad = Σ_k p_k e_k,
    Hess = 2P − 2P R(w) P + (1 + 1/τ) Σ_k p_k e_k e_kᵀ − (1/τ) grad gradᵀ,

P = I − x xᵀ, R(w) the realification of Σ_k w_k G̃_k, w_k = p_k / g_k (derived in
docs/model.md §14). Steps solve (Hess + x xᵀ + Jx (Jx)ᵀ + μ I) d = −grad (J: multiplication by
i, the phase direction along which F_τ is constant), with a Levenberg–Marquardt μ per column
and an Armijo backtracking line search on F_τ; a column whose system gives no descent direction
takes a scaled gradient step (:func:`newton_stage`, batched over columns). At large τ,
:func:`~fedopt.solvers.beamforming.first_order.first_order_stage` takes Barzilai–Borwein steps
instead, in real arithmetic and single precision.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MulticastData", "newton_stage"]

_ARMIJO = 1e-4
_BACKTRACKS = 30


class MulticastData:
    """The scaled L = 1 data of a batch of columns.

    Parameters
    ----------
    W : ndarray (C, N_r, K N_t) complex
        Per column, the devices' scaled channels side by side: columns k N_t .. (k+1) N_t − 1 are
        H_k / sqrt(c_k), so that g_k(a) = ‖W_kᴴ a‖².
    n_tx : int
        N_t.
    """

    def __init__(self, W: np.ndarray, n_tx: int):
        self.W = W
        self.Wh = np.conj(np.swapaxes(W, 1, 2))
        self.n_tx = n_tx
        self.k = W.shape[2] // n_tx

    def gains(self, a: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """g_k(a) per column, shape (C', K), for beamformers a (C', N_r)."""
        wh = self.Wh if cols is None else self.Wh[cols]
        z = (wh @ a[:, :, None])[..., 0]
        return np.sum((z.real**2 + z.imag**2).reshape(a.shape[0], self.k, self.n_tx), axis=2)

    def smoothed(self, a: np.ndarray, tau: float, cols: np.ndarray | None = None) -> np.ndarray:
        """F_τ(a) per column (a of unit norm)."""
        y = -np.log(np.maximum(self.gains(a, cols), 1e-300))
        ymax = y.max(axis=1)
        return ymax + tau * np.log(np.sum(np.exp((y - ymax[:, None]) / tau), axis=1))

    def derivatives(self, a: np.ndarray, tau: float, cols: np.ndarray):
        """(F_τ, realified gradient (C', 2N_r), Riemannian Hessian (C', 2N_r, 2N_r))."""
        full = cols.size == self.W.shape[0]  # every column: no gather of the channels
        w_, wh = (self.W, self.Wh) if full else (self.W[cols], self.Wh[cols])
        c, n = a.shape
        k, nt = self.k, self.n_tx
        z = (wh @ a[:, :, None])[..., 0]  # (C', K N_t)
        g = np.maximum(np.sum((z.real**2 + z.imag**2).reshape(c, k, nt), axis=2), 1e-300)
        y = -np.log(g)
        ymax = y.max(axis=1)
        ex = np.exp((y - ymax[:, None]) / tau)
        p = ex / ex.sum(axis=1, keepdims=True)
        f = ymax + tau * np.log(ex.sum(axis=1))
        u = np.einsum("cnkt,ckt->cnk", w_.reshape(c, n, k, nt), z.reshape(c, k, nt))  # G̃_k a
        ur = np.concatenate([u.real, u.imag], axis=1)  # (C', 2n, K)
        x = np.concatenate([a.real, a.imag], axis=1)  # (C', 2n)
        e = 2.0 * x[:, :, None] - 2.0 * ur / g[:, None, :]
        grad = np.einsum("cik,ck->ci", e, p)
        rw = (w_ * np.repeat(p / g, nt, axis=1)[:, None, :]) @ wh  # Σ_k w_k G̃_k (C', n, n)
        # Hess = 2P − 2PRP + (1 + 1/τ) Σ p e eᵀ − (1/τ) grad gradᵀ, with PRP = R − x vᵀ − v xᵀ,
        # v = Rx − (xᵀRx / 2) x; so Hess = (1 + 1/τ) Σ p e eᵀ − 2R + 2x(v − x)ᵀ + 2v xᵀ + 2I
        # − (1/τ) grad gradᵀ (rank-one terms added in place)
        rx = np.einsum("cik,ck->ci", ur, p / g)
        v = rx - 0.5 * np.sum(x * rx, axis=1, keepdims=True) * x
        hess = (1.0 + 1.0 / tau) * ((e * p[:, None, :]) @ np.swapaxes(e, 1, 2))
        hess[:, :n, :n] -= 2.0 * rw.real
        hess[:, n:, n:] -= 2.0 * rw.real
        hess[:, :n, n:] += 2.0 * rw.imag
        hess[:, n:, :n] -= 2.0 * rw.imag
        hess += x[:, :, None] * (2.0 * (v - x))[:, None, :]
        hess += (2.0 * v)[:, :, None] * x[:, None, :]
        hess -= (grad / tau)[:, :, None] * grad[:, None, :]
        hess.reshape(c, -1)[:, :: 2 * n + 1] += 2.0
        return f, grad, hess


def _retract(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _direction(a: np.ndarray, grad: np.ndarray, hess: np.ndarray,
               mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg–Marquardt Newton direction in the tangent space, complex (C', N_r); a scaled
    gradient step where the regularized system gives no descent direction."""
    c, n = a.shape
    x = np.concatenate([a.real, a.imag], axis=1)
    jx = np.concatenate([-a.imag, a.real], axis=1)
    scale = np.maximum(np.trace(hess, axis1=1, axis2=2) / (2 * n), 1e-12)
    sys_ = (hess + x[:, :, None] * x[:, None, :] + jx[:, :, None] * jx[:, None, :]
            + (mu * scale)[:, None, None] * np.eye(2 * n)[None])
    try:
        d = -np.linalg.solve(sys_, grad[:, :, None])[..., 0]
    except np.linalg.LinAlgError:
        d = np.full_like(grad, np.nan)
    bad = ~np.all(np.isfinite(d), axis=1) | (np.sum(d * grad, axis=1) >= 0)
    d[bad] = -grad[bad] / scale[bad, None]
    d -= np.sum(d * x, axis=1, keepdims=True) * x  # numerically tangent
    return d[:, :n] + 1j * d[:, n:], bad


def newton_stage(data: MulticastData, a: np.ndarray, tau: float, max_iterations: int,
                 tol: float) -> tuple[np.ndarray, int]:
    """Minimize F_τ from unit-norm ``a`` (C, N_r) for every column; returns (a, iterations).

    A column stops when its Newton decrement −gradᵀd falls below ``tol`` (log units) or its
    line search fails."""
    a = a.copy()
    idx = np.arange(a.shape[0])
    mu = np.full(idx.size, 1e-3)
    it = 0
    while it < max_iterations and idx.size:
        it += 1
        cur = a[idx]
        f, grad, hess = data.derivatives(cur, tau, idx)
        d, bad = _direction(cur, grad, hess, mu)
        slope = np.sum(np.concatenate([d.real, d.imag], axis=1) * grad, axis=1)  # < 0
        step = np.ones(idx.size)
        done = np.zeros(idx.size, dtype=bool)
        new = cur.copy()
        for _ in range(_BACKTRACKS):
            todo = np.flatnonzero(~done)
            trial = _retract(cur[todo] + step[todo, None] * d[todo])
            bar = f[todo] + _ARMIJO * step[todo] * slope[todo]
            ok = data.smoothed(trial, tau, idx[todo]) <= bar
            new[todo[ok]] = trial[ok]
            done[todo[ok]] = True
            if done.all():
                break
            step[~done] *= 0.5
        a[idx] = new
        mu = np.where(step == 1.0, np.maximum(mu / 4, 1e-10), np.minimum(mu * 4, 1e6))
        mu = np.where(bad, np.maximum(mu * 10, 1.0), mu)  # indefinite: lean on the gradient
        live = done & (-slope > tol)
        idx, mu = idx[live], mu[live]
    return a, it
