"""3GPP TR 38.901 channels drawn by Sionna: ``channel.model: sionna`` (docs/model.md §15).

:func:`fedopt.channel.draw_channel` dispatches here; the result has the shape, dtype and
seeding discipline of the built-in model: H of shape (K, M, N_r, N_t), complex128, uplink
(device → server), path loss included.

Mapping. The server is one base station with a 1 × N_r uniform linear array, device k a 1 × N_t
one (half-wavelength spacing, vertically polarized omnidirectional elements). H_{k,m} is the
frequency response Σ_p a_p e^{−j2π f_m τ_p} of Sionna's channel impulse response at the M
subcarrier frequencies f_m (``subcarrier_frequencies(M, Δf)``, ``cir_to_ofdm_channel``), one
time sample per round (block fading).

* ``umi``, ``uma``, ``rma`` (system level): the base station at height 10 / 25 / 35 m at the
  origin, boresight along x; device k at 2-D distance ``devices.distance_m[k]``, height 1.5 m,
  at an azimuth uniform in ±60° (one 120° sector), array yaw and heading uniform. The scenario
  gives path loss, shadow fading, LoS/NLoS (``channel.los``), O2I loss (``channel.o2i``) and the
  delay and angle spreads; ``channel.path_loss`` is not used.
* ``tdl``, ``cdl`` (link level, unit mean power): profile ``channel.profile`` scaled to
  ``channel.delay_spread_s``, multiplied by √β_k of the instance's own path loss
  (``channel.path_loss``), so that E|h|² = β_k.

Seeding. Seed s fixes the large-scale state: the geometry with the indoor distances (NumPy,
``SeedSequence(s, spawn_key=(2, 0))``) and Sionna's topology draw (LoS states, the large-scale
parameters with the shadow fading; torch seed from ``(2, 1)``). Round t redraws
the small-scale state (clusters, rays, phases) from ``(2, 2, t)`` alone, so any round is
reproducible without the others. Sionna's generator is seeded for the draw and restored after
it; importing Sionna leaves torch's global generator as it found it (when torch was loaded).

Numerology rule (:func:`cyclic_prefix_tail`). The per-subcarrier model has no inter-symbol or
inter-carrier interference, so a draw is refused (:class:`InvalidInstanceError` naming
``ofdm.cp_ratio``) when more than 1 % of the profile's mean power arrives after the cyclic prefix
T_cp = cp_ratio / Δf; :func:`instance_errors` checks the carrier range, the distances and the
Doppler shift (at most 10 % of Δf) when the instance is built.
"""

from __future__ import annotations

import math
import sys
import threading
from contextlib import contextmanager
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedopt.errors import InvalidInstanceError, MissingDependencyError

if TYPE_CHECKING:  # no import cycle at run time
    from fedopt.instance import Instance

__all__ = ["draw_sionna_channel", "instance_errors", "cyclic_prefix_tail", "check_cyclic_prefix",
           "CARRIER_RANGE_HZ", "BS_HEIGHT_M", "UT_HEIGHT_M", "DISTANCE_RANGE_M", "MAX_CP_TAIL",
           "MAX_DOPPLER_RATIO", "INSTALL_HINT"]

SPEED_OF_LIGHT_M_S = 299_792_458.0
#: carriers of the TR 38.901 models (§7.1)
CARRIER_RANGE_HZ = (0.5e9, 100e9)
#: base-station heights of the system-level scenarios (TR 38.901 Table 7.2-1) and the UT height
BS_HEIGHT_M = {"umi": 10.0, "uma": 25.0, "rma": 35.0}
UT_HEIGHT_M = 1.5
INDOOR_DISTANCE_MAX_M = {"umi": 25.0, "uma": 25.0, "rma": 10.0}
#: 2-D distances where the path-loss models hold (TR 38.901 Table 7.4.1-1)
DISTANCE_RANGE_M = {"umi": (10.0, 5000.0), "uma": (10.0, 5000.0), "rma": (10.0, 10000.0)}
#: the largest share of the mean power-delay profile allowed after the cyclic prefix (−20 dB)
MAX_CP_TAIL = 0.01
#: the largest Doppler shift v f_c / c allowed, relative to the subcarrier spacing
MAX_DOPPLER_RATIO = 0.1
SECTOR_HALF_WIDTH_RAD = math.pi / 3
INSTALL_HINT = 'pip install "fedopt[sionna]"'
SYSTEM_LEVEL = ("umi", "uma", "rma")
#: Sionna's generator and the cached models are shared: one draw at a time
_LOCK = threading.RLock()


