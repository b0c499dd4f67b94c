"""``fedopt solve`` through typer's CliRunner, on the ``small`` preset (3 devices, M = 4).

Oracles: the JSON summary against itself (Σ_m MSE_m, MSE ≥ bound), the written plan against the
AirComp physics of spec 02 §2 (f(c A) = MSE, MSE = σ²‖c A‖², ZF precoders with the binding device
at full power), the method ordering on one channel draw, and error messages that name the field.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fedopt import aircomp
from fedopt.channel import Channel, draw_channel
from fedopt.instance import list_presets
from fedopt.plan import Plan

# Values recomputed from a plan go through the same L×L inverses as the solver's report, on
# entries ~1e-5: float64 rounding, ~1e-15 seen; 1e-9 leaves room for other BLAS orderings.
RTOL_PHYSICS = 1e-9



@pytest.fixture
def solve_json(invoke):
    """``solve small -q --format json *args`` → the parsed summary (exit code 0 asserted)."""

    def run(*args):
        res = invoke("solve", "small", "-q", "--format", "json", *args)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)  # stdout only: nothing else may be printed there

    return run


def test_json_summary(solve_json, small_instance):
    data = solve_json()
    assert {"method", "status", "objective", "wall_time_s", "mse", "lower_bound"} <= set(data)
    m = small_instance.n_subcarriers
    mse, bound = np.asarray(data["mse"]), np.asarray(data["lower_bound"])
    assert mse.shape == (m,) and bound.shape == (m,)
    assert data["status"] in {"optimal", "converged", "max_iterations", "stopped", "inaccurate"}
    assert data["wall_time_s"] >= 0.0
    # MSE ≥ bound; on `small` the beamformers are certified, so they meet the bound up to
    # rounding (1e-15 relative below it seen)
    assert np.all(mse >= bound * (1 - 1e-12))
    assert_allclose(data["objective"], mse.sum(), rtol=1e-12)  # a sum of 4 floats
    assert_allclose(data["bound_ratio"], mse / bound, rtol=1e-12)  # the same division


@pytest.mark.parametrize("method", ["beamforming", "centroid", "sdr", "random"])
def test_each_beamforming_method_runs(solve_json, method, small_instance):
    data = solve_json("--method", method, "--seed", 1)
    assert data["method"] == method
    assert data["streams"] == (1 if method == "sdr" else 2)  # sdr: L = 1; others: the largest
    assert len(data["mse"]) == small_instance.n_subcarriers
    assert_allclose(data["objective"], sum(data["mse"]), rtol=1e-12)  # a sum of 4 floats


def test_beamforming_beats_the_baselines_on_the_same_seed(solve_json):
    obj = {
        m: solve_json("--method", m, "--seed", 2)["objective"]
        for m in ("beamforming", "centroid", "random")
    }
    assert obj["beamforming"] <= obj["centroid"]
    assert obj["beamforming"] <= obj["random"]
    # L = 1, K = 3 ≤ 3: the SDR is tight (spec 02 §4), so its certified bound is the optimum
    ours = solve_json("--method", "beamforming", "--streams", 1, "--seed", 2)
    sdr = solve_json("--method", "sdr", "--seed", 2)
    assert ours["streams"] == sdr["streams"] == 1
    ours_mse, v_sdr = np.asarray(ours["mse"]), np.asarray(sdr["lower_bound"])
    assert np.all(ours_mse >= v_sdr * (1 - 1e-9))  # a dual-certified bound; rounding only
    # 1e-4: the SDR value carries the conic solver's ~1e-8 accuracy, ours the polish tolerance
    assert_allclose(ours_mse, v_sdr, rtol=1e-4)
    assert ours["objective"] <= sdr["objective"] * (1 + 1e-4)


@pytest.mark.parametrize("method,suffix", [("beamforming", ".json"), ("airfl-lora", ".npz")])
def test_written_plan_reproduces_the_reported_mse(
    solve_json, tmp_path, small_instance, method, suffix
):
    path = tmp_path / f"plan{suffix}"
    data = solve_json("--method", method, "--seed", 3, "-o", path)
    assert data["plan"] == str(path)
    plan = Plan.load(path).check(small_instance)
    assert plan.instance_digest == small_instance.digest()
    assert (plan.channel_seed, plan.channel_round) == (3, 0)
    assert (plan.rank, plan.streams) == (data["rank"], data["streams"])

    inst = small_instance
    h = draw_channel(inst, 3).H
    phi, sigma2 = inst.weights, inst.noise_power_w
    p_sub = np.broadcast_to(
        np.reshape(inst.power_per_subcarrier_w, (inst.n_devices, -1)),
        (inst.n_devices, inst.n_subcarriers),
    )
    a = plan.beamformers()  # c_m A_m, at full power
    mse = np.asarray(data["mse"])
    # f is scale invariant: the plan's beamformers give the reported MSE (spec 02 §2)
    assert_allclose(aircomp.objective(a, h, phi, p_sub, sigma2), mse, rtol=RTOL_PHYSICS)
    # with ZF precoders the MSE is pure noise: σ² ‖c A‖² (plan stores unit A and c = √(MSE/σ²))
    assert_allclose(sigma2 * np.sum(np.abs(a) ** 2, axis=(1, 2)), mse, rtol=1e-12)  # rounding
    b = aircomp.zf_precoders(a, h, phi)
    assert_allclose(aircomp.mse(a, b, h, phi, sigma2), mse, rtol=RTOL_PHYSICS)
    # power: every device within its budget, the binding one exactly at it
    load = np.sum(np.abs(b) ** 2, axis=(2, 3)) / p_sub  # (K, M)
    assert np.all(load <= 1 + RTOL_PHYSICS)
    assert_allclose(load.max(axis=0), 1.0, rtol=RTOL_PHYSICS)
    # zf_design rescales A to the power limit: the plan's scale is already that one
    a_s, b_s = aircomp.zf_design(a, h, phi, p_sub)
    assert_allclose(a_s, a, rtol=RTOL_PHYSICS)
    assert_allclose(b_s, b, rtol=RTOL_PHYSICS)


def test_seed_is_reproducible_and_matters(solve_json):
    first = solve_json("--method", "beamforming", "--seed", 5)
    again = solve_json("--method", "beamforming", "--seed", 5)
    other = solve_json("--method", "beamforming", "--seed", 6)
    assert again["objective"] == first["objective"]  # same draw, same solver seed: bit for bit
    assert again["mse"] == first["mse"]
    assert other["objective"] != first["objective"]  # another channel draw


def test_channel_file(invoke, solve_json, tmp_path, small_instance):
    good = tmp_path / "good.npz"
    draw_channel(small_instance, 4).save(good)
    from_file = solve_json("--method", "beamforming", "--channel", good, "--seed", 4)
    drawn = solve_json("--method", "beamforming", "--seed", 4)
    assert from_file["mse"] == drawn["mse"]  # same channel, same solver seed

    k, m, nr, nt = draw_channel(small_instance, 4).shape
    bad = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    Channel(H=rng.standard_normal((k, m + 1, nr, nt)) + 0j).save(bad)
    res = invoke("solve", "small", "-q", "--channel", bad)
    assert res.exit_code != 0
    assert "axis 1" in res.output and "ofdm.n_subcarriers" in res.output, res.output


def test_bad_streams(invoke, small_instance):
    n_max = min(small_instance.n_tx, small_instance.n_rx)
    res = invoke("solve", "small", "-q", "--streams", n_max + 1)
    assert res.exit_code != 0
    assert "streams" in res.output and f"1..{n_max}" in res.output, res.output
    res = invoke("solve", "small", "-q", "--method", "sdr", "--streams", 2)
    assert res.exit_code != 0
    assert "sdr" in res.output and "--streams 1" in res.output, res.output


def test_unknown_instance_lists_the_presets(invoke):
    res = invoke("solve", "no-such-instance", "-q")
    assert res.exit_code != 0
    assert "no-such-instance" in res.output
    for name in list_presets():
        assert name in res.output


def test_text_summary(invoke):
    res = invoke("solve", "small", "-q", "--method", "centroid")
    assert res.exit_code == 0, res.output
    assert "centroid on small" in res.output
    assert "Σ_m MSE_m" in res.output and "MSE / lower bound" in res.output
    # the centroid's certificate is the single-device bound: the text says it is loose
    assert "vs the single-device bound, loose" in res.output


@pytest.mark.parametrize("method,kind,label", [
    ("single-stream", "sdr-dual", "vs the SDR-dual bound"),
    ("sdr", "sdr", "vs the SDR bound"),
    ("centroid-plan", "single-device", "vs the single-device bound, loose"),
])
def test_the_plan_names_its_lower_bound(invoke, solve_json, method, kind, label):
    # issue 17: a planner reading "MSE / lower bound 1.6" must know which bound it is
    data = solve_json("--method", method, "--seed", 1)
    assert data["lower_bound_kind"] == kind
    if kind == "sdr-dual":
        assert data["beamforming_method"] == "multicast"  # the L = 1 default
    res = invoke("solve", "small", "-q", "--method", method, "--seed", 1)
    assert res.exit_code == 0, res.output
    assert label in res.output


def test_help_lists_the_options(invoke):
    res = invoke("solve", "--help")
    assert res.exit_code == 0
    for option in ("--method", "--streams", "--seed", "--format", "-o"):
        assert option in res.output, option


@pytest.mark.parametrize("method", ["airfl-lora", "tsfa"])
def test_a_channel_file_reports_its_own_seed(invoke, small_instance, tmp_path, method):
    path = draw_channel(small_instance, 3, round=2).save(tmp_path / "H.npz")
    res = invoke("solve", "small", "-q", "--method", method, "--channel", path, "--format",
                 "json")
    data = json.loads(res.stdout)
    # the file was drawn with seed 3, round 2; --seed (0) is the solver's seed only
    assert (data["channel_file"], data["channel_seed"], data["channel_round"]) == (
        str(path), 3, 2)
    assert data["seed"] == 0
    text = invoke("solve", "small", "-q", "--method", method, "--channel", path).stdout
    assert f"file {path} (drawn with seed 3, round 2); solver seed 0" in text
    drawn = json.loads(invoke("solve", "small", "-q", "--method", method, "--seed", "5",
                              "--format", "json").stdout)
    assert (drawn["channel_file"], drawn["channel_seed"], drawn["channel_round"]) == (None, 5, 0)


def test_help_shows_no_bool_type_for_flags_and_no_rst_backticks(invoke):
    from fedopt.cli.main import app

    commands = [[c.name] for c in app.registered_commands]
    commands += [[g.name, c.name] for g in app.registered_groups
                 for c in g.typer_instance.registered_commands]
    assert len(commands) >= 11  # 7 commands, instance show/new/validate, channel draw
    for args in commands:
        res = invoke(*args, "--help")
        assert res.exit_code == 0, args
        assert "<bool>" not in res.stdout and "``" not in res.stdout, (args, res.stdout)


def test_output_suffix_is_checked_before_solving(invoke, tmp_path):
    res = invoke("solve", "small", "-q", "-o", tmp_path / "p.csv")
    assert res.exit_code == 2 and "a plan is written as .json or .npz" in res.stderr
    assert not (tmp_path / "p.csv").exists()


def test_output_is_not_overwritten_without_force(invoke, tmp_path):
    path = tmp_path / "plan.json"
    assert invoke("solve", "small", "-q", "-o", path).exit_code == 0
    before = path.read_text()
    res = invoke("solve", "small", "-q", "--method", "tsfa", "-o", path)
    assert res.exit_code == 2 and "exists; pass --force to overwrite it" in res.stderr
    assert path.read_text() == before  # the AirComp plan survives
    assert invoke("solve", "small", "-q", "--method", "tsfa", "-o", path, "--force"
                  ).exit_code == 0
    assert json.loads(path.read_text())["kind"] == "digital"
    res = invoke("solve", "small", "-q", "-o", tmp_path)
    assert res.exit_code == 2  # a directory: named before solving
