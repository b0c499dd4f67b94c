"""Reading instance mappings: every message names the field, the value and what is allowed."""

from __future__ import annotations

import copy

import pytest

from fedopt.errors import FedOptError, InvalidInstanceError
from fedopt.instance import Instance

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


def test_an_unknown_field_gets_a_did_you_mean(small_instance):
    from fedopt.errors import InvalidInstanceError
    from fedopt.instance import Instance

    data = small_instance.to_dict()
    data["server"]["n_rxx"] = 4
    data["channel"]["scenaro"] = "umi"
    data["devices"]["zzzz"] = 1
    with pytest.raises(InvalidInstanceError) as info:
        Instance.from_dict(data)
    text = str(info.value)
    assert "server.n_rxx: unknown field (did you mean 'n_rx'?" in text
    assert "channel.scenaro: unknown field (did you mean 'scenario'?" in text
    assert "devices.zzzz: unknown field (known fields:" in text  # nothing close: no guess
