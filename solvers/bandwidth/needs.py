"""The inner loop of the min-max allocation: b_k(τ), Σ_k b_k(τ) and −d b_k/dτ at one deadline,
warm-started Newton instead of the Lambert W closed form (the same bands to ~1e-14)."""

from __future__ import annotations

import math

import numpy as np

from fedopt.link import (
    LN2,
    SERIES_X,
    bandwidth_for_deadline,
    dbandwidth_dtau,
    lambert_start,
    phi_series,
    psi_series,
)

__all__ = ["BandNeeds"]

#: Newton steps on x / ln(1 + x) = A (:class:`BandNeeds`) stop once the largest relative step is
#: below this: the error left is at most ~0.1 × its square (|x H''/(2H')| ≤ 0.105), ~1e-15.
NEWTON_XTOL = 1e-7
#: Budget of those steps per evaluation (a warm start needs 1–4); when it runs out (never seen)
#: the evaluation falls back to :func:`~fedopt.link.bandwidth_for_deadline`.
NEWTON_MAX = 30


class BandNeeds:
    """b_k(τ), Σ_k b_k(τ) and −d b_k/dτ for the devices with a payload (all c_k > 0), the inner
    loop of :func:`~fedopt.solvers.bandwidth.allocate_min_latency` without the public
    functions' checks and broadcasts.

    With a_k = (S_k / (τ − T_cmp,k)) ln 2 / c_k, computed as in
    :func:`~fedopt.link.min_bandwidth_hz` (bit for bit, so that δ = 1 − a near the branch point
    is the same), and A_k = 1/a_k > 1, the band is b_k = c_k / x_k, x_k the root of
    H(x) = x / ln(1 + x) = A_k. H is increasing and concave, so Newton on it lands left of the
    root from anywhere and then climbs monotonically (a step to x ≤ 0 is halved instead), and
    the relative error e squares: e' ≈ (x H''/(2H')) e², a factor of at most 0.105 in magnitude
    (0.03–0.08 at x = 1e3–1e7). Each evaluation starts from a known root (the previous τ's, or
    the equal split's, :meth:`seed`) moved along x ∝ (A − 1)^γ with
    γ = d ln x / d ln(A − 1) = (1 − 1/A) ln(1 + x) / φ(x) ∈ [1, ~1.3] (exact to first order,
    uniformly from x → 0, where x ≈ 2(A − 1), to x → ∞): 1–2 Newton steps as the outer
    iteration closes in, 3–4 for the first moves by a factor of 4–200; without one, from the
    Lambert W closed form (:func:`~fedopt.link.lambert_start`). Near saturation (x < 1e-2) the
    residual and φ come from their series. Call under ``np.errstate`` (all ignored).
    """

    def __init__(self, s: np.ndarray, t: np.ndarray, c: np.ndarray) -> None:
        self.s, self.t, self.c = s, t, c
        self.q = s * LN2 / c  # latency floor − T_cmp,k
        self.x: np.ndarray | None = None  # the warm start: a root x_k,
        self.am1 = self.gamma = self.x    # its A_k − 1, and γ_k there
        self.evals = 0

    def seed(self, x: np.ndarray, lg: np.ndarray) -> None:
        """Warm start from roots x_k (with ln(1 + x_k)) of unknown τ_k, e.g. the equal split."""
        big = x.min() >= SERIES_X
        am1 = x / lg - 1.0
        if big and am1.min() > 0.0 and x.max() < math.inf:  # else the Lambert W start
            self.x, self.am1 = x, am1
            self.gamma = (am1 / (am1 + 1.0)) * lg / (lg - x / (1.0 + x))

    def model_root(self, lo: float, hi: float, total: float) -> float:
        """A first τ: two Newton steps from hi on 1/S(τ) = 1/B_tot for the warm start's model
        S(τ) = Σ_k b_k⁰ ((A_k⁰ − 1)/(A_k(τ) − 1))^γ_k of Σ_k b_k(τ) (its predictor; from the
        equal split, 1e-3–1e-2 from the root in τ); hi without a warm start or if a step
        leaves (lo, hi)."""
        tau = hi
        if self.x is None:
            return tau
        b0 = self.c / self.x
        for _ in range(2):
            slack = tau - self.t
            part = b0 * (self.am1 / (slack / self.q - 1.0)) ** self.gamma
            model = float(part.sum())
            slope = -float((part * self.gamma / (slack - self.q)).sum())
            nxt = tau - (model / total) * (model - total) / slope
            if not lo < nxt < hi:
                break
            tau = nxt
        return tau

    def exact(self, tau: float) -> tuple[np.ndarray, float, np.ndarray]:
        """The same through the public :func:`~fedopt.link.bandwidth_for_deadline` (any τ)."""
        self.x = None
        b = np.asarray(bandwidth_for_deadline(self.s, self.t, self.c, tau), dtype=float)
        return b, float(b.sum()), -dbandwidth_dtau(self.s, tau - self.t, b, self.c)

    def __call__(self, tau: float) -> tuple[np.ndarray, float, np.ndarray]:
        """(b(τ), Σ b(τ), −b'(τ)); one evaluation of Σ_k b_k(τ)."""
        self.evals += 1
        slack = tau - self.t
        a = self.s / slack * LN2 / self.c  # a = R ln 2 / c as in min_bandwidth_hz, bit for bit
        A = 1.0 / a
        am1 = A - 1.0
        if not am1.min() > 0.0:  # τ at a floor up to round-off (a_k ≥ 1, b_k = ∞), or NaN
            return self.exact(tau)
        if self.x is None:
            x = lambert_start(a, 1.0 - a)
        else:
            x = self.x * (am1 / self.am1) ** self.gamma
        x, lg, ph = self._newton(x, a, A)
        if x is None:
            return self.exact(tau)
        # γ and −b' from the last step's start (within 1e-7 of the root: ample for both):
        # d ln x / d ln A = ln(1 + x)/φ(x), so −b' = b ln(1 + x) / (φ(x) (τ − T_cmp))
        ratio = lg / ph
        self.x, self.am1, self.gamma = x, am1, (1.0 - a) * ratio
        b = self.c / x
        return b, float(b.sum()), b * ratio / slack

    @staticmethod
    def _newton(x: np.ndarray, a: np.ndarray, A: np.ndarray
                ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Newton on H(x) = A from ``x``: the root, and ln(1 + x), φ(x) at the last step's
        start; (None, ...) if the step budget runs out."""
        x_min = x.min()
        for _ in range(NEWTON_MAX):
            lg = np.log1p(x)
            ph = lg - x / (1.0 + x)  # φ(x) = ln²(1 + x) H'(x)
            resid = x - A * lg        # (H(x) − A) ln(1 + x)
            if not x_min >= SERIES_X:  # = x A (ψ(x) − δ), δ = 1 − a, without cancellation
                small = x < SERIES_X
                xs, a_s = x[small], A[small]
                resid[small] = xs * a_s * (psi_series(xs) - (1.0 - a[small]))
                ph[small] = phi_series(xs)
            step = resid * lg / (ph * x)  # relative Newton step
            s_max, s_min = step.max(), step.min()
            if s_max < 1.0:  # every x stays > 0 (False on NaN)
                x = x - x * step
                x_min *= 1.0 - s_max  # a lower bound of min x, made exact when it matters
                if not x_min >= SERIES_X:
                    x_min = x.min()
            else:
                x_new = x - x * step
                x = np.where(np.isfinite(x_new) & (x_new > 0), x_new, 0.5 * x)
                x_min = x.min()
            if s_max <= NEWTON_XTOL and s_min >= -NEWTON_XTOL:
                return x, lg, ph
        return None, lg, ph
