"""Channels: statistics against the model of spec 01 §1, reproducibility, .npz files."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fedopt.channel import (
    CHANNEL_FILE_VERSION,
    PATH_LOSS_MODELS,
    Channel,
    draw_channel,
    path_loss_db,
    validate_channel_array,
)
from fedopt.errors import ChannelFileError, InvalidArgumentError

N_ROUNDS = 400  # block-fading rounds averaged in the statistics tests


def test_path_loss_models_by_their_formulas():
    d = np.array([1.0, 50.0, 1000.0, 2.5e4])
    # 3GPP UMa: 128.1 dB at 1 km, +37.6 dB per decade, whatever the carrier
    uma = path_loss_db("3gpp-uma", d, 28e9)
    assert uma[2] == pytest.approx(128.1, abs=1e-12)
    np.testing.assert_allclose(np.diff(path_loss_db("3gpp-uma", [10.0, 100.0], 3.5e9)), 37.6,
                               rtol=1e-12)
    assert np.array_equal(uma, path_loss_db("3gpp-uma", d, 1e9))
    # 38.901 UMi: 32.4 dB at 1 m and 1 GHz, +21 dB per decade of distance, +20 per decade of f
    umi = path_loss_db("38.901-umi", d, 1e9)
    assert umi[0] == pytest.approx(32.4, abs=1e-12)
    np.testing.assert_allclose(path_loss_db("38.901-umi", d, 10e9) - umi, 20.0, rtol=1e-12)
    # free space: 0 dB where 4π d f = c, +20 dB per decade of distance
    c = 299_792_458.0
    assert path_loss_db("free-space", c / (4 * np.pi * 3.5e9), 3.5e9) == pytest.approx(
        0.0, abs=1e-12)
    fs = path_loss_db("free-space", d, 3.5e9)
    np.testing.assert_allclose(fs[1:] - fs[:-1], 20 * np.log10(d[1:] / d[:-1]), rtol=1e-12)
    assert all(path_loss_db(m, d, 3.5e9).shape == d.shape for m in PATH_LOSS_MODELS)


def test_unknown_path_loss_model_is_named():
    with pytest.raises(InvalidArgumentError,
                       match=r"path_loss: got 'cost231', must be one of 3gpp-uma, 38\.901-umi, "
                             r"free-space"):
        path_loss_db("cost231", [100.0], 3.5e9)


@pytest.mark.parametrize("model", PATH_LOSS_MODELS)
def test_instance_path_loss_is_the_channel_model(small_instance, instance_builder, model):
    inst = instance_builder(small_instance, channel={"path_loss": model, "carrier_hz": 6e9})
    want = path_loss_db(model, small_instance.devices.distance_m, 6e9)
    assert np.array_equal(inst.path_loss_db, want)
    assert np.array_equal(inst.path_loss, 10.0 ** (-want / 10.0))


def _entry_variance(instance) -> float:
    """Variance of one antenna pair's subcarrier-averaged gain (1/M) Σ_m |H_m|² / β.

    For N_tap ≤ M the DFT is orthogonal, so the average equals Σ_ℓ |H̃_ℓ|² exactly: each tap is
    CN(0, p'_ℓ) around a mean a_ℓ (Rician LOS on tap 0, |a_0|² = K/(K+1), p' = p/(K+1)), and the
    variance is Σ_ℓ p'_ℓ² + 2 |a_0|² p'_0.
    """
    p = instance.channel.tap_powers()
    if instance.channel.fading == "rayleigh":
        return float(np.sum(p**2))
    kf = 10.0 ** (instance.channel.rician_k_db / 10.0)
    pp = p / (kf + 1.0)
    return float(np.sum(pp**2) + 2.0 * kf / (kf + 1.0) * pp[0])


@pytest.mark.parametrize("fading", ["rayleigh", "rician"])
def test_mean_gain_per_device_equals_path_loss(rng, default_instance, instance_builder, fading):
    # default preset: K = 20 devices at 50-250 m, 16 x 4 antennas, 64 subcarriers, 4 taps
    inst = instance_builder(default_instance, channel={"fading": fading, "rician_k_db": 6.0})
    seed = int(rng.integers(2**31))
    gain = np.zeros(inst.n_devices)
    for t in range(N_ROUNDS):
        gain += draw_channel(inst, seed, t).mean_gain()
    ratio = gain / N_ROUNDS / inst.path_loss
    # effective independent samples per device: rounds × antenna pairs / Σ p_ℓ²-type variance
    n_eff = N_ROUNDS * inst.n_rx * inst.n_tx / _entry_variance(inst)
    sigma = 1.0 / np.sqrt(n_eff)
    print(
        f"{fading}: mean |h|²/β per device in [{ratio.min():.4f}, {ratio.max():.4f}], "
        f"n_eff = {n_eff:.0f}, sigma = {sigma:.2%}"
    )
    assert 0.02 >= 5 * sigma  # the 2 % tolerance below is at least 5 sigma
    assert np.all(np.abs(ratio - 1) < 0.02)


def test_frequency_correlation_follows_tap_profile(rng, default_instance):
    # E[H_m H_{m+δ}^*] / β = Σ_ℓ p_ℓ e^{+j2πδℓ/M} for H_m = Σ_ℓ H̃_ℓ e^{−j2πmℓ/M} (spec 01 §1)
    inst = default_instance
    m = inst.n_subcarriers
    p = inst.channel.tap_powers()
    seed = int(rng.integers(2**31))
    lags = np.array([1, 3, m // 4])
    acc = np.zeros(len(lags), dtype=complex)
    n_rounds = 100
    for t in range(n_rounds):
        h = draw_channel(inst, seed, t).H / np.sqrt(inst.path_loss)[:, None, None, None]
        for i, lag in enumerate(lags):
            acc[i] += np.mean(h * np.conj(np.roll(h, -lag, axis=1)))
    got = acc / n_rounds
    want = np.array([np.sum(p * np.exp(2j * np.pi * lag * np.arange(len(p)) / m)) for lag in lags])
    # per (round, device, antenna pair) the subcarrier average is Σ_ℓ |H̃_ℓ|² e^{j2πδℓ/M}, of
    # variance Σ p_ℓ² ≈ 0.37: over 100 × 20 × 64 samples the std is 0.0017; 0.01 is ~6 sigma
    print(f"lag correlations got {np.round(got, 4)} want {np.round(want, 4)}")
    assert np.all(np.abs(got - want) < 0.01)


def test_rician_is_rayleigh_plus_fixed_line_of_sight(rng, small_instance, instance_builder):
    # the LOS part is fixed by the seed, so the round average of H tends to it (rank one, unit
    # modulus entries times √(K/(K+1) β)), while a Rayleigh channel averages to zero
    inst = instance_builder(small_instance, channel={"fading": "rician", "rician_k_db": 10.0})
    seed = int(rng.integers(2**31))
    mean = np.mean([draw_channel(inst, seed, t).H for t in range(400)], axis=0)
    mean /= np.sqrt(inst.path_loss)[:, None, None, None]
    kf = 10.0
    # scattered part per entry: CN(0, 1/(K+1)) averaged over 400 rounds, std 0.015; 0.08 ≈ 5σ
    assert np.allclose(np.abs(mean), np.sqrt(kf / (kf + 1)), atol=0.08)
    sv = np.linalg.svd(mean, compute_uv=False)
    assert np.all(sv[..., 1] < 0.1 * sv[..., 0])  # rank one up to the same averaging noise


def test_same_seed_and_round_reproduce_and_rounds_are_independent(small_instance):
    a = draw_channel(small_instance, seed=11, round=5)
    b = draw_channel(small_instance, seed=11, round=5)
    assert_array_equal(a.H, b.H)
    assert (a.seed, a.round) == (11, 5)
    others = [draw_channel(small_instance, seed=11, round=t).H for t in range(5)]
    assert_array_equal(draw_channel(small_instance, seed=11, round=5).H, a.H)  # after 0..4
    for h in others:
        assert not np.any(h == a.H)  # continuous draws: no entry repeats across rounds
    assert not np.any(draw_channel(small_instance, seed=12, round=5).H == a.H)
    assert a.H.dtype == np.complex128
    assert not a.H.flags.writeable  # a drawn channel is immutable


@pytest.mark.parametrize("seed, rnd", [(-1, 0), (0, -2), (1.5, 0), (True, 0)])
def test_draw_rejects_bad_seed_or_round(small_instance, seed, rnd):
    with pytest.raises(ValueError, match=r"(seed|round): got .*must be a non-negative integer"):
        draw_channel(small_instance, seed=seed, round=rnd)


# ---------------------------------------------------------------------------------------------
# .npz files
# ---------------------------------------------------------------------------------------------
def test_channel_npz_round_trip_is_exact(tmp_path, small_instance, crandn):
    ch = draw_channel(small_instance, seed=3, round=7)
    path = ch.save(tmp_path / "ch.npz")
    back = Channel.load(path, instance=small_instance)
    assert_array_equal(back.H, ch.H)
    assert back.H.dtype == np.complex128
    assert (back.seed, back.round) == (3, 7)
    # a channel from arbitrary data has no provenance, and keeps none
    raw = Channel(H=crandn(2, 3, 4, 5))
    back = Channel.load(raw.save(tmp_path / "raw.npz"))
    assert_array_equal(back.H, raw.H)
    assert (back.seed, back.round) == (None, None)


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_channel_file_with_nan_or_inf_is_rejected(tmp_path, small_instance):
    h = draw_channel(small_instance, seed=0).H.copy()
    h[1, 2, 0, 1] = np.nan
    h[2, 0, 0, 0] = np.inf
    path = _write(tmp_path / "nan.npz", H=h)
    with pytest.raises(ChannelFileError) as exc:
        Channel.load(path, instance=small_instance)
    msg = str(exc.value)
    assert "nan.npz" in msg and "2 non-finite entries" in msg
    assert "device 1, subcarrier 2, entry (0, 1)" in msg and "must be finite" in msg


def test_channel_file_with_three_axes_is_rejected(tmp_path):
    path = _write(tmp_path / "flat.npz", H=np.ones((3, 4, 4), dtype=complex))
    with pytest.raises(
        ChannelFileError,
        match=r"expected 4 axes \(K devices, M subcarriers, N_r, N_t\), got shape \(3, 4, 4\)",
    ):
        Channel.load(path)


@pytest.mark.parametrize(
    "axis, label",
    [
        (0, "devices.count (K)"),
        (1, "ofdm.n_subcarriers (M)"),
        (2, "server.n_rx (N_r)"),
        (3, "devices.n_tx (N_t)"),
    ],
)
def test_channel_file_disagreeing_with_instance_names_the_axis(
    tmp_path, small_instance, axis, label
):
    shape = [
        small_instance.n_devices,
        small_instance.n_subcarriers,
        small_instance.n_rx,
        small_instance.n_tx,
    ]
    want = shape[axis]
    shape[axis] += 1
    path = _write(tmp_path / "wrong.npz", H=np.ones(shape, dtype=complex))
    Channel.load(path)  # fine on its own: only the instance disagrees
    with pytest.raises(ChannelFileError) as exc:
        Channel.load(path, instance=small_instance)
    msg = str(exc.value)
    assert f"axis {axis} has size {want + 1}" in msg
    assert f"{label} = {want}" in msg and "'small'" in msg


def test_channel_file_structure_errors(tmp_path):
    cases = {
        "noh.npz": ({"G": np.ones((1, 1, 1, 1))}, r"no array named 'H' \(found: G\)"),
        "version.npz": (
            {"H": np.ones((1, 1, 1, 1)), "meta": np.array([99, 0, 0])},
            rf"channel file version 99 is not supported .*reads version {CHANNEL_FILE_VERSION}",
        ),
        "ints.npz": (
            {"H": np.ones((1, 1, 1, 1), dtype=np.int64)},
            r"expected a real or complex float array, got int64",
        ),
        # an object array needs pickle, which a channel file never uses
        "pickle.npz": ({"H": np.array([{"x": 1}], dtype=object)}, r"not a readable \.npz"),
    }
    for name, (arrays, pattern) in cases.items():
        path = _write(tmp_path / name, **arrays)
        with pytest.raises(ChannelFileError, match=pattern):
            Channel.load(path)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ChannelFileError, match=r"garbage\.npz: not a readable \.npz channel file"):
        Channel.load(garbage)
    missing = tmp_path / "absent.npz"
    with pytest.raises(ChannelFileError, match=r"absent\.npz: not a readable"):
        Channel.load(missing)


def test_validate_channel_array_accepts_real_and_returns_complex():
    h = validate_channel_array(np.ones((1, 2, 3, 4)))
    assert h.dtype == np.complex128
    assert_array_equal(h, np.ones((1, 2, 3, 4)))


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b""), "not a readable .npz channel file"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p),
     "not a readable .npz channel file"),
    (lambda p: _huge_header(p), "claim"),
])
def test_damaged_and_hostile_npz_files_are_named(tmp_path, make, needle):
    path = tmp_path / "H.npz"
    make(path)
    with pytest.raises(ChannelFileError, match=needle):
        Channel.load(path)


def _huge_header(path):
    """A valid .npz whose only member's header claims a (10^6)^4 array of 16 bytes each."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<c16", "fortran_order": False,
                                               "shape": (10**6,) * 4})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("H.npy", buf.getvalue())


@pytest.mark.parametrize("scale, needle", [(1e160, r"above 1e\+100"), (0.0, r"below 1e-100")])
def test_a_channel_outside_the_usable_range_is_named(small_instance, scale, needle):
    h = draw_channel(small_instance, 0).H * scale  # 1e160 used to validate, then crash a solver
    with pytest.raises(ChannelFileError, match=needle):
        Channel(H=h)
