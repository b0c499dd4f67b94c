"""The smoothed log-max cost of the manifold solver: the derivative checks of spec 02 §6.10
(finite differences for the Euclidean gradient of ``LogMaxCost``, the slope test for the
Riemannian one) and its tie to the spec objective of ``BeamformingProblem``.

Channels use realistic magnitudes (|h|² ~ 1e-9 .. 1e-10, P ~ 10 mW, σ² = 1e-15 W) so the
per-column normalization inside the cost is exercised; every comparison is relative.
"""

from __future__ import annotations

import numpy as np
import pytest
from bf_testing import SIGMA2, random_problem
from numpy.testing import assert_allclose

from fedopt.solvers.beamforming.cost import LogMaxCost

_problem = random_problem


def _cn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)


def _re_inner(x, y):
    """Real inner product Re Σ conj(x) y per column, (C, N_r, L) × (C, N_r, L) → (C,)."""
    return np.real(np.sum(np.conj(x) * y, axis=(1, 2)))


def _unit(a):
    return a / np.sqrt(_re_inner(a, a))[:, None, None]


def _cost(rng, k, cols, nr, nt, dominant=None):
    """A LogMaxCost on random channels (K, cols, N_r, N_t) with realistic log c_k."""
    h = _cn(rng, k, cols, nr, nt) * np.sqrt(1e-9 * 10.0 ** (-rng.uniform(0, 1, (k, 1, 1, 1))))
    log_c = np.log(rng.uniform(0.5, 2.0, (k, 1)) ** 2 / rng.uniform(0.005, 0.02, (k, cols)))
    if dominant is not None:
        log_c[dominant] += 30.0  # this device's y_k then exceeds the others' by far (> 10 checked)
    return LogMaxCost(h, log_c)


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_euclidean_gradient_matches_finite_differences(rng, streams, tau):
    # D f(A)[E] = Re⟨∇f, E⟩ with ∇f = 2∂f/∂A* (the convention of spec 02 §2), per column
    cost = _cost(rng, 4, 5, 4, 2)
    a = _cn(rng, 5, 4, streams) * 0.7  # off the sphere: the Euclidean gradient, any scale
    f0, g = cost(a, tau)
    y, g_dev = cost.device_gradients(a)
    step = 1e-6
    for _ in range(3):
        e = _cn(rng, 5, 4, streams)
        fd = (cost(a + step * e, tau)[0] - cost(a - step * e, tau)[0]) / (2 * step)
        exact = _re_inner(g, e)
        # errors relative to ‖∇f‖‖E‖, the Cauchy–Schwarz scale of D f[E] (a direction nearly
        # orthogonal to ∇f would make |D f[E]| itself meaningless as a scale). Central
        # differences: truncation ~step² f''' and rounding ~1e-16 |f|/step, ≤ 4e-9 seen over
        # 1200 draws; 1e-6 (the brief) still catches any wrong factor, sign or term.
        scale = np.sqrt(_re_inner(e, e))
        assert np.all(np.abs(fd - exact) <= 1e-6 * scale * np.sqrt(_re_inner(g, g)))
        for kk in range(4):  # every device's y_k + log ‖A‖² and its gradient
            yp = cost.values(a + step * e)[kk]
            ym = cost.values(a - step * e)[kk]
            fd_k = (yp - ym) / (2 * step)
            exact_k = _re_inner(g_dev[kk], e)
            bound = 1e-6 * scale * np.sqrt(_re_inner(g_dev[kk], g_dev[kk]))  # as above
            assert np.all(np.abs(fd_k - exact_k) <= bound), kk
    assert np.all(f0 >= y.max(axis=0))  # LSE_τ ≥ max (spec 04 §1)
    assert np.all(f0 <= y.max(axis=0) + tau * np.log(4) + 1e-12)  # ≤ max + τ log K, rounding


