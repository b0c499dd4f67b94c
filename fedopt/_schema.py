"""A tiny schema reader: pulls typed, range-checked fields out of a mapping and collects errors.

Each error names the dotted field path, the offending value and what is allowed, so a user can
fix a file from the message alone. Unknown keys are errors too (a typo must not be ignored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "Reader"]


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "MISSING"


MISSING: Any = _Missing()


def _fmt(value: Any) -> str:
    text = repr(value)
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
    """

    def __init__(self, data: Any, path: str, errors: list[str]):
        self.path = path
        self.errors = errors
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
        if key in self.data and self.data[key] is not None:
            return self.data[key]
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
    def number(
        self,
        key: str,
        default: Any = MISSING,
        *,
        integer: bool = False,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
        lt: float | None = None,
    ) -> Any:
        """A scalar number (``integer=True`` for counts) with optional bounds."""
        if key in self.data and self.data[key] is not None:
            self.seen.add(key)
            value = self.data[key]
        else:
            return self._get(key, default)
        return self._check_number(
            self._name(key), value, integer=integer, gt=gt, ge=ge, le=le, lt=lt
        )

    def vector(
        self,
        key: str,
        length: int | None,
        default: Any = MISSING,
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

    def choice(self, key: str, options: Sequence[str], default: Any = MISSING) -> Any:
        """A string among ``options``."""
        value = self._get(key, default)
        if value is MISSING or value is None:
            return value
        if value not in options:
            allowed = ", ".join(str(o) for o in options)
            self.errors.append(f"{self._name(key)}: got {_fmt(value)}, must be one of {allowed}")
            return None
        return value

    def string(self, key: str, default: Any = MISSING) -> Any:
        """A free-form string."""
        value = self._get(key, default)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, str):
            self.errors.append(f"{self._name(key)}: expected a string, got {_fmt(value)}")
            return None
        return value

    def section(self, key: str) -> Reader:
        """A nested section (an absent section reads as empty, so its defaults apply)."""
        self.seen.add(key)
        return Reader(self.data.get(key), self._name(key), self.errors)

    def raw(self, key: str, default: Any = MISSING) -> Any:
        """The raw value, for fields with their own parser (e.g. a list of layers)."""
        return self._get(key, default)

    def finish(self) -> None:
        """Report keys that no reader asked for (typos, fields of another schema)."""
        for key in self.data:
            if key not in self.seen:
                known = ", ".join(sorted(self.seen)) or "none"
                self.errors.append(f"{self._name(str(key))}: unknown field (known fields: {known})")
