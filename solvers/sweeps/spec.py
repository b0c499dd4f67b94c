"""The sweep file of ``fedopt sweep SPEC.yaml`` (its top-level keys are a public contract)::

    schema_version: 1
    instance: default            # a file (relative to the sweep file) or a preset
    grid:                        # field path -> values; the cells are the Cartesian product
      devices.count: [10, 20, 50]
      server.n_rx: [8, 16, 32]
    methods: [airfl-lora, exhaustive]
    seeds: [0, 1, 2]             # channel draws
    kind: solve                  # or validate: one FL validation run per cell

Further keys: ``name`` (a label), ``round`` (the block-fading round a ``solve`` cell draws,
default 0) and ``validate`` (the settings of ``kind: validate`` cells: ``quick``, default true;
``rounds``; ``mode``, ``exact`` or ``equivalent``).

:func:`load_sweep` reads and checks the file; every problem is reported at once, each naming the
key or field path, the value and what is allowed (:class:`~fedopt.errors.InvalidSweepError`).
The instances of the cells are validated by :func:`fedopt.solvers.sweeps.cells.expand`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedopt.errors import InvalidInstanceError, InvalidSweepError

__all__ = ["SWEEP_SCHEMA_VERSIONS", "KINDS", "VALIDATE_MODES", "MAX_CELLS", "SweepSpec",
           "ValidateOptions", "load_sweep", "field_paths"]

SWEEP_SCHEMA_VERSIONS = (1,)
#: what one cell runs: a ``fedopt solve`` or a ``fedopt validate`` of one method and seed
KINDS = ("solve", "validate")
VALIDATE_MODES = ("exact", "equivalent")
#: a grid larger than this is refused before anything is built (a typo such as a range of a
#: million values must not fill the memory)
MAX_CELLS = 1_000_000
_TOP_KEYS = ("schema_version", "name", "instance", "grid", "methods", "seeds", "kind", "round",
             "validate")
_SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class ValidateOptions:
    """Settings of the validation run of each ``kind: validate`` cell.

    Attributes
    ----------
    quick : bool
        The short run of ``fedopt validate --quick`` (default) instead of the full one.
    rounds : int or None
        Rounds per run (default: the run's own, as ``fedopt validate``).
    mode : {"exact", "equivalent"}
        The AirComp path (``fedopt validate --mode``).
    """

    quick: bool = True
    rounds: int | None = None
    mode: str = "exact"


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep file (see the module notes).

    Attributes
    ----------
    instance : str
        A preset name, or the path of an instance file (resolved against the sweep file's
        folder when :func:`load_sweep` read it).
    grid : tuple of (str, tuple)
        Field path (``section.field`` of the instance schema) and its values, in file order.
    methods : tuple of str
        Registry methods (``kind: validate`` also takes ``ideal`` and ``digital``).
    seeds : tuple of int
        Channel seeds.
    kind : {"solve", "validate"}
    round : int
        Block-fading round of a ``solve`` cell.
    name : str or None
    validate : ValidateOptions
    """

    instance: str = "default"
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    methods: tuple[str, ...] = ("airfl-lora",)
    seeds: tuple[int, ...] = (0,)
    kind: str = "solve"
    round: int = 0
    name: str | None = None
    validate: ValidateOptions = field(default_factory=ValidateOptions)

    @property
    def n_cells(self) -> int:
        """Grid points × methods × seeds."""
        return math.prod(len(v) for _, v in self.grid) * len(self.methods) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form (``DIR/sweep.json``); ``SweepSpec.from_dict`` reads it back."""
        return {"schema_version": 1, "name": self.name, "instance": self.instance,
                "grid": {path: list(values) for path, values in self.grid},
                "methods": list(self.methods), "seeds": list(self.seeds), "kind": self.kind,
                "round": self.round, "validate": dataclasses.asdict(self.validate)}

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None,
                  base_dir: str | os.PathLike | None = None) -> SweepSpec:
        """Check a mapping (as read from YAML/JSON) and build the spec.

        Raises
        ------
        InvalidSweepError
            Listing every problem found.
        """
        if not isinstance(data, Mapping):
            raise InvalidSweepError(f"expected a mapping at the top level, got "
                                    f"{type(data).__name__}", source)
        errors: list[str] = []
        unknown = [str(k) for k in data if k not in _TOP_KEYS]
        if unknown:
            errors.append(f"unknown key(s) {', '.join(map(repr, unknown))}; a sweep file has "
                          f"{', '.join(_TOP_KEYS)}")
        version = data.get("schema_version")
        if isinstance(version, bool) or version not in SWEEP_SCHEMA_VERSIONS:
            errors.append(f"schema_version: got {version!r}, this fedopt reads sweep schema "
                          f"version(s) {', '.join(map(str, SWEEP_SCHEMA_VERSIONS))}")
        kind = data.get("kind", "solve")
        if kind not in KINDS:
            errors.append(f"kind: got {kind!r}, must be one of {', '.join(KINDS)}")
            kind = "solve"
        out = {
            "name": _optional_string(data, "name", errors),
            "instance": _instance_ref(data, errors, base_dir),
            "grid": _grid(data.get("grid", {}), errors),
            "methods": _methods(data.get("methods", ["airfl-lora"]), kind, errors),
            "seeds": _seeds(data.get("seeds", [0]), errors),
            "round": _count(data.get("round", 0), "round", errors),
            "validate": _validate_options(data.get("validate", {}), errors),
        }
        if not errors:
            n = math.prod(len(v) for _, v in out["grid"]) * len(out["methods"]) * len(
                out["seeds"])
            if n > MAX_CELLS:
                errors.append(f"grid: {n} cells (grid points x methods x seeds); at most "
                              f"{MAX_CELLS} per sweep: split it into several sweeps")
        if errors:
            raise InvalidSweepError(errors, source)
        return cls(kind=kind, **out)


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read a sweep file (``.yaml``/``.yml`` or ``.json``) and check it.

    Raises
    ------
    InvalidSweepError
        The file cannot be read or parsed, or a key is unknown or wrong (all reported).
    """
    from fedopt.instance.parsing import read_file

    path = Path(path)
    if not path.is_file():
        raise InvalidSweepError(f"no such file {str(path)!r}; pass a sweep file (.yaml or "
                                f".json)", None)
    try:
        data = read_file(path)
    except InvalidInstanceError as exc:  # the shared YAML/JSON reader names the format error
        raise InvalidSweepError(exc.errors, str(path)) from None
    return SweepSpec.from_dict(data, source=str(path), base_dir=path.parent)


def field_paths() -> dict[str, tuple[str, ...]]:
    """Every grid field path by section: ``{"devices": ("count", "n_tx", ...), ...}``."""
    from fedopt.instance.parsing import SECTION_READERS

    return {section: tuple(f.name for f in dataclasses.fields(spec))
            for section, (spec, _) in SECTION_READERS.items()}


# ---------------------------------------------------------------------------------------------
def _optional_string(data: Mapping, key: str, errors: list[str]) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        errors.append(f"{key}: got {_short(value)}, expected a string")
        return None
    return value


def _instance_ref(data: Mapping, errors: list[str], base_dir: Any) -> str:
    ref = data.get("instance", "default")
    if not isinstance(ref, str) or not ref:
        errors.append(f"instance: got {_short(ref)}, expected a preset name or an instance "
                      "file path")
        return "default"
    if base_dir is not None and not Path(ref).is_absolute():
        candidate = Path(base_dir) / ref
        if candidate.exists():
            return str(candidate)
    return ref


def _grid(grid: Any, errors: list[str]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if grid is None:
        return ()
    if not isinstance(grid, Mapping):
        errors.append(f"grid: got {_short(grid)}, expected a mapping of field paths to lists "
                      "of values (e.g. devices.count: [10, 20])")
        return ()
    paths = field_paths()
    out = []
    for path, values in grid.items():
        name = f"grid.{path}"
        section, _, fld = str(path).partition(".")
        if section not in paths or fld not in paths[section]:
            if section in paths:
                hint = f"{section} has {', '.join(paths[section])}"
            else:
                hint = f"the sections are {', '.join(paths)}"
            errors.append(f"{name}: {str(path)!r} is not a field path of the instance "
                          f"schema (section.field); {hint}")
            continue
        if not isinstance(values, list) or not values:
            errors.append(f"{name}: got {_short(values)}, expected a non-empty list of values")
            continue
        bad = [v for v in values if not _plain(v)]
        if bad:
            errors.append(f"{name}: value {_short(bad[0])} is not a number, string, list or "
                          "mapping")
            continue
        keys = [_canonical(v) for v in values]
        if len(set(keys)) < len(keys):
            errors.append(f"{name}: the values {_short(values)} repeat one (a cell would run "
                          "twice)")
            continue
        out.append((str(path), tuple(values)))
    return tuple(out)


def _methods(methods: Any, kind: str, errors: list[str]) -> tuple[str, ...]:
    from fedopt.solvers.registry import names

    valid = names() if kind == "solve" else [*names("planner"), *names("beamforming"),
                                             "ideal", "digital"]
    if not isinstance(methods, list) or not methods:
        errors.append(f"methods: got {_short(methods)}, expected a non-empty list of method "
                      f"names ({', '.join(valid)})")
        return ()
    bad = [m for m in methods if m not in valid]
    if bad:
        errors.append(f"methods: {', '.join(map(repr, bad))} not a method of kind {kind}; "
                      f"valid: {', '.join(valid)}")
    if len(set(map(str, methods))) < len(methods):
        errors.append(f"methods: {_short(methods)} names a method twice")
    return tuple(str(m) for m in methods)


def _seeds(seeds: Any, errors: list[str]) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds:
        errors.append(f"seeds: got {_short(seeds)}, expected a non-empty list of integers "
                      ">= 0 such as [0, 1, 2]")
        return ()
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        errors.append(f"seeds: {_short(bad[0])} is not an integer >= 0")
        return ()
    if len(set(seeds)) < len(seeds):
        errors.append(f"seeds: {_short(seeds)} repeats a seed")
    return tuple(seeds)


def _count(value: Any, name: str, errors: list[str], *, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        errors.append(f"{name}: got {_short(value)}, expected an integer >= {low}")
        return low
    return value


def _validate_options(data: Any, errors: list[str]) -> ValidateOptions:
    if data is None:
        return ValidateOptions()
    if not isinstance(data, Mapping):
        errors.append(f"validate: got {_short(data)}, expected a mapping with quick, rounds, "
                      "mode")
        return ValidateOptions()
    known = [f.name for f in dataclasses.fields(ValidateOptions)]
    unknown = [str(k) for k in data if k not in known]
    if unknown:
        errors.append(f"validate: unknown key(s) {', '.join(map(repr, unknown))}; valid: "
                      f"{', '.join(known)}")
    quick = data.get("quick", True)
    if not isinstance(quick, bool):
        errors.append(f"validate.quick: got {_short(quick)}, expected true or false")
        quick = True
    rounds = data.get("rounds")
    if rounds is not None:
        rounds = _count(rounds, "validate.rounds", errors, low=1)
    mode = data.get("mode", "exact")
    if mode not in VALIDATE_MODES:
        errors.append(f"validate.mode: got {_short(mode)}, must be one of "
                      f"{', '.join(VALIDATE_MODES)}")
        mode = "exact"
    return ValidateOptions(quick=quick, rounds=rounds, mode=mode)


def _plain(value: Any, depth: int = 0) -> bool:
    """A YAML/JSON value made of numbers, strings, lists and mappings (not nested deeper than
    a layer list needs)."""
    if depth > 4:
        return False
    if value is None or isinstance(value, _SCALARS):
        return not (isinstance(value, float) and not math.isfinite(value))
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _canonical(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)


def _short(value: Any) -> str:
    """A bounded repr: never builds the whole text of a huge value (a YAML alias bomb)."""
    import reprlib

    short = reprlib.Repr()  # keyword arguments need Python 3.12
    short.maxlevel, short.maxlist, short.maxdict = 2, 6, 4
    short.maxstring = short.maxother = 40
    text = short.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
