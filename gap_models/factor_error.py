"""Aggregation error of separate LoRA factors under parameter aggregation (spec 03 §2).

Devices send their factors A_k (r × k) and B_k (d × r); the server forms (B̄ + N_B)(Ā + N_A)
with Ā = Σ p_k A_k, B̄ = Σ p_k B_k (Σ p_k = 1) and i.i.d. zero-mean noise entries of variances
σ_A², σ_B². Against the exact average Σ p_k B_k A_k the error is

    −C + N_B Ā + B̄ N_A + N_B N_A,      C = Σ_k p_k (B_k − B̄)(A_k − Ā)   (covariance term)

because Σ p_k B_k A_k = B̄ Ā + C, and the four pieces are uncorrelated, so

    E‖·‖_F² = ‖C‖_F² + σ_B² d ‖Ā‖_F² + σ_A² k ‖B̄‖_F² + σ_A² σ_B² d r k.

Single-factor modes remove the covariance and the product noise: with only B travelling (A
frozen and shared) the error is N_B A, E‖·‖² = σ_B² d ‖A‖²; with only A travelling,
σ_A² k ‖B‖².
"""

from __future__ import annotations

import numpy as np

from fedopt.errors import InvalidArgumentError

__all__ = ["factor_covariance", "factor_error_terms"]


def _weights(p, k: int) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.shape != (k,) or np.any(p < 0) or not np.isclose(p.sum(), 1.0, rtol=1e-12):
        raise InvalidArgumentError(f"p: expected {k} non-negative weights summing to 1")
    return p


def factor_covariance(B: np.ndarray, A: np.ndarray, p) -> tuple[np.ndarray, np.ndarray,
                                                                 np.ndarray]:
    """Return (B̄, Ā, C) for factors B (K, d, r), A (K, r, k) and weights p (K,)."""
    B = np.asarray(B, dtype=float)
    A = np.asarray(A, dtype=float)
    p = _weights(p, B.shape[0])
    b_bar = np.tensordot(p, B, axes=1)
    a_bar = np.tensordot(p, A, axes=1)
    c = np.einsum("k,kdr,krj->dj", p, B - b_bar, A - a_bar)
    return b_bar, a_bar, c


def factor_error_terms(B: np.ndarray, A: np.ndarray, p, sigma_a2: float, sigma_b2: float,
                       factors: str = "AB") -> dict[str, float]:
    """Expected squared aggregation error of the LoRA product, split into named terms.

    Parameters
    ----------
    B, A
        Per-device factors, shapes (K, d, r) and (K, r, k).
    p
        Aggregation weights (K,), summing to one.
    sigma_a2, sigma_b2
        Per-entry noise variances on the aggregated A and B.
    factors
        ``"AB"`` (both travel), ``"B"`` (only B; A frozen, taken as Ā) or ``"A"`` (only A).
    """
    b_bar, a_bar, c = factor_covariance(B, A, p)
    d, r = b_bar.shape
    k = a_bar.shape[1]
    terms = {"covariance": float(np.sum(c**2)),
             "noise_b": sigma_b2 * d * float(np.sum(a_bar**2)),
             "noise_a": sigma_a2 * k * float(np.sum(b_bar**2)),
             "noise_product": sigma_a2 * sigma_b2 * d * r * k}
    if factors == "B":
        terms.update(covariance=0.0, noise_a=0.0, noise_product=0.0)
    elif factors == "A":
        terms.update(covariance=0.0, noise_b=0.0, noise_product=0.0)
    elif factors != "AB":
        raise InvalidArgumentError(f"factors: got {factors!r}, must be 'AB', 'A' or 'B'")
    return terms
