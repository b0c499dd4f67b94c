"""Per-subcarrier MIMO channels with path loss and block fading (spec 01 §1).

Large-scale path loss PL_k in dB (:func:`path_loss_db`, one of :data:`PATH_LOSS_MODELS`) sets
the mean power gain β_k = 10^(−PL_k/10) of device k; the small-scale fading is

H_{k,m} = √β_k Σ_ℓ H̃_{k,ℓ} e^{−j2π m ℓ / M},  H̃_{k,ℓ} ∈ C^{N_r × N_t}, entries CN(0, p_ℓ),

with Σ_ℓ p_ℓ = 1 so that E|[H_{k,m}]_{ij}|² = β_k. Rician fading adds a rank-one line-of-sight
component (half-wavelength ULAs at both ends, angles fixed per device by the seed) to the first
tap with power K/(K+1), keeping the mean power at β_k.

Block fading: round ``t`` of seed ``s`` is drawn from its own generator
``SeedSequence(s, spawn_key=(1, t))``, so any round is reproducible without drawing the others.
Arrays are ``complex128`` of shape ``(K, M, N_r, N_t)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedopt.errors import ChannelFileError, FedOptError, InvalidArgumentError
from fedopt.io import NPZ_ERRORS, atomic_savez, check_npz

if TYPE_CHECKING:  # fedopt.instance imports this module (path loss): no import cycle at run time
    from fedopt.instance import Instance

__all__ = ["Channel", "draw_channel", "validate_channel_array", "path_loss_db",
           "CHANNEL_FILE_VERSION", "PATH_LOSS_MODELS"]

CHANNEL_FILE_VERSION = 1

#: large-scale models of :func:`path_loss_db` (the ``channel.path_loss`` field of an instance)
PATH_LOSS_MODELS = ("3gpp-uma", "38.901-umi", "free-space")

SPEED_OF_LIGHT_M_S = 299_792_458.0


def path_loss_db(model: str, distance_m, carrier_hz: float) -> np.ndarray:
    """Path loss PL in dB at each distance (spec 01 §1), same shape as ``distance_m``.

    * ``"3gpp-uma"``: 128.1 + 37.6 log10(d / km) (independent of the carrier);
    * ``"38.901-umi"``: 32.4 + 21 log10(d / m) + 20 log10(f / GHz);
    * ``"free-space"``: 20 log10(4π d f / c).

    Raises
    ------
    InvalidArgumentError
        For a model not in :data:`PATH_LOSS_MODELS`.
    """
    d_m = np.asarray(distance_m, dtype=float)
    if model == "3gpp-uma":
        return 128.1 + 37.6 * np.log10(d_m / 1000.0)
    if model == "38.901-umi":
        return 32.4 + 21.0 * np.log10(d_m) + 20.0 * np.log10(carrier_hz / 1e9)
    if model == "free-space":
        return 20.0 * np.log10(4 * math.pi * d_m * carrier_hz / SPEED_OF_LIGHT_M_S)
    raise InvalidArgumentError(
        f"path_loss: got {model!r}, must be one of {', '.join(PATH_LOSS_MODELS)}"
    )


def _ula(n: int, theta: np.ndarray) -> np.ndarray:
    """Half-wavelength uniform linear array responses, shape (len(theta), n), unit-modulus."""
    return np.exp(1j * np.pi * np.arange(n)[None, :] * np.sin(theta)[:, None])


def validate_channel_array(h: np.ndarray, instance: Instance | None = None,
                           name: str = "H") -> np.ndarray:
    """Check a channel array and return it as complex128.

    Raises
    ------
    ChannelFileError
        On a wrong number of dimensions, non-numeric data, NaN/inf entries, or shapes that
        disagree with the instance (the message names the axis, both sizes and the field).
    """
    h = np.asarray(h)
    if h.dtype.kind not in "fc":
        raise ChannelFileError(f"{name}: expected a real or complex float array, got {h.dtype}")
    if h.ndim != 4:
        raise ChannelFileError(
            f"{name}: expected 4 axes (K devices, M subcarriers, N_r, N_t), got shape {h.shape}"
        )
    bad = ~np.isfinite(h)
    if bad.any():
        k, m, i, j = (int(x) for x in np.argwhere(bad)[0])
        raise ChannelFileError(
            f"{name}: {int(bad.sum())} non-finite entries (NaN or inf), first at device {k}, "
            f"subcarrier {m}, entry ({i}, {j}); channel entries must be finite"
        )
    _check_range(h, name)
    if instance is not None:
        expected = (instance.n_devices, instance.n_subcarriers, instance.n_rx, instance.n_tx)
        labels = ("devices.count (K)", "ofdm.n_subcarriers (M)", "server.n_rx (N_r)",
                  "devices.n_tx (N_t)")
        for axis, (got, want, label) in enumerate(zip(h.shape, expected, labels, strict=True)):
            if got != want:
                raise ChannelFileError(
                    f"{name}: axis {axis} has size {got} but the instance {instance.name!r} has "
                    f"{label} = {want}; expected shape {expected}, got {h.shape}"
                )
    return h.astype(np.complex128, copy=False)


#: usable channel power gains |h|² (a real one is 1e-20 .. 1: path loss 200 .. 0 dB): squares
#: beyond these overflow or underflow in the solvers' normal equations
GAIN_RANGE = (1e-100, 1e100)


def _check_range(h: np.ndarray, name: str) -> None:
    """Every device's channel must be usable: not all zero, and |h|² within GAIN_RANGE."""
    if h.size == 0:
        return
    with np.errstate(all="ignore"):
        gain = np.mean(np.abs(h.astype(np.complex128)) ** 2, axis=tuple(range(1, h.ndim)))
        peak = float(np.max(np.abs(h).astype(np.float64)) ** 2)  # inf past float range
    lo, hi = GAIN_RANGE
    weak = np.flatnonzero(~(gain >= lo))
    if weak.size:
        raise ChannelFileError(f"{name}: device {int(weak[0])} has a mean gain |h|² of "
                               f"{gain[weak[0]]:.3g}, below {lo:g} (all zero, or a path loss "
                               "past 1000 dB); no signal to plan for")
    if not peak <= hi:
        raise ChannelFileError(f"{name}: an entry has |h|² = {peak:.3g}, above {hi:g}; a "
                               "channel of this scale overflows the solvers (real gains are "
                               "at most 1)")


