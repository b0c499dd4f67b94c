"""The smoothed log-max cost of the manifold beamforming solver (spec 04 §1) and its gradients.

For each column (a subcarrier, or a (start, subcarrier) pair when starts are stacked) and
A ∈ C^{N_r × L},

    log f(A) = log σ² + log ‖A‖² + max_k y_k(A),   y_k = log c_k + log tr((A^H G_k A)^{-1}),

with c_k = φ_k² / P_{k,m}. Working with logarithms makes the cost of every subcarrier
dimensionless, so subcarriers with very different channel gains share one step-size scale. The
max is smoothed by log-sum-exp at temperature τ,

    LSE_τ(y) = τ log Σ_k exp(y_k / τ),     max y ≤ LSE_τ(y) ≤ max y + τ log K.

Euclidean gradient (as 2 ∂/∂A*) of t_k = tr(C_k^{-1}), C_k = A^H G_k A: −2 G_k A C_k^{-2}
(spec 02 §2), so ∇ y_k = −2 G_k A C_k^{-2} / t_k and ∇ log ‖A‖² = 2A / ‖A‖²; the total is
orthogonal to A (scale invariance), so the Riemannian gradient on the sphere equals it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LogMaxCost", "to_real", "from_real"]

_RIDGE_FLOOR = 1e-100  # absolute (H is normalized per column): cinv² stays far from overflow


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
