"""The :class:`Instance`: the validated sections together, and what follows from them (spec 01).

It is immutable, validated on construction and round-trips exactly through YAML and JSON
(``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fedopt import aircomp as ac
from fedopt.channel import path_loss_db as _path_loss_db
from fedopt.errors import InvalidInstanceError
from fedopt.instance._schema import (
    MISSING,
    SCHEMA_VERSION,
    SUPPORTED_SCHEMA_VERSIONS,
    Reader,
    schema_message,
)
from fedopt.instance.parsing import read_file, read_sections
from fedopt.instance.sections import (
    ALGORITHM_FACTORS,
    ALGORITHM_PAYLOADS,
    SIONNA_DEFAULTS,
    TESTBED_TASKS,
    AirCompSpec,
    ChannelSpec,
    ConstraintsSpec,
    DevicesSpec,
    LearningSpec,
    LoRASpec,
    OFDMSpec,
    ServerSpec,
)
from fedopt.sionna_channel import instance_errors
from fedopt.units import db_to_linear, dbm_to_watt

__all__ = ["Instance"]

#: the sections of an instance, in file order
SECTIONS = ("server", "devices", "ofdm", "channel", "lora", "aircomp", "learning", "constraints")


def _algorithms_for(factors: str) -> list[str]:
    """The algorithms that send ``factors`` (the first is the default for them)."""
    return [a for a, f in ALGORITHM_FACTORS.items() if f == factors]


#: the channel array H (K, M, N_r, N_t) of one round, complex128, at most this many entries
#: (2**27: 2 GiB)
MAX_CHANNEL_ENTRIES = 2**27


def _derived_errors(inst: Instance) -> list[str]:
    """Derived quantities that would overflow, vanish or be unusable, named by the fields that
    cause them (checked once the fields themselves are valid)."""
    errors = []
    k, m, nr, nt = inst.n_devices, inst.n_subcarriers, inst.n_rx, inst.n_tx
    if k * m * nr * nt > MAX_CHANNEL_ENTRIES:
        errors.append(
            f"devices.count x ofdm.n_subcarriers x server.n_rx x devices.n_tx = {k} x {m} x "
            f"{nr} x {nt} = {k * m * nr * nt} channel entries per round; at most "
            f"{MAX_CHANNEL_ENTRIES} (2 GiB)")
        return errors
    with np.errstate(all="ignore"):
        beta = inst.path_loss
        t_cmp = inst.compute_time_s
        sigma2 = inst.noise_power_w
    if not np.all(np.isfinite(beta) & (beta > 0)):
        worst = float(np.max(inst.path_loss_db))
        errors.append(f"devices.distance_m: a path loss of {worst:.4g} dB leaves no signal "
                      f"(the power gain underflows to 0); check devices.distance_m and "
                      f"channel.carrier_hz")
    if not np.all(np.isfinite(t_cmp)):
        errors.append("devices.compute_flops: a compute speed this small makes the local "
                      "training time infinite; check devices.compute_flops and "
                      "learning.flops_per_sample")
    if not (np.isfinite(sigma2) and sigma2 > 0):
        errors.append(f"server.noise_psd_dbm_hz, server.noise_figure_db: the noise power per "
                      f"subcarrier would be {sigma2!r} W")
    return errors


@dataclass(frozen=True)
class Instance:
    """A validated, immutable network-design instance (spec 01 §1).

    Build one with :meth:`from_dict`, :meth:`load` or :func:`load_instance`; derive variants
    with :meth:`replace`, which re-validates.
    """

    server: ServerSpec
    devices: DevicesSpec
    ofdm: OFDMSpec
    lora: LoRASpec
    channel: ChannelSpec = field(default_factory=ChannelSpec)
    aircomp: AirCompSpec = field(default_factory=AirCompSpec)
    learning: LearningSpec = field(default_factory=LearningSpec)
    constraints: ConstraintsSpec = field(default_factory=ConstraintsSpec)
    name: str = "unnamed"
    description: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        errors: list[str] = []
        n_max = min(self.devices.n_tx, self.server.n_rx)
        if not self.aircomp.streams:
            object.__setattr__(self, "aircomp", AirCompSpec(streams=tuple(range(1, n_max + 1))))
        bad = [s for s in self.aircomp.streams if s > n_max]
        if bad:
            errors.append(
                f"aircomp.streams: L = {bad[0]} exceeds min(N_t, N_r) = min({self.devices.n_tx}, "
                f"{self.server.n_rx}) = {n_max}; streams must lie in 1..{n_max}"
            )
        if isinstance(self.schema_version, bool) \
                or self.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            errors.append(schema_message(self.schema_version))
        algorithm = self.learning.algorithm
        if algorithm is not None and ALGORITHM_FACTORS.get(algorithm, self.lora.factors) \
                != self.lora.factors:
            errors.append(
                f"lora.factors: got {self.lora.factors!r}, but learning.algorithm {algorithm!r} "
                f"sends {ALGORITHM_FACTORS[algorithm]!r}; set lora.factors: "
                f"{ALGORITHM_FACTORS[algorithm]} or choose an algorithm that sends "
                f"{self.lora.factors} ({', '.join(_algorithms_for(self.lora.factors))})")
        errors += instance_errors(self)  # distances and Doppler of channel.model: sionna
        if not errors:
            errors += _derived_errors(self)
        if errors:
            raise InvalidInstanceError(errors, source=self.name)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> Instance:
        """Validate a plain mapping (as read from YAML/JSON) and build an instance.

        Raises
        ------
        InvalidInstanceError
            Listing every problem found, each naming the field, its value and what is allowed.
        """
        errors: list[str] = []
        if not isinstance(data, Mapping):
            raise InvalidInstanceError(
                f"expected a mapping at the top level, got {type(data).__name__}", source
            )
        top = Reader(data, "", errors, cls)
        version = top.raw("schema_version", MISSING)  # files must state it; Python need not
        if version is not MISSING and (isinstance(version, bool)
                                       or version not in SUPPORTED_SCHEMA_VERSIONS):
            raise InvalidInstanceError(schema_message(version), source)
        name = top.string("name")
        description = top.string("description")
        sections = read_sections(top)
        top.finish()
        if errors:
            raise InvalidInstanceError(errors, source)
        try:
            return cls(**sections, name=name, description=description, schema_version=version)
        except InvalidInstanceError as exc:
            raise InvalidInstanceError(exc.errors, source) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-safe mapping; ``Instance.from_dict(x.to_dict()) == x``."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "description": self.description,
        }
        for section in SECTIONS:
            d = asdict(getattr(self, section))
            for key, value in list(d.items()):
                if isinstance(value, tuple):
                    value = list(value)
                if section == "devices" and isinstance(value, list) and len(set(value)) == 1:
                    value = value[0]  # a per-device field that is the same everywhere
                if value is None or (key == "spectrum_values" and not value) or (
                        section == "channel" and key in SIONNA_DEFAULTS
                        and SIONNA_DEFAULTS[key] == value):
                    del d[key]  # a Sionna field at its default is refilled when read
                    continue
                d[key] = value
            out[section] = d
        return out

    def replace(self, **changes: Any) -> Instance:
        """A new, re-validated instance with some sections or attributes changed."""
        return Instance.from_dict({**self.to_dict(), **_as_dicts(changes)}, source=self.name)

    def with_algorithm(self, algorithm: str) -> Instance:
        """This instance planned for ``algorithm`` (``learning.algorithm``, and ``lora.factors``
        as the algorithm sends them: B for ``ffa``, A for ``fedsa``, AB otherwise)."""
        if algorithm not in ALGORITHM_FACTORS:
            raise InvalidInstanceError(
                f"learning.algorithm: got {algorithm!r}, must be one of "
                f"{', '.join(ALGORITHM_FACTORS)}", self.name)
        d = self.to_dict()
        d["learning"]["algorithm"] = algorithm
        d["lora"]["factors"] = ALGORITHM_FACTORS[algorithm]
        return Instance.from_dict(d, source=self.name)

    def with_devices(self, **changes: Any) -> Instance:
        """Shortcut: change fields of the ``devices`` section (re-validated)."""
        d = self.to_dict()
        d["devices"].update(changes)
        return Instance.from_dict(d, source=self.name)

    # -- files --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> Instance:
        """Read an instance from a ``.yaml``/``.yml`` or ``.json`` file."""
        path = Path(path)
        return cls.from_dict(read_file(path), source=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the instance atomically; the format follows the suffix (.json, else YAML)."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        from fedopt.io import atomic_write_text

        atomic_write_text(path, text)
        return path

    def digest(self) -> str:
        """Short SHA-256 of the canonical JSON form (plans record it to detect mismatches)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- derived quantities (spec 01) ---------------------------------------------------------
    @property
    def n_devices(self) -> int:
        """K."""
        return self.devices.count

    @property
    def n_tx(self) -> int:
        """N_t."""
        return self.devices.n_tx

    @property
    def n_rx(self) -> int:
        """N_r."""
        return self.server.n_rx

    @property
    def n_subcarriers(self) -> int:
        """M."""
        return self.ofdm.n_subcarriers

    @property
    def symbol_time_s(self) -> float:
        """OFDM symbol time T_sym = (1 + cp) / Δf, seconds."""
        return (1.0 + self.ofdm.cp_ratio) / self.ofdm.subcarrier_spacing_hz

    @property
    def noise_power_w(self) -> float:
        """Noise power per subcarrier σ² = N0 · Δf · NF, watts."""
        n0 = float(db_to_linear(self.server.noise_psd_dbm_hz - 30.0))
        nf = float(db_to_linear(self.server.noise_figure_db))
        return n0 * self.ofdm.subcarrier_spacing_hz * nf

    @property
    def bandwidth_hz(self) -> float:
        """Total digital-uplink bandwidth B_tot (``constraints.bandwidth_hz`` or M · Δf)."""
        if self.constraints.bandwidth_hz is not None:
            return self.constraints.bandwidth_hz
        return self.ofdm.n_subcarriers * self.ofdm.subcarrier_spacing_hz

    @cached_property
    def power_w(self) -> np.ndarray:
        """Device power budgets P_k in watts, shape (K,)."""
        return dbm_to_watt(self.devices.p_max_dbm)

    @property
    def power_per_subcarrier_w(self) -> np.ndarray:
        """P_{k,m} = P_k / M (equal split over subcarriers, spec 02 §1), shape (K,)."""
        return self.power_w / self.ofdm.n_subcarriers

    @cached_property
    def weights(self) -> np.ndarray:
        """Aggregation weights φ_k = D_k / Σ D, shape (K,)."""
        d = np.asarray(self.devices.dataset_size, dtype=float)
        return d / d.sum()

    @cached_property
    def path_loss_db(self) -> np.ndarray:
        """Path loss of each device in dB, shape (K,) (spec 01 §1, :mod:`fedopt.channel`)."""
        return _path_loss_db(self.channel.path_loss, self.devices.distance_m,
                             self.channel.carrier_hz)

    @property
    def path_loss(self) -> np.ndarray:
        """Linear large-scale power gain β_k = 10^(−PL_dB/10), shape (K,)."""
        return 10.0 ** (-self.path_loss_db / 10.0)

    @property
    def algorithm(self) -> str:
        """The federated algorithm planned for: ``learning.algorithm``, or the one that sends
        ``lora.factors`` (AB → fedavg, B → ffa, A → fedsa)."""
        if self.learning.algorithm is not None:
            return self.learning.algorithm
        return _algorithms_for(self.lora.factors)[0]

    @property
    def payloads_per_round(self) -> int:
        """Vectors of q(r) reals each device sends per round: 2 for over-the-air Sophia (its
        gradient EMA m and Hessian estimate h), 0 for local training, one AirComp slot per task
        cluster for MIRA (the testbed's task count), 1 otherwise."""
        if self.algorithm == "mira":
            return TESTBED_TASKS[self.learning.testbed]
        return ALGORITHM_PAYLOADS[self.algorithm]

    @property
    def digital_payloads(self) -> int:
        """Vectors of q(r) reals each device sends per round over FDMA: MIRA sends its update
        once (the server needs every client's own), otherwise :attr:`payloads_per_round`."""
        return ALGORITHM_PAYLOADS[self.algorithm]

    def payload(self, rank: int | np.ndarray) -> int | np.ndarray:
        """q(r) times :attr:`payloads_per_round`: real LoRA parameters each device sends per
        round (spec 01 §2; the factors that travel included); vectorized over ranks."""
        per_rank = self.lora.params_per_rank * self.payloads_per_round
        return np.asarray(rank) * per_rank if np.ndim(rank) else int(rank) * per_rank

    def ofdm_symbols(self, rank: int | np.ndarray, streams: int | np.ndarray) -> Any:
        """S(r, L) = ⌈q(r) / (2 L M)⌉, OFDM symbols per round (spec 01 §3); vectorized."""
        # MIRA over AirComp: one transmission per task cluster, each of q(r) reals
        slots = self.payloads_per_round if self.algorithm == "mira" else 1
        return slots * ac.symbol_count(self.payload(rank) // slots, self.ofdm.n_subcarriers,
                                       streams)

    def airtime_s(self, rank: int | np.ndarray, streams: int | np.ndarray) -> Any:
        """AirComp uplink time S(r, L) · T_sym in seconds (spec 01 §3)."""
        return self.ofdm_symbols(rank, streams) * self.symbol_time_s

    @property
    def compute_time_s(self) -> np.ndarray:
        """T_cmp,k = E · b · FLOPs/sample / speed_k, shape (K,) (spec 01 §5)."""
        work = self.learning.local_steps * self.learning.batch_size * self.learning.flops_per_sample
        return work / np.asarray(self.devices.compute_flops, dtype=float)

    def aircomp_latency_s(self, rank: int | np.ndarray, streams: int | np.ndarray) -> Any:
        """AirComp round latency max_k T_cmp,k + S(r, L) · T_sym (spec 01 §5)."""
        return float(np.max(self.compute_time_s)) + self.airtime_s(rank, streams)

    def validate_rank(self, rank: int) -> int:
        """Check a rank against the layers; returns it or raises InvalidInstanceError."""
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not (
            1 <= rank <= self.lora.max_rank
        ):
            raise InvalidInstanceError(
                f"rank: got {rank!r}, must be an integer in 1..{self.lora.max_rank} "
                "(min(d_out, d_in) over the adapted layers)", self.name
            )
        return int(rank)

    def validate_streams(self, streams: int) -> int:
        """Check a stream count against min(N_t, N_r); returns it or raises."""
        n_max = min(self.n_tx, self.n_rx)
        if isinstance(streams, bool) or not isinstance(streams, (int, np.integer)) or not (
            1 <= streams <= n_max
        ):
            raise InvalidInstanceError(
                f"streams: got L = {streams!r}, must be an integer in 1..{n_max} = min(N_t, N_r)",
                self.name,
            )
        return int(streams)


def _as_dicts(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in changes.items()}
