"""The sweep file and its cells: every problem named at once, the Cartesian order, the
per-device resampling rule of ``devices.count``, the cell keys.

Oracles: the product of the grid sizes for the cell count, ``itertools.product`` for the order,
``Instance.from_dict`` on a hand-written mapping for a cell's instance, the quantile rule written
out by hand for the resampled lists.
"""

from __future__ import annotations

import itertools

import pytest

from fedopt.errors import InvalidSweepError
from fedopt.instance import Instance, load_instance
from fedopt.solvers.sweeps import SweepSpec, expand, load_sweep
from fedopt.solvers.sweeps.cells import resize_devices

BASE = {"schema_version": 1, "instance": "small",
        "grid": {"devices.count": [2, 3], "server.n_rx": [4, 8, 16]},
        "methods": ["airfl-lora", "exhaustive"], "seeds": [0, 1]}


def spec(**changes) -> SweepSpec:
    return SweepSpec.from_dict({**BASE, **changes})


def test_the_issue_example_reads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("schema_version: 1\ninstance: default\ngrid:\n  devices.count: [10, 20, 50]\n"
                    "  server.n_rx: [8, 16, 32]\nmethods: [airfl-lora, exhaustive]\n"
                    "seeds: [0, 1, 2]\nkind: solve\n")
    s = load_sweep(path)
    assert s.grid == (("devices.count", (10, 20, 50)), ("server.n_rx", (8, 16, 32)))
    assert s.n_cells == 3 * 3 * 2 * 3
    cells = expand(s)  # the default preset has 20 per-device values: resampled to 10 and 50
    assert len(cells) == 54
    assert {len(c.instance["devices"]["distance_m"]) for c in cells
            if c.values[0][1] == 50} == {50}


def test_every_problem_is_named_at_once():
    bad = {"schema_version": 2, "instanse": "small", "grid": {"devices.cout": [1],
           "server.n_rx": 8, "lora.ranks": []}, "methods": ["airfl-lora", "nope"],
           "seeds": [0, -1], "kind": "train"}
    with pytest.raises(InvalidSweepError) as info:
        SweepSpec.from_dict(bad, source="s.yaml")
    text = str(info.value)
    assert "in s.yaml" in text
    for needle in ("'instanse'", "schema_version: got 2", "kind: got 'train'",
                   "grid.devices.cout", "devices has count, n_tx", "grid.server.n_rx: got 8",
                   "grid.lora.ranks: got []", "'nope'", "seeds: -1"):
        assert needle in text, needle
    assert len(info.value.errors) == 8  # the two grid.devices.cout needles are one message


@pytest.mark.parametrize("changes, needle", [
    ({"grid": {"nosection.x": [1]}}, "the sections are server, devices"),
    ({"grid": {"devices.count": [2, 2]}}, "repeat one"),
    ({"seeds": [0, 0]}, "repeats a seed"),
    ({"seeds": 3}, "expected a non-empty list of integers"),
    ({"seeds": [True]}, "True is not an integer"),
    ({"methods": ["airfl-lora", "airfl-lora"]}, "names a method twice"),
    ({"methods": ["ideal"]}, "not a method of kind solve"),
    ({"validate": {"quick": "yes"}}, "validate.quick"),
    ({"validate": {"speed": 1}}, "validate: unknown key(s) 'speed'"),
    ({"round": -1}, "round: got -1"),
    ({"grid": {"devices.count": list(range(1, 2001))}, "seeds": list(range(600))},
     "at most 1000000 per sweep"),
])
def test_bad_values_are_named(changes, needle):
    with pytest.raises(InvalidSweepError, match="invalid sweep") as info:
        spec(**changes)
    assert needle in str(info.value)


def test_validate_kind_takes_the_validation_methods():
    s = spec(kind="validate", methods=["ideal", "digital", "airfl-lora"])
    assert s.methods == ("ideal", "digital", "airfl-lora")


