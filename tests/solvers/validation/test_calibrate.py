"""Calibration of the gap model from pilot runs (``fedopt calibrate``).

Two kinds of pilots: the real FL loop (one short module-scoped calibration: one round, two
ranks, one seed, two noise levels — a pilot costs tens of seconds on a busy CPU), and synthetic
pilots generated from known constants (``fake_pilots``: the loop replaced by the gap model's own
equations), through which the orchestration, the written file and the CLI are checked fast and
exactly.
"""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError, PlanError
from fedopt.gap_models import AirFLGap
from fedopt.gap_models.airfl import GapConstants, RankTruncation
from fedopt.instance import load_instance
from fedopt.solvers.validation import ValidateSettings, calibrate

#: the module (the package's ``calibrate`` attribute is the function)
cal_mod = importlib.import_module("fedopt.solvers.validation.calibrate")


@pytest.fixture(scope="module")
def tiny():
    return load_instance("tiny-char")


# -- the real loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    records = []
    settings = ValidateSettings.for_testbed("pydoc-topics", eval_batches=1)
    cal = calibrate(load_instance("tiny-char"), rounds=1, ranks=(1, 4), seeds=(0,),
                    noise_levels=(1.0, 2.0), settings=settings, callback=records.append,
                    truncation="spectrum")  # one round: the loss profile is flat
    return cal, records


def test_real_pilots_and_progress(real):
    cal, records = real
    pilots = cal.measurements["pilots"]
    assert [(p["kind"], p["rank"], p["noise"]) for p in pilots] == [
        ("ideal", 1, 0.0), ("ideal", 4, 0.0), ("noisy", 4, 1.0), ("noisy", 4, 2.0)]
    assert records[0] == {"label": "loading the testbed and its base model"}  # from second 0
    bars = records[1:]
    assert [r["done"] for r in bars] == [0, 1, 2, 3, 4]
    assert all(r["total"] == 4 for r in bars) and bars[-1]["label"] == "fitting"
    assert pilots[0]["update_scale"] > pilots[1]["update_scale"]  # α/r ∝ 1/√r: v falls with r
    noisy = pilots[2:]
    assert noisy[1]["aggregation_error"] == pytest.approx(2 * noisy[0]["aggregation_error"],
                                                          rel=0.05)  # D ∝ level (same draws)


def test_real_fits_reproduce_the_measurements(real):
    cal, _ = real
    pilots = cal.measurements["pilots"]
    ideal1, ideal4, *noisy = pilots
    # two ranks: the power law goes through both pilots (exact unless β was clipped)
    beta = cal.update_scale_exponent
    assert 0.0 <= beta <= 1.0 and cal.update_scale_fit.exponent.n == 2
    if 0.0 < beta < 1.0:
        assert cal.update_scale == pytest.approx(ideal1["update_scale"], rel=1e-9)
        assert cal.update_scale * 4 ** (-beta) == pytest.approx(ideal4["update_scale"], rel=1e-9)
    # L_s/2 · (tail(1) − tail(4)) = F(1) − F(4) (one difference), unless floored
    tails = RankTruncation(np.asarray(cal.spectrum_values)).energy_beyond(
        np.array([1, 4]), cal.instance.lora.layers)
    drop = ideal1["final_eval_loss"] - ideal4["final_eval_loss"]
    if drop > 0:
        assert cal.smoothness / 2 * (tails[0] - tails[1]) == pytest.approx(drop, rel=1e-9)
    # rise = F_noisy − F_ideal(4, same seed); gain = Σ D rise / Σ D² over the two levels
    d = np.array([p["aggregation_error"] for p in noisy])
    rise = np.array([p["final_eval_loss"] - ideal4["final_eval_loss"] for p in noisy])
    assert [p["loss_rise"] for p in noisy] == pytest.approx(rise.tolist(), rel=1e-12)
    if d @ rise > 0:
        assert cal.noise_gain == pytest.approx(float(d @ rise / (d @ d)), rel=1e-9)
    assert cal.noise_gain_fit.n == 2 and cal.noise_gain_fit.curvature is None
    c = GapConstants.from_learning(cal.instance.learning)
    assert c.noise_gain == pytest.approx(cal.noise_gain, rel=2e-3)  # 4 significant digits
    assert c.smoothness * c.step_size <= 1 + 1e-12  # λ ≤ 1/L_s holds
    assert 0 < c.contraction_factor < 1


