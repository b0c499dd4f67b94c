"""The receive-beamforming problem of spec 02 §2 for one channel draw, all subcarriers.

    minimize_A  f(A_m) = σ² ‖A_m‖_F² · max_k φ_k² tr((A_m^H G_{k,m} A_m)^{-1}) / P_{k,m}

independently for each subcarrier m. Solvers work on a normalized copy: G̃ = G / σ² and
c_k = φ_k² / P_{k,m}, so that f = ‖A‖² max_k c_k tr((A^H G̃_k A)^{-1}) with the same value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from fedopt import aircomp
from fedopt.channel import Channel
from fedopt.errors import InfeasibleError
from fedopt.instance import Instance

__all__ = ["BeamformingProblem"]


@dataclass(frozen=True, eq=False)
class BeamformingProblem:
    """Data of one multi-subcarrier receive-beamforming problem.

    Attributes
    ----------
    H : ndarray (K, M, N_r, N_t)
        Channels.
    phi : ndarray (K,)
        Aggregation weights φ_k.
    p_sub : ndarray (K, M)
        Per-subcarrier power budgets P_{k,m} (W).
    sigma2 : float
        Noise power per subcarrier (W).
    streams : int
        L.
    """

    H: np.ndarray
    phi: np.ndarray
    p_sub: np.ndarray
    sigma2: float
    streams: int

    def __post_init__(self) -> None:
        k, m, nr, nt = self.H.shape
        p = np.broadcast_to(np.asarray(self.p_sub, dtype=float).reshape(k, -1), (k, m))
        object.__setattr__(self, "p_sub", np.ascontiguousarray(p))
        object.__setattr__(self, "phi", np.asarray(self.phi, dtype=float))
        for name, arr in (("phi", self.phi), ("p_sub", self.p_sub)):
            if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise InfeasibleError(f"{name}: every entry must be finite and > 0, got "
                                      f"{np.array2string(np.ravel(arr)[:8], precision=3)}")
        if not np.all(np.isfinite(self.H)):
            raise InfeasibleError("H: channel contains NaN or inf entries")
        sv = np.linalg.svd(self.H, compute_uv=False)  # (K, M, min(N_r, N_t)), descending
        sv.flags.writeable = False
        object.__setattr__(self, "_singular_values", sv)  # kept: the bounds need them too
        self._check_streams()

    def _check_streams(self) -> None:
        _, _, nr, nt = self.H.shape
        if not 1 <= self.streams <= min(nr, nt):
            raise InfeasibleError(
                f"streams: L = {self.streams} needs 1 <= L <= min(N_t, N_r) = min({nt}, {nr})"
            )
        # a device whose channel cannot carry L streams on some subcarrier makes f infinite
        # for every A: report it up front, naming the device and subcarrier.
        sv = self._singular_values
        top = np.maximum(sv[..., 0], np.finfo(float).tiny)
        weak = (sv[..., self.streams - 1] <= 1e-9 * top) | (sv[..., 0] == 0)
        if weak.any():
            kk, mm = (int(x) for x in np.argwhere(weak)[0])
            raise InfeasibleError(
                f"device {kk}, subcarrier {mm}: the channel has rank < L = {self.streams} "
                f"(singular values {np.array2string(sv[kk, mm], precision=3)}); it cannot carry "
                f"{self.streams} streams. Use fewer streams or drop the device."
            )

    def with_streams(self, streams: int) -> BeamformingProblem:
        """The same channels, weights and powers for another stream count L, checked as the
        constructor checks it (the singular values of H are reused, not recomputed)."""
        other = copy.copy(self)
        object.__setattr__(other, "streams", streams)
        other._check_streams()
        return other

    @classmethod
    def from_instance(
        cls, instance: Instance, channel: Channel, streams: int
    ) -> BeamformingProblem:
        """Build the problem for an instance, a channel draw and a stream count."""
        channel.check(instance)
        instance.validate_streams(streams)
        return cls(H=channel.H, phi=instance.weights, p_sub=instance.power_per_subcarrier_w,
                   sigma2=instance.noise_power_w, streams=streams)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(K, M, N_r, N_t)."""
        return self.H.shape  # type: ignore[return-value]

    def singular_values(self) -> np.ndarray:
        """Singular values of every H_{k,m}, descending, shape (K, M, min(N_r, N_t)) (read-only;
        computed once, when the problem is built)."""
        return self._singular_values

    def gram(self) -> np.ndarray:
        """G_{k,m} = H H^H, shape (K, M, N_r, N_r)."""
        return self.H @ aircomp.hermitian(self.H)

    def weights(self) -> np.ndarray:
        """c_{k,m} = φ_k² / P_{k,m}, shape (K, M)."""
        return self.phi[:, None] ** 2 / self.p_sub

    def objective(self, A: np.ndarray) -> np.ndarray:
        """f(A_m) per subcarrier, shape (M,) (scale invariant).

        ``+inf`` on a subcarrier where A_m^H G_k A_m is singular for some device (A_m blind to
        that device, e.g. a centroid or MRC beamformer orthogonal to it on orthogonal channels,
        spec 02 §6.5): a property of that beamformer, not of the problem, so it is not an error.
        """
        try:
            return aircomp.objective(A, self.H, self.phi, self.p_sub, self.sigma2)
        except InfeasibleError:
            out = np.empty(self.H.shape[1])
            for j in range(out.size):  # only on this rare path: find the singular subcarriers
                try:
                    out[j] = aircomp.objective(A[j:j + 1], self.H[:, j:j + 1], self.phi,
                                               self.p_sub[:, j:j + 1], self.sigma2)[0]
                except InfeasibleError:
                    out[j] = np.inf
            return out

    def subproblem(self, subcarriers) -> BeamformingProblem:
        """The problem restricted to some subcarriers."""
        idx = np.atleast_1d(np.asarray(subcarriers))
        return BeamformingProblem(H=self.H[:, idx], phi=self.phi, p_sub=self.p_sub[:, idx],
                                  sigma2=self.sigma2, streams=self.streams)
