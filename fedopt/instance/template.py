"""An instance as a commented YAML template: the file ``fedopt instance new`` writes.

:func:`render_template` writes every section in block style, each under a comment with its
meaning and each field under a comment with its description and unit. Both are read from the
section dataclasses' docstrings (:mod:`fedopt.instance.sections`: the summary line, and the
numpydoc ``Attributes`` entries, parsed by :func:`field_docs`), so the template and the
documentation cannot drift. Which keys and values are written is :meth:`Instance.to_dict`'s
choice; optional fields left unset appear as commented-out lines (``# key: value``), so the
text loads back to the same instance.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import textwrap
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from typing import Any

from fedopt.instance.core import SECTIONS, Instance
from fedopt.instance.parsing import SECTION_READERS, yaml_loader
from fedopt.instance.sections import SIONNA_DEFAULTS, SIONNA_FIELDS, LoRALayer

__all__ = ["WIDTH", "FieldDoc", "field_docs", "section_summary", "format_number",
           "render_template"]

#: the longest line written (comments are wrapped to it)
WIDTH = 100
_INDENT = "  "

#: comments of the top-level keys (the :class:`Instance` attributes that are no section)
_TOP_DOCS = {
    "schema_version": "Version of the instance-file schema (required); this fedopt reads 1.",
    "name": "A short name for the instance (fedopt instance show prints it; plans record it).",
    "description": "Free text: what the instance models.",
}

#: example values of optional fields that have no derived value, and what unset means
_EXAMPLES = {
    ("devices", "energy_budget_j"): (1.0, "an example; unset: no energy budget"),
    ("constraints", "latency_budget_s"): (0.5, "an example; unset: no per-round budget"),
    ("constraints", "avg_latency_budget_s"): (1.0, "an example; unset: no average budget"),
    ("constraints", "total_time_s"): (3600.0, "an example; unset: no wall-clock budget"),
}


# ---------------------------------------------------------------------------------------------
# The docstrings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldDoc:
    """One numpydoc ``Attributes`` entry: the type line and the description (plain text)."""

    kind: str
    text: str

    @property
    def choices(self) -> tuple[str, ...]:
        """The values of a type written as a set, ``{"a", "b"} or None`` → ``("a", "b")``."""
        found = re.search(r"\{([^}]*)\}", self.kind)
        if not found:
            return ()
        return tuple(c.strip().strip("\"'") for c in found.group(1).split(","))


def _plain(text: str) -> str:
    """reST markup dropped: ``:func:`~a.b``` → ``a.b``, double back-quotes → plain."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``([^`]+)``", r"\1", text)


def _is_rule(line: str) -> bool:
    return len(line.strip()) >= 3 and set(line.strip()) == {"-"}


@cache
def field_docs(cls: type) -> dict[str, FieldDoc]:
    """The ``Attributes`` entries of a dataclass's docstring: field name → :class:`FieldDoc`.

    An entry may name several fields (``los, o2i : str``); each gets its text. A class without
    such a section (or run with ``python -OO``) gives an empty mapping.
    """
    lines = (inspect.getdoc(cls) or "").splitlines()
    start = next((i + 2 for i in range(len(lines) - 1)
                  if lines[i].strip() == "Attributes" and _is_rule(lines[i + 1])), None)
    if start is None:
        return {}
    entries: list[tuple[list[str], str, list[str]]] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if line.strip() and not line[0].isspace():
            if i + 1 < len(lines) and _is_rule(lines[i + 1]):
                break  # the next section
            head, _, kind = line.partition(":")
            entries.append(([n.strip() for n in head.split(",")], kind.strip(), []))
        elif entries:
            entries[-1][2].append(line.strip())
    out = {}
    for names, kind, body in entries:
        doc = FieldDoc(kind, _plain(" ".join(b for b in body if b)))
        out.update({name: doc for name in names})
    return out


