"""The ``fedopt`` command line, through typer's CliRunner (output = stdout and stderr)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from fedopt.channel import Channel, draw_channel
from fedopt.cli.main import app
from fedopt.instance import Instance, list_presets, load_instance


@pytest.fixture
def invoke():
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        # user errors end in typer.Exit (SystemExit), never in an uncaught exception
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert "Traceback" not in result.output
        return result

    return run


def test_help_and_version(invoke):
    res = invoke("--help")
    assert res.exit_code == 0 and "instance" in res.output and "channel" in res.output
    res = invoke()  # no arguments: help, not an error trace
    assert "Usage" in res.output
    res = invoke("--version")
    assert res.exit_code == 0 and res.output.startswith("fedopt ")


def test_instance_show_prints_table(invoke, default_instance):
    res = invoke("instance", "show", "default")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    rows = {line.split("  ")[0]: line for line in lines}
    assert rows["instance"].endswith(f"default (schema 1, digest {default_instance.digest()})")
    assert "K = 20, N_t = 4" in rows["devices"]
    assert "N_r = 16" in rows["server"]
    # σ² = −174 dBm/Hz + 10 log10(30 kHz) + 9 dB = −120.2 dBm per subcarrier
    assert f"{-174 + 10 * math.log10(30e3) + 9:.1f} dBm" in res.output
    assert "q(r) = 36864 r" in res.output  # 12 · (2304 + 768)
    assert "latency_budget_s = 0.5" in res.output


def test_instance_show_json(invoke, default_instance):
    res = invoke("instance", "show", "default", "--format", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert set(data) == {"instance", "derived"}
    assert Instance.from_dict(data["instance"]) == default_instance  # a complete instance
    derived = data["derived"]
    assert derived["params_per_rank"] == 36_864
    assert derived["n_devices"] == 20
    assert derived["ofdm_symbols"]["8"] == [
        default_instance.ofdm_symbols(8, s) for s in (1, 2, 3, 4)
    ]
    assert derived["path_loss_db_max"] == pytest.approx(
        128.1 + 37.6 * math.log10(0.25), rel=1e-12
    )  # 250 m; rounding


def test_instance_new_then_validate(invoke, tmp_path):
    out = tmp_path / "f.yaml"
    res = invoke("instance", "new", "--preset", "small", "-o", out)
    assert res.exit_code == 0, res.output
    assert Instance.load(out) == load_instance("small")
    res = invoke("instance", "validate", out)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("OK")
    assert "K = 3, N_t = 2, N_r = 4, M = 4" in res.output
    res = invoke("instance", "validate", out, "--format", "json")
    assert json.loads(res.output)["valid"] is True

    res = invoke("instance", "new", "--preset", "small", "-o", out)  # refuses to overwrite
    assert res.exit_code == 2 and "exists; pass --force" in res.output
    res = invoke("instance", "new", "--preset", "default", "-o", out, "--force")
    assert res.exit_code == 0 and Instance.load(out).name == "default"
    res = invoke("instance", "new", "--preset", "nope", "-o", tmp_path / "g.yaml")
    assert res.exit_code == 2  # the choices are the presets, named by the option's error
    assert all(f"'{name}'" in res.output for name in list_presets())
    res = invoke("instance", "new", "-o", tmp_path / "missing_dir" / "g.json")
    assert res.exit_code == 2 and "does not exist" in res.output


def _bad_files(small_instance):
    base = small_instance.to_dict()

    def edit(section, key, value):
        d = json.loads(json.dumps(base))
        if key is None:
            d[section] = value
        elif value is None:
            del d[section][key]
        else:
            d[section][key] = value
        return json.dumps(d)

    return {
        "missing.json": (edit("server", "n_rx", None), "server.n_rx: missing required field"),
        "typo.json": (edit("devices", "n_txx", 2), "devices.n_txx: unknown field"),
        "type.json": (
            edit("ofdm", "n_subcarriers", "four"),
            "ofdm.n_subcarriers: expected an integer, got 'four'",
        ),
        "antennas.json": (edit("devices", "n_tx", 0), "devices.n_tx: got 0, must be >= 1"),
        "rank.json": (edit("lora", "ranks", [1, 40]), "rank 40 exceeds"),
        "streams.json": (edit("aircomp", "streams", [5]), "L = 5 exceeds min(N_t, N_r)"),
        "version.json": (edit("schema_version", None, 3), "schema_version: got 3"),
        "broken.yaml": ("server: {n_rx: 4\n", "not valid YAML"),
        "broken.json": ("{", "not valid JSON"),
    }


def test_instance_validate_bad_files(invoke, tmp_path, small_instance):
    for name, (text, fragment) in _bad_files(small_instance).items():
        path = tmp_path / name
        path.write_text(text)
        res = invoke("instance", "validate", path)
        assert res.exit_code == 2, (name, res.output)
        assert res.output.startswith("error: invalid instance in ")
        assert name in res.output and fragment in res.output, (name, res.output)
        res = invoke("instance", "validate", path, "--format", "json")
        data = json.loads(res.output)
        assert res.exit_code == 2 and data["valid"] is False
        assert any(fragment in e for e in data["errors"]), (name, data)
    res = invoke("instance", "validate", tmp_path / "absent.yaml")
    assert res.exit_code == 2 and "neither an existing file nor a preset" in res.output
    res = invoke("instance", "show", "nope")
    assert res.exit_code == 2 and "valid presets: " in res.output


def test_instance_validate_with_channel(invoke, tmp_path, small_instance):
    good = draw_channel(small_instance, seed=1).save(tmp_path / "good.npz")
    res = invoke("instance", "validate", "small", "--channel", good)
    assert res.exit_code == 0 and res.output.startswith("OK: small and channel ")

    # a channel of the small instance does not fit the default one: axis 0 (K) disagrees
    res = invoke("instance", "validate", "default", "--channel", good)
    assert res.exit_code == 2
    assert "axis 0 has size 3 but the instance 'default' has devices.count (K) = 20" in res.output

    h = draw_channel(small_instance, seed=1).H.copy()
    h[0, 1, 2, 1] = np.nan
    np.savez(tmp_path / "bad.npz", H=h)
    res = invoke("instance", "validate", "small", "--channel", tmp_path / "bad.npz")
    assert res.exit_code == 2
    assert "bad.npz: H: 1 non-finite entries (NaN or inf), first at device 0, subcarrier 1" in (
        res.output
    )
    res = invoke(
        "instance", "validate", "default", "--channel", tmp_path / "bad.npz", "--format", "json"
    )
    assert res.exit_code == 2 and "non-finite" in json.loads(res.output)["errors"][0]


def test_channel_draw(invoke, tmp_path, small_instance):
    out = tmp_path / "ch.npz"
    res = invoke("channel", "draw", "small", "-o", out, "--seed", "5", "--round", "2")
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"wrote {out}: H shape (3, 4, 4, 2)")
    ch = Channel.load(out, instance=small_instance)
    assert_array_equal(ch.H, draw_channel(small_instance, seed=5, round=2).H)  # same draw
    assert (ch.seed, ch.round) == (5, 2)

    again = invoke("channel", "draw", "small", "-o", out, "--seed", "6")
    assert again.exit_code == 2 and "exists; pass --force to overwrite it" in again.stderr
    assert (Channel.load(out).seed, Channel.load(out).round) == (5, 2)  # not overwritten
    res = invoke("channel", "draw", "small", "-o", out, "--seed", "5", "--round", "2",
                 "--format", "json", "--force")
    info = json.loads(res.output)
    assert info["shape"] == [3, 4, 4, 2] and (info["seed"], info["round"]) == (5, 2)
    want = float(np.mean(ch.mean_gain() / small_instance.path_loss))
    assert info["mean_gain_over_path_loss"] == pytest.approx(want, rel=1e-12)  # same numbers

    res = invoke("channel", "draw", "nope", "-o", tmp_path / "new.npz")
    assert res.exit_code == 2 and "valid presets" in res.output
    res = invoke("channel", "draw", "small", "-o", tmp_path)
    assert res.exit_code == 2 and "is a directory; give a file path" in res.stderr
    res = invoke("channel", "draw", "small", "-o", tmp_path / "no" / "h.npz")
    assert res.exit_code == 2 and "does not exist; create it first" in res.stderr
    res = invoke("channel", "draw", "small", "-o", out, "--seed", "-1")
    assert res.exit_code != 0  # rejected by the option's range check


def test_cli_import_is_light():
    # `fedopt --help` must stay instant: no heavy numerical stack at import time (STYLE.md)
    heavy = ("torch", "cvxpy", "pymanopt", "dask", "matplotlib")
    code = f"import sys, fedopt.cli.main; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "", f"imported at CLI start-up: {out.strip()}"


def test_the_planners_import_nothing_they_do_not_use():
    # `fedopt solve` (AirComp and TSFA) runs neither a conic solver nor scipy.optimize (half a
    # second to import), and the loop's torch only in `validate`/`calibrate`
    heavy = ("torch", "cvxpy", "scipy.optimize", "dask", "matplotlib")
    code = ("import sys, fedopt.cli.main, fedopt.solvers.planner, fedopt.solvers.tsfa, "
            "fedopt.solvers.beamforming; "
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "", f"imported by the planners: {out.strip()}"


def test_json_output_is_strict_json(capsys):
    import json as _json

    import numpy as np

    from fedopt.cli._common import print_json

    print_json({"a": float("inf"), "b": [np.nan, 1.5], "c": np.float64("-inf"), "d": "x"})
    text = capsys.readouterr().out

    def refuse(name):
        raise AssertionError(f"non-JSON constant {name} in the output")

    assert _json.loads(text, parse_constant=refuse) == {"a": None, "b": [None, 1.5], "c": None,
                                                        "d": "x"}


def test_instance_list_names_every_preset(invoke):
    from fedopt.instance import load_instance

    res = invoke("instance", "list", "--format", "json")
    rows = json.loads(res.stdout)["presets"]
    assert [r["name"] for r in rows] == list_presets()
    for r in rows:
        inst = load_instance(r["name"])
        assert (r["devices"], r["n_rx"], r["n_subcarriers"]) == (
            inst.n_devices, inst.n_rx, inst.n_subcarriers)
    text = invoke("instance", "list").stdout.splitlines()
    assert [line.split()[0] for line in text] == list_presets()
    assert max(len(line) for line in text) <= 100
    help_text = invoke("instance", "new", "--help").stdout
    assert all(name in help_text for name in list_presets())  # --preset lists its choices


def test_instance_show_says_what_the_path_loss_depends_on(invoke, tmp_path, small_dict):
    import yaml

    line = next(x for x in invoke("instance", "show", "small").stdout.splitlines()
                if x.startswith("channel"))
    # 128.1 + 37.6 log10 d ignores the carrier: no "at 3.5 GHz" for it
    assert "3gpp-uma" in line and "independent of the carrier" in line and "GHz" not in line
    small_dict["channel"].update(path_loss="38.901-umi", carrier_hz=28e9)
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(small_dict))
    line = next(x for x in invoke("instance", "show", tmp_path / "u.yaml").stdout.splitlines()
                if x.startswith("channel"))
    assert "38.901-umi" in line and "at 28 GHz" in line
    small_dict["channel"].update(model="sionna", scenario="umi")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(small_dict))
    text = invoke("instance", "show", tmp_path / "s.yaml").stdout
    assert "Sionna TR 38.901 UMi at 28 GHz" in text and "taps" not in text
