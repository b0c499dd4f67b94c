"""Fitting the gap model's constants to measurements of the FL loop (spec 03 §4).

Pure arithmetic on what pilot runs measured (the runs themselves are orchestrated by
:mod:`fedopt.solvers.validation.calibrate`). Every many-point fit is ordinary least squares and
returns its residuals, standard error and R² next to the value (:class:`Fit`):

- the update scale v(r) = v · r^(−β): log v = log v − β log r over every (rank, seed) pilot
  (:func:`fit_update_scale_many`; the two-point :func:`fit_update_scale` is kept);
- the singular-value profile of the learned update (:func:`mean_spectrum`);
- L_s from the rank-truncation term of spec 03 §1: F̄(r) − F̄(r_max) = (L_s/2)(tail(r) −
  tail(r_max)) over the ranks, through the origin, with the ε-tails of that spectrum
  (:func:`fit_smoothness_many`; the two-rank :func:`fit_smoothness` is kept);
- the noise gain L_s λ / (2μ) from the loss rise under injected zero-mean error of mean
  ‖e‖² = D: F_noisy − F = gain · D over every (level, seed) pilot, through the origin, with a
  test for curvature (:func:`fit_noise_gain_many`; the one-pilot :func:`fit_noise_gain` is
  kept);
- σ_g², the per-sample gradient variance, from the clients' spread around their weighted
  average (:func:`measure_grad_variance`), and Δ0 ≥ base loss − best pilot loss
  (:func:`measure_initial_gap`);
- the instance's ``learning`` section with these constants, λ capped so that λ ≤ 1/L_s and
  λμ ≤ 1/2 (:func:`calibrated_learning`).

Conventions of :class:`Fit`: ``residuals`` are data − model at the unconstrained least-squares
estimate (``estimate``), in the fit's own space (log v for the power law, nats for the losses);
``value`` is the constant to use (``estimate`` clipped or floored where the model needs it, with
a ``warning`` saying so); ``std_error`` is the usual OLS standard error of the estimate, NaN when
there are no degrees of freedom left (as many points as parameters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedopt.errors import InvalidArgumentError
from fedopt.gap_models._fitting import (
    CURVATURE_SHARE,
    Fit,
    UpdateScaleFit,
    _curvature,
    _r_squared,
    _same_length,
    _through_origin,
    _vector,
)
from fedopt.gap_models.airfl import RankTruncation

__all__ = ["CURVATURE_SHARE", "LOSS_FLOOR", "Fit", "UpdateScaleFit", "calibrated_learning",
           "fit_noise_gain", "fit_noise_gain_many", "fit_smoothness", "fit_smoothness_many",
           "fit_update_scale", "fit_update_scale_many", "loss_profile_spectrum",
           "mean_spectrum", "measure_grad_variance", "measure_initial_gap"]

#: a loss difference below this is "no measurable effect" (seed noise of one pilot)
LOSS_FLOOR = 1e-9


# -- update scale -------------------------------------------------------------------------------
def fit_update_scale(v_a: float, v_b: float, r_a: int, r_b: int) -> tuple[float, float]:
    """(v, β) of v(r) = v · r^(−β) through (r_a, v_a) and (r_b, v_b); β clipped to [0, 1] (v
    then goes through (r_b, v_b)). :func:`fit_update_scale_many` is the many-pilot fit."""
    beta = math.log(v_a / v_b) / math.log(r_b / r_a)
    beta = float(min(max(beta, 0.0), 1.0))
    return float(v_b * r_b ** beta), beta


def fit_update_scale_many(ranks: Sequence[int], scales: Sequence[float]) -> UpdateScaleFit:
    """v(r) = v · r^(−β) by least squares of log v = log v₁ − β log r over every pilot.

    Parameters
    ----------
    ranks, scales
        One (rank, measured update scale) pair per pilot; ranks may repeat (seeds), at least two
        must differ.

    Returns
    -------
    UpdateScaleFit
        β clipped to [0, 1] (``exponent.estimate`` is the unclipped one, with a warning when
        they differ); residuals in log v; with n pilots, se(β) = √(Σres²/(n − 2) / Σ(log r −
        mean)²) (NaN for n = 2: two points fix a power law exactly).
    """
    r = _vector("ranks", ranks, positive=True)
    v = _vector("scales", scales, positive=True)
    _same_length(("ranks", "scales"), r, v)
    if np.unique(r).size < 2:
        raise InvalidArgumentError(
            f"ranks: got {r.astype(int).tolist()}, need at least two different ranks to fit "
            f"v(r) = v r^(-β)")
    x, y = np.log(r), np.log(v)
    n, xm, ym = x.size, float(x.mean()), float(y.mean())
    sxx = float((x - xm) @ (x - xm))
    beta_hat = -float((x - xm) @ (y - ym)) / sxx
    res = y - (ym + beta_hat * xm - beta_hat * x)
    ss_res = float(res @ res)
    s2 = ss_res / (n - 2) if n > 2 else float("nan")
    se_beta = math.sqrt(s2 / sxx)
    beta = float(min(max(beta_hat, 0.0), 1.0))
    log_v1 = float(np.mean(y + beta * x))  # the least-squares intercept at this β
    se_log_v1 = math.sqrt(s2 * (1.0 / n + xm**2 / sxx))
    warning = None
    if beta != beta_hat:
        warning = (f"the fitted exponent β = {beta_hat:.4g} lies outside [0, 1] and is clipped "
                   f"to {beta:g}")
    fit = Fit(value=beta, std_error=se_beta, residuals=tuple(float(e) for e in res),
              r_squared=_r_squared(ss_res, float((y - ym) @ (y - ym))), n=n,
              estimate=beta_hat, x=tuple(float(a) for a in x), y=tuple(float(b) for b in y),
              warning=warning)
    v1 = math.exp(log_v1)
    return UpdateScaleFit(scale=v1, scale_std_error=v1 * se_log_v1, exponent=fit)


# -- spectrum and smoothness --------------------------------------------------------------------
def mean_spectrum(singular_values: np.ndarray, rank: int) -> tuple[float, ...]:
    """The mean sorted singular values of the learned updates (one row per adapted weight), its
    first ``rank`` values (a rank-r update has r; the rest is rounding noise), at 4 digits."""
    mean_sv = np.sort(np.asarray(singular_values), axis=1)[:, ::-1].mean(axis=0)[:rank]
    return tuple(float(f"{x:.4g}") for x in mean_sv)


def fit_smoothness(loss_drop: float, spectrum: Sequence[float], ranks: tuple[int, int],
                   layers: Any) -> float:
    """L_s = 2 (F(r_a) − F(r_b)) / (ε-tail(r_a) − ε-tail(r_b)) (spec 03 §1's truncation term);
    :func:`fit_smoothness_many` is the many-rank fit."""
    tails = RankTruncation(np.asarray(spectrum)).energy_beyond(np.asarray(ranks), layers)
    return float(2.0 * max(loss_drop, LOSS_FLOOR) / max(tails[0] - tails[1], 1e-300))


def fit_smoothness_many(ranks: Sequence[int], losses: Sequence[float],
                        spectrum: Sequence[float], layers: Any) -> Fit:
    """L_s by least squares through the origin of F̄(r) − F̄(r_max) = (L_s/2)(tail(r) −
    tail(r_max)) over the ranks.

    Parameters
    ----------
    ranks, losses
        One (rank, final loss) pair per pilot; ranks may repeat (seeds). The losses are averaged
        per rank first (F̄(r)): with common random numbers every seed runs at every rank, so the
        mean over seeds keeps the pairing, and each rank counts once whatever its seed count.
    spectrum, layers
        The singular values (ε-tails by :meth:`RankTruncation.energy_beyond`) and the
        instance's ``lora.layers``.

    Returns
    -------
    Fit
        ``value`` = L_s; one point per rank below r_max (x = tail(r) − tail(r_max), y = F̄(r) −
        F̄(r_max), in increasing rank); uncentered R². Every point shares F̄(r_max)'s error, so
        se(L_s) is OLS's under errors e_i − e_0 (e iid): 2 σ̂ √(Σx² + (Σx)²) / Σx², σ̂² =
        Σres² / (2n − 1 − (Σx)²/Σx²) — with independent points it would be
        2 √(Σres²/(n − 1) / Σx²), too small by about the shared error.
        An estimate ≤ 0 (the loss does not fall with the rank) is floored at
        2 · :data:`LOSS_FLOOR` / max x, with a warning.
    """
    r = _vector("ranks", ranks, positive=True)
    f = _vector("losses", losses)
    _same_length(("ranks", "losses"), r, f)
    levels = np.unique(r)
    if levels.size < 2:
        raise InvalidArgumentError(
            f"ranks: got {r.astype(int).tolist()}, need at least two different ranks to fit L_s")
    mean_f = np.array([f[r == k].mean() for k in levels])
    tails = RankTruncation(np.asarray(spectrum)).energy_beyond(levels.astype(int), layers)
    x, y = tails[:-1] - tails[-1], mean_f[:-1] - mean_f[-1]
    if not np.any(x > 0):
        raise InvalidArgumentError(
            "spectrum: its ε-tails do not differ between the ranks, so L_s is not identified; "
            "the spectrum must extend beyond the smallest rank")
    slope, res, se, r2 = _through_origin(x, y, shared_reference=True)
    value, warning = 2.0 * slope, None
    if value <= 0:
        value = 2.0 * LOSS_FLOOR / float(np.max(x))
        warning = (f"the loss does not fall with the rank (L_s estimate {2 * slope:.3g}); "
                   f"L_s floored at {value:.3g}")
    return Fit(value=float(value), std_error=2.0 * se, residuals=tuple(float(e) for e in res),
               r_squared=r2, n=int(x.size), estimate=2.0 * slope,
               x=tuple(float(a) for a in x), y=tuple(float(b) for b in y), warning=warning)


# -- noise gain ---------------------------------------------------------------------------------
def fit_noise_gain(loss_rise: float, aggregation_error: float) -> float:
    """L_s λ / (2μ) = (F_noisy − F) / mean ‖ĝ − ḡ‖² (spec 03 §1's distortion term);
    :func:`fit_noise_gain_many` is the many-pilot fit."""
    return float(max(loss_rise, LOSS_FLOOR) / max(aggregation_error, 1e-300))


def fit_noise_gain_many(errors: Sequence[float], rises: Sequence[float]) -> Fit:
    """The noise gain L_s λ / (2μ) by least squares through the origin of rise = gain · D.

    Parameters
    ----------
    errors
        D per noisy pilot: the mean injected ‖ĝ − ḡ‖² per round (> 0).
    rises
        The pilot's final loss minus that of the error-free pilot with the same seed (common
        random numbers); negative values are kept (seed noise).

    Returns
    -------
    Fit
        ``value`` = gain; se = √(Σres²/(n − 1) / ΣD²); uncentered R². ``curvature`` tests a
        quadratic term (y = aD + bD²): True when it is significant (|b| > t se(b), t ≈ 2 the
        95 % quantile of Student's t with n − 2 degrees of freedom) and worth at
        least :data:`CURVATURE_SHARE` of the largest rise — then the linear model under-predicts
        (b > 0) or over-predicts (b < 0) at high error, and ``warning`` says so. None with fewer
        than 3 distinct D. An estimate ≤ 0 is floored at :data:`LOSS_FLOOR` / max D.
    """
    d = _vector("errors", errors, positive=True)
    y = _vector("rises", rises)
    _same_length(("errors", "rises"), d, y)
    gain, res, se, r2 = _through_origin(d, y)
    value, warnings = gain, []
    if value <= 0:
        value = LOSS_FLOOR / float(np.max(d))
        warnings.append(f"the loss does not rise with the injected error (gain estimate "
                        f"{gain:.3g}); floored at {value:.3g}")
    curved, b = _curvature(d, y)
    if curved:
        i = int(np.argmax(d))
        side = "under" if b > 0 else "over"
        warnings.append(
            f"the linear model {side}-predicts at high error: at the largest D = {d[i]:.3g} the "
            f"measured rise is {y[i]:.3g} against {gain * d[i]:.3g} fitted (residual "
            f"{res[i]:+.3g}): the loss is not linear in the error, so the gain holds near the "
            f"levels fitted; choose levels at the errors the plans will see")
    return Fit(value=float(value), std_error=se, residuals=tuple(float(e) for e in res),
               r_squared=r2, n=int(d.size), estimate=gain, x=tuple(float(a) for a in d),
               y=tuple(float(v) for v in y), curvature=curved,
               warning="; ".join(warnings) or None)


# -- measured constants -------------------------------------------------------------------------
def measure_grad_variance(spreads: Sequence[float], batch_size: int, lr: float = 1.0,
                          weights: Sequence[float] | None = None) -> Fit:
    """σ_g², the per-sample gradient variance: b · mean(spread) / (lr² (1 − Σ φ_k²)).

    Parameters
    ----------
    spreads
        Per round (of any number of pilots) Σ_k φ_k ‖g_k − ḡ‖² with Σ φ_k = 1: the clients'
        spread around their weighted average. With SGD and one local step an update is
        g_k = lr · (a b-sample mini-batch gradient), of variance σ_g² lr² / b.
    batch_size
        b.
    lr
        1 keeps σ_g² in update units (param², the units of v² and of the aggregation error D
        the noise gain is fitted on, so that the gap's sampling term gain · σ_g² / (K b) is
        consistent with its distortion term); the loop's lr gives gradient units.
    weights
        The φ_k of the spreads (normalized here). For independent clients of equal variance
        E[Σ φ_k ‖g_k − ḡ‖²] = (1 − Σ φ_k²) · Var(g_k): the spread about the weighted mean
        misses the mean's own share, so the spreads are divided by 1 − Σ φ_k² (e.g. 1 − 1/K
        for equal weights). None: no correction.

    Returns
    -------
    Fit
        ``value`` = σ_g², ``std_error`` that of the mean over the n rounds, residuals the
        rounds' deviations from it (R² NaN: nothing is regressed). The spread also holds the
        clients' heterogeneity (non-IID data), so on non-IID clients it over-states the
        sampling variance: an upper bound.
    """
    s = _vector("spreads", spreads)
    if np.any(s < 0):
        raise InvalidArgumentError("spreads: every value must be >= 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or \
            batch_size < 1:
        raise InvalidArgumentError(f"batch_size: got {batch_size!r}, must be an integer >= 1")
    if not (math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"lr: got {lr!r}, must be a positive number")
    share = 1.0
    if weights is not None:
        phi = _vector("weights", weights)
        if np.any(phi < 0) or phi.sum() <= 0 or np.count_nonzero(phi) < 2:
            raise InvalidArgumentError(
                "weights: need non-negative weights with at least two clients above zero")
        phi = phi / phi.sum()
        share = 1.0 - float(phi @ phi)
    per_sample = s * (int(batch_size) / (lr**2 * share))
    mean = float(per_sample.mean())
    se = float(per_sample.std(ddof=1) / math.sqrt(s.size)) if s.size > 1 else float("nan")
    return Fit(value=mean, std_error=se, residuals=tuple(float(e) for e in per_sample - mean),
               r_squared=float("nan"), n=int(s.size), estimate=mean,
               y=tuple(float(v) for v in per_sample))


def measure_initial_gap(base_loss: float, losses: Sequence[float]) -> float:
    """Δ0 ≥ F(w0) − min over pilots of F: the base model's loss minus the best pilot's (a lower
    bound on F(w0) − F*, since F* ≤ every loss reached); 0 when no pilot improved."""
    f = _vector("losses", losses)
    if not math.isfinite(base_loss):
        raise InvalidArgumentError(f"base_loss: got {base_loss!r}, must be finite")
    return float(max(base_loss - float(f.min()), 0.0))


# -- the learning section -----------------------------------------------------------------------
def loss_profile_spectrum(ranks: Sequence[int], losses: Sequence[float], smoothness: float,
                          layers: Any) -> tuple[float, ...]:
    """The effective singular values whose ε-tails reproduce the measured rank profile.

    The loop measures the rank-truncation term directly: F̄(r) − F̄(r_max), the loss that the
    rank limit costs at a fixed number of rounds. This returns s_1..s_{r_max} such that
    (L_s/2) Σ_l count_l Σ_{r < i ≤ r_max} s_i² equals it at every measured rank (ε(r_max) = 0:
    nothing beyond the largest pilot is known): the energy 2 (F̄(r_j) − F̄(r_{j+1})) / (L_s C)
    of each interval (r_j, r_{j+1}] is spread evenly over its indices (C = Σ_l count_l; every
    layer's max rank must reach r_max). Drops are clipped at 0 (a loss that rises with the rank
    is no truncation), and the per-index energies are made non-increasing by pooling adjacent
    violators (a spectrum is sorted), which keeps every interval's total where the data are
    monotone. The first interval's value also fills the indices up to the smallest rank.
    """
    r = _vector("ranks", ranks, positive=True)
    f = _vector("losses", losses)
    _same_length(("ranks", "losses"), r, f)
    levels = np.unique(r).astype(int)
    if levels.size < 2:
        raise InvalidArgumentError(
            f"ranks: got {r.astype(int).tolist()}, need at least two different ranks")
    if not (math.isfinite(smoothness) and smoothness > 0):
        raise InvalidArgumentError(f"smoothness: got {smoothness!r}, must be > 0")
    if any(layer.max_rank < levels[-1] for layer in layers):
        raise InvalidArgumentError(
            f"ranks: the largest pilot rank {levels[-1]} exceeds a layer's max rank")
    mean_f = np.array([f[r == k].mean() for k in levels])
    count = float(sum(layer.count for layer in layers))
    drops = np.maximum(mean_f[:-1] - mean_f[1:], 0.0)
    widths = np.diff(levels).astype(float)
    per_index = 2.0 * drops / (smoothness * count) / widths
    # pool adjacent violators (weights = widths) so the per-index energies never increase
    blocks = [[per_index[0] * widths[0], widths[0], 1]]
    for e, w in zip(per_index[1:], widths[1:], strict=True):
        blocks.append([e * w, w, 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            tot, wid, n = blocks.pop()
            blocks[-1] = [blocks[-1][0] + tot, blocks[-1][1] + wid, blocks[-1][2] + n]
    energies = np.concatenate([np.full(int(wid), tot / wid) for tot, wid, _ in blocks])
    energies = np.concatenate([np.full(int(levels[0]), energies[0]), energies])
    return tuple(float(f"{x:.4g}") for x in np.sqrt(energies))


def calibrated_learning(learning: Mapping[str, Any], *, update_scale: float, beta: float,
                        spectrum: Sequence[float], smoothness: float, noise_gain: float,
                        grad_variance: float | None = None,
                        initial_gap: float | None = None) -> dict[str, Any]:
    """The ``learning`` section with the fitted constants: λ = min(λ, 1/L_s, √(gain/L_s))
    (λ ≤ 1/L_s is the model's step condition, λμ = L_s λ²/(2 gain) ≤ 1/2 a contraction) and
    μ = L_s λ / (2 gain); σ_g² (``grad_variance``) and Δ0 (``initial_gap``) when given (4
    significant digits, like L_s, λ, μ)."""
    step = float(min(learning["step_size"], 1.0 / smoothness, math.sqrt(noise_gain / smoothness)))
    pl = float(smoothness * step / (2.0 * noise_gain))
    out = {**learning, "update_scale": update_scale, "update_scale_exponent": beta,
           "spectrum_kind": "measured", "spectrum_values": list(spectrum),
           "smoothness": float(f"{smoothness:.4g}"), "step_size": float(f"{step:.4g}"),
           "pl_constant": float(f"{pl:.4g}")}
    out["step_size"] = min(out["step_size"], 1.0 / out["smoothness"])
    if grad_variance is not None:
        out["grad_variance"] = float(f"{grad_variance:.4g}")
    if initial_gap is not None:
        out["initial_gap"] = float(f"{initial_gap:.4g}")
    return out
