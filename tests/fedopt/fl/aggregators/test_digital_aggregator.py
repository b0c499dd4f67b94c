"""The digital (SOFT + FDMA) aggregator (spec 05 §3 ``digital``, spec 04 §4).

Oracles: the component mask against a brute-force top-m selection written here from the spec
(scores s_i = ‖b_i‖‖a_i‖, pairs kept whole, ties to the lower index); keeping every component is
the ideal average; the measured error is exactly the dropped part of the weighted average and
the prediction (per-device dropped energy) bounds it by Jensen; with orthogonal factors the
dropped energy of B A is Σ_dropped s_i² and equals the Eckart–Young optimum (SVD truncation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from torch import nn

from fedopt.errors import InvalidArgumentError
from fedopt.fl.aggregators import DigitalAggregator, IdealAggregator, soft_component_mask
from fedopt.fl.lora import LoRALinear, flatten_lora, unflatten_lora

LAYERS = [(5, 3), (4, 6)]  # (d_out, d_in): two layers of different shapes, neither square
RANK = 4
Q = RANK * sum(d_out + d_in for d_out, d_in in LAYERS)  # 72
K = 3


def _fixed(kept):
    """decide() returning the same ``kept`` every round."""
    return lambda t: {"kept": np.asarray(kept)}


def _factors(g: np.ndarray, layers=LAYERS, rank=RANK):
    """Per layer, (A (r × d_in), B (d_out × r)) of one device's payload, read from the documented
    layout: layer after layer, A then B, each row-major."""
    out, off = [], 0
    for d_out, d_in in layers:
        a = g[off:off + rank * d_in].reshape(rank, d_in)
        off += rank * d_in
        b = g[off:off + d_out * rank].reshape(d_out, rank)
        off += d_out * rank
        out.append((a, b))
    assert off == g.size
    return out


def _brute_mask(g: np.ndarray, kept: np.ndarray, layers=LAYERS, rank=RANK) -> np.ndarray:
    """Independent top-m selection with Python loops and an explicit tie rule."""
    mask = np.zeros_like(g)
    for dev in range(g.shape[0]):
        pieces = []
        for a, b in _factors(g[dev], layers, rank):
            scores = [float(np.sqrt(np.sum(b[:, i] ** 2)) * np.sqrt(np.sum(a[i] ** 2)))
                      for i in range(rank)]
            # largest score first; equal scores: lower index first
            order = sorted(range(rank), key=lambda i: (-scores[i], i))
            keep = set(order[:int(kept[dev])])
            ma = np.array([[1.0 if i in keep else 0.0] * a.shape[1] for i in range(rank)])
            mb = np.array([[1.0 if i in keep else 0.0 for i in range(rank)]] * b.shape[0])
            pieces += [ma.ravel(), mb.ravel()]
        mask[dev] = np.concatenate(pieces)
    return mask


def _scores(g_dev: np.ndarray, layer: int) -> np.ndarray:
    a, b = _factors(g_dev)[layer]
    return np.linalg.norm(b, axis=0) * np.linalg.norm(a, axis=1)


# --------------------------------------------------------------------------------------------
# the mask


def test_mask_matches_brute_force_top_m_on_random_updates(rng):
    for _ in range(20):
        g = rng.standard_normal((K, Q)) * rng.uniform(0.1, 3.0, size=(1, Q))
        kept = rng.integers(1, RANK + 1, size=K)
        got = soft_component_mask(g, LAYERS, RANK, kept)
        assert_array_equal(got, _brute_mask(g, kept))
        # pairs stay whole: every layer keeps exactly kept[k] rows of A and columns of B
        for dev in range(K):
            for (a_m, b_m) in _factors(got[dev]):
                assert a_m.any(axis=1).sum() == kept[dev] == b_m.any(axis=0).sum()


def test_mask_ties_keep_the_lower_index(rng):
    g = rng.standard_normal((K, Q))
    # (_factors returns views: editing a, b edits g)
    # device 0, layer 0: components 1 and 3 are copies (bit-identical scores) and dominate
    a, b = _factors(g[0])[0]
    a[3], b[:, 3] = a[1], -b[:, 1]  # sign flip leaves the norm bit-identical
    a[1] *= 10.0
    a[3] *= 10.0
    # device 1, layer 1: all four components are copies of one another
    a1, b1 = _factors(g[1])[1]
    a1[:] = a1[0]
    b1[:] = b1[:, :1]
    s0, s1 = _scores(g[0], 0), _scores(g[1], 1)
    # the tie is real (else this test would not exercise the rule)
    assert s0[1] == s0[3] and s0[1] > max(s0[0], s0[2])
    assert np.all(s1 == s1[0])
    for m in (1, 2, 3):
        kept = np.array([m, m, m])
        got = soft_component_mask(g, LAYERS, RANK, kept)
        assert_array_equal(got, _brute_mask(g, kept))
        keep0 = np.flatnonzero(_factors(got[0])[0][0].any(axis=1))
        keep1 = np.flatnonzero(_factors(got[1])[1][0].any(axis=1))
        third = 0 if s0[0] >= s0[2] else 2
        assert list(keep0) == sorted([1, 3, third][:m])  # the tied pair first, 1 before 3
        assert list(keep1) == list(range(m))  # all tied: the first m indices


# --------------------------------------------------------------------------------------------
# the aggregator


def test_keeping_every_component_is_the_ideal_average(rng):
    g = rng.standard_normal((K, Q))
    phi = np.array([0.5, 2.0, 1.5])
    r = DigitalAggregator(LAYERS, RANK, _fixed([RANK] * K)).aggregate(g, phi, 0, rng)
    ideal = IdealAggregator().aggregate(g, phi, 0, rng)
    assert r.error == 0.0 and r.predicted_error == 0.0  # a full mask multiplies by exact 1.0
    assert_array_equal(r.estimate, r.exact)
    # φ is normalized before the sum here and after it in IdealAggregator: rounding only
    assert_allclose(r.estimate, ideal.estimate, rtol=1e-13, atol=1e-15)
    assert r.info["kept"] == [RANK] * K


def test_error_is_the_dropped_weighted_part_and_prediction_bounds_it(rng):
    for _ in range(20):
        g = rng.standard_normal((K, Q))
        phi = rng.uniform(0.1, 5.0, size=K)  # unnormalized on purpose
        kept = rng.integers(1, RANK, size=K)  # at least one component dropped per layer
        r = DigitalAggregator(LAYERS, RANK, _fixed(kept)).aggregate(g, phi, 7, rng)
        mask = _brute_mask(g, kept)
        w = phi / phi.sum()
        dropped = (1.0 - mask) * g
        expect_err = float(np.sum((w @ dropped) ** 2))
        expect_pred = float(sum(w[k] * np.sum(dropped[k] ** 2) for k in range(K)))
        # different summation order only; the dropped part is O(|g|), so no cancellation
        assert r.error == pytest.approx(expect_err, rel=1e-10)
        assert r.predicted_error == pytest.approx(expect_pred, rel=1e-12)
        assert_allclose(r.estimate, w @ (mask * g), rtol=1e-12, atol=1e-14)
        assert_allclose(r.exact, w @ g, rtol=1e-12, atol=1e-14)
        assert 0.0 < r.error <= r.predicted_error  # Jensen: ‖Σ w x‖² ≤ Σ w ‖x‖²


def test_orthogonal_factors_drop_exactly_the_dropped_singular_values(rng):
    """Spec 04 §4: with orthogonal factors B A = Σ s_i b̂_i âᵢᵀ is an SVD, so removing the
    dropped pairs removes Σ_dropped s_i² of ‖B A‖_F², the Eckart–Young optimum."""
    layers = [(6, 5), (7, 9)]
    rank = 4
    mods = {}
    for i, (d_out, d_in) in enumerate(layers):
        lin = nn.Linear(d_in, d_out, dtype=torch.float64)
        m = LoRALinear(lin, rank, name=f"l{i}")
        qa, _ = np.linalg.qr(rng.standard_normal((d_in, rank)))  # orthonormal columns
        qb, _ = np.linalg.qr(rng.standard_normal((d_out, rank)))
        alpha = rng.uniform(0.2, 3.0, size=rank)
        beta = rng.uniform(0.2, 3.0, size=rank)
        with torch.no_grad():
            m.A.copy_(torch.from_numpy(alpha[:, None] * qa.T))  # orthogonal rows
            m.B.copy_(torch.from_numpy(qb * beta[None, :]))  # orthogonal columns
        mods[f"l{i}"] = m
    payload = flatten_lora(mods).numpy()[None, :].copy()  # one device: the LoRA update vector
    full = [m.delta_weight().detach().numpy().copy() for m in mods.values()]
    for kept in (1, 2, 3):
        agg = DigitalAggregator(layers, rank, _fixed([kept]))
        r = agg.aggregate(payload, [1.0], 0, rng)
        unflatten_lora(mods, torch.from_numpy(r.estimate))
        total = 0.0
        for (a, b), w_full, m in zip(_factors(payload[0], layers, rank), full, mods.values(),
                                     strict=True):
            s = np.linalg.norm(b, axis=0) * np.linalg.norm(a, axis=1)
            w_kept = m.delta_weight().detach().numpy()
            gone = float(np.sum((w_full - w_kept) ** 2))
            sv = np.linalg.svd(w_full, compute_uv=False)
            # orthogonality from QR holds to ~1e-15, so the identities hold to rounding
            assert_allclose(np.sort(sv[:rank]), np.sort(s), rtol=1e-12)  # scores = singular values
            assert gone == pytest.approx(float(np.sum(np.sort(s)[:rank - kept] ** 2)), rel=1e-10)
            assert gone == pytest.approx(float(np.sum(sv[kept:] ** 2)), rel=1e-10)  # optimal
            total += gone
        # the aggregator's own error is this dropped energy (K = 1, φ̃ = 1) of the payload
        dropped_payload = float(np.sum((payload[0] - r.estimate) ** 2))
        assert r.error == pytest.approx(dropped_payload, rel=1e-12)
        assert total > 0.0
        unflatten_lora(mods, torch.from_numpy(payload[0]))  # restore for the next m


# --------------------------------------------------------------------------------------------
# bad input and state


def test_constructor_errors_name_the_field():
    ok = _fixed([1] * K)
    for bad in ([], [(0, 3)], [(3, -1)], "abc", [(1, 2, 3)]):
        with pytest.raises(InvalidArgumentError, match="layers"):
            DigitalAggregator(bad, RANK, ok)
    for bad in (0, -2, True, 2.0):
        with pytest.raises(InvalidArgumentError, match="rank"):
            DigitalAggregator(LAYERS, bad, ok)
    with pytest.raises(InvalidArgumentError, match="decide"):
        DigitalAggregator(LAYERS, RANK, [1, 2, 3])


@pytest.mark.parametrize("kept", [[0, 1, 1], [1, RANK + 1, 1], [1, 1], [1, 1, 1, 1],
                                  [[1, 1, 1]], [-1, 2, 2]])
def test_bad_kept_names_kept(rng, kept):
    agg = DigitalAggregator(LAYERS, RANK, _fixed(kept))
    with pytest.raises(InvalidArgumentError, match="'kept'"):
        agg.aggregate(rng.standard_normal((K, Q)), np.ones(K), 0, rng)


def test_bad_updates_and_weights_name_the_field(rng):
    agg = DigitalAggregator(LAYERS, RANK, _fixed([1] * K))
    with pytest.raises(InvalidArgumentError, match="updates"):
        agg.aggregate(rng.standard_normal((K, Q + 1)), np.ones(K), 0, rng)  # wrong q
    with pytest.raises(InvalidArgumentError, match="updates"):
        agg.aggregate(rng.standard_normal(Q), np.ones(K), 0, rng)
    with pytest.raises(InvalidArgumentError, match="weights"):
        agg.aggregate(rng.standard_normal((K, Q)), np.ones(K - 1), 0, rng)
    with pytest.raises(InvalidArgumentError, match="round_index"):
        agg.aggregate(rng.standard_normal((K, Q)), np.ones(K), -1, rng)


@pytest.mark.parametrize("output", [{}, {"kept": None}, [1, 2, 3], None,
                                    {"kept": [1.5, 2.0, 1.0]}, {"kept": ["a", "b", "c"]}],
                         ids=["no-kept", "kept-None", "list", "None", "fractional", "strings"])
def test_malformed_decision_names_kept(rng, output):
    agg = DigitalAggregator(LAYERS, RANK, lambda t: output)
    with pytest.raises(InvalidArgumentError, match="kept"):
        agg.aggregate(rng.standard_normal((K, Q)), np.ones(K), 0, rng)


class _Queue:
    """A decide callable with a virtual queue (as TSFA's): state changes on every call."""

    def __init__(self):
        self.queue = 0.0
        self.loaded = None

    def describe(self):
        return {"type": "queue-test"}

    def state_dict(self):
        return {"queue": np.array(self.queue)}

    def load_state_dict(self, state):
        self.loaded = dict(state)
        self.queue = float(state["queue"])

    def __call__(self, t):
        self.queue += t + 1.0
        return {"kept": np.full(K, 1 + int(self.queue) % RANK), "latency_s": 0.25,
                "airtime_s": 0.125, "energy_j": np.array([1.0, 2.0, 3.0]),
                "bandwidth_hz": np.array([1e5, 2e5, 3e5]), "sparsity": np.array([0.5] * K)}


def test_state_and_description_are_delegated_to_decide(rng):
    dec = _Queue()
    agg = DigitalAggregator(LAYERS, RANK, dec)
    assert agg.describe()["decide"] == {"type": "queue-test"}
    assert agg.state_dict() == {"queue": np.array(0.0)}
    r = agg.aggregate(rng.standard_normal((K, Q)), np.ones(K), 2, rng)
    assert float(agg.state_dict()["queue"]) == 3.0  # the aggregator reads decide's live state
    # the decision's accounting comes through unchanged
    assert r.latency_s == 0.25 and r.airtime_s == 0.125
    assert_array_equal(r.energy_j, [1.0, 2.0, 3.0])
    assert r.info["bandwidth_hz"] == [1e5, 2e5, 3e5] and r.info["sparsity"] == [0.5] * K
    agg.load_state_dict({"queue": np.array(7.0)})
    assert dec.queue == 7.0 and set(dec.loaded) == {"queue"}
    # a decide without state: empty state, loading is a no-op
    plain = DigitalAggregator(LAYERS, RANK, _fixed([1] * K))
    assert plain.state_dict() == {}
    plain.load_state_dict({"queue": np.array(1.0)})
    r2 = plain.aggregate(rng.standard_normal((K, Q)), np.ones(K), 0, rng)
    assert r2.latency_s is None and r2.airtime_s is None and r2.energy_j is None


# --------------------------------------------------------------------------------------------
# single-factor payloads and paired blocks (FFA / FedSA, over-the-air Sophia)


def _single_factor_brute(g: np.ndarray, kept: np.ndarray, factor: str) -> np.ndarray:
    """Top-m columns of B (``"B"``) or rows of A (``"A"``) by their own norm, per layer."""
    mask = np.zeros_like(g)
    for dev in range(g.shape[0]):
        off, pieces = 0, []
        for d_out, d_in in LAYERS:
            n = RANK * (d_out if factor == "B" else d_in)
            x = g[dev, off:off + n]
            off += n
            comp = (x.reshape(d_out, RANK).T if factor == "B" else x.reshape(RANK, d_in))
            order = sorted(range(RANK), key=lambda i: (-float(np.sqrt(np.sum(comp[i] ** 2))), i))
            keep = set(order[:int(kept[dev])])
            m = np.array([[1.0 if i in keep else 0.0] * comp.shape[1] for i in range(RANK)])
            pieces.append((m.T if factor == "B" else m).ravel())
        mask[dev] = np.concatenate(pieces)
    return mask


@pytest.mark.parametrize("factor", ["A", "B"])
def test_single_factor_mask_matches_brute_force(rng, factor):
    q = RANK * sum(d_out if factor == "B" else d_in for d_out, d_in in LAYERS)
    for _ in range(10):
        g = rng.standard_normal((K, q)) * rng.uniform(0.1, 3.0, size=(1, q))
        kept = rng.integers(1, RANK + 1, size=K)
        assert_array_equal(soft_component_mask(g, LAYERS, RANK, kept, factor),
                           _single_factor_brute(g, kept, factor))
    agg = DigitalAggregator(LAYERS, RANK, _fixed([RANK] * K), factors=factor)
    assert agg.q == q
    with pytest.raises(InvalidArgumentError, match="factors B|factors A"):
        agg.aggregate(rng.standard_normal((K, Q)), np.ones(K), 0, rng)


def test_paired_blocks_send_the_same_components_of_each_block(rng):
    m = rng.standard_normal((K, Q))
    h = rng.random((K, Q)) * 1e-6  # h's own scores would pick other components
    kept = np.array([1, 2, 3])
    agg = DigitalAggregator(LAYERS, RANK, _fixed(kept), blocks=2)
    res = agg.aggregate(np.hstack([m, h]), np.ones(K), 0, rng)
    mask = _brute_mask(m, kept)  # chosen on m
    # (φ/Σφ) @ x vs mean(x): the same sum in another order, float64 rounding
    assert_allclose(res.estimate[:Q], (mask * m).mean(axis=0), rtol=1e-12, atol=1e-15)
    assert_allclose(res.estimate[Q:], (mask * h).mean(axis=0), rtol=1e-12, atol=1e-21)
    assert agg.describe()["blocks"] == 2
