"""Saved pilots of a calibration: an interrupted or repeated calibration reads them back instead
of rerunning them, and gives the calibration an uninterrupted run gives.

Oracle: the same calibration computed in one go without a folder (a pilot depends only on its
key's inputs, so reading one back must change nothing); the FL loop is replaced by a counting
fake whose records are exact functions of (rank, seed, noise), so "rerun or not" is counted.
"""

import importlib
import json
import math

import numpy as np
import pytest

from fedopt.instance import load_instance
from fedopt.solvers.validation import calibrate
from fedopt.solvers.validation import calibration_store as store
from fedopt.solvers.validation.driver import ValidateSettings

cal_mod = importlib.import_module("fedopt.solvers.validation.calibrate")

ARGS = {"rounds": 2, "ranks": (1, 4, 16), "seeds": (0, 1), "noise_levels": (1.0, 2.0)}
N_PILOTS = 2 * (3 + 2)


class _Calls(list):
    interrupt_at = -1


@pytest.fixture
def calls(monkeypatch):
    """Replace the loop by a fake pilot; returns the list of (rank, seed, noise) it ran; the
    fake raises KeyboardInterrupt when that list's length reaches its ``interrupt_at``."""
    ran = _Calls()

    def fake(instance, data, base, recipe, *, rank, rounds, seed, noise=0.0):
        if len(ran) == ran.interrupt_at:
            raise KeyboardInterrupt
        ran.append((rank, seed, noise))
        loss = 1.0 + 0.01 * seed + 0.1 / rank + 0.02 * noise
        record = {"kind": "noisy" if noise > 0 else "ideal", "rank": rank, "seed": seed,
                  "noise": noise, "update_scale": 0.01 * rank ** -0.5,
                  "aggregation_error": 0.05 * noise, "grad_spread": 0.001,
                  "final_eval_loss": loss, "final_train_loss": loss + 0.1 * math.pi,
                  "wall_s": 0.0}
        spec = np.where(np.arange(64) < rank, 0.04 * np.arange(1, 65) ** -0.7, 0.0)
        return cal_mod._Pilot(record, np.tile(spec, (8, 1)), [0.001] * rounds)

    monkeypatch.setattr(cal_mod, "_pilot", fake)
    return ran


def _plain(cal):
    d = cal.to_dict()
    d["measurements"].pop("wall_s")  # the calibration's own wall time
    for p in d["measurements"]["pilots"]:
        p.pop("reused", None)
    return json.loads(json.dumps(d, default=str))


def test_a_rerun_reads_every_pilot_back_and_changes_nothing(calls, tmp_path):
    inst = load_instance("char-tasks")
    whole = _plain(calibrate(inst, **ARGS))
    assert len(calls) == N_PILOTS
    first = calibrate(inst, **ARGS, out_dir=tmp_path)
    assert len(calls) == 2 * N_PILOTS and _plain(first) == whole
    assert store.saved_pilots(tmp_path) == N_PILOTS
    again = calibrate(inst, **ARGS, out_dir=tmp_path)
    assert len(calls) == 2 * N_PILOTS  # nothing rerun
    assert all(p["reused"] for p in again.measurements["pilots"])
    assert _plain(again) == whole
    calibrate(inst, **ARGS, out_dir=tmp_path, rerun=True)
    assert len(calls) == 3 * N_PILOTS


def test_missing_torn_and_foreign_records_are_rerun(calls, tmp_path):
    inst = load_instance("char-tasks")
    whole = _plain(calibrate(inst, **ARGS, out_dir=tmp_path))
    files = sorted((tmp_path / store.PILOTS).glob("*.json"))
    files[0].unlink()
    files[1].write_text(files[1].read_text()[:40])  # torn
    body = json.loads(files[2].read_text())
    files[2].write_text(json.dumps({**body, "key": "another pilot"}))
    del calls[:]
    assert _plain(calibrate(inst, **ARGS, out_dir=tmp_path)) == whole
    assert len(calls) == 3


def test_an_interrupted_calibration_resumes_where_it_stopped(calls, tmp_path):
    inst = load_instance("char-tasks")
    whole = _plain(calibrate(inst, **ARGS))
    del calls[:]
    calls.interrupt_at = 4
    with pytest.raises(KeyboardInterrupt):
        calibrate(inst, **ARGS, out_dir=tmp_path)
    assert store.saved_pilots(tmp_path) == 4  # each finished pilot was saved at once
    calls.interrupt_at = -1
    del calls[:]
    assert _plain(calibrate(inst, **ARGS, out_dir=tmp_path)) == whole
    assert len(calls) == N_PILOTS - 4


def test_the_key_follows_every_input():
    inst, tiny = load_instance("char-tasks"), load_instance("tiny-char")
    recipe = ValidateSettings.for_testbed("domain-shift")
    base = {"rounds": 2, "rank": 4, "seed": 0, "noise": 1.0}
    key = store.pilot_key(inst, recipe, **base)
    assert key == store.pilot_key(inst, recipe, **base)
    others = [store.pilot_key(inst, recipe, **{**base, name: value})
              for name, value in (("rounds", 3), ("rank", 8), ("seed", 1), ("noise", 2.0))]
    others.append(store.pilot_key(tiny, recipe, **base))
    others.append(store.pilot_key(inst, ValidateSettings.for_testbed("domain-shift",
                                                                     eval_batches=1), **base))
    assert len({key, *others}) == len(others) + 1


def test_a_record_round_trips_exactly_with_non_finite_numbers(tmp_path):
    sv = np.array([[1 / 3, 2e-300, 0.1 + 0.2]])
    record = {"kind": "noisy", "rank": 4, "noise": 8.0, "final_eval_loss": math.nan,
              "rise": -math.inf, "diverged": "round 3: loss diverged"}
    pilot = cal_mod._Pilot(record, sv, [0.1, 1 / 7])
    path = store.save_pilot(tmp_path, "k", pilot)
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    back = store.load_pilot(tmp_path, "k")
    assert np.array_equal(back.sv, sv) and back.spreads == [0.1, 1 / 7]
    assert math.isnan(back.record.pop("final_eval_loss"))
    assert back.record == {k: v for k, v in record.items() if k != "final_eval_loss"}
    assert store.load_pilot(tmp_path, "other") is None
    none = store.save_pilot(tmp_path, "d", cal_mod._Pilot({"kind": "noisy"}, None, []))
    assert none.is_file() and store.load_pilot(tmp_path, "d").sv is None