@pytest.mark.parametrize("streams", [1, 2])
def test_riemannian_slope_test_on_the_sphere(rng, streams):
    # pymanopt's check_directional_derivative: for ξ = −grad f (the tangent projection of the
    # Euclidean gradient) and the retraction R(X) = X/‖X‖, the error
    # |f(R(A + tξ)) − f(A) − t⟨grad, ξ⟩| is O(t²): slope 2 in log-log, and the difference
    # quotient tends to −‖grad‖².
    cost = _cost(rng, 4, 5, 4, 2)
    tau = 0.5  # smooth enough that t ≤ 1e-3 rad is in the asymptotic regime on every draw
    a = _unit(_cn(rng, 5, 4, streams))
    f0, g = cost(a, tau)
    tangent = g - _re_inner(a, g)[:, None, None] * a
    # scale invariance: the Euclidean gradient is already tangent, up to the ridge's omitted
    # derivative, ≈ 1e-12 cond(A^H G_k A) (≤ 4.3e-8 seen over 600 draws; it is O(1) if the
    # 2A/‖A‖² term is dropped)
    assert np.all(np.abs(_re_inner(a, g)) <= 1e-6)
    xi = -tangent
    gn2 = _re_inner(tangent, tangent)
    s = np.logspace(-3, -6, 7)  # step lengths along ξ/‖ξ‖, in radians
    errors, quotients = [], []
    for sj in s:
        t = sj / np.sqrt(gn2)  # per column
        ft = cost(_unit(a + t[:, None, None] * xi), tau)[0]
        errors.append(np.abs(ft - f0 + t * gn2))
        quotients.append((ft - f0) / t)
    errors = np.array(errors)  # (steps, columns)
    slopes = np.polyfit(np.log10(s), np.log10(errors), 1)[0]
    # a wrong gradient gives slope 1; the O(t³) term bends the fit a little (≤ 0.03 seen over
    # 120 draws), so 0.15 separates the two cases with a wide margin
    assert np.all(np.abs(slopes - 2.0) < 0.15), slopes
    # one step = half a decade, so O(t²) divides the error by ≈ 10 (9.3–11.8 seen)
    ratio = errors[:-1] / errors[1:]
    assert np.all((ratio > 10**0.8) & (ratio < 10**1.2)), ratio
    # difference quotient at s = 1e-6 rad: −‖grad‖² within O(s) relative
    assert_allclose(quotients[-1], -gn2, rtol=1e-3)


def test_device_gradients_agree_with_the_smoothed_cost(rng):
    # One device dominating by > 10 in log units at τ = 1e-3: every other softmax weight is
    # < e^{-10000}, zero in float64, so LSE_τ is that device's y and the gradients coincide.
    cost = _cost(rng, 4, 5, 4, 2, dominant=2)
    a = _cn(rng, 5, 4, 2)
    lse, g = cost(a, 1e-3)
    y, g_dev = cost.device_gradients(a)
    assert np.all(np.argmax(y, axis=0) == 2)
    assert np.all(y[2] - np.delete(y, 2, axis=0).max(axis=0) > 10.0)
    assert_allclose(lse, y[2], rtol=1e-13)  # identical formula, rounding
    assert_allclose(g, g_dev[2], rtol=1e-12, atol=0)  # same terms, summation order differs
    # K = 1: the smoothed cost is the device term at every temperature
    one = _cost(rng, 1, 5, 4, 2)
    lse1, g1 = one(a, 0.5)
    y1, gd1 = one.device_gradients(a)
    assert_allclose(lse1, y1[0], rtol=1e-13)  # log Σ of one term: rounding
    assert_allclose(g1, gd1[0], rtol=1e-12)  # weight exactly 1: same terms, rounding


def test_cost_values_are_log_f_up_to_the_normalization(rng):
    # values() works on H normalized by s_m = rms |H| per column: max_k y_k = log f − log σ²
    # + 2 log s_m, which ties LogMaxCost to the spec objective of BeamformingProblem
    p = _problem(rng, 4, 5, 4, 2, 2, spread_db=10.0)
    exact = LogMaxCost(p.H, np.log(p.weights()), ridge=0.0)
    ridged = LogMaxCost(p.H, np.log(p.weights()))  # the solver's default ridge 1e-12
    s2 = np.mean(np.abs(p.H) ** 2, axis=(0, 2, 3))
    for _ in range(2):
        a = _cn(rng, 5, 4, 2)
        expected = np.log(p.objective(a)) - np.log(SIGMA2) + np.log(s2)
        assert_allclose(exact.values(a).max(axis=0), expected, rtol=1e-12)  # log f ~ 10: rounding
        # the ridge 1e-12 tr(C)/L shifts log t_k by ~1e-12 cond(C_k) (3.5e-10 seen)
        assert_allclose(ridged.values(a).max(axis=0), expected, rtol=0, atol=1e-8)
