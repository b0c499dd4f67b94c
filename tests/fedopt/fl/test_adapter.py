"""The initial distribution of the LoRA factor A (spec 05 §1, :mod:`fedopt.fl.adapter`).

A is Gaussian with standard deviation 1/r (``init="gaussian"``) or uniform on ±1/√d_in
(``init="kaiming"``, the ``nn.Linear`` / PEFT bound); B starts at zero. Checked over many
generator seeds against the exact distributions with a Kolmogorov–Smirnov test and the sample
moments, with tolerances from the sample size, and shown to reject the neighbouring wrong scales
(1/√r for 1/r, a doubled or squared Kaiming bound).

Sample sizes: 100 seeds × r rows × d_in = 64 columns, i.e. n = 6 400 r ≥ 12 800 draws per
rank for r ≥ 2 (the ranks where 1/√r ≠ 1/r).

- KS: accept at p > 1e-5. The entries are i.i.d. under the claimed law, so a correct init
  fails with probability 1e-5 per check on a re-seeded suite; a scale off by √2 (1/√r at r = 2)
  moves the KS statistic to ≈ 0.07 ≫ 1.63/√n ≈ 0.014, p < 1e-50.
- std within 3 %: the sample std of n i.i.d. normals has relative standard error 1/√(2n)
  ≤ 0.63 % at n ≥ 12 800, so 3 % is ≥ 4.8 standard errors (false alarm < 2e-6); for the
  uniform law the relative standard error of the std is √(0.8/(4n)) ≤ 0.4 % (kurtosis 1.8).
  The wrong scales are off by ≥ 41 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from fedopt.fl.adapter import LoRALinear

SEEDS = 100
D_IN, D_OUT = 64, 48
KS_ALPHA = 1e-5  # false-alarm rate per KS check of a correct init (module docstring)
STD_RTOL = 0.03  # ≥ 4.8 standard errors of the sample std at n ≥ 12 800 (module docstring)


def _draws(rng: np.random.Generator, rank: int, init: str) -> np.ndarray:
    """A's entries over SEEDS generators (seeded from the suite's ``rng``), flattened."""
    out = []
    for _ in range(SEEDS):
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        base = nn.Linear(D_IN, D_OUT, dtype=torch.float64)
        layer = LoRALinear(base, rank, init=init, generator=gen)
        assert layer.A.shape == (rank, D_IN) and layer.A.dtype == torch.float64
        assert torch.count_nonzero(layer.B) == 0
        out.append(layer.A.detach().numpy().ravel())
    return np.concatenate(out)


def _normal_ok(x: np.ndarray, std: float) -> tuple[bool, bool]:
    """(KS accepts N(0, std²), sample std within STD_RTOL of std)."""
    p = stats.kstest(x, "norm", args=(0.0, std)).pvalue
    return p > KS_ALPHA, abs(x.std() / std - 1.0) < STD_RTOL


@pytest.mark.parametrize("rank", [2, 4, 8, 16])
def test_gaussian_init_has_std_one_over_r(rng, rank):
    x = _draws(rng, rank, "gaussian")
    n = x.size
    assert n >= 12_800  # the sample size the tolerances are derived for
    assert _normal_ok(x, 1.0 / rank) == (True, True), (x.std() * rank, n)
    # mean 0: within 5 standard errors σ/√n
    assert abs(x.mean()) < 5.0 / (rank * math.sqrt(n))
    # the same draws at the scale 1/√r (what `randn / √r` would give from the same generator)
    # fail both checks: the tolerances discriminate the two scales
    wrong = x * rank / math.sqrt(rank)
    assert _normal_ok(wrong, 1.0 / rank) == (False, False)


def test_gaussian_init_at_rank_one_is_standard_normal(rng):
    # r = 1: std 1/r = 1 (where 1/√r coincides); n = 6 400 → relative SE 0.9 %, 3 % ≈ 3.4 SE
    x = _draws(rng, 1, "gaussian")
    assert stats.kstest(x, "norm").pvalue > KS_ALPHA
    assert abs(x.std() - 1.0) < STD_RTOL


@pytest.mark.parametrize("rank", [2, 8])
def test_kaiming_init_is_uniform_on_one_over_sqrt_d_in(rng, rank):
    x = _draws(rng, rank, "kaiming")
    n = x.size
    bound = 1.0 / math.sqrt(D_IN)
    assert np.all(np.abs(x) <= bound)
    # the support is filled: P(max |a| < (1 − 1e-3) b) = (1 − 1e-3)^n < e^{-12} at n ≥ 12 800
    assert np.abs(x).max() > (1 - 1e-3) * bound
    assert stats.kstest(x, "uniform", args=(-bound, 2 * bound)).pvalue > KS_ALPHA
    assert abs(x.std() * math.sqrt(3.0) / bound - 1.0) < STD_RTOL  # std of U(−b, b) = b/√3
    assert abs(x.mean()) < 5.0 * bound / math.sqrt(3.0 * n)  # 5 standard errors
    # independent of the rank: the bound is 1/√d_in, not 1/r or 1/√r
    # wrong bounds are rejected on the same draws: 2/√d_in (twice), 1/d_in (squared)
    for wrong in (2.0 * bound, bound**2):
        assert stats.kstest(x, "uniform", args=(-wrong, 2 * wrong)).pvalue < KS_ALPHA, wrong
    # and a shift to U(0, 2b) (a dropped centring) is rejected too
    assert stats.kstest(x + bound, "uniform", args=(-bound, 2 * bound)).pvalue < KS_ALPHA
