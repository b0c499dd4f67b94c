"""The sections of an instance (spec 01 §1–§5): one frozen dataclass each.

Every default is written once, on its dataclass field; the file reader
(:mod:`fedopt.instance.parsing`) takes it from there. A field without a default is required in
files. Units live in field names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedopt.channel import PATH_LOSS_MODELS

__all__ = [
    "PATH_LOSS_MODELS",
    "FADING_MODELS",
    "CHANNEL_MODELS",
    "SIONNA_SCENARIOS",
    "SIONNA_PROFILES",
    "LOS_STATES",
    "O2I_MODELS",
    "SIONNA_DEFAULTS",
    "SIONNA_FIELDS",
    "FACTOR_MODES",
    "SPECTRUM_KINDS",
    "TESTBEDS",
    "ALGORITHMS",
    "ALGORITHM_FACTORS",
    "ALGORITHM_PAYLOADS",
    "TESTBED_TASKS",
    "BITS_PER_PARAM",
    "ServerSpec",
    "DevicesSpec",
    "OFDMSpec",
    "ChannelSpec",
    "LoRALayer",
    "LoRASpec",
    "AirCompSpec",
    "LearningSpec",
    "ConstraintsSpec",
]

FADING_MODELS = ("rayleigh", "rician")
#: ``channel.model``: the built-in statistical model, or TR 38.901 channels drawn by Sionna
CHANNEL_MODELS = ("builtin", "sionna")
#: ``channel.scenario`` of ``model: sionna``: system-level scenarios (UMi street canyon, UMa,
#: RMa; TR 38.901 §7.2) and the link-level profiles (TDL, CDL; §7.7)
SIONNA_SCENARIOS = ("umi", "uma", "rma", "tdl", "cdl")
#: ``channel.profile`` of the link-level scenarios (TDL-A..E, CDL-A..E; D and E are LoS)
SIONNA_PROFILES = ("A", "B", "C", "D", "E")
#: ``channel.los`` of the system-level scenarios: drawn from the LoS probability, or forced
LOS_STATES = ("random", "los", "nlos")
#: ``channel.o2i``: devices outdoor, or all indoor with the low- or high-loss O2I model
O2I_MODELS = ("none", "low", "high")
#: the Sionna-only fields of ``channel`` → the scenarios they apply to
SIONNA_FIELDS = {"profile": ("tdl", "cdl"), "delay_spread_s": ("tdl", "cdl"),
                 "speed_m_s": SIONNA_SCENARIOS, "los": ("umi", "uma", "rma"),
                 "o2i": ("umi", "uma", "rma")}
#: what a Sionna-only field that a ``model: sionna`` file leaves out means (filled in by
#: :class:`ChannelSpec`); ``Instance.to_dict`` writes such a field only when it is neither None
#: (the built-in model: digests unchanged) nor its default (so another scenario can be swapped in)
SIONNA_DEFAULTS = {"profile": "A", "delay_spread_s": 100e-9, "speed_m_s": 0.0,
                   "los": "random", "o2i": "none"}
FACTOR_MODES = ("AB", "A", "B")
SPECTRUM_KINDS = ("power_law", "measured")
#: the fine-tuning testbeds of the validation loop (fedopt.fl.testbed)
TESTBEDS = ("pydoc-topics", "domain-shift")
BITS_PER_PARAM = (16, 32)
#: the federated learning algorithms of the validation loop (fedopt.fl.algorithms)
ALGORITHMS = ("fedavg", "ota-sophia", "ffa", "fedsa", "local", "mira", "pwff")
#: which LoRA factors each algorithm sends (``lora.factors`` must agree): FFA-LoRA trains and
#: sends B with A frozen; FedSA-LoRA sends A and keeps every client's B on the device
ALGORITHM_FACTORS = {"fedavg": "AB", "ota-sophia": "AB", "ffa": "B", "fedsa": "A",
                     "local": "AB", "mira": "AB", "pwff": "AB"}
#: vectors of q(r) reals each device sends per round (over-the-air Sophia sends m and h; local
#: training sends nothing; MIRA's count is one AirComp slot per task cluster:
#: :data:`TESTBED_TASKS`)
ALGORITHM_PAYLOADS = {"fedavg": 1, "ota-sophia": 2, "ffa": 1, "fedsa": 1, "local": 0,
                      "mira": 1, "pwff": 1}
#: downstream tasks (client clusters) of each testbed
TESTBED_TASKS = {"pydoc-topics": 1, "domain-shift": 4}


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


@dataclass(frozen=True)
class DevicesSpec:
    """The K devices (clients). Per-device fields hold one value per device (``count`` of
    them); a single number given for one (as the defaults are) stands for the same value on
    every device.

    Attributes
    ----------
    count : int
        Number of devices K.
    n_tx : int
        Transmit antennas N_t of every device.
    p_max_dbm : tuple of float
        Transmit power budget P_k per device, dBm (spread evenly over subcarriers by default).
    distance_m : tuple of float
        Distance to the server in m (path loss, spec 01 §1).
    dataset_size : tuple of float
        Local dataset size D_k; aggregation weights φ_k = D_k / Σ D.
    compute_flops : tuple of float
        Compute speed of each device in FLOP/s (local training time, spec 01 §5).
    energy_budget_j : tuple of float or None
        Optional per-round transmit-energy budget of each device in J (unset: none).
    """

    count: int
    n_tx: int
    p_max_dbm: tuple[float, ...]
    distance_m: tuple[float, ...]
    dataset_size: tuple[float, ...] = 1.0  # type: ignore[assignment]  # broadcast to K
    compute_flops: tuple[float, ...] = 1e12  # type: ignore[assignment]  # broadcast to K
    energy_budget_j: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in _PER_DEVICE:
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                object.__setattr__(self, name, (float(value),) * self.count)


_PER_DEVICE = ("p_max_dbm", "distance_m", "dataset_size", "compute_flops", "energy_budget_j")


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
        Large-scale model (:func:`fedopt.channel.path_loss_db`): 128.1 + 37.6 log10(d_km);
        32.4 + 21 log10(d_m) + 20 log10(f_GHz); or free-space 20 log10(4π d f / c).
    carrier_hz : float
        Carrier frequency in Hz (used by the frequency-dependent path-loss models and by
        Sionna).
    model : {"builtin", "sionna"} or None
        None (the default; ``builtin`` reads as None): the model above. ``sionna``: TR 38.901
        channels drawn by Sionna (:mod:`fedopt.sionna_channel`, the ``fedopt[sionna]`` extra);
        ``fading``, ``rician_k_db``, ``n_taps`` and ``tap_decay`` are then unused, and
        ``path_loss`` only scales the link-level scenarios (``tdl``, ``cdl``).
    scenario : {"umi", "uma", "rma", "tdl", "cdl"} or None
        The TR 38.901 scenario; required with ``model: sionna``, an error without it.
    profile : {"A", "B", "C", "D", "E"} or None
        ``tdl``, ``cdl`` only: the TDL/CDL profile (default A; D and E are LoS).
    delay_spread_s : float or None
        ``tdl``, ``cdl`` only: the RMS delay spread in s the profile is scaled to (default
        100 ns); UMi/UMa/RMa draw their delay spread.
    speed_m_s : float or None
        Device speed in m/s (default 0): Sionna's Doppler term, and the Doppler check of
        :func:`fedopt.sionna_channel.instance_errors`.
    los : {"random", "los", "nlos"} or None
        ``umi``, ``uma``, ``rma`` only: the LoS state, ``random`` (default; drawn per seed from
        the LoS probability), ``los`` or ``nlos``.
    o2i : {"none", "low", "high"} or None
        ``umi``, ``uma``, ``rma`` only: ``none`` (default; devices outdoor) or ``low`` /
        ``high`` (all devices indoor with that O2I penetration-loss model; RMa: ``low`` only).
    """

    fading: str = "rayleigh"
    rician_k_db: float = 3.0
    n_taps: int = 4
    tap_decay: float = 1.5
    path_loss: str = "3gpp-uma"
    carrier_hz: float = 3.5e9
    model: str | None = None
    scenario: str | None = None
    profile: str | None = None
    delay_spread_s: float | None = None
    speed_m_s: float | None = None
    los: str | None = None
    o2i: str | None = None

    def __post_init__(self) -> None:
        if self.model == "builtin":
            object.__setattr__(self, "model", None)
        if self.model == "sionna" and self.scenario in SIONNA_SCENARIOS:
            for name, scenarios in SIONNA_FIELDS.items():
                if self.scenario in scenarios and getattr(self, name) is None:
                    object.__setattr__(self, name, SIONNA_DEFAULTS[name])

    def tap_powers(self) -> np.ndarray:
        """Power-delay profile p_ℓ (sums to one)."""
        p = np.exp(-np.arange(self.n_taps) / self.tap_decay)
        return p / p.sum()


