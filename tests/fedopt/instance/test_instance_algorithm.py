"""``learning.algorithm``: what the planner's payload q(r) counts (issue 12).

Oracles: q(r) written out from the layer list for each algorithm's factors and payloads per
round; the digest of an instance that does not set the field is unchanged (files written before
the field existed plan the same); contradicting fields are refused, naming both.
"""

from __future__ import annotations

import pytest

from fedopt.digital import payload_bits
from fedopt.errors import InvalidInstanceError
from fedopt.instance import ALGORITHMS, Instance, load_instance


@pytest.fixture(scope="module")
def inst():
    return load_instance("char-tasks")


def _by_hand(inst, factors: str, blocks: int, r: int) -> int:
    size = {"AB": lambda x: x.d_out + x.d_in, "A": lambda x: x.d_in, "B": lambda x: x.d_out}
    return blocks * r * sum(x.count * size[factors](x) for x in inst.lora.layers)


@pytest.mark.parametrize("algorithm, factors, blocks", [
    ("fedavg", "AB", 1), ("ota-sophia", "AB", 2), ("ffa", "B", 1), ("fedsa", "A", 1),
    ("pwff", "AB", 1), ("local", "AB", 0)])
def test_payload_follows_the_algorithm(inst, algorithm, factors, blocks):
    a = inst.with_algorithm(algorithm)
    assert (a.algorithm, a.lora.factors, a.payloads_per_round) == (algorithm, factors, blocks)
    for r in (1, 4, 16):
        assert a.payload(r) == _by_hand(inst, factors, blocks, r)
        assert a.ofdm_symbols(r, 1) == -(-a.payload(r) // (2 * a.n_subcarriers))
    # over FDMA the bits follow too: m components of 2 blocks (ota-sophia) cost twice the bits
    assert payload_bits(a, 4, 4) == 4 * (a.payload(4) // 4) * a.lora.bits_per_param + 4
    # a round trip through a file keeps it
    assert Instance.from_dict(a.to_dict()) == a


def test_the_default_follows_the_factors_and_leaves_digests_alone(inst):
    assert inst.learning.algorithm is None and inst.algorithm == "fedavg"
    assert "algorithm" not in inst.to_dict()["learning"]
    d = inst.to_dict()
    d["lora"]["factors"] = "B"
    assert Instance.from_dict(d).algorithm == "ffa"
    d["lora"]["factors"] = "A"
    assert Instance.from_dict(d).algorithm == "fedsa"
    # setting the default explicitly is another file, and another digest
    explicit = inst.with_algorithm("fedavg")
    assert explicit.digest() != inst.digest() and explicit.payload(4) == inst.payload(4)


def test_contradicting_fields_are_refused_naming_both(inst):
    d = inst.to_dict()
    d["learning"]["algorithm"] = "fedsa"
    with pytest.raises(InvalidInstanceError, match=r"lora\.factors.*learning\.algorithm 'fedsa'"):
        Instance.from_dict(d)
    d["learning"]["algorithm"] = "fedprox"
    with pytest.raises(InvalidInstanceError, match=r"learning\.algorithm: got 'fedprox'.*ffa"):
        Instance.from_dict(d)
    with pytest.raises(InvalidInstanceError, match="learning.algorithm"):
        inst.with_algorithm("scaffold")
    assert set(ALGORITHMS) == {"fedavg", "ota-sophia", "ffa", "fedsa", "local", "mira", "pwff"}


def test_mira_plans_one_aircomp_slot_per_task_cluster(inst):
    m = inst.with_algorithm("mira")
    assert m.payloads_per_round == 4 and m.digital_payloads == 1  # domain-shift: four tasks
    for r, streams in ((1, 1), (4, 2), (16, 1)):
        per_slot = -(-_by_hand(inst, "AB", 1, r) // (2 * streams * inst.n_subcarriers))
        assert m.ofdm_symbols(r, streams) == 4 * per_slot
    # over FDMA each device's update goes once
    assert payload_bits(m, 4, 4) == payload_bits(inst, 4, 4)
    assert load_instance("tiny-char").with_algorithm("mira").payloads_per_round == 1
