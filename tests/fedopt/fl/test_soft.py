"""SOFT (spec 04 §4): with orthogonal factors the component scores are the singular values of
B A and keeping the top m is Eckart–Young optimal with error Σ_dropped s_i²; masks keep exactly
⌈(1 − ρ) r⌉ pairs; the orthogonality regularizer vanishes exactly on orthogonal factors and its
gradient passes gradcheck; the baselines keep what they claim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedopt.errors import InvalidArgumentError
from fedopt.fl.soft import (
    common_mask,
    component_scores,
    elementwise_topk,
    index_to_mask,
    offdiag_orthogonality,
    svd_truncation,
    top_components,
)
from fedopt.gap_models.tsfa import dropped_energy


def _orthogonal_factors(rng: np.random.Generator, d: int, k: int, r: int,
                        dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """B = U diag(β) (orthogonal columns), A = diag(α) Vᵀ (orthogonal rows), U, V orthonormal;
    the products s_i = α_i β_i are distinct and in no particular order."""
    u, _ = np.linalg.qr(rng.standard_normal((d, r)))
    v, _ = np.linalg.qr(rng.standard_normal((k, r)))
    beta = rng.uniform(0.5, 3.0, r)
    alpha = rng.uniform(0.1, 2.0, r)
    B = torch.tensor(u * beta, dtype=dtype)
    A = torch.tensor(alpha[:, None] * v.T, dtype=dtype)
    return A, B, alpha * beta


def test_scores_are_the_singular_values_under_orthogonal_factors(rng):
    A, B, s = _orthogonal_factors(rng, d=40, k=24, r=8)
    scores = component_scores(A, B)
    assert scores.dtype == torch.float64 and scores.shape == (8,)
    np.testing.assert_allclose(scores.numpy(), s, rtol=1e-13)  # rel 1e-13: two norms, rounding
    sv = torch.linalg.svdvals(B @ A).numpy()[:8]
    # rel 1e-10 (the contract): a dense SVD of B A, accurate to ~1e-15 · s_1 / s_i
    np.testing.assert_allclose(np.sort(scores.numpy())[::-1], sv, rtol=1e-10)


@pytest.mark.parametrize("rho", [0.0, 0.25, 1 / 3, 0.5, 2 / 3, 0.9])
def test_eckart_young_error_equals_the_dropped_energy(rng, rho):
    A, B, s = _orthogonal_factors(rng, d=30, k=20, r=9)
    index = top_components(component_scores(A, B), rho)  # the pairs SOFT sends
    A_m, B_m = A[index], B[:, index]
    m = index.numel()
    assert m == int(np.ceil((1 - rho) * 9 - 1e-9))
    err = torch.linalg.matrix_norm(B @ A - B_m @ A_m) ** 2
    # rel 1e-10: ‖BA − B_m A_m‖² = Σ_dropped s_i² exactly; the difference of two d×k products
    # loses ~1e-16 · ‖BA‖² absolutely, small next to the dropped energy here
    expected = float(dropped_energy(s, m))
    assert float(err) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # and it is the best rank-m error: the same as the SVD truncation of B A
    A_s, B_s = svd_truncation(A, B, m)
    assert float(torch.linalg.matrix_norm(B_s @ A_s - B_m @ A_m)) == pytest.approx(0.0, abs=1e-10)
    sv = torch.linalg.svdvals(B @ A)
    assert float(err) == pytest.approx(float((sv[m:] ** 2).sum()), rel=1e-10, abs=1e-12)


def test_svd_truncation_is_optimal_for_general_factors(rng):
    A = torch.tensor(rng.standard_normal((6, 15)))
    B = torch.tensor(rng.standard_normal((25, 6)))
    sv = torch.linalg.svdvals(B @ A)
    for m in range(7):
        A_m, B_m = svd_truncation(A, B, m)
        assert A_m.shape == (m, 15) and B_m.shape == (25, m)
        err = torch.linalg.matrix_norm(B @ A - B_m @ A_m) ** 2
        # rel 1e-9: QR + a 6×6 SVD against a dense SVD of the 25×15 product
        assert float(err) == pytest.approx(float((sv[m:] ** 2).sum()), rel=1e-9, abs=1e-11)
    with pytest.raises(InvalidArgumentError, match="m"):
        svd_truncation(A, B, 7)


def test_masks_keep_exactly_ceil_of_the_kept_fraction():
    for r in range(1, 17):
        scores = torch.arange(r, dtype=torch.float64)
        for j in range(r):  # ρ = j/r keeps r − j, also for 1/3, 2/3 etc.
            idx = top_components(scores, j / r)
            assert idx.dtype == torch.long and idx.numel() == r - j
            assert idx.tolist() == list(range(j, r))  # the largest, sorted ascending
    for r, rho, m in [(3, 1 / 3, 2), (3, 2 / 3, 1), (6, 1 / 3, 4), (9, 2 / 3, 3), (10, 0.25, 8)]:
        assert top_components(torch.rand(r), rho).numel() == m


def test_ties_go_to_the_lower_index():
    scores = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0])
    assert top_components(scores, 0.5).tolist() == [1, 2, 4]
    assert top_components(scores, 0.6).tolist() == [1, 2]
    assert top_components(torch.ones(6), 0.5).tolist() == [0, 1, 2]
    assert common_mask(torch.tensor([0.1, 5.0, 3.0, 4.0]), 0.5).tolist() == [1, 3]


def test_regularizer_is_zero_exactly_on_orthogonal_factors(rng):
    A, B, _ = _orthogonal_factors(rng, d=30, k=20, r=6)
    scale = float((A**2).sum() ** 2 + (B**2).sum() ** 2)
    # rounding only: off-diagonal Gram entries of orthonormal-times-diagonal factors ~1e-16
    assert 0.0 <= float(offdiag_orthogonality(A, B)) <= 1e-28 * scale
    A2 = A.clone()
    A2[0] += 0.1 * A2[1]
    assert float(offdiag_orthogonality(A2, B)) > 1e-6
    B2 = torch.tensor(rng.standard_normal((30, 6)))
    assert float(offdiag_orthogonality(A, B2)) > 1e-3
    # diagonal Gram entries are free: rescaling the components keeps it zero
    assert float(offdiag_orthogonality(3.0 * A, B * 0.5)) <= 1e-28 * scale * 100


def test_regularizer_gradient_passes_gradcheck(rng):
    A = torch.tensor(rng.standard_normal((4, 7)), requires_grad=True)
    B = torch.tensor(rng.standard_normal((9, 4)), requires_grad=True)
    assert torch.autograd.gradcheck(offdiag_orthogonality, (A, B), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(component_scores, (A, B), eps=1e-6, atol=1e-6)


def test_elementwise_topk_keeps_the_stated_counts(rng):
    A = torch.tensor(rng.standard_normal((4, 10)))
    B = torch.tensor(rng.standard_normal((12, 4)))
    for rho, (na, nb) in {0.3: (28, 34), 0.5: (20, 24), 0.0: (40, 48), 0.99: (1, 1)}.items():
        A_s, B_s = elementwise_topk(A, B, rho)
        assert A_s.shape == A.shape and B_s.shape == B.shape
        assert int((A_s != 0).sum()) == na and int((B_s != 0).sum()) == nb
        for x, xs in ((A, A_s), (B, B_s)):
            kept = xs != 0
            assert torch.equal(xs[kept], x[kept])  # kept entries are unchanged
            if (~kept).any():  # and they are the largest by magnitude
                assert x[kept].abs().min() >= x[~kept].abs().max()


def test_index_to_mask_marks_the_kept_components():
    mask = index_to_mask(torch.tensor([0, 3, 7]), 8)
    assert mask.dtype == torch.bool and mask.shape == (8,)
    assert mask.nonzero().flatten().tolist() == [0, 3, 7]


def test_float32_is_accepted_and_kept(rng):
    A, B, s = _orthogonal_factors(rng, d=16, k=12, r=4, dtype=torch.float32)
    scores = component_scores(A, B)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), s, rtol=1e-6)  # rel 1e-6: float32 rounding
    assert offdiag_orthogonality(A, B).dtype == torch.float32
    A_s, B_s = svd_truncation(A, B, 2)
    assert A_s.dtype == torch.float32
    assert elementwise_topk(A, B, 0.5)[0].dtype == torch.float32


def test_bad_factors_are_rejected():
    with pytest.raises(InvalidArgumentError, match="rank axes"):
        component_scores(torch.zeros(3, 5), torch.zeros(4, 2))
    with pytest.raises(InvalidArgumentError, match="float32 or float64"):
        component_scores(torch.zeros(3, 5, dtype=torch.int64), torch.zeros(4, 3))
    with pytest.raises(InvalidArgumentError, match="sparsity"):
        top_components(torch.ones(4), 1.0)
