"""The federated algorithms of the loop (fedopt.fl.algorithms, spec 05 §2–§4).

Oracles: what an aggregator receives (recorded), the factor a mode freezes or keeps private
(unchanged bit for bit), payload sizes against the instance's q(r) formula, the over-the-air
Sophia step recomputed by hand from the recorded (m_k, h_k), noise-free AirComp against the
ideal aggregator, and stopped-and-resumed runs against straight runs (per-client state).
"""

from __future__ import annotations

import numpy as np
import pytest
from fl_testing import (  # noqa: F401  (fixtures: _one_thread, fed, seed)
    Recorder,
    _one_thread,
    aircomp_for,
    core,
    fed,
    loop_cfg,
    random_beams,
    seed,
    tiny_model,
)

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import IdealAggregator
from fedopt.fl.algorithms import factor_indices
from fedopt.fl.loop import LoopConfig, run_federated
from fedopt.fl.lora import flatten_lora, lora_layer_spec, lora_modules
from fedopt.fl.sophia import sophia_direction_np
from fedopt.instance import Instance


def _indices(model):
    mods = lora_modules(model)
    return factor_indices(mods, "A"), factor_indices(mods, "B")


def test_factor_indices_pick_flatten_lora_of_each_factor(fed, seed):
    model = tiny_model(fed, seed)
    mods = lora_modules(model)
    theta = flatten_lora(mods).double().numpy()
    for f in ("A", "B", "AB"):
        np.testing.assert_array_equal(theta[factor_indices(mods, f)],
                                      flatten_lora(mods, f).double().numpy())


def test_ffa_trains_and_sends_only_b_with_a_frozen(fed, seed):
    model = tiny_model(fed, seed)
    ia, ib = _indices(model)
    theta0 = flatten_lora(lora_modules(model)).double().numpy()
    rec = Recorder()
    res = run_federated(model, fed, rec, loop_cfg(seed, rounds=3, algorithm="ffa"))
    assert all(p.shape == (fed.n_clients, ib.size) for p in rec.seen)
    assert res.summary["payload_reals"] == ib.size
    np.testing.assert_array_equal(res.theta[ia], theta0[ia])   # A0 unchanged, bit for bit
    assert np.linalg.norm(res.theta[ib]) > 0                    # B moved
    # the merged update B·A0 of every layer lies in span(B)·A0: A is still A0 in the model
    mods = lora_modules(model)
    np.testing.assert_array_equal(flatten_lora(mods, "A").double().numpy(), theta0[ia])


def test_ffa_equals_local_training_with_a_frozen_by_autograd(fed, seed):
    # the reference: FedAvg on a model whose A do not require grad (the optimizer skips them);
    # with E = 2 local steps a client that also moved A would take a different second B step
    ffa = run_federated(tiny_model(fed, seed), fed, IdealAggregator(),
                        loop_cfg(seed, rounds=2, local_steps=2, algorithm="ffa"))
    ref_model = tiny_model(fed, seed)
    for m in lora_modules(ref_model).values():
        m.A.requires_grad_(False)
    ref = run_federated(ref_model, fed, IdealAggregator(), loop_cfg(seed, rounds=2,
                                                                    local_steps=2))
    np.testing.assert_array_equal(ffa.theta, ref.theta)
    assert ffa.history[-1]["eval_loss"] == ref.history[-1]["eval_loss"]


def test_fedsa_keeps_b_on_the_devices(fed, seed):
    model = tiny_model(fed, seed)
    ia, ib = _indices(model)
    theta0 = flatten_lora(lora_modules(model)).double().numpy()
    rec = Recorder()
    res = run_federated(model, fed, rec, loop_cfg(seed, rounds=3, algorithm="fedsa"))
    # the aggregator only ever sees A's entries; the server's B is its initial value
    assert all(p.shape == (fed.n_clients, ia.size) for p in rec.seen)
    np.testing.assert_array_equal(res.theta[ib], theta0[ib])
    assert np.linalg.norm(res.theta[ia] - theta0[ia]) > 0
    # every client trained its own B: private, different between clients, never sent
    from fedopt.fl.algorithms import FedSALoRA

    assert FedSALoRA.personal and res.summary["payload_reals"] == ia.size
    assert len(res.summary["client_eval_loss"]) == fed.n_clients


def test_fedsa_private_b_differs_per_client_and_is_checkpointed(fed, seed, tmp_path):
    model = tiny_model(fed, seed)
    run_federated(model, fed, IdealAggregator(), loop_cfg(seed, rounds=2, algorithm="fedsa"),
                  out_dir=tmp_path)
    with np.load(tmp_path / "checkpoint.npz") as z:
        private = z["alg.private"]
    _, ib = _indices(model)
    assert private.shape == (fed.n_clients, ib.size)
    assert np.all(np.linalg.norm(private, axis=1) > 0)
    assert not np.allclose(private[0], private[1])


@pytest.mark.parametrize("algorithm, factors, blocks", [
    ("fedavg", "AB", 1), ("ffa", "B", 1), ("fedsa", "A", 1), ("ota-sophia", "AB", 2)])
