"""From text to a mapping, and from a mapping to validated sections.

Each section reader is bound to its dataclass (:data:`SECTION_READERS`), whose field defaults
apply to the fields a file leaves out; the readers only add what a dataclass cannot say: bounds,
choices, cross-field rules and the messages that name them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedopt.errors import InvalidInstanceError
from fedopt.instance._schema import MISSING, Reader
from fedopt.instance.sections import (
    ALGORITHMS,
    BITS_PER_PARAM,
    CHANNEL_MODELS,
    FACTOR_MODES,
    FADING_MODELS,
    LOS_STATES,
    O2I_MODELS,
    PATH_LOSS_MODELS,
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
from fedopt.sionna_channel import CARRIER_RANGE_HZ

__all__ = ["LIMITS", "MAX_ALIASES", "MAX_FILE_BYTES", "SECTION_READERS", "read_section",
           "read_sections", "parse_text", "read_file", "yaml_loader"]


#: sizes bounded before anything is allocated (a typo such as ``count: 100000000000`` must be
#: an error, not an out-of-memory crash); generous next to any real cell
LIMITS = {"devices": 100_000, "n_rx": 4096, "n_tx": 256, "subcarriers": 65_536, "taps": 4096,
          "layer_dim": 1_000_000, "layer_count": 100_000}
#: instance, sweep and plan files larger than this are refused before they are read
MAX_FILE_BYTES = 16 * 2**20
#: YAML aliases per file (an alias bomb of a kilobyte can stand for billions of values)
MAX_ALIASES = 1000


def _complete(values: dict[str, Any]) -> bool:
    """No field failed (None) or is missing."""
    return not any(v is None or v is MISSING for v in values.values())


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
def _read_server(r: Reader) -> ServerSpec | None:
    out = dict(
        n_rx=r.number("n_rx", integer=True, ge=1, le=LIMITS["n_rx"]),
        noise_psd_dbm_hz=r.number("noise_psd_dbm_hz", gt=-300, lt=0),
        noise_figure_db=r.number("noise_figure_db", ge=0, le=100),
    )
    r.finish()
    return ServerSpec(**out) if _complete(out) else None


def _read_devices(r: Reader) -> DevicesSpec | None:
    count = r.number("count", integer=True, ge=1, le=LIMITS["devices"])
    k = count if isinstance(count, int) else None
    out = dict(
        count=count,
        n_tx=r.number("n_tx", integer=True, ge=1, le=LIMITS["n_tx"]),
        p_max_dbm=r.vector("p_max_dbm", k, gt=-100, le=60),
        distance_m=r.vector("distance_m", k, gt=0),
        dataset_size=r.vector("dataset_size", k, gt=0),
        compute_flops=r.vector("compute_flops", k, gt=0),
    )
    energy = r.vector("energy_budget_j", k, gt=0)  # None (the default) is legal
    r.finish()
    if not _complete(out) or k is None:
        return None
    return DevicesSpec(**out, energy_budget_j=energy)


def _read_ofdm(r: Reader) -> OFDMSpec | None:
    out = dict(
        n_subcarriers=r.number("n_subcarriers", integer=True, ge=1, le=LIMITS["subcarriers"]),
        subcarrier_spacing_hz=r.number("subcarrier_spacing_hz", gt=0),
        cp_ratio=r.number("cp_ratio", ge=0, lt=1),
    )
    r.finish()
    return OFDMSpec(**out) if _complete(out) else None


def _read_channel(r: Reader) -> ChannelSpec | None:
    out = dict(
        fading=r.choice("fading", FADING_MODELS),
        rician_k_db=r.number("rician_k_db", ge=-50, le=50),
        n_taps=r.number("n_taps", integer=True, ge=1, le=LIMITS["taps"]),
        tap_decay=r.number("tap_decay", gt=0),
        path_loss=r.choice("path_loss", PATH_LOSS_MODELS),
        carrier_hz=r.number("carrier_hz", gt=0),
    )
    sionna = _read_sionna_fields(r, out["carrier_hz"])
    r.finish()
    if not _complete(out) or sionna is None:
        return None
    return ChannelSpec(**out, **sionna)


def _read_sionna_fields(r: Reader, carrier_hz: Any) -> dict[str, Any] | None:
    """``model``, ``scenario`` and the Sionna-only fields; None where one failed. A field needs
    the model and scenario it applies to (:data:`SIONNA_FIELDS`)."""
    n_errors = len(r.errors)
    out = dict(
        model=r.choice("model", CHANNEL_MODELS),
        scenario=r.choice("scenario", SIONNA_SCENARIOS),
        profile=r.choice("profile", SIONNA_PROFILES),
        delay_spread_s=r.number("delay_spread_s", gt=0),
        speed_m_s=r.number("speed_m_s", ge=0),
        los=r.choice("los", LOS_STATES),
        o2i=r.choice("o2i", O2I_MODELS),
    )
    model, scenario = out["model"], out["scenario"]
    if r.given("model") and model is None:
        pass  # a bad model: reported above, nothing else to check against
    elif model != "sionna":
        for key in ("scenario", *SIONNA_FIELDS):
            if r.given(key):
                r.errors.append(f"{r.path}.{key}: applies only with {r.path}.model: sionna "
                                f"(the built-in model has no {key}); add model: sionna or "
                                "remove it")
    elif not r.given("scenario"):
        r.errors.append(f"{r.path}.scenario: required when {r.path}.model is sionna; must be "
                        f"one of {', '.join(SIONNA_SCENARIOS)}")
    elif scenario is not None:
        for key, scenarios in SIONNA_FIELDS.items():
            if r.given(key) and scenario not in scenarios:
                which = "scenarios " + ", ".join(scenarios) if len(scenarios) > 1 \
                    else f"scenario {scenarios[0]}"
                r.errors.append(f"{r.path}.{key}: applies only to {which}, not {scenario}")
        if scenario == "rma" and out["o2i"] == "high":
            r.errors.append(f"{r.path}.o2i: got 'high', but scenario rma has only the low-loss "
                            "O2I model; must be one of none, low")
        lo, hi = CARRIER_RANGE_HZ
        if isinstance(carrier_hz, float) and not lo <= carrier_hz <= hi:
            r.errors.append(f"{r.path}.carrier_hz: got {carrier_hz:g}, the TR 38.901 models "
                            f"of model: sionna cover {lo:g} to {hi:g} Hz")
    return None if len(r.errors) > n_errors else out


def _read_layers(r: Reader) -> list[LoRALayer] | None:
    """The ``layers`` list; None if absent or any layer is malformed (errors say why)."""
    raw_layers = r.raw("layers")
    if raw_layers is MISSING:
        return None
    if not isinstance(raw_layers, (list, tuple)) or not raw_layers:
        r.errors.append(f"{r.path}.layers: expected a non-empty list of layers")
        return None
    layers: list[LoRALayer] = []
    for i, item in enumerate(raw_layers):
        lr = Reader(item, f"{r.path}.layers[{i}]", r.errors, LoRALayer)
        vals = dict(
            name=lr.string("name", f"layer{i}"),  # the field has no default: it is per index
            d_out=lr.number("d_out", integer=True, ge=1, le=LIMITS["layer_dim"]),
            d_in=lr.number("d_in", integer=True, ge=1, le=LIMITS["layer_dim"]),
            count=lr.number("count", integer=True, ge=1, le=LIMITS["layer_count"]),
        )
        lr.finish()
        if _complete(vals):
            layers.append(LoRALayer(**vals))
    return layers if len(layers) == len(raw_layers) else None


def _read_lora(r: Reader) -> LoRASpec | None:
    layers = _read_layers(r)
    ranks = r.raw("ranks")
    bits = r.choice("bits_per_param", BITS_PER_PARAM)
    factors = r.choice("factors", FACTOR_MODES)
    r.finish()
    ok_ranks = _read_int_list(ranks, f"{r.path}.ranks", r.errors)
    if not layers or ok_ranks is None:
        return None
    max_rank = min(layer.max_rank for layer in layers)
    bad = [x for x in ok_ranks if x > max_rank]
    if bad:
        r.errors.append(
            f"{r.path}.ranks: rank {bad[0]} exceeds the smallest adapted layer "
            f"(min(d_out, d_in) = {max_rank}); ranks must lie in 1..{max_rank}"
        )
        return None
    if bits is None or factors is None:
        return None
    return LoRASpec(layers=tuple(layers), ranks=tuple(sorted(set(ok_ranks))),
                    bits_per_param=bits, factors=factors)


def _read_aircomp(r: Reader) -> AirCompSpec | None:
    streams = r.raw("streams")
    r.finish()
    if not r.given("streams"):  # the default: every count the antennas allow
        return AirCompSpec(streams=streams)
    ok = _read_int_list(streams, f"{r.path}.streams", r.errors)
    return None if ok is None else AirCompSpec(streams=tuple(sorted(set(ok))))


def _read_learning(r: Reader) -> LearningSpec | None:
    out = dict(
        smoothness=r.number("smoothness", gt=0),
        pl_constant=r.number("pl_constant", gt=0),
        step_size=r.number("step_size", gt=0),
        grad_variance=r.number("grad_variance", ge=0),
        initial_gap=r.number("initial_gap", ge=0),
        update_scale=r.number("update_scale", gt=0),
        update_scale_exponent=r.number("update_scale_exponent", ge=0),
        batch_size=r.number("batch_size", integer=True, ge=1),
        local_steps=r.number("local_steps", integer=True, ge=1),
        rounds=r.number("rounds", integer=True, ge=1),
        flops_per_sample=r.number("flops_per_sample", ge=0),
        spectrum_kind=r.choice("spectrum_kind", SPECTRUM_KINDS),
        spectrum_s1=r.number("spectrum_s1", ge=0),
        spectrum_alpha=r.number("spectrum_alpha", gt=0),
        spectrum_values=r.vector("spectrum_values", None, ge=0),
        testbed=r.choice("testbed", TESTBEDS),
    )
    algorithm = r.choice("algorithm", ALGORITHMS)
    r.finish()
    if not _complete(out):
        return None
    out["algorithm"] = algorithm
    if out["spectrum_kind"] == "measured" and not out["spectrum_values"]:
        r.errors.append(
            f"{r.path}.spectrum_values: required (a non-empty list) when spectrum_kind is "
            "'measured'"
        )
        return None
    if out["smoothness"] * out["step_size"] > 1 + 1e-12:
        r.errors.append(
            f"{r.path}.step_size: got {out['step_size']:g}, must be <= 1/smoothness = "
            f"{1 / out['smoothness']:g}"
        )
        return None
    return LearningSpec(**out)


def _read_constraints(r: Reader) -> ConstraintsSpec:
    out = {f.name: r.number(f.name, gt=0) for f in fields(ConstraintsSpec)}
    r.finish()
    return ConstraintsSpec(**out)


def _read_int_list(value: Any, name: str, errors: list[str]) -> list[int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        errors.append(f"{name}: expected a non-empty list of positive integers, got {value!r}")
        return None
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            errors.append(f"{name}[{i}]: got {v!r}, must be an integer >= 1")
            return None
    return list(value)


#: section key → (its dataclass, its reader), in the order a file is read and errors are listed
SECTION_READERS: dict[str, tuple[type, Callable[[Reader], Any]]] = {
    "server": (ServerSpec, _read_server),
    "devices": (DevicesSpec, _read_devices),
    "ofdm": (OFDMSpec, _read_ofdm),
    "channel": (ChannelSpec, _read_channel),
    "lora": (LoRASpec, _read_lora),
    "aircomp": (AirCompSpec, _read_aircomp),
    "learning": (LearningSpec, _read_learning),
    "constraints": (ConstraintsSpec, _read_constraints),
}


def read_sections(top: Reader) -> dict[str, Any]:
    """Every section of the top-level mapping: key → dataclass, or None where it failed (the
    reason is in ``top.errors``)."""
    return {key: read(top.section(key, spec)) for key, (spec, read) in SECTION_READERS.items()}


def read_section(key: str, data: Any, errors: list[str]) -> Any:
    """One section (``"server"``, ...) from its mapping; None if it failed (see ``errors``)."""
    spec, read = SECTION_READERS[key]
    return read(Reader(data, key, errors, spec))


# ---------------------------------------------------------------------------------------------
# Text and files
# ---------------------------------------------------------------------------------------------
def yaml_loader() -> type:
    """``yaml.SafeLoader`` made strict for hand-written files.

    - YAML 1.2 floats such as ``3.5e9`` and ``1e-3`` are numbers (PyYAML follows YAML 1.1,
      where a float needs a dot and a signed exponent, so ``3.5e9`` would be a string);
    - YAML 1.1's surprises are errors naming the line: a leading-zero integer (``010`` is 8 in
      YAML 1.1, 10 to a reader), a sexagesimal number (``1:30`` is 90), a duplicate key (YAML
      keeps the last silently);
    - more than :data:`MAX_ALIASES` aliases is refused (an alias bomb), and an integer longer
      than Python converts (4300 digits) is a YAML error, not a ``ValueError``.
    """
    import re

    import yaml
    from yaml.constructor import ConstructorError

    class _Loader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    raise ConstructorError(None, None, f"more than {MAX_ALIASES} aliases "
                                           "(an alias bomb?)", self.peek_event().start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise ConstructorError(None, None, f"duplicate key {key!r} (YAML would keep "
                                           "the last one silently)", key_node.start_mark)
                if isinstance(key, (str, int, float, bool)):
                    seen.add(key)
            return super().construct_mapping(node, deep=deep)

    def refuse_yaml11(loader: Any, node: Any) -> Any:
        raise ConstructorError(None, None, f"{node.value!r} is read differently by YAML 1.1 (a "
                               "leading zero is octal, a colon is base 60); write the number "
                               "plainly (10, 90) or quote it", node.start_mark)

    def integer(loader: Any, node: Any) -> Any:
        try:
            return yaml.SafeLoader.construct_yaml_int(loader, node)
        except ValueError:
            raise ConstructorError(None, None, f"an integer of {len(node.value)} digits is "
                                   "beyond what can be read", node.start_mark) from None

    resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    odd = re.compile(r"^[-+]?(?:0[0-9_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?)$")
    for first in "-+0123456789":
        resolvers.setdefault(first, [])
        resolvers[first].insert(0, ("tag:fedopt,2024:yaml11", odd))
    _Loader.yaml_implicit_resolvers = resolvers
    _Loader.add_constructor("tag:fedopt,2024:yaml11", refuse_yaml11)
    _Loader.add_constructor("tag:yaml.org,2002:int", integer)
    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return _Loader


def parse_text(text: str, path: Path) -> Any:
    """The mapping in ``text``: JSON if ``path`` ends in ``.json``, else YAML."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise InvalidInstanceError(
                f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", str(path)
            ) from None
        except (ValueError, RecursionError) as exc:  # a duplicate key, digits, depth
            raise InvalidInstanceError(f"not valid JSON: {exc}", str(path)) from None
    import yaml

    try:
        return yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidInstanceError(f"not valid YAML{where}: {problem}", str(path)) from None
    except RecursionError:
        raise InvalidInstanceError("not valid YAML: nested deeper than the reader allows (a "
                                   "few hundred levels)", str(path)) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} (a JSON reader would keep the last one)")
        out[key] = value
    return out


def read_file(path: Path) -> Any:
    """The mapping in a ``.yaml``/``.yml`` or ``.json`` file (at most :data:`MAX_FILE_BYTES`,
    UTF-8)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInstanceError(f"the file has {size} bytes; an instance or sweep file "
                                       f"is at most {MAX_FILE_BYTES} bytes", str(path))
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInstanceError(f"cannot read file: {exc.strerror}", str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInstanceError(f"not UTF-8 text: byte 0x{data[exc.start]:02x} at offset "
                                   f"{exc.start}", str(path)) from None
    return parse_text(text, path)