@dataclass(frozen=True)
class LoRALayer:
    """``count`` identical adapted weights W ∈ R^{d_out × d_in} (B: d_out × r, A: r × d_in).

    In files ``name`` may be left out; the i-th layer is then called ``layer<i>``.

    Attributes
    ----------
    name : str
        A label for the weights (module names; ``layer<i>`` when left out).
    d_out : int
        Output dimension of W (B is d_out × r).
    d_in : int
        Input dimension of W (A is r × d_in).
    count : int
        Number of identical weights of this shape (e.g. one per transformer block).
    """

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
        Candidate numbers of spatial streams L per subcarrier, each in 1..min(N_t, N_r). Empty
        (the default) means every count the antennas allow; the :class:`Instance` fills it in.
    """

    streams: tuple[int, ...] = ()


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
    testbed : {"pydoc-topics", "domain-shift"}
        The fine-tuning testbed of ``fedopt validate`` and ``fedopt calibrate``
        (:mod:`fedopt.fl.testbed`): which base model the loop adapts and which text the clients
        fine-tune on. ``pydoc-topics``: a base pre-trained on all help topics, clients on
        topics of the same text; ``domain-shift``: a base pre-trained on prose, clients on four
        downstream tasks it never saw (code, markup, decimal test cases, e-mail).
    algorithm : {"fedavg", "ota-sophia", "ffa", "fedsa", "local", "mira", "pwff"} or None
        The federated algorithm the plan is for (:data:`ALGORITHMS`): ``fedavg`` (devices send
        their LoRA update), ``ota-sophia`` (devices send their gradient EMA m and Hessian
        estimate h, two payloads of q(r) each; the server takes the Sophia step), ``ffa``
        (FFA-LoRA: only B, A frozen), ``fedsa`` (FedSA-LoRA: only A; B stays on each device),
        ``local`` (every client trains its own LoRA; nothing is sent) or ``mira`` (every client
        keeps its own LoRA and sends its update; the server pulls clients of one task together,
        over AirComp one slot per task cluster) or ``pwff`` (global adapters on the layers of
        ``lora.layers`` aggregated; a private LoRA on the MLP; a reward-personalized loss).
        None (the default) follows ``lora.factors``: AB → fedavg, B → ffa, A → fedsa. It sets
        the payload q(r) the planner and the gap models see.
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
    testbed: str = "pydoc-topics"
    algorithm: str | None = None


@dataclass(frozen=True)
class ConstraintsSpec:
    """Latency constraints (spec 01 §1, §5). All are optional; unset means unconstrained.

    Attributes
    ----------
    latency_budget_s : float or None
        Per-round latency budget T_max in s.
    avg_latency_budget_s : float or None
        Long-term average latency budget T̄ in s (TSFA).
    total_time_s : float or None
        Wall-clock budget T_total in s (then T = ⌊T_total / T_round⌋).
    bandwidth_hz : float or None
        Total bandwidth B_tot in Hz of the digital (FDMA) uplink; defaults to M · Δf.
    """

    latency_budget_s: float | None = None
    avg_latency_budget_s: float | None = None
    total_time_s: float | None = None
    bandwidth_hz: float | None = None
