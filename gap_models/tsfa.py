"""The SOFT/TSFA convergence bound (spec 03 §3, constants §4) [paper: the three effects; model:
exact form].

For T rounds of E local steps with step η on an L-smooth non-convex loss, the model bounds the
average squared gradient norm by six named terms:

    (1/T) Σ_t E‖∇f(x_t)‖² ≤ 2(f0 − f*)/(ηT)                        optimization
                          + c1 η L σ² / K                           noise
                          + c2 η² L² E² G²                          drift
                          + c3 ε(r)                                 rank
                          + c4 (1/T) Σ_t Σ_k p_k E_drop,k(ρ_k)      sparsification
                          + c5 (1/T) Σ_t ‖C_t‖_F²                   covariance

* ε(r) = (L/2) Σ_l count_l Σ_{i>r} s_i², the Eckart–Young rank-truncation error of the optimal
  update's spectrum, exactly the ``rank_truncation`` term of the AirFL-LoRA model (spec 03 §1;
  :class:`gap_models.airfl.RankTruncation`).
* E_drop,k(ρ) = Σ over the dropped rank-1 components of s_i² (:func:`dropped_energy`; exact under
  orthogonal factors, spec 04 §4), weighted by the aggregation weights p_k = φ_k.
* C_t = Σ_k p_k (B_k − B̄)(A_k − Ā), the covariance of separately averaged factors (spec 03 §2).

Model choices for the constants (defaults of :class:`TSFAConstants`, to be calibrated):

* c1 = 1: the mini-batch SGD variance term ηLσ²/K of non-convex SGD analyses.
* c2 = 4: client drift of local SGD under bounded gradients ‖∇f_k‖ ≤ G (the 4η²E²G²L² of
  parallel-restarted-SGD analyses).
* c3 = 1: ε(r) already carries its L/2 (as in the AirFL-LoRA model).
* c4 = c5 = L/2: a per-round perturbation Δ of the aggregated update changes the loss by at most
  ⟨∇f, Δ⟩ + (L/2)‖Δ‖²; the quadratic part weighs a dropped energy E_drop (or the covariance
  energy ‖C‖²) like the rank term weighs never-learned energy. With c3 = 1 and c4 = L/2 the rank
  term at r plus the nominal sparsification term at (r, m) equals the rank term at m.
  :meth:`TSFAConstants.from_instance` sets L/2 from the instance's smoothness; the class
  defaults (5.0) are L/2 at the default smoothness L = 10.

Units follow the AirFL-LoRA model (loss in nats, the update in the LoRA factors' parameter
units, η in param²/nat, L in nat/param²). The first three terms are on the scale of ‖∇f‖²; ε,
E_drop and ‖C‖² are energies of the update (param²) and c3–c5 carry the conversion, which is
why they are the constants to calibrate against the FL loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedopt.digital import kept_components
from fedopt.errors import InvalidArgumentError
from fedopt.gap_models.airfl import RankTruncation
from fedopt.instance import Instance

__all__ = ["TSFA_TERM_NAMES", "TSFAConstants", "TSFABound", "dropped_energy"]

#: Names of the bound's terms, in display order.
TSFA_TERM_NAMES = ("optimization", "noise", "drift", "rank", "sparsification", "covariance")


def dropped_energy(scores: Any, kept: Any) -> np.ndarray:
    """E_drop = Σ s_i² over the r − m smallest SOFT scores (spec 03 §3, 04 §4); vectorized.

    Parameters
    ----------
    scores
        s ≥ 0 of shape (..., r), in any order (the last axis is the rank).
    kept
        m ∈ 0..r, integers broadcastable with ``scores.shape[:-1]``.

    Returns
    -------
    ndarray
        Shape ``broadcast(scores.shape[:-1], kept.shape)``.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim == 0:
        raise InvalidArgumentError("scores: expected at least one axis (the rank r last)")
    if np.any(~np.isfinite(s)) or np.any(s < 0):
        raise InvalidArgumentError("scores: must be finite and non-negative (s_i = ‖b_i‖‖a_i‖)")
    m = np.asarray(kept)
    r = s.shape[-1]
    if m.dtype.kind == "f" and np.all(np.isfinite(m)) and np.all(m == np.round(m)):
        m = m.astype(np.int64)
    if m.dtype.kind not in "iu" or np.any(m < 0) or np.any(m > r):
        raise InvalidArgumentError(f"kept: got {kept!r}, must be integers in 0..r = 0..{r}")
    shape = np.broadcast_shapes(s.shape[:-1], m.shape)
    s2 = np.sort(s**2, axis=-1)  # ascending: the smallest first
    csum = np.concatenate([np.zeros(s2.shape[:-1] + (1,)), np.cumsum(s2, axis=-1)], axis=-1)
    csum = np.broadcast_to(csum, shape + (r + 1,))
    idx = np.broadcast_to(r - m, shape)[..., None]
    return np.take_along_axis(csum, idx, axis=-1)[..., 0]


