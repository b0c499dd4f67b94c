"""The cells of a sweep: grid point × method × seed, each with its validated instance and the
digest that keys it on disk.

Order: the grid points in the Cartesian order of the file (the last field path varies fastest),
then the methods, then the seeds. The table of a sweep lists its cells in this order whatever
order they finished in.

**Per-device lists and ``devices.count``.** When a cell sets ``devices.count`` to K and the base
instance gives a per-device field (``distance_m``, ``dataset_size``, ...) as a list of another
length K₀, the list is resampled to K values by quantile: device i takes the value of base
device ⌊(i + ½) K₀ / K⌋. For K a multiple of K₀ every base device appears K / K₀ times; for
K < K₀ the K devices are spread evenly over the base list, so the cell keeps the base
population's spread of distances and data sizes. A field that the cell sets itself is left as
given.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedopt.errors import InvalidInstanceError, InvalidSweepError
from fedopt.solvers.sweeps.spec import SweepSpec, ValidateOptions

__all__ = ["Cell", "expand", "resize_devices", "cell_label"]


@dataclass(frozen=True)
class Cell:
    """One run of a sweep.

    Attributes
    ----------
    index : int
        Position in the sweep's cell order.
    values : tuple of (str, value)
        The grid values of this cell (field path, value).
    method, seed, kind, round
        What runs (see :class:`~fedopt.solvers.sweeps.spec.SweepSpec`).
    instance : dict
        The cell's instance as a validated mapping (``Instance.to_dict()``).
    validate : ValidateOptions
    key : str
        Digest of everything the result depends on (instance, method, seed, kind, round,
        validation settings, fedopt's version): the name of its record on disk.
    """

    index: int
    values: tuple[tuple[str, Any], ...]
    method: str
    seed: int
    kind: str
    round: int
    instance: dict[str, Any]
    validate: ValidateOptions
    key: str


def resize_devices(devices: Mapping[str, Any], count: int,
                   keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``devices`` mapping with every per-device list resampled to ``count`` values (module
    notes); fields in ``keep`` and scalars are left as they are."""
    from fedopt.instance.sections import _PER_DEVICE

    out = dict(devices)
    for name in _PER_DEVICE:
        values = out.get(name)
        if name in keep or not isinstance(values, list) or len(values) == count:
            continue
        k0 = len(values)
        if k0 == 0:
            continue
        out[name] = [values[min(k0 - 1, int((i + 0.5) * k0 / count))] for i in range(count)]
    return out


def cell_label(values: tuple[tuple[str, Any], ...]) -> str:
    """``devices.count=10, server.n_rx=8`` (the grid point named in messages)."""
    return ", ".join(f"{path}={json.dumps(v)}" for path, v in values) or "(no grid)"


def _base_instance(spec: SweepSpec) -> dict[str, Any]:
    from fedopt.instance import load_instance

    try:
        return load_instance(spec.instance).to_dict()
    except InvalidInstanceError as exc:
        raise InvalidSweepError([f"instance: {spec.instance!r}: {e}" for e in exc.errors]
                                ) from None


def _point_instance(base: dict[str, Any], values: tuple[tuple[str, Any], ...]
                    ) -> dict[str, Any]:
    """Validate the instance of one grid point; :class:`InvalidInstanceError` if it is not."""
    from fedopt.instance import Instance

    data = copy.deepcopy(base)
    for path, value in values:
        section, _, name = path.partition(".")
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][name] = copy.deepcopy(value)
    set_here = tuple(p.partition(".")[2] for p, _ in values if p.startswith("devices."))
    count = data.get("devices", {}).get("count")
    if "count" in set_here and isinstance(count, int) and not isinstance(count, bool) \
            and 1 <= count <= 10**7:
        data["devices"] = resize_devices(data["devices"], count, keep=set_here)
    return Instance.from_dict(data, source=data.get("name")).to_dict()


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of ``spec``, each instance validated (nothing has run yet).

    Raises
    ------
    InvalidSweepError
        The base instance, or the instance of any grid point, is invalid; every failing point
        is listed with its grid values and the instance's own messages.
    """
    from fedopt import __version__

    base = _base_instance(spec)
    paths = [p for p, _ in spec.grid]
    points = list(itertools.product(*(values for _, values in spec.grid)))
    errors: list[str] = []
    instances: list[dict[str, Any]] = []
    for point in points:
        values = tuple(zip(paths, point, strict=True))
        try:
            instances.append(_point_instance(base, values))
        except InvalidInstanceError as exc:
            errors.extend(f"cell {cell_label(values)}: {e}" for e in exc.errors)
    if errors:
        raise InvalidSweepError(errors)
    cells: list[Cell] = []
    options = {"quick": spec.validate.quick, "rounds": spec.validate.rounds,
               "mode": spec.validate.mode}
    for point, inst in zip(points, instances, strict=True):
        values = tuple(zip(paths, point, strict=True))
        for method in spec.methods:
            for seed in spec.seeds:
                key = _digest({"fedopt": __version__, "kind": spec.kind, "instance": inst,
                               "method": method, "seed": seed, "round": spec.round,
                               "validate": options if spec.kind == "validate" else None})
                cells.append(Cell(index=len(cells), values=values, method=method, seed=seed,
                                  kind=spec.kind, round=spec.round, instance=inst,
                                  validate=spec.validate, key=key))
    return cells
