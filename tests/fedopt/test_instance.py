"""Instances: exact file round trips, derived quantities (spec 01), and messages on bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedopt.errors import FedOptError, InvalidInstanceError
from fedopt.instance import SCHEMA_VERSION, Instance, list_presets, load_instance

DELETE = object()


def _set(data: dict, dotted: str, value) -> dict:
    """Set (or delete, with DELETE) a dotted field of a nested mapping, in place."""
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


def _error_of(data) -> str:
    with pytest.raises(InvalidInstanceError) as exc:
        Instance.from_dict(data)
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# presets and round trips
# ---------------------------------------------------------------------------------------------
def test_shipped_presets_load():
    assert {"default", "small"} <= set(list_presets())
    for name in list_presets():
        inst = load_instance(name)
        assert inst.name == name and inst.schema_version == SCHEMA_VERSION


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("preset", ["default", "small"])
def test_preset_file_round_trip_is_exact(tmp_path, preset, suffix):
    inst = load_instance(preset)
    path = inst.save(tmp_path / f"inst{suffix}")
    back = Instance.load(path)
    assert back == inst
    assert back.to_dict() == inst.to_dict()
    assert back.digest() == inst.digest()
    assert Instance.from_dict(inst.to_dict()) == inst
    assert load_instance(str(path)) == inst  # a path given to load_instance is a file


def _modified(small_instance: Instance) -> Instance:
    # per-device lists with values that have no short decimal form, every optional section set
    inst = small_instance.with_devices(
        p_max_dbm=[20.123456789012345, -3.0, 1 / 3],
        distance_m=[61.7, 1e-3, 2.5e4],
        dataset_size=[100.0, 1e6, 7.0],
        compute_flops=[1e12, 3.3e11, math.pi * 1e10],
        energy_budget_j=[0.5, 1.25, 2 / 7],
    )
    return inst.replace(
        name="modified",
        description="a: tricky 'string' # with yaml specials\nand a newline",
        channel={
            "fading": "rician",
            "rician_k_db": -2.5,
            "n_taps": 3,
            "tap_decay": 0.7,
            "path_loss": "38.901-umi",
            "carrier_hz": 28e9,
        },
        learning={
            "smoothness": 3.0,
            "step_size": 0.1,
            "spectrum_kind": "measured",
            "spectrum_values": [3.0, 1.5, 0.1 + 0.2],
        },
        constraints={
            "latency_budget_s": 0.25,
            "avg_latency_budget_s": 0.2,
            "total_time_s": 3600.0,
            "bandwidth_hz": 1e6,
        },
        aircomp={"streams": [2]},
    )


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_modified_instance_round_trip_is_exact(tmp_path, small_instance, suffix):
    inst = _modified(small_instance)
    assert inst.devices.p_max_dbm == (20.123456789012345, -3.0, 1 / 3)
    assert inst.learning.spectrum_values == (3.0, 1.5, 0.1 + 0.2)
    back = Instance.load(inst.save(tmp_path / f"mod{suffix}"))
    assert back == inst
    assert back.devices.energy_budget_j == (0.5, 1.25, 2 / 7)  # exact floats, not rounded
    assert back.digest() == inst.digest()


def test_replace_accepts_section_objects(small_instance):
    # sections given as dataclasses (tuples inside) are re-validated like mappings
    same = small_instance.replace(
        lora=small_instance.lora, aircomp=small_instance.aircomp, devices=small_instance.devices
    )
    assert same == small_instance
    fewer = small_instance.replace(
        aircomp=dataclasses.replace(small_instance.aircomp, streams=(1,))
    )
    assert fewer.aircomp.streams == (1,)


def test_yaml_scientific_notation_reads_as_numbers(tmp_path, small_instance):
    # YAML 1.1 (PyYAML) would read 3.5e9 as a string; users write it like this
    text = small_instance.save(tmp_path / "a.yaml").read_text()
    text = text.replace("carrier_hz: 3500000000.0", "carrier_hz: 3.5e9")
    text = text.replace("compute_flops: 1000000000000.0", "compute_flops: 1e12")
    assert "3.5e9" in text and "1e12" in text
    (tmp_path / "b.yaml").write_text(text)
    assert Instance.load(tmp_path / "b.yaml") == small_instance


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


# ---------------------------------------------------------------------------------------------
# derived quantities (spec 01) against hand-computed values
# ---------------------------------------------------------------------------------------------
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


def test_payload_for_single_factor_modes(small_instance, instance_builder):
    # two layer kinds, 2 each, 32 x 32: AB → 2·2·(32+32) = 256, B → 128 (d_out), A → 128 (d_in)
    assert small_instance.lora.params_per_rank == 256
    layers = [{"name": "w", "d_out": 10, "d_in": 30, "count": 3}]
    for factors, per_rank in (("AB", 120), ("B", 30), ("A", 90)):
        inst = instance_builder(small_instance, lora={"layers": layers, "factors": factors})
        assert inst.lora.params_per_rank == per_rank


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


# ---------------------------------------------------------------------------------------------
# bad input: every message names the field, the value and what is allowed
# ---------------------------------------------------------------------------------------------
BAD_FIELDS = [
    # (dotted field, bad value, fragments the message must contain)
    ("server.n_rx", DELETE, ["server.n_rx: missing required field"]),
    ("devices.distance_m", DELETE, ["devices.distance_m: missing required field"]),
    ("lora", DELETE, ["lora.layers: missing required field"]),
    ("devices.p_max_dmb", 20.0, ["devices.p_max_dmb: unknown field", "known fields:", "p_max_dbm"]),
    ("severs", {"n_rx": 4}, ["severs: unknown field", "server"]),
    ("server.n_rx", "four", ["server.n_rx", "expected an integer", "'four'"]),
    ("server.n_rx", True, ["server.n_rx", "expected an integer", "True"]),
    (
        "ofdm.subcarrier_spacing_hz",
        "30 kHz",
        ["ofdm.subcarrier_spacing_hz", "expected a number", "'30 kHz'"],
    ),
    ("devices.p_max_dbm", "high", ["devices.p_max_dbm", "a list of 3 numbers", "'high'"]),
    ("devices.p_max_dbm", 75.0, ["devices.p_max_dbm", "got 75", "<= 60"]),
    ("devices.n_tx", 0, ["devices.n_tx: got 0, must be >= 1"]),
    ("devices.n_tx", -1, ["devices.n_tx: got -1, must be >= 1"]),
    ("server.n_rx", 0, ["server.n_rx: got 0, must be >= 1"]),
    ("devices.count", 0, ["devices.count: got 0, must be >= 1"]),
    ("ofdm.n_subcarriers", 2.5, ["ofdm.n_subcarriers", "expected an integer", "2.5"]),
    ("ofdm.subcarrier_spacing_hz", 0, ["ofdm.subcarrier_spacing_hz: got 0, must be > 0"]),
    (
        "ofdm.subcarrier_spacing_hz",
        -15e3,
        ["ofdm.subcarrier_spacing_hz: got -15000.0, must be > 0"],
    ),
    (
        "ofdm.subcarrier_spacing_hz",
        float("nan"),
        ["ofdm.subcarrier_spacing_hz", "must be finite", "nan"],
    ),
    ("ofdm.cp_ratio", 1.0, ["ofdm.cp_ratio: got 1.0, must be >= 0 and < 1"]),
    ("constraints.bandwidth_hz", 0, ["constraints.bandwidth_hz: got 0, must be > 0"]),
    ("constraints.bandwidth_hz", -1e6, ["constraints.bandwidth_hz: got -1000000.0, must be > 0"]),
    ("devices.distance_m", 0, ["devices.distance_m: got 0, must be > 0"]),
    ("devices.distance_m", [60, -5, 200], ["devices.distance_m[1]: got -5, must be > 0"]),
    (
        "devices.distance_m",
        [60, 200],
        ["devices.distance_m", "expected 3 values (one per device)", "a list of 2"],
    ),
    ("lora.ranks", [0, 2], ["lora.ranks[0]: got 0, must be an integer >= 1"]),
    (
        "lora.ranks",
        [1, 64],
        ["lora.ranks", "rank 64 exceeds", "min(d_out, d_in) = 32", "must lie in 1..32"],
    ),
    ("lora.ranks", "all", ["lora.ranks", "non-empty list of positive integers", "'all'"]),
    (
        "lora.layers",
        [{"name": "w", "d_out": 0, "d_in": 8}],
        ["lora.layers[0].d_out: got 0, must be >= 1"],
    ),
    ("lora.layers", [], ["lora.layers: expected a non-empty list of layers"]),
    ("lora.bits_per_param", 8, ["lora.bits_per_param: got 8, must be one of 16, 32"]),
    (
        "aircomp.streams",
        [1, 3],
        ["aircomp.streams", "L = 3 exceeds min(N_t, N_r) = min(2, 4) = 2", "1..2"],
    ),
    ("aircomp.streams", [0], ["aircomp.streams[0]: got 0, must be an integer >= 1"]),
    (
        "channel.fading",
        "rayleight",
        ["channel.fading: got 'rayleight', must be one of rayleigh, rician"],
    ),
    ("channel.path_loss", "cost231", ["channel.path_loss", "'cost231'", "3gpp-uma"]),
    ("learning.step_size", 0.5, ["learning.step_size: got 0.5, must be <= 1/smoothness = 0.1"]),
    (
        "learning.spectrum_kind",
        "measured",
        ["learning.spectrum_values", "required", "spectrum_kind is 'measured'"],
    ),
    ("server", 4, ["server: expected a mapping of fields, got int"]),
    ("schema_version", 2, ["schema_version: got 2", "reads schema version(s) 1"]),
    ("schema_version", "1", ["schema_version: got '1'", "reads schema version(s) 1"]),
    ("schema_version", DELETE, ["schema_version: missing required field"]),
]


@pytest.mark.parametrize(
    "field, value, fragments", BAD_FIELDS, ids=[f"{f}={v!r}"[:40] for f, v, _ in BAD_FIELDS]
)
def test_bad_field_message(small_dict, field, value, fragments):
    msg = _error_of(_set(small_dict, field, value))
    assert msg.startswith("invalid instance")
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_all_problems_are_reported_at_once(small_dict):
    _set(small_dict, "server.n_rx", 0)
    _set(small_dict, "devices.n_tx", "two")
    _set(small_dict, "ofdm.subcarier_spacing_hz", 1.0)
    msg = _error_of(small_dict)
    assert "(3 problems)" in msg
    assert "server.n_rx: got 0" in msg and "devices.n_tx: expected an integer, got 'two'" in msg
    assert "ofdm.subcarier_spacing_hz: unknown field" in msg


def test_errors_are_fedopt_and_value_errors(small_dict):
    with pytest.raises(FedOptError):
        Instance.from_dict(_set(small_dict, "server.n_rx", 0))
    with pytest.raises(ValueError):
        Instance.from_dict(_set(copy.deepcopy(small_dict), "server.n_rx", 0))


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(InvalidInstanceError) as exc:
        load_instance("defualt")
    msg = str(exc.value)
    assert "'defualt' is neither an existing file nor a preset" in msg
    assert f"valid presets: {', '.join(list_presets())}" in msg


@pytest.mark.parametrize(
    "name, text, fragments",
    [
        ("bad.yaml", "server:\n  n_rx: [4\ndevices: {}\n", ["bad.yaml", "not valid YAML (line"]),
        ("tabs.yml", "server:\n\tn_rx: 4\n", ["tabs.yml", "not valid YAML"]),
        ("bad.json", '{"server": {"n_rx": 4,}}', ["bad.json", "not valid JSON (line 1, column"]),
        ("list.yaml", "- 1\n- 2\n", ["list.yaml", "expected a mapping at the top level, got list"]),
        ("empty.json", "", ["empty.json", "not valid JSON"]),
        ("empty.yaml", "", ["empty.yaml", "expected a mapping at the top level, got NoneType"]),
    ],
)
def test_malformed_files(tmp_path, name, text, fragments):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInstanceError) as exc:
        load_instance(path)
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_file_errors_name_the_file(tmp_path, small_dict):
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(_set(small_dict, "devices.n_tx", 0)))
    with pytest.raises(
        InvalidInstanceError,
        match=r"invalid instance in .*inst\.json: devices\.n_tx: got 0, must be >= 1",
    ):
        Instance.load(path)
    with pytest.raises(InvalidInstanceError, match=r"cannot read file"):
        Instance.load(tmp_path)  # a directory


def test_direct_construction_is_validated(small_instance):
    with pytest.raises(InvalidInstanceError, match=r"aircomp\.streams: L = 4 exceeds"):
        dataclasses.replace(
            small_instance, aircomp=dataclasses.replace(small_instance.aircomp, streams=(1, 4))
        )
    with pytest.raises(InvalidInstanceError, match=r"schema_version: got 7"):
        dataclasses.replace(small_instance, schema_version=7)


WRONG_VALUES = [
    "x",
    [],
    {},
    [1, "a"],
    [[1]],
    ["x"],
    [None],
    {"a": 1},
    True,
    -1,
    0,
    1.5,
    float("inf"),
    float("nan"),
]


def test_any_wrong_value_anywhere_gives_a_message_not_a_crash(small_dict):
    # every field of every section (and a layer's fields), every kind of wrong value: the reader
    # must answer with InvalidInstanceError (a message), never TypeError / KeyError / ...
    small_dict["devices"]["energy_budget_j"] = 1.0
    paths = (
        [(s,) for s in small_dict]
        + [(s, k) for s, v in small_dict.items() if isinstance(v, dict) for k in v]
        + [("lora", "layers", 0), ("lora", "layers", 0, "d_out"), ("lora", "layers", 0, "name")]
    )
    accepted = 0
    for path in paths:
        for value in WRONG_VALUES:
            data = copy.deepcopy(small_dict)
            node = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            try:
                Instance.from_dict(data)
                accepted += 1  # some values are legal for some fields (e.g. 1.5 for a power)
            except InvalidInstanceError as exc:
                assert str(exc).startswith("invalid instance")
    assert accepted < len(paths) * len(WRONG_VALUES) // 4
