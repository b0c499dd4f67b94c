"""Semidefinite relaxation + Gaussian randomization, L = 1 (spec 02 §4), and its certified lower
bound (spec 02 §5).

With ZF precoders and L = 1, f(a) = σ² ‖a‖² max_k c_k / (a^H G_k a) is scale invariant, so

    f* = σ² min { ‖a‖² : a^H G_k a ≥ c_k  ∀k }.

Lifting X = a a^H and dropping rank(X) = 1 gives the SDR

    v_SDR = σ² min { tr(X) : tr(G_k X) ≥ c_k ∀k, X ⪰ 0 } ≤ f*,

solved per subcarrier in the scaled form of :class:`_SDRSubproblem` (one cvxpy problem built
once, its parameters re-set per subcarrier; solvers tried in order, default Clarabel then SCS).
The relaxation is tight (rank one) for K ≤ 3. Only this method loops over subcarriers (one conic
solve each). For N_r ≥ 32 pass ``solvers=("SCS", "CLARABEL")`` (timings: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedopt.aircomp import hermitian
from fedopt.errors import InvalidArgumentError, SolverError
from fedopt.solvers.beamforming.bounds import best_bound, single_device_values
from fedopt.solvers.beamforming.problem import BeamformingProblem
from fedopt.solvers.beamforming.report import beamforming_result
from fedopt.solvers.result import SolveResult, SolverRun

__all__ = ["sdr"]

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
            raise InvalidArgumentError(
                "solvers: empty; name at least one cvxpy solver, e.g. ('CLARABEL',)")
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
                return 0.5 * (x + hermitian(x)), y, name, int(iters)
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
        b = hermitian(v)[None] @ g_hat @ v[None]  # (K, r, r)
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
        if np.real(np.trace(hermitian(v) @ v @ delta)) > 0:
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
    hh = hermitian(problem.H)  # (K, M, N_t, N_r)
    hh = np.moveaxis(hh, 0, 1).reshape(m, k * nt, nr)  # (M, K N_t, N_r)
    proj = hh @ np.swapaxes(xi, -1, -2)  # (M, K N_t, T)
    gains = np.sum(np.abs(proj.reshape(m, k, nt, -1)) ** 2, axis=2)  # (M, K, T)
    c = problem.weights().T[:, :, None]  # (M, K, 1)
    with np.errstate(divide="ignore"):
        worst = np.max(c / gains, axis=1)  # (M, T)
    return problem.sigma2 * np.sum(np.abs(xi) ** 2, axis=-1) * worst


# ---------------------------------------------------------------------------------------------
# the steps of sdr()
# ---------------------------------------------------------------------------------------------
def _check_arguments(problem: BeamformingProblem, randomizations: Any) -> int:
    """The validated number of randomizations; InvalidArgumentError for L > 1 or a bad count."""
    if problem.streams != 1:
        raise InvalidArgumentError(
            f"sdr: streams = {problem.streams} is not supported; the semidefinite relaxation of "
            "spec 02 §4 is for L = 1. Solve the L = 1 problem, or use 'centroid' or the manifold "
            "solver for L > 1."
        )
    try:
        ok = (not isinstance(randomizations, bool) and int(randomizations) == randomizations
              and randomizations >= 0)
    except (TypeError, ValueError):  # not a number at all
        ok = False
    if not ok:
        raise InvalidArgumentError(
            f"randomizations: got {randomizations!r}, must be an integer >= 0")
    return int(randomizations)


def _scaled_grams(problem: BeamformingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Data scale s (M,) and scaled Gram matrices Ĝ (M, K, n, n).

    Ĝ_k = G_k / (c_k s_m) with s_m = min_k λ_max(G_k)/c_k, so the weakest device has
    λ_max(Ĝ_k) = 1, the scaled data are O(1), and tr(X̂*) = v_SDR / single-device bound ≥ 1.
    """
    sd = single_device_values(problem)  # σ² c_k / λ_max(G_k)  (L = 1), (K, M)
    s = problem.sigma2 / np.max(sd, axis=0)  # (M,)
    g_hat = problem.gram() / (problem.weights() * s[None, :])[..., None, None]  # (K, M, n, n)
    return s, np.moveaxis(g_hat, 1, 0)


def _solve_relaxations(sub: _SDRSubproblem, g_hat: np.ndarray):
    """X̂* (M, n, n) and duals y (M, K) per subcarrier, solver counts, total iterations."""
    m, k, nr, _ = g_hat.shape
    x_hat = np.empty((m, nr, nr), dtype=complex)
    y = np.empty((m, k))
    used: dict[str, int] = {}
    iterations = 0
    for j in range(m):
        x_hat[j], y[j], name, its = sub.solve(g_hat[j], f"subcarrier {j}")
        used[name] = used.get(name, 0) + 1
        iterations += its
    return x_hat, y, used, iterations


