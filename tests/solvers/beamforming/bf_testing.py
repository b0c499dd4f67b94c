"""Builders shared by the beamforming tests (imported as ``bf_testing``; not a test file)."""

from __future__ import annotations

import numpy as np

from fedopt.solvers.beamforming.problem import BeamformingProblem

#: receiver noise per subcarrier of the random problems (W)
SIGMA2 = 1e-15


def random_problem(rng, k, m, nr, nt, streams, spread_db=0.0, equal_power=False, phi=None
                   ) -> BeamformingProblem:
    """Random CN channels with path loss 1e-9 · 10^(−U(0, spread_db)/10) per device; weights
    φ_k ~ U(0.5, 2) unless given; per-subcarrier powers U(5, 20) mW, or 10 mW each."""
    beta = 1e-9 * 10.0 ** (-rng.uniform(0.0, spread_db, k) / 10.0)
    shape = (k, m, nr, nt)
    h = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)
    h = h * np.sqrt(beta)[:, None, None, None]
    phi = rng.uniform(0.5, 2.0, k) if phi is None else np.asarray(phi, dtype=float)
    p = np.full((k, m), 0.01) if equal_power else rng.uniform(0.005, 0.02, (k, m))
    return BeamformingProblem(H=h, phi=phi, p_sub=p, sigma2=SIGMA2, streams=streams)
