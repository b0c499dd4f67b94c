"""The AirComp aggregator against the ideal average and across its two modes
(fedopt.fl.aggregators.aircomp, spec 05 §3, §6; spec 02 §3).

Channels are CN(0, 1) ("normalized" scaling of tests/fedopt/test_aircomp.py); the ZF design is
scale invariant, so these oracles hold for realistic magnitudes as well. The ideal aggregator and
the protocol: test_ideal_aggregator.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import AirCompAggregator, IdealAggregator

K, M, NR, NT, L = 4, 4, 4, 2, 2
Q = 2 * L * M * 50  # a multiple of 2·L·M: every slot carries the same number of reals
PHI = np.array([0.5, 2.0, 1.0, 3.5])  # unequal, Σφ = 7


def _setup(crandn, rng):
    h = crandn(K, M, NR, NT)
    a = crandn(M, NR, L)
    p = 0.01 * (1.0 + rng.random(K))
    return h, a, p


def _air(h, a, p, sigma2, mode):
    return AirCompAggregator(lambda t: h, lambda t, hh: a, p, sigma2, symbol_time_s=1e-4,
                             mode=mode)


def _slot_of_entry(q: int) -> np.ndarray:
    """Flat slot index m·L + l of each real entry, from the documented pack layout
    (pairs of reals per symbol; symbols run over OFDM symbol, subcarrier, stream)."""
    j = np.arange(q) // 2
    _, m, l = np.unravel_index(j, (-(-q // (2 * M * L)), M, L))
    return m * L + l


def _errors(agg, g_draw, rounds, rng):
    """Stack of (ĝ − ḡ) vectors, measured errors and predicted errors over ``rounds``."""
    e, err, pred = [], [], []
    for t in range(rounds):
        r = agg.aggregate(g_draw(), PHI, t, rng)
        e.append(r.estimate - r.exact)
        err.append(r.error)
        pred.append(r.predicted_error)
    return np.array(e), np.array(err), np.array(pred)


@pytest.mark.parametrize("sigma2", [1e-30, 0.0])
def test_aircomp_noiseless_equals_ideal(crandn, rng, sigma2):
    h, a, p = _setup(crandn, rng)
    g = 3.0 + 0.1 * rng.standard_normal((K, Q + 5))  # q not a multiple: padding exercised
    ideal = IdealAggregator().aggregate(g, PHI, 0, rng)
    r = _air(h, a, p, sigma2, "exact").aggregate(g, PHI, 0, rng)
    # ZF inverses of well-conditioned 2×2 Grams: A^H H_k B_k = φ_k I to ~1e-14 relative, so the
    # estimate matches the average to ~1e-12 of its magnitude (|g| ~ 3)
    assert_allclose(r.estimate, ideal.estimate, rtol=1e-10, atol=1e-10)
    assert r.error < 1e-18 * Q
    assert r.predicted_error < 1e-20  # D ∝ σ²
    s = -(-(Q + 5) // (2 * L * M))
    assert r.info["n_symbols"] == s
    assert r.airtime_s == pytest.approx(s * 1e-4, rel=1e-12)  # product of two floats


def test_exact_and_equivalent_match_in_mean_variance_and_prediction(crandn, rng):
    h, a, p = _setup(crandn, rng)
    sigma2 = 1e-3
    rounds = 150

    def g_draw():
        return 1.0 + 2.0 * rng.standard_normal((K, Q))

    out = {mode: _errors(_air(h, a, p, sigma2, mode), g_draw, rounds, rng)
           for mode in ("exact", "equivalent")}
    stats = {}
    for mode, (e, err, pred) in out.items():
        n = e.size
        # zero mean: |mean| within 4 standard errors of the per-entry spread
        assert abs(e.mean()) < 4 * e.std() / np.sqrt(n), mode
        ms = np.mean(e**2)
        se = np.std(e**2) / np.sqrt(n)
        stats[mode] = (ms, se)
        # measured error vs spec 02 §3 prediction, averaged over rounds: within 5 %
        # (the round-to-round spread of ‖e‖² is ~sqrt(2/Q) ≈ 3.5 %, /sqrt(150) → 0.3 % SE)
        ratio = err.mean() / pred.mean()
        assert abs(ratio - 1.0) < 0.05, (mode, ratio)
        stats[mode + "_ratio"] = ratio
    (m1, s1), (m2, s2) = stats["exact"], stats["equivalent"]
    # mean squared error per entry of the two paths agree within 4 combined standard errors
    assert abs(m1 - m2) < 4 * np.hypot(s1, s2), (m1, m2, s1, s2)


def test_equivalent_per_slot_variance_layout_matches_exact(crandn, rng):
    h, a, p = _setup(crandn, rng)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)  # unit-norm columns
    a[1, :, 0] *= 30.0  # stream 0 of subcarrier 1 collects ~900× more noise than its twin
    sigma2 = 1e-3
    rounds = 100

    def g_draw():
        return rng.standard_normal((K, Q))

    slot = _slot_of_entry(Q)
    var = {}
    for mode in ("exact", "equivalent"):
        e, _, _ = _errors(_air(h, a, p, sigma2, mode), g_draw, rounds, rng)
        var[mode] = np.array([np.mean(e[:, slot == s] ** 2) for s in range(M * L)])
    noisy = 1 * L + 0
    twin = 1 * L + 1
    # the test is discriminative: under ZF the boosted stream gets 30² = 900× the noise of its
    # twin stream on the same subcarrier (same scale c_m); > 300× leaves room for sampling error
    assert var["exact"][noisy] > 300 * var["exact"][twin]
    # per slot n = rounds·Q/(M L) = 5000 samples → relative SE of a variance ≈ sqrt(2/n) = 2 %;
    # the ratio of two independent estimates has SE ≈ 2.8 %; 4σ ≈ 11 %
    assert_allclose(var["equivalent"], var["exact"], rtol=0.12)


def test_determinism_with_same_seed(crandn, rng):
    h, a, p = _setup(crandn, rng)
    g = rng.standard_normal((K, 100))
    for mode in ("exact", "equivalent"):
        agg = _air(h, a, p, 1e-3, mode)
        r1 = agg.aggregate(g, PHI, 3, np.random.default_rng(7))
        r2 = agg.aggregate(g, PHI, 3, np.random.default_rng(7))
        r3 = agg.aggregate(g, PHI, 3, np.random.default_rng(8))
        assert_array_equal(r1.estimate, r2.estimate)
        assert r1.error == r2.error
        assert not np.array_equal(r1.estimate, r3.estimate)


def test_round_callables_receive_round_and_channel(crandn, rng):
    h, a, p = _setup(crandn, rng)
    seen = []

    def bf(t, hh):
        seen.append((t, hh is h))
        return a

    agg = AirCompAggregator(lambda t: h, bf, p, 1e-3)
    agg.aggregate(rng.standard_normal((K, 10)), PHI, 5, rng)
    assert seen == [(5, True)]


@pytest.mark.parametrize("agg_name", ["ideal", "aircomp"])
def test_bad_inputs_name_the_argument(crandn, rng, agg_name):
    h, a, p = _setup(crandn, rng)
    agg = IdealAggregator() if agg_name == "ideal" else _air(h, a, p, 1e-3, "exact")
    g = rng.standard_normal((K, 10))
    with pytest.raises(InvalidArgumentError, match="updates"):
        agg.aggregate(g[0], PHI, 0, rng)
    with pytest.raises(InvalidArgumentError, match="updates"):
        agg.aggregate(np.full((K, 10), np.nan), PHI, 0, rng)
    with pytest.raises(InvalidArgumentError, match="weights"):
        agg.aggregate(g, PHI[:3], 0, rng)
    with pytest.raises(InvalidArgumentError, match="weights"):
        agg.aggregate(g, PHI[:, None], 0, rng)
    with pytest.raises(InvalidArgumentError, match="weights"):
        agg.aggregate(g, -PHI, 0, rng)
    with pytest.raises(InvalidArgumentError, match="round_index"):
        agg.aggregate(g, PHI, -1, rng)


def test_aircomp_constructor_and_round_shape_errors(crandn, rng):
    h, a, p = _setup(crandn, rng)
    with pytest.raises(InvalidArgumentError, match="mode"):
        _air(h, a, p, 1e-3, "fast")
    with pytest.raises(InvalidArgumentError, match="sigma2"):
        _air(h, a, p, -1.0, "exact")
    with pytest.raises(InvalidArgumentError, match="p_sub"):
        _air(h, a, -p, 1e-3, "exact")
    g = rng.standard_normal((K, 10))
    with pytest.raises(InvalidArgumentError, match="H_for_round"):
        _air(h[:3], a, p, 1e-3, "exact").aggregate(g, PHI, 0, rng)
    with pytest.raises(InvalidArgumentError, match="beamformers_for_round"):
        _air(h, a[:2], p, 1e-3, "exact").aggregate(g, PHI, 0, rng)
    with pytest.raises(InvalidArgumentError, match="p_sub"):
        _air(h, a, np.ones((K, M + 1)), 1e-3, "exact").aggregate(g, PHI, 0, rng)
