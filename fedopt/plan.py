"""Plans: the decision variables of a solution, saved for the FL loop and for scripts.

A plan holds the LoRA rank, the number of streams, the receive beamformers per subcarrier and
their power scaling (AirComp), or a bandwidth split and sparsity levels (digital uplinks), plus
metadata tying it to the instance and channel draw it was computed for. It round-trips exactly
through JSON (complex arrays encoded explicitly as real/imag lists) and ``.npz`` (plain arrays).

Plans are typed: :class:`AirCompPlan` (rank, streams, receive beamformers, the beamforming method
that re-optimizes them per round) and :class:`DigitalPlan` (rank, bandwidth and sparsity per
device) say what a plan is; :class:`Plan` is the generic base. A file records its ``kind`` and
loads back as the class that wrote it (files without ``kind``, written before the types existed,
are typed by their content).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fedopt.errors import FedOptError, PlanError
from fedopt.instance import Instance
from fedopt.io import atomic_savez, atomic_write_text, decode_array, encode_array

__all__ = ["AirCompPlan", "DigitalPlan", "PLAN_SCHEMA_VERSION", "PLAN_SUFFIXES", "Plan",
           "check_plan_suffix"]

PLAN_SCHEMA_VERSION = 1


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, (list, dict)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."

#: the plan file formats, by suffix
PLAN_SUFFIXES = (".json", ".npz")


def check_plan_suffix(path: str | os.PathLike, name: str = "plan file") -> Path:
    """``path`` if its suffix names a plan format (:data:`PLAN_SUFFIXES`), else an error."""
    from fedopt.errors import InvalidArgumentError

    path = Path(path)
    if path.suffix.lower() not in PLAN_SUFFIXES:
        raise InvalidArgumentError(
            f"{name}: {str(path)!r} has the suffix {path.suffix or '(none)'!r}; a plan is "
            f"written as {' or '.join(PLAN_SUFFIXES)} (the format follows the suffix)")
    return path


@dataclass(frozen=True, eq=False)
class Plan:
    """Decision variables of one solution.

    Attributes
    ----------
    method : str
        Name of the method that produced the plan (``"airfl-lora"``, ``"centroid"``, ...).
    rank : int
        LoRA rank r.
    streams : int
        Spatial streams L per subcarrier (1 for digital plans).
    receive_beamformers : ndarray or None
        Unit-Frobenius-norm receive beamformers A_m, complex, shape (M, N_r, L).
    power_scale : ndarray or None
        c_m ≥ 0 per subcarrier; the beamformer used on the air is c_m · A_m (spec 02 §2).
    bandwidth_hz : ndarray or None
        Bandwidth per device (digital uplink), shape (K,).
    sparsity : ndarray or None
        Sparsity ρ_k ∈ [0, 1) per device (digital uplink), shape (K,).
    instance_name, instance_digest : str
        The instance the plan was computed for (see :meth:`Instance.digest`).
    channel_seed, channel_round : int or None
        The channel draw the beamformers were optimized on.
    metadata : dict
        Free JSON-safe information (objective, solver options, versions, ...).
    """

    method: str
    rank: int
    streams: int
    receive_beamformers: np.ndarray | None = None
    power_scale: np.ndarray | None = None
    bandwidth_hz: np.ndarray | None = None
    sparsity: np.ndarray | None = None
    instance_name: str = ""
    instance_digest: str = ""
    channel_seed: int | None = None
    channel_round: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = PLAN_SCHEMA_VERSION

    _ARRAYS: ClassVar[tuple[str, ...]] = ("receive_beamformers", "power_scale", "bandwidth_hz",
                                          "sparsity")
    #: what the file's ``kind`` says; the loader returns the class of that kind
    KIND: ClassVar[str] = "plan"
    #: fields of a subclass beyond the base's, written to files next to the base fields
    _EXTRA: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.schema_version != PLAN_SCHEMA_VERSION:
            raise PlanError(
                f"schema_version: got {self.schema_version!r}, this fedopt reads plan schema "
                f"version {PLAN_SCHEMA_VERSION}"
            )
        for name, value in (("rank", self.rank), ("streams", self.streams)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise PlanError(f"{name}: got {value!r}, must be an integer >= 1")
        for name in ("method", "instance_name", "instance_digest"):
            if not isinstance(getattr(self, name), str):
                raise PlanError(f"{name}: got {_short(getattr(self, name))}, must be a string")
        if not isinstance(self.metadata, Mapping):
            raise PlanError(f"metadata: got {_short(self.metadata)}, must be a mapping")
        for name in ("channel_seed", "channel_round"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, np.integer)) or value < 0):
                raise PlanError(f"{name}: got {value!r}, must be an integer >= 0 or null (the "
                                "channel draw the plan was solved on)")
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.array(value, dtype=complex if name == "receive_beamformers" else float)
            if not np.all(np.isfinite(arr)):
                raise PlanError(f"{name}: contains NaN or inf entries")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        a = self.receive_beamformers
        if a is not None:
            if a.ndim != 3 or a.shape[2] != self.streams:
                raise PlanError(
                    f"receive_beamformers: expected shape (M, N_r, L={self.streams}), got {a.shape}"
                )
            zero = np.flatnonzero(~np.any(a.reshape(a.shape[0], -1) != 0, axis=1))
            if zero.size:
                raise PlanError(
                    f"receive_beamformers: A_m is all zero on subcarrier(s) "
                    f"{zero[:8].tolist()}{' ...' if zero.size > 8 else ''}; a receive "
                    "beamformer has unit Frobenius norm (nothing would be received)")
            if self.power_scale is not None and np.any(self.power_scale < 0):
                raise PlanError("power_scale: values must be >= 0 (c_m scales the unit-norm "
                                "beamformer A_m)")
            if self.power_scale is not None and self.power_scale.shape != (a.shape[0],):
                raise PlanError(
                    f"power_scale: expected shape ({a.shape[0]},) (one per subcarrier), "
                    f"got {self.power_scale.shape}"
                )
        if self.sparsity is not None and np.any((self.sparsity < 0) | (self.sparsity >= 1)):
            raise PlanError(f"sparsity: values must lie in [0, 1), got {self.sparsity.tolist()}")
        if self.bandwidth_hz is not None and np.any(self.bandwidth_hz < 0):
            raise PlanError("bandwidth_hz: values must be >= 0")

    # -- derived ------------------------------------------------------------------------------
    def beamformers(self) -> np.ndarray:
        """The scaled receive beamformers c_m · A_m used on the air, shape (M, N_r, L)."""
        if self.receive_beamformers is None:
            raise PlanError(f"plan of method {self.method!r} has no receive beamformers")
        if self.power_scale is None:
            return np.array(self.receive_beamformers)
        return self.receive_beamformers * self.power_scale[:, None, None]

    def check(self, instance: Instance, *, same_instance: bool = False) -> Plan:
        """Raise :class:`PlanError` if the plan's shapes disagree with ``instance``.

        With ``same_instance``, the plan must also have been made for this very instance: the
        digest it records (:meth:`Instance.digest`) must equal the instance's, since a plan for
        another instance of the same shapes (other powers, distances, budgets) fits the arrays
        but not the physics.
        """
        problems = []
        if not 1 <= self.rank <= instance.lora.max_rank:
            problems.append(
                f"rank: got {self.rank}, the instance's layers allow 1..{instance.lora.max_rank}"
            )
        n_max = min(instance.n_tx, instance.n_rx)
        if self.streams > n_max:
            problems.append(f"streams: got L = {self.streams}, must be <= min(N_t, N_r) = {n_max}")
        a = self.receive_beamformers
        if a is not None and a.shape[:2] != (instance.n_subcarriers, instance.n_rx):
            problems.append(
                f"receive_beamformers: shape {a.shape} but the instance has M = "
                f"{instance.n_subcarriers} subcarriers and N_r = {instance.n_rx} antennas"
            )
        for name in ("bandwidth_hz", "sparsity"):
            v = getattr(self, name)
            if v is not None and v.shape != (instance.n_devices,):
                problems.append(f"{name}: {v.shape[0]} values but the instance has "
                                f"K = {instance.n_devices} devices")
        if problems:
            raise PlanError(f"plan does not fit instance {instance.name!r}: " + "; ".join(problems))
        if (same_instance and self.instance_digest
                and self.instance_digest != instance.digest()):
            raise PlanError(
                f"the plan was made for instance {self.instance_name!r} (digest "
                f"{self.instance_digest}), not for {instance.name!r} (digest "
                f"{instance.digest()}): the two differ in some field, so its rank and "
                "beamformers were not chosen for this one; pass --other-instance to use it "
                "anyway")
        return self

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe mapping; arrays encoded with :func:`fedopt.io.encode_array`."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "method": self.method,
            "rank": int(self.rank),
            "streams": int(self.streams),
            "instance_name": self.instance_name,
            "instance_digest": self.instance_digest,
            "channel_seed": self.channel_seed,
            "channel_round": self.channel_round,
            "metadata": self.metadata,
            "kind": self.KIND,
            **{name: getattr(self, name) for name in self._EXTRA},
        }
        for name in self._ARRAYS:
            value = getattr(self, name)
            out[name] = None if value is None else encode_array(value)
        return out

    @classmethod
    def _check_keys(cls, data: Any) -> None:
        if not isinstance(data, Mapping):
            raise PlanError(f"expected a mapping, got {type(data).__name__}")
        known = {"schema_version", "method", "rank", "streams", "instance_name", "instance_digest",
                 "channel_seed", "channel_round", "metadata", "kind", *cls._ARRAYS,
                 *(f for k in _KINDS.values() for f in k._EXTRA)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PlanError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
        for key in ("method", "rank", "streams"):
            if key not in data:
                raise PlanError(f"{key}: missing required field")

    @classmethod
    def _build(cls, fields: Mapping[str, Any]) -> Plan:
        """The plan of the class that ``fields["kind"]`` names (or, for files without a kind,
        the class their content says); ``cls`` other than :class:`Plan` insists on its kind."""
        fields = dict(fields)
        kind = fields.pop("kind", None)
        extra = {f for k in _KINDS.values() for f in k._EXTRA}
        if kind is None:
            base = {k: v for k, v in fields.items() if k not in extra}
            klass = Plan(**base).typed_class() if cls is Plan else cls
        elif not isinstance(kind, str) or kind not in _KINDS:
            raise PlanError(f"kind: got {kind!r}, must be one of {', '.join(_KINDS)}")
        else:
            klass = _KINDS[kind]
        if cls is not Plan and klass is not cls:
            raise PlanError(f"kind: this is a {klass.KIND!r} plan, expected {cls.KIND!r}")
        if klass is AirCompPlan and "beamforming_method" not in fields:
            # written before plans were typed: the planner kept the method in the metadata
            method = (fields.get("metadata") or {}).get("beamforming_method")
            if method is not None:
                fields["beamforming_method"] = method
        unexpected = sorted(set(fields) & extra - set(klass._EXTRA))
        if unexpected:
            raise PlanError(f"{unexpected[0]}: not a field of a {klass.KIND!r} plan")
        return klass(**fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Inverse of :meth:`to_dict`, with messages naming the bad field."""
        cls._check_keys(data)
        kwargs = {k: v for k, v in data.items() if k not in cls._ARRAYS}
        try:
            for name in cls._ARRAYS:
                if data.get(name) is not None:
                    kwargs[name] = decode_array(data[name], name)
        except FedOptError as exc:
            raise PlanError(str(exc)) from None
        return cls._build(kwargs)

    def typed_class(self) -> type[Plan]:
        """:class:`AirCompPlan` for a plan with receive beamformers, :class:`DigitalPlan` for one
        with a bandwidth split and sparsity, else :class:`Plan`."""
        if self.receive_beamformers is not None:
            return AirCompPlan
        if self.bandwidth_hz is not None and self.sparsity is not None:
            return DigitalPlan
        return Plan

    def typed(self) -> Plan:
        """This plan as the typed class its content says (itself if it is typed already)."""
        klass = self.typed_class()
        if type(self) is not Plan or klass is Plan:
            return self
        d = {k: getattr(self, k) for k in ("method", "rank", "streams", *self._ARRAYS,
                                             "instance_name", "instance_digest", "channel_seed",
                                             "channel_round", "metadata")}
        return Plan._build({**d, "kind": klass.KIND})

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: ``.npz`` (arrays + JSON header) or ``.json``, by the suffix.

        Raises
        ------
        InvalidArgumentError
            For any other suffix (``plan.csv`` must not silently hold JSON).
        """
        path = Path(path)
        check_plan_suffix(path)
        if path.suffix.lower() == ".npz":
            header = {k: v for k, v in self.to_dict().items() if k not in self._ARRAYS}
            arrays = {n: getattr(self, n) for n in self._ARRAYS if getattr(self, n) is not None}
            return atomic_savez(path, header=np.array(json.dumps(header)), **arrays)
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        """Read a plan written by :meth:`save` (never unpickles)."""
        path = Path(path)
        try:
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    if "header" not in data.files:
                        raise PlanError(f"{path}: not a fedopt plan (no 'header' array)")
                    header = json.loads(str(data["header"]))
                    arrays = {n: data[n] for n in cls._ARRAYS if n in data.files}
                cls._check_keys(header)
                return cls._build({**header, **arrays})
            text = path.read_text(encoding="utf-8")
            return cls.from_dict(json.loads(text))
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise PlanError(f"{path}: not a readable plan file ({exc})") from None


@dataclass(frozen=True, eq=False)
class AirCompPlan(Plan):
    """An over-the-air (AirComp) plan: rank r, L streams and unit-norm receive beamformers A_m
    with their power scales c_m (spec 02 §2), solved on the channel draw
    (``channel_seed``, ``channel_round``).

    Attributes
    ----------
    beamforming_method : str
        The beamforming method that produced A_m (``fedopt solve --method`` names: beamforming,
        centroid, sdr, random, mrc, eigen); validation re-optimizes each round's beamformers
        with it.
    """

    beamforming_method: str = "beamforming"

    KIND: ClassVar[str] = "aircomp"
    _EXTRA: ClassVar[tuple[str, ...]] = ("beamforming_method",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.receive_beamformers is None:
            raise PlanError("receive_beamformers: an AirComp plan needs them, got none")
        if not isinstance(self.beamforming_method, str) or not self.beamforming_method:
            raise PlanError(f"beamforming_method: got {self.beamforming_method!r}, must be a "
                            "method name such as 'beamforming'")

    def mse_per_subcarrier(self, noise_power_w: float) -> np.ndarray:
        """MSE_m = σ² ‖c_m A_m‖²_F (spec 02 §2, ZF precoders), from the plan's own power scales;
        shape (M,). Needs ``power_scale``."""
        if self.power_scale is None:
            raise PlanError(f"power_scale: plan of method {self.method!r} has none, so its MSE "
                            "per subcarrier is not recorded")
        return float(noise_power_w) * np.sum(np.abs(self.beamformers()) ** 2, axis=(1, 2))


@dataclass(frozen=True, eq=False)
class DigitalPlan(Plan):
    """A digital (FDMA) plan: rank r, each device's band b_k and sparsity ρ_k (spec 04 §5);
    one stream."""

    KIND: ClassVar[str] = "digital"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bandwidth_hz is None or self.sparsity is None:
            raise PlanError("bandwidth_hz, sparsity: a digital plan needs both (one value per "
                            "device)")
        if self.bandwidth_hz.shape != self.sparsity.shape or self.bandwidth_hz.ndim != 1:
            raise PlanError(f"bandwidth_hz, sparsity: expected two arrays of shape (K,), got "
                            f"{self.bandwidth_hz.shape} and {self.sparsity.shape}")
        if self.streams != 1:
            raise PlanError(f"streams: got {self.streams}, a digital plan has 1")


_KINDS: dict[str, type[Plan]] = {k.KIND: k for k in (Plan, AirCompPlan, DigitalPlan)}
