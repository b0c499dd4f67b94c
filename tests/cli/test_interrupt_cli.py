"""Ctrl-C on the commands without checkpoints and on ``fedopt figures``: exit 130, no traceback,
one line saying what was saved and the exact command that continues; ``figures --resume``
keeps the figures an interrupted run finished.

The interrupt is a real SIGINT to the process group, sent once the command is at work (a
figure written, or the progress of a long solve under way)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_figures_all_says_what_was_written_and_resumes(tmp_path, ctrl_c):
    out = tmp_path / "figs"
    code, text = ctrl_c(["figures", "all", "--quick", "--out", str(out), "-q"],
                            lambda: any(out.glob("*.json")))
    assert code == 130, text
    assert "Traceback" not in text
    written = sorted(p.stem for p in out.glob("*.json"))
    assert f"interrupted: {len(written)} of " in text and f"written in {out}/" in text
    command = text.split("resume with: ")[1].strip().splitlines()[0]
    assert command.startswith("fedopt figures all --quick") and command.endswith("--resume")
    # what the resume keeps: the finished figure, not recomputed (no wall time), same file
    before = (out / f"{written[0]}.json").read_bytes()
    kept = subprocess.run([sys.executable, "-m", "fedopt.cli.main", "figures", written[0],
                           "--quick", "--out", str(out), "--resume", "--format", "json"],
                          env=ENV, capture_output=True, text=True, timeout=300, check=True)
    entry = json.loads(kept.stdout)["figures"][written[0]]
    assert entry["kept"] is True and "wall_s" not in entry
    assert (out / f"{written[0]}.json").read_bytes() == before


def test_a_long_solve_says_nothing_was_saved_and_how_to_rerun(ctrl_c):
    argv = ["gap", "default", "--sweep", "rank", "-q"]  # the L = 4 manifold solve: ~1 minute
    start = time.monotonic()
    code, text = ctrl_c(argv, lambda: time.monotonic() - start > 12)
    assert code == 130, text
    assert "Traceback" not in text
    assert "interrupted: nothing was saved" in text
    assert text.strip().splitlines()[-1].endswith("rerun with: fedopt " + " ".join(argv))
