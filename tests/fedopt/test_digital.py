"""The digital (FDMA) uplink model (spec 01 §4): payload bits and kept components in closed form,
the SNR constant c_k from a hand-built channel, and the saturation of the rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fedopt.channel import Channel, draw_channel
from fedopt.digital import (
    channel_gain,
    kept_components,
    noise_psd_w_hz,
    payload_bits,
    snr_hz,
)
from fedopt.errors import ChannelFileError, InvalidArgumentError
from fedopt.link import rate_bps, saturation_rate_bps


def test_payload_bits_closed_form(small_instance):
    # small preset: two layer groups of two 32×32 weights, both factors travel, 16 bits
    q1 = 2 * (32 + 32) + 2 * (32 + 32)
    assert small_instance.lora.params_per_rank == q1
    assert payload_bits(small_instance, 8, 3) == 3 * q1 * 16 + 8
    kept = np.arange(0, 9)
    assert_array_equal(payload_bits(small_instance, 8, kept), kept * q1 * 16.0 + 8)
    ranks = np.array([[2], [4]])
    out = payload_bits(small_instance, ranks, np.array([1, 2]))
    assert_array_equal(out, np.array([[1, 2], [1, 2]]) * q1 * 16.0 + ranks)
    wide = small_instance.replace(lora={**small_instance.to_dict()["lora"], "bits_per_param": 32,
                                        "factors": "B"})
    assert payload_bits(wide, 4, 4) == 4 * (2 * 32 + 2 * 32) * 32 + 4
    for bad in (-1, 9, 2.5):
        with pytest.raises(InvalidArgumentError, match="kept"):
            payload_bits(small_instance, 8, bad)
    with pytest.raises(InvalidArgumentError, match="rank"):
        payload_bits(small_instance, 0, 0)


def test_kept_components_closed_form():
    # ρ = j/r (the online grid of spec 04 §5) keeps exactly r − j, whatever the round-off
    for r in range(1, 65):
        for j in range(r):
            assert kept_components(r, j / r) == r - j, (r, j)
    assert kept_components(3, 1 / 3) == 2 and kept_components(3, 2 / 3) == 1
    assert kept_components(6, 1 / 3) == 4 and kept_components(9, 2 / 3) == 3
    assert kept_components(10, 0.25) == 8            # ⌈7.5⌉
    assert kept_components(7, 0.999) == 1 and kept_components(7, 0.0) == 7
    out = kept_components(np.array([4, 8, 16]), np.array([[0.5], [0.3]]))
    assert_array_equal(out, [[2, 4, 8], [3, 6, 12]])  # ⌈2.8⌉, ⌈5.6⌉, ⌈11.2⌉
    assert isinstance(kept_components(4, 0.5), int)
    for bad in (1.0, -0.1, math.nan, 1.5):
        with pytest.raises(InvalidArgumentError, match="sparsity"):
            kept_components(4, bad)


def test_snr_from_a_hand_built_channel(small_instance):
    """H_{k,m} = α_{k,m} · (all-ones N_r × N_t) so ‖H_{k,m}‖_F² = α_{k,m}² N_r N_t and
    g_k = N_r · mean_m α_{k,m}²; c_k = p_k g_k / (N0 · NF) with N0 = −174 dBm/Hz, NF = 9 dB."""
    k, m, nr, nt = 3, 4, 4, 2
    alpha = np.array([[1e-4, 2e-4, 3e-4, 4e-4], [1e-5, 1e-5, 1e-5, 1e-5], [5e-6, 0, 0, 5e-6]])
    phase = np.exp(1j * np.arange(m))[None, :, None, None]
    h = alpha[:, :, None, None] * phase * np.ones((k, m, nr, nt))
    n0 = 10 ** ((-174 - 30) / 10) * 10 ** (9 / 10)
    # rel: a few roundings (σ² = N0 Δf NF of the instance, divided by Δf)
    assert noise_psd_w_hz(small_instance) == pytest.approx(n0, rel=1e-15)
    g = nr * np.mean(alpha**2, axis=1)
    p = 10 ** ((np.array([20.0, 23.0, 17.0]) - 30) / 10)
    # rel 1e-13: sums of a few squares and unit-modulus phases, rounding only
    assert_allclose(channel_gain(small_instance, h), g, rtol=1e-13)
    assert_allclose(snr_hz(small_instance, h), p * g / n0, rtol=1e-13)
    assert_array_equal(snr_hz(small_instance, Channel(h)), snr_hz(small_instance, h))
    with pytest.raises(ChannelFileError, match="axis 1"):
        snr_hz(small_instance, h[:, :2])


def test_rayleigh_gain_is_the_receive_array_gain(default_instance):
    """E[g_k] = N_r β_k for i.i.d. Rayleigh fading (no transmit-side gain)."""
    ratios = [channel_gain(default_instance, draw_channel(default_instance, seed=3, round=t))
              / default_instance.path_loss for t in range(5)]
    # averaging over subcarriers leaves Σ_ℓ |h_ℓ|² per antenna pair (2.7 effective taps), so
    # each g_k/β_k has std ≈ 7.7 % (measured) and the mean of 100 of them ≈ 0.8 %: 3 % is 4σ
    assert np.mean(ratios) == pytest.approx(default_instance.n_rx, rel=0.03)


def test_rate_approaches_saturation_as_bandwidth_grows(default_instance):
    c = snr_hz(default_instance, draw_channel(default_instance, seed=0))
    sat = saturation_rate_bps(c)
    b = np.geomspace(1e3, 1e9, 7)[:, None] * c[None, :]
    gap = 1 - rate_bps(b, c) / sat
    assert np.all(np.diff(gap, axis=0) < 0) and np.all(gap > 0)
    assert np.all(gap[-1] < 1e-9)  # ≈ c / (2b) = 5e-10 at b = 1e9 c
