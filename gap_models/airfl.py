"""The AirFL-LoRA optimality-gap model (spec 03 §1, constants §4).

For LoRA rank r, L streams per subcarrier and receive beamformers with per-subcarrier MSEs
MSE_m (spec 02 §2), the model bounds the expected optimality gap after T rounds by four named
terms:

    G(r, L) = (1 − λμ)^T Δ0                        contraction
            + (L_s λ / 2μ) · σ_g² / (K b)           sampling_noise
            + (L_s λ / 2μ) · D(r, L)                aggregation_distortion
            + ε(r)                                  rank_truncation

with the distortion of spec 02 §3, D(r, L) = v² / (Σφ)² · q(r) / (L M) · Σ_m MSE_m, and the
Eckart–Young rank-truncation error ε(r) = (L_s / 2) Σ_l Σ_{i>r} s_{l,i}² of the optimal update's
singular values (power law s_i = s_1 i^{−α}, or a measured spectrum).

Rounds: either T fixed (``learning.rounds``), or, when the instance sets
``constraints.total_time_s``, T = ⌊T_total / T_round(r, L)⌋ with the AirComp round latency of
spec 01 §5, which couples the rank to the contraction term through the airtime S(r, L) · T_sym.

Every term is vectorized over candidate ranks (and broadcasts over stream counts). Units: the
loss is in nats, the update in the parameter units of the LoRA factors; L_s in 1/(param²) loss,
μ likewise, λ in param²/loss, σ_g² and v² in param², Δ0 in nats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.instance import Instance, LearningSpec, LoRALayer

__all__ = ["GapConstants", "RankTruncation", "AirFLGap", "TERM_NAMES"]

#: Names of the gap terms, in display order.
TERM_NAMES = ("contraction", "sampling_noise", "aggregation_distortion", "rank_truncation")


@dataclass(frozen=True)
class GapConstants:
    """Constants of the gap model (spec 03 §4); defaults come from the instance's ``learning``.

    Attributes
    ----------
    smoothness : float
        L_s, smoothness of the loss (nats per squared parameter unit).
    pl_constant : float
        μ, Polyak–Łojasiewicz constant (same units as L_s).
    step_size : float
        λ ≤ 1/L_s, learning rate.
    grad_variance : float
        σ_g², per-sample stochastic-gradient variance (squared parameter units).
    initial_gap : float
        Δ0 = F(w0) − F*, nats.
    update_scale : float
        v, the common normalization scale of the transmitted update (spec 01 §3), at rank 1.
    batch_size : int
        b, local mini-batch size.
    rounds : int
        T when the number of rounds is fixed.
    """

    smoothness: float
    pl_constant: float
    step_size: float
    grad_variance: float
    initial_gap: float
    update_scale: float
    batch_size: int
    rounds: int
    update_scale_exponent: float = 0.0

    def scale_at(self, ranks: Any) -> np.ndarray:
        """v(r) = v · r^(−β) (β = ``update_scale_exponent``; β = 0: rank-independent)."""
        return self.update_scale * np.asarray(ranks, dtype=float) ** (-self.update_scale_exponent)

    @classmethod
    def from_learning(cls, spec: LearningSpec) -> GapConstants:
        """The constants of an instance's ``learning`` section."""
        return cls(smoothness=spec.smoothness, pl_constant=spec.pl_constant,
                   step_size=spec.step_size, grad_variance=spec.grad_variance,
                   initial_gap=spec.initial_gap, update_scale=spec.update_scale,
                   batch_size=spec.batch_size, rounds=spec.rounds,
                   update_scale_exponent=spec.update_scale_exponent)

    @property
    def noise_gain(self) -> float:
        """L_s λ / (2μ): how gradient noise (sampling or aggregation) turns into gap."""
        return self.smoothness * self.step_size / (2.0 * self.pl_constant)

    @property
    def contraction_factor(self) -> float:
        """1 − λμ, the per-round contraction of the initial gap."""
        return 1.0 - self.step_size * self.pl_constant


class RankTruncation:
    """Singular-value profile of the optimal full fine-tuning update and ε(r) (spec 03 §1).

    Parameters
    ----------
    values
        Singular values s_1 ≥ s_2 ≥ … of one adapted weight's optimal update ΔW*; the same
        profile is used for every adapted weight (``count`` copies per layer group) and truncated
        at each layer's min(d_out, d_in). Missing tail values count as zero.
    """

    def __init__(self, values: np.ndarray):
        try:  # complex, text or mapping input is a bad spectrum, not a numpy error
            raw = np.asarray(values)
            if np.iscomplexobj(raw):
                raise TypeError("complex singular values")
            values = raw.astype(float)
        except (TypeError, ValueError):
            values = np.empty(0)
        if values.ndim != 1 or values.size == 0 or np.any(~np.isfinite(values)) or np.any(
            values < 0
        ):
            raise InvalidArgumentError(
                "spectrum: expected a non-empty 1-D list of finite, non-negative singular values"
            )
        self.values = np.sort(values)[::-1]

    @classmethod
    def power_law(cls, s1: float, alpha: float, length: int) -> RankTruncation:
        """s_i = s_1 i^{−α}, i = 1..length."""
        return cls(s1 * np.arange(1, length + 1, dtype=float) ** (-alpha))

    @classmethod
    def from_instance(cls, instance: Instance) -> RankTruncation:
        """The profile the instance's ``learning`` section describes."""
        spec = instance.learning
        if spec.spectrum_kind == "measured":
            return cls(np.asarray(spec.spectrum_values))
        length = max(layer.max_rank for layer in instance.lora.layers)
        return cls.power_law(spec.spectrum_s1, spec.spectrum_alpha, length)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> RankTruncation:
        """Read measured singular values: ``.npz`` (array ``s``), ``.json`` (a list) or text."""
        path = Path(path)
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    return cls(data["s"])
            if path.suffix == ".json":
                import json

                return cls(json.loads(path.read_text()))  # the constructor validates
            return cls(np.loadtxt(path, dtype=float, ndmin=1))
        except (OSError, ValueError, KeyError) as exc:
            raise InvalidArgumentError(f"{path}: cannot read a singular-value spectrum ({exc})"
                                       ) from None

    def energy_beyond(self, ranks: Any, layers: tuple[LoRALayer, ...]) -> np.ndarray:
        """Σ_l count_l Σ_{r < i ≤ min(d_l, k_l)} s_i², vectorized over ``ranks``."""
        ranks = np.asarray(ranks, dtype=int)
        out = np.zeros(ranks.shape)
        for layer in layers:
            s2 = self.values[: layer.max_rank] ** 2
            tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])  # tail[j] = Σ_{i>j} s²
            out = out + layer.count * tail[np.clip(ranks, 0, s2.size)]
        return out


