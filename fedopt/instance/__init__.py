"""Network-design instances (spec 01 §1–§5).

An :class:`Instance` is everything a planner fixes before optimizing: the server, the devices,
the OFDM numerology, the channel model, the LoRA layers, the learning profile of the gap model
and the constraints. It is immutable, validated on construction and round-trips exactly through
YAML and JSON (``to_dict`` / ``from_dict``). Units live in field names.

Per-device quantities are stored as tuples of length K; in files they may be written as one
number (the same for every device) or as a list of K numbers.

The package, one module per seam (every public name is re-exported here):

* :mod:`~fedopt.instance.sections` — the section dataclasses; each default is written once,
  on its field;
* :mod:`~fedopt.instance.core` — :class:`Instance` and its derived quantities;
* :mod:`~fedopt.instance.parsing` — text to mapping, mapping to validated sections;
* :mod:`~fedopt.instance.loading` — the shipped presets and :func:`load_instance`;
* :mod:`~fedopt.instance.template` — :func:`render_template`, the commented YAML template
  ``fedopt instance new`` writes (comments taken from the sections' docstrings);
* :mod:`~fedopt.instance._schema` — the schema version and the field reader.
"""

from __future__ import annotations

from fedopt.instance._schema import SCHEMA_VERSION, SUPPORTED_SCHEMA_VERSIONS
from fedopt.instance.core import Instance
from fedopt.instance.loading import list_presets, load_instance
from fedopt.instance.sections import (
    ALGORITHMS,
    BITS_PER_PARAM,
    CHANNEL_MODELS,
    FACTOR_MODES,
    FADING_MODELS,
    LOS_STATES,
    O2I_MODELS,
    PATH_LOSS_MODELS,
    SIONNA_DEFAULTS,
    SIONNA_FIELDS,
    SIONNA_PROFILES,
    SIONNA_SCENARIOS,
    SPECTRUM_KINDS,
    TESTBEDS,
    AirCompSpec,
    ChannelSpec,
    ConstraintsSpec,
    DevicesSpec,
    LearningSpec,
    LoRALayer,
    LoRASpec,
    OFDMSpec,
    ServerSpec,
)
from fedopt.instance.template import render_template

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "PATH_LOSS_MODELS",
    "FADING_MODELS",
    "CHANNEL_MODELS",
    "SIONNA_SCENARIOS",
    "SIONNA_PROFILES",
    "LOS_STATES",
    "O2I_MODELS",
    "SIONNA_DEFAULTS",
    "SIONNA_FIELDS",
    "FACTOR_MODES",
    "SPECTRUM_KINDS",
    "TESTBEDS",
    "ALGORITHMS",
    "BITS_PER_PARAM",
    "ServerSpec",
    "DevicesSpec",
    "OFDMSpec",
    "ChannelSpec",
    "LoRALayer",
    "LoRASpec",
    "AirCompSpec",
    "LearningSpec",
    "ConstraintsSpec",
    "Instance",
    "list_presets",
    "load_instance",
    "render_template",
]
