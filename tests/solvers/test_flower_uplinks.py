"""Uplinks for Flower planned from an instance (fedopt.solvers.flower), through the strategy.

The ``small`` preset (K = 3, M = 4 subcarriers, N_r = 4) serves three Flower clients; the
replies answer the strategy's own ``configure_train``. Oracles: Flower's FedAvg (noise-free
AirComp), the plan's own beamformers and the instance's channel draws, a brute-force SOFT
selection and TSFA's decisions replayed on their own (digital).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from fedopt.channel import draw_channel  # noqa: E402
from fedopt.errors import InvalidArgumentError, PlanError  # noqa: E402
from fedopt.flower import AirCompStrategy  # noqa: E402
from fedopt.instance import load_instance  # noqa: E402
from fedopt.solvers import solve  # noqa: E402
from fedopt.solvers.flower import aircomp_uplink, digital_uplink  # noqa: E402
from fedopt.solvers.validation.adapters import TSFADecisions  # noqa: E402

NODES = [31, 7, 19]
EXAMPLES = [100, 300, 200]


@pytest.fixture
def grid(monkeypatch):
    """A stand-in for Flower's Grid (it lists nodes), with the task identity Flower's runtime
    sets before a ServerApp builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)
    return SimpleNamespace(get_node_ids=lambda: list(NODES))


def train_round(strategy, server_round, theta, grid, rng, scale=0.05):
    """One round: configure_train, each node (by id) replies θ + scale·noise; the replies."""
    record = ArrayRecord({k: Array(v) for k, v in theta.items()})
    replies = []
    msgs = strategy.configure_train(server_round, record, ConfigRecord(), grid)
    for msg in sorted(msgs, key=lambda m: m.metadata.dst_node_id):  # FedAvg samples randomly
        node = msg.metadata.dst_node_id
        arrays = {k: Array(v + scale * rng.standard_normal(v.shape)) for k, v in theta.items()}
        replies.append(Message(RecordDict({
            "arrays": ArrayRecord(arrays),
            "metrics": MetricRecord({"num-examples": EXAMPLES[NODES.index(node)],
                                     "device": sorted(NODES).index(node)})}), reply_to=msg))
    return replies


def numpy_arrays(record):
    return {k: v.numpy() for k, v in record.items()}


def test_aircomp_uplink_follows_the_plan_and_the_channel_draws():
    """Random receive beamformers (``random-plan``): re-drawing them on round 0 would give
    others, so round 0 shows that the plan's own are used."""
    inst = load_instance("small")
    plan = solve(inst, "random-plan", seed=2).solution
    up = aircomp_uplink("small", seed=2, clients=3, method="random-plan")
    assert up.devices == 3 and up.kind == "aircomp"
    assert (up.info["rank"], up.info["streams"]) == (plan.rank, plan.streams)
    assert up.info["beamforming"] == plan.beamforming_method == "random"
    agg = up.aggregator
    np.testing.assert_array_equal(agg.H_for_round(1), draw_channel(inst, 2, round=1).H)
    assert agg.sigma2 == inst.noise_power_w
    assert agg.symbol_time_s == inst.symbol_time_s
    # round 0 uses the plan's beamformers (solved on that channel); round 1 draws new ones
    np.testing.assert_array_equal(agg.beamformers_for_round(0, agg.H_for_round(0)),
                                  plan.receive_beamformers)
    a1 = agg.beamformers_for_round(1, agg.H_for_round(1))
    assert a1.shape == plan.receive_beamformers.shape
    assert not np.allclose(a1, plan.receive_beamformers)
    # the default planner: AirFL-LoRA's rank and streams
    best = solve(inst, "airfl-lora", seed=2).solution
    assert aircomp_uplink(inst, seed=2).info["streams"] == best.streams


