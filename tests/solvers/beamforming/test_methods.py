"""The method table and the dispatcher: one table (``METHODS``) from which every list of
beamforming methods derives, honest flags (only the methods that draw get ``rng``), and bad
arguments answered with ``InvalidArgumentError`` (which the CLI prints without a traceback)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming import (
    BASELINES,
    BEAMFORMING_METHODS,
    METHODS,
    BeamformingMethod,
    beamforming_problem,
    solve_beamforming,
)
from fedopt.solvers.result import Status


@pytest.fixture(scope="module")
def problem(small_instance):
    return beamforming_problem(small_instance, 1, seed=3)


def test_every_list_derives_from_the_table():
    assert BEAMFORMING_METHODS == tuple(METHODS)
    assert BEAMFORMING_METHODS == ("auto", "beamforming", "multicast", "centroid", "sdr",
                                   "random", "mrc", "eigen")
    assert set(BASELINES) == set(METHODS) - {"auto", "beamforming", "multicast"}
    for name, entry in METHODS.items():
        assert isinstance(entry, BeamformingMethod) and entry.name == name and entry.summary
        if name in BASELINES:
            assert BASELINES[name] is entry.function
    assert METHODS["sdr"].streams == METHODS["multicast"].streams == (1,)
    assert {n for n, e in METHODS.items() if e.uses_init} == {"auto", "beamforming", "multicast"}
    assert {n for n, e in METHODS.items() if e.uses_callback} == {"auto", "beamforming"}


def test_only_the_methods_that_draw_take_rng(problem):
    assert {n for n, e in METHODS.items() if e.uses_rng} == {"auto", "beamforming", "multicast",
                                                             "sdr", "random"}
    for name, entry in METHODS.items():
        if entry.uses_rng:
            continue
        # deterministic: another seed (or none) gives the same beamformers
        a = solve_beamforming(problem, name, rng=0)
        b = solve_beamforming(problem, name, rng=12345)
        assert_array_equal(a.solution, b.solution)


def test_same_seed_same_result_for_the_methods_that_draw(problem):
    for name in ("random", "sdr"):
        opts = {"randomizations": 10} if name == "sdr" else {}
        a = solve_beamforming(problem, name, rng=5, **opts)
        b = solve_beamforming(problem, name, rng=np.random.default_rng(5), **opts)
        assert_array_equal(a.solution, b.solution)
    assert not np.array_equal(solve_beamforming(problem, "random", rng=5).solution,
                              solve_beamforming(problem, "random", rng=6).solution)


def test_the_result_comes_from_a_solver_run(problem):
    for name in BEAMFORMING_METHODS:
        res = solve_beamforming(problem, name, rng=0)
        assert res.method == ("multicast" if name == "auto" else name)  # L = 1
        assert res.wall_time_s > 0.0
        assert res.status in (Status.OPTIMAL, Status.CONVERGED)
        # OPTIMAL only when certified by the bound
        assert (res.status is Status.OPTIMAL) == bool(
            np.all(res.ratio_per_subcarrier <= 1 + 1e-6))


def test_unknown_method_or_option_is_an_invalid_argument(problem):
    with pytest.raises(InvalidArgumentError, match="method: got 'simplex', must be one of"):
        solve_beamforming(problem, "simplex")
    with pytest.raises(InvalidArgumentError, match="randomizations: not an option of .*'centroid'"):
        solve_beamforming(problem, "centroid", randomizations=3)
    with pytest.raises(InvalidArgumentError, match="its options: .*polish_iterations"):
        solve_beamforming(problem, "beamforming", polish=3)
    with pytest.raises(InvalidArgumentError, match="randomizations"):
        solve_beamforming(problem, "sdr", randomizations="many")
