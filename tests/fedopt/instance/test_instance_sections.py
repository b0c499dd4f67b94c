"""Sections: one default per field (the dataclass field's), and what the sections compute."""

from __future__ import annotations

import dataclasses

import pytest

from fedopt.instance import (
    ALGORITHMS,
    BITS_PER_PARAM,
    FACTOR_MODES,
    FADING_MODELS,
    LOS_STATES,
    O2I_MODELS,
    PATH_LOSS_MODELS,
    SIONNA_PROFILES,
    SIONNA_SCENARIOS,
    SPECTRUM_KINDS,
    TESTBEDS,
    DevicesSpec,
    Instance,
    LoRALayer,
)
from fedopt.instance._schema import default_of
from fedopt.instance.parsing import SECTION_READERS, read_section

#: exactly the required fields of each section (those whose dataclass field has no default)
MINIMAL = {
    "server": {"n_rx": 4},
    "devices": {"count": 3, "n_tx": 2, "p_max_dbm": 20.0, "distance_m": [50.0, 80.0, 120.0]},
    "ofdm": {"n_subcarriers": 16, "subcarrier_spacing_hz": 15e3},
    "channel": {},
    "lora": {"layers": [{"name": "w", "d_out": 64, "d_in": 128}]},
    "aircomp": {},
    "learning": {},
    "constraints": {},
}

#: the allowed values of the choice fields
OPTIONS = {"fading": FADING_MODELS, "path_loss": PATH_LOSS_MODELS, "factors": FACTOR_MODES,
           "spectrum_kind": SPECTRUM_KINDS, "bits_per_param": BITS_PER_PARAM,
           "testbed": TESTBEDS, "algorithm": ALGORITHMS,
           # channel.model: sionna (builtin reads as the default None), and its fields
           "model": ("sionna",), "scenario": SIONNA_SCENARIOS, "profile": SIONNA_PROFILES,
           "los": LOS_STATES, "o2i": O2I_MODELS}


def _defaulted(key: str) -> list[dataclasses.Field]:
    spec, _ = SECTION_READERS[key]
    return [f for f in dataclasses.fields(spec) if f.name not in MINIMAL[key]]


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _read(key: str, data: dict):
    errors: list[str] = []
    parsed = read_section(key, data, errors)
    assert not errors, errors
    return parsed


def _as_parsed(key: str, value):
    """A default as the reader stores it: per-device numbers broadcast to the K devices."""
    if key == "devices" and isinstance(value, float):
        return (value,) * MINIMAL["devices"]["count"]
    return value


def test_minimal_sections_list_exactly_the_required_fields():
    for key, (spec, _) in SECTION_READERS.items():
        required = {f.name for f in dataclasses.fields(spec) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}
        assert required == set(MINIMAL[key]), key


@pytest.mark.parametrize("key", sorted(MINIMAL))
def test_omitted_fields_read_as_the_dataclass_defaults(key):
    # the oracle is dataclasses.fields: whatever a file leaves out is the field's default
    parsed = _read(key, MINIMAL[key])
    for f in _defaulted(key):
        assert getattr(parsed, f.name) == _as_parsed(key, _default(f)), f"{key}.{f.name}"


def _another(name: str, value):
    """A valid value other than the default ``value``."""
    if name in OPTIONS:
        return next(o for o in OPTIONS[name] if o != value)
    if value is None:
        return 0.5
    if isinstance(value, tuple):
        return (1, 2) if name == "ranks" else (1,) if name == "streams" else (0.5,)
    if isinstance(value, int):
        return value + 1
    return value / 2 if value else 0.5


@pytest.mark.parametrize("key", sorted(MINIMAL))
def test_changing_a_field_default_changes_what_an_omitting_file_reads(monkeypatch, key):
    # the reader holds no default of its own: patch each dataclass default, re-read the file
    for f in _defaulted(key):
        new = _another(f.name, _default(f))
        data = dict(MINIMAL[key])
        if f.name == "spectrum_kind":  # "measured" needs its values
            data["spectrum_values"] = [1.0]
        if f.name == "model":  # "sionna" needs its scenario
            data["scenario"] = "umi"
        with monkeypatch.context() as m:
            m.setattr(f, "default", new)
            got = getattr(_read(key, data), f.name)
        assert got == _as_parsed(key, new), f"{key}.{f.name}: {got!r} != default {new!r}"


def test_layer_and_top_level_defaults(monkeypatch, small_dict):
    layer = _read("lora", {"layers": [{"d_out": 64, "d_in": 96}]}).layers[0]
    assert layer == LoRALayer(name="layer0", d_out=64, d_in=96)  # count: its field default
    del small_dict["name"], small_dict["description"]
    inst = Instance.from_dict(small_dict)
    assert (inst.name, inst.description) == (default_of(Instance, "name"),
                                             default_of(Instance, "description"))
    count = next(f for f in dataclasses.fields(LoRALayer) if f.name == "count")
    monkeypatch.setattr(count, "default", 3)
    assert _read("lora", {"layers": [{"d_out": 64, "d_in": 96}]}).layers[0].count == 3


def test_default_of_names_a_missing_field():
    with pytest.raises(TypeError, match="LoRALayer has no field 'rank'"):
        default_of(LoRALayer, "rank")


def test_devices_broadcast_one_number_to_every_device():
    dev = DevicesSpec(count=2, n_tx=1, p_max_dbm=20, distance_m=(10.0, 20.0))
    assert dev.p_max_dbm == (20.0, 20.0) and dev.distance_m == (10.0, 20.0)
    assert dev.dataset_size == (1.0, 1.0) and dev.compute_flops == (1e12, 1e12)
    assert dev.energy_budget_j is None


def test_payload_for_single_factor_modes(small_instance, instance_builder):
    # two layer kinds, 2 each, 32 x 32: AB → 2·2·(32+32) = 256, B → 128 (d_out), A → 128 (d_in)
    assert small_instance.lora.params_per_rank == 256
    layers = [{"name": "w", "d_out": 10, "d_in": 30, "count": 3}]
    for factors, per_rank in (("AB", 120), ("B", 30), ("A", 90)):
        inst = instance_builder(small_instance, lora={"layers": layers, "factors": factors})
        assert inst.lora.params_per_rank == per_rank
