"""The Instance: derived quantities (spec 01) against hand-computed values, and its checks."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedopt.errors import InvalidInstanceError


def test_per_device_scalar_broadcasts_and_list_collapses(small_instance):
    inst = small_instance.with_devices(p_max_dbm=-10.0)  # negative dBm is legal: 0.1 mW
    assert inst.devices.p_max_dbm == (-10.0,) * 3
    assert_allclose(inst.power_w, 1e-4, rtol=1e-12)  # 10^((−10 − 30)/10) W; rounding
    assert inst.to_dict()["devices"]["p_max_dbm"] == -10.0
    same = small_instance.with_devices(p_max_dbm=[-10.0, -10.0, -10.0])
    assert same == inst


def test_instance_is_immutable(small_instance):
    with pytest.raises(dataclasses.FrozenInstanceError):
        small_instance.name = "x"  # type: ignore[misc]


def test_derived_quantities_of_default(default_instance):
    inst = default_instance
    # q(r) = r · 12 · (2304 + 768) = 36 864 r (spec 01 §2 example)
    assert inst.lora.params_per_rank == 36_864
    assert inst.payload(8) == 8 * 36_864
    assert inst.lora.max_rank == 768
    # S(r, L) = ⌈q / (2 L M)⌉ with M = 64
    assert inst.ofdm_symbols(1, 1) == 288
    assert inst.ofdm_symbols(3, 4) == math.ceil(3 * 36_864 / 512)
    assert np.array_equal(
        inst.ofdm_symbols(np.array([1, 2]), 3),
        [math.ceil(36_864 / 384), math.ceil(2 * 36_864 / 384)],
    )
    # T_sym = 1.07 / 30 kHz; σ² = −174 dBm/Hz + 10 log10(30 kHz) + 9 dB NF
    assert inst.symbol_time_s == pytest.approx(1.07 / 30e3, rel=1e-15)  # one division
    sigma2_dbm = -174 + 10 * math.log10(30e3) + 9
    assert inst.noise_power_w == pytest.approx(10 ** ((sigma2_dbm - 30) / 10), rel=1e-12)
    # 3GPP UMa: PL = 128.1 + 37.6 log10(d / km)
    d = np.asarray(inst.devices.distance_m)
    assert_allclose(inst.path_loss_db, 128.1 + 37.6 * np.log10(d / 1000), rtol=1e-14)
    assert_allclose(inst.path_loss * 10 ** (inst.path_loss_db / 10), 1.0, rtol=1e-12)
    dsz = np.asarray(inst.devices.dataset_size)
    assert_allclose(inst.weights, dsz / dsz.sum(), rtol=1e-15)  # φ_k = D_k / Σ D
    assert_allclose(inst.power_per_subcarrier_w * 64, 10 ** ((23 - 30) / 10), rtol=1e-12)
    assert inst.bandwidth_hz == 20e6  # constraints.bandwidth_hz of the preset (digital uplink)
    no_bw = inst.to_dict()
    del no_bw["constraints"]["bandwidth_hz"]
    assert type(inst).from_dict(no_bw).bandwidth_hz == 64 * 30e3  # default: M · Δf
    assert inst.aircomp.streams == (1, 2, 3, 4)
    # T_cmp = E · b · FLOPs/sample / speed = 16 · 1e10 / 1e12
    assert_allclose(inst.compute_time_s, 0.16, rtol=1e-12)
    assert inst.aircomp_latency_s(1, 1) == pytest.approx(0.16 + 288 * 1.07 / 30e3, rel=1e-12)


def test_other_path_loss_models(small_instance, instance_builder):
    umi = instance_builder(small_instance, channel={"path_loss": "38.901-umi", "carrier_hz": 3.5e9})
    d = np.asarray(small_instance.devices.distance_m)
    # rounding of a few logs
    assert_allclose(umi.path_loss_db, 32.4 + 21 * np.log10(d) + 20 * np.log10(3.5), rtol=1e-13)
    fs = instance_builder(small_instance, channel={"path_loss": "free-space", "carrier_hz": 1e9})
    assert_allclose(fs.path_loss_db, 20 * np.log10(4 * np.pi * d * 1e9 / 299_792_458.0), rtol=1e-13)


def test_validate_rank_and_streams_messages(small_instance):
    assert small_instance.validate_rank(32) == 32
    assert small_instance.validate_streams(2) == 2
    for bad in (0, 33, 2.0, True):
        with pytest.raises(
            InvalidInstanceError,
            match=rf"rank: got {bad!r}, must be an integer in 1\.\.32",
        ):
            small_instance.validate_rank(bad)
    with pytest.raises(
        InvalidInstanceError,
        match=r"streams: got L = 3, must be an integer in 1\.\.2 = min\(N_t, N_r\)",
    ):
        small_instance.validate_streams(3)


def test_direct_construction_is_validated(small_instance):
    with pytest.raises(InvalidInstanceError, match=r"aircomp\.streams: L = 4 exceeds"):
        dataclasses.replace(
            small_instance, aircomp=dataclasses.replace(small_instance.aircomp, streams=(1, 4))
        )
    with pytest.raises(InvalidInstanceError, match=r"schema_version: got 7"):
        dataclasses.replace(small_instance, schema_version=7)