@pytest.mark.parametrize("mode", ["exact", "equivalent"])
def test_noise_free_uplink_equals_fedavg_over_rounds(grid, rng, mode):
    """σ² = 0 on the instance's channels, beamformers re-optimized each round: FedAvg."""
    strategy = AirCompStrategy(FedAvg(), uplink=aircomp_uplink("small", seed=0, mode=mode,
                                                                noise_power_w=0.0),
                               device_key="device")
    theta = {"w": 1.0 + rng.standard_normal((10, 9)), "b": rng.standard_normal(9)}
    for server_round in (1, 2):
        replies = train_round(strategy, server_round, theta, grid, rng)
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        want = numpy_arrays(FedAvg().aggregate_train(server_round, replies)[0])
        for key, value in want.items():
            # ZF on the instance's channels (path loss ~1e-9) inverts L × L Grams that are
            # well conditioned after normalization: ~1e-12 of |θ| ~ 1 (as the aggregator tests)
            np.testing.assert_allclose(arrays[key].numpy(), value, rtol=1e-10, atol=1e-12)
        assert metrics["uplink-error"] < 1e-20
        q = 99
        s = -(-q // (2 * strategy.uplink.info["streams"] * 4))  # M = 4 subcarriers
        assert metrics["uplink-symbols"] == s
        inst = load_instance("small")
        assert metrics["uplink-airtime-s"] == pytest.approx(s * inst.symbol_time_s, rel=1e-12)
        theta = numpy_arrays(arrays)


def test_plan_file_and_seed_reproduce_the_round(tmp_path, grid, rng):
    """A plan file is that plan: its (random) beamformers serve round 0, and the round equals
    the one of the plan solved here with the same seed."""
    inst = load_instance("small")
    path = tmp_path / "plan.json"
    plan = solve(inst, "random-plan", seed=1).solution
    plan.save(path)
    from_file = aircomp_uplink("small", seed=1, plan=path).aggregator
    np.testing.assert_array_equal(from_file.beamformers_for_round(0, from_file.H_for_round(0)),
                                  plan.receive_beamformers)
    theta = {"w": rng.standard_normal((4, 6))}

    def aggregate(**kw):
        strategy = AirCompStrategy(FedAvg(), uplink=aircomp_uplink("small", seed=1, **kw),
                                   device_key="device")
        replies = train_round(strategy, 1, theta, grid, np.random.default_rng(4))
        return strategy.aggregate_train(1, replies)

    (a, m), (b, n) = aggregate(method="random-plan"), aggregate(plan=path)
    np.testing.assert_array_equal(a["w"].numpy(), b["w"].numpy())
    assert m["uplink-error"] == n["uplink-error"] > 0


def test_mismatches_are_named():
    with pytest.raises(InvalidArgumentError, match=r"has 4 clients but instance 'small' has "
                                                   r"K = 3 devices"):
        aircomp_uplink("small", clients=4)
    inst = load_instance("small")
    with pytest.raises(PlanError, match="this uplink needs receive beamformers"):
        aircomp_uplink(inst, plan=solve(inst, "tsfa", seed=0).solution)
    with pytest.raises(PlanError, match="needs a bandwidth split"):
        digital_uplink(inst, plan=solve(inst, "airfl-lora", seed=0).solution)
    other = inst.replace(constraints={"latency_budget_s": 0.2})
    with pytest.raises(PlanError, match="the plan was made for instance"):
        aircomp_uplink(other, plan=solve(inst, "airfl-lora", seed=0).solution)


def _soft_oracle(deltas, phi, kept, layers, rank):
    """Brute force: per client and layer keep the m_k components (row i of ΔA, column i of
    ΔB) of largest ‖ΔB[:, i]‖ ‖ΔA[i]‖, zero the rest, average with φ."""
    out = {}
    for name in deltas[0]:
        out[name] = np.zeros_like(deltas[0][name])
    for d, w, m in zip(deltas, phi, kept, strict=True):
        for j in range(len(layers)):
            a, b = d[f"{j}.A"], d[f"{j}.B"]
            score = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=0)
            keep = sorted(range(rank), key=lambda i: (-score[i], i))[:m]
            mask = np.isin(np.arange(rank), keep)
            out[f"{j}.A"] += w * a * mask[:, None] / sum(phi)
            out[f"{j}.B"] += w * b * mask[None, :] / sum(phi)
    return out


def test_digital_uplink_sends_tsfas_soft_components(grid, rng):
    inst = load_instance("small").replace(constraints={"latency_budget_s": 0.1,
                                                       "avg_latency_budget_s": 0.045})
    plan = solve(inst, "tsfa", seed=0, rank=8, nominal_sparsity=0.5).solution
    up = digital_uplink(inst, plan=plan, seed=0, tsfa_v=1e-4)
    layers = [(32, 32)] * 4
    assert up.payload_shapes == [(8, 32), (32, 8)] * 4
    theta = {}
    for j in range(4):
        theta[f"{j}.A"], theta[f"{j}.B"] = rng.standard_normal((8, 32)), np.zeros((32, 8))
    strategy = AirCompStrategy(FedAvg(), uplink=up, device_key="device")
    decide = TSFADecisions(inst, 8, 0, V=1e-4)  # the oracle's own controller
    for server_round in (1, 2):
        replies = train_round(strategy, server_round, theta, grid, rng)
        arrays, metrics = strategy.aggregate_train(server_round, replies)
        d = decide(server_round - 1)
        order = [r.metadata.src_node_id for r in replies]
        dev = [sorted(NODES).index(n) for n in order]
        deltas = [None] * 3
        for r, k in zip(replies, dev, strict=True):
            got = numpy_arrays(next(iter(r.content.array_records.values())))
            deltas[k] = {n: got[n] - theta[n] for n in theta}
        want = _soft_oracle(deltas, EXAMPLES_BY_DEVICE, d["kept"], layers, 8)
        for name in theta:
            # the same masked products summed in another order: a few ulp of |θ| ~ 1
            np.testing.assert_allclose(arrays[name].numpy(), theta[name] + want[name],
                                       rtol=1e-12, atol=1e-14)
        assert metrics["uplink-latency-s"] == pytest.approx(d["latency_s"], rel=1e-12)
        assert metrics["uplink-airtime-s"] == pytest.approx(d["airtime_s"], rel=1e-12)
        assert metrics["uplink-energy-j"] == pytest.approx(float(np.sum(d["energy_j"])),
                                                           rel=1e-12)
        assert strategy.history[-1]["kept"] == list(d["kept"])
        theta = numpy_arrays(arrays)
    assert metrics["uplink-kept-fraction"] < 1 and metrics["uplink-error"] > 0  # round 2 drops
    with pytest.raises(InvalidArgumentError, match="the digital uplink sends LoRA factors of "
                                                   "rank 8"):
        strategy.aggregate_train(3, train_round(strategy, 3, {"w": np.zeros(5)}, grid, rng))


#: the example counts in device order (devices follow the sorted node ids 7, 19, 31)
EXAMPLES_BY_DEVICE = [EXAMPLES[NODES.index(n)] for n in sorted(NODES)]