def section_summary(cls: type) -> str:
    """The summary of a dataclass's docstring (its first paragraph), as plain text."""
    lines = (inspect.getdoc(cls) or "").splitlines()
    head = []
    for line in lines:
        if not line.strip():
            break
        head.append(line.strip())
    return _plain(" ".join(head))


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def format_number(x: Any) -> str:
    """A number as YAML that reads back exactly: integers as integers; floats of magnitude in
    [1e-4, 1e6) as Python writes them (``30000.0``, ``0.07``); others in scientific notation
    with the shortest mantissa (``1.0e+12``, ``3.5e+9``, ``9.607e-5``)."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    text = repr(x)
    if x == 0 or not math.isfinite(x) or 1e-4 <= abs(x) < 1e6:
        return text
    sign, digits, exponent = Decimal(text).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    power = int(exponent) + len(digits) - 1
    return f"{'-' if sign else ''}{mantissa[0]}.{mantissa[1:] or '0'}e{power:+d}"


@cache
def _loader() -> type:
    return yaml_loader()


def _reads_as(text: str, value: Any) -> bool:
    """Whether the instance reader reads ``text`` as ``value``."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader()) == value
    except yaml.YAMLError:
        return False


def _string(s: str) -> str:
    """A string as a one-line YAML scalar, safe in flow context too: plain where the instance
    reader reads it back as this string, else quoted."""
    import yaml

    for style in (None, '"'):
        text = yaml.safe_dump([s], default_flow_style=True, default_style=style,
                              allow_unicode=True, width=2**30).strip()
        if _reads_as(text, [s]):
            return text[1:-1]
    raise ValueError(f"cannot write {s!r} as YAML")  # pragma: no cover - "" always works


def _value(v: Any) -> str:
    if v is None:
        return "null"
    return _string(v) if isinstance(v, str) else format_number(v)


def _string_lines(key: str, s: str, indent: str) -> list[str]:
    """``key: s`` on one line if it fits, else folded (``>-``) at :data:`WIDTH`."""
    import yaml

    one = f"{key}: {_string(s)}"
    if len(indent) + len(one) <= WIDTH:
        return [indent + one]
    body = textwrap.wrap(s, WIDTH - len(indent) - 2, break_long_words=False,
                         break_on_hyphens=False)
    folded = "\n".join([f"{key}: >-", *(f"  {line}" for line in body)])
    if _reads_as(folded, {key: s}):
        return [indent + line for line in folded.splitlines()]
    # what the folding cannot keep (newlines, runs of spaces): PyYAML's quoted scalars, whose
    # width is a soft limit (a line ends after the word that passes it)
    fallback = None
    for style in (None, '"'):
        for width in range(WIDTH - len(indent) - 2, 20, -10):
            text = yaml.safe_dump({key: s}, default_style=style, allow_unicode=True, width=width)
            if not _reads_as(text, {key: s}):
                break
            lines = [indent + line for line in text.splitlines()]
            if max(map(len, lines)) <= WIDTH:
                return lines
            fallback = fallback or lines
    return fallback or [indent + one]


def _flow(head: str, items: list[str], close: str) -> list[str]:
    """``head`` + items joined by commas + ``close``, broken after a comma where a line would
    pass :data:`WIDTH`; continuation lines line up after ``head``."""
    if not items:
        return [head + close]
    pad, lines, line = " " * len(head), [], head
    for i, item in enumerate(items):
        piece = item + (close if i == len(items) - 1 else ",")
        if line != head and len(line) + 1 + len(piece) > WIDTH:
            lines.append(line)
            line = pad + piece
        else:
            line += ("" if line == head else " ") + piece
    return [*lines, line]


# ---------------------------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------------------------
def _comment(text: str, indent: str, hang: str = "") -> list[str]:
    """``text`` as comment lines of at most :data:`WIDTH` characters (``hang``: an indent
    after the ``#``, two more on continuation lines)."""
    return [f"{indent}# {line}" for line in
            textwrap.wrap(text, WIDTH - len(indent) - 2, initial_indent=hang,
                          subsequent_indent=hang + "  " if hang else "",
                          break_long_words=False, break_on_hyphens=False)]


