"""AirCompStrategy (Message API) around Flower's own strategies (fedopt.flower.strategy).

The uplinks here are built from fixed CN(0, 1) channels and fixed receive beamformers (the
"normalized" scaling of tests/fedopt/fl/aggregators/test_aircomp_aggregator.py; the ZF design
is scale invariant); uplinks planned from instances: tests/solvers/test_flower_uplinks.py. The
replies are real Flower messages, answers to the strategy's own ``configure_train``.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAdam, FedAvg  # noqa: E402

from fedopt.errors import InvalidArgumentError, MissingDependencyError  # noqa: E402
from fedopt.flower import AirCompStrategy, Uplink  # noqa: E402

K, M, NR, NT, L = 3, 4, 4, 2, 2
NODES = [905, 17, 4242]  # Flower node ids: devices follow their sorted order (17, 905, 4242)
EXAMPLES = [30, 10, 60]


@pytest.fixture
def grid(monkeypatch):
    """A stand-in for Flower's Grid (it only lists nodes), with the task identity Flower's
    runtime sets before a ServerApp builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)
    return SimpleNamespace(get_node_ids=lambda: list(NODES))


def uplink(crandn, rng, sigma2: float, mode: str = "exact", seed: int = 0) -> Uplink:
    h = crandn(K, M, NR, NT)
    a = crandn(M, NR, L)
    p = 0.01 * (1.0 + rng.random(K))
    return Uplink.aircomp(lambda t: h, lambda t, hh: a, p, sigma2, symbol_time_s=1e-4,
                          mode=mode, seed=seed)


def global_arrays(rng) -> dict[str, np.ndarray]:
    return {"w": 2.0 + rng.standard_normal((7, 5)), "b": rng.standard_normal(5)}


def round_one(strategy, theta, grid, rng, *, scale=0.1, metrics=None):
    """configure_train, then one reply per sampled node: θ + scale·noise, with its example
    count (``metrics(node)`` adds more). Returns the replies."""
    record = ArrayRecord({k: Array(v) for k, v in theta.items()})
    msgs = sorted(strategy.configure_train(1, record, ConfigRecord(), grid),
                  key=lambda m: m.metadata.dst_node_id)
    replies = []
    for msg in msgs:
        node = msg.metadata.dst_node_id
        arrays = {k: Array(v + scale * rng.standard_normal(v.shape)) for k, v in theta.items()}
        m = {"num-examples": EXAMPLES[NODES.index(node)], "loss": float(node % 7),
             **(metrics(node) if metrics else {})}
        replies.append(Message(RecordDict({"arrays": ArrayRecord(arrays),
                                           "metrics": MetricRecord(m)}), reply_to=msg))
    return replies


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


@pytest.mark.parametrize("mode", ["exact", "equivalent"])
def test_noise_free_aircomp_equals_fedavg(crandn, rng, grid, mode):
    theta = global_arrays(rng)
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0, mode))
    replies = round_one(strategy, theta, grid, rng)
    arrays, metrics = strategy.aggregate_train(1, replies)
    want, want_metrics = FedAvg().aggregate_train(1, replies)
    for key, value in numpy_arrays(want).items():
        # ZF inverses of well-conditioned 2×2 Grams give A^H H_k B_k = φ_k I to ~1e-14
        # relative, so θ + ĝ matches FedAvg's average to ~1e-12 of |θ| ~ 3
        np.testing.assert_allclose(arrays[key].numpy(), value, rtol=1e-10, atol=1e-12)
    assert metrics["loss"] == want_metrics["loss"]  # the wrapped strategy's own metric
    q = 7 * 5 + 5
    assert metrics["uplink-reals"] == q
    s = -(-q // (2 * L * M))  # S = ⌈q / (2 L M)⌉ OFDM symbols
    assert metrics["uplink-symbols"] == s
    assert metrics["uplink-airtime-s"] == pytest.approx(s * 1e-4, rel=1e-12)  # S·T: one product
    assert metrics["uplink-error"] < 1e-20  # ‖ĝ − ḡ‖² of updates ~0.1: ZF rounding only
    assert metrics["uplink-energy-j"] > 0
    assert strategy.history[0]["round"] == 1 and len(strategy.history) == 1


def test_measured_error_is_the_distance_to_fedavg(crandn, rng, grid):
    theta = global_arrays(rng)
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 1e-3))
    replies = round_one(strategy, theta, grid, rng)
    arrays, metrics = strategy.aggregate_train(1, replies)
    want = numpy_arrays(FedAvg().aggregate_train(1, replies)[0])
    dist = sum(float(np.sum((arrays[k].numpy() - want[k]) ** 2)) for k in want)
    # ‖(θ + ĝ) − θ̄‖² against ‖ĝ − ḡ‖²: the same vector up to rounding of θ (|θ| ~ 3, error
    # entries ~1e-2), far below the 1e-6 relative asked
    assert metrics["uplink-error"] == pytest.approx(dist, rel=1e-6)
    assert metrics["uplink-error"] > 1e-8  # the noise is on