def instance_errors(instance: Instance) -> list[str]:
    """Cross-section problems of a ``model: sionna`` instance (none for the built-in model):
    device distances outside the scenario's range, and a Doppler shift v f_c / c above
    :data:`MAX_DOPPLER_RATIO` of the subcarrier spacing."""
    spec = instance.channel
    if spec.model != "sionna" or spec.scenario is None:
        return []
    errors = []
    if spec.scenario in DISTANCE_RANGE_M:
        lo, hi = DISTANCE_RANGE_M[spec.scenario]
        bad = [(k, d) for k, d in enumerate(instance.devices.distance_m) if not lo <= d <= hi]
        if bad:
            k, d = bad[0]
            errors.append(f"devices.distance_m[{k}]: got {d:g} m, scenario {spec.scenario} "
                          f"(TR 38.901 Table 7.4.1-1) covers {lo:g} to {hi:g} m from the base "
                          f"station ({len(bad)} device(s) outside)")
    speed = spec.speed_m_s or 0.0
    doppler = speed * spec.carrier_hz / SPEED_OF_LIGHT_M_S
    spacing = instance.ofdm.subcarrier_spacing_hz
    if doppler > MAX_DOPPLER_RATIO * spacing:
        v_max = MAX_DOPPLER_RATIO * spacing * SPEED_OF_LIGHT_M_S / spec.carrier_hz
        errors.append(
            f"channel.speed_m_s: got {speed:g} m/s, a Doppler shift of {doppler:.4g} Hz at "
            f"channel.carrier_hz = {spec.carrier_hz:g}; the per-subcarrier model has no "
            f"inter-carrier interference, so it must be at most {MAX_DOPPLER_RATIO:.0%} of "
            f"ofdm.subcarrier_spacing_hz = {spacing:g} Hz (speed_m_s <= {v_max:.4g})")
    return errors


def _sionna() -> SimpleNamespace:
    """The parts of Sionna used here, imported on first use.

    Raises
    ------
    MissingDependencyError
        Without Sionna (the ``fedopt[sionna]`` extra).
    """
    torch = sys.modules.get("torch")
    state = None if torch is None else torch.random.get_rng_state()
    try:
        import sionna  # noqa: F401  (first: a blocked top-level package stops here)
        from sionna.phy import config
        from sionna.phy.channel import cir_to_ofdm_channel, subcarrier_frequencies, tr38901
    except ImportError as exc:
        raise MissingDependencyError(
            f"channel.model: sionna draws TR 38.901 channels with Sionna, which cannot be "
            f"imported ({exc}); install the extra: {INSTALL_HINT}") from None
    finally:  # Sionna seeds torch's global generator when it is first imported
        if state is not None:
            torch.random.set_rng_state(state)
    return SimpleNamespace(config=config, tr=tr38901, cir_to_ofdm=cir_to_ofdm_channel,
                           frequencies=subcarrier_frequencies)


@contextmanager
def _seeded_generator(sn: SimpleNamespace):
    """Sionna's CPU generator, restored to its state on exit (nothing leaks from a draw)."""
    gen = sn.config.torch_rng("cpu")
    saved = gen.get_state()
    try:
        yield gen
    finally:
        gen.set_state(saved)


