"""Over-the-air aggregation physics over MIMO-OFDM (spec 02 §1–§3).

Array conventions (all vectorized over subcarriers, no Python loop over M):

- ``H``: channels, complex, shape (K, M, N_r, N_t)
- ``A``: receive beamformers, complex, shape (M, N_r, L)
- ``B``: precoders, complex, shape (K, M, N_t, L)
- ``phi``: aggregation weights φ_k, shape (K,)
- ``p_sub``: per-subcarrier power budgets P_{k,m}, shape (K,) or (K, M)
- ``sigma2``: noise power per subcarrier σ² (watts)

Per subcarrier m the server estimates Σ_k φ_k s_{k,m} as A_m^H y_m with
y_m = Σ_k H_{k,m} B_{k,m} s_{k,m} + n_m, and

    MSE_m = Σ_k ‖A^H H_k B_k − φ_k I_L‖_F² + σ² ‖A‖_F²            (spec 02 §1)

Zero-forcing precoders B_k = φ_k H_k^H A (A^H G_k A)^{-1} make the first sum vanish, and the
scale-invariant objective is

    f(A) = σ² ‖A‖_F² · max_k φ_k² tr((A^H G_k A)^{-1}) / P_k        (spec 02 §2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedopt.errors import InfeasibleError, InvalidArgumentError

__all__ = [
    "effective_gram",
    "inverse_traces",
    "zf_precoders",
    "zf_design",
    "mse",
    "mse_per_stream",
    "objective",
    "device_costs",
    "symbol_count",
    "hermitian",
    "pack",
    "unpack",
    "transmit",
    "AggregationOutcome",
    "aggregate",
    "distortion",
]

#: Relative eigenvalue floor below which A^H G_k A is declared singular (device not reachable).
SINGULAR_RTOL = 1e-12


def hermitian(x: np.ndarray) -> np.ndarray:
    """Conjugate transpose of the last two axes (batched X^H)."""
    return np.conj(np.swapaxes(x, -1, -2))


def _check_shapes(A: np.ndarray, H: np.ndarray) -> tuple[int, int, int, int, int]:
    if A.ndim != 3:
        raise InvalidArgumentError(f"A: expected shape (M, N_r, L), got {A.shape}")
    if H.ndim != 4:
        raise InvalidArgumentError(f"H: expected shape (K, M, N_r, N_t), got {H.shape}")
    k, m, nr, nt = H.shape
    if A.shape[0] != m or A.shape[1] != nr:
        raise InvalidArgumentError(
            f"A: shape {A.shape} does not match H {H.shape}; expected ({m}, {nr}, L)")
    return k, m, nr, nt, A.shape[2]


def effective_gram(A: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (H_k^H A_m, A_m^H G_{k,m} A_m): shapes (K, M, N_t, L) and (K, M, L, L)."""
    _check_shapes(A, H)
    hha = hermitian(H) @ A[None]
    return hha, hermitian(hha) @ hha


def _inverse(c: np.ndarray) -> np.ndarray:
    """Batched inverse of Hermitian positive-definite L×L matrices with a singularity check.

    Raises
    ------
    InfeasibleError
        Naming the first (device, subcarrier) whose A^H G_k A is singular: the receive
        beamformer sees no L-dimensional signal from that device (all-zero channel, rank-deficient
        G_k with too many streams, or N_t < L).
    """
    c = 0.5 * (c + hermitian(c))
    w = np.linalg.eigvalsh(c)
    scale = np.maximum(np.abs(w[..., -1]), np.finfo(float).tiny)
    bad = (w[..., 0] <= SINGULAR_RTOL * scale) | (w[..., -1] <= 0)
    if bad.any():
        k, m = (int(x) for x in np.argwhere(bad)[0])
        lsz = c.shape[-1]
        raise InfeasibleError(
            f"device {k}, subcarrier {m}: A^H G_k A is singular (smallest eigenvalue "
            f"{w[k, m, 0]:.3g}); the device cannot deliver L = {lsz} independent streams through "
            "this receive beamformer (all-zero or rank-deficient channel, or N_t < L). Use fewer "
            "streams or drop the device."
        )
    return np.linalg.inv(c)


def inverse_traces(A: np.ndarray, H: np.ndarray) -> np.ndarray:
    """t_{k,m} = tr((A_m^H G_{k,m} A_m)^{-1}), shape (K, M)."""
    _, c = effective_gram(A, H)
    return np.real(np.trace(_inverse(c), axis1=-2, axis2=-1))


