"""The alternating search's warm start (spec 04 §2 step 4): from the largest L down, each L − 1
is solved from the previous L's beamformers with the weakest (largest-norm) column of every A_m
dropped.

A hand-built case makes the warm start observable: a gap model with an extra 1000 · L nats in
its contraction term, so the gap falls with every step down and the search visits every stream
count L = 4, 3, 2, 1; a spy on the beamforming solver records what each solve receives. The
oracle is the drop-the-largest-column rule written out here per subcarrier.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import make_instance
from numpy.testing import assert_array_equal

from fedopt.channel import draw_channel
from fedopt.gap_models import AirFLGap
from fedopt.instance import Instance
from fedopt.solvers.planner import plan, search

SEED = 0


class _DescendingGap(AirFLGap):
    """The AirFL gap plus 1000 · L nats: every step down in L lowers the gap."""

    def terms(self, ranks, streams, mse_sum):
        terms = super().terms(ranks, streams, mse_sum)
        terms["contraction"] = terms["contraction"] + 1e3 * np.asarray(streams, dtype=float)
        return terms


def _drop_largest_column(A: np.ndarray) -> np.ndarray:
    """Per subcarrier, A_m without its largest-norm column, the others in order."""
    out = []
    for a in A:
        norms = [np.linalg.norm(a[:, j]) for j in range(a.shape[1])]
        keep = [j for j in range(a.shape[1]) if j != int(np.argmax(norms))]
        out.append(a[:, keep])
    return np.stack(out)


@pytest.fixture
def nt4(small_dict) -> Instance:
    """``small`` with 4-antenna devices and L ∈ {1, 2, 3, 4}, no latency budget."""
    return make_instance(small_dict, devices={"n_tx": 4}, aircomp={"streams": [1, 2, 3, 4]},
                         constraints=None)


@pytest.fixture
def spy(monkeypatch):
    """Records (L, init, result) of every beamforming solve the searches make."""
    calls = []
    real = search.solve_beamforming

    def recording(problem, method, **kwargs):
        init = kwargs.get("init")
        res = real(problem, method, **kwargs)
        calls.append((problem.streams, None if init is None else np.array(init), res))
        return res

    monkeypatch.setattr(search, "solve_beamforming", recording)
    return calls


def test_each_step_down_starts_from_the_previous_beamformers(nt4, spy):
    ch = draw_channel(nt4, seed=SEED)
    res = plan(nt4, "alternating", channel=ch, seed=SEED, gap=_DescendingGap(nt4))
    assert [s for s, _, _ in spy] == [4, 3, 2, 1]  # the case descends all the way
    assert res.solution.streams == 1
    assert spy[0][1] is None  # the largest L starts cold
    for (_, _, before), (streams, init, _) in zip(spy, spy[1:], strict=False):
        assert init is not None, streams
        assert init.shape == (nt4.n_subcarriers, nt4.n_rx, streams)
        # exactly the previous L's solution minus its largest column per subcarrier
        assert_array_equal(init, _drop_largest_column(before.solution))
    # the manifold solver really takes it: centroid + MRC + the warm start + 6 random starts
    for streams, _, result in spy[1:]:
        if streams > 1:
            assert result.options["n_starts"] == 2 + 1 + 6, streams


def test_the_dropped_column_is_the_largest_on_every_subcarrier(nt4, spy, monkeypatch):
    # a discriminating case: on some subcarrier the largest column is not the last one, so
    # "drop the last column" or "drop the smallest" would give another warm start. Which column
    # of a solver's answer is largest is up to its numerics, so the L = 4 answer's columns are
    # rolled by m on subcarrier m (the streams' order is arbitrary: the same MSE), which makes
    # the case discriminating by construction
    recording = search.solve_beamforming

    def rolled(problem, method, **kwargs):
        res = recording(problem, method, **kwargs)
        if problem.streams < 4:
            return res
        sol = np.stack([np.roll(a, m, axis=1) for m, a in enumerate(res.solution)])
        return dataclasses.replace(res, solution=sol)

    monkeypatch.setattr(search, "solve_beamforming", rolled)
    ch = draw_channel(nt4, seed=SEED)
    plan(nt4, "alternating", channel=ch, seed=SEED, gap=_DescendingGap(nt4))
    first = np.stack([np.roll(a, m, axis=1) for m, a in enumerate(spy[0][2].solution)])
    largest = np.argmax(np.linalg.norm(first, axis=1), axis=1)  # (M,)
    assert len(set(largest.tolist())) > 1  # not one fixed column index for all subcarriers
    assert np.any(largest != first.shape[2] - 1)  # and not always the last one
    warm = spy[1][1]
    assert not np.allclose(warm, first[:, :, :-1])  # "drop the last" is not the same start
    assert_array_equal(warm, _drop_largest_column(first))


def test_the_exhaustive_search_starts_every_stream_count_cold(nt4, spy):
    # the warm start belongs to the alternating search: the oracle solves each L from scratch
    ch = draw_channel(nt4, seed=SEED)
    plan(nt4, "exhaustive", channel=ch, seed=SEED, gap=_DescendingGap(nt4))
    assert sorted(s for s, _, _ in spy) == [1, 2, 3, 4]
    assert all(init is None for _, init, _ in spy)


def test_a_solver_without_warm_starts_gets_none(nt4, spy):
    # the centroid is a closed form (uses_init False): the search must not pass it `init`
    ch = draw_channel(nt4, seed=SEED)
    plan(nt4, "alternating", channel=ch, seed=SEED, gap=_DescendingGap(nt4),
         beamforming="centroid")
    assert [s for s, _, _ in spy] == [4, 3, 2, 1]
    assert all(init is None for _, init, _ in spy)


@pytest.mark.parametrize("search_name", ["exhaustive", "bnb", "alternating"])
def test_progress_says_what_starts_with_n_of_n_and_stays_out_of_the_history(search_name):
    """Before each beamforming solve the callback hears what starts and how many of the stream
    counts are done (the pruned ones of bnb count as done; the alternating descent may stop
    before the total); the history keeps only the solves."""
    from fedopt.instance import load_instance

    records = []
    res = plan(load_instance("small"), "airfl-lora", search=search_name, seed=SEED,
               callback=records.append)
    stages = [r for r in records if "smoothing stage" in r.get("label", "")]
    starts = [r for r in records if "label" in r and r not in stages]
    solves = [r for r in records if "label" not in r]
    assert res.history == solves and len(solves) == len(starts) >= 1
    n = len(res.options["streams"])
    assert all(r["total"] == n for r in starts)
    done = [r["done"] for r in starts]
    assert done == sorted(done) and done[0] == 0 and done[-1] <= n - 1
    if search_name == "exhaustive":  # every L, largest first
        assert done == list(range(n))
    if search_name == "alternating":  # a descent from the largest L, one step at a time
        assert done == list(range(len(starts)))
        assert [solve["streams"] for solve in solves] == sorted(
            res.options["streams"], reverse=True)[:len(solves)]
        assert [r["label"].split(" beamformers")[0] for r in starts] == [
            f"L = {s}" for s in reversed(res.options["streams"])]
    for start, solve in zip(starts, solves, strict=True):
        assert start["label"].startswith(f"L = {solve['streams']} beamformers")
    # inside a manifold solve (L > 1) each smoothing stage moves the label, not the count
    for solve in solves:
        mine = [r for r in stages if r["label"].startswith(f"L = {solve['streams']} ")]
        if solve["streams"] == 1:  # multicast reports no stages
            assert not mine
            continue
        n_stages = int(mine[0]["label"].rsplit("/", 1)[1])
        assert [r["label"].rsplit(" ", 1)[1] for r in mine] == [
            f"{i}/{n_stages}" for i in range(1, n_stages + 1)]
        assert len({(r["done"], r["total"]) for r in mine}) == 1