def _torch_seed(seed: int, *key: int) -> int:
    """A 64-bit torch seed from ``SeedSequence(seed, spawn_key=(2, *key))``."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(2, *key))
    return int(ss.generate_state(1, np.uint64)[0])


def _array(sn: SimpleNamespace, n: int, carrier_hz: float) -> Any:
    """1 × n ULA of half-wavelength-spaced, vertically polarized omnidirectional elements."""
    return sn.tr.PanelArray(num_rows_per_panel=1, num_cols_per_panel=n, polarization="single",
                            polarization_type="V", antenna_pattern="omni",
                            carrier_frequency=carrier_hz, precision="double", device="cpu")


def _model_key(instance: Instance) -> tuple:
    spec = instance.channel
    return (spec.scenario, spec.carrier_hz, instance.n_devices, instance.n_rx, instance.n_tx,
            spec.profile, spec.delay_spread_s, spec.o2i, spec.speed_m_s)


@lru_cache(maxsize=8)
def _model(key: tuple) -> Any:
    """The Sionna channel model of a :func:`_model_key` (built once; a draw resets its
    topology, so the cached object carries nothing from one draw to the next)."""
    scenario, fc, _, n_rx, n_tx, profile, delay_spread, o2i, speed = key
    sn = _sionna()
    common = dict(precision="double", device="cpu")
    if scenario == "tdl":
        return sn.tr.TDL(model=profile, delay_spread=delay_spread, carrier_frequency=fc,
                         min_speed=speed, max_speed=speed, num_rx_ant=n_rx, num_tx_ant=n_tx,
                         **common)
    arrays = dict(ut_array=_array(sn, n_tx, fc), bs_array=_array(sn, n_rx, fc),
                  direction="uplink")
    if scenario == "cdl":
        return sn.tr.CDL(model=profile, delay_spread=delay_spread, carrier_frequency=fc,
                         min_speed=speed, max_speed=speed, **arrays, **common)
    if scenario == "rma":
        return sn.tr.RMa(carrier_frequency=fc, **arrays, **common)
    o2i_model = "high" if o2i == "high" else "low"  # unused while the devices are outdoor
    cls = sn.tr.UMi if scenario == "umi" else sn.tr.UMa
    return cls(carrier_frequency=fc, o2i_model=o2i_model, **arrays, **common)


def _topology(instance: Instance, seed: int) -> dict[str, Any]:
    """``set_topology`` arguments of seed ``seed`` (batch of one, the base station at the
    origin): the devices' positions, array orientations and velocities."""
    spec = instance.channel
    k = instance.n_devices
    geo = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2, 0)))
    azimuth = geo.uniform(-SECTOR_HALF_WIDTH_RAD, SECTOR_HALF_WIDTH_RAD, k)
    yaw = geo.uniform(-np.pi, np.pi, k)
    heading = geo.uniform(-np.pi, np.pi, k)
    # indoor distance: the smaller of two uniforms on [0, 25 m] (RMa: 10 m), TR 38.901 Table
    # 7.4.3-2; drawn here, as Sionna draws it only on a model's first topology
    d_in = geo.uniform(0.0, INDOOR_DISTANCE_MAX_M[spec.scenario], (k, 2)).min(axis=1)
    d = np.asarray(instance.devices.distance_m, dtype=float)
    ut_loc = np.stack([d * np.cos(azimuth), d * np.sin(azimuth), np.full(k, UT_HEIGHT_M)], -1)
    speed = spec.speed_m_s or 0.0
    velocity = speed * np.stack([np.cos(heading), np.sin(heading), np.zeros(k)], -1)
    orientation = np.stack([yaw, np.zeros(k), np.zeros(k)], -1)
    out = dict(ut_loc=ut_loc[None], bs_loc=np.array([[[0.0, 0.0, BS_HEIGHT_M[spec.scenario]]]]),
               ut_orientations=orientation[None], bs_orientations=np.zeros((1, 1, 3)),
               ut_velocities=velocity[None], in_state=np.full((1, k), spec.o2i != "none"),
               los={"random": "random", "los": True, "nlos": False}[spec.los],
               distance_2d_in=d_in[None])
    if spec.scenario == "rma":
        out["in_car"] = np.zeros((1, k), dtype=bool)  # outdoor devices are pedestrians
    return out


