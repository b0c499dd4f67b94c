"""The SOFT/TSFA bound (spec 03 §3): each term against its closed form, the signs and the
monotonicity in the rank, sparsification = c4 · Σ_k p_k E_drop, vectorized = scalar, and the
dropped energy of a power-law spectrum against a plain loop."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.errors import InvalidArgumentError
from fedopt.gap_models import (
    TSFA_TERM_NAMES,
    RankTruncation,
    TSFABound,
    TSFAConstants,
    dropped_energy,
)
from fedopt.instance import Instance

# two layer groups of different shapes and non-default learning constants (as in the AirFL tests)
LAYERS = [{"name": "q", "d_out": 16, "d_in": 24, "count": 3},
          {"name": "v", "d_out": 40, "d_in": 8, "count": 2}]
LEARNING = {"smoothness": 8.0, "step_size": 0.1, "grad_variance": 2.5, "initial_gap": 3.0,
            "local_steps": 3, "rounds": 50, "spectrum_s1": 2.0, "spectrum_alpha": 0.7}


@pytest.fixture
def inst(small_dict) -> Instance:
    data = copy.deepcopy(small_dict)
    data["lora"].update(layers=LAYERS, ranks=[1, 2, 4, 8])
    data["learning"] = LEARNING
    return Instance.from_dict(data)


def test_constants_come_from_the_instance(inst):
    c = TSFAConstants.from_instance(inst)
    assert (c.eta, c.smoothness, c.grad_variance, c.local_steps, c.initial_gap, c.rounds) == (
        0.1, 8.0, 2.5, 3, 3.0, 50)
    assert c.c4 == c.c5 == 4.0  # L/2
    assert (c.c1, c.c2, c.c3, c.grad_bound) == (1.0, 4.0, 1.0, 1.0)
    assert TSFAConstants.from_instance(inst, c2=2.0).c2 == 2.0
    for bad in ({"eta": 0.0}, {"c4": -1.0}, {"rounds": 0}, {"grad_bound": math.nan}):
        with pytest.raises(InvalidArgumentError, match=next(iter(bad))):
            TSFAConstants(**bad)


def test_terms_match_their_closed_forms(inst):
    c = TSFAConstants(c1=1.5, c2=3.0, c3=0.5, c4=2.0, c5=7.0, eta=0.02, smoothness=6.0,
                      grad_variance=0.8, local_steps=4, grad_bound=1.3, initial_gap=2.5,
                      rounds=120)
    bound = TSFABound(inst, c)
    terms = bound.terms(4, mean_drop_error=0.3, mean_covariance=0.05)
    assert tuple(terms) == TSFA_TERM_NAMES
    k = inst.n_devices
    s2 = (2.0 * np.arange(1, 25, dtype=float) ** -0.7) ** 2  # the instance's power law
    eps = 6.0 / 2 * (3 * s2[4:16].sum() + 2 * s2[4:8].sum())  # layers truncated at 16 and 8
    expected = {"optimization": 2 * 2.5 / (0.02 * 120), "noise": 1.5 * 0.02 * 6.0 * 0.8 / k,
                "drift": 3.0 * 0.02**2 * 6.0**2 * 4**2 * 1.3**2, "rank": 0.5 * eps,
                "sparsification": 2.0 * 0.3, "covariance": 7.0 * 0.05}
    for name, value in expected.items():
        assert float(terms[name]) == pytest.approx(value, rel=1e-13), name  # rounding only
    assert float(bound.total(4, 0.3, 0.05)) == pytest.approx(sum(expected.values()), rel=1e-13)


def test_term_signs_and_rank_monotonicity(inst):
    bound = TSFABound(inst)
    ranks = np.arange(1, 21)
    terms = bound.terms(ranks, mean_drop_error=0.1, mean_covariance=0.02)
    for name, value in terms.items():
        assert value.shape == (20,) and np.all(np.isfinite(value)), name
        assert np.all(value >= 0), name
    for name in ("optimization", "noise", "drift", "sparsification", "covariance"):
        assert np.all(terms[name] > 0) and np.ptp(terms[name]) == 0, name  # rank-free
    rank = terms["rank"]
    assert np.all(np.diff(rank) <= 0)
    assert np.all(np.diff(rank[:16]) < 0)     # strictly while the spectrum lasts (largest
    assert np.all(rank[15:] == 0.0)           # layer's min(d, k) = 16), then nothing is left
    # a measured spectrum with a zero tail: non-increasing, flat once it ends
    flat = TSFABound(inst, truncation=RankTruncation([4.0, 2.0, 1.0, 0, 0])).terms(ranks)["rank"]
    assert np.all(np.diff(flat) <= 0) and np.all(flat[2:] == 0)


def test_sparsification_is_c4_times_the_weighted_dropped_energy(inst, rng):
    bound = TSFABound(inst)
    p = inst.weights
    r = 8
    scores = rng.uniform(0.0, 2.0, (inst.n_devices, r))  # one score vector per device
    kept = np.array([8, 4, 2])                           # per-device m_k
    per_device = [sum(sorted(s**2)[: r - m]) for s, m in zip(scores, kept, strict=True)]
    mean_drop = float(np.dot(p, per_device))
    got = bound.terms(r, mean_drop_error=mean_drop)["sparsification"]
    # rel 1e-14: one multiplication by c4
    assert float(got) == pytest.approx(bound.constants.c4 * mean_drop, rel=1e-14)
    assert_allclose(np.dot(p, dropped_energy(scores, kept)), mean_drop, rtol=1e-14)


def test_nominal_drop_error_uses_the_spectrum_as_scores(inst):
    bound = TSFABound(inst)
    s = bound.truncation.values
    for r in (1, 2, 4, 8):
        for rho in (0.0, 0.25, 1 / 3, 0.5, 0.75):
            m = math.ceil((1 - rho) * r - 1e-9)
            # every device sends the same scores, Σ_k p_k = 1; layers: count 3 + count 2
            per_weight = float(dropped_energy(s[:r], m))
            expected = (3 + 2) * per_weight
            assert float(bound.nominal_drop_error(r, rho)) == pytest.approx(expected, rel=1e-13)
    # rank term at r + nominal sparsification at (r, ρ) = rank term at m (c3 = 1, c4 = L/2)
    ranks = np.arange(1, 9)
    m = np.ceil(0.5 * ranks).astype(int)
    lhs = bound.terms(ranks)["rank"] + bound.terms(ranks, bound.nominal_drop_error(ranks, 0.5))[
        "sparsification"]
    assert_allclose(lhs, bound.terms(m)["rank"], rtol=1e-12)  # rel 1e-12: sums reassociated
    assert_array_equal(bound.nominal_drop_error(ranks, 0.0), 0.0)


def test_vectorized_equals_scalar(inst):
    bound = TSFABound(inst)
    ranks = np.arange(1, 9)[:, None]
    drops = np.array([0.0, 0.1, 0.7])[None, :]
    terms = bound.terms(ranks, drops, 0.3)
    for i, r in enumerate(ranks[:, 0]):
        for j, d in enumerate(drops[0]):
            scalar = bound.terms(int(r), float(d), 0.3)
            for name in TSFA_TERM_NAMES:
                assert terms[name][i, j] == scalar[name], (name, r, d)
    nominal = bound.nominal_drop_error(np.arange(1, 9), 0.4)
    assert_array_equal(nominal, [bound.nominal_drop_error(r, 0.4) for r in range(1, 9)])


def test_dropped_energy_on_a_power_law_against_a_loop(rng):
    r, s1, alpha = 12, 3.0, 0.8
    s = s1 * np.arange(1, r + 1, dtype=float) ** -alpha
    for m in range(r + 1):
        closed = sum(s1**2 * i ** (-2 * alpha) for i in range(m + 1, r + 1))
        shuffled = rng.permutation(s)  # any order: the smallest are found by sorting
        assert float(dropped_energy(shuffled, m)) == pytest.approx(closed, rel=1e-13, abs=0)
    # vectorized over a batch of score vectors and kept counts (broadcast)
    batch = np.stack([rng.permutation(s) for _ in range(5)])
    kept = np.arange(0, 13, 3)[:, None]  # (5, 1) against (5,) → (5, 5)
    out = dropped_energy(batch, kept)
    assert out.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            loop = sum(sorted(batch[j] ** 2)[: r - int(kept[i, 0])])
            assert out[i, j] == pytest.approx(loop, rel=1e-13, abs=0)  # summation order only
    with pytest.raises(InvalidArgumentError, match="kept"):
        dropped_energy(s, 13)
    with pytest.raises(InvalidArgumentError, match="scores"):
        dropped_energy(-s, 2)
