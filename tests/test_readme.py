"""The README, as a newcomer runs it: every ``bash`` block, in order, in one scratch folder.

Every command line of the README's ``bash`` blocks runs in the order of the file, in one
temporary folder (files written by one command are read by the next), and must exit 0. Where
the README quotes a command's output (an HTML comment ``<!-- output of: COMMAND -->`` or
``<!-- output of: COMMAND (exit N) -->`` right before a plain fenced block), the command runs at
that point and every quoted line must appear in its output (``...`` in a quoted line stands for
any text). Long commands run with the short settings the README documents in "The README is
tested" (:data:`SHORT`), applied by :func:`shorten`; the sweep file is the README's own
``yaml`` block with ``instance: small`` (seconds instead of minutes).

It takes minutes, so it runs where ``FEDOPT_TEST_README=1`` (CI's ``.ci/run`` sets it).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

needs_opt_in = pytest.mark.skipif(os.environ.get("FEDOPT_TEST_README") != "1",
                                  reason="the README run takes minutes: FEDOPT_TEST_README=1")

#: the short settings of long commands (the README's "The README is tested" lists them)
SHORT = {
    "validate": "without --quick: --rounds 2 --seeds 0 (--rounds N becomes --rounds 2, "
                "--seeds a,b,... becomes --seeds a); --quick runs as written",
    "calibrate": "--rounds 2",
    "figures": "--quick",
}
#: commands that need what a scratch folder on a CPU machine does not have
NEEDS = {
    "--scheduler tcp://": "a running Dask cluster",
    "--device cuda": "a GPU",
    "pip install": "a fresh environment (CI has just installed it)",
}


@dataclass
class Step:
    """One command of the README: its line number and text, and the quoted output to find."""

    line: int
    command: str
    quoted: list[str] = field(default_factory=list)
    exit_code: int = 0


def _commands(block: str, first_line: int) -> list[Step]:
    steps = []
    for i, raw in enumerate(block.splitlines()):
        text = raw.split(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        if text:
            steps.append(Step(first_line + i, text))
    return steps


def parse(text: str) -> tuple[list[Step], str]:
    """The README's steps in order, and its sweep file (the ``yaml`` block)."""
    steps: list[Step] = []
    sweep = ""
    fence = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
    marker = re.compile(r"<!-- output of: (.+?)(?: \(exit (\d+)\))? -->\s*$")
    for m in fence.finditer(text):
        line = text[:m.start()].count("\n") + 2
        lang, body = m.group(1), m.group(2)
        if lang == "bash":
            steps += _commands(body, line)
        elif lang == "yaml" and "grid:" in body and not sweep:
            sweep = body
        elif lang == "":
            before = text[:m.start()].rstrip().splitlines()[-1]
            found = marker.search(before)
            if found:
                quoted = [q for q in body.splitlines() if q.strip()]
                steps.append(Step(line, found.group(1), quoted, int(found.group(2) or 0)))
    return steps, sweep


def shorten(command: str) -> str:
    """``command`` with the short settings of :data:`SHORT`."""
    words = shlex.split(command)
    if words[:1] != ["fedopt"] or len(words) < 2:
        return command
    name = words[1]
    if name == "validate" and "--quick" not in words:
        words = [("2" if prev == "--rounds" else w.split(",")[0] if prev == "--seeds" else w)
                 for prev, w in zip(["", *words[:-1]], words, strict=True)]
        words += [x for opt, val in (("--rounds", "2"), ("--seeds", "0"))
                  if opt not in words for x in (opt, val)]
    elif name == "calibrate" and "--rounds" not in words:
        words += ["--rounds", "2"]
    elif name == "figures" and words[2:3] != ["sweep"] and "--quick" not in words:
        words.append("--quick")
    return shlex.join(words)


def _run(step: Step, cwd: Path) -> subprocess.CompletedProcess:
    words = shlex.split(shorten(step.command))
    if words[0] == "fedopt":
        argv = [sys.executable, "-m", "fedopt.cli.main", *words[1:]]
    elif words[0] == "python":
        argv = [sys.executable, *words[1:]]
    else:
        argv = words
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
                          check=False)


def _found(quoted: str, output: list[str]) -> bool:
    parts = [p.strip() for p in quoted.split("...")]
    for line in output:
        pos = 0
        for part in parts:
            at = line.find(part, pos)
            if at < 0:
                break
            pos = at + len(part)
        else:
            return True
    return False


def _needs(command: str) -> str | None:
    for key, what in NEEDS.items():
        if key in command:
            if key == "--device cuda":
                import torch

                if torch.cuda.is_available():
                    return None
            return what
    return None


@needs_opt_in
def test_every_readme_sequence_runs_as_written(tmp_path, capsys):
    steps, sweep = parse(README.read_text(encoding="utf-8"))
    assert len(steps) > 40 and sweep, "the README lost its command blocks"
    (tmp_path / "sweep.yaml").write_text(sweep.replace("instance: default", "instance: small"))
    failures, log = [], []
    for step in steps:
        need = _needs(step.command)
        if need:
            log.append(f"skipped (needs {need}): {step.command}")
            continue
        t0 = time.perf_counter()
        res = _run(step, tmp_path)
        log.append(f"{time.perf_counter() - t0:6.1f} s  exit {res.returncode}  line {step.line}: "
                   f"{shorten(step.command)}")
        if res.returncode != step.exit_code:
            failures.append(f"README line {step.line}: `{step.command}` exited "
                            f"{res.returncode}, expected {step.exit_code}:\n{res.stderr[-800:]}")
            continue
        output = (res.stdout + res.stderr).splitlines()
        missing = [q for q in step.quoted if not _found(q, output)]
        if missing:
            failures.append(f"README line {step.line}: `{step.command}` did not print the "
                            f"quoted line(s) {missing}; it printed:\n" + "\n".join(output[:40]))
    with capsys.disabled():
        print("\nREADME run:\n" + "\n".join(log))
    assert not failures, "\n\n".join(failures)


def test_the_readme_parses_into_its_steps():
    steps, sweep = parse(README.read_text(encoding="utf-8"))
    assert len(steps) > 40 and "grid:" in sweep
    quoted = [s for s in steps if s.quoted]
    assert {s.command for s in quoted} >= {"fedopt solve", "fedopt solve --method tsfa"}
    assert any(s.exit_code == 2 for s in quoted)  # the channel-mismatch example


def test_shorten_keeps_the_command_and_cuts_its_length():
    assert shorten("fedopt validate --compare ideal --rounds 50 --seeds 0,1 --out runs/") == (
        "fedopt validate --compare ideal --rounds 2 --seeds 0 --out runs/")
    assert shorten("fedopt validate --baselines") == (
        "fedopt validate --baselines --rounds 2 --seeds 0")
    assert shorten("fedopt validate --quick --baselines") == "fedopt validate --quick --baselines"
    assert shorten("fedopt figures all --out figs/") == "fedopt figures all --out figs/ --quick"
    assert shorten("fedopt solve --method exhaustive") == "fedopt solve --method exhaustive"


def test_quoted_outputs_are_found_with_ellipses():
    out = ["plan   airfl-lora on default: rank r = 16 (bnb search, multicast, 1 solve(s))"]
    assert _found("plan   airfl-lora on default: rank r = 16 (bnb search, ...)", out)
    assert not _found("plan   airfl-lora on default: rank r = 8 (...)", out)
