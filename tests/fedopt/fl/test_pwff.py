"""PWFF (fedopt.fl.algorithms.pwff, spec 05 §3 ``partial``, §5).

Oracles: what the aggregator receives (only the global adapters' entries), the server's local
entries (never changed), a reduction (β = κ = ρ = 0 and one local step: the global part moves
exactly as FedAvg's on the same model), the reward's direction (a large β raises the clients'
preferred reward mix on their own held-out text), and resume bit for bit with the private parts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fl_testing import (  # noqa: F401  (fixture _one_thread)
    TINY,
    Recorder,
    _one_thread,
    core,
    loop_cfg,
)

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import IdealAggregator
from fedopt.fl.algorithms.pwff import TASK_PREFERENCE, module_indices
from fedopt.fl.charmodel import CharTransformer
from fedopt.fl.loop import run_federated
from fedopt.fl.lora import apply_lora, flatten_lora, lora_modules
from fedopt.fl.tasks import make_task_data

ALL = ("q", "k", "v", "proj", "fc1", "fc2")


@pytest.fixture(scope="module")
def tasks():
    """Four clients, one per downstream task, 3 000 characters per task."""
    return make_task_data(4, max_chars_per_task=3000, seed=0)


def _model(data, seed, target=ALL):
    model = CharTransformer(data.vocab.size, **TINY, generator=torch.Generator().manual_seed(seed))
    apply_lora(model, 2, target=target, generator=torch.Generator().manual_seed(seed + 1))
    return model


def test_local_lora_never_leaves_the_device(tasks, tmp_path):
    model = _model(tasks, 3)
    mods = lora_modules(model)
    glob, loc = module_indices(mods, local=False), module_indices(mods, local=True)
    theta0 = flatten_lora(mods).double().numpy()
    rec = Recorder()
    res = run_federated(model, tasks, rec, loop_cfg(3, rounds=2, algorithm="pwff"),
                        out_dir=tmp_path)
    assert all(p.shape == (4, glob.size) for p in rec.seen)   # only the global adapters travel
    np.testing.assert_array_equal(res.theta[loc], theta0[loc])  # the server's local part: init
    with np.load(tmp_path / "checkpoint.npz") as z:
        private = z["alg.private"]
    assert private.shape == (4, loc.size) and not np.allclose(private[0], private[1])
    # per client: its own loss and both rewards in (0, 1)
    m = res.summary["client_metrics"]
    assert len(m) == 4 and all(0 < x["reward_prose"] < 1 and 0 < x["reward_structure"] < 1
                               for x in m)


def test_without_rewards_and_proximity_the_global_part_moves_as_fedavg(tasks):
    kw = dict(rounds=1, pwff_reward_weight=0.0, pwff_floor=0.0, pwff_proximity=0.0)
    pwff = run_federated(_model(tasks, 5), tasks, IdealAggregator(),
                         loop_cfg(5, algorithm="pwff", **kw))
    fedavg = run_federated(_model(tasks, 5), tasks, IdealAggregator(), loop_cfg(5, **kw))
    glob = module_indices(lora_modules(_model(tasks, 5)), local=False)
    # same start, same batches, one SGD step on the same loss: the same global update
    np.testing.assert_allclose(pwff.theta[glob], fedavg.theta[glob], rtol=0, atol=1e-7)


def test_the_reward_term_raises_the_preferred_reward(tasks):
    scores = {}
    for beta in (0.0, 20.0):
        res = run_federated(_model(tasks, 7), tasks, IdealAggregator(),
                            loop_cfg(7, rounds=3, algorithm="pwff", pwff_reward_weight=beta,
                                     pwff_floor=0.0))
        w = np.array([TASK_PREFERENCE[t] for t in tasks.client_tasks])
        m = res.summary["client_metrics"]
        scores[beta] = np.mean([wk * x["reward_prose"] + (1 - wk) * x["reward_structure"]
                                for wk, x in zip(w, m, strict=True)])
    assert scores[20.0] > scores[0.0]


def test_resume_is_bit_for_bit(tasks, tmp_path):
    kw = dict(rounds=3, algorithm="pwff")
    straight = run_federated(_model(tasks, 9), tasks, IdealAggregator(), loop_cfg(9, **kw))
    run_federated(_model(tasks, 9), tasks, IdealAggregator(), loop_cfg(9, **kw),
                  out_dir=tmp_path, callback=lambda rec: rec["round"] == 0)
    resumed = run_federated(_model(tasks, 9), tasks, IdealAggregator(), loop_cfg(9, **kw),
                            out_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert core(resumed.history) == core(straight.history)


def test_a_model_without_local_layers_is_refused(tasks):
    with pytest.raises(InvalidArgumentError, match="fc1, fc2"):
        run_federated(_model(tasks, 1, target=("q", "k", "v", "proj")), tasks,
                      IdealAggregator(), loop_cfg(1, rounds=1, algorithm="pwff"))


def test_the_floor_penalizes_a_reward_below_its_start(tasks):
    from fedopt.fl.data import sample_batch
    from fedopt.fl.loop import _prepare

    cfg = loop_cfg(2, rounds=1, algorithm="pwff", pwff_floor=3.0, pwff_proximity=0.0)
    run = _prepare(_model(tasks, 2), tasks, IdealAggregator(), cfg, None, 0.0)
    alg = run.algorithm
    xb, yb = sample_batch(tasks.clients[0].train, 4, run.seq_len, np.random.default_rng(0))
    x, y = torch.from_numpy(xb), torch.from_numpy(yb)
    anchor = [p.detach().clone() for p in alg._global_params]
    base, (_, r) = alg._loss(run, x, y, 0, None, anchor)
    # floors above both rewards by 0.05 and 0.02: the loss rises by κ (0.05 + 0.02) exactly
    above, _ = alg._loss(run, x, y, 0, r + torch.tensor([0.05, 0.02]), anchor)
    assert float((above - base).detach()) == pytest.approx(3.0 * 0.07, rel=1e-5)  # float32
    # floors below the rewards cost nothing
    below, _ = alg._loss(run, x, y, 0, r - 0.1, anchor)
    assert float(below.detach()) == pytest.approx(float(base.detach()), rel=1e-7)
