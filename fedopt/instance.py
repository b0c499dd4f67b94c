"""Network-design instances (spec 01 §1–§5).

An :class:`Instance` is everything a planner fixes before optimizing: the server, the devices,
the OFDM numerology, the channel model, the LoRA layers, the learning profile of the gap model
and the constraints. It is immutable, validated on construction and round-trips exactly through
YAML and JSON (``to_dict`` / ``from_dict``). Units live in field names.

Per-device quantities are stored as tuples of length K; in files they may be written as one
number (the same for every device) or as a list of K numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from fedopt import aircomp as ac
from fedopt._schema import MISSING, Reader
from fedopt.errors import InvalidInstanceError
from fedopt.units import db_to_linear, dbm_to_watt

__all__ = [
    "SCHEMA_VERSION",
    "ServerSpec",
    "DevicesSpec",
    "OFDMSpec",
    "ChannelSpec",
    "LoRALayer",
    "LoRASpec",
    "AirCompSpec",
    "LearningSpec",
    "ConstraintsSpec",
    "Instance",
    "list_presets",
    "load_instance",
]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = (1,)

PATH_LOSS_MODELS = ("3gpp-uma", "38.901-umi", "free-space")
FADING_MODELS = ("rayleigh", "rician")
FACTOR_MODES = ("AB", "A", "B")
SPECTRUM_KINDS = ("power_law", "measured")


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSpec:
    """The edge server (receiver) of the uplink.

    Attributes
    ----------
    n_rx : int
        Receive antennas N_r.
    noise_psd_dbm_hz : float
        Thermal noise power spectral density N0 in dBm/Hz (−174 at 290 K).
    noise_figure_db : float
        Receiver noise figure in dB.
    """

    n_rx: int
    noise_psd_dbm_hz: float = -174.0
    noise_figure_db: float = 9.0

    @classmethod
    def _read(cls, r: Reader) -> ServerSpec | None:
        out = dict(
            n_rx=r.number("n_rx", integer=True, ge=1),
            noise_psd_dbm_hz=r.number("noise_psd_dbm_hz", -174.0, lt=0),
            noise_figure_db=r.number("noise_figure_db", 9.0, ge=0),
        )
        r.finish()
        return None if any(v is None or v is MISSING for v in out.values()) else cls(**out)


@dataclass(frozen=True)
class DevicesSpec:
    """The K devices (clients). Per-device fields are tuples of length ``count``.

    Attributes
    ----------
    count : int
        Number of devices K.
    n_tx : int
        Transmit antennas N_t of every device.
    p_max_dbm : tuple of float
        Transmit power budget P_k per device, dBm (spread evenly over subcarriers by default).
    distance_m : tuple of float
        Distance to the server, metres (path loss, spec 01 §1).
    dataset_size : tuple of float
        Local dataset size D_k; aggregation weights φ_k = D_k / Σ D.
    compute_flops : tuple of float
        Compute speed of each device in FLOP/s (local training time, spec 01 §5).
    energy_budget_j : tuple of float or None
        Optional per-round energy budget in joules.
    """

    count: int
    n_tx: int
    p_max_dbm: tuple[float, ...]
    distance_m: tuple[float, ...]
    dataset_size: tuple[float, ...]
    compute_flops: tuple[float, ...]
    energy_budget_j: tuple[float, ...] | None = None

    @classmethod
    def _read(cls, r: Reader) -> DevicesSpec | None:
        count = r.number("count", integer=True, ge=1)
        k = count if isinstance(count, int) else None
        out = dict(
            count=count,
            n_tx=r.number("n_tx", integer=True, ge=1),
            p_max_dbm=r.vector("p_max_dbm", k, gt=-100, le=60),
            distance_m=r.vector("distance_m", k, gt=0),
            dataset_size=r.vector("dataset_size", k, 1.0, gt=0),
            compute_flops=r.vector("compute_flops", k, 1e12, gt=0),
        )
        energy = r.vector("energy_budget_j", k, None, gt=0)
        r.finish()
        if any(v is None or v is MISSING for v in out.values()) or k is None:
            return None
        if not isinstance(out["dataset_size"], tuple):
            out["dataset_size"] = (1.0,) * k
        if not isinstance(out["compute_flops"], tuple):
            out["compute_flops"] = (1e12,) * k
        return cls(**out, energy_budget_j=energy)


@dataclass(frozen=True)
class OFDMSpec:
    """OFDM numerology.

    Attributes
    ----------
    n_subcarriers : int
        Number of subcarriers M used for the uplink.
    subcarrier_spacing_hz : float
        Subcarrier spacing Δf in Hz.
    cp_ratio : float
        Cyclic-prefix overhead; OFDM symbol time T_sym = (1 + cp) / Δf.
    """

    n_subcarriers: int
    subcarrier_spacing_hz: float
    cp_ratio: float = 0.07

    @classmethod
    def _read(cls, r: Reader) -> OFDMSpec | None:
        out = dict(
            n_subcarriers=r.number("n_subcarriers", integer=True, ge=1),
            subcarrier_spacing_hz=r.number("subcarrier_spacing_hz", gt=0),
            cp_ratio=r.number("cp_ratio", 0.07, ge=0, lt=1),
        )
        r.finish()
        return None if any(v is None or v is MISSING for v in out.values()) else cls(**out)


@dataclass(frozen=True)
class ChannelSpec:
    """Statistical channel model (spec 01 §1).

    Attributes
    ----------
    fading : {"rayleigh", "rician"}
        Small-scale fading.
    rician_k_db : float
        Rician K-factor in dB (LOS-to-scattered power ratio), used when ``fading == "rician"``.
    n_taps : int
        Multipath taps N_tap of the frequency-selective channel.
    tap_decay : float
        Exponential power-delay profile p_ℓ ∝ exp(−ℓ / tap_decay), normalized to Σ p_ℓ = 1.
    path_loss : {"3gpp-uma", "38.901-umi", "free-space"}
        Large-scale model: 128.1 + 37.6 log10(d_km); 32.4 + 21 log10(d_m) + 20 log10(f_GHz);
        or free-space 20 log10(4π d f / c).
    carrier_hz : float
        Carrier frequency (used by the frequency-dependent path-loss models).
    """

    fading: str = "rayleigh"
    rician_k_db: float = 3.0
    n_taps: int = 4
    tap_decay: float = 1.5
    path_loss: str = "3gpp-uma"
    carrier_hz: float = 3.5e9

    @classmethod
    def _read(cls, r: Reader) -> ChannelSpec | None:
        out = dict(
            fading=r.choice("fading", FADING_MODELS, "rayleigh"),
            rician_k_db=r.number("rician_k_db", 3.0, ge=-50, le=50),
            n_taps=r.number("n_taps", 4, integer=True, ge=1),
            tap_decay=r.number("tap_decay", 1.5, gt=0),
            path_loss=r.choice("path_loss", PATH_LOSS_MODELS, "3gpp-uma"),
            carrier_hz=r.number("carrier_hz", 3.5e9, gt=0),
        )
        r.finish()
        return None if any(v is None for v in out.values()) else cls(**out)

    def tap_powers(self) -> np.ndarray:
        """Power-delay profile p_ℓ (sums to one)."""
        p = np.exp(-np.arange(self.n_taps) / self.tap_decay)
        return p / p.sum()


@dataclass(frozen=True)
class LoRALayer:
    """``count`` identical adapted weights W ∈ R^{d_out × d_in} (B: d_out × r, A: r × d_in)."""

    name: str
    d_out: int
    d_in: int
    count: int = 1

    @property
    def max_rank(self) -> int:
        return min(self.d_out, self.d_in)


@dataclass(frozen=True)
class LoRASpec:
    """The adapted layers and the rank choices (spec 01 §2).

    Attributes
    ----------
    layers : tuple of LoRALayer
        Adapted weights.
    ranks : tuple of int
        Candidate ranks R, each in 1..min(d_out, d_in) of every layer.
    bits_per_param : int
        Bits per real parameter on a digital link (16 or 32).
    factors : {"AB", "A", "B"}
        Which LoRA factors travel each round.
    """

    layers: tuple[LoRALayer, ...]
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    bits_per_param: int = 16
    factors: str = "AB"

    @classmethod
    def _read(cls, r: Reader) -> LoRASpec | None:
        raw_layers = r.raw("layers")
        layers: list[LoRALayer] = []
        if raw_layers is not MISSING:
            if not isinstance(raw_layers, (list, tuple)) or not raw_layers:
                r.errors.append(f"{r.path}.layers: expected a non-empty list of layers")
            else:
                for i, item in enumerate(raw_layers):
                    lr = Reader(item, f"{r.path}.layers[{i}]", r.errors)
                    vals = dict(
                        name=lr.string("name", f"layer{i}"),
                        d_out=lr.number("d_out", integer=True, ge=1),
                        d_in=lr.number("d_in", integer=True, ge=1),
                        count=lr.number("count", 1, integer=True, ge=1),
                    )
                    lr.finish()
                    if all(v is not None and v is not MISSING for v in vals.values()):
                        layers.append(LoRALayer(**vals))
        ranks = r.raw("ranks", [1, 2, 4, 8, 16, 32, 64])
        bits = r.choice("bits_per_param", (16, 32), 16)
        factors = r.choice("factors", FACTOR_MODES, "AB")
        r.finish()
        ok_ranks = _read_int_list(ranks, f"{r.path}.ranks", r.errors)
        if not layers or len(layers) != len(raw_layers) or ok_ranks is None:
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
        return cls(layers=tuple(layers), ranks=tuple(sorted(set(ok_ranks))), bits_per_param=bits,
                   factors=factors)

    @property
    def max_rank(self) -> int:
        """Largest rank allowed by every layer: min over layers of min(d_out, d_in)."""
        return min(layer.max_rank for layer in self.layers)

    @property
    def params_per_rank(self) -> int:
        """q(1): real parameters sent per unit of rank (spec 01 §2)."""
        if self.factors == "AB":
            return sum(layer.count * (layer.d_out + layer.d_in) for layer in self.layers)
        if self.factors == "B":
            return sum(layer.count * layer.d_out for layer in self.layers)
        return sum(layer.count * layer.d_in for layer in self.layers)


@dataclass(frozen=True)
class AirCompSpec:
    """Over-the-air aggregation options (spec 02).

    Attributes
    ----------
    streams : tuple of int
        Candidate numbers of spatial streams L per subcarrier, each in 1..min(N_t, N_r).
    """

    streams: tuple[int, ...] = ()

    @classmethod
    def _read(cls, r: Reader) -> AirCompSpec | None:
        streams = r.raw("streams", None)
        r.finish()
        if streams is None:
            return cls()
        ok = _read_int_list(streams, f"{r.path}.streams", r.errors)
        return None if ok is None else cls(streams=tuple(sorted(set(ok))))


@dataclass(frozen=True)
class LearningSpec:
    """Constants of the optimality-gap model (spec 03 §1, §4). Defaults are documented guesses
    for a small LoRA fine-tuning job; calibrate them from a pilot run of the FL loop.

    Attributes
    ----------
    smoothness : float
        L_s, smoothness constant of the loss (1/parameter-units²).
    pl_constant : float
        μ, Polyak–Łojasiewicz constant.
    step_size : float
        λ, learning rate (must satisfy λ ≤ 1/L_s).
    grad_variance : float
        σ_g², per-sample stochastic-gradient variance.
    initial_gap : float
        Δ0 = F(w0) − F*, loss units.
    update_scale : float
        v, the normalization scale of the transmitted update (spec 01 §3), at rank 1.
    update_scale_exponent : float
        β in v(r) = v · r^(−β): how the per-entry update scale falls with the rank. 0 (the
        default) is a rank-independent v; with the rank-stabilized LoRA scale α/r ∝ 1/√r that
        ``fedopt validate`` trains with, the loop measures β ≈ 0.5 (``fedopt calibrate``).
    batch_size : int
        Local mini-batch size b.
    local_steps : int
        Local steps E per round (1 = FedSGD).
    rounds : int
        Number of rounds T when it is fixed.
    flops_per_sample : float
        Training FLOPs per sample (local compute time, spec 01 §5).
    spectrum_kind : {"power_law", "measured"}
        Singular-value profile of the optimal update (rank-truncation error).
    spectrum_s1 : float
        s_1 of the power-law profile s_i = s_1 i^{−α}.
    spectrum_alpha : float
        α of the power-law profile.
    spectrum_values : tuple of float
        Measured singular values (descending) when ``spectrum_kind == "measured"``.
    """

    smoothness: float = 10.0
    pl_constant: float = 0.05
    step_size: float = 0.05
    grad_variance: float = 1.0
    initial_gap: float = 2.0
    update_scale: float = 1.0
    update_scale_exponent: float = 0.0
    batch_size: int = 16
    local_steps: int = 1
    rounds: int = 200
    flops_per_sample: float = 1e9
    spectrum_kind: str = "power_law"
    spectrum_s1: float = 1.0
    spectrum_alpha: float = 1.0
    spectrum_values: tuple[float, ...] = ()

    @classmethod
    def _read(cls, r: Reader) -> LearningSpec | None:
        out = dict(
            smoothness=r.number("smoothness", 10.0, gt=0),
            pl_constant=r.number("pl_constant", 0.05, gt=0),
            step_size=r.number("step_size", 0.05, gt=0),
            grad_variance=r.number("grad_variance", 1.0, ge=0),
            initial_gap=r.number("initial_gap", 2.0, ge=0),
            update_scale=r.number("update_scale", 1.0, gt=0),
            update_scale_exponent=r.number("update_scale_exponent", 0.0, ge=0),
            batch_size=r.number("batch_size", 16, integer=True, ge=1),
            local_steps=r.number("local_steps", 1, integer=True, ge=1),
            rounds=r.number("rounds", 200, integer=True, ge=1),
            flops_per_sample=r.number("flops_per_sample", 1e9, ge=0),
            spectrum_kind=r.choice("spectrum_kind", SPECTRUM_KINDS, "power_law"),
            spectrum_s1=r.number("spectrum_s1", 1.0, ge=0),
            spectrum_alpha=r.number("spectrum_alpha", 1.0, gt=0),
        )
        values = r.vector("spectrum_values", None, (), ge=0)
        r.finish()
        if any(v is None for v in out.values()) or values is None:
            return None
        if out["spectrum_kind"] == "measured" and not values:
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
        return cls(**out, spectrum_values=tuple(values))


@dataclass(frozen=True)
class ConstraintsSpec:
    """Latency constraints (spec 01 §1, §5). All are optional; unset means unconstrained.

    Attributes
    ----------
    latency_budget_s : float or None
        Per-round latency budget T_max.
    avg_latency_budget_s : float or None
        Long-term average latency budget T̄ (TSFA).
    total_time_s : float or None
        Wall-clock budget T_total (then T = ⌊T_total / T_round⌋).
    bandwidth_hz : float or None
        Total bandwidth B_tot of the digital (FDMA) uplink; defaults to M · Δf.
    """

    latency_budget_s: float | None = None
    avg_latency_budget_s: float | None = None
    total_time_s: float | None = None
    bandwidth_hz: float | None = None

    @classmethod
    def _read(cls, r: Reader) -> ConstraintsSpec:
        out = {f.name: r.number(f.name, None, gt=0) for f in fields(cls)}
        r.finish()
        return cls(**out)


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


# ---------------------------------------------------------------------------------------------
# The instance
# ---------------------------------------------------------------------------------------------
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
        if self.schema_version not in SUPPORTED_SCHEMA_VERSIONS:
            errors.append(_schema_msg(self.schema_version))
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
        top = Reader(data, "", errors)
        version = top.raw("schema_version")
        if version is not MISSING and version not in SUPPORTED_SCHEMA_VERSIONS:
            raise InvalidInstanceError(_schema_msg(version), source)
        name = top.string("name", "unnamed")
        description = top.string("description", "")
        server = ServerSpec._read(top.section("server"))
        devices = DevicesSpec._read(top.section("devices"))
        ofdm = OFDMSpec._read(top.section("ofdm"))
        channel = ChannelSpec._read(top.section("channel"))
        lora = LoRASpec._read(top.section("lora"))
        aircomp = AirCompSpec._read(top.section("aircomp"))
        learning = LearningSpec._read(top.section("learning"))
        constraints = ConstraintsSpec._read(top.section("constraints"))
        top.finish()
        if errors:
            raise InvalidInstanceError(errors, source)
        try:
            return cls(
                server=server, devices=devices, ofdm=ofdm, lora=lora, channel=channel,
                aircomp=aircomp, learning=learning, constraints=constraints,
                name=name, description=description, schema_version=version,
            )
        except InvalidInstanceError as exc:
            raise InvalidInstanceError(exc.errors, source) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-safe mapping; ``Instance.from_dict(x.to_dict()) == x``."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "name": self.name,
            "description": self.description,
        }
        for section in ("server", "devices", "ofdm", "channel", "lora", "aircomp", "learning",
                        "constraints"):
            d = asdict(getattr(self, section))
            for key, value in list(d.items()):
                if isinstance(value, tuple):
                    value = list(value)
                if section == "devices" and isinstance(value, list) and len(set(value)) == 1:
                    value = value[0]  # a per-device field that is the same everywhere
                if value is None or (key == "spectrum_values" and not value):
                    del d[key]
                    continue
                d[key] = value
            out[section] = d
        return out

    def replace(self, **changes: Any) -> Instance:
        """A new, re-validated instance with some sections or attributes changed."""
        return Instance.from_dict({**self.to_dict(), **_as_dicts(changes)}, source=self.name)

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
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInstanceError(f"cannot read file: {exc.strerror}", str(path)) from None
        return cls.from_dict(_parse_text(text, path), source=str(path))

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
        """Path loss of each device in dB, shape (K,) (spec 01 §1)."""
        d_m = np.asarray(self.devices.distance_m, dtype=float)
        model = self.channel.path_loss
        f_ghz = self.channel.carrier_hz / 1e9
        if model == "3gpp-uma":
            return 128.1 + 37.6 * np.log10(d_m / 1000.0)
        if model == "38.901-umi":
            return 32.4 + 21.0 * np.log10(d_m) + 20.0 * np.log10(f_ghz)
        return 20.0 * np.log10(4 * math.pi * d_m * self.channel.carrier_hz / 299_792_458.0)

    @property
    def path_loss(self) -> np.ndarray:
        """Linear large-scale power gain β_k = 10^(−PL_dB/10), shape (K,)."""
        return 10.0 ** (-self.path_loss_db / 10.0)

    def payload(self, rank: int | np.ndarray) -> int | np.ndarray:
        """q(r): real LoRA parameters sent per round (spec 01 §2); vectorized over ranks."""
        return np.asarray(rank) * self.lora.params_per_rank if np.ndim(rank) else (
            int(rank) * self.lora.params_per_rank
        )

    def ofdm_symbols(self, rank: int | np.ndarray, streams: int | np.ndarray) -> Any:
        """S(r, L) = ⌈q(r) / (2 L M)⌉, OFDM symbols per round (spec 01 §3); vectorized."""
        return ac.symbol_count(self.payload(rank), self.ofdm.n_subcarriers, streams)

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


def _schema_msg(version: Any) -> str:
    allowed = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
    return f"schema_version: got {version!r}, this fedopt reads schema version(s) {allowed}"


def _as_dicts(changes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in changes.items()}


def _yaml_loader() -> type:
    """``yaml.SafeLoader`` that also reads YAML 1.2 floats such as ``3.5e9`` and ``1e-3``.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``3.5e9`` would
    load as the string ``'3.5e9'`` and be rejected as "expected a number".
    """
    import re

    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return _Loader


def _parse_text(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInstanceError(
                f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})", str(path)
            ) from None
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise InvalidInstanceError(f"not valid YAML{where}: {exc}", str(path)) from None


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
def list_presets() -> list[str]:
    """Names of the instance presets shipped with the package."""
    root = resources.files("fedopt") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


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
        res = resources.files("fedopt") / "presets" / f"{name}.yaml"
        return Instance.from_dict(_parse_text(res.read_text(encoding="utf-8"), Path(res.name)),
                                  source=f"preset {name!r}")
    raise InvalidInstanceError(
        f"{name!r} is neither an existing file nor a preset; valid presets: {', '.join(presets)}"
    )