def test_real_measured_constants(real):
    cal, _ = real
    m = cal.measurements
    s = np.asarray(cal.spectrum_values)
    assert s.shape == (4,) and np.all(np.diff(s) <= 0) and s[0] > 0  # rank 4: 4 values
    assert cal.grad_variance > 0 and cal.grad_variance_fit.n == 1  # one round of r = 4
    assert cal.instance.learning.grad_variance == float(f"{cal.grad_variance:.4g}")
    best = min(p["final_eval_loss"] for p in m["pilots"] if p["kind"] == "ideal")
    if m["base_eval_loss"] > best:
        assert cal.initial_gap == pytest.approx(m["base_eval_loss"] - best, rel=1e-12)
        assert cal.instance.learning.initial_gap == float(f"{cal.initial_gap:.4g}")


def test_real_calibrated_instance_feeds_the_gap_model(real):
    cal, _ = real
    inst = cal.instance
    assert inst.learning.spectrum_kind == "measured"
    assert inst.learning.update_scale == pytest.approx(cal.update_scale)
    gap = AirFLGap(inst)
    # D(r, L) = v(r)² q(r) / (L M) Σ MSE, with v(r) = v r^(-β) (spec 02 §3 with the fitted v)
    r, L, mse = 4, 1, 0.3
    v = cal.update_scale * r ** (-cal.update_scale_exponent)
    want = v**2 * inst.payload(r) / (L * inst.n_subcarriers) * mse
    assert float(gap.distortion(r, L, mse)) == pytest.approx(want, rel=1e-12)


def test_real_to_dict_is_json_safe(real):
    cal, _ = real
    data = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    assert set(data) >= {"update_scale", "update_scale_exponent", "smoothness", "noise_gain",
                         "spectrum_values", "measurements", "fits", "grad_variance",
                         "initial_gap", "warnings"}
    for name in ("smoothness", "noise_gain", "grad_variance"):
        assert set(data["fits"][name]) >= {"value", "std_error", "residuals", "r_squared", "n"}
    assert set(data["fits"]["update_scale"]["exponent"]) >= {"value", "estimate", "residuals"}


def test_real_calibrated_file_round_trips(real, tmp_path):
    cal, _ = real
    path = cal.save(tmp_path / "cal.yaml")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Calibrated by `fedopt calibrate`")
    assert "command: fedopt calibrate tiny-char --rounds 1 --seeds 0 --ranks 1,4" in text
    assert "L_s =" in text and "noise gain" in text and "±" in text and "R²" in text
    assert load_instance(path) == cal.instance
    assert load_instance(cal.save(tmp_path / "cal.json")) == cal.instance


# -- synthetic pilots from known constants ------------------------------------------------------
V1, BETA, L_S, GAIN, SPREAD, F_INF, D_PER_LEVEL = 0.004, 0.3, 0.6, 0.002, 0.01, 1.0, 0.05
#: the learned update's spectrum the fake pilots report (4 digits: mean_spectrum keeps it)
SPEC = np.array([float(f"{0.04 * i ** -0.7:.4g}") for i in range(1, 65)])


def _seed_offset(seed):
    return 0.01 * (seed % 7)  # a per-seed loss level, shared by all pilots of the seed (CRN)


@pytest.fixture
def fake_pilots(monkeypatch, tmp_path):
    """Replace the FL loop by pilots generated from the constants above (v(r) = V1 r^-BETA,
    F(r) = F_INF + offset(seed) + (L_S/2) tail(r), rise = GAIN · D + ``curvature`` · D²);
    returns a dict whose ``curvature`` (and ``diverge_at``, a noise level from which the noisy
    pilots diverge) a test may set."""
    knobs = {"curvature": 0.0, "diverge_at": math.inf}
    monkeypatch.chdir(tmp_path)  # the CLI saves pilots in ./calibrate-out: not these fakes

    def fake(instance, data, base, recipe, *, rank, rounds, seed, noise=0.0):
        if noise >= knobs["diverge_at"]:  # what _pilot records for a diverged noisy run
            return cal_mod._Pilot({"kind": "noisy", "rank": rank, "seed": seed, "noise": noise,
                                   "diverged": "round 0: ... diverged", "final_eval_loss": None,
                                   "wall_s": 0.0}, None, [])
        spec = np.where(np.arange(SPEC.size) < rank, SPEC, 0.0)  # a rank-r update has r
        # ε-tail of the largest rank's (r = 32) spectrum, the one the fit uses
        tail = float(RankTruncation(SPEC[:32]).energy_beyond(
            np.array([rank]), instance.lora.layers)[0])
        d = noise * D_PER_LEVEL
        loss = (F_INF + _seed_offset(seed) + 0.5 * L_S * tail + GAIN * d
                + knobs["curvature"] * d**2)
        record = {"kind": "noisy" if noise > 0 else "ideal", "rank": rank, "seed": seed,
                  "noise": noise, "update_scale": V1 * rank**-BETA, "aggregation_error": d,
                  "grad_spread": SPREAD, "final_eval_loss": loss, "final_train_loss": loss,
                  "wall_s": 0.0}
        sv = np.tile(spec, (8, 1))
        return cal_mod._Pilot(record, sv, [SPREAD] * rounds)

    monkeypatch.setattr(cal_mod, "_pilot", fake)
    return knobs


