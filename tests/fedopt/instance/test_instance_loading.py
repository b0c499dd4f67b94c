"""Instance files and presets: exact round trips, YAML/JSON parsing, messages on bad files."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from fedopt.errors import InvalidInstanceError
from fedopt.instance import SCHEMA_VERSION, Instance, list_presets, load_instance


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
    small_dict["devices"]["n_tx"] = 0
    path.write_text(json.dumps(small_dict))
    with pytest.raises(
        InvalidInstanceError,
        match=r"invalid instance in .*inst\.json: devices\.n_tx: got 0, must be >= 1",
    ):
        Instance.load(path)
    with pytest.raises(InvalidInstanceError, match=r"cannot read file"):
        Instance.load(tmp_path)  # a directory
