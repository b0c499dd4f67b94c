"""Plans: exact JSON / .npz round trips, checks against an instance, messages on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fedopt.errors import PlanError
from fedopt.plan import PLAN_SCHEMA_VERSION, AirCompPlan, DigitalPlan, Plan

ARRAYS = ("receive_beamformers", "power_scale", "bandwidth_hz", "sparsity")


def _aircomp_plan(instance, crandn, rng, streams: int = 2) -> Plan:
    m, nr = instance.n_subcarriers, instance.n_rx
    # entries spanning 400 decades and values without short decimal forms: exactness is tested
    a = crandn(m, nr, streams) * 10.0 ** rng.uniform(-200, 200, size=(m, nr, streams))
    a[0, 0, 0] = 1 / 3 - 1j / 7
    return Plan(
        method="airfl-lora",
        rank=4,
        streams=streams,
        receive_beamformers=a,
        power_scale=rng.uniform(0.5, 2.0, m) * 1e7,
        instance_name=instance.name,
        instance_digest=instance.digest(),
        channel_seed=12,
        channel_round=3,
        metadata={
            "objective": 0.1 + 0.2,
            "solver": {"name": "x", "iters": [1, 2, 3]},
            "note": "ünïcode",
        },
    )


def _assert_same_plan(back: Plan, plan: Plan) -> None:
    for name in ARRAYS:
        a, b = getattr(back, name), getattr(plan, name)
        if b is None:
            assert a is None, name
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert_array_equal(a, b)  # bit-exact: no tolerance
    assert back.to_dict() == plan.to_dict()


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_aircomp_plan_round_trip_is_exact(tmp_path, small_instance, crandn, rng, suffix):
    plan = _aircomp_plan(small_instance, crandn, rng)
    back = Plan.load(plan.save(tmp_path / f"plan{suffix}"))
    _assert_same_plan(back, plan)
    assert back.receive_beamformers.dtype == np.complex128
    assert (back.channel_seed, back.channel_round) == (12, 3)
    assert back.metadata["objective"] == 0.1 + 0.2


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_digital_plan_round_trip_is_exact(tmp_path, small_instance, rng, suffix):
    plan = Plan(
        method="soft",
        rank=2,
        streams=1,
        bandwidth_hz=rng.uniform(1e4, 1e5, small_instance.n_devices),
        sparsity=np.array([0.0, 1 / 3, 0.999]),
    )
    back = Plan.load(plan.save(tmp_path / f"digital{suffix}"))
    _assert_same_plan(back, plan)
    assert back.receive_beamformers is None and back.channel_seed is None
    plan.check(small_instance)


def test_dict_round_trip_and_scaled_beamformers(small_instance, crandn, rng):
    plan = _aircomp_plan(small_instance, crandn, rng)
    _assert_same_plan(Plan.from_dict(json.loads(json.dumps(plan.to_dict()))), plan)
    # the beamformers used on the air are c_m A_m
    want = plan.receive_beamformers * plan.power_scale[:, None, None]
    assert_array_equal(plan.beamformers(), want)
    unscaled = Plan(method="x", rank=1, streams=2, receive_beamformers=plan.receive_beamformers)
    assert_array_equal(unscaled.beamformers(), plan.receive_beamformers)
    with pytest.raises(PlanError, match=r"plan of method 'soft' has no receive beamformers"):
        Plan(method="soft", rank=1, streams=1).beamformers()
    with pytest.raises(ValueError):  # plans are immutable: arrays are read-only
        plan.receive_beamformers[0, 0, 0] = 0


# ---------------------------------------------------------------------------------------------
# Plan.check against an instance
# ---------------------------------------------------------------------------------------------
def test_check_accepts_matching_plan(small_instance, crandn, rng):
    plan = _aircomp_plan(small_instance, crandn, rng)
    assert plan.check(small_instance) is plan


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"rank": 33}, ["rank: got 33", "allow 1..32"]),
        ({"streams": 3, "a_shape": (4, 4, 3)}, ["streams: got L = 3", "min(N_t, N_r) = 2"]),
        (
            {"a_shape": (4, 5, 2)},
            ["receive_beamformers: shape (4, 5, 2)", "M = 4 subcarriers", "N_r = 4 antennas"],
        ),
        (
            {"a_shape": (8, 4, 2)},
            ["receive_beamformers: shape (8, 4, 2)", "M = 4 subcarriers", "N_r = 4 antennas"],
        ),
        ({"bandwidth_hz": np.ones(4)}, ["bandwidth_hz: 4 values", "K = 3 devices"]),
        ({"sparsity": np.zeros(2)}, ["sparsity: 2 values", "K = 3 devices"]),
    ],
)
def test_check_rejects_mismatch(small_instance, crandn, changes, fragments):
    changes = dict(changes)
    shape = changes.pop("a_shape", (4, 4, 2))
    kwargs = {"method": "x", "rank": 2, "streams": shape[2], "receive_beamformers": crandn(*shape)}
    kwargs.update(changes)
    plan = Plan(**kwargs)
    with pytest.raises(PlanError) as exc:
        plan.check(small_instance)
    msg = str(exc.value)
    assert "plan does not fit instance 'small'" in msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"


def test_check_reports_every_problem(small_instance, crandn):
    plan = Plan(method="x", rank=64, streams=3, receive_beamformers=crandn(5, 6, 3))
    msg = str(pytest.raises(PlanError, plan.check, small_instance).value)
    assert msg.count(";") == 2 and "rank: got 64" in msg and "streams: got L = 3" in msg


# ---------------------------------------------------------------------------------------------
# bad plans
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"rank": 0}, r"rank: got 0, must be an integer >= 1"),
        ({"streams": "2"}, r"streams: got '2', must be an integer >= 1"),
        ({"rank": 2.0}, r"rank: got 2\.0, must be an integer >= 1"),
        (
            {"receive_beamformers": np.full((2, 3, 1), np.nan)},
            r"receive_beamformers: contains NaN or inf",
        ),
        (
            {"receive_beamformers": np.ones((2, 3, 2))},
            r"receive_beamformers: expected shape \(M, N_r, L=1\), got \(2, 3, 2\)",
        ),
        (
            {"receive_beamformers": np.ones((2, 3, 1)), "power_scale": np.ones(3)},
            r"power_scale: expected shape \(2,\) \(one per subcarrier\), got \(3,\)",
        ),
        ({"sparsity": [0.1, 1.0]}, r"sparsity: values must lie in \[0, 1\), got \[0\.1, 1\.0\]"),
        ({"bandwidth_hz": [1.0, -1.0]}, r"bandwidth_hz: values must be >= 0"),
        (
            {"schema_version": 9},
            rf"schema_version: got 9, .*plan schema version {PLAN_SCHEMA_VERSION}",
        ),
    ],
)
def test_bad_plan_fields(kwargs, pattern):
    base = {"method": "x", "rank": 1, "streams": 1}
    with pytest.raises(PlanError, match=pattern):
        Plan(**{**base, **kwargs})


def test_bad_plan_files(tmp_path, small_instance, crandn, rng):
    good = _aircomp_plan(small_instance, crandn, rng).to_dict()
    cases = {
        "typo.json": ({**good, "rnak": 2}, r"typo\.json: rnak: unknown field \(known: "),
        "missing.json": (
            {k: v for k, v in good.items() if k != "rank"},
            r"missing\.json: rank: missing required field",
        ),
        "short.json": (
            {**good, "power_scale": {"shape": [5], "real": [1.0]}},
            r"short\.json: power_scale: 1 values do not fill shape \(5,\)",
        ),
        "list.json": ([1, 2], r"list\.json: expected a mapping, got list"),
    }
    for name, (data, pattern) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(PlanError, match=pattern):
            Plan.load(tmp_path / name)
    (tmp_path / "broken.json").write_text('{"method": ')
    with pytest.raises(PlanError, match=r"broken\.json: not a readable plan file"):
        Plan.load(tmp_path / "broken.json")
    np.savez(tmp_path / "nohdr.npz", receive_beamformers=np.ones((1, 1, 1)))
    with pytest.raises(PlanError, match=r"nohdr\.npz: not a fedopt plan \(no 'header' array\)"):
        Plan.load(tmp_path / "nohdr.npz")
    with pytest.raises(PlanError, match=r"absent\.json: not a readable plan file"):
        Plan.load(tmp_path / "absent.json")


# ---------------------------------------------------------------------------------------------
# typed plans: AirCompPlan and DigitalPlan
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_typed_plans_load_back_as_their_class(tmp_path, small_instance, crandn, rng, suffix):
    base = _aircomp_plan(small_instance, crandn, rng)
    air = base.typed()
    assert type(air) is AirCompPlan and air.beamforming_method == "beamforming"
    air = AirCompPlan(**{**{k: getattr(base, k) for k in (
        "method", "rank", "streams", "receive_beamformers", "power_scale", "instance_name",
        "instance_digest", "channel_seed", "channel_round", "metadata")}},
        beamforming_method="centroid")
    back = Plan.load(air.save(tmp_path / f"air{suffix}"))
    assert type(back) is AirCompPlan and back.beamforming_method == "centroid"
    _assert_same_plan(back, air)
    digital = DigitalPlan(method="tsfa", rank=2, streams=1, bandwidth_hz=np.ones(3),
                          sparsity=np.array([0.0, 0.5, 0.25]))
    back = Plan.load(digital.save(tmp_path / f"digital{suffix}"))
    assert type(back) is DigitalPlan
    _assert_same_plan(back, digital)
    # a generic plan stays generic through a round trip (its file says kind "plan")
    assert type(Plan.load(base.save(tmp_path / f"generic{suffix}"))) is Plan


def test_files_without_kind_are_typed_by_content(small_instance, crandn, rng):
    old = _aircomp_plan(small_instance, crandn, rng).to_dict()
    del old["kind"]
    old["metadata"]["beamforming_method"] = "mrc"  # where the planner kept it before
    back = Plan.from_dict(old)
    assert type(back) is AirCompPlan and back.beamforming_method == "mrc"
    digital = Plan(method="soft", rank=2, streams=1, bandwidth_hz=np.ones(3),
                   sparsity=np.zeros(3)).to_dict()
    del digital["kind"]
    assert type(Plan.from_dict(digital)) is DigitalPlan


def test_typed_plan_errors(small_instance, crandn, rng):
    d = _aircomp_plan(small_instance, crandn, rng).to_dict()
    with pytest.raises(PlanError, match=r"kind: got 'laser', must be one of plan, aircomp"):
        Plan.from_dict({**d, "kind": "laser"})
    with pytest.raises(PlanError, match=r"this is a 'plan' plan, expected 'digital'"):
        DigitalPlan.from_dict(d)
    with pytest.raises(PlanError, match=r"beamforming_method: not a field of a 'digital'"):
        Plan.from_dict({**d, "kind": "digital", "receive_beamformers": None,
                        "bandwidth_hz": None, "beamforming_method": "x"})
    with pytest.raises(PlanError, match=r"receive_beamformers: an AirComp plan needs them"):
        AirCompPlan(method="x", rank=1, streams=1)
    with pytest.raises(PlanError, match=r"a digital plan needs both"):
        DigitalPlan(method="x", rank=1, streams=1, bandwidth_hz=np.ones(3))
    with pytest.raises(PlanError, match=r"streams: got 2, a digital plan has 1"):
        DigitalPlan(method="x", rank=1, streams=2, bandwidth_hz=np.ones(3), sparsity=np.zeros(3))


def test_mse_per_subcarrier_is_sigma2_times_scaled_norm(small_instance, crandn, rng):
    """MSE_m = σ²‖c_m A_m‖²: with unit-norm A_m that is σ² c_m² exactly (spec 02 §2)."""
    a = crandn(small_instance.n_subcarriers, small_instance.n_rx, 2)
    a /= np.linalg.norm(a, axis=(1, 2), keepdims=True)
    c = rng.uniform(0.5, 2.0, a.shape[0]) * 1e6
    unit = AirCompPlan(method="x", rank=1, streams=2, receive_beamformers=a, power_scale=c)
    np.testing.assert_allclose(unit.mse_per_subcarrier(2.5e-13), 2.5e-13 * c**2,
                               rtol=1e-12)  # float rounding of ‖A_m‖ = 1
    with pytest.raises(PlanError, match=r"power_scale: plan of method 'x' has none"):
        AirCompPlan(method="x", rank=1, streams=a.shape[2],
                    receive_beamformers=a).mse_per_subcarrier(1.0)


@pytest.mark.parametrize("name", ["plan.csv", "plan", "plan.yaml"])
def test_a_suffix_that_names_no_plan_format_is_refused(small_instance, tmp_path, name):
    from fedopt.errors import InvalidArgumentError
    from fedopt.solvers import solve

    plan = solve(small_instance, "centroid-plan", seed=0).solution
    with pytest.raises(InvalidArgumentError, match="a plan is written as .json or .npz"):
        plan.save(tmp_path / name)
    assert not list(tmp_path.iterdir())  # nothing written (it used to write JSON as .csv)


def test_all_zero_beamformers_are_refused(small_instance, tmp_path):
    from dataclasses import fields

    from fedopt.solvers import solve

    plan = solve(small_instance, "centroid-plan", seed=0).solution
    a = np.array(plan.receive_beamformers)
    a[1] = 0.0  # subcarrier 1 receives nothing: its MSE and the gap would be infinite
    with pytest.raises(PlanError, match=r"A_m is all zero on subcarrier\(s\) \[1\]"):
        type(plan)(**{**{f.name: getattr(plan, f.name) for f in fields(plan)},
                      "receive_beamformers": a})
    # the same through a file: the loader refuses it (it used to give "gap": Infinity)
    path = plan.save(tmp_path / "plan.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["receive_beamformers"] = a
    np.savez(path, **arrays)
    with pytest.raises(PlanError, match="all zero"):
        Plan.load(path)


@pytest.mark.parametrize("field, value", [("channel_seed", -1), ("channel_round", -2),
                                          ("channel_seed", True), ("channel_seed", 1.5)])
def test_a_bad_channel_draw_is_named_by_its_field(small_instance, tmp_path, field, value):
    from fedopt.solvers import solve

    path = solve(small_instance, "centroid-plan", seed=0).solution.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    # it used to surface later as "seed: got -1", naming no field of the plan file
    with pytest.raises(PlanError, match=f"{field}: got {value!r}, must be an integer >= 0"):
        Plan.load(path)


def test_negative_power_scales_are_refused(small_instance):
    from dataclasses import fields

    from fedopt.solvers import solve

    plan = solve(small_instance, "centroid-plan", seed=0).solution
    c = np.array(plan.power_scale)
    c[0] = -c[0]
    with pytest.raises(PlanError, match="power_scale: values must be >= 0"):
        type(plan)(**{**{f.name: getattr(plan, f.name) for f in fields(plan)},
                      "power_scale": c})
