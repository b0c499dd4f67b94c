"""``fedopt sweep`` on the command line: the text and JSON summaries, named errors with exit 2,
and a sweep killed midway (SIGKILL to its process group, Dask workers included) that a rerun
finishes with the table of an uninterrupted run.

Oracle for the resume: the same sweep run uninterrupted in this process
(``--scheduler synchronous``); every column but the measured times must be equal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

TIMES = ["wall_time_s", "solve_time_s"]

SWEEP = """schema_version: 1
instance: small
grid:
  server.n_rx: [4, 8]
  devices.count: [2, 3]
methods: [airfl-lora]
seeds: [0, 1]
"""


@pytest.fixture
def spec(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    return path


def test_text_summary(invoke, spec, tmp_path):
    res = invoke("sweep", spec, "--out", tmp_path / "o", "--scheduler", "synchronous")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["server.n_rx", "devices.count", "method", "seed"]
    table = lines[:lines.index("")]  # the preview, before the summary and the file paths
    assert len(table) == 9 and max(len(line) for line in table) <= 100
    assert "8 cells: 8 ran, 0 resumed, 0 failed" in res.stdout
    assert (tmp_path / "o" / "results.parquet").is_file()


def test_json_summary_and_resume(invoke, spec, tmp_path):
    args = ("sweep", spec, "--out", tmp_path / "o", "--scheduler", "synchronous", "--format",
            "json")
    first = json.loads(invoke(*args).stdout)
    assert {k: first[k] for k in ("cells", "ran", "resumed", "failed")} == {
        "cells": 8, "ran": 8, "resumed": 0, "failed": 0}
    again = json.loads(invoke(*args).stdout)
    assert (again["ran"], again["resumed"]) == (0, 8)
    assert set(first["files"]) == {"parquet", "csv"}


@pytest.mark.parametrize("text, needle", [
    ("schema_version: 1\ngrid: {devices.cont: [1]}\n", "grid.devices.cont"),
    ("schema_version: 1\ninstance: small\ngrid: {devices.count: [0]}\n",
     "cell devices.count=0: devices.count"),
    ("schema_version: 1\nmethods: [fast]\n", "methods: 'fast'"),
    ("grid: [1, 2\n", "not valid YAML"),
])
def test_bad_sweep_files_exit_2(invoke, tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    res = invoke("sweep", path, "--out", tmp_path / "o", "--scheduler", "synchronous")
    assert res.exit_code == 2
    assert needle in res.stderr
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


def test_missing_file_and_bad_options_exit_2(invoke, spec, tmp_path):
    res = invoke("sweep", tmp_path / "none.yaml")
    assert res.exit_code == 2 and "no such file" in res.stderr
    res = invoke("sweep", spec, "--workers", "0")
    assert res.exit_code == 2
    res = invoke("sweep", spec, "--workers", "2", "--scheduler", "tcp://x:1")
    assert res.exit_code == 2 and "--workers and --scheduler" in res.stderr


def _long_sweep(tmp_path):
    path = tmp_path / "long.yaml"  # 40 cells of 0.05-0.3 s each on two workers
    path.write_text(SWEEP.replace("seeds: [0, 1]", "seeds: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
                    .replace("[airfl-lora]", "[airfl-lora, exhaustive]").replace(
                        "devices.count: [2, 3]", "devices.count: [3]"))
    return path


def _start_and_wait(path, out, records=4):
    """Start the sweep in its own process group on two workers; return once ``records`` cells
    are recorded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fedopt.cli.main", "sweep", str(path),
                             "--out", str(out), "--workers", "2", "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while len(list((out / "cells").glob("*.json"))) < records:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the sweep did not start"
            time.sleep(0.02)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc


def test_killed_midway_then_resumed(invoke, tmp_path):
    path, out = _long_sweep(tmp_path), tmp_path / "o"
    proc = _start_and_wait(path, out)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI, the scheduler and both workers
    proc.wait()
    done = len(list((out / "cells").glob("*.json")))
    assert 4 <= done < 40, done
    assert not (out / "results.parquet").exists()  # killed before the table

    res = invoke("sweep", path, "--out", out, "--scheduler", "synchronous", "--format", "json")
    summary = json.loads(res.stdout)
    assert summary["resumed"] >= 4 and summary["resumed"] + summary["ran"] == 40
    resumed = pd.read_parquet(out / "results.parquet")
    whole = invoke("sweep", path, "--out", tmp_path / "whole", "--scheduler", "synchronous")
    assert whole.exit_code == 0
    uninterrupted = pd.read_parquet(tmp_path / "whole" / "results.parquet")
    pd.testing.assert_frame_equal(resumed.drop(columns=TIMES),
                                  uninterrupted.drop(columns=TIMES))


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    path, out = _long_sweep(tmp_path), tmp_path / "o"
    proc = _start_and_wait(path, out)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    try:
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = stderr.decode()
    assert proc.returncode == 130, text
    assert "Traceback" not in text  # the workers ignore SIGINT; the CLI closes them
    saved = len(list((out / "cells").glob("*.json")))
    assert f"interrupted: {saved} finished cell(s) are saved in {out / 'cells'}" in text
    assert f"resume with: fedopt sweep {path} --out {out}" in text
