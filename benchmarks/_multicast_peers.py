"""The classic L = 1 peers of the multicast benchmark, implemented here with cvxpy (issue 17).

``sca``: successive convex approximation of the multicast QCQP min ‖a‖² s.t. aᴴG̃_k a ≥ 1 (the
convex-restriction SCA of Mehanna, Huang & Sidiropoulos 2015, without the slack of FPP since
the start is made feasible by scaling): at a feasible a₀ each constraint is replaced by its
linear minorant 2 Re(a₀ᴴ G̃_k a) − a₀ᴴ G̃_k a₀ ≥ 1, which keeps a₀ feasible, so ‖a‖² decreases
monotonically; each step is one QP (Clarabel), built once with cvxpy parameters and re-solved.
"""

from __future__ import annotations

import numpy as np

from fedopt.solvers.beamforming.multicast import scaled_channels
from fedopt.solvers.beamforming.problem import BeamformingProblem


def _gains(w: np.ndarray, n_tx: int, a: np.ndarray) -> np.ndarray:
    z = np.conj(w.T) @ a
    return np.sum(np.abs(z.reshape(-1, n_tx)) ** 2, axis=1)


class SCA:
    """SCA on the single subcarrier of ``problem`` (M = 1)."""

    def __init__(self, problem: BeamformingProblem):
        import cvxpy as cp

        k, m, nr, nt = problem.shape
        assert m == 1 and problem.streams == 1
        w, s = scaled_channels(problem)
        self.w, self.scale, self.n_tx, self.k, self.n = w[0], s[0], nt, k, nr
        self.sigma2 = problem.sigma2
        self.x = cp.Variable(2 * nr)
        self.B = cp.Parameter((k, 2 * nr))
        self.d = cp.Parameter(k)
        self.prob = cp.Problem(cp.Minimize(cp.sum_squares(self.x)), [self.B @ self.x >= self.d])

    def value(self, a: np.ndarray) -> float:
        """f(a) in the problem's units."""
        return float(self.sigma2 * np.vdot(a, a).real
                     / (self.scale**2 * _gains(self.w, self.n_tx, a).min()))

    def run(self, a0: np.ndarray, max_iterations: int = 200, rtol: float = 1e-6):
        """SCA from a₀ (N_r,); returns (a, value, iterations)."""
        a = a0 / np.sqrt(_gains(self.w, self.n_tx, a0).min())  # feasible, binding
        norm2 = np.vdot(a, a).real
        it = 0
        while it < max_iterations:
            it += 1
            z = np.conj(self.w.T) @ a  # (K N_t,)
            ga = (self.w * z[None, :]).reshape(self.n, self.k, self.n_tx).sum(axis=2)  # G̃_k a
            g = np.sum(np.abs(z.reshape(self.k, self.n_tx)) ** 2, axis=1)
            self.B.value = 2.0 * np.concatenate([ga.real, ga.imag], axis=0).T
            self.d.value = 1.0 + g
            self.prob.solve(solver="CLARABEL")
            if self.x.value is None:
                break
            cand = self.x.value[: self.n] + 1j * self.x.value[self.n:]
            cand = cand / np.sqrt(_gains(self.w, self.n_tx, cand).min())
            new = np.vdot(cand, cand).real
            if new >= norm2:
                break
            a, done = cand, (norm2 - new) <= rtol * norm2
            norm2 = new
            if done:
                break
        return a, self.value(a), it