def test_payload_equals_the_instance_q_of_r(fed, seed, small_instance, algorithm, factors,
                                            blocks):
    rank = 2
    model = tiny_model(fed, seed, rank=rank)
    layers = lora_layer_spec(lora_modules(model))
    d = small_instance.to_dict()
    d["lora"] = {"layers": layers, "ranks": [1, 2]}
    inst = Instance.from_dict(d).with_algorithm(algorithm)
    assert inst.lora.factors == factors and inst.payloads_per_round == blocks
    rec = Recorder()
    run_federated(model, fed, rec, loop_cfg(seed, rounds=1, algorithm=algorithm,
                                            **({"lr": 0.01} if blocks == 2 else {})))
    per_layer = {"AB": lambda x: x["d_out"] + x["d_in"], "A": lambda x: x["d_in"],
                 "B": lambda x: x["d_out"]}[factors]
    by_hand = blocks * rank * sum(x["count"] * per_layer(x) for x in layers)
    assert rec.seen[0].shape[1] == by_hand == inst.payload(rank)


def test_ota_sophia_is_the_clipped_step_on_exact_averages(fed, seed):
    model = tiny_model(fed, seed)
    theta0 = flatten_lora(lora_modules(model)).double().numpy()
    cfg = loop_cfg(seed, rounds=2, algorithm="ota-sophia", lr=0.02, weight_decay=0.1,
                   sophia_gamma=0.05)
    rec = Recorder()
    res = run_federated(model, fed, rec, cfg)
    phi = fed.weights / fed.weights.sum()
    q = theta0.size
    theta, thetas = theta0, [theta0]
    for payload in rec.seen:
        m_bar, h_bar = phi @ payload[:, :q], phi @ payload[:, q:]
        assert np.all(h_bar >= 0) and np.any(h_bar > 0)  # Gauss–Newton: h >= 0
        theta = theta * (1 - 0.02 * 0.1) - 0.02 * sophia_direction_np(m_bar, h_bar, 0.05,
                                                                       cfg.sophia_eps)
        thetas.append(theta)
    # float64 numpy on both sides; the ideal average is φ @ g / Σφ in another order
    np.testing.assert_allclose(res.theta, theta, rtol=0, atol=1e-13)
    # client 0's m: (1 − β1) g_0 at θ0, then β1 m_0 + (1 − β1) g_1 at θ1 (its EMA)
    m = np.zeros(q)
    for t in (0, 1):
        g = _gradient(tiny_model(fed, seed), thetas[t], fed, cfg, t)
        m = cfg.sophia_beta1 * m + (1 - cfg.sophia_beta1) * g
        np.testing.assert_allclose(rec.seen[t][0, :q], m, rtol=1e-5,
                                   atol=1e-9)  # float32 gradients, same batch, same order


def _gradient(model, theta, fed, cfg, t):
    """Client 0's gradient at θ on its round-t mini-batch, computed here."""
    import torch
    import torch.nn.functional as F

    from fedopt.fl.config import client_rng
    from fedopt.fl.data import sample_batch
    from fedopt.fl.lora import lora_parameters, unflatten_lora

    unflatten_lora(lora_modules(model), torch.as_tensor(theta, dtype=torch.float32))
    x, y = sample_batch(fed.clients[0].train, cfg.batch_size, model.seq_len,
                        client_rng(cfg.seed, t, 0))
    logits = model(torch.from_numpy(x))
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1))
    grads = torch.autograd.grad(loss, lora_parameters(lora_modules(model)))
    return torch.cat([g.reshape(-1) for g in grads]).double().numpy()


def test_ota_sophia_over_noise_free_aircomp_equals_ideal(fed, seed, small_instance, rng):
    inst = small_instance
    beams = random_beams(rng, inst)
    runs = []
    for agg in (IdealAggregator(), aircomp_for(inst, seed, beams, 0.0, blocks=2)):
        model = tiny_model(fed, seed)
        runs.append(run_federated(model, fed, agg, loop_cfg(seed, rounds=2, lr=0.02,
                                                            algorithm="ota-sophia")))
    # σ² = 0: ZF inverts the channel up to float rounding (relative ~1e-12 on each block);
    # the clip makes the step sign-like, so the θ difference stays at rounding level
    np.testing.assert_allclose(runs[1].theta, runs[0].theta, rtol=0, atol=1e-9)


@pytest.mark.parametrize("algorithm, optimizer", [
    ("fedavg", "sophia"), ("fedsa", "sgd"), ("ota-sophia", "sophia"), ("ffa", "adamw")])
def test_resume_is_bit_for_bit_with_per_client_state(fed, seed, tmp_path, algorithm,
                                                     optimizer):
    kw = dict(rounds=4, algorithm=algorithm, optimizer=optimizer, sophia_tau=2,
              lr=0.5 if optimizer == "sgd" else 0.01)
    straight = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw))
    stopped = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw),
                            out_dir=tmp_path, callback=lambda rec: rec["round"] == 1)
    assert not stopped.completed
    resumed = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, **kw),
                            out_dir=tmp_path, resume=True)
    np.testing.assert_array_equal(resumed.theta, straight.theta)
    assert core(resumed.history) == core(straight.history)


