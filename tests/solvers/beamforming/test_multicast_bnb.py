"""The branch-and-bound certificate of L = 1 beamforming with single-antenna devices.

Oracles: a brute force over the whole sphere for N_r = 2 (grid, then a local polish: a feasible
value, so ≥ the optimum) inside the certified interval; SDR exactness for K ≤ 3 (the bound meets
fedopt's multicast value); the lower bound under every feasible value found by random search and
by multicast runs from other seeds; weak duality against fedopt's multicast value, and the bound
not below the SDR-dual bound; tol = 0 on small K closes the gap.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.multicast import multicast
from fedopt.solvers.beamforming.multicast_bnb import certify_multicast
from fedopt.solvers.beamforming.problem import BeamformingProblem


def _equal_gain(rng, k, nr, m=1, nt=1, streams=1) -> BeamformingProblem:
    h = rng.standard_normal((k, m, nr, nt)) + 1j * rng.standard_normal((k, m, nr, nt))
    return BeamformingProblem(H=h / np.sqrt(2), phi=rng.uniform(0.5, 2.0, k),
                              p_sub=rng.uniform(0.5, 2.0, (k, m)), sigma2=0.3, streams=streams)


def _f(problem, a, m=0) -> float:
    """f(a) on subcarrier m of a one-column beamformer a (N_r,)."""
    return float(problem.subproblem([m]).objective(np.asarray(a)[None, :, None])[0])


def _brute_force_2(problem) -> float:
    """min f over a = (cos θ, sin θ e^{jφ}) (N_r = 2, the common phase is free): a 300 × 600
    grid, then Nelder–Mead from the 5 best grid points; every value is that of a point."""
    th, ph = np.meshgrid(np.linspace(0, np.pi / 2, 300), np.linspace(0, 2 * np.pi, 600))
    a = np.stack([np.cos(th).ravel(), (np.sin(th) * np.exp(1j * ph)).ravel()])  # (2, P)
    h = problem.H[:, 0, :, 0]  # (K, 2)
    c = problem.weights()[:, 0]
    gains = np.abs(np.conj(h) @ a) ** 2 / c[:, None]
    vals = problem.sigma2 / np.maximum(gains.min(axis=0), 1e-300)

    def f(x):
        return _f(problem, np.array([np.cos(x[0]), np.sin(x[0]) * np.exp(1j * x[1])]))

    best = float(vals.min())
    for i in np.argsort(vals)[:5]:
        x0 = [th.ravel()[i], ph.ravel()[i]]
        res = minimize(f, x0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14,
                                                             "maxiter": 4000})
        best = min(best, float(res.fun))
    return best


@pytest.mark.parametrize("k", [3, 5, 8])
def test_interval_contains_the_brute_force_optimum_for_two_antennas(rng, k):
    # a poor incumbent too: with a near-optimal one, a wrong (too high) node bound would only
    # prune early and the lower bound, capped by the incumbent, would still look right
    for _ in range(3):
        p = _equal_gain(rng, k, 2)
        brute = _brute_force_2(p)
        for start in (None, rng.standard_normal(2) + 1j * rng.standard_normal(2)):
            r = certify_multicast(p, tol=1e-4, incumbent=start)
            assert r["status"] == "certified" and r["gap"] <= 1e-4
            assert r["lower_bound"] <= brute  # brute ≥ v* ≥ lower bound
            assert brute <= r["upper_bound"] * (1 + 1e-4)  # the brute force finds v* to ~1e-6
            assert r["upper_bound"] <= brute * (1 + 2e-4)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_bound_meets_the_optimum_where_the_sdr_is_tight(rng, k):
    for _ in range(3):
        p = _equal_gain(rng, k, 4)
        mc = multicast(p, rng=0)
        r = certify_multicast(p, tol=1e-6)
        assert r["status"] == "certified" and r["gap"] <= 1e-6
        # multicast stops at a smoothing temperature τ = 1e-4 (max error τ log K)
        assert r["lower_bound"] <= mc.objective <= r["lower_bound"] * (1 + 2e-4)
        assert r["sdr_dual_bound"] == pytest.approx(mc.objective, rel=1e-3)


def test_lower_bound_is_below_every_feasible_value(rng):
    p = _equal_gain(rng, 12, 4)
    start = rng.standard_normal(4) + 1j * rng.standard_normal(4)  # poor: the bound must work
    r = certify_multicast(p, tol=0.02, max_nodes=3000, incumbent=start)
    a = rng.standard_normal((400, 4)) + 1j * rng.standard_normal((400, 4))
    values = np.array([_f(p, x) for x in a])
    assert np.all(values >= r["lower_bound"])
    for seed in range(3):  # local optima from other starts
        assert multicast(p, rng=seed + 1).objective >= r["lower_bound"]
    assert _f(p, r["beamformer"]) == pytest.approx(r["upper_bound"], rel=1e-9)
    assert r["upper_bound"] <= multicast(p, rng=0).objective * 1.02


def test_bound_between_the_sdr_dual_bound_and_the_multicast_value(rng):
    for nr, k in ((4, 10), (8, 10), (3, 14)):
        p = _equal_gain(rng, k, nr)
        mc = multicast(p, rng=0)
        r = certify_multicast(p, max_nodes=2000)
        assert r["lower_bound"] <= mc.objective
        assert r["upper_bound"] <= mc.objective * (1 + 1e-12)
        assert r["lower_bound"] >= mc.bound * (1 - 1e-3)  # numerical noise of two barriers
        assert r["lower_bound"] >= r["sdr_dual_bound"] * (1 - 1e-8)


def test_tol_zero_closes_the_gap_on_small_k(rng):
    p = _equal_gain(rng, 5, 3)
    r = certify_multicast(p, tol=0.0, max_nodes=20_000)
    assert r["gap"] <= 1e-7
    assert r["upper_bound"] <= multicast(p, rng=0).objective * (1 + 1e-12)


def test_node_and_time_limits_keep_a_valid_bound(rng):
    p = _equal_gain(rng, 16, 6)
    mc = multicast(p, rng=0)
    r = certify_multicast(p, tol=0.0, max_nodes=5)
    assert r["status"] == "node-limit" and 5 <= r["nodes"] <= 5 + 4
    assert r["lower_bound"] <= mc.objective and r["gap"] > 0
    r = certify_multicast(p, tol=0.0, time_limit_s=1e-6)
    assert r["status"] == "time-limit" and r["lower_bound"] <= mc.objective


def test_subcarrier_and_incumbent(rng):
    p = _equal_gain(rng, 6, 3, m=2)
    r1 = certify_multicast(p, subcarrier=1, tol=1e-4)
    r2 = certify_multicast(p.subproblem([1]), tol=1e-4)
    assert r1["lower_bound"] == pytest.approx(r2["lower_bound"], rel=1e-9)
    assert _f(p, r1["beamformer"], m=1) == pytest.approx(r1["upper_bound"], rel=1e-9)
    a = rng.standard_normal(3) + 1j * rng.standard_normal(3)  # a poor start is fine
    r3 = certify_multicast(p, subcarrier=1, tol=1e-4, incumbent=a)
    assert r3["lower_bound"] <= r1["upper_bound"] and r1["lower_bound"] <= r3["upper_bound"]


def test_bad_input(rng):
    p = _equal_gain(rng, 4, 3)
    with pytest.raises(InvalidArgumentError, match="N_t = 1"):
        certify_multicast(_equal_gain(rng, 4, 3, nt=2))
    with pytest.raises(InvalidArgumentError, match="L = 2"):
        certify_multicast(_equal_gain(rng, 4, 3, nt=2, streams=2))
    for kw, name in (({"subcarrier": 1}, "subcarrier"), ({"tol": -0.1}, "tol"),
                     ({"max_nodes": 0}, "max_nodes"), ({"time_limit_s": 0}, "time_limit_s"),
                     ({"incumbent": np.ones(2)}, "incumbent"),
                     ({"incumbent": np.zeros(3)}, "incumbent")):
        with pytest.raises(InvalidArgumentError, match=name):
            certify_multicast(p, **kw)
    with pytest.raises(InvalidArgumentError, match="BeamformingProblem"):
        certify_multicast(p.H)