def _certified_values(problem: BeamformingProblem, s: np.ndarray, g_hat: np.ndarray,
                      x_hat: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dual-certified v_SDR and primal σ² tr(X*) per subcarrier (see :class:`_SDRSubproblem`):
    Σ y / λ_max(Σ y_k Ĝ_k), times σ²/s."""
    mu = np.linalg.eigvalsh(np.einsum("mk,mkij->mij", y, g_hat))[:, -1]
    ysum = np.sum(y, axis=1)
    ok = (mu > 0) & (ysum > 0)  # y = 0 certifies nothing; best_bound then keeps the others
    v_sdr = problem.sigma2 / s * np.where(ok, ysum / np.where(ok, mu, 1.0), 0.0)
    v_primal = problem.sigma2 / s * np.real(np.trace(x_hat, axis1=1, axis2=2))
    return v_sdr, v_primal


def _candidates(x_hat: np.ndarray, g_hat: np.ndarray, gen: np.random.Generator,
                randomizations: int, purify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ξ (M, 2 + T, n) and the rank of each (reduced) X' (M,): the principal
    eigenvectors of X̂ and of its rank-reduced X', then Gaussian draws ξ = V z ~ CN(0, X') with
    z ~ CN(0, I) (V padded with zero columns to n)."""
    m, nr, _ = x_hat.shape
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
    return xi, ranks


def sdr(
    problem: BeamformingProblem,
    *,
    rng: np.random.Generator | int | None = None,
    randomizations: int = 200,
    solvers: Sequence[str] = ("CLARABEL", "SCS"),
    solver_options: Mapping[str, Mapping[str, Any]] | None = None,
    purify: bool = True,
) -> SolveResult:
    """Semidefinite relaxation with Gaussian randomization, L = 1 only (spec 02 §4, §5; see the
    module notes).

    Candidates, each scored with the exact f (scale invariant) and the best kept per subcarrier:
    the principal eigenvector of X*; with ``purify``, X* reduced to rank r with r² ≤ K at the
    same cost and constraint values (:func:`_purify`; rank one for K ≤ 3, which matters when the
    optimum is not unique, e.g. orthogonal channels); the principal eigenvector of the reduced X'
    and ``randomizations`` draws ξ = V z ~ CN(0, X') (X' = V V^H, z ~ CN(0, I)).

    Parameters
    ----------
    problem
        Beamforming problem with ``streams == 1``.
    rng
        ``numpy.random.Generator`` or seed for the randomization (``None``: OS entropy).
    randomizations
        Number T ≥ 0 of Gaussian draws per subcarrier.
    solvers
        cvxpy solver names tried in order until one returns ``optimal``.
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
    InvalidArgumentError
        If ``problem.streams != 1``, ``randomizations < 0`` or ``solvers`` is empty.
    SolverError
        If no solver returns an optimal solution on some subcarrier.
    """
    run = SolverRun("sdr")
    randomizations = _check_arguments(problem, randomizations)
    gen = np.random.default_rng(rng)
    k, m, nr, _ = problem.shape
    s, g_hat = _scaled_grams(problem)
    sub = _SDRSubproblem(nr, k, solvers, solver_options)
    x_hat, y, used, iterations = _solve_relaxations(sub, g_hat)
    v_sdr, v_primal = _certified_values(problem, s, g_hat, x_hat, y)
    xi, ranks = _candidates(x_hat, g_hat, gen, randomizations, purify)
    values = _l1_values(xi, problem)  # (M, 2 + T)
    best = np.argmin(values, axis=1)
    return beamforming_result(
        run, problem, xi[np.arange(m), best][:, :, None],
        description=f"SDR + {randomizations} Gaussian randomizations",
        bound=best_bound(problem, sdr_values=v_sdr), bound_kind="sdr",
        options={"randomizations": randomizations, "purify": bool(purify),
                 "solvers": list(sub.solvers), "solver_counts": used,
                 "solver_options": sub.options},
        terms={"sdr_value": float(np.sum(v_sdr)),
               "sdr_primal_value": float(np.sum(v_primal)),
               "principal_eigenvector_value": float(np.sum(values[:, 0])),
               "randomization_wins": float(np.sum(best >= 2)),
               "max_rank": float(ranks.max())},
        iterations=iterations, evaluations=m * (2 + randomizations),
    )