@dataclass(frozen=True, eq=False)
class Channel:
    """One block-fading channel realization.

    Attributes
    ----------
    H : ndarray, complex, shape (K, M, N_r, N_t)
        Per-device, per-subcarrier channel matrices (path loss included).
    seed, round : int or None
        Provenance when drawn by :func:`draw_channel` (None when loaded from arbitrary data).
    """

    H: np.ndarray
    seed: int | None = None
    round: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "H", validate_channel_array(self.H))
        self.H.setflags(write=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(K, M, N_r, N_t)."""
        return self.H.shape  # type: ignore[return-value]

    def mean_gain(self) -> np.ndarray:
        """Mean |h|² per device over subcarriers and antenna pairs, shape (K,)."""
        return np.mean(np.abs(self.H) ** 2, axis=(1, 2, 3))

    def check(self, instance: Instance) -> Channel:
        """Raise :class:`ChannelFileError` if the shapes disagree with ``instance``."""
        validate_channel_array(self.H, instance)
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` file (plain arrays, no pickle) atomically."""
        meta = np.array([CHANNEL_FILE_VERSION,
                         -1 if self.seed is None else self.seed,
                         -1 if self.round is None else self.round], dtype=np.int64)
        return atomic_savez(path, H=self.H, meta=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, instance: Instance | None = None) -> Channel:
        """Read an ``.npz`` channel file (``allow_pickle=False``) and validate it.

        Parameters
        ----------
        instance
            If given, the array shape must match (K, M, N_r, N_t) of this instance.
        """
        path = Path(path)
        try:
            check_npz(path)  # headers first: a huge claimed array is refused unread
        except FedOptError as exc:
            raise ChannelFileError(str(exc).replace(".npz file", ".npz channel file", 1)
                                   ) from None
        try:
            with np.load(path, allow_pickle=False) as data:
                if "H" not in data.files:
                    raise ChannelFileError(
                        f"{path}: no array named 'H' (found: {', '.join(data.files) or 'none'}); "
                        "a channel file holds H with shape (K, M, N_r, N_t)"
                    )
                h = data["H"]
                meta = data["meta"] if "meta" in data.files else None
        except ChannelFileError:
            raise
        except NPZ_ERRORS as exc:
            raise ChannelFileError(f"{path}: not a readable .npz channel file ({exc})") from None
        seed = rnd = None
        if meta is not None:
            if meta.shape != (3,) or meta.dtype.kind not in "iu":
                raise ChannelFileError(f"{path}: 'meta' must be 3 integers, got {meta!r}")
            if int(meta[0]) != CHANNEL_FILE_VERSION:
                raise ChannelFileError(
                    f"{path}: channel file version {int(meta[0])} is not supported "
                    f"(this fedopt reads version {CHANNEL_FILE_VERSION})"
                )
            seed = None if meta[1] < 0 else int(meta[1])
            rnd = None if meta[2] < 0 else int(meta[2])
        h = validate_channel_array(h, instance, name=f"{path.name}: H")
        return cls(H=h, seed=seed, round=rnd)


def draw_channel(instance: Instance, seed: int, round: int = 0) -> Channel:
    """Draw the channel of round ``round`` for ``seed`` (spec 01 §1), reproducibly.

    Parameters
    ----------
    instance
        Gives K, M, N_r, N_t, the path loss β_k and the fading model; ``channel.model:
        sionna`` draws TR 38.901 channels instead (:mod:`fedopt.sionna_channel`).
    seed
        Non-negative integer; the same (seed, round) always gives the same array.
    round
        Block-fading index t ≥ 0; rounds are independent draws.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidArgumentError(f"seed: got {seed!r}, must be a non-negative integer")
    if isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 0:
        raise InvalidArgumentError(f"round: got {round!r}, must be a non-negative integer")
    if instance.channel.model == "sionna":  # TR 38.901 via the optional Sionna extra
        from fedopt.sionna_channel import draw_sionna_channel

        return Channel(H=draw_sionna_channel(instance, int(seed), int(round)), seed=int(seed),
                       round=int(round))
    k, m, nr, nt = instance.n_devices, instance.n_subcarriers, instance.n_rx, instance.n_tx
    spec = instance.channel
    p_tap = spec.tap_powers()
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(1, int(round))))
    shape = (k, spec.n_taps, nr, nt)
    taps = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / np.sqrt(2.0)
    taps *= np.sqrt(p_tap)[None, :, None, None]
    if spec.fading == "rician":
        kf = 10.0 ** (spec.rician_k_db / 10.0)
        geo = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0,)))
        theta_r = geo.uniform(-np.pi / 2, np.pi / 2, size=k)
        theta_t = geo.uniform(-np.pi / 2, np.pi / 2, size=k)
        los = _ula(nr, theta_r)[:, :, None] * np.conj(_ula(nt, theta_t))[:, None, :]
        taps *= np.sqrt(1.0 / (kf + 1.0))
        taps[:, 0] += np.sqrt(kf / (kf + 1.0)) * los
    # DFT over taps for each subcarrier: (M, N_tap), e^{-j 2π m ℓ / M}
    dft = np.exp(-2j * np.pi * np.outer(np.arange(m), np.arange(spec.n_taps)) / m)
    h = np.einsum("ml,klrt->kmrt", dft, taps)
    h *= np.sqrt(instance.path_loss)[:, None, None, None]
    return Channel(H=h, seed=int(seed), round=int(round))
