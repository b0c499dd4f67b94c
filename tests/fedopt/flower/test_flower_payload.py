"""Named arrays ↔ one real vector per client (fedopt.flower.payload)."""

from __future__ import annotations

import numpy as np
import pytest

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import DigitalAggregator, soft_component_mask
from fedopt.flower.payload import Layout, lora_shapes


def test_flatten_is_row_major_in_the_arrays_order_and_unflatten_inverts_it(rng):
    arrays = {"z": rng.standard_normal((2, 3)), "steps": np.arange(4),
              "a": rng.standard_normal(5).astype(np.float32)}
    layout = Layout.of(arrays)
    assert layout.keys == ("z", "a")  # the mapping's order; the integer array stays home
    assert layout.size == 11
    v = layout.flatten(arrays)
    # the oracle: row-major ravel of each travelling array, concatenated
    np.testing.assert_array_equal(v, np.concatenate([arrays["z"].reshape(-1),
                                                     arrays["a"].astype(float)]))
    assert v.dtype == np.float64
    back = layout.unflatten(v)
    assert list(back) == ["z", "a"] and back["a"].dtype == np.float32
    np.testing.assert_array_equal(back["z"], arrays["z"])
    np.testing.assert_array_equal(back["a"], arrays["a"])  # float32 → float64 → float32 exact


def test_layout_errors_name_the_array(rng):
    layout = Layout.of({"w": np.zeros((2, 2)), "b": np.zeros(2)})
    with pytest.raises(InvalidArgumentError, match=r"client 3: has no array 'b'"):
        layout.flatten({"w": np.zeros((2, 2))}, where="client 3")
    with pytest.raises(InvalidArgumentError, match=r"array 'w' has shape \(4,\), expected "
                                                   r"\(2, 2\)"):
        layout.flatten({"w": np.zeros(4), "b": np.zeros(2)})
    with pytest.raises(InvalidArgumentError, match="no floating-point array"):
        Layout.of({"n": np.arange(3)})
    with pytest.raises(InvalidArgumentError, match=r"expected shape \(6,\)"):
        layout.unflatten(np.zeros(5))
    assert layout.describe() == [{"key": "w", "shape": [2, 2], "dtype": "float64"},
                                 {"key": "b", "shape": [2], "dtype": "float64"}]


@pytest.mark.parametrize("factors", ["AB", "A", "B"])
def test_lora_shapes_are_the_digital_aggregators_layout(rng, factors):
    layers, rank = [(6, 4), (3, 5)], 2
    shapes = lora_shapes(layers, rank, factors)
    agg = DigitalAggregator(layers, rank, lambda t: {"kept": [1]}, factors=factors)
    assert sum(int(np.prod(s)) for s in shapes) == agg.q
    if factors != "AB":
        return
    # the order the SOFT mask reads: layer 0's A (r × d_in) then B (d_out × r), then layer 1;
    # a component (row i of A, column i of B) kept on its own shows where each block lies
    assert shapes == [(2, 4), (6, 2), (2, 5), (3, 2)]
    arrays = {str(i): rng.standard_normal(s) for i, s in enumerate(shapes)}
    arrays["0"][1] *= 100.0  # component 1 of layer 0 dominates its scores
    v = Layout.of(arrays).flatten(arrays)
    mask = soft_component_mask(v[None, :], layers, rank, np.array([1]))[0]
    kept = Layout.of(arrays).unflatten(mask)
    np.testing.assert_array_equal(kept["0"][1], 1.0)
    np.testing.assert_array_equal(kept["0"][0], 0.0)
    np.testing.assert_array_equal(kept["1"][:, 1], 1.0)
