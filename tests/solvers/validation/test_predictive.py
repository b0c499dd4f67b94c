"""Spearman's ρ of the predictive benchmark, the retained-gain formula and the grid summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedopt.instance import load_instance
from fedopt.solvers.validation.predictive import nominal_instance, spearman, summarize_grid
from fedopt.solvers.validation.report import retained_gain, retained_gains


@pytest.mark.parametrize("n, ties", [(2, False), (5, False), (12, False), (12, True),
                                     (40, True)])
def test_spearman_equals_scipy(n, ties):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = x + rng.normal(scale=0.7, size=n)
    if ties:  # rounded values tie; scipy averages the ranks of ties, as we do
        x, y = np.round(x, 0), np.round(y, 0)
    want = stats.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(want, abs=1e-12)


def test_spearman_of_monotone_and_constant_data():
    x = np.arange(6.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(6)))
    assert math.isnan(spearman([1.0], [2.0]))


def test_retained_gain_formula():
    assert retained_gain(3.0, 2.5, 2.0) == pytest.approx(0.5)
    assert retained_gain(3.0, 2.0, 2.0) == pytest.approx(1.0)
    assert retained_gain(3.0, 3.0, 2.0) == pytest.approx(0.0)
    assert retained_gain(3.0, 3.5, 2.0) == pytest.approx(-0.5)  # worse than the base model
    assert retained_gain(3.0, 2.5, 3.0) is None  # ideal gained nothing: no gain to keep
    assert retained_gain(None, 2.5, 2.0) is None and retained_gain(3.0, None, 2.0) is None


def test_retained_gains_use_the_same_seeds_ideal():
    results = {
        "ideal": {"final_eval_loss": 2.0, "seeds": [{"seed": 0, "final_eval_loss": 1.9},
                                                     {"seed": 1, "final_eval_loss": 2.1}]},
        "plan": {"final_eval_loss": 2.5, "seeds": [{"seed": 0, "final_eval_loss": 2.4},
                                                    {"seed": 1, "final_eval_loss": 2.6}]},
    }
    out = retained_gains(results, 3.0)
    assert out["plan"]["retained_gain"] == pytest.approx(0.5)
    assert out["ideal"]["retained_gain"] == pytest.approx(1.0)
    per_seed = [s["retained_gain"] for s in out["plan"]["seeds"]]
    assert per_seed == pytest.approx([(3 - 2.4) / (3 - 1.9), (3 - 2.6) / (3 - 2.1)])


def test_nominal_instance_resets_only_the_calibrated_constants():
    inst = load_instance("tiny-char")
    nom = nominal_instance(inst)
    assert nom.learning.spectrum_kind == "power_law" and nom.learning.update_scale == 1.0
    assert nom.learning.rounds == inst.learning.rounds
    assert nom.learning.testbed == inst.learning.testbed
    assert nom.devices == inst.devices and nom.lora == inst.lora


def _config(p, r, n_l, losses, gap):
    return {"p_max_dbm": p, "rank": r, "streams": n_l, "losses": losses, "gap": [gap],
            "gap_nominal": [1.0 / gap], "relative_aggregation_error": [None]}


def test_summary_finds_the_best_and_grades_the_pick():
    grid = {"powers": [0.0], "configs": [
        _config(0.0, 2, 1, [2.00, 2.02], 1.0), _config(0.0, 8, 1, [1.90, 1.92], 0.5),
        _config(0.0, 32, 2, [1.95, 1.97], 0.7)],
        "planner": {"0": [{"constants": "calibrated", "seed": 0, "rank": 8, "streams": 1},
                          {"constants": "nominal", "seed": 0, "rank": 2, "streams": 1}]}}
    s = summarize_grid(grid)
    assert s["rho_calibrated"] == pytest.approx(1.0)  # gap order = loss order
    assert s["rho_nominal"] == pytest.approx(-1.0)
    row = s["per_power"]["0"]
    assert (row["best"]["rank"], row["best"]["streams"]) == (8, 1)
    assert row["planner_calibrated"]["above_best"] == pytest.approx(0.0)
    assert row["planner_calibrated"]["within_target"]
    nominal = row["planner_nominal"]
    assert nominal["above_best"] == pytest.approx(0.10)
    # the sd of the two compared: both have sd 0.01414 here
    assert nominal["above_best_in_sd"] == pytest.approx(0.10 / np.std([2.0, 2.02], ddof=1))
    assert not nominal["within_target"]  # 5 % above the best, 7 sd


def test_off_grid_picks_are_graded_but_not_ranked():
    grid = {"powers": [0.0], "configs": [
        _config(0.0, 8, 1, [1.90, 1.92], 0.5), _config(0.0, 32, 2, [1.95, 1.97], 0.7),
        {**_config(0.0, 1, 1, [2.50, 2.52], 0.1), "extra": True}],
        "planner": {"0": [{"constants": "calibrated", "seed": 0, "rank": 8, "streams": 1},
                          {"constants": "nominal", "seed": 0, "rank": 1, "streams": 1}]}}
    s = summarize_grid(grid)
    assert s["n_configs"] == 2 and s["rho_calibrated"] == pytest.approx(1.0)
    nominal = s["per_power"]["0"]["planner_nominal"]
    assert nominal["in_grid"] is False and nominal["above_best"] == pytest.approx(0.60)
