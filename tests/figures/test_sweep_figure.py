"""``fedopt figures sweep``: the plotted medians and bands against numpy on a hand-made table,
failed cells left out and counted, named errors for bad columns and files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.figures.sweep import compute, make, read_table


@pytest.fixture
def table(rng):
    rows = []
    for n_rx in (8, 16):
        for count in (10, 20, 50):
            for method in ("a", "b"):
                for seed in range(5):
                    rows.append({"devices.count": count, "server.n_rx": n_rx, "method": method,
                                 "seed": seed, "airtime_s": float(rng.uniform()), "error": ""})
    rows[3]["error"] = "boom"          # a failed cell: left out
    rows[3]["airtime_s"] = 123.0
    rows[7]["airtime_s"] = None        # no value: left out
    return pd.DataFrame(rows)


def test_medians_and_bands_are_those_of_the_table(table):
    data = compute(table, "devices.count", "airtime_s")
    assert data["rows"] == 60 and data["left_out"] == 2  # 2 n_rx x 3 counts x 2 methods x 5
    labels = [s["label"] for s in data["series"]]
    assert labels == ["a, server.n_rx=8", "a, server.n_rx=16", "b, server.n_rx=8",
                      "b, server.n_rx=16"]
    ok = table[(table.error == "") & table.airtime_s.notna()]
    for s in data["series"]:
        method, n_rx = s["label"].split(", server.n_rx=")
        for x, med, lo, hi, n in zip(s["x"], s["median"], s["min"], s["max"], s["n"],
                                     strict=True):
            vals = ok[(ok.method == method) & (ok["server.n_rx"] == int(n_rx))
                      & (ok["devices.count"] == x)].airtime_s.to_numpy()
            assert (med, lo, hi, n) == (np.median(vals), vals.min(), vals.max(), len(vals))
    assert 123.0 not in [v for s in data["series"] for v in s["max"]]


def test_bad_columns_are_named(table):
    with pytest.raises(InvalidArgumentError, match="--x: 'devices.cont' is not a column"):
        compute(table, "devices.cont", "airtime_s")
    with pytest.raises(InvalidArgumentError, match="--y: column 'method' is not numeric"):
        compute(table, "devices.count", "method")


def test_make_writes_the_png_and_its_data(table, tmp_path):
    path = tmp_path / "results.parquet"
    table.to_parquet(path)
    result = make(path, tmp_path / "figs", x="devices.count", y="airtime_s", hue="server.n_rx")
    png = (tmp_path / "figs" / "sweep_airtime_s_vs_devices.count.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "figs" / "sweep_airtime_s_vs_devices.count.json").read_text())
    assert result["png"].endswith(".png")
    assert json.dumps(data)  # JSON-safe, the plotted series included
    assert "series" in json.dumps(data)


def test_a_bad_table_file_is_named(tmp_path):
    with pytest.raises(InvalidArgumentError, match="no such file"):
        read_table(tmp_path / "none.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        read_table(bad)


def test_cli(invoke, table, tmp_path):
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    res = invoke("figures", "sweep", "--table", path, "--x", "devices.count", "--y",
                 "airtime_s", "-o", tmp_path / "f", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["figures"]["sweep"]["png"].endswith(
        "sweep_airtime_s_vs_devices.count.png")
    res = invoke("figures", "sweep", "--x", "devices.count")
    assert res.exit_code == 2 and "needs --table, --y" in res.stderr
