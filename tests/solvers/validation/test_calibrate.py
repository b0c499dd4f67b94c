"""Calibration of the gap model from pilot runs (``fedopt calibrate``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.gap_models import AirFLGap
from fedopt.instance import load_instance
from fedopt.solvers.validation import calibrate


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


@pytest.fixture(scope="module")
def cal(tiny):
    return calibrate(tiny, rounds=2, ranks=(1, 4))


def test_power_law_reproduces_both_pilots(cal):
    # v(r) = v r^(-β) is fitted through the two measured points: exact unless β was clipped
    v_a, v_b = (p["update_scale"] for p in cal.measurements["pilots"][:2])
    beta = cal.update_scale_exponent
    assert 0.0 <= beta <= 1.0
    if 0.0 < beta < 1.0:
        assert cal.update_scale * 1 ** (-beta) == pytest.approx(v_a, rel=1e-12)
        assert cal.update_scale * 4 ** (-beta) == pytest.approx(v_b, rel=1e-12)
    assert v_a > v_b  # rank-stabilized scale α/r ∝ 1/√r: per-entry updates shrink with r


def test_coefficients_reproduce_the_measured_loss_differences(cal):
    # L_s/2 · (ε-tail(r_a) − ε-tail(r_b)) = F(r_a) − F(r_b) and gain · D = F_noisy − F(r_b),
    # by construction of the fit (exact up to the 4-digit rounding written to the instance)
    from fedopt.gap_models.airfl import GapConstants, RankTruncation

    m = cal.measurements
    tails = RankTruncation(np.asarray(cal.spectrum_values)).energy_beyond(
        np.array([1, 4]), cal.instance.lora.layers)
    assert cal.smoothness / 2 * (tails[0] - tails[1]) == pytest.approx(
        max(m["loss_drop_from_rank"], 1e-9), rel=1e-9)
    noisy = m["pilots"][2]
    assert noisy["rank"] == 4 and noisy["aggregation_error"] > 0
    assert cal.noise_gain * noisy["aggregation_error"] == pytest.approx(
        max(m["loss_rise_from_noise"], 1e-9), rel=1e-9)
    c = GapConstants.from_learning(cal.instance.learning)
    assert c.noise_gain == pytest.approx(cal.noise_gain, rel=2e-3)  # 4 significant digits
    assert c.smoothness * c.step_size <= 1 + 1e-12  # λ ≤ 1/L_s holds
    assert 0 < c.contraction_factor < 1


def test_spectrum_is_the_r_b_pilots(cal):
    s = np.asarray(cal.spectrum_values)
    assert s.shape == (4,)  # a rank-4 update has 4 singular values
    assert np.all(np.diff(s) <= 0) and s[0] > 0


def test_calibrated_instance_feeds_the_gap_model(cal):
    inst = cal.instance
    assert inst.learning.spectrum_kind == "measured"
    assert inst.learning.update_scale == pytest.approx(cal.update_scale)
    gap = AirFLGap(inst)
    # D(r, L) = v(r)² q(r) / (L M) Σ MSE, with v(r) = v r^(-β) (spec 02 §3 with the fitted v)
    r, L, mse = 4, 1, 0.3
    v = cal.update_scale * r ** (-cal.update_scale_exponent)
    want = v**2 * inst.payload(r) / (L * inst.n_subcarriers) * mse
    assert float(gap.distortion(r, L, mse)) == pytest.approx(want, rel=1e-12)


def test_half_exponent_makes_distortion_rank_independent(tiny):
    # β = 1/2: v(r)² q(r) = v² q(1), so D is the same at every rank (exactly, up to rounding)
    inst = tiny.replace(learning={**tiny.to_dict()["learning"], "update_scale_exponent": 0.5})
    d = AirFLGap(inst).distortion(np.array([1, 2, 8, 32]), 1, 0.1)
    np.testing.assert_allclose(d, d[0], rtol=1e-12)
    # β = 0 (default): D ∝ r
    d0 = AirFLGap(inst.replace(learning={**inst.to_dict()["learning"],
                                         "update_scale_exponent": 0.0})).distortion(
        np.array([1, 2, 8, 32]), 1, 0.1)
    np.testing.assert_allclose(d0 / d0[0], [1, 2, 8, 32], rtol=1e-12)


def test_preset_records_a_calibration():
    learning = load_instance("tiny-char").learning
    assert learning.spectrum_kind == "measured" and len(learning.spectrum_values) == 32
    assert 0.3 < learning.update_scale_exponent < 0.8  # measured 0.585 (α/r ∝ 1/√r: ≈ 0.5)
    assert math.isfinite(learning.update_scale)


def test_bad_input(tiny):
    with pytest.raises(InvalidArgumentError, match="ranks"):
        calibrate(tiny, rounds=1, ranks=(4, 2))
    with pytest.raises(InvalidArgumentError, match="rounds"):
        calibrate(tiny, rounds=0)
    with pytest.raises(InvalidArgumentError, match="noise"):
        calibrate(tiny, rounds=1, noise=0.0)
    with pytest.raises(PlanError, match="lora.layers"):
        calibrate(load_instance("small"), rounds=1)


def test_cli_writes_the_instance(tmp_path, invoke):
    out = tmp_path / "cal.yaml"
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "-o", str(out), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) >= {"update_scale", "update_scale_exponent", "spectrum_values",
                         "smoothness", "noise_gain"}
    assert load_instance(out).learning.spectrum_kind == "measured"
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "-o", str(out))
    assert res.exit_code == 2 and "--force" in res.output
