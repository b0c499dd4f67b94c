"""TSFA's offline stage (spec 04 §5): the rank against the budget, the Monte-Carlo estimate
against a recomputation round by round, its status (ESTIMATED) and its callback.

Oracles: the SOFT/TSFA bound (spec 03 §3), the min-max allocation of spec 04 §3 on the same
channel rounds, and the comparative statics claimed by the spec (the rank shrinks as the budget
tightens, sparsity lets a larger rank fit).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedopt.channel import draw_channel
from fedopt.digital import payload_bits, snr_hz
from fedopt.errors import InfeasibleError
from fedopt.solvers.bandwidth import allocate_min_latency
from fedopt.solvers.result import Status
from fedopt.solvers.tsfa import select_rank


def test_rank_shrinks_as_the_budget_tightens(small_instance):
    loose = select_rank(small_instance, avg_latency_budget_s=10.0, samples=20)
    sel = loose.solution
    assert loose.status is Status.ESTIMATED and sel.rank == max(small_instance.lora.ranks)
    # G(8) at no sparsification, written out (spec 03 §3): ``small`` has the default learning
    # constants, four adapted 32 × 32 weights and the power-law spectrum s_i = 1/i; c1 = 1,
    # c2 = 4, c3 = 1, G = 1 (TSFAConstants' defaults); K = 3
    lrn = small_instance.learning
    assert (lrn.smoothness, lrn.step_size, lrn.grad_variance, lrn.local_steps, lrn.initial_gap,
            lrn.rounds, lrn.spectrum_s1, lrn.spectrum_alpha) == (10.0, 0.05, 1.0, 1, 2.0, 200,
                                                                  1.0, 1.0)
    tail = 4 * sum(i**-2.0 for i in range(sel.rank + 1, 33))  # Σ over the dropped s_i²
    want = (2 * 2.0 / (0.05 * 200)  # optimization 2Δ0/(ηT)
            + 1.0 * 0.05 * 10.0 * 1.0 / 3  # noise c1 η L σ² / K
            + 4.0 * 0.05**2 * 10.0**2 * 1**2 * 1.0**2  # drift c2 η² L² E² G²
            + 1.0 * 10.0 / 2 * tail)  # rank c3 (L/2) Σ_l Σ_{i>r} s_i²; no sparsification
    # rel 1e-13: two dozen positive terms summed in another order
    assert loose.objective == pytest.approx(want, rel=1e-13)
    # expected latency grows with the rank (bigger payload, same channels)
    assert np.all(np.diff(sel.expected_latency_s) > 0)
    budgets = np.sort(np.concatenate([sel.expected_latency_s * 1.001, [10.0]]))[::-1]
    ranks = [select_rank(small_instance, avg_latency_budget_s=float(b), samples=20).solution.rank
             for b in budgets]
    assert ranks[0] == max(small_instance.lora.ranks)
    assert all(a >= b for a, b in zip(ranks, ranks[1:], strict=False))
    assert ranks[-1] == min(small_instance.lora.ranks)
    json.dumps(sel.to_dict())
    json.dumps(loose.options)


def test_sparsity_lets_a_larger_rank_fit(small_instance):
    lat = select_rank(small_instance, avg_latency_budget_s=10.0, samples=20).solution
    budget = float(lat.expected_latency_s[-2]) * 1.001  # rank 4 fits at ρ = 0, rank 8 does not
    dense = select_rank(small_instance, avg_latency_budget_s=budget, samples=20)
    sparse = select_rank(small_instance, avg_latency_budget_s=budget, samples=20,
                         nominal_sparsity=0.5)
    assert dense.solution.rank == 4 and sparse.solution.rank == 8


def test_infeasible_budget_names_the_smallest_expected_latency(small_instance):
    sel = select_rank(small_instance, avg_latency_budget_s=10.0, samples=20).solution
    smallest = float(sel.expected_latency_s.min())
    with pytest.raises(InfeasibleError) as err:
        select_rank(small_instance, avg_latency_budget_s=0.5 * smallest, samples=20)
    assert f"{smallest:.6g} s" in str(err.value) and "rank 1" in str(err.value)


def test_the_expected_latency_is_a_monte_carlo_estimate(small_instance):
    """Status ESTIMATED: E[τ*(r)] is the sample mean of the min-max latencies of the rounds
    drawn (recomputed here round by round) and its standard error std / √N is reported."""
    inst, n, seed = small_instance, 12, 3
    res = select_rank(inst, avg_latency_budget_s=10.0, samples=n, seed=seed)
    assert res.status is Status.ESTIMATED and res.success
    assert res.evaluations == n * len(inst.lora.ranks) and res.iterations == n
    sel = res.solution
    k = inst.n_devices
    snrs = [snr_hz(inst, draw_channel(inst, seed, round=t)) for t in range(n)]
    for i, r in enumerate(sel.ranks):
        s = payload_bits(inst, int(r), int(sel.kept[i]))
        lat = np.array([allocate_min_latency(np.full(k, s), inst.compute_time_s, c,
                                             inst.bandwidth_hz).objective for c in snrs])
        # rel 1e-12: the same allocations, summed in the same order
        assert sel.expected_latency_s[i] == pytest.approx(lat.mean(), rel=1e-12)
        # rel 1e-9: the same standard deviation; the fading makes it positive
        assert sel.latency_stderr_s[i] == pytest.approx(lat.std(ddof=1) / math.sqrt(n),
                                                        rel=1e-9)
        assert sel.latency_stderr_s[i] > 0
    assert "Monte-Carlo" in res.message


def test_the_callback_sees_every_rank_and_can_stop(small_instance):
    full = select_rank(small_instance, avg_latency_budget_s=10.0, samples=5)
    assert [rec["rank"] for rec in full.history] == [int(r) for r in full.solution.ranks]
    seen = []
    res = select_rank(small_instance, avg_latency_budget_s=10.0, samples=5,
                      callback=lambda rec: seen.append(rec) or len(seen) == 2)
    assert res.status is Status.STOPPED and "stopped by the callback" in res.message
    first = [int(r) for r in full.solution.ranks[:2]]
    assert [rec["rank"] for rec in seen] == first == [int(r) for r in res.solution.ranks]
    # the same estimates as the full run, and the answer among the ranks estimated
    assert seen[1]["expected_latency_s"] == full.solution.expected_latency_s[1]
    assert res.solution.rank == select_rank(small_instance, avg_latency_budget_s=10.0,
                                            samples=5, ranks=first).solution.rank
