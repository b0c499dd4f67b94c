"""The input boundary of instance files: every failure class a fuzzer found (issue 16) is a named
error, and an accepted file runs.

Each case writes a file that once raised a Python exception, was accepted and crashed later, or
was read differently from what a person reads; now each gives an ``InvalidInstanceError`` whose
message names the field, the line or the limit.
"""

from __future__ import annotations

import pytest
import yaml

from fedopt.errors import InvalidInstanceError
from fedopt.instance import load_instance

BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{b}'] * 9)}]\n"
               for b, a in zip("abcdefghijklm", "bcdefghijklmn", strict=True))


@pytest.fixture
def text(small_dict):
    return yaml.safe_dump(small_dict, sort_keys=False)


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("n_rx: 4", "n_rx: 010"), "'010' is read differently by YAML 1.1"),
    (lambda t: t.replace("n_rx: 4", "n_rx: 1:30"), "'1:30' is read differently by YAML 1.1"),
    (lambda t: t.replace("n_rx: 4", "n_rx: 4\n  n_rx: 8"), "duplicate key 'n_rx'"),
    (lambda t: t.replace("n_rx: 4", "n_rx: " + "9" * 400), "server.n_rx: got an integer of"),
    (lambda t: t.replace("n_rx: 4", "n_rx: " + "9" * 5000), "an integer of 5000 digits"),
    (lambda t: "a: " + "[" * 5000 + "]" * 5000, "nested deeper than the reader allows"),
    (lambda t: "a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB + "z: [" + ", ".join(["*n"] * 999)
     + "]\n", "more than 1000 aliases"),
    (lambda t: t.replace("count: 3", "count: 100000000000"), "devices.count: got 100000000000"),
    (lambda t: t.replace("n_subcarriers: 4", "n_subcarriers: 99999999999999"),
     "ofdm.n_subcarriers: got"),
    (lambda t: t.replace("noise_figure_db: 9.0", "noise_figure_db: 1000000.0"),
     "server.noise_figure_db: got 1000000.0, must be >= 0 and <= 100"),
    (lambda t: t.replace("schema_version: 1", "schema_version: true"),
     "schema_version: got True"),
    (lambda t: t.replace("name: small", 'name: "\\ud800"'), "name: contains a lone surrogate"),
    (lambda t: t.replace("compute_flops: 1000000000000.0", "compute_flops: 1.0e-320"),
     "devices.compute_flops: a compute speed this small"),
    (lambda t: t.replace("distance_m:\n  - 60.0", "distance_m:\n  - 1.0e+300"),
     "devices.distance_m: a path loss of"),
    (lambda t: t.replace("n_rx: 4", "n_rx: 4096").replace("n_subcarriers: 4",
                                                        "n_subcarriers: 60000"),
     "channel entries per round; at most"),
])
def test_each_failure_class_is_a_named_error(tmp_path, text, edit, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(text), encoding="utf-8")
    with pytest.raises(InvalidInstanceError) as info:
        load_instance(path)
    assert needle in str(info.value)
    assert len(str(info.value)) < 2000  # cut values, never a whole huge repr


def test_non_utf8_bytes_are_named(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text.encode().replace(b"small", b"sm\xffall", 1))
    with pytest.raises(InvalidInstanceError, match="not UTF-8 text: byte 0xff at offset"):
        load_instance(path)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from fedopt.instance import parsing

    monkeypatch.setattr(parsing, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.yaml"
    path.write_text("x" * 101)
    with pytest.raises(InvalidInstanceError, match="the file has 101 bytes; .* at most 100"):
        load_instance(path)


def test_json_duplicate_keys_and_depth(tmp_path, small_dict):
    import json

    path = tmp_path / "bad.json"
    path.write_text(json.dumps(small_dict).replace('"n_rx": 4', '"n_rx": 4, "n_rx": 8'))
    with pytest.raises(InvalidInstanceError, match="duplicate key 'n_rx'"):
        load_instance(path)
    path.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InvalidInstanceError, match="not valid JSON"):
        load_instance(path)


def test_plain_yaml_numbers_still_read_as_numbers(tmp_path, text):
    path = tmp_path / "ok.yaml"
    # 0, 0.07, 3.5e9, -174.0, 1_000 are numbers as a person reads them
    path.write_text(text.replace("n_rx: 4", "n_rx: 1_0").replace("cp_ratio: 0.07",
                                                                "cp_ratio: 0.0"))
    inst = load_instance(path)
    assert inst.n_rx == 10 and inst.ofdm.cp_ratio == 0.0


def test_a_number_where_a_list_goes_is_named(small_dict):
    from fedopt.instance import Instance

    small_dict["learning"] = {**small_dict.get("learning", {}), "spectrum_kind": "measured",
                              "spectrum_values": 3}
    # the learning section used to become None without a word
    with pytest.raises(InvalidInstanceError, match="learning.spectrum_values: expected a list"):
        Instance.from_dict(small_dict)
