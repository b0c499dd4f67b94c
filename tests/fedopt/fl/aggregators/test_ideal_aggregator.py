"""The ideal aggregator and the aggregator protocol (fedopt.fl.aggregators, spec 05 §3).

Oracles: the ideal estimate is the φ-weighted average computed here with unnormalized weights;
the aggregators that draw nothing (ideal, digital) leave the round's generator untouched; the
package re-exports the names its modules define.
"""

from __future__ import annotations

import numpy as np
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.fl.aggregators import (
    AggregationResult,
    Aggregator,
    DigitalAggregator,
    IdealAggregator,
)

K = 4
PHI = np.array([0.5, 2.0, 1.0, 3.5])  # unequal, Σφ = 7


def test_ideal_is_weighted_average_with_unnormalized_weights(rng):
    g = rng.standard_normal((K, 37))
    r = IdealAggregator().aggregate(g, PHI, 0, rng)
    expected = sum(PHI[k] * g[k] for k in range(K)) / PHI.sum()
    # one weighted sum of 4 terms: rounding only
    assert_allclose(r.exact, expected, rtol=1e-13, atol=1e-13)
    assert_array_equal(r.estimate, r.exact)
    assert r.error == 0.0 and r.predicted_error == 0.0 and r.airtime_s is None
    assert isinstance(IdealAggregator(), Aggregator)
    assert isinstance(r, AggregationResult)




def test_ideal_and_digital_aggregators_draw_nothing_from_rng(rng):
    g = rng.standard_normal((K, 2 * (3 + 5)))
    digital = DigitalAggregator([(5, 3)], 2, lambda t: {"kept": np.ones(K, dtype=int)})
    for agg in (IdealAggregator(), digital):
        gen = np.random.default_rng(11)
        before = gen.bit_generator.state
        agg.aggregate(g, PHI, 0, gen)
        assert gen.bit_generator.state == before, type(agg).__name__


def test_the_package_re_exports_its_modules_names():
    import fedopt.fl.aggregators as pkg
    from fedopt.fl.aggregators import aircomp, base, digital, ideal

    assert pkg.AggregationResult is base.AggregationResult and pkg.Aggregator is base.Aggregator
    assert pkg.IdealAggregator is ideal.IdealAggregator
    assert pkg.AirCompAggregator is aircomp.AirCompAggregator and pkg.MODES is aircomp.MODES
    assert pkg.DigitalAggregator is digital.DigitalAggregator
    assert pkg.soft_component_mask is digital.soft_component_mask
