"""The commented YAML template of ``fedopt instance new`` (:mod:`fedopt.instance.template`).

Oracles: the template loads back to the very instance it was written from (``to_dict`` and the
digest), for every preset and for an instance with every optional field set; its comments come
from the section docstrings, which must document every field.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import make_instance

from fedopt.instance import Instance, list_presets, load_instance, render_template
from fedopt.instance.core import SECTIONS
from fedopt.instance.parsing import SECTION_READERS, parse_text
from fedopt.instance.sections import SIONNA_DEFAULTS, SIONNA_FIELDS, LoRALayer
from fedopt.instance.template import WIDTH, field_docs, format_number, section_summary

#: the dataclasses whose fields a file sets: the sections and the LoRA layer
DOCUMENTED = [spec for spec, _ in SECTION_READERS.values()] + [LoRALayer]
#: unit suffix of a field name → the unit its description must name
UNITS = [("_dbm_hz", "dBm/Hz"), ("_dbm", "dBm"), ("_db", "dB"), ("_m_s", "m/s"), ("_hz", "Hz"),
         ("_m", "m"), ("_s", "s"), ("_j", "J"), ("_flops", "FLOP/s")]


def _read(text: str) -> Instance:
    return Instance.from_dict(parse_text(text, Path("t.yaml")), source="template")


def _assert_same(back: Instance, inst: Instance) -> None:
    assert back.to_dict() == inst.to_dict()
    assert back.digest() == inst.digest()
    assert back == inst


def _check_shape(text: str) -> None:
    """Block style with a comment before every section and field, lines <= WIDTH."""
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), max(lines, key=len)
    section, names = None, set()
    for i, line in enumerate(lines):
        code = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
        if "{" in code:
            assert line.startswith("    - {name: "), line  # only the LoRA layers are flow maps
        if re.match(r"^\w+:", line):
            assert lines[i - 1].startswith("#"), f"no comment before {line!r}"
            section = line.split(":")[0]
            names = {f.name for f in fields(SECTION_READERS[section][0])} \
                if section in SECTION_READERS else set()
        field = re.match(r"^  (?:# )?(\w+): ", line + " ")
        if section and field and field.group(1) in names:
            assert lines[i - 1].lstrip().startswith("#") or " # " in line, line
    assert not re.search(r"\d{7,}\.0\b", text)  # 1e12 is 1.0e+12, not 1000000000000.0
    assert not re.search(r"e[-+]0\d", text)  # exponents without padding: 9.6e-5


# ---------------------------------------------------------------------------------------------
# The docstrings the comments come from
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", DOCUMENTED, ids=lambda s: s.__name__)
def test_every_field_is_documented(spec):
    """Adding a field without an ``Attributes`` entry (or renaming one) fails here."""
    docs = field_docs(spec)
    names = [f.name for f in fields(spec)]
    assert [n for n in names if n not in docs] == [], f"{spec.__name__}: undocumented fields"
    assert [n for n in docs if n not in names] == [], f"{spec.__name__}: entries of no field"
    assert all(len(docs[n].text) > 5 for n in names)
    assert section_summary(spec)


@pytest.mark.parametrize("spec", DOCUMENTED, ids=lambda s: s.__name__)
def test_units_in_field_names_are_named_in_the_descriptions(spec):
    for name, doc in field_docs(spec).items():
        unit = next((u for suffix, u in UNITS if name.endswith(suffix)), None)
        if unit is not None:
            assert re.search(rf"(?<![\w/]){re.escape(unit)}(?![\w/])", doc.text), (name, unit)


def test_docstring_parser_reads_numpydoc_attributes():
    class Spec:
        """Summary that
        wraps.

        More text.

        Attributes
        ----------
        a : int
            First line
            second line.
        b, c : {"x", 'y'} or None
            Shared.
        d
            No type.

        Notes
        -----
        e : int
            Not an attribute.
        """

    docs = field_docs(Spec)
    assert set(docs) == {"a", "b", "c", "d"}
    assert docs["a"].text == "First line second line." and docs["a"].kind == "int"
    assert docs["b"] is docs["c"] and docs["b"].choices == ("x", "y")
    assert docs["d"].kind == "" and docs["d"].choices == ()
    assert section_summary(Spec) == "Summary that wraps."
    assert field_docs(type("Bare", (), {"__doc__": "No sections."})) == {}
    assert section_summary(SECTION_READERS["ofdm"][0]) == "OFDM numerology."


# ---------------------------------------------------------------------------------------------
# Numbers and strings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, text", [
    (1e12, "1.0e+12"), (3.5e9, "3.5e+9"), (2e7, "2.0e+7"), (4.5e7, "4.5e+7"), (1e6, "1.0e+6"),
    (30000.0, "30000.0"), (114576.0, "114576.0"), (-174.0, "-174.0"), (0.07, "0.07"),
    (0.0, "0.0"), (1e-7, "1.0e-7"), (9.607e-05, "9.607e-5"), (-2.5e-9, "-2.5e-9"),
    (20, "20"), (True, "true"), (0.013195744019192941, "0.013195744019192941"),
])
def test_numbers_are_written_readably(value, text):
    assert format_number(value) == text
    assert parse_text(f"x: {text}", Path("t.yaml")) == {"x": value}


def test_numbers_read_back_exactly(rng):
    values = list(10.0 ** rng.uniform(-12, 15, 300) * rng.choice([-1, 1], 300))
    values += [float(round(v)) for v in values] + [float(2**52 + 1), 5e-324, 1.7976931348623157e308]
    data = parse_text("\n".join(f"v{i}: {format_number(v)}" for i, v in enumerate(values)),
                      Path("t.yaml"))
    assert [data[f"v{i}"] for i in range(len(values))] == values


@pytest.mark.parametrize("name", ["3.5e9", "1e3", "010", "1:30", "yes", "null", "~", "a: b",
                                  "x # y", "[z]", "'q'", "é—ü", "-", "", " lead", "c,d"])
def test_strings_read_back_as_strings(small_dict, name):
    small_dict["name"] = name
    small_dict["description"] = f"two  spaces,\nnew line {name} " + "word " * 40
    small_dict["lora"]["layers"][0]["name"] = name
    inst = Instance.from_dict(small_dict)
    text = render_template(inst)
    _assert_same(_read(text), inst)
    assert all(len(line) <= WIDTH for line in text.splitlines())


# ---------------------------------------------------------------------------------------------
# The presets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_round_trips_through_its_template(preset):
    inst = load_instance(preset)
    text = render_template(inst, preset=preset)
    _assert_same(_read(text), inst)
    _check_shape(text)
    assert text.startswith(f"# A fedopt instance file (spec 01) from the preset {preset!r}")
    assert "fedopt instance validate FILE" in text and "fedopt instance show FILE" in text
    for section in SECTIONS:  # each section under its docstring's summary
        summary = section_summary(SECTION_READERS[section][0])
        head = text.split(f"\n{section}:\n")[0]
        assert " ".join(x.lstrip("# ") for x in head.splitlines()[-3:]).endswith(summary)


def test_default_template_has_units_layers_and_readable_numbers(default_instance):
    text = render_template(default_instance, preset="default")
    comments = " ".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for unit in ("dBm", "dBm/Hz", "dB", "Hz", "m", "s", "J", "FLOP/s"):
        assert re.search(rf"(?<![\w/]){re.escape(unit)}(?![\w/])", comments), unit
    assert "    - {name: c_attn, d_out: 2304, d_in: 768, count: 12}\n" in text
    assert "\n  compute_flops: 1.0e+12\n" in text and "\n  carrier_hz: 3.5e+9\n" in text
    assert "\n  subcarrier_spacing_hz: 30000.0\n" in text and "\n  n_rx: 16\n" in text
    assert "\n  p_max_dbm: 23.0\n" in text  # the same on every device: one number
    assert "\n  # energy_budget_j: 1.0  # " in text  # optional and unset: shown commented out
    assert "\n  # algorithm: fedavg  # " in text and "\n  # total_time_s: " in text
    assert re.search(r"\n  # Per-round latency budget T_max in s\.\n  latency_budget_s: 0.5\n",
                     text)


def test_uncommenting_the_unset_fields_sets_them(default_instance):
    text = render_template(default_instance)
    shown = re.findall(r"^  # (\w+): (\S+)  # ", text, flags=re.M)
    assert {name for name, _ in shown} == {"energy_budget_j", "model", "scenario", "algorithm",
                                           "total_time_s"}
    inst = _read(re.sub(r"^  # (\w+: \S+  # )", r"  \1", text, flags=re.M))
    assert inst.devices.energy_budget_j == (1.0,) * default_instance.n_devices
    assert (inst.channel.model, inst.channel.scenario) == ("sionna", "umi")
    assert inst.learning.algorithm == "fedavg" and inst.constraints.total_time_s == 3600.0


# ---------------------------------------------------------------------------------------------
# Every optional field set
# ---------------------------------------------------------------------------------------------
def _everything(base: Instance, **channel) -> Instance:
    k = base.n_devices
    return make_instance(
        base,
        devices={"p_max_dbm": [20.0 + i for i in range(k)],
                 "compute_flops": [1e9 * (i + 1) for i in range(k)],
                 "energy_budget_j": [0.25 * (i + 1) for i in range(k)]},
        channel={"fading": "rician", "rician_k_db": 6.5, "carrier_hz": 2.8e9, **channel},
        lora={"factors": "B", "layers": [
            {"name": "blocks.*.attn.q,blocks.*.attn.k,blocks.*.attn.v,blocks.*.attn.proj",
             "d_out": 32, "d_in": 32, "count": 8}]},
        learning={"algorithm": "ffa", "spectrum_kind": "measured",
                  "spectrum_values": [1 / (i + 1) ** 1.3 for i in range(40)]},
        constraints={"latency_budget_s": 0.05, "avg_latency_budget_s": 0.08,
                     "total_time_s": 600.0, "bandwidth_hz": 1.5e6})


@pytest.mark.parametrize("channel", [
    {},
    {"model": "sionna", "scenario": "tdl", "profile": "C", "delay_spread_s": 3e-7,
     "speed_m_s": 1.5},
    {"model": "sionna", "scenario": "umi", "los": "los", "o2i": "low", "speed_m_s": 0.5},
    {"model": "sionna", "scenario": "cdl"},  # the Sionna fields at their defaults
    {"model": "sionna", "scenario": "rma"},
], ids=["builtin", "tdl", "umi", "cdl-defaults", "rma-defaults"])
def test_every_optional_field_set_round_trips(small_instance, channel):
    inst = _everything(small_instance, **channel)
    text = render_template(inst)
    _assert_same(_read(text), inst)
    _check_shape(text)
    assert "\n  # energy_budget_j" not in text and "\n  energy_budget_j: [0.25, 0.5, 0.75]" in text
    assert "\n  algorithm: ffa\n" in text and "\n  # algorithm" not in text
    for name, scenarios in SIONNA_FIELDS.items():
        applies = channel.get("model") == "sionna" and channel["scenario"] in scenarios
        at_default = name not in channel
        default = SIONNA_DEFAULTS[name]
        shown = default if isinstance(default, str) else format_number(default)
        commented = f"\n  # {name}: {shown}  # the default\n" in text
        assert commented == (applies and at_default), name
        assert (f"\n  {name}: " in text) == (applies and not at_default), name


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list_presets())
def test_instance_new_writes_the_template(invoke, tmp_path, preset):
    out = tmp_path / f"{preset}.yaml"
    res = invoke("instance", "new", "--preset", preset, "-o", out)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == f"wrote {out} (preset {preset!r})"
    text = out.read_text(encoding="utf-8")
    assert text == render_template(load_instance(preset), preset=preset)
    _assert_same(load_instance(out), load_instance(preset))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left
    res = invoke("instance", "validate", out)
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output


def test_instance_new_json_and_force(invoke, tmp_path, default_instance):
    out = tmp_path / "d.json"
    assert invoke("instance", "new", "-o", out).exit_code == 0
    assert json.loads(out.read_text()) == default_instance.to_dict()  # JSON as before
    res = invoke("instance", "new", "--preset", "small", "-o", out)
    assert res.exit_code == 2 and "exists; pass --force" in res.output
    yml = tmp_path / "d.yml"
    yml.write_text("old")
    assert invoke("instance", "new", "-o", yml, "--force").exit_code == 0
    assert yml.read_text().startswith(
        "# A fedopt instance file (spec 01) from the preset 'default'")
    _assert_same(load_instance(yml), default_instance)
