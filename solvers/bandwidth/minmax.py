"""The min-max bandwidth allocation of the digital uplink (spec 04 §3): the root of
Σ_k b_k(τ) = B_tot by Newton steps on its reciprocal, safeguarded by bisection.

Steps of :func:`allocate_min_latency`: check the inputs (:func:`check_inputs`); the lower end of
the bracket, the largest latency floor (:func:`_lower_end`, which also settles the case where a
device without payload sets τ); the upper end, the equal split's latency (:func:`_upper_end`);
the search itself (:class:`_RootSearch`); then the bands are balanced to sum to B_tot exactly
(:func:`_balance`) and the device latencies read off them (:func:`_finish`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedopt.link import LN2
from fedopt.solvers.bandwidth.allocation import allocation_result, check_inputs
from fedopt.solvers.bandwidth.needs import BandNeeds
from fedopt.solvers.result import SolveResult, SolverRun, Status

__all__ = ["allocate_min_latency"]

#: The solver's name in its results.
METHOD = "bandwidth-minmax"


def allocate_min_latency(payload_bits: Any, compute_s: Any, snr_hz: Any, total_hz: float, *,
                         rtol: float = 1e-12, max_iterations: int = 200) -> SolveResult:
    """Minimize τ = max_k (T_cmp,k + S_k / R_k(b_k)) s.t. Σ b_k ≤ B_tot (spec 04 §3).

    Root of Σ_k b_k(τ) = B_tot on the bracket [max latency floor, equal-split latency] (the upper
    end is doubled away from the floor if round-off makes it infeasible beyond rtol; it is
    evaluated only when needed), by Newton steps on the reciprocal 1/Σ_k b_k(τ) safeguarded by
    bisection, from the root of a model of Σ_k b_k(τ) built at the equal split
    (:meth:`BandNeeds.model_root`, 1e-3–1e-2 off), until |Σ b_k(τ) − B_tot| ≤ rtol · B_tot or
    the bracket is rtol · τ wide. The bands are then adjusted to sum to B_tot exactly, moving the
    small remainder along the curve b(τ) (``_balance``), and τ is the largest resulting device
    latency: every device with a payload has latency τ (to ~rtol). If a device without a payload
    has the largest compute time, it sets τ and the others get only the band they need to finish
    by τ (the rest is left unused).

    The inputs are checked once; each evaluation of Σ_k b_k(τ) then solves only for the devices
    with a payload, warm-started from the previous τ (:class:`BandNeeds`; the same values as
    :func:`~fedopt.link.bandwidth_for_deadline` to ~1e-14 relative). The floor itself is
    evaluated only if it can be the answer (a device without payload sets it).

    Parameters
    ----------
    payload_bits, compute_s, snr_hz
        S_k ≥ 0 (bits), T_cmp,k ≥ 0 (s), c_k ≥ 0 (Hz, :func:`fedopt.digital.snr_hz`); shape (K,)
        or scalars broadcast to it.
    total_hz
        B_tot > 0, Hz.
    rtol
        Relative tolerance on the bandwidth balance and on τ.
    max_iterations
        Budget of evaluations of Σ_k b_k(τ).

    Returns
    -------
    SolveResult
        ``solution``: a :class:`~fedopt.solvers.bandwidth.BandwidthAllocation`; ``objective``:
        its latency τ; ``status``: ``OPTIMAL`` when Σ b_k(τ) = B_tot is solved to rtol (or τ is
        set by a device without payload), ``MAX_ITERATIONS`` when the budget ran out (the bands
        are then those of the best feasible deadline found); ``evaluations`` (= ``iterations``):
        evaluations of Σ_k b_k(τ).

    Raises
    ------
    InvalidArgumentError
        NaN, infinite or negative inputs (the message names the argument and the device).
    InfeasibleError
        B_tot ≤ 0, or a device with c_k = 0 and a payload (its latency floor is infinite).
    """
    run = SolverRun(METHOD, options={"rtol": rtol, "max_iterations": max_iterations},
                    keep_history=False)
    s, t, c, total = check_inputs(payload_bits, compute_s, snr_hz, total_hz)
    active = s > 0
    n_active = int(np.count_nonzero(active))
    if n_active == 0:
        return allocation_result(run, np.zeros_like(s), s, t, c, status=Status.OPTIMAL,
                                 message="no device has a payload; the round lasts the longest "
                                 "compute time", evaluations=0)
    everyone = n_active == s.size
    sa, ta, ca = (s, t, c) if everyone else (s[active], t[active], c[active])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        need = BandNeeds(sa, ta, ca)
        t_max = None if everyone else float(t.max())  # a silent device's floor is T_cmp
        lo, b_lo, sum_lo = _lower_end(need, total, t_max)
        if b_lo is not None and np.all(np.isfinite(b_lo)) and sum_lo <= total:
            return allocation_result(
                run, _expand(b_lo, active, everyone), s, t, c, status=Status.OPTIMAL,
                message=f"the longest compute time {lo:g} s (a device without payload) sets "
                f"the latency; {total - sum_lo:.6g} Hz of bandwidth is left unused",
                evaluations=need.evals)
        hi = _upper_end(need, total, n_active, None if everyone else max(lo, t_max))
        search = _RootSearch(need, total, lo, hi, rtol=rtol, max_iterations=max_iterations)
        b_tau, w_tau = search.run()
        b_final, lat = _finish(b_tau, w_tau, total, need, active, everyone, t)
    if search.status is Status.OPTIMAL:
        msg = "Σ b_k(τ) = B_tot solved to rtol"
    else:
        msg = (f"stopped after {need.evals} evaluations with the bracket [{search.lo:.17g}, "
               f"{search.hi:.17g}] s; raise max_iterations or loosen rtol")
    return allocation_result(run, _expand(b_final, active, everyone), s, t, c,
                             status=search.status, message=msg, evaluations=need.evals, lat=lat)


def _lower_end(need: BandNeeds, total: float, t_max: float | None
               ) -> tuple[float, np.ndarray | None, float]:
    """The bracket's lower end: the largest latency floor max_k (T_cmp,k + S_k ln 2 / c_k), or
    ``t_max``, the longest compute time of a device without payload, if larger. Returns
    (lo, b(lo), Σ b(lo)), with b(lo) = None where Σ b_k(lo) > B_tot is known without evaluating
    it (the usual case)."""
    floor = need.t + need.q
    k_floor = int(floor.argmax())
    lo = float(floor[k_floor])
    t_max = lo if t_max is None else max(lo, t_max)
    # Σ b_k(lo) ≤ B_tot only if a silent device sets the floor: at its own floor a device
    # needs b = ∞ (or, by round-off, a ≈ 1 − 1e-16 and b ≥ c/(6(1 − a)) ≫ B_tot: x ≤ 6δ
    # for δ = ψ(x) ≤ ψ(1)); only where that bound does not settle it is b(lo) evaluated
    sa, ta, ca = need.s, need.t, need.c
    a_k = sa[k_floor] / (lo - ta[k_floor]) * LN2 / ca[k_floor]
    delta_k = 1.0 - a_k
    if t_max > lo or (a_k < 1.0 and not (delta_k < 0.3
                                          and ca[k_floor] > 6.0 * (delta_k + 1e-15) * total)):
        b_lo, sum_lo, _ = need.exact(t_max)
        need.evals += 1
        return t_max, b_lo, sum_lo
    return lo, None, math.nan


def _upper_end(need: BandNeeds, total: float, n_active: int, t_max: float | None) -> float:
    """The bracket's upper end: the latency of the equal split among the devices with a payload
    (feasible), at least ``t_max`` (the longest compute time, when some devices have no
    payload); the split also seeds the warm start of ``need``."""
    share = total / n_active
    x_share = need.c / share
    lg_share = np.log1p(x_share)
    hi = float((need.t + need.s / (share * lg_share / LN2)).max())
    need.seed(x_share, lg_share)
    return hi if t_max is None else max(hi, t_max)


class _RootSearch:
    """Newton on 1/Σ_k b_k(τ) = 1/B_tot, safeguarded by bisection, on the bracket [lo, hi]
    (Σ b_k(lo) > B_tot ≥ Σ b_k(hi)); ``status`` ``OPTIMAL`` once solved to rtol."""

    def __init__(self, need: BandNeeds, total: float, lo: float, hi: float, *, rtol: float,
                 max_iterations: int) -> None:
        self.need, self.total, self.rtol, self.max_iterations = need, total, rtol, max_iterations
        self.lo, self.hi = lo, hi
        self.b_hi: np.ndarray | None = None  # b and −b' at hi, once evaluated
        self.w_hi: np.ndarray | None = None
        self.status = Status.MAX_ITERATIONS

    def upper(self) -> tuple[np.ndarray, np.ndarray]:
        """b and −b' at the upper end hi, moved away from lo while round-off makes it
        infeasible beyond rtol (doubling keeps the bracket valid)."""
        need, total = self.need, self.total
        b, sum_b, w = need(self.hi)
        width = max(self.hi - self.lo, abs(self.lo) * 1e-15, 1e-300)
        while not (sum_b - total <= self.rtol * total) and need.evals <= self.max_iterations:
            width *= 2.0
            self.hi = self.lo + width
            b, sum_b, w = need(self.hi)
        return b, w

    def _first_point(self) -> tuple[float, float, np.ndarray, np.ndarray]:
        """The root of the warm start's model of Σ_k b_k(τ) (1e-3–1e-2 from the optimum), else
        the equal split's latency; the upper end itself is evaluated only if it is needed (to
        close the bracket, or as the answer when the budget runs out)."""
        tau0 = self.need.model_root(self.lo, self.hi, self.total)
        if tau0 < self.hi:
            b0, sum0, w0 = self.need(tau0)
            if sum0 <= self.total:
                self.hi, self.b_hi, self.w_hi = tau0, b0, w0
            else:
                self.lo = tau0
        else:
            self.b_hi, self.w_hi = b0, w0 = self.upper()
            tau0, sum0 = self.hi, float(b0.sum())
        return tau0, sum0, b0, w0

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        """b(τ) and −b'(τ) at the answer: the root to rtol, or (budget spent) the best feasible
        deadline found, else the upper end."""
        need, total, rtol = self.need, self.total, self.rtol
        p_tau, p_sum, b0, w0 = self._first_point()
        b_tau, w_tau = self.b_hi, self.w_hi
        # the last evaluated point p (Σ b_k(τ_p), d/dτ Σ b_k(τ_p)) and the |g| before it
        p_slope = -float(w0.sum())
        prev_abs_g = math.inf
        if abs(p_sum - total) <= rtol * total:  # K = 1, or identical devices: the equal split
            self.status = Status.OPTIMAL
            return b0, w0
        while need.evals < self.max_iterations:
            if self.hi - self.lo <= rtol * max(abs(self.hi), 1e-300):
                if self.b_hi is None:
                    end = self.hi
                    self.b_hi, self.w_hi = self.upper()
                    if self.hi != end:  # infeasible by round-off: the bracket was widened
                        continue
                self.status = Status.OPTIMAL
                return self.b_hi, self.w_hi
            cand = self._next(p_tau, p_sum, p_slope, prev_abs_g)
            b, sum_b, w = need(cand)
            g = sum_b - total
            if abs(g) <= rtol * total:
                self.status = Status.OPTIMAL
                return b, w
            if g > 0:
                self.lo = cand
            else:
                self.hi, self.b_hi, self.w_hi = cand, b, w
                b_tau, w_tau = b, w
            prev_abs_g = abs(p_sum - total)
            p_tau, p_sum, p_slope = cand, sum_b, -float(w.sum())
        if b_tau is None:  # the budget ran out before a feasible point: the upper end
            b_tau, w_tau = self.upper()
        return b_tau, w_tau

    def _next(self, p_tau: float, p_sum: float, p_slope: float, prev_abs_g: float) -> float:
        """The next deadline: Newton on 1/Σ b_k(τ) = 1/B_tot from the last point (each b_k(τ)
        behaves like 1/(τ − τ_k) both near its floor and far from it, so the reciprocal is nearly
        linear; Newton on Σ b itself only doubles the distance to the floor per step there), or
        the bracket's midpoint when Newton leaves the bracket or the last step did not halve
        |g|."""
        g_p = p_sum - self.total
        cand = p_tau - (p_sum / self.total) * g_p / p_slope if p_slope < 0 else math.nan
        if not (self.lo < cand < self.hi) or abs(g_p) > 0.5 * prev_abs_g:
            cand = 0.5 * (self.lo + self.hi)
        return cand


def _finish(b_tau: np.ndarray, w_tau: np.ndarray, total: float, need: BandNeeds,
            active: np.ndarray, everyone: bool, t: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """The balanced bands of the devices with a payload and, in the usual case (every band
    > 0), every device's latency (those of :func:`~fedopt.link.device_latency_s`, inline)."""
    b_final = _balance(b_tau, w_tau, total)
    lat = None
    if b_final.min() > 0.0:
        lat = need.t + need.s / (b_final * np.log1p(need.c / b_final) / LN2)
        lat = lat if everyone else _expand(lat, active, everyone, fill=t)
    return b_final, lat


