"""SophiaG (Liu et al. 2023) against closed forms: with h = 0 the first step is −lr·sign(g) (plus
decoupled weight decay); on a diagonal quadratic with h set to the true curvature and γ = 1 the
error shrinks by exactly lr per step while |e| > 1 and by the factor (1 − lr) after, whatever the
curvature; the Monte-Carlo mean of the GNB estimator is the exact Gauss–Newton diagonal (built
from Jacobians); sampling is seeded; the flat state round-trips bit for bit; bad input raises."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.sophia import (
    SOPHIA_DEFAULTS,
    SophiaG,
    gnb_hessian,
    sophia_direction,
    sophia_direction_np,
)

VOCAB = 5
TOKENS = torch.tensor([[0, 1, 1], [3, 0, 1]])  # tokens 2 and 4 unused: their embedding rows get 0


def _tiny_lm(rng: np.random.Generator, dtype=torch.float64) -> nn.Sequential:
    """Embedding(5, 3) then Linear(3, 5): logits (B, T, 5), weights drawn from ``rng``."""
    model = nn.Sequential(nn.Embedding(VOCAB, 3), nn.Linear(3, VOCAB)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=dtype))
    return model


def _exact_gn_diagonal(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(1/n) Σ_i diag(J_iᵀ (diag p_i − p_i p_iᵀ) J_i), with J_i the Jacobian of position i's
    logits built row by row from per-logit gradients; flat over the parameters in order."""
    params = list(model.parameters())
    logits = model(x).reshape(-1, VOCAB)
    probs = torch.softmax(logits.detach(), dim=-1)
    n = logits.shape[0]
    total = torch.zeros(sum(p.numel() for p in params), dtype=logits.dtype)
    for i in range(n):
        rows = []
        for a in range(VOCAB):
            grads = torch.autograd.grad(logits[i, a], params, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([torch.zeros(p.numel(), dtype=p.dtype) if g is None
                                   else g.reshape(-1) for p, g in zip(params, grads, strict=True)]))
        jac = torch.stack(rows)  # (V, P)
        curvature = torch.diag(probs[i]) - torch.outer(probs[i], probs[i])
        total += ((curvature @ jac) * jac).sum(dim=0)
    return total / n


def test_defaults_are_the_papers():
    assert SOPHIA_DEFAULTS == {"beta1": 0.965, "beta2": 0.99, "gamma": 0.01, "eps": 1e-12,
                               "tau": 10}


def test_first_step_with_zero_hessian_is_minus_lr_sign(rng):
    lr, wd = 0.1, 0.5
    p0 = [torch.tensor(rng.standard_normal(s)) for s in [(4, 3), (7,)]]
    g = [torch.tensor(rng.standard_normal(s)) for s in [(4, 3), (7,)]]
    params = [nn.Parameter(p.clone()) for p in p0]
    frozen = nn.Parameter(torch.tensor(rng.standard_normal(3)))  # no grad: must not move
    for p, gi in zip(params, g, strict=True):
        p.grad = gi.clone()
    opt = SophiaG([*params, frozen], lr=lr, weight_decay=wd)
    frozen0 = frozen.detach().clone()
    opt.step()
    for p, pi, gi in zip(params, p0, g, strict=True):
        # exact: h = 0 floors the denominator at ε = 1e-12 and |m| = 0.035 |g| ≫ ε, so the clip
        # gives ±1 exactly and p(1 − lr·wd) ∓ lr is the same pair of IEEE operations
        assert torch.equal(p.detach(), pi * (1 - lr * wd) - lr * torch.sign(gi))
        assert torch.equal(opt.state[p]["exp_avg"], (1 - 0.965) * gi)
        assert opt.state[p]["step"] == 1
    assert torch.equal(frozen.detach(), frozen0) and frozen not in opt.state


def _closed_form_error(e0: np.ndarray, lr: float, steps: int) -> np.ndarray:
    """e_t: |e| falls by lr per step while |e| > 1 (clipped), then e_t = e_k (1 − lr)^(t − k)."""
    out = np.empty((steps + 1, e0.size))
    for j, e in enumerate(e0):
        k = math.ceil((abs(e) - 1) / lr) if abs(e) > 1 else 0
        for t in range(steps + 1):
            if t <= k:
                out[t, j] = np.sign(e) * (abs(e) - t * lr)
            else:
                out[t, j] = np.sign(e) * (abs(e) - k * lr) * (1 - lr) ** (t - k)
    return out