def test_fed_sophia_keeps_each_clients_state_across_rounds(fed, seed, tmp_path):
    # with τ = 3 the Hessian is refreshed at local steps 0 and 3 only: a client whose state
    # were reset every round would refresh every round, and its h would differ
    cfg = loop_cfg(seed, rounds=2, optimizer="sophia", lr=0.01, local_steps=2, sophia_tau=3)
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=tmp_path)
    with np.load(tmp_path / "checkpoint.npz") as z:
        steps, h = z["alg.sophia_step"], z["alg.sophia_h"]
    assert steps.tolist() == [4] * fed.n_clients
    # refreshes at steps 0 and 3: h = β2(1 − β2)ĥ0 + (1 − β2)ĥ3, both ĥ >= 0
    assert np.all(h >= 0) and np.all(h.max(axis=1) > 0)


def test_bad_loop_settings_are_named():
    for kw, field in [(dict(sophia_gamma=-0.1), "sophia_gamma"), (dict(sophia_tau=0),
                      "sophia_tau"), (dict(optimizer="lion"), "optimizer"),
                      (dict(algorithm="fedprox"), "algorithm"),
                      (dict(algorithm="ota-sophia", optimizer="adamw"), "optimizer"),
                      (dict(sophia_beta1=1.0), "sophia_beta1")]:
        with pytest.raises(InvalidArgumentError, match=field):
            LoopConfig(**kw)
    assert LoopConfig(algorithm="ota-sophia").optimizer == "sophia"


def test_aircomp_blocks_normalize_each_part_and_a_constant_block_arrives_exactly(
        small_instance, rng):
    inst = small_instance
    k, q = inst.n_devices, 64
    beams = random_beams(rng, inst)
    sigma2 = 1e3 * inst.noise_power_w
    m = rng.standard_normal((k, q)) * 1e-3            # m's scale
    h = 1e-8 + rng.random((k, q)) * 1e-8              # h's scale: five orders smaller
    g = np.hstack([m, h])
    phi = np.ones(k)
    rel = {}
    for blocks in (1, 2):
        agg = aircomp_for(inst, 0, beams, sigma2, mode="equivalent", blocks=blocks)
        errs = []
        for t in range(20):
            est = agg.aggregate(g, phi, 0, np.random.default_rng(t)).estimate
            errs.append(np.sum((est[q:] - h.mean(0)) ** 2) / np.sum(h.mean(0) ** 2))
        rel[blocks] = float(np.mean(errs))
    # one common normalization sizes the noise by m's spread and buries h; per block, h's
    # relative error is that of a unit-variance block (orders of magnitude smaller)
    assert rel[2] < 1e-4 * rel[1]
    # a block of identical entries (v = 0) is received exactly, whatever the noise
    flat = np.hstack([m, np.full((k, q), 0.25)])
    agg = aircomp_for(inst, 0, beams, sigma2, mode="exact", blocks=2)
    est = agg.aggregate(flat, phi, 0, np.random.default_rng(1)).estimate
    assert np.array_equal(est[q:], np.full(q, 0.25))
    zero = aircomp_for(inst, 0, beams, sigma2, mode="exact")
    assert np.array_equal(zero.aggregate(np.zeros((k, q)), phi, 0,
                                         np.random.default_rng(1)).estimate, np.zeros(q))


def test_fedsa_global_loss_is_the_mean_of_the_clients_own_models(fed, seed, tmp_path):
    import torch

    from fedopt.fl.lora import unflatten_lora
    from fedopt.fl.training import evaluate_loss

    model = tiny_model(fed, seed)
    cfg = loop_cfg(seed, rounds=2, algorithm="fedsa")
    res = run_federated(model, fed, IdealAggregator(), cfg, out_dir=tmp_path)
    with np.load(tmp_path / "checkpoint.npz") as z:
        private = z["alg.private"]
    _, ib = _indices(model)
    losses, own = [], []
    for k, client in enumerate(fed.clients):
        theta = res.theta.copy()
        theta[ib] = private[k]
        unflatten_lora(lora_modules(model), torch.as_tensor(theta, dtype=torch.float32))
        losses.append(evaluate_loss(model, fed.global_heldout, model.seq_len,
                                    max_batches=cfg.eval_batches).loss)
        own.append(evaluate_loss(model, client.heldout, model.seq_len,
                                 max_batches=cfg.eval_batches).loss)
    phi = fed.weights / fed.weights.sum()
    assert res.history[-1]["eval_loss"] == pytest.approx(float(phi @ np.array(losses)),
                                                         rel=1e-12)
    assert res.summary["client_eval_loss"] == pytest.approx(own, rel=1e-12)
    # and the server's model (B at its initial zeros) is not what was reported
    unflatten_lora(lora_modules(model), torch.as_tensor(res.theta, dtype=torch.float32))
    server = evaluate_loss(model, fed.global_heldout, model.seq_len,
                           max_batches=cfg.eval_batches).loss
    assert server != pytest.approx(res.history[-1]["eval_loss"], rel=1e-6)
