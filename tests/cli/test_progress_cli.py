"""Progress from second 0: the long commands open their display before their first import of
the heavy machinery and move a bar n/N through their work.

Oracle: the records the command sends to the shared ``progress`` helper (replaced by a
recorder), in order with the command's first piece of work."""

from __future__ import annotations

import contextlib
import importlib

import pytest


@pytest.fixture
def recorder(monkeypatch):
    """Replace ``progress`` in a command module; returns the records of every display."""
    records: list[dict] = []

    @contextlib.contextmanager
    def fake(label, enabled=True):
        records.append({"opened": label, "enabled": enabled})
        yield records.append

    def install(module_name):
        monkeypatch.setattr(importlib.import_module(module_name), "progress", fake)
        return records

    return install


def test_tsfa_simulate_opens_before_any_work_and_counts_rounds(invoke, recorder, monkeypatch):
    import fedopt.instance

    records = recorder("fedopt.cli.tsfa_cmd")
    real = fedopt.instance.load_instance

    def load(source):  # the first piece of work the command does
        records.append({"work": "load_instance"})
        return real(source)

    monkeypatch.setattr(fedopt.instance, "load_instance", load)
    res = invoke("tsfa-simulate", "small", "--rounds", "7")
    assert res.exit_code == 0, res.output
    assert records[0] == {"opened": "tsfa-simulate", "enabled": True}
    assert "label" in records[1] and records[2] == {"work": "load_instance"}
    bars = [r for r in records if "done" in r]
    assert [r["done"] for r in bars] == list(range(8)) and {r["total"] for r in bars} == {7}


def test_quiet_and_json_turn_the_display_off(invoke, recorder):
    records = recorder("fedopt.cli.tsfa_cmd")
    assert invoke("tsfa-simulate", "small", "--rounds", "2", "-q").exit_code == 0
    assert invoke("tsfa-simulate", "small", "--rounds", "2", "--format", "json").exit_code == 0
    assert [r["enabled"] for r in records if "opened" in r] == [False, False]


def test_calibrate_opens_before_the_loop_and_counts_pilots(invoke, recorder, tmp_path):
    records = recorder("fedopt.cli.calibrate_cmd")
    res = invoke("calibrate", "tiny-char", "--rounds", "1", "--ranks", "1,4", "--seeds", "0",
                 "--noise-levels", "1", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert records[0] == {"opened": "calibrate", "enabled": True}
    assert records[1] == {"label": "loading the loop (torch)"}
    bars = [r for r in records if "done" in r]
    assert [r["done"] for r in bars] == [0, 1, 2, 3] and bars[-1]["label"] == "fitting"


def test_gap_opens_before_any_work_and_steps_through_the_smoothing_stages(invoke, recorder,
                                                                           monkeypatch):
    import fedopt.instance

    records = recorder("fedopt.cli.gap_cmd")
    real = fedopt.instance.load_instance

    def load(source):
        records.append({"work": "load_instance"})
        return real(source)

    monkeypatch.setattr(fedopt.instance, "load_instance", load)
    res = invoke("gap", "small", "--sweep", "rank", "--streams", "2")
    assert res.exit_code == 0, res.output
    assert records[0] == {"opened": "gap", "enabled": True}
    assert "label" in records[1] and records[2] == {"work": "load_instance"}
    bars = [r for r in records if "done" in r]
    n = bars[0]["total"]
    assert [r["done"] for r in bars] == list(range(1, n + 1))  # the manifold solver's stages
    assert all(r["label"].startswith("L = 2 beamformers") for r in bars)
    quiet = recorder("fedopt.cli.gap_cmd")
    assert invoke("gap", "small", "--rank", "4", "-q").exit_code == 0
    assert quiet[-1] != records[0] and {"opened": "gap", "enabled": False} in quiet