def test_synthetic_pilots_recover_the_constants(fake_pilots):
    inst = load_instance("char-tasks")
    records = []
    cal = calibrate(inst, rounds=2, callback=records.append)
    m = cal.measurements
    # the defaults: every candidate rank, seeds 100 and 101, three levels at the largest rank,
    # the instance's testbed recipe
    assert m["ranks"] == [1, 2, 4, 8, 16, 32] and m["seeds"] == [100, 101]
    assert m["noise_levels"] == [4.0, 8.0, 16.0] and m["noise_rank"] == 32
    assert m["settings"] == ValidateSettings.for_testbed("domain-shift").to_dict()
    assert len(m["pilots"]) == 2 * (6 + 3) and records[-1]["done"] == records[-1]["total"] == 18
    # exact data: exact recovery, zero residuals
    assert cal.update_scale == pytest.approx(V1, rel=1e-9)
    assert cal.update_scale_exponent == pytest.approx(BETA, abs=1e-9)
    assert tuple(cal.measurements["learned_update_spectrum"]) == tuple(SPEC[:32])
    assert cal.smoothness == pytest.approx(L_S, rel=1e-9)
    assert cal.noise_gain == pytest.approx(GAIN, rel=1e-9)
    for fit in (cal.update_scale_fit.exponent, cal.smoothness_fit, cal.noise_gain_fit):
        assert max(map(abs, fit.residuals)) < 1e-12
    assert cal.noise_gain_fit.n == 6 and cal.noise_gain_fit.curvature is False
    assert cal.smoothness_fit.n == 5 and cal.update_scale_fit.exponent.n == 12
    # σ_g² = b · spread / (1 − Σφ²) with the loop's client weights φ
    phi = ValidateSettings.for_testbed("domain-shift").client_data(inst).weights
    phi = phi / phi.sum()
    want = inst.learning.batch_size * SPREAD / (1 - float(phi @ phi))
    assert cal.grad_variance == pytest.approx(want, rel=1e-12)
    # Δ0 = base loss − the best pilot (seed 100: offset 0.02, at the largest rank)
    assert cal.initial_gap == pytest.approx(m["base_eval_loss"] - F_INF - _seed_offset(100))
    assert cal.warnings == ()
    lrn = cal.instance.learning
    assert (lrn.smoothness, lrn.grad_variance) == (L_S, float(f"{want:.4g}"))
    assert GapConstants.from_learning(lrn).noise_gain == pytest.approx(GAIN, rel=2e-3)


def test_synthetic_curvature_is_reported(fake_pilots):
    fake_pilots["curvature"] = 0.5  # rise = GAIN D + 0.5 D²: the line under-predicts at high D
    cal = calibrate(load_instance("tiny-char"), rounds=1, ranks=(1, 32), seeds=(0,))
    assert cal.noise_gain_fit.curvature is True
    assert any("under-predicts at high error" in w for w in cal.warnings)
    assert any(line.startswith("warning: the linear model under-predicts")
               for line in cal.summary_lines())


def test_diverged_noisy_pilots_are_left_out(fake_pilots, tiny):
    fake_pilots["diverge_at"] = 2.0
    levels = (0.25, 0.5, 1.0, 2.0)
    cal = calibrate(tiny, rounds=1, ranks=(1, 32), seeds=(0,), noise_levels=levels)
    assert cal.noise_gain_fit.n == 3 and cal.noise_gain == pytest.approx(GAIN, rel=1e-9)
    assert any("noise level 2, seed 0 diverged" in w for w in cal.warnings)
    fake_pilots["diverge_at"] = 0.1
    with pytest.raises(InvalidArgumentError, match="noise_levels: every noisy pilot diverged"):
        calibrate(tiny, rounds=1, ranks=(1, 32), seeds=(0,), noise_levels=levels)


def test_seed_and_noise_are_backward_compatible(fake_pilots, tiny):
    cal = calibrate(tiny, rounds=1, ranks=(1, 4), seed=3, noise=1.0)
    assert cal.measurements["seeds"] == [3] and cal.measurements["noise_levels"] == [1.0]
    assert cal.measurements["seed"] == 3


def test_noise_rank_joins_the_ranks(fake_pilots, tiny):
    cal = calibrate(tiny, rounds=1, ranks=(1, 32), seeds=(0,), noise_levels=(1.0,),
                    noise_rank=8)
    assert cal.measurements["ranks"] == [1, 8, 32]
    assert {p["rank"] for p in cal.measurements["pilots"] if p["kind"] == "noisy"} == {8}