def _frequency_response(sn: SimpleNamespace, instance: Instance, a: Any, tau: Any) -> np.ndarray:
    """Sionna's CIR at the M subcarriers, as a NumPy array of Sionna's axes."""
    freqs = sn.frequencies(instance.n_subcarriers, instance.ofdm.subcarrier_spacing_hz,
                           precision="double", device="cpu")
    return sn.cir_to_ofdm(freqs, a, tau).numpy()


def draw_sionna_channel(instance: Instance, seed: int, round: int) -> np.ndarray:
    """Round ``round`` of seed ``seed`` for a ``model: sionna`` instance (module docstring).

    Returns
    -------
    ndarray, complex128, shape (K, M, N_r, N_t)
        Uplink channel matrices, path loss included.

    Raises
    ------
    MissingDependencyError
        Without the ``fedopt[sionna]`` extra.
    InvalidInstanceError
        If the cyclic prefix cannot hold the profile (:func:`cyclic_prefix_tail`).
    """
    sn = _sionna()
    check_cyclic_prefix(instance)
    spec = instance.channel
    fs = instance.n_subcarriers * instance.ofdm.subcarrier_spacing_hz  # one sample: any rate
    with _LOCK:
        model = _model(_model_key(instance))
        with _seeded_generator(sn) as gen:
            if spec.scenario in SYSTEM_LEVEL:
                gen.manual_seed(_torch_seed(seed, 1))
                model.set_topology(**_topology(instance, seed))
                gen.manual_seed(_torch_seed(seed, 2, round))
                a, tau = model(1, fs)
            else:
                gen.manual_seed(_torch_seed(seed, 2, round))
                a, tau = model(instance.n_devices, 1, fs)
        h = _frequency_response(sn, instance, a, tau)
    if spec.scenario in SYSTEM_LEVEL:  # [1, 1 BS, N_r, K UTs, N_t, 1 sample, M]
        h = h[0, 0, :, :, :, 0, :].transpose(1, 3, 0, 2)
    else:  # [K links, 1, N_r, 1, N_t, 1 sample, M], unit mean power: scale to β_k
        h = h[:, 0, :, 0, :, 0, :].transpose(0, 3, 1, 2)
        h = h * np.sqrt(instance.path_loss)[:, None, None, None]
    return np.ascontiguousarray(h, dtype=np.complex128)


# ---------------------------------------------------------------------------------------------
# The numerology rule
# ---------------------------------------------------------------------------------------------
def cyclic_prefix_tail(instance: Instance) -> tuple[float, float]:
    """Share of the mean power-delay profile after the cyclic prefix, and the shortest prefix
    that keeps it at most :data:`MAX_CP_TAIL`.

    TDL/CDL: the profile's taps (TR 38.901 Tables 7.7.1-1..5, 7.7.2-1..5 as Sionna ships them)
    at delays τ_ℓ · ``delay_spread_s``. UMi/UMa/RMa: the mean profile of 38.901 §7.5 (cluster
    delays −r_τ DS ln X, powers ∝ e^{−τ (r_τ−1)/(r_τ DS)}) is e^{−τ/DS}, with DS the scenario's
    median delay spread at the carrier (NLoS, LoS when ``los: los``, O2I when indoor): the share
    after T_cp is e^{−T_cp/DS}.

    Returns
    -------
    tail : float
        Power share after T_cp = ``ofdm.cp_ratio / ofdm.subcarrier_spacing_hz``.
    t_min_s : float
        The shortest T_cp with a share ≤ :data:`MAX_CP_TAIL`.
    """
    spec, ofdm = instance.channel, instance.ofdm
    t_cp = ofdm.cp_ratio / ofdm.subcarrier_spacing_hz
    if spec.scenario in SYSTEM_LEVEL:
        ds = _median_delay_spread(spec.scenario, spec.carrier_hz, spec.los, spec.o2i)
        return math.exp(-t_cp / ds), ds * math.log(1.0 / MAX_CP_TAIL)
    delays, powers = _profile(spec.scenario, spec.profile)
    delays = delays * spec.delay_spread_s
    tail = float(powers[delays > t_cp * (1 + 1e-12)].sum())  # a tap at T_cp is inside
    after = np.array([powers[delays > d].sum() for d in delays])
    t_min = float(delays[after <= MAX_CP_TAIL].min())
    return tail, t_min


