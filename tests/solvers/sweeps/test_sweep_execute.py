"""Running a sweep: rows equal ``fedopt solve``'s own summaries, a real 2-worker Dask
LocalCluster gives the same table as the calling process, a failing cell does not stop the
others, the files hold the table, and a rerun resumes.

Oracles: :func:`fedopt.solvers.solve` + :func:`~fedopt.solvers.summary.summarize` called
directly for every row; the synchronous table for the distributed one; the first table for
the resumed one.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedopt.instance import Instance
from fedopt.solvers import solve
from fedopt.solvers.summary import summarize
from fedopt.solvers.sweeps import SweepSpec, expand, sweep
from fedopt.solvers.sweeps import runner as runner_module
from fedopt.solvers.sweeps.runner import scalar_items

#: measured times differ from run to run; every other column must be equal
TIMES = ["wall_time_s", "solve_time_s"]

SPEC = SweepSpec.from_dict({
    "schema_version": 1, "instance": "small",
    # 1e-6 s cannot be met by any rank: those cells fail at run time (they validate)
    "grid": {"server.n_rx": [4, 8], "constraints.latency_budget_s": [0.1, 1e-6]},
    "methods": ["airfl-lora", "tsfa"], "seeds": [0, 1]})


@pytest.fixture(scope="module")
def serial():
    return sweep(SPEC, scheduler="synchronous")


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    return sweep(SPEC, out, workers=2), out


def test_rows_are_the_solve_summaries(serial):
    assert len(serial) == SPEC.n_cells == 16
    for cell, row in zip(expand(SPEC), serial.to_dict("records"), strict=True):
        assert (row["server.n_rx"], row["constraints.latency_budget_s"], row["method"],
                row["seed"]) == (*(v for _, v in cell.values), cell.method, cell.seed)
        if cell.values[1][1] == 1e-6:
            assert "cannot be met" in row["error"] or "below the smallest" in row["error"]
            assert pd.isna(row["rank"])
            continue
        inst = Instance.from_dict(cell.instance)
        want = scalar_items(summarize(solve(inst, cell.method, seed=cell.seed), inst,
                                      seed=cell.seed))
        assert row["error"] == ""
        for key, value in want.items():
            if key in TIMES:
                continue
            got = row[key]
            assert (pd.isna(got) if value is None else got == value), (key, got, value)


def test_distributed_equals_serial(serial, distributed):
    table, _ = distributed
    assert table.attrs["sweep"]["workers"] == 2
    assert table.attrs["sweep"]["ran"] == 16 and table.attrs["sweep"]["failed"] == 8
    pd.testing.assert_frame_equal(serial.drop(columns=TIMES), table.drop(columns=TIMES))


def test_the_files_hold_the_table(distributed):
    table, out = distributed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), table)
    csv = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert list(csv.columns) == list(table.columns)
    for col in ("rank", "gap", "airtime_s"):
        assert csv[col].tolist() == pytest.approx(table[col].astype(float).tolist(),
                                                  rel=1e-15, nan_ok=True)  # repr round trip
    assert csv["error"].fillna("").tolist() == table["error"].tolist()
    assert len(list((out / "cells").glob("*.json"))) == 16


def test_a_crashing_cell_is_recorded_and_the_others_go_on(monkeypatch, serial):
    real = runner_module._solve

    def crash_on_seed_1(cell, inst):
        if cell.seed == 1:
            raise RuntimeError("boom")
        return real(cell, inst)

    monkeypatch.setattr(runner_module, "_solve", crash_on_seed_1)
    table = sweep(SPEC, scheduler="synchronous")
    seed1 = table[table.seed == 1]
    assert (seed1.error == "RuntimeError: boom").all()
    seed0 = table[table.seed == 0]
    pd.testing.assert_frame_equal(seed0.drop(columns=TIMES),
                                  serial[serial.seed == 0].drop(columns=TIMES))


def test_a_rerun_resumes_and_gives_the_same_table(tmp_path, serial):
    spec = SweepSpec.from_dict({**SPEC.to_dict(), "methods": ["airfl-lora"]})
    first = sweep(spec, tmp_path / "o", scheduler="synchronous")
    records = sorted((tmp_path / "o" / "cells").glob("*.json"))
    records[0].unlink()                        # lost: rerun
    records[1].write_text("{not json")         # torn: rerun
    seen = []
    again = sweep(spec, tmp_path / "o", scheduler="synchronous", callback=seen.append)
    assert again.attrs["sweep"]["ran"] == 2 and again.attrs["sweep"]["resumed"] == 6
    assert seen[0]["done"] == 6 and seen[-1]["done"] == seen[-1]["total"] == 8
    pd.testing.assert_frame_equal(first.drop(columns=TIMES), again.drop(columns=TIMES))
    same = serial[serial.method == "airfl-lora"].reset_index(drop=True)[first.columns]
    pd.testing.assert_frame_equal(first.drop(columns=TIMES), same.drop(columns=TIMES))
    # the resumed rows keep their recorded times: only the two rerun cells changed
    changed = (first.wall_time_s != again.wall_time_s).sum()
    assert changed <= 2


def test_failed_cells_are_kept_unless_retried(tmp_path):
    spec = SweepSpec.from_dict({**SPEC.to_dict(), "methods": ["airfl-lora"], "seeds": [0],
                                "grid": {"constraints.latency_budget_s": [0.1, 1e-6]}})
    sweep(spec, tmp_path, scheduler="synchronous")
    kept = sweep(spec, tmp_path, scheduler="synchronous")
    assert kept.attrs["sweep"]["ran"] == 0 and kept.attrs["sweep"]["failed"] == 1
    retried = sweep(spec, tmp_path, scheduler="synchronous", retry_failed=True)
    assert retried.attrs["sweep"]["ran"] == 1 and retried.attrs["sweep"]["resumed"] == 1


def test_an_out_dir_of_another_sweep_is_not_reused(tmp_path):
    from fedopt.errors import InvalidArgumentError

    one = SweepSpec.from_dict({**SPEC.to_dict(), "methods": ["airfl-lora"], "seeds": [0],
                               "grid": {"server.n_rx": [4]}})
    two = SweepSpec.from_dict({**one.to_dict(), "seeds": [0, 1]})
    sweep(one, tmp_path, scheduler="synchronous")
    with pytest.raises(InvalidArgumentError, match="holds another sweep"):
        sweep(two, tmp_path, scheduler="synchronous")
    forced = sweep(two, tmp_path, scheduler="synchronous", force=True)
    assert forced.attrs["sweep"]["resumed"] == 1  # seed 0's cell has the same inputs
    header = json.loads((tmp_path / "sweep.json").read_text())
    assert header["spec"]["seeds"] == [0, 1]


def test_table_files_of_no_known_sweep_are_not_overwritten(tmp_path):
    from fedopt.errors import InvalidArgumentError

    (tmp_path / "results.csv").write_text("mine\n")
    with pytest.raises(InvalidArgumentError, match="of no known sweep"):
        sweep(SPEC, tmp_path, scheduler="synchronous")
    assert (tmp_path / "results.csv").read_text() == "mine\n"


@pytest.mark.parametrize("kwargs, needle", [
    ({"workers": 0}, "--workers: got 0"),
    ({"workers": 2, "scheduler": "tcp://x:1"}, "--workers and --scheduler"),
    ({"scheduler": ""}, "--scheduler: got ''"),
])
def test_bad_run_options_are_named(kwargs, needle):
    from fedopt.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as info:
        sweep(SPEC, **kwargs)
    assert needle in str(info.value)


def test_an_unreachable_scheduler_is_named(monkeypatch):
    from fedopt.errors import InvalidArgumentError
    from fedopt.solvers.sweeps import execute

    monkeypatch.setattr(execute, "CONNECT_TIMEOUT_S", 1)  # nothing listens on port 9

    spec = SweepSpec.from_dict({**SPEC.to_dict(), "seeds": [0], "methods": ["airfl-lora"],
                                "grid": {}})
    with pytest.raises(InvalidArgumentError, match="cannot reach 'tcp://127.0.0.1:9'"):
        sweep(spec, scheduler="tcp://127.0.0.1:9")


def test_a_validate_cell_is_the_validation_run():
    from dataclasses import replace

    from fedopt.instance import load_instance
    from fedopt.solvers.validation import ValidateSettings, validate

    spec = SweepSpec.from_dict({"schema_version": 1, "instance": "tiny-char", "kind": "validate",
                                "methods": ["airfl-lora"], "seeds": [1],
                                "validate": {"rounds": 1, "mode": "equivalent"}})
    row = sweep(spec, scheduler="synchronous").to_dict("records")[0]
    inst = load_instance("tiny-char")
    settings = replace(ValidateSettings.quick(inst.learning.testbed), seeds=(1,), rounds=1,
                       mode="equivalent")
    report = validate(inst, method="airfl-lora", settings=settings).to_dict(per_seed=False)
    want = report["methods"]["airfl-lora"]
    assert row["error"] == ""
    for key in ("final_train_loss", "final_eval_loss", "perplexity", "retained_gain",
                "measured_aggregation_error", "predicted_aggregation_error", "latency_s",
                "rank", "streams"):
        assert row[key] == want[key], key
    assert row["base_eval_loss"] == report["base_eval_loss"]
    assert not [c for c in row if c.endswith("_std")]


def test_a_sweep_runs_on_sionna_channels():
    pytest.importorskip("sionna.phy")
    spec = SweepSpec.from_dict({"schema_version": 1, "instance": "small",
                                "grid": {"channel.model": ["sionna"],
                                         "channel.scenario": ["umi", "tdl"]},
                                "methods": ["airfl-lora"], "seeds": [0]})
    table = sweep(spec, scheduler="synchronous")
    assert table.error.tolist() == ["", ""]
    for cell, row in zip(expand(spec), table.to_dict("records"), strict=True):
        inst = Instance.from_dict(cell.instance)
        assert inst.channel.scenario == row["channel.scenario"]
        want = solve(inst, "airfl-lora", seed=0)  # the Sionna draw of seed 0, round 0
        assert (row["rank"], row["gap"]) == (want.solution.rank, want.objective)


def test_without_dask_the_extra_is_named(monkeypatch):
    import sys

    from fedopt.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "distributed", None)
    spec = SweepSpec.from_dict({**SPEC.to_dict(), "grid": {}, "seeds": [0],
                                "methods": ["airfl-lora"]})
    with pytest.raises(MissingDependencyError, match=r'pip install "fedopt\[dask\]"'):
        sweep(spec, workers=1)
    assert len(sweep(spec, scheduler="synchronous")) == 1  # in-process needs no Dask


def test_an_interrupted_dask_run_mutes_the_teardown_noise_and_closes(monkeypatch):
    # Ctrl-C while waiting for cells: the generator mutes the event loop's loggers (the
    # "Exception in callback" tracebacks closing live connections print), closes the client and
    # the cluster, and lets the KeyboardInterrupt through to the CLI's notice
    import logging

    from fedopt.solvers.sweeps import execute

    closed = []

    class _Closable:
        def __init__(self, name):
            self.name = name

        def submit(self, *args, **kwargs):
            return _Future()

        def close(self):
            closed.append(self.name)

    class _Future:
        def cancel(self):
            closed.append("future")

    class _Distributed:
        @staticmethod
        def as_completed(futures):
            raise KeyboardInterrupt

    monkeypatch.setattr(execute, "_need", lambda module: _Distributed)
    monkeypatch.setattr(execute, "_client",
                        lambda scheduler, workers: (_Closable("client"), _Closable("cluster")))
    app = logging.getLogger("tornado.application")
    names = [*execute.TEARDOWN_LOGGERS, *(n for n in logging.Logger.manager.loggerDict
                                          if n.split(".", 1)[0] in execute.TEARDOWN_LOGGERS)]
    levels = {name: logging.getLogger(name).level for name in names}
    app.setLevel(logging.ERROR)  # a child with its own level, as distributed leaves it
    try:
        records = execute._run_dask(expand(SPEC)[:2], None, 2)
        with pytest.raises(KeyboardInterrupt):
            next(records)
        assert closed == ["future", "future", "client", "cluster"]
        for name in names:
            assert not logging.getLogger(name).isEnabledFor(logging.CRITICAL), name
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
