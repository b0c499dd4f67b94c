"""Finished pilots of :func:`fedopt.solvers.validation.calibrate.calibrate` on disk, so that an
interrupted calibration resumes where it stopped.

A pilot depends only on the instance, the training recipe, its rounds, rank, seed and noise
level (every pilot of a seed shares mini-batches and LoRA initialization), so a saved pilot is
the pilot a rerun would compute. Each is one JSON file ``<dir>/pilots/<key>.json`` (plain JSON,
no pickle; the learned update's singular values exactly, through :func:`fedopt.io.encode_array`)
written atomically when the pilot finishes; ``key`` is a SHA-256 of everything the pilot
computes and fedopt's version. A record that cannot be read, or that holds another key, is
treated as missing and rerun.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fedopt.errors import FedOptError
from fedopt.io import atomic_write_text, decode_array, encode_array, ensure_dir
from fedopt.solvers.validation.calibration_pilots import _Pilot

__all__ = ["PILOTS", "load_pilot", "pilot_key", "run_key", "save_pilot", "saved_pilots"]

#: the folder of the pilot records inside a calibration's output folder
PILOTS = "pilots"


def _digest(payload: dict[str, Any]) -> str:
    import fedopt

    text = json.dumps({**payload, "fedopt": fedopt.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def pilot_key(instance: Any, recipe: Any, *, rounds: int, rank: int, seed: int,
              noise: float) -> str:
    """The SHA-256 of what one pilot computes (instance, recipe, rounds, rank, seed, noise)."""
    return _digest({"instance": instance.digest(), "recipe": recipe.to_dict(),
                    "rounds": int(rounds), "rank": int(rank), "seed": int(seed),
                    "noise": float(noise)})


def run_key(instance: Any, recipe: Any, plan: Any, truncation: str) -> str:
    """``<instance>-<12 hex>``: one folder per calibration (the default ``--out``)."""
    digest = _digest({"instance": instance.digest(), "recipe": recipe.to_dict(),
                      "rounds": plan.rounds, "ranks": list(plan.ranks),
                      "seeds": list(plan.seeds), "noise_levels": list(plan.noise_levels),
                      "noise_rank": plan.noise_rank, "truncation": truncation})
    return f"{instance.name}-{digest[:12]}"


def _plain(value: Any) -> Any:
    """A record value as JSON (NaN/inf as strings: strict JSON, read back exactly)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    return value


def save_pilot(folder: Path, key: str, pilot: _Pilot) -> Path:
    """Write one finished pilot as ``folder/pilots/<key>.json`` (atomically)."""
    body = {"key": key, "record": {k: _plain(v) for k, v in pilot.record.items()},
            "sv": None if pilot.sv is None else encode_array(pilot.sv),
            "spreads": [float(x) for x in pilot.spreads]}
    path = ensure_dir(Path(folder) / PILOTS, "--out") / f"{key}.json"
    return atomic_write_text(path, json.dumps(body, allow_nan=False))


def load_pilot(folder: Path, key: str) -> _Pilot | None:
    """The saved pilot of ``key``, or None (missing, unreadable or another pilot's record)."""
    path = Path(folder) / PILOTS / f"{key}.json"
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(body, dict) or body.get("key") != key:
            return None
        record = {k: _unplain(v) for k, v in dict(body["record"]).items()}
        sv = None if body["sv"] is None else decode_array(body["sv"], "sv")
        spreads = [float(x) for x in body["spreads"]]
    except (OSError, ValueError, KeyError, TypeError, FedOptError):
        return None
    return _Pilot(record, None if sv is None else np.asarray(sv, dtype=float), spreads)


def saved_pilots(folder: Path) -> int:
    """How many pilot records ``folder`` holds (readable or not)."""
    path = Path(folder) / PILOTS
    return len(list(path.glob("*.json"))) if path.is_dir() else 0
