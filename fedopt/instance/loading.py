"""Instances by name or path: the presets shipped in ``fedopt/presets/*.yaml`` and files."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from fedopt.errors import InvalidInstanceError
from fedopt.instance.core import Instance
from fedopt.instance.parsing import parse_text

__all__ = ["list_presets", "load_instance"]


def _preset_dir():
    return resources.files("fedopt") / "presets"


def list_presets() -> list[str]:
    """Names of the instance presets shipped with the package."""
    return sorted(p.name[: -len(".yaml")] for p in _preset_dir().iterdir()
                  if p.name.endswith(".yaml"))


def load_instance(name_or_path: str | os.PathLike) -> Instance:
    """Load an instance from a file path, or a shipped preset by name (``"default"``).

    Raises
    ------
    InvalidInstanceError
        If the file is malformed or the name is neither a file nor a preset (the valid preset
        names are listed in the message).
    """
    path = Path(name_or_path)
    if path.exists():
        return Instance.load(path)
    name = str(name_or_path)
    presets = list_presets()
    if name in presets:
        res = _preset_dir() / f"{name}.yaml"
        return Instance.from_dict(parse_text(res.read_text(encoding="utf-8"), Path(res.name)),
                                  source=f"preset {name!r}")
    raise InvalidInstanceError(
        f"{name!r} is neither an existing file nor a preset; valid presets: {', '.join(presets)}"
    )