def check_cyclic_prefix(instance: Instance) -> None:
    """Raise :class:`InvalidInstanceError` (``ofdm.cp_ratio``) if the cyclic prefix leaves more
    than :data:`MAX_CP_TAIL` of the profile's power after it."""
    tail, t_min = cyclic_prefix_tail(instance)
    if tail <= MAX_CP_TAIL:
        return
    spec, ofdm = instance.channel, instance.ofdm
    what = f"scenario {spec.scenario}"
    if spec.scenario not in SYSTEM_LEVEL:
        what += f" (profile {spec.profile}, delay_spread_s = {spec.delay_spread_s:g})"
    cp_min = t_min * ofdm.subcarrier_spacing_hz
    fix = (f"set ofdm.cp_ratio >= {cp_min:.4g}, " if cp_min < 1 else "") + \
        f"lower ofdm.subcarrier_spacing_hz to at most {ofdm.cp_ratio / t_min:.4g} Hz"
    raise InvalidInstanceError(
        f"ofdm.cp_ratio: got {ofdm.cp_ratio:g}, a cyclic prefix of "
        f"{ofdm.cp_ratio / ofdm.subcarrier_spacing_hz * 1e6:.4g} us (cp_ratio / "
        f"subcarrier_spacing_hz) leaves {tail:.2%} of the mean power of channel.{what} after "
        f"it; the per-subcarrier model (no inter-symbol interference) allows at most "
        f"{MAX_CP_TAIL:.0%}: {fix}"
        + ("" if spec.scenario in SYSTEM_LEVEL else ", or shorten channel.delay_spread_s"),
        instance.name)


@lru_cache(maxsize=16)
def _profile(scenario: str, profile: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalized tap delays and powers (summing to one, LoS included) of a TDL/CDL profile."""
    tr = _sionna().tr
    params = tr.models.load_json(tr.models.parameter_file(f"{scenario.upper()}-{profile}.json"))
    powers = 10.0 ** (np.asarray(params["powers"], dtype=float) / 10.0)
    return np.asarray(params["delays"], dtype=float), powers / powers.sum()


@lru_cache(maxsize=16)
def _median_delay_spread(scenario: str, carrier_hz: float, los: str, o2i: str) -> float:
    """10^μ_lgDS of the scenario at the carrier (Sionna's TR 38.901 tables, its frequency
    clipping included) for NLoS devices, LoS ones when ``los == "los"``, indoor when O2I."""
    sn = _sionna()
    arrays = dict(ut_array=_array(sn, 1, carrier_hz), bs_array=_array(sn, 1, carrier_hz),
                  direction="uplink", precision="double", device="cpu")
    if scenario == "rma":
        sc = sn.tr.RMaScenario(carrier_hz, **arrays)
    else:
        cls = sn.tr.UMiScenario if scenario == "umi" else sn.tr.UMaScenario
        sc = cls(carrier_hz, "high" if o2i == "high" else "low", **arrays)
    indoor = np.full((1, 1), o2i != "none")
    extra = {"in_car": np.zeros((1, 1), dtype=bool)} if scenario == "rma" else {}
    with _LOCK, _seeded_generator(sn) as gen:  # the topology draws O2I distances: keep them out
        gen.manual_seed(0)
        sc.set_topology(ut_loc=np.array([[[100.0, 0.0, UT_HEIGHT_M]]]),
                        bs_loc=np.array([[[0.0, 0.0, BS_HEIGHT_M[scenario]]]]),
                        ut_orientations=np.zeros((1, 1, 3)), bs_orientations=np.zeros((1, 1, 3)),
                        ut_velocities=np.zeros((1, 1, 3)), in_state=indoor, los=los == "los",
                        **extra)
        return float(10.0 ** sc.get_param("muDS").reshape(-1)[0].item())