def test_quadratic_with_true_hessian_is_newton_inside_the_clip(rng):
    d = torch.tensor([0.5, 1.1, 1.9, 2.6, 3.3, 4.0], dtype=torch.float64)  # distinct curvatures
    e0 = np.array([3.05, -2.37, 0.8, -0.4, 1.62, -0.93])  # (|e0| − 1)/lr never an integer
    c = torch.tensor(rng.standard_normal(6))
    lr, steps = 0.1, 60
    theta = nn.Parameter(c + torch.tensor(e0))
    opt = SophiaG([theta], lr=lr, beta1=0.0, beta2=0.0, gamma=1.0)
    opt.update_hessian([d])  # β2 = 0: h = d exactly
    assert torch.equal(opt.state[theta]["hessian"], d)
    errors = [e0]
    for _ in range(steps):
        theta.grad = d * (theta.detach() - c)  # ∇ ½ Σ d_i (θ_i − c_i)²
        opt.step()
        errors.append((theta.detach() - c).numpy())
    expected = _closed_form_error(e0, lr, steps)
    # both regimes occur: some coordinates start clipped, all end inside the Newton region
    assert (np.abs(e0) > 1).any() and (np.abs(e0) < 1).any() and (np.abs(expected[-1]) < 1).all()
    # atol 1e-12: each step adds a few ulp (|θ|, |c| ~ 1, so ~1e-16) over 60 steps, ~1e-14
    np.testing.assert_allclose(np.array(errors), expected, rtol=0, atol=1e-12)


def test_gnb_mean_is_the_exact_gauss_newton_diagonal(rng):
    model = _tiny_lm(rng)
    params = list(model.parameters())
    exact = _exact_gn_diagonal(model, TOKENS).numpy()
    gen = torch.Generator().manual_seed(7)
    draws = 4000
    samples = np.stack([torch.cat([e.reshape(-1) for e in gnb_hessian(model, params, TOKENS, gen)])
                        .numpy() for _ in range(draws)])
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / np.sqrt(draws)
    # 5 standard errors: the mean of 4000 i.i.d. draws is close to normal, so a correct estimator
    # misses by more than 5 se with probability ~6e-7 per entry (35 entries); the 1e-12 covers
    # the entries of unused tokens, exactly 0 with se = 0
    assert np.all(np.abs(mean - exact) <= 5 * se + 1e-12)
    nonzero = exact > 1e-9
    assert nonzero.sum() >= 20 and not nonzero[[6, 7, 8, 12, 13, 14]].any()  # rows 2, 4 of E
    # forgetting the factor n = 6 (2 × 3 positions) fails the same test on every nonzero entry
    n = TOKENS.numel()
    assert np.all(np.abs(mean / n - exact)[nonzero] > 5 * se[nonzero] / n + 1e-12)


def test_gnb_sampling_is_seeded_and_leaves_grad_alone(rng):
    model = _tiny_lm(rng)
    params = list(model.parameters())
    sentinels = [torch.full_like(p, 3.0) for p in params]
    for p, s in zip(params, sentinels, strict=True):
        p.grad = s
    a = gnb_hessian(model, params, TOKENS, torch.Generator().manual_seed(11))
    b = gnb_hessian(model, params, TOKENS, torch.Generator().manual_seed(11))
    c = gnb_hessian(model, params, TOKENS, torch.Generator().manual_seed(12))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert all(x.shape == p.shape and x.dtype == p.dtype for x, p in zip(a, params, strict=True))
    for p, s in zip(params, sentinels, strict=True):
        assert p.grad is s and torch.equal(s, torch.full_like(p, 3.0))
    fresh = _tiny_lm(rng)
    gnb_hessian(fresh, list(fresh.parameters()), TOKENS, torch.Generator().manual_seed(11))
    assert all(p.grad is None for p in fresh.parameters())
    with pytest.raises(InvalidArgumentError, match=r"^generator: got .*CPU torch\.Generator"):
        gnb_hessian(model, params, TOKENS, np.random.default_rng(0))


