"""SOFT: sparsified orthogonal fine-tuning of LoRA factors (spec 04 §4) [derived: exactness].

A LoRA update is B A = Σ_i b_i a_iᵀ with b_i the i-th column of B (d × r) and a_iᵀ the i-th row of
A (r × k). SOFT keeps the factors nearly orthogonal with an off-diagonal regularizer

    λ_o (‖offdiag(A Aᵀ)‖_F² + ‖offdiag(Bᵀ B)‖_F²)

(off-diagonal only: full orthonormality would make every score equal), scores each rank-1
component by s_i = ‖b_i‖₂ ‖a_i‖₂ and sends only the top m = ⌈(1 − ρ) r⌉ components, as (b_i, a_i)
pairs plus the index mask. When the columns of B are orthogonal and the rows of A are orthogonal,
Σ_i b_i a_iᵀ = Σ_i s_i (b_i/‖b_i‖)(a_i/‖a_i‖)ᵀ is a singular value decomposition, so the s_i are
the singular values of B A, keeping the top m is Eckart–Young optimal, and the squared error is
Σ_dropped s_i² — no SVD needed. The kept pairs are ``A[index]`` and ``B[:, index]`` with
``index = top_components(component_scores(A, B), ρ)``; the digital aggregator makes the same
selection on flat payloads (:func:`fedopt.fl.aggregators.soft_component_mask`).

Over the air every device must send the same components: the server broadcasts a common mask
(:func:`common_mask`, e.g. the top m of last round's aggregated scores). Baselines:
:func:`elementwise_topk` (magnitude top-k on A and B separately) and :func:`svd_truncation`.

All functions take torch tensors of float32 or float64 (A: r × k, B: d × r) and keep the dtype;
index tensors are ``torch.long`` and sorted ascending. This module imports torch; ``fedopt``
itself does not import this module.
"""

from __future__ import annotations

import numpy as np
import torch

from fedopt.digital import kept_components
from fedopt.errors import InvalidArgumentError

__all__ = [
    "offdiag_orthogonality",
    "component_scores",
    "top_components",
    "common_mask",
    "index_to_mask",
    "elementwise_topk",
    "svd_truncation",
]


def _factors(A: torch.Tensor, B: torch.Tensor) -> int:
    """Check A (r × k), B (d × r) share r and a floating dtype; return r."""
    for name, x in (("A", A), ("B", B)):
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 2:
            raise InvalidArgumentError(f"{name}: expected a matrix, got shape {tuple(x.shape)}")
        if x.dtype not in (torch.float32, torch.float64):
            raise InvalidArgumentError(f"{name}: expected float32 or float64, got {x.dtype}")
    if A.shape[0] != B.shape[1]:
        raise InvalidArgumentError(
            f"A is {tuple(A.shape)} (r × k) and B is {tuple(B.shape)} (d × r): the rank axes "
            f"disagree ({A.shape[0]} vs {B.shape[1]})"
        )
    return int(A.shape[0])


def _offdiag_sq(g: torch.Tensor) -> torch.Tensor:
    # zero the diagonal rather than subtract its squares: ‖G‖² − Σ G_ii² cancels (and can go
    # negative) when G is diagonal up to rounding, exactly the case SOFT drives toward
    off = g - torch.diag_embed(torch.diagonal(g))
    return (off * off).sum()


def offdiag_orthogonality(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """‖offdiag(A Aᵀ)‖_F² + ‖offdiag(Bᵀ B)‖_F², differentiable (multiply by λ_o in the loss).

    Zero exactly when the rows of A are mutually orthogonal and so are the columns of B.
    """
    _factors(A, B)
    return _offdiag_sq(A @ A.T) + _offdiag_sq(B.T @ B)


def component_scores(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """s_i = ‖b_i‖₂ ‖a_i‖₂, shape (r,) (the singular values of B A under orthogonal factors)."""
    _factors(A, B)
    return torch.linalg.vector_norm(B, dim=0) * torch.linalg.vector_norm(A, dim=1)


def top_components(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Indices of the top m = ⌈(1 − ρ) r⌉ scores, sorted ascending (``torch.long``).

    Ties are broken toward the lower index (a stable sort), so the result is deterministic.
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1 or scores.numel() == 0:
        raise InvalidArgumentError("scores: expected a non-empty 1-D tensor (one score per rank)")
    if not bool(torch.isfinite(scores).all()):
        raise InvalidArgumentError("scores: must be finite")
    r = scores.numel()
    m = kept_components(r, float(sparsity))
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    return torch.sort(order[:m]).values.to(torch.long)


def common_mask(aggregated_scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The common mask broadcast by the server: the top m of the aggregated scores (e.g. the
    scores of last round's aggregated factors, or Σ_k p_k s_{k,i}); same as
    :func:`top_components`."""
    return top_components(aggregated_scores, sparsity)


def index_to_mask(index: torch.Tensor, rank: int) -> torch.Tensor:
    """Boolean mask of length r with ``True`` at ``index`` (the r mask bits of spec 01 §4)."""
    mask = torch.zeros(int(rank), dtype=torch.bool, device=index.device)
    mask[index] = True
    return mask


def _topk_entries(x: torch.Tensor, sparsity: float) -> torch.Tensor:
    n = x.numel()
    keep = kept_components(n, float(sparsity))
    order = torch.sort(x.detach().abs().reshape(-1), descending=True, stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool, device=x.device)
    mask[order[:keep]] = True
    return x * mask.reshape(x.shape)


def elementwise_topk(A: torch.Tensor, B: torch.Tensor, sparsity: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: keep the ⌈(1 − ρ) n⌉ largest-magnitude entries of A and, separately, of B.

    Returns dense (A_sparse, B_sparse) with the same shapes and zeros elsewhere (ties toward
    the lower flat index). The payload then also needs the entries' positions, unlike SOFT's
    r-bit mask.
    """
    _factors(A, B)
    return _topk_entries(A, sparsity), _topk_entries(B, sparsity)


def svd_truncation(A: torch.Tensor, B: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: the best rank-m approximation of B A as factors (A_m (m × k), B_m (d × m)).

    Computed without forming B A: with B = Q_B R_B and Aᵀ = Q_A R_A (thin QR),
    B A = Q_B (R_B R_Aᵀ) Q_Aᵀ, so an SVD of the small core U Σ Vᵀ = R_B R_Aᵀ gives
    B_m = Q_B U_m Σ_m^{1/2} and A_m = Σ_m^{1/2} V_mᵀ Q_Aᵀ (balanced factors; B_m A_m is
    Eckart–Young optimal). If m exceeds min(d, k) the result has rank min(d, k).
    """
    r = _factors(A, B)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or not 0 <= m <= r:
        raise InvalidArgumentError(f"m: got {m!r}, must be an integer in 0..r = 0..{r}")
    q_b, r_b = torch.linalg.qr(B)
    q_a, r_a = torch.linalg.qr(A.T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    root = torch.sqrt(s[:m])
    B_m = (q_b @ u[:, :m]) * root
    A_m = root[:, None] * (vh[:m] @ q_a.T)
    return A_m, B_m