class AirFLGap:
    """The AirFL-LoRA gap G(r, L) of an instance (spec 03 §1).

    Parameters
    ----------
    instance
        Gives q(r), M, K, φ, latencies and the default constants and spectrum.
    constants
        Override of the learning constants (default: from the instance).
    truncation
        Override of the singular-value profile (default: from the instance).
    total_time_s
        Wall-clock budget T_total; default ``instance.constraints.total_time_s``. When set, the
        number of rounds is ⌊T_total / T_round(r, L)⌋, otherwise ``constants.rounds``.
    """

    def __init__(self, instance: Instance, *, constants: GapConstants | None = None,
                 truncation: RankTruncation | None = None, total_time_s: float | None = None):
        self.instance = instance
        self.constants = constants or GapConstants.from_learning(instance.learning)
        self.truncation = truncation or RankTruncation.from_instance(instance)
        self.total_time_s = (instance.constraints.total_time_s if total_time_s is None
                             else total_time_s)

    def rounds(self, ranks: Any, streams: Any) -> np.ndarray:
        """T for each (r, L): fixed, or ⌊T_total / T_round(r, L)⌋ under a wall-clock budget."""
        shape = np.broadcast(np.asarray(ranks), np.asarray(streams)).shape
        if self.total_time_s is None:
            return np.full(shape, self.constants.rounds, dtype=float)
        t_round = self.instance.aircomp_latency_s(np.asarray(ranks), np.asarray(streams))
        return np.floor(self.total_time_s / np.asarray(t_round, dtype=float))

    def distortion(self, ranks: Any, streams: Any, mse_sum: Any) -> np.ndarray:
        """D(r, L) = v(r)² / (Σφ)² · q(r) / (L M) · Σ_m MSE_m (spec 02 §3); φ are data shares,
        v(r) = v · r^(−β) (:meth:`GapConstants.scale_at`)."""
        q = np.asarray(self.instance.payload(np.asarray(ranks)), dtype=float)
        m = self.instance.n_subcarriers
        v2 = self.constants.scale_at(ranks) ** 2
        return v2 * q / (np.asarray(streams, dtype=float) * m) * np.asarray(mse_sum, dtype=float)

    def terms(self, ranks: Any, streams: Any, mse_sum: Any) -> dict[str, np.ndarray]:
        """The four named terms, broadcast over ranks, streams and Σ_m MSE_m.

        Parameters
        ----------
        ranks
            Candidate LoRA ranks r (scalar or array).
        streams
            L (scalar or array broadcastable with ``ranks``).
        mse_sum
            Σ_m MSE_m of the beamformers used at L streams (spec 02 §2), broadcastable.
        """
        c = self.constants
        ranks_a = np.asarray(ranks)
        t = self.rounds(ranks_a, streams)
        shape = np.broadcast(ranks_a, np.asarray(streams), np.asarray(mse_sum)).shape
        # (1 − λμ)^T by Python's float power on each distinct T: numpy's array power loop can
        # differ from the scalar one in the last bit, and the vectorized terms must equal the
        # scalar calls exactly (spec 03 §5)
        t_flat = np.asarray(t, dtype=float).ravel()
        t_vals, inverse = np.unique(t_flat, return_inverse=True)
        powers = np.array([c.contraction_factor ** float(x) for x in t_vals])
        contraction = c.initial_gap * powers[inverse.ravel()].reshape(np.shape(t))
        sampling = c.noise_gain * c.grad_variance / (self.instance.n_devices * c.batch_size)
        distortion = c.noise_gain * self.distortion(ranks_a, streams, mse_sum)
        truncation = 0.5 * c.smoothness * self.truncation.energy_beyond(ranks_a,
                                                                        self.instance.lora.layers)
        return {
            "contraction": np.broadcast_to(contraction, shape).astype(float),
            "sampling_noise": np.broadcast_to(sampling, shape).astype(float),
            "aggregation_distortion": np.broadcast_to(distortion, shape).astype(float),
            "rank_truncation": np.broadcast_to(truncation, shape).astype(float),
        }

    def total(self, ranks: Any, streams: Any, mse_sum: Any) -> np.ndarray:
        """G(r, L) = sum of :meth:`terms`."""
        return sum(self.terms(ranks, streams, mse_sum).values())