def _field_text(doc: FieldDoc) -> str:
    """The description, with the choices of a set-typed field where the text omits some."""
    missing = [c for c in doc.choices
               if not re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", doc.text)]
    if missing:
        return f"{doc.text} One of: {', '.join(doc.choices)}."
    return doc.text


def _unset(inst: Instance, section: str, name: str) -> tuple[Any, str] | None:
    """An optional field that :meth:`Instance.to_dict` leaves out, as (a value to show, what
    leaving it out means); None where showing it would not help."""
    ch = inst.channel
    if section == "channel":
        if name == "model":
            return "sionna", "unset: the built-in model above; sionna also needs a scenario"
        if name == "scenario" and ch.model is None:
            return "umi", "an example, with model: sionna"
        if name in SIONNA_FIELDS and ch.model == "sionna" and ch.scenario in SIONNA_FIELDS[name]:
            return SIONNA_DEFAULTS[name], "the default"
        return None
    if (section, name) == ("learning", "algorithm"):
        return inst.algorithm, "unset: the one lora.factors implies (shown)"
    if (section, name) == ("constraints", "bandwidth_hz"):
        return inst.bandwidth_hz, "unset: M · Δf (shown)"
    return _EXAMPLES.get((section, name))


def _layers_lines(layers: list[dict[str, Any]]) -> list[str]:
    """``layers:`` as a block list of flow mappings, under the meaning of their keys."""
    lines = [line for key, doc in field_docs(LoRALayer).items()
             for line in _comment(f"{key}: {doc.text}", _INDENT, hang="  ")]
    lines.append(f"{_INDENT}layers:")
    for layer in layers:
        items = [f"{key}: {_value(value)}" for key, value in layer.items()]
        lines += _flow(f"{_INDENT * 2}- {{", items, "}")
    return lines


def _field_lines(inst: Instance, section: str, name: str, values: dict[str, Any]) -> list[str]:
    """The comment and the line(s) of one field (commented out where it is unset)."""
    cls = SECTION_READERS[section][0]
    doc = field_docs(cls).get(name)
    lines = _comment(_field_text(doc), _INDENT) if doc else []
    if name not in values:
        unset = _unset(inst, section, name)
        if unset is None:
            return []
        value, note = unset
        return [*lines, f"{_INDENT}# {name}: {_value(value)}  # {note}"]
    value = values[name]
    if section == "lora" and name == "layers":
        return [*lines, *_layers_lines(value)]
    if isinstance(value, list):
        return [*lines, *_flow(f"{_INDENT}{name}: [", [_value(v) for v in value], "]")]
    if isinstance(value, str):
        return [*lines, *_string_lines(name, value, _INDENT)]
    return [*lines, f"{_INDENT}{name}: {_value(value)}"]


def _header(inst: Instance, preset: str | None) -> list[str]:
    origin = f"from the preset {preset!r}, written by `fedopt instance new`" if preset \
        else f"of the instance {inst.name!r}"
    lines = [*_comment(f"A fedopt instance file (spec 01) {origin}.", ""), "#"]
    lines += _comment(
        "Every section and field carries a comment with its meaning and unit; edit any value "
        "(comments are not read back). Fields with a default may be left out. A line "
        "'# key: value  # ...' is an optional field left unset: remove the first '# ' to set "
        "it.", "")
    return [*lines, "#",
            "# Check it:  fedopt instance validate FILE",
            "# Show it, with derived quantities (noise, path loss, SNR, OFDM symbols):",
            "#            fedopt instance show FILE", ""]


def render_template(inst: Instance, *, preset: str | None = None) -> str:
    """The instance as a commented, block-style YAML template (lines of at most
    :data:`WIDTH` characters) that loads back to the same instance.

    Parameters
    ----------
    inst
        The instance; :meth:`Instance.to_dict` decides which keys and values are written.
    preset
        The preset it came from, named in the header (else the instance's name is).
    """
    data = inst.to_dict()
    lines = _header(inst, preset)
    for key in ("schema_version", "name", "description"):
        lines += _comment(_TOP_DOCS[key], "")
        value = data[key]
        lines += _string_lines(key, value, "") if isinstance(value, str) \
            else [f"{key}: {_value(value)}"]
    for section in SECTIONS:
        cls = SECTION_READERS[section][0]
        lines += ["", *_comment(section_summary(cls), ""), f"{section}:"]
        for f in fields(cls):
            lines += _field_lines(inst, section, f.name, data[section])
    return "\n".join(lines) + "\n"
