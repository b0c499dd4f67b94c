"""Closed-form and random baseline receive beamformers (spec 02 §4).

Each returns unit-Frobenius-norm receive beamformers A of shape (M, N_r, L) in
``result.solution`` (f is scale invariant, spec 02 §2), ``objective_per_subcarrier =
problem.objective(A)`` and the best closed-form lower bound of
:mod:`~fedopt.solvers.beamforming.bounds` per subcarrier (see
:func:`~fedopt.solvers.beamforming.report.beamforming_result` for the status). All are
vectorized over subcarriers.

=============  ======================================================================  =========
name           beamformer                                                              rng
=============  ======================================================================  =========
``centroid``   Grassmann centroid of the devices' dominant subspaces (Zhu–Huang)       none
``mrc``        dominant left singular vectors of the weakest device                    none
``eigen``      top-L eigenvectors of Σ_k G_k / tr(G_k)                                 none
``random``     i.i.d. CN(0, 1) entries                                                 draws
=============  ======================================================================  =========

The first three are deterministic and take no ``rng``; the SDR baseline (L = 1) is in
:mod:`fedopt.solvers.beamforming.sdr`.
"""

from __future__ import annotations

import numpy as np

from fedopt.solvers.beamforming.bounds import single_device_values, top_eigenvalues
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.report import beamforming_result
from fedopt.solvers.result import SolveResult, SolverRun

__all__ = ["centroid", "mrc_weakest", "principal_eigenvector", "random_beamformer"]


def _top_left_vectors(X: np.ndarray, n: int) -> np.ndarray:
    """n dominant left singular vectors of each matrix of a batch: (..., N_r, *) → (..., N_r, n)."""
    u, _, _ = np.linalg.svd(X, full_matrices=False)
    return u[..., :n]


def centroid(problem: BeamformingProblem) -> SolveResult:
    """Weighted Grassmann centroid (Zhu–Huang style, spec 02 §4), orthonormal columns;
    deterministic.

    Per subcarrier, with U_k the L dominant left singular vectors of H_k (an orthonormal basis of
    the device's best L-dimensional receive subspace),

        F = top-L eigenvectors of  S = Σ_k w_k U_k U_k^H,    A = F / √L.

    F maximizes Σ_k w_k ‖U_k^H F‖_F², the weighted chordal-distance centroid of the subspaces.
    Weights favour weak devices (the binding ones in the max of f): w_k is each device's cost
    under its own orthonormal optimum, w_k ∝ c_k Σ_{l≤L} λ_{k,l}^{-1} (the Grassmann value of
    spec 02 §2 up to σ² L), normalized to Σ_k w_k = 1 per subcarrier. The eigenvectors of S are
    the left singular vectors of the stacked [√w_1 U_1, …, √w_K U_K], which is what is computed.

    This restriction to orthonormal columns is suboptimal (spec 02 §2); the centroid is a
    baseline and an initial point of the manifold solver.
    """
    run = SolverRun("centroid", options={"weights": "c_k * sum_l 1/lambda_kl, normalized"})
    k, m, nr, _ = problem.shape
    lsz = problem.streams
    u = _top_left_vectors(problem.H, lsz)  # (K, M, N_r, L)
    lam = top_eigenvalues(problem)  # (K, M, L)
    w = problem.weights() * np.sum(1.0 / lam, axis=-1)  # (K, M)
    w = w / np.sum(w, axis=0, keepdims=True)
    stacked = np.sqrt(w)[..., None, None] * u  # (K, M, N_r, L)
    stacked = np.moveaxis(stacked, 0, 2).reshape(m, nr, k * lsz)  # (M, N_r, K L)
    F = _top_left_vectors(stacked, lsz)
    return beamforming_result(
        run, problem, F,
        description="weighted Grassmann centroid (closed form, orthonormal columns)",
    )


def mrc_weakest(problem: BeamformingProblem, *, single_device_optimal: bool = False
                ) -> SolveResult:
    """MRC toward the weakest device (spec 02 §4): its L dominant left singular vectors;
    deterministic.

    Per subcarrier the weakest device is k* = argmax_k σ² c_k (Σ_l λ_{k,l}^{-1/2})² (the device
    with the largest single-device bound), and A = U_{k*} / √L. With
    ``single_device_optimal=True`` column l is scaled by λ_{k*,l}^{-1/4} instead, which is the
    exact single-device optimum for k* (spec 02 §2) and attains the single-device bound when k*
    is the only binding device (identical to the plain MRC for L = 1).
    """
    run = SolverRun("mrc", options={"single_device_optimal": bool(single_device_optimal)})
    m = problem.shape[1]
    lsz = problem.streams
    weakest = np.argmax(single_device_values(problem), axis=0)  # (M,)
    hw = problem.H[weakest, np.arange(m)]  # (M, N_r, N_t)
    u, s, _ = np.linalg.svd(hw, full_matrices=False)
    A = u[..., :lsz]
    if single_device_optimal:
        A = A * (s[:, None, :lsz] ** -0.5)  # λ^{-1/4} = s^{-1/2}
    return beamforming_result(
        run, problem, A,
        description="MRC toward the weakest device (closed form)",
        terms={
            "weakest_device_min": float(weakest.min()),
            "weakest_device_max": float(weakest.max()),
        },
    )


def principal_eigenvector(problem: BeamformingProblem) -> SolveResult:
    """Top-L eigenvectors of the trace-normalized sum of Gram matrices (spec 02 §4);
    deterministic.

        A = F / √L,   F = top-L eigenvectors of  Σ_k G_k / tr(G_k).

    Normalizing each G_k by its trace (= ‖H_k‖_F²) gives every device the same say regardless of
    path loss, so F maximizes the average normalized gain Σ_k tr(F^H G_k F) / tr(G_k). Computed as
    the left singular vectors of the stacked [H_1/‖H_1‖_F, …, H_K/‖H_K‖_F].
    """
    run = SolverRun("eigen")
    k, m, nr, nt = problem.shape
    fro = np.sqrt(np.sum(np.abs(problem.H) ** 2, axis=(-2, -1)))  # (K, M)
    stacked = np.moveaxis(problem.H / fro[..., None, None], 0, 2).reshape(m, nr, k * nt)
    F = _top_left_vectors(stacked, problem.streams)
    return beamforming_result(
        run, problem, F,
        description="principal eigenvectors of sum_k G_k / tr(G_k) (closed form)",
    )


def random_beamformer(problem: BeamformingProblem, *,
                      rng: np.random.Generator | int | None = None) -> SolveResult:
    """Random receive beamformer: i.i.d. CN(0, 1) entries, normalized per subcarrier.

    ``rng`` is a ``numpy.random.Generator`` or a seed (``None``: fresh OS entropy).
    """
    run = SolverRun("random")
    gen = np.random.default_rng(rng)
    _, m, nr, _ = problem.shape
    shape = (m, nr, problem.streams)
    A = gen.standard_normal(shape) + 1j * gen.standard_normal(shape)
    return beamforming_result(run, problem, A, description="i.i.d. CN(0,1) random beamformer")
