"""The uplink and one round through it, without Flower (fedopt.flower.uplink, .rounds).

Channels are CN(0, 1) and the beamformers fixed (as in
tests/fedopt/fl/aggregators/test_aircomp_aggregator.py); the oracles are fedopt's aggregators
called directly with the round's generator, and the weighted average itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import AirCompAggregator, DigitalAggregator
from fedopt.fl.config import round_rng
from fedopt.flower import Uplink
from fedopt.flower.payload import Layout
from fedopt.flower.rounds import device_order, over_the_air

K, M, NR, NT, L = 3, 4, 4, 2, 2


@pytest.fixture
def design(crandn, rng):
    return crandn(K, M, NR, NT), crandn(M, NR, L), 0.01 * (1.0 + rng.random(K))


def test_a_round_is_the_aggregators_round_with_the_rounds_generator(design, rng):
    h, a, p = design
    up = Uplink.aircomp(lambda t: h, lambda t, hh: a, p, 1e-3, symbol_time_s=1e-4, seed=7,
                        compute_time_s=0.01)
    g, phi = rng.standard_normal((K, 50)), np.array([1.0, 2.0, 3.0])
    got = up.aggregate(g, phi, 4)
    want = AirCompAggregator(lambda t: h, lambda t, hh: a, p, 1e-3, symbol_time_s=1e-4,
                             compute_time_s=0.01).aggregate(g, phi, 4, round_rng(7, 4))
    np.testing.assert_array_equal(got.estimate, want.estimate)
    m = up.metrics(got, 50)
    assert m["uplink-error"] == want.error
    assert m["uplink-relative-error"] == pytest.approx(
        want.error / float(np.sum(want.exact ** 2)), rel=1e-12)  # one division
    assert m["uplink-symbols"] == -(-50 // (2 * L * M))
    assert m["uplink-latency-s"] == pytest.approx(0.01 + m["uplink-airtime-s"], rel=1e-12)
    assert m["uplink-energy-j"] == pytest.approx(float(want.energy_j.sum()), rel=1e-12)
    assert m["uplink-energy-max-j"] == float(want.energy_j.max())
    assert all(isinstance(v, (int, float)) for v in m.values())  # Flower metric scalars
    with pytest.raises(InvalidArgumentError, match="expected 3 rows"):
        up.aggregate(g[:2], phi[:2], 0)


def test_digital_uplink_checks_the_lora_layout_and_reports_kept_fraction(rng):
    layers, rank = [(4, 3), (2, 5)], 2

    def decide(t):
        return {"kept": [1, 2, 2], "latency_s": 0.5, "airtime_s": 0.4,
                "energy_j": [0.1, 0.2, 0.3]}

    up = Uplink.digital(layers, rank, decide, devices=K)
    assert up.payload_shapes == [(2, 3), (4, 2), (2, 5), (2, 2)]
    wrong = Layout.of({"w": np.zeros((3, 2))})
    with pytest.raises(InvalidArgumentError, match=r"expected floating-point arrays of shapes "
                                                   r"\[\(2, 3\), \(4, 2\), \(2, 5\), \(2, 2\)\]"):
        up.check_layout(wrong)
    q = 6 + 8 + 10 + 4
    g = rng.standard_normal((K, q))
    res = up.aggregate(g, np.ones(K), 0)
    want = DigitalAggregator(layers, rank, decide).aggregate(g, np.ones(K), 0, round_rng(0, 0))
    np.testing.assert_array_equal(res.estimate, want.estimate)
    m = up.metrics(res, q)
    assert m["uplink-kept-fraction"] == pytest.approx(5 / 6, rel=1e-12)  # mean(1, 2, 2) / 2
    assert (m["uplink-airtime-s"], m["uplink-latency-s"]) == (0.4, 0.5)
    assert m["uplink-energy-j"] == pytest.approx(0.6, rel=1e-12)  # a sum of three floats
    assert "uplink-symbols" not in m


def test_device_order():
    assert device_order([30, 10, 20], None, 3, 1) == [2, 0, 1]
    assert device_order([30, 10, 20], [1, 2.0, 0], 3, 1) == [1, 2, 0]
    with pytest.raises(InvalidArgumentError, match=r"round 2: 2 Flower client\(s\) sent "
                                                   r"updates but the uplink has K = 3 devices "
                                                   r"\(instance 'x'\)"):
        device_order([1, 2], None, 3, 2, "x")
    for bad in ([0, 0, 1], [0, 1, 3], [0, 1.5, 2]):
        with pytest.raises(InvalidArgumentError, match="exactly once"):
            device_order([1, 2, 3], bad, 3, 1)
    with pytest.raises(InvalidArgumentError, match="must be integers"):
        device_order([1, 2, 3], ["a", 1, 2], 3, 1)


@pytest.mark.parametrize("payload", ["delta", "parameters"])
def test_noise_free_round_is_the_weighted_average(design, rng, payload):
    h, a, p = design
    up = Uplink.aircomp(lambda t: h, lambda t, hh: a, p, 0.0, symbol_time_s=1e-4)
    sent = {"w": 1.0 + rng.standard_normal((3, 4)), "b": rng.standard_normal(2)}
    clients = [{k: v + 0.1 * rng.standard_normal(v.shape) for k, v in sent.items()}
               for _ in range(K)]
    phi = [3.0, 1.0, 2.0]
    out = over_the_air(up, 1, clients, phi, [5, 9, 2], sent=sent, payload=payload)
    assert out.devices == [1, 2, 0]
    for key in sent:
        want = sum(w * c[key] for w, c in zip(phi, clients, strict=True)) / sum(phi)
        # ZF rounding: ~1e-12 of the entries' magnitude (|θ| ~ 1), see the aggregator tests
        np.testing.assert_allclose(out.arrays[key], want, rtol=1e-10, atol=1e-12)
    record = out.record(1)
    assert record["round"] == 1 and record["devices"] == [1, 2, 0]
    assert len(record["energy_j"]) == K
    if payload == "delta":
        with pytest.raises(InvalidArgumentError, match="no global arrays"):
            over_the_air(up, 1, clients, phi, [5, 9, 2], sent=None)