def test_same_seed_same_aggregate(crandn, rng, grid):
    theta = global_arrays(rng)
    h, a, p = crandn(K, M, NR, NT), crandn(M, NR, L), 0.01 * (1.0 + rng.random(K))

    def run(seed):
        up = Uplink.aircomp(lambda t: h, lambda t, hh: a, p, 1e-3, symbol_time_s=1e-4,
                            seed=seed)
        strategy = AirCompStrategy(FedAvg(), uplink=up)
        replies = round_one(strategy, theta, grid, np.random.default_rng(5))
        return numpy_arrays(strategy.aggregate_train(1, replies)[0])

    first, again, other = run(0), run(0), run(1)
    for key in theta:
        np.testing.assert_array_equal(first[key], again[key])
        assert not np.array_equal(first[key], other[key])


def test_devices_follow_the_reported_key_and_the_key_is_dropped(crandn, rng, grid):
    theta = global_arrays(rng)
    up = uplink(crandn, rng, 1e-3)
    device = {905: 2, 17: 0, 4242: 1}
    strategy = AirCompStrategy(FedAvg(), uplink=up, device_key="device")
    replies = round_one(strategy, theta, grid, rng, metrics=lambda n: {"device": device[n]})
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert "device" not in metrics
    assert strategy.history[0]["devices"] == [device[m.metadata.src_node_id] for m in replies]
    # the reply order does not matter: each client keeps its device, channel and noise
    again = AirCompStrategy(FedAvg(), uplink=up, device_key="device")
    again.configure_train(1, ArrayRecord({k: Array(v) for k, v in theta.items()}),
                          ConfigRecord(), grid)
    arrays2, _ = again.aggregate_train(1, replies[::-1])
    for key in theta:
        # FedAvg sums the K identical estimates in the reply order: equal to a few ulp
        np.testing.assert_allclose(arrays2[key].numpy(), arrays[key].numpy(), rtol=1e-14)
    # the original replies keep their metrics (the strategy rebuilds messages, never edits)
    assert all("device" in next(iter(m.content.metric_records.values())) for m in replies)


def test_devices_default_to_the_order_of_node_ids(crandn, rng, grid):
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 1e-3))
    replies = round_one(strategy, global_arrays(rng), grid, rng)
    replies = [replies[i] for i in (2, 0, 1)]  # the replies come in any order
    strategy.aggregate_train(1, replies)
    want = [sorted(NODES).index(m.metadata.src_node_id) for m in replies]
    assert want != [0, 1, 2]  # the order matters here
    assert strategy.history[0]["devices"] == want


def test_dtypes_kept_and_non_float_arrays_left_to_the_wrapped_strategy(crandn, rng, grid):
    theta = {"w": rng.standard_normal((4, 4)).astype(np.float32),
             "steps": np.array([3, 4], dtype=np.int64)}
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0))
    record = ArrayRecord({k: Array(v) for k, v in theta.items()})
    msgs = list(strategy.configure_train(1, record, ConfigRecord(), grid))
    replies = [Message(RecordDict({"arrays": ArrayRecord({
        "w": Array((theta["w"] + 0.1 * i).astype(np.float32)),
        "steps": Array(np.array([i, 2 * i], dtype=np.int64))}),
        "metrics": MetricRecord({"num-examples": 5 + i})}), reply_to=m)
        for i, m in enumerate(msgs)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    want = numpy_arrays(FedAvg().aggregate_train(1, replies)[0])
    assert arrays["w"].numpy().dtype == np.float32
    # float32 rounding of the estimate and of FedAvg's float32 sums: a few float32 ulp
    np.testing.assert_allclose(arrays["w"].numpy(), want["w"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays["steps"].numpy(), want["steps"])  # FedAvg's own
    assert metrics["uplink-reals"] == 16  # only the float array travelled


def test_error_replies_are_left_to_the_wrapped_strategy(crandn, rng, grid):
    theta = global_arrays(rng)
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0))
    replies = round_one(strategy, theta, grid, rng)
    failed = Message(Error(code=0, reason="client crashed"), reply_to=replies[0])
    with pytest.raises(InvalidArgumentError, match=r"2 Flower client\(s\) sent updates but "
                                                   r"the uplink has K = 3"):
        strategy.aggregate_train(1, [failed, *replies[1:]])
    arrays, _ = strategy.aggregate_train(1, [*replies, failed])
    want = numpy_arrays(FedAvg().aggregate_train(1, replies)[0])
    for key, value in want.items():  # tolerance: as in test_noise_free_aircomp_equals_fedavg
        np.testing.assert_allclose(arrays[key].numpy(), value, rtol=1e-10, atol=1e-12)


