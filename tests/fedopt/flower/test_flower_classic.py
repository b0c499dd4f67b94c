"""AirCompClassicStrategy around Flower's classic FedAvg (fedopt.flower.classic).

The uplink and its oracles are those of test_flower_strategy.py (CN(0, 1) channels, fixed
beamformers); the results are classic ``FitRes`` from stand-in client proxies (the wrapper reads
their ``cid``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import (  # noqa: E402
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.strategy import FedAvg  # noqa: E402

from fedopt.flower import AirCompClassicStrategy, AirCompStrategy, Uplink  # noqa: E402

K, M, NR, NT, L = 3, 4, 4, 2, 2


def uplink(crandn, rng, sigma2: float) -> Uplink:
    h, a = crandn(K, M, NR, NT), crandn(M, NR, L)
    p = 0.01 * (1.0 + rng.random(K))
    return Uplink.aircomp(lambda t: h, lambda t, hh: a, p, sigma2, symbol_time_s=1e-4)


def fit_round(strategy, rng, *, metrics=lambda i: {}):
    """configure_fit through the wrapper (it keeps the global arrays), then three results."""
    theta = [2.0 + rng.standard_normal((6, 3)), rng.standard_normal(3),
             np.array([7], dtype=np.int64)]
    manager = SimpleNamespace(num_available=lambda: K,
                              sample=lambda num_clients, min_num_clients=None, criterion=None:
                              [SimpleNamespace(cid=str(c)) for c in (12, 3, 40)][:num_clients])
    strategy.configure_fit(1, ndarrays_to_parameters(theta), manager)
    results = []
    for i, cid in enumerate(("12", "3", "40")):
        arrays = [theta[0] + 0.1 * rng.standard_normal((6, 3)),
                  theta[1] + 0.1 * rng.standard_normal(3), np.array([i], dtype=np.int64)]
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10 * (i + 1),
                     {"loss": float(i), **metrics(i)})
        results.append((SimpleNamespace(cid=cid), res))
    return results


def test_noise_free_aircomp_equals_classic_fedavg(crandn, rng):
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0))
    assert isinstance(strategy, AirCompClassicStrategy)
    results = fit_round(strategy, rng)
    params, metrics = strategy.aggregate_fit(1, results, [])
    want = parameters_to_ndarrays(FedAvg().aggregate_fit(1, results, [])[0])
    got = parameters_to_ndarrays(params)
    for g, w in zip(got[:2], want[:2], strict=True):
        # ZF rounding, as in test_flower_strategy.py: ~1e-12 of |θ| ~ 3
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[2], want[2])  # the int array: FedAvg's own average
    assert metrics["uplink-reals"] == 21 and metrics["uplink-error"] < 1e-20
    assert metrics["uplink-airtime-s"] > 0
    # devices by numeric cid: "3" < "12" < "40"
    assert strategy.history[0]["devices"] == [1, 0, 2]


def test_device_key_and_noise(crandn, rng):
    strategy = AirCompClassicStrategy(FedAvg(), uplink=uplink(crandn, rng, 1e-3),
                                      device_key="pid", payload="delta")
    results = fit_round(strategy, rng, metrics=lambda i: {"pid": (i + 1) % K})
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert strategy.history[0]["devices"] == [1, 2, 0]
    got = parameters_to_ndarrays(params)
    want = parameters_to_ndarrays(FedAvg().aggregate_fit(1, results, [])[0])
    dist = sum(float(np.sum((g - w) ** 2)) for g, w in zip(got[:2], want[:2], strict=True))
    # the measured error is the distance to FedAvg's average (rounding of |θ| ~ 3 only)
    assert metrics["uplink-error"] == pytest.approx(dist, rel=1e-6)
    assert metrics["uplink-error"] > 1e-8
    # the wrapped strategy never saw the device key (its fit metrics are its own business)
    seen = []
    inner = FedAvg(fit_metrics_aggregation_fn=lambda fm: seen.extend(m for _, m in fm) or {})
    again = AirCompClassicStrategy(inner, uplink=strategy.uplink, device_key="pid")
    again.configure_fit(1, ndarrays_to_parameters(
        parameters_to_ndarrays(results[0][1].parameters)), SimpleNamespace(
        num_available=lambda: K, sample=lambda **kw: []))
    again.aggregate_fit(1, results, [])
    assert seen and all("pid" not in m and "loss" in m for m in seen)
    assert strategy.aggregate_fit(2, [], []) == (None, {})  # nothing to aggregate: FedAvg's
