"""Gap models (spec 03): the AirFL-LoRA terms of §1 against their closed forms and the
monotonicity claims of §5, the vectorized = scalar contract, measured spectra (§4), and the
factor-aggregation error of §2 by its algebraic identity and by Monte-Carlo."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from conftest import make_instance
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.channel import draw_channel
from fedopt.errors import FedOptError, InvalidArgumentError
from fedopt.gap_models import (
    TERM_NAMES,
    AirFLGap,
    GapConstants,
    RankTruncation,
    factor_covariance,
    factor_error_terms,
)
from fedopt.instance import Instance
from fedopt.solvers.planner import beamformers_for, evaluate

# two layer groups of different shapes (max ranks 16 and 8) and non-default constants, so that
# no closed form below can pass by a coincidence of ones
LAYERS = [{"name": "q", "d_out": 16, "d_in": 24, "count": 3},
          {"name": "v", "d_out": 40, "d_in": 8, "count": 2}]
LEARNING = {"smoothness": 8.0, "pl_constant": 0.1, "step_size": 0.1, "grad_variance": 2.5,
            "initial_gap": 3.0, "update_scale": 1.7, "batch_size": 8, "rounds": 50,
            "spectrum_s1": 2.0, "spectrum_alpha": 0.7}


_variant = make_instance


def _closed_form_terms(rank: int, streams: int, mse_sum: float, *, beta: float = 0.0,
                       rounds: int = 50) -> dict[str, float]:
    """The four terms of spec 03 §1 written out for LAYERS, LEARNING and ``small`` (K = 3,
    M = 4): q(r) = 216 r, v(r) = 1.7 r^(−β), noise gain L_s λ / (2μ) = 4."""
    ls, mu, lam, var, delta0, v, b, k, m = 8.0, 0.1, 0.1, 2.5, 3.0, 1.7, 8, 3, 4
    gain = ls * lam / (2 * mu)
    q = rank * (3 * (16 + 24) + 2 * (40 + 8))
    tail = sum(layer["count"] * (2.0 * i ** -0.7) ** 2 for layer in LAYERS
               for i in range(rank + 1, min(layer["d_out"], layer["d_in"]) + 1))
    return {"contraction": delta0 * (1 - lam * mu) ** rounds,
            "sampling_noise": gain * var / (k * b),
            "aggregation_distortion": gain * (v * rank ** -beta) ** 2 * q / (streams * m)
            * mse_sum,
            "rank_truncation": ls / 2 * tail}


@pytest.fixture
def inst(small_dict) -> Instance:
    """The ``small`` preset (K = 3, N_r = 4, N_t = 2, M = 4) with LAYERS and LEARNING."""
    return _variant(small_dict, lora={"layers": LAYERS, "ranks": [1, 2, 4, 8]},
                    learning=LEARNING, constraints=None)


@pytest.fixture
def timed(inst) -> Instance:
    """``inst`` under a wall-clock budget: T = ⌊T_total / T_round(r, L)⌋ (about 90..140)."""
    return inst.replace(constraints={"total_time_s": 2.5})


# ------------------------------------------------------------------------------------------
# §1 / §5: signs and monotonicity
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [False, True])
def test_every_term_is_non_negative_and_finite(inst, timed, budget):
    gap = AirFLGap(timed if budget else inst)
    ranks = np.arange(1, 17)[:, None, None]  # every rank up to the largest layer's
    streams = np.array([1, 2])[None, :, None]
    mse = np.array([0.0, 1e-9, 1e-3, 10.0])[None, None, :]
    terms = gap.terms(ranks, streams, mse)
    assert tuple(terms) == TERM_NAMES
    for name, value in terms.items():
        assert value.shape == (16, 2, 4), name
        assert np.all(np.isfinite(value)) and np.all(value >= 0), name
    # the total against the closed form of every term (not against its own sum of terms)
    total = gap.total(ranks, streams, mse)
    for i, r in enumerate(ranks[:, 0, 0]):
        for j, s in enumerate(streams[0, :, 0]):
            rounds = (math.floor(2.5 / float(timed.aircomp_latency_s(int(r), int(s))))
                      if budget else 50)
            for n, mse_sum in enumerate(mse[0, 0]):
                want = sum(_closed_form_terms(int(r), int(s), float(mse_sum),
                                              rounds=rounds).values())
                # rel 1e-13: ≤ 30 positive terms summed in another order, and pow
                assert total[i, j, n] == pytest.approx(want, rel=1e-13), (r, s, mse_sum)


def test_rank_truncation_falls_strictly_until_the_spectrum_ends(inst):
    gap = AirFLGap(inst)
    ranks = np.arange(0, 21)
    eps = gap.terms(ranks, 1, 0.0)["rank_truncation"]
    # power law with s_i > 0 up to the largest layer's min(d, k) = 16: strictly decreasing there
    assert np.all(np.diff(eps[:17]) < 0)
    assert eps[16] == 0.0 and np.all(eps[16:] == 0.0)  # nothing left beyond every layer's rank
    # a measured spectrum with a zero tail: strictly decreasing while s_{r+1} > 0, then flat
    measured = AirFLGap(inst, truncation=RankTruncation([5.0, 3.0, 2.0, 1.0, 0.5, 0, 0, 0]))
    eps = measured.terms(ranks, 1, 0.0)["rank_truncation"]
    assert np.all(np.diff(eps[:6]) < 0)
    assert np.all(eps[5:] == 0.0)


def test_distortion_is_linear_in_rank_and_in_mse_sum(inst):
    gap = AirFLGap(inst)
    ranks = np.arange(1, 9)
    mse = np.array([1e-4, 3e-4, 2e-3])
    d = gap.terms(ranks[:, None], 2, mse[None, :])["aggregation_distortion"]
    assert np.all(np.diff(d, axis=0) > 0) and np.all(np.diff(d, axis=1) > 0)
    # D ∝ q(r) Σ MSE with q(r) ∝ r: D / (r Σ MSE) is one number (rel 1e-14: a few roundings)
    ratio = d / (ranks[:, None] * mse[None, :])
    assert_allclose(ratio, ratio[0, 0], rtol=1e-14)
    # and it does not depend on the number of rounds or on the latency coupling
    assert_array_equal(gap.terms(ranks, 2, 1e-3)["aggregation_distortion"],
                       AirFLGap(inst, total_time_s=2.5).terms(ranks, 2, 1e-3)[
                           "aggregation_distortion"])


@pytest.mark.parametrize("streams", [1, 2])
def test_distortion_rises_with_noise_power_and_falls_with_transmit_power(inst, streams):
    """D ∝ Σ_m MSE_m ∝ σ²/P on a fixed channel: checked with the beamformers held fixed
    (exact scaling) and with beamformers re-solved at each power (still ∝ 1/P: the optimal
    receive beamformers do not change when every P_k is scaled by the same factor)."""
    ch = draw_channel(inst, seed=5)
    a = beamformers_for(inst, streams, channel=ch, seed=5)
    rank = 4

    def distortion(instance, beamformers=a):
        return evaluate(instance, rank, streams, channel=ch, seed=5, beamformers=beamformers
                        ).gap_terms["aggregation_distortion"]

    base = distortion(inst)
    noisy = inst.replace(server={"n_rx": 4, "noise_figure_db": 12.0})  # +3 dB over the default 9
    # rel 1e-12: σ² enters the objective once; the rest is rounding of the same arithmetic
    assert distortion(noisy) == pytest.approx(
        base * noisy.noise_power_w / inst.noise_power_w, rel=1e-12)
    assert distortion(noisy) > base

    p_dbm = np.asarray(inst.devices.p_max_dbm)
    fixed, solved = [], []
    for offset in (-10.0, 0.0, 10.0, 20.0):
        louder = inst.with_devices(p_max_dbm=list(p_dbm + offset))
        fixed.append(distortion(louder))
        solved.append(distortion(louder, beamformers=None))
        scale = float(inst.power_w[0] / louder.power_w[0])  # P_old / P_new, the same for all k
        assert fixed[-1] == pytest.approx(base * scale, rel=1e-12)  # rel 1e-12: as above
    assert np.all(np.diff(fixed) < 0) and np.all(np.diff(solved) < 0)
    # rel 1e-9: the manifold solver works on data normalized by the power, so a common power
    # scale changes its iterates by rounding only (measured ratios equal 10 to ~1e-15)
    assert_allclose(np.asarray(solved[:-1]) / np.asarray(solved[1:]), 10.0, rtol=1e-9)


def test_contraction_is_constant_in_rank_with_fixed_rounds(inst):
    c = GapConstants.from_learning(inst.learning)
    ranks = np.arange(1, 9)
    for streams in (1, 2):
        con = AirFLGap(inst).terms(ranks, streams, 1e-3)["contraction"]
        assert_array_equal(con, con[0])
        # rel 1e-14: Python's float power against numpy's
        assert con[0] == pytest.approx(c.initial_gap * (1 - c.step_size * c.pl_constant)
                                       ** c.rounds, rel=1e-14)


def test_contraction_rises_with_rank_under_a_wall_clock_budget(timed):
    gap = AirFLGap(timed)
    c = gap.constants
    ranks = np.arange(1, 17)
    for streams in (1, 2):
        t_round = timed.aircomp_latency_s(ranks, streams)
        rounds = np.floor(2.5 / t_round)
        assert_array_equal(gap.rounds(ranks, streams), rounds)
        assert rounds[0] > rounds[-1]  # more airtime per round → fewer rounds fit
        con = gap.terms(ranks, streams, 1e-3)["contraction"]
        assert np.all(np.diff(con) >= 0) and con[-1] > con[0]
        want = [c.initial_gap * (1 - c.step_size * c.pl_constant) ** int(t) for t in rounds]
        assert_allclose(con, want, rtol=1e-14)  # rel 1e-14: float vs integer exponent in pow


def test_sampling_noise_closed_form(inst, timed):
    ls, mu, lam, var, b = 8.0, 0.1, 0.1, 2.5, 8  # LEARNING
    want = (ls * lam / (2 * mu)) * var / (3 * b)  # K = 3 devices
    for instance in (inst, timed):
        noise = AirFLGap(instance).terms(np.arange(1, 9), 2, 1e-3)["sampling_noise"]
        assert_allclose(noise, want, rtol=1e-15)  # rel 1e-15: other association of products
        assert np.all(noise == noise[0])  # independent of the rank


# ------------------------------------------------------------------------------------------
# §1: closed forms
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("factors, per_rank", [("AB", 3 * (16 + 24) + 2 * (40 + 8)),
                                                ("B", 3 * 16 + 2 * 40), ("A", 3 * 24 + 2 * 8)])
def test_distortion_closed_form(small_dict, factors, per_rank):
    instance = _variant(small_dict, lora={"layers": LAYERS, "ranks": [1, 2, 4, 8],
                                          "factors": factors}, learning=LEARNING)
    gap = AirFLGap(instance)
    ls, mu, lam, v, m = 8.0, 0.1, 0.1, 1.7, 4
    for rank in (1, 3, 8):
        for streams in (1, 2):
            mse_sum = 7.3e-4
            want = (ls * lam / (2 * mu)) * v**2 * (rank * per_rank) / (streams * m) * mse_sum
            got = gap.terms(rank, streams, mse_sum)["aggregation_distortion"]
            assert float(got) == pytest.approx(want, rel=1e-14)  # rel 1e-14: order of products


# β ≠ 0: v(r) = v r^(−β) (``learning.update_scale_exponent``). By hand, with q(r) = 216 r,
# M = 4, v² = 2.89 and noise gain 4: D = 4 · 2.89 r^(−2β) · 216 r / (4 L) · Σ MSE
#                                      = 624.24 · r^(1 − 2β) / L · Σ MSE.
@pytest.mark.parametrize("beta, rank, streams, coefficient", [
    (0.5, 1, 1, 624.24), (0.5, 8, 1, 624.24), (0.5, 4, 2, 312.12),  # β = 1/2: D is rank-free
    (1.0, 4, 2, 78.03),  # 624.24 / 4 / 2: D falls like 1/r
    (0.25, 4, 1, 1248.48),  # 624.24 · √4
    (0.3, 8, 2, 312.12 * 2 ** 1.2),  # 624.24 · 8^0.4 / 2
])
def test_distortion_closed_form_with_a_rank_dependent_update_scale(inst, beta, rank, streams,
                                                                   coefficient):
    mse_sum = 7.3e-4
    via_instance = AirFLGap(inst.replace(learning={**LEARNING, "update_scale_exponent": beta}))
    base = AirFLGap(inst)
    via_constants = AirFLGap(inst, constants=dataclasses.replace(
        base.constants, update_scale_exponent=beta))
    for gap in (via_instance, via_constants):
        assert gap.constants.update_scale_exponent == beta
        terms = gap.terms(rank, streams, mse_sum)
        # rel 1e-13: a handful of products and one non-integer power
        assert float(terms["aggregation_distortion"]) == pytest.approx(coefficient * mse_sum,
                                                                       rel=1e-13)
        # β enters the distortion only: the other terms are those of β = 0
        flat = base.terms(rank, streams, mse_sum)
        for name in ("contraction", "sampling_noise", "rank_truncation"):
            assert terms[name] == flat[name], name
        want = sum(_closed_form_terms(rank, streams, mse_sum, beta=beta).values())
        assert float(gap.total(rank, streams, mse_sum)) == pytest.approx(want, rel=1e-13)
    # and β = 0 is the plain constant-scale value 624.24 · r / L · Σ MSE
    assert float(base.terms(rank, streams, mse_sum)["aggregation_distortion"]) == \
        pytest.approx(624.24 * rank / streams * mse_sum, rel=1e-13)  # as above


def test_rank_truncation_power_law_closed_form(inst):
    gap = AirFLGap(inst)
    s1, alpha, ls = 2.0, 0.7, 8.0
    for rank in range(0, 18):
        want = 0.0
        for layer in LAYERS:
            for i in range(rank + 1, min(layer["d_out"], layer["d_in"]) + 1):
                want += layer["count"] * (s1 * i ** (-alpha)) ** 2
        want *= ls / 2
        got = float(gap.terms(rank, 1, 0.0)["rank_truncation"])
        # rel 1e-13 (abs 1e-15 at the zero tail): summation order of ≤ 16 positive terms
        assert got == pytest.approx(want, rel=1e-13, abs=1e-15), rank


@pytest.mark.parametrize("suffix", [".npz", ".json", ".txt"])
def test_measured_spectrum_file_round_trip(tmp_path, rng, inst, suffix):
    values = rng.uniform(0.0, 3.0, 12)  # unsorted, no short decimal forms
    path = tmp_path / f"spectrum{suffix}"
    if suffix == ".npz":
        np.savez(path, s=values)
    elif suffix == ".json":
        path.write_text(json.dumps(values.tolist()))
    else:
        np.savetxt(path, values)  # '%.18e' keeps every float64 bit
    trunc = RankTruncation.from_file(path)
    assert_array_equal(trunc.values, np.sort(values)[::-1])  # exact, sorted descending
    # the same profile as an instance's measured spectrum gives the same ε(r)
    measured = inst.replace(learning={**LEARNING, "spectrum_kind": "measured",
                                      "spectrum_values": values.tolist()})
    ranks = np.arange(0, 17)
    assert_array_equal(AirFLGap(inst, truncation=trunc).terms(ranks, 1, 0.0)["rank_truncation"],
                       AirFLGap(measured).terms(ranks, 1, 0.0)["rank_truncation"])


@pytest.mark.parametrize("values", [[], [[1.0, 2.0], [3.0, 4.0]], [1.0, -0.5], [1.0, np.nan],
                                    [np.inf], [1.0 + 1.0j], ["a"], {"s": 1.0}, 3.0])
def test_bad_spectrum_values_raise(values):
    with pytest.raises(InvalidArgumentError, match="spectrum"):
        RankTruncation(values)


@pytest.mark.parametrize("name, content", [
    ("s.json", '{"s": [1, 2]}'), ("s.json", "[1, -2]"), ("s.json", "[1, null]"),
    ("s.json", "not json"), ("s.json", "[]"), ("s.txt", "1 2 x"), ("s.txt", "nan"),
    ("s.npz", "garbage"), ("missing.npz", None), ("wrong_key.npz", "t"), ("complex.npz", "c"),
])
def test_bad_spectrum_files_raise(tmp_path, name, content):
    path = tmp_path / name
    if name == "wrong_key.npz":
        np.savez(path, t=np.ones(3))
    elif name == "complex.npz":
        np.savez(path, s=np.array([1.0 + 2.0j, 0.5]))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(InvalidArgumentError, match=r"spectrum") as info:
        RankTruncation.from_file(path)
    assert isinstance(info.value, FedOptError)
    assert path.name in str(info.value)  # names the file


# ------------------------------------------------------------------------------------------
# §5: vectorized = scalar
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total_time_s", [None, 1.3, 2.5, 3.7])
def test_vectorized_terms_equal_scalar_calls_exactly(inst, total_time_s):
    # several budgets: T takes dozens of distinct values, among them exponents where numpy's array
    # power and the scalar power differ in the last bit (so exactness is really exercised)
    gap = AirFLGap(inst, total_time_s=total_time_s)
    ranks = np.arange(1, 17)
    streams = np.array([1, 2])
    mse = np.array([2.7e-4, 9.1e-4])  # Σ_m MSE_m per stream count
    grid = gap.terms(ranks[:, None], streams[None, :], mse[None, :])
    totals = gap.total(ranks[:, None], streams[None, :], mse[None, :])
    by_rank = {L: gap.terms(ranks, int(L), float(s)) for L, s in zip(streams, mse, strict=True)}
    for i, r in enumerate(ranks):
        for j, (L, s) in enumerate(zip(streams, mse, strict=True)):
            one = gap.terms(int(r), int(L), float(s))
            for name in TERM_NAMES:
                assert grid[name][i, j] == one[name], (name, r, L)  # exact: same arithmetic
                assert by_rank[L][name][i] == one[name], (name, r, L)
            assert totals[i, j] == gap.total(int(r), int(L), float(s))


# ------------------------------------------------------------------------------------------
# §2: aggregation of separate factors
# ------------------------------------------------------------------------------------------
def _factors(rng, k=5, d=6, r=3, cols=4):
    b = rng.standard_normal((k, d, r))
    a = rng.standard_normal((k, r, cols))
    p = rng.dirichlet(np.ones(k))
    return b, a, p


def test_covariance_identity_to_machine_precision(rng):
    for k, d, r, cols in [(2, 3, 1, 2), (5, 6, 3, 4), (9, 20, 7, 11)]:
        b, a, p = _factors(rng, k, d, r, cols)
        b_bar, a_bar, c = factor_covariance(b, a, p)
        exact = sum(p[i] * b[i] @ a[i] for i in range(k))
        assert_allclose(b_bar, sum(p[i] * b[i] for i in range(k)), rtol=0, atol=1e-14)
        assert_allclose(a_bar, sum(p[i] * a[i] for i in range(k)), rtol=0, atol=1e-14)
        # machine precision: entries are O(1) sums of ≤ 9·7 products, so 1e-13 absolute
        assert_allclose(b_bar @ a_bar + c, exact, rtol=0, atol=1e-13)
        assert np.linalg.norm(c) > 1e-3  # the covariance term is really there


def _monte_carlo(samples: np.ndarray, formula: float) -> tuple[float, float]:
    """Ratio mean/formula and the standard error of the mean, relative to the formula."""
    return float(samples.mean() / formula), float(samples.std(ddof=1) / np.sqrt(samples.size)
                                                  / formula)


# 40 000 draws: the relative standard error of the mean measures 0.20–0.30 % over seeds (in the
# single-factor modes it is at most √(2/4)/√40 000 ≈ 0.35 %: a Gaussian quadratic form with
# ≥ 4 degrees of freedom); each test asserts SE < 0.4 % and a 4-standard-error tolerance,
# i.e. |mean/formula − 1| ≲ 1 %, never more than 1.6 %.
DRAWS = 40_000
MAX_SE = 4e-3


def test_factor_error_expectation_by_monte_carlo(rng):
    b, a, p = _factors(rng)
    d, r, cols = b.shape[1], b.shape[2], a.shape[2]
    sa2, sb2 = 0.3, 0.5
    terms = factor_error_terms(b, a, p, sa2, sb2)
    b_bar, a_bar, c = factor_covariance(b, a, p)
    assert terms["covariance"] == pytest.approx(np.sum(c**2), rel=1e-14)  # same sum, reordered
    assert terms["noise_product"] == pytest.approx(sa2 * sb2 * d * r * cols, rel=1e-15)
    formula = sum(terms.values())
    exact = np.einsum("k,kdr,krj->dj", p, b, a)
    n_b = rng.standard_normal((DRAWS, d, r)) * np.sqrt(sb2)
    n_a = rng.standard_normal((DRAWS, r, cols)) * np.sqrt(sa2)
    err = (b_bar + n_b) @ (a_bar + n_a) - exact
    ratio, se = _monte_carlo(np.sum(err**2, axis=(1, 2)), formula)
    assert se < MAX_SE
    assert abs(ratio - 1) < 4 * se, (ratio, se)  # 4 standard errors


@pytest.mark.parametrize("mode", ["A", "B"])
def test_single_factor_modes_by_monte_carlo(rng, mode):
    b, a, p = _factors(rng)
    d, r, cols = b.shape[1], b.shape[2], a.shape[2]
    sa2, sb2 = 0.3, 0.5
    if mode == "B":  # A frozen and shared, only B travels
        a = np.broadcast_to(a[0], a.shape).copy()
    else:  # B frozen and shared, only A travels
        b = np.broadcast_to(b[0], b.shape).copy()
    terms = factor_error_terms(b, a, p, sa2, sb2, factors=mode)
    assert terms["covariance"] == 0.0 and terms["noise_product"] == 0.0
    assert terms["noise_a" if mode == "B" else "noise_b"] == 0.0
    want = sb2 * d * np.sum(a[0] ** 2) if mode == "B" else sa2 * cols * np.sum(b[0] ** 2)
    formula = sum(terms.values())
    assert formula == pytest.approx(want, rel=1e-14)  # rel 1e-14: ‖Ā‖² of equal copies
    b_bar, a_bar, _ = factor_covariance(b, a, p)
    exact = np.einsum("k,kdr,krj->dj", p, b, a)
    if mode == "B":
        received = (b_bar + rng.standard_normal((DRAWS, d, r)) * np.sqrt(sb2)) @ a[0]
    else:
        received = b[0] @ (a_bar + rng.standard_normal((DRAWS, r, cols)) * np.sqrt(sa2))
    ratio, se = _monte_carlo(np.sum((received - exact) ** 2, axis=(1, 2)), formula)
    assert se < MAX_SE
    assert abs(ratio - 1) < 4 * se, (ratio, se)  # 4 standard errors


@pytest.mark.parametrize("p", [[0.5, 0.5, 0.5, 0.5, 0.5], [0.6, 0.6, -0.2, 0.0, 0.0],
                               [0.5, 0.5], [np.nan, 0.25, 0.25, 0.25, 0.25],
                               [0.2, 0.2, 0.2, 0.2, 0.19]])
def test_bad_weights_raise(rng, p):
    b, a, _ = _factors(rng)
    with pytest.raises(InvalidArgumentError, match="weights summing to 1"):
        factor_covariance(b, a, p)
    with pytest.raises(InvalidArgumentError, match="weights summing to 1"):
        factor_error_terms(b, a, p, 0.1, 0.1)


def test_bad_factor_mode_raises(rng):
    b, a, p = _factors(rng)
    with pytest.raises(InvalidArgumentError, match="factors"):
        factor_error_terms(b, a, p, 0.1, 0.1, factors="BA")


def test_constants_come_from_the_learning_section(inst):
    c = AirFLGap(inst).constants
    assert c == GapConstants.from_learning(inst.learning)
    assert (c.smoothness, c.pl_constant, c.step_size, c.grad_variance, c.initial_gap,
            c.update_scale, c.batch_size, c.rounds) == (8.0, 0.1, 0.1, 2.5, 3.0, 1.7, 8, 50)
    assert c.noise_gain == pytest.approx(8.0 * 0.1 / 0.2, rel=1e-15)  # one rounding
    assert c.contraction_factor == pytest.approx(0.99, rel=1e-15)  # one rounding
    assert math.isclose(AirFLGap(inst, total_time_s=2.5).rounds(4, 1),
                        math.floor(2.5 / inst.aircomp_latency_s(4, 1)))
