"""The first-order stages of ``multicast`` in real arithmetic (``first_order.py``).

Oracles: the complex closed form of wᴴa for the real layout; the complex-form smoothed value and
Riemannian gradient of ``newton.MulticastData`` (itself checked against finite differences in
test_multicast.py); each column run alone (a layout of one column) for the packed and repacked
layouts; a brute force over the row widths for the layout's choice.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from bf_testing import random_problem

from fedopt.errors import InvalidArgumentError
from fedopt.solvers.beamforming.first_order import (
    _ROW_COST,
    _layout,
    _row_cost,
    first_order_stage,
    lse_and_gradient,
    realify,
)
from fedopt.solvers.beamforming.multicast import MulticastOptions, multicast, scaled_channels
from fedopt.solvers.beamforming.newton import MulticastData

first_order_module = importlib.import_module("fedopt.solvers.beamforming.first_order")


def _unit_columns(rng, n, nr):
    a = rng.standard_normal((n, nr)) + 1j * rng.standard_normal((n, nr))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _real(a):
    return np.concatenate([a.real, a.imag], axis=-1)


@pytest.mark.parametrize("nt", [1, 3])
def test_the_real_layout_holds_the_real_and_imaginary_parts_of_w_h_a(rng, nt):
    m, nr, k = 3, 5, 4
    w, _ = scaled_channels(random_problem(rng, k, m, nr, nt, 1))
    wt, wtt = realify(w, np.float64)
    a = _unit_columns(rng, m, nr)
    z = wt @ _real(a)[:, :, None]  # (M, 2 K N_t, 1)
    zc = np.conj(np.swapaxes(w, 1, 2)) @ a[:, :, None]  # (M, K N_t, 1)
    np.testing.assert_allclose(z[:, 0::2, 0], zc[..., 0].real, atol=1e-14)
    np.testing.assert_allclose(z[:, 1::2, 0], zc[..., 0].imag, atol=1e-14)
    np.testing.assert_array_equal(wtt, np.swapaxes(wt, 1, 2))
    assert wt.flags.c_contiguous and wtt.flags.c_contiguous


@pytest.mark.parametrize("nt", [1, 2])
def test_value_and_gradient_match_the_complex_form(rng, nt):
    # double precision: the same sums in another order (1e-12); single precision: float32's
    # resolution (~6e-8) times the O(10) condition of log and the softmax (2e-5)
    m, nr, k, s, tau = 2, 4, 6, 3, 0.2
    w, _ = scaled_channels(random_problem(rng, k, m, nr, nt, 1))
    a = np.stack([_unit_columns(rng, s, nr) for _ in range(m)])  # (M, S, N_r)
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        wt, wtt = realify(w, dtype)
        x = np.swapaxes(_real(a), 1, 2).astype(dtype)  # (M, 2N_r, S)
        val, grad = lse_and_gradient(wt, wtt, k, x, tau)
        assert val.dtype == dtype and grad.dtype == dtype
        for i in range(m):
            data = MulticastData(np.repeat(w[i:i + 1], s, axis=0), nt)
            _, g_ref, _ = data.derivatives(a[i], tau, np.arange(s))
            np.testing.assert_allclose(val[i], data.smoothed(a[i], tau), rtol=rtol)
            np.testing.assert_allclose(grad[i].T, g_ref, rtol=rtol,
                                       atol=rtol * np.abs(g_ref).max())


def test_the_layout_places_every_column_once_at_the_cheapest_width(rng):
    m = 7
    col_sub = np.sort(rng.integers(0, m, 60))
    col_sub = col_sub[col_sub != 3]  # a subcarrier without columns
    rsub, col, cost = _layout(col_sub, m)
    filled = col >= 0
    assert sorted(col[filled].tolist()) == list(range(col_sub.size))
    for r in range(rsub.size):  # a row holds columns of its own subcarrier, padding last
        assert np.all(col_sub[col[r][filled[r]]] == rsub[r])
        assert filled[r, 0] and np.all(np.diff(filled[r].astype(int)) <= 0)
    counts = np.bincount(col_sub, minlength=m)
    counts = counts[counts > 0]
    brute = min(float(np.sum(-(-counts // c))) * _row_cost(c) for c in range(1, 70))
    assert cost <= brute * (1 + 1e-12) or col.shape[1] in _ROW_COST
    assert cost == min(float(np.sum(-(-counts // c))) * _row_cost(c)
                       for c in {*_ROW_COST, int(counts.max())})
    # one subcarrier: one row as wide as its column count
    _, col1, _ = _layout(np.zeros(19, dtype=int), 1)
    assert col1.shape == (1, 19)


@pytest.mark.parametrize("counts", [[1, 9, 3, 6, 2], [12]])
def test_each_column_moves_as_if_it_were_alone_through_packing_and_repacking(rng, monkeypatch,
                                                                             counts):
    # unequal columns per subcarrier: the layout is packed, and repacked once most columns
    # have stopped; one subcarrier ([12]): one row, whose backtracks evaluate only the columns
    # still searching. Every column must follow the path it follows alone (double precision,
    # 1e-10)
    m, nr, k, nt, tau = len(counts), 4, 6, 2, 0.3
    w, _ = scaled_channels(random_problem(rng, k, m, nr, nt, 1))
    channels = realify(w, np.float64)
    col_sub = np.repeat(np.arange(m), counts)
    x = _real(_unit_columns(rng, col_sub.size, nr))
    places = []
    real_place = first_order_module._Rows.place

    def counting_place(self, cols, state):
        places.append(cols.size)
        real_place(self, cols, state)

    monkeypatch.setattr(first_order_module._Rows, "place", counting_place)
    out, its = first_order_stage(channels, k, x, col_sub, tau, 40, 1e-3 * tau)
    assert len(places) >= 2 and places[-1] < places[0]  # it did repack
    alone = []
    for i in range(col_sub.size):
        xi, it_i = first_order_stage(channels, k, x[i:i + 1], col_sub[i:i + 1], tau, 40,
                                     1e-3 * tau)
        alone.append((xi[0], it_i))
    np.testing.assert_allclose(out, np.array([xi for xi, _ in alone]), atol=1e-10)
    assert its == max(it_i for _, it_i in alone)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-12)


def test_the_stage_decreases_the_smoothed_value_and_a_stationary_start_stays(rng):
    m, nr, k, tau = 3, 6, 10, 0.1
    w, _ = scaled_channels(random_problem(rng, k, m, nr, 1, 1))
    for dtype in (np.float64, np.float32):
        channels = realify(w, dtype)
        col_sub = np.repeat(np.arange(m), 4)
        x = _real(_unit_columns(rng, col_sub.size, nr)).astype(dtype)
        f0 = lse_and_gradient(channels[0][col_sub], channels[1][col_sub], k, x[:, :, None],
                              tau)[0][:, 0]
        out, its = first_order_stage(channels, k, x, col_sub, tau, 60, 1e-3 * tau)
        f1 = lse_and_gradient(channels[0][col_sub], channels[1][col_sub], k, out[:, :, None],
                              tau)[0][:, 0]
        assert its > 0 and np.all(f1 <= f0)  # the non-monotone search ends below its start
        # a tolerance above every gradient norm: nothing moves, no iteration
        same, its0 = first_order_stage(channels, k, x, col_sub, tau, 60, 1e6)
        assert its0 == 0
        np.testing.assert_array_equal(same, x)


def test_single_and_double_precision_first_stages_agree_on_easy_cases(rng):
    # K ≤ 3 is SDR-tight (spec 02 §4): both precisions reach the same optimum; the Newton
    # stages and the certificate are in double precision in both cases
    for _ in range(3):
        p = random_problem(rng, 3, 4, 6, 1, 1)
        single = multicast(p, rng=0)
        double = multicast(p, rng=0, first_order_dtype="float64")
        np.testing.assert_allclose(single.objective_per_subcarrier,
                                   double.objective_per_subcarrier, rtol=1e-6)
    with pytest.raises(InvalidArgumentError, match="first_order_dtype: got 'float16'"):
        MulticastOptions(first_order_dtype="float16")
