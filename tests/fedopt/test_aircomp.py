"""AirComp physics against closed forms and Monte-Carlo (spec 02 §1–§3, identities of §6).

Scaling: tests marked "realistic" use channels drawn from a preset (|h|² ~ 1e-8 .. 1e-10, P_{k,m}
~ 10 mW, σ² ~ 1e-15 W), so A and B carry very different magnitudes; tests marked "normalized"
use CN(0, 1) channels. Every identity checked here is either dimensionless (A^H H_k B_k, power
ratios) or compared with a relative tolerance, so both scalings test the same thing.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fedopt import aircomp as ac
from fedopt.channel import draw_channel
from fedopt.errors import InfeasibleError


def _herm(x: np.ndarray) -> np.ndarray:
    return np.conj(np.swapaxes(x, -1, -2))


def _random_unitary(crandn, m: int, n: int) -> np.ndarray:
    """Haar-like random unitary matrices, shape (m, n, n), from the QR of Gaussian matrices."""
    q, r = np.linalg.qr(crandn(m, n, n))
    d = np.diagonal(r, axis1=-2, axis2=-1)
    return q * (d / np.abs(d))[:, None, :]


def _realistic(instance, rng):
    """(H, φ, P_{k,m}, σ²) of one channel draw of ``instance`` (realistic magnitudes)."""
    h = draw_channel(instance, seed=int(rng.integers(2**31))).H
    return h, instance.weights, instance.power_per_subcarrier_w, instance.noise_power_w


# ---------------------------------------------------------------------------------------------
# §6.1 SISO
# ---------------------------------------------------------------------------------------------
def test_siso_full_power_mse_is_closed_form_for_any_beamformer(
    rng, crandn, small_instance, instance_builder
):
    # realistic: the small preset with single antennas everywhere, 16 subcarriers
    inst = instance_builder(
        small_instance,
        server={"n_rx": 1},
        devices={"n_tx": 1},
        aircomp={"streams": [1]},
        ofdm={"n_subcarriers": 16},
    )
    h, phi, p, s2 = _realistic(inst, rng)
    m = inst.n_subcarriers
    expected = s2 * np.max(phi[:, None] ** 2 / (p[:, None] * np.abs(h[:, :, 0, 0]) ** 2), axis=0)
    for scale in (1e-6, 1.0, 1e6):
        a = scale * crandn(m, 1, 1)  # any nonzero receive scalar, any phase
        a_s, b = ac.zf_design(a, h, phi, p)
        # a few flops per entry, no cancellation: agreement to rounding (~1e-15)
        assert_allclose(ac.mse(a_s, b, h, phi, s2), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# §6.2 ZF precoders and the power constraint
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaling", ["realistic", "normalized"])
@pytest.mark.parametrize("streams", [1, 2])
def test_zf_is_unbiased_and_meets_power_with_binding_device(
    rng, crandn, small_instance, streams, scaling
):
    # small preset shapes (N_r = 4, N_t = 2, K = 3, M = 4); realistic magnitudes or CN(0, 1)
    h, phi, p, s2 = _realistic(small_instance, rng)
    if scaling == "normalized":
        h, p, s2 = crandn(*h.shape), np.ones_like(p), 1.0
    m, nr = small_instance.n_subcarriers, small_instance.n_rx
    a0 = crandn(m, nr, streams)
    a_s, b = ac.zf_design(a0, h, phi, p)

    # A^H H_k B_k is dimensionless (the scales of A, H and B cancel) and φ_k <= 1, so the
    # absolute 1e-10 of spec 02 §6.2 is also relative to the target φ_k I.
    resid = _herm(a_s)[None] @ h @ b - phi[:, None, None, None] * np.eye(streams)
    worst = np.max(np.linalg.norm(resid, axis=(-2, -1)))
    print(f"ZF residual ({scaling}, L = {streams}): max ‖A^H H_k B_k − φ_k I‖_F = {worst:.1e}")
    assert worst < 1e-10

    ratio = np.sum(np.abs(b) ** 2, axis=(2, 3)) / p[:, None]  # ‖B_{k,m}‖_F² / P_{k,m}, (K, M)
    assert np.all(ratio <= 1 + 1e-12)  # rounding only: the binding device sits at exactly 1
    assert_allclose(ratio.max(axis=0), 1.0, rtol=1e-12)  # binding device at equality, rounding
    costs = ac.device_costs(a_s, h, phi, p)
    assert_array_equal(ratio.argmax(axis=0), costs.argmax(axis=0))
    # ‖B_k‖² = φ_k² tr((A^H G_k A)^{-1}) (spec 02 §2); an L×L inverse: rounding ~1e-14
    assert_allclose(ratio, costs, rtol=1e-10)

    # With ZF the MSE is pure noise, σ²‖A‖², and equals the objective f at the unscaled A.
    noise = s2 * np.sum(np.abs(a_s) ** 2, axis=(1, 2))
    assert_allclose(ac.mse(a_s, b, h, phi, s2), noise, rtol=1e-10)  # bias ≤ K (1e-10)²
    assert_allclose(ac.objective(a0, h, phi, p, s2), noise, rtol=1e-10)  # L×L inverses


def test_zf_with_more_streams_than_tx_antennas_is_infeasible(crandn):
    # normalized; N_t = 1 < L = 2 makes every A^H G_k A rank one
    h = crandn(2, 3, 4, 1)
    with pytest.raises(InfeasibleError, match=r"device 0, subcarrier 0: .*singular.*L = 2"):
        ac.zf_design(crandn(3, 4, 2), h, np.array([0.5, 0.5]), np.ones(2))


# ---------------------------------------------------------------------------------------------
# §6.3 closed-form MSE vs Monte-Carlo through pack / transmit
# ---------------------------------------------------------------------------------------------
def test_mse_closed_form_matches_monte_carlo_zf_and_biased(crandn, rng):
    # normalized: K = 3 devices with unequal gains, N_r = 4, N_t = 2, L = 2, M = 3, σ² = 0.5
    k, m, nr, nt, lsz = 3, 3, 4, 2, 2
    h = crandn(k, m, nr, nt) * np.sqrt([1.0, 0.5, 2.0])[:, None, None, None]
    phi, p, s2 = np.array([0.2, 0.5, 0.3]), np.ones(k), 0.5
    a, b_zf = ac.zf_design(crandn(m, nr, lsz), h, phi, p)
    noise = s2 * np.sum(np.abs(a) ** 2, axis=(1, 2))  # (M,)
    # Not ZF: B = B_zf + t_m Δ. Since A^H H_k B_zf = φ_k I, the bias is t_m² Σ_k ‖A^H H_k Δ_k‖²;
    # t_m makes it equal to the noise term, so the bias is half of the MSE on every subcarrier.
    delta = crandn(*b_zf.shape)
    hit = np.sum(np.abs(_herm(a)[None] @ h @ delta) ** 2, axis=(0, 2, 3))
    b_biased = b_zf + np.sqrt(noise / hit)[None, :, None, None] * delta

    s = 200_000  # OFDM symbols: 2e5 draws per (subcarrier, stream) slot
    for b, name, factor in ((b_zf, "zf", 1.0), (b_biased, "biased", 2.0)):
        closed = ac.mse(a, b, h, phi, s2)
        assert_allclose(closed, factor * noise, rtol=1e-10)  # ZF bias ~1e-26; sums of squares
        x = rng.standard_normal((k, 2 * s * m * lsz))  # unit-variance reals: E|s|² = 1
        sym = ac.pack(x, m, lsz)  # (K, S, M, L), no padding
        assert sym.shape == (k, s, m, lsz)
        received = ac.transmit(sym, a, b, h, s2, rng)
        err = received - np.einsum("k,ksml->sml", phi, sym)
        mc = np.mean(np.sum(np.abs(err) ** 2, axis=-1), axis=0)  # (M,)
        rel = mc / closed - 1
        print(f"MC vs closed-form MSE ({name}): relative errors {np.round(rel, 5).tolist()}")
        # the error is complex Gaussian: |e|² has relative std <= 1 per draw, so the mean over
        # 2e5 symbols has relative std <= 0.22 %; 1 % (spec 02 §6.3) is >= 4.5 sigma
        assert np.all(np.abs(rel) < 0.01)


# ---------------------------------------------------------------------------------------------
# §6.4 invariances of f
# ---------------------------------------------------------------------------------------------
def test_objective_invariances(rng, crandn):
    # normalized, with unequal device gains, budgets and weights so the max switches devices
    k, m, nr, nt, lsz = 4, 6, 5, 3, 2
    h = crandn(k, m, nr, nt) * np.sqrt([1.0, 0.1, 3.0, 0.5])[:, None, None, None]
    phi = np.array([0.1, 0.4, 0.3, 0.2])
    p = np.array([1.0, 2.0, 0.5, 1.5])
    s2 = 0.3
    a = crandn(m, nr, lsz)
    f = ac.objective(a, h, phi, p, s2)

    # each f evaluation inverts well-conditioned L×L Gram matrices: rounding ~1e-14; 1e-10 allows
    # condition numbers up to ~1e4
    tol = 1e-10
    for c in (1e-8 * np.exp(0.3j), 2.5 - 1j, 1e8j):
        assert_allclose(ac.objective(c * a, h, phi, p, s2), f, rtol=tol)  # f(cA) = f(A)
    u = _random_unitary(crandn, m, lsz)
    assert_allclose(ac.objective(a @ u, h, phi, p, s2), f, rtol=tol)  # f(AU) = f(A)
    perm = rng.permutation(k)
    assert_allclose(ac.objective(a, h[perm], phi[perm], p[perm], s2), f, rtol=tol)  # devices
    theta = rng.uniform(0, 2 * np.pi)
    assert_allclose(ac.objective(np.exp(1j * theta) * a, h, phi, p, s2), f, rtol=tol)
    assert_allclose(ac.objective(a, np.exp(1j * theta) * h, phi, p, s2), f, rtol=tol)
    per_device = np.exp(1j * rng.uniform(0, 2 * np.pi, k))[:, None, None, None]
    assert_allclose(ac.objective(a, per_device * h, phi, p, s2), f, rtol=tol)
    # and the per-subcarrier power split can be passed per (k, m) with the same result
    assert_allclose(ac.objective(a, h, phi, np.repeat(p[:, None], m, 1), s2), f, rtol=0)


# ---------------------------------------------------------------------------------------------
# §6.6 collinear channels, and the single-device closed form of §2
# ---------------------------------------------------------------------------------------------
def test_collinear_channels_optimum_and_random_beamformers_never_beat_it(rng, crandn):
    # normalized; N_t = L = 1, H_k = c_k h on every subcarrier, so the M axis is a batch of
    # candidate receive beamformers m evaluated on the same channel
    k, nr, n_cand = 4, 8, 2000
    hvec = crandn(nr)
    c = crandn(k) * np.array([1.0, 0.3, 2.0, 0.7])
    phi = np.array([0.4, 0.1, 0.3, 0.2])
    p = np.array([1.0, 0.2, 3.0, 0.5])
    s2 = 0.7
    h = np.broadcast_to((c[:, None] * hvec[None, :])[:, None, :, None], (k, n_cand, nr, 1))
    f_star = s2 * np.max(phi**2 / (p * np.abs(c) ** 2 * np.sum(np.abs(hvec) ** 2)))

    cand = crandn(n_cand, nr, 1)
    cand[0, :, 0] = 3.7j * hvec  # the optimum, at an arbitrary complex scale
    cand[1:1000] = hvec[None, :, None] + 1e-3 * cand[1:1000]  # small perturbations of it
    f = ac.objective(cand, h, phi, p, s2)
    assert_allclose(f[0], f_star, rtol=1e-12)  # a few flops: rounding only
    assert np.all(f[1:] >= f_star * (1 - 1e-12))  # Cauchy–Schwarz: nothing beats m ∝ h
    assert np.min(f[1:1000]) / f_star - 1 < 1e-4  # nearby candidates approach the optimum


def test_single_device_closed_forms(crandn):
    # normalized; spec 02 §2: with A = U diag(λ^{-1/4}) on the top-L eigenvectors of G the value
    # is (σ²φ²/P)(Σ λ_l^{-1/2})², while orthonormal columns give (σ²φ²/P) L Σ λ_l^{-1}
    nr, nt, lsz = 6, 4, 3
    h = crandn(1, 1, nr, nt)
    phi, p, s2 = np.array([0.8]), np.array([2.0]), 0.4
    lam, vec = np.linalg.eigh(h[0, 0] @ _herm(h[0, 0]))
    lam, vec = lam[::-1][:lsz], vec[:, ::-1][:, :lsz]
    best = (vec * lam**-0.25)[None]
    grassmann = vec[None]
    const = s2 * phi[0] ** 2 / p[0]
    # eigen-decompositions and L×L inverses: rounding ~1e-14
    assert_allclose(ac.objective(best, h, phi, p, s2), const * np.sum(lam**-0.5) ** 2, rtol=1e-10)
    assert_allclose(
        ac.objective(grassmann, h, phi, p, s2), const * lsz * np.sum(1 / lam), rtol=1e-10
    )


# ---------------------------------------------------------------------------------------------
# pack / unpack / aggregate and the distortion factor of §3
# ---------------------------------------------------------------------------------------------
def test_pack_unpack_round_trip_and_unit_power(rng):
    for q in (1, 7, 2 * 3 * 4 * 5, 2 * 3 * 4 * 5 + 1):
        x = rng.standard_normal((2, q))
        sym = ac.pack(x, 4, 3)
        assert sym.shape == (2, -(-q // 24), 4, 3)  # S = ⌈q / (2 L M)⌉
        assert_allclose(ac.unpack(sym, q), x, rtol=0, atol=1e-15)  # ×√2 then ÷√2: rounding
    x = rng.standard_normal(2 * 100_000)
    # 1e5 symbols of unit-variance reals: E|s|² = 1 with relative std 1/√1e5 ≈ 0.3 %; 2 % is 6σ
    assert abs(np.mean(np.abs(ac.pack(x, 1, 1)) ** 2) - 1) < 0.02


def test_noise_free_zf_aggregation_is_exact(rng, crandn, small_instance):
    # realistic channel; without noise, ZF precoders deliver Σ φ_k g_k / Σ φ_k exactly
    h, phi, p, _ = _realistic(small_instance, rng)
    m, nr = small_instance.n_subcarriers, small_instance.n_rx
    a_s, b = ac.zf_design(crandn(m, nr, 2), h, phi, p)
    g = 0.02 + 1e-3 * rng.standard_normal((small_instance.n_devices, 1001))  # padding on purpose
    out = ac.aggregate(g, a_s, b, h, phi, 0.0, rng)
    assert_allclose(out.exact, phi @ g / phi.sum(), rtol=1e-14)
    # ZF residual ~1e-13 relative (dimensionless A^H H B), amplified by v / |ḡ| ~ 0.05
    assert_allclose(out.estimate, out.exact, rtol=1e-10)
    assert out.n_symbols == -(-1001 // (2 * 2 * m))


def test_distortion_formula_matches_simulation(rng, crandn, small_instance):
    # realistic: small preset, L = 2; unnormalized weights φ_k = D_k (Σφ = 600) so the 1/(Σφ)²
    # factor of spec 02 §3 is exercised
    h, _, p, s2 = _realistic(small_instance, rng)
    k, m, nr = small_instance.n_devices, small_instance.n_subcarriers, small_instance.n_rx
    lsz = 2
    phi = np.asarray(small_instance.devices.dataset_size, dtype=float)
    a_s, b = ac.zf_design(crandn(m, nr, lsz), h, phi, p)
    mse_m = ac.mse(a_s, b, h, phi, s2)

    n_sym = 2000
    q = 2 * lsz * m * n_sym  # a multiple of 2 L M: no padding
    shared = rng.standard_normal(q)  # update vectors with a common direction, offset and scale
    g = 1e-3 * (0.5 + shared[None, :] + 0.7 * rng.standard_normal((k, q)))
    n_draws = 25
    errors, err_sum = [], np.zeros(q)
    for _ in range(n_draws):
        out = ac.aggregate(g, a_s, b, h, phi, s2, rng)
        errors.append(out.error)
        err_sum += out.estimate - out.exact
    assert out.n_symbols == n_sym
    assert out.scale == pytest.approx(np.std(g), rel=1e-12)  # v: std over all entries
    assert out.mean == pytest.approx(np.mean(g), rel=1e-12)  # μ: mean over all entries
    d = ac.distortion(mse_m, q, lsz, scale=out.scale, phi_sum=phi.sum())
    ratio = np.mean(errors) / d
    print(f"distortion: simulated / formula = {ratio:.4f} over {n_draws} draws, D = {d:.3e}")
    # 25 × 2000 × M × L = 4e5 complex errors, each |e|² exponential: relative std of the mean
    # ≈ 0.25 % with the unequal subcarrier MSEs; 2 % is > 5 sigma
    assert abs(ratio - 1) < 0.02
    # Zero-mean under ZF: the error averaged over the draws has squared norm D / n_draws, while a
    # bias b would add n_draws ‖b‖² / D. The norm sums q / 2 = 16000 complex entries: relative
    # std ≈ 1 % with the unequal subcarrier MSEs, so 10 % is > 8 sigma.
    zero_mean = n_draws * np.sum((err_sum / n_draws) ** 2) / d
    print(f"distortion: n ‖mean error‖² / D = {zero_mean:.4f}")
    assert abs(zero_mean - 1) < 0.1