@dataclass(frozen=True)
class TSFAConstants:
    """Constants of the SOFT/TSFA bound (spec 03 §3–§4); see the module notes for the defaults.

    Attributes
    ----------
    c1, c2, c3, c4, c5 : float
        Weights of the noise, drift, rank, sparsification and covariance terms (≥ 0).
    eta : float
        η, the local step size (param²/nat).
    smoothness : float
        L, smoothness of the loss (nat/param²).
    grad_variance : float
        σ², stochastic-gradient variance.
    local_steps : int
        E, local steps per round.
    grad_bound : float
        G, bound on the local gradient norms.
    initial_gap : float
        f0 − f*, nats.
    rounds : int
        T.
    """

    c1: float = 1.0
    c2: float = 4.0
    c3: float = 1.0
    c4: float = 5.0
    c5: float = 5.0
    eta: float = 0.05
    smoothness: float = 10.0
    grad_variance: float = 1.0
    local_steps: int = 1
    grad_bound: float = 1.0
    initial_gap: float = 2.0
    rounds: int = 200

    def __post_init__(self) -> None:
        for name in ("c1", "c2", "c3", "c4", "c5", "grad_variance", "grad_bound",
                     "initial_gap"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise InvalidArgumentError(f"{name}: got {value!r}, must be finite and >= 0")
        for name in ("eta", "smoothness"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise InvalidArgumentError(f"{name}: got {value!r}, must be finite and > 0")
        for name in ("local_steps", "rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidArgumentError(f"{name}: got {value!r}, must be an integer >= 1")

    @classmethod
    def from_instance(cls, instance: Instance, **overrides: Any) -> TSFAConstants:
        """The shared constants from ``instance.learning``: η = step_size, L = smoothness,
        σ² = grad_variance, E = local_steps, f0 − f* = initial_gap, T = rounds, and
        c4 = c5 = L/2; c1, c2, c3 and G keep their defaults unless overridden."""
        spec = instance.learning
        base = cls(eta=spec.step_size, smoothness=spec.smoothness,
                   grad_variance=spec.grad_variance, local_steps=spec.local_steps,
                   initial_gap=spec.initial_gap, rounds=spec.rounds,
                   c4=0.5 * spec.smoothness, c5=0.5 * spec.smoothness)
        return replace(base, **overrides) if overrides else base


class TSFABound:
    """The SOFT/TSFA bound of an instance (spec 03 §3), vectorized over candidate ranks.

    Parameters
    ----------
    instance
        Gives K, the weights p_k = φ_k, the adapted layers and the default constants/spectrum.
    constants
        Override of the constants (default :meth:`TSFAConstants.from_instance`).
    truncation
        Override of the singular-value profile (default: the instance's, as in AirFL-LoRA).
    """

    def __init__(self, instance: Instance, constants: TSFAConstants | None = None,
                 truncation: RankTruncation | None = None):
        self.instance = instance
        self.constants = constants or TSFAConstants.from_instance(instance)
        self.truncation = truncation or RankTruncation.from_instance(instance)

    def rank_error(self, ranks: Any) -> np.ndarray:
        """ε(r) = (L/2) Σ_l count_l Σ_{i>r} s_i² (the AirFL-LoRA rank-truncation error)."""
        r = _check_ranks(ranks)
        return 0.5 * self.constants.smoothness * self.truncation.energy_beyond(
            r, self.instance.lora.layers)

    def nominal_drop_error(self, ranks: Any, sparsity: Any) -> np.ndarray:
        """Σ_k p_k E_drop,k at sparsity ρ for every device; vectorized over ranks (and ρ).

        Model: the SOFT scores of a rank-r adapter are taken to be the first r values of the
        instance's spectrum (the update's singular values, orthogonal factors), the same in every
        adapted weight (``count`` copies per layer group, as in ε(r)) and for every device, so
        Σ_k p_k E_drop,k = Σ_l count_l Σ_{m < i ≤ r} s_i² with m = ⌈(1 − ρ) r⌉, i.e.
        energy_beyond(m) − energy_beyond(r). It carries no L/2 (c4 does).
        """
        r = _check_ranks(ranks)
        m = kept_components(r, sparsity)
        layers = self.instance.lora.layers
        r_b, m_b = np.broadcast_arrays(r, np.asarray(m))
        return (self.truncation.energy_beyond(m_b, layers)
                - self.truncation.energy_beyond(r_b, layers))

    def terms(self, ranks: Any, mean_drop_error: Any = 0.0,
              mean_covariance: Any = 0.0) -> dict[str, np.ndarray]:
        """The six named terms, broadcast over ranks and the two time averages.

        Parameters
        ----------
        ranks
            Candidate ranks r ≥ 1 (scalar or array).
        mean_drop_error
            (1/T) Σ_t Σ_k p_k E_drop,k (param²), e.g. :meth:`nominal_drop_error`.
        mean_covariance
            (1/T) Σ_t ‖C_t‖_F² (param², spec 03 §2).
        """
        c = self.constants
        r = _check_ranks(ranks)
        drop = _nonneg(mean_drop_error, "mean_drop_error")
        cov = _nonneg(mean_covariance, "mean_covariance")
        shape = np.broadcast_shapes(r.shape, drop.shape, cov.shape)
        k = self.instance.n_devices
        eta, lip = c.eta, c.smoothness
        values = {
            "optimization": 2.0 * c.initial_gap / (eta * c.rounds),
            "noise": c.c1 * eta * lip * c.grad_variance / k,
            "drift": c.c2 * eta**2 * lip**2 * c.local_steps**2 * c.grad_bound**2,
            "rank": c.c3 * self.rank_error(r),
            "sparsification": c.c4 * drop,
            "covariance": c.c5 * cov,
        }
        return {name: np.broadcast_to(np.asarray(v, dtype=float), shape).copy()
                for name, v in values.items()}

    def total(self, ranks: Any, mean_drop_error: Any = 0.0, mean_covariance: Any = 0.0
              ) -> np.ndarray:
        """The bound: the sum of :meth:`terms`."""
        return sum(self.terms(ranks, mean_drop_error, mean_covariance).values())


def _check_ranks(ranks: Any) -> np.ndarray:
    r = np.asarray(ranks)
    if r.dtype.kind == "f" and np.all(np.isfinite(r)) and np.all(r == np.round(r)):
        r = r.astype(np.int64)
    if r.dtype.kind not in "iu" or np.any(r < 1):
        raise InvalidArgumentError(f"ranks: got {ranks!r}, must be integers >= 1")
    return r.astype(np.int64)


def _nonneg(value: Any, name: str) -> np.ndarray:
    x = np.asarray(value, dtype=float)
    if np.any(~np.isfinite(x)) or np.any(x < 0):
        raise InvalidArgumentError(f"{name}: got {value!r}, must be finite and >= 0")
    return x
