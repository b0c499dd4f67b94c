"""``fedopt solve`` and ``fedopt validate --quick`` on ``channel.model: sionna`` instances (the
``small`` and ``tiny-char`` presets with ``model: sionna``, ``scenario: umi`` added).

Oracle for solve: the written plan's beamformers give the reported per-subcarrier MSE on the
Sionna draw of the plan's seed (spec 02 §2: f is scale invariant), and not on the built-in one.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import yaml
from numpy.testing import assert_allclose

from fedopt import aircomp
from fedopt.channel import draw_channel
from fedopt.instance import Instance, load_instance
from fedopt.plan import Plan

needs_sionna = pytest.mark.skipif(importlib.util.find_spec("sionna") is None,
                                  reason="the fedopt[sionna] extra is not installed")

# the MSE recomputed from the plan goes through the same L×L inverses as the solver's report:
# float64 rounding (~1e-15 seen on the built-in channel), 1e-9 leaves room for BLAS orderings
RTOL_PHYSICS = 1e-9


def _umi_file(tmp_path, preset: str):
    data = load_instance(preset).to_dict()
    data["channel"].update(model="sionna", scenario="umi")
    path = tmp_path / f"{preset}-umi.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, Instance.from_dict(data)


@needs_sionna
def test_solve_plans_on_the_sionna_channel(invoke, tmp_path):
    path, inst = _umi_file(tmp_path, "small")
    plan_path = tmp_path / "plan.json"
    res = invoke("solve", path, "-q", "--format", "json", "--seed", 3, "-o", plan_path)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert len(data["mse"]) == inst.n_subcarriers and data["rank"] in inst.lora.ranks
    plan = Plan.load(plan_path).check(inst)
    assert plan.instance_digest == inst.digest() != load_instance("small").digest()
    assert (plan.channel_seed, plan.channel_round) == (3, 0)
    p_sub = np.broadcast_to(np.reshape(inst.power_per_subcarrier_w, (inst.n_devices, -1)),
                            (inst.n_devices, inst.n_subcarriers))

    def mse_on(h):
        return aircomp.objective(plan.beamformers(), h, inst.weights, p_sub, inst.noise_power_w)

    assert_allclose(mse_on(draw_channel(inst, 3).H), data["mse"], rtol=RTOL_PHYSICS)
    builtin = draw_channel(load_instance("small"), 3).H
    # on another channel the same beamformers give another MSE (by far more than 0.1 %)
    assert not np.allclose(mse_on(builtin), data["mse"], rtol=1e-3)


@needs_sionna
def test_validate_quick_runs_on_a_sionna_instance(invoke, tmp_path):
    path, inst = _umi_file(tmp_path, "tiny-char")
    res = invoke("validate", path, "--quick", "--rounds", "1", "-q", "--format", "json",
                 "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["instance_digest"] == inst.digest()
    for name in ("airfl-lora", "ideal"):
        m = report["methods"][name]
        assert m.get("error") is None and np.isfinite(m["final_eval_loss"]), m


def test_solve_without_sionna_names_the_extra(invoke, tmp_path, monkeypatch):
    path, _ = _umi_file(tmp_path, "small")
    for name in [m for m in sys.modules if m == "sionna" or m.startswith("sionna.")]:
        monkeypatch.setitem(sys.modules, name, None)  # blocks the import, as if not installed
    monkeypatch.setitem(sys.modules, "sionna", None)
    res = invoke("solve", path, "-q")
    assert res.exit_code == 2
    assert 'pip install "fedopt[sionna]"' in res.output, res.output
