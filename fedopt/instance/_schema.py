"""The instance-file schema: its version, and a tiny reader of typed, range-checked fields.

The :class:`Reader` pulls fields out of one section's mapping and collects errors; each names
the dotted field path, the offending value and what is allowed, so a user can fix a file from the
message alone. Unknown keys are errors too (a typo must not be ignored).

One default per field: a reader bound to a section dataclass (``spec``) takes a field's default
from that dataclass (:func:`default_of`), so the dataclass field is the only place a default is
written. A field without a default is required.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "SUPPORTED_SCHEMA_VERSIONS",
    "MISSING",
    "FIELD_DEFAULT",
    "Reader",
    "default_of",
    "schema_message",
]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)


def schema_message(version: Any) -> str:
    """The error for an unsupported ``schema_version``."""
    allowed = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
    return f"schema_version: got {version!r}, this fedopt reads schema version(s) {allowed}"


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return self.name


#: "no value": a required field that is absent (a default of MISSING makes a field required)
MISSING: Any = _Sentinel("MISSING")
#: "the default of the spec's field" (the default of every reader method)
FIELD_DEFAULT: Any = _Sentinel("FIELD_DEFAULT")


def default_of(spec: type, name: str) -> Any:
    """The default of field ``name`` of the dataclass ``spec``; MISSING if it has none.

    Read when called (never cached), so the dataclass stays the single source of every default.
    """
    for f in dataclasses.fields(spec):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return MISSING
    raise TypeError(f"{spec.__name__} has no field {name!r}")


def _fmt(value: Any) -> str:
    """A bounded repr: cut before it is built, so a huge value (a YAML alias bomb, an integer
    of thousands of digits) never costs its whole text."""
    import reprlib

    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    short = reprlib.Repr()  # keyword arguments need Python 3.12
    short.maxlevel, short.maxlist, short.maxdict, short.maxtuple = 2, 6, 4, 6
    short.maxstring = short.maxother = 40
    text = short.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Reader:
    """Read fields of one section of an instance file.

    Parameters
    ----------
    data
        The mapping of this section (anything else is reported as a type error).
    path
        Dotted path of this section (``"devices"``), used in messages.
    errors
        Shared list that collects every problem found.
    spec
        The dataclass this section becomes; an absent field takes its default from there
        (unless a reader call names another default). Without a spec every field is required.
    """

    def __init__(self, data: Any, path: str, errors: list[str], spec: type | None = None):
        self.path = path
        self.errors = errors
        self.spec = spec
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            errors.append(f"{path}: expected a mapping of fields, got {type(data).__name__}")
            data = {}
        self.data = data

    # -- helpers ------------------------------------------------------------------------------
    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if self.given(key):
            return self.data[key]
        if default is FIELD_DEFAULT:
            default = MISSING if self.spec is None else default_of(self.spec, key)
        if default is MISSING:
            self.errors.append(f"{self._name(key)}: missing required field")
        return default

    def _check_number(
        self,
        name: str,
        value: Any,
        *,
        integer: bool,
        gt: float | None,
        ge: float | None,
        le: float | None,
        lt: float | None,
    ) -> float | int | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = "an integer" if integer else "a number"
            self.errors.append(f"{name}: expected {kind}, got {_fmt(value)}")
            return None
        if isinstance(value, int) and abs(value) > 2**53:  # beyond exact float range
            self.errors.append(f"{name}: got {_fmt(value)}, beyond the range this field "
                               "can hold (|x| <= 2**53)")
            return None
        if integer and not float(value).is_integer():
            self.errors.append(f"{name}: expected an integer, got {_fmt(value)}")
            return None
        if not math.isfinite(value):
            self.errors.append(f"{name}: must be finite, got {value}")
            return None
        limits = [(op, bound) for op, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
                  if bound is not None]
        inside = {">": value > (gt or 0), ">=": value >= (ge or 0), "<": value < (lt or 0),
                  "<=": value <= (le or 0)}
        if not all(inside[op] for op, _ in limits):
            allowed = " and ".join(f"{op} {bound:g}" for op, bound in limits)
            self.errors.append(f"{name}: got {_fmt(value)}, must be {allowed}")
            return None
        return int(value) if integer else float(value)

    # -- public readers -----------------------------------------------------------------------
    def given(self, key: str) -> bool:
        """Whether the file sets ``key`` (to anything but null)."""
        return key in self.data and self.data[key] is not None

    def number(
        self,
        key: str,
        default: Any = FIELD_DEFAULT,
        *,
        integer: bool = False,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
        lt: float | None = None,
    ) -> Any:
        """A scalar number (``integer=True`` for counts) with optional bounds.

        An absent field reads as its default, unchecked (defaults are valid by construction).
        """
        if not self.given(key):
            return self._get(key, default)
        self.seen.add(key)
        return self._check_number(
            self._name(key), self.data[key], integer=integer, gt=gt, ge=ge, le=le, lt=lt
        )

    def vector(
        self,
        key: str,
        length: int | None,
        default: Any = FIELD_DEFAULT,
        *,
        integer: bool = False,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
        lt: float | None = None,
    ) -> Any:
        """A per-device quantity: one number (broadcast) or a list of ``length`` numbers."""
        value = self._get(key, default)
        if value is MISSING or value is None:
            return value
        name = self._name(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if length is None:  # a list field without a length: a lone number is no list
                self.errors.append(f"{name}: expected a list of numbers, got {_fmt(value)}")
                return None
            checked = self._check_number(name, value, integer=integer, gt=gt, ge=ge, le=le, lt=lt)
            if checked is None or length is None:
                return None
            return (checked,) * length
        if not isinstance(value, Sequence) or isinstance(value, str):
            self.errors.append(
                f"{name}: expected a number or a list of {length} numbers, got {_fmt(value)}"
            )
            return None
        if length is not None and len(value) != length:
            self.errors.append(
                f"{name}: expected {length} values (one per device) or a single number, "
                f"got a list of {len(value)}"
            )
            return None
        out = []
        for i, v in enumerate(value):
            checked = self._check_number(
                f"{name}[{i}]", v, integer=integer, gt=gt, ge=ge, le=le, lt=lt
            )
            if checked is None:
                return None
            out.append(checked)
        return tuple(out)

    def choice(self, key: str, options: Sequence[Any], default: Any = FIELD_DEFAULT) -> Any:
        """A value among ``options``."""
        value = self._get(key, default)
        if value is MISSING or value is None:
            return value
        if value not in options:
            allowed = ", ".join(str(o) for o in options)
            self.errors.append(f"{self._name(key)}: got {_fmt(value)}, must be one of {allowed}")
            return None
        return value

    def string(self, key: str, default: Any = FIELD_DEFAULT) -> Any:
        """A free-form string."""
        value = self._get(key, default)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, str):
            self.errors.append(f"{self._name(key)}: expected a string, got {_fmt(value)}")
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.errors.append(f"{self._name(key)}: contains a lone surrogate (not a text "
                               f"character): {_fmt(value)}")
            return None
        return value

    def section(self, key: str, spec: type | None = None) -> Reader:
        """A nested section read into ``spec`` (an absent section reads as empty, so its
        defaults apply)."""
        self.seen.add(key)
        return Reader(self.data.get(key), self._name(key), self.errors, spec)

    def raw(self, key: str, default: Any = FIELD_DEFAULT) -> Any:
        """The raw value, for fields with their own parser (e.g. a list of layers)."""
        return self._get(key, default)

    def finish(self) -> None:
        """Report keys that no reader asked for (typos, fields of another schema)."""
        import difflib

        for key in self.data:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                close = difflib.get_close_matches(str(key)[:100], sorted(self.seen), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.errors.append(f"{self._name(str(key)[:60])}: unknown field ({hint}known "
                                   f"fields: {known})")