def _expand(values: np.ndarray, active: np.ndarray, everyone: bool,
            fill: np.ndarray | None = None) -> np.ndarray:
    """Per-device array from the values of the devices with a payload (the rest 0 or ``fill``)."""
    if everyone:
        return values
    out = np.zeros(active.shape) if fill is None else fill.copy()
    out[active] = values
    return out


def _balance(b: np.ndarray, weight: np.ndarray, total: float) -> np.ndarray:
    """Make Σ b = B_tot: move the small surplus or deficit B_tot − Σ b along the curve b(τ),
    i.e. in proportion to |d b_k / dτ| (to first order every latency then moves by the same
    δτ), then rescale the last rounding away. Proportional scaling would not do: when one
    device is near saturation its need is so steep in τ that a deficit of 1e-3 B_tot is a shift
    of 1e-12 in τ for it but of 1e-4 for the others."""
    extra = total - float(b.sum())
    w_sum = float(weight.sum())
    if not (0.0 < w_sum < math.inf and weight.min() > 0.0):  # else drop the useless weights
        weight = np.where(np.isfinite(weight) & (weight > 0), weight, 0.0)
        w_sum = float(weight.sum())
    if w_sum > 0:
        b = np.maximum(b + extra * (weight / w_sum), 0.0)
    return b * (total / b.sum())