def test_cells_follow_the_cartesian_order():
    s = spec()
    cells = expand(s)
    assert len(cells) == s.n_cells == 2 * 3 * 2 * 2
    expected = list(itertools.product([2, 3], [4, 8, 16], ["airfl-lora", "exhaustive"], [0, 1]))
    got = [(c.values[0][1], c.values[1][1], c.method, c.seed) for c in cells]
    assert got == expected
    assert [c.index for c in cells] == list(range(len(cells)))


def test_a_cell_instance_is_the_overridden_file():
    cells = expand(spec(grid={"server.n_rx": [8], "constraints.latency_budget_s": [0.2]}))
    data = load_instance("small").to_dict()
    data["server"]["n_rx"] = 8
    data["constraints"]["latency_budget_s"] = 0.2
    assert cells[0].instance == Instance.from_dict(data).to_dict()


def test_every_bad_cell_instance_is_reported_before_running():
    with pytest.raises(InvalidSweepError) as info:
        expand(spec(grid={"devices.count": [0, 2, -1], "server.n_rx": [4, 0]}))
    text = str(info.value)
    # the cells with count 0 or -1 (either n_rx) and the cells with n_rx 0 (any count)
    assert "cell devices.count=0, server.n_rx=4: devices.count" in text
    assert "cell devices.count=2, server.n_rx=0: server.n_rx" in text
    assert "cell devices.count=-1, server.n_rx=0" in text
    assert not any("devices.count=2, server.n_rx=4" in e for e in info.value.errors)


def test_a_bad_base_instance_is_named():
    with pytest.raises(InvalidSweepError, match="instance: 'no-such-preset'"):
        expand(spec(instance="no-such-preset"))


def test_resampling_follows_the_quantile_rule():
    devices = {"count": 4, "distance_m": [10.0, 20.0, 30.0, 40.0], "n_tx": 2,
               "dataset_size": [1, 2, 3, 4], "p_max_dbm": 20.0}
    # ⌊(i + ½)·4/8⌋ = 0,0,1,1,2,2,3,3 and ⌊(i + ½)·4/2⌋ = 1,3
    assert resize_devices(devices, 8)["distance_m"] == [10, 10, 20, 20, 30, 30, 40, 40]
    assert resize_devices(devices, 2)["distance_m"] == [20.0, 40.0]
    assert resize_devices(devices, 3)["dataset_size"] == [1, 3, 4]  # ⌊0.5·4/3⌋, ⌊1.5·4/3⌋, ...
    assert resize_devices(devices, 2)["p_max_dbm"] == 20.0            # a scalar stays
    kept = resize_devices(devices, 2, keep=("dataset_size",))
    assert kept["dataset_size"] == [1, 2, 3, 4]                        # set by the cell: kept


def test_resampling_applies_to_the_cells_of_a_count_sweep():
    cells = expand(spec(grid={"devices.count": [6]}, methods=["airfl-lora"], seeds=[0]))
    small = load_instance("small").devices
    assert cells[0].instance["devices"]["distance_m"] == [
        small.distance_m[int((i + 0.5) * 3 / 6)] for i in range(6)]
    # a list the cell gives itself is used as given
    cells = expand(spec(grid={"devices.count": [2], "devices.distance_m": [[70, 80]]},
                        methods=["airfl-lora"], seeds=[0]))
    assert cells[0].instance["devices"]["distance_m"] == [70.0, 80.0]


def test_keys_follow_the_inputs():
    a, b = expand(spec()), expand(spec())
    assert [c.key for c in a] == [c.key for c in b]          # same inputs, same keys
    assert len({c.key for c in a}) == len(a)                 # every cell its own
    other_round = expand(spec(round=1))
    assert not {c.key for c in a} & {c.key for c in other_round}
    # a cell of a larger sweep with the same inputs has the same key (reused on --force)
    wider = expand(spec(seeds=[0, 1, 2]))
    assert {c.key for c in a} <= {c.key for c in wider}
