"""TR 38.901 channels from Sionna (``channel.model: sionna``): seeding, the statistics against
the 38.901 formulas and the TDL power-delay profile, the numerology rule, the missing extra.

Oracles: the UMi path loss, LoS probability and shadow-fading spreads of TR 38.901 Tables
7.4.1-1 and 7.4.2-1, and the TDL-A taps of Table 7.7.2-1, written out here (not read from
Sionna). Monte-Carlo tolerances come from the standard errors of the estimates.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from fedopt import sionna_channel
from fedopt.channel import Channel, draw_channel
from fedopt.errors import FedOptError, InvalidInstanceError, MissingDependencyError

needs_sionna = pytest.mark.skipif(importlib.util.find_spec("sionna") is None,
                                  reason="the fedopt[sionna] extra is not installed")

C = 299_792_458.0
#: TR 38.901 Table 7.7.2-1, TDL-A: normalized delays and powers (dB)
TDL_A_DELAYS = np.array([0.0, 0.3819, 0.4025, 0.5868, 0.4610, 0.5375, 0.6708, 0.5750, 0.7618,
                         1.5375, 1.8978, 2.2242, 2.1718, 2.4942, 2.5119, 3.0582, 4.0810, 4.4579,
                         4.5695, 4.7966, 5.0066, 5.3043, 9.6586])
TDL_A_DB = np.array([-13.4, 0.0, -2.2, -4.0, -6.0, -8.2, -9.9, -10.5, -7.5, -15.9, -6.6, -16.7,
                     -12.4, -15.2, -10.8, -11.3, -12.7, -16.2, -18.3, -18.9, -16.6, -19.9,
                     -29.7])
TDL_A_P = 10 ** (TDL_A_DB / 10) / np.sum(10 ** (TDL_A_DB / 10))


@pytest.fixture
def sionna(instance_builder):
    """``sionna(base, scenario, devices=..., **channel)``: ``base`` with model: sionna."""

    def build(base, scenario, *, devices=None, server=None, ofdm=None, **channel):
        return instance_builder(base, channel={"model": "sionna", "scenario": scenario,
                                               **channel},
                                devices=devices or {}, server=server or {}, ofdm=ofdm or {},
                                aircomp=None)

    return build


# ---------------------------------------------------------------------------------------------
# Seeding, shape, global state
# ---------------------------------------------------------------------------------------------
@needs_sionna
@pytest.mark.parametrize("scenario", ["umi", "uma", "rma", "tdl", "cdl"])
def test_draws_are_seeded_shaped_and_new_each_round(sionna, small_instance, scenario):
    inst = sionna(small_instance, scenario)
    ch = draw_channel(inst, 7, 2)
    assert isinstance(ch, Channel) and (ch.seed, ch.round) == (7, 2)
    assert ch.shape == (3, 4, 4, 2) and ch.H.dtype == np.complex128  # (K, M, N_r, N_t)
    assert np.all(np.isfinite(ch.H)) and np.all(ch.mean_gain() > 0)
    others = [draw_channel(inst, s, t).H for s, t in ((0, 0), (7, 3), (8, 2))]
    assert not np.array_equal(others[1], ch.H)  # another round of the same seed
    assert not np.array_equal(others[2], ch.H)  # the same round of another seed
    # bit for bit, whatever was drawn before, and with a freshly built Sionna model
    assert np.array_equal(draw_channel(inst, 7, 2).H, ch.H)
    sionna_channel._model.cache_clear()
    assert np.array_equal(draw_channel(inst, 7, 2).H, ch.H)


@needs_sionna
def test_draws_neither_use_nor_change_global_generators(sionna, small_instance):
    import torch
    from sionna.phy import config

    inst = sionna(small_instance, "umi")
    want = draw_channel(inst, 3, 1).H
    gen = config.torch_rng("cpu")  # Sionna's own generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        saved = gen.get_state()
        gen.manual_seed(13)  # whatever Sionna's generator holds, the draw is the same

        def states():
            legacy = np.random.get_state()[1].copy()  # noqa: NPY002  (NumPy's global state)
            return torch.random.get_rng_state(), legacy, gen.get_state()

        before = states()
        got = draw_channel(inst, 3, 1).H
        after = states()
        gen.set_state(saved)
    assert np.array_equal(got, want)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(before, after, strict=True))


# ---------------------------------------------------------------------------------------------
# Statistics: the UMi path loss, the TDL/CDL mean gain and frequency correlation
# ---------------------------------------------------------------------------------------------
def _umi_path_loss_db(d2d: np.ndarray, fc: float) -> tuple[np.ndarray, np.ndarray]:
    """TR 38.901 Table 7.4.1-1, UMi street canyon (h_BS = 10 m, h_UT = 1.5 m): LoS, NLoS."""
    h_bs, h_ut = 10.0, 1.5
    d3d = np.sqrt(d2d**2 + (h_bs - h_ut) ** 2)
    d_bp = 4 * (h_bs - 1) * (h_ut - 1) * fc / C
    f_ghz = fc / 1e9
    pl1 = 32.4 + 21 * np.log10(d3d) + 20 * np.log10(f_ghz)
    pl2 = (32.4 + 40 * np.log10(d3d) + 20 * np.log10(f_ghz)
           - 9.5 * np.log10(d_bp**2 + (h_bs - h_ut) ** 2))
    los = np.where(d2d <= d_bp, pl1, pl2)
    nlos = 35.3 * np.log10(d3d) + 22.4 + 21.3 * np.log10(f_ghz) - 0.3 * (h_ut - 1.5)
    return los, np.maximum(los, nlos)


def _umi_los_probability(d2d: np.ndarray) -> np.ndarray:
    """TR 38.901 Table 7.4.2-1, UMi street canyon."""
    return np.where(d2d <= 18, 1.0, 18 / d2d + np.exp(-d2d / 36) * (1 - 18 / d2d))


@needs_sionna
@pytest.mark.parametrize("los", ["los", "nlos", "random"])
def test_umi_gain_follows_the_38901_path_loss(rng, sionna, small_instance, los):
    k, seeds = 40, rng.integers(2**31, size=10)
    d2d = np.linspace(20.0, 500.0, k)  # ≥ 12 m apart: shadowing nearly uncorrelated (10-13 m)
    inst = sionna(small_instance, "umi", los=los, server={"n_rx": 16},
                  ofdm={"n_subcarriers": 4}, devices={"count": k, "n_tx": 1, "p_max_dbm": 20.0,
                                                      "distance_m": d2d.tolist(),
                                                      "dataset_size": 1.0})
    # per drop (seed, device) and round: the gain in dB, averaged over 16 antennas, 4 subcarriers
    g = np.array([[10 * np.log10(draw_channel(inst, int(s), t).mean_gain()) for t in (0, 1)]
                  for s in seeds])  # (seeds, rounds, K)
    # the large-scale state is the seed's: round to round only the small-scale fading moves
    # (a shadow fading redrawn per round would add a spread of √2 σ_SF ≥ 5.7 dB)
    assert np.std(g[:, 0] - g[:, 1]) < 4.0
    pl_los, pl_nlos = _umi_path_loss_db(d2d, inst.channel.carrier_hz)
    p = {"los": 1.0, "nlos": 0.0, "random": _umi_los_probability(d2d)}[los]
    want = -(p * pl_los + (1 - p) * pl_nlos)
    resid = g.mean(axis=1) - want
    # per drop: shadow fading N(0, 4 dB) LoS / N(0, 7.82 dB) NLoS and the LoS/NLoS mixture,
    # plus the small-scale spread of the two-round mean (measured from the round difference)
    small = np.var(g[:, 0] - g[:, 1]) / 4
    var = p * 4.0**2 + (1 - p) * 7.82**2 + p * (1 - p) * (pl_nlos - pl_los) ** 2 + small
    se = float(np.sqrt(np.sum(np.broadcast_to(var, resid.shape)))) / resid.size
    # a mean of dB is biased low by (10 / ln 10) Var X / (2 E[X]²) = (ln 10 / 20) σ_dB²
    bias = -np.log(10) / 20 * small
    print(f"{los}: mean residual {resid.mean():+.2f} dB, bias {bias:+.2f}, SE {se:.2f} dB")
    # 4 SE, plus 0.1 dB for the next order of that bias at a spread of about 1 dB
    assert abs(resid.mean() - bias) < 4 * se + 0.1


@needs_sionna
@pytest.mark.parametrize("scenario, profile", [("tdl", "A"), ("tdl", "D"), ("cdl", "C")])
def test_link_level_mean_gain_is_the_instance_path_loss(rng, sionna, default_instance,
                                                        scenario, profile):
    inst = sionna(default_instance, scenario, profile=profile, server={"n_rx": 4},
                  devices={"count": 10, "n_tx": 2, "distance_m": np.linspace(50, 250, 10).tolist(),
                           "dataset_size": 1.0}, ofdm={"n_subcarriers": 16})
    seed = int(rng.integers(2**31))
    r = np.array([draw_channel(inst, seed, t).mean_gain() / inst.path_loss for t in range(60)])
    se = float(np.std(r) / np.sqrt(r.size))  # (rounds, devices) samples of a mean-one ratio
    print(f"{scenario}-{profile}: mean |h|²/β = {r.mean():.4f}, SE {se:.4f}")
    assert se < 0.025  # the estimate has the power to see a 12.5 % error
    assert abs(r.mean() - 1) < 5 * se  # 5 SE: a false alarm once in ~3.5 million runs


def _correlation(h: np.ndarray, lag: int) -> np.ndarray:
    """Per (device, antenna pair): the mean over m of h_m h*_{m+lag}, h of shape (K, M, r, t)."""
    return np.mean(h[:, :-lag] * np.conj(h[:, lag:]), axis=1).reshape(-1)


@needs_sionna
def test_tdl_frequency_correlation_follows_the_power_delay_profile(rng, sionna,
                                                                  default_instance):
    lags, seed = np.array([2, 8, 24, 48]), int(rng.integers(2**31))
    spacing = default_instance.ofdm.subcarrier_spacing_hz
    coherence = {}
    for ds in (100e-9, 300e-9):
        inst = sionna(default_instance, "tdl", delay_spread_s=ds,
                      devices={"count": 8, "distance_m": 100.0, "dataset_size": 1.0})
        samples = {int(lag): [] for lag in range(1, 64)}
        for t in range(30):
            h = draw_channel(inst, seed, t).H / np.sqrt(inst.path_loss)[:, None, None, None]
            for lag in samples:
                samples[lag].append(_correlation(h, lag))
        est = {lag: np.concatenate(v) for lag, v in samples.items()}
        for lag in lags:
            # H(f) = Σ a_ℓ e^{−j2π f τ_ℓ}: E[H(f) H(f + Δ)*] = Σ p_ℓ e^{+j2π Δ τ_ℓ}
            want = np.sum(TDL_A_P * np.exp(2j * np.pi * lag * spacing * TDL_A_DELAYS * ds))
            got = est[int(lag)].mean()
            se = np.std(est[int(lag)]) / np.sqrt(est[int(lag)].size)
            print(f"DS {ds * 1e9:.0f} ns, lag {lag}: got {got:.4f}, want {want:.4f}, SE {se:.4f}")
            assert se < 0.01  # 8 x 64 x 30 samples of spread ≤ 1: power to see 0.05
            assert abs(got - want) < 5 * se  # 5 SE (complex error, both parts)
        # coherence bandwidth: the first lag where |R| falls below 0.9
        coherence[ds] = next(lag for lag in range(1, 64) if abs(est[lag].mean()) < 0.9) * spacing
    print(f"coherence bandwidth (|R| < 0.9): {coherence}")
    assert coherence[300e-9] < coherence[100e-9] / 2  # closed form: 0.27 vs 0.78 MHz


# ---------------------------------------------------------------------------------------------
# The numerology rule
# ---------------------------------------------------------------------------------------------
def _tdl_a_tail(t_cp_over_ds: float) -> float:
    return float(TDL_A_P[TDL_A_DELAYS > t_cp_over_ds].sum())


@needs_sionna
def test_a_cyclic_prefix_shorter_than_the_profile_is_named(sionna, small_instance):
    # 1 µs TDL-A at 30 kHz: the 2.33 µs prefix leaves the taps beyond 2.33 DS after it
    inst = sionna(small_instance, "tdl", delay_spread_s=1e-6)
    t_cp = inst.ofdm.cp_ratio / inst.ofdm.subcarrier_spacing_hz
    tail = _tdl_a_tail(t_cp / 1e-6)
    assert tail > 0.01
    with pytest.raises(InvalidInstanceError) as exc:
        draw_channel(inst, 0)
    message = str(exc.value)
    for fragment in ("ofdm.cp_ratio: got 0.07", "2.333 us", f"{tail:.2%}", "profile A",
                     "delay_spread_s = 1e-06", "at most 1%", "ofdm.cp_ratio >= "):
        assert fragment in message, message
    # the prefix the message asks for: the last tap delay with ≤ 1 % after it (TDL-A: 4.081 DS)
    t_min = min(d for d in TDL_A_DELAYS if _tdl_a_tail(d) <= 0.01) * 1e-6
    cp_min = t_min * inst.ofdm.subcarrier_spacing_hz
    assert f"ofdm.cp_ratio >= {cp_min:.4g}" in message
    # 1e-12: the same sums of the same table in another order (and Sionna's dB → linear)
    assert sionna_channel.cyclic_prefix_tail(inst) == pytest.approx((tail, t_min), rel=1e-12)
    # ±0.1 % around the boundary: the prefix passes just above it and fails just below
    ok = sionna(small_instance, "tdl", delay_spread_s=1e-6, ofdm={"cp_ratio": cp_min * 1.001})
    assert draw_channel(ok, 0).shape == (3, 4, 4, 2)
    short = sionna(small_instance, "tdl", delay_spread_s=1e-6, ofdm={"cp_ratio": cp_min * 0.999})
    with pytest.raises(InvalidInstanceError, match="ofdm.cp_ratio"):
        draw_channel(short, 0)


@needs_sionna
def test_scenario_prefix_rule_uses_the_median_delay_spread(sionna, small_instance):
    # UMi NLoS at 3.5 GHz: lgDS = −0.22 log10(1 + f_GHz) − 6.87 (38.901 V19.2 Table 7.5-6);
    # mean profile e^{−τ/DS}: 1 % after T_cp once T_cp = DS ln 100
    ds = 10 ** (-0.22 * np.log10(1 + 3.5) - 6.87)
    cp_min = ds * np.log(100) * small_instance.ofdm.subcarrier_spacing_hz
    inst = sionna(small_instance, "umi", ofdm={"cp_ratio": cp_min * 1.001})
    tail, t_min = sionna_channel.cyclic_prefix_tail(inst)
    # 1e-9: the same formula through Sionna's double-precision tensors (a few ulp of a log10
    # and a power of ten apart; ~1e-15 seen)
    assert t_min == pytest.approx(ds * np.log(100), rel=1e-9)
    assert tail == pytest.approx(0.01 ** 1.001, rel=1e-9)  # e^{−1.001 ln 100}
    # ±0.1 % around the boundary: the prefix passes just above it and fails just below
    assert draw_channel(inst, 0).shape == (3, 4, 4, 2)
    with pytest.raises(InvalidInstanceError, match=r"ofdm.cp_ratio.*scenario umi"):
        draw_channel(sionna(small_instance, "umi", ofdm={"cp_ratio": cp_min * 0.999}), 0)


def test_distances_outside_the_scenario_are_named(sionna, small_instance):
    with pytest.raises(InvalidInstanceError) as exc:
        sionna(small_instance, "umi", devices={"distance_m": [60.0, 5.0, 8000.0]})
    message = str(exc.value)
    assert "devices.distance_m[1]: got 5 m, scenario umi" in message
    assert "10 to 5000 m" in message and "2 device(s) outside" in message
    assert sionna(small_instance, "rma", devices={"distance_m": [60.0, 10.0, 8000.0]})
    assert sionna(small_instance, "tdl", devices={"distance_m": [1.0, 5.0, 8000.0]})  # β only


def test_doppler_above_a_tenth_of_the_spacing_is_named(sionna, small_instance):
    # v f_c / c ≤ 0.1 Δf: at 3.5 GHz and 30 kHz, v ≤ 0.1 · 30e3 · c / 3.5e9 = 256.97 m/s
    v_max = 0.1 * 30e3 * C / 3.5e9
    # 1e-9 below the bound (its rounding) is accepted, 1 % above it is refused
    assert sionna(small_instance, "cdl", speed_m_s=v_max * (1 - 1e-9))
    with pytest.raises(InvalidInstanceError) as exc:
        sionna(small_instance, "cdl", speed_m_s=v_max * 1.01)
    assert f"channel.speed_m_s: got {v_max * 1.01:g} m/s" in str(exc.value)
    assert f"speed_m_s <= {v_max:.4g}" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Without the extra
# ---------------------------------------------------------------------------------------------
def test_without_sionna_the_draw_names_the_extra(sionna, small_instance, monkeypatch):
    inst = sionna(small_instance, "umi")  # reading the instance needs no Sionna
    # as if it were not installed: None in sys.modules blocks an import, of the package and of
    # any submodule an earlier test loaded
    for name in [m for m in sys.modules if m == "sionna" or m.startswith("sionna.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "sionna", None)
    with pytest.raises(MissingDependencyError) as exc:
        draw_channel(inst, 0)
    assert isinstance(exc.value, FedOptError)
    assert 'pip install "fedopt[sionna]"' in str(exc.value)
    assert draw_channel(small_instance, 0).shape == (3, 4, 4, 2)  # the built-in model still runs


def test_the_builtin_model_imports_neither_sionna_nor_torch():
    code = ("import sys; from fedopt.instance import load_instance; "
            "from fedopt.channel import draw_channel; draw_channel(load_instance('small'), 0); "
            "print(sorted(m for m in ('sionna', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
