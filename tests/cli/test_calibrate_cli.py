"""``fedopt calibrate`` on the command line: each finished pilot is saved in --out (default one
folder per calibration), a rerun reads them back and prints the same fits, and Ctrl-C says what
was saved and the exact command that resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: the cheapest real calibration: one seed, two ranks, one noise level (3 pilots)
FAST = ("tiny-char", "--rounds", "1", "--ranks", "1,4", "--seeds", "0", "--noise-levels", "1")


def _fits(report):
    return {k: v for k, v in report.items() if k not in ("measurements", "pilots_reused")}


def test_a_rerun_reads_the_pilots_back_with_the_same_fits(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = invoke("calibrate", *FAST, "--format", "json")
    assert first.exit_code == 0, first.output
    a = json.loads(first.stdout)
    folder = tmp_path / a["pilots_dir"]
    assert folder.parent.parent.name == "calibrate-out" and len(list(folder.glob("*.json"))) == 3
    assert a["pilots_reused"] == 0
    again = invoke("calibrate", *FAST, "--format", "json")
    b = json.loads(again.stdout)
    assert b["pilots_reused"] == 3 and b["pilots_dir"] == a["pilots_dir"]
    assert _fits(a) == _fits(b)
    text = invoke("calibrate", *FAST).stdout
    assert "pilots: 0 run, 3 read back" in text and "--rerun" in text
    assert "(read back)" in text
    fresh = invoke("calibrate", *FAST, "--rerun", "--format", "json")
    assert json.loads(fresh.stdout)["pilots_reused"] == 0
    other = invoke("calibrate", *FAST[:-1], "2", "--format", "json")  # another calibration
    assert json.loads(other.stdout)["pilots_dir"] != a["pilots_dir"]


def test_ctrl_c_says_what_was_saved_and_resumes(tmp_path, ctrl_c):
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code, text = ctrl_c(["calibrate", "tiny-char", "--rounds", "4", "--ranks", "1,2,4,8",
                         "--seeds", "0", "--noise-levels", "1", "--out", out, "-q"],
                        lambda: bool(list((out / "pilots").glob("*.json"))))
    assert code == 130, text
    assert "Traceback" not in text
    saved = len(list((out / "pilots").glob("*.json")))
    assert 1 <= saved < 5
    assert f"interrupted: {saved} of 5 pilots are saved in {out / 'pilots'}" in text
    command = text.split("resume with: ")[1].strip().splitlines()[0]
    assert command.startswith("fedopt calibrate tiny-char") and f"--out {out}" in command
    words = command.split()[1:]
    done = subprocess.run([sys.executable, "-m", "fedopt.cli.main", *words, "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pilots_reused"] == saved
