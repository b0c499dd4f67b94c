"""``fedopt validate`` on the command line: a finished --out is never replaced silently, the
default --out is one folder per run, Ctrl-C says what was saved and the command that resumes,
and the closed option sets list their choices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: one round, one seed, the equivalent path: the cheapest real run of the loop
FAST = ("tiny-char", "--rounds", "1", "--seeds", "0", "--mode", "equivalent", "-q")


def test_a_finished_out_is_refused_unless_resume_or_force(invoke, tmp_path):
    out = tmp_path / "o"
    first = invoke("validate", *FAST, "--out", out, "--format", "json")
    assert first.exit_code == 0, first.output
    again = invoke("validate", *FAST, "--out", out)
    assert again.exit_code == 2 and "holds a finished validation" in again.stderr
    assert "--resume" in again.stderr and "--force" in again.stderr
    resumed = invoke("validate", *FAST, "--out", out, "--resume", "--format", "json")
    assert resumed.exit_code == 0
    # nothing reran: the same numbers, read back from the finished runs
    a, b = json.loads(first.stdout), json.loads(resumed.stdout)
    assert a["methods"]["airfl-lora"]["final_eval_loss"] == b["methods"]["airfl-lora"][
        "final_eval_loss"]
    assert invoke("validate", *FAST, "--out", out, "--force").exit_code == 0
    both = invoke("validate", *FAST, "--out", out, "--force", "--resume")
    assert both.exit_code == 2 and "give one of them" in both.stderr


def test_the_default_out_is_one_folder_per_run(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("validate", *FAST).exit_code == 0
    assert invoke("validate", *FAST, "--compare", "ideal").exit_code == 0
    runs = sorted(p.name for p in (tmp_path / "validate-out").iterdir())
    assert len(runs) == 2 and all(r.startswith("tiny-char-") for r in runs)
    assert all((tmp_path / "validate-out" / r / "validate.json").is_file() for r in runs)
    again = invoke("validate", *FAST)  # the same run finds its own folder
    assert again.exit_code == 2 and "holds a finished validation" in again.stderr


def test_ctrl_c_says_what_was_saved_and_resumes(tmp_path, ctrl_c):
    out = tmp_path / "o"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code, text = ctrl_c(["validate", "tiny-char", "--rounds", "30", "--seeds", "0", "--mode",
                         "equivalent", "--out", out, "-q"],
                        lambda: bool(list(out.glob("*/seed-0/rounds.jsonl"))))
    assert code == 130, text
    assert "Traceback" not in text
    assert f"interrupted: every finished round is checkpointed in {out}/" in text
    command = text.split("resume with: ")[1].strip().splitlines()[0]
    assert command.startswith("fedopt validate tiny-char") and command.endswith("--resume")
    words = command.split()[1:]
    done = subprocess.run([sys.executable, "-m", "fedopt.cli.main", *words, "--format", "json"],
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["methods"]["airfl-lora"]["final_eval_loss"] is not None


def test_closed_sets_list_their_choices(invoke):
    text = invoke("validate", "--help").stdout
    for choice in ("airfl-lora", "sgd", "adamw", "sophia", "exact", "equivalent",
                   "similarity", "ota-sophia"):
        assert choice in text, choice
    res = invoke("validate", "tiny-char", "--optimizer", "lion")
    assert res.exit_code == 2 and "lion" in res.output


def test_table_fits_100_columns_with_the_spread_and_csv_has_its_numbers(invoke, tmp_path):
    import csv
    import io

    out = tmp_path / "o"
    args = ("validate", "tiny-char", "--rounds", "1", "--seeds", "0,1", "--mode", "equivalent",
            "--compare", "ideal,centroid-plan", "-q", "--out", out)
    report = json.loads(invoke(*args, "--format", "json").stdout)
    text = invoke(*args, "--resume").stdout.splitlines()
    assert max(len(line) for line in text) <= 100
    head = text[0].split()
    assert head[:3] == ["method", "r", "L"] and "sd" in head
    for name, m in report["methods"].items():
        row = next(line for line in text if line.startswith(name + " "))
        # mean ± sd over the two seeds, as the JSON has them
        assert f"{m['final_eval_loss']:.4f} ± {m['final_eval_loss_std']:.1g}" in row
    rows = list(csv.DictReader(io.StringIO(invoke(*args, "--resume", "--format", "csv").stdout)))
    assert [r["method"] for r in rows] == list(report["methods"])
    for r in rows:
        m = report["methods"][r["method"]]
        assert float(r["final_eval_loss"]) == m["final_eval_loss"]  # unrounded
        assert float(r["final_eval_loss_std"]) == m["final_eval_loss_std"]


def test_a_plan_for_another_instance_is_refused_before_training(invoke, tmp_path):
    import yaml

    from fedopt.instance import load_instance

    plan = tmp_path / "plan.json"
    assert invoke("solve", "tiny-char", "-q", "--method", "centroid-plan", "-o",
                  plan).exit_code == 0
    data = load_instance("tiny-char").to_dict()
    data["devices"]["p_max_dbm"] = 0.0  # same shapes, other physics
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    res = invoke("validate", plan, "--instance", other, *FAST[1:], "--out", tmp_path / "o")
    assert res.exit_code == 2 and "the plan was made for instance 'tiny-char'" in res.stderr
    assert not (tmp_path / "o").exists()  # refused before any run
