"""Local training and MIRA (fedopt.fl.algorithms.personal, spec 05 §3 ``mira``).

Oracles: the reductions of the graph step (a = 0 is local training; the complete graph with
ηλ·K = 1 gives every client the mean update, i.e. FedAvg with equal weights), the per-cluster
AirComp path against the delivered-updates path with σ² = 0, what the aggregator receives, and
the airtime of one slot per cluster.
"""

from __future__ import annotations

import numpy as np
import pytest
from fl_testing import (  # noqa: F401  (fixtures: _one_thread, fed, seed)
    _one_thread,
    aircomp_for,
    core,
    fed,
    loop_cfg,
    random_beams,
    seed,
    tiny_model,
)

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.fl.aggregators import IdealAggregator
from fedopt.fl.loop import run_federated


class Counting(IdealAggregator):
    def __init__(self):
        self.calls = 0

    def aggregate(self, updates, weights, round_index, rng):
        self.calls += 1
        return super().aggregate(updates, weights, round_index, rng)


def _own(tmp_path):
    with np.load(tmp_path / "checkpoint.npz") as z:
        return z["alg.own"]


def test_local_training_sends_nothing_and_keeps_own_models(fed, seed, tmp_path):
    agg = Counting()
    res = run_federated(tiny_model(fed, seed), fed, agg, loop_cfg(seed, rounds=2,
                                                                  algorithm="local"),
                        out_dir=tmp_path)
    assert agg.calls == 0 and res.summary["payload_reals"] == 0
    assert all(r["airtime_s"] == 0.0 for r in res.history)
    own = _own(tmp_path)
    assert own.shape[0] == fed.n_clients and not np.allclose(own[0], own[1])


def test_mira_with_zero_step_is_local_training(fed, seed, tmp_path):
    runs = {}
    for alg in ("local", "mira"):
        out = tmp_path / alg
        res = run_federated(tiny_model(fed, seed), fed, IdealAggregator(),
                            loop_cfg(seed, rounds=3, algorithm=alg, mira_step=0.0,
                                     mira_graph="complete"), out_dir=out)
        runs[alg] = (res, _own(out))
    np.testing.assert_array_equal(runs["mira"][1], runs["local"][1])
    assert [r["eval_loss"] for r in runs["mira"][0].history] == \
        [r["eval_loss"] for r in runs["local"][0].history]


def test_complete_graph_with_step_one_over_k_is_fedavg(fed, seed, tmp_path):
    k = fed.n_clients
    phi = np.ones(k)  # MIRA's graph weighs clients equally: compare with equal-weight FedAvg
    mira = run_federated(tiny_model(fed, seed), fed, IdealAggregator(),
                         loop_cfg(seed, rounds=3, algorithm="mira", mira_graph="complete",
                                  mira_step=1.0 / k), weights=phi, out_dir=tmp_path)
    fedavg = run_federated(tiny_model(fed, seed), fed, IdealAggregator(),
                           loop_cfg(seed, rounds=3), weights=phi)
    own = _own(tmp_path)
    # every client holds FedAvg's model; the sums differ in order only (float64 rounding,
    # then float32 training from the same point: the drift stays ~1e-7 over three rounds)
    for row in own:
        np.testing.assert_allclose(row, fedavg.theta, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mira.theta, fedavg.theta, rtol=0, atol=1e-6)


def test_per_cluster_aircomp_equals_delivered_updates_without_noise(fed, seed, small_instance,
                                                                     rng, tmp_path):
    graph = [[0, 1, 0], [1, 0, 0], [0, 0, 0]]  # clusters {0, 1} and {2}
    cfg = loop_cfg(seed, rounds=2, algorithm="mira", mira_graph=graph, mira_step=0.5)
    beams = random_beams(rng, small_instance)
    air = aircomp_for(small_instance, seed, beams, 0.0, symbol_time_s=1e-4)
    res_air = run_federated(tiny_model(fed, seed), fed, air, cfg, out_dir=tmp_path / "air")
    res_ideal = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg,
                              out_dir=tmp_path / "ideal")
    # σ² = 0: ZF inverts each slot's channel up to float rounding
    np.testing.assert_allclose(_own(tmp_path / "air"), _own(tmp_path / "ideal"), rtol=0,
                               atol=1e-7)
    # one slot per cluster: the airtime is the two slots' sum
    single = aircomp_for(small_instance, seed, beams, 0.0, symbol_time_s=1e-4)
    one = single.aggregate(np.ones((3, res_air.summary["payload_reals"])), np.ones(3), 0,
                           np.random.default_rng(0))
    assert res_air.history[0]["airtime_s"] == pytest.approx(2 * one.airtime_s, rel=1e-12)
    assert res_ideal.history[0]["relative_aggregation_error"] == 0.0