def test_server_optimizer_acts_on_the_estimate(crandn, rng, grid):
    """FedAdam's server step is taken on the over-the-air estimate: the step FedAdam takes when
    every client sends that estimate."""
    theta = global_arrays(rng)
    h, a, p = crandn(K, M, NR, NT), crandn(M, NR, L), 0.01 * (1.0 + rng.random(K))

    def record(arrays):
        return ArrayRecord({k: Array(v) for k, v in arrays.items()})

    def wrapped(inner):
        up = Uplink.aircomp(lambda t: h, lambda t, hh: a, p, 1e-3, symbol_time_s=1e-4)
        strategy = AirCompStrategy(inner, uplink=up)
        replies = round_one(strategy, theta, grid, np.random.default_rng(3))
        return replies, numpy_arrays(strategy.aggregate_train(1, replies)[0])

    replies, got = wrapped(FedAdam(eta=0.05))
    _, estimate = wrapped(FedAvg())  # the same uplink, seed and replies: the estimate θ̂
    plain = FedAdam(eta=0.05)
    msgs = list(plain.configure_train(1, record(theta), ConfigRecord(), grid))
    same = [Message(RecordDict({"arrays": record(estimate), "metrics": next(iter(
        r.content.metric_records.values()))}), reply_to=m)
        for r, m in zip(replies, msgs, strict=True)]
    want = numpy_arrays(plain.aggregate_train(1, same)[0])
    for key, value in want.items():
        # Adam's first step moves an entry by ≈ η·sign(Δ) unless |Δ| ≲ τ: the ulp-level
        # difference of the two ways of forming θ̂ is amplified by at most η/τ = 50 near Δ = 0
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-9)
    noisy = FedAdam(eta=0.05)
    noisy.configure_train(1, record(theta), ConfigRecord(), grid)
    on_average = numpy_arrays(noisy.aggregate_train(1, replies)[0])
    # the noise shows: entries with |Δ| ~ τ move by up to η; 0.06 measured on this draw
    assert not np.allclose(got["w"], on_average["w"], rtol=0, atol=1e-6)


def test_parameters_payload_costs_more_error_than_updates(crandn, rng, grid):
    theta = global_arrays(rng)
    h, a, p = crandn(K, M, NR, NT), crandn(M, NR, L), 0.01 * (1.0 + rng.random(K))
    errors = {}
    for payload in ("delta", "parameters"):
        up = Uplink.aircomp(lambda t: h, lambda t, hh: a, p, 1e-3, symbol_time_s=1e-4)
        strategy = AirCompStrategy(FedAvg(), uplink=up, payload=payload)
        replies = round_one(strategy, theta, grid, np.random.default_rng(9))
        errors[payload] = strategy.aggregate_train(1, replies)[1]["uplink-error"]
    # the error scales with the payload's spread: parameters (std ~1, mean 2) against
    # updates (std 0.1), so at least (1/0.1)² / 4 more
    assert errors["parameters"] > 25 * errors["delta"]


def test_missing_metrics_and_round_without_configure_train(crandn, rng, grid):
    theta = global_arrays(rng)
    strategy = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0), device_key="pid")
    replies = round_one(strategy, theta, grid, rng)
    with pytest.raises(InvalidArgumentError, match="has no metric 'pid'"):
        strategy.aggregate_train(1, replies)
    fresh = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0))
    with pytest.raises(InvalidArgumentError, match="no global arrays were recorded"):
        fresh.aggregate_train(2, replies)
    dup = AirCompStrategy(FedAvg(), uplink=uplink(crandn, rng, 0.0), device_key="pid")
    replies = round_one(dup, theta, grid, rng, metrics=lambda n: {"pid": 1})
    with pytest.raises(InvalidArgumentError, match=r"expected each of 0..2 exactly once"):
        dup.aggregate_train(1, replies)


def test_options_are_checked(crandn, rng):
    up = uplink(crandn, rng, 0.0)
    with pytest.raises(InvalidArgumentError, match="payload"):
        AirCompStrategy(FedAvg(), uplink=up, payload="weights")
    with pytest.raises(InvalidArgumentError, match="uplink: expected a fedopt.flower.Uplink"):
        AirCompStrategy(FedAvg(), uplink=object())
    with pytest.raises(InvalidArgumentError, match="strategy: expected a Flower strategy"):
        AirCompStrategy(object(), uplink=up)


def test_a_classic_strategy_gives_the_classic_wrapper(crandn, rng):
    from flwr.server.strategy import FedAvg as ClassicFedAvg

    from fedopt.flower import AirCompClassicStrategy

    s = AirCompStrategy(ClassicFedAvg(), uplink=uplink(crandn, rng, 0.0))
    assert isinstance(s, AirCompClassicStrategy)
    assert s.fraction_fit == 1.0  # attributes of the wrapped strategy show through


def test_import_is_light_and_a_missing_flwr_names_the_extra():
    code = ("import sys, fedopt.flower, fedopt.flower.uplink\n"
            "assert 'flwr' not in sys.modules, 'flwr imported'\n"
            "sys.modules['flwr'] = None\n"  # as if Flower were not installed
            "try:\n    fedopt.flower.AirCompStrategy\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.startswith(MissingDependencyError.__name__)
    assert 'pip install "fedopt[flower]"' in out
