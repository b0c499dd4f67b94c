"""Checkpoints and resume of a federated run (fedopt.fl.checkpoint, spec 05 §6).

Oracles: a stopped-and-resumed run equals the straight run bit for bit (aggregator state
included; an aggregator that forgets its state shows that the oracle can fail); bad checkpoints,
checkpoints of another run and an output path that is a file are refused without touching the
files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fl_testing import (  # noqa: F401  (fixtures: _one_thread, fed, seed)
    TINY,
    _one_thread,
    aircomp_for,
    core,
    fed,
    loop_cfg,
    make_aggregator,
    random_beams,
    seed,
    tiny_model,
)

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl.aggregators import IdealAggregator
from fedopt.fl.charmodel import CharTransformer
from fedopt.fl.checkpoint import RunFiles
from fedopt.fl.loop import CHECKPOINT_NAME, LOG_NAME, SUMMARY_NAME, run_federated
from fedopt.fl.lora import apply_lora, flatten_lora


@pytest.mark.parametrize("kind", ["ideal", "aircomp", "digital"])
def test_stopped_and_resumed_run_equals_the_straight_run(fed, small_instance, tmp_path, seed,
                                                         kind):
    inst = small_instance
    cfg = loop_cfg(seed)

    def fresh(forgetful=False):  # what a new process would build: same model, same aggregator
        model = tiny_model(fed, seed)
        return model, make_aggregator(kind, fed, inst, model, seed, forgetful)

    model, agg = fresh()
    straight = run_federated(model, fed, agg, cfg, out_dir=tmp_path / "a")
    assert straight.completed and (tmp_path / "a" / SUMMARY_NAME).is_file()

    out = tmp_path / "b"
    model, agg = fresh()
    stopped = run_federated(model, fed, agg, cfg, out_dir=out,
                            callback=lambda rec: rec["round"] == 1)
    assert not stopped.completed and len(stopped.history) == 2
    assert (out / CHECKPOINT_NAME).is_file() and not (out / SUMMARY_NAME).exists()
    assert "summary" not in stopped.paths
    assert len((out / LOG_NAME).read_text().splitlines()) == 2
    assert core(stopped.history) == core(straight.history[:2])

    model, agg = fresh()
    resumed = run_federated(model, fed, agg, cfg, out_dir=out, resume=True)
    assert resumed.completed
    assert np.array_equal(resumed.theta, straight.theta)  # exact: same draws, same arithmetic
    assert core(resumed.history) == core(straight.history)
    assert resumed.summary == straight.summary
    assert json.loads((out / SUMMARY_NAME).read_text()) == json.loads(
        (tmp_path / "a" / SUMMARY_NAME).read_text())
    log = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert core(log) == core(straight.history)
    # the model ends holding the final global LoRA state
    assert np.array_equal(flatten_lora(model).double().numpy(),
                          torch.from_numpy(straight.theta).float().double().numpy())

    if kind != "ideal":
        # the oracle can fail: a stateful aggregator that ignores its restored state diverges
        model, agg = fresh()
        run_federated(model, fed, agg, cfg, out_dir=tmp_path / "c",
                      callback=lambda rec: rec["round"] == 1)
        model, agg = fresh(forgetful=True)
        bad = run_federated(model, fed, agg, cfg, out_dir=tmp_path / "c", resume=True)
        assert not np.array_equal(bad.theta, straight.theta)


def test_resume_with_a_rebuilt_aircomp_aggregator_using_a_plain_function(
        fed, small_instance, tmp_path, rng, seed):
    inst = small_instance
    beams = random_beams(rng, inst)
    cfg = loop_cfg(seed)

    alive = []  # keep every aggregator alive, as a new process would not reuse an address

    def fresh_agg():
        alive.append(aircomp_for(inst, seed, lambda t, h: beams, 100 * inst.noise_power_w))
        return alive[-1]

    straight = run_federated(tiny_model(fed, seed), fed, fresh_agg(), cfg)
    run_federated(tiny_model(fed, seed), fed, fresh_agg(), cfg, out_dir=tmp_path,
                  callback=lambda rec: rec["round"] == 1)
    resumed = run_federated(tiny_model(fed, seed), fed, fresh_agg(), cfg, out_dir=tmp_path,
                            resume=True)
    assert np.array_equal(resumed.theta, straight.theta)


def test_resume_in_process_with_the_same_model_object(fed, tmp_path, seed):
    cfg = loop_cfg(seed)
    straight = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg)
    model = tiny_model(fed, seed)
    run_federated(model, fed, IdealAggregator(), cfg, out_dir=tmp_path,
                  callback=lambda rec: rec["round"] == 1)
    resumed = run_federated(model, fed, IdealAggregator(), cfg, out_dir=tmp_path, resume=True)
    assert np.array_equal(resumed.theta, straight.theta)


def test_resume_with_a_different_base_model_is_refused(fed, tmp_path, seed):
    cfg = loop_cfg(seed)
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=tmp_path,
                  callback=lambda rec: rec["round"] == 1)
    other = CharTransformer(fed.vocab.size, **TINY,
                            generator=torch.Generator().manual_seed(seed + 7))
    apply_lora(other, 2, generator=torch.Generator().manual_seed(seed + 1))  # same adapters
    assert torch.equal(flatten_lora(other), flatten_lora(tiny_model(fed, seed)))
    with pytest.raises(CheckpointError, match="different run"):
        run_federated(other, fed, IdealAggregator(), cfg, out_dir=tmp_path, resume=True)


def _snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled", "foreign"])
def test_corrupt_checkpoint_is_refused_and_nothing_is_written(fed, tmp_path, seed, damage):
    cfg = loop_cfg(seed)
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=tmp_path,
                  callback=lambda rec: rec["round"] == 1)
    ck = tmp_path / CHECKPOINT_NAME
    good = ck.read_bytes()
    if damage == "garbage":
        ck.write_bytes(b"\x00not a zip file\xff" * 64)
    elif damage == "truncated":
        ck.write_bytes(good[: len(good) // 2])
    elif damage == "pickled":  # an object array: reading it would need pickle
        with open(ck, "wb") as fh:
            np.savez(fh, format=np.array("fedopt-fl-run"), theta=np.array([{"x": 1}],
                                                                           dtype=object))
    else:  # a valid .npz that is not a run checkpoint
        with open(ck, "wb") as fh:
            np.savez(fh, H=np.zeros((2, 2)))
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as info:
        run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=tmp_path,
                      resume=True)
    assert str(ck) in str(info.value)
    assert _snapshot(tmp_path) == before  # nothing half-written, no summary appeared


def test_checkpoint_of_another_configuration_is_refused(fed, tmp_path, seed):
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed), out_dir=tmp_path,
                  callback=lambda rec: rec["round"] == 1)
    before = _snapshot(tmp_path)
    for other in (loop_cfg(seed, lr=0.25), loop_cfg(seed + 1), loop_cfg(seed, local_steps=2)):
        with pytest.raises(CheckpointError, match=r"digest.*different run|different run.*digest"
                           ) as info:
            run_federated(tiny_model(fed, seed), fed, IdealAggregator(), other, out_dir=tmp_path,
                          resume=True)
        assert str(tmp_path / CHECKPOINT_NAME) in str(info.value)
    with pytest.raises(CheckpointError, match="different run"):
        run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed),
                      weights=[1.0, 1.0, 1.0], out_dir=tmp_path, resume=True)
    assert _snapshot(tmp_path) == before
    # and the original configuration still resumes from the untouched files
    assert run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed),
                         out_dir=tmp_path, resume=True).completed


def test_out_dir_that_is_a_file_is_refused(fed, tmp_path, seed):
    f = tmp_path / "results"
    f.write_text("keep me")
    with pytest.raises(InvalidArgumentError, match="out_dir") as info:
        run_federated(tiny_model(fed, seed), fed, IdealAggregator(), loop_cfg(seed, rounds=1),
                      out_dir=f)
    assert str(f) in str(info.value)
    assert f.read_text() == "keep me"


def test_run_files_without_a_directory_write_nothing():
    files = RunFiles(None, "digest")
    assert files.checkpoint is None and files.log is None and files.summary is None
    assert files.restore_or_reset(True, 4) is None
    files.record_round([{"round": 0}], np.zeros(4), 1, IdealAggregator())
    assert files.finish({"completed": True}, True) == {}


@pytest.mark.parametrize("stop", [1, None])  # interrupted, and completed
def test_a_torn_last_log_line_is_repaired_on_resume(fed, tmp_path, seed, stop):
    cfg = loop_cfg(seed)
    straight = run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg,
                             out_dir=tmp_path / "a")
    out = tmp_path / "b"
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=out,
                  callback=None if stop is None else (lambda rec: rec["round"] == stop))
    log = out / LOG_NAME
    text = log.read_text()
    log.write_text(text[:-25])  # a crash mid-write tears the last record
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in log.read_text().splitlines()]
    run_federated(tiny_model(fed, seed), fed, IdealAggregator(), cfg, out_dir=out, resume=True)
    # the log is whole again and equals the straight run's, record for record (times aside)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert core(records) == core(straight.history)