def test_members_silence_the_other_devices(small_instance, rng):
    beams = random_beams(rng, small_instance)
    agg = aircomp_for(small_instance, 0, beams, 0.0, symbol_time_s=1e-4)
    g = rng.standard_normal((3, 40))
    res = agg.aggregate(g, np.ones(3), 0, rng, members=[0, 2])
    np.testing.assert_allclose(res.estimate, g[[0, 2]].mean(axis=0), rtol=0, atol=1e-9)
    assert res.energy_j[1] == 0.0 and res.energy_j[0] > 0 and res.energy_j[2] > 0
    with pytest.raises(InvalidArgumentError, match="members"):
        agg.aggregate(g, np.ones(3), 0, rng, members=[5])


def test_bad_graphs_are_named(fed, seed, small_instance, rng):
    beams = random_beams(rng, small_instance)
    air = aircomp_for(small_instance, seed, beams, 0.0)
    cases = [
        (IdealAggregator(), dict(mira_graph="task"), "task label"),         # pydoc split: none
        (IdealAggregator(), dict(mira_graph=[[0, 1], [1, 0]]), "2 x 2 matrix for 3"),
        (air, dict(mira_graph="similarity"), "union of cliques"),
        (air, dict(mira_graph=[[0, 0.5, 0], [0.5, 0, 0], [0, 0, 0]]), "union of cliques"),
    ]
    for agg, kw, match in cases:
        with pytest.raises((InvalidArgumentError, PlanError), match=match):
            run_federated(tiny_model(fed, seed), fed, agg,
                          loop_cfg(seed, rounds=1, algorithm="mira", **kw))
    with pytest.raises(InvalidArgumentError, match="mira_graph"):
        loop_cfg(seed, mira_graph=[[0, -1, 0], [-1, 0, 0], [0, 0, 0]])


def test_similarity_graph_runs_over_delivered_updates(fed, seed):
    res = run_federated(tiny_model(fed, seed), fed, IdealAggregator(),
                        loop_cfg(seed, rounds=2, algorithm="mira", mira_graph="similarity"))
    assert np.isfinite(res.history[-1]["eval_loss"])


@pytest.mark.parametrize("algorithm", ["local", "mira"])
def test_resume_is_bit_for_bit_with_own_models(fed, seed, tmp_path, algorithm):
    kw = dict(rounds=4, algorithm=algorithm, mira_graph="complete")
    straight = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw))
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw),
                  out_dir=tmp_path, callback=lambda rec: rec["round"] == 1)
    resumed = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw),
                            out_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert core(resumed.history) == core(straight.history)


def test_mira_over_digital_uses_the_delivered_updates(fed, seed, tmp_path):
    from fedopt.fl.aggregators import DigitalAggregator
    from fedopt.fl.lora import lora_modules

    model = tiny_model(fed, seed)
    layers = [(m.d_out, m.d_in) for m in lora_modules(model).values()]
    cfg = loop_cfg(seed, rounds=2, algorithm="mira", mira_graph="similarity")
    out = {}
    for name, kept in (("all", 2), ("one", 1)):
        agg = DigitalAggregator(layers, 2, lambda t, kept=kept: {"kept": [kept] * 3})
        run_federated(tiny_model(fed, seed), fed, agg, cfg, out_dir=tmp_path / name)
        out[name] = _own(tmp_path / name)
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=tmp_path / "id")
    # every component delivered: the ideal run exactly; one of two: the neighbours differ
    np.testing.assert_array_equal(out["all"], _own(tmp_path / "id"))
    assert not np.allclose(out["one"], out["all"])
