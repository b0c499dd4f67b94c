"""The ``channel.model`` / ``channel.scenario`` fields (TR 38.901 channels from Sionna): what a
file may say, what it means, and that the instances that existed before keep their digests.

Nothing here needs Sionna: the fields are read and checked without it.
"""

from __future__ import annotations

import copy

import pytest

from fedopt.errors import InvalidInstanceError
from fedopt.instance import Instance, list_presets, load_instance
from fedopt.instance.sections import SIONNA_DEFAULTS

#: ``Instance.digest()`` of every preset, computed with the code before ``channel.model``
#: existed (plans store the digest: a new field must not change the canonical form of old files)
PRESET_DIGESTS = {"char-tasks": "02b7ce47d34e48e6", "default": "a45f25c52242bd88",
                  "small": "2ef1e7a07708cf6e", "tiny-char": "b01033d020895159"}


def _with_channel(preset: str, **fields) -> dict:
    data = copy.deepcopy(load_instance(preset).to_dict())
    data["channel"].update(fields)
    return data


def _error_of(data) -> str:
    with pytest.raises(InvalidInstanceError) as exc:
        Instance.from_dict(data)
    return str(exc.value)


def test_preset_digests_are_unchanged():
    assert sorted(list_presets()) == sorted(PRESET_DIGESTS)
    for name, digest in PRESET_DIGESTS.items():
        inst = load_instance(name)
        assert inst.digest() == digest, name
        assert "model" not in inst.to_dict()["channel"]  # None fields are not written


def test_model_builtin_is_the_absent_model():
    explicit = Instance.from_dict(_with_channel("default", model="builtin"))
    assert explicit.channel.model is None
    assert explicit.digest() == PRESET_DIGESTS["default"]


@pytest.mark.parametrize("scenario", ["umi", "uma", "rma", "tdl", "cdl"])
def test_two_keys_on_the_default_preset_make_a_sionna_instance(scenario):
    inst = Instance.from_dict(_with_channel("default", model="sionna", scenario=scenario))
    ch = inst.channel
    assert (ch.model, ch.scenario) == ("sionna", scenario)
    assert ch.speed_m_s == SIONNA_DEFAULTS["speed_m_s"] == 0.0
    if scenario in ("tdl", "cdl"):
        assert (ch.profile, ch.delay_spread_s) == ("A", 100e-9)
        assert ch.los is None and ch.o2i is None
    else:
        assert (ch.los, ch.o2i) == ("random", "none")
        assert ch.profile is None and ch.delay_spread_s is None
    # defaults are not written (read back, they are filled in again): leaving them out and
    # writing them give the same instance and digest, and another scenario may be swapped in
    assert set(inst.to_dict()["channel"]) & set(SIONNA_DEFAULTS) == set()
    again = Instance.from_dict(inst.to_dict())
    assert again == inst and again.digest() == inst.digest() != PRESET_DIGESTS["default"]
    other = "tdl" if scenario != "tdl" else "umi"
    swapped = copy.deepcopy(inst.to_dict())
    swapped["channel"]["scenario"] = other
    assert Instance.from_dict(swapped).channel.scenario == other


def test_written_defaults_equal_left_out_ones():
    short = Instance.from_dict(_with_channel("small", model="sionna", scenario="tdl"))
    full = Instance.from_dict(_with_channel("small", model="sionna", scenario="tdl", profile="A",
                                            delay_spread_s=1e-7, speed_m_s=0.0))
    assert short == full and short.digest() == full.digest()
    other = Instance.from_dict(_with_channel("small", model="sionna", scenario="tdl",
                                             profile="C", delay_spread_s=3e-7, speed_m_s=1.5))
    assert (other.channel.profile, other.channel.delay_spread_s, other.channel.speed_m_s) == (
        "C", 3e-7, 1.5)
    assert other.digest() != short.digest()
    assert {k: other.to_dict()["channel"][k] for k in ("profile", "delay_spread_s",
                                                       "speed_m_s")} == {
        "profile": "C", "delay_spread_s": 3e-7, "speed_m_s": 1.5}  # non-defaults are written
    assert Instance.from_dict(other.to_dict()) == other


BAD = [
    # (channel fields, fragments of the message)
    ({"model": "sionna", "scenario": "foo"},
     ["channel.scenario: got 'foo', must be one of umi, uma, rma, tdl, cdl"]),
    ({"model": "sionna"},
     ["channel.scenario: required when channel.model is sionna", "umi, uma, rma, tdl, cdl"]),
    ({"scenario": "umi"}, ["channel.scenario: applies only with channel.model: sionna"]),
    ({"model": "builtin", "scenario": "umi"},
     ["channel.scenario: applies only with channel.model: sionna"]),
    ({"speed_m_s": 3.0}, ["channel.speed_m_s: applies only with channel.model: sionna"]),
    ({"delay_spread_s": 1e-7}, ["channel.delay_spread_s: applies only with channel.model"]),
    ({"model": "matlab"}, ["channel.model: got 'matlab', must be one of builtin, sionna"]),
    ({"model": "sionna", "scenario": "umi", "profile": "B"},
     ["channel.profile: applies only to scenarios tdl, cdl, not umi"]),
    ({"model": "sionna", "scenario": "tdl", "los": "los"},
     ["channel.los: applies only to scenarios umi, uma, rma, not tdl"]),
    ({"model": "sionna", "scenario": "cdl", "profile": "F"},
     ["channel.profile: got 'F', must be one of A, B, C, D, E"]),
    ({"model": "sionna", "scenario": "tdl", "delay_spread_s": 0.0},
     ["channel.delay_spread_s: got 0.0, must be > 0"]),
    ({"model": "sionna", "scenario": "umi", "speed_m_s": -1.0},
     ["channel.speed_m_s: got -1.0, must be >= 0"]),
    ({"model": "sionna", "scenario": "umi", "los": "maybe"},
     ["channel.los: got 'maybe', must be one of random, los, nlos"]),
    ({"model": "sionna", "scenario": "rma", "o2i": "high"},
     ["channel.o2i: got 'high'", "rma has only the low-loss", "none, low"]),
    ({"model": "sionna", "scenario": "uma", "carrier_hz": 2e11},
     ["channel.carrier_hz: got 2e+11", "cover 5e+08 to 1e+11 Hz"]),
    ({"model": "sionna", "scenario": "tdl", "carrier_hz": 4e8},
     ["channel.carrier_hz: got 4e+08", "cover 5e+08 to 1e+11 Hz"]),
]


@pytest.mark.parametrize("fields, fragments", BAD)
def test_bad_channel_model_fields_are_named(fields, fragments):
    message = _error_of(_with_channel("small", **fields))
    for fragment in fragments:
        assert fragment in message, message


def test_the_builtin_model_ignores_nothing_it_reads():
    # a builtin instance may set the carrier anywhere (> 0): the 38.901 range is Sionna's
    inst = Instance.from_dict(_with_channel("small", carrier_hz=2e11))
    assert inst.channel.carrier_hz == 2e11 and inst.channel.model is None
