"""Lower bounds (certificates) on the receive-beamforming optimum (spec 02 §5).

For each subcarrier m the exact problem of spec 02 §2 is

    f*_m = min_{A ≠ 0} σ² ‖A‖_F² · max_k c_{k,m} tr((A^H G_{k,m} A)^{-1}),
    c_{k,m} = φ_k² / P_{k,m}.

Every function here returns a per-subcarrier array of shape (M,) with ``bound[m] <= f*_m``, so that
a solver report can state ``objective / bound >= 1`` as a certificate of quality. All functions
are vectorized over devices and subcarriers (no Python loop over M).

Which bound holds when:

=====================  ==========  ==========  ================================================
bound                  streams L   N_t         note
=====================  ==========  ==========  ================================================
single-device          any         any         always valid; exact for K = 1
trivial (Frobenius)    any         any         ≤ single-device, so never needed in ``best``
SDR (``sdr_values``)   1           any         from :mod:`~fedopt.solvers.beamforming.sdr`
=====================  ==========  ==========  ================================================
"""

from __future__ import annotations

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.problem import BeamformingProblem

__all__ = [
    "top_eigenvalues",
    "single_device_values",
    "single_device_bound",
    "trivial_bound_l1",
    "best_bound",
]


def top_eigenvalues(problem: BeamformingProblem) -> np.ndarray:
    """λ_{k,m,l}: the L largest eigenvalues of G_{k,m} = H H^H, descending, shape (K, M, L).

    Computed as the squared singular values of H_{k,m} (never forms G, which would square the
    condition number), which the problem computed when it was built.
    """
    sv = problem.singular_values()  # (K, M, min(N_r, N_t)), descending
    return sv[..., : problem.streams] ** 2


def single_device_values(problem: BeamformingProblem) -> np.ndarray:
    """Optimum of each device served alone, σ² c_{k,m} (Σ_{l≤L} λ_{k,m,l}^{-1/2})², shape (K, M).

    For one device, f(A) = σ² c ‖A‖_F² tr((A^H G A)^{-1}) is minimized (spec 02 §2, §6.7) by A
    whose columns are the top-L eigenvectors u_l of G scaled by λ_l^{-1/4}, with value
    σ² c (Σ_l λ_l^{-1/2})². The BeamformingProblem constructor guarantees λ_{k,m,L} > 0.
    """
    lam = top_eigenvalues(problem)
    inv_sqrt_sum = np.sum(1.0 / np.sqrt(lam), axis=-1)  # (K, M)
    return problem.sigma2 * problem.weights() * inv_sqrt_sum**2


def single_device_bound(problem: BeamformingProblem) -> np.ndarray:
    """Single-device bound, shape (M,) (spec 02 §5, valid for every L and N_t).

        b_m = max_k σ² c_{k,m} (Σ_{l≤L} λ_{k,m,l}^{-1/2})²,

    λ_{k,m,l} the L largest eigenvalues of G_{k,m}.

    Valid because the max over devices in f is at least the term of any single device k, whose
    minimum over A is the closed form of :func:`single_device_values`: adding devices never helps.
    """
    return np.max(single_device_values(problem), axis=0)


def trivial_bound_l1(problem: BeamformingProblem) -> np.ndarray:
    """Trivial Frobenius-norm bound, shape (M,) (spec 02 §5, "trivial L = 1 bound").

        b_m = max_k σ² c_{k,m} L³ / ‖H_{k,m}‖_F²

    For L = 1 and single-antenna devices this is the spec's max_k σ² φ_k² / (P_k ‖h_k‖²), which is
    then equal to the single-device bound (G_k = h_k h_k^H has the single eigenvalue ‖h_k‖²).

    For N_t > 1 devices ‖H_k‖_F² = Σ_i λ_{k,i} ≥ λ_{k,1} = max_a a^H G_k a / ‖a‖², so the formula
    is still a valid (weaker) bound. For L > 1, Cauchy–Schwarz gives
    Σ_{l≤L} λ_l^{-1/2} ≥ L² / Σ_l λ_l^{1/2} ≥ L^{3/2} / (Σ_l λ_l)^{1/2} ≥ L^{3/2} / ‖H‖_F,
    hence the factor L³. It never exceeds :func:`single_device_bound`; it is kept as a cheap
    cross-check (and for readers of the literature where it appears).
    """
    fro2 = np.sum(np.abs(problem.H) ** 2, axis=(-2, -1))  # (K, M)
    lsz = problem.streams
    return np.max(problem.sigma2 * problem.weights() * lsz**3 / fro2, axis=0)


def best_bound(problem: BeamformingProblem, sdr_values: np.ndarray | None = None) -> np.ndarray:
    """Elementwise maximum of all valid lower bounds, shape (M,) (spec 02 §5).

    Parameters
    ----------
    problem
        The beamforming problem.
    sdr_values
        Optional SDR lower bounds v_SDR,m = σ² tr(X*_m), shape (M,), e.g. the
        ``bound_per_subcarrier`` of :func:`~fedopt.solvers.beamforming.sdr.sdr` (valid for
        L = 1 only).

    Raises
    ------
    InvalidArgumentError
        If ``sdr_values`` is given for L > 1 or has the wrong shape.
    """
    bound = np.maximum(single_device_bound(problem), trivial_bound_l1(problem))
    if sdr_values is not None:
        if problem.streams != 1:
            raise InvalidArgumentError(
                f"sdr_values: the SDR bound holds for streams L = 1 only, got L = "
                f"{problem.streams}; drop sdr_values or solve the L = 1 problem"
            )
        sdr_values = np.asarray(sdr_values, dtype=float)
        if sdr_values.shape != bound.shape:
            raise InvalidArgumentError(
                f"sdr_values: expected shape {bound.shape} (one value per subcarrier), got "
                f"{sdr_values.shape}"
            )
        bound = np.maximum(bound, sdr_values)
    return bound
