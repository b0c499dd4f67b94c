"""Ctrl-C on the commands without checkpoints and on ``fedopt figures``: exit 130, no traceback,
one line saying what was saved and the exact command that continues; ``figures --resume``
keeps the figures an interrupted run finished.

The interrupt is a real SIGINT to the process group, sent once the command is at work (a
figure written, or the progress of a long solve under way)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _interrupt(argv, ready, timeout=300):
    """Start ``fedopt argv``, wait until ``ready()``, send SIGINT; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fedopt.cli.main", *argv], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the command never got to work"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr.decode()


def test_figures_all_says_what_was_written_and_resumes(tmp_path):
    out = tmp_path / "figs"
    code, text = _interrupt(["figures", "all", "--quick", "--out", str(out), "-q"],
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


def test_a_long_solve_says_nothing_was_saved_and_how_to_rerun(tmp_path):
    argv = ["gap", "default", "--sweep", "rank", "-q"]  # the L = 4 manifold solve: ~1 minute
    start = time.monotonic()
    code, text = _interrupt(argv, lambda: time.monotonic() - start > 12)
    assert code == 130, text
    assert "Traceback" not in text
    assert "interrupted: nothing was saved" in text
    assert text.strip().splitlines()[-1].endswith("rerun with: fedopt " + " ".join(argv))