def zf_precoders(A: np.ndarray, H: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Unbiased ZF precoders B_k = φ_k H_k^H A (A^H G_k A)^{-1}, shape (K, M, N_t, L).

    They satisfy A^H H_k B_k = φ_k I_L exactly; their power is φ_k² tr((A^H G_k A)^{-1}).
    """
    hha, c = effective_gram(A, H)
    return np.asarray(phi, dtype=float)[:, None, None, None] * (hha @ _inverse(c))


def device_costs(A: np.ndarray, H: np.ndarray, phi: np.ndarray, p_sub: np.ndarray) -> np.ndarray:
    """φ_k² tr((A^H G_k A)^{-1}) / P_{k,m}: power needed per unit of ‖A‖, shape (K, M)."""
    phi = np.asarray(phi, dtype=float)
    p = np.asarray(p_sub, dtype=float).reshape(len(phi), -1)
    p = np.broadcast_to(p, (len(phi), A.shape[0]))
    return (phi[:, None] ** 2) * inverse_traces(A, H) / p


def objective(A: np.ndarray, H: np.ndarray, phi: np.ndarray, p_sub: np.ndarray,
              sigma2: float) -> np.ndarray:
    """Scale-invariant exact objective f(A_m) per subcarrier, shape (M,) (spec 02 §2)."""
    norm2 = np.sum(np.abs(A) ** 2, axis=(1, 2))
    return sigma2 * norm2 * np.max(device_costs(A, H, phi, p_sub), axis=0)


def zf_design(A: np.ndarray, H: np.ndarray, phi: np.ndarray,
              p_sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale the receive beamformers and return (A_scaled, B) at the power limit.

    Each A_m is multiplied by c_m = sqrt(max_k φ_k² t_{k,m} / P_{k,m}), so that every ZF precoder
    meets its budget and the binding device transmits at exactly P_{k,m}. The resulting MSE is
    σ² ‖A_scaled‖² = f(A_m).
    """
    costs = device_costs(A, H, phi, p_sub)  # (K, M)
    c = np.sqrt(np.max(costs, axis=0))  # (M,)
    a_s = A * c[:, None, None]
    return a_s, zf_precoders(a_s, H, phi)


def mse_per_stream(A: np.ndarray, B: np.ndarray, H: np.ndarray, phi: np.ndarray,
                   sigma2: float) -> np.ndarray:
    """Per-stream MSE for arbitrary (A, B), shape (M, L) (spec 02 §1).

    Stream l of subcarrier m: Σ_k ‖[A^H H_k B_k − φ_k I]_{l,:}‖² + σ² ‖a_{m,l}‖².
    """
    k, m, _, _, lsz = _check_shapes(A, H)
    if B.shape != (k, m, H.shape[3], lsz):
        raise InvalidArgumentError(f"B: expected shape {(k, m, H.shape[3], lsz)}, got {B.shape}")
    phi = np.asarray(phi, dtype=float)[:, None, None, None]
    err = hermitian(A)[None] @ H @ B - phi * np.eye(lsz)
    bias = np.sum(np.abs(err) ** 2, axis=(0, 3))  # (M, L): sum over devices and columns
    return bias + sigma2 * np.sum(np.abs(A) ** 2, axis=1)


def mse(A: np.ndarray, B: np.ndarray, H: np.ndarray, phi: np.ndarray, sigma2: float) -> np.ndarray:
    """MSE_m for arbitrary (A, B), summed over the L streams, shape (M,) (spec 02 §1)."""
    return mse_per_stream(A, B, H, phi, sigma2).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# Symbol-level simulator (spec 01 §3, spec 02 §3)
# ---------------------------------------------------------------------------------------------
def symbol_count(q: Any, n_subcarriers: Any, n_streams: Any) -> Any:
    """S = ⌈q / (2 L M)⌉: OFDM symbols that carry q reals, two per complex symbol, over M
    subcarriers × L streams (spec 01 §3); vectorized over integer arrays (0 for q = 0)."""
    slots = 2 * np.asarray(n_streams, dtype=np.int64) * np.asarray(n_subcarriers, dtype=np.int64)
    s = -(-np.asarray(q, dtype=np.int64) // slots)
    return int(s) if np.ndim(s) == 0 else s


def pack(x: np.ndarray, n_subcarriers: int, n_streams: int) -> np.ndarray:
    """Pack real vectors into unit-power complex symbols over (S, M, L) slots.

    ``x`` has shape (..., q). Reals are paired as s = (x_a + j x_b)/√2 (E|s|² = 1 for unit-variance
    reals), zero-padded to 2·S·M·L, and laid out symbol-major: OFDM symbol, then subcarrier, then
    stream. Returns shape (..., S, M, L) with S = ⌈q / (2 L M)⌉.
    """
    x = np.asarray(x, dtype=float)
    q = x.shape[-1]
    slots = n_subcarriers * n_streams
    s_count = max(1, symbol_count(q, n_subcarriers, n_streams))
    padded = np.zeros(x.shape[:-1] + (2 * s_count * slots,))
    padded[..., :q] = x
    pairs = padded.reshape(x.shape[:-1] + (s_count * slots, 2))
    sym = (pairs[..., 0] + 1j * pairs[..., 1]) / np.sqrt(2.0)
    return sym.reshape(x.shape[:-1] + (s_count, n_subcarriers, n_streams))


def unpack(symbols: np.ndarray, q: int) -> np.ndarray:
    """Inverse of :func:`pack`: (..., S, M, L) complex → (..., q) reals."""
    flat = symbols.reshape(symbols.shape[:-3] + (-1,)) * np.sqrt(2.0)
    reals = np.stack([flat.real, flat.imag], axis=-1).reshape(symbols.shape[:-3] + (-1,))
    return reals[..., :q]


def transmit(symbols: np.ndarray, A: np.ndarray, B: np.ndarray, H: np.ndarray, sigma2: float,
             rng: np.random.Generator) -> np.ndarray:
    """Send every device's symbols (K, S, M, L) over the air and receive A^H y: (S, M, L)."""
    tx = np.einsum("kmtl,ksml->ksmt", B, symbols)
    y = np.einsum("kmrt,ksmt->smr", H, tx)
    noise = rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape)
    y = y + np.sqrt(sigma2 / 2.0) * noise
    return np.einsum("mrl,smr->sml", np.conj(A), y)


@dataclass(frozen=True)
class AggregationOutcome:
    """Result of one over-the-air aggregation of real updates.

    Attributes
    ----------
    estimate : ndarray, shape (q,)
        ĝ, the server's estimate of the weighted average Σ_k φ_k g_k / Σ_k φ_k.
    exact : ndarray, shape (q,)
        ḡ, the exact weighted average.
    mean, scale : float
        The common normalization (μ, v) broadcast in the round.
    n_symbols : int
        OFDM symbols S used.
    """

    estimate: np.ndarray
    exact: np.ndarray
    mean: float
    scale: float
    n_symbols: int

    @property
    def error(self) -> float:
        """‖ĝ − ḡ‖²."""
        return float(np.sum((self.estimate - self.exact) ** 2))


def aggregate(g: np.ndarray, A: np.ndarray, B: np.ndarray, H: np.ndarray, phi: np.ndarray,
              sigma2: float, rng: np.random.Generator) -> AggregationOutcome:
    """Aggregate real updates g (K, q) over the air, symbol by symbol (spec 01 §3, spec 02 §3).

    Normalize with a common (μ, v) (x = (g − μ)/v, unit variance over all entries), pack, pass
    through precoders, channel, noise and receive beamformers, unpack, and undo the normalization:
    ĝ = v · x̂_sum / Σφ + μ.
    """
    g = np.asarray(g, dtype=float)
    phi = np.asarray(phi, dtype=float)
    mu = float(np.mean(g))
    v = float(np.std(g))
    v = v if v > 0 else 1.0
    x = (g - mu) / v
    sym = pack(x, A.shape[0], A.shape[2])
    est = unpack(transmit(sym, A, B, H, sigma2, rng), g.shape[1])
    ghat = v * est / phi.sum() + mu
    exact = phi @ g / phi.sum()
    return AggregationOutcome(estimate=ghat, exact=exact, mean=mu, scale=v,
                              n_symbols=sym.shape[-3])


def distortion(mse_m: np.ndarray, q: int | np.ndarray, n_streams: int, scale: float = 1.0,
               phi_sum: float = 1.0) -> np.ndarray | float:
    """D = v² / (Σφ)² · q / (L M) · Σ_m MSE_m (spec 02 §3).

    Parameters
    ----------
    mse_m
        Per-subcarrier MSE (M,) summed over streams.
    q
        Real parameters per round (scalar or array of candidate payloads).
    scale
        v, the normalization scale of the update.
    """
    mse_m = np.asarray(mse_m, dtype=float)
    m = mse_m.shape[-1]
    return scale**2 / phi_sum**2 * np.asarray(q, dtype=float) / (n_streams * m) * mse_m.sum(-1)
