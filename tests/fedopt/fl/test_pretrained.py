"""The shipped base models: checksums, recipes, and the domain shift of the new testbed."""

from __future__ import annotations

import hashlib
from importlib import resources

import pytest

from fedopt.errors import CheckpointError, InvalidArgumentError
from fedopt.fl import pretrained
from fedopt.fl.pretrained import BASES, SHIPPED_SHA256, base_model
from fedopt.fl.tasks import base_domain_data, make_task_data
from fedopt.fl.training import evaluate_loss


@pytest.mark.parametrize("name", sorted(BASES))
def test_shipped_checkpoint_matches_its_checksum_and_recipe(name):
    data = (resources.files("fedopt") / "assets" / f"{name}.pt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHIPPED_SHA256[name]
    ckpt = base_model(name, cache=False)  # shipped: no pre-training here
    assert ckpt.metadata["recipe"]["steps"] == BASES[name]["steps"]
    assert not ckpt.model.training


def test_a_tampered_shipped_checkpoint_is_a_named_error(monkeypatch):
    monkeypatch.setitem(pretrained.SHIPPED_SHA256, "prose-base", "f" * 64)
    with pytest.raises(CheckpointError, match="prose-base.pt: SHA-256"):
        base_model("prose-base", cache=False)


def test_unknown_base_names_the_valid_ones():
    with pytest.raises(InvalidArgumentError, match="char-base, prose-base"):
        base_model("gpt-5")


def test_prose_base_has_a_domain_shift_to_every_task():
    ckpt = base_model("prose-base", cache=False)
    assert ckpt.metadata["recipe"]["data"] == "snapshot-prose"
    _, _, prose_held = base_domain_data()
    own = evaluate_loss(ckpt.model, prose_held, 64, max_batches=8).loss
    tasks = make_task_data(4, seed=0)
    # measured: prose 1.59 nats/char; code 2.27, markup 3.09, decimal 3.52, mail 4.39. A shift of
    # at least 0.5 nats leaves room for retraining noise, and is far above batch noise (~0.02)
    for task, ids in tasks.task_heldout.items():
        loss = evaluate_loss(ckpt.model, ids, 64, max_batches=8).loss
        assert loss > own + 0.5, (task, loss, own)
    assert own < 1.8