def test_bad_input(tiny):
    for kwargs, what in [({"ranks": (4, 4)}, "ranks"), ({"ranks": (4,)}, "ranks"),
                         ({"ranks": (1, 100)}, "ranks"), ({"rounds": 0}, "rounds"),
                         ({"noise": 0.0}, "noise"), ({"noise_levels": (1.0, -1.0)},
                                                      "noise_levels"),
                         ({"noise_levels": (1.0, 1.0)}, "noise_levels"),
                         ({"seeds": ()}, "seeds"), ({"seeds": (0, 0)}, "seeds"),
                         ({"noise_rank": 0}, "noise_rank")]:
        with pytest.raises(InvalidArgumentError, match=what):
            calibrate(tiny, **kwargs)
    with pytest.raises(PlanError, match="lora.layers"):
        calibrate(load_instance("small"), rounds=1)


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


# -- the command line ---------------------------------------------------------------------------
def test_cli_writes_the_instance_and_refuses_to_overwrite(tmp_path, invoke, fake_pilots):
    out = tmp_path / "cal.yaml"
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "--seeds", "0,1", "--ranks",
                 "1,4,32", "-o", str(out), "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) >= {"update_scale", "update_scale_exponent", "spectrum_values",
                         "smoothness", "noise_gain", "fits", "output"}
    assert data["smoothness"] == pytest.approx(L_S, rel=1e-9)
    assert data["fits"]["noise_gain"]["n"] == 6  # 3 default levels x 2 seeds
    inst = load_instance(out)
    assert inst.learning.spectrum_kind == "measured" and inst.learning.smoothness == L_S
    text = out.read_text(encoding="utf-8")
    assert ("# command: fedopt calibrate tiny-char --rounds 1 --seeds 0,1 --ranks 1,4,32 "
            "--noise-levels 4,8,16 --noise-rank 32 --truncation loss-profile") in text
    before = out.read_bytes()
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "-o", str(out))
    assert res.exit_code == 2 and "--force" in res.output
    assert out.read_bytes() == before
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "--seed", "5", "--ranks", "1,32",
                 "-o", str(out), "--force", "--quiet")
    assert res.exit_code == 0, res.output
    assert "--seeds 5 --ranks 1,32" in out.read_text(encoding="utf-8")


def test_cli_text_report(invoke, fake_pilots):
    fake_pilots["curvature"] = 0.5
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "--seeds", "0", "--ranks", "1,32",
                 "--quiet")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for part in ("update scale", "smoothness     L_s = 0.6", "noise gain", "R²", "±",
                 "residuals", "grad variance", "initial gap", "curvature: YES"):
        assert part in out, part
    assert "warning: the linear model under-predicts at high error" in out


@pytest.mark.parametrize(("args", "option"), [
    (("--noise-levels", "1,0"), "--noise-levels"),
    (("--noise-levels", "1,x"), "--noise-levels"),
    (("--ranks", "1,100"), "--ranks"),
    (("--ranks", "4"), "--ranks"),
    (("--seeds", "a,b"), "--seeds"),
    (("--seeds", "0,0"), "--seeds"),
    (("--seed", "0", "--seeds", "1"), "--seed"),
    (("--noise-rank", "99"), "--noise-rank"),
])
def test_cli_bad_input_exits_2_naming_the_option(invoke, args, option):
    res = invoke("calibrate", "tiny-char", "--quiet", *args)
    assert res.exit_code == 2
    assert f"error: {option}:" in res.output


def test_loss_profile_truncation_reproduces_the_pilots_rank_profile(fake_pilots):
    from fedopt.gap_models import RankTruncation

    inst = load_instance("char-tasks")
    cal = calibrate(inst, rounds=2)
    assert cal.measurements["truncation"] == "loss-profile"
    ideal = [p for p in cal.measurements["pilots"] if p["kind"] == "ideal"]
    ranks = sorted({p["rank"] for p in ideal})
    mean = np.array([np.mean([p["final_eval_loss"] for p in ideal if p["rank"] == r])
                     for r in ranks])
    lrn = cal.instance.learning
    eps = 0.5 * lrn.smoothness * RankTruncation(np.array(lrn.spectrum_values)).energy_beyond(
        np.array(ranks), inst.lora.layers)
    # the written ε(r) − ε(r_max) is the measured F̄(r) − F̄(r_max) (4 significant digits in
    # the spectrum and in L_s: about 1e-3 relative); the synthetic profile falls with the rank
    assert np.all(np.diff(mean) < 0)
    np.testing.assert_allclose(eps - eps[-1], mean - mean[-1], rtol=3e-3, atol=1e-7)
    with pytest.raises(InvalidArgumentError, match="truncation"):
        calibrate(inst, rounds=2, truncation="svd")
