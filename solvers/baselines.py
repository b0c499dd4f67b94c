"""Baseline receive beamformers (spec 02 §4) and the SDR lower bound (spec 02 §5).

Every baseline has the signature ``baseline(problem, *, rng=None, <keyword options>) ->
SolveResult`` (``rng`` is accepted by all for a uniform call, used by ``random`` and ``sdr``) and
returns unit-Frobenius-norm receive beamformers A of shape (M, N_r, L) in ``result.solution``
(f is scale invariant, spec 02 §2), ``objective_per_subcarrier = problem.objective(A)``, and the
best available lower bound of :mod:`solvers.bounds` per subcarrier. Closed-form baselines are
vectorized over subcarriers; only the SDR loops over subcarriers (one conic solve each).

=============  ======================================================================  =========
name           beamformer                                                              streams
=============  ======================================================================  =========
``centroid``   Grassmann centroid of the devices' dominant subspaces (Zhu–Huang)       any
``mrc``        dominant left singular vectors of the weakest device                    any
``eigen``      top-L eigenvectors of Σ_k G_k / tr(G_k)                                 any
``random``     i.i.d. CN(0, 1) entries                                                 any
``sdr``        semidefinite relaxation + Gaussian randomization                        L = 1
=============  ======================================================================  =========

Status: ``OPTIMAL`` when the objective meets the bound on every subcarrier (relative
:data:`CERTIFY_RTOL`), otherwise ``CONVERGED`` (a solution is present, not certified).

Cost of the SDR (one subcarrier, i.i.d. channels, 2-core CPU): Clarabel 0.13 s (N_r = 16,
K = 20), 0.19 s (16, 50), ~4–5 s (32, 20 or 50) — its interior point factors a dense block of
size N_r(2N_r + 1); SCS 0.03–0.3 s for the same cases with the same certified value to 7
digits. For N_r ≥ 32 pass ``solvers=("SCS", "CLARABEL")``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fedopt.errors import SolverError
from fedopt.solvers._report import CERTIFY_RTOL
from fedopt.solvers._report import beamforming_result as _result
from fedopt.solvers.bounds import best_bound, single_device_values, top_eigenvalues
from fedopt.solvers.problem import BeamformingProblem
from fedopt.solvers.result import SolveResult

__all__ = [
    "CERTIFY_RTOL",
    "centroid",
    "mrc_weakest",
    "principal_eigenvector",
    "random_beamformer",
    "sdr",
    "BASELINES",
]

def _herm(x: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(x, -1, -2))


def _top_left_vectors(X: np.ndarray, n: int) -> np.ndarray:
    """n dominant left singular vectors of each matrix of a batch: (..., N_r, *) → (..., N_r, n)."""
    u, _, _ = np.linalg.svd(X, full_matrices=False)
    return u[..., :n]


# ---------------------------------------------------------------------------------------------
# Closed-form baselines
# ---------------------------------------------------------------------------------------------
def centroid(problem: BeamformingProblem, *, rng: Any = None) -> SolveResult:
    """Weighted Grassmann centroid (Zhu–Huang style, spec 02 §4), orthonormal columns.

    Per subcarrier, with U_k the L dominant left singular vectors of H_k (an orthonormal basis of
    the device's best L-dimensional receive subspace),

        F = top-L eigenvectors of  S = Σ_k w_k U_k U_k^H,    A = F / √L.

    F maximizes Σ_k w_k ‖U_k^H F‖_F², the weighted chordal-distance centroid of the subspaces.
    Weights favour weak devices (the binding ones in the max of f): w_k is each device's cost
    under its own orthonormal optimum, w_k ∝ c_k Σ_{l≤L} λ_{k,l}^{-1} (the Grassmann value of
    spec 02 §2 up to σ² L), normalized to Σ_k w_k = 1 per subcarrier. The eigenvectors of S are
    the left singular vectors of the stacked [√w_1 U_1, …, √w_K U_K], which is what is computed.

    This restriction to orthonormal columns is suboptimal (spec 02 §2); the centroid is a
    baseline and an initial point. ``rng`` is accepted for a uniform interface and unused.
    """
    t0 = time.perf_counter()
    k, m, nr, _ = problem.shape
    lsz = problem.streams
    u = _top_left_vectors(problem.H, lsz)  # (K, M, N_r, L)
    lam = top_eigenvalues(problem)  # (K, M, L)
    w = problem.weights() * np.sum(1.0 / lam, axis=-1)  # (K, M)
    w = w / np.sum(w, axis=0, keepdims=True)
    stacked = np.sqrt(w)[..., None, None] * u  # (K, M, N_r, L)
    stacked = np.moveaxis(stacked, 0, 2).reshape(m, nr, k * lsz)  # (M, N_r, K L)
    F = _top_left_vectors(stacked, lsz)
    return _result(
        "centroid",
        problem,
        F,
        t0,
        description="weighted Grassmann centroid (closed form, orthonormal columns)",
        options={"weights": "c_k * sum_l 1/lambda_kl, normalized"},
    )


def mrc_weakest(
    problem: BeamformingProblem, *, rng: Any = None, single_device_optimal: bool = False
) -> SolveResult:
    """MRC toward the weakest device (spec 02 §4): its L dominant left singular vectors.

    Per subcarrier the weakest device is k* = argmax_k σ² c_k (Σ_l λ_{k,l}^{-1/2})² (the device
    with the largest single-device bound), and A = U_{k*} / √L. With
    ``single_device_optimal=True`` column l is scaled by λ_{k*,l}^{-1/4} instead, which is the
    exact single-device optimum for k* (spec 02 §2) and attains the single-device bound when k*
    is the only binding device (identical to the plain MRC for L = 1). ``rng`` is unused.
    """
    t0 = time.perf_counter()
    m = problem.shape[1]
    lsz = problem.streams
    weakest = np.argmax(single_device_values(problem), axis=0)  # (M,)
    hw = problem.H[weakest, np.arange(m)]  # (M, N_r, N_t)
    u, s, _ = np.linalg.svd(hw, full_matrices=False)
    A = u[..., :lsz]
    if single_device_optimal:
        A = A * (s[:, None, :lsz] ** -0.5)  # λ^{-1/4} = s^{-1/2}
    return _result(
        "mrc",
        problem,
        A,
        t0,
        description="MRC toward the weakest device (closed form)",
        options={"single_device_optimal": bool(single_device_optimal)},
        terms={
            "weakest_device_min": float(weakest.min()),
            "weakest_device_max": float(weakest.max()),
        },
    )


def principal_eigenvector(problem: BeamformingProblem, *, rng: Any = None) -> SolveResult:
    """Top-L eigenvectors of the trace-normalized sum of Gram matrices (spec 02 §4).

        A = F / √L,   F = top-L eigenvectors of  Σ_k G_k / tr(G_k).

    Normalizing each G_k by its trace (= ‖H_k‖_F²) gives every device the same say regardless of
    path loss, so F maximizes the average normalized gain Σ_k tr(F^H G_k F) / tr(G_k). Computed as
    the left singular vectors of the stacked [H_1/‖H_1‖_F, …, H_K/‖H_K‖_F]. ``rng`` is unused.
    """
    t0 = time.perf_counter()
    k, m, nr, nt = problem.shape
    fro = np.sqrt(np.sum(np.abs(problem.H) ** 2, axis=(-2, -1)))  # (K, M)
    stacked = np.moveaxis(problem.H / fro[..., None, None], 0, 2).reshape(m, nr, k * nt)
    F = _top_left_vectors(stacked, problem.streams)
    return _result(
        "eigen",
        problem,
        F,
        t0,
        description="principal eigenvectors of sum_k G_k / tr(G_k) (closed form)",
    )


def random_beamformer(problem: BeamformingProblem, *, rng: Any = None) -> SolveResult:
    """Random receive beamformer: i.i.d. CN(0, 1) entries, normalized per subcarrier.

    ``rng`` is a ``numpy.random.Generator`` or a seed (``None``: fresh OS entropy).
    """
    t0 = time.perf_counter()
    gen = np.random.default_rng(rng)
    _, m, nr, _ = problem.shape
    shape = (m, nr, problem.streams)
    A = gen.standard_normal(shape) + 1j * gen.standard_normal(shape)
    return _result("random", problem, A, t0, description="i.i.d. CN(0,1) random beamformer")


# ---------------------------------------------------------------------------------------------
# Semidefinite relaxation (L = 1)
# ---------------------------------------------------------------------------------------------
_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "CLARABEL": {},
    # SCS is first order: ask for more accuracy than its default 1e-4 (the bound returned is
    # certified through the dual anyway, see _SDRSubproblem).
    "SCS": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 200_000},
}


def _realify(G: np.ndarray) -> np.ndarray:
    """[[Re G, −Im G], [Im G, Re G]] for a batch of complex matrices (..., n, n) → (..., 2n, 2n)."""
    return np.concatenate(
        [np.concatenate([G.real, -G.imag], axis=-1), np.concatenate([G.imag, G.real], axis=-1)],
        axis=-2,
    )


class _SDRSubproblem:
    """The scaled SDR of one subcarrier, built once with DPP parameters and re-solved.

    Scaled problem (per subcarrier, with Ĝ_k = G_k / (c_k s), s > 0 a data scale):

        minimize tr(X̂)   s.t.  tr(Ĝ_k X̂) ≥ 1  (k = 1..K),   X̂ ⪰ 0 Hermitian N_r×N_r,

    and the SDR value is v_SDR = σ² tr(X̂*) / s (X = X̂ / s solves the unscaled problem).

    Complex Hermitian parameters are DPP-compliant in cvxpy 1.9, but Clarabel then reports
    ``optimal_inaccurate`` on these problems (checked at N_r = 8, 16), so the relaxation is
    stated over a real symmetric Z ⪰ 0 of size 2N_r with the realified data
    Ĝ_R = [[Re Ĝ, −Im Ĝ], [Im Ĝ, Re Ĝ]] (cvxpy realifies a complex PSD variable to the same 2N_r
    cone anyway, so nothing is lost):

        minimize ½ tr(Z)   s.t.  ½ tr(Ĝ_R,k Z) ≥ 1,   Z ⪰ 0.

    This is exact, not a further relaxation: the data commute with J = [[0, −I], [I, 0]], so Z and
    JᵀZJ have the same cost and constraint values, and the average Z̄ = (Z + JᵀZJ)/2 ⪰ 0 is
    feasible with the same cost; Z̄ = [[Re X, −Im X], [Im X, Re X]] is the realification of the
    Hermitian X = (Z₁₁ + Z₂₂)/2 + i (Z₂₁ − Z₁₂)/2 ⪰ 0 with tr X = ½ tr Z and
    tr(Ĝ X) = ½ tr(Ĝ_R Z̄). Conversely every Hermitian X ⪰ 0 realifies to such a Z.

    The dual is  max Σ_k y_k  s.t.  Σ_k y_k Ĝ_k ⪯ I, y ≥ 0; any y ≥ 0 scaled by
    1/λ_max(Σ_k y_k Ĝ_k) is dual feasible, so Σ_k y_k / λ_max(Σ_k y_k Ĝ_k) is a lower bound that
    does not depend on the solver's accuracy (weak duality). That is the value reported.
    """

    def __init__(
        self,
        n: int,
        k: int,
        solvers: Sequence[str],
        solver_options: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        import cvxpy as cp  # heavy import kept local (STYLE.md)

        self.cp = cp
        self.n = n
        self.solvers = [s.upper() for s in solvers]
        if not self.solvers:
            raise ValueError("solvers: empty; name at least one cvxpy solver, e.g. ('CLARABEL',)")
        user = {name.upper(): dict(o) for name, o in (solver_options or {}).items()}
        self.options = {s: {**_SOLVER_OPTIONS.get(s, {}), **user.get(s, {})} for s in self.solvers}
        self.Z = cp.Variable((2 * n, 2 * n), PSD=True)
        self.Q = cp.Parameter((k, 4 * n * n))
        self.constraint = self.Q @ cp.vec(self.Z, order="F") >= 1
        self.problem = cp.Problem(cp.Minimize(0.5 * cp.trace(self.Z)), [self.constraint])

    def solve(self, g_hat: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray, str, int]:
        """Solve for scaled Gram matrices Ĝ (K, n, n); return (X̂, y, solver used, iterations)."""
        cp = self.cp
        self.Q.value = 0.5 * _realify(g_hat).reshape(len(g_hat), -1, order="F")
        tried = []
        for name in self.solvers:
            try:
                with warnings.catch_warnings():
                    # cvxpy warns on inaccurate solutions; the status is checked just below
                    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                    self.problem.solve(solver=name, **self.options[name])
            except cp.error.SolverError as exc:
                tried.append(f"{name}: {exc}")
                continue
            status = self.problem.status
            if status == cp.OPTIMAL:
                z = self.Z.value
                n = self.n
                x = 0.5 * (z[:n, :n] + z[n:, n:]) + 0.5j * (z[n:, :n] - z[:n, n:])
                y = np.maximum(np.asarray(self.constraint.dual_value, dtype=float), 0.0)
                iters = self.problem.solver_stats.num_iters or 0
                return 0.5 * (x + _herm(x)), y, name, int(iters)
            tried.append(f"{name}: status {status!r}")
        raise SolverError(
            f"sdr, {where}: no solver returned an optimal solution of the semidefinite "
            "relaxation (" + "; ".join(tried) + "). Try solvers=('SCS', 'CLARABEL'), loosen "
            "solver_options (e.g. {'SCS': {'eps_abs': 1e-6, 'eps_rel': 1e-6}}), or drop devices "
            "in deep fade."
        )


def _psd_factor(x: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """V (n, r) with X ≈ V V^H, dropping eigenvalues below ``rtol`` · λ_max."""
    w, u = np.linalg.eigh(x)
    keep = w > rtol * max(w[-1], np.finfo(float).tiny)
    return u[:, keep] * np.sqrt(w[keep])


def _purify(v: np.ndarray, g_hat: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """Rank reduction of an optimal SDR solution X = V V^H; returns V' (n, r') with r'² ≤ K.

    Interior-point solvers return a maximum-rank point of the optimal face, which has rank > 1
    when the optimum is not unique (e.g. orthogonal channels, spec 02 §6.5), and randomization
    from it is poor. With X = V V^H (V n×r, eigenvalues below ``rtol``·λ_max dropped), any
    Hermitian Δ (r×r) with tr(V^H Ĝ_k V Δ) = 0 for all k keeps every constraint value of
    X(t) = V (I + tΔ) V^H, and such a Δ ≠ 0 exists while r² > K (K real equations in r² real
    unknowns). At an optimum tr(V^H V Δ) = 0 (else ±Δ would lower the cost); the sign is taken
    so that it does not increase. Δ then has a negative eigenvalue λ, and t = −1/λ lowers the
    rank by at least one. Repeating reaches r² ≤ K (Huang–Palomar; rank one for K ≤ 3).
    Only used to generate candidates: the bound comes from the dual certificate.
    """
    k = len(g_hat)
    while 1 < v.shape[1] and v.shape[1] ** 2 > k:
        r = v.shape[1]
        b = _herm(v)[None] @ g_hat @ v[None]  # (K, r, r)
        iu = np.triu_indices(r, 1)
        # coefficients of tr(B_k Δ) in the basis Δ_ii, Δ_ij = s + i a (i < j), see docstring
        rows = np.concatenate(
            [
                np.real(np.diagonal(b, axis1=1, axis2=2)),
                2 * b[:, iu[0], iu[1]].real,
                2 * b[:, iu[0], iu[1]].imag,
            ],
            axis=1,
        )  # (K, r²)
        coef = np.linalg.svd(rows, full_matrices=True)[2][-1]  # a null vector (r² > K)
        delta = np.diag(coef[:r]).astype(complex)
        off = coef[r : r + len(iu[0])] + 1j * coef[r + len(iu[0]) :]
        delta[iu] = off
        delta[iu[1], iu[0]] = np.conj(off)
        if np.real(np.trace(_herm(v) @ v @ delta)) > 0:
            delta = -delta
        d, q = np.linalg.eigh(delta)
        if not d[0] < 0:
            break
        scale = 1.0 + d / -d[0]  # eigenvalues of I + tΔ, t = −1/λ_min; the first is 0
        keep = scale > rtol * scale.max()
        v = v @ q[:, keep] * np.sqrt(scale[keep])
    return v


def _l1_values(xi: np.ndarray, problem: BeamformingProblem) -> np.ndarray:
    """f(ξ) = σ² ‖ξ‖² max_k c_k / ‖H_k^H ξ‖² for candidates ξ (M, T, N_r) → (M, T).

    Vectorized over subcarriers and candidates; equal to ``problem.objective`` for L = 1.
    """
    k, m, nr, nt = problem.shape
    hh = _herm(problem.H)  # (K, M, N_t, N_r)
    hh = np.moveaxis(hh, 0, 1).reshape(m, k * nt, nr)  # (M, K N_t, N_r)
    proj = hh @ np.swapaxes(xi, -1, -2)  # (M, K N_t, T)
    gains = np.sum(np.abs(proj.reshape(m, k, nt, -1)) ** 2, axis=2)  # (M, K, T)
    c = problem.weights().T[:, :, None]  # (M, K, 1)
    with np.errstate(divide="ignore"):
        worst = np.max(c / gains, axis=1)  # (M, T)
    return problem.sigma2 * np.sum(np.abs(xi) ** 2, axis=-1) * worst


def sdr(
    problem: BeamformingProblem,
    *,
    rng: Any = None,
    randomizations: int = 200,
    solvers: Sequence[str] = ("CLARABEL", "SCS"),
    solver_options: Mapping[str, Mapping[str, Any]] | None = None,
    purify: bool = True,
) -> SolveResult:
    """Semidefinite relaxation with Gaussian randomization, L = 1 only (spec 02 §4, §5).

    With ZF precoders and L = 1, f(a) = σ² ‖a‖² max_k c_k / (a^H G_k a) is scale invariant, so

        f* = σ² min { ‖a‖² : a^H G_k a ≥ c_k  ∀k }.

    Lifting X = a a^H and dropping rank(X) = 1 gives the SDR

        v_SDR = σ² min { tr(X) : tr(G_k X) ≥ c_k ∀k, X ⪰ 0 } ≤ f*,

    solved per subcarrier in the scaled form of :class:`_SDRSubproblem` (cvxpy problem built
    once, parameters re-set per subcarrier; solvers tried in order, default Clarabel then SCS).
    The relaxation is tight (rank one) for K ≤ 3.

    Candidates: the principal eigenvector of X*; with ``purify``, X* is first reduced to rank
    r with r² ≤ K at the same cost and constraint values (:func:`_purify`; rank one for K ≤ 3,
    which matters when the optimum is not unique, e.g. orthogonal channels); the principal
    eigenvector of the reduced X' and ``randomizations`` draws ξ = V z ~ CN(0, X') (X' = V V^H,
    z ~ CN(0, I)). Each is scored with the exact f (no rescaling needed, f is scale invariant)
    and the best per subcarrier is returned.

    Parameters
    ----------
    problem
        Beamforming problem with ``streams == 1``.
    rng
        ``numpy.random.Generator`` or seed for the randomization (``None``: OS entropy).
    randomizations
        Number T ≥ 0 of Gaussian draws per subcarrier.
    solvers
        cvxpy solver names tried in order until one returns ``optimal``. At N_r = 32 SCS is
        about 20× faster than Clarabel at the same certified value (see the module notes).
    solver_options
        Extra keyword arguments per solver name, merged over the defaults
        (SCS: ``eps_abs = eps_rel = 1e-8``).
    purify
        Reduce the rank of X* before randomizing (default True).

    Returns
    -------
    SolveResult
        ``bound_per_subcarrier`` = max(certified v_SDR, single-device bound); ``terms``: the
        total certified SDR value ``sdr_value``, the total primal σ² tr(X*) ``sdr_primal_value``,
        the total of the principal-eigenvector candidate, the number of subcarriers won by a
        random draw and the largest rank after purification; ``options``: randomizations,
        purify, solvers, per-solver counts and options.

    Raises
    ------
    ValueError
        If ``problem.streams != 1`` or ``randomizations < 0``.
    SolverError
        If no solver returns an optimal solution on some subcarrier.
    """
    t0 = time.perf_counter()
    if problem.streams != 1:
        raise ValueError(
            f"sdr: streams = {problem.streams} is not supported; the semidefinite relaxation of "
            "spec 02 §4 is for L = 1. Solve the L = 1 problem, or use 'centroid' or the manifold "
            "solver for L > 1."
        )
    if (
        isinstance(randomizations, bool)
        or int(randomizations) != randomizations
        or (randomizations < 0)
    ):
        raise ValueError(f"randomizations: got {randomizations!r}, must be an integer >= 0")
    randomizations = int(randomizations)
    gen = np.random.default_rng(rng)
    k, m, nr, _ = problem.shape

    # scale: Ĝ_k = G_k / (c_k s_m) with s_m = min_k λ_max(G_k)/c_k, so the weakest device has
    # λ_max(Ĝ_k) = 1, the scaled data are O(1), and tr(X̂*) = v_SDR / single-device bound ≥ 1.
    sd = single_device_values(problem)  # σ² c_k / λ_max(G_k)  (L = 1), (K, M)
    s = problem.sigma2 / np.max(sd, axis=0)  # (M,)
    g_hat = problem.gram() / (problem.weights() * s[None, :])[..., None, None]  # (K, M, n, n)
    g_hat = np.moveaxis(g_hat, 1, 0)  # (M, K, n, n)

    sub = _SDRSubproblem(nr, k, solvers, solver_options)
    x_hat = np.empty((m, nr, nr), dtype=complex)
    y = np.empty((m, k))
    used: dict[str, int] = {}
    iterations = 0
    for j in range(m):
        x_hat[j], y[j], name, its = sub.solve(g_hat[j], f"subcarrier {j}")
        used[name] = used.get(name, 0) + 1
        iterations += its

    # certified SDR value (weak duality, see _SDRSubproblem): Σ y / λ_max(Σ y_k Ĝ_k), times σ²/s.
    mu = np.linalg.eigvalsh(np.einsum("mk,mkij->mij", y, g_hat))[:, -1]
    ysum = np.sum(y, axis=1)
    ok = (mu > 0) & (ysum > 0)  # y = 0 certifies nothing; best_bound then keeps the others
    v_sdr = problem.sigma2 / s * np.where(ok, ysum / np.where(ok, mu, 1.0), 0.0)
    v_primal = problem.sigma2 / s * np.real(np.trace(x_hat, axis1=1, axis2=2))

    # candidates: principal eigenvectors of X̂ and of its rank-reduced X', and Gaussian draws
    # ξ = V z ~ CN(0, X') with z ~ CN(0, I) (V padded with zero columns to n)
    principal = np.linalg.eigh(x_hat)[1][:, :, -1]  # (M, n)
    factor = np.zeros((m, nr, nr), dtype=complex)
    ranks = np.empty(m, dtype=int)
    for j in range(m):
        v = _psd_factor(x_hat[j])
        if purify:
            v = _purify(v, g_hat[j])
        factor[j, :, : v.shape[1]] = v
        ranks[j] = v.shape[1]
    principal_reduced = np.linalg.svd(factor)[0][:, :, 0]
    z = (
        gen.standard_normal((m, randomizations, nr))
        + 1j * gen.standard_normal((m, randomizations, nr))
    ) / np.sqrt(2.0)
    xi = np.concatenate(
        [principal[:, None, :], principal_reduced[:, None, :], z @ np.swapaxes(factor, -1, -2)],
        axis=1,
    )
    values = _l1_values(xi, problem)  # (M, 1 + T)
    best = np.argmin(values, axis=1)
    A = xi[np.arange(m), best][:, :, None]

    bound = best_bound(problem, sdr_values=v_sdr)
    opts = {
        "randomizations": randomizations,
        "purify": bool(purify),
        "solvers": list(sub.solvers),
        "solver_counts": used,
        "solver_options": sub.options,
    }
    terms = {
        "sdr_value": float(np.sum(v_sdr)),
        "sdr_primal_value": float(np.sum(v_primal)),
        "principal_eigenvector_value": float(np.sum(values[:, 0])),
        "randomization_wins": float(np.sum(best >= 2)),
        "max_rank": float(ranks.max()),
    }
    return _result(
        "sdr",
        problem,
        A,
        t0,
        description=f"SDR + {randomizations} Gaussian randomizations",
        bound=bound,
        options=opts,
        terms=terms,
        iterations=iterations,
        evaluations=m * (2 + randomizations),
    )


#: Registry of baselines by name (CLI, benchmarks).
BASELINES: dict[str, Callable[..., SolveResult]] = {
    "centroid": centroid,
    "sdr": sdr,
    "random": random_beamformer,
    "mrc": mrc_weakest,
    "eigen": principal_eigenvector,
}