def _train(model, opt, gen, targets, steps, tau=3, start=0):
    """``steps`` SophiaG steps on CE(model(TOKENS), targets), a GNB refresh every ``tau``."""
    params = list(model.parameters())
    trace = []
    for t in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(TOKENS).reshape(-1, VOCAB), targets).backward()
        opt.step()
        if t % tau == tau - 1:
            opt.update_hessian(gnb_hessian(model, params, TOKENS, gen))
        trace.append([p.detach().clone() for p in params])
    return trace


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flat_state_round_trip_continues_bit_for_bit(rng, dtype):
    targets = torch.tensor(rng.integers(0, VOCAB, TOKENS.numel()))
    model_a = _tiny_lm(rng, dtype)
    kw = dict(lr=0.05, gamma=0.02, weight_decay=0.1)
    opt_a = SophiaG(model_a.parameters(), **kw)
    assert opt_a.flat_state()[2] == 0 and not opt_a.flat_state()[0].any()
    gen_a = torch.Generator().manual_seed(5)
    _train(model_a, opt_a, gen_a, targets, steps=7)
    m, h, step = opt_a.flat_state()
    total = sum(p.numel() for p in model_a.parameters())
    assert m.shape == h.shape == (total,) and m.dtype == h.dtype == np.float64 and step == 7
    # the state carries information (unused tokens' embedding rows stay 0: 6 entries)
    assert (m != 0).sum() == total - 6 and (h != 0).sum() == total - 6

    model_b = _tiny_lm(np.random.default_rng(99), dtype)  # other weights, then a's
    model_b.load_state_dict(model_a.state_dict())
    opt_b = SophiaG(model_b.parameters(), **kw)
    opt_b.load_flat_state(m, h, step)
    gen_b = torch.Generator()
    gen_b.set_state(gen_a.get_state())
    m_b, h_b, step_b = opt_b.flat_state()
    assert np.array_equal(m_b, m) and np.array_equal(h_b, h) and step_b == step
    trace_a = _train(model_a, opt_a, gen_a, targets, steps=8, start=7)
    trace_b = _train(model_b, opt_b, gen_b, targets, steps=8, start=7)
    for pa, pb in zip(trace_a, trace_b, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert opt_b.state[next(model_b.parameters())]["exp_avg"].dtype == dtype


def test_load_flat_state_rejects_wrong_lengths(rng):
    model = _tiny_lm(rng)
    opt = SophiaG(model.parameters(), lr=0.1)
    total = sum(p.numel() for p in model.parameters())
    good = np.zeros(total)
    with pytest.raises(InvalidArgumentError, match=rf"^m: got shape \({total - 1},\).*{total}"):
        opt.load_flat_state(good[:-1], good, 0)
    with pytest.raises(InvalidArgumentError, match=rf"^h: got shape \({total + 1},\).*{total}"):
        opt.load_flat_state(good, np.zeros(total + 1), 0)
    with pytest.raises(InvalidArgumentError, match=r"^step: got -1"):
        opt.load_flat_state(good, good, -1)


def test_direction_torch_and_numpy_agree_and_negative_h_hits_the_floor(rng):
    m = rng.standard_normal(200)
    h = rng.standard_normal(200)  # half negative, as after noisy aggregation
    h[:10] = 0.0
    m[10:15] = 0.0
    gamma, eps = 0.05, 1e-3
    got_np = sophia_direction_np(m, h, gamma, eps)
    got_t = sophia_direction(torch.tensor(m), torch.tensor(h), gamma, eps)
    # exact: max, divide and clip are each one correctly rounded IEEE operation in both libraries
    np.testing.assert_array_equal(got_t.numpy(), got_np)
    assert got_np.dtype == np.float64 and (np.abs(got_np) <= 1).all()
    assert (np.abs(got_np) < 1).any()  # and the clip does not bind everywhere
    floored = (h <= 0) & (m != 0)  # denominator ε = 1e-3 ≪ |m| here
    assert floored.sum() > 50 and np.all(np.abs(got_np[floored]) == 1)
    assert np.all(got_np[m == 0] == 0)
    with pytest.raises(InvalidArgumentError, match=r"^h: got shape"):
        sophia_direction(torch.zeros(3), torch.zeros(4), gamma, eps)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"gamma": -1.0}, "gamma"), ({"beta1": 1.0}, "beta1"), ({"lr": 0.0}, "lr"),
    ({"eps": 0.0}, "eps"), ({"beta2": -0.1}, "beta2"), ({"weight_decay": -1.0}, "weight_decay"),
    ({"lr": float("nan")}, "lr"),
])
def test_bad_hyperparameters_name_the_field(kwargs, field):
    p = nn.Parameter(torch.zeros(2))
    args = {"lr": 0.1, **kwargs}
    with pytest.raises(InvalidArgumentError, match=rf"^{field}: got {kwargs[field]!r}, must be"):
        SophiaG([p], **args)
    opt = SophiaG([p], lr=0.1)
    with pytest.raises(InvalidArgumentError, match=rf"^{field}: got"):  # group overrides too
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], **kwargs})
    with pytest.raises(InvalidArgumentError, match=r"^gamma: got -1\.0, must be a finite number"):
        sophia_direction(torch.zeros(2), torch.zeros(2), -1.0, 1e-12)


def test_update_hessian_rejects_wrong_count_and_shape():
    a, b = nn.Parameter(torch.zeros(2, 3)), nn.Parameter(torch.zeros(4))
    opt = SophiaG([a, b], lr=0.1, beta2=0.0)
    with pytest.raises(InvalidArgumentError, match=r"^estimates: got 1 tensors.*\(2\)"):
        opt.update_hessian([torch.ones(2, 3)])
    with pytest.raises(InvalidArgumentError, match=r"^estimates\[1\]: got \(5,\).*\(4,\)"):
        opt.update_hessian([torch.ones(2, 3), torch.ones(5)])
    assert not opt.state  # nothing was updated by the rejected calls
    opt.update_hessian([torch.ones(2, 3), torch.full((4,), 2.0)])
    assert torch.equal(opt.state[b]["hessian"], torch.full((4,), 2.0))
